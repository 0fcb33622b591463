"""Training benchmark: throughput, quick-config wall time, test-set accuracy and calibration.

Prints (and writes as JSON with --out):
- training throughput here (sessions/s): simulator alone, model step alone, and end to end;
- wall time of `configs/quick.yaml` (training + calibration), and its model on the test set;
- the same for a scalars-only ablation (no spectrogram branch);
- optionally a given checkpoint (e.g. the long run of configs/full.yaml);
- beside them the weighted centroid on the same sessions.
Test-set figures: median / mean error (km), 1σ / 2σ coverage overall and inside / outside
the online receivers' convex hull, mean NLL, median 1σ ellipse area (km²).

    nice .venv/bin/python bench/train.py --val data/ref-val --test data/ref-test --out bench-train.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from heimdall.data.store import SessionStore
from heimdall.eval.centroid import weighted_centroid
from heimdall.eval.geometry import inside_hull, session_geometry
from heimdall.models.config import load_config
from heimdall.models.data import (
    SimulatedBatches,
    batch_tensors,
    iq_to_float,
    keep_enough_online,
    load_world_spec,
)
from heimdall.models.ellipse import mahalanobis_sq
from heimdall.models.loss import beta_nll_loss
from heimdall.models.metrics import gaussian_metrics
from heimdall.models.predict import load_model
from heimdall.models.train import build_model, run_training
from heimdall.network import Network
from heimdall.posterior.measure import measure_power


def throughput(config: str, seconds: float = 20.0) -> dict[str, float]:
    """Simulator and model-step rates (sessions/s) of the config's batch, one process."""
    cfg = load_config(config)
    spec = load_world_spec(cfg)
    n_samples = spec.build().n_samples
    ds = SimulatedBatches(spec, cfg.data.batch_size, cfg.train_seed_base, n_samples)
    t0, n = time.perf_counter(), 0
    batches = []
    while time.perf_counter() - t0 < seconds / 2 or not batches:
        batches.append(ds[len(batches)])
        n += len(batches[-1]["session_id"])
    sim_rate = n / (time.perf_counter() - t0)
    model = build_model(cfg, spec, "bench")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0, n, k = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < seconds / 2 or k < 2:
        b = batches[k % len(batches)]
        mean, chol = model.forward_chol(iq_to_float(b["iq"]), b["rx_pos"], b["rx_mask"], b["center_freq_hz"])
        loss = beta_nll_loss(mean, chol, b["truth_km"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        n, k = n + len(b["session_id"]), k + 1
    step_rate = n / (time.perf_counter() - t0)
    return {"simulate_sessions_per_s": sim_rate, "train_step_sessions_per_s": step_rate,
            "threads": torch.get_num_threads()}  # fmt: skip


def evaluate(models: dict[str, str], test_uri: str, limit: int | None = None) -> dict[str, dict[str, float]]:
    """Test-set figures of each checkpoint and of the weighted centroid on the same sessions."""
    loaded = {name: load_model(path) for name, path in models.items()}
    store = SessionStore.open(test_uri)
    n = min(len(store), limit) if limit else len(store)
    first = next(iter(loaded.values()))
    frame = Network.model_validate(first.metadata["network"]).frame
    acc: dict[str, dict[str, list]] = {k: {"mean": [], "cov": []} for k in [*loaded, "weighted_centroid"]}
    truth, hull, dropped = [], [], 0
    for start in range(0, n, 128):
        batch, d = keep_enough_online(store.read(np.arange(start, min(n, start + 128))))
        dropped += d
        t = batch_tensors(batch, frame, first.config.n_samples)
        geo = session_geometry(batch, frame)
        truth.append(geo.tx_km)
        hull.append(inside_hull(geo.tx_km, np.where(geo.online[..., None], geo.rx_km, np.nan)))
        with torch.no_grad():
            for name, model in loaded.items():
                mean, cov = model(iq_to_float(t["iq"]), t["rx_pos"], t["rx_mask"], t["center_freq_hz"])
                acc[name]["mean"].append(mean.double().numpy())
                acc[name]["cov"].append(cov.double().numpy())
        m = measure_power(batch)
        acc["weighted_centroid"]["mean"].append(
            weighted_centroid(geo.rx_km, m.band_dbm, m.heard, m.online).mean_km
        )
    truth_km, in_hull = np.concatenate(truth), np.concatenate(hull)
    out: dict[str, dict[str, float]] = {}
    for name, parts in acc.items():
        mean = np.concatenate(parts["mean"])
        err = np.hypot(*(mean - truth_km).T)
        row = {"sessions": float(len(err)), "dropped_lt3_online": float(dropped),
               "median_error_km": float(np.median(err)), "mean_error_km": float(np.mean(err)),
               "median_error_inside_km": float(np.median(err[in_hull])),
               "median_error_outside_km": float(np.median(err[~in_hull]))}  # fmt: skip
        if parts["cov"]:
            cov = np.concatenate(parts["cov"])
            row.update(
                {k: v for k, v in gaussian_metrics(mean, cov, truth_km).items() if k != "median_error_km"}
            )
            m2 = mahalanobis_sq(mean, cov, truth_km)
            for label, sel in (("inside", in_hull), ("outside", ~in_hull)):
                row[f"coverage_1sigma_{label}"] = float(np.mean(m2[sel] <= 1.0))
                row[f"coverage_2sigma_{label}"] = float(np.mean(m2[sel] <= 4.0))
            row["fraction_inside_hull"] = float(np.mean(in_hull))
        out[name] = row
    return out


VARIANTS: dict[str, dict[str, dict]] = {
    "quick": {},
    "quick_mel": {"model": {"binning": "mel"}},
    "quick_scalars_only": {"model": {"use_spectrogram": False}},
}


def train_quick(config: str, val: str, variant: str, tracking: str | None) -> dict[str, float | str]:
    """Train the quick config (or a variant: mel binning, scalars only); wall time and result."""
    cfg = load_config(config)
    tracking_changes = {"uri": tracking} if tracking else {}
    tracking_changes["run_name"] = variant
    cfg = cfg.with_overrides(data={"val": val}, tracking=tracking_changes, **VARIANTS[variant])
    t0 = time.perf_counter()
    result = run_training(cfg, progress=False)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "train_s": result.train_seconds, "sessions_drawn": result.sessions_seen,
            "steps": result.history[-1]["step"] if result.history else 0,
            "end_to_end_sessions_per_s": result.sessions_seen / max(result.train_seconds, 1e-9),
            "checkpoint": result.best_checkpoint, "run_id": result.run_id or "",
            "temperature": result.temperature,
            "n_parameters": result.n_parameters, "epochs": len(result.history),
            **{f"val_{k}": v for k, v in result.metrics.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/quick.yaml")
    parser.add_argument("--val", default="data/ref-val")
    parser.add_argument("--test", default="data/ref-test")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument(
        "--variants", default="quick,quick_mel,quick_scalars_only", help=f"of {list(VARIANTS)}"
    )
    parser.add_argument("--checkpoint", action="append", default=[], help="VARIANT=CKPT: skip training it")
    parser.add_argument(
        "--extra", action="append", default=[], help="NAME=CKPT evaluated too (e.g. the long run)"
    )
    parser.add_argument("--skip-throughput", action="store_true", help="do not measure throughput")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N test sessions")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    report: dict[str, object] = {}
    if not args.skip_throughput:
        report["throughput"] = throughput(args.config)
        print("throughput", json.dumps(report["throughput"]))
    runs = {}
    given = dict(item.split("=", 1) for item in args.checkpoint)
    for name in [v for v in args.variants.split(",") if v]:
        runs[name] = (
            {"checkpoint": given[name]}
            if name in given
            else train_quick(args.config, args.val, name, args.tracking_uri)
        )
        print(name, json.dumps(runs[name]), flush=True)
    report["training"] = runs
    models = {name: str(r["checkpoint"]) for name, r in runs.items()}
    models.update(dict(item.split("=", 1) for item in args.extra))
    report["test"] = evaluate(models, args.test, args.limit)
    keys = ("median_error_km", "mean_error_km", "coverage_1sigma", "coverage_2sigma",
            "coverage_1sigma_inside", "coverage_1sigma_outside", "coverage_2sigma_inside",
            "coverage_2sigma_outside", "nll", "median_area_km2")  # fmt: skip
    print(f"\ntest set {args.test}: {int(next(iter(report['test'].values()))['sessions'])} sessions")
    print(f"{'metric':<26}" + "".join(f"{name:>20}" for name in report["test"]))
    for key in keys:
        cells = [report["test"][name].get(key) for name in report["test"]]
        print(f"{key:<26}" + "".join(f"{c:>20.3f}" if c is not None else f"{'-':>20}" for c in cells))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
