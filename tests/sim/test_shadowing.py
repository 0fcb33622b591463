"""Static shadowing fields: ensemble sigma and correlation over many seeds (not self-rescaled)."""

from __future__ import annotations

import numpy as np

from heimdall.network import load_network
from heimdall.sim import World, load_world
from heimdall.sim.shadowing import GridSpec, bilinear, exponential_field

SIGMA_DB, CORR_KM = 8.0, 10.0


def test_ensemble_sigma_and_correlation_over_20_seeds() -> None:
    """Over 20 seeds: ensemble sigma within 10 % of 8 dB; correlation at 10 km = e^-1 +- 0.1.

    Reference: the Gudmundson model C(h) = sigma^2 exp(-h / d_c). Pairs are read through the
    same bilinear query the simulator and oracle use, at off-grid points.
    """
    grid = GridSpec(0.0, 0.0, 0.5, 240, 240)
    rng_pts = np.random.default_rng(123)
    east = rng_pts.uniform(10, 100, size=400)
    north = rng_pts.uniform(10, 100, size=400)
    angle = rng_pts.uniform(0, 2 * np.pi, size=400)
    east2, north2 = east + CORR_KM * np.cos(angle), north + CORR_KM * np.sin(angle)
    a_vals, b_vals = [], []
    for seed in range(20):
        fields = exponential_field(grid, SIGMA_DB, CORR_KM, np.random.default_rng(seed), count=2)
        a_vals.append(bilinear(grid, fields, east, north))
        b_vals.append(bilinear(grid, fields, east2, north2))
    a = np.concatenate(a_vals).ravel()
    b = np.concatenate(b_vals).ravel()
    sigma = np.sqrt(np.mean(np.concatenate([a, b]) ** 2))  # zero-mean by construction
    corr = np.mean(a * b) / SIGMA_DB**2
    assert abs(sigma - SIGMA_DB) / SIGMA_DB < 0.10
    assert abs(corr - np.exp(-1)) < 0.1


def test_world_fields_fixed_by_world_seed() -> None:
    net, cfg = load_network("nw-italy"), load_world()
    w0a, w0b, w1 = World(net, cfg, 0), World(net, cfg, 0), World(net, cfg, 1)
    pts = (np.array([0.0, 20.0, -40.0]), np.array([0.0, -10.0, 30.0]))
    np.testing.assert_array_equal(w0a.static_shadowing_db(*pts), w0b.static_shadowing_db(*pts))
    assert not np.allclose(w0a.static_shadowing_db(*pts), w1.static_shadowing_db(*pts))
    np.testing.assert_array_equal(w0a.gain_offset_db, w0b.gain_offset_db)
    assert w0a.static_shadowing_db(*pts).shape == (7, 3)


def test_bilinear_exact_on_grid_nodes_and_planes() -> None:
    grid = GridSpec(-5.0, 2.0, 0.5, 30, 20)
    ee, nn = np.meshgrid(grid.east0_km + 0.5 * np.arange(30), grid.north0_km + 0.5 * np.arange(20))
    plane = (3.0 * ee - 2.0 * nn + 1.0)[None].astype(np.float32)
    pts_e, pts_n = np.array([-4.3, 0.1, 7.7]), np.array([2.2, 5.9, 10.3])
    np.testing.assert_allclose(bilinear(grid, plane, pts_e, pts_n)[0], 3 * pts_e - 2 * pts_n + 1, atol=1e-4)
