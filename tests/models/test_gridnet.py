"""GridPosteriorNet against closed forms and against the numpy grid posterior of radio_map_kriging."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.special import log_ndtr as scipy_log_ndtr
from scipy.special import ndtr

from heimdall.maps.config import MapsConfig
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.observations import HEARD, SILENT, UNUSED, observations_from_store
from heimdall.models.grid_predictor import GridPosteriorPredictor, torch_runner
from heimdall.models.gridnet import GridPosteriorNet, breakpoint_gain_db, log_interval_prob, log_ndtr
from heimdall.posterior.grid import search_grid
from heimdall.posterior.likelihood import log_posterior_grid
from heimdall.posterior.map import PosteriorMap
from heimdall.sim.propagation import median_path_loss_db
from heimdall.sim.simulate_job import run_simulation

torch.set_num_threads(1)


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = np.exp(a - a.max()), np.exp(b - b.max())
    return float(0.5 * np.abs(pa / pa.sum() - pb / pb.sum()).sum())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_ndtr_matches_scipy_in_both_tails(dtype: torch.dtype) -> None:
    z = np.concatenate([np.linspace(-60.0, -5.01, 200), np.linspace(-4.99, 8.0, 200)])
    got = log_ndtr(torch.tensor(z, dtype=dtype)).double().numpy()
    want = scipy_log_ndtr(z)
    tol = 1e-5 if dtype == torch.float64 else 1e-4
    assert np.allclose(got, want, rtol=tol, atol=tol), np.max(np.abs(got - want))


def test_log_interval_prob_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    lo = rng.uniform(-12.0, 12.0, 500)
    hi = lo + rng.uniform(0.01, 8.0, 500)
    got = log_interval_prob(torch.tensor(lo), torch.tensor(hi)).numpy()
    with np.errstate(divide="ignore"):
        want = np.log(np.abs(ndtr(hi) - ndtr(lo)))  # exact enough where the difference is not tiny
    ok = np.abs(ndtr(hi) - ndtr(lo)) > 1e-12
    assert np.allclose(got[ok], want[ok], atol=1e-6)
    # far tail (both in the upper tail, where ndtr differences cancel): log(Φ(−lo) − Φ(−hi))
    far = log_interval_prob(torch.tensor([20.0]), torch.tensor([21.0])).item()
    assert far == pytest.approx(float(scipy_log_ndtr(-20.0)), abs=1e-3)


@pytest.mark.parametrize(("tx_h", "rx_h"), [(1.5, 30.0), (10.0, 5.0)])
def test_breakpoint_law_matches_the_simulator(tx_h: float, rx_h: float) -> None:
    """−L(d) at 1 MHz equals sim.propagation.median_path_loss_db on both sides of the horizon."""
    d = np.geomspace(0.01, 300.0, 200)
    got = breakpoint_gain_db(
        torch.tensor(d), tx_h, torch.tensor(rx_h, dtype=torch.float64), torch.tensor(2.0), torch.tensor(3.7)
    ).numpy()
    want = -median_path_loss_db(d, 1.0, tx_h, rx_h, 2.0, 3.7)
    assert np.allclose(got, want, atol=1e-9)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A radio map fitted from 250 simulated labelled sessions of world 5, and 12 test sessions."""
    root = tmp_path_factory.mktemp("gridnet")
    run_simulation(str(root / "lab"), "nw-italy", 250, world_seed=5, seed=9, duration_s=0.05, workers=1)
    run_simulation(str(root / "test"), "nw-italy", 12, world_seed=5, seed=10, duration_s=0.05, workers=1)
    obs, net = observations_from_store(str(root / "lab"))
    rmap = fit_radio_map(obs, net, MapsConfig())
    tobs, _ = observations_from_store(str(root / "test"), net)
    assert rmap.hyper.common_var_db2 > 0.0
    model = GridPosteriorNet(rmap.config)
    model.load_map(rmap)
    # radio_map_kriging's numpy posterior keeps the published range's hard edges: compare like with like
    model.map_common_var_db2 = 0.0
    return rmap, net, tobs, model, str(root / "test")


def _net_inputs(obs, net, points: np.ndarray) -> tuple[torch.Tensor, ...]:
    b, r = obs.y_db.shape
    return (
        torch.tensor(np.nan_to_num(obs.y_db), dtype=torch.float32),
        torch.tensor(obs.state, dtype=torch.int64),
        torch.tensor(np.nan_to_num(obs.cens_db), dtype=torch.float32),
        torch.tensor(np.broadcast_to(net.positions_km, (b, r, 2)).copy(), dtype=torch.float32),
        torch.tensor(np.broadcast_to(net.heights_m, (b, r)).copy(), dtype=torch.float32),
        torch.tensor(obs.band, dtype=torch.int64),
        torch.tensor(np.broadcast_to(points, (b, *points.shape)).copy(), dtype=torch.float32),
    )


