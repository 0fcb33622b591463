"""A pretrained law's shape with fitted intercepts, and the intercepts' error in the map variance."""

from __future__ import annotations

import numpy as np
import pytest
from tests.maps.conftest import smooth_field, synth

from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import fit_radio_map, power_dof_factor
from heimdall.maps.kriging import FieldHyper, krige, mean_variance, trend_variance
from heimdall.maps.observations import HEARD, SILENT
from heimdall.maps.pathloss import (
    design,
    fit_intercepts,
    height_averaged_gain_db,
    prior_gain_db,
    prior_shape_coefficients,
)

KNOTS = (10.0, 20.0, 40.0, 80.0)
HYPER = FieldHyper(sigma_db=6.0, corr_km=10.0, nugget_db=2.0)


def test_fit_intercepts_recovers_planted_levels_and_keeps_the_shape() -> None:
    """Noise-free targets of a known shape and intercepts: the 2 m and 70 cm levels come back exactly."""
    rng = np.random.default_rng(0)
    d = rng.uniform(2.0, 150.0, 400)
    band = (rng.random(400) < 0.4).astype(np.int8)
    x = design(d, KNOTS, band)
    truth = np.array([-40.0, 2.5, 0.8, 0.3, -0.2, 0.5, -6.0])  # intercept, exponents, 70 cm change
    start = truth.copy()
    start[[0, -1]] = [0.0, 0.0]
    fitted = fit_intercepts(x, x @ truth, start)
    assert fitted[0] == pytest.approx(-40.0, abs=1e-4)
    assert fitted[-1] == pytest.approx(-6.0, abs=1e-3)  # a 1e-3 ridge on the band change
    np.testing.assert_array_equal(fitted[1:-1], truth[1:-1])


def test_height_average_is_the_uniform_mean_over_heights() -> None:
    """The quadrature average equals a fine midpoint average over the uniform height law (0.05 dB)."""
    d = np.geomspace(1.0, 300.0, 60)
    rx_h = np.float64(25.0)
    got = height_averaged_gain_db(d, (1.5, 10.0), rx_h, (2.0, 4.0), 15.0)
    edges = np.linspace(1.5, 10.0, 4001)
    heights = 0.5 * (edges[1:] + edges[:-1])
    fine = np.mean([prior_gain_db(d, float(h), rx_h, (2.0, 4.0), 15.0) for h in heights], axis=0)
    assert np.max(np.abs(got - fine)) < 0.05


def test_prior_shape_coefficients_follow_the_prior_law() -> None:
    """The projected law stays within 1.5 dB of the height-averaged law from 2 to 300 km."""
    heights = np.array([10.0, 40.0])
    coef = prior_shape_coefficients(heights, KNOTS, (1.5, 10.0), (2.0, 4.0), 15.0)
    d = np.geomspace(2.0, 300.0, 80)
    for i, h in enumerate(heights):
        law = height_averaged_gain_db(d, (1.5, 10.0), np.float64(h), (2.0, 4.0), 15.0)
        assert np.max(np.abs(design(d, KNOTS) @ coef[i] - law)) < 1.5


def _dense_mean_variance(pos: np.ndarray, nugget: np.ndarray, hyper: FieldHyper) -> float:
    """1ᵀ K 1 / n² with K = C(h) + diag(nugget), written out independently."""
    h = np.hypot(pos[:, None, 0] - pos[None, :, 0], pos[:, None, 1] - pos[None, :, 1])
    k = hyper.sigma_db**2 * np.exp(-h / hyper.corr_km) + np.diag(nugget)
    return float(k.sum() / len(pos) ** 2)


def test_mean_variance_closed_form_and_sampled_pairs() -> None:
    """Two labels: (2 C(h) + 2σ² + n1 + n2) / 4; many labels: random pairs agree with the dense sum (3 %)."""
    rng = np.random.default_rng(1)
    two = np.array([[0.0, 0.0], [7.0, 0.0]])
    expected = (2 * 36.0 * np.exp(-0.7) + 2 * 36.0 + 1.0 + 3.0) / 4.0
    assert mean_variance(two, np.array([1.0, 3.0]), HYPER, rng) == pytest.approx(expected, rel=1e-12)
    towns = rng.uniform(-60, 60, (5, 2))
    pos = towns[rng.integers(0, 5, 1500)] + rng.normal(0.0, 2.0, (1500, 2))
    nug = np.full(1500, 4.0)
    dense = _dense_mean_variance(pos, nug, HYPER)
    sampled = mean_variance(pos, nug, HYPER, rng, pairs=20_000)
    assert sampled == pytest.approx(dense, rel=0.03)
    # clustered labels pin the level far worse than their number suggests
    assert dense > 10 * (36.0 + 4.0) / 1500


