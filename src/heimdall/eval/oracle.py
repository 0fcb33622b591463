"""The oracle: the Bayesian posterior of the transmitter position with the world's hidden truth.

Simulated data only (DESIGN.md §5). The oracle knows everything that is fixed
in the world: the true static shadowing maps (:meth:`World.static_shadowing_db`),
the receivers' true gain offsets (``World.gain_offset_db``), the median path
loss and clutter loss, and the exact priors of the simulator: position uniform
over ``World.tx_area_km``, transmit power uniform in dBm (log-uniform in W) over
[``tx_power_dbm_min``, ``tx_power_dbm_max``], antenna height uniform over its
range. The only noise left is per capture: capture shadowing, the fast-fading
power scatter (mean and σ measured from the simulator's fading process,
:mod:`heimdall.eval.noise`) and the power measurement error.

For each grid cell x (≤ 1 km) the likelihood is integrated over P0 in closed
form (Gaussian heard terms × uniform prior, :mod:`heimdall.eval.likelihood`),
censored (silent, clipped) terms by equal-mass quadrature over the conditional
law of P0, and over the height by Gauss-Legendre quadrature. The posterior on
the grid gives the posterior mean (``oracle_mean``, with its covariance), the
mode (``oracle_map``, with the second moment about it) and the highest-posterior-
density (HPD) level of the truth, whose coverage checks that the oracle is right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp

from heimdall.eval.estimate import Estimate, grid_moments
from heimdall.eval.geometry import SearchGrid
from heimdall.eval.likelihood import (
    PowerObservations,
    censored_loglik,
    heard_stats,
    logsumexp0,
    power_marginal_loglik,
    truncated_normal_nodes,
)
from heimdall.eval.rss_ml import PathLoss
from heimdall.sim import World

_CHUNK = 48
#: Log-likelihood margin (nats) below the heard-only maximum beyond which censored terms are skipped.
PRUNE_NATS = 30.0
#: Quadrature nodes of P0 for censored terms; Gauss-Legendre nodes of the transmitter height.
P0_NODES = 8
HEIGHT_NODES = 4


@dataclass(frozen=True)
class OracleResult:
    """Oracle outputs for B sessions.

    Attributes
    ----------
    mean
        Posterior mean with the posterior covariance.
    map
        Posterior mode on the grid with the second moment about it.
    hpd_level
        Posterior mass of the HPD region whose boundary passes through the truth (B,);
        the truth is inside the level-p HPD region when ``hpd_level <= p``. NaN if unlabelled.

    """

    mean: Estimate
    map: Estimate
    hpd_level: NDArray[np.float64]


def _height_nodes(lo: float, hi: float, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gauss-Legendre nodes and log-weights of the uniform law on [lo, hi] (m)."""
    if hi - lo < 1e-9:
        return np.array([lo]), np.array([0.0])
    x, w = np.polynomial.legendre.leggauss(n)
    return lo + (x + 1.0) * 0.5 * (hi - lo), np.log(w / w.sum())


