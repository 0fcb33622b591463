"""Propagation: free space, horizon, two-slope median loss, noise power (closed forms)."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.sim.propagation import (
    free_space_loss_db,
    median_path_loss_db,
    noise_power_dbm,
    path_loss_exponent,
    radio_horizon_km,
)


def test_free_space_loss_100km_145mhz() -> None:
    """Friis: 20 log10(4 pi d f / c) = 115.68 dB at 100 km, 145 MHz (docs/ARCHITECTURE.md §3)."""
    independent = 20 * np.log10(4 * np.pi * 100e3 * 145e6 / 299_792_458.0)
    assert abs(float(free_space_loss_db(100.0, 145.0)) - 115.7) <= 0.1
    assert abs(float(free_space_loss_db(100.0, 145.0)) - independent) < 0.01


def test_radio_horizon_closed_form() -> None:
    """4/3 earth: d = 4.12 (sqrt(ht) + sqrt(hr)) km (docs/ARCHITECTURE.md §3)."""
    assert abs(float(radio_horizon_km(9.0, 100.0)) - 4.12 * 13.0) < 0.05


@pytest.mark.parametrize("n_far", [3.0, 4.0, 4.5])
def test_two_slope_loss(n_far: float) -> None:
    ht, hr, f = 5.0, 100.0, 145.0
    d_b = float(radio_horizon_km(ht, hr))
    near = np.array([0.3 * d_b, 0.9 * d_b])
    far = np.array([1.2 * d_b, 3.0 * d_b])
    loss_near = median_path_loss_db(near, f, ht, hr, 2.0, n_far)
    loss_far = median_path_loss_db(far, f, ht, hr, 2.0, n_far)
    # free space up to the horizon
    np.testing.assert_allclose(loss_near, free_space_loss_db(near, f), atol=1e-9)
    # slope n_far beyond it, continuous at the breakpoint
    slope = (loss_far[1] - loss_far[0]) / (10 * np.log10(far[1] / far[0]))
    assert abs(slope - n_far) < 1e-9
    just_below = median_path_loss_db(d_b * (1 - 1e-9), f, ht, hr, 2.0, n_far)
    just_above = median_path_loss_db(d_b * (1 + 1e-9), f, ht, hr, 2.0, n_far)
    assert abs(float(just_above - just_below)) < 1e-6
    assert (path_loss_exponent(far, ht, hr, 2.0, n_far) == n_far).all()


def test_band_dependence() -> None:
    """70 cm loses 20 log10(435/145) = 9.54 dB more than 2 m at any distance."""
    diff = median_path_loss_db(80.0, 435.0, 5.0, 50.0) - median_path_loss_db(80.0, 145.0, 5.0, 50.0)
    assert abs(float(diff) - 20 * np.log10(3.0)) < 1e-9


def test_noise_power() -> None:
    """kTB: -174 dBm/Hz + 10 log10(12 kHz) = -133.2 dBm; an antenna at T0 (Fa = 0 dB) gives F = NF."""
    quiet = noise_power_dbm(12_000.0, 6.0, 145.0, manmade_c_db=0.0, manmade_d_db=0.0)
    assert abs(float(quiet) - (-174 + 10 * np.log10(12_000) + 6.0)) < 1e-6
    # ITU-R P.372 rural at 145 MHz: Fa = 67.2 - 27.7 log10(145) = 7.33 dB; f = fa + frx - 1
    fa = 10 ** ((67.2 - 27.7 * np.log10(145.0)) / 10)
    expected = -174 + 10 * np.log10(12_000) + 10 * np.log10(fa + 10**0.6 - 1)
    assert abs(float(noise_power_dbm(12_000.0, 6.0, 145.0, 67.2, 27.7)) - expected) < 1e-9
