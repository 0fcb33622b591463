"""Split a store by session into train / val / test stores (seeded, resumable)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1); three non-negative numbers summing to 1 (±1e-6)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise HeimdallError(f"--fractions {text!r}: expected three numbers like 0.8,0.1,0.1") from None
    if len(values) != len(SPLIT_NAMES) or any(v < 0 or not np.isfinite(v) for v in values):
        raise HeimdallError(f"--fractions {text!r}: expected three non-negative numbers (train,val,test)")
    if abs(sum(values) - 1.0) > 1e-6:
        raise HeimdallError(f"--fractions {text!r}: must sum to 1, got {sum(values):g}")
    return values


def check_seed(seed: int) -> None:
    """Refuse a seed numpy cannot seed a generator with (negative), naming ``--seed``."""
    if seed < 0:
        raise HeimdallError(f"--seed must be >= 0, got {seed}")


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Session positions of each split: a seeded permutation cut at rounded cumulative fractions, sorted.

    Raises
    ------
    HeimdallError
        A negative ``seed``.

    """
    check_seed(seed)
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions) * n).astype(np.int64)
    cuts[-1] = n
    bounds = np.concatenate([[0], cuts])
    return [np.sort(perm[bounds[k] : bounds[k + 1]]) for k in range(len(fractions))]


def split_store(
    uri: str,
    prefix: str,
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    shard_size: int = 256,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``prefix/train``, ``prefix/val``, ``prefix/test`` holding disjoint sessions of ``uri``.

    Returns per split: sessions and content hash.
    """
    if shard_size < 1:
        raise HeimdallError(f"shard size must be >= 1, got {shard_size}")
    check_seed(seed)
    src = SessionStore.open(uri, storage_options)
    src.require_sessions()
    parts = split_indices(len(src), fractions, seed)
    source_hash = src.content_hash()
    summary: dict[str, Any] = {"source": uri, "source_hash": source_hash, "seed": seed}
    for name, idx, frac in zip(SPLIT_NAMES, parts, fractions, strict=True):
        meta = {**src.metadata, "split": {"name": name, "of": source_hash, "fraction": frac, "seed": seed}}
        out = prefix.rstrip("/") + "/" + name
        with SessionStore.create(out, meta, storage_options=storage_options) as dst:
            done = set(dst.committed_shards())
            for k, start in enumerate(range(0, idx.size, shard_size)):
                chunk = idx[start : start + shard_size]
                if k not in done:
                    dst.append_shard(k, src.read(chunk))
                if progress is not None:
                    progress(int(chunk.size))
            summary[name] = {"uri": out, "sessions": len(dst), "content_hash": dst.content_hash()}
    src.close()
    return summary
