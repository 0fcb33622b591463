"""TDOA maximum likelihood for GNSS-synchronised sessions (docs/ARCHITECTURE.md §1, §5).

1. Correlation: every heard receiver i against the reference r (highest SNR),
   over 256-sample segments of r, each correlated with the matching stretch of
   i extended by the largest physical lag (full overlap, no edge effect); each
   pair's Doppler difference is removed from the phase drift between segments;
   the segments' |c(τ)|² are summed (non-coherent; fading keeps a segment, not
   the capture, coherent). Generalised cross-correlation: Knapp & Carter, IEEE
   TASSP 1976.
2. Peaks and position: the grid cell (≤ 1 km) whose predicted delays collect
   the most normalised correlation picks each pair's peak (robust to the
   sidelobes of tone-modulated FM); sub-sample delays by Newton steps on the
   band-limited continuous Σ|c(τ)|². Arrival times a_i (a_r = 0) = d_i(x)/c + t0 + e_i
   with the emission time t0 profiled (equivalent to the correlated TDOA
   differences), σ_i² = σ_sync,i² + (η σ_toa,i)², σ_toa from the CRLB of the
   signal's Gabor bandwidth and SNR (:func:`heimdall.eval.crlb.toa_sigma_s`) and
   η = ``TOA_EFFICIENCY``; Gauss-Newton in (east, north, t0), a receiver beyond
   ``OUTLIER_SIGMAS`` dropped; the covariance is the second moment of the
   likelihood on a local grid around the estimate.
3. A signal whose delay resolution 1/(2πβ) exceeds the largest physical lag (an
   unmodulated carrier) carries no TDOA information: the estimate is then the
   area's centre with the covariance of a uniform law over the area, as for
   sessions with fewer than 3 receivers heard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heimdall.eval.crlb import toa_sigma_s
from heimdall.eval.estimate import Estimate, uniform_area_cov
from heimdall.posterior.grid import SearchGrid
from heimdall.sim.propagation import SPEED_OF_LIGHT_KM_S

MAX_LAG_S = 2e-3
#: σ of the lags relative to their CRLB: the segmented, non-coherent estimator's loss plus
#: fading. Measured on 100 synchronised calibration sessions (session seed 9, not a test set):
#: lag z-scores have σ 1.15–1.36 and the position errors ask for a further 1.2×.
TOA_EFFICIENCY = 1.6
#: Normalised residual beyond which a receiver's lag is treated as a sidelobe.
OUTLIER_SIGMAS = 6.0
#: Coherent segment of the cross-correlation, samples (~21 ms at 12 kHz).
SEGMENT_SAMPLES = 256
_NEWTON_STEPS = 8


def gabor_bandwidth_hz(iq: NDArray[np.complex64], sample_rate_hz: float, noise_power: float) -> float:
    """RMS (Gabor) bandwidth about the spectral centroid of one capture, Hz (noise subtracted)."""
    spec = np.abs(np.fft.fft(iq)) ** 2 / iq.size
    excess = np.maximum(spec - noise_power, 0.0)
    f = np.fft.fftfreq(iq.size, 1.0 / sample_rate_hz)
    total = excess.sum()
    if total <= 0:
        return 0.0
    mu = (excess * f).sum() / total
    return float(np.sqrt((excess * (f - mu) ** 2).sum() / total))


@dataclass(frozen=True)
class Correlation:
    """Segment cross-spectra (P, S, F) of receiver pairs and their summed |c|² at integer shifts."""

    cross: NDArray[np.complex128]
    power: NDArray[np.float64]  # (P, 2 pad + 1), shifts −pad .. pad samples
    pad: int
    nfft: int
    sample_rate_hz: float
    limit_s: NDArray[np.float64]

    @property
    def shifts_s(self) -> NDArray[np.float64]:
        """Integer-sample shifts, s."""
        return (np.arange(2 * self.pad + 1) - self.pad) / self.sample_rate_hz


def correlate(
    x: NDArray[np.complex64],
    ref: NDArray[np.complex64],
    sample_rate_hz: float,
    max_lag_s: NDArray[np.float64] | None = None,
    segment: int = SEGMENT_SAMPLES,
) -> Correlation:
    """Cross-correlate each row of ``x`` (P, T) with ``ref`` (P, T), segment by segment.

    The capture is cut into reference segments short enough that fading and
    the receivers' different Doppler shifts keep each coherent; each is
    correlated with the matching stretch of ``x`` extended by the largest lag
    on both sides (full overlap at every lag, no edge effect), and the
    segments' |c(τ)|² are summed (non-coherent integration). ``max_lag_s`` (P,)
    bounds each search (the physical limit: baseline / c plus the timing error).
    """
    n = x.shape[-1]
    limit = np.full(len(x), MAX_LAG_S) if max_lag_s is None else np.minimum(max_lag_s, MAX_LAG_S)
    pad = min(int(np.ceil(limit.max() * sample_rate_hz)) + 1, max(1, (n - 1) // 4))
    seg = max(1, min(segment, n - 2 * pad))
    n_seg = (n - 2 * pad) // seg
    starts = np.arange(n_seg) * seg
    xi = starts[:, None] + np.arange(seg + 2 * pad)[None, :]
    ri = pad + starts[:, None] + np.arange(seg)[None, :]
    nfft = 2 * (seg + 2 * pad)
    ref_f = np.conj(np.fft.fft(ref[:, ri], nfft))
    shifts = np.arange(2 * pad + 1) - pad
    inside = np.abs(shifts)[None, :] <= limit[:, None] * sample_rate_hz + 1.0
    t = np.arange(n) / sample_rate_hz
    x = x.astype(np.complex128)
    for _ in range(2):  # 2nd pass: after removing the pair's frequency offset (Doppler difference)
        cross = np.fft.fft(x[:, xi], nfft) * ref_f  # (P, S, F)
        corr = np.fft.ifft(cross)[..., : 2 * pad + 1]
        power = np.sum(np.abs(corr) ** 2, axis=1)
        peak = np.argmax(np.where(inside, power, -1.0), axis=1)
        c_peak = corr[np.arange(len(x)), :, peak]  # (P, S)
        turn = np.angle(np.sum(c_peak[:, 1:] * np.conj(c_peak[:, :-1]), axis=1)) if n_seg > 1 else 0.0
        freq_hz = turn / (2.0 * np.pi * seg / sample_rate_hz)
        x = x * np.exp(-2j * np.pi * np.asarray(freq_hz)[..., None] * t[None, :])
    return Correlation(cross, power, pad, nfft, sample_rate_hz, limit)


def refine_lags(corr: Correlation, tau_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """Newton steps on the band-limited Σ|c(τ)|² from starting delays (P,), s (sub-sample)."""
    fs = corr.sample_rate_hz
    w = 2j * np.pi * np.fft.fftfreq(corr.nfft, 1.0 / fs)
    tau = tau_s.astype(np.float64).copy()
    for _ in range(_NEWTON_STEPS):
        e = corr.cross * np.exp(w[None, None, :] * (tau + corr.pad / fs)[:, None, None])
        c0, c1, c2 = e.sum(-1), (e * w).sum(-1), (e * w * w).sum(-1)
        g1 = np.sum(2.0 * np.real(c1 * np.conj(c0)), axis=1)
        g2 = np.sum(2.0 * np.real(c2 * np.conj(c0)) + 2.0 * np.abs(c1) ** 2, axis=1)
        step = np.where(g2 < 0, -g1 / np.where(g2 < 0, g2, -1.0), 0.0)
        tau = tau + np.clip(step, -0.5 / fs, 0.5 / fs)
    lim = corr.limit_s + 1.0 / fs
    return np.clip(tau, -lim, lim)


def cross_correlation_lags(
    x: NDArray[np.complex64],
    ref: NDArray[np.complex64],
    sample_rate_hz: float,
    max_lag_s: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Delay (s) of each row of ``x`` relative to ``ref``: highest peak, then sub-sample Newton."""
    corr = correlate(x, ref, sample_rate_hz, max_lag_s)
    shifts = corr.shifts_s
    power = np.where(
        np.abs(shifts)[None, :] <= corr.limit_s[:, None] + 1.0 / sample_rate_hz, corr.power, -1.0
    )
    return refine_lags(corr, shifts[np.argmax(power, axis=1)])


