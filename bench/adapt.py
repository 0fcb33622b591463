"""Benchmark: radio maps learned from N clustered labels, scored on uniform test sessions of an unseen world.

Usage::

    .venv/bin/python bench/adapt.py [--worlds 101,102,103,ring-munich:101] [--network nw-italy]
        [--n 0,300,3000,10000] [--labels clustered|uniform] [--test 1000] [--out bench-out/adapt]
        [--model CKPT] [--workers 2] [--maps-config YAML] [--time-map-fit K] [--time-inference K]

``--worlds`` entries are world seeds of ``--network`` or ``NETWORK:SEED``; ``--workers`` runs
that many worlds at once, one process each (single-threaded numpy and torch), and the total
wall time is printed at the end and written with every result to ``<out>/summary.json``.

Per world seed: simulates (once, resumable) a labelled store of max(N) sessions (``--labels``:
the clustered prior, or uniform positions as in the issue's experiment) and a uniform test
store; for each nested N fits the map (``radio_map_kriging``: everything estimated from the
labels) and the bench-only ``gp_oracle`` (the world's true σ, ℓ, per-capture σ and the labelled
transmitters' true powers), locates the test sessions with both on the oracle's likelihood path
(:class:`heimdall.maps.estimator.RadioMapLocator`) and scores them beside ``rss_ml`` and the
oracle, with the paired bootstrap interval of gp_oracle − radio_map_kriging (posterior-mean
median): whether knowing the world's statistics and the labels' powers resolves a margin.
Every measurement is cached as JSON under ``--out`` (with the per-session errors and log
scores); rerunning skips what is done.

The production model (``model``, :class:`heimdall.models.gridnet.GridPosteriorNet` from
``--model CKPT``; default: the untrained start model, ``GridPosteriorNet(MapsConfig())``,
labelled ``untrained-start`` in the output) is scored at every N through ``evaluate_store``
(the code of ``heimdall evaluate``): at N = 0 the model without a map (beside ``rss_ml``), at
N ≥ ``min_labels`` the model adapted (:meth:`GridPosteriorPredictor.adapt`) to the map that
``map fit --model`` fits from the same labels (the model's learnt law is the prior and its
shape is kept: :func:`heimdall.models.grid_predictor.map_prior`), beside ``radio_map_kriging``
(every path-loss coefficient fitted to the labels), whose per-session errors of the same test
sessions (cached with its row, checked to be the same truths in the same order) pair with the
model's for the paired bootstrap intervals of the median-error difference model −
radio_map_kriging (model − rss_ml at N = 0) and of the mean log-score difference (nats per
km², > 0 favours the model). Cached per N and checkpoint
(``*-model-<tag>.json``, with the per-session errors), with both fit times and the model's
seconds per session. ``--model-map kriging`` adapts the model to ``radio_map_kriging``'s own
map instead (cached as ``*-kriging-map.json``): given the same map the two localisers should
agree, so whatever separates their rows otherwise is the map.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from gp_oracle import fit_gp_oracle, world_of  # bench/gp_oracle.py

from heimdall.data.store import SessionStore
from heimdall.eval.estimate import Estimate
from heimdall.eval.evaluate import evaluate_store
from heimdall.eval.metrics import (
    errors_km,
    paired_bootstrap_mean_diff,
    paired_bootstrap_median_diff,
    posterior_summary,
)
from heimdall.maps.config import MapsConfig, load_maps_config
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.observations import observations_from_store
from heimdall.models.grid_predictor import map_prior
from heimdall.sim.simulate_job import run_simulation


def _simulate(
    out: Path,
    network: str,
    n: int,
    world: int,
    seed: int,
    positions: str,
    workers: int = 2,
    world_path: Path | None = None,
) -> str:
    """Simulate ``n`` sessions into ``out`` (resumable); a complete store of ≥ ``n`` sessions there
    is used as it is (its first ``n`` sessions are the smaller set: the stream is seeded per shard).
    ``world_path``: a world YAML over the reference world."""
    uri = str(out)
    if (out / "heimdall-store.json").exists() and len(SessionStore.open(uri)) >= n:
        return uri
    run_simulation(
        uri,
        network,
        n,
        world_seed=world,
        seed=seed,
        world_path=world_path,
        positions=positions,
        workers=workers,
    )
    return uri


def _write_json(path: Path, obj: Any) -> None:
    """Write a cache file atomically (a temporary file, then rename): an interrupted run leaves none."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _labelled_dir(root: Path, labels: str, n: int) -> Path:
    """The labelled store: ``labelled-<labels>``, or ``labelled-<labels>-<n>`` when that one is smaller.

    A store's metadata holds its size, so a larger set goes to its own folder; the session
    stream is the same (seeded per shard), so its first sessions are the smaller set's.
    """
    base = root / f"labelled-{labels}"
    if (base / "heimdall-store.json").exists() and SessionStore.open(str(base)).metadata["sessions"] < n:
        return root / f"labelled-{labels}-{n}"
    return base


