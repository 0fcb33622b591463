"""Static shadowing: one spatially correlated Gaussian field (dB) per receiver.

Each field has the exponential (Gudmundson, Electronics Letters 1991)
covariance C(h) = σ² exp(-|h| / d_c). It is drawn exactly on a regular grid by
circulant embedding (Dietrich & Newsam, SIAM J. Sci. Comput. 1997): the
covariance is wrapped on a torus twice the grid's size, its FFT gives the
eigenvalues, and white noise filtered by their square root has covariance C.
The field is never rescaled by its own empirical σ. Queries anywhere in the
area use bilinear interpolation of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class GridSpec:
    """A regular grid in the local frame: origin (km), spacing (km) and size."""

    east0_km: float
    north0_km: float
    step_km: float
    n_east: int
    n_north: int


def exponential_field(
    grid: GridSpec, sigma_db: float, corr_km: float, rng: np.random.Generator, count: int
) -> NDArray[np.float32]:
    """Draw ``count`` independent fields (dB) with covariance σ² exp(-h / corr_km).

    Parameters
    ----------
    grid
        Where the fields live.
    sigma_db
        Standard deviation of the field, dB.
    corr_km
        Correlation distance, km (correlation e^-1 at that separation).
    rng
        Seeded generator.
    count
        Number of independent fields.

    Returns
    -------
    ndarray, shape (count, n_north, n_east), float32, dB

    """
    m_n, m_e = 2 * grid.n_north, 2 * grid.n_east
    lag_n = np.minimum(np.arange(m_n), m_n - np.arange(m_n)) * grid.step_km
    lag_e = np.minimum(np.arange(m_e), m_e - np.arange(m_e)) * grid.step_km
    dist = np.hypot(lag_n[:, None], lag_e[None, :])
    cov = sigma_db**2 * np.exp(-dist / corr_km)
    eig = np.clip(np.fft.fft2(cov).real, 0.0, None)
    amp = np.sqrt(eig / (m_n * m_e))
    fields = np.empty((count, grid.n_north, grid.n_east), dtype=np.float32)
    for k in range(0, count, 2):
        white = rng.standard_normal((m_n, m_e)) + 1j * rng.standard_normal((m_n, m_e))
        pair = np.fft.fft2(amp * white)[: grid.n_north, : grid.n_east]
        fields[k] = pair.real
        if k + 1 < count:
            fields[k + 1] = pair.imag
    return fields


def bilinear(
    grid: GridSpec, fields: NDArray[np.float32], east_km: ArrayLike, north_km: ArrayLike
) -> NDArray[np.float64]:
    """Interpolate fields at points; points outside the grid take the edge value.

    Parameters
    ----------
    fields
        Shape (F, n_north, n_east).
    east_km, north_km
        Query points (same shape S), km.

    Returns
    -------
    ndarray, shape (F, *S), dB

    """
    east = np.asarray(east_km, dtype=np.float64)
    north = np.asarray(north_km, dtype=np.float64)
    x = np.clip((east - grid.east0_km) / grid.step_km, 0.0, grid.n_east - 1.000001)
    y = np.clip((north - grid.north0_km) / grid.step_km, 0.0, grid.n_north - 1.000001)
    i0 = np.floor(x).astype(np.int64)
    j0 = np.floor(y).astype(np.int64)
    wx = x - i0
    wy = y - j0
    f00 = fields[:, j0, i0]
    f01 = fields[:, j0, i0 + 1]
    f10 = fields[:, j0 + 1, i0]
    f11 = fields[:, j0 + 1, i0 + 1]
    return (f00 * (1 - wx) + f01 * wx) * (1 - wy) + (f10 * (1 - wx) + f11 * wx) * wy
