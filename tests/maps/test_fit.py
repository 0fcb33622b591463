"""The fit recovers planted fields; the prior far from labels; censored terms matter; update ≈ full fit."""

from __future__ import annotations

import numpy as np
import pytest
from tests.maps.conftest import planted_pathloss, smooth_field, synth

from heimdall.errors import HeimdallError
from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import common_field_var_db2, fit_radio_map
from heimdall.maps.kriging import FieldHyper, krige
from heimdall.maps.observations import LabelledObservations
from heimdall.sim.shadowing import GridSpec, bilinear, exponential_field


@pytest.mark.parametrize(("rho_km", "nugget"), [(0.0, 0.0), (5.0, 4.0), (30.0, 1.0)])
def test_krige_one_label_closed_form(rho_km: float, nugget: float) -> None:
    """One label z at distance h: mean = C(h) z / (σ² + n), variance = σ² − C(h)² / (σ² + n)."""
    hyper = FieldHyper(sigma_db=6.0, corr_km=10.0, nugget_db=1.0)
    z = 3.0
    mean, var = krige(np.zeros((1, 2)), np.array([z]), np.array([nugget]), np.array([[rho_km, 0.0]]), hyper)
    c = 36.0 * np.exp(-rho_km / 10.0)
    assert mean[0] == pytest.approx(c * z / (36.0 + nugget), rel=1e-9)
    assert var[0] == pytest.approx(36.0 - c * c / (36.0 + nugget), rel=1e-9, abs=1e-9)


def _rel_error(m, pos_km, truth_fn) -> np.ndarray:
    """Predicted − planted (path loss + field), minus its mean over receivers (the identifiable part)."""
    pred, _ = m.predict(pos_km)  # (R, M)
    rx = m.network.positions_km
    d = np.hypot(pos_km[None, :, 0] - rx[:, None, 0], pos_km[None, :, 1] - rx[:, None, 1])
    err = pred - (planted_pathloss(d) + truth_fn(pos_km, len(rx)).T)
    return err - err.mean(axis=0)


@pytest.mark.slow
def test_recovers_planted_field_where_labels_are_dense(network) -> None:
    rng = np.random.default_rng(1)
    pos = np.column_stack([rng.uniform(-40, 20, 1500), rng.uniform(-30, 30, 1500)])  # dense: ~0.4 labels/km²
    obs, _ = synth(network, pos, smooth_field, rng)
    m = fit_radio_map(obs, network, MapsConfig(holdout_fraction=0.0))
    inner = m.grid.points_km
    inner = inner[(inner[:, 0] > -30) & (inner[:, 0] < 10) & (inner[:, 1] > -20) & (inner[:, 1] < 20)]
    err = _rel_error(m, inner, smooth_field)
    assert np.sqrt(np.mean(err**2)) < 0.5, np.sqrt(np.mean(err**2))
    assert np.quantile(np.abs(err), 0.95) < 0.5


@pytest.mark.slow
def test_estimates_hyper_parameters_and_returns_to_prior_far_away(network) -> None:
    """Exponential fields (σ 8 dB, ℓ 10 km), clustered labels: σ, ℓ estimated; the prior far away."""
    rng = np.random.default_rng(4)
    spec = GridSpec(-110.0, -100.0, 0.5, 440, 400)
    fields = exponential_field(spec, 8.0, 10.0, rng, len(network.receivers))
    pos = np.column_stack([rng.uniform(-100, -40, 1500), rng.uniform(-90, -30, 1500)])

    def field(p, r):
        return bilinear(spec, fields, p[:, 0], p[:, 1]).T

    obs, _ = synth(network, pos, field, rng, noise_db=1.0)
    m = fit_radio_map(obs, network, MapsConfig(holdout_fraction=0.0))
    assert m.hyper.sigma_db == pytest.approx(8.0, rel=0.25)
    assert m.hyper.corr_km == pytest.approx(10.0, rel=0.4)
    pts = m.grid.points_km
    dist = np.min(np.hypot(pts[:, None, 0] - pos[None, :, 0], pts[:, None, 1] - pos[None, :, 1]), axis=1)
    far = (dist > m.config.max_corr_multiple * m.hyper.corr_km).reshape(m.grid.shape)
    assert far.sum() > 1000
    assert np.abs(m.field_db[:, :, far]).max() == 0.0
    np.testing.assert_allclose(m.field_var_db2[:, :, far], m.hyper.sigma_db**2, rtol=1e-5)
    near = (dist < 1.0).reshape(m.grid.shape)
    assert m.field_var_db2[0][:, near].mean() < 0.2 * m.hyper.sigma_db**2
    # the common field the labels' powers absorbed: the receivers' mean field at each label (each
    # receiver's mean over the labels goes to its intercept), plus the noise's 1 / R share
    planted = field(pos, len(network.receivers))
    common = np.mean(planted - planted.mean(axis=0), axis=1)
    want = np.var(common) + 1.0 / len(network.receivers)
    assert m.hyper.common_var_db2 == pytest.approx(want, rel=0.3), (m.hyper.common_var_db2, want)


