"""Benchmark: APRS labels — yield vs capture CNR, wrong-label rate, labelling throughput.

Usage::

    .venv/bin/python bench/aprs.py [--per-cnr 120] [--cnr 2,4,5,6,7,8,9,10,12,15,20]
        [--sessions 64] [--out bench-out/aprs]

1. **Yield vs CNR.** ``--per-cnr`` packets per CNR value (random station,
   position in the network's area, format, ambiguity, TXDELAY, start time,
   carrier phase and a ±100 Hz frequency error) from our encoder, FM with
   ±3 kHz deviation in a 1 s, 12 kHz complex capture, complex Gaussian noise
   at the given CNR (carrier power over the noise in the whole 12 kHz
   band). Every capture goes through the labeller's own path (FM
   discriminator → Dire Wolf ``atest`` → aprslib → policy). A label is
   *wrong* when the decoded frame differs from the sent one or the label is
   farther from the sent position than its 99 % radius + 100 m.
2. **Simulated traffic.** ``heimdall simulate --mode aprs`` (``--sessions``,
   clustered positions, reference world) → ``heimdall data label``: outcomes,
   wrong labels against the truth (typed-in positions are the expected source),
   and the labelling throughput in sessions/s.
3. **Learning curve** (``--curve 300,1000,3000``; ``--curve ''`` skips it). On a world never
   used in development (``--world``): simulated APRS traffic (clustered prior) → ``data label``
   → ``map fit`` with the first N APRS labels (99 % radius ≤ 1 km, burst powers) → the
   non-APRS test sessions of that world (uniform positions; NBFM voice, carrier, GMSK) located
   with ``radio_map_kriging``; beside it the same sessions with **perfect labels** (the true
   positions, radius 0, the same burst measurements) and the oracle; each also fitted without
   the fit's wrong-label test (``outlier_p_value: 0``), with the count of wrong labels (typed-in
   positions) the test flagged and of good ones it flagged. Cached under ``--out`` (resumable).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time

import numpy as np

from heimdall.data.store import SessionStore
from heimdall.eval.estimate import Estimate
from heimdall.eval.evaluate import evaluate_store
from heimdall.eval.metrics import errors_km, posterior_summary
from heimdall.labels.direwolf import decode_clips
from heimdall.labels.fm import AUDIO_RATE_HZ, iq_to_audio
from heimdall.labels.job import run_label
from heimdall.labels.policy import LabelPolicy, decide
from heimdall.maps.config import MapsConfig
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.observations import R99_PER_SIGMA, LabelledObservations, observations_from_store
from heimdall.network import load_network
from heimdall.network.geodesy import geodesic_distance_km
from heimdall.sim.aprs import FORMATS, PositionReport, frame_burst, position_frame
from heimdall.sim.aprs_traffic import callsign
from heimdall.sim.ax25 import Address
from heimdall.sim.simulate_job import run_simulation

FS = 12000.0


def _packet(rng: np.random.Generator, lat0: float, lon0: float):
    lat = lat0 + rng.uniform(-0.5, 0.5)
    lon = lon0 + rng.uniform(-0.7, 0.7)
    fmt = FORMATS[int(rng.integers(3))]
    amb = int(rng.integers(1, 3)) if fmt != "compressed" and rng.random() < 0.1 else 0
    rep = PositionReport(lat, lon, fmt, amb, course_deg=88, speed_kn=int(rng.integers(1, 50)))
    frame = position_frame(callsign(rng), rep, (Address("WIDE1", 1), Address("WIDE2", 1)))
    return rep, frame


def yield_vs_cnr(cnrs: list[float], per_cnr: int, seed: int = 0) -> list[dict]:
    """Yield and wrong labels per CNR (dB) from ``per_cnr`` captures each."""
    net = load_network("nw-italy")
    lat0, lon0 = (
        float(np.mean([r.lat for r in net.receivers])),
        float(np.mean([r.lon for r in net.receivers])),
    )
    rng = np.random.default_rng(seed)
    t = np.arange(int(FS)) / FS
    rows = []
    for cnr in cnrs:
        sent, clips = [], []
        for _ in range(per_cnr):
            rep, frame = _packet(rng, lat0, lon0)
            burst = frame_burst(
                frame, rng.uniform(0.02, 0.3), rng.uniform(0.15, 0.4), rng.uniform(0, 2 * np.pi)
            )
            ferr = rng.uniform(-100, 100)
            x = np.exp(1j * (burst.fm_phase(t, 3000.0) + 2 * np.pi * ferr * t + rng.uniform(0, 2 * np.pi)))
            x *= burst.keyed(t)
            noise = (rng.standard_normal(t.size) + 1j * rng.standard_normal(t.size)) * math.sqrt(0.5)
            clips.append(iq_to_audio(x * 10 ** (cnr / 20) + noise, FS, AUDIO_RATE_HZ))
            sent.append((rep, frame))
        decoded = decode_clips(clips, AUDIO_RATE_HZ)
        n_lab = n_wrong = n_decoded = 0
        for (rep, frame), frames in zip(sent, decoded, strict=True):
            n_decoded += int(bool(frames))
            d = decide([frames], np.array([lat0]), np.array([lon0]), LabelPolicy(max_radius_km=1e9))
            if not d.labelled:
                continue
            n_lab += 1
            err_m = 1000 * float(
                geodesic_distance_km(rep.lat_deg, rep.lon_deg, d.report.lat_deg, d.report.lon_deg)
            )
            n_wrong += int(d.frame.tnc2 != frame.monitor_text or err_m > d.radius_m + 100.0)
        rows.append({"cnr_db": cnr, "n": per_cnr, "decoded": n_decoded, "labelled": n_lab,
                     "yield": n_lab / per_cnr, "wrong": n_wrong})  # fmt: skip
        print(
            f"CNR {cnr:5.1f} dB  yield {n_lab / per_cnr:6.1%}  ({n_lab}/{per_cnr})  wrong {n_wrong}",
            flush=True,
        )
    return rows


def simulated_traffic(sessions: int, out: str) -> dict:
    """Simulate APRS traffic, label it, time the labelling."""
    sim = os.path.join(out, "sim")
    run_simulation(
        sim, "nw-italy", sessions, 7, 11, shard_size=32, workers=1, positions="clustered", mode="aprs"
    )
    start = time.perf_counter()
    summary = run_label(sim, os.path.join(out, "labelled"))
    summary["seconds"] = time.perf_counter() - start
    summary["sessions_per_s"] = sessions / summary["seconds"]
    return summary


def _posterior_row(mean_km, map_km, scores, truth) -> dict:
    """The posterior keys of ``evaluate``'s JSON (the same metric functions)."""
    mean_err = errors_km(Estimate(mean_km), truth)
    return {"median_km": float(np.median(mean_err)), **posterior_summary(scores, Estimate(map_km), truth)}


