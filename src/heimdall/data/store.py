"""Session store (provisional format: one .npz per shard plus a JSON manifest).

API that every stage uses (the format behind it may change):

- ``SessionStore.create(uri, metadata)`` / ``SessionStore.open(uri)``
- ``append_shard(index, batch)``: atomic (write, then rename, then manifest)
- ``len(store)``, ``read(indices)`` (random access), ``iter_shards()``
- ``metadata`` (network YAML, world seed, world config ...), ``content_hash()``
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.data.session import SessionBatch
from heimdall.errors import HeimdallError

_MANIFEST = "manifest.json"


class SessionStore:
    """A sharded dataset of sessions in a local folder."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self._manifest = manifest
        self._cache: dict[int, SessionBatch] = {}

    @classmethod
    def create(cls, uri: str | Path, metadata: dict[str, Any], resume: bool = True) -> SessionStore:
        """Create a store (or reopen it to resume when ``resume`` and metadata match)."""
        root = Path(uri)
        if (root / _MANIFEST).exists():
            store = cls.open(root)
            if not resume:
                raise HeimdallError(f"{root}: a session store already exists here")
            if store.metadata != metadata:
                raise HeimdallError(f"{root}: exists with different metadata; choose another --out")
            return store
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HeimdallError(f"cannot create output folder {str(root)!r}: {exc.strerror}") from None
        store = cls(root, {"metadata": metadata, "shards": []})
        store._write_manifest()
        return store

    @classmethod
    def open(cls, uri: str | Path) -> SessionStore:
        """Open an existing store."""
        root = Path(uri)
        try:
            manifest = json.loads((root / _MANIFEST).read_text())
        except FileNotFoundError:
            raise HeimdallError(f"{root}: not a session store (no {_MANIFEST})") from None
        except json.JSONDecodeError as exc:
            raise HeimdallError(f"{root / _MANIFEST}: corrupt manifest ({exc})") from None
        return cls(root, manifest)

    @property
    def metadata(self) -> dict[str, Any]:
        """Dataset metadata (network, world seed, simulator config ...)."""
        return self._manifest["metadata"]

    def committed_shards(self) -> list[int]:
        """Indices of committed shards."""
        return [s["index"] for s in self._manifest["shards"]]

    def __len__(self) -> int:
        return sum(s["n"] for s in self._manifest["shards"])

    def append_shard(self, index: int, batch: SessionBatch) -> None:
        """Write one shard atomically and commit it in the manifest."""
        if index in self.committed_shards():
            raise HeimdallError(f"{self.root}: shard {index} is already committed")
        name = f"shard-{index:06d}.npz"
        buf = io.BytesIO()
        np.savez(buf, **batch.to_arrays())
        tmp = self.root / (name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(self.root / name)
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
        self._manifest["shards"].append({"index": index, "file": name, "n": batch.n_sessions, "sha256": digest})
        self._write_manifest()

    def _write_manifest(self) -> None:
        tmp = self.root / (_MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self._manifest, indent=1))
        tmp.replace(self.root / _MANIFEST)

    def _shard(self, pos: int) -> SessionBatch:
        if pos not in self._cache:
            entry = self._manifest["shards"][pos]
            with np.load(self.root / entry["file"]) as z:
                self._cache = {pos: SessionBatch.from_arrays({k: z[k] for k in z.files})}
        return self._cache[pos]

    def iter_shards(self) -> Iterator[SessionBatch]:
        """Stream the dataset shard by shard."""
        for pos in range(len(self._manifest["shards"])):
            yield self._shard(pos)

    def read(self, indices: Sequence[int] | np.ndarray) -> SessionBatch:
        """Sessions at global positions ``indices`` (0 .. len-1)."""
        idx = np.asarray(indices, dtype=np.int64)
        sizes = np.array([s["n"] for s in self._manifest["shards"]])
        starts = np.concatenate([[0], np.cumsum(sizes)])
        if idx.size and (idx.min() < 0 or idx.max() >= starts[-1]):
            raise HeimdallError(f"session index out of range 0..{starts[-1] - 1}")
        shard_of = np.searchsorted(starts, idx, side="right") - 1
        parts = [self._shard(int(s)).select([int(i - starts[s])]) for s, i in zip(shard_of, idx, strict=True)]
        return SessionBatch.concat(parts)

    def content_hash(self) -> str:
        """SHA-256 over the shards' content in order (not provenance)."""
        h = hashlib.sha256()
        for s in self._manifest["shards"]:
            h.update(s["sha256"].encode())
        return h.hexdigest()
