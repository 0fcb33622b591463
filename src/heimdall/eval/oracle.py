"""The oracle: the Bayesian posterior of the transmitter position with the world's hidden truth.

Simulated data only (docs/EVALUATION.md). The oracle knows everything that is fixed
in the world: the true static shadowing maps and the receivers' true gain offsets
of the session's band (2 m / 70 cm: :meth:`World.static_shadowing_db`,
:meth:`World.gain_offset_db_for`), the median path
loss and clutter loss, and the exact priors of the simulator: position uniform
over ``World.tx_area_km``, transmit power uniform in dBm (log-uniform in W) over
[``tx_power_dbm_min``, ``tx_power_dbm_max``], antenna height uniform over its
range. The only noise left is per capture: capture shadowing, the fast-fading
power scatter (mean and σ measured from the simulator's fading process,
:mod:`heimdall.eval.noise`) and the power measurement error. The sites' noise
offsets and each capture's noise wander enter through the measured noise floor:
a receiver is silent when its measured SNR is below the detection threshold, so
the measured floor is exactly the censoring level (the static offset adds nothing).

For each grid cell x (≤ 1 km) the likelihood is integrated over P0 in closed
form (Gaussian heard terms × uniform prior, :mod:`heimdall.posterior.likelihood`),
censored (silent, clipped) terms by equal-mass quadrature over the conditional
law of P0, and over the height by Gauss-Legendre quadrature. The cells that hold
the mass are then re-evaluated on 125 m sub-cells (:mod:`heimdall.posterior.refine`):
the static fields are rough within a 1 km cell and the posterior is often narrower
than one, so the 1 km midpoint rule alone misjudged the HPD level of the truth (it
covered 83.8 % at the 86.5 % level on world 0). The refined posterior gives the
posterior mean (``oracle_mean``, with its covariance), the mode (``oracle_map``, with
the second moment about it) and the highest-posterior-density (HPD) level of the
truth, whose coverage checks that the oracle is right (docs/EVALUATION.md).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from heimdall.eval.estimate import Estimate, PosteriorEstimate
from heimdall.eval.rss_ml import PathLoss
from heimdall.posterior.grid import SearchGrid
from heimdall.posterior.likelihood import (
    HEIGHT_NODES,
    P0_NODES,
    PowerObservations,
    height_nodes,
    log_posterior_grid,
)
from heimdall.posterior.refine import (
    REFINE_FACTOR,
    REFINE_MASS,
    REFINE_MAX_CELLS,
    REFINE_RING,
    RefinedPosterior,
    refine_posterior,
)
from heimdall.posterior.scores import PosteriorScores
from heimdall.sim import World
from heimdall.sim.simulator import band_of

_CHUNK = 48
#: Threads of the oracle: the 2 cores of the reference machine (docs/EVALUATION.md, evaluation speed).
ORACLE_THREADS = min(
    2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)


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
    refine_factor
        Sub-cells per grid cell side where the mass lies (1: the grid alone, midpoint rule).
    threads
        Chunks of sessions evaluated at once (threads; each uses one BLAS thread).

    """

    def __init__(
        self,
        world: World,
        grid: SearchGrid,
        fading_mean_db: float,
        refine_factor: int = REFINE_FACTOR,
        threads: int = ORACLE_THREADS,
    ) -> None:
        self.world = world
        self.grid = grid
        self.refine_factor = int(refine_factor)
        self.threads = max(1, int(threads))
        cfg = world.config
        self.p0_lo, self.p0_hi = cfg.tx_power_dbm_min, cfg.tx_power_dbm_max
        self.model = PathLoss(cfg.path_loss_exponent_near, cfg.path_loss_exponent_far, cfg.horizon_k_factor)
        self.heights, self.log_hw = height_nodes(cfg.tx_height_m_min, cfg.tx_height_m_max, HEIGHT_NODES)
        self.fading_mean_db = fading_mean_db
        pts = grid.points_km
        self.dist = world.distance_km(pts[:, 0], pts[:, 1]).T  # (R, G)
        self._grid_gains: dict[str, NDArray[np.float64]] = {}

    def _fixed_db(self, band: str) -> NDArray[np.float64]:
        """Per-receiver constant terms of ``band``: true gain offset − clutter loss + fading mean, (R,) dB."""
        return self.world.gain_offset_db_for(band) - self.world.config.clutter_loss_db + self.fading_mean_db

    def gains(self, band: str) -> NDArray[np.float64]:
        """Received power for P0 = 0 dBm at 1 MHz on the grid, per height node: (H, R, G) dB."""
        if band not in self._grid_gains:
            pts = self.grid.points_km
            static = self.world.static_shadowing_db(pts[:, 0], pts[:, 1], band)  # (R, G)
            self._grid_gains[band] = np.stack([self._gain(self.dist, h, static, band) for h in self.heights])
        return self._grid_gains[band]

    def _gain(self, dist: NDArray, height: float, static: NDArray, band: str) -> NDArray[np.float64]:
        """a_i = −L(d; 1 MHz) + static + gain + fixed terms, dB; ``dist`` (R, G) or (B, R, K)."""
        shape = (-1, 1) if dist.ndim == 2 else (1, -1, 1)
        rx_h = self.world.network.heights_m.reshape(shape)
        return self.model.gain_db(dist, height, rx_h) + static + self._fixed_db(band).reshape(shape)

    def _log_post(self, obs: PowerObservations, gains: NDArray) -> NDArray[np.float64]:
        """Log posterior (unnormalised) at candidates for sessions ``obs``: (B, G)."""
        return log_posterior_grid(gains, 0.0, obs, (self.p0_lo, self.p0_hi), self.log_hw, p0_nodes=P0_NODES)

    def run(
        self, obs: PowerObservations, freq_hz: NDArray[np.float64], truth_km: NDArray[np.float64]
    ) -> PosteriorEstimate:
        """Posterior of every session (all sessions must use the world's receiver layout).

        Parameters
        ----------
        obs
            Power observations (dBm via nominal full scale; the oracle adds the true gains).
        freq_hz
            Carrier frequency per session (B,), Hz; it selects the band's fields and gains.
        truth_km
            True positions (B, 2), km (NaN: no HPD level or log score).

        """
        n = len(freq_hz)
        mean, cov = np.zeros((n, 2)), np.zeros((n, 2, 2))
        mp, map_cov = np.zeros((n, 2)), np.zeros((n, 2, 2))
        scores = [np.full(n, np.nan) for _ in range(3)]
        bands = np.array([band_of(f) for f in freq_hz])
        chunks = []
        for band in np.unique(bands):
            idx_band = np.flatnonzero(bands == band)
            self.gains(str(band))  # computed once, before the threads share it
            chunks += [(str(band), idx_band[s : s + _CHUNK]) for s in range(0, len(idx_band), _CHUNK)]

        def one(band: str, idx: NDArray[np.int64]) -> None:
            ob = _shift(obs.select(idx), -20.0 * np.log10(freq_hz[idx] / 1e6))  # free-space frequency term
            post = self.posterior(ob, band)
            mean[idx], cov[idx] = post.moments()
            best, cell_km = post.best_point_km()
            mp[idx] = self._refine_map(ob, best, band, 0.5 * cell_km)
            map_cov[idx] = post.moments(mp[idx])[1]
            for arr, val in zip(scores, self._scores(ob, post, truth_km[idx], band), strict=True):
                arr[idx] = val

        # chunks are independent and numpy releases the GIL in its kernels: one thread per core
        with ThreadPoolExecutor(max_workers=min(self.threads, max(1, len(chunks)))) as pool:
            for fut in [pool.submit(one, band, idx) for band, idx in chunks]:
                fut.result()
        return PosteriorEstimate(Estimate(mean, cov), Estimate(mp, map_cov), PosteriorScores(*scores))

    def posterior(
        self, obs: PowerObservations, band: str, gains: NDArray[np.float64] | None = None
    ) -> RefinedPosterior:
        """Coarse-to-fine posterior of sessions ``obs`` (frequency term already moved into the data).

        The grid's cells that hold the mass (:data:`REFINE_MASS`, at most
        :data:`REFINE_MAX_CELLS`, plus their neighbours) are re-evaluated on
        ``refine_factor`` × ``refine_factor`` sub-cells (:mod:`heimdall.posterior.refine`).
        """
        gains = self.gains(band) if gains is None else gains
        lp = self._log_post(obs, gains)
        if self.refine_factor <= 1:
            return RefinedPosterior(
                self.grid, lp, np.full((len(lp), 0), -np.inf), np.zeros((len(lp), 0, 2)), 1
            )
        return refine_posterior(
            self.grid,
            lp,
            lambda i, pts: self._log_post_at(obs.select(i), pts, band),
            self.refine_factor,
            REFINE_MASS,
            REFINE_MAX_CELLS,
            REFINE_RING,
        )

    def _log_post_at(self, obs: PowerObservations, points_km: NDArray[np.float64], band: str) -> NDArray:
        """Log posterior at per-session points (B, K, 2): (B, K)."""
        e, n = points_km[..., 0], points_km[..., 1]
        dist = np.moveaxis(self.world.distance_km(e, n), -1, 1)  # (B, R, K)
        static = np.moveaxis(self.world.static_shadowing_db(e, n, band), 0, 1)  # (B, R, K)
        return self._log_post(obs, np.stack([self._gain(dist, h, static, band) for h in self.heights]))

    def _refine_map(
        self,
        obs: PowerObservations,
        start_km: NDArray[np.float64],
        band: str,
        step_km: NDArray,
        iterations: int = 8,
    ) -> NDArray:
        """Compass search of the posterior mode from the densest (sub-)cell; first step ``step_km`` (B,)."""
        offs = np.stack(np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]), -1).reshape(-1, 2)
        step = np.asarray(step_km, dtype=np.float64).copy()
        pos = start_km.copy()
        best = self._log_post_at(obs, pos[:, None], band)[:, 0]
        e0, e1, n0, n1 = self.grid.area_km
        rows = np.arange(len(pos))
        for _ in range(iterations):
            cand = pos[:, None, :] + offs[None] * step[:, None, None]
            cand[..., 0] = np.clip(cand[..., 0], e0, e1)
            cand[..., 1] = np.clip(cand[..., 1], n0, n1)
            ll = self._log_post_at(obs, cand, band)
            k = np.argmax(ll, axis=1)
            better = ll[rows, k] > best + 1e-9
            pos = np.where(better[:, None], cand[rows, k], pos)
            best = np.where(better, ll[rows, k], best)
            step = np.where(better, step, 0.5 * step)
        return pos

    def _scores(
        self, obs: PowerObservations, post: RefinedPosterior, truth_km: NDArray, band: str
    ) -> tuple[NDArray, NDArray, NDArray]:
        """HPD level of the truth (exact density there), log score (per km²) and 90 % HPD area (km²)."""
        ok = np.all(np.isfinite(truth_km), axis=1)
        t = np.where(ok[:, None], truth_km, self.grid.points_km[0])
        lp_truth = self._log_post_at(obs, t[:, None], band)[:, 0]
        level = np.where(ok, post.hpd_level(lp_truth), np.nan)
        score = np.where(ok, post.log_score(lp_truth), np.nan)
        return level, score, post.hpd_area_km2(0.9)


def _shift(obs: PowerObservations, shift_db: NDArray[np.float64]) -> PowerObservations:
    """Move a per-session constant gain term (dB) from the model into the data."""
    s = shift_db[:, None]
    return PowerObservations(obs.y_db - s, obs.weight, obs.cens_db - s, obs.cens_sign, obs.cens_sigma_db)
