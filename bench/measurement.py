"""Benchmark: how much could a learnt IQ encoder add to the fixed power measurement?

Usage::

    .venv/bin/python bench/measurement.py [--network nw-italy] [--world 101] [--sessions 1000]
        [--locate 1000] [--root bench-out/measurement] [--json PATH]

Simulates ``--sessions`` uniform test sessions of one world (resumable: an existing store of
that size is reused) and answers two questions with the simulator's bookkeeping (bench-only):

1. **How wrong is the fixed measurement?** :func:`heimdall.posterior.measure.measure_power`
   (band power = total − periodogram noise floor) against each online capture's true received
   power in dBFS (``rx_power_dbm`` + the receiver's true gain offset − its nominal full scale),
   per modulation and band of true SNR: captures, fraction heard, median and standard deviation
   of the error (dB), 90th percentile of |error|, clipped fraction; and the share of online
   captures below the detection threshold. The per-capture σ the likelihood uses is split into
   its parts (capture shadowing, the capture-averaged fading, the measurement floor): the first
   two are changes of the received power itself, which no measurement of it can remove.
2. **What would a perfect measurement buy?** The oracle posterior (the world's true fields and
   gains, :class:`heimdall.eval.oracle.Oracle`) of the first ``--locate`` sessions, once with the
   fixed measurement and once with an ideal one — the true received power, heard down to a true
   SNR of 0, −5 and −10 dB (a narrowband or learnt detector hears weak carriers below the
   whole-capture threshold) — with the median error of the posterior mean and the mode and the
   paired bootstrap interval of the difference. The oracle is the sharpest localiser there is, so
   its gain bounds what a better measurement can give a map learnt from labels.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.data.session import MODES, SessionBatch
from heimdall.data.store import SessionStore
from heimdall.eval.geometry import session_geometry
from heimdall.eval.metrics import paired_bootstrap_median_diff
from heimdall.eval.noise import MEASUREMENT_SIGMA_DB, capture_sigma_db, fading_scatter
from heimdall.eval.oracle import Oracle
from heimdall.posterior.grid import search_grid
from heimdall.posterior.likelihood import power_observations
from heimdall.posterior.measure import DETECTION_SNR_DB, Measurement, measure_power
from heimdall.sim import World
from heimdall.sim.family import scenarios_from_metadata
from heimdall.sim.simulate_job import run_simulation
from heimdall.sim.simulator import band_of

#: Bands of true SNR over the capture bandwidth, dB.
SNR_EDGES_DB = (-40.0, -10.0, -5.0, 0.0, 5.0, 10.0, 20.0, 40.0, 80.0)
#: True-SNR thresholds (dB) down to which the ideal measurement hears a capture.
IDEAL_THRESHOLDS_DB = (0.0, -5.0, -10.0)
#: Session seed of the test store (the same as bench/adapt.py's test sessions).
TEST_SEED = 7002


def true_band_dbfs(batch: SessionBatch, world: World) -> np.ndarray:
    """(B, R) each capture's true received power in dBFS: rx_power_dbm + true gain − nominal full scale."""
    fullscale = np.array([rx.fullscale_dbm for rx in world.network.receivers])
    gains = np.stack([world.gain_offset_db_for(band_of(f)) for f in batch.center_freq_hz])
    return batch.rx_power_dbm + gains - fullscale


