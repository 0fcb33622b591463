"""Physics measured from the simulated IQ against the simulator's bookkeeping.

The measurements here are written independently of any estimator in the
package: periodograms with numpy's FFT, least-squares fits with numpy.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from heimdall.data.session import HEARD, MODES
from heimdall.network import load_network
from heimdall.sim import World, load_world
from heimdall.sim.propagation import free_space_loss_db, radio_horizon_km
from heimdall.sim.simulator import band_of

NET = load_network("nw-italy")


def _world(seed: int = 0, **changes) -> World:
    base = {"duration_s": 0.25}
    return World(NET, load_world().with_overrides(**{**base, **changes}), seed)


def _gains(w: World, b) -> np.ndarray:
    """True gain offset of every slot in its session's band, (B, R) dB."""
    return np.stack([w.gain_offset_db_for(band_of(f)) for f in b.center_freq_hz])


def _periodogram(x: np.ndarray) -> np.ndarray:
    """Blackman-Harris windowed |FFT|^2 / (T sum w^2): sums to the mean power (Parseval).

    The window keeps a strong carrier's leakage out of the noise-only bins (rectangular
    windows leak at -20 dB/decade, which would bias the noise floor of a 30 dB carrier).
    """
    t = x.shape[-1]
    n = np.arange(t)
    a = (0.35875, 0.48829, 0.14128, 0.01168)
    w = (
        a[0]
        - a[1] * np.cos(2 * np.pi * n / t)
        + a[2] * np.cos(4 * np.pi * n / t)
        - a[3] * np.cos(6 * np.pi * n / t)
    )
    return np.abs(np.fft.fft(x * w, axis=-1)) ** 2 / (t * np.sum(w**2))


