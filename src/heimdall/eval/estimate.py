"""The result of an estimator: a position and, when it has one, a covariance (local km frame)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Estimate:
    """Positions (B, 2) km and optional covariances (B, 2, 2) km² in the network's local frame."""

    mean_km: NDArray[np.float64]
    cov_km2: NDArray[np.float64] | None = None

    @staticmethod
    def concat(parts: list[Estimate]) -> Estimate:
        """Concatenate along sessions (covariance kept only when every part has one)."""
        mean = np.concatenate([p.mean_km for p in parts])
        if all(p.cov_km2 is not None for p in parts):
            return Estimate(mean, np.concatenate([p.cov_km2 for p in parts]))  # type: ignore[misc]
        return Estimate(mean, None)


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


def uniform_area_cov(area_km: tuple[float, float, float, float], n: int) -> NDArray[np.float64]:
    """Covariance (n, 2, 2) km² of a uniform law over the rectangle ``area_km``."""
    e0, e1, n0, n1 = area_km
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0] = (e1 - e0) ** 2 / 12.0
    cov[:, 1, 1] = (n1 - n0) ** 2 / 12.0
    return cov
