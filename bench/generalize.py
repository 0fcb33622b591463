"""Generalisation benchmark: the in-world and the family-trained model on worlds and networks never seen.

For each test set — world 0 of nw-italy (the in-world model's training world), unseen world
seeds of nw-italy (3, 7, 11 by default: outside both models' training seeds) and a world of
ring-munich (a network neither model trained on) — it prints and writes as JSON:

- each model's median error (km), 1σ / 2σ ellipse coverage (ideal 39.3 / 86.5 %), mean NLL,
  and what ``heimdall evaluate`` states about the set (in-world / unseen world / network);
- beside them, on the same sessions: ``weighted_centroid``, ``rss_ml``, ``oracle_mean`` and
  ``oracle_map`` (the oracle knows the world's maps and gains), and the oracle's HPD check
  (coverage of its 39.3 / 86.5 % regions, passed within ±3 points);
- the paired-bootstrap 95 % interval of the median-error difference model − rss_ml.

Test sets are simulated with ``heimdall simulate`` (STORED stream, session seed 1000) and
cached under ``--work``, like every per-set result (JSON): an interrupted run resumes.
The two Gaussian models are given as checkpoints or run ids (``--inworld``, ``--family``); a
missing one is trained (configs/quick.yaml / configs/family.yaml, validation sets simulated
here); ``--skip-gaussian`` leaves them out. ``--production CKPT`` adds the production
grid-posterior model (``heimdall train --config configs/gridnet.yaml``), scored as a
posterior: its HPD coverage at the 39.3 / 86.5 % levels, MAP median and log score.
Default sizes are the issue's (2,000 sessions of world 0, 1,000 of each other set);
``--sessions`` / ``--sessions-world0`` run smaller::

    nice .venv/bin/python bench/generalize.py --work out/generalize --out generalize.json
    nice .venv/bin/python bench/generalize.py --sessions 200 --sessions-world0 200   # a small run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.eval.evaluate import evaluate_store
from heimdall.eval.metrics import errors_km, paired_bootstrap_median_diff, summary
from heimdall.eval.provenance import check_provenance, enforce
from heimdall.eval.report import report_json
from heimdall.export.predictor import load_predictor
from heimdall.models.config import load_config
from heimdall.models.train import run_training
from heimdall.sim.simulate_job import run_simulation

#: Session seed of every test set (validation sets use 1001; training streams never meet them).
TEST_SEED = 1000
VAL_SEED = 1001
BASELINES = ["weighted_centroid", "rss_ml", "oracle"]
SHOWN = ("weighted_centroid", "rss_ml", "oracle_mean", "oracle_map")
_KEYS = ("n", "median_km", "coverage_1sigma", "coverage_2sigma", "nll")
MODELS = {"in-world": "configs/quick.yaml", "family": "configs/family.yaml"}


def test_sets(worlds: list[int], ring_world: int, n0: int, n: int) -> list[dict[str, Any]]:
    """The test sets: name, network, world seed, sessions."""
    sets = [{"name": "nw-italy-w0", "network": "nw-italy", "world_seed": 0, "sessions": n0}]
    sets += [
        {"name": f"nw-italy-w{w}", "network": "nw-italy", "world_seed": w, "sessions": n} for w in worlds
    ]
    sets.append({"name": f"ring-munich-w{ring_world}", "network": "ring-munich", "world_seed": ring_world,
                 "sessions": n})  # fmt: skip
    return sets


def simulate_set(work: Path, spec: dict[str, Any]) -> str:
    """Simulate (or complete) a test set; returns its URI."""
    uri = str(work / "sets" / f"{spec['name']}-{spec['sessions']}")
    t = time.perf_counter()
    run_simulation(out=uri, network=spec["network"], sessions=spec["sessions"],
                   world_seed=spec["world_seed"], seed=TEST_SEED)  # fmt: skip
    print(f"  set {uri}: {spec['sessions']} sessions ready ({time.perf_counter() - t:.0f} s)", flush=True)
    return uri


def resolve_model(which: str, given: str | None, work: Path, val_sessions: int) -> str:
    """A checkpoint path: the given one, a run id's best checkpoint, or a fresh training run."""
    if given:
        for path in (Path(given), work / "runs" / given / "best.ckpt", Path("runs") / given / "best.ckpt"):
            if path.is_file():
                return str(path)
        raise HeimdallError(f"--{which}: {given!r} is neither a checkpoint nor a run id under runs/")
    summary_path = work / f"train-{which}.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())["best_checkpoint"]
    cfg = load_config(MODELS[which])
    if which == "family":
        val = work / "val-family"
        run_simulation(out=str(val), network=cfg.data.network, sessions=val_sessions,
                       world_seed=str(cfg.data.world_seed), seed=VAL_SEED, world_block=32)  # fmt: skip
    else:
        val = work / "val-world0"
        run_simulation(out=str(val), network=cfg.data.network, sessions=val_sessions,
                       world_seed=cfg.data.world_seed, seed=VAL_SEED)  # fmt: skip
    cfg = cfg.with_overrides(data={"val": str(val)}, trainer={"out_dir": str(work / "runs")},
                             tracking={"uri": f"sqlite:///{work}/mlruns.db"})  # fmt: skip
    print(f"  training the {which} model ({MODELS[which]})", flush=True)
    result = run_training(cfg, progress=False)
    summary_path.write_text(json.dumps({"run_id": result.run_id, "best_checkpoint": result.best_checkpoint,
                                        "train_seconds": result.train_seconds}))  # fmt: skip
    return result.best_checkpoint


