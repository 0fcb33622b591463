"""The per-capture noise of received power, characterised from the simulator's own definitions.

Measured power (dB) = median power + static shadowing + gain offset
+ per-capture shadowing + fast-fading scatter + measurement error. The
fast-fading scatter is 10 log10 of the capture-averaged |h(t)|² of the
simulator's Rician / Jakes process (:mod:`heimdall.sim.fading`); its mean and
standard deviation are measured by drawing that process (seeded), not
guessed; the draw is the evaluation-noise stream
(:func:`heimdall.sim.seeds.generator` with ``Stream.EVAL_NOISE``), so it never
shares random numbers with a world, a stored set or training. The measurement
error of :func:`heimdall.posterior.measure.measure_power` is a few hundredths
of a dB above 10 dB SNR and ~0.2 dB near the detection threshold
(tests/posterior/test_measure.py): a floor ``MEASUREMENT_SIGMA_DB``
keeps likelihoods finite when every other term is zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from heimdall.sim.fading import interpolate_gain, rician_gain
from heimdall.sim.seeds import Stream, generator
from heimdall.sim.world import WorldConfig

#: Standard deviation of the IQ power measurement, dB (floor of every σ).
MEASUREMENT_SIGMA_DB = 0.15


@dataclass(frozen=True)
class FadingScatter:
    """Capture-averaged fast-fading power in dB: mean and standard deviation."""

    mean_db: float
    sigma_db: float


@lru_cache(maxsize=16)
def _fading_scatter(
    k_db: float,
    doppler_hz: float,
    rate_hz: float,
    duration_s: float,
    sample_rate_hz: float,
    n: int,
    seed: int,
) -> FadingScatter:
    rng = generator(Stream.EVAL_NOISE, seed)
    n_t = round(duration_s * sample_rate_hz)
    # time average of |h|² over the capture; every 8th sample is plenty (fading is < 100 Hz)
    sample_t = np.arange(0, n_t, 8) / sample_rate_hz
    powers = []
    for start in range(0, n, 500):
        gains, _ = rician_gain(rng, min(500, n - start), duration_s, rate_hz, k_db, doppler_hz)
        fade = interpolate_gain(gains, rate_hz, sample_t)
        powers.append(np.mean(fade.real.astype(np.float64) ** 2 + fade.imag.astype(np.float64) ** 2, axis=-1))
    db = 10.0 * np.log10(np.concatenate(powers))
    return FadingScatter(float(db.mean()), float(db.std()))


def fading_scatter(config: WorldConfig, sample_rate_hz: float, n: int = 4000, seed: int = 0) -> FadingScatter:
    """Mean and σ (dB) of 10 log10(capture-averaged fading power) in this world.

    Parameters
    ----------
    config
        World parameters (Rician K in dB, Doppler in Hz, capture length in s).
    sample_rate_hz
        Capture sample rate, samples/s.
    n
        Number of simulated captures.
    seed
        Key of the draw in the evaluation-noise stream (``Stream.EVAL_NOISE``), ≥ 0.

    """
    return _fading_scatter(
        float(config.rician_k_db), float(config.doppler_hz), float(config.fading_rate_hz),
        float(config.duration_s), float(sample_rate_hz), int(n), int(seed),
    )  # fmt: skip


def capture_sigma_db(config: WorldConfig, sample_rate_hz: float) -> float:
    """σ (dB) of the per-capture randomness only: capture shadowing, fading scatter, measurement."""
    fade = fading_scatter(config, sample_rate_hz)
    return float(np.sqrt(config.capture_shadowing_sigma_db**2 + fade.sigma_db**2 + MEASUREMENT_SIGMA_DB**2))


def total_sigma_db(config: WorldConfig, sample_rate_hz: float) -> float:
    """σ (dB) of every random term folded together (classical RSS model, CRLB).

    σ² = static² + gain² + capture² + fading² + measurement².
    """
    return float(
        np.sqrt(
            config.static_shadowing_sigma_db**2
            + config.gain_offset_sigma_db**2
            + capture_sigma_db(config, sample_rate_hz) ** 2
        )
    )