def _scores(mean_km: np.ndarray, map_km: np.ndarray, scores, truth: np.ndarray) -> dict:
    """The posterior keys of ``evaluate``'s JSON (the same metric functions)."""
    mean_err = errors_km(Estimate(mean_km), truth)
    return {"median_km": float(np.median(mean_err)), **posterior_summary(scores, Estimate(map_km), truth)}


def _log_scores(scores: Any) -> list[float]:
    """Per-session log scores (nats per km²), rounded for the cache."""
    return np.round(scores.log_score, 4).tolist()


def _located(post: Any, truth: np.ndarray) -> dict:
    """A located estimator's scores with its per-session errors (km) of the mean and the mode
    and its per-session log scores."""
    return _scores(post.mean_km, post.map_km, post.scores, truth) | {
        "errors_km": np.round(errors_km(Estimate(post.mean_km), truth), 3).tolist(),
        "map_errors_km": np.round(errors_km(Estimate(post.map_km), truth), 3).tolist(),
        "log_scores": _log_scores(post.scores),
    }


def load_model(spec: str | None, out: Path) -> tuple[Any, str, str]:
    """The model's predictor, its cache tag and its label (``--model``, default the untrained start)."""
    import torch

    from heimdall.export.predictor import load_predictor

    torch.set_num_threads(1)
    if spec is None:
        from heimdall.models.gridnet import GridPosteriorNet

        out.mkdir(parents=True, exist_ok=True)
        path = out / "untrained-start.pt"
        if not path.exists():
            torch.manual_seed(0)
            payload = {
                "kind": "grid-posterior",
                "state_dict": GridPosteriorNet(MapsConfig()).state_dict(),
                "maps_config": MapsConfig().model_dump(mode="json"),
                "metadata": {},
            }
            torch.save(payload, path)
        return load_predictor(str(path)), "untrained-start", "untrained start model (MapsConfig defaults)"
    digest = hashlib.sha256(Path(spec).read_bytes()).hexdigest()[:10]
    return load_predictor(spec), f"ckpt-{digest}", f"{spec} (sha256 {digest}…)"


