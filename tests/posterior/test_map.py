"""PosteriorMap against closed forms: Gaussian HPD areas, mixture masses, off-grid peaks, geodesic areas."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod

from heimdall.network.geodesy import LocalFrame
from heimdall.posterior import PosteriorMap, search_grid

FRAME = LocalFrame(44.5, 11.3)


def _gauss_lp(points: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = points - mu
    return -0.5 * np.einsum("gi,ij,gj->g", d, np.linalg.inv(cov), d) - np.log(
        2 * np.pi * np.sqrt(np.linalg.det(cov))
    )


def _rotated_cov(s1: float, s2: float, angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return rot @ np.diag([s1**2, s2**2]) @ rot.T


@pytest.mark.parametrize("level", [0.5, 0.9])
@pytest.mark.parametrize(("s1", "s2", "step"), [(6.0, 3.0, 0.25), (12.0, 4.0, 0.5)])
def test_gaussian_hpd_area_is_closed_form(level: float, s1: float, s2: float, step: float) -> None:
    """Area of the p-region of N(μ, Σ) is 2π σ1 σ2 (−ln(1 − p)); the grid count and the polygons agree."""
    grid = search_grid((-60.0, 60.0, -60.0, 60.0), step)
    cov = _rotated_cov(s1, s2, 30.0)
    post = PosteriorMap.from_log_posterior(grid, _gauss_lp(grid.points_km, np.array([3.3, -2.1]), cov), FRAME)
    exact = 2 * np.pi * s1 * s2 * -np.log(1 - level)
    assert post.hpd_area_km2(level) == pytest.approx(exact, rel=0.02)
    assert post.hpd_polygon_area_km2(level) == pytest.approx(exact, rel=0.02)
    mean, c = post.mean_cov()
    np.testing.assert_allclose(mean, [3.3, -2.1], atol=1e-4)
    np.testing.assert_allclose(c, cov + np.diag([step**2, step**2]) / 12.0, atol=0.01 * s1 * s1)


def test_bimodal_mixture_modes_and_masses() -> None:
    """A 0.65 / 0.35 mixture of separated Gaussians gives two modes at their centres with those masses."""
    grid = search_grid((-80.0, 80.0, -60.0, 60.0), 0.5)
    pts = grid.points_km
    a, b = np.array([-30.0, 10.0]), np.array([25.0, -15.0])
    lp = np.logaddexp(
        np.log(0.65) + _gauss_lp(pts, a, _rotated_cov(5.0, 3.0, 20.0)),
        np.log(0.35) + _gauss_lp(pts, b, _rotated_cov(4.0, 4.0, 0.0)),
    )
    modes = PosteriorMap.from_log_posterior(grid, lp, FRAME).modes(3)
    assert len(modes) == 2  # no spurious third basin
    assert modes[0].mass == pytest.approx(0.65, abs=0.005)
    assert modes[1].mass == pytest.approx(0.35, abs=0.005)
    np.testing.assert_allclose([modes[0].east_km, modes[0].north_km], a, atol=0.05)
    np.testing.assert_allclose([modes[1].east_km, modes[1].north_km], b, atol=0.05)


@pytest.mark.parametrize("offset", [(0.37, -0.21), (-0.49, 0.45), (0.0, 0.0)])
def test_map_refined_below_the_grid_step(offset: tuple[float, float]) -> None:
    """An off-grid Gaussian peak (correlated, 1 km cells) is found to < 0.1 grid step."""
    grid = search_grid((-20.0, 20.0, -20.0, 20.0), 1.0)
    peak = np.array([2.5 + offset[0], -3.5 + offset[1]])  # cell centres sit at half-integers
    post = PosteriorMap.from_log_posterior(
        grid, _gauss_lp(grid.points_km, peak, _rotated_cov(3.0, 1.5, 40.0)), FRAME
    )
    assert np.hypot(*(post.map_km() - peak)) < 0.1 * 1.0
    assert np.hypot(*(post.map_km() - peak)) < 0.1 * 1.0


def _geod_area_km2(geometry: dict) -> float:
    geod = Geod(ellps="WGS84")
    total = 0.0
    for poly in geometry["coordinates"]:
        for i, ring in enumerate(poly):
            lon, lat = np.array(ring).T
            area = abs(geod.polygon_area_perimeter(lon, lat)[0]) / 1e6
            total += area if i == 0 else -area
    return total


def test_geojson_area_matches_grid_area_with_holes_and_islands() -> None:
    """A ring-shaped density (a hole) and an island: geodesic area of the GeoJSON = grid area."""
    grid = search_grid((-70.0, 70.0, -60.0, 60.0), 0.5)
    e, n = grid.points_km.T
    r = np.hypot(e + 20.0, n)
    ring = np.log(0.7) - 0.5 * ((r - 20.0) / 3.0) ** 2 - np.log(2 * np.pi * 20.0 * 3.0 * np.sqrt(2 * np.pi))
    island = np.log(0.3) + _gauss_lp(grid.points_km, np.array([40.0, 20.0]), _rotated_cov(4.0, 3.0, 0.0))
    post = PosteriorMap.from_log_posterior(grid, np.logaddexp(ring, island), FRAME)
    geo = post.hpd_geojson(0.9)
    assert geo["type"] == "MultiPolygon"
    assert len(geo["coordinates"]) == 2  # two islands
    assert max(len(p) for p in geo["coordinates"]) == 2  # the ring has a hole
    lon, lat = np.array(geo["coordinates"][0][0]).T
    assert Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)[0] > 0  # exterior counter-clockwise
    assert _geod_area_km2(geo) == pytest.approx(post.hpd_area_km2(0.9), rel=0.01)


def test_log_score_and_hpd_level_of_a_gaussian() -> None:
    """Log density at a point = closed-form Gaussian log pdf; HPD level = 1 − exp(−m²/2)."""
    grid = search_grid((-50.0, 50.0, -50.0, 50.0), 0.25)
    cov = _rotated_cov(5.0, 2.0, -25.0)
    mu = np.array([1.0, 2.0])
    post = PosteriorMap.from_log_posterior(grid, _gauss_lp(grid.points_km, mu, cov) + 123.0, FRAME)
    truth = np.array([6.0, -1.0])
    d = truth - mu
    m2 = d @ np.linalg.inv(cov) @ d
    assert post.log_score(truth) == pytest.approx(_gauss_lp(truth[None], mu, cov)[0], abs=0.01)
    assert post.hpd_level_of(truth) == pytest.approx(1 - np.exp(-m2 / 2), abs=0.005)
