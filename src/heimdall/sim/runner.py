"""Simulate many sessions in parallel worker processes, in shards.

Sessions are independent (each has its own seeded streams), so splitting the
index range across processes changes nothing in the bytes produced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from heimdall.data.session import SessionBatch
from heimdall.network import Network
from heimdall.network.family import NetworkFamily
from heimdall.sim.family import DEFAULT_BLOCK, Scenarios, WorldSeeds
from heimdall.sim.world import WorldConfig


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate: worlds (network or network family, config, world seeds) and a session seed.

    ``world_seed`` is one seed or a family (``"0-99"``, ``"random"``); ``positions`` the
    transmitter prior (``uniform`` / ``clustered``); ``world_block`` the sessions per drawn world.
    """

    network: Network | NetworkFamily
    config: WorldConfig
    world_seed: int | str
    session_seed: int
    positions: str = "uniform"
    world_block: int = DEFAULT_BLOCK

    def scenarios(self) -> Scenarios:
        """The worlds of this set."""
        return Scenarios(self.network, self.config, WorldSeeds.parse(self.world_seed), self.world_block)


_WORKER: list[tuple[Scenarios, str]] = []  # per worker process: built once by the initializer


def _init_worker(spec: SimulationSpec) -> None:
    _WORKER[:] = [(spec.scenarios(), spec.positions)]


def _simulate_range(session_seed: int, start: int, count: int) -> SessionBatch:
    scenarios, positions = _WORKER[0]
    return scenarios.simulate(count, session_seed, start, positions=positions)


def iter_shards(
    spec: SimulationSpec,
    n_sessions: int,
    shard_size: int,
    first_shard: int = 0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, SessionBatch]]:
    """Yield (shard index, sessions) in shard order, simulating with ``workers`` processes.

    Shard ``k`` holds sessions ``k*shard_size .. min((k+1)*shard_size, n_sessions) - 1``.
    """
    n_shards = -(-n_sessions // shard_size)
    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = max(1, min(64, shard_size))
    if workers <= 1:
        scenarios = spec.scenarios()
        for k in range(first_shard, n_shards):
            start = k * shard_size
            count = min(shard_size, n_sessions - start)
            batch = scenarios.simulate(
                count, spec.session_seed, start, positions=spec.positions, progress=progress
            )
            yield k, batch
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(spec,)) as pool:
        for k in range(first_shard, n_shards):
            start = k * shard_size
            stop = min(start + shard_size, n_sessions)
            futures = [
                pool.submit(_simulate_range, spec.session_seed, s, min(chunk, stop - s))
                for s in range(start, stop, chunk)
            ]
            parts = []
            for fut in futures:
                part = fut.result()
                parts.append(part)
                if progress is not None:
                    progress(part.n_sessions)
            yield k, SessionBatch.concat_padded(parts)
