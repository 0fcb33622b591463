"""Per-receiver features of an IQ capture, in torch and exportable to ONNX.

The capture is cut into ``n_fft``-sample frames (no overlap), windowed (Hann) and
transformed with the DFT written as two real matrix products, since complex
``torch.stft`` does not export to ONNX. For a frame x_n = a_n + j b_n the DFT
X_k = Σ_n w_n x_n e^{-j2πkn/N} is

    Re X_k = Σ_n w_n (a_n cos θ_kn + b_n sin θ_kn),  Im X_k = Σ_n w_n (b_n cos θ_kn − a_n sin θ_kn),

θ_kn = 2πkn/N (Oppenheim & Schafer, *Discrete-Time Signal Processing*, eq. 8.11).
Bin powers are normalised by N·Σw² so that, by Parseval, their sum over the band
is the frame's mean power |x|² in full-scale units (0 dBFS = full-scale sine power 1).

Outputs per receiver:

- ``spectrogram``: log-power (dBFS per bin) on an ``n_time`` × ``n_bins`` grid, the DFT
  bins grouped linearly (equal widths) or "mel-like" (fine near the channel centre,
  coarse at the band edges; widths grow geometrically with |f|);
- ``scalars`` (:data:`SCALAR_NAMES`): total power (dBFS, mean |x|² over the whole capture),
  noise floor (dBFS), SNR (dB, (total − floor) / floor, floored at −30 dB) and frequency
  offset (Hz: the centroid of the time-averaged spectrum above the floor, 0 for pure noise).
  Total power and noise floor are **the** definitions of :mod:`heimdall.posterior.measure`
  (:func:`~heimdall.posterior.measure.capture_powers`), written in torch: a Bartlett
  periodogram of ``SEGMENT_SAMPLES``-sample Blackman-Harris segments, its
  ``NOISE_QUANTILE`` quantile (linear interpolation between order statistics, as
  ``numpy.quantile``; the order statistics by ``topk``, which exports to ONNX) divided by
  the Gamma(K, 1/K) quantile, times the number of bins. The classical estimators, the
  oracle and the model therefore see the same noise floor and SNR of a capture
  (tests/models/test_features.py compares them on the same IQ).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from heimdall.posterior.measure import NOISE_QUANTILE, SEGMENT_SAMPLES, blackman_harris, gamma_quantile_bias

SCALAR_NAMES: tuple[str, ...] = ("total_power_dbfs", "noise_floor_dbfs", "snr_db", "freq_offset_hz")
_EPS_POWER = 1e-12  # -120 dBFS: below int16 quantisation noise (~ -101 dBFS), keeps zeros finite
_DB_PER_NEPER = 10.0 / math.log(10.0)
_MIN_SNR_LINEAR = 1e-3  # -30 dB


def power_db(power: Tensor) -> Tensor:
    """10·log10(power + 1e-12): power (full-scale units) to dBFS, exportable (Log, Mul)."""
    return torch.log(power + _EPS_POWER) * _DB_PER_NEPER


def dft_matrices(n_fft: int, window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windowed cos / sin DFT matrices (n_fft, n_fft), columns in centred order (−fs/2 .. fs/2).

    Column k corresponds to DFT bin (k − n_fft/2) mod n_fft, i.e. the frequency
    (k − n_fft/2)·fs/n_fft. The window (default: periodic Hann) is folded in and scaled
    by 1/sqrt(N·Σw²), so Re² + Im² of the products is the bin power whose band sum is
    the mean frame power.
    """
    n = np.arange(n_fft)
    if window is None:
        window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)  # periodic Hann
    bins = (np.arange(n_fft) - n_fft // 2) % n_fft
    theta = 2.0 * np.pi * np.outer(n, bins) / n_fft
    scale = window[:, None] / np.sqrt(n_fft * np.sum(window**2))
    return (np.cos(theta) * scale).astype(np.float32), (np.sin(theta) * scale).astype(np.float32)


def bin_edges(n_fft: int, n_bins: int, binning: str) -> np.ndarray:
    """Edges (n_bins + 1,) in centred DFT-bin indices 0..n_fft of the spectrogram's frequency bins.

    ``linear``: equal widths. ``mel``: symmetric about the centre, widths growing
    geometrically with |f| (like the mel scale's log spacing at high frequency), at
    least one DFT bin each.
    """
    if n_bins < 2 or n_bins > n_fft or (n_fft % n_bins and binning == "linear"):
        raise ValueError(f"n_bins={n_bins} must divide n_fft={n_fft} and be >= 2")
    if binning == "linear":
        return np.linspace(0, n_fft, n_bins + 1).round().astype(np.int64)
    if binning != "mel":
        raise ValueError(f"binning must be 'linear' or 'mel', got {binning!r}")
    half, centre = n_bins // 2, n_fft // 2
    # |f| edges on a log scale from 1 DFT bin to the band edge, then forced strictly increasing
    raw = np.geomspace(1.0, centre, half)
    edges = np.concatenate([[0.0], raw])
    pos = np.round(edges).astype(np.int64)
    for i in range(1, pos.size):
        pos[i] = max(pos[i], pos[i - 1] + 1)
    pos = np.minimum(pos, centre)
    pos[-1] = centre
    if np.any(np.diff(pos) <= 0):
        raise ValueError(f"n_bins={n_bins} too many for mel binning of n_fft={n_fft}")
    return np.concatenate([centre - pos[::-1], centre + pos[1:]])


def binning_matrix(n_fft: int, n_bins: int, binning: str) -> np.ndarray:
    """0/1 matrix (n_fft, n_bins) summing centred DFT bins into spectrogram bins."""
    edges = bin_edges(n_fft, n_bins, binning)
    mat = np.zeros((n_fft, len(edges) - 1), dtype=np.float32)
    for j in range(len(edges) - 1):
        mat[edges[j] : edges[j + 1], j] = 1.0
    return mat


class FeatureBlock(nn.Module):
    """IQ (N, T, 2) in full-scale units -> spectrogram (N, n_time, n_bins) dBFS and scalars (N, 4).

    Parameters
    ----------
    n_samples
        Samples per capture T the block expects (longer inputs are cut, shorter fail).
    sample_rate_hz
        Sample rate, samples/s (for the frequency offset in Hz).
    n_fft
        DFT length (frame length) of the spectrogram, samples.
    n_time
        Time bins of the spectrogram (frames are averaged in groups).
    n_bins
        Frequency bins of the spectrogram.
    binning
        ``"linear"`` or ``"mel"`` (see :func:`bin_edges`).

    """

    def __init__(
        self,
        n_samples: int,
        sample_rate_hz: float,
        n_fft: int = 128,
        n_time: int = 16,
        n_bins: int = 32,
        binning: str = "linear",
    ) -> None:
        super().__init__()
        frames_per_bin = n_samples // n_fft // n_time
        if frames_per_bin < 1:
            raise ValueError(f"n_samples={n_samples} too short for n_fft={n_fft} x n_time={n_time}")
        self.n_segments = n_samples // SEGMENT_SAMPLES
        if self.n_segments < 1:
            raise ValueError(
                f"n_samples={n_samples} is shorter than one noise-floor segment ({SEGMENT_SAMPLES})"
            )
        self.n_samples, self.n_fft, self.n_time, self.n_bins = n_samples, n_fft, n_time, n_bins
        self.frames_per_bin = frames_per_bin
        self.sample_rate_hz = float(sample_rate_hz)
        self.binning = binning
        cos, sin = dft_matrices(n_fft)
        self.register_buffer("dft_cos", torch.from_numpy(cos))
        self.register_buffer("dft_sin", torch.from_numpy(sin))
        self.register_buffer("bin_sum", torch.from_numpy(binning_matrix(n_fft, n_bins, binning)))
        freqs = (np.arange(n_fft) - n_fft // 2) * sample_rate_hz / n_fft
        self.register_buffer("freq_hz", torch.from_numpy(freqs.astype(np.float32)))
        # noise floor as heimdall.posterior.measure (not saved: derived from constants)
        bh_cos, bh_sin = dft_matrices(SEGMENT_SAMPLES, blackman_harris(SEGMENT_SAMPLES))
        self.register_buffer("floor_cos", torch.from_numpy(bh_cos), persistent=False)
        self.register_buffer("floor_sin", torch.from_numpy(bh_sin), persistent=False)
        position = NOISE_QUANTILE * (SEGMENT_SAMPLES - 1)  # numpy.quantile, method "linear"
        self.quantile_index = int(np.floor(position))
        self.quantile_frac = float(position - self.quantile_index)
        self.floor_scale = SEGMENT_SAMPLES / gamma_quantile_bias(self.n_segments, NOISE_QUANTILE)

    def noise_floor(self, x: Tensor) -> Tensor:
        """Noise power over the capture bandwidth (N,), full-scale units (:func:`capture_powers`)."""
        segs = x[:, : self.n_segments * SEGMENT_SAMPLES, :].reshape(-1, self.n_segments, SEGMENT_SAMPLES, 2)
        re_in, im_in = segs[..., 0], segs[..., 1]
        re = re_in @ self.floor_cos + im_in @ self.floor_sin
        im = im_in @ self.floor_cos - re_in @ self.floor_sin
        pgram = (re * re + im * im).mean(dim=1)  # (N, M): white noise of power P gives bins of mean P / M
        low = torch.topk(pgram, self.quantile_index + 2, dim=1, largest=False, sorted=True).values
        lo, hi = low[:, self.quantile_index], low[:, self.quantile_index + 1]
        return (lo + self.quantile_frac * (hi - lo)) * self.floor_scale

    def forward(self, iq: Tensor) -> tuple[Tensor, Tensor]:
        """Features of captures ``iq`` (N, T, 2); returns spectrogram (N, n_time, n_bins), scalars (N, 4)."""
        x = iq[:, : self.n_samples, :]
        total_power = torch.mean(x[..., 0] * x[..., 0] + x[..., 1] * x[..., 1], dim=1)
        n_frames = self.n_time * self.frames_per_bin
        frames = x[:, : n_frames * self.n_fft, :].reshape(-1, n_frames, self.n_fft, 2)
        re_in, im_in = frames[..., 0], frames[..., 1]
        re = re_in @ self.dft_cos + im_in @ self.dft_sin
        im = im_in @ self.dft_cos - re_in @ self.dft_sin
        bin_power = re * re + im * im  # (N, frames, n_fft), sums to the frame's mean power
        grouped = bin_power.reshape(-1, self.n_time, self.frames_per_bin, self.n_fft).mean(dim=2)
        spectrogram = power_db(grouped @ self.bin_sum)
        mean_psd = bin_power.mean(dim=1)  # (N, n_fft)
        noise_floor = self.noise_floor(x)
        floor_psd = noise_floor / self.n_fft
        excess = torch.clamp(total_power - noise_floor, min=0.0)
        snr_db = power_db(torch.maximum(excess, noise_floor * _MIN_SNR_LINEAR)) - power_db(noise_floor)
        above = torch.clamp(mean_psd - floor_psd.unsqueeze(1), min=0.0)
        offset_hz = (above @ self.freq_hz) / (above.sum(dim=1) + _EPS_POWER)
        scalars = torch.stack([power_db(total_power), power_db(noise_floor), snr_db, offset_hz], dim=1)
        return spectrogram, scalars
