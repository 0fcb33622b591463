"""``radio_map_kriging``: the oracle's grid posterior with fitted radio maps in place of the truth.

The likelihood is the one of :mod:`heimdall.posterior.likelihood`, the path the
oracle takes (docs/EVALUATION.md): the measured power of heard receivers is
N(P0 + μ_i(x, h), σ² + v_i(x)), silent and clipped receivers are censored
(Tobit) terms, P0 is uniform over the published power range and integrated
out, the transmitter height h is marginalised over Gauss-Legendre nodes of its
published range. Where the oracle knows the world, the map supplies:

- μ_i(x, h) = g_i(d) + s_i(x) + Δ(d, h) of the session's band (2 m / 70 cm,
  as the oracle takes the band's fields and gains): the fitted median path
  loss (its intercepts absorb the gain, clutter and fading-mean offsets), the
  kriged field mean, and the height term Δ(d, h) = G(d, h) − Σ_k w_k G(d, h_k) of the
  unfitted breakpoint law G (:func:`heimdall.maps.pathloss.prior_gain_db`):
  the fitted g_i is the height-average the labels saw, the height moves the
  radio horizon around it (ITU-R P.526);
- v_i(x): the kriged field variance (the map's own uncertainty), added to
- σ²: the per-capture variance, the fitted nugget τ² (capture shadowing, fast
  fading and measurement error, estimated from the labels).

The frequency term 20 log10(f / MHz) (ITU-R P.525) is in the observations
(:mod:`heimdall.maps.observations`), as the fit sees them. The posterior is
coarse-to-fine (:mod:`heimdall.posterior.refine`): mean and covariance, the
densest sub-cell as the mode, the truth's HPD level, log score and 90 % area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heimdall.maps.fit import RadioMap
from heimdall.maps.observations import BANDS, LabelledObservations
from heimdall.maps.pathloss import prior_gain_db
from heimdall.network import LocalFrame
from heimdall.posterior.grid import SearchGrid, search_grid
from heimdall.posterior.likelihood import (
    HEIGHT_NODES,
    P0_NODES,
    PowerObservations,
    height_nodes,
    log_posterior_grid,
)
from heimdall.posterior.map import PosteriorMap
from heimdall.posterior.refine import (
    REFINE_FACTOR,
    REFINE_MASS,
    REFINE_MAX_CELLS,
    RefinedPosterior,
    refine_posterior,
)
from heimdall.posterior.scores import PosteriorScores

#: Sessions per likelihood call (memory: H × B × R × G floats).
_CHUNK = 8
#: Posterior grid step, km (the oracle's).
POSTERIOR_STEP_KM = 1.0


@dataclass(frozen=True)
class MapPosterior:
    """Posterior summaries of B sessions (local km frame of the map's network).

    Attributes
    ----------
    mean_km, cov_km2
        Posterior mean (B, 2) km and covariance (B, 2, 2) km².
    map_km, map_cov_km2
        Posterior mode (B, 2) km (the densest sub-cell) and the second moment about it (B, 2, 2) km².
    scores
        HPD level of the truth, log score (nats per km²) and 90 % HPD area (km²); NaN without truth.

    """

    mean_km: NDArray[np.float64]
    cov_km2: NDArray[np.float64]
    map_km: NDArray[np.float64]
    map_cov_km2: NDArray[np.float64]
    scores: PosteriorScores

    @staticmethod
    def concat(parts: list[MapPosterior]) -> MapPosterior:
        """Concatenate along sessions."""
        return MapPosterior(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("mean_km", "cov_km2", "map_km", "map_cov_km2")
            ),
            PosteriorScores.concat([p.scores for p in parts]),
        )


class RadioMapLocator:
    """The grid posterior of new sessions given a fitted :class:`RadioMap`.

    Parameters
    ----------
    rmap
        Fitted maps; ``rmap.hyper.nugget_db`` is the per-capture σ (dB).
    step_km
        Coarse posterior grid step over the map's area, km.
    refine_factor
        Sub-cells per coarse cell side where the mass lies (1: no refinement).
    grid
        The coarse grid (default: ``step_km`` cells over the map's area).

    """

    def __init__(
        self,
        rmap: RadioMap,
        step_km: float = POSTERIOR_STEP_KM,
        refine_factor: int = REFINE_FACTOR,
        grid: SearchGrid | None = None,
    ) -> None:
        self.rmap = rmap
        self.grid: SearchGrid = grid if grid is not None else search_grid(rmap.grid.area_km, step_km)
        self.refine_factor = int(refine_factor)
        cfg = rmap.config
        self.power_range_dbm = tuple(cfg.power_range_dbm)
        self.heights_m, self.log_w = height_nodes(*cfg.tx_height_range_m, HEIGHT_NODES)
        self.sigma_db = float(rmap.hyper.nugget_db)
        self._fields = [self.fields(self.grid.points_km, q) for q in range(len(BANDS))]

    @property
    def frame(self) -> LocalFrame:
        """The local frame of the map's network."""
        return self.rmap.network.frame

    def fields(
        self, points_km: NDArray[np.float64], band: int = 0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Power for P0 = 0 per height (H, R, ...) dB and its variance (R, ...) dB² at points (..., 2)."""
        mean, var = self.rmap.predict(points_km, band)
        rx = self.rmap.rx_km.reshape(-1, *([1] * (points_km.ndim - 1)), 2)
        d = np.hypot(points_km[None, ..., 0] - rx[..., 0], points_km[None, ..., 1] - rx[..., 1])
        cfg = self.rmap.config
        rx_h = self.rmap.network.heights_m.reshape(-1, *([1] * (points_km.ndim - 1)))
        per_h = np.stack(
            [prior_gain_db(d, h, rx_h, cfg.prior_exponents, cfg.prior_clutter_db) for h in self.heights_m]
        )
        w = np.exp(self.log_w).reshape(-1, *([1] * (per_h.ndim - 1)))
        delta = per_h - np.sum(w * per_h, axis=0, keepdims=True)
        return mean[None] + delta, var

    def observations(self, obs: LabelledObservations) -> PowerObservations:
        """The likelihood's observations of measured sessions, σ = the map's per-capture σ."""
        return obs.power_observations(self.sigma_db)

    def _log_post(self, obs: PowerObservations, mean: NDArray, var: NDArray) -> NDArray[np.float64]:
        return log_posterior_grid(mean, var, obs, self.power_range_dbm, self.log_w, p0_nodes=P0_NODES)

    def log_post_at(
        self, obs: PowerObservations, points_km: NDArray[np.float64], band: int = 0
    ) -> NDArray[np.float64]:
        """Unnormalised log posterior of B sessions of ``band`` at per-session points (B, K, 2) km: (B, K)."""
        mean, var = self.fields(points_km, band)  # (H, R, B, K), (R, B, K)
        return self._log_post(obs, np.moveaxis(mean, 2, 1), np.moveaxis(var, 1, 0)[None])

    def log_post_grid(self, obs: PowerObservations, band: int = 0) -> NDArray[np.float64]:
        """Unnormalised log posterior of B sessions of ``band`` on the coarse grid (B, G)."""
        mean, var = self._fields[band]
        return self._log_post(obs, mean, var[None])

    def posterior(self, obs: PowerObservations, band: int = 0) -> RefinedPosterior:
        """Coarse-to-fine posterior of sessions ``obs``, all of ``band``."""
        lp = self.log_post_grid(obs, band)
        if self.refine_factor <= 1:
            return RefinedPosterior(
                self.grid, lp, np.full((len(lp), 0), -np.inf), np.zeros((len(lp), 0, 2)), 1
            )
        return refine_posterior(
            self.grid, lp, lambda i, pts: self.log_post_at(obs.select(i), pts, band),
            self.refine_factor, REFINE_MASS, REFINE_MAX_CELLS,
        )  # fmt: skip

    def run(self, obs: LabelledObservations) -> MapPosterior:
        """Posterior summaries of measured sessions (``obs.pos_km`` NaN where the truth is unknown)."""
        parts, order = [], []
        pobs = self.observations(obs)
        for band in range(len(BANDS)):
            rows = np.flatnonzero(obs.band == band)
            for start in range(0, len(rows), _CHUNK):
                idx = rows[start : start + _CHUNK]
                parts.append(self._summaries(pobs.select(idx), obs.pos_km[idx], band))
                order.append(idx)
        if not parts:
            return MapPosterior(
                *(np.zeros((0, 2)), np.zeros((0, 2, 2))) * 2, PosteriorScores(*[np.zeros(0)] * 3)
            )
        out = MapPosterior.concat(parts)
        inv = np.argsort(np.concatenate(order))
        return MapPosterior(
            out.mean_km[inv], out.cov_km2[inv], out.map_km[inv], out.map_cov_km2[inv], out.scores.select(inv)
        )

    def _summaries(self, ob: PowerObservations, truth: NDArray[np.float64], band: int) -> MapPosterior:
        post = self.posterior(ob, band)
        mean, cov = post.moments()
        mp, _ = post.best_point_km()
        _, mcov = post.moments(mp)
        ok = np.all(np.isfinite(truth), axis=1)
        t = np.where(ok[:, None], truth, self.grid.points_km[0])
        lp_t = self.log_post_at(ob, t[:, None], band)[:, 0]
        scores = PosteriorScores(
            np.where(ok, post.hpd_level(lp_t), np.nan),
            np.where(ok, post.log_score(lp_t), np.nan),
            post.hpd_area_km2(0.9),
        )
        return MapPosterior(mean, cov, mp, mcov, scores)

    def posterior_map(self, obs: LabelledObservations, index: int = 0) -> PosteriorMap:
        """One session's posterior on the coarse grid, as a :class:`PosteriorMap` (modes, HPD regions)."""
        lp = self.log_post_grid(self.observations(obs.select([index])), int(obs.band[index]))[0]
        return PosteriorMap.from_log_posterior(self.grid, lp, self.frame)


def radio_map_posterior(
    rmap: RadioMap, obs: LabelledObservations, step_km: float = POSTERIOR_STEP_KM
) -> MapPosterior:
    """The posterior of every session in ``obs`` with the maps ``rmap`` (see :class:`RadioMapLocator`)."""
    return RadioMapLocator(rmap, step_km).run(obs)
