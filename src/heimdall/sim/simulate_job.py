"""The ``simulate`` job: world + seeds -> a resumable session store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from heimdall.data.store import SessionStore
from heimdall.network import load_network
from heimdall.sim.runner import SimulationSpec, iter_shards
from heimdall.sim.world import load_world


def run_simulation(
    out: str,
    network: str,
    sessions: int,
    world_seed: int,
    seed: int,
    world_path: Path | None = None,
    synchronised: bool = False,
    duration_s: float | None = None,
    shard_size: int = 256,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Simulate ``sessions`` sessions into the store at ``out``; resumes committed shards.

    ``out`` is a local folder or ``s3://bucket/prefix`` (``storage_options``: endpoint,
    credentials, region; else the AWS_* environment). Shard ``k`` holds sessions
    ``k*shard_size ..``; a rerun with the same arguments appends only the shards
    that were not committed, so an interrupted run completes without duplicates.

    Returns a summary: sessions, shards, resumed shards, content hash.
    """
    net = load_network(network)
    config = load_world(world_path)
    changes: dict[str, Any] = {}
    if synchronised:
        changes["synchronised"] = True
    if duration_s is not None:
        changes["duration_s"] = duration_s
    if changes:
        config = config.with_overrides(**changes)
    metadata = {
        "network": net.model_dump(mode="json"),
        "world": config.model_dump(mode="json"),
        "world_seed": world_seed,
        "session_seed": seed,
        "sessions": sessions,
        "shard_size": shard_size,
    }
    store = SessionStore.create(out, metadata, storage_options=storage_options)
    done = set(store.committed_shards())
    first = 0
    while first in done:
        first += 1
    if progress is not None and done:
        progress(len(store))
    spec = SimulationSpec(net, config, world_seed, seed)
    with store:
        for index, batch in iter_shards(spec, sessions, shard_size, first, workers, progress):
            if index not in done:
                store.append_shard(index, batch)
        return {
            "sessions": len(store),
            "shards": len(store.committed_shards()),
            "resumed_shards": len(done),
            "content_hash": store.content_hash(),
        }