@pytest.mark.slow
def test_map_posterior_matches_the_numpy_grid_posterior(fitted) -> None:
    """Same map, two implementations (numpy closed form + 64 equal-mass power nodes): TV ≤ 0.05."""
    rmap, net, tobs, model, _ = fitted
    grid = search_grid(rmap.grid.area_km, 3.0)
    loc = RadioMapLocator(rmap, refine_factor=1, grid=grid)
    assert {0, 1} <= set(tobs.band.tolist()) and (tobs.state == 2).any()  # both bands, silent receivers
    for q in (0, 1):
        idx = np.flatnonzero(tobs.band == q)
        o = tobs.select(idx)
        mean, var = loc._fields[q]
        ref = log_posterior_grid(mean, var[None], loc.observations(o), loc.power_range_dbm, loc.log_w,
                                 p0_nodes=64, prune_nats=1e9)  # fmt: skip
        with torch.no_grad():
            got = model(*_net_inputs(o, net, grid.points_km)).double().numpy()
        for a, b in zip(got, ref, strict=True):
            assert _tv(a, b) <= 0.05


def _soft_prior_reference(model, inputs, common_db2: float, sill_db2: float) -> np.ndarray:
    """log ∫ Π_heard N(y_i; P + μ_i, τ² + v_i) Π_silent Φ((t_j − P − μ_j)/√(τ² + v_j)) p(P) dP by
    quadrature over P (2,001 nodes), p(P) = Φ((hi − P)/s) − Φ((lo − P)/s), s² = c² max(0, 1 − v̄/σ²)
    (v̄ over the heard receivers); summed over the height nodes."""
    lo, hi = model.power_range_dbm
    y, state, cens = inputs[0].double().numpy(), inputs[1].numpy(), inputs[2].double().numpy()
    with torch.no_grad():
        mean, var = model.predicted_power(*inputs[3:])
    mean, var = mean.double().numpy(), var.double().numpy()  # (H, B, R, G), (B, R, G)
    p = np.linspace(lo - 25.0, hi + 25.0, 2001)
    out = np.zeros(var.shape[0::2])
    for b in range(len(y)):
        heard, silent = state[b] == HEARD, state[b] == SILENT
        total = model.nugget_db.item() ** 2 + var[b][..., None]  # (R, G, 1)
        v_mean = var[b, heard].mean(axis=0)
        s = np.sqrt(common_db2 * np.clip(1.0 - v_mean / sill_db2, 0.0, 1.0))[:, None]  # (G, 1)
        with np.errstate(divide="ignore"):
            log_prior = np.log(ndtr((hi - p) / s) - ndtr((lo - p) / s))  # (G, P)
        per_h = []
        for h in range(mean.shape[0]):
            r = y[b, heard][:, None, None] - mean[h, b, heard][..., None] - p  # (R', G, P)
            ll = np.sum(-0.5 * r * r / total[heard] - 0.5 * np.log(total[heard]), axis=0)
            z = (cens[b, silent][:, None, None] - mean[h, b, silent][..., None] - p) / np.sqrt(total[silent])
            ll = ll + np.sum(scipy_log_ndtr(z), axis=0)
            per_h.append(model.log_height_weight[h].item() + np.logaddexp.reduce(ll + log_prior, axis=-1))
        out[b] = np.logaddexp.reduce(np.stack(per_h), axis=0)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("silent", [False, True])
def test_soft_power_prior_matches_quadrature(fitted, silent: bool, monkeypatch) -> None:
    """The map's common-field variance softens the power prior's edges: the graph (closed form for the
    heard terms, weighted power nodes for the silent ones) equals quadrature over the transmit power.

    With silent receivers the graph's 4 nodes are within TV 0.07 of quadrature (0.05 with the hard
    edges, the same sessions); 16 nodes converge to it (TV ≤ 5e-3), so the weighting itself is right.
    """
    import heimdall.models.gridnet as gridnet_module

    rmap, net, tobs, _, _ = fitted
    soft = GridPosteriorNet(rmap.config)
    soft.load_map(rmap)
    c2, sill = rmap.hyper.common_var_db2, rmap.hyper.sigma_db**2
    assert soft.map_common_var_db2 == pytest.approx(c2) and soft.map_sill_db2 == pytest.approx(sill)
    idx = np.flatnonzero((tobs.state == SILENT).any(axis=1))[:6] if silent else np.arange(6)
    o = tobs.select(idx)
    keep = (HEARD, SILENT) if silent else (HEARD,)
    o = replace(o, state=np.where(np.isin(o.state, keep), o.state, UNUSED).astype(o.state.dtype))
    y = o.y_db.copy()
    y[:3] += 12.0  # three sessions pushed towards the top of the power range, where the edge matters
    o = replace(o, y_db=y)
    grid = search_grid(rmap.grid.area_km, 8.0)
    inputs = _net_inputs(o, net, grid.points_km)
    want = _soft_prior_reference(soft, inputs, c2, sill)
    hard = _soft_prior_reference(soft, inputs, 1e-12, sill)
    for nodes, tol in ((16, 5e-3), (4, 0.07)) if silent else ((4, 2e-3),):
        monkeypatch.setattr(gridnet_module, "P0_QUADRATURE_NODES", nodes)
        with torch.no_grad():
            got = soft(*inputs).double().numpy()
        tv_soft = [_tv(g, w) for g, w in zip(got, want, strict=True)]
        assert max(tv_soft) <= tol, (nodes, tv_soft)
    tv_hard = [_tv(g, h) for g, h in zip(got, hard, strict=True)]
    assert max(tv_hard) > 0.02, tv_hard  # the soft edge changed something the test can see


