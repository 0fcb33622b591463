"""radio_map_kriging is the oracle's likelihood path: the true fields planted give the oracle's posterior."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from heimdall.data.store import SessionStore
from heimdall.eval.noise import capture_sigma_db, fading_scatter
from heimdall.eval.oracle import Oracle
from heimdall.eval.rss_ml import PathLoss
from heimdall.maps.config import MapsConfig
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import RadioMap, calibrated_nugget_db, fit_radio_map
from heimdall.maps.kriging import FieldHyper, krige
from heimdall.maps.observations import BANDS, observations_from_store
from heimdall.posterior.grid import search_grid
from heimdall.posterior.likelihood import HEIGHT_NODES, height_nodes
from heimdall.sim import World, WorldConfig
from heimdall.sim.simulate_job import run_simulation


class PlantedMap(RadioMap):
    """A radio map that knows the world: height-averaged median path loss + static field + gain offsets."""

    world: World

    def predict(self, points_km, band=0):
        w, cfg = self.world, self.world.config
        b = BANDS[int(band)]
        e, n = points_km[..., 0], points_km[..., 1]
        d = w.distance_km(e.ravel(), n.ravel()).T.reshape(-1, *e.shape)
        rx_h = w.network.heights_m.reshape(-1, *([1] * e.ndim))
        law = PathLoss(cfg.path_loss_exponent_near, cfg.path_loss_exponent_far, cfg.horizon_k_factor)
        hs, lw = height_nodes(cfg.tx_height_m_min, cfg.tx_height_m_max, HEIGHT_NODES)
        g = sum(np.exp(lwk) * law.gain_db(d, h, rx_h) for h, lwk in zip(hs, lw, strict=True))
        static = w.static_shadowing_db(e.ravel(), n.ravel(), b).reshape(-1, *e.shape)
        fade = fading_scatter(cfg, w.sample_rate_hz).mean_db
        fixed = w.gain_offset_db_for(b) - cfg.clutter_loss_db + fade
        return g + static + fixed.reshape(-1, *([1] * e.ndim)), np.zeros_like(g)


@pytest.mark.slow
def test_planted_truth_gives_the_oracle_posterior(tmp_path) -> None:
    """Total variation between the two grid posteriors ≤ 0.05 on every session (both bands)."""
    uri = str(tmp_path / "test")
    run_simulation(uri, "nw-italy", 8, world_seed=5, seed=9, duration_s=0.25, workers=1)
    store = SessionStore.open(uri)
    obs, net = observations_from_store(uri)
    meta = store.metadata
    world = World(net, WorldConfig.model_validate(meta["world"]), int(meta["world_seed"]))
    cfg = world.config
    empty = fit_radio_map(obs.select(slice(0, 0)), net, MapsConfig())
    planted = PlantedMap(**{f.name: getattr(empty, f.name) for f in dataclasses.fields(empty)})
    planted.world = world
    planted.hyper = FieldHyper(cfg.static_shadowing_sigma_db, cfg.static_shadowing_corr_km,
                               capture_sigma_db(cfg, world.sample_rate_hz))  # fmt: skip
    planted.config = MapsConfig(
        power_range_dbm=(cfg.tx_power_dbm_min, cfg.tx_power_dbm_max),
        tx_height_range_m=(cfg.tx_height_m_min, cfg.tx_height_m_max),
        prior_exponents=(cfg.path_loss_exponent_near, cfg.path_loss_exponent_far),
        prior_clutter_db=cfg.clutter_loss_db,
    )
    grid = search_grid(world.tx_area_km, 2.0)
    locator = RadioMapLocator(planted, refine_factor=1, grid=grid)
    oracle = Oracle(world, grid, fading_scatter(cfg, world.sample_rate_hz).mean_db, refine_factor=1)
    batch = store.read_all()
    assert set(obs.band.tolist()) == {0, 1}  # both bands exercised
    for q in (0, 1):
        idx = np.flatnonzero(obs.band == q)
        lp_map = locator.log_post_grid(locator.observations(obs.select(idx)), q)
        pobs = locator.observations(obs.select(idx))  # y + 20 log10 f: the oracle's shifted observations
        lp_or = oracle.posterior(pobs, BANDS[q]).coarse_lp
        assert np.allclose(batch.center_freq_hz[idx] >= 3e8, q == 1)
        for a, b in zip(lp_map, lp_or, strict=True):
            pa, pb = np.exp(a - a.max()), np.exp(b - b.max())
            tv = 0.5 * np.abs(pa / pa.sum() - pb / pb.sum()).sum()
            assert tv <= 0.05, tv


@pytest.mark.parametrize(("h_km", "rho", "same"), [(0.0, 0.7, False), (5.0, 0.7, False), (5.0, 0.7, True)])
def test_cokriging_one_label_closed_form(h_km: float, rho: float, same: bool) -> None:
    """One label of the other band: mean = ρ C(h) z / (σ² + n), variance σ² − ρ² C(h)² / (σ² + n)."""
    hyper = FieldHyper(sigma_db=6.0, corr_km=10.0, nugget_db=1.0, band_corr=rho)
    z, nug = 3.0, 4.0
    mean, var = krige(np.zeros((1, 2)), np.array([z]), np.array([nug]), np.array([[h_km, 0.0]]), hyper,
                      train_band=np.array([0], np.int8), query_band=0 if same else 1)  # fmt: skip
    c = 36.0 * np.exp(-h_km / 10.0) * (1.0 if same else rho)
    assert mean[0] == pytest.approx(c * z / (36.0 + nug), rel=1e-9)
    assert var[0] == pytest.approx(36.0 - c * c / (36.0 + nug), rel=1e-9)


@pytest.mark.parametrize("known_power", [True, False])
def test_calibrated_nugget_recovers_the_capture_sigma(known_power: bool) -> None:
    """Residuals N(0, τ² + v) (minus each session's mean when the power is estimated): τ back within 3 %."""
    rng = np.random.default_rng(0)
    n, r, tau = 4000, 6, 2.2
    v = rng.uniform(0.0, 10.0, (n, r))
    res = rng.standard_normal((n, r)) * np.sqrt(tau**2 + v)
    heard = np.ones((n, r), bool)
    if not known_power:  # P_b estimated by weighted least squares removes one degree of freedom
        w = 1.0 / (tau**2 + v)
        res -= (np.sum(w * res, axis=1) / w.sum(axis=1))[:, None]
    est = calibrated_nugget_db(res, v, heard, 0.3, known_power)
    assert est == pytest.approx(tau, rel=0.03)
