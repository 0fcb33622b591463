"""Benchmark: ``radio_map_kriging`` against the table of the experiment that opened issue 10.

Usage::

    .venv/bin/python bench/experiment.py [--worlds 101,102,103] [--n 300,3000,20000]
        [--n-max-worlds 1] [--test 500] [--world configs/world-one-field.yaml]
        [--out bench-out/experiment]

That experiment (plain kriging of each receiver's residuals, transmit power re-estimated per
session, then the oracle's grid posterior with the kriged maps) gave, on 500 uniform test
sessions of one world with uniformly placed labels, the posterior-mean / MAP median errors of
:data:`ISSUE_TABLE`. It was measured before the per-band fields and site noise existed, so
the default world here is ``configs/world-one-field.yaml`` (one field and one gain for both
bands, no site-noise offset or wander; the reference world otherwise).

Per world seed: simulates (resumable) max(N) uniform labelled sessions (session seed 7003,
as ``bench/adapt.py --labels uniform``) and ``--test`` uniform test sessions (seed 7002),
fits ``radio_map_kriging`` to the first N labels (the code of ``heimdall evaluate
--labelled``: :func:`heimdall.maps.fit.fit_radio_map`, everything estimated from the labels)
and scores it beside the oracle through ``evaluate_store``. The largest N runs only on the
first ``--n-max-worlds`` worlds (20,000 labels take about 3 min per world on 2 cores).
Prints each cell with its deviation from the table and writes ``<out>/experiment.json``;
every cell is cached there (rerunning skips what is done).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from adapt import _simulate, _write_json  # bench/adapt.py

from heimdall.eval.evaluate import evaluate_store
from heimdall.eval.metrics import errors_km
from heimdall.maps.config import MapsConfig
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.observations import observations_from_store
from heimdall.sim import load_world

#: The issue's table: N → (posterior-mean median km, MAP median km); "oracle" its world's oracle.
ISSUE_TABLE: dict[str, tuple[float, float]] = {
    "300": (27.7, 26.8),
    "3000": (20.4, 14.5),
    "20000": (17.8, 8.6),
    "oracle": (14.5, 5.1),
}


def _medians(est: Any, mode: Any, truth: np.ndarray) -> list[float]:
    return [float(np.median(errors_km(est, truth))), float(np.median(errors_km(mode, truth)))]


def world_cells(world: int, ns: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """One world's cells: the oracle and ``radio_map_kriging`` at each N (cached per cell)."""
    root = Path(args.out) / f"w{world}"
    root.mkdir(parents=True, exist_ok=True)
    cache = root / "cells.json"
    cells: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    wpath = Path(args.world)
    lab = _simulate(
        root / f"labelled-{max(ns)}", "nw-italy", max(ns), world, 7003, "uniform", args.workers, wpath
    )
    test = _simulate(
        root / f"test-{args.test}", "nw-italy", args.test, world, 7002, "uniform", args.workers, wpath
    )
    if "oracle" not in cells:
        res = evaluate_store(test, None, ["oracle"])
        cells["oracle"] = _medians(
            res.estimates["oracle_mean"], res.map_estimates["oracle_mean"], res.truth_km
        )
        _write_json(cache, cells)
    todo = [n for n in ns if str(n) not in cells]
    if todo:
        wcfg = load_world(wpath)
        cfg = MapsConfig(power_range_dbm=(wcfg.tx_power_dbm_min, wcfg.tx_power_dbm_max))
        obs_all, net = observations_from_store(lab)
        for n in todo:
            t = time.perf_counter()
            fitted = fit_radio_map(obs_all.select(slice(0, n)), net, cfg)
            res = evaluate_store(test, None, [], radio_map=RadioMapLocator(fitted))
            name = "radio_map_kriging"
            cells[str(n)] = _medians(res.estimates[name], res.map_estimates[name], res.truth_km)
            print(f"world {world}, N = {n}: {time.perf_counter() - t:.0f} s", flush=True)
            _write_json(cache, cells)
    return cells


def _dev(value: float, ref: float) -> str:
    return f"{value:5.1f} ({100.0 * (value / ref - 1.0):+4.0f} %)"


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """Each cell beside the issue's table, with its deviation in per cent."""
    cols = [k for k in ISSUE_TABLE if any(k in cells for cells in results.values())]
    print("\nradio_map_kriging, posterior-mean / MAP median km (deviation from the issue's table)")
    print(f"{'world':<8} " + " ".join(f"{('N = ' + c) if c != 'oracle' else 'oracle':<34}" for c in cols))
    ref = " ".join(f"{f'{ISSUE_TABLE[c][0]:.1f} / {ISSUE_TABLE[c][1]:.1f}':<34}" for c in cols)
    print(f"{'issue':<8} {ref}")
    for world, cells in results.items():
        row = []
        for c in cols:
            if c in cells:
                mean, mode = cells[c]
                row.append(f"{_dev(mean, ISSUE_TABLE[c][0])} / {_dev(mode, ISSUE_TABLE[c][1])}")
            else:
                row.append("–")
        print(f"{world:<8} " + " ".join(f"{r:<34}" for r in row))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", default="101,102,103", help="world seeds of nw-italy")
    p.add_argument("--n", default="300,3000,20000", help="labelled-set sizes (nested)")
    p.add_argument("--n-max-worlds", type=int, default=1, help="worlds that also run the largest N")
    p.add_argument("--test", type=int, default=500, help="uniform test sessions per world")
    p.add_argument("--world", default="configs/world-one-field.yaml", help="world YAML over the reference")
    p.add_argument("--workers", type=int, default=2, help="simulation worker processes")
    p.add_argument("--out", default="bench-out/experiment")
    args = p.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    ns = sorted(int(x) for x in args.n.split(","))
    unknown = sorted(set(map(str, ns)) - set(ISSUE_TABLE))
    if unknown:
        p.error(f"--n {','.join(unknown)}: the issue's table has N = 300, 3000 and 20000 only")
    if not Path(args.world).is_file():
        p.error(f"--world {args.world}: no such file")
    t0 = time.perf_counter()
    results = {}
    for k, world in enumerate(worlds):
        use = ns if k < args.n_max_worlds or len(ns) == 1 else ns[:-1]
        results[str(world)] = world_cells(world, use, args)
    print_table(results)
    wall = time.perf_counter() - t0
    print(f"\nwall time {wall / 60:.1f} min")
    out = {"args": vars(args), "issue_table": ISSUE_TABLE, "worlds": results, "wall_seconds": wall}
    _write_json(Path(args.out) / "experiment.json", out)


if __name__ == "__main__":
    main()