def common_window(
    start_ns: NDArray[np.int64], sample_rate_hz: float, n_samples: int, min_samples: int = 4 * SEGMENT_SAMPLES
) -> tuple[NDArray[np.int64], int, NDArray[np.float64]] | None:
    """The stretch of time every capture recorded, in whole samples of each capture.

    Parameters
    ----------
    start_ns
        Capture start times (R,), UTC ns (integers: differences are exact).
    sample_rate_hz
        Samples/s, common to the captures.
    n_samples
        Samples per capture.
    min_samples
        Shortest common stretch worth correlating.

    Returns
    -------
    (first, length, eps_s) or None
        First sample of each capture in the common stretch (R,), its length in samples, and
        the start of each cut capture relative to the latest capture start (R,), s
        (|eps| ≤ half a sample); None when the captures overlap by less than ``min_samples``.

    """
    rel_s = (start_ns - start_ns.max()).astype(np.float64) * 1e-9  # ≤ 0
    first = np.round(-rel_s * sample_rate_hz).astype(np.int64)
    length = int(n_samples - first.max())
    if length < min_samples:
        return None
    return first, length, rel_s + first / sample_rate_hz


def _correlation_score(corr: Correlation, tau_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """Σ over pairs of the peak-normalised |c|² at predicted delays tau (P, G), linear interpolation."""
    norm = corr.power / np.maximum(corr.power.max(axis=1, keepdims=True), 1e-300)
    pos = np.clip(tau_s * corr.sample_rate_hz + corr.pad, 0, 2 * corr.pad - 1e-9)
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    rows = np.arange(len(norm))[:, None]
    return np.sum(norm[rows, i0] * (1 - frac) + norm[rows, np.minimum(i0 + 1, 2 * corr.pad)] * frac, axis=0)


def _gauss_newton(
    arr_km: NDArray, w: NDArray, rx_km: NDArray, dz_km: NDArray, pos: NDArray, t0: NDArray, steps: int = 15
) -> tuple[NDArray, NDArray]:
    """Gauss-Newton for sessions (B) in (east, north, t0·c); returns positions and position covariances."""
    cov = np.zeros((len(pos), 2, 2))
    for it in range(steps + 1):
        diff = pos[:, None, :] - rx_km
        d = np.sqrt(np.sum(diff**2, axis=-1) + dz_km**2)
        res = arr_km - d - t0[:, None]
        jac = np.concatenate([-diff / d[..., None], -np.ones_like(d)[..., None]], axis=-1)  # ∂(model)/∂θ · −1
        jtw = jac * w[..., None]
        fisher = np.einsum("bri,brj->bij", jtw, jac) + 1e-12 * np.eye(3)
        grad = np.einsum("bri,br->bi", jtw, res)
        if it == steps:
            inv = np.linalg.inv(fisher)
            cov = inv[:, :2, :2]
            break
        delta = -np.linalg.solve(fisher, grad[..., None])[..., 0]
        delta[:, :2] = np.clip(delta[:, :2], -5.0, 5.0)
        pos = pos + delta[:, :2]
        t0 = t0 + delta[:, 2]
    return pos, cov


def _robust_fit(
    arr: NDArray, sig: NDArray, rx_km: NDArray, dz: NDArray, start: NDArray, t0: float
) -> tuple[NDArray, NDArray]:
    """Gauss-Newton fit with outlier rejection.

    A receiver whose residual exceeds ``OUTLIER_SIGMAS`` σ (a correlation
    sidelobe) is dropped and the fit redone, while at least 4 receivers remain.
    """
    keep = np.ones(len(arr), dtype=bool)
    while True:
        pos, cov = _gauss_newton(
            arr[keep][None],
            1.0 / sig[keep][None] ** 2,
            rx_km[keep][None],
            dz[keep][None],
            start[None],
            np.array([t0]),
        )
        d = np.sqrt(np.sum((pos[0] - rx_km) ** 2, axis=1) + dz**2)
        res = arr - d
        res = (res - np.average(res[keep], weights=1.0 / sig[keep] ** 2)) / sig
        worst = int(np.argmax(np.where(keep, np.abs(res), -1.0)))
        if abs(res[worst]) <= OUTLIER_SIGMAS or keep.sum() <= 4:
            return pos[0], _local_posterior_cov(arr[keep], sig[keep], rx_km[keep], dz[keep], pos[0], cov[0])
        keep[worst] = False
        start = pos[0]


def _local_posterior_cov(
    arr: NDArray, sig: NDArray, rx_km: NDArray, dz: NDArray, pos: NDArray, lin_cov: NDArray, half: int = 30
) -> NDArray:
    """Second moment about ``pos`` of the likelihood (emission time profiled) on a local grid.

    The grid spans ±6 linearised σ along the linearised ellipse's axes; far outside the
    receivers the hyperbolae curve over that region and the linearised covariance
    understates the spread.
    """
    lam, vec = np.linalg.eigh(lin_cov)
    if not np.all(np.isfinite(lam)) or lam.min() <= 0:
        return lin_cov
    u = np.linspace(-6.0, 6.0, 2 * half + 1)
    uu, vv = np.meshgrid(u, u)
    offs = (np.stack([uu.ravel(), vv.ravel()], -1) * np.sqrt(lam)) @ vec.T  # (K, 2) km
    pts = pos + offs
    d = np.sqrt(np.sum((pts[:, None, :] - rx_km[None]) ** 2, axis=-1) + dz**2)  # (K, R)
    w = 1.0 / sig**2
    res = arr - d
    t0 = res @ w / w.sum()
    ll = -0.5 * np.sum(w * (res - t0[:, None]) ** 2, axis=1)
    p = np.exp(ll - ll.max())
    p /= p.sum()
    cov = np.einsum("k,ki,kj->ij", p, offs, offs)
    return cov if np.all(np.diag(cov) > 0) else lin_cov


def tdoa_ml(
    iq: NDArray[np.complex64],
    sample_rate_hz: float,
    heard: NDArray[np.bool_],
    snr_db: NDArray[np.float64],
    noise_lin: NDArray[np.float64],
    timing_sigma_s: NDArray[np.float64],
    rx_km: NDArray[np.float64],
    rx_height_m: NDArray[np.float64],
    grid: SearchGrid,
    tx_height_m: float,
    start_ns: NDArray[np.int64],
) -> Estimate:
    """TDOA maximum likelihood for sessions sharing one receiver layout.

    Captures need not start together: each receiver's capture start time
    (UTC ns) places its samples on a common time axis. The captures are cut
    to the stretch all used receivers recorded (whole samples), and the
    sub-sample remainder of each start is added back to its lag, so an arrival
    time difference is ``lag + (start_i − start_r)`` exactly.

    Parameters
    ----------
    iq
        Complex IQ (B, R, T), full-scale units.
    sample_rate_hz
        Samples/s.
    heard, snr_db, noise_lin
        Measured flags, SNR (dB) and noise power (linear, full-scale units) (B, R).
    timing_sigma_s
        Capture timing uncertainty (B, R), s.
    rx_km, rx_height_m
        Receiver positions (R, 2) km and heights (R,) m.
    grid
        Search grid (≤ 1 km).
    tx_height_m
        Assumed transmitter height, m (a 3-D distance term; matters only within ~1 km).
    start_ns
        Capture start times (B, R), UTC ns since the epoch.

    """
    b_n, r_n, t_n = iq.shape
    pts = grid.points_km
    dz = (rx_height_m - tx_height_m) / 1000.0
    dist = np.sqrt(
        (pts[None, :, 0] - rx_km[:, 0, None]) ** 2
        + (pts[None, :, 1] - rx_km[:, 1, None]) ** 2
        + dz[:, None] ** 2
    )  # (R, G) km
    mean = np.tile(pts.mean(axis=0), (b_n, 1))
    cov = uniform_area_cov(grid.area_km, b_n)
    ref = np.argmax(np.where(heard, snr_db, -np.inf), axis=1)
    for b in np.flatnonzero(heard.sum(axis=1) >= 3):
        r = ref[b]
        idx = np.flatnonzero(heard[b] & (np.arange(r_n) != r))
        limit = np.hypot(*(rx_km[idx] - rx_km[r]).T) / SPEED_OF_LIGHT_KM_S
        limit = limit + 5.0 * (timing_sigma_s[b, idx] + timing_sigma_s[b, r])
        beta = gabor_bandwidth_hz(iq[b, r], sample_rate_hz, noise_lin[b, r])
        if 1.0 / (2.0 * np.pi * max(beta, 1e-9)) > limit.max():  # a carrier: no resolvable delay
            continue
        use = np.concatenate([[r], idx])
        window = common_window(start_ns[b, use], sample_rate_hz, t_n)
        if window is None:  # the captures do not overlap enough to correlate
            continue
        first, length, eps_s = window
        cut = np.stack([iq[b, i, f : f + length] for i, f in zip(use, first, strict=True)])
        shift_s = eps_s[1:] - eps_s[0]  # lag of the cut captures = arrival difference − shift
        corr = correlate(cut[1:], np.repeat(cut[:1], len(idx), 0), sample_rate_hz, limit)
        predicted = (dist[idx] - dist[r]) / SPEED_OF_LIGHT_KM_S - shift_s[:, None]
        k = int(np.argmax(_correlation_score(corr, predicted)))
        lags = refine_lags(corr, predicted[:, k]) + shift_s
        arr = np.concatenate([[0.0], lags]) * SPEED_OF_LIGHT_KM_S
        toa = toa_sigma_s(np.full(len(use), beta), snr_db[b, use], length)
        sig = np.sqrt(timing_sigma_s[b, use] ** 2 + (TOA_EFFICIENCY * toa) ** 2) * SPEED_OF_LIGHT_KM_S
        if not np.all(np.isfinite(sig)) or np.any(sig <= 0):
            continue
        mean[b], cov[b] = _robust_fit(
            arr, sig, rx_km[use], dz[use], pts[k], float(np.mean(arr - dist[use, k]))
        )
    return Estimate(mean, cov)
