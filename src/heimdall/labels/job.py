"""The ``data label`` job: a session store in, a labelled session store out.

Per session: FM-demodulate every online receiver's IQ (:mod:`heimdall.labels.fm`),
decode with Dire Wolf (:mod:`heimdall.labels.direwolf`), decide
(:mod:`heimdall.labels.policy`), and measure the received power over the
packet burst (:mod:`heimdall.labels.burst`). Labelling sees only what a real
recording holds — the simulator's truth columns are blanked before anything
is decoded — and truth is used afterwards only to count wrong labels.

The output store (same layout, atomic shards) holds the labelled sessions of
input shard k in shard k, with ``tx_lat_deg``/``tx_lon_deg`` = the label,
``label_radius_m`` = the label's 99 % radius (m), ``mode`` = aprs,
``rx_burst_dbfs``/``rx_burst_noise_dbfs`` the band power over the packet burst
and the noise outside it (dBFS; :mod:`heimdall.labels.burst`) and ``rx_state``
heard when the burst SNR is at least 0 dB. The simulator's bookkeeping
(``tx_power_dbm``, ``tx_height_m``, ``rx_power_dbm``, ``rx_snr_db``,
``rx_delay_s``) stays unknown (NaN): measurements never overload it. Per
shard ``labels/{k:06d}.json`` records each label (packet text, source,
format, ambiguity, 99 % radius, receivers that decoded) and the shard's
counts; it is written before the shard commits, and a rerun skips shards
whose record and commit are both present.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from heimdall.data.fs import join
from heimdall.data.session import HEARD, MODES, OFFLINE, SILENT, SessionBatch
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.labels.burst import measure_burst
from heimdall.labels.direwolf import Frame, atest_path, decode_clips
from heimdall.labels.fm import AUDIO_RATE_HZ, iq_to_audio
from heimdall.labels.policy import REASONS, Decision, LabelPolicy, decide
from heimdall.network.geodesy import geodesic_distance_km

#: A label counts as wrong when it is farther than its 99 % radius plus this from the truth, m.
WRONG_MARGIN_M = 100.0
#: Sessions decoded per ``atest`` run.
DECODE_CHUNK = 32
_TRUTH_FIELDS = ("tx_lat_deg", "tx_lon_deg", "tx_power_dbm", "tx_height_m", "rx_power_dbm",
                 "rx_snr_db", "rx_delay_s")  # fmt: skip


def blank_truth(batch: SessionBatch) -> SessionBatch:
    """A copy of ``batch`` without the simulator's truth (positions, powers, delays, mode)."""
    arrays = batch.to_arrays()
    for name in _TRUTH_FIELDS:
        arrays[name] = np.full_like(arrays[name], np.nan)
    arrays["mode"] = np.full_like(arrays["mode"], -1)
    return SessionBatch.from_arrays(arrays)


def decode_batch(batch: SessionBatch) -> list[list[list[Frame]]]:
    """Frames decoded at every receiver of every session: ``out[b][r]`` (offline slots: [])."""
    out: list[list[list[Frame]]] = [[[] for _ in range(batch.n_receivers)] for _ in range(batch.n_sessions)]
    for c0 in range(0, batch.n_sessions, DECODE_CHUNK):
        sub = batch.select(slice(c0, c0 + DECODE_CHUNK))
        iq = sub.iq_complex()
        where, clips = [], []
        for b in range(sub.n_sessions):
            for r in np.flatnonzero(sub.rx_state[b] != OFFLINE):
                clips.append(iq_to_audio(iq[b, r], float(sub.sample_rate_hz[b]), AUDIO_RATE_HZ))
                where.append((c0 + b, int(r)))
        for (b, r), frames in zip(where, decode_clips(clips, AUDIO_RATE_HZ), strict=True):
            out[b][r] = frames
    return out


def label_batch(
    batch: SessionBatch, policy: LabelPolicy
) -> tuple[list[Decision], SessionBatch | None, list[int]]:
    """Decide every session of ``batch`` from its IQ alone.

    Returns the decisions, the labelled sessions (label radius <= ``policy.max_radius_km``)
    as a batch (None if none) with burst powers filled in, and their positions in ``batch``.
    """
    seen = blank_truth(batch)
    frames = decode_batch(seen)
    decisions = [
        decide(frames[b], seen.rx_lat_deg[b], seen.rx_lon_deg[b], policy) for b in range(seen.n_sessions)
    ]
    keep = [b for b, d in enumerate(decisions) if d.labelled and policy.keeps(d.radius_m)]
    if not keep:
        return decisions, None, []
    out = seen.select(keep)
    iq = out.iq_complex()
    aprs = MODES.index("aprs") if "aprs" in MODES else -1
    for i, b in enumerate(keep):
        d = decisions[b]
        online = out.rx_state[i] != OFFLINE
        ref = max(d.decoded_by, key=lambda r: float(np.mean(np.abs(iq[i, r]) ** 2)))
        burst = measure_burst(iq[i], float(out.sample_rate_hz[i]), online, ref)
        assert d.report is not None
        out.tx_lat_deg[i], out.tx_lon_deg[i], out.mode[i] = d.report.lat_deg, d.report.lon_deg, aprs
        out.label_radius_m[i] = d.radius_m
        if burst is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                out.rx_burst_dbfs[i] = np.where(
                    online, 10.0 * np.log10(np.maximum(burst.band_fs, 1e-16)), np.nan
                )
                out.rx_burst_noise_dbfs[i] = np.where(online, 10.0 * np.log10(burst.noise_fs), np.nan)
            state = np.where(burst.snr_db >= 0.0, HEARD, SILENT)
            out.rx_state[i] = np.where(online, state, OFFLINE).astype(np.int8)
    return decisions, out, keep


