"""Benchmark: radio maps learned from N clustered labels, scored on uniform test sessions of an unseen world.

Usage::

    .venv/bin/python bench/adapt.py [--worlds 101,102,103] [--network nw-italy] [--n 0,300,3000,10000]
        [--labels clustered|uniform] [--test 1000] [--out bench-out/adapt]

Per world seed: simulates (once, resumable) a labelled store of max(N) sessions (``--labels``:
the clustered prior, or uniform positions as in the issue's experiment) and a uniform test
store; for each nested N fits the map (``radio_map_kriging``: everything estimated from the
labels) and the bench-only ``gp_oracle`` (the world's true σ, ℓ, per-capture σ and the labelled
transmitters' true powers), locates the test sessions with both on the oracle's likelihood path
(:class:`heimdall.maps.estimator.RadioMapLocator`) and scores them beside ``rss_ml`` and the
oracle. Every measurement is cached as JSON under ``--out``; rerunning skips what is done.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from heimdall.data.store import SessionStore
from heimdall.eval.estimate import Estimate
from heimdall.eval.evaluate import evaluate_store
from heimdall.eval.metrics import errors_km, posterior_summary
from heimdall.eval.noise import capture_sigma_db
from heimdall.maps.config import MapsConfig
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.kriging import FieldHyper
from heimdall.maps.observations import observations_from_store
from heimdall.sim import WorldConfig
from heimdall.sim.simulate_job import run_simulation


def _simulate(out: Path, network: str, n: int, world: int, seed: int, positions: str) -> str:
    uri = str(out)
    run_simulation(uri, network, n, world_seed=world, seed=seed, positions=positions, workers=2)
    return uri


def _scores(mean_km: np.ndarray, map_km: np.ndarray, scores, truth: np.ndarray) -> dict:
    """The posterior keys of ``evaluate``'s JSON (the same metric functions)."""
    mean_err = errors_km(Estimate(mean_km), truth)
    return {"median_km": float(np.median(mean_err)), **posterior_summary(scores, Estimate(map_km), truth)}


def run_world(world: int, args: argparse.Namespace) -> dict:
    root = Path(args.out) / f"{args.network}-w{world}"
    root.mkdir(parents=True, exist_ok=True)
    ns = sorted(int(x) for x in args.n.split(","))
    seed = {"clustered": 7001, "uniform": 7003}[args.labels]
    lab = _simulate(root / f"labelled-{args.labels}", args.network, max(max(ns), 1), world, seed, args.labels)
    test = _simulate(root / "test", args.network, args.test, world, 7002, "uniform")
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
        cache.write_text(json.dumps(out, indent=1))
    results["baselines"] = json.loads(cache.read_text())
    obs_all, net = observations_from_store(lab)
    test_obs, _ = observations_from_store(test, net)
    store = SessionStore.open(lab)
    power = store.sessions_table().column("tx_power_dbm").to_numpy()
    ids = store.sessions_table().column("session_id").to_numpy()
    power = dict(zip(ids.tolist(), power.tolist(), strict=True))
    wcfg = WorldConfig.model_validate(store.metadata["world"])
    true_hyper = FieldHyper(wcfg.static_shadowing_sigma_db, wcfg.static_shadowing_corr_km,
                            capture_sigma_db(wcfg, net.receivers[0].sample_rate_hz),
                            wcfg.band_field_correlation)  # fmt: skip
    cfg = MapsConfig(power_range_dbm=(wcfg.tx_power_dbm_min, wcfg.tx_power_dbm_max))
    for n in ns:
        path = root / f"{args.labels}-N{n}-test{args.test}.json"
        if path.exists():
            results[n] = json.loads(path.read_text())
            continue
        obs = obs_all.select(slice(0, n))
        row = {}
        for name in ("radio_map_kriging", "gp_oracle"):
            t = time.perf_counter()
            if name == "gp_oracle":
                known = np.array([power[s] for s in obs.session_id.tolist()])
                m = fit_radio_map(obs, net, cfg, known_power_dbm=known, hyper=true_hyper)
            else:
                m = fit_radio_map(obs, net, cfg)
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            post = RadioMapLocator(m).run(test_obs)
            row[name] = _scores(post.mean_km, post.map_km, post.scores, test_obs.pos_km) | {
                "fit_seconds": fit_s,
                "locate_seconds_per_session": (time.perf_counter() - t) / len(test_obs),
                "hyper": [m.hyper.sigma_db, m.hyper.corr_km, m.hyper.nugget_db],
                "holdout_rms_db": m.metrics.get("holdout_rms_db_map"),
            }
        path.write_text(json.dumps(row, indent=1))
        results[n] = row
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", default="101")
    p.add_argument("--network", default="nw-italy")
    p.add_argument("--n", default="0,300,3000,10000")
    p.add_argument("--labels", choices=("clustered", "uniform"), default="clustered")
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--out", default="bench-out/adapt")
    args = p.parse_args()
    for world in (int(w) for w in args.worlds.split(",")):
        res = run_world(world, args)
        print(f"\n{args.network}, world {world}, {args.labels} labels, {args.test} uniform test sessions")
        print(f"{'N':>6} {'estimator':<18} {'mean med km':>12} {'MAP med km':>11} {'HPD50':>6} {'HPD90':>6} "
              f"{'A90 km2':>8} {'logscore':>9} {'fit s':>6}")  # fmt: skip
        for n, row in res.items():
            if n == "baselines":
                continue
            for name, s in row.items():
                print(f"{n:>6} {name:<18} {s['median_km']:>12.1f} {s['map_median_km']:>11.1f} "
                      f"{s['hpd_coverage_50']:>6.2f} {s['hpd_coverage_90']:>6.2f} "
                      f"{s['hpd90_area_km2_median']:>8.0f} "
                      f"{s['log_score']:>9.2f} {s['fit_seconds']:>6.1f}")  # fmt: skip
        for name, s in res["baselines"].items():
            extra = ""
            if "map_median_km" in s:
                extra = (f" {s['map_median_km']:>11.1f} {s['hpd_coverage_50']:>6.2f} "
                         f"{s['hpd_coverage_90']:>6.2f} {s['hpd90_area_km2_median']:>8.0f} "
                         f"{s['log_score']:>9.2f}")  # fmt: skip
            print(f"{'':>6} {name:<18} {s['median_km']:>12.1f}{extra}")


if __name__ == "__main__":
    main()
