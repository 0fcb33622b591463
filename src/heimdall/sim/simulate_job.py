"""The ``simulate`` job: world + seeds -> a resumable session store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from heimdall.data.session import MODES
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.sim.aprs_traffic import world_overrides
from heimdall.sim.family import DEFAULT_BLOCK, parse_network_source
from heimdall.sim.positions import PRIORS
from heimdall.sim.runner import SimulationSpec, iter_shards
from heimdall.sim.world import MAX_DURATION_S, load_world


def run_simulation(
    out: str,
    network: str,
    sessions: int,
    world_seed: int | str,
    seed: int,
    world_path: Path | None = None,
    synchronised: bool = False,
    duration_s: float | None = None,
    shard_size: int = 256,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    storage_options: dict[str, Any] | None = None,
    positions: str = "uniform",
    world_block: int = DEFAULT_BLOCK,
    mode: str | None = None,
) -> dict[str, Any]:
    """Simulate ``sessions`` sessions into the store at ``out``; resumes committed shards.

    ``out`` is a local folder or ``s3://bucket/prefix`` (``storage_options``: endpoint,
    credentials, region; else the AWS_* environment). Shard ``k`` holds sessions
    ``k*shard_size ..``; a rerun with the same arguments appends only the shards
    that were not committed, so an interrupted run completes without duplicates.

    ``network`` is a packaged name, a YAML path or ``family:<name or path>``;
    ``world_seed`` one seed, a range ``"0-99"`` or ``"random"``; with a family, each
    block of ``world_block`` sessions draws its world and network (``heimdall.sim.family``)
    and every session records its ``world_seed`` and ``network_id``. ``positions`` is the
    transmitter prior (``uniform`` or ``clustered``, ``heimdall.sim.positions``).

    Returns a summary: sessions, shards, resumed shards, content hash.
    """
    if positions not in PRIORS:
        raise HeimdallError(f"--positions {positions!r}: give one of {', '.join(PRIORS)}")
    if mode is not None and mode not in MODES:
        raise HeimdallError(f"--mode {mode!r}: give one of {', '.join(MODES)}")
    if duration_s is not None and not 0.0 < duration_s <= MAX_DURATION_S:  # False for NaN
        raise HeimdallError(f"--duration-s must be in (0, {MAX_DURATION_S:g}] s, got {duration_s}")
    net = parse_network_source(network)
    config = load_world(world_path)
    changes: dict[str, Any] = {}
    if synchronised:
        changes["synchronised"] = True
    if duration_s is not None:
        changes["duration_s"] = duration_s
    if mode == "aprs":  # APRS packets on 144.800 MHz (heimdall.sim.aprs_traffic)
        changes.update(world_overrides())
    elif mode is not None:
        changes["mode_probs"] = {mode: 1.0}
    if changes:
        config = config.with_overrides(**changes)
    spec = SimulationSpec(net, config, world_seed, seed, positions, world_block)
    scenarios = spec.scenarios()
    family = scenarios.describe()
    metadata = {
        "network": None if family["network_family"] else net.model_dump(mode="json"),
        "world": config.model_dump(mode="json"),
        "world_seed": scenarios.world_seeds.lo if scenarios.world_seeds.fixed else None,
        "session_seed": seed,
        "sessions": sessions,
        "shard_size": shard_size,
        "positions": positions,
        "session_stream": "stored",
        **family,
    }
    store = SessionStore.create(out, metadata, storage_options=storage_options)
    done = set(store.committed_shards())
    first = 0
    while first in done:
        first += 1
    if progress is not None and done:
        progress(len(store))
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
