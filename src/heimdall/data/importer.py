"""Write imported sessions (SigMF, acquisition layout) into a session store, shard by shard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from heimdall.data.raw import (
    RawSession,
    assemble,
    check_sample_rate,
    check_session,
    check_unique_ids,
    chunks,
    common_length,
)
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError


def import_sessions(
    sessions: list[RawSession],
    out: str,
    metadata: dict[str, Any],
    shard_size: int = 64,
    rate_hz: float | None = None,
    n_samples: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Check, assemble and store ``sessions`` at ``out`` (a new store; resumes an identical import).

    Parameters
    ----------
    sessions
        Sessions read by an importer, in the order they are stored.
    out
        Store URI (local folder or ``s3://bucket/prefix``).
    metadata
        Store metadata (source, optional ``network`` / ``world``).
    shard_size
        Sessions per shard.
    rate_hz
        Sample rate every session is resampled to, Hz (default: each session's lowest); the
        ``--sample-rate`` option, refused outside 1 kHz .. 10 MHz.
    n_samples
        Capture length T kept, samples (default: the shortest capture of the import).
    storage_options
        Object-store options (endpoint, credentials, region).
    progress
        Called with the number of sessions written after each shard.

    Returns
    -------
    dict
        ``sessions``, ``shards``, ``n_samples``, ``content_hash``.

    """
    if shard_size < 1:
        raise HeimdallError(f"shard size must be >= 1, got {shard_size}")
    if rate_hz is not None:
        check_sample_rate(rate_hz, "--sample-rate")
    for s in sessions:
        check_session(s)
    check_unique_ids(sessions)
    t = common_length(sessions, rate_hz, n_samples)
    meta = {**metadata, "n_samples": t, "sample_rate_hz": rate_hz}
    with SessionStore.create(out, meta, storage_options=storage_options) as store:
        done = set(store.committed_shards())
        for k, group in enumerate(chunks(sessions, shard_size)):
            if k not in done:
                store.append_shard(k, assemble(group, t, rate_hz))
            if progress is not None:
                progress(len(group))
        return {
            "sessions": len(store),
            "shards": len(store.committed_shards()),
            "n_samples": t,
            "content_hash": store.content_hash(),
        }
