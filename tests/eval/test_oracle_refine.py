"""The oracle's coarse-to-fine posterior on simulated sessions: close to a much finer integration."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.eval.geometry import session_geometry
from heimdall.eval.noise import capture_sigma_db, fading_scatter
from heimdall.eval.oracle import Oracle, _shift
from heimdall.network import load_network
from heimdall.posterior.grid import search_grid
from heimdall.posterior.likelihood import power_observations
from heimdall.posterior.measure import DETECTION_SNR_DB, measure_power
from heimdall.posterior.refine import refine_posterior
from heimdall.sim import World, load_world
from heimdall.sim.simulator import band_of


@pytest.fixture(scope="module")
def sessions() -> tuple:
    """12 reference-world sessions of one band, their oracle observations and truths."""
    network = load_network("nw-italy")
    world = World(network, load_world(), 0)
    batch = world.simulate(16, session_seed=11)
    keep = np.flatnonzero([band_of(f) == "2m" for f in batch.center_freq_hz])[:12]
    batch = batch.select(keep)
    m = measure_power(batch)
    obs = power_observations(
        np.nan_to_num(m.band_dbm, nan=-300.0), np.nan_to_num(m.noise_dbm, nan=-300.0), m.heard, m.online,
        m.clipped, capture_sigma_db(world.config, world.sample_rate_hz), DETECTION_SNR_DB,
    )  # fmt: skip
    obs = _shift(obs, -20.0 * np.log10(batch.center_freq_hz / 1e6))
    truth = session_geometry(batch, network.frame).tx_km
    oracle = Oracle(world, search_grid(world.tx_area_km, 1.0), fading_scatter(world.config, 12000.0).mean_db)
    return oracle, obs, truth


def test_refined_hpd_levels_match_a_much_finer_integration(sessions: tuple) -> None:
    """HPD level of the truth: default refinement (99 % of the mass, ≤ 32 cells, ring 1, 8 × 8)
    against 99.999 % of the mass on up to 400 cells: mean difference < 0.02 (measured 0.0065 on
    200 sessions); the 1 km grid alone is off by > 0.05 on average (measured 0.13)."""
    oracle, obs, truth = sessions
    lp_truth = oracle._log_post_at(obs, truth[:, None], "2m")[:, 0]
    default = oracle.posterior(obs, "2m")
    lp = oracle._log_post(obs, oracle.gains("2m"))
    fine = refine_posterior(
        oracle.grid, lp, lambda i, p: oracle._log_post_at(obs.select(i), p, "2m"), 8, 0.99999, 400
    )
    ref = fine.hpd_level(lp_truth)
    assert np.all((ref >= 0) & (ref <= 1))
    assert np.mean(np.abs(default.hpd_level(lp_truth) - ref)) < 0.02
    plain = Oracle(oracle.world, oracle.grid, oracle.fading_mean_db, refine_factor=1)
    assert np.mean(np.abs(plain.posterior(obs, "2m").hpd_level(lp_truth) - ref)) > 0.05
