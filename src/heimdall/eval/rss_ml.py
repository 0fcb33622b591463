"""Classical RSS maximum likelihood.

Model: measured power y_i (dBm, nominal full scale) = P0 − L(d_i; h_t, h_i) + e_i with
the *median* path loss L of :func:`heimdall.sim.propagation.median_path_loss_db`
only (no terrain), the transmit power P0 unknown (profiled within the published
range of transmit powers, [27, 47] dBm in the reference world, and marginalised
over it on the grid), the transmitter height unknown (profiled over nodes
spanning its range), and e_i ~ N(0, σ²) with every random term folded
into σ² = static² + gain² + capture² + fading² + measurement² (the
receivers' gain offsets and terrain are unknown to a classical estimator).
Silent receivers enter as censored terms log Φ((t_i − P0 + L_i)/σ), t_i the
measured noise floor (the detection rule), clipped ones as lower bounds.

Search: every cell centre of a grid ≤ 1 km over the area, then a local
pattern search (vectorised over sessions) of the exact censored likelihood
in (east, north), P0 profiled by Newton steps (the likelihood is concave in
P0). The covariance is the second moment, about the estimate, of the grid
likelihood normalised as a posterior (flat prior over the area).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr

from heimdall.eval.estimate import Estimate, PosteriorEstimate, uniform_area_cov
from heimdall.posterior.density import hpd_area_km2, hpd_level, log_score
from heimdall.posterior.grid import SearchGrid, grid_moments, interpolate_on_grid
from heimdall.posterior.likelihood import (
    PowerObservations,
    add_pruned,
    censored_loglik,
    heard_stats,
    logsumexp0,
    power_marginal_loglik,
)
from heimdall.posterior.scores import PosteriorScores
from heimdall.sim.propagation import median_path_loss_db

_CHUNK = 48


@dataclass(frozen=True)
class PathLoss:
    """Median path-loss parameters (exponents near / beyond the horizon, earth-radius factor)."""

    n_near: float = 2.0
    n_far: float = 4.0
    k_factor: float = 4.0 / 3.0

    def gain_db(
        self, distance_km: NDArray[np.float64], tx_height_m: float | NDArray, rx_height_m: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """−L (dB) at 1 MHz (frequency only shifts P0), same shape as ``distance_km``."""
        return -median_path_loss_db(
            distance_km, 1.0, tx_height_m, rx_height_m, self.n_near, self.n_far, self.k_factor
        )


def _distances(points_km: NDArray[np.float64], rx_km: NDArray[np.float64]) -> NDArray[np.float64]:
    """(R, G) distances between receivers (R, 2) and points (G, 2), km."""
    return np.hypot(points_km[None, :, 0] - rx_km[:, None, 0], points_km[None, :, 1] - rx_km[:, None, 1])


def _profile_loglik(
    obs: PowerObservations,
    pos_km: NDArray[np.float64],
    height_m: NDArray[np.float64],
    rx_km: NDArray[np.float64],
    rx_height_m: NDArray[np.float64],
    model: PathLoss,
    power_range_dbm: tuple[float, float] | None,
    newton_steps: int = 4,
) -> NDArray[np.float64]:
    """Log-likelihood at candidates pos (B, K, 2) with P0 profiled exactly: (B, K).

    P0 starts at the heard terms' weighted mean (clipped to the range) and takes
    Newton steps on the full 1-D log-likelihood, which is concave in P0
    (Gaussian terms and log Φ terms).
    """
    d = np.hypot(
        pos_km[:, None, :, 0] - rx_km[None, :, None, 0], pos_km[:, None, :, 1] - rx_km[None, :, None, 1]
    )
    gain = model.gain_db(d, height_m[:, None, None], rx_height_m[None, :, None])  # (B, R, K)
    w = obs.weight[:, :, None]
    big_w = np.maximum(w.sum(axis=1), 1e-12)
    res0 = obs.y_db[:, :, None] - gain
    p0 = np.sum(w * res0, axis=1) / big_w
    lo, hi = power_range_dbm if power_range_dbm is not None else (-np.inf, np.inf)
    p0 = np.clip(p0, lo, hi)
    sign = obs.cens_sign.astype(np.float64)[:, :, None]
    cens_sig = obs.cens_sigma_db[:, :, None]
    if np.any(sign != 0):
        for _ in range(newton_steps):
            z = sign * (obs.cens_db[:, :, None] - p0[:, None, :] - gain) / cens_sig
            lam = np.where(sign != 0, np.exp(-0.5 * z * z - 0.5 * np.log(2 * np.pi) - log_ndtr(z)), 0.0)
            grad = np.sum(w * (res0 - p0[:, None, :]), axis=1) - np.sum(sign * lam / cens_sig, axis=1)
            hess = -big_w - np.sum(lam * (z + lam) / cens_sig**2, axis=1)
            p0 = np.clip(p0 - grad / np.minimum(hess, -1e-12), lo, hi)
    res = res0 - p0[:, None, :]
    return -0.5 * np.sum(w * res * res, axis=1) + censored_loglik(obs, p0, gain)


def _pattern_search(
    obs: PowerObservations,
    pos: NDArray[np.float64],
    height: NDArray[np.float64],
    rx_km: NDArray[np.float64],
    rx_height_m: NDArray[np.float64],
    model: PathLoss,
    step_km: float,
    power_range_dbm: tuple[float, float] | None = None,
    iterations: int = 18,
) -> NDArray[np.float64]:
    """Vectorised compass search of (east, north), P0 profiled; steps halve when stuck."""
    offs = np.stack(np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]), -1).reshape(-1, 2)
    step = np.full(len(pos), step_km)
    args = (height, rx_km, rx_height_m, model, power_range_dbm)
    best = _profile_loglik(obs, pos[:, None], *args)[:, 0]
    rows = np.arange(len(pos))
    for _ in range(iterations):
        cand = pos[:, None, :] + offs[None] * step[:, None, None]
        ll = _profile_loglik(obs, cand, *args)
        k = np.argmax(ll, axis=1)
        better = ll[rows, k] > best + 1e-12
        pos = np.where(better[:, None], cand[rows, k], pos)
        best = np.where(better, ll[rows, k], best)
        step = np.where(better, step, step * 0.5)
    return pos


def _add_censored(
    obs: PowerObservations, ll: NDArray[np.float64], p0: NDArray[np.float64], gains: list[NDArray[np.float64]]
) -> NDArray[np.float64]:
    """Add one session's censored terms to its grid log-likelihood (H, G) at the profiled P0."""
    return add_pruned(ll, lambda k, cols: censored_loglik(obs, p0[k, cols][None], gains[k][None, :, cols])[0])


