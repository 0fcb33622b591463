from __future__ import annotations

import numpy as np

from heimdall.eval.tdoa import cross_correlation_lags, gabor_bandwidth_hz


def _delayed(x: np.ndarray, delay_samples: float) -> np.ndarray:
    """Exact fractional delay of a periodic band-limited signal by a linear phase in frequency."""
    f = np.fft.fftfreq(x.size)
    return np.fft.ifft(np.fft.fft(x) * np.exp(-2j * np.pi * f * delay_samples))


def test_sub_sample_delays_are_recovered() -> None:
    """Band-limited noise delayed by known fractional amounts (FFT phase ramp, an independent
    construction); lags within 0.02 samples, with a slow relative Doppler of 3 Hz added."""
    rng = np.random.default_rng(3)
    fs, n = 12000.0, 12000
    spec = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * (np.abs(np.fft.fftfreq(n, 1 / fs)) < 2500)
    base = np.fft.ifft(spec)
    delays = np.array([-7.3, 0.0, 2.45, 11.8])
    t = np.arange(n) / fs
    x = np.stack([_delayed(base, d) * np.exp(2j * np.pi * 3.0 * t) for d in delays])
    lags = cross_correlation_lags(x, np.repeat(base[None], len(delays), 0), fs, np.full(len(delays), 1.5e-3))
    np.testing.assert_allclose(lags * fs, delays, atol=0.02)


def test_gabor_bandwidth_of_a_flat_band() -> None:
    """White noise flat over ±B has RMS bandwidth B / sqrt(3) (closed form)."""
    rng = np.random.default_rng(0)
    n, fs, b = 12000, 12000.0, 3000.0
    spec = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * (np.abs(np.fft.fftfreq(n, 1 / fs)) < b)
    x = np.fft.ifft(spec)
    assert abs(gabor_bandwidth_hz(x, fs, 0.0) - b / np.sqrt(3)) < 0.02 * b / np.sqrt(3)
