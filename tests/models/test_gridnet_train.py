"""GridPosteriorNet pretraining: the loss's normalisation, learning a planted exponent, checkpoint, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from heimdall.errors import HeimdallError
from heimdall.maps.config import MapsConfig
from heimdall.models.gridnet import GridPosteriorNet
from heimdall.models.gridnet_config import GridNetConfig, is_gridnet_config, load_gridnet_config
from heimdall.models.gridnet_inputs import INPUT_NAMES
from heimdall.models.gridnet_train import (
    GridTrainResult,
    joint_nll,
    load_gridnet,
    load_sessions,
    log_scores,
    run_gridnet_training,
)
from heimdall.models.predict import read_checkpoint
from heimdall.sim.propagation import median_path_loss_db
from heimdall.sim.world import load_world

#: The planted error: training starts from n_far = 2.5 in a world whose n_far is 4.0 (reference world).
START_N_FAR = 2.5


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _tiny_config(root: Path) -> GridNetConfig:
    return GridNetConfig.model_validate({
        "name": "tiny-gridnet",
        "data": {"network": "nw-italy", "world_seed": 1000, "duration_s": 0.05, "train": str(root / "train"),
                 "train_sessions": 96, "val": str(root / "val"), "val_sessions": 64, "n_slots": 8},
        "start": {"exponents": [2.0, START_N_FAR]},
        "optim": {"lr": 0.2, "batch_size": 16, "batches_per_epoch": 4, "grid_step_km": 10.0},
        "trainer": {"max_epochs": 5, "patience": 5, "out_dir": str(root / "runs")},
        "tracking": {"uri": f"sqlite:///{root / 'mlruns.db'}", "experiment": "tiny-gridnet"},
    })  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[GridNetConfig, GridTrainResult]:
    torch.set_num_threads(1)
    cfg = _tiny_config(tmp_path_factory.mktemp("gridnet"))
    return cfg, run_gridnet_training(cfg, progress=False)


class _Gaussian(torch.nn.Module):
    """A stand-in log posterior: isotropic Gaussian at ``centre`` with σ ``sigma`` (km), plus a constant."""

    def __init__(self, centre: tuple[float, float], sigma: float) -> None:
        super().__init__()
        self.centre = torch.tensor(centre)
        self.sigma = sigma

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        points = inputs[INPUT_NAMES.index("points_km")]
        return 7.0 - torch.sum((points - self.centre) ** 2, dim=-1) / (2 * self.sigma**2)


def test_log_score_is_a_density_per_km2() -> None:
    """On a fine grid the score equals the closed-form log density of the Gaussian at the truth."""
    from heimdall.posterior.grid import search_grid

    sigma, centre, truth = 6.0, (3.0, -4.0), (9.0, 2.0)
    grid = search_grid((-60.0, 60.0, -50.0, 70.0), 1.0)
    g = len(grid.points_km)
    points = np.concatenate([grid.points_km, [truth]])[None].astype(np.float32)
    batch = {n: torch.zeros(1, 1) for n in INPUT_NAMES}
    batch.update(points_km=torch.from_numpy(points), mask=torch.ones(1, g, dtype=torch.bool),
                 log_cell_km2=torch.tensor([math.log(grid.cell_area_km2)]))  # fmt: skip
    score, log_mass = log_scores(_Gaussian(centre, sigma), batch)
    r2 = (truth[0] - centre[0]) ** 2 + (truth[1] - centre[1]) ** 2
    expected = -math.log(2 * math.pi * sigma**2) - r2 / (2 * sigma**2)
    assert float(score[0]) == pytest.approx(expected, abs=1e-3)
    assert float(torch.logsumexp(log_mass, dim=1)[0]) == pytest.approx(0.0, abs=1e-5)
    # padded (masked) points carry no mass
    batch["mask"][0, : g // 2] = False
    _, log_mass = log_scores(_Gaussian(centre, sigma), batch)
    assert torch.all(torch.isinf(log_mass[0, : g // 2]))


#: Parameters of the no-map likelihood in the quadrature test (dimensionless exponents, dB).
_LAW = {"n_near": 2.1, "n_far": 3.8, "clutter": 13.0, "band": 2.5, "sigma": 8.5, "tau": 3.0}


def _independent_mu(d_km: np.ndarray, h_m: float, band: int) -> np.ndarray:
    """μ = −L(d, h) − clutter + 70 cm offset (dB), L the simulator's median path loss at 1 MHz, 20 m masts."""
    p = _LAW
    loss = median_path_loss_db(d_km, 1.0, h_m, 20.0, p["n_near"], p["n_far"], 4.0 / 3.0)
    return -loss - p["clutter"] + p["band"] * band