def rss_ml(
    obs: PowerObservations,
    rx_km: NDArray[np.float64],
    rx_height_m: NDArray[np.float64],
    grid: SearchGrid,
    tx_heights_m: NDArray[np.float64],
    model: PathLoss,
    power_range_dbm: tuple[float, float] | None = None,
    truth_km: NDArray[np.float64] | None = None,
) -> PosteriorEstimate:
    """Classical RSS maximum likelihood, and its grid posterior, for sessions sharing one receiver layout.

    The posterior is the grid likelihood (P0 marginalised over its range, or
    profiled without one; heights mixed with equal weights) under a flat prior
    over the area: its mean and covariance are ``mean``; the ML position
    (pattern-searched below the grid step) is ``map``, with the second moment about it.

    Parameters
    ----------
    obs
        Power observations of B sessions (dBm; σ folded into the weights).
    rx_km, rx_height_m
        Receiver positions (R, 2) km and antenna heights (R,) m.
    grid
        Search grid (≤ 1 km) over the area.
    tx_heights_m
        Transmitter heights (m) profiled over.
    model
        Median path-loss parameters.
    power_range_dbm
        Known range of transmit powers (dBm): P0 is profiled within it and
        marginalised (uniform) on the grid; None: unbounded profile. ``obs``
        must then hold y + 20 log10(f / MHz) + clutter loss, so that P0 is the
        transmit power itself.
    truth_km
        True positions (B, 2) km for the posterior's scores (log score, HPD level:
        density interpolated between cell centres); None or NaN: scores NaN.

    """
    dist = _distances(grid.points_km, rx_km)
    gains = [model.gain_db(dist, h, rx_height_m[:, None]) for h in tx_heights_m]
    n_heard = (obs.weight > 0).sum(axis=1)
    b_all = len(obs.y_db)
    truth = np.full((b_all, 2), np.nan) if truth_km is None else np.asarray(truth_km, dtype=np.float64)
    floor = np.diag([grid.step_east_km**2, grid.step_north_km**2]) / 12.0  # grid quantisation
    parts = []
    for start in range(0, b_all, _CHUNK):
        sl = slice(start, start + _CHUNK)
        ob = obs.select(sl)
        censored = np.any(ob.cens_sign != 0, axis=1)
        stats = [heard_stats(ob, gain) for gain in gains]
        if power_range_dbm is not None:
            ll_h = power_marginal_loglik(stats, *power_range_dbm)
            p0_h = np.stack([np.clip(m, *power_range_dbm) for m, _, _ in stats])
        else:
            ll_h = np.stack([-0.5 * q for _, _, q in stats])
            p0_h = np.stack([m for m, _, _ in stats])
        for b in np.flatnonzero(censored):
            ll_h[:, b] = _add_censored(ob.select([b]), ll_h[:, b], p0_h[:, b], gains)
        best_h = np.argmax(ll_h, axis=0)
        best_ll = np.take_along_axis(ll_h, best_h[None], 0)[0]
        lp = logsumexp0(ll_h)  # heights mixed: the posterior under a flat prior
        k = np.argmax(best_ll, axis=1)
        rows = np.arange(len(k))
        height = tx_heights_m[best_h[rows, k]]
        pos = _pattern_search(
            ob, grid.points_km[k].copy(), height, rx_km, rx_height_m, model,
            step_km=0.5 * max(grid.step_east_km, grid.step_north_km), power_range_dbm=power_range_dbm,
        )  # fmt: skip
        _, cov = grid_moments(best_ll, grid.points_km, pos)
        cov += floor
        mean, mcov = grid_moments(lp, grid.points_km)
        mcov += floor
        none = n_heard[sl] == 0
        if none.any():  # nothing heard: P0 and position are not identifiable
            pos[none] = mean[none] = grid.points_km.mean(axis=0)
            cov[none] = mcov[none] = uniform_area_cov(grid.area_km, int(none.sum()))
        t = truth[sl]
        ok = np.all(np.isfinite(t), axis=1)
        lp_t = interpolate_on_grid(grid, lp, np.where(ok[:, None], t, grid.points_km[0]))
        scores = PosteriorScores(
            np.where(ok, hpd_level(lp, lp_t), np.nan),
            np.where(ok, log_score(lp_t, lp, grid.cell_area_km2), np.nan),
            hpd_area_km2(lp, 0.9, grid.cell_area_km2),
        )
        parts.append(PosteriorEstimate(Estimate(mean, mcov), Estimate(pos, cov), scores))
    return PosteriorEstimate.concat(parts)
