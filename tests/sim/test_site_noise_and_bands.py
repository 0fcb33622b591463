"""Site noise, noise wander and per-band gains and fields (the reference world's hidden truth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heimdall.data.session import HEARD
from heimdall.network import load_network
from heimdall.posterior.measure import measure_power
from heimdall.sim import World, load_world
from heimdall.sim.simulator import band_of
from heimdall.sim.world import WorldConfig

NET = load_network("nw-italy")
REF = load_world()
SHORT = REF.with_overrides(duration_s=0.1, tx_power_dbm_min=40.0)


def _snr_residual_db(cfg: WorldConfig, seeds: range) -> np.ndarray:
    """True rx power − (SNR measured from the IQ + nominal noise power), strong unclipped slots."""
    out = []
    for seed in seeds:
        w = World(NET, cfg, seed)
        b = w.simulate(12, session_seed=5)
        m = measure_power(b)
        nominal = np.stack([w.nominal_noise_dbm(f / 1e6) for f in b.center_freq_hz])
        ok = (b.rx_state == HEARD) & ~b.rx_clipped & (b.rx_snr_db >= 10.0)
        out.append((b.rx_power_dbm - (m.snr_db + nominal))[ok])
    return np.concatenate(out)


@pytest.mark.slow
def test_snr_no_longer_reveals_received_power() -> None:
    """With site noise on, SNR + nominal noise misses the true power by the site spread
    (σ_site = 4 dB, plus 1 dB wander: ≥ 0.8 σ_site over 28 receivers); with it off, only the
    IQ measurement error remains (≈ 0.1 dB at SNR ≥ 10 dB). Carriers, so the noise floor
    is measured from clean bins as the estimators do."""
    cw = SHORT.with_overrides(duration_s=0.25, mode_probs={"cw": 1.0})  # a carrier: a clean noise floor
    on = _snr_residual_db(cw, range(4))
    off = _snr_residual_db(cw.with_overrides(site_noise_sigma_db=0.0, noise_wander_sigma_db=0.0), range(4))
    assert on.size > 100 and off.size > 100
    assert np.std(on) >= 0.8 * REF.site_noise_sigma_db
    assert np.std(off) < 0.3 and abs(np.mean(off)) < 0.2


def test_recorded_noise_is_site_offset_plus_wander() -> None:
    """rx_power − rx_snr = nominal noise + the site's offset + a capture wander of σ 1 dB."""
    w = World(NET, SHORT, 2)
    b = w.simulate(40, session_seed=3)
    nominal = np.stack([w.nominal_noise_dbm(f / 1e6) for f in b.center_freq_hz])
    wander = (b.rx_power_dbm - b.rx_snr_db) - nominal - w.noise_offset_db
    assert abs(np.std(wander) - REF.noise_wander_sigma_db) < 0.15  # 280 draws: std err ≈ 0.04
    assert abs(np.mean(wander)) < 0.2
    np.testing.assert_allclose(w.noise_dbm(145.0), w.nominal_noise_dbm(145.0) + w.noise_offset_db)


def _pooled(seeds: range):
    g2, g70, f2, f70 = [], [], [], []
    coarse = REF.with_overrides(static_field_resolution_km=2.0)  # exact on any grid; 16x cheaper
    for seed in seeds:
        w = World(NET, coarse, seed)
        g2.append(w.gain_offset_db_for("2m"))
        g70.append(w.gain_offset_db_for("70cm"))
        # field points 20 km apart (nearly independent samples)
        idx = np.s_[:, ::10, ::10]
        f2.append(w.static_fields_for("2m")[idx].ravel())
        f70.append(w.static_fields_for("70cm")[idx].ravel())
    return (np.concatenate(x) for x in (g2, g70, f2, f70))


