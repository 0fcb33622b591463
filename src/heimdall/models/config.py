"""Training configuration: typed, loaded from YAML (``configs/quick.yaml``, ``configs/full.yaml``).

Every section has defaults; a YAML file gives only what it changes. Unknown keys are
errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heimdall.errors import HeimdallError, describe_validation_error

#: On-the-fly training sessions use session seeds from here up, never colliding with stored sets'.
TRAIN_SEED_BASE = 1_000_000
#: Stride of the training seed range per config seed.
TRAIN_SEED_STRIDE = 100_000_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """Architecture (see :class:`heimdall.models.net.NetConfig`)."""

    n_fft: int = Field(128, ge=16)
    n_time: int = Field(16, ge=1)
    n_bins: int = Field(32, ge=2)
    binning: Literal["linear", "mel"] = "linear"
    use_spectrogram: bool = True
    d_model: int = Field(64, ge=8)
    n_heads: int = Field(4, ge=1)
    n_layers: int = Field(2, ge=0)
    cnn_channels: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    chol_scale_km: float = Field(20.0, gt=0.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSection:
        if self.d_model % self.n_heads:  # each attention head takes d_model / n_heads features
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        return self


class DataSection(_Section):
    """Where sessions come from."""

    network: str = "nw-italy"
    world: str | None = None
    world_seed: int | str = Field(
        0,
        description="A world seed, a range such as '0-99' or 'random' "
        "(a world drawn per batch from that family).",
    )
    duration_s: float | None = Field(None, gt=0.0)
    train: str | None = None
    val: str = "data/ref-val"
    val_sessions: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    batches_per_epoch: int = Field(50, ge=1)
    echo: int = Field(1, ge=1)
    num_workers: int = Field(1, ge=0)
    norm_sessions: int = Field(256, ge=8)


class OptimSection(_Section):
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio`` × lr."""

    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.05, ge=0.0, le=1.0)
    grad_clip: float = Field(1.0, gt=0.0)
    beta_nll: float = Field(0.0, ge=0.0, le=1.0)


class TrainerSection(_Section):
    """Lightning trainer settings."""

    max_epochs: int = Field(20, ge=1)
    max_minutes: float | None = Field(None, gt=0.0)
    patience: int = Field(10, ge=1)
    accelerator: str = "auto"
    devices: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "auto"
    out_dir: str = "runs"
    cpu_threads: int | None = Field(None, ge=1)  # torch threads; None: cores left after the data workers
    calibrate: bool = True


class TrackingSection(_Section):
    """MLflow: tracking URI (None: ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlruns.db``)."""

    uri: str | None = None
    experiment: str = "heimdall"
    run_name: str | None = None


class TrainConfig(_Section):
    """The whole resolved training configuration."""

    name: str = "heimdall"
    seed: int = Field(0, ge=0)
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    trainer: TrainerSection = TrainerSection()
    tracking: TrackingSection = TrackingSection()

    def to_yaml(self) -> str:
        """Resolved configuration as YAML (logged beside every run)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_overrides(self, **sections: dict[str, Any]) -> TrainConfig:
        """A copy with some fields of some sections changed, e.g. ``trainer={"max_epochs": 2}``."""
        data = self.model_dump()
        for name, changes in sections.items():
            data[name] = {**data[name], **{k: v for k, v in changes.items()}}
        return _validate(data, "<overrides>")

    @property
    def train_seed_base(self) -> int:
        """First session seed of on-the-fly training data for this config seed."""
        return TRAIN_SEED_BASE + self.seed * TRAIN_SEED_STRIDE


def _validate(data: Any, source: str) -> TrainConfig:
    if not isinstance(data, dict):
        raise HeimdallError(f"config {source!r}: expected a mapping of sections")
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise HeimdallError(f"config {source!r}: {describe_validation_error(exc)}") from None


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of a config file (None when empty).

    Unreadable or invalid files raise HeimdallError naming the file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise HeimdallError(f"config {str(path)!r}: cannot read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HeimdallError(f"config {str(path)!r}: not valid YAML ({exc})") from None


def load_config(path: str | Path) -> TrainConfig:
    """Load a training config YAML; bad files raise HeimdallError naming the file and field."""
    data = read_yaml(path)
    if not isinstance(data, dict):  # empty, or a list / scalar: not a config (defaults are no answer)
        raise HeimdallError(
            f"config {str(path)!r}: expected a mapping of sections, got {type(data).__name__}"
        )
    return _validate(data, str(path))
