"""A tiny model trained through the training API (a few steps on 0.25 s captures) for the export tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from heimdall.models.config import TrainConfig
from heimdall.models.net import LocalizationNet
from heimdall.models.predict import load_model
from heimdall.models.train import run_training
from heimdall.sim.simulate_job import run_simulation

DURATION_S = 0.25


@dataclass(frozen=True)
class Trained:
    """A trained checkpoint, its MLflow run and tracking URI, and its validation store."""

    checkpoint: Path
    run_id: str
    tracking_uri: str
    val_uri: str
    root: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    val = str(root / "val")
    run_simulation(
        out=val,
        network="nw-italy",
        sessions=12,
        world_seed=0,
        seed=7,
        duration_s=DURATION_S,
        shard_size=12,
        workers=1,
    )
    tracking = f"sqlite:///{root / 'mlruns.db'}"
    cfg = TrainConfig.model_validate(
        {
            "name": "export-test",
            "seed": 0,
            "model": {
                "n_fft": 64,
                "n_time": 8,
                "n_bins": 16,
                "d_model": 16,
                "n_heads": 2,
                "n_layers": 1,
                "cnn_channels": 4,
            },
            "data": {
                "duration_s": DURATION_S,
                "val": val,
                "batch_size": 8,
                "batches_per_epoch": 3,
                "num_workers": 0,
                "norm_sessions": 8,
            },
            "optim": {"warmup_steps": 1},
            "trainer": {"max_epochs": 1, "accelerator": "cpu", "out_dir": str(root / "runs")},
            "tracking": {"uri": tracking, "experiment": "export-test"},
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow's default artifact root is ./mlruns
        result = run_training(cfg, progress=False)
    assert result.run_id is not None
    return Trained(Path(result.best_checkpoint), result.run_id, tracking, val, root)


@pytest.fixture(scope="session")
def trained_model(trained: Trained) -> LocalizationNet:
    return load_model(trained.checkpoint)
