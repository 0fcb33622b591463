"""The grid-posterior model in ONNX: parity with PyTorch and with the numpy grid posterior, the map in
the graph and on the model card, ``export --map``, ``evaluate --model --labelled``, ``locate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from heimdall.cli import main
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.eval.evaluate import evaluate_store
from heimdall.eval.metrics import errors_km
from heimdall.export.grid_onnx import export_grid_model, grid_metadata, onnx_runner, random_observations
from heimdall.export.job import run_export
from heimdall.export.predictor import load_predictor
from heimdall.maps.artifact import load_map
from heimdall.maps.config import MapsConfig
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.job import fit_map_from_store
from heimdall.maps.observations import observations_from_store
from heimdall.models.grid_predictor import KIND, GridPosteriorPredictor, map_prior
from heimdall.models.gridnet import GridPosteriorNet, gridnet_description
from heimdall.posterior.grid import search_grid
from heimdall.posterior.likelihood import log_posterior_grid
from heimdall.sim.simulate_job import run_simulation

torch.set_num_threads(1)
POSTERIOR_KEYS = (
    "median_km", "map_median_km", "hpd_coverage_50", "hpd_coverage_90", "hpd90_area_km2_median", "log_score",
)  # fmt: skip


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = np.exp(a - a.max()), np.exp(b - b.max())
    return float(0.5 * np.abs(pa / pa.sum() - pb / pb.sum()).sum())


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Labelled and test stores of world 13, a fitted map (``map fit``), a grid-posterior checkpoint."""
    root = tmp_path_factory.mktemp("gridx")
    lab, test = str(root / "lab"), str(root / "test")
    run_simulation(lab, "nw-italy", 200, world_seed=13, seed=3, duration_s=0.05, workers=1)
    run_simulation(test, "nw-italy", 6, world_seed=13, seed=4, duration_s=0.05, workers=1)
    tracking = f"sqlite:///{root}/ml.db"
    main(["map", "fit", lab, "--out", str(root / "map"), "--tracking-uri", tracking])
    model = GridPosteriorNet(MapsConfig())
    ckpt = root / "grid.pt"
    payload = {
        "kind": KIND, "state_dict": model.state_dict(), "maps_config": MapsConfig().model_dump(mode="json"),
        "metadata": {"note": "start values"},
    }  # fmt: skip
    torch.save(payload, ckpt)
    return {
        "root": root, "lab": lab, "test": test, "map": str(root / "map"), "ckpt": ckpt, "tracking": tracking,
    }  # fmt: skip


@pytest.mark.slow
def test_onnx_posterior_matches_the_numpy_grid_posterior(setup: dict) -> None:
    """ONNX with the map's fields vs PyTorch (TV ≤ 1e-3, the common field's soft power edges included)
    and, with the published range's hard edges, vs the numpy reference (64 power nodes): TV ≤ 0.05."""
    rmap, meta = load_map(setup["map"])
    assert rmap.hyper.common_var_db2 > 0.0
    reports = {}
    for edges in ("soft", "hard"):
        model = GridPosteriorNet(rmap.config)
        model.load_map(rmap)
        if edges == "hard":  # radio_map_kriging's numpy posterior keeps the hard edges
            model.map_common_var_db2 = 0.0
        reports[edges] = export_grid_model(
            model, str(setup["root"] / f"onnx-{edges}"),
            grid_metadata(model, len(rmap.network.receivers), {}, meta, "m"),
        )  # fmt: skip
        assert reports[edges].parity_max_tv <= 1e-3
    runner, _ = onnx_runner(reports["hard"].onnx_bytes, "test")
    soft_runner, _ = onnx_runner(reports["soft"].onnx_bytes, "test")
    tv_soft_hard = []
    obs, net = observations_from_store(setup["test"], rmap.network)
    grid = search_grid(rmap.grid.area_km, 3.0)
    loc = RadioMapLocator(rmap, refine_factor=1, grid=grid)
    for i in range(len(obs)):
        o = obs.select(np.array([i]))
        q = int(o.band[0])
        mean, var = loc._fields[q]
        ref = log_posterior_grid(mean, var[None], loc.observations(o), loc.power_range_dbm, loc.log_w,
                                 p0_nodes=64, prune_nats=1e9)[0]  # fmt: skip
        feeds = {
            "y_db": np.nan_to_num(o.y_db).astype(np.float32), "state": o.state.astype(np.int64),
            "cens_db": np.nan_to_num(o.cens_db).astype(np.float32),
            "rx_km": net.positions_km[None].astype(np.float32),
            "rx_height_m": net.heights_m[None].astype(np.float32),
            "band": o.band.astype(np.int64), "points_km": grid.points_km[None].astype(np.float32),
        }  # fmt: skip
        hard = np.asarray(runner(feeds), np.float64)[0]
        assert _tv(hard, ref) <= 0.05
        tv_soft_hard.append(_tv(np.asarray(soft_runner(feeds), np.float64)[0], hard))
    assert max(tv_soft_hard) > 1e-3, tv_soft_hard  # the soft edges are in the exported graph