#: Simulated APRS traffic of the learning curve: the first part (its size and seed fixed by
#: the first published run, N <= 1,000), then parts of ``PART_SESSIONS`` with seeds 31, 41, ...
#: added until the labels suffice (yield ~62 %). Part k's session ids are offset by k * 10**6.
FIRST_PART, PART_SESSIONS, ID_OFFSET = (1632, 21), 1600, 10**6


def aprs_labels(n_max: int, world: int, root: str) -> tuple:
    """APRS-labelled and perfectly labelled observations (same sessions, same order), ≥ ``n_max`` if possible.

    Returns (aprs, perfect, network, per-part label summaries). Perfect labels: the true
    positions, radius 0, the same burst measurements. Resumable: each part is a store.
    """
    cfg = MapsConfig()
    aprs_parts, perfect_parts, summaries, net = [], [], [], None
    n_labels, k = 0, 0
    while n_labels < n_max:
        n_sim, seed = FIRST_PART if k == 0 else (PART_SESSIONS, FIRST_PART[1] + 10 * k)
        tag = "" if k == 0 else f"-{k}"
        sim, lab = os.path.join(root, f"aprs{tag}"), os.path.join(root, f"labelled{tag}")
        t0 = time.perf_counter()
        run_simulation(
            sim, "nw-italy", n_sim, world, seed, shard_size=128, workers=1, positions="clustered", mode="aprs"
        )
        t1 = time.perf_counter()
        summary = run_label(sim, lab)
        summaries.append({**summary, "simulate_s": t1 - t0, "label_s": time.perf_counter() - t1})
        obs, net = observations_from_store(lab, max_label_radius_m=cfg.max_label_radius_m)
        truth = SessionStore.open(sim).sessions_table()
        ids, lats, lons = (truth.column(c).to_pylist() for c in ("session_id", "tx_lat_deg", "tx_lon_deg"))
        pos = {s: (la, lo) for s, la, lo in zip(ids, lats, lons, strict=True)}
        lat, lon = np.array([pos[s] for s in obs.session_id.tolist()]).T
        obs = dataclasses.replace(obs, session_id=obs.session_id + k * ID_OFFSET)
        aprs_parts.append(obs)
        perfect_parts.append(
            dataclasses.replace(
                obs, pos_km=np.stack(net.frame.to_local_km(lat, lon), -1), radius_km=np.zeros(len(obs))
            )
        )
        n_labels += len(obs)
        print(f"APRS part {k}: {summary['n_labelled']} labels of {summary['n_sessions']} sessions "
              f"({summary.get('n_wrong')} wrong), total {n_labels}", flush=True)  # fmt: skip
        k += 1
    concat = LabelledObservations.concat
    return concat(aprs_parts), concat(perfect_parts), net, summaries


def wrong_labels(aprs: LabelledObservations, perfect: LabelledObservations) -> np.ndarray:
    """Labels farther from the truth than their 99 % radius + 100 m (``data label``'s ``n_wrong``)."""
    err_km = np.hypot(*(aprs.pos_km - perfect.pos_km).T)
    return err_km > aprs.radius_km * R99_PER_SIGMA + 0.1


