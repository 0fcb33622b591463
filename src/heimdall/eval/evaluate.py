"""Evaluate a model beside the classical baselines, the oracle and the Cramér-Rao bounds.

Reads a session store shard by shard, measures every capture
(:mod:`heimdall.posterior.measure`), runs the estimators on the same sessions and
returns the per-session results; :mod:`heimdall.eval.report` turns them into
the JSON, plots and HTML report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from heimdall.data.session import SessionBatch
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.eval.centroid import weighted_centroid
from heimdall.eval.crlb import Bound, rss_crlb, tdoa_crlb, toa_sigma_s
from heimdall.eval.estimate import Estimate, PosteriorEstimate
from heimdall.eval.geometry import default_area_km, inside_hull, session_geometry
from heimdall.eval.noise import capture_sigma_db, fading_scatter, total_sigma_db
from heimdall.eval.oracle import Oracle
from heimdall.eval.rss_ml import PathLoss, rss_ml
from heimdall.eval.tdoa import gabor_bandwidth_hz, tdoa_ml
from heimdall.eval.threads import start_model, start_posterior
from heimdall.maps.estimator import RadioMapLocator
from heimdall.network import LocalFrame, Network
from heimdall.posterior.grid import SearchGrid, search_grid
from heimdall.posterior.likelihood import power_observations
from heimdall.posterior.measure import DETECTION_SNR_DB, Measurement, measure_power
from heimdall.posterior.scores import PosteriorScores
from heimdall.sim import World, WorldConfig, load_world
from heimdall.sim.propagation import path_loss_exponent

BASELINES = ("weighted_centroid", "rss_ml", "oracle", "tdoa_ml")
#: Report name of an estimator whose answer is a grid posterior (its posterior mean).
POSTERIOR_NAMES = {"oracle": "oracle_mean"}
#: Names in the report (the oracle gives two estimates).
ESTIMATOR_NAMES = (
    "model", "weighted_centroid", "rss_ml", "oracle_mean", "oracle_map", "tdoa_ml", "radio_map_kriging",
)  # fmt: skip
#: Timing σ (s) below which captures count as GNSS-synchronised (TDOA possible).
SYNCHRONISED_MAX_SIGMA_S = 1e-5
GRID_STEP_KM = 1.0
_RSS_HEIGHT_NODES = 4
#: rss_ml knows the published range of transmit powers (profiles P0 within it).
RSS_POWER_PRIOR = True


class PredictorLike(Protocol):
    """The predictor protocol (docs/ARCHITECTURE.md)."""

    frame: LocalFrame
    metadata: dict

    def predict(self, batch: SessionBatch) -> tuple[np.ndarray, np.ndarray]:
        """Mean (B, 2) km and covariance (B, 2, 2) km² in ``frame``."""
        ...


@dataclass
class EvalResult:
    """Everything the report needs, per session (local frame of the network, km).

    ``posteriors`` and ``map_estimates`` hold, for each estimator whose answer is a
    grid posterior (``estimates[name]`` is then its posterior mean), the posterior's
    scores and its mode.
    """

    data: str
    frame: LocalFrame
    area_km: tuple[float, float, float, float]
    rx_km: NDArray[np.float64]
    truth_km: NDArray[np.float64]
    n_heard: NDArray[np.int64]
    inside: NDArray[np.bool_]
    estimates: dict[str, Estimate]
    crlb: Bound
    tdoa_crlb: Bound | None
    hpd_level: NDArray[np.float64] | None
    posteriors: dict[str, PosteriorScores] = field(default_factory=dict)
    map_estimates: dict[str, Estimate] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the model's training provenance against the store (:mod:`heimdall.eval.provenance`)
    provenance: dict[str, Any] | None = None


def parse_baselines(text: str) -> list[str]:
    """Baselines from ``all``, ``none`` or a list (``oracle_mean``, ``oracle_map``: oracle)."""
    t = text.strip().lower()
    if t == "all":
        return list(BASELINES)
    if t in ("none", ""):
        return []
    out = []
    for item in (s.strip() for s in t.split(",")):
        name = "oracle" if item in ("oracle_mean", "oracle_map") else item
        if name not in BASELINES:
            raise HeimdallError(
                f"--baselines: unknown baseline {item!r} (choose from all, none, {', '.join(BASELINES)})"
            )
        if name not in out:
            out.append(name)
    return out


@dataclass
class _Context:
    network: Network | None
    world: World | None
    config: WorldConfig
    frame: LocalFrame
    grid: SearchGrid | None = None
    oracle: Oracle | None = None


def _context(store: SessionStore, first: SessionBatch, predictor: PredictorLike | None) -> _Context:
    meta = store.metadata
    network = Network.model_validate(meta["network"]) if meta.get("network") else None
    world = None
    if network is not None and meta.get("world") is not None and meta.get("world_seed") is not None:
        world = World(network, WorldConfig.model_validate(meta["world"]), int(meta["world_seed"]))
    config = world.config if world is not None else load_world()
    if network is not None:
        frame = network.frame
    elif predictor is not None:
        frame = predictor.frame
    else:
        frame = LocalFrame(float(np.nanmean(first.rx_lat_deg)), float(np.nanmean(first.rx_lon_deg)))
    return _Context(network, world, config, frame)


def _layout_groups(batch: SessionBatch) -> list[NDArray[np.int64]]:
    """Sessions grouped by identical receiver layout (positions, heights, stations)."""
    keys: dict[bytes, list[int]] = {}
    for b in range(batch.n_sessions):
        key = (
            np.round(np.nan_to_num(batch.rx_lat_deg[b]), 6).tobytes()
            + np.round(np.nan_to_num(batch.rx_lon_deg[b]), 6).tobytes()
            + np.nan_to_num(batch.rx_height_m[b]).tobytes()
            + "|".join(batch.rx_station[b].tolist()).encode()
        )
        keys.setdefault(key, []).append(b)
    return [np.array(v) for v in keys.values()]


def _is_synchronised(batch: SessionBatch) -> bool:
    sig = batch.rx_timing_sigma_s[batch.online]
    return bool(sig.size) and bool(np.all(sig <= SYNCHRONISED_MAX_SIGMA_S))


def _crlb(ctx: _Context, rx_km: NDArray, truth: NDArray, batch: SessionBatch, online: NDArray) -> Bound:
    cfg = ctx.config
    d = np.hypot(*(truth[:, None, :] - rx_km).transpose(2, 0, 1))
    h_tx = np.where(
        np.isfinite(batch.tx_height_m), batch.tx_height_m, 0.5 * (cfg.tx_height_m_min + cfg.tx_height_m_max)
    )
    slope = path_loss_exponent(
        d,
        h_tx[:, None],
        batch.rx_height_m,
        cfg.path_loss_exponent_near,
        cfg.path_loss_exponent_far,
        cfg.horizon_k_factor,
    )
    sigma = total_sigma_db(cfg, float(batch.sample_rate_hz[0]))
    return rss_crlb(np.nan_to_num(truth), np.nan_to_num(rx_km), online, slope, sigma)


def _tdoa_crlb(batch: SessionBatch, meas: Measurement, rx_km: NDArray, truth: NDArray) -> Bound:
    """TDOA CRLB: timing σ plus the signal's TOA bound (Gabor bandwidth of the strongest receiver)."""
    iq = batch.iq_complex()
    fs = float(batch.sample_rate_hz[0])
    snr = np.where(np.isfinite(batch.rx_snr_db), batch.rx_snr_db, meas.snr_db)
    sig = np.full(meas.heard.shape, np.inf)
    for b in range(batch.n_sessions):
        if not meas.heard[b].any():
            continue
        r = int(np.argmax(np.where(meas.heard[b], meas.snr_db[b], -np.inf)))
        beta = gabor_bandwidth_hz(iq[b, r], fs, 10.0 ** (meas.noise_dbfs[b, r] / 10.0))
        toa = toa_sigma_s(np.full(batch.n_receivers, beta), snr[b], batch.n_samples)
        sig[b] = np.sqrt(batch.rx_timing_sigma_s[b] ** 2 + toa**2)
    used = meas.heard & np.isfinite(sig)
    return tdoa_crlb(np.nan_to_num(truth), np.nan_to_num(rx_km), used, np.where(used, sig, 1.0))