def _errors(res: Any, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    mean = errors_km(res.estimates[name], res.truth_km)
    mode = errors_km(res.map_estimates[name], res.truth_km) if name in res.map_estimates else None
    return mean, mode


def model_row(
    model: Any, own: Any, n: int, fit_s: dict[str, float], test: str, kriging: dict, truth_km: np.ndarray
) -> dict:
    """The model (adapted to its map ``own``; without a map below ``min_labels``) beside
    radio_map_kriging's row ``kriging`` (located on the same sessions: ``truth_km``, checked)."""
    adapted = model.adapt(own)
    with_map = adapted is not model
    base = ["rss_ml"] if n == 0 else []
    t = time.perf_counter()
    res = evaluate_store(test, adapted, base)
    wall = time.perf_counter() - t
    if res.truth_km.shape != truth_km.shape or not np.allclose(res.truth_km, truth_km, atol=1e-6):
        raise RuntimeError(f"{test}: evaluate's sessions differ from the located ones; delete the caches")
    ns = len(res.truth_km)
    row: dict = {"n_test": ns, "map_fit_seconds": fit_s["radio_map_kriging"],
                 "model_map_fit_seconds": fit_s["model"], "evaluate_wall_seconds": wall,
                 "adapted": with_map}  # fmt: skip
    for name in ("model", *base):
        s = {"median_km": float(np.median(errors_km(res.estimates[name], res.truth_km)))}
        if name in res.posteriors:
            s |= posterior_summary(res.posteriors[name], res.map_estimates[name], res.truth_km)
        s["seconds_per_session"] = res.timings_s.get(name, float("nan")) / ns
        mean, mode = _errors(res, name)
        s["errors_km"] = np.round(mean, 3).tolist()
        if mode is not None:
            s["map_errors_km"] = np.round(mode, 3).tolist()
        if name in res.posteriors:
            s["log_scores"] = _log_scores(res.posteriors[name])
        row[name] = s
    row["radio_map_kriging"] = {k: v for k, v in kriging.items() if k not in ("fit_seconds", "hyper")} | {
        "seconds_per_session": kriging["locate_seconds_per_session"]
    }
    e = {k: np.asarray(row[k]["errors_km"]) for k in ("model", "radio_map_kriging", *base)}
    row["bootstrap_model_minus_kriging"] = paired_bootstrap_median_diff(e["model"], e["radio_map_kriging"])
    em = {k: np.asarray(row[k]["map_errors_km"]) for k in ("model", "radio_map_kriging")}
    row["bootstrap_model_minus_kriging_map"] = paired_bootstrap_median_diff(
        em["model"], em["radio_map_kriging"]
    )
    row["bootstrap_model_minus_kriging_log_score"] = paired_bootstrap_mean_diff(
        np.asarray(row["model"]["log_scores"]), np.asarray(row["radio_map_kriging"]["log_scores"])
    )
    if n == 0:
        row["bootstrap_model_minus_rss_ml"] = paired_bootstrap_median_diff(e["model"], e["rss_ml"])
    return row


def run_world(network: str, world: int, args: argparse.Namespace) -> dict:
    root = Path(args.out) / f"{network}-w{world}"
    root.mkdir(parents=True, exist_ok=True)
    ns = sorted(int(x) for x in args.n.split(","))
    seed = {"clustered": 7001, "uniform": 7003}[args.labels]
    n_lab = max(max(ns), 1)
    sim_workers = 1 if args.workers > 1 else 2
    lab_dir = _labelled_dir(root, args.labels, n_lab)
    lab = _simulate(lab_dir, network, n_lab, world, seed, args.labels, sim_workers)
    test = _simulate(root / "test", network, args.test, world, 7002, "uniform", sim_workers)
    results: dict = {}
    cache = root / f"baselines-{args.test}.json"
    if not cache.exists():
        res = evaluate_store(test, None, ["rss_ml", "oracle"])
        out = {}
        for name, est in res.estimates.items():
            if name in res.posteriors:
                out[name] = _scores(
                    est.mean_km, res.map_estimates[name].mean_km, res.posteriors[name], res.truth_km
                )
            else:
                out[name] = {"median_km": float(np.median(np.hypot(*(est.mean_km - res.truth_km).T)))}
        _write_json(cache, out)
    results["baselines"] = json.loads(cache.read_text())
    obs_all, net = observations_from_store(lab)
    test_obs, _ = observations_from_store(test, net)
    store = SessionStore.open(lab)
    cfg = maps_config(store, args)
    mcfg = None if args.model_predictor is None else model_map_config(cfg, args.model_predictor)
    model_obs_all = (  # the model's map measures the labels with its own detection threshold
        obs_all if mcfg is None or mcfg.detection_snr_db == cfg.detection_snr_db
        else observations_from_store(lab, net, detection_snr_db=mcfg.detection_snr_db)[0]
    )  # fmt: skip
    results["model"], results["gp_oracle_minus_kriging"] = {}, {}
    for n in ns:
        obs = obs_all.select(slice(0, n))
        path = root / f"{args.labels}-N{n}-test{args.test}{args.maps_tag}.json"
        row = json.loads(path.read_text()) if path.exists() else {}
        if "log_scores" not in row.get("radio_map_kriging", {}):  # missing, or cached before the scores were
            row = {}
            for name in ("radio_map_kriging", "gp_oracle"):
                t = time.perf_counter()
                m = (
                    fit_gp_oracle(obs, net, cfg, store)
                    if name == "gp_oracle"
                    else fit_radio_map(obs, net, cfg)
                )
                fit_s = time.perf_counter() - t
                t = time.perf_counter()
                post = RadioMapLocator(m).run(test_obs)
                row[name] = _located(post, test_obs.pos_km) | {
                    "fit_seconds": fit_s,
                    "locate_seconds_per_session": (time.perf_counter() - t) / len(test_obs),
                    "hyper": [m.hyper.sigma_db, m.hyper.corr_km, m.hyper.nugget_db],
                    "holdout_rms_db": m.metrics.get("holdout_rms_db_map"),
                }
            _write_json(path, row)
        results[n] = row
        if n > 0:  # does the reference with the world's own statistics and powers beat kriging?
            results["gp_oracle_minus_kriging"][n] = paired_bootstrap_median_diff(
                np.asarray(row["gp_oracle"]["errors_km"]), np.asarray(row["radio_map_kriging"]["errors_km"])
            )
        if mcfg is None:
            continue
        suffix = "" if args.model_map == "own" else "-kriging-map"
        mpath = (
            root / f"{args.labels}-N{n}-test{args.test}{args.maps_tag}-model-{args.model_tag}{suffix}.json"
        )
        if "log_scores" not in (json.loads(mpath.read_text()) if mpath.exists() else {}).get("model", {}):
            t = time.perf_counter()  # the map of `map fit --model`: the model's law is the prior
            if args.model_map == "own":
                own = fit_radio_map(model_obs_all.select(slice(0, n)), net, mcfg)
            else:
                own = fit_radio_map(obs, net, cfg)
            fit_s = {"radio_map_kriging": row["radio_map_kriging"]["fit_seconds"],
                     "model": time.perf_counter() - t}  # fmt: skip
            mrow = model_row(
                args.model_predictor, own, n, fit_s, test, row["radio_map_kriging"], test_obs.pos_km
            )
            mrow["checkpoint"] = args.model_label
            _write_json(mpath, mrow)
        results["model"][n] = json.loads(mpath.read_text())
    return results


def maps_config(labelled: SessionStore, args: argparse.Namespace) -> MapsConfig:
    """The map settings of every fit here: ``--maps-config`` over the defaults, the world's power range."""
    wcfg = world_of(labelled)
    power_range = (wcfg.tx_power_dbm_min, wcfg.tx_power_dbm_max)
    return MapsConfig.model_validate({**args.maps_overrides, "power_range_dbm": power_range})


def model_map_config(cfg: MapsConfig, model: Any) -> MapsConfig:
    """The settings of ``map fit --model``: the model's learnt law and statistics as the prior."""
    return MapsConfig.model_validate({**cfg.model_dump(), **map_prior(model.metadata)})


def time_inference(world: tuple[str, int], args: argparse.Namespace) -> dict:
    """Single-session latency (ms) of the model adapted to its map of ``world``'s max N labels.

    ``locate_one`` (what ``locate`` and the service call: refined posterior, mean, covariance
    and the posterior map) on the first ``args.time_inference`` test sessions, one at a time,
    in this process (PyTorch, one thread); over HTTP with the ONNX graph: ``bench/serve.py``.
    """
    network, seed = world
    root = Path(args.out) / f"{network}-w{seed}"
    n = max(int(x) for x in args.n.split(","))
    lab = str(_labelled_dir(root, args.labels, max(n, 1)))
    mcfg = model_map_config(maps_config(SessionStore.open(lab), args), args.model_predictor)
    obs_all, net = observations_from_store(lab, detection_snr_db=mcfg.detection_snr_db)
    adapted = args.model_predictor.adapt(fit_radio_map(obs_all.select(slice(0, n)), net, mcfg))
    times: list[float] = []
    for shard in SessionStore.open(str(root / "test")).iter_shards():
        for i in range(min(shard.n_sessions, args.time_inference - len(times))):
            one = shard.select(np.array([i]))
            t = time.perf_counter()
            adapted.locate_one(one)
            times.append(1e3 * (time.perf_counter() - t))
        if len(times) == args.time_inference:
            break
    ms = np.asarray(times)
    out = {"labels": n, "sessions": len(ms), "p50_ms": float(np.percentile(ms, 50)),
           "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}  # fmt: skip
    print(f"model adapted to {n} labels of {network} {seed}, one session at a time ({len(ms)} sessions): "
          f"p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms", flush=True)  # fmt: skip
    return out


def _world_job(network: str, world: int, args: argparse.Namespace) -> tuple[dict, float]:
    """One world in a worker process: its results and wall time (s); the model is loaded here."""
    t = time.perf_counter()
    args.model_predictor = None
    if not args.no_model:
        args.model_predictor, _, _ = load_model(args.model, Path(args.out))
    return run_world(network, world, args), time.perf_counter() - t


def parse_worlds(spec: str, default_network: str) -> list[tuple[str, int]]:
    """``--worlds`` entries (``SEED`` of the default network or ``NETWORK:SEED``) as (network, seed)."""
    out = []
    for item in spec.split(","):
        net, _, seed = item.strip().rpartition(":")
        if not seed.isdigit():
            raise ValueError(f"--worlds entry {item!r}: expected SEED or NETWORK:SEED (a whole number)")
        out.append((net or default_network, int(seed)))
    if len(set(out)) != len(out):
        raise ValueError(f"--worlds {spec!r}: a world is named twice")
    return out


def _ci(b: dict) -> str:
    return f"{b['diff_km']:+.1f} [{b['ci95_low_km']:+.1f}, {b['ci95_high_km']:+.1f}]"


def _ci_nats(b: dict) -> str:
    return f"{b['diff']:+.3f} [{b['ci95_low']:+.3f}, {b['ci95_high']:+.3f}]"


def print_model(res: dict, label: str) -> None:
    """The model's rows, the paired bootstrap against radio_map_kriging and the ratios to the references."""
    print(f"\nmodel: {label}")
    print(f"{'N':>6} {'estimator':<18} {'mean med km':>12} {'MAP med km':>11} {'HPD50':>6} {'HPD90':>6} "
          f"{'A90 km2':>8} {'logscore':>9} {'s/sess':>7} {'fit s':>6}")  # fmt: skip
    base = res["baselines"]
    for n, row in res["model"].items():
        for name in ("model", "radio_map_kriging", "rss_ml"):
            if name not in row:
                continue
            s = row[name]
            fit_key = {"radio_map_kriging": "map_fit_seconds", "model": "model_map_fit_seconds"}.get(name)
            fit = f"{row[fit_key]:>6.1f}" if fit_key and row["adapted"] else ""
            tag = name + ("" if name != "model" or row["adapted"] else " (no map)")
            print(f"{n:>6} {tag:<18} {s['median_km']:>12.1f} {s['map_median_km']:>11.1f} "
                  f"{s['hpd_coverage_50']:>6.2f} {s['hpd_coverage_90']:>6.2f} "
                  f"{s['hpd90_area_km2_median']:>8.0f} {s['log_score']:>9.2f} "
                  f"{s['seconds_per_session']:>7.3f} {fit}")  # fmt: skip
        b_mean, b_map = row["bootstrap_model_minus_kriging"], row["bootstrap_model_minus_kriging_map"]
        print(f"{'':>6} model − radio_map_kriging, median km [paired bootstrap 95 %]: "
              f"mean {_ci(b_mean)}, MAP {_ci(b_map)}")  # fmt: skip
        if "bootstrap_model_minus_kriging_log_score" in row:
            b_ls = row["bootstrap_model_minus_kriging_log_score"]
            print(f"{'':>6} model − radio_map_kriging, mean log score nats [paired bootstrap 95 %; "
                  f"> 0 favours the model]: {_ci_nats(b_ls)}")  # fmt: skip
        if "bootstrap_model_minus_rss_ml" in row:
            print(f"{'':>6} model − rss_ml (mean): {_ci(row['bootstrap_model_minus_rss_ml'])}")
        gp = res.get(n, {}).get("gp_oracle")
        mod, o_mean, o_map = row["model"], base["oracle_mean"]["median_km"], base["oracle_map"]["median_km"]
        ratios = [f"model / oracle_mean {mod['median_km'] / o_mean:.2f}",
                  f"model MAP / oracle_map {mod['map_median_km'] / o_map:.2f}"]  # fmt: skip
        if gp is not None and n > 0:
            ratios.insert(0, f"model / gp_oracle {mod['median_km'] / gp['median_km']:.2f}")
        print(f"{'':>6} " + ", ".join(ratios))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", default="101")
    p.add_argument("--network", default="nw-italy")
    p.add_argument("--n", default="0,300,3000,10000")
    p.add_argument("--labels", choices=("clustered", "uniform"), default="clustered")
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--out", default="bench-out/adapt")
    p.add_argument(
        "--model", default=None, help="grid-posterior checkpoint (default: the untrained start model)"
    )
    p.add_argument("--no-model", action="store_true", help="skip the production model rows")
    p.add_argument(
        "--model-map",
        choices=("own", "kriging"),
        default="own",
        help="adapt the model to its own map (map fit --model; default) or to radio_map_kriging's "
        "map (a check that the two localisers agree given the same map)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="worlds run at once, one single-threaded process each"
    )
    p.add_argument(
        "--maps-config",
        default=None,
        help="map settings YAML overriding MapsConfig's defaults for every map fitted here "
        "(its rows are cached apart, tagged with the settings' hash; the world's power range is kept)",
    )
    p.add_argument(
        "--time-map-fit",
        type=int,
        default=0,
        metavar="K",
        help="after the worlds, time the `heimdall map fit` command (end to end, with --model) K times "
        "on the first world's labelled store (max N labels)",
    )
    p.add_argument(
        "--time-inference",
        type=int,
        default=0,
        metavar="K",
        help="after the worlds, time the adapted model on K single test sessions of the first world",
    )
    args = p.parse_args()
    try:
        worlds = parse_worlds(args.worlds, args.network)
    except ValueError as exc:
        p.error(str(exc))
    args.maps_overrides, args.maps_tag = {}, ""
    if args.maps_config is not None:
        args.maps_overrides = load_maps_config(args.maps_config).model_dump(mode="json", exclude_unset=True)
        text = json.dumps(args.maps_overrides, sort_keys=True)
        args.maps_tag = "-cfg" + hashlib.sha256(text.encode()).hexdigest()[:8]
        print(f"map settings {args.maps_config}: {text} (cached as *{args.maps_tag}*)")
    t0 = time.perf_counter()
    args.model_predictor, args.model_tag, args.model_label = None, "", ""
    if not args.no_model:
        args.model_predictor, args.model_tag, args.model_label = load_model(args.model, Path(args.out))
    done: dict[tuple[str, int], tuple[dict, float]] = {}
    if args.workers <= 1:
        for network, world in worlds:
            t = time.perf_counter()
            done[network, world] = run_world(network, world, args), time.perf_counter() - t
    else:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"  # inherited by the workers: one core each
        job_args = argparse.Namespace(**{**vars(args), "model_predictor": None})
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
            futures = {pool.submit(_world_job, net, w, job_args): (net, w) for net, w in worlds}
            for fut in as_completed(futures):
                done[futures[fut]] = fut.result()
                print(f"{futures[fut][0]} world {futures[fut][1]}: {done[futures[fut]][1]:.0f} s", flush=True)
    wall = time.perf_counter() - t0
    for network, world in worlds:
        print_world(network, world, done[network, world][0], args)
    print(f"\nwall time {wall / 60:.1f} min ({len(worlds)} worlds, {args.workers} worker(s)); per world: "
          + ", ".join(f"{n} {w} {t / 60:.1f} min" for (n, w), (_, t) in done.items()))  # fmt: skip
    summary = {
        "args": {k: v for k, v in vars(args).items() if k != "model_predictor"},
        "wall_seconds": wall,
        "map_fit_command_seconds": time_map_fit(worlds[0], args) if args.time_map_fit else None,
        "inference": time_inference(worlds[0], args)
        if args.time_inference and args.model_predictor
        else None,
        "worlds": {
            f"{n}-w{w}": {"wall_seconds": t, "results": _without_errors(r)} for (n, w), (r, t) in done.items()
        },
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    _write_json(Path(args.out) / "summary.json", summary)


def time_map_fit(world: tuple[str, int], args: argparse.Namespace) -> list[float]:
    """Wall times (s) of ``heimdall map fit`` on ``world``'s labelled store, ``args.time_map_fit`` runs.

    The command as a user runs it (a fresh process: imports, reading and measuring the IQ,
    the fit, writing the map and logging to MLflow in a scratch folder); ``--model`` when given.
    """
    network, seed = world
    n_lab = max(max(int(x) for x in args.n.split(",")), 1)
    lab = _labelled_dir(Path(args.out) / f"{network}-w{seed}", args.labels, n_lab)
    exe = Path(sys.executable).with_name("heimdall")
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.time_map_fit):
            cmd = [str(exe), "map", "fit", str(lab), "--out", f"{tmp}/map{k}",
                   "--tracking-uri", f"sqlite:///{tmp}/mlruns.db"]  # fmt: skip
            if args.model is not None:
                cmd += ["--model", args.model]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
            meta = json.loads(Path(f"{tmp}/map{k}/map.json").read_text())
            print(
                f"heimdall map fit of {lab} ({meta['n_labels']} labels fitted): {times[-1]:.1f} s", flush=True
            )
    return times


def _without_errors(res: Any) -> Any:
    """``res`` without the per-session error and log-score lists (the summary's size)."""
    if isinstance(res, dict):
        return {
            k: _without_errors(v)
            for k, v in res.items()
            if k not in ("errors_km", "map_errors_km", "log_scores")
        }
    return res


def print_world(network: str, world: int, res: dict, args: argparse.Namespace) -> None:
    """One world's table: the map estimators per N, the baselines, then the model's rows."""
    print(f"\n{network}, world {world}, {args.labels} labels, {args.test} uniform test sessions")
    print(f"{'N':>6} {'estimator':<18} {'mean med km':>12} {'MAP med km':>11} {'HPD50':>6} {'HPD90':>6} "
          f"{'A90 km2':>8} {'logscore':>9} {'fit s':>6}")  # fmt: skip
    for n, row in res.items():
        if n in ("baselines", "model", "gp_oracle_minus_kriging"):
            continue
        for name, s in row.items():
            print(f"{n:>6} {name:<18} {s['median_km']:>12.1f} {s['map_median_km']:>11.1f} "
                  f"{s['hpd_coverage_50']:>6.2f} {s['hpd_coverage_90']:>6.2f} "
                  f"{s['hpd90_area_km2_median']:>8.0f} "
                  f"{s['log_score']:>9.2f} {s['fit_seconds']:>6.1f}")  # fmt: skip
    for n, b in res.get("gp_oracle_minus_kriging", {}).items():
        print(f"{n:>6} gp_oracle − radio_map_kriging, posterior-mean median km "
              f"[paired bootstrap 95 %]: {_ci(b)}")  # fmt: skip
    for name, s in res["baselines"].items():
        extra = ""
        if "map_median_km" in s:
            extra = (f" {s['map_median_km']:>11.1f} {s['hpd_coverage_50']:>6.2f} "
                     f"{s['hpd_coverage_90']:>6.2f} {s['hpd90_area_km2_median']:>8.0f} "
                     f"{s['log_score']:>9.2f}")  # fmt: skip
        print(f"{'':>6} {name:<18} {s['median_km']:>12.1f}{extra}")
    if res["model"]:
        which = "" if args.model_map == "own" else ", adapted to radio_map_kriging's map"
        print_model(res, args.model_label + which)


if __name__ == "__main__":
    main()