def _independent_log_likelihood(y: np.ndarray, t: np.ndarray, d_heard: np.ndarray, d_silent: np.ndarray,
                                band: int) -> float:  # fmt: skip
    """log p(y, silent | x) by quadrature: P0 uniform on [27, 47] dBm, height uniform on [1.5, 10] m.

    Heard receivers N(y; P0 + μ, s²), silent ones Φ((t − P0 − μ) / s), s² = σ_f² + τ².
    """
    from scipy.integrate import quad
    from scipy.stats import norm

    s = math.hypot(_LAW["sigma"], _LAW["tau"])
    x, w = np.polynomial.legendre.leggauss(4)  # the height integral: 4-node Gauss-Legendre
    total = 0.0
    for h, wk in zip(5.75 + 4.25 * x, w / 2.0, strict=True):
        m_h, m_s = _independent_mu(d_heard, h, band), _independent_mu(d_silent, h, band)

        def integrand(p0: float, m_h: np.ndarray = m_h, m_s: np.ndarray = m_s) -> float:
            return float(np.prod(norm.pdf(y, p0 + m_h, s)) * np.prod(norm.cdf((t - p0 - m_s) / s)))

        total += wk * quad(integrand, 27.0, 47.0, epsabs=0.0, epsrel=1e-10, limit=200)[0] / 20.0
    return math.log(total)


@pytest.mark.parametrize("band", [0, 1])
@pytest.mark.parametrize("p0_dbm", [37.0, 2.0], ids=["power-in-range", "power-far-below-range"])
def test_joint_nll_is_the_measurement_likelihood_at_the_truth(band: int, p0_dbm: float) -> None:
    """−log p(y | x_true) against quadrature over P0 and height, up to the data-only constants it drops.

    Three heard receivers and a silent one; the heard powers put P0 inside its range or
    far below it (then P0 given them is a sharp edge with a short tail: the censored term's
    quadrature must follow it).
    """
    p = _LAW
    model = GridPosteriorNet(MapsConfig(
        prior_exponents=(p["n_near"], p["n_far"]), prior_clutter_db=p["clutter"],
        prior_sigma_db=p["sigma"], prior_nugget_db=p["tau"],
    ))  # fmt: skip
    with torch.no_grad():
        model.band_offset_db.fill_(p["band"])
    rx = np.array([[0.0, 0.0], [40.0, 5.0], [-20.0, 30.0], [10.0, -60.0]])
    truth = np.array([12.0, 9.0])
    d = np.hypot(*(rx - truth).T)
    y = p0_dbm + _independent_mu(d[:3], 5.0, band) + np.array([3.0, -4.0, 2.0])  # heard 0-2
    t = p0_dbm + _independent_mu(d[3:], 5.0, band) + 6.0  # receiver 3 silent below its threshold
    batch = {
        "y_db": torch.tensor([[*y, 0.0]], dtype=torch.float32),
        "state": torch.tensor([[1, 1, 1, 2]]),
        "cens_db": torch.tensor([[0.0, 0.0, 0.0, *t]], dtype=torch.float32),
        "rx_km": torch.tensor(rx[None], dtype=torch.float32),
        "rx_height_m": torch.full((1, 4), 20.0),
        "band": torch.tensor([band]),
        "points_km": torch.tensor(truth[None, None], dtype=torch.float32),
    }
    with torch.no_grad():
        got = float(joint_nll(model, batch)[0])
    want = -_independent_log_likelihood(y, t, d[:3], d[3:], band)
    # the graph drops (2π)^{−(n−1)/2} of the n heard Gaussians and the uniform P0 density 1/20 dB⁻¹
    dropped = -(len(y) - 1) / 2 * math.log(2 * math.pi) - math.log(20.0)
    assert got == pytest.approx(want + dropped, abs=5e-3)


@pytest.mark.slow
def test_training_moves_n_far_to_the_planted_truth(trained) -> None:
    _, result = trained
    truth = load_world().path_loss_exponent_far
    assert truth == pytest.approx(4.0) and result.start_parameters["n_far"] == pytest.approx(START_N_FAR)
    learnt = result.parameters["n_far"]
    # at least a third of the way from 3.0 towards 4.0, and not past the physical range
    assert learnt - START_N_FAR >= 0.33 * (truth - START_N_FAR), result.history
    assert abs(learnt - truth) < 0.7 * abs(START_N_FAR - truth)
    assert result.parameters["n_near"] >= 1.5 and learnt >= result.parameters["n_near"]
    # validation log score (nats, density per km²) improves over the start
    assert result.val_metrics["log_score"] > result.start_val_metrics["log_score"] + 0.02
    assert 5.0 < result.val_metrics["median_error_km"] < 100.0


@pytest.mark.slow
def test_log_score_loss_trains_by_adam_on_grid_batches(trained, tmp_path: Path) -> None:
    """``optim.loss: log_score``: Adam on grid mini-batches; the state kept has the best val log score."""
    cfg, _ = trained
    cfg = cfg.with_overrides(
        optim={"loss": "log_score"}, trainer={"max_epochs": 2, "out_dir": str(tmp_path / "runs")}
    )
    result = run_gridnet_training(cfg, progress=False)
    assert len(result.history) == 2
    assert result.history[-1]["n_far"] > START_N_FAR + 0.05, result.history  # moved towards 4.0
    best = max(row["val_log_score"] for row in result.history)
    assert result.val_metrics["log_score"] == pytest.approx(max(best, result.start_val_metrics["log_score"]))