def error_table(batch: SessionBatch, meas: Measurement, truth_dbfs: np.ndarray) -> list[dict[str, Any]]:
    """Measurement error (measured − true band power, dB) per modulation and band of true SNR."""
    err = meas.band_dbfs - truth_dbfs
    mode = np.broadcast_to(batch.mode[:, None], err.shape)
    rows = []
    for m, name in enumerate(MODES):
        for lo, hi in itertools.pairwise(SNR_EDGES_DB):
            sel = meas.online & (mode == m) & (batch.rx_snr_db >= lo) & (batch.rx_snr_db < hi)
            if not sel.any():
                continue
            ok = sel & ~meas.clipped
            e = err[ok]
            rows.append({
                "mode": name, "snr_from_db": lo, "snr_to_db": hi, "captures": int(sel.sum()),
                "heard": float(meas.heard[sel].mean()), "clipped": float(meas.clipped[sel].mean()),
                "median_error_db": float(np.median(e)) if e.size else None,
                "sd_error_db": float(np.std(e)) if e.size else None,
                "p90_abs_error_db": float(np.quantile(np.abs(e), 0.9)) if e.size else None,
            })  # fmt: skip
    return rows


def locate_ideal(
    batch: SessionBatch, meas: Measurement, world: World, truth_dbfs: np.ndarray
) -> dict[str, dict[str, Any]]:
    """The oracle's posterior with the fixed measurement and with ideal ones (see the module docstring)."""
    grid = search_grid(world.tx_area_km, 1.0)
    oracle = Oracle(world, grid, fading_scatter(world.config, world.sample_rate_hz).mean_db)
    truth_km = session_geometry(batch, world.network.frame).tx_km
    sigma = capture_sigma_db(world.config, world.sample_rate_hz)
    fullscale = np.array([rx.fullscale_dbm for rx in world.network.receivers])
    true_dbm = np.nan_to_num(truth_dbfs + fullscale, nan=-300.0)  # via the nominal full scale, as measured
    true_noise = np.nan_to_num(true_dbm - batch.rx_snr_db, nan=-300.0)

    def run(band: np.ndarray, noise: np.ndarray, heard: np.ndarray, threshold_db: float) -> dict[str, Any]:
        obs = power_observations(band, noise, heard, meas.online, meas.clipped, sigma, threshold_db)
        post = oracle.run(obs, batch.center_freq_hz, truth_km)
        mean_err = np.hypot(*(post.mean.mean_km - truth_km).T)
        map_err = np.hypot(*(post.map.mean_km - truth_km).T)
        return {"heard_share": float(heard.sum() / meas.online.sum()), "mean_errors": mean_err,
                "map_errors": map_err}  # fmt: skip

    out = {"fixed": run(np.nan_to_num(meas.band_dbm, nan=-300.0), np.nan_to_num(meas.noise_dbm, nan=-300.0),
                        meas.heard, DETECTION_SNR_DB)}  # fmt: skip
    for thr in IDEAL_THRESHOLDS_DB:
        heard = meas.online & (batch.rx_snr_db >= thr)
        out[f"ideal {thr:+.0f} dB"] = run(true_dbm, true_noise, heard, thr)
    fixed_mean, fixed_map = out["fixed"]["mean_errors"], out["fixed"]["map_errors"]
    for row in out.values():
        mean_err, map_err = row.pop("mean_errors"), row.pop("map_errors")
        row["mean_median_km"] = float(np.median(mean_err))
        row["map_median_km"] = float(np.median(map_err))
        row["ideal_minus_fixed_mean"] = paired_bootstrap_median_diff(mean_err, fixed_mean)
        row["ideal_minus_fixed_map"] = paired_bootstrap_median_diff(map_err, fixed_map)
    return out


