from __future__ import annotations

import numpy as np
import pytest

from heimdall.eval.estimate import Estimate
from heimdall.eval.geometry import inside_hull
from heimdall.eval.metrics import (
    calibration_curve,
    hpd_coverage,
    paired_bootstrap_mean_diff,
    paired_bootstrap_median_diff,
    strata,
    summary,
)
from heimdall.posterior.grid import search_grid


def _calibrated(n: int, seed: int) -> tuple[Estimate, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 2, 2))
    cov = a @ a.transpose(0, 2, 1) * 25.0 + np.eye(2)
    truth = rng.uniform(-50, 50, (n, 2))
    mean = truth + np.einsum("bij,bj->bi", np.linalg.cholesky(cov), rng.normal(size=(n, 2)))
    return Estimate(mean, cov), truth


def test_calibrated_gaussian_estimates() -> None:
    """Estimates drawn from their own covariance: coverage 1 − exp(−k²/2), NLL expectation in closed
    form log 2π + ½ log det Σ + 1 (E[d²] = 2). Tolerances: 4 binomial / sampling standard errors."""
    est, truth = _calibrated(20000, 1)
    s = summary(est, truth)
    assert s["coverage_1sigma"] == pytest.approx(0.3935, abs=0.014)
    assert s["coverage_2sigma"] == pytest.approx(0.8647, abs=0.01)
    det = np.linalg.det(est.cov_km2)
    assert s["nll"] == pytest.approx(np.mean(np.log(2 * np.pi) + 0.5 * np.log(det) + 1.0), abs=0.04)
    assert s["ellipse_area_km2_median"] == pytest.approx(np.median(np.pi * np.sqrt(det)), rel=1e-9)
    err = np.hypot(*(est.mean_km - truth).T)
    assert s["median_km"] == pytest.approx(np.median(err)) and s["cep50_km"] == s["median_km"]
    assert s["rmse_km"] == pytest.approx(np.sqrt(np.mean(err**2)))
    curve = calibration_curve(est, truth)
    assert curve is not None
    np.testing.assert_allclose(curve["observed"], curve["expected"], atol=0.015)


def test_no_covariance_gives_nulls() -> None:
    s = summary(Estimate(np.zeros((3, 2))), np.ones((3, 2)))
    assert s["coverage_1sigma"] is None and s["nll"] is None and s["median_km"] == pytest.approx(np.sqrt(2))


def test_bootstrap_interval_covers_a_known_shift() -> None:
    """err_a = err_b + 5 km exactly: the median difference is 5 with a degenerate interval."""
    rng = np.random.default_rng(0)
    b = rng.exponential(20.0, 500)
    out = paired_bootstrap_median_diff(b + 5.0, b, n_boot=500)
    assert out["diff_km"] == pytest.approx(5.0)
    assert out["ci95_low_km"] == pytest.approx(5.0) and out["ci95_high_km"] == pytest.approx(5.0)
    noisy = paired_bootstrap_median_diff(rng.exponential(20.0, 500), b, n_boot=500)
    assert noisy["ci95_low_km"] < noisy["diff_km"] < noisy["ci95_high_km"]


def test_paired_bootstrap_mean_diff_matches_normal_theory() -> None:
    """Paired scores with independent N(0.2, 1) differences over a wide common part: the bootstrap
    interval of the mean difference is mean(d) ± 1.96 sd(d)/√n (the common part cancels because
    the draw is paired); tolerance 10 % of the half-width (bootstrap Monte Carlo error ~3 %)."""
    rng = np.random.default_rng(3)
    n = 2000
    common = rng.normal(-8.0, 5.0, n)
    d = rng.normal(0.2, 1.0, n)
    out = paired_bootstrap_mean_diff(common + d, common, n_boot=4000)
    half = 1.959964 * d.std(ddof=1) / np.sqrt(n)
    assert out["diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert out["ci95_low"] == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert out["ci95_high"] == pytest.approx(d.mean() + half, abs=0.1 * half)
    shifted = paired_bootstrap_mean_diff(common + 0.3, common, n_boot=200)
    assert shifted["ci95_low"] == pytest.approx(0.3) and shifted["ci95_high"] == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("a", "b"), [(np.zeros(5), np.zeros(4)), (np.zeros(5), np.zeros((5, 1))), (np.zeros(0), np.zeros(0))]
)
def test_paired_bootstrap_rejects_unpaired_samples(a: np.ndarray, b: np.ndarray) -> None:
    with pytest.raises(ValueError, match="paired bootstrap"):
        paired_bootstrap_mean_diff(a, b)


def test_hpd_coverage_thresholds() -> None:
    levels = np.array([0.1, 0.39, 0.4, 0.86, 0.87, np.nan])
    cov = hpd_coverage(levels)
    assert cov["p393"] == pytest.approx(2 / 5) and cov["p865"] == pytest.approx(4 / 5)


def test_strata_and_hull() -> None:
    rx = np.array([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [np.nan, np.nan]]] * 3)
    pts = np.array([[2.0, 2.0], [9.0, 9.0], [-1.0, 5.0]])
    inside = inside_hull(pts, rx)
    assert inside.tolist() == [True, False, False]
    est = Estimate(pts + 1.0, np.tile(np.eye(2), (3, 1, 1)))
    out = strata(est, pts, np.array([3, 3, 2]), inside)
    assert out["inside_hull"]["n"] == 1 and out["outside_hull"]["n"] == 2
    assert out["heard_3"]["n"] == 2 and out["heard_2"]["median_km"] == pytest.approx(np.sqrt(2))


def test_search_grid_covers_area_with_small_cells() -> None:
    grid = search_grid((-10.0, 10.5, 0.0, 3.0), 1.0)
    assert grid.step_east_km <= 1.0 and grid.step_north_km <= 1.0
    assert grid.points_km[:, 0].min() == pytest.approx(-10 + grid.step_east_km / 2)
    assert len(grid.points_km) * grid.cell_area_km2 == pytest.approx(20.5 * 3.0)
