"""Settings of the radio-map fit, typed and loaded from YAML (``configs/maps.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heimdall.errors import HeimdallError, describe_validation_error
from heimdall.posterior.measure import DETECTION_SNR_DB


class MapsConfig(BaseModel):
    """Radio-map fit settings (units in the field names; docs/MAPS.md).

    The field's hyper-parameters (σ, correlation distance, nugget) are
    estimated from the labels; ``prior_*`` values are used only below
    ``min_labels`` labelled sessions. ``pathloss_shape``: ``fitted`` fits each
    receiver's whole path-loss law (intercepts, exponent, exponent changes) to
    the labels; ``prior`` keeps the shape of the prior law (averaged over the
    transmitter heights, as a pretrained model's ``map_prior`` gives it) and fits
    only each receiver's 2 m and 70 cm intercepts. ``sigma_power_dof`` divides the
    variogram's σ² by the share of the field each session's estimated power leaves in
    the residuals (:func:`heimdall.maps.fit.power_dof_factor`) before the final fields
    are kriged. ``detection_snr_db``: the measured SNR (dB over the capture bandwidth)
    from which a receiver counts as heard, both for the labels and for the sessions the
    map locates (it travels with the map); below it a receiver is a censored term.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    grid_step_km: float = Field(2.0, gt=0.0, le=20.0)
    area_margin_km: float = Field(30.0, ge=0.0)
    neighbours: int = Field(24, ge=1, le=256)
    max_corr_multiple: float = Field(4.0, gt=0.0)
    iterations: int = Field(8, ge=1, le=50)
    holdout_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    holdout_seed: int = 0
    min_labels: int = Field(20, ge=1)
    power_range_dbm: tuple[float, float] = (27.0, 47.0)
    tx_height_range_m: tuple[float, float] = (1.5, 10.0)
    max_label_radius_m: float = Field(1000.0, gt=0.0)
    pathloss_knots_km: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0)
    pathloss_ridge: float = Field(1.0, ge=0.0)
    pathloss_shape: Literal["fitted", "prior"] = "fitted"
    sigma_power_dof: bool = False
    min_nugget_db: float = Field(0.3, gt=0.0)
    prior_sigma_db: float = Field(9.0, gt=0.0)
    prior_corr_km: float = Field(10.0, gt=0.0)
    prior_nugget_db: float = Field(3.0, gt=0.0)
    censored: bool = True
    outlier_p_value: float = Field(1e-3, ge=0.0, lt=1.0)
    outlier_after_iterations: int = Field(2, ge=1, le=50)
    prior_exponents: tuple[float, float] = (2.0, 4.0)
    prior_clutter_db: float = Field(15.0, ge=0.0)
    prior_tx_height_m: float = Field(5.0, gt=0.0)
    detection_snr_db: float = Field(DETECTION_SNR_DB, ge=-10.0, le=10.0)

    @model_validator(mode="after")
    def _check(self) -> MapsConfig:
        lo, hi = self.power_range_dbm
        if lo >= hi:
            raise ValueError("power_range_dbm: low end must be below the high end")
        if not 0.0 < self.tx_height_range_m[0] <= self.tx_height_range_m[1]:
            raise ValueError("tx_height_range_m: need 0 < low <= high")
        if any(k <= 0 for k in self.pathloss_knots_km):
            raise ValueError("pathloss_knots_km: knots must be positive distances")
        return self


def load_maps_config(path: str | Path | None = None) -> MapsConfig:
    """Defaults, overridden by the YAML file at ``path`` (any subset of the fields)."""
    if path is None:
        return MapsConfig()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise HeimdallError(f"maps config {str(path)!r}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise HeimdallError(f"maps config {str(path)!r}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise HeimdallError(f"maps config {str(path)!r}: expected a mapping of settings")
    try:
        return MapsConfig.model_validate(data)
    except ValidationError as exc:
        raise HeimdallError(f"maps config {str(path)!r}: {describe_validation_error(exc)}") from None