@pytest.mark.slow
def test_checkpoint_reads_safely_and_gives_the_trained_posterior(trained) -> None:
    cfg, result = trained
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt["kind"] == "grid-posterior"
    meta = ckpt["metadata"]
    assert meta["parameters"] == pytest.approx(result.parameters)
    assert meta["dataset_hash"] and meta["world_seeds"] == "1000" and meta["n_slots"] == 8
    loaded, metadata = load_gridnet(result.checkpoint)
    assert metadata["val_metrics"] == pytest.approx(result.val_metrics)
    # the same posterior as the trained module, and as a net built from the recorded physical values
    p = meta["parameters"]
    rebuilt = GridPosteriorNet(MapsConfig.model_validate({
        **ckpt["maps_config"], "prior_exponents": (p["n_near"], p["n_far"]),
        "prior_clutter_db": p["clutter_db"], "prior_sigma_db": p["field_sigma_db"],
        "prior_nugget_db": p["nugget_db"],
    }))  # fmt: skip
    with torch.no_grad():
        rebuilt.band_offset_db.fill_(p["band_offset_db"])
    from heimdall.data.store import SessionStore

    val = load_sessions(SessionStore.open(cfg.data.val), 6, cfg.data.n_slots, 10.0)
    batch = val.collate(np.arange(6))
    with torch.no_grad():
        want = log_scores(result.model, batch)[1]
        for model in (loaded, rebuilt):
            got = log_scores(model, batch)[1]
            finite = torch.isfinite(want)
            assert torch.equal(finite, torch.isfinite(got))
            assert torch.allclose(got[finite], want[finite], atol=1e-4)
    with pytest.raises(HeimdallError, match="not a grid-posterior model"):
        bad = Path(result.checkpoint).with_name("other.pt")
        torch.save({"kind": "localization"}, bad)
        load_gridnet(bad)


@pytest.mark.slow
def test_run_is_tracked_in_mlflow(trained) -> None:
    import mlflow

    cfg, result = trained
    client = mlflow.MlflowClient(cfg.tracking.uri)
    run = client.get_run(result.run_id)
    assert run.data.metrics["final_val_log_score"] == pytest.approx(result.val_metrics["log_score"])
    assert run.data.metrics["learnt_n_far"] == pytest.approx(result.parameters["n_far"])
    assert run.data.tags["dataset.train.hash"]
    names = {a.path for a in client.list_artifacts(result.run_id)} | {
        a.path for a in client.list_artifacts(result.run_id, "model")
    }
    assert {"config.yaml", "model/gridnet.pt"} <= names


@pytest.mark.slow
def test_cli_train_dispatches_on_kind(trained, tmp_path: Path, capsys) -> None:
    from heimdall.cli import main

    cfg, _ = trained
    data = cfg.with_overrides(trainer={"max_epochs": 1}, optim={"batches_per_epoch": 1}).model_dump(
        mode="json"
    )
    path = tmp_path / "gridnet.yaml"
    path.write_text(yaml.safe_dump(data))
    assert is_gridnet_config(path)
    main(["train", "--config", str(path), "--no-progress", "--summary", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert "n_far" in out and "val log_score" in out
    assert Path(yaml.safe_load((tmp_path / "s.json").read_text())["checkpoint"]).is_file()


def test_config_refuses_test_worlds_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("kind: grid-posterior\ndata:\n  world_seed: 0-1999\n")
    with pytest.raises(HeimdallError, match=r"bad\.yaml.*data\.world_seed.*test worlds"):
        load_gridnet_config(path)
    path.write_text("kind: grid-posterior\noptim:\n  lrr: 0.1\n")
    with pytest.raises(HeimdallError, match=r"optim\.lrr"):
        load_gridnet_config(path)
    assert not is_gridnet_config(Path(__file__).parents[2] / "configs" / "quick.yaml")
    assert (
        load_gridnet_config(Path(__file__).parents[2] / "configs" / "gridnet.yaml").data.world_seed
        == "1000-1999"
    )


@pytest.mark.slow
def test_export_run_latest_of_the_gridnet_experiment(trained, tmp_path: Path, capsys) -> None:
    """``export --run latest --config gridnet.yaml`` finds the run's checkpoint in the config's experiment."""
    import mlflow

    from heimdall.cli import main
    from heimdall.export.predictor import load_predictor

    cfg, _ = trained
    path = tmp_path / "gridnet.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    main(["export", "--run", "latest", "--config", str(path), "--out", str(tmp_path / "onnx")])
    capsys.readouterr()
    pred = load_predictor(str(tmp_path / "onnx" / "model.onnx"))
    client = mlflow.MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    newest = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[
        0
    ]
    assert pred.metadata["training"]["mlflow_run_id"] == newest.info.run_id  # other tests may train later
    learnt = pred.metadata["model"]["parameters"]["n_far"]
    assert learnt == pytest.approx(newest.data.metrics["learnt_n_far"], abs=1e-5)
    assert pred.metadata["dataset_hash"] and pred.metadata["world_seed"] == "1000"
