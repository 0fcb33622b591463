from __future__ import annotations

import numpy as np

from heimdall.eval.geometry import session_geometry
from heimdall.eval.tdoa import cross_correlation_lags, gabor_bandwidth_hz, tdoa_ml
from heimdall.posterior.grid import search_grid
from heimdall.posterior.measure import measure_power
from heimdall.sim import World, load_world


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


def _late_starts(iq: np.ndarray, start_ns: np.ndarray, late: np.ndarray, fs: float) -> tuple:
    """Captures of the same air that began ``late`` (R,) whole samples later: drop those
    samples, keep a common length, move each start time by late / fs (ns, rounded)."""
    keep = iq.shape[-1] - int(late.max())
    cut = np.stack([iq[:, i, k : k + keep] for i, k in enumerate(late)], axis=1)
    return cut, start_ns + np.round(late * 1e9 / fs).astype(np.int64)[None, :]


def test_tdoa_ml_uses_capture_start_times(network) -> None:
    """Receivers whose captures start at different, known times (offsets of up to 40 ms) give
    the same position as the equal-start captures; ignoring the start times (the old
    assumption) puts the transmitter tens of km away."""
    cfg = load_world().with_overrides(
        synchronised=True, timing_sigma_sync_s=0.0, mode_probs={"nbfm": 0.5, "cw": 0.0, "fsk": 0.5},
        tx_power_dbm_min=55.0, tx_power_dbm_max=60.0, capture_shadowing_sigma_db=0.0, rician_k_db=60.0,
        doppler_hz=0.0, tx_height_m_min=5.0, tx_height_m_max=5.0,
    )  # fmt: skip
    world = World(network, cfg, seed=0)
    batch = world.simulate(3, session_seed=9)
    m = measure_power(batch)
    truth = session_geometry(batch, network.frame).tx_km
    fs = world.sample_rate_hz
    late = np.array([0, 37, 480, 13, 250, 91, 3])[: batch.n_receivers]

    def run(iq: np.ndarray, start_ns: np.ndarray):
        noise = 10 ** (m.noise_dbfs / 10)
        grid = search_grid(world.tx_area_km, 1.0)
        rx_km, rx_h = world.rx_east_north_km, network.heights_m
        return tdoa_ml(iq, fs, m.heard, m.snr_db, noise, batch.rx_timing_sigma_s, rx_km, rx_h, grid, 5.0,
                       start_ns).mean_km  # fmt: skip

    equal = run(batch.iq_complex(), batch.rx_start_ns)
    iq, starts = _late_starts(batch.iq_complex(), batch.rx_start_ns, late, fs)
    shifted = run(iq, starts)
    ignored = run(iq, batch.rx_start_ns)
    err = lambda est: np.hypot(*(est - truth).T)  # noqa: E731
    assert np.all(err(equal) < 0.5)
    np.testing.assert_allclose(shifted, equal, atol=0.05)  # km: the same position within 50 m
    assert np.all(err(ignored) > 5.0)