def test_nothing_heard_keeps_the_published_range(fitted) -> None:
    """Without a heard receiver there is no v̄ to place s(x): the soft model equals the hard one."""
    rmap, net, tobs, hard, _ = fitted
    soft = GridPosteriorNet(rmap.config)
    soft.load_map(rmap)
    o = tobs.select(np.arange(2))
    thr = np.nanmin(o.y_db) - 10.0
    o = replace(o, state=np.where(o.state == UNUSED, UNUSED, SILENT).astype(o.state.dtype),
                cens_db=np.where(o.state == UNUSED, np.nan, thr))  # fmt: skip
    inputs = _net_inputs(o, net, search_grid(rmap.grid.area_km, 10.0).points_km)
    with torch.no_grad():
        np.testing.assert_allclose(soft(*inputs).numpy(), hard(*inputs).numpy(), atol=1e-5)


@pytest.mark.slow
def test_bimodal_posterior_matches_and_keeps_both_modes(fitted) -> None:
    """Two receivers heard equally, the rest offline: a two-lobed posterior; both implementations agree."""
    rmap, net, tobs, model, _ = fitted
    o = tobs.select(np.array([0]))
    mid = 0.5 * (net.positions_km[0] + net.positions_km[1])
    mean, _ = rmap.predict(mid[None], int(o.band[0]))
    y = np.full_like(o.y_db, np.nan)
    y[0, :2] = 37.0 + mean[:2, 0]
    state = np.full_like(o.state, UNUSED)
    state[0, :2] = HEARD
    o = replace(o, y_db=y, state=state, cens_db=np.full_like(o.cens_db, np.nan))
    grid = search_grid(rmap.grid.area_km, 3.0)
    loc = RadioMapLocator(rmap, refine_factor=1, grid=grid)
    q = int(o.band[0])
    ref = loc.log_post_grid(loc.observations(o), q)[0]
    with torch.no_grad():
        got = model(*_net_inputs(o, net, grid.points_km)).double().numpy()[0]
    assert _tv(got, ref) <= 0.05
    modes = PosteriorMap.from_log_posterior(grid, got, net.frame).modes(3)
    assert len(modes) >= 2 and modes[1].mass > 0.1, modes


@pytest.mark.slow
def test_predictor_reproduces_radio_map_kriging(fitted) -> None:
    """Coarse-to-fine answers of the torch model equal radio_map_kriging's within a grid cell."""
    from heimdall.data.store import SessionStore

    rmap, net, tobs, model, test_uri = fitted
    meta = {"kind": "grid-posterior", "n_slots": len(net.receivers), "network": net.model_dump(mode="json"),
            "map_area_km": list(rmap.grid.area_km)}  # fmt: skip
    post = GridPosteriorPredictor(torch_runner(model), meta).posterior(SessionStore.open(test_uri).read_all())
    ref = RadioMapLocator(rmap).run(tobs)
    err_model = np.hypot(*(post.mean_km - tobs.pos_km).T)
    err_ref = np.hypot(*(ref.mean_km - tobs.pos_km).T)
    assert np.max(np.abs(err_model - err_ref)) < 2.0, (err_model, err_ref)
    assert np.max(np.abs(post.scores.hpd_level - ref.scores.hpd_level)) < 0.1


def test_move_gaussian_matches_moved_samples() -> None:
    """A covariance moved between distant frames equals the covariance of the moved samples (3 %)."""
    from heimdall.models.grid_predictor import move_gaussian
    from heimdall.network import LocalFrame

    src, dst = LocalFrame(45.0, 8.0), LocalFrame(0.0, 0.0)
    mean, cov = np.array([10.0, -20.0]), np.array([[400.0, 120.0], [120.0, 100.0]])
    pts = np.random.default_rng(0).multivariate_normal(mean, cov, 40_000)
    lat, lon = src.to_latlon(pts[:, 0], pts[:, 1])
    moved = np.stack(dst.to_local_km(lat, lon), axis=-1)
    m2, c2 = move_gaussian(mean, cov, src, dst)
    assert np.allclose(c2, np.cov(moved.T), rtol=0.03, atol=3.0)
    assert np.linalg.norm(c2 - cov) > 0.1 * np.linalg.norm(cov)  # the frame change matters here
    assert np.allclose(m2, np.stack(dst.to_local_km(*src.to_latlon(mean[:1], mean[1:])), axis=-1)[0])
