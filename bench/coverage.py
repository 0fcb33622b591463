"""Benchmark: is the adapted model's HPD coverage off by more than its sampling noise?

Usage::

    .venv/bin/python bench/coverage.py --model CKPT [--worlds 101,102,103,ring-munich:101]
        [--network nw-italy] [--n 300,3000,10000] [--test 3000] [--test-seed 7012]
        [--root bench-out/adapt] [--out bench-out/coverage] [--workers 2]

``bench/adapt.py`` scores 1,000 test sessions per world; a coverage there has a sampling
standard deviation of 1.6 points at 50 % and 0.95 at 90 %, so a cell a little outside ±3
points may be noise or a real miscalibration. This bench re-measures the adapted model's HPD
coverage on ``--test`` other uniform test sessions (session seed ``--test-seed``, not the
bench's 7002) with the same maps: ``map fit --model CKPT`` of the first N labelled sessions
that ``bench/adapt.py`` simulated under ``--root`` (run it first), the model adapted to them
through ``evaluate_store`` (the code of ``heimdall evaluate``). It prints each coverage with
its 95 % binomial interval (Wilson 1927) and the median errors; the test stores go under
``--out`` (resumable) and the table to ``<out>/coverage.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from adapt import _simulate, _write_json, load_model, maps_config, model_map_config, parse_worlds
from scipy.stats import binomtest

from heimdall.data.store import SessionStore
from heimdall.eval.evaluate import evaluate_store
from heimdall.eval.metrics import errors_km
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.observations import observations_from_store


def wilson_interval(k: int, n: int) -> tuple[float, float]:
    """95 % score interval of a binomial proportion k / n (Wilson, JASA 22: 209, 1927)."""
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def world_rows(world: tuple[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Coverage rows of one world at each N (one process; single-threaded numpy and torch)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    network, seed = world
    lab = Path(args.root) / f"{network}-w{seed}" / "labelled-clustered"
    if not (lab / "heimdall-store.json").exists():
        raise SystemExit(f"{lab}: no labelled store; run bench/adapt.py for this world first")
    out = Path(args.out) / f"{network}-w{seed}"
    test = _simulate(out / f"test-s{args.test_seed}", network, args.test, seed, args.test_seed, "uniform", 1)
    if len(SessionStore.open(test)) != args.test:
        raise SystemExit(f"{test}: holds {len(SessionStore.open(test))} sessions, not --test {args.test}")
    model, _, _ = load_model(args.model, Path(args.out))
    cfg = model_map_config(maps_config(SessionStore.open(str(lab)), args), model)
    obs_all, net = observations_from_store(str(lab), detection_snr_db=cfg.detection_snr_db)
    rows = {}
    for n in sorted(int(x) for x in args.n.split(",")):
        t = time.perf_counter()
        res = evaluate_store(test, model.adapt(fit_radio_map(obs_all.select(slice(0, n)), net, cfg)), [])
        level = res.posteriors["model"].hpd_level
        ok = np.isfinite(level)
        row: dict[str, Any] = {
            "sessions": int(ok.sum()),
            "median_km": float(np.median(errors_km(res.estimates["model"], res.truth_km))),
            "map_median_km": float(np.median(errors_km(res.map_estimates["model"], res.truth_km))),
            "seconds": time.perf_counter() - t,
        }
        for p in (50, 90):
            k = int(np.sum(level[ok] <= p / 100))
            lo, hi = wilson_interval(k, int(ok.sum()))
            row[f"hpd_coverage_{p}"] = k / ok.sum()
            row[f"hpd_coverage_{p}_ci95"] = [lo, hi]
        rows[str(n)] = row
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="grid-posterior checkpoint (its law: the map's prior)")
    p.add_argument("--worlds", default="101,102,103,ring-munich:101")
    p.add_argument("--network", default="nw-italy")
    p.add_argument("--n", default="300,3000,10000", help="labelled sessions (nested), comma-separated")
    p.add_argument("--test", type=int, default=3000, help="uniform test sessions per world")
    p.add_argument("--test-seed", type=int, default=7012, help="their session seed (bench/adapt.py: 7002)")
    p.add_argument("--root", default="bench-out/adapt", help="where bench/adapt.py simulated the labels")
    p.add_argument("--out", default="bench-out/coverage")
    p.add_argument("--workers", type=int, default=2, help="worlds at once, one process each")
    args = p.parse_args()
    if args.test_seed == 7002:
        raise SystemExit("--test-seed 7002 is bench/adapt.py's test set; choose another seed")
    args.maps_overrides = {}
    worlds = parse_worlds(args.worlds, args.network)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = dict(zip((f"{w[0]} {w[1]}" for w in worlds),
                           pool.map(world_rows, worlds, [args] * len(worlds)), strict=True))  # fmt: skip
    print(f"\nadapted model, {args.test} uniform test sessions per world (seed {args.test_seed}); "
          f"HPD coverage % [95 % interval]")  # fmt: skip
    print(f"{'world':<18} {'N':>6} {'sessions':>9} {'mean / MAP km':>14} {'HPD 50 %':>20} {'HPD 90 %':>20}")
    for name, rows in results.items():
        for n, r in rows.items():
            c50, c90 = r["hpd_coverage_50_ci95"], r["hpd_coverage_90_ci95"]
            print(f"{name:<18} {n:>6} {r['sessions']:>9} {r['median_km']:>6.1f} / {r['map_median_km']:<5.1f} "
                  f"{100 * r['hpd_coverage_50']:>5.1f} [{100 * c50[0]:.1f}, {100 * c50[1]:.1f}] "
                  f"{100 * r['hpd_coverage_90']:>7.1f} [{100 * c90[0]:.1f}, {100 * c90[1]:.1f}]")  # fmt: skip
    print(f"\nwall time {(time.perf_counter() - t0) / 60:.1f} min")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    table = {"args": vars(args), "worlds": results}
    _write_json(Path(args.out) / "coverage.json", table)


if __name__ == "__main__":
    main()