def learning_curve(ns: list[int], world: int, n_test: int, out: str) -> dict:
    """radio_map_kriging from N APRS labels vs N perfect labels vs the oracle, on non-APRS test sessions."""
    root = os.path.join(out, f"curve-w{world}")
    os.makedirs(root, exist_ok=True)
    cache = os.path.join(root, "curve.json")
    result = json.load(open(cache)) if os.path.exists(cache) else {}
    test = os.path.join(root, "test")
    aprs, perfect, net, summaries = aprs_labels(max(ns), world, root)
    result["label_parts"] = summaries
    run_simulation(test, "nw-italy", n_test, world, 22, workers=1)  # the default mode mix: nbfm, cw, fsk
    if "oracle" not in result:
        res = evaluate_store(test, None, ["oracle"])
        result["oracle"] = _posterior_row(
            res.estimates["oracle_mean"].mean_km, res.map_estimates["oracle_mean"].mean_km,
            res.posteriors["oracle_mean"], res.truth_km,
        )  # fmt: skip
    cfg = MapsConfig()
    test_obs, _ = observations_from_store(test, net)
    wrong = wrong_labels(aprs, perfect)
    variants = {  # name: (labels, settings); "_no_test": without the wrong-label test of the fit
        "aprs_labels": (aprs, cfg),
        "perfect_labels": (perfect, cfg),
        "aprs_labels_no_test": (aprs, cfg.model_copy(update={"outlier_p_value": 0.0})),
        "perfect_labels_no_test": (perfect, cfg.model_copy(update={"outlier_p_value": 0.0})),
    }
    for n in ns:
        if n > len(aprs):
            print(f"N = {n}: only {len(aprs)} APRS labels, skipped", flush=True)
            continue
        row = result.setdefault(str(n), {})
        for name, (obs, settings) in variants.items():
            if name in row:
                continue
            t0 = time.perf_counter()
            m = fit_radio_map(obs.select(slice(0, n)), net, settings)
            fit_s = time.perf_counter() - t0
            post = RadioMapLocator(m).run(test_obs)
            row[name] = _posterior_row(post.mean_km, post.map_km, post.scores, test_obs.pos_km)
            ids = obs.session_id[:n]
            fitted = np.isin(ids, m.train.session_id)  # the rest is held out (never tested)
            flagged = np.isin(ids, m.outlier_session_ids)
            bad = wrong[:n] if obs is aprs else np.zeros(n, bool)
            row[name].update({
                "fit_s": fit_s, "n_wrong": int(bad.sum()), "n_wrong_fitted": int((bad & fitted).sum()),
                "n_fitted": int(fitted.sum()), "n_outliers": int(flagged.sum()),
                "flagged_wrong": int((flagged & bad).sum()), "flagged_good": int((flagged & ~bad).sum()),
            })  # fmt: skip
            with open(cache, "w") as f:
                json.dump(result, f, indent=1)
        a, p = row["aprs_labels"], row["perfect_labels"]
        print(f"N = {n}: APRS {a['median_km']:.1f} / {a['map_median_km']:.1f} km, perfect "
              f"{p['median_km']:.1f} / {p['map_median_km']:.1f} km (mean / MAP); wrong labels fitted "
              f"{a['n_wrong_fitted']}, flagged {a['flagged_wrong']} of them and {a['flagged_good']} good",
              flush=True)  # fmt: skip
    with open(cache, "w") as f:
        json.dump(result, f, indent=1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cnr", type=int, default=120)
    parser.add_argument("--cnr", default="2,4,5,6,7,8,9,10,12,15,20")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--curve", default="300,1000,3000", help="labelled N of the learning curve ('' skips)"
    )
    parser.add_argument("--world", type=int, default=104, help="world seed of the learning curve (unseen)")
    parser.add_argument("--test", type=int, default=300, help="non-APRS test sessions of the learning curve")
    parser.add_argument("--skip-yield", action="store_true", help="only the learning curve")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="bench-aprs-")
    os.makedirs(out, exist_ok=True)
    if args.curve:
        curve = learning_curve([int(n) for n in args.curve.split(",")], args.world, args.test, out)
        print(json.dumps(curve, default=float))
    if args.skip_yield:
        return
    t0 = time.perf_counter()
    rows = yield_vs_cnr([float(c) for c in args.cnr.split(",")], args.per_cnr)
    n_lab = sum(r["labelled"] for r in rows)
    n_wrong = sum(r["wrong"] for r in rows)
    print(f"wrong labels: {n_wrong} of {n_lab} labels ({sum(r['decoded'] for r in rows)} decodes) "
          f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    traffic = simulated_traffic(args.sessions, out)
    print(f"simulated traffic: {traffic['n_labelled']} of {traffic['n_sessions']} labelled, "
          f"outcomes {traffic['reasons']}, wrong {traffic.get('n_wrong')}, "
          f"{traffic['sessions_per_s']:.2f} sessions/s (7 receivers, 1 s captures)")  # fmt: skip
    report = {"yield_vs_cnr": rows, "wrong": n_wrong, "labels": n_lab, "traffic": traffic}
    with open(os.path.join(out, "aprs.json"), "w") as f:
        json.dump(report, f, indent=1, default=float)
    print(json.dumps(report, default=float))


if __name__ == "__main__":
    main()