def test_model_without_map_takes_any_number_of_receivers(tmp_path: Path) -> None:
    model = GridPosteriorNet(MapsConfig())
    report = export_grid_model(model, str(tmp_path / "m"), grid_metadata(model, 12, {"x": 1}))
    runner, meta = onnx_runner(report.onnx_bytes, "test")
    assert meta["kind"] == KIND and meta["model"] == json.loads(json.dumps(gridnet_description(model)))
    for r in (3, 9):
        feeds = random_observations(r, 2, 30, seed=r)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feeds[n]) for n in feeds)).numpy()
        got = runner(feeds)
        assert max(_tv(a, b) for a, b in zip(got, ref, strict=True)) < 1e-3


@pytest.mark.slow
def test_export_with_map_registers_the_labelled_data_and_locates(setup: dict, capsys) -> None:
    out = str(setup["root"] / "exported")
    main(["export", "--checkpoint", str(setup["ckpt"]), "--map", setup["map"], "--out", out,
          "--register", "grid", "--tracking-uri", setup["tracking"]])  # fmt: skip
    capsys.readouterr()
    pred = load_predictor("models:/grid@production", tracking_uri=setup["tracking"])
    assert isinstance(pred, GridPosteriorPredictor) and pred.has_map
    card = pred.metadata["radio_map"]
    assert card["n_labels"] > 100 and card["sources"] and card["uri"] == setup["map"]
    main(["locate", f"{setup['test']}#0", "--model", out + "/model.onnx", "--json"])
    answer = json.loads(capsys.readouterr().out)
    post = answer["posterior"]
    assert post["map"]["latitude"] and len(post["modes"]) >= 1 and post["hpd"]["0.9"]["area_km2"] > 0
    assert answer["posterior"]["hpd"]["0.9"]["geojson"]["type"] == "MultiPolygon"


def test_gaussian_export_refuses_a_map(setup: dict) -> None:
    """A map with too few labels has no fields: export --map says so."""
    from heimdall.maps.artifact import save_map
    from heimdall.maps.fit import fit_radio_map

    obs, net = observations_from_store(setup["lab"])
    save_map(fit_radio_map(obs.select(np.arange(5)), net, MapsConfig()), str(setup["root"] / "tiny"))
    with pytest.raises(HeimdallError, match="min_labels"):
        run_export(str(setup["root"] / "x"), checkpoint=setup["ckpt"], radio_map=str(setup["root"] / "tiny"))


@pytest.mark.slow
def test_evaluate_adapts_the_model_to_labelled_sessions(setup: dict, capsys) -> None:
    """--model + --labelled: the model takes the map ``map fit --model`` fits (its own law's shape)."""
    main(["evaluate", "--model", str(setup["ckpt"]), "--labelled", setup["lab"], "--data", setup["test"],
          "--baselines", "rss_ml", "--json", "--allow-overlap"])  # fmt: skip
    ests = json.loads(capsys.readouterr().out)["estimators"]
    for key in POSTERIOR_KEYS:
        assert ests["model"][key] is not None and ests["radio_map_kriging"][key] is not None
    batch = SessionStore.open(setup["test"]).read_all()
    base = load_predictor(str(setup["ckpt"]))
    assert isinstance(base, GridPosteriorPredictor) and not base.has_map
    assert base.posterior(batch).mean_km.shape == (6, 2)
    prior = map_prior(base.metadata)
    assert prior["pathloss_shape"] == "prior"
    own = fit_map_from_store(setup["lab"], prior=prior)
    res = evaluate_store(setup["test"], base.adapt(own), [])
    assert float(np.median(errors_km(res.estimates["model"], res.truth_km))) == pytest.approx(
        ests["model"]["median_km"], rel=1e-6
    )


