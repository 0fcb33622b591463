"""The session store: a sharded dataset on a local folder or ``s3://bucket/prefix``.

Layout (docs/DATA.md "Store layout")::

    ROOT/heimdall-store.json          format version + metadata (network, world, seeds ...)
    ROOT/provenance.json              software versions, creation time (outside the content hash)
    ROOT/shards/{k:06d}-{token}/      one shard, written completely before it is committed:
        iq.zarr                       Zarr v3 int16 (B, R, T, 2); one Zarr shard object, one inner
                                      chunk per session; Blosc zstd + byte shuffle, then a
                                      CRC-32C per chunk (checked on read; heimdall.data.zarr_io)
        sessions.parquet              per session fields + a 32-byte content digest
        receivers.parquet             per (session, slot) receiver fields
    ROOT/commits/{k:06d}.json         commit record of shard k, written LAST (atomic rename or PUT)

A reader lists ``commits/`` and never looks at a shard without a commit
record, so it never sees a half-written shard. A writer that dies loses only
the shard it was writing; reopening with :meth:`SessionStore.create` deletes
uncommitted shard folders and the caller appends the missing shard indices.
One writer per store at a time.

API used by every stage: ``SessionStore.create(uri, metadata, resume=True,
storage_options=None)``, ``SessionStore.open(uri, storage_options=None)``,
``append_shard(index, batch)``, ``committed_shards()``, ``len(store)``,
``read(indices)``, ``iter_shards()``, ``metadata``, ``content_hash()``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from heimdall.data.digest import FIELD_DTYPES, dataset_hash, session_digests
from heimdall.data.fs import is_remote, join, load_json_object, open_fs
from heimdall.data.paths import inside_store
from heimdall.data.session import SessionBatch
from heimdall.data.zarr_io import ZarrIO
from heimdall.errors import HeimdallError

FORMAT = "heimdall-session-store"
FORMAT_VERSION = 1
DESCRIPTOR = "heimdall-store.json"
PROVENANCE = "provenance.json"
_COMMIT_RE = re.compile(r"^(\d{6,})\.json$")
#: Load a whole shard into the cache when a read needs at least this fraction of it.
_FULL_SHARD_FRACTION = 0.25


def _canonical_json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise HeimdallError(f"{what} is not JSON-serialisable: {exc}") from None


def _provenance() -> dict[str, Any]:
    import zarr

    from heimdall import __version__

    return {
        "heimdall_version": __version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "pyarrow": pa.__version__,
    }


class SessionStore:
    """A sharded dataset of sessions (local folder or object store).

    Use :meth:`create` (write or resume) or :meth:`open` (read), not the constructor.

    Parameters
    ----------
    uri
        Local path or ``s3://bucket/prefix``.
    storage_options
        Endpoint, credentials, region for object stores (see :func:`heimdall.data.fs.open_fs`).
    cache_shards
        How many decoded shards the random-access cache keeps.

    """

    def __init__(
        self,
        uri: str | Path,
        storage_options: dict[str, Any] | None = None,
        cache_shards: int = 4,
    ) -> None:
        self.uri = str(uri)
        self.storage_options = dict(storage_options or {})
        self.cache_shards = max(1, int(cache_shards))
        self.fs, self.root = open_fs(self.uri, self.storage_options)
        self._zarr = ZarrIO(self.uri, self.fs, self.storage_options, root=self.root)
        self._descriptor: dict[str, Any] = {}
        self._commits: list[dict[str, Any]] = []
        self._starts = np.zeros(1, dtype=np.int64)
        self._tables: dict[int, tuple[pa.Table, pa.Table]] = {}
        self._cache: OrderedDict[int, SessionBatch] = OrderedDict()
        self._known_ids: np.ndarray | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        uri: str | Path,
        metadata: dict[str, Any],
        resume: bool = True,
        storage_options: dict[str, Any] | None = None,
    ) -> SessionStore:
        """Create a store, or reopen it to resume when ``resume`` and the metadata match.

        Resuming deletes shard folders that were never committed (a writer that died).

        Raises
        ------
        HeimdallError
            The store exists and ``resume`` is False, or it exists with different metadata.

        """
        meta_json = _canonical_json(metadata, "store metadata")
        store = cls(uri, storage_options)
        if store._exists():
            store._load_descriptor()
            if not resume:
                raise HeimdallError(f"{store.uri}: a session store already exists here")
            if _canonical_json(store.metadata, "store metadata") != meta_json:
                raise HeimdallError(
                    f"{store.uri}: a store with different metadata exists here; choose another output"
                )
            store._load_commits()
            store._remove_uncommitted()
            return store
        store._descriptor = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metadata": json.loads(meta_json),
        }
        try:
            store.fs.makedirs(store.root, exist_ok=True)
        except OSError as exc:
            raise HeimdallError(f"cannot create output {store.uri!r}: {exc}") from None
        store._put_atomic(PROVENANCE, json.dumps(_provenance(), indent=1).encode())
        store._put_atomic(DESCRIPTOR, json.dumps(store._descriptor, indent=1).encode())
        store._load_commits()
        return store

    @classmethod
    def open(cls, uri: str | Path, storage_options: dict[str, Any] | None = None) -> SessionStore:
        """Open an existing store for reading (a snapshot of its committed shards).

        Raises
        ------
        HeimdallError
            No store at ``uri`` or a corrupt descriptor / commit record.

        """
        store = cls(uri, storage_options)
        if not store._exists():
            raise HeimdallError(f"{store.uri}: not a session store (no {DESCRIPTOR})")
        store._load_descriptor()
        store._load_commits()
        return store

    def refresh(self) -> None:
        """Re-read the commit records (to see shards committed since opening)."""
        self._load_commits()

    def close(self) -> None:
        """Release network sessions held by the store (optional; also done at garbage collection)."""
        self._zarr.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # picklable for DataLoader worker processes: reconnect there, drop caches
        return {"uri": self.uri, "storage_options": self.storage_options, "cache_shards": self.cache_shards,
                "descriptor": self._descriptor, "commits": self._commits}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], state["storage_options"], state["cache_shards"])  # type: ignore[misc]
        self._descriptor = state["descriptor"]
        self._set_commits(state["commits"])

    def __repr__(self) -> str:
        return f"SessionStore({self.uri!r}, sessions={len(self)}, shards={len(self._commits)})"

    # ------------------------------------------------------------------ files
    def _path(self, *parts: str) -> str:
        return join(self.root, *parts)

    def _inside(self, rel: str, source: str, field: str) -> str:
        """``rel`` under the store root, refused unless it stays inside (docs/DATA.md "Safe paths")."""
        return inside_store(self.fs, self.root, rel, source=source, field=field)

    def _exists(self) -> bool:
        try:
            return bool(self.fs.exists(self._path(DESCRIPTOR)))
        except OSError as exc:
            raise HeimdallError(f"{self.uri}: cannot read store ({exc})") from None

    def _put_atomic(self, rel: str, data: bytes) -> None:
        """Write one file so that readers see all of it or nothing (rename locally, one PUT remotely)."""
        path = self._inside(rel, self.uri, "store layout")
        if is_remote(self.uri):
            self.fs.pipe_file(path, data)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _read_json(self, rel: str) -> dict[str, Any]:
        path = self._inside(rel, self.uri, "store layout")
        return load_json_object(lambda: self.fs.cat_file(path), path)

    def _load_descriptor(self) -> None:
        desc = self._read_json(DESCRIPTOR)
        if desc.get("format") != FORMAT or "metadata" not in desc:
            raise HeimdallError(f"{self._path(DESCRIPTOR)}: not a {FORMAT} descriptor")
        if int(desc.get("format_version", -1)) > FORMAT_VERSION:
            raise HeimdallError(
                f"{self._path(DESCRIPTOR)}: format version {desc['format_version']} is newer than this "
                f"Heimdall reads ({FORMAT_VERSION}); upgrade Heimdall"
            )
        self._descriptor = desc

    def _commit_names(self) -> list[str]:
        cdir = self._path("commits")
        try:
            self.fs.invalidate_cache(cdir)
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(cdir, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if _COMMIT_RE.match(n))

    def _load_commits(self) -> None:
        names = self._commit_names()
        paths = [self._inside(f"commits/{n}", self._path("commits", n), "commit record file") for n in names]
        blobs = self.fs.cat(paths) if paths else {}
        commits = []
        for path in paths:
            blob = blobs[path] if isinstance(blobs, dict) else blobs
            try:
                rec = json.loads(blob)
                int(rec["index"]), int(rec["n_sessions"]), str(rec["dir"])
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
                raise HeimdallError(f"{path}: corrupt commit record ({exc})") from None
            self._inside(rec["dir"], path, "dir")
            commits.append(rec)
        self._set_commits(commits)

    def _set_commits(self, commits: list[dict[str, Any]]) -> None:
        self._commits = sorted(commits, key=lambda c: int(c["index"]))
        sizes = np.array([int(c["n_sessions"]) for c in self._commits], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cache.clear()
        self._tables = {k: v for k, v in self._tables.items() if k < len(self._commits)}
        self._known_ids = None

    def _remove_uncommitted(self) -> None:
        committed = {c["dir"] for c in self._commits}
        sdir = self._path("shards")
        try:
            self.fs.invalidate_cache(sdir)
            entries = self.fs.ls(sdir, detail=False)
        except FileNotFoundError:
            return
        for entry in entries:
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if f"shards/{name}" in committed:
                continue
            if not is_remote(self.uri) and os.path.islink(entry):
                os.unlink(entry)  # the link only, never what it points to
            else:
                self.fs.rm(self._inside(f"shards/{name}", sdir, "shard folder"), recursive=True)

    # ------------------------------------------------------------------ properties
    @property
    def metadata(self) -> dict[str, Any]:
        """Dataset metadata: ``network``, ``world``, ``world_seed``, ``session_seed`` ... (hashed content)."""
        return self._descriptor["metadata"]

    @property
    def provenance(self) -> dict[str, Any]:
        """Software versions and creation time (not part of the content hash); {} when absent."""
        try:
            return self._read_json(PROVENANCE)
        except HeimdallError:
            return {}

    def committed_shards(self) -> list[int]:
        """Return the indices of committed shards, ascending."""
        return [int(c["index"]) for c in self._commits]

    def shard_records(self) -> list[dict[str, Any]]:
        """Commit records of the committed shards (index, dir, n_sessions, n_receivers, n_samples ...)."""
        return [dict(c) for c in self._commits]

    def shard_sizes(self) -> list[int]:
        """Sessions per committed shard, in shard order."""
        return [int(c["n_sessions"]) for c in self._commits]

    def __len__(self) -> int:
        return int(self._starts[-1])

    def require_sessions(self) -> None:
        """Raise HeimdallError naming the store when it holds no sessions (for readers that need some)."""
        if len(self) == 0:
            raise HeimdallError(f"{self.uri}: the store holds no sessions")

    # ------------------------------------------------------------------ writing
    def append_shard(self, index: int, batch: SessionBatch) -> None:
        """Write shard ``index`` completely, then commit it (the commit record is written last).

        Raises
        ------
        HeimdallError
            Shard already committed, empty batch, or session ids duplicated in the batch or in the store.

        """
        index = int(index)
        if index < 0:
            raise HeimdallError(f"shard index must be >= 0, got {index}")
        if index in self.committed_shards():
            raise HeimdallError(f"{self.uri}: shard {index} is already committed")
        batch.validate()
        if batch.n_sessions == 0:
            raise HeimdallError(f"{self.uri}: shard {index} has no sessions")
        self._check_new_ids(batch.session_id)
        digests = session_digests(batch)
        rel = f"shards/{index:06d}-{secrets.token_hex(4)}"
        shard = self._inside(rel, self.uri, "store layout")  # a linked shards/ folder is refused
        self._zarr.write_iq(join(shard, "iq.zarr"), batch.iq)
        sessions, receivers = _tables_of(batch, digests)
        self.fs.pipe_file(join(shard, "sessions.parquet"), _parquet_bytes(sessions))
        self.fs.pipe_file(join(shard, "receivers.parquet"), _parquet_bytes(receivers))
        record = {
            "index": index, "dir": rel, "n_sessions": batch.n_sessions, "n_receivers": batch.n_receivers,
            "n_samples": batch.n_samples, "id_min": int(batch.session_id.min()),
            "id_max": int(batch.session_id.max()), "iq_bytes": int(batch.iq.nbytes),
        }  # fmt: skip
        self._put_atomic(f"commits/{index:06d}.json", json.dumps(record).encode())
        known = self._known_ids
        self._set_commits([*self._commits, record])
        if known is not None:
            self._known_ids = np.union1d(known, batch.session_id)

    def _check_new_ids(self, ids: np.ndarray) -> None:
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise HeimdallError(
                f"{self.uri}: duplicate session ids in the new shard: {uniq[counts > 1][:5].tolist()}"
            )
        lo, hi = int(ids.min()), int(ids.max())
        overlapping = [
            p for p, c in enumerate(self._commits) if int(c["id_min"]) <= hi and int(c["id_max"]) >= lo
        ]
        if not overlapping:
            return
        if self._known_ids is None:
            self._known_ids = np.unique(
                np.concatenate([self._session_table(p)["session_id"] for p in overlapping])
            )
        dup = np.intersect1d(ids, self._known_ids)
        if dup.size:
            raise HeimdallError(f"{self.uri}: session ids already in the store: {dup[:5].tolist()}")

    # ------------------------------------------------------------------ reading
    def _shard_file(self, pos: int, name: str) -> str:
        """File ``name`` of committed shard ``pos``, checked to stay inside the store."""
        rec = self._commits[pos]
        source = self._path("commits", f"{int(rec['index']):06d}.json")
        return self._inside(f"{str(rec['dir']).rstrip('/')}/{name}", source, "dir")

    def _tables_at(self, pos: int) -> tuple[pa.Table, pa.Table]:
        if pos not in self._tables:
            rel = self._commits[pos]["dir"]
            paths = [self._shard_file(pos, "sessions.parquet"), self._shard_file(pos, "receivers.parquet")]
            try:
                blobs = self.fs.cat(paths)
                self._tables[pos] = (pq.read_table(io.BytesIO(blobs[paths[0]])),
                                     pq.read_table(io.BytesIO(blobs[paths[1]])))  # fmt: skip
            except (FileNotFoundError, KeyError, pa.ArrowInvalid) as exc:
                raise HeimdallError(f"{self._path(rel)}: shard tables missing or corrupt ({exc})") from None
        return self._tables[pos]

    def _session_table(self, pos: int) -> dict[str, np.ndarray]:
        sessions, _ = self._tables_at(pos)
        return {name: sessions.column(name).to_numpy() for name in sessions.column_names}

    def _batch_at(self, pos: int, rows: np.ndarray | None) -> SessionBatch:
        """Shard ``pos`` (all rows, or ``rows`` of it) as a SessionBatch."""
        rec = self._commits[pos]
        sessions, receivers = self._tables_at(pos)
        iq = self._zarr.read_iq(self._shard_file(pos, "iq.zarr"), rows)
        return _batch_of(sessions, receivers, iq, int(rec["n_receivers"]), rows)

    def _shard(self, pos: int) -> SessionBatch:
        if pos in self._cache:
            self._cache.move_to_end(pos)
            return self._cache[pos]
        batch = self._batch_at(pos, None)
        self._cache[pos] = batch
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return batch

    def iter_shards(self, prefetch: bool = False) -> Iterator[SessionBatch]:
        """Stream the dataset shard by shard, in shard order (each shard keeps its own receiver count).

        ``prefetch``: the next shard is read in a background thread while the caller works
        on this one (reading and decompressing IQ overlaps the caller's numpy work, both
        mostly outside the GIL); a caller that stops early has had one shard read in vain.
        """
        shards = (
            self._cache[pos] if pos in self._cache else self._batch_at(pos, None)
            for pos in range(len(self._commits))
        )
        if not prefetch:
            yield from shards
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            ahead = pool.submit(next, shards, None)
            while (batch := ahead.result()) is not None:
                ahead = pool.submit(next, shards, None)
                yield batch

    def read(self, indices: Sequence[int] | np.ndarray) -> SessionBatch:
        """Sessions at global positions ``indices`` (0 .. len-1), in the order given.

        Shards with fewer receiver slots are padded with offline slots to the largest count.

        Raises
        ------
        HeimdallError
            No sessions in the store, index out of range, or sessions of different capture lengths.

        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.require_sessions()
        n = len(self)
        if idx.size == 0:
            raise HeimdallError("read() needs at least one session index")
        if idx.min() < 0 or idx.max() >= n:
            raise HeimdallError(
                f"session index out of range 0..{n - 1}: {int(idx[(idx < 0) | (idx >= n)][0])}"
            )
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        parts: list[SessionBatch] = []
        where: list[np.ndarray] = []
        for pos in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == pos)
            local = idx[sel] - self._starts[pos]
            size = int(self._commits[pos]["n_sessions"])
            if pos in self._cache or np.unique(local).size >= _FULL_SHARD_FRACTION * size:
                parts.append(self._shard(int(pos)).select(local))
            else:
                rows = np.unique(local)
                part = self._batch_at(int(pos), rows)
                parts.append(part.select(np.searchsorted(rows, local)))
            where.append(sel)
        batch = SessionBatch.concat_padded(parts)
        order = np.empty(idx.size, dtype=np.int64)
        order[np.concatenate(where)] = np.arange(idx.size)
        return batch if np.array_equal(order, np.arange(idx.size)) else batch.select(order)

    def read_all(self) -> SessionBatch:
        """Every session in one batch (small datasets only); HeimdallError when there are none."""
        self.require_sessions()
        return SessionBatch.concat_padded(list(self.iter_shards()))

    def sessions_table(self) -> pa.Table:
        """Per-session fields of all shards (plus ``digest``), in dataset order (no rows when empty)."""
        if not self._commits:
            return _empty_tables()[0]
        return pa.concat_tables([self._tables_at(p)[0] for p in range(len(self._commits))])

    def receivers_table(self) -> pa.Table:
        """Per (session, slot) receiver fields of all shards, in dataset order (no rows when empty)."""
        if not self._commits:
            return _empty_tables()[1]
        return pa.concat_tables([self._tables_at(p)[1] for p in range(len(self._commits))])

    def session_digests(self) -> list[bytes]:
        """Content digest of each session, in dataset order."""
        out: list[bytes] = []
        for p in range(len(self._commits)):
            out.extend(self._tables_at(p)[0].column("digest").to_pylist())
        return out

    def content_hash(self) -> str:
        """SHA-256 over the sessions' content (IQ and tables) in order; not over metadata or provenance."""
        return dataset_hash(self.session_digests())


