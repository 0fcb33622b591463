"""Transmitted waveforms as analytic phase functions of time (unit power).

Every mode is a constant-envelope complex baseband signal s(t) = exp(j φ(t)),
evaluated at any times, so propagation delays are applied exactly (a
fractional delay is just evaluation at t - τ):

- ``cw``: an unmodulated carrier, φ(t) = φ0;
- ``nbfm``: FM by a voice-like sum of tones m(t) = Σ a_k cos(2π f_k t + θ_k)
  with Σ a_k = 1 and peak deviation Δf: φ(t) = Δf Σ a_k sin(2π f_k t + θ_k) / f_k;
- ``fsk``: Gaussian-filtered continuous-phase binary FSK (GMSK-like, as
  D-STAR) at ``baud`` symbols/s, ±Δf. Each bit's rectangular frequency pulse
  is smoothed by a Gaussian of time spread σ = sqrt(ln 2) / (2π BT) · T_s
  (Murota & Hirade, IEEE Trans. Commun. 1981), so the signal is effectively
  band-limited and sampling it at a fractional delay does not alias. The
  phase of bit m is 2πΔf [Ψ(t − mT) − Ψ(t − (m+1)T)] with
  Ψ(x) = x Φ(x/σ) + σ φ(x/σ), the integral of the smoothed step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

NBFM_TONES = 3
GMSK_SPAN = 3  # symbols each side whose smoothed pulse is still changing (> 11 sigma at BT 0.5)


@dataclass(frozen=True)
class Waveform:
    """One transmission's modulation and its random parameters."""

    mode: str
    phase0: float
    tone_hz: NDArray[np.float64]
    tone_amp: NDArray[np.float64]
    tone_phase: NDArray[np.float64]
    deviation_hz: float
    baud: float
    bits: NDArray[np.float64]
    t_origin_s: float
    bt: float = 0.5

    def phase(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        """Instantaneous phase φ(t) in rad at ``times_s`` (s, any shape), float64."""
        if self.mode == "cw":
            return np.full_like(times_s, self.phase0, dtype=np.float64)
        if self.mode == "nbfm":
            acc = np.zeros_like(times_s, dtype=np.float64)
            for f, a, th in zip(self.tone_hz, self.tone_amp, self.tone_phase, strict=True):
                acc += (a / f) * np.sin(2.0 * np.pi * f * times_s + th)
            return self.phase0 + self.deviation_hz * acc
        if self.mode == "fsk":
            return self.phase0 + self._gmsk_phase(times_s)
        raise ValueError(f"unknown mode {self.mode!r}")

    def _gmsk_phase(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        sym_s = 1.0 / self.baud
        sigma = sym_s * np.sqrt(np.log(2.0)) / (2.0 * np.pi * self.bt)
        rel = np.asarray(times_s, dtype=np.float64) - self.t_origin_s
        m0 = np.floor(rel / sym_s).astype(np.int64)
        n_bits = self.bits.size
        cum = np.concatenate([[0.0], np.cumsum(self.bits)])  # cum[j] = sum of bits before j

        def psi(x: NDArray[np.float64]) -> NDArray[np.float64]:
            z = x / sigma
            return x * ndtr(z) + sigma * np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)

        first = m0 - GMSK_SPAN
        total = sym_s * cum[np.clip(first, 0, n_bits)]
        psi_prev = psi(rel - first * sym_s)
        for k in range(-GMSK_SPAN, GMSK_SPAN + 1):
            m = m0 + k
            psi_next = psi(rel - (m + 1) * sym_s)
            bit = np.where((m >= 0) & (m < n_bits), self.bits[np.clip(m, 0, n_bits - 1)], 0.0)
            total += bit * (psi_prev - psi_next)
            psi_prev = psi_next
        return 2.0 * np.pi * self.deviation_hz * total


def draw_waveform(
    rng: np.random.Generator,
    mode: str,
    t_min_s: float,
    t_max_s: float,
    nbfm_deviation_hz: float,
    nbfm_audio_hz: tuple[float, float],
    fsk_baud: float,
    fsk_deviation_hz: float,
    fsk_bt: float = 0.5,
) -> Waveform:
    """Draw a waveform's random parameters covering times [t_min_s, t_max_s] (s).

    The same number of draws is made whatever the mode, so the stream of
    random numbers that follows does not depend on the mode.
    """
    phase0 = float(rng.uniform(0.0, 2.0 * np.pi))
    tone_hz = rng.uniform(nbfm_audio_hz[0], nbfm_audio_hz[1], size=NBFM_TONES)
    tone_amp = rng.dirichlet(np.ones(NBFM_TONES))
    tone_phase = rng.uniform(0.0, 2.0 * np.pi, size=NBFM_TONES)
    n_bits = int(np.ceil((t_max_s - t_min_s) * fsk_baud)) + 2 * GMSK_SPAN + 2
    bits = rng.integers(0, 2, size=n_bits).astype(np.float64) * 2.0 - 1.0
    deviation = nbfm_deviation_hz if mode == "nbfm" else fsk_deviation_hz
    return Waveform(
        mode=mode,
        phase0=phase0,
        tone_hz=tone_hz,
        tone_amp=tone_amp,
        tone_phase=tone_phase,
        deviation_hz=float(deviation),
        baud=float(fsk_baud),
        bits=bits,
        t_origin_s=float(t_min_s) - GMSK_SPAN / fsk_baud,
        bt=float(fsk_bt),
    )
