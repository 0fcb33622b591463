"""Benchmark: is a radio map's variance right, and where? Standardised residuals by distance from the labels.

Usage::

    .venv/bin/python bench/map_calibration.py --model CKPT [--worlds 101] [--network nw-italy] [--n 3000]
        [--labels clustered] [--root bench-out/adapt] [--json PATH] [--coverage]

Reads the labelled and test stores that ``bench/adapt.py`` simulated under ``--root`` (run it
first), fits ``radio_map_kriging``'s map (every path-loss coefficient from the labels) and the
model's map (``map fit --model``: :func:`heimdall.models.grid_predictor.map_prior`) from the first
N labels, and at every heard receiver of every test session compares the measured power with
the map's prediction at the true position with the **true** transmit power (bench-only: the
simulator's bookkeeping). The fit anchors the power level at the centre of the power range, so
one offset (the mean residual over all heard test captures) is removed first. Per band of
distance from the nearest label: the mean of z² = r² / (field variance + τ²) (1 when the map's
variance is right; above 1: the map is too sure), the RMS residual r and the RMS predicted
standard deviation, dB. Per session, the mean residual over its heard receivers r̄ holds the
field common to them that the labels' powers absorbed (docs/MAPS.md, "The common field and the power prior"):
``session z²`` divides r̄² by what the model's power prior allows for it, the common field's
s² = c² max(0, 1 − v̄/σ²) plus the independent parts' mean(v + τ²)/n (1 when right), and
``without c²`` by the independent parts alone. This is what the posterior's HPD coverage rests
on, one receiver at a time, without the localiser in between.

``--coverage`` adds the localiser: the fraction of test transmitters inside the 50 % and 90 %
highest-density regions, by the same distance bands (the truth's distance from the nearest
label), for ``radio_map_kriging``, the bench-only ``gp_oracle`` (``bench/gp_oracle.py``) and the
model adapted to its map (``evaluate``'s code path). Coverage is only promised on average over
the test positions' prior (uniform here), not within a band: what it shows is where the
regions are too wide and where too narrow.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from gp_oracle import fit_gp_oracle, world_of

from heimdall.data.store import SessionStore
from heimdall.eval.evaluate import evaluate_store
from heimdall.maps.config import MapsConfig
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import RadioMap, fit_radio_map
from heimdall.maps.observations import HEARD, LabelledObservations, observations_from_store
from heimdall.models.grid_predictor import map_prior

#: Distance bands from the nearest label, km.
BANDS_KM = ((0.0, 2.0), (2.0, 5.0), (5.0, 10.0), (10.0, 20.0), (20.0, np.inf))


def nearest_label_km(points_km: np.ndarray, labels_km: np.ndarray, chunk: int = 512) -> np.ndarray:
    """(M,) distance of each point to its nearest label, km."""
    out = np.empty(len(points_km))
    for a in range(0, len(points_km), chunk):
        p = points_km[a : a + chunk]
        out[a : a + chunk] = np.min(np.hypot(*(p[:, None, :] - labels_km[None]).transpose(2, 0, 1)), axis=1)
    return out


def calibration_by_distance(
    m: RadioMap, test: LabelledObservations, power_dbm: np.ndarray, dist_km: np.ndarray
) -> list[dict]:
    """Per distance band: heard captures, mean z², RMS residual and RMS predicted sd (dB); and the
    sessions' mean residual over their heard receivers against the common field of the model's
    power prior (``session_z2``: r̄² / (s² + mean(v + τ²) / n), s² = c² max(0, 1 − v̄/σ²);
    ``session_z2_without_common``: the same without s²)."""
    mean, var = m.predict(test.pos_km, test.band)
    heard = test.state == HEARD
    r = test.y_db - power_dbm[:, None] - mean.T
    r = r - np.sum(np.where(heard, r, 0.0)) / heard.sum()
    total = var.T + m.hyper.nugget_db**2
    n = heard.sum(axis=1)
    ok = n >= 2
    n_safe = np.maximum(n, 1)
    r_bar = np.sum(np.where(heard, r, 0.0), axis=1) / n_safe
    v_bar = np.sum(np.where(heard, var.T, 0.0), axis=1) / n_safe
    s2 = m.hyper.common_var_db2 * np.clip(1.0 - v_bar / m.hyper.sigma_db**2, 0.0, 1.0)
    indep = np.sum(np.where(heard, total, 0.0), axis=1) / n_safe**2
    rows = []
    for lo, hi in BANDS_KM:
        band = (dist_km >= lo) & (dist_km < hi)
        sel = heard & band[:, None]
        if not sel.any():
            continue
        sb = band & ok
        rows.append({"from_km": lo, "to_km": None if np.isinf(hi) else hi, "captures": int(sel.sum()),
                     "mean_z2": float(np.mean(r[sel] ** 2 / total[sel])),
                     "rms_residual_db": float(np.sqrt(np.mean(r[sel] ** 2))),
                     "rms_predicted_sd_db": float(np.sqrt(np.mean(total[sel]))),
                     "session_z2": float(np.mean(r_bar[sb] ** 2 / (s2[sb] + indep[sb]))),
                     "session_z2_without_common": float(np.mean(r_bar[sb] ** 2 / indep[sb]))})  # fmt: skip
    return rows


def coverage_by_distance(hpd_level: np.ndarray, dist_km: np.ndarray) -> list[dict]:
    """Per distance band: sessions and the fraction of truths inside the 50 % and 90 % HPD regions."""
    rows = []
    for lo, hi in BANDS_KM:
        sel = (dist_km >= lo) & (dist_km < hi) & np.isfinite(hpd_level)
        if sel.any():
            rows.append({"from_km": lo, "to_km": None if np.isinf(hi) else hi, "sessions": int(sel.sum()),
                         "hpd_coverage_50": float(np.mean(hpd_level[sel] <= 0.5)),
                         "hpd_coverage_90": float(np.mean(hpd_level[sel] <= 0.9))})  # fmt: skip
    return rows


def located_levels(
    maps: dict[str, RadioMap], model: Any, test_uri: str, test: LabelledObservations
) -> dict[str, np.ndarray]:
    """HPD level of each test truth: the map estimators located with :class:`RadioMapLocator`, the
    model adapted to ``maps['model']`` through ``evaluate_store`` (checked: the same sessions)."""
    out = {name: RadioMapLocator(m).run(test).scores.hpd_level for name, m in maps.items() if name != "model"}
    res = evaluate_store(test_uri, model.adapt(maps["model"]), [])
    if not np.allclose(res.truth_km, test.pos_km, atol=1e-6):
        raise SystemExit(f"{test_uri}: evaluate's sessions differ from the measured ones")
    out["model"] = res.posteriors["model"].hpd_level
    return out


def _span(b: dict) -> str:
    lo, hi = b["from_km"], b["to_km"]
    return f"{lo:.0f}–{hi:.0f}" if hi is not None else f"≥ {lo:.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="grid-posterior checkpoint (its law: the map's prior)")
    p.add_argument("--worlds", default="101")
    p.add_argument("--network", default="nw-italy")
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--labels", choices=("clustered", "uniform"), default="clustered")
    p.add_argument("--root", default="bench-out/adapt")
    p.add_argument("--json", default=None, help="write the table here as JSON")
    p.add_argument(
        "--coverage", action="store_true", help="also locate the test sessions: HPD coverage by distance"
    )
    args = p.parse_args()
    import torch

    from heimdall.export.predictor import load_predictor

    torch.set_num_threads(1)
    model = load_predictor(args.model)
    prior = map_prior(model.metadata)
    results = {}
    for world in (int(w) for w in args.worlds.split(",")):
        root = Path(args.root) / f"{args.network}-w{world}"
        lab = root / f"labelled-{args.labels}"
        if not (lab / "heimdall-store.json").exists() or not (root / "test" / "heimdall-store.json").exists():
            raise SystemExit(f"{root}: no labelled or test store; run bench/adapt.py for this world first")
        obs_all, net = observations_from_store(str(lab))
        if len(obs_all) < args.n:
            raise SystemExit(f"{lab}: {len(obs_all)} labelled sessions, fewer than --n {args.n}")
        obs = obs_all.select(slice(0, args.n))
        test, _ = observations_from_store(str(root / "test"), net)
        table = SessionStore.open(str(root / "test")).sessions_table()
        power = dict(zip(table.column("session_id").to_pylist(), table.column("tx_power_dbm").to_pylist(),
                         strict=True))  # fmt: skip
        p_true = np.array([power[s] for s in test.session_id.tolist()])
        labelled = SessionStore.open(str(lab))
        wcfg = world_of(labelled)
        cfg = MapsConfig(power_range_dbm=(wcfg.tx_power_dbm_min, wcfg.tx_power_dbm_max))
        dist = nearest_label_km(test.pos_km, obs.pos_km)
        world_rows, maps = {}, {}
        for name, c in (("radio_map_kriging", cfg), ("model", cfg.model_copy(update=prior))):
            lab_c, test_c = obs, test  # measured with the map's own detection threshold
            if c.detection_snr_db != cfg.detection_snr_db:
                thr = c.detection_snr_db
                lab_c = observations_from_store(str(lab), net, detection_snr_db=thr)[0]
                lab_c = lab_c.select(slice(0, args.n))
                test_c = observations_from_store(str(root / "test"), net, detection_snr_db=thr)[0]
            maps[name] = m = fit_radio_map(lab_c, net, c)
            world_rows[name] = {"sigma_db": m.hyper.sigma_db, "nugget_db": m.hyper.nugget_db,
                                "bands": calibration_by_distance(m, test_c, p_true, dist)}  # fmt: skip
        if args.coverage:
            maps["gp_oracle"] = fit_gp_oracle(obs, net, cfg, labelled)
            levels = located_levels(maps, model, str(root / "test"), test)
            world_rows["coverage"] = {
                name: {"all": coverage_by_distance(levels[name], np.zeros(len(test)))[0],
                       "bands": coverage_by_distance(levels[name], dist)}
                for name in ("radio_map_kriging", "gp_oracle", "model")
            }  # fmt: skip
        results[f"{args.network}-w{world}"] = world_rows
        print(f"\n{args.network}, world {world}: {args.n} {args.labels} labels, {len(test)} test sessions "
              f"(z² = residual² / (field variance + τ²) at the truth, true power; ideal 1)")  # fmt: skip
        print(f"{'map':<18} {'σ dB':>5} {'τ dB':>5} {'from label km':>14} {'captures':>9} {'mean z²':>8} "
              f"{'RMS resid dB':>13} {'RMS sd dB':>10} {'session z²':>11} {'without c²':>11}")  # fmt: skip
        for name, row in world_rows.items():
            if name == "coverage":
                continue
            for b in row["bands"]:
                print(f"{name:<18} {row['sigma_db']:>5.2f} {row['nugget_db']:>5.2f} {_span(b):>14} "
                      f"{b['captures']:>9} {b['mean_z2']:>8.2f} {b['rms_residual_db']:>13.1f} "
                      f"{b['rms_predicted_sd_db']:>10.1f} {b['session_z2']:>11.2f} "
                      f"{b['session_z2_without_common']:>11.2f}")  # fmt: skip
        if "coverage" in world_rows:
            print(f"\n{'estimator':<18} {'from label km':>14} {'sessions':>9} {'HPD50':>6} {'HPD90':>6}")
            for name, row in world_rows["coverage"].items():
                for b in [row["all"] | {"span": "all"}] + row["bands"]:
                    span = b.get("span") or _span(b)
                    print(f"{name:<18} {span:>14} {b['sessions']:>9} {b['hpd_coverage_50']:>6.3f} "
                          f"{b['hpd_coverage_90']:>6.3f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