# ---------------------------------------------------------------------- table codecs
def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _tables_of(batch: SessionBatch, digests: list[bytes]) -> tuple[pa.Table, pa.Table]:
    sessions = {name: pa.array(getattr(batch, name)) for name in SessionBatch.SESSION_FIELDS}
    sessions["digest"] = pa.array(digests, type=pa.binary(32))
    b, r = batch.n_sessions, batch.n_receivers
    receivers: dict[str, pa.Array] = {
        "session_id": pa.array(np.repeat(batch.session_id, r)),
        "slot": pa.array(np.tile(np.arange(r, dtype=np.int16), b)),
    }
    for name in SessionBatch.RECEIVER_FIELDS:
        arr = getattr(batch, name).reshape(-1)
        receivers[name] = (
            pa.array(arr.astype(str).tolist(), type=pa.string()) if name == "rx_station" else pa.array(arr)
        )
    return pa.table(sessions), pa.table(receivers)


def _empty_tables() -> tuple[pa.Table, pa.Table]:
    """The session and receiver tables of a store without sessions: the columns, no rows."""
    arrays: dict[str, np.ndarray] = {
        name: np.empty((0,) if name in SessionBatch.SESSION_FIELDS else (0, 0), dtype=dtype)
        for name, dtype in FIELD_DTYPES.items()
    }
    arrays["iq"] = np.empty((0, 0, 0, 2), dtype=FIELD_DTYPES["iq"])
    arrays["rx_station"] = np.empty((0, 0), dtype=np.str_)
    arrays["network_id"] = np.empty((0,), dtype=np.str_)
    return _tables_of(SessionBatch.from_arrays(arrays), [])


def _batch_of(
    sessions: pa.Table, receivers: pa.Table, iq: np.ndarray, n_receivers: int, rows: np.ndarray | None
) -> SessionBatch:
    arrays: dict[str, np.ndarray] = {}
    srows = sessions if rows is None else sessions.take(pa.array(rows))
    for name in SessionBatch.SESSION_FIELDS:
        if name in srows.column_names:  # optional columns (network_id ...) are absent from older stores
            arrays[name] = srows.column(name).to_numpy(zero_copy_only=False)
    if rows is None:
        rrows = receivers
    else:
        ridx = (rows[:, None] * n_receivers + np.arange(n_receivers)[None, :]).reshape(-1)
        rrows = receivers.take(pa.array(ridx))
    b = srows.num_rows
    for name in SessionBatch.RECEIVER_FIELDS:
        if name not in rrows.column_names:  # optional columns are absent from older stores
            continue
        col = rrows.column(name)
        values = np.array(col.to_pylist(), dtype=str) if name == "rx_station" else col.to_numpy()
        arrays[name] = values.reshape(b, n_receivers)
    arrays["iq"] = iq
    return SessionBatch.from_arrays(arrays)