def _run_baselines(
    ctx: _Context,
    batch: SessionBatch,
    meas: Measurement,
    rx_km: NDArray,
    truth_km: NDArray,
    baselines: list[str],
    timings: dict[str, float],
) -> dict[str, Estimate | PosteriorEstimate]:
    out: dict[str, list] = {}
    cfg, fs = ctx.config, float(batch.sample_rate_hz[0])
    model = PathLoss(cfg.path_loss_exponent_near, cfg.path_loss_exponent_far, cfg.horizon_k_factor)
    assert ctx.grid is not None
    idx_all = []
    for idx in _layout_groups(batch):
        idx_all.append(idx)
        sub = batch.select(idx)
        m = meas.select(idx)
        lay_km = np.nan_to_num(rx_km[idx[0]])
        lay_h = np.nan_to_num(sub.rx_height_m[0], nan=10.0)
        band = np.nan_to_num(m.band_dbm, nan=-300.0)
        noise = np.nan_to_num(m.noise_dbm, nan=-300.0)

        def timed(name: str, fn: Callable[..., Any], *args: Any) -> None:
            t = time.perf_counter()
            out.setdefault(name, []).append(fn(*args))
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t

        if "weighted_centroid" in baselines:
            timed("weighted_centroid", weighted_centroid, rx_km[idx], m.band_dbm, m.heard, m.online)
        if "rss_ml" in baselines:
            # model terms known per session (free-space frequency term, clutter) moved into the data
            shift = 20.0 * np.log10(sub.center_freq_hz / 1e6)[:, None] + cfg.clutter_loss_db
            sigma = total_sigma_db(cfg, fs)
            obs = power_observations(
                band + shift, noise + shift, m.heard, m.online, m.clipped, sigma, DETECTION_SNR_DB
            )
            power_range = (cfg.tx_power_dbm_min, cfg.tx_power_dbm_max) if RSS_POWER_PRIOR else None
            heights = np.unique(np.linspace(cfg.tx_height_m_min, cfg.tx_height_m_max, _RSS_HEIGHT_NODES))
            timed("rss_ml", rss_ml, obs, lay_km, lay_h, ctx.grid, heights, model, power_range, truth_km[idx])
        if "oracle" in baselines and ctx.oracle is not None and _oracle_ready(ctx, sub):
            sigma = capture_sigma_db(cfg, fs)
            obs_c = power_observations(band, noise, m.heard, m.online, m.clipped, sigma, DETECTION_SNR_DB)
            timed("oracle", ctx.oracle.run, obs_c, sub.center_freq_hz, truth_km[idx])
        if "tdoa_ml" in baselines and _is_synchronised(sub):
            h_mid = 0.5 * (cfg.tx_height_m_min + cfg.tx_height_m_max)
            noise_lin = 10.0 ** (np.nan_to_num(m.noise_dbfs, nan=-300.0) / 10.0)
            timed(
                "tdoa_ml", tdoa_ml, sub.iq_complex(), fs, m.heard, m.snr_db, noise_lin,
                sub.rx_timing_sigma_s, lay_km, lay_h, ctx.grid, h_mid,
            )  # fmt: skip
    order = np.argsort(np.concatenate(idx_all))
    return {k: _reorder(type(v[0]).concat(v), order) for k, v in out.items() if len(v) == len(idx_all)}


