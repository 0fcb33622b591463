"""What the service computes per session: the Gaussian of today's networks or a grid posterior.

:func:`locate_prepared` runs the served model on validated sessions
(:class:`~heimdall.serve.inputs.PreparedSession`) and returns, per session, the mean (km)
and covariance (km²) in a local frame — the ellipse every answer carries — and, for a
grid-posterior model (:class:`~heimdall.models.grid_predictor.GridPosteriorPredictor`),
the posterior on its grid as a :class:`~heimdall.posterior.map.PosteriorMap`.

For a grid-posterior model the sessions become a :class:`~heimdall.data.session.SessionBatch`
(int16 IQ at the model's rate, each receiver's position, matched station id and nominal
full-scale power), which the predictor measures and runs like a stored session. Per session
it evaluates the coarse grid once and refines the cells holding the mass
(:meth:`GridPosteriorPredictor.refined`); the mean and covariance are the refined posterior's
moments (what :meth:`GridPosteriorPredictor.predict` returns), and the posterior map is the
coarse grid with each refined cell's density replaced by the average of its sub-cells (the
same cell masses as the refined posterior), so one coarse graph run serves both. A model
without a map answers in a frame at its session's receivers (its own search grid's frame),
one with a map in the map network's frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.data.session import HEARD, OFFLINE, SessionBatch
from heimdall.errors import HeimdallError
from heimdall.models.grid_predictor import coarse_map
from heimdall.network.geodesy import LocalFrame
from heimdall.posterior.map import PosteriorMap
from heimdall.serve.inputs import PreparedSession, RequestError, stack_sessions
from heimdall.serve.raster import DEFAULT_SIZE, Raster, raster_image, raster_of


@dataclass(frozen=True)
class Located:
    """One session's answer before formatting.

    Attributes
    ----------
    mean_km, cov_km2
        Posterior mean (2,) km and covariance (2, 2) km² in ``frame``.
    frame
        The local frame of the answer.
    posterior_map
        The grid posterior (grid-posterior models), else None (a Gaussian).

    """

    mean_km: NDArray[np.float64]
    cov_km2: NDArray[np.float64]
    frame: LocalFrame
    posterior_map: PosteriorMap | None = None


def is_grid(predictor: Any) -> bool:
    """Whether ``predictor`` is a grid-posterior model (it answers with a posterior map)."""
    return callable(getattr(predictor, "refined", None)) and callable(getattr(predictor, "inputs", None))


def session_batch(sessions: list[PreparedSession], sample_rate_hz: float) -> SessionBatch:
    """Prepared sessions as a SessionBatch: every receiver in request order, padded with offline slots.

    IQ goes back to int16 (full scale 32768, rounded and clipped: exact for int16 requests
    that needed no resampling); receivers are named by their matched station id. Offline
    receivers keep their slot and position, as in a stored session (a model without a map
    places its search area around all of a session's receivers).
    """
    keep = [np.arange(len(s.ids)) for s in sessions]
    b, r, t = len(sessions), max(len(k) for k in keep), sessions[0].iq.shape[1]
    iq = np.zeros((b, r, t, 2), np.int16)
    station = np.full((b, r), "", dtype=object)
    lat, lon, height, fullscale = (np.full((b, r), np.nan) for _ in range(4))
    state = np.full((b, r), OFFLINE, np.int8)
    for k, (s, idx) in enumerate(zip(sessions, keep, strict=True)):
        n = len(idx)
        scaled = s.iq[idx] * np.float32(32768.0)  # a new array: rounded and clipped in place
        iq[k, :n] = np.clip(np.round(scaled, out=scaled), -32768, 32767, out=scaled)
        station[k, :n] = [s.stations[i] for i in idx]
        lat[k, :n], lon[k, :n] = s.lat_deg[idx], s.lon_deg[idx]
        height[k, :n], fullscale[k, :n] = s.rx_pos[idx, 2], s.fullscale_dbm[idx]
        state[k, :n] = np.where(s.rx_mask, HEARD, OFFLINE)  # the predictor measures heard / silent
    nan = np.full(b, np.nan)
    return SessionBatch(
        session_id=np.arange(b, dtype=np.int64),
        world_seed=np.full(b, -1, np.int64),
        session_seed=np.full(b, -1, np.int64),
        center_freq_hz=np.array([s.center_freq_hz for s in sessions], np.float64),
        sample_rate_hz=np.full(b, sample_rate_hz),
        tx_lat_deg=nan, tx_lon_deg=nan.copy(), tx_power_dbm=nan.copy(), tx_height_m=nan.copy(),
        mode=np.full(b, -1, np.int8),
        rx_station=station.astype(str),
        rx_lat_deg=lat, rx_lon_deg=lon, rx_height_m=height, rx_fullscale_dbm=fullscale,
        rx_state=state,
        rx_start_ns=np.zeros((b, r), np.int64),
        rx_timing_sigma_s=np.full((b, r), np.nan),
        rx_power_dbm=np.full((b, r), np.nan), rx_snr_db=np.full((b, r), np.nan),
        rx_delay_s=np.full((b, r), np.nan), rx_clipped=np.zeros((b, r), bool),
        iq=iq,
    )  # fmt: skip


def _locate_grid(predictor: Any, sessions: list[PreparedSession]) -> list[Located]:
    batch = session_batch(sessions, predictor.sample_rate_hz)
    try:
        inputs = predictor.inputs(batch)
        out = []
        for i in range(len(sessions)):
            post = predictor.refined(inputs, i)
            mean, cov = post.moments()
            frame = inputs.frames[i]
            out.append(Located(mean[0], cov[0], frame, coarse_map(post, frame)))
    except HeimdallError as exc:  # e.g. no finite density on the grid: the session is unanswerable
        raise RequestError([(("body",), str(exc))]) from None
    return out


def locate_prepared(predictor: Any, sessions: list[PreparedSession]) -> tuple[list[Located], float]:
    """Run the served model on prepared sessions; their answers and the run time (ms)."""
    start = time.perf_counter()
    if is_grid(predictor):
        located = _locate_grid(predictor, sessions)
    else:
        mean, cov = predictor.run(**stack_sessions(sessions))
        finite = np.isfinite(mean).all(axis=-1) & np.isfinite(cov).all(axis=(-2, -1))
        if not finite.all():  # never an answer with null coordinates
            raise RequestError(
                [
                    (("body",) if len(sessions) == 1 else ("body", "sessions", int(k)),
                     "the model's answer is not finite (NaN or Inf) for these captures")
                    for k in np.flatnonzero(~finite)
                ]
            )  # fmt: skip
        located = [Located(mean[k], cov[k], predictor.frame) for k in range(len(sessions))]
    return located, (time.perf_counter() - start) * 1000.0


def map_raster(pmap: PosteriorMap, size: int = DEFAULT_SIZE) -> Raster:
    """The posterior map on a lat/lon raster over its grid (bilinear log density; zero outside the grid)."""
    e0, e1, n0, n1 = pmap.grid.area_km
    east = np.array([e0, e1, e1, e0, 0.5 * (e0 + e1), 0.5 * (e0 + e1), e0, e1])
    north = np.array([n0, n0, n1, n1, n0, n1, 0.5 * (n0 + n1), 0.5 * (n0 + n1)])
    lat, lon = pmap.frame.to_latlon(east, north)
    bounds = (float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max()))

    def log_density(e: NDArray[np.float64], n: NDArray[np.float64]) -> NDArray[np.float64]:
        pts = np.stack([e.ravel(), n.ravel()], axis=-1)
        out = pmap.log_density_at(pts).reshape(e.shape)
        inside = (e >= e0) & (e <= e1) & (n >= n0) & (n <= n1)
        return np.where(inside, out, -np.inf)

    return raster_of(pmap.frame, log_density, bounds, size)


def edge_mass(pmap: PosteriorMap) -> float:
    """Posterior mass (0–1) of the outermost ring of grid cells: high when the answer presses on the edge.

    The posterior lives on its grid only (a radio map's area, or the receivers' box + 30 km), so
    mass piled against the grid's edge says the transmitter may be outside the area searched.
    """
    prob = pmap.probabilities.reshape(pmap.grid.n_north, pmap.grid.n_east)
    inner = prob[1:-1, 1:-1].sum() if min(prob.shape) > 2 else 0.0
    return float(min(max(prob.sum() - inner, 0.0), 1.0))


def _point(frame: LocalFrame, p: NDArray[np.float64]) -> dict[str, float]:
    lat, lon = frame.to_latlon(np.float64(p[0]), np.float64(p[1]))
    return {"latitude": float(lat), "longitude": float(lon), "east_km": float(p[0]), "north_km": float(p[1])}


def posterior_answer(located: Located, png: bool = False) -> dict[str, Any]:
    """The ``posterior`` field of a grid answer: :meth:`PosteriorMap.answer` with the refined moments.

    ``mean`` and ``cov_km2`` are the refined posterior's (the answer's latitude, longitude and
    ellipses); MAP, modes and HPD regions come from the map on its grid. ``png`` adds
    ``raster`` (:func:`map_raster`, :func:`heimdall.serve.raster.raster_image`).
    """
    pmap = located.posterior_map
    if pmap is None:
        raise ValueError("a Gaussian answer has no posterior map")
    if located.frame == pmap.frame:  # the usual case: the map's own moments are not computed
        out = pmap.answer(moments=(located.mean_km, located.cov_km2))
    else:
        out = pmap.answer()
        out["mean"] = _point(located.frame, located.mean_km)
        out["cov_km2"] = np.asarray(located.cov_km2, dtype=np.float64).tolist()
    out["edge_mass"] = edge_mass(pmap)
    g = pmap.grid
    out["grid"] = {
        "area_km": [float(v) for v in g.area_km],
        "step_east_km": float(g.step_east_km),
        "step_north_km": float(g.step_north_km),
        "n_east": g.n_east,
        "n_north": g.n_north,
    }
    if png:
        out["raster"] = raster_image(map_raster(pmap))
    return out