@pytest.mark.slow
def test_censored_fit_is_unbiased_where_ignoring_silent_is_not(network) -> None:
    """Receiver 0 goes silent far away: dropping its silent labels biases its far map upwards."""
    rng = np.random.default_rng(2)
    pos = np.column_stack([rng.uniform(-100, 100, 1200), rng.uniform(-90, 85, 1200)])
    rx0 = network.positions_km[0]
    d0 = np.hypot(*(pos - rx0).T)
    # threshold: silent beyond ~60 km for a 37 dBm transmitter; others always heard
    thr = np.full(len(network.receivers), -np.inf)
    thr[0] = 37.0 + planted_pathloss(np.array(60.0))

    def zero(p, r):
        return np.zeros((len(p), r))

    obs, _ = synth(network, pos, zero, rng, noise_db=3.0, threshold_db=thr)
    silent_frac = np.mean(obs.state[d0 > 70, 0] == 2)
    assert silent_frac > 0.5
    biases = {}
    for censored in (True, False):
        cfg = MapsConfig(holdout_fraction=0.0, censored=censored, iterations=10)
        m = fit_radio_map(obs, network, cfg)
        pts = m.grid.points_km
        dg = np.hypot(*(pts - rx0).T)
        sel = (dg > 75) & (dg < 110)
        err = _rel_error(m, pts[sel], zero)
        biases[censored] = float(np.mean(err[0]))
    assert biases[False] > 1.2, biases  # ignoring silent receivers: measurably too strong far away
    assert abs(biases[True]) < 0.5, biases


@pytest.mark.slow
def test_update_equals_full_fit(network) -> None:
    rng = np.random.default_rng(3)
    pos = np.column_stack([rng.uniform(-100, 100, 1000), rng.uniform(-90, 85, 1000)])
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=2.0)
    cfg = MapsConfig(holdout_fraction=0.1)
    first = fit_radio_map(obs.select(slice(0, 500)), network, cfg)
    updated = fit_radio_map(obs.select(slice(500, None)), network, cfg, previous=first)
    full = fit_radio_map(obs, network, cfg)
    assert updated.n_labels == full.n_labels
    np.testing.assert_array_equal(np.sort(updated.train.session_id), np.sort(full.train.session_id))
    a, _ = updated.predict(full.grid.points_km)
    b, _ = full.predict(full.grid.points_km)
    diff = (a - a.mean(axis=0)) - (b - b.mean(axis=0))
    assert np.sqrt(np.mean(diff**2)) < 0.25, np.sqrt(np.mean(diff**2))
    assert np.abs(diff).max() < 1.5
    assert updated.hyper.sigma_db == pytest.approx(full.hyper.sigma_db, rel=0.05)
    assert isinstance(updated.train, LabelledObservations)


@pytest.mark.parametrize("common_db", [0.0, 3.0])
def test_common_field_variance_closed_form(common_db: float) -> None:
    """P uniform over 27–47 dBm plus a common part N(0, c²): Var P̂ − 20²/12 recovers c² (sd ≈ 0.4 dB²)."""
    rng = np.random.default_rng(11)
    power = rng.uniform(27.0, 47.0, 20_000) + common_db * rng.standard_normal(20_000)
    got = common_field_var_db2(power, (27.0, 47.0))
    assert got >= 0.0
    assert got == pytest.approx(common_db**2, abs=1.5)


def test_common_field_is_what_unknown_powers_absorb(network) -> None:
    """A field part shared by every receiver (4 dB sine, variance 8 dB²) is absorbed by the unknown
    powers and measured as the common variance; with the true powers (gp_oracle) nothing is absorbed."""
    rng = np.random.default_rng(6)
    pos = np.column_stack([rng.uniform(-100, 100, 600), rng.uniform(-90, 85, 600)])

    def field(p, r):
        return smooth_field(p, r) + 4.0 * np.sin(2 * np.pi * p[:, :1] / 50.0)

    obs, power = synth(network, pos, field, rng, noise_db=1.0)
    cfg = MapsConfig(iterations=2, holdout_fraction=0.0)
    assert fit_radio_map(obs, network, cfg, known_power_dbm=power).hyper.common_var_db2 == 0.0
    planted = field(pos, len(network.receivers))
    want = np.var(np.mean(planted - planted.mean(axis=0), axis=1)) + 1.0 / len(network.receivers)
    got = fit_radio_map(obs, network, cfg).hyper.common_var_db2
    assert got == pytest.approx(want, abs=3.0), (got, want)  # the sample variance of 600 powers: sd 1.4 dB²


def test_update_refuses_another_detection_threshold(network) -> None:
    """The previous map's labels were measured with its threshold: an update with another one is refused."""
    rng = np.random.default_rng(5)
    pos = np.column_stack([rng.uniform(-100, 100, 80), rng.uniform(-90, 85, 80)])
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=2.0)
    first = fit_radio_map(obs.select(slice(0, 40)), network, MapsConfig(iterations=2))
    with pytest.raises(HeimdallError, match="detection_snr_db -5 dB differs from the previous map's 0 dB"):
        fit_radio_map(obs.select(slice(40, None)), network, MapsConfig(detection_snr_db=-5.0), previous=first)


def test_labels_no_receiver_heard_are_left_out_and_counted(network) -> None:
    """A labelled session nobody heard has no power to fit from: left out of the fit, not silently."""
    from heimdall.maps.observations import SILENT

    rng = np.random.default_rng(6)
    pos = np.column_stack([rng.uniform(-100, 100, 80), rng.uniform(-90, 85, 80)])
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=2.0)
    obs.state[:7] = SILENT
    m = fit_radio_map(obs, network, MapsConfig(holdout_fraction=0.0, iterations=2))
    assert m.metrics["n_unheard_labels"] == 7 and m.metrics["n_labels"] == 73