def _reorder(est: Estimate | PosteriorEstimate, order: NDArray[np.int64]) -> Estimate | PosteriorEstimate:
    if isinstance(est, PosteriorEstimate):
        return PosteriorEstimate(
            _reorder(est.mean, order), _reorder(est.map, order), est.scores.select(order)
        )
    return Estimate(est.mean_km[order], None if est.cov_km2 is None else est.cov_km2[order])


def _oracle_ready(ctx: _Context, batch: SessionBatch) -> bool:
    if ctx.world is None or ctx.network is None:
        return False
    same_world = np.all(batch.world_seed == ctx.world.seed)
    same_layout = all(batch.rx_station[b].tolist() == ctx.network.ids for b in range(batch.n_sessions))
    return bool(same_world and same_layout and np.all(batch.labelled))


def evaluate_store(
    data: str,
    predictor: PredictorLike | None = None,
    baselines: list[str] | None = None,
    limit: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    radio_map: RadioMapLocator | None = None,
) -> EvalResult:
    """Run the model (optional) and the baselines on the labelled sessions of a store.

    Parameters
    ----------
    data
        Session store URI (folder or ``s3://``).
    predictor
        Model predictor (docs/ARCHITECTURE.md) or None for a baselines-only report.
    baselines
        Names from :data:`BASELINES` (default all).
    limit
        Evaluate only the first ``limit`` sessions.
    storage_options
        Object-store settings for ``s3://``.
    progress, on_total
        Progress callbacks (sessions done; total once known).
    radio_map
        Fitted radio maps (:mod:`heimdall.maps`): adds ``radio_map_kriging``.

    """
    baselines = list(BASELINES) if baselines is None else baselines
    if limit is not None and limit < 1:
        raise HeimdallError(f"--limit must be >= 1, got {limit}")
    store = SessionStore.open(data, storage_options=storage_options)
    total = len(store) if limit is None else min(limit, len(store))
    if total == 0:
        raise HeimdallError(f"{data}: the store holds no sessions")
    if on_total is not None:
        on_total(total)
    ctx: _Context | None = None
    parts: dict[str, list] = {}
    timings: dict[str, float] = {}
    notes: list[str] = []
    done = 0
    for shard in store.iter_shards():
        if done >= total:
            break
        batch = shard.select(slice(0, total - done)) if shard.n_sessions > total - done else shard
        done += batch.n_sessions
        keep = np.flatnonzero(batch.labelled)
        if keep.size < batch.n_sessions:
            batch = batch.select(keep)
        if batch.n_sessions == 0:
            continue
        if ctx is None:
            ctx = _context(store, batch, predictor)
        _process(ctx, batch, predictor, baselines, parts, timings, notes, radio_map)
        if progress is not None:
            progress(batch.n_sessions)
    if ctx is None or not parts:
        raise HeimdallError(f"{data}: no labelled sessions to evaluate")
    return _assemble(ctx, data, parts, timings, notes)


