"""PosteriorMap against closed forms: Gaussian HPD areas, mixture masses, off-grid peaks, geodesic areas."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod

from heimdall.network.geodesy import LocalFrame
from heimdall.posterior import PosteriorMap, search_grid
from heimdall.posterior.density import hpd_area_km2, hpd_threshold
from heimdall.posterior.modes import basins
from heimdall.posterior.regions import multipolygon_geojson

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


def _basins_reference(values: np.ndarray) -> np.ndarray:
    """Steepest ascent neighbour by neighbour (value, then lower index; -inf cells never lead)."""
    n_n, n_e = values.shape
    v = np.where(np.isfinite(values), values, -np.inf)
    padded = np.full((n_n + 2, n_e + 2), -np.inf)
    padded[1:-1, 1:-1] = v
    flat = np.arange(n_n * n_e).reshape(n_n, n_e)
    best_val, best_idx = v.copy(), flat.copy()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            nb = padded[1 + dr : 1 + dr + n_n, 1 + dc : 1 + dc + n_e]
            nb_idx = flat[
                np.clip(np.arange(n_n) + dr, 0, n_n - 1)[:, None], np.clip(np.arange(n_e) + dc, 0, n_e - 1)
            ]
            better = (nb > best_val) | ((nb == best_val) & (nb_idx < best_idx) & np.isfinite(nb))
            best_val, best_idx = np.where(better, nb, best_val), np.where(better, nb_idx, best_idx)
    ptr = best_idx.ravel()
    while not np.array_equal(ptr[ptr], ptr):
        ptr = ptr[ptr]
    return ptr.reshape(n_n, n_e)


def test_basins_equal_the_neighbour_by_neighbour_rule() -> None:
    """Random grids with ties, plateaus, -inf, NaN and +inf cells: the same basin for every cell."""
    rng = np.random.default_rng(3)
    for trial in range(600):
        n_n, n_e = rng.integers(1, 12, 2)
        values = [
            rng.normal(size=(n_n, n_e)),
            rng.integers(0, 3, (n_n, n_e)).astype(float),
            np.where(rng.random((n_n, n_e)) < 0.3, -np.inf, rng.integers(0, 4, (n_n, n_e)).astype(float)),
            np.where(
                rng.random((n_n, n_e)) < 0.2, np.nan, np.where(rng.random((n_n, n_e)) < 0.1, np.inf, 1.0)
            ),
            np.where(rng.random((n_n, n_e)) < 0.2, 1.0, -np.inf),
        ][trial % 5]
        np.testing.assert_array_equal(basins(values), _basins_reference(values))


def test_hpd_thresholds_of_one_ranking_equal_the_sorted_rule() -> None:
    """Each level read from the cached ranking equals density.hpd_threshold's own sort; so do the areas."""
    grid = search_grid((-30.0, 30.0, -20.0, 20.0), 1.0)
    lp = _gauss_lp(grid.points_km, np.array([2.0, -1.0]), _rotated_cov(6.0, 2.0, 40.0))
    post = PosteriorMap.from_log_posterior(grid, lp, FRAME)
    for level in (0.5, 0.9, 0.3, 0.99):
        t = float(hpd_threshold(post.log_density[None], level)[0])
        assert post.hpd_threshold(level) == t
        assert post.hpd_area_km2(level) == float(
            hpd_area_km2(post.log_density[None], level, grid.cell_area_km2)[0]
        )
    with pytest.raises(ValueError, match="HPD level"):
        post.hpd_threshold(1.0)


def test_answer_with_given_moments_and_geojson_in_one_projection() -> None:
    """answer(moments=...) reports those moments and the same MAP, modes and regions.

    Every point and vertex is the frame's own projection of its km position (one call for all).
    """
    grid = search_grid((-40.0, 40.0, -30.0, 30.0), 2.0)
    lp = np.logaddexp(
        np.log(0.7) + _gauss_lp(grid.points_km, np.array([-12.0, 4.0]), _rotated_cov(4.0, 2.0, 10.0)),
        np.log(0.3) + _gauss_lp(grid.points_km, np.array([15.0, -6.0]), _rotated_cov(3.0, 3.0, 0.0)),
    )
    post = PosteriorMap.from_log_posterior(grid, lp, FRAME)
    mean, cov = np.array([1.5, -0.5]), np.array([[9.0, 1.0], [1.0, 4.0]])
    own, given = post.answer(), post.answer(moments=(mean, cov))
    assert given["cov_km2"] == cov.tolist()
    lat, lon = FRAME.to_latlon(np.float64(1.5), np.float64(-0.5))
    assert given["mean"] == {
        "latitude": float(lat),
        "longitude": float(lon),
        "east_km": 1.5,
        "north_km": -0.5,
    }
    assert {k: v for k, v in given.items() if k not in ("mean", "cov_km2")} == {
        k: v for k, v in own.items() if k not in ("mean", "cov_km2")
    }
    for m in own["modes"] + [own["map"]]:
        lat, lon = FRAME.to_latlon(np.float64(m["east_km"]), np.float64(m["north_km"]))
        assert (m["latitude"], m["longitude"]) == (float(lat), float(lon))
    polygons = post.hpd_polygons_km(0.9)
    assert len(polygons) == 2
    coords = multipolygon_geojson(polygons, FRAME)["coordinates"]
    for poly, rings in zip(polygons, coords, strict=True):
        for ring, lonlat in zip(poly, rings, strict=True):
            lat, lon = FRAME.to_latlon(ring[:, 0], ring[:, 1])
            assert lonlat == [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    assert multipolygon_geojson([], FRAME) == {"type": "MultiPolygon", "coordinates": []}
