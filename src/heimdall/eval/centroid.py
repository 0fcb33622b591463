"""Weighted centroid: the power-weighted mean of the heard receivers (the naive baseline)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from heimdall.eval.estimate import Estimate


def weighted_centroid(
    rx_km: NDArray[np.float64],
    power_dbm: NDArray[np.float64],
    heard: NDArray[np.bool_],
    online: NDArray[np.bool_],
) -> Estimate:
    """Σ p_i x_i / Σ p_i over heard receivers, p_i the measured power in mW (no covariance).

    Parameters
    ----------
    rx_km
        Receiver positions (B, R, 2), km.
    power_dbm
        Measured band power (B, R), dBm.
    heard, online
        Receiver flags (B, R); a session with nobody heard falls back to the
        plain mean of its online receivers (or of all slots).

    """
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.where(heard, 10.0 ** (np.nan_to_num(power_dbm, nan=-300.0) / 10.0), 0.0)
    p = p / np.maximum(p.max(axis=1, keepdims=True), 1e-300)  # scale-free
    fallback = np.where(online.any(axis=1, keepdims=True), online, np.isfinite(rx_km[..., 0])).astype(float)
    w = np.where(heard.any(axis=1, keepdims=True), p, fallback)
    pos = np.nan_to_num(rx_km)
    mean = np.einsum("br,brk->bk", w, pos) / w.sum(axis=1)[:, None]
    return Estimate(mean, None)
