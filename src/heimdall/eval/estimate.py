"""The result of an estimator: a position and, when it has one, a covariance (local km frame)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heimdall.posterior.scores import PosteriorScores


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


@dataclass(frozen=True)
class PosteriorEstimate:
    """A grid posterior's mean (with covariance), its mode and its scores against the truth."""

    mean: Estimate
    map: Estimate
    scores: PosteriorScores

    @staticmethod
    def concat(parts: list[PosteriorEstimate]) -> PosteriorEstimate:
        """Concatenate along sessions."""
        return PosteriorEstimate(
            Estimate.concat([p.mean for p in parts]),
            Estimate.concat([p.map for p in parts]),
            PosteriorScores.concat([p.scores for p in parts]),
        )


def uniform_area_cov(area_km: tuple[float, float, float, float], n: int) -> NDArray[np.float64]:
    """Covariance (n, 2, 2) km² of a uniform law over the rectangle ``area_km``."""
    e0, e1, n0, n1 = area_km
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0] = (e1 - e0) ** 2 / 12.0
    cov[:, 1, 1] = (n1 - n0) ** 2 / 12.0
    return cov