def _interval(d: dict[str, float]) -> str:
    return f"{d['diff_km']:+.2f} [{d['ci95_low_km']:+.2f}, {d['ci95_high_km']:+.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", default="nw-italy")
    p.add_argument("--world", type=int, default=101)
    p.add_argument("--sessions", type=int, default=1000, help="test sessions measured")
    p.add_argument("--locate", type=int, default=1000, help="of those, sessions located by the oracle")
    p.add_argument("--root", default="bench-out/measurement")
    p.add_argument("--json", default=None, help="write the results here (default: <root>/<world>.json)")
    args = p.parse_args()
    uri = Path(args.root) / f"{args.network}-w{args.world}"
    if not (uri / "heimdall-store.json").exists() or len(SessionStore.open(str(uri))) < args.sessions:
        run_simulation(str(uri), args.network, args.sessions, world_seed=args.world, seed=TEST_SEED)
    store = SessionStore.open(str(uri))
    batch = store.read_all().select(np.arange(args.sessions))
    scenarios = scenarios_from_metadata(store.metadata)
    world = scenarios.world_of(int(batch.world_seed[0]), str(batch.network_id[0]))
    t0 = time.perf_counter()
    meas = measure_power(batch)
    truth = true_band_dbfs(batch, world)
    fade = fading_scatter(world.config, world.sample_rate_hz)
    result: dict[str, Any] = {
        "network": args.network, "world": args.world, "sessions": args.sessions,
        "online_captures": int(meas.online.sum()),
        "below_threshold_share": float(np.mean(batch.rx_snr_db[meas.online] < DETECTION_SNR_DB)),
        "capture_sigma_db": {"total": capture_sigma_db(world.config, world.sample_rate_hz),
                             "capture_shadowing": world.config.capture_shadowing_sigma_db,
                             "fading_average": fade.sigma_db, "measurement_floor": MEASUREMENT_SIGMA_DB},
        "errors": error_table(batch, meas, truth),
    }  # fmt: skip
    print(f"\n{args.network}, world {args.world}: {args.sessions} uniform sessions, "
          f"{result['online_captures']} online captures, {100 * result['below_threshold_share']:.1f} % "
          f"below the {DETECTION_SNR_DB:+.0f} dB detection threshold")  # fmt: skip
    s = result["capture_sigma_db"]
    print(
        f"per-capture σ {s['total']:.2f} dB = capture shadowing {s['capture_shadowing']:.2f} ⊕ "
        f"fading average {s['fading_average']:.2f} ⊕ measurement floor {s['measurement_floor']:.2f}"
    )
    print(f"\n{'mode':<6} {'true SNR dB':>12} {'captures':>9} {'heard':>6} {'clipped':>8} "
          f"{'median err dB':>14} {'sd err dB':>10} {'p90 |err| dB':>13}")  # fmt: skip
    for r in result["errors"]:
        formats = (("median_error_db", "+.3f"), ("sd_error_db", ".3f"), ("p90_abs_error_db", ".3f"))
        med, sd, p90 = (f"{r[k]:{f}}" if r[k] is not None else "–" for k, f in formats)
        span = f"{r['snr_from_db']:+.0f}…{r['snr_to_db']:+.0f}"
        print(f"{r['mode']:<6} {span:>12} {r['captures']:>9} {r['heard']:>6.2f} {r['clipped']:>8.2f} "
              f"{med:>14} {sd:>10} {p90:>13}")  # fmt: skip
    n_loc = min(args.locate, args.sessions)
    sub = np.arange(n_loc)
    result["oracle"] = locate_ideal(batch.select(sub), meas.select(sub), world, truth[sub])
    result["oracle_sessions"] = n_loc
    print(f"\noracle posterior, {n_loc} sessions (true fields and gains)")
    print(f"{'measurement':<14} {'heard share':>12} {'mean median km':>15} {'MAP median km':>14} "
          f"{'mean: ideal − fixed km [95 %]':>30} {'MAP: ideal − fixed km [95 %]':>29}")  # fmt: skip
    for name, r in result["oracle"].items():
        print(
            f"{name:<14} {r['heard_share']:>12.3f} {r['mean_median_km']:>15.2f} "
            f"{r['map_median_km']:>14.2f} {_interval(r['ideal_minus_fixed_mean']):>30} "
            f"{_interval(r['ideal_minus_fixed_map']):>29}"
        )
    result["seconds"] = time.perf_counter() - t0
    out = Path(args.json) if args.json else Path(args.root) / f"{args.network}-w{args.world}.json"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print(f"\n{result['seconds']:.0f} s; results in {out}")


if __name__ == "__main__":
    main()
