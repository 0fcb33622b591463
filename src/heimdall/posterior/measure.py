"""Per-receiver power, noise floor and SNR measured from the IQ alone (numpy, vectorised).

What a classical estimator (and ``heimdall data info``) can know about a
capture without the simulator's bookkeeping:

- total power P_tot = mean |x|² over the capture (full-scale units, x = iq / 32768);
- noise floor N from the spectrum: a Bartlett periodogram (non-overlapping
  Blackman-Harris windowed segments, K per capture, M bins) whose bins are, for
  white noise, N/M times a Gamma(K, 1/K) variable (an average of K exponential
  bins; Kay, *Modern Spectral Estimation*, 1988, §4.3). The q-quantile of the
  bins is divided by the Gamma(K, 1/K) q-quantile (the known bias of a low
  quantile / median of exponential-type bins: for K = 1 and q = 0.5 that is the
  classic factor ln 2) and multiplied by M. A low quantile (q = 0.05) stays
  on the weakest bins: a carrier occupies a few bins, but NBFM (Carson
  bandwidth ~11 kHz) and FSK spread over most of a 12 kHz capture, so at high
  SNR their noise floor is over-estimated (their band power, ≫ noise, is not
  affected). Quantisation noise is white and counts as noise;
- band power S = P_tot − N (clamped at a tiny positive floor), SNR = S / N;
- ``heard``: the measured SNR over the capture bandwidth is at least
  ``DETECTION_SNR_DB`` (0 dB, the reference world's detection rule), on an
  online receiver; silent receivers are censored measurements;
- levels in dBFS (0 dBFS = |x|² = 1) and in dBm via the receiver's *nominal*
  full-scale power: P_dBm = P_dBFS + fullscale_dBm. The true level differs by
  the receiver's unknown gain offset.

``clipped``: some sample reached digital full scale; the power of such a
capture is a lower bound only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaincinv

from heimdall.data.session import OFFLINE, SessionBatch

#: Samples per periodogram segment (bins M); 94 Hz bins at 12 kHz.
SEGMENT_SAMPLES = 128
#: Quantile of the periodogram bins taken as the noise floor.
NOISE_QUANTILE = 0.05
#: Measured SNR (dB, over the capture bandwidth) from which an online receiver counts as heard.
DETECTION_SNR_DB = 0.0
#: Smallest band power kept (linear, full-scale units), so dB values stay finite.
_MIN_POWER_FS = 1e-16
_FULL_SCALE_INT = 32768.0
_CHUNK_ROWS = 256
#: Captures per FFT block of :func:`capture_powers` (a complex128 buffer of 16 × T samples).
_FFT_ROWS = 16


@dataclass(frozen=True)
class Measurement:
    """Per-receiver measurements, arrays of shape (B, R); NaN on offline slots.

    Attributes
    ----------
    total_dbfs
        Total capture power, dBFS.
    noise_dbfs
        Noise power over the whole capture bandwidth (the sample rate), dBFS.
    band_dbfs
        Signal power (total − noise), dBFS.
    band_dbm
        Signal power in dBm via the nominal full scale (true power + unknown gain offset).
    noise_dbm
        Noise power in dBm via the nominal full scale.
    snr_db
        Band power over noise power, dB.
    heard
        Online and SNR ≥ :data:`DETECTION_SNR_DB` (bool).
    online
        Receiver slot has data (bool).
    clipped
        Some sample hit digital full scale: the power is a lower bound (bool).

    """

    total_dbfs: NDArray[np.float64]
    noise_dbfs: NDArray[np.float64]
    band_dbfs: NDArray[np.float64]
    band_dbm: NDArray[np.float64]
    noise_dbm: NDArray[np.float64]
    snr_db: NDArray[np.float64]
    heard: NDArray[np.bool_]
    online: NDArray[np.bool_]
    clipped: NDArray[np.bool_]

    @property
    def silent(self) -> NDArray[np.bool_]:
        """Online but not heard: a censored measurement (B, R)."""
        return self.online & ~self.heard

    @property
    def n_heard(self) -> NDArray[np.int64]:
        """Receivers heard per session (B,)."""
        return self.heard.sum(axis=1)

    def select(self, index: NDArray[np.int64]) -> Measurement:
        """The sessions at ``index`` (every array's first axis)."""
        return Measurement(**{k: getattr(self, k)[index] for k in Measurement.__dataclass_fields__})


def blackman_harris(n: int) -> NDArray[np.float64]:
    """4-term Blackman-Harris window (Harris, Proc. IEEE 1978): −92 dB sidelobes."""
    k = 2.0 * np.pi * np.arange(n) / n
    return 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)


def gamma_quantile_bias(n_segments: int, quantile: float) -> float:
    """Quantile of an average of ``n_segments`` unit-mean exponential bins, Gamma(K, 1/K).

    Dividing the ``quantile`` of white-noise periodogram bins by this value gives
    an unbiased noise level (for K = 1, q = 0.5 it is ln 2).
    """
    return float(gammaincinv(n_segments, quantile) / n_segments)


