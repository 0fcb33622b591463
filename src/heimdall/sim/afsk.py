"""Bell 202 AFSK on narrow-band FM, as analytic functions of time.

Bell 202 (the modem of 1200 Bd APRS, AX.25 over radio): mark 1200 Hz, space
2200 Hz, 1200 Bd, continuous audio phase across bit boundaries. Within bit k
(from t_k = t0 + k/baud) the audio is a(t) = cos(θ_k + 2π f_k (t − t_k)) with
θ_{k+1} = θ_k + 2π f_k / baud. The FM transmitter's phase is
φ(t) = 2π Δf ∫_{t0}^{t} a(τ) dτ (Δf the peak deviation, Hz), and the integral
has the closed form [sin θ(t) − sin θ_k] / (2π f_k) within bit k plus the sum
over completed bits, so φ is exact at any (fractional) time. Before the burst
the carrier is unmodulated (φ = 0); after it φ stays at its final value.
No pre-emphasis is applied (flat audio, as a TNC into a data port).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

MARK_HZ = 1200.0
SPACE_HZ = 2200.0
BAUD = 1200.0


@dataclass(frozen=True)
class AfskBurst:
    """A keyed AFSK burst: NRZI line levels (1 = mark, 0 = space) starting at ``t0_s``.

    Parameters
    ----------
    levels
        Tone per bit, 1 = mark (``mark_hz``), 0 = space (``space_hz``).
    t0_s
        Start of the first bit, s.
    audio_phase0
        Audio phase at ``t0_s``, rad.
    baud, mark_hz, space_hz
        Bit rate (Bd) and tone frequencies (Hz).

    """

    levels: NDArray[np.uint8]
    t0_s: float = 0.0
    audio_phase0: float = 0.0
    baud: float = BAUD
    mark_hz: float = MARK_HZ
    space_hz: float = SPACE_HZ
    _freq: NDArray[np.float64] = field(init=False, repr=False)
    _theta: NDArray[np.float64] = field(init=False, repr=False)
    _cum: NDArray[np.float64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        freq = np.where(np.asarray(self.levels) > 0, self.mark_hz, self.space_hz).astype(np.float64)
        theta = self.audio_phase0 + np.concatenate([[0.0], np.cumsum(2.0 * np.pi * freq / self.baud)])
        theta = np.mod(theta, 2.0 * np.pi)
        area = (np.sin(theta[1:]) - np.sin(theta[:-1])) / (2.0 * np.pi * freq)
        object.__setattr__(self, "_freq", freq)
        object.__setattr__(self, "_theta", theta)
        object.__setattr__(self, "_cum", np.concatenate([[0.0], np.cumsum(area)]))

    @property
    def n_bits(self) -> int:
        """Bits in the burst."""
        return int(self._freq.size)

    @property
    def duration_s(self) -> float:
        """Length of the burst, s."""
        return self.n_bits / self.baud

    @property
    def end_s(self) -> float:
        """End of the last bit, s."""
        return self.t0_s + self.duration_s

    def _locate(self, times_s: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        rel = np.asarray(times_s, dtype=np.float64) - self.t0_s
        k = np.clip(np.floor(rel * self.baud).astype(np.int64), 0, self.n_bits - 1)
        dt = np.clip(rel, 0.0, self.duration_s) - k / self.baud
        return k, dt

    def audio(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        """Audio a(t) in [-1, 1] at ``times_s`` (s); 0 outside the burst."""
        t = np.asarray(times_s, dtype=np.float64)
        k, dt = self._locate(t)
        a = np.cos(self._theta[k] + 2.0 * np.pi * self._freq[k] * dt)
        return np.where((t >= self.t0_s) & (t < self.end_s), a, 0.0)

    def audio_integral(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        """∫ a(τ) dτ from the burst start to ``times_s`` (s·1); constant outside the burst."""
        k, dt = self._locate(times_s)
        f = self._freq[k]
        inside = (np.sin(self._theta[k] + 2.0 * np.pi * f * dt) - np.sin(self._theta[k])) / (2.0 * np.pi * f)
        return self._cum[k] + inside

    def fm_phase(self, times_s: NDArray[np.float64], deviation_hz: float) -> NDArray[np.float64]:
        """FM carrier phase φ(t) = 2π Δf ∫ a (rad) for peak deviation ``deviation_hz`` (Hz)."""
        return 2.0 * np.pi * deviation_hz * self.audio_integral(times_s)

    def keyed(self, times_s: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Whether the transmitter is keyed (carrier on) at ``times_s``."""
        t = np.asarray(times_s, dtype=np.float64)
        return (t >= self.t0_s) & (t < self.end_s)
