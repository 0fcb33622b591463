"""Transmitter position priors: uniform and clustered (towns, roads, fixed stations)."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.errors import HeimdallError
from heimdall.network import load_network
from heimdall.sim import World, load_world
from heimdall.sim.positions import draw_positions

CFG = load_world().with_overrides(duration_s=0.02)
WORLD = World(load_network("nw-italy"), CFG, 0)


def _nearest_km(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.min(np.hypot(*(points[:, None, :] - targets[None, :, :]).transpose(2, 0, 1)), axis=1)


def _segment_distance_km(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (km) from points (N, 2) to the nearest of segments a-b (S, 2)."""
    ab = b - a
    t = np.clip(
        np.einsum("nsk,sk->ns", p[:, None, :] - a[None], ab) / np.maximum((ab**2).sum(-1), 1e-12), 0, 1
    )
    closest = a[None] + t[..., None] * ab[None]
    return np.min(np.hypot(*(p[:, None, :] - closest).transpose(2, 0, 1)), axis=1)


def test_layout_is_fixed_by_the_world_seed() -> None:
    again, other = World(WORLD.network, CFG, 0).town_layout, World(WORLD.network, CFG, 1).town_layout
    np.testing.assert_array_equal(WORLD.town_layout.town_km, again.town_km)
    assert not np.array_equal(WORLD.town_layout.town_km[:2], other.town_km[:2])
    e0, e1, n0, n1 = WORLD.tx_area_km
    expected = CFG.towns_per_1000_km2 * (e1 - e0) * (n1 - n0) / 1000.0
    assert abs(WORLD.town_layout.town_km.shape[0] - expected) < 4 * np.sqrt(expected)  # Poisson


def test_clustered_mixture_matches_its_parts() -> None:
    """Fractions near towns / on roads / at fixed sites follow position_mix (5,000 draws)."""
    layout = WORLD.town_layout
    e, n = draw_positions(WORLD, np.random.default_rng(1), 5000, "clustered")
    pts = np.column_stack([e, n])
    e0, e1, n0, n1 = WORLD.tx_area_km
    assert ((e >= e0) & (e <= e1) & (n >= n0) & (n <= n1)).all()
    at_fixed = _nearest_km(pts, layout.fixed_km) < 1e-9
    on_road = ~at_fixed & (
        _segment_distance_km(pts, layout.road_a_km, layout.road_b_km) < 4 * CFG.road_offset_km
    )
    # fixed: exact (up to redraws at the edge); roads: a town draw may also fall within 1.2 km of a road
    assert at_fixed.mean() == pytest.approx(CFG.position_mix["fixed"], abs=0.03)
    assert CFG.position_mix["road"] - 0.03 < on_road.mean() < CFG.position_mix["road"] + 0.2
    # clustered draws sit far closer to towns than uniform ones
    ue, un = draw_positions(WORLD, np.random.default_rng(1), 5000, "uniform")
    d_clustered = np.median(_nearest_km(pts, layout.town_km))
    d_uniform = np.median(_nearest_km(np.column_stack([ue, un]), layout.town_km))
    assert d_clustered < 0.5 * d_uniform


def test_uniform_prior_is_uniform_over_the_area() -> None:
    e, _ = draw_positions(WORLD, np.random.default_rng(2), 4000, "uniform")
    e0, e1, _, _ = WORLD.tx_area_km
    hist, _ = np.histogram((e - e0) / (e1 - e0), bins=4, range=(0, 1))
    assert np.all(np.abs(hist - 1000) < 4 * np.sqrt(1000))


def test_simulate_with_clustered_positions_and_unknown_prior() -> None:
    b = WORLD.simulate(4, 1, positions="clustered")
    assert b.labelled.all()
    with pytest.raises(HeimdallError, match="position prior 'ring'"):
        WORLD.simulate(1, 1, positions="ring")
