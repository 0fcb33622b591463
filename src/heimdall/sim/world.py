"""World configuration: every simulator parameter, typed, loaded from YAML.

The packaged ``reference-world.yaml`` lists each parameter as
``{value, unit, reason}``; a user file may give plain values or the same form,
and any parameter it leaves out keeps its reference value.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heimdall.errors import HeimdallError, describe_validation_error

#: Longest capture a world simulates, s (a web receiver's recordings are seconds long).
MAX_DURATION_S = 60.0


class WorldConfig(BaseModel):
    """Simulator parameters (see ``reference-world.yaml`` for units and reasons)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(gt=0.0, le=MAX_DURATION_S)
    area_margin_km: float = Field(ge=0.0)
    tx_power_dbm_min: float
    tx_power_dbm_max: float
    tx_height_m_min: float = Field(gt=0.0)
    tx_height_m_max: float = Field(gt=0.0)
    band_2m_prob: float = Field(ge=0.0, le=1.0)
    band_2m_mhz: tuple[float, float]
    band_70cm_mhz: tuple[float, float]
    mode_probs: dict[str, float]
    nbfm_deviation_hz: float = Field(gt=0.0)
    nbfm_audio_hz: tuple[float, float]
    fsk_baud: float = Field(gt=0.0)
    fsk_bt: float = Field(gt=0.0)
    fsk_deviation_hz: float = Field(gt=0.0)
    path_loss_exponent_near: float = Field(gt=0.0)
    path_loss_exponent_far: float = Field(gt=0.0)
    clutter_loss_db: float = Field(ge=0.0)
    horizon_k_factor: float = Field(gt=0.0)
    static_shadowing_sigma_db: float = Field(ge=0.0)
    static_shadowing_corr_km: float = Field(gt=0.0)
    static_field_resolution_km: float = Field(gt=0.0)
    capture_shadowing_sigma_db: float = Field(ge=0.0)
    gain_offset_sigma_db: float = Field(ge=0.0)
    # defaults = not modelled (worlds recorded before these parameters existed)
    band_gain_correlation: float = Field(default=1.0, ge=-1.0, le=1.0)
    band_field_correlation: float = Field(default=1.0, ge=-1.0, le=1.0)
    site_noise_sigma_db: float = Field(default=0.0, ge=0.0)
    noise_wander_sigma_db: float = Field(default=0.0, ge=0.0)
    freq_error_max_hz: float = Field(ge=0.0)
    rician_k_db: float
    doppler_hz: float = Field(ge=0.0)
    fading_rate_hz: float = Field(gt=0.0)
    manmade_noise_c_db: float
    manmade_noise_d_db: float
    detection_snr_db: float
    agc: bool
    agc_target_dbfs: float = Field(le=0.0)
    synchronised: bool
    timing_sigma_sync_s: float = Field(ge=0.0)
    timing_sigma_unsync_s: float = Field(ge=0.0)
    quantisation_bits: int = Field(ge=8, le=16)
    towns_per_1000_km2: float = Field(default=1.0, ge=0.0)
    town_radius_km: float = Field(default=2.0, gt=0.0)
    town_radius_sigma_ln: float = Field(default=0.7, ge=0.0)
    road_neighbours: int = Field(default=2, ge=1, le=6)
    road_offset_km: float = Field(default=0.3, ge=0.0)
    fixed_stations: int = Field(default=6, ge=0)
    position_mix: dict[str, float] = Field(default_factory=lambda: {"town": 0.5, "road": 0.35, "fixed": 0.15})

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        if self.tx_power_dbm_min > self.tx_power_dbm_max:
            raise ValueError("tx_power_dbm_min must not exceed tx_power_dbm_max")
        if self.tx_height_m_min > self.tx_height_m_max:
            raise ValueError("tx_height_m_min must not exceed tx_height_m_max")
        unknown = set(self.mode_probs) - {"nbfm", "cw", "fsk", "aprs"}
        if unknown:
            raise ValueError(f"unknown modes in mode_probs: {sorted(unknown)}")
        if abs(sum(self.mode_probs.values()) - 1.0) > 1e-6:
            raise ValueError("mode_probs must sum to 1")
        unknown = set(self.position_mix) - {"town", "road", "fixed"}
        if unknown:
            raise ValueError(f"unknown kinds in position_mix: {sorted(unknown)}")
        if abs(sum(self.position_mix.values()) - 1.0) > 1e-6:
            raise ValueError("position_mix must sum to 1")
        if self.fading_rate_hz < 4.0 * self.doppler_hz:
            raise ValueError("fading_rate_hz must be at least 4x doppler_hz")
        return self

    @property
    def timing_sigma_s(self) -> float:
        """Timing uncertainty of a capture start, s (synchronised or not)."""
        return self.timing_sigma_sync_s if self.synchronised else self.timing_sigma_unsync_s

    def with_overrides(self, **changes: Any) -> WorldConfig:
        """A copy with some parameters changed (validated: HeimdallError naming the parameter)."""
        try:
            return WorldConfig.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise HeimdallError(
                f"world parameters {sorted(changes)}: {describe_validation_error(exc)}"
            ) from None

    def to_yaml(self) -> str:
        """The resolved parameters as plain YAML (for logging beside every run)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _plain_values(data: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (item["value"] if isinstance(item, dict) and "value" in item else item)
        for key, item in data.items()
    }


def reference_world_text() -> str:
    """Text of the packaged reference-world.yaml (with units and reasons)."""
    return (resources.files("heimdall.sim") / "reference-world.yaml").read_text(encoding="utf-8")


def load_world(path: str | Path | None = None) -> WorldConfig:
    """Load the reference world, optionally overridden by a user YAML file."""
    values = _plain_values(yaml.safe_load(reference_world_text()))
    source = "reference-world.yaml"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise HeimdallError(f"world file {source!r}: cannot read ({exc.strerror})") from None
        try:
            user = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise HeimdallError(f"world file {source!r}: not valid YAML ({exc})") from None
        if not isinstance(user, dict):
            raise HeimdallError(f"world file {source!r}: expected a mapping of parameters")
        values.update(_plain_values(user))
    try:
        return WorldConfig.model_validate(values)
    except ValidationError as exc:
        raise HeimdallError(f"world file {source!r}: {describe_validation_error(exc)}") from None