def _noise_per_bin(p: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Mean periodogram bin outside ``exclude`` (noise per bin), per capture."""
    masked = np.where(exclude, np.nan, p)
    with np.errstate(invalid="ignore"):
        return np.nanmean(masked, axis=-1)


@pytest.mark.slow
def test_path_loss_slope_from_iq_each_side_of_breakpoint() -> None:
    """Slope of measured power vs log distance = configured exponent within 5 % (near and far)."""
    w = _world(static_shadowing_sigma_db=0.0, capture_shadowing_sigma_db=0.0, mode_probs={"cw": 1.0})
    b = w.simulate(160, session_seed=7)
    x = b.iq_complex().astype(np.complex128)
    p = _periodogram(x)
    peak = np.argmax(p, axis=-1)
    bins = np.arange(p.shape[-1])
    circ = np.minimum(np.abs(bins - peak[..., None]), p.shape[-1] - np.abs(bins - peak[..., None]))
    near_peak = circ <= 50  # +-200 Hz around the carrier excluded from the noise bins
    noise = _noise_per_bin(p, near_peak)
    signal = np.mean(np.abs(x) ** 2, axis=-1) - noise * p.shape[-1]
    gain = _gains(w, b)
    power_dbm = 10 * np.log10(np.maximum(signal, 1e-30)) + b.rx_fullscale_dbm - gain
    east, north = NET.frame.to_local_km(b.tx_lat_deg, b.tx_lon_deg)
    d = w.distance_km(east, north)
    d_b = radio_horizon_km(b.tx_height_m[:, None], NET.heights_m[None, :])
    f_mhz = b.center_freq_hz[:, None] / 1e6
    ok = (b.rx_state == HEARD) & ~b.rx_clipped & (b.rx_snr_db > 10) & (d > 2.0)
    y = power_dbm - b.tx_power_dbm[:, None] + w.config.clutter_loss_db + free_space_loss_db(1.0, f_mhz)
    near = ok & (d < 0.9 * d_b)
    far = ok & (d > 1.1 * d_b)
    assert near.sum() > 30 and far.sum() > 30
    n_near = -np.polyfit(10 * np.log10(d[near]), y[near], 1)[0]
    y_far = y + 20 * np.log10(d_b)
    n_far = -np.polyfit(10 * np.log10(d[far] / d_b[far]), y_far[far], 1)[0]
    assert abs(n_near - w.config.path_loss_exponent_near) / w.config.path_loss_exponent_near < 0.05
    assert abs(n_far - w.config.path_loss_exponent_far) / w.config.path_loss_exponent_far < 0.05


def test_cw_snr_from_iq_matches_bookkeeping() -> None:
    """CW at SNR 0-30 dB: carrier vs noise-only bins gives the bookkept SNR within 1 dB."""
    w = _world(mode_probs={"cw": 1.0}, tx_power_dbm_min=0.0, tx_power_dbm_max=20.0)
    b = w.simulate(40, session_seed=3)
    x = b.iq_complex().astype(np.complex128)
    p = _periodogram(x)
    peak = np.argmax(p, axis=-1)
    bins = np.arange(p.shape[-1])
    circ = np.minimum(np.abs(bins - peak[..., None]), p.shape[-1] - np.abs(bins - peak[..., None]))
    noise_bin = _noise_per_bin(p, circ <= 50)
    # carrier = total power - noise (the window weights the capture unevenly, so the total
    # comes from the samples themselves; the window only serves the noise-only bins)
    carrier = np.mean(np.abs(x) ** 2, axis=-1) - noise_bin * p.shape[-1]
    snr = 10 * np.log10(np.maximum(carrier, 1e-30) / np.maximum(noise_bin * p.shape[-1], 1e-30))
    sel = (b.rx_state != 0) & (b.rx_snr_db >= 0) & (b.rx_snr_db <= 30) & ~b.rx_clipped
    assert sel.sum() > 40
    err = snr[sel] - b.rx_snr_db[sel]
    assert np.max(np.abs(err)) < 1.0, err


def test_nbfm_band_power_from_iq_matches_bookkeeping() -> None:
    """NBFM at SNR >= 10 dB: total power minus the noise floor = bookkept power within 1 dB."""
    w = _world(mode_probs={"nbfm": 1.0})
    b = w.simulate(30, session_seed=4)
    assert (b.mode == MODES.index("nbfm")).all()
    x = b.iq_complex().astype(np.complex128)
    # noise per sample from the spectrum's quietest 3 % of bins (beyond Carson's bandwidth)
    p = np.sort(_periodogram(x), axis=-1)
    noise = p[..., : p.shape[-1] * 3 // 100].mean(-1) * p.shape[-1]
    band = np.mean(np.abs(x) ** 2, axis=-1) - noise
    measured_dbm = 10 * np.log10(np.maximum(band, 1e-30)) + b.rx_fullscale_dbm - _gains(w, b)
    sel = (b.rx_state == HEARD) & (b.rx_snr_db >= 10) & ~b.rx_clipped
    assert sel.sum() > 50
    assert np.max(np.abs(measured_dbm[sel] - b.rx_power_dbm[sel])) < 1.0


def _xcorr_delay_s(a: np.ndarray, b: np.ndarray, fs: float, up: int = 32) -> float:
    """Delay (s) of ``a`` relative to ``b`` from the cross-ambiguity function.

    A moving transmitter shows each receiver its own Doppler shift (up to +-5 Hz here), so the
    lag is searched jointly with a frequency offset (0.25 Hz steps), as TDOA receivers do;
    the peak is then refined by x``up`` FFT upsampling and a parabola through three points.
    """
    n = a.size
    t = np.arange(n) / fs
    fa = np.conj(np.fft.fft(a, 2 * n))
    best = max(
        (np.abs(np.fft.ifft(np.fft.fft(b * np.exp(-2j * np.pi * df * t), 2 * n) * fa)).max(), df)
        for df in np.arange(-12.0, 12.01, 0.25)
    )[1]
    spec = np.fft.fft(b * np.exp(-2j * np.pi * best * t), 2 * n) * fa
    padded = np.zeros(2 * n * up, dtype=complex)
    padded[:n] = spec[:n]
    padded[-n:] = spec[-n:]
    cc = np.abs(np.fft.ifft(padded))
    k = int(np.argmax(cc))
    y0, y1, y2 = cc[k - 1], cc[k], cc[(k + 1) % cc.size]
    frac = 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)
    lag = (k + frac) if k < cc.size // 2 else (k + frac - cc.size)
    return -lag / (fs * up)


def _crlb_delay_s(x: np.ndarray, snr_lin: float, fs: float) -> float:
    """CRLB of a delay: 1 / (2 pi beta sqrt(2 N SNR)) with beta the RMS bandwidth (Hz)."""
    p = np.abs(np.fft.fft(x)) ** 2
    f = np.fft.fftfreq(x.size, 1 / fs)
    centroid = np.sum(f * p) / np.sum(p)
    beta = np.sqrt(np.sum((f - centroid) ** 2 * p) / np.sum(p))
    return 1.0 / (2 * np.pi * beta * np.sqrt(2 * x.size * snr_lin))


def test_synchronised_fsk_delay_difference() -> None:
    """Synchronised FSK at SNR >= 20 dB: xcorr delay difference within 3 (sqrt2 sigma_t + CRLB).

    The bound is that of a delay in white noise, so fast fading (a time-varying gain that
    differs per receiver, an impairment beyond that bound) is switched off here: the test
    checks the fractional propagation delays and the GNSS clock errors.
    """
    w = _world(
        synchronised=True, mode_probs={"fsk": 1.0}, tx_power_dbm_min=45.0, tx_power_dbm_max=47.0,
        duration_s=1.0, rician_k_db=60.0, doppler_hz=0.0,
    )  # fmt: skip
    b = w.simulate(4, session_seed=5)
    x = b.iq_complex().astype(np.complex128)
    fs = float(b.sample_rate_hz[0])
    sigma_t = float(b.rx_timing_sigma_s[0, 0])
    assert sigma_t == pytest.approx(1e-7)
    checked = 0
    for s in range(b.n_sessions):
        good = np.flatnonzero((b.rx_state[s] == HEARD) & (b.rx_snr_db[s] >= 20) & ~b.rx_clipped[s])
        for i, j in itertools.pairwise(good):
            measured = _xcorr_delay_s(x[s, i], x[s, j], fs)
            truth = b.rx_delay_s[s, i] - b.rx_delay_s[s, j]
            snr = 10 ** (min(b.rx_snr_db[s, i], b.rx_snr_db[s, j]) / 10)
            bound = 3 * (np.sqrt(2) * sigma_t + _crlb_delay_s(x[s, i], snr, fs))
            assert abs(measured - truth) <= bound, (s, i, j, measured, truth, bound)
            checked += 1
    assert checked >= 10