def _record(batch: SessionBatch, b: int, d: Decision, wrong: bool | None) -> dict[str, Any]:
    assert d.frame is not None and d.report is not None
    return {
        "session_id": int(batch.session_id[b]), "source": d.frame.source, "packet": d.frame.tnc2,
        "format": d.report.fmt, "ambiguity": d.report.ambiguity,
        "lat_deg": d.report.lat_deg, "lon_deg": d.report.lon_deg, "radius_m": round(d.radius_m, 2),
        "decoded_by": [str(batch.rx_station[b, r]) for r in d.decoded_by], "wrong": wrong,
    }  # fmt: skip


def _shard_summary(batch: SessionBatch, decisions: list[Decision], policy: LabelPolicy) -> dict[str, Any]:
    has_truth = batch.labelled
    records, n_wrong, radii = [], 0, []
    for b, d in enumerate(decisions):
        if not d.labelled:
            continue
        wrong = None
        if has_truth[b]:
            assert d.report is not None
            truth = (batch.tx_lat_deg[b], batch.tx_lon_deg[b])
            err_m = 1000.0 * float(geodesic_distance_km(*truth, d.report.lat_deg, d.report.lon_deg))
            wrong = err_m > d.radius_m + WRONG_MARGIN_M
            n_wrong += int(wrong)
        radii.append(d.radius_m)
        records.append(_record(batch, b, d, wrong))
    reasons = Counter(d.reason for d in decisions)
    coarse = [not policy.keeps(d.radius_m) for d in decisions if d.labelled]
    n_wrong_coarse = sum(1 for r, c in zip(records, coarse, strict=True) if c and r["wrong"])
    return {
        "n_sessions": batch.n_sessions, "n_accepted": len(records), "n_coarse": sum(coarse),
        "n_truth": int(has_truth.sum()), "n_wrong": n_wrong - n_wrong_coarse,
        "n_wrong_coarse": n_wrong_coarse, "reasons": dict(reasons),
        "radii_m": radii, "labels": records,
    }  # fmt: skip


def run_label(
    uri: str,
    out: str,
    policy: LabelPolicy | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Label the sessions of store ``uri`` into store ``out`` (resumable); returns the summary.

    Summary: ``n_sessions``, ``n_labelled`` (written to ``out``), ``n_unlabelled``,
    ``n_coarse`` (accepted, radius over ``policy.max_radius_km``, not written),
    ``reasons`` (sessions per outcome), ``median_radius_m``, and when the input
    holds simulated truth ``n_wrong`` (written labels farther from the truth
    than their radius + 100 m) and ``n_wrong_coarse`` (the same among coarse ones).
    """
    policy = policy or LabelPolicy()
    atest_path()
    src = SessionStore.open(uri, storage_options)
    meta = {**src.metadata, "labels": {"source_hash": src.content_hash(), "decoder": "direwolf atest",
                                       "policy": asdict(policy)}}  # fmt: skip
    dst = SessionStore.create(out, meta, storage_options=storage_options)
    committed = set(dst.committed_shards())
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    radii: list[float] = []
    n_truth = 0
    for k, batch in enumerate(src.iter_shards(prefetch=True)):  # reading overlaps decoding
        rel = f"labels/{k:06d}.json"
        summary = _load_record(dst, rel)
        if summary is None or (summary["n_accepted"] - summary["n_coarse"] > 0 and k not in committed):
            decisions, labelled, _ = label_batch(batch, policy)
            summary = _shard_summary(batch, decisions, policy)
            dst._put_atomic(rel, json.dumps(summary, allow_nan=True).encode())
            if labelled is not None:
                dst.append_shard(k, labelled)
        totals.update({key: summary[key] for key in ("n_sessions", "n_accepted", "n_coarse", "n_wrong",
                                                     "n_wrong_coarse")})  # fmt: skip
        reasons.update(summary["reasons"])
        radii.extend(summary["radii_m"])
        n_truth += summary["n_truth"]
        if progress is not None:
            progress(batch.n_sessions)
    n_labelled = totals["n_accepted"] - totals["n_coarse"]
    if n_labelled != len(dst):  # the summary reports what the store holds, never more or less
        raise HeimdallError(
            f"{out}: the label records count {n_labelled} labelled sessions but the store holds {len(dst)}; "
            "the output is inconsistent (written by another version?): label into a new --out"
        )
    result: dict[str, Any] = {
        "source": uri, "out": out, "n_sessions": totals["n_sessions"], "n_labelled": n_labelled,
        "n_unlabelled": totals["n_sessions"] - totals["n_accepted"], "n_coarse": totals["n_coarse"],
        "reasons": {r: reasons[r] for r in REASONS if reasons[r]},
        "median_radius_m": float(np.median(radii)) if radii else math.nan,
        "content_hash": dst.content_hash(),
    }  # fmt: skip
    if n_truth:
        result["n_wrong"] = totals["n_wrong"]
        result["n_wrong_coarse"] = totals["n_wrong_coarse"]
    src.close()
    dst.close()
    return result


def _load_record(store: SessionStore, rel: str) -> dict[str, Any] | None:
    path = join(store.root, rel)
    try:
        if not store.fs.exists(path):
            return None
        return json.loads(store.fs.cat_file(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise HeimdallError(f"{path}: unreadable label record ({exc})") from None


def read_labels(uri: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Label records (packet, source, format, radius, receivers ...) of a labelled store."""
    store = SessionStore.open(uri, storage_options)
    ids = set(store.sessions_table().column("session_id").to_pylist()) if len(store) else set()
    out: list[dict[str, Any]] = []
    for k in store.committed_shards():
        rec = _load_record(store, f"labels/{k:06d}.json")
        if rec is not None:
            out.extend(r for r in rec["labels"] if r["session_id"] in ids)
    return out
