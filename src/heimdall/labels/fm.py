"""FM discriminator: complex baseband IQ to audio a decoder can read.

The instantaneous frequency of x[n] is f[n] = fs / (2π) · arg(x[n] · conj(x[n−1]))
(the quadricorrelator / polar discriminator; Lyons, *Understanding Digital
Signal Processing*, 3rd ed., §13.22). Dividing by the peak deviation Δf gives
audio in [-1, 1] for a fully deviated signal; no de-emphasis is applied (APRS
AFSK is sent flat into a data port). Where no carrier is keyed the output is
noise up to ±fs/2; it is clipped at twice full deviation. The audio is then
resampled by a rational factor (polyphase, Kaiser-windowed anti-alias filter)
to a rate Dire Wolf's ``atest`` reads well (44100 or 22050 Hz).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly

#: Peak deviation of 2 m APRS (NBFM), Hz.
APRS_DEVIATION_HZ = 3000.0
#: Audio rate handed to the decoder, Hz.
AUDIO_RATE_HZ = 22050
_CLIP = 2.0


def fm_discriminate(
    iq: NDArray[np.complexfloating], sample_rate_hz: float, deviation_hz: float = APRS_DEVIATION_HZ
) -> NDArray[np.float64]:
    """Instantaneous frequency of ``iq`` over the peak deviation (1 = ``deviation_hz``), same length.

    The mean (a receiver's frequency error, Hz / Δf) is removed.
    """
    x = np.asarray(iq, dtype=np.complex128)
    if x.size < 2:
        return np.zeros(x.size)
    dphi = np.angle(x[1:] * np.conj(x[:-1]))
    freq = np.concatenate([[0.0], dphi]) * sample_rate_hz / (2.0 * np.pi * deviation_hz)
    freq -= np.median(freq)
    return np.clip(freq, -_CLIP, _CLIP)


def resample(audio: NDArray[np.floating], rate_in_hz: float, rate_out_hz: float) -> NDArray[np.float64]:
    """Resample ``audio`` from ``rate_in_hz`` to ``rate_out_hz`` (a rational ratio, polyphase)."""
    ratio = Fraction(rate_out_hz / rate_in_hz).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(audio, dtype=np.float64)
    return resample_poly(np.asarray(audio, dtype=np.float64), ratio.numerator, ratio.denominator)


def iq_to_audio(
    iq: NDArray[np.complexfloating],
    sample_rate_hz: float,
    audio_rate_hz: float = AUDIO_RATE_HZ,
    deviation_hz: float = APRS_DEVIATION_HZ,
) -> NDArray[np.float64]:
    """FM-demodulate ``iq`` (sampled at ``sample_rate_hz``, Hz) to audio at ``audio_rate_hz``.

    The audio band (< 3.4 kHz) must fit under half the IQ rate: any rate >= 12 kHz works.
    """
    return resample(fm_discriminate(iq, sample_rate_hz, deviation_hz), sample_rate_hz, audio_rate_hz)


def to_pcm16(audio: NDArray[np.floating], full_scale: float = _CLIP) -> NDArray[np.int16]:
    """Audio in units of full deviation to int16 PCM (``full_scale`` maps to 32767)."""
    return np.clip(np.round(np.asarray(audio) / full_scale * 32767.0), -32768, 32767).astype(np.int16)