def _process(
    ctx: _Context,
    batch: SessionBatch,
    predictor: PredictorLike | None,
    baselines: list[str],
    parts: dict[str, list],
    timings: dict[str, float],
    notes: list[str],
    radio_map: RadioMapLocator | None = None,
) -> None:
    t = time.perf_counter()
    meas = measure_power(batch)
    timings["measure"] = timings.get("measure", 0.0) + time.perf_counter() - t
    geo = session_geometry(batch, ctx.frame)
    if ctx.grid is None:
        area = ctx.world.tx_area_km if ctx.world is not None else default_area_km(geo.rx_km)
        ctx.grid = search_grid(area, GRID_STEP_KM)
    if "oracle" in baselines and ctx.oracle is None:
        if _oracle_ready(ctx, batch):
            assert ctx.world is not None
            fade = fading_scatter(ctx.config, ctx.world.sample_rate_hz)
            ctx.oracle = Oracle(ctx.world, ctx.grid, fade.mean_db)
        elif "no oracle" not in " ".join(notes):
            notes.append("no oracle: the sessions are not simulated from the store's world")
    rx_km = np.where(batch.online[..., None], geo.rx_km, np.nan)
    ests: dict[str, Estimate] = {}
    # the model runs in its worker thread (one intra-op thread) beside the baselines
    has_posterior = predictor is not None and hasattr(predictor, "posterior")
    pending = None
    if predictor is not None:
        pending = (
            start_posterior(predictor, batch, ctx.frame) if has_posterior else start_model(predictor, batch)
        )
    # the grid products are skinny (R ≤ ~10): one BLAS thread beats contended threads
    with threadpool_limits(limits=1, user_api="blas"):
        found = _run_baselines(ctx, batch, meas, geo.rx_km, geo.tx_km, baselines, timings)
        if radio_map is not None:
            t = time.perf_counter()
            found["radio_map_kriging"] = _radio_map_kriging(radio_map, batch, ctx.frame)
            timings["radio_map_kriging"] = timings.get("radio_map_kriging", 0.0) + time.perf_counter() - t
    if pending is not None and has_posterior:  # a grid-posterior model: scored as a posterior
        post, seconds = pending.result()
        found["model"] = PosteriorEstimate(
            Estimate(post.mean_km, post.cov_km2), Estimate(post.map_km, None), post.scores
        )
        timings["model"] = timings.get("model", 0.0) + seconds
    elif pending is not None and predictor is not None:
        mean, cov, seconds = pending.result()
        if (predictor.frame.ref_lat_deg, predictor.frame.ref_lon_deg) != (
            ctx.frame.ref_lat_deg,
            ctx.frame.ref_lon_deg,
        ):
            lat, lon = predictor.frame.to_latlon(mean[:, 0], mean[:, 1])
            mean = np.stack(ctx.frame.to_local_km(lat, lon), axis=-1)
        ests["model"] = Estimate(np.asarray(mean, np.float64), np.asarray(cov, np.float64))
        timings["model"] = timings.get("model", 0.0) + seconds
    for name, res in found.items():
        if isinstance(res, PosteriorEstimate):  # the posterior mean is the estimator's answer
            key = POSTERIOR_NAMES.get(name, name)
            ests[key] = res.mean
            parts.setdefault(f"_map:{key}", []).append(res.map)
            parts.setdefault(f"_scores:{key}", []).append(res.scores)
            if name == "oracle":
                ests["oracle_map"] = res.map
        else:
            ests[name] = res
    t = time.perf_counter()
    crlb = _crlb(ctx, geo.rx_km, geo.tx_km, batch, batch.online)
    tcrlb = _tdoa_crlb(batch, meas, geo.rx_km, geo.tx_km) if "tdoa_ml" in ests else None
    timings["crlb"] = timings.get("crlb", 0.0) + time.perf_counter() - t
    for name, est in ests.items():
        parts.setdefault(name, []).append(est)
    parts.setdefault("_truth", []).append(geo.tx_km)
    parts.setdefault("_rx", []).append(rx_km)
    parts.setdefault("_n_heard", []).append(meas.n_heard)
    parts.setdefault("_inside", []).append(inside_hull(geo.tx_km, rx_km))
    parts.setdefault("_crlb", []).append(crlb)
    if tcrlb is not None:
        parts.setdefault("_tcrlb", []).append(tcrlb)


