"""Configuration of GridPosteriorNet pretraining, typed and loaded from YAML (``configs/gridnet.yaml``).

The file's top-level ``kind: grid-posterior`` tells ``heimdall train`` to run
:func:`heimdall.models.gridnet_train.run_gridnet_training` instead of the LocalizationNet
job. Every section has defaults; unknown keys are errors (a typo must not silently fall
back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from heimdall.errors import HeimdallError, describe_validation_error
from heimdall.maps.config import MapsConfig
from heimdall.models.config import read_yaml
from heimdall.models.grid_predictor import KIND  # the job's and the checkpoint's kind
from heimdall.sim.family import WorldSeeds

#: World seeds below this are test worlds (0 = the reference world); training never draws them.
FIRST_TRAINING_WORLD_SEED = 1000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    """Stored training and validation sets, simulated by the job where missing.

    ``network`` is a packaged name, a YAML path or ``family:<name>``; ``world_seed`` one
    seed or a range ``"1000-1999"`` (never below 1000: those are test worlds).
    """

    network: str = "family:piemonte-liguria"
    world: str | None = None  # None: the packaged reference world
    world_seed: int | str = "1000-1999"
    duration_s: float = Field(0.1, gt=0.0, le=60.0)  # s; only the received power is used
    sessions_per_world: int = Field(32, ge=1)
    train: str = "data/gridnet-train"
    train_sessions: int = Field(1500, ge=2)
    train_seed: int = Field(3001, ge=0)
    val: str = "data/gridnet-val"
    val_sessions: int = Field(300, ge=2)
    val_seed: int = Field(3002, ge=0)
    n_slots: int = Field(12, ge=1)
    simulate_workers: int = Field(1, ge=1)

    @field_validator("world_seed")
    @classmethod
    def _training_worlds(cls, value: int | str) -> int | str:
        try:
            seeds = WorldSeeds.parse(value)
        except HeimdallError as exc:
            raise ValueError(str(exc)) from None
        if seeds.lo < FIRST_TRAINING_WORLD_SEED:
            first = FIRST_TRAINING_WORLD_SEED
            raise ValueError(f"world seeds below {first} are test worlds; never train on them")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> DataSection:
        if self.train == self.val:
            raise ValueError("train and val must be different stores")
        if self.train_seed == self.val_seed:
            raise ValueError("train_seed and val_seed must differ (the sets would hold the same sessions)")
        return self


class StartSection(_Section):
    """Start values of the no-map parameters and the fixed priors (a :class:`MapsConfig` subset).

    Units: dBm, m, dB; exponents are dimensionless (10 n dB per decade of distance).
    """

    power_range_dbm: tuple[float, float] = (27.0, 47.0)
    tx_height_range_m: tuple[float, float] = (1.5, 10.0)
    exponents: tuple[float, float] = (2.0, 4.0)
    clutter_db: float = Field(15.0, ge=0.0)
    field_sigma_db: float = Field(9.0, gt=0.0)
    nugget_db: float = Field(3.0, gt=0.0)

    def maps_config(self) -> MapsConfig:
        """The :class:`MapsConfig` GridPosteriorNet is built from."""
        return MapsConfig(
            power_range_dbm=self.power_range_dbm, tx_height_range_m=self.tx_height_range_m,
            prior_exponents=self.exponents, prior_clutter_db=self.clutter_db,
            prior_sigma_db=self.field_sigma_db, prior_nugget_db=self.nugget_db,
        )  # fmt: skip


class BoundsSection(_Section):
    """Physical range the parameters are projected onto after every step."""

    min_near_exponent: float = Field(1.5, gt=0.0)
    max_exponent: float = Field(6.0, gt=0.0)
    min_sigma_db: float = Field(0.5, gt=0.0)
    max_sigma_db: float = Field(30.0, gt=0.0)
    max_band_offset_db: float = Field(20.0, ge=0.0)  # |70 cm gain change| at most, dB


class OptimSection(_Section):
    """The training objective and its optimiser.

    ``loss: joint`` (the default) minimises the negative log-likelihood of the measured
    powers at the known transmitter position, transmit power and height integrated out
    (type-II maximum likelihood of the parameters): it needs the posterior at one point
    per session, so every training session is one full batch, optimised by L-BFGS
    (``lbfgs_iterations`` per epoch). ``loss: log_score`` minimises the negative log
    density of the normalised grid posterior at the truth, by Adam on mini-batches
    (``lr`` for the exponents and log σ's, ``lr_db`` for the dB offsets; cosine decay).
    """

    loss: Literal["joint", "log_score"] = "joint"
    lbfgs_iterations: int = Field(25, ge=1)
    lr: float = Field(0.05, gt=0.0)
    lr_db: float = Field(0.5, gt=0.0)
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)  # cosine decay to this fraction of lr, per step
    batch_size: int = Field(32, ge=1)
    batches_per_epoch: int = Field(10, ge=1)
    grid_step_km: float = Field(8.0, gt=0.0, le=50.0)  # training and validation grid step, km


class TrainerSection(_Section):
    """Lightning trainer settings."""

    max_epochs: int = Field(8, ge=1)
    patience: int = Field(3, ge=1)
    max_minutes: float | None = Field(None, gt=0.0)
    out_dir: str = "runs"
    cpu_threads: int = Field(1, ge=1)


class TrackingSection(_Section):
    """MLflow: tracking URI (None: ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlruns.db``)."""

    uri: str | None = None
    experiment: str = "heimdall-gridnet"
    run_name: str | None = None


class GridNetConfig(_Section):
    """The whole resolved pretraining configuration."""

    kind: Literal["grid-posterior"] = KIND
    name: str = "gridnet"
    seed: int = Field(0, ge=0)
    data: DataSection = DataSection()
    start: StartSection = StartSection()
    bounds: BoundsSection = BoundsSection()
    optim: OptimSection = OptimSection()
    trainer: TrainerSection = TrainerSection()
    tracking: TrackingSection = TrackingSection()

    def to_yaml(self) -> str:
        """Resolved configuration as YAML (logged beside every run)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def with_overrides(self, **sections: dict[str, Any]) -> GridNetConfig:
        """A copy with some fields of some sections changed, e.g. ``trainer={"max_epochs": 2}``."""
        data = self.model_dump()
        for name, changes in sections.items():
            data[name] = {**data[name], **changes}
        return _validate(data, "<overrides>")


def _validate(data: Any, source: str) -> GridNetConfig:
    if not isinstance(data, dict):
        raise HeimdallError(f"config {source!r}: expected a mapping of sections")
    try:
        return GridNetConfig.model_validate(data)
    except ValidationError as exc:
        raise HeimdallError(f"config {source!r}: {describe_validation_error(exc)}") from None


def is_gridnet_config(path: str | Path) -> bool:
    """Whether a training config YAML asks for this job (top-level ``kind: grid-posterior``)."""
    data = read_yaml(path)
    return isinstance(data, dict) and data.get("kind") == KIND


def load_gridnet_config(path: str | Path) -> GridNetConfig:
    """Load a pretraining config YAML; bad files raise HeimdallError naming the file and field."""
    return _validate(read_yaml(path), str(path))
