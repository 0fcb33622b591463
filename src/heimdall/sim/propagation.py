"""Median path loss, radio horizon and noise power (deterministic physics).

Formulas
--------
- Free-space loss (ITU-R P.525): L = 32.45 + 20 log10(d / km) + 20 log10(f / MHz) dB.
- Radio horizon over a smooth earth of effective radius k·a (a = 6371 km):
  d_h = sqrt(2 k a) (sqrt(h_t) + sqrt(h_r)) = 4.12 (sqrt(h_t) + sqrt(h_r)) km
  for k = 4/3, heights in m.
- Median loss: a log-distance law with exponent ``n_near`` (2 = free space)
  up to the horizon and ``n_far`` beyond it, continuous at the breakpoint.
- Noise (ITU-R P.372): total noise factor f = f_a + f_rx - 1, with man-made
  noise F_a = c - d log10(f / MHz) dB; noise power N = -174 dBm/Hz + 10 log10(B) + F.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

EARTH_RADIUS_KM = 6371.0
SPEED_OF_LIGHT_KM_S = 299_792.458
MIN_DISTANCE_KM = 0.05
THERMAL_NOISE_DBM_PER_HZ = -174.0


def free_space_loss_db(distance_km: ArrayLike, freq_mhz: ArrayLike) -> NDArray[np.float64]:
    """Free-space path loss in dB (ITU-R P.525), distance in km, frequency in MHz."""
    d = np.maximum(np.asarray(distance_km, dtype=np.float64), MIN_DISTANCE_KM)
    return 32.45 + 20.0 * np.log10(d) + 20.0 * np.log10(np.asarray(freq_mhz, dtype=np.float64))


def radio_horizon_km(
    tx_height_m: ArrayLike, rx_height_m: ArrayLike, k_factor: float = 4.0 / 3.0
) -> NDArray[np.float64]:
    """Radio horizon distance in km for antenna heights in m (smooth earth, k-factor)."""
    coeff_km_per_sqrt_m = np.sqrt(2.0 * k_factor * EARTH_RADIUS_KM * 1000.0) / 1000.0
    return coeff_km_per_sqrt_m * (
        np.sqrt(np.asarray(tx_height_m, dtype=np.float64))
        + np.sqrt(np.asarray(rx_height_m, dtype=np.float64))
    )


def median_path_loss_db(
    distance_km: ArrayLike,
    freq_mhz: ArrayLike,
    tx_height_m: ArrayLike,
    rx_height_m: ArrayLike,
    n_near: float = 2.0,
    n_far: float = 4.0,
    k_factor: float = 4.0 / 3.0,
) -> NDArray[np.float64]:
    """Median path loss in dB: exponent ``n_near`` up to the radio horizon, ``n_far`` beyond.

    Parameters
    ----------
    distance_km
        Transmitter-receiver distance, km.
    freq_mhz
        Carrier frequency, MHz.
    tx_height_m, rx_height_m
        Effective antenna heights, m (they set the breakpoint).
    n_near, n_far
        Path-loss exponents inside and beyond the horizon (2 = free space).
    k_factor
        Effective earth-radius factor.

    """
    d = np.maximum(np.asarray(distance_km, dtype=np.float64), MIN_DISTANCE_KM)
    d_b = radio_horizon_km(tx_height_m, rx_height_m, k_factor)
    loss_1km = free_space_loss_db(1.0, freq_mhz)
    near = loss_1km + 10.0 * n_near * np.log10(d)
    far = loss_1km + 10.0 * n_near * np.log10(d_b) + 10.0 * n_far * np.log10(d / d_b)
    return np.where(d <= d_b, near, far)


def path_loss_exponent(
    distance_km: ArrayLike,
    tx_height_m: ArrayLike,
    rx_height_m: ArrayLike,
    n_near: float = 2.0,
    n_far: float = 4.0,
    k_factor: float = 4.0 / 3.0,
) -> NDArray[np.float64]:
    """Local slope of the median loss, dL/d(10 log10 d): ``n_near`` or ``n_far``."""
    d = np.asarray(distance_km, dtype=np.float64)
    return np.where(d <= radio_horizon_km(tx_height_m, rx_height_m, k_factor), n_near, n_far)


def manmade_noise_figure_db(freq_mhz: ArrayLike, c_db: float, d_db: float) -> NDArray[np.float64]:
    """Man-made antenna noise figure F_a = c - d log10(f/MHz) in dB (ITU-R P.372)."""
    return c_db - d_db * np.log10(np.asarray(freq_mhz, dtype=np.float64))


def noise_power_dbm(
    bandwidth_hz: ArrayLike,
    noise_figure_db: ArrayLike,
    freq_mhz: ArrayLike,
    manmade_c_db: float,
    manmade_d_db: float,
) -> NDArray[np.float64]:
    """Total noise power in dBm over ``bandwidth_hz`` (thermal + receiver + man-made)."""
    fa = 10.0 ** (manmade_noise_figure_db(freq_mhz, manmade_c_db, manmade_d_db) / 10.0)
    frx = 10.0 ** (np.asarray(noise_figure_db, dtype=np.float64) / 10.0)
    total_figure_db = 10.0 * np.log10(fa + frx - 1.0)
    return (
        THERMAL_NOISE_DBM_PER_HZ
        + 10.0 * np.log10(np.asarray(bandwidth_hz, dtype=np.float64))
        + total_figure_db
    )
