"""Uncertainty ellipses and coverage (docs/ARCHITECTURE.md §3b).

A 2-D Gaussian N(μ, Σ) in the local (east, north) km frame is reported as its
1σ ellipse: semi-axes sqrt(λ_max), sqrt(λ_min) of Σ in metres, and the
orientation of the major axis as an azimuth in degrees clockwise from north
in [0, 180). The 95 % ellipse is the 1σ one scaled by sqrt(χ²₂(0.95)) = 2.448.
A truth lies inside the k-σ ellipse when its squared Mahalanobis distance
is ≤ k²; for a calibrated model that happens with probability 1 − exp(−k²/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.network.geodesy import LocalFrame

SCALE_95 = float(np.sqrt(-2.0 * np.log(0.05)))  # 2.4477


@dataclass(frozen=True)
class Ellipse:
    """A 1σ (or k-σ) ellipse: semi-axes in m, major-axis azimuth in degrees in [0, 180)."""

    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float

    def scaled(self, k: float) -> Ellipse:
        """The same ellipse with both semi-axes times ``k``."""
        return Ellipse(self.semi_major_m * k, self.semi_minor_m * k, self.orientation_deg)


def ellipse_params(cov_km2: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """Vectorised 1σ ellipse of covariances (..., 2, 2) in km².

    Returns
    -------
    semi_major_m, semi_minor_m, orientation_deg
        Arrays of shape (...): semi-axes in metres, azimuth of the major axis in
        degrees clockwise from north, in [0, 180).

    """
    cov = np.asarray(cov_km2, dtype=np.float64)
    a, b, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]  # var_e, cov_en, var_n
    half_tr = 0.5 * (a + c)
    root = np.sqrt(np.maximum(0.25 * (a - c) ** 2 + b**2, 0.0))
    lam_max = half_tr + root
    lam_min = np.maximum(half_tr - root, 0.0)
    # major-axis direction (east, north) = (b, lam_max - a) or (lam_max - c, b)
    de = np.where(np.abs(b) > 1e-15, b, np.where(a >= c, 1.0, 0.0))
    dn = np.where(np.abs(b) > 1e-15, lam_max - a, np.where(a >= c, 0.0, 1.0))
    azimuth = np.mod(np.degrees(np.arctan2(de, dn)), 180.0)
    return np.sqrt(lam_max) * 1000.0, np.sqrt(lam_min) * 1000.0, azimuth


def ellipse_of(cov_km2: ArrayLike) -> Ellipse:
    """The 1σ :class:`Ellipse` of one 2×2 covariance in km²."""
    major, minor, azimuth = ellipse_params(cov_km2)
    return Ellipse(float(major), float(minor), float(azimuth))


def mahalanobis_sq(mean_km: ArrayLike, cov_km2: ArrayLike, truth_km: ArrayLike) -> NDArray[np.float64]:
    """Squared Mahalanobis distance of truths from N(mean, cov); shapes (..., 2), (..., 2, 2)."""
    diff = np.asarray(truth_km, dtype=np.float64) - np.asarray(mean_km, dtype=np.float64)
    sol = np.linalg.solve(np.asarray(cov_km2, dtype=np.float64), diff[..., None])[..., 0]
    return np.sum(diff * sol, axis=-1)


def coverage(mean_km: ArrayLike, cov_km2: ArrayLike, truth_km: ArrayLike, k: float) -> float:
    """Fraction of truths inside the k-σ ellipse (ideal 1 − exp(−k²/2))."""
    return float(np.mean(mahalanobis_sq(mean_km, cov_km2, truth_km) <= k * k))


def ellipse_polygon_km(mean_km: ArrayLike, cov_km2: ArrayLike, k: float = 1.0, n: int = 72) -> NDArray:
    """Closed polygon (n+1, 2) of the k-σ ellipse in the local km frame."""
    cov = np.asarray(cov_km2, dtype=np.float64)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(2))
    angles = np.linspace(0.0, 2.0 * np.pi, n + 1)
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * k
    return np.asarray(mean_km, dtype=np.float64) + circle @ chol.T


def ellipse_polygon_lonlat(
    frame: LocalFrame, mean_km: ArrayLike, cov_km2: ArrayLike, k: float = 1.0, n: int = 72
) -> list[list[float]]:
    """The k-σ ellipse as a closed GeoJSON ring [[lon, lat], ...] (degrees)."""
    poly = ellipse_polygon_km(mean_km, cov_km2, k, n)
    lat, lon = frame.to_latlon(poly[:, 0], poly[:, 1])
    return [[float(x), float(y)] for x, y in zip(lon, lat, strict=True)]
