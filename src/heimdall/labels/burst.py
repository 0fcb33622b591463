"""Where the packet burst is in a capture, and the received power over it.

An APRS transmitter keys its carrier only for the burst (TXDELAY flags, the
frame, TXTAIL), a fraction of a capture, so the received power that
localisation uses is measured over the burst: the band power is
S = mean|x|² inside the burst − N, with the noise power N = mean|x|² of the
same capture outside the burst (a guard of one block each side). The burst
is found on 10 ms block powers: on the strongest receiver as the longest run
of blocks above twice (3 dB over) the noise floor (the 10th percentile of
the blocks); on every receiver its position is then the boxcar of that length
with the most energy within ±:data:`MAX_SHIFT_S` (capture start times of
NTP-disciplined receivers differ by tens of ms). At low SNR the maximum over
shifts biases S upward by a fraction of the noise over the burst.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

BLOCK_S = 0.01
MAX_SHIFT_S = 0.15
_ON_FACTOR = 2.0
_FLOOR_QUANTILE = 10.0
_MIN_POWER = 1e-16


@dataclass(frozen=True)
class BurstPower:
    """Per-receiver burst measurements (shape (R,); NaN where not measured).

    Attributes
    ----------
    band_fs
        Signal power over the burst, full-scale units (|x|², x = iq / 32768).
    noise_fs
        Noise power outside the burst, full-scale units.
    start_s, stop_s
        The burst at each receiver, s from the capture start.

    """

    band_fs: NDArray[np.float64]
    noise_fs: NDArray[np.float64]
    start_s: NDArray[np.float64]
    stop_s: NDArray[np.float64]

    @property
    def snr_db(self) -> NDArray[np.float64]:
        """Burst SNR over the capture bandwidth, dB."""
        return 10.0 * np.log10(np.maximum(self.band_fs, _MIN_POWER) / self.noise_fs)


def _blocks(x: NDArray[np.complexfloating], n: int) -> NDArray[np.float64]:
    m = x.size // n
    p = np.abs(x[: m * n].astype(np.complex128)) ** 2
    return p.reshape(m, n).mean(axis=1)


def longest_run(mask: NDArray[np.bool_]) -> tuple[int, int]:
    """(start, stop) of the longest run of True in ``mask`` (stop exclusive); (0, 0) if none."""
    best, start = (0, 0), None
    for i, v in enumerate([*mask.tolist(), False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def measure_burst(
    iq: NDArray[np.complexfloating], sample_rate_hz: float, online: NDArray[np.bool_], reference: int
) -> BurstPower | None:
    """Burst powers of every online receiver of one session; None when no burst is found.

    Parameters
    ----------
    iq
        Complex IQ, full-scale units, shape (R, T).
    sample_rate_hz
        Sample rate, Hz.
    online
        Receivers with data, shape (R,).
    reference
        The receiver whose envelope defines the burst length (a decoding one, the strongest).

    """
    n_rx = iq.shape[0]
    nb = max(1, round(BLOCK_S * sample_rate_hz))
    ref = _blocks(iq[reference], nb)
    floor = float(np.percentile(ref, _FLOOR_QUANTILE))
    b0, b1 = longest_run(ref > _ON_FACTOR * max(floor, _MIN_POWER))
    length = b1 - b0
    if length == 0 or length >= ref.size:
        return None
    max_shift = round(MAX_SHIFT_S / BLOCK_S)
    out = np.full((4, n_rx), np.nan)
    for r in np.flatnonzero(online):
        p = _blocks(iq[r], nb)
        lo, hi = max(0, b0 - max_shift), min(p.size - length, b0 + max_shift)
        csum = np.concatenate([[0.0], np.cumsum(p)])
        starts = np.arange(lo, hi + 1)
        s = int(starts[np.argmax(csum[starts + length] - csum[starts])])
        inside = p[s : s + length].mean()
        outside = np.concatenate([p[: max(0, s - 1)], p[s + length + 1 :]])
        noise = float(outside.mean()) if outside.size else float(np.percentile(p, _FLOOR_QUANTILE))
        noise = max(noise, _MIN_POWER)
        out[:, r] = (max(inside - noise, _MIN_POWER), noise, s * BLOCK_S, (s + length) * BLOCK_S)
    return BurstPower(out[0], out[1], out[2], out[3])
