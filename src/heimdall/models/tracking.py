"""MLflow logging of a training run: per-epoch metrics, final metrics, checkpoint and plots."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import numpy as np

from heimdall.errors import HeimdallError
from heimdall.models.ellipse import ellipse_polygon_km
from heimdall.network import Network

if TYPE_CHECKING:
    from heimdall.models.train import TrainResult


def check_run_folder(out_dir: str) -> None:
    """Refuse, before a run starts, a checkpoint folder it could not write into after training.

    Creates ``out_dir`` (and parents) and writes and removes a probe file there.

    Raises
    ------
    HeimdallError
        The folder cannot be created or written (a file in the way, read-only, no permission).

    """
    import tempfile

    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-probe-"):
            pass
    except OSError as exc:
        raise HeimdallError(
            f"checkpoint folder {out_dir!r} (--out-dir / trainer.out_dir): cannot write there "
            f"({exc.strerror or exc})"
        ) from None


class EpochLogger(L.Callback):
    """Log each finished epoch's row of the module's ``history`` to the MLflow run."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id
        self._logged = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        """Log rows not yet logged (step = epoch)."""
        history = getattr(pl_module, "history", [])
        client = mlflow.MlflowClient()
        for row in history[self._logged :]:
            epoch = int(row["epoch"])
            for key, value in row.items():
                if key not in ("epoch", "step") and np.isfinite(value):
                    client.log_metric(self.run_id, key, float(value), step=epoch)
        self._logged = len(history)


def plot_learning_curves(history: list[dict[str, float]], path: Path) -> None:
    """Train / validation NLL and validation errors per epoch."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [r["epoch"] for r in history]
    for key, label in (("train_nll", "train NLL"), ("val_nll", "val NLL")):
        ax1.plot(epochs, [r.get(key, np.nan) for r in history], marker="o", label=label)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("NLL (nats, km)")
    ax1.legend()
    for key, label in (("val_median_error_km", "median"), ("val_mean_error_km", "mean")):
        ax2.plot(epochs, [r.get(key, np.nan) for r in history], marker="o", label=f"val {label} error")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("km")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_validation_map(pred: dict[str, np.ndarray], network: Network, path: Path, n: int = 25) -> None:
    """Receivers, truths, predicted means and 1σ ellipses of the first ``n`` validation sessions."""
    fig, ax = plt.subplots(figsize=(7, 7))
    rx = network.positions_km
    ax.scatter(rx[:, 0], rx[:, 1], marker="^", s=80, c="k", label="receivers", zorder=3)
    for i in range(min(n, len(pred["mean_km"]))):
        m, c, t = pred["mean_km"][i], pred["cov_km2"][i], pred["truth_km"][i]
        poly = ellipse_polygon_km(m, c, 1.0)
        ax.plot(poly[:, 0], poly[:, 1], color=f"C{i % 10}", lw=1)
        ax.plot([m[0], t[0]], [m[1], t[1]], color=f"C{i % 10}", lw=0.6, ls=":")
        ax.scatter(*t, marker="x", color=f"C{i % 10}", s=25)
        ax.scatter(*m, marker="o", color=f"C{i % 10}", s=12)
    ax.set_xlabel("east (km)")
    ax.set_ylabel("north (km)")
    ax.set_aspect("equal")
    ax.set_title("validation: truth (x), mean (o), 1σ ellipse")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def log_final(result: TrainResult, pred: dict[str, np.ndarray], network: Network, tmp: Path) -> None:
    """Final (calibrated) validation metrics, the temperature, best checkpoint and plots."""
    mlflow.log_metrics({f"final_val_{k}": v for k, v in result.metrics.items()})
    mlflow.log_metrics({f"final_val_raw_{k}": v for k, v in result.raw_metrics.items()})
    mlflow.log_metrics({"temperature": result.temperature, "train_seconds": result.train_seconds,
                        "sessions_seen": float(result.sessions_seen)})  # fmt: skip
    if result.history:
        plot_learning_curves(result.history, tmp / "learning_curves.png")
        mlflow.log_artifact(str(tmp / "learning_curves.png"), "plots")
    plot_validation_map(pred, network, tmp / "validation_map.png")
    mlflow.log_artifact(str(tmp / "validation_map.png"), "plots")
    mlflow.log_artifact(result.best_checkpoint, "checkpoint")
    mlflow.log_artifact(str(Path(result.out_dir) / "model.pt"), "model")