def test_trend_variance_vanishes_on_a_label_and_is_whole_far_away() -> None:
    """Weight sums: 1 on a noise-free label (nothing added), 0 beyond every label (the whole variance)."""
    labels = np.array([[0.0, 0.0], [3.0, 0.0]])
    queries = np.array([[0.0, 0.0], [500.0, 0.0]])
    _, var, wsum = krige(labels, np.array([1.0, -1.0]), np.array([0.0, 0.0]), queries, HYPER,
                         with_weight_sums=True)  # fmt: skip
    np.testing.assert_allclose(wsum[0], [1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(wsum[1], [0.0, 0.0], atol=0.0)
    extra = trend_variance(wsum, 5.0, 7.0)
    assert extra[0] == pytest.approx(0.0, abs=1e-9) and extra[1] == pytest.approx(5.0)
    assert var[1] == pytest.approx(36.0)
    # labels of the other band only: their weights leak the other band's level
    _, _, w2 = krige(labels, np.array([1.0, -1.0]), np.array([0.0, 0.0]), queries[:1],
                     FieldHyper(6.0, 10.0, 2.0, band_corr=0.5), train_band=np.array([0, 0], np.int8),
                     query_band=1, with_weight_sums=True)  # fmt: skip
    assert w2[0, 0] == 0.0 and w2[0, 1] > 0.4


@pytest.mark.slow
def test_far_from_clustered_labels_the_map_adds_the_level_error(network) -> None:
    """pathloss_shape prior: far from every label the variance is σ̂² + Var(mean of the labels' residuals)."""
    rng = np.random.default_rng(2)
    centre = np.array([[-20.0, 0.0], [10.0, 15.0]])
    pos = centre[rng.integers(0, 2, 400)] + rng.normal(0.0, 3.0, (400, 2))
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=2.0)
    cfg = MapsConfig(pathloss_shape="prior", holdout_fraction=0.0, outlier_p_value=0.0)
    m = fit_radio_map(obs, network, cfg, hyper=HYPER)  # statistics fixed: ℓ = 10 km
    h = m.hyper
    far = np.min(np.hypot(*(m.grid.points_km[:, None, :] - pos[None, :, :]).transpose(2, 0, 1)), axis=1)
    far = far > cfg.max_corr_multiple * h.corr_km + 1.0
    assert far.sum() > 100
    level = _dense_mean_variance(pos, np.full(len(pos), h.nugget_db**2), h)
    got = m.field_var_db2[0].reshape(len(network.receivers), -1)[:, far]
    np.testing.assert_allclose(got, h.sigma_db**2 + level, rtol=1e-4)
    plain = fit_radio_map(obs, network, cfg.model_copy(update={"pathloss_shape": "fitted"}), hyper=HYPER)
    np.testing.assert_allclose(
        plain.field_var_db2[0].reshape(len(network.receivers), -1)[:, far], plain.hyper.sigma_db**2, rtol=1e-6
    )


def test_power_dof_factor_is_the_variance_left_by_an_estimated_power() -> None:
    """Independent fields σ = 8 dB, each session's power taken as its heard mean: the heard residuals'
    variance is σ² × the factor (Monte Carlo, 40,000 sessions, 2 %)."""
    rng = np.random.default_rng(3)
    b, r = 40_000, 7
    n_heard = rng.integers(1, r + 1, b)
    heard = np.arange(r)[None, :] < n_heard[:, None]
    state = np.where(heard, HEARD, SILENT).astype(np.int8)
    s = rng.normal(0.0, 8.0, (b, r))
    mean = np.sum(np.where(heard, s, 0.0), axis=1) / n_heard
    resid = (s - mean[:, None])[heard]
    assert np.mean(resid**2) == pytest.approx(64.0 * power_dof_factor(state), rel=0.02)
    dropped = n_heard == 1
    assert power_dof_factor(state, dropped) > power_dof_factor(state)


@pytest.mark.slow
def test_sigma_power_dof_divides_the_estimated_sigma(network) -> None:
    """``sigma_power_dof``: the same fit, σ divided by √(power_dof_factor); off, or σ given, it is not."""
    rng = np.random.default_rng(4)
    pos = np.column_stack([rng.uniform(-60, 40, 300), rng.uniform(-40, 40, 300)])
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=2.0)
    cfg = MapsConfig(pathloss_shape="prior", holdout_fraction=0.0, outlier_p_value=0.0)
    plain = fit_radio_map(obs, network, cfg)
    fixed = fit_radio_map(obs, network, cfg.model_copy(update={"sigma_power_dof": True}))
    f = power_dof_factor(obs.state)
    assert f < 1.0
    assert fixed.hyper.sigma_db == pytest.approx(plain.hyper.sigma_db / np.sqrt(f), rel=1e-12)
    assert fixed.hyper.nugget_db == plain.hyper.nugget_db
    given = fit_radio_map(obs, network, cfg.model_copy(update={"sigma_power_dof": True}), hyper=HYPER)
    assert given.hyper.sigma_db == HYPER.sigma_db
