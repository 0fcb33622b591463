"""Benchmark: every baseline, the CRLB and the oracle check on the stored reference test sets.

Usage::

    .venv/bin/python bench/evaluate.py [--data data/ref-test] [--sync data/sync-test]
        [--limit 2000] [--out bench-out/evaluate] [--model CHECKPOINT]

Create the sets first (if missing)::

    heimdall simulate --network nw-italy --world-seed 0 --seed 1000 --sessions 2000 --out data/ref-test
    heimdall simulate --network nw-italy --world-seed 0 --synchronised --seed 1002 --sessions 500 \\
        --out data/sync-test

Prints a table per set, the wall time of the 2,000-session run (target: < 2 minutes on
2 cores for all baselines), and the JSON reports.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from heimdall.eval.job import run_evaluation


def _table(report: dict) -> str:
    cols = ("median_km", "mean_km", "p90_km", "rmse_km", "coverage_1sigma", "coverage_2sigma", "nll",
            "ellipse_area_km2_median")  # fmt: skip
    lines = [f"{'estimator':<18}{'n':>6}" + "".join(f"{c:>14}" for c in cols)]
    for name, m in report["estimators"].items():
        cells = "".join(f"{'—':>14}" if m[c] is None else f"{m[c]:>14.3f}" for c in cols)
        lines.append(f"{name:<18}{m['n']:>6}" + cells)
    crlb = report["crlb_rmse_km"]
    lines.append(
        f"RSS CRLB RMSE: median {crlb['median']:.2f} km, mean {crlb['mean']:.2f} km, "
        f"singular {crlb['singular']}"
    )
    if report.get("tdoa_crlb_rmse_km"):
        t = report["tdoa_crlb_rmse_km"]
        lines.append(
            f"TDOA CRLB RMSE: median {t['median']:.4f} km, mean {t['mean']:.4f} km, singular {t['singular']}"
        )
    hpd = report["oracle_hpd_coverage"]
    if hpd["p393"] is not None:
        lines.append(
            f"oracle HPD coverage: {hpd['p393']:.3f} (nominal 0.393), {hpd['p865']:.3f} (nominal 0.865); "
            f"check passed: {report.get('oracle_check_passed')}"
        )
    if report.get("model_minus_rss_ml_median_km"):
        b = report["model_minus_rss_ml_median_km"]
        lines.append(
            f"model − rss_ml median error: {b['diff_km']:.2f} km, "
            f"95 % CI [{b['ci95_low_km']:.2f}, {b['ci95_high_km']:.2f}]"
        )
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings_s"].items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="data/ref-test")
    parser.add_argument("--sync", default="data/sync-test")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--out", default="bench-out/evaluate")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    results = {}
    start = time.perf_counter()
    results["ref"] = run_evaluation(
        args.data, os.path.join(args.out, "ref"), model=args.model, limit=args.limit
    )
    wall = time.perf_counter() - start
    print(
        f"== {args.data}: {results['ref']['n']} sessions, all baselines, "
        f"{wall:.1f} s wall (cpus: {os.cpu_count()})"
    )
    print(_table(results["ref"]))
    if args.sync and os.path.exists(args.sync):
        start = time.perf_counter()
        results["sync"] = run_evaluation(
            args.sync, os.path.join(args.out, "sync"), model=None, limit=args.limit
        )
        print(f"== {args.sync}: {results['sync']['n']} sessions, {time.perf_counter() - start:.1f} s wall")
        print(_table(results["sync"]))
    results["ref"]["wall_s"] = round(wall, 1)
    keys = (
        "n",
        "estimators",
        "oracle_hpd_coverage",
        "crlb_rmse_km",
        "tdoa_crlb_rmse_km",
        "timings_s",
        "wall_s",
    )
    print(json.dumps({k: {kk: v.get(kk) for kk in keys} for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
