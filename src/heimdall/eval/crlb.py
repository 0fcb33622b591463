"""Cramér-Rao bounds: received signal strength (RSS) and time differences of arrival (TDOA).

RSS (Patwari et al., IEEE Trans. Signal Process. 51(8), 2003): the measured
power at receiver i is P_i = P0 − 10 n_i log10(d_i) + e_i with e_i ~ N(0, σ²),
every random term folded into σ. For θ = (east, north, P0) the Fisher matrix is

    F = Σ_i J_iᵀ J_i / σ²,   J_i = [−10 n_i / ln10 · u_iᵀ / d_i, 1],

u_i the unit vector from receiver i to the transmitter and n_i the local
slope of the median path loss (:func:`heimdall.sim.propagation.path_loss_exponent`).
With P0 known the last column is dropped. The bound on the position RMSE is
sqrt(trace([F⁻¹]_pos)); with P0 unknown, [F⁻¹]_pos = (F_pp − f f ᵀ / F_00)⁻¹
(Schur complement). A session whose position block is singular (fewer than
3 receivers, or collinear geometry) has no finite bound and is counted apart.

TDOA (same construction): arrival time τ_i = d_i / c + t0 + e_i with unknown
emission time t0 and σ_i² = σ_sync² + σ_toa,i²; J_i = [u_iᵀ / c, 1]. The time-of-arrival
bound of a signal of RMS bandwidth β (Hz) at SNR over N samples is
σ_toa² = 1 / (8 π² β² · SNR · N) (Kay, *Fundamentals of Statistical Signal
Processing I*, 1993, §3.11).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heimdall.sim.propagation import SPEED_OF_LIGHT_KM_S

_LN10 = np.log(10.0)
#: Reciprocal condition number below which a Fisher matrix counts as singular.
SINGULAR_RCOND = 1e-10


@dataclass(frozen=True)
class Bound:
    """Per-session bound on the position error.

    Attributes
    ----------
    rmse_km
        sqrt(trace of the position block of F⁻¹), km; NaN where singular.
    cov_km2
        Position block of F⁻¹, (B, 2, 2) km²; NaN where singular.
    singular
        The Fisher matrix is singular (no finite bound), (B,).

    """

    rmse_km: NDArray[np.float64]
    cov_km2: NDArray[np.float64]
    singular: NDArray[np.bool_]


def _position_bound(fisher: NDArray[np.float64], nuisance: bool) -> Bound:
    """Position block of the inverse of (B, k, k) Fisher matrices (last index the nuisance)."""
    if nuisance:
        f_pp = fisher[:, :2, :2]
        f_pn = fisher[:, :2, 2]
        f_nn = fisher[:, 2, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            schur = f_pp - f_pn[:, :, None] * f_pn[:, None, :] / f_nn[:, None, None]
        schur = np.where((f_nn > 0)[:, None, None], schur, 0.0)
    else:
        schur = fisher[:, :2, :2]
    schur = np.nan_to_num(schur, nan=0.0, posinf=0.0, neginf=0.0)
    eig = np.linalg.eigvalsh(schur)
    scale = np.maximum(np.abs(fisher).reshape(len(fisher), -1).max(axis=1), 1e-300)
    singular = eig[:, 0] <= SINGULAR_RCOND * scale
    safe = np.where(singular[:, None, None], np.eye(2), schur)
    cov = np.linalg.inv(safe)
    cov[singular] = np.nan
    rmse = np.sqrt(cov[:, 0, 0] + cov[:, 1, 1])
    return Bound(rmse, cov, singular)


def rss_fisher(
    tx_km: NDArray[np.float64],
    rx_km: NDArray[np.float64],
    used: NDArray[np.bool_],
    slope: NDArray[np.float64],
    sigma_db: float | NDArray[np.float64],
    known_power: bool = False,
) -> NDArray[np.float64]:
    """RSS Fisher matrices (B, 3, 3) for θ = (east km, north km, P0 dB), or (B, 2, 2) if P0 known.

    Parameters
    ----------
    tx_km
        Transmitter positions (B, 2), km.
    rx_km
        Receiver positions (B, R, 2), km.
    used
        Receivers that measure (B, R).
    slope
        Local path-loss exponent n_i (B, R).
    sigma_db
        Standard deviation of each measurement, dB (scalar or (B, R)).
    known_power
        Drop the P0 column.

    """
    diff = tx_km[:, None, :] - rx_km
    d = np.maximum(np.hypot(diff[..., 0], diff[..., 1]), 1e-6)
    grad = (-10.0 * slope / _LN10 / d**2)[..., None] * np.nan_to_num(diff)  # ∂P_i/∂(e, n), dB/km
    jac = grad if known_power else np.concatenate([grad, np.ones_like(d)[..., None]], axis=-1)
    w = np.where(used, 1.0 / np.broadcast_to(np.asarray(sigma_db, dtype=np.float64), used.shape) ** 2, 0.0)
    jac = np.where(used[..., None], jac, 0.0)
    return np.einsum("br,bri,brj->bij", w, jac, jac)


def rss_crlb(
    tx_km: NDArray[np.float64],
    rx_km: NDArray[np.float64],
    used: NDArray[np.bool_],
    slope: NDArray[np.float64],
    sigma_db: float | NDArray[np.float64],
    known_power: bool = False,
) -> Bound:
    """Classical RSS CRLB per session (see module docstring; arguments as :func:`rss_fisher`)."""
    fisher = rss_fisher(tx_km, rx_km, used, slope, sigma_db, known_power)
    return _position_bound(fisher, nuisance=not known_power)


def tdoa_crlb(
    tx_km: NDArray[np.float64],
    rx_km: NDArray[np.float64],
    used: NDArray[np.bool_],
    sigma_s: NDArray[np.float64],
) -> Bound:
    """TDOA CRLB per session with unknown emission time.

    Parameters
    ----------
    tx_km, rx_km, used
        As :func:`rss_fisher`.
    sigma_s
        Arrival-time standard deviation of each receiver (B, R), s.

    """
    diff = tx_km[:, None, :] - rx_km
    d = np.maximum(np.hypot(diff[..., 0], diff[..., 1]), 1e-9)
    grad = np.nan_to_num(diff) / d[..., None] / SPEED_OF_LIGHT_KM_S  # s/km
    jac = np.concatenate([grad, np.ones_like(d)[..., None]], axis=-1)
    with np.errstate(divide="ignore"):
        w = np.where(used & (sigma_s > 0), 1.0 / np.where(sigma_s > 0, sigma_s, 1.0) ** 2, 0.0)
    jac = np.where(used[..., None], jac, 0.0)
    fisher = np.einsum("br,bri,brj->bij", w, jac, jac)
    # rescale time to µs so the matrix is well conditioned, then back
    scale = np.array([1.0, 1.0, 1e-6])
    fisher = fisher * scale[:, None] * scale[None, :]
    return _position_bound(fisher, nuisance=True)


def toa_sigma_s(
    rms_bandwidth_hz: NDArray[np.float64], snr_db: NDArray[np.float64], n_samples: int
) -> NDArray:
    """Time-of-arrival CRLB σ (s) of a known-shape signal: 1 / sqrt(8π² β² · SNR · N)."""
    snr = 10.0 ** (np.asarray(snr_db, dtype=np.float64) / 10.0)
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(8.0 * np.pi**2 * np.asarray(rms_bandwidth_hz) ** 2 * snr * n_samples)
