"""Coarse-to-fine posteriors against closed forms of Gaussians narrower and wider than a grid cell."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.posterior.density import hpd_level as coarse_hpd_level
from heimdall.posterior.grid import search_grid
from heimdall.posterior.refine import RefinedPosterior, cells_to_refine, refine_posterior

GRID = search_grid((-20.0, 20.0, -15.0, 15.0), 1.0)  # 1 km cells, like the oracle's grid
#: Per session: centre (km, off the cell centres), standard deviations (km), rotation (deg).
SESSIONS = [
    ((0.37, -0.21), (0.40, 0.25), 25.0),  # √det Σ = 0.1 km²: far narrower than a cell
    ((-4.62, 3.41), (0.45, 0.45), 0.0),
    ((2.1, 1.3), (4.0, 2.5), -40.0),  # broad: the coarse grid is already right
]


def _cov(s1: float, s2: float, angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return rot @ np.diag([s1**2, s2**2]) @ rot.T


MU = np.array([s[0] for s in SESSIONS])
COV = np.stack([_cov(*s[1], s[2]) for s in SESSIONS])


def _gauss_lp(index: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Normalised log density of session ``index``'s Gaussian at points (b, K, 2), nats per km²."""
    d = points - MU[index][:, None]
    inv = np.linalg.inv(COV[index])
    return (
        -0.5 * np.einsum("bki,bij,bkj->bk", d, inv, d)
        - np.log(2 * np.pi * np.sqrt(np.linalg.det(COV[index])))[:, None]
    )


def _truths(level: float) -> np.ndarray:
    """Points whose exact HPD level is ``level``: Mahalanobis radius² = −2 ln(1 − level), direction 60°."""
    r = np.sqrt(-2.0 * np.log(1.0 - level))
    u = np.array([np.cos(np.radians(60.0)), np.sin(np.radians(60.0))])
    return MU + r * np.einsum("bij,j->bi", np.linalg.cholesky(COV), u)


def _posterior(factor: int) -> RefinedPosterior:
    index = np.arange(len(SESSIONS))
    lp = _gauss_lp(index, np.broadcast_to(GRID.points_km, (len(index), *GRID.points_km.shape)))
    if factor == 1:
        return RefinedPosterior(GRID, lp, np.full((len(lp), 0), -np.inf), np.zeros((len(lp), 0, 2)), 1)
    return refine_posterior(GRID, lp, _gauss_lp, factor=factor)


@pytest.mark.parametrize("level", [0.393, 0.6, 0.865])
def test_hpd_level_of_a_sharp_gaussian_is_the_closed_form(level: float) -> None:
    """For N(μ, Σ) the truth at Mahalanobis radius r has HPD level 1 − exp(−r²/2) (exact).

    Refined (8 × 8 sub-cells of 125 m): within 0.035 for every session (one sub-cell of
    the sharpest session holds up to 2.5 % of its mass: the level is exact to about one
    sub-cell). The 1 km grid alone is off by more than 0.05 for both sharp sessions (their
    mass sits in a few cells whose centre densities are far from the truth's) and right
    for the broad one.
    """
    truth = _truths(level)
    lp_truth = _gauss_lp(np.arange(len(SESSIONS)), truth[:, None])[:, 0]
    refined = _posterior(8).hpd_level(lp_truth)
    np.testing.assert_allclose(refined, level, atol=0.035)
    coarse = _posterior(1).hpd_level(lp_truth)
    np.testing.assert_allclose(coarse, coarse_hpd_level(_posterior(1).coarse_lp, lp_truth))
    assert np.all(np.abs(coarse[:2] - level) > 0.05)
    assert abs(coarse[2] - level) < 0.02


def test_moments_normaliser_and_log_score_are_the_closed_form() -> None:
    """Mean μ, covariance Σ (+ the 125 m sub-cell's own spread), ∫ = 1 and log N(truth)."""
    post = _posterior(8)
    mean, cov = post.moments()
    np.testing.assert_allclose(mean, MU, atol=2e-3)
    np.testing.assert_allclose(cov, COV + np.eye(2) * 0.125**2 / 12.0, atol=3e-3, rtol=0.01)
    np.testing.assert_allclose(post.log_normaliser(), 0.0, atol=5e-3)  # broad: 1 km midpoint rule
    truth = _truths(0.5)
    lp_truth = _gauss_lp(np.arange(len(SESSIONS)), truth[:, None])[:, 0]
    np.testing.assert_allclose(post.log_score(lp_truth), np.log(0.5) - np.log(2 * np.pi) - 0.5 * np.log(
        np.linalg.det(COV)), atol=5e-3)  # fmt: skip
    # second moment about another point = Σ + (μ − c)(μ − c)ᵀ
    c = MU + np.array([0.3, -0.2])
    _, second = post.moments(c)
    np.testing.assert_allclose(second - cov, np.einsum("bi,bj->bij", mean - c, mean - c), atol=1e-9)


@pytest.mark.parametrize("level", [0.5, 0.9])
def test_hpd_area_is_the_closed_form(level: float) -> None:
    """Area of the p-region of N(μ, Σ): 2π √det Σ (−ln(1 − p)), within 6 % (sub-cells counted whole)."""
    exact = 2 * np.pi * np.sqrt(np.linalg.det(COV)) * -np.log(1 - level)
    np.testing.assert_allclose(_posterior(8).hpd_area_km2(level), exact, rtol=0.06)


def test_best_point_is_the_densest_sub_cell() -> None:
    """The best element of the sharp sessions is the densest 125 m lattice point near μ (brute force)."""
    best, size = _posterior(8).best_point_km()
    k = np.arange(-3, 4)
    for b in range(2):
        # sub-cell centres: area origin + (i + ½) · 125 m on both axes
        base = np.floor((MU[b] - np.array([-20.0, -15.0])) / 0.125)
        e = -20.0 + (base[0] + k + 0.5) * 0.125
        n = -15.0 + (base[1] + k + 0.5) * 0.125
        cand = np.stack(np.meshgrid(e, n), -1).reshape(1, -1, 2)
        top = cand[0, np.argmax(_gauss_lp(np.array([b]), cand)[0])]
        np.testing.assert_allclose(best[b], top, atol=1e-9)
    np.testing.assert_allclose(size[:2], 0.125)


def test_cells_to_refine_takes_the_mass_and_a_ring() -> None:
    """One cell holding all the mass: it and its 8 neighbours (ring 1), 25 with ring 2; a cap keeps
    only the densest cells; a flat posterior refines max_cells cells and their ring."""
    lp = np.full((3, GRID.points_km.shape[0]), -1e3)
    centre = GRID.n_east * 10 + 12
    lp[0, centre] = lp[1, centre] = 0.0
    lp[2] = 0.0
    sel = cells_to_refine(lp, GRID, mass=0.99, max_cells=4, ring=1)
    assert sel[0].sum() == 9 and sel[0, centre] and sel[0, centre + GRID.n_east + 1]
    assert cells_to_refine(lp[:1], GRID, mass=0.99, max_cells=4, ring=2)[0].sum() == 25
    assert cells_to_refine(lp[2:], GRID, mass=0.99, max_cells=4, ring=0)[0].sum() == 4
