"""Simulator throughput: sessions/s for 7 receivers x 1 s at 12 kHz (the reference world).

Run: ``.venv/bin/python bench/simulate.py [--sessions N] [--json]``. Prints a table of
sessions/s with 1 and all worker processes, and the share of one session's time spent in
each stage (what bounds the rate), then the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from heimdall.network import load_network
from heimdall.sim import World, load_world
from heimdall.sim.fading import interpolate_gain, rician_gain
from heimdall.sim.runner import SimulationSpec, iter_shards


def _rate(spec: SimulationSpec, n: int, workers: int) -> float:
    start = time.perf_counter()
    count = sum(b.n_sessions for _, b in iter_shards(spec, n, shard_size=n, workers=workers))
    return count / (time.perf_counter() - start)


def _stage_times(world: World, reps: int = 50) -> dict[str, float]:
    """Seconds per session of the main stages, timed in isolation (7 receivers x T samples)."""
    rng = np.random.default_rng(0)
    n_rx, n_t = len(world.network.receivers), world.n_samples
    t = np.arange(n_t) / world.sample_rate_hz
    out: dict[str, float] = {}

    def timed(name: str, fn) -> None:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - start) / reps

    timed("noise (normal draws)", lambda: rng.standard_normal((n_rx, n_t, 2), dtype=np.float32))
    phase = rng.uniform(0, 6.28, size=(n_rx, n_t)).astype(np.float32)
    timed("carrier (cos, sin)", lambda: np.cos(phase) + 1j * np.sin(phase))
    cfg = world.config
    timed(
        "fading (draw + interpolate)",
        lambda: interpolate_gain(
            rician_gain(rng, n_rx, cfg.duration_s, cfg.fading_rate_hz, cfg.rician_k_db, cfg.doppler_hz)[0],
            cfg.fading_rate_hz,
            t,
        ),
    )
    iq = rng.standard_normal((n_rx, n_t, 2)).astype(np.float32) * 0.01
    timed(
        "quantise (round, clip, int16)", lambda: np.clip(np.round(iq * 32768), -32768, 32767).astype(np.int16)
    )
    start = time.perf_counter()
    world.simulate(reps, session_seed=1)
    out["whole session"] = (time.perf_counter() - start) / reps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=600)
    parser.add_argument("--json", action="store_true", help="print only JSON")
    args = parser.parse_args()
    net, cfg = load_network("nw-italy"), load_world()
    spec = SimulationSpec(net, cfg, 0, 1)
    world = World(net, cfg, 0)
    _ = world.static_fields_db  # build the maps outside the timing
    cores = os.cpu_count() or 1
    result = {
        "receivers": len(net.receivers),
        "duration_s": cfg.duration_s,
        "sample_rate_hz": world.sample_rate_hz,
        "cores": cores,
        "sessions_per_s_1_worker": _rate(spec, args.sessions // 2, 1),
        f"sessions_per_s_{cores}_workers": _rate(spec, args.sessions, cores),
        "stage_s_per_session": _stage_times(world),
    }
    if not args.json:
        fs = world.sample_rate_hz
        print(f"simulator: {result['receivers']} receivers x {cfg.duration_s} s at {fs:.0f} Hz")
        print(f"{'workers':>10} {'sessions/s':>12}")
        print(f"{1:>10} {result['sessions_per_s_1_worker']:>12.1f}")
        print(f"{cores:>10} {result[f'sessions_per_s_{cores}_workers']:>12.1f}")
        print(f"\n{'stage':<32} {'ms/session':>10}")
        for name, sec in result["stage_s_per_session"].items():
            print(f"{name:<32} {sec * 1e3:>10.2f}")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