def _figures(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in _KEYS}


def baselines_result(work: Path, uri: str, name: str) -> dict[str, Any]:
    """Baselines and the oracle on a set (cached JSON plus rss_ml's per-session errors)."""
    path = work / "results" / name / "baselines.json"
    if path.is_file():
        return json.loads(path.read_text())
    t = time.perf_counter()
    result = evaluate_store(uri, None, BASELINES)
    report = report_json(result)
    out = {
        "n": report["n"],
        "estimators": {k: _figures(v) for k, v in report["estimators"].items()},
        "oracle_hpd_coverage": report["oracle_hpd_coverage"],
        "oracle_check_passed": report.get("oracle_check_passed"),
        "crlb_rmse_km_median": (report.get("crlb_rmse_km") or {}).get("median"),
        "rss_ml_errors_km": errors_km(result.estimates["rss_ml"], result.truth_km).round(4).tolist(),
        "seconds": round(time.perf_counter() - t, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def model_result(
    work: Path, uri: str, name: str, which: str, ckpt: str, rss_err: list[float]
) -> dict[str, Any]:
    """One model on a set: figures, what evaluate states about the set, bootstrap vs rss_ml (cached)."""
    path = work / "results" / name / f"model-{which}.json"
    if path.is_file() and json.loads(path.read_text()).get("checkpoint") == ckpt:
        return json.loads(path.read_text())
    t = time.perf_counter()
    predictor = load_predictor(ckpt, threads=1)
    check = enforce(
        check_provenance(predictor.metadata, SessionStore.open(uri), uri), uri, allow_overlap=False
    )
    result = evaluate_store(uri, predictor, [])
    est, truth = result.estimates["model"], result.truth_km
    err = errors_km(est, truth)
    if len(err) != len(rss_err):
        raise HeimdallError(f"{uri}: model and rss_ml evaluated different sessions")
    posterior = result.posteriors.get("model")
    extra: dict[str, Any] = {}
    if posterior is not None:  # a posterior answer: HPD coverage at the ellipses' levels, MAP
        level = posterior.hpd_level
        extra = {
            "hpd_coverage_393": float(np.mean(level <= 0.393)),
            "hpd_coverage_865": float(np.mean(level <= 0.865)),
            "map_median_km": float(np.median(errors_km(result.map_estimates["model"], truth))),
            "log_score": float(np.mean(posterior.log_score)),
        }
    out = {
        "checkpoint": ckpt,
        **_figures(summary(est, truth)),
        **extra,
        "provenance": check.summary,
        "worlds": check.worlds,
        "network": check.network,
        "minus_rss_ml_median_km": paired_bootstrap_median_diff(err, np.asarray(rss_err)),
        "seconds": round(time.perf_counter() - t, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def _pct(v: float | None) -> str:
    return "  –  " if v is None else f"{100 * v:4.1f}"


def print_table(rows: list[dict[str, Any]]) -> None:
    """The table: per set, each model and the baselines; HPD check and bootstrap per set."""
    head = f"{'set':<16} {'estimator':<18} {'n':>5} {'median km':>9} {'1σ %':>6} {'2σ %':>6} {'NLL':>6}"
    print(head)
    print("-" * len(head))
    for row in rows:
        base = row["baselines"]
        for which, m in row["models"].items():
            boot = m["minus_rss_ml_median_km"]
            nll = "  –  " if m["nll"] is None else f"{m['nll']:6.2f}"
            print(f"{row['set']:<16} {'model ' + which:<18} {m['n']:>5} {m['median_km']:9.1f} "
                  f"{_pct(m['coverage_1sigma']):>6} {_pct(m['coverage_2sigma']):>6} {nll:>6}"
                  f"   − rss_ml {boot['diff_km']:+.1f} km [{boot['ci95_low_km']:+.1f}, "
                  f"{boot['ci95_high_km']:+.1f}]  ({m['provenance']})")  # fmt: skip
            if "hpd_coverage_393" in m:
                print(f"{row['set']:<16} {'  its posterior':<18} MAP median {m['map_median_km']:.1f} km, HPD "
                      f"coverage {_pct(m['hpd_coverage_393'])} / {_pct(m['hpd_coverage_865'])} % "
                      f"(ideal 39.3 / 86.5, ±5), log score {m['log_score']:.2f}")  # fmt: skip
        for name in SHOWN:
            m = base["estimators"].get(name)
            if m is None:
                continue
            nll = "  –  " if m["nll"] is None else f"{m['nll']:6.2f}"
            print(f"{row['set']:<16} {name:<18} {m['n']:>5} {m['median_km']:9.1f} "
                  f"{_pct(m['coverage_1sigma']):>6} {_pct(m['coverage_2sigma']):>6} {nll:>6}")  # fmt: skip
        hpd = base["oracle_hpd_coverage"]
        if hpd["p393"] is not None:
            verdict = "passed" if base["oracle_check_passed"] else "FAILED"
            print(f"{row['set']:<16} oracle HPD check: {_pct(hpd['p393'])} / {_pct(hpd['p865'])} % "
                  f"(ideal 39.3 / 86.5, ±3): {verdict}")  # fmt: skip
        print()


def main() -> None:
    """Parse arguments, run the sets (resumably), print the table and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--inworld", help="in-world model: checkpoint or run id (default: train configs/quick.yaml)"
    )
    ap.add_argument(
        "--family", help="family-trained model: checkpoint or run id (default: configs/family.yaml)"
    )
    ap.add_argument("--production", help="production grid-posterior model checkpoint (.pt) or ONNX")
    ap.add_argument("--skip-gaussian", action="store_true", help="leave out the in-world and family models")
    ap.add_argument("--work", type=Path, default=Path("out/generalize"), help="cache folder (sets, results)")
    ap.add_argument("--sessions", type=int, default=1000, help="sessions of each unseen world / network")
    ap.add_argument("--sessions-world0", type=int, default=2000, help="sessions of world 0")
    ap.add_argument("--worlds", default="3,7,11", help="unseen world seeds of nw-italy")
    ap.add_argument("--ring-world", type=int, default=0, help="world seed of the ring-munich set")
    ap.add_argument("--val-sessions", type=int, default=300, help="validation sessions when training")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the models")
    ap.add_argument("--out", type=Path, default=Path("generalize.json"), help="JSON output")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    worlds = [int(w) for w in args.worlds.split(",") if w.strip()]
    gaussian = {} if args.skip_gaussian else MODELS
    for which, cfg in gaussian.items():  # no test world may be a training world of either model
        seeds = str(load_config(cfg).data.world_seed)
        lo, _, hi = seeds.partition("-")
        clash = [w for w in worlds if int(lo) <= w <= int(hi or lo)] if seeds != "random" else []
        if clash:
            raise SystemExit(f"--worlds {clash} are training worlds of the {which} model ({cfg}: {seeds})")
    args.work.mkdir(parents=True, exist_ok=True)
    ckpts = {
        w: resolve_model(w, getattr(args, w.replace("-", "")), args.work, args.val_sessions) for w in gaussian
    }
    if args.production:
        ckpts["production"] = args.production
    rows = []
    for spec in test_sets(worlds, args.ring_world, args.sessions_world0, args.sessions):
        uri = simulate_set(args.work, spec)
        key = Path(uri).name
        base = baselines_result(args.work, uri, key)
        models = {
            w: model_result(args.work, uri, key, w, c, base["rss_ml_errors_km"]) for w, c in ckpts.items()
        }
        rows.append({"set": spec["name"], **spec, "uri": uri, "baselines": base, "models": models})
        print(f"  {key}: done ({time.perf_counter() - start:.0f} s so far)", flush=True)
    print()
    print_table(rows)
    for row in rows:
        row["baselines"] = {k: v for k, v in row["baselines"].items() if k != "rss_ml_errors_km"}
    total = time.perf_counter() - start
    args.out.write_text(
        json.dumps({"checkpoints": ckpts, "seconds": round(total, 1), "sets": rows}, indent=1)
    )
    print(f"wrote {args.out} ({total:.0f} s)")


if __name__ == "__main__":
    main()