@pytest.mark.slow
def test_bands_are_correlated_by_the_documented_coefficients() -> None:
    """Across 30 worlds: gain σ 4 dB in both bands, correlation 0.5; field σ 8 dB, correlation 0.7.

    210 gains: std error of a correlation ≈ (1 − ρ²)/√n ≈ 0.05; fields: ~2,000 nearly
    independent points, ≈ 0.02 (tolerances 3×).
    """
    g2, g70, f2, f70 = _pooled(range(30))
    assert np.corrcoef(g2, g70)[0, 1] == pytest.approx(REF.band_gain_correlation, abs=0.15)
    assert np.std(g70) == pytest.approx(REF.gain_offset_sigma_db, rel=0.15)
    assert np.corrcoef(f2, f70)[0, 1] == pytest.approx(REF.band_field_correlation, abs=0.07)
    assert np.std(f70) == pytest.approx(REF.static_shadowing_sigma_db, rel=0.1)
    # exact construction: the innovation (x70 − ρ x2) is uncorrelated with x2
    rho = REF.band_field_correlation
    assert abs(np.corrcoef(f2, f70 - rho * f2)[0, 1]) < 0.07


def test_simulator_uses_the_session_band() -> None:
    """A 70 cm session's IQ level follows the 70 cm gain (the mean |x|² at full scale)."""
    cfg = SHORT.with_overrides(band_2m_prob=0.0, mode_probs={"cw": 1.0})
    w = World(NET, cfg, 1)
    b = w.simulate(6, session_seed=2)
    assert {band_of(f) for f in b.center_freq_hz} == {"70cm"}
    x = b.iq_complex().astype(np.complex128)
    measured = 10 * np.log10(np.mean(np.abs(x) ** 2, axis=-1) + 1e-30)
    noise = b.rx_power_dbm - b.rx_snr_db
    total = 10 * np.log10(10 ** (b.rx_power_dbm / 10) + 10 ** (noise / 10))
    ok = (b.rx_state != 0) & ~b.rx_clipped
    err70 = measured - (total + w.gain_offset_db_for("70cm") - b.rx_fullscale_dbm)
    err2 = measured - (total + w.gain_offset_db_for("2m") - b.rx_fullscale_dbm)
    assert np.max(np.abs(err70[ok])) < 0.5
    assert np.max(np.abs(err2[ok])) > 1.0  # the 2 m gain would not explain the level
    pts = (np.array([0.0, 20.0]), np.array([0.0, -10.0]))
    np.testing.assert_array_equal(w.static_shadowing_db(*pts), w.static_shadowing_db(*pts, band="2m"))
    assert not np.allclose(w.static_shadowing_db(*pts), w.static_shadowing_db(*pts, band="70cm"))


def test_network_file_values_override_the_draws(tmp_path) -> None:
    text = NET.to_yaml().replace("noise_offset_db: null", "noise_offset_db: 3.5", 1)
    text = text.replace("gain_offset_db: null", "gain_offset_db: -2.0", 1)
    path = tmp_path / "n.yaml"
    path.write_text(text)
    w = World(load_network(path), REF, 0)
    assert w.noise_offset_db[0] == 3.5
    assert w.gain_offset_db_for("2m")[0] == -2.0 and w.gain_offset_db_for("70cm")[0] == -2.0


def test_one_field_world_file_shares_everything_across_bands() -> None:
    """configs/world-one-field.yaml (the physics before per-band fields and site noise): the
    2 m and 70 cm gains and fields are the same numbers, the noise floor is the nominal one,
    and every other parameter is the reference world's."""
    path = Path(__file__).parents[2] / "configs" / "world-one-field.yaml"
    cfg = load_world(path)
    changed = {k for k in WorldConfig.model_fields if getattr(cfg, k) != getattr(REF, k)}
    assert changed == {"band_gain_correlation", "band_field_correlation", "site_noise_sigma_db",
                       "noise_wander_sigma_db"}  # fmt: skip
    w = World(NET, cfg.with_overrides(static_field_resolution_km=2.0), 4)
    np.testing.assert_allclose(w.gain_offset_db_for("70cm"), w.gain_offset_db_for("2m"), atol=1e-9)
    np.testing.assert_allclose(w.static_fields_for("70cm"), w.static_fields_for("2m"), atol=1e-5)
    np.testing.assert_allclose(w.noise_dbm(435.0), w.nominal_noise_dbm(435.0), atol=1e-9)
