"""Benchmark: wall time of ``heimdall evaluate`` (model and all baselines), idle and beside a CPU hog.

Usage::

    .venv/bin/python bench/evaluate_speed.py [--data data/ref-test] [--limit 2000]
        [--model CHECKPOINT_OR_ONNX] [--config configs/full.yaml] [--conditions idle,busy]
        [--out bench-out/evaluate-speed]

Each condition runs the real command line (``python -m heimdall.cli evaluate --model …
--data … --baselines all``, report and plots included) in a fresh process:

- ``idle``: nothing else started by the benchmark (the machine's load average is printed:
  on a shared machine "idle" is what the others leave);
- ``busy``: the benchmark first starts one CPU-bound process (a Python busy loop) and
  stops it afterwards.

Without ``--model`` an untrained model with the architecture of ``--config`` is saved and
used: inference costs the same as a trained one's. ``--data`` is simulated (world 0,
session seed 1000) when missing. Targets (docs/EVALUATION.md): 2,000 sessions in ≤ 120 s
idle and ≤ 240 s busy. Prints a table, then the JSON of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = {"idle": 120.0, "busy": 240.0}


def _untrained_model(config: str, path: Path) -> str:
    """Save an untrained model with ``config``'s architecture in the nw-italy frame."""
    import torch

    from heimdall.models.config import load_config
    from heimdall.models.net import LocalizationNet, NetConfig
    from heimdall.models.predict import save_model
    from heimdall.network import load_network

    torch.manual_seed(0)
    net = load_network("nw-italy")
    cfg = load_config(config)
    model = LocalizationNet(
        NetConfig(n_samples=12000, sample_rate_hz=12000.0, **cfg.model.model_dump()),
        metadata={"ref_lat": net.reference.lat, "ref_lon": net.reference.lon,
                  "n_samples": 12000, "sample_rate_hz": 12000.0},
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, path)
    return str(path)


def _ensure_data(data: str, sessions: int) -> None:
    if Path(data).exists():
        return
    from heimdall.sim.simulate_job import run_simulation

    print(f"simulating {sessions} sessions into {data} ...", flush=True)
    run_simulation(out=data, network="nw-italy", sessions=sessions, world_seed=0, seed=1000)


def _run(condition: str, data: str, model: str, limit: int, out: Path) -> dict:
    hog = None
    if condition == "busy":
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "heimdall.cli", "evaluate", "--model", model, "--data", data,
           "--out", str(out / condition), "--baselines", "all", "--limit", str(limit), "--json"]  # fmt: skip
    start = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # evaluate only: the hog is not reaped yet
    finally:
        if hog is not None:
            hog.terminate()
            hog.wait()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{condition}: evaluate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout)
    return {
        "condition": condition,
        "sessions": report["n"],
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "target_s": TARGET_S[condition],
        "met": wall <= TARGET_S[condition],
        "load_avg_1min_before": round(load_before, 2),
        "load_avg_1min_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "timings_s": {k: round(v, 1) for k, v in report["timings_s"].items()},
        "model_ms_per_session": round(1000.0 * report["timings_s"].get("model", 0.0) / report["n"], 2),
        "oracle_hpd_coverage": report.get("oracle_hpd_coverage"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="data/ref-test")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--config", default="configs/full.yaml")
    parser.add_argument("--conditions", default="idle,busy")
    parser.add_argument("--out", default="bench-out/evaluate-speed")
    args = parser.parse_args()
    out = Path(args.out)
    _ensure_data(args.data, args.limit)
    model = args.model or _untrained_model(args.config, out / "untrained.pt")
    rows = [_run(c.strip(), args.data, model, args.limit, out) for c in args.conditions.split(",")]
    stages = sorted({k for r in rows for k in r["timings_s"]})
    head = (
        f"{'condition':<10}{'sessions':>9}{'wall s':>9}{'cpu s':>8}{'target':>8}{'load':>7}{'model ms/s':>11}"
    )
    widths = [max(9, len(s) + 2) for s in stages]
    print(head + "".join(f"{s:>{w}}" for s, w in zip(stages, widths, strict=True)))
    for r in rows:
        cells = "".join(f"{r['timings_s'].get(s, 0.0):>{w}.1f}" for s, w in zip(stages, widths, strict=True))
        met = "ok" if r["met"] else "MISS"
        print(
            f"{r['condition']:<10}{r['sessions']:>9}{r['wall_s']:>9.1f}{r['cpu_s']:>8.1f}{met:>8}"
            f"{r['load_avg_1min_before']:>7.2f}{r['model_ms_per_session']:>11.2f}" + cells
        )
    print(json.dumps({"model": model, "data": args.data, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