def capture_powers(
    iq: NDArray[np.int16], segment: int = SEGMENT_SAMPLES, quantile: float = NOISE_QUANTILE
) -> tuple[NDArray, NDArray]:
    """Total power and noise power (both linear, full-scale units) of IQ rows (N, T, 2).

    The one definition of both: :class:`heimdall.models.features.FeatureBlock`
    computes the same quantities in torch (tests/models/test_features.py compares them).

    The samples are complex64 (I, Q as float32 / 32768), windowed in float32; each
    segment's spectrum is the double-precision FFT rounded to complex64, which is what
    ``numpy.fft.fft`` returns for complex64 input, at a fifth of its cost (numpy's
    complex64 path casts every 128-sample row on its own).
    """
    x = iq.astype(np.float32, order="C")
    x /= np.float32(_FULL_SCALE_INT)
    z = x.view(np.complex64)[..., 0]  # (N, T): I + jQ, no copy
    sq = np.square(x, dtype=np.float64)  # exact: a float32 product fits a float64
    total = np.mean(sq[..., 0] + sq[..., 1], axis=-1)
    n, k = z.shape[0], z.shape[-1] // segment
    if k < 1:
        raise ValueError(f"capture of {z.shape[-1]} samples is shorter than one segment ({segment})")
    win = blackman_harris(segment).astype(np.float32)
    segs = z[:, : k * segment].reshape(n, k, segment) * win
    mean_spec = np.empty((n, segment), dtype=np.float32)
    for start in range(0, n, _FFT_ROWS):  # rows in blocks: the complex128 buffer stays small
        block = segs[start : start + _FFT_ROWS].astype(np.complex128)
        np.fft.fft(block, axis=-1, out=block)
        mean_spec[start : start + _FFT_ROWS] = (np.abs(block.astype(np.complex64)) ** 2).mean(axis=1)
    # Normalise so that white noise of power P gives bins of mean P / M.
    pgram = mean_spec.astype(np.float64) / (segment * float(np.sum(win.astype(np.float64) ** 2)))
    floor_bin = np.quantile(pgram, quantile, axis=-1) / gamma_quantile_bias(k, quantile)
    return total, floor_bin * segment


def measure_power(
    batch: SessionBatch,
    segment: int = SEGMENT_SAMPLES,
    quantile: float = NOISE_QUANTILE,
    detection_snr_db: float = DETECTION_SNR_DB,
) -> Measurement:
    """Measure every online receiver's power, noise floor and SNR from its IQ.

    Parameters
    ----------
    batch
        Sessions (IQ int16, full scale 32768; ``rx_fullscale_dbm`` in dBm).
    segment
        Periodogram segment length, samples.
    quantile
        Quantile of periodogram bins used as the noise floor (bias-corrected).
    detection_snr_db
        Measured SNR (dB) from which an online receiver counts as heard.

    Returns
    -------
    Measurement
        Arrays (B, R); NaN (and False) on offline slots.

    """
    b, r = batch.rx_state.shape
    online = batch.rx_state != OFFLINE
    total = np.full((b, r), np.nan)
    noise = np.full((b, r), np.nan)
    clipped = np.zeros((b, r), dtype=bool)
    rows = np.argwhere(online)
    for start in range(0, len(rows), _CHUNK_ROWS):
        ib, ir = rows[start : start + _CHUNK_ROWS].T
        iq = batch.iq[ib, ir]
        total[ib, ir], noise[ib, ir] = capture_powers(iq, segment, quantile)
        clipped[ib, ir] = np.any((iq == 32767) | (iq == -32768), axis=(-1, -2))
    live = online & (total > 0)  # digital silence is never heard
    noise = np.where(online, np.maximum(noise, _MIN_POWER_FS), np.nan)
    band = np.maximum(total - noise, _MIN_POWER_FS)
    with np.errstate(divide="ignore", invalid="ignore"):
        total_dbfs = 10.0 * np.log10(np.where(online, np.maximum(total, _MIN_POWER_FS), np.nan))
        noise_dbfs = 10.0 * np.log10(noise)
        band_dbfs = np.where(online, 10.0 * np.log10(band), np.nan)
    snr_db = band_dbfs - noise_dbfs
    heard = live & (snr_db >= detection_snr_db)
    full = np.where(online, batch.rx_fullscale_dbm, np.nan)
    return Measurement(
        total_dbfs=total_dbfs,
        noise_dbfs=noise_dbfs,
        band_dbfs=band_dbfs,
        band_dbm=band_dbfs + full,
        noise_dbm=noise_dbfs + full,
        snr_db=snr_db,
        heard=heard,
        online=online,
        clipped=clipped & online,
    )