class Oracle:
    """The world's oracle posterior on a grid.

    Parameters
    ----------
    world
        The simulated world (hidden truth included).
    grid
        Grid over ``world.tx_area_km`` (≤ 1 km cells): the prior's support.
    fading_mean_db
        Mean of the capture-averaged fading power, dB.

    """

    def __init__(self, world: World, grid: SearchGrid, fading_mean_db: float) -> None:
        self.world = world
        self.grid = grid
        cfg = world.config
        self.p0_lo, self.p0_hi = cfg.tx_power_dbm_min, cfg.tx_power_dbm_max
        self.model = PathLoss(cfg.path_loss_exponent_near, cfg.path_loss_exponent_far, cfg.horizon_k_factor)
        self.heights, self.log_hw = _height_nodes(cfg.tx_height_m_min, cfg.tx_height_m_max, HEIGHT_NODES)
        self.fixed_db = world.gain_offset_db - cfg.clutter_loss_db + fading_mean_db  # (R,)
        pts = grid.points_km
        self.static_db = world.static_shadowing_db(pts[:, 0], pts[:, 1])  # (R, G)
        self.dist = world.distance_km(pts[:, 0], pts[:, 1]).T  # (R, G)
        self.gains = [self._gain(self.dist, h, self.static_db) for h in self.heights]

    def _gain(self, dist: NDArray, height: float | NDArray, static: NDArray) -> NDArray[np.float64]:
        """a_i = −L(d; 1 MHz) + static + gain + fixed terms, dB; ``dist`` (R, G) or (B, R, K)."""
        shape = (-1, 1) if dist.ndim == 2 else (1, -1, 1)
        rx_h = self.world.network.heights_m.reshape(shape)
        return self.model.gain_db(dist, height, rx_h) + static + self.fixed_db.reshape(shape)

    def _log_post(self, obs: PowerObservations, gains: list[NDArray]) -> NDArray[np.float64]:
        """Log posterior (unnormalised) at candidates for sessions ``obs``: (B, G)."""
        heard = self._heard(obs, gains) + self.log_hw[:, None, None]  # (H, B, G)
        censored = np.flatnonzero(np.any(obs.cens_sign != 0, axis=1))
        for b in censored:
            heard[:, b] = self._with_censored(
                obs.select([b]), [g if g.ndim == 2 else g[b] for g in gains], heard[:, b]
            )
        return logsumexp0(heard)

    def _heard(self, obs: PowerObservations, gains: list[NDArray]) -> NDArray[np.float64]:
        """Heard terms with P0 integrated over its prior, (H, B, G).

        The prior-interval factor (≤ 1) is evaluated only on cells whose Gaussian
        part is within ``PRUNE_NATS`` of the session's best; other cells get −inf
        unless that leaves no cell within 20 nats of the excluded bound (then all are kept).
        """
        stats = [heard_stats(obs, g) for g in gains]
        return power_marginal_loglik(stats, self.p0_lo, self.p0_hi)

    def _censored_expectation(self, obs: PowerObservations, gain: NDArray, cols: NDArray) -> NDArray:
        """Log E[Π Φ] over the law of P0 given the heard terms, at columns ``cols``: (len(cols),)."""
        g = gain[:, cols]
        m, big_w, _ = heard_stats(obs, g)
        if big_w[0] > 0:
            sd = np.full(m.shape, 1.0 / np.sqrt(big_w[0]))
            nodes = truncated_normal_nodes(m, sd, self.p0_lo, self.p0_hi, P0_NODES)[0]  # (C, K)
        else:
            u = (np.arange(P0_NODES) + 0.5) / P0_NODES
            nodes = np.broadcast_to(self.p0_lo + (self.p0_hi - self.p0_lo) * u, (len(cols), P0_NODES))
        ll = censored_loglik(obs, nodes[None], g[None, :, :, None])[0]  # (C, K)
        return logsumexp(ll, axis=1) - np.log(P0_NODES)

    def _with_censored(self, obs: PowerObservations, gains: list[NDArray], heard: NDArray) -> NDArray:
        """Add censored terms to one session's heard log-likelihood (H, G), pruning hopeless cells."""
        top = heard.max()
        cols = np.flatnonzero(heard.max(axis=0) >= top - PRUNE_NATS)
        out = np.full_like(heard, -np.inf)
        for k, gain in enumerate(gains):
            out[k, cols] = heard[k, cols] + self._censored_expectation(obs, gain, cols)
        if out.max() < top - PRUNE_NATS + 20.0 and len(cols) < heard.shape[1]:  # pruned too much: all cells
            cols = np.arange(heard.shape[1])
            for k, gain in enumerate(gains):
                out[k] = heard[k] + self._censored_expectation(obs, gain, cols)
        return out

    def run(
        self, obs: PowerObservations, freq_hz: NDArray[np.float64], truth_km: NDArray[np.float64]
    ) -> OracleResult:
        """Posterior of every session (all sessions must use the world's receiver layout).

        Parameters
        ----------
        obs
            Power observations (dBm via nominal full scale; the oracle adds the true gains).
        freq_hz
            Carrier frequency per session (B,), Hz.
        truth_km
            True positions (B, 2), km (NaN: no HPD level).

        """
        shift = -20.0 * np.log10(freq_hz / 1e6)  # free-space frequency term, dB
        pts = self.grid.points_km
        means, covs, maps, map_covs, levels = [], [], [], [], []
        for start in range(0, len(freq_hz), _CHUNK):
            sl = slice(start, start + _CHUNK)
            ob = _shift(obs.select(sl), shift[sl])
            lp = self._log_post(ob, self.gains)
            mean, cov = grid_moments(lp, pts)
            mp = self._refine_map(ob, pts[np.argmax(lp, axis=1)])
            _, map_cov = grid_moments(lp, pts, mp)
            floor = np.diag([self.grid.step_east_km**2, self.grid.step_north_km**2]) / 12.0
            means.append(mean)
            covs.append(cov + floor)
            maps.append(mp)
            map_covs.append(map_cov + floor)
            levels.append(self._hpd_level(ob, lp, truth_km[sl]))
        return OracleResult(
            Estimate(np.concatenate(means), np.concatenate(covs)),
            Estimate(np.concatenate(maps), np.concatenate(map_covs)),
            np.concatenate(levels),
        )

    def _log_post_at(self, obs: PowerObservations, points_km: NDArray[np.float64]) -> NDArray[np.float64]:
        """Log posterior at per-session points (B, K, 2): (B, K)."""
        e, n = points_km[..., 0], points_km[..., 1]
        dist = np.moveaxis(self.world.distance_km(e, n), -1, 1)  # (B, R, K)
        static = np.moveaxis(self.world.static_shadowing_db(e, n), 0, 1)  # (B, R, K)
        return self._log_post(obs, [self._gain(dist, h, static) for h in self.heights])

    def _refine_map(
        self, obs: PowerObservations, start_km: NDArray[np.float64], iterations: int = 12
    ) -> NDArray:
        """Local compass search of the posterior mode from the best grid cell (vectorised)."""
        offs = np.stack(np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]), -1).reshape(-1, 2)
        step = np.full(len(start_km), 0.5 * max(self.grid.step_east_km, self.grid.step_north_km))
        pos = start_km.copy()
        best = self._log_post_at(obs, pos[:, None])[:, 0]
        e0, e1, n0, n1 = self.grid.area_km
        rows = np.arange(len(pos))
        for _ in range(iterations):
            cand = pos[:, None, :] + offs[None] * step[:, None, None]
            cand[..., 0] = np.clip(cand[..., 0], e0, e1)
            cand[..., 1] = np.clip(cand[..., 1], n0, n1)
            ll = self._log_post_at(obs, cand)
            k = np.argmax(ll, axis=1)
            better = ll[rows, k] > best + 1e-9
            pos = np.where(better[:, None], cand[rows, k], pos)
            best = np.where(better, ll[rows, k], best)
            step = np.where(better, step, 0.5 * step)
        return pos

    def _hpd_level(self, obs: PowerObservations, lp: NDArray, truth_km: NDArray) -> NDArray[np.float64]:
        """Posterior mass of cells denser than the truth (the truth's HPD level)."""
        ok = np.all(np.isfinite(truth_km), axis=1)
        out = np.full(len(lp), np.nan)
        if not ok.any():
            return out
        t = np.where(ok[:, None], truth_km, self.grid.points_km[0])
        lp_truth = self._log_post_at(obs, t[:, None])[:, 0]
        post = np.exp(lp - lp.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        denser = np.where(lp > lp_truth[:, None], post, 0.0).sum(axis=1)
        out[ok] = denser[ok]
        return out


def _shift(obs: PowerObservations, shift_db: NDArray[np.float64]) -> PowerObservations:
    """Move a per-session constant gain term (dB) from the model into the data."""
    s = shift_db[:, None]
    return PowerObservations(obs.y_db - s, obs.weight, obs.cens_db - s, obs.cens_sign, obs.cens_sigma_db)
