"""Rician fast fading with a Jakes Doppler spectrum.

The scattered part is complex Gaussian noise shaped in frequency by the
Clarke/Jakes spectrum S(f) = 1 / sqrt(1 - (f/f_d)²), |f| < f_d (Jakes,
Microwave Mobile Communications, 1974), normalised so that its expected power
is exactly 1 (from the filter, not from the draw). The direct part has power
K/(K+1) and a Doppler shift f_d cos θ. The process is drawn at a low rate
(far above 2 f_d) and linearly interpolated to the sample times.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def rician_gain(
    rng: np.random.Generator,
    n_paths: int,
    duration_s: float,
    rate_hz: float,
    k_db: float,
    doppler_hz: float,
) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
    """Draw complex fading gains (unit mean power) on a low-rate grid.

    Parameters
    ----------
    n_paths
        Number of independent links (receivers).
    duration_s
        Time span to cover, s.
    rate_hz
        Grid rate, Hz.
    k_db
        Rician K factor (direct / scattered power), dB.
    doppler_hz
        Maximum Doppler shift, Hz.

    Returns
    -------
    gains : ndarray (n_paths, n_grid) complex
    times_s : ndarray (n_grid,) grid times from 0, s

    """
    n_grid = int(np.ceil(duration_s * rate_hz)) + 2
    n_fft = max(4 * n_grid, 256)
    times_s = np.arange(n_grid) / rate_hz
    k_lin = 10.0 ** (k_db / 10.0)
    white = rng.standard_normal((n_paths, n_fft)) + 1j * rng.standard_normal((n_paths, n_fft))
    white /= np.sqrt(2.0)
    if doppler_hz > 0:
        freqs = np.fft.fftfreq(n_fft, d=1.0 / rate_hz)
        ratio = np.abs(freqs) / doppler_hz
        psd = np.where(ratio < 1.0, 1.0 / np.sqrt(1.0 - np.minimum(ratio, 0.99) ** 2), 0.0)
        if psd.sum() == 0:  # Doppler below one bin: a single static tap
            psd[0] = 1.0
        filt = np.sqrt(n_fft * psd / psd.sum())
        scattered = np.fft.ifft(filt * np.fft.fft(white, axis=-1), axis=-1)[:, :n_grid]
    else:
        scattered = np.repeat(white[:, :1], n_grid, axis=1)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=(n_paths, 1))
    phi = rng.uniform(0.0, 2.0 * np.pi, size=(n_paths, 1))
    direct = np.exp(1j * (2.0 * np.pi * doppler_hz * np.cos(theta) * times_s + phi))
    gains = np.sqrt(k_lin / (k_lin + 1.0)) * direct + np.sqrt(1.0 / (k_lin + 1.0)) * scattered
    return gains, times_s


def interpolate_gain(
    gains: NDArray[np.complex128], grid_rate_hz: float, sample_times_s: NDArray[np.float64]
) -> NDArray[np.complex64]:
    """Linearly interpolate low-rate gains (P, G) to sample times (T,) -> (P, T) complex64."""
    pos = sample_times_s * grid_rate_hz
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, gains.shape[-1] - 2)
    w = (pos - i0).astype(np.float32)
    g = gains.astype(np.complex64)
    return g[:, i0] * (1.0 - w) + g[:, i0 + 1] * w
