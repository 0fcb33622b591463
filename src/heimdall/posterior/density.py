"""Summaries of grid posteriors, vectorised over sessions: HPD levels and areas, log score, MAP refinement.

A posterior on a :class:`~heimdall.posterior.grid.SearchGrid` is an
unnormalised log density ``lp`` (B, G) at the cell centres; each cell carries
the mass exp(lp) · cell area / Σ (the midpoint rule). The highest-posterior-
density (HPD) region of level p is the smallest set of cells, densest first,
whose mass reaches p (Box & Tiao, *Bayesian Inference in Statistical
Analysis*, 1973, §2.8); a truth lies inside it when the mass of the cells
denser than the truth is ≤ p. The log score is log p(truth) with the density
per km² (Gneiting & Raftery, JASA 2007, "logarithmic score").
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.special import logsumexp


def log_normaliser(lp: NDArray[np.float64], cell_area_km2: float) -> NDArray[np.float64]:
    """Log ∫ exp(lp) dA over the grid (B,), km² (midpoint rule)."""
    return logsumexp(lp, axis=-1) + np.log(cell_area_km2)


def cell_probabilities(lp: NDArray[np.float64]) -> NDArray[np.float64]:
    """Posterior mass of every cell (B, G), summing to 1 per session."""
    p = np.exp(lp - lp.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def hpd_level(lp: NDArray[np.float64], lp_truth: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mass of the cells denser than the truth (B,): the truth is in the p-HPD region iff this is ≤ p.

    Parameters
    ----------
    lp
        Log posterior on the grid (B, G), any normalisation.
    lp_truth
        Log posterior at the truth (B,), same normalisation (exact or interpolated).

    """
    p = cell_probabilities(lp)
    return np.where(lp > lp_truth[:, None], p, 0.0).sum(axis=-1)


def hpd_ranking(
    lp: NDArray[np.float64], log_area: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cells densest first: their log densities (B, G) and the cumulative mass along that order (B, G).

    What every HPD threshold of the same posterior is read from (:func:`ranked_threshold`),
    so several levels cost one sort.

    Parameters
    ----------
    lp
        Log density on the cells (B, G), any normalisation.
    log_area
        Log area of each cell (G,) or (B, G), log km²; None for equal cells. Cells are
        ranked by density and their masses (density × area) accumulated (Hyndman 1996).

    """
    rank = np.argsort(-lp, axis=-1, kind="stable")
    order = np.take_along_axis(lp, rank, axis=-1)
    weighted = (
        order
        if log_area is None
        else order + np.take_along_axis(np.broadcast_to(log_area, lp.shape), rank, axis=-1)
    )
    return order, np.cumsum(cell_probabilities(weighted), axis=-1)


def ranked_threshold(
    order: NDArray[np.float64], cum: NDArray[np.float64], level: float
) -> NDArray[np.float64]:
    """Log-density threshold (B,) of the ``level`` HPD region from :func:`hpd_ranking`'s (order, cum)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"HPD level must be in (0, 1), got {level}")
    k = np.minimum(np.sum(cum < level, axis=-1), order.shape[-1] - 1)
    return np.take_along_axis(order, k[:, None], axis=-1)[:, 0]


def hpd_threshold(
    lp: NDArray[np.float64], level: float, log_area: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """Log-density threshold (B,) of the ``level`` HPD region: cells with lp ≥ it hold ≥ ``level``.

    Parameters
    ----------
    lp
        Log density on the cells (B, G), any normalisation.
    level
        Probability of the region, in (0, 1).
    log_area
        Log area of each cell (G,) or (B, G), log km²; None for equal cells. Cells are
        ranked by density and their masses (density × area) accumulated (Hyndman 1996).

    """
    return ranked_threshold(*hpd_ranking(lp, log_area), level)


def hpd_area_km2(lp: NDArray[np.float64], level: float, cell_area_km2: float) -> NDArray[np.float64]:
    """Area (B,) of the ``level`` HPD region, km² (cells counted whole; see :func:`hpd_threshold`)."""
    t = hpd_threshold(lp, level)
    return np.sum(lp >= t[:, None], axis=-1) * cell_area_km2


def log_score(
    lp_truth: NDArray[np.float64], lp: NDArray[np.float64], cell_area_km2: float
) -> NDArray[np.float64]:
    """Log posterior density at the truth (B,), nats per km² (higher is better)."""
    return lp_truth - log_normaliser(lp, cell_area_km2)


def _peak_design() -> NDArray[np.float64]:
    """Design matrix (9, 6) of the quadratic 1, x, y, x², y², xy on the 3×3 cells (x east, y north)."""
    y, x = np.mgrid[-1:2, -1:2]
    x, y = x.ravel().astype(float), y.ravel().astype(float)
    return np.stack([np.ones(9), x, y, x * x, y * y, x * y], axis=-1)


#: The 3×3 quadratic fit's design matrix of :func:`refine_peak` (built once).
_PEAK_DESIGN = _peak_design()


def refine_peak(
    values: NDArray[np.float64], row: int, col: int, step_east_km: float, step_north_km: float
) -> tuple[float, float]:
    """Sub-cell offset (east, north) km of the maximum of a 2-D quadratic fitted to the 3×3 cells around one.

    The log density of a Gaussian is exactly quadratic, so its peak is recovered
    exactly; the offset is clipped to ±1 cell (a peak on the border or a
    non-concave fit stays at the cell centre along that axis).

    Parameters
    ----------
    values
        Log density (n_north, n_east).
    row, col
        Index of the best cell.
    step_east_km, step_north_km
        Cell size, km.

    """
    n_n, n_e = values.shape
    if not (0 < row < n_n - 1 and 0 < col < n_e - 1):
        return 0.0, 0.0
    patch = values[row - 1 : row + 2, col - 1 : col + 2]
    if not np.all(np.isfinite(patch)):
        return 0.0, 0.0
    _, b, c, d, e, g = np.linalg.lstsq(_PEAK_DESIGN, patch.ravel(), rcond=None)[0]
    hess = np.array([[2 * d, g], [g, 2 * e]])
    if np.linalg.det(hess) <= 0 or hess[0, 0] >= 0:  # not a maximum
        return 0.0, 0.0
    off = np.clip(np.linalg.solve(hess, [-b, -c]), -1.0, 1.0)
    return float(off[0] * step_east_km), float(off[1] * step_north_km)
