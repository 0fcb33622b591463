"""Synthetic labelled observations drawn from the map model itself (no IQ), with planted fields."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from heimdall.maps.observations import HEARD, SILENT, UNUSED, LabelledObservations
from heimdall.network import Network

#: Planted median path loss (dB at 1 MHz, d in km): intercept and exponent inside the basis.
INTERCEPT_DB, EXPONENT = -60.0, 3.0


def planted_pathloss(d_km: NDArray[np.float64]) -> NDArray[np.float64]:
    return INTERCEPT_DB - 10.0 * EXPONENT * np.log10(np.maximum(d_km, 1.0))


def smooth_field(pos_km: NDArray[np.float64], r: int) -> NDArray[np.float64]:
    """(N, r) smooth planted fields (dB), different per receiver, wavelengths 70-90 km."""
    i = np.arange(r)[None, :]
    e, n = pos_km[:, :1], pos_km[:, 1:]
    return 6.0 * np.sin(2 * np.pi * e / 80.0 + i) * np.cos(2 * np.pi * n / 70.0 + 0.5 * i)


def synth(
    network: Network,
    pos_km: NDArray[np.float64],
    field: Callable[[NDArray[np.float64], int], NDArray[np.float64]],
    rng: np.random.Generator,
    noise_db: float = 0.0,
    threshold_db: NDArray[np.float64] | None = None,
    first_id: int = 0,
) -> tuple[LabelledObservations, NDArray[np.float64]]:
    """Observations y = P + g(d) + field + noise; below ``threshold_db`` (R,) a receiver is silent."""
    rx = network.positions_km
    n, r = len(pos_km), len(rx)
    power = rng.uniform(27.0, 47.0, n)
    d = np.hypot(pos_km[:, None, 0] - rx[None, :, 0], pos_km[:, None, 1] - rx[None, :, 1])
    y = power[:, None] + planted_pathloss(d) + field(pos_km, r) + noise_db * rng.standard_normal((n, r))
    thr = np.full(r, -np.inf) if threshold_db is None else np.asarray(threshold_db, dtype=np.float64)
    silent = y < thr[None, :]
    state = np.where(silent, SILENT, HEARD).astype(np.int8)
    obs = LabelledObservations(
        session_id=np.arange(first_id, first_id + n, dtype=np.int64),
        pos_km=pos_km,
        radius_km=np.zeros(n),
        y_db=np.where(silent, np.nan, y),
        cens_db=np.where(silent, thr[None, :] + 0.0 * y, np.nan),
        state=state,
        band=np.zeros(n, np.int8),
    )
    assert UNUSED == 0
    return obs, power


@pytest.fixture(scope="session")
def rng_seed() -> int:
    return 20260
