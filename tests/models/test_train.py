import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from heimdall.cli import main
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.models.config import TrainConfig, load_config
from heimdall.models.data import batch_tensors, iq_to_float
from heimdall.models.loss import beta_nll_loss
from heimdall.models.module import warmup_cosine
from heimdall.models.net import LocalizationNet, NetConfig
from heimdall.models.predict import Predictor, load_model, session_inputs, to_latlon_ellipses
from heimdall.models.train import run_training, time_limit
from heimdall.sim import World


def _write_config(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(cfg.to_yaml())
    return path


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(tiny_world: World) -> None:
    torch.manual_seed(0)
    batch = batch_tensors(tiny_world.simulate(8, 5), tiny_world.network.frame, tiny_world.n_samples)
    cfg = NetConfig(
        n_samples=tiny_world.n_samples, n_time=4, d_model=16, n_heads=2, n_layers=1, cnn_channels=4
    )
    net = LocalizationNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    inputs = (iq_to_float(batch["iq"]), batch["rx_pos"], batch["rx_mask"], batch["center_freq_hz"])
    losses = []
    for _ in range(25):
        mean, chol = net.forward_chol(*inputs)
        loss = beta_nll_loss(mean, chol, batch["truth_km"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < losses[0] - 1.0


def test_warmup_then_cosine() -> None:
    assert warmup_cosine(0, 10, 110, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.55)  # half-way: 0.1 + 0.9 * 0.5
    assert warmup_cosine(500, 10, 110, 0.1) == pytest.approx(0.1)


def test_session_inputs_contract(tiny_world: World) -> None:
    batch = tiny_world.simulate(3, 9)
    batch.rx_state[0, 2] = 0
    out = session_inputs(batch, tiny_world.network.frame, 2000)
    assert out["iq"].shape == (3, 7, 2000, 2) and out["iq"].dtype == np.float32
    assert out["rx_pos"].dtype == np.float32 and out["rx_mask"].dtype == bool
    assert out["center_freq_hz"].dtype == np.float32
    assert not out["rx_mask"][0, 2] and np.all(out["iq"][0, 2] == 0) and np.all(out["rx_pos"][0, 2] == 0)
    np.testing.assert_allclose(out["iq"][1, 0], batch.iq[1, 0, :2000] / 32768.0)
    east, north = tiny_world.network.positions_km[3]
    np.testing.assert_allclose(out["rx_pos"][1, 3], [east, north, tiny_world.network.heights_m[3]], atol=1e-4)


@pytest.fixture
def tiny_fit(
    tiny_config: TrainConfig, tmp_path: Path, capsys: pytest.CaptureFixture
) -> tuple[TrainConfig, str]:
    cfg = tiny_config.with_overrides(trainer={"max_epochs": 2})
    main(["train", "--config", str(_write_config(cfg, tmp_path / "tiny.yaml")), "--no-progress"])
    err = capsys.readouterr().err
    line = next(ln for ln in err.splitlines() if "MLflow run id:" in ln)
    return cfg, line.split(":")[-1].strip()


def test_tiny_fit_writes_a_readable_mlflow_run(
    tiny_fit: tuple[TrainConfig, str], tiny_world: World, net_inputs, assert_permutation_invariant
) -> None:
    cfg, run_id = tiny_fit
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.d_model"] == "16" and run.data.params["data.batch_size"] == "8"
    assert len(run.data.tags["dataset.val.hash"]) == 64 and run.data.tags["dataset.train.uri"].startswith(
        "sim://"
    )
    assert "git.commit" in run.data.tags and "version.torch" in run.data.tags
    history = client.get_metric_history(run_id, "val_nll")
    assert [m.step for m in history] == [0, 1]
    for key in ("train_nll", "val_median_error_km", "val_coverage_1sigma", "val_coverage_2sigma",
                "val_median_area_km2", "final_val_nll", "temperature"):  # fmt: skip
        assert key in run.data.metrics and np.isfinite(run.data.metrics[key])
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "network.yaml", "reference-world.yaml", "plots", "checkpoint", "model"} <= top
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/validation_map.png"}
    local = client.download_artifacts(run_id, "checkpoint/best.ckpt", str(Path(cfg.trainer.out_dir) / "dl"))
    model = load_model(local)
    assert float(model.temperature) == pytest.approx(run.data.metrics["temperature"], rel=1e-5)
    # the trained checkpoint is permutation invariant and predicts through the Predictor protocol
    with torch.no_grad():
        assert_permutation_invariant(model, net_inputs(4, 7, 5, model.config.n_samples), 1)
    batch = tiny_world.simulate(5, 4321)
    predictor = Predictor.from_checkpoint(local)
    mean, cov = predictor.predict(batch)
    assert mean.shape == (5, 2) and cov.shape == (5, 2, 2) and np.all(np.isfinite(cov))
    assert predictor.metadata["n_samples"] == tiny_world.n_samples
    assert predictor.frame.ref_lat_deg == tiny_world.network.reference.lat
    rows = to_latlon_ellipses(predictor.frame, mean, cov)
    lat, lon = predictor.frame.to_latlon(mean[0, 0], mean[0, 1])
    assert rows[0]["lat"] == pytest.approx(float(lat)) and rows[0]["lon"] == pytest.approx(float(lon))
    assert rows[0]["semi_major_m"] ** 2 == pytest.approx(1e6 * np.linalg.eigvalsh(cov[0])[1], rel=1e-6)


def test_resume_continues_from_the_saved_step(tiny_config: TrainConfig) -> None:
    first = run_training(tiny_config.with_overrides(trainer={"max_minutes": 10.0}), progress=False)
    last = Path(first.out_dir) / "last.ckpt"
    assert [r["step"] for r in first.history] == [3.0]
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    second = run_training(
        tiny_config.with_overrides(trainer={"max_epochs": 2}), resume=str(last), progress=False
    )
    assert [(r["epoch"], r["step"]) for r in second.history] == [(0.0, 3.0), (1.0, 6.0)]
    assert second.history[0] == first.history[0]
    assert (
        second.history[1]["train_seed_min"] > first.history[0]["train_seed_max"]
    )  # fresh sessions, not a replay
    assert Path(second.best_checkpoint).parent == Path(second.out_dir)
    # --max-minutes caps each invocation: the time already spent (Lightning's timer state) is added
    spent_s = sum(ckpt["callbacks"]["Timer"]["time_elapsed"].values())
    assert spent_s > 0 and time_limit(2.0, str(last)) == timedelta(minutes=2, seconds=spent_s)
    assert time_limit(2.0, None) == timedelta(minutes=2) and time_limit(None, str(last)) is None


def test_training_from_a_stored_set(
    tiny_config: TrainConfig, tiny_world: World, tmp_path: Path, make_store
) -> None:
    train_uri = make_store(tmp_path / "train", tiny_world, 24, 5)
    result = run_training(tiny_config.with_overrides(data={"train": train_uri}), progress=False)
    assert (
        result.history[0]["step"] == 3.0 and result.history[0]["train_seed_min"] == 5
    )  # the stored set's seed
    run = mlflow.MlflowClient(tracking_uri=tiny_config.tracking.uri).get_run(result.run_id)
    assert run.data.tags["dataset.train.uri"] == train_uri
    assert run.data.tags["dataset.train.hash"] == SessionStore.open(train_uri).content_hash()


def test_a_stored_set_of_another_world_is_refused(
    tiny_config: TrainConfig, world: World, tmp_path: Path, make_store
) -> None:
    other = make_store(tmp_path / "full-length", world, 3, 1001)  # 1 s captures, the config trains on 0.25 s
    with pytest.raises(HeimdallError, match="another world"):
        run_training(tiny_config.with_overrides(data={"val": other}), progress=False)


def test_bad_config_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"d_modle": 8}}))
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "d_modle" in err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in capsys.readouterr().err
    assert load_config(_write_config(TrainConfig(), tmp_path / "ok.yaml")) == TrainConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  d_model: 48\n  n_heads: 5\n", "d_model (48) must be a multiple of n_heads (5)"),
        ("", "expected a mapping of sections, got NoneType"),  # an empty file is not the defaults
        ("- model\n", "expected a mapping of sections, got list"),
    ],
)
def test_config_that_cannot_build_a_model_is_refused_on_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(HeimdallError, match=re.escape(message)):
        load_config(path)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_tiny_fit_through_a_real_mlflow_server(tiny_config: TrainConfig, tmp_path: Path) -> None:
    port = _free_port()
    exe = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen(
        [exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        result = run_training(tiny_config.with_overrides(tracking={"uri": url}), progress=False)
        client = mlflow.MlflowClient(tracking_uri=url)
        run = client.get_run(result.run_id)
        assert run.info.status == "FINISHED" and "final_val_nll" in run.data.metrics
        assert {"checkpoint", "plots"} <= {a.path for a in client.list_artifacts(result.run_id)}
        assert any((tmp_path / "server-artifacts").rglob("best.ckpt"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_ddp_two_cpu_processes_run_an_epoch(tiny_config: TrainConfig, tmp_path: Path) -> None:
    cfg = _write_config(tiny_config.with_overrides(data={"batches_per_epoch": 4}), tmp_path / "ddp.yaml")
    exe = str(Path(sys.executable).parent / "heimdall")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [exe, "train", "--config", str(cfg), "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
         "--no-progress"],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    run_id = next(ln for ln in out.stderr.splitlines() if "MLflow run id:" in ln).split(":")[-1].strip()
    run = mlflow.MlflowClient(tracking_uri=tiny_config.tracking.uri).get_run(run_id)
    assert [m.step for m in mlflow.MlflowClient(tracking_uri=tiny_config.tracking.uri).get_metric_history(
        run_id, "val_nll")] == [0]  # fmt: skip
    assert run.data.metrics["sessions_seen"] == 4 * 8  # 2 batches per rank x 2 ranks x 8 sessions