def _radio_map_kriging(locator: RadioMapLocator, batch: SessionBatch, frame: LocalFrame) -> PosteriorEstimate:
    """The radio-map posterior of the batch's sessions, positions moved from the map's frame to ``frame``."""
    post = locator.run(locator.rmap.observe(batch))
    mean, mp = post.mean_km, post.map_km
    if (locator.frame.ref_lat_deg, locator.frame.ref_lon_deg) != (frame.ref_lat_deg, frame.ref_lon_deg):
        mean, mp = (
            np.stack(frame.to_local_km(*locator.frame.to_latlon(p[:, 0], p[:, 1])), -1) for p in (mean, mp)
        )
    return PosteriorEstimate(Estimate(mean, post.cov_km2), Estimate(mp, post.map_cov_km2), post.scores)


def _cat_bounds(bounds: list[Bound]) -> Bound:
    return Bound(
        *(np.concatenate([getattr(b, f) for b in bounds]) for f in ("rmse_km", "cov_km2", "singular"))
    )


def _assemble(
    ctx: _Context, data: str, parts: dict[str, list], timings: dict[str, float], notes: list[str]
) -> EvalResult:
    n = sum(len(t) for t in parts["_truth"])
    estimates = {
        name: Estimate.concat(parts[name])
        for name in ESTIMATOR_NAMES
        if name in parts and sum(len(e.mean_km) for e in parts[name]) == n
    }
    for name in ESTIMATOR_NAMES:
        if name in parts and name not in estimates:
            notes.append(f"{name}: ran on only part of the sessions, left out")
    posteriors = {
        name: PosteriorScores.concat(parts[f"_scores:{name}"])
        for name in estimates
        if f"_scores:{name}" in parts and len(parts[f"_scores:{name}"]) == len(parts[name])
    }
    map_estimates = {name: Estimate.concat(parts[f"_map:{name}"]) for name in posteriors}
    hpd = posteriors["oracle_mean"].hpd_level if "oracle_mean" in posteriors else None
    tcrlb = _cat_bounds(parts["_tcrlb"]) if "tdoa_ml" in estimates and "_tcrlb" in parts else None
    assert ctx.grid is not None
    return EvalResult(
        data=data,
        frame=ctx.frame,
        area_km=ctx.grid.area_km,
        rx_km=np.concatenate(parts["_rx"]),
        truth_km=np.concatenate(parts["_truth"]),
        n_heard=np.concatenate(parts["_n_heard"]),
        inside=np.concatenate(parts["_inside"]),
        estimates=estimates,
        crlb=_cat_bounds(parts["_crlb"]),
        tdoa_crlb=tcrlb,
        hpd_level=hpd,
        posteriors=posteriors,
        map_estimates=map_estimates,
        timings_s=timings,
        notes=notes,
    )
