"""Accuracy and calibration figures of Gaussian position estimates.

- error: Euclidean distance mean − truth in km (median, mean);
- coverage at k: fraction of truths inside the k-σ ellipse, i.e. with squared
  Mahalanobis distance ≤ k² (ideal 1 − exp(−k²/2): 39.3 % at k = 1, 86.5 % at k = 2);
- NLL: −log N(truth; mean, Σ) in nats, = log 2π + ½ log det Σ + ½ m² (2-D);
- ellipse area: π √det Σ km², the area of the 1σ ellipse (π a b).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from heimdall.models.ellipse import mahalanobis_sq


def gaussian_metrics(mean_km: ArrayLike, cov_km2: ArrayLike, truth_km: ArrayLike) -> dict[str, float]:
    """nll, median / mean error (km), coverage_1sigma / coverage_2sigma, median ellipse area (km²)."""
    mean, cov, truth = (np.asarray(a, dtype=np.float64) for a in (mean_km, cov_km2, truth_km))
    if mean.shape[0] == 0:
        return {}
    m2 = mahalanobis_sq(mean, cov, truth)
    det = np.linalg.det(cov)
    err = np.hypot(*(mean - truth).T)
    return {
        "nll": float(np.mean(np.log(2 * np.pi) + 0.5 * np.log(det) + 0.5 * m2)),
        "median_error_km": float(np.median(err)),
        "mean_error_km": float(np.mean(err)),
        "coverage_1sigma": float(np.mean(m2 <= 1.0)),
        "coverage_2sigma": float(np.mean(m2 <= 4.0)),
        "median_area_km2": float(np.median(np.pi * np.sqrt(det))),
    }


def nll_temperature(mean_km: ArrayLike, cov_km2: ArrayLike, truth_km: ArrayLike) -> float:
    """Covariance temperature τ minimising the mean NLL of N(mean, τ² Σ).

    NLL(τ) = const + 2 log τ + m̄² / (2 τ²) for a 2-D Gaussian, minimised at τ² = mean(m²) / 2.
    """
    m2 = mahalanobis_sq(mean_km, cov_km2, truth_km)
    return float(np.sqrt(np.mean(m2) / 2.0))
