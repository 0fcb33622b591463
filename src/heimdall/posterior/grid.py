"""The regular east/north grid a posterior lives on, and its moments (local km frame)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class SearchGrid:
    """Cell centres covering a rectangle with spacing ≤ the requested step.

    Points are ordered north-major: point ``i * n_east + j`` is row ``i`` (north)
    and column ``j`` (east), so a (B, G) array reshapes to (B, n_north, n_east).

    Attributes
    ----------
    area_km
        (east_min, east_max, north_min, north_max), km.
    points_km
        Cell centres (G, 2), km; each cell has the same area ``cell_area_km2``.
    step_east_km, step_north_km
        Cell size, km.

    """

    area_km: tuple[float, float, float, float]
    points_km: NDArray[np.float64]
    step_east_km: float
    step_north_km: float

    @property
    def cell_area_km2(self) -> float:
        """Area of one cell, km²."""
        return self.step_east_km * self.step_north_km

    @property
    def n_east(self) -> int:
        """Number of columns (east)."""
        return max(1, round((self.area_km[1] - self.area_km[0]) / self.step_east_km))

    @property
    def n_north(self) -> int:
        """Number of rows (north)."""
        return max(1, round((self.area_km[3] - self.area_km[2]) / self.step_north_km))

    @property
    def east_km(self) -> NDArray[np.float64]:
        """Column centres (n_east,), km."""
        return self.area_km[0] + (np.arange(self.n_east) + 0.5) * self.step_east_km

    @property
    def north_km(self) -> NDArray[np.float64]:
        """Row centres (n_north,), km."""
        return self.area_km[2] + (np.arange(self.n_north) + 0.5) * self.step_north_km


def search_grid(area_km: tuple[float, float, float, float], max_step_km: float = 1.0) -> SearchGrid:
    """A cell-centred grid over ``area_km`` with spacing at most ``max_step_km`` (km)."""
    e0, e1, n0, n1 = area_km
    n_e = max(1, int(np.ceil((e1 - e0) / max_step_km)))
    n_n = max(1, int(np.ceil((n1 - n0) / max_step_km)))
    se, sn = (e1 - e0) / n_e, (n1 - n0) / n_n
    ee, nn = np.meshgrid(e0 + (np.arange(n_e) + 0.5) * se, n0 + (np.arange(n_n) + 0.5) * sn)
    pts = np.stack([ee.ravel(), nn.ravel()], axis=-1)
    return SearchGrid((e0, e1, n0, n1), pts, float(se), float(sn))


def grid_moments(
    loglik: NDArray[np.float64], points_km: NDArray[np.float64], centre_km: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean (B, 2) and second moment (B, 2, 2) about ``centre_km`` (or the mean) of weights ∝ exp(loglik).

    Parameters
    ----------
    loglik
        Unnormalised log posterior on the grid (B, G).
    points_km
        Grid points (G, 2), km.
    centre_km
        Point (B, 2) about which the second moment is taken; None: the mean (covariance).

    """
    p = np.exp(loglik - loglik.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    mean = p @ points_km
    c = mean if centre_km is None else centre_km
    ee, nn = points_km[:, 0], points_km[:, 1]
    m_ee, m_nn, m_en = p @ (ee * ee), p @ (nn * nn), p @ (ee * nn)
    cov = np.empty((len(p), 2, 2))
    cov[:, 0, 0] = m_ee - 2 * c[:, 0] * mean[:, 0] + c[:, 0] ** 2
    cov[:, 1, 1] = m_nn - 2 * c[:, 1] * mean[:, 1] + c[:, 1] ** 2
    cov[:, 0, 1] = cov[:, 1, 0] = m_en - c[:, 0] * mean[:, 1] - c[:, 1] * mean[:, 0] + c[:, 0] * c[:, 1]
    return mean, cov


def interpolate_on_grid(
    grid: SearchGrid, values: NDArray[np.float64], points_km: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Bilinear interpolation between cell centres of per-session grid values (B, G) at points (B, 2): (B,).

    Points beyond the outermost centres take the edge value; −inf cells are
    treated as −1e300 so that interpolation stays finite and very negative.
    """
    b = len(values)
    img = np.maximum(values.reshape(b, grid.n_north, grid.n_east), -1e300)
    fx = np.clip((points_km[:, 0] - grid.east_km[0]) / grid.step_east_km, 0.0, grid.n_east - 1.0)
    fy = np.clip((points_km[:, 1] - grid.north_km[0]) / grid.step_north_km, 0.0, grid.n_north - 1.0)
    i0 = np.minimum(np.floor(fy).astype(np.int64), max(grid.n_north - 2, 0))
    j0 = np.minimum(np.floor(fx).astype(np.int64), max(grid.n_east - 2, 0))
    i1, j1 = np.minimum(i0 + 1, grid.n_north - 1), np.minimum(j0 + 1, grid.n_east - 1)
    ty, tx = fy - i0, fx - j0
    r = np.arange(b)
    return (
        img[r, i0, j0] * (1 - ty) * (1 - tx) + img[r, i0, j1] * (1 - ty) * tx
        + img[r, i1, j0] * ty * (1 - tx) + img[r, i1, j1] * ty * tx
    )  # fmt: skip
