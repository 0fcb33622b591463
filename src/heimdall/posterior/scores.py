"""Per-session scores of a grid posterior against the truth, as ``evaluate`` reports them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class PosteriorScores:
    """Scores of B sessions' posteriors (NaN where a session has no truth).

    Attributes
    ----------
    hpd_level
        Mass of the cells denser than the truth (B,): the truth is in the p-HPD region iff ≤ p.
    log_score
        Log posterior density at the truth (B,), nats per km².
    hpd90_area_km2
        Area of the 90 % HPD region (B,), km².

    """

    hpd_level: NDArray[np.float64]
    log_score: NDArray[np.float64]
    hpd90_area_km2: NDArray[np.float64]

    @staticmethod
    def concat(parts: list[PosteriorScores]) -> PosteriorScores:
        """Concatenate along sessions."""
        return PosteriorScores(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("hpd_level", "log_score", "hpd90_area_km2")
            )
        )

    def select(self, index: NDArray[np.int64]) -> PosteriorScores:
        """Sessions at ``index``."""
        return PosteriorScores(self.hpd_level[index], self.log_score[index], self.hpd90_area_km2[index])
