"""No code runs from model files: checkpoints carrying a pickled callable are refused everywhere.

Each payload, unpickled by plain ``pickle`` (or ``torch.load(weights_only=False)``), creates
a marker file; the test first proves that, then feeds the file to every command that loads
models (``evaluate``, ``export``, ``locate``, ``serve``, ``train --resume``) and to the
loaders they use, and checks the refusal (exit status 2, the file named) and that the
marker was never created.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from heimdall.cli import main
from heimdall.errors import HeimdallError
from heimdall.models.config import TrainConfig
from heimdall.models.net import LocalizationNet, NetConfig
from heimdall.models.predict import (
    CKPT_KEY,
    load_model,
    model_from_state,
    model_state,
    read_checkpoint,
    save_model,
)
from heimdall.models.train import time_limit


class _OpenFile:
    """Unpickling this calls ``open(path, "w")``: the file appears."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


class _System:
    """Unpickling this runs a shell command that creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch '{self.path}'",))


def _tiny_state() -> dict:
    net = LocalizationNet(
        NetConfig(n_samples=600, n_time=2, d_model=8, n_heads=2, n_layers=1, cnn_channels=2),
        metadata={"ref_lat": 45.0, "ref_lon": 9.0, "sample_rate_hz": 12000.0, "n_samples": 600},
    )
    return model_state(net)


def _save_torch(payload: object, path: Path) -> None:
    """A model file whose Heimdall state is valid but which also carries ``payload``."""
    torch.save({CKPT_KEY: _tiny_state(), "callbacks": {"Timer": payload}, "epoch": 0}, path)


def _save_pickle(payload: object, path: Path) -> None:
    """A legacy (non-zip) pickle file holding only ``payload``."""
    path.write_bytes(pickle.dumps({"state_dict": payload}, protocol=2))


PAYLOADS = {"open": _OpenFile, "os.system": _System}
WRITERS: dict[str, Callable[[object, Path], None]] = {"torch.save": _save_torch, "pickle": _save_pickle}


@pytest.fixture(params=[(p, w) for p in PAYLOADS for w in WRITERS], ids=lambda pw: f"{pw[0]}-{pw[1]}")
def evil(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """(checkpoint file, marker it would create); the payload is proven live on a twin file first."""
    payload_kind, writer_kind = request.param
    make, write = PAYLOADS[payload_kind], WRITERS[writer_kind]
    twin_marker = tmp_path / "twin-marker"
    twin = tmp_path / "twin.ckpt"
    write(make(twin_marker), twin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the unsafe load the project must not do
            torch.load(twin, map_location="cpu", weights_only=False)
        except RuntimeError:  # "invalid magic number": a bare pickle, but reading it ran the payload
            pass
    assert twin_marker.exists(), "the payload must be live, else this test proves nothing"
    marker = tmp_path / "marker"
    path = tmp_path / "evil.ckpt"
    write(make(marker), path)
    return path, marker


def _refused(argv: list[str], capsys: pytest.CaptureFixture, name: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert name in err, err
    assert "Traceback" not in err
    return err


def test_loaders_refuse_and_name_the_file(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    with pytest.raises(HeimdallError, match="refused") as exc:
        load_model(path)
    assert str(path) in str(exc.value)
    with pytest.raises(HeimdallError, match="--resume checkpoint"):
        time_limit(5.0, str(path))
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--model", "{ckpt}", "--data", "{tmp}/absent-store", "--out", "{tmp}/report"],
        ["export", "--checkpoint", "{ckpt}", "--out", "{tmp}/exported"],
        ["locate", "{tmp}/absent-store#0", "--model", "{ckpt}"],
        ["serve", "--model", "{ckpt}", "--port", "1"],
    ],
    ids=["evaluate", "export", "locate", "serve"],
)
def test_commands_refuse_a_pickle_payload(
    evil: tuple[Path, Path], argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, marker = evil
    _refused([a.format(ckpt=path, tmp=tmp_path) for a in argv], capsys, path.name)
    assert not marker.exists()
    assert not (tmp_path / "exported").exists() and not (tmp_path / "report").exists()


def test_serve_refuses_a_pickle_named_onnx(evil: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    path, marker = evil
    disguised = path.with_name("model.onnx")
    path.rename(disguised)
    _refused(["serve", "--model", str(disguised), "--port", "1"], capsys, "model.onnx")
    assert not marker.exists()


def test_train_resume_refuses_a_pickle_payload(
    evil: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = evil
    monkeypatch.chdir(tmp_path)  # nothing may be written (no MLflow database, no runs folder)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(TrainConfig().model_dump(mode="json")))
    err = _refused(
        ["train", "--config", str(config), "--resume", str(path), "--no-progress"], capsys, path.name
    )
    assert "--resume" in err
    assert not marker.exists()
    assert not (tmp_path / "mlruns.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_export_refuses_a_pickle_payload_from_an_mlflow_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run artifact ``model/model.pt`` (what ``--run`` downloads) is read as plain data only."""
    from mlflow.tracking import MlflowClient

    path, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    _save_torch(_System(marker), path)
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("heimdall", str(tmp_path / "artifacts")))
    staged = tmp_path / "stage" / "model.pt"
    staged.parent.mkdir()
    staged.write_bytes(path.read_bytes())
    client.log_artifact(run.info.run_id, str(staged), "model")
    client.set_terminated(run.info.run_id)
    _refused(["export", "--run", "latest", "--out", str(tmp_path / "exported"), "--tracking-uri", uri],
             capsys, "model.pt")  # fmt: skip
    assert not marker.exists() and not (tmp_path / "exported").exists()


def test_saved_models_are_plain_data(tmp_path: Path) -> None:
    """What the project writes loads under weights_only=True and rebuilds the same network."""
    state = _tiny_state()
    net = model_from_state(state)
    save_model(net, tmp_path / "model.pt")
    raw = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert set(raw) == {"config", "norm", "metadata", "state_dict"}
    again = load_model(tmp_path / "model.pt")
    for key, value in net.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    assert read_checkpoint(tmp_path / "model.pt")["metadata"] == state["metadata"]


def test_missing_and_non_mapping_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(HeimdallError, match="does not exist"):
        load_model(tmp_path / "absent.ckpt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(HeimdallError, match="not a checkpoint"):
        load_model(tmp_path / "list.pt")