def test_map_fit_takes_the_models_learnt_prior(setup: dict, tmp_path: Path, capsys) -> None:
    """``map fit --model M``: below min_labels the map is the model's learnt law and statistics."""
    model = GridPosteriorNet(MapsConfig())
    with torch.no_grad():
        model.n_far.fill_(3.3)
        model.log_field_sigma_db.fill_(float(np.log(7.5)))
    ckpt = tmp_path / "learnt.pt"
    torch.save({"kind": KIND, "state_dict": model.state_dict(),
                "maps_config": MapsConfig().model_dump(mode="json"), "metadata": {}}, ckpt)  # fmt: skip
    few = str(tmp_path / "few")
    run_simulation(few, "nw-italy", 6, world_seed=13, seed=5, duration_s=0.05, workers=1)
    main(["map", "fit", few, "--out", str(tmp_path / "m"), "--model", str(ckpt),
          "--tracking-uri", setup["tracking"]])  # fmt: skip
    capsys.readouterr()
    rmap, meta = load_map(str(tmp_path / "m"))
    assert rmap.coef is None and meta["hyper"]["sigma_db"] == pytest.approx(7.5, rel=1e-6)
    assert tuple(rmap.config.prior_exponents) == pytest.approx((2.0, 3.3), rel=1e-6)
    with pytest.raises(SystemExit):  # a missing model file: a clear error, exit 2
        main(["map", "fit", few, "--out", str(tmp_path / "g"), "--model", str(setup["root"] / "none.pt")])


def test_locate_with_a_checkpoint_answers_with_the_posterior(setup: dict, capsys) -> None:
    """A grid-posterior checkpoint (no map) locates a stored session in the session's own frame."""
    main(["locate", f"{setup['test']}#1", "--model", str(setup["ckpt"]), "--json"])
    answer = json.loads(capsys.readouterr().out)
    batch = SessionStore.open(setup["test"]).read([1])
    from heimdall.network.geodesy import geodesic_distance_km

    err = float(
        geodesic_distance_km(
            answer["latitude"], answer["longitude"], batch.tx_lat_deg[0], batch.tx_lon_deg[0]
        )
    )
    assert answer["truth"]["error_km"] == pytest.approx(err, abs=0.01)
    assert err < 200.0 and 0.0 < answer["truth"]["hpd_level"] <= 1.0  # a position in the network's region


def test_the_maps_detection_threshold_travels_with_the_model(setup: dict, tmp_path: Path) -> None:
    """A map fitted with its own detection threshold (10 dB here): the artifact keeps it, and the
    model adapted to it and the exported ONNX model measure new sessions with it (the map's states)."""
    from heimdall.maps.artifact import save_map
    from heimdall.maps.fit import fit_radio_map
    from heimdall.maps.observations import observations_from_batch

    obs, net = observations_from_store(setup["lab"], detection_snr_db=10.0)
    uri = str(tmp_path / "m10")
    save_map(fit_radio_map(obs, net, MapsConfig(detection_snr_db=10.0, iterations=2)), uri, [setup["lab"]])
    rmap, meta = load_map(uri)
    assert rmap.config.detection_snr_db == 10.0
    batch = SessionStore.open(setup["test"]).read_all()
    own = rmap.observe(batch)
    assert np.any(own.state != observations_from_batch(batch, net, labelled_only=False).state)
    model = GridPosteriorNet(rmap.config)
    model.load_map(rmap)
    export_grid_model(model, str(tmp_path / "onnx"), grid_metadata(model, len(net.receivers), {}, meta, uri))
    adapted = load_predictor(str(setup["ckpt"])).adapt(rmap, meta, uri)
    for pred in (adapted, load_predictor(str(tmp_path / "onnx" / "model.onnx"))):
        assert isinstance(pred, GridPosteriorPredictor) and pred.detection_snr_db == 10.0
        np.testing.assert_array_equal(pred.inputs(batch).state, own.state)
