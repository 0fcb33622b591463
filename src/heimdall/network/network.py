"""Receiver networks: typed, validated, loaded from YAML.

A network file lists receivers (id, position, effective antenna height,
noise figure, nominal full-scale power, hidden gain offset, frequency error,
online probability, sample rate, bands) and the reference point of the local
km frame. The default ``nw-italy`` network ships with the package; any other
file is given by path.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from heimdall.errors import HeimdallError, describe_validation_error
from heimdall.network.geodesy import LocalFrame

Band = Literal["2m", "70cm"]
_PACKAGED = "heimdall.network"
M = TypeVar("M", bound=BaseModel)


class Receiver(BaseModel):
    """One web receiver of a network.

    Attributes
    ----------
    id : str
        Station id, unique in the network.
    name : str
        Human-readable name.
    lat, lon : float
        WGS84 position, degrees.
    height_m : float
        Effective antenna height above average terrain, m.
    noise_figure_db : float
        Receiver noise figure, dB.
    fullscale_dbm : float
        Nominal input power (dBm) that reaches digital full scale (|x| = 1.0).
    gain_offset_db : float | None
        True gain error of the uncalibrated receiver, dB, hidden from
        estimators; ``None`` draws it from the world seed.
    freq_error_hz : float | None
        Local-oscillator frequency error, Hz; ``None`` draws it from the world seed.
    noise_offset_db : float | None
        True offset of the site's noise floor from the nominal (man-made noise of
        the site, antenna), dB, hidden from estimators; ``None`` draws it from the world seed.
    online_prob : float
        Probability that the receiver is online for a given session.
    sample_rate_hz : float
        IQ sample rate, samples/s.
    bands : list of {"2m", "70cm"}
        Bands the receiver covers.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    name: str
    lat: float = Field(ge=-90.0, le=90.0)
    lon: float = Field(ge=-180.0, le=180.0)
    height_m: float = Field(gt=0.0, le=5000.0)
    noise_figure_db: float = Field(ge=0.0, le=30.0)
    fullscale_dbm: float = Field(ge=-120.0, le=30.0)
    gain_offset_db: float | None = None
    freq_error_hz: float | None = None
    noise_offset_db: float | None = None
    online_prob: float = Field(ge=0.0, le=1.0)
    sample_rate_hz: float = Field(gt=0.0)
    bands: list[Band] = Field(min_length=1)


class Reference(BaseModel):
    """Reference point of the network's local km frame (degrees)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float = Field(ge=-90.0, le=90.0)
    lon: float = Field(ge=-180.0, le=180.0)


class Network(BaseModel):
    """A receiver network and the reference point of its local km frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    reference: Reference
    receivers: list[Receiver]

    @model_validator(mode="after")
    def _check_receivers(self) -> Network:
        if len(self.receivers) < 3:
            raise ValueError(f"a network needs at least 3 receivers, this one has {len(self.receivers)}")
        seen_ids: set[str] = set()
        seen_pos: dict[tuple[float, float], str] = {}
        for rx in self.receivers:
            if rx.id in seen_ids:
                raise ValueError(f"duplicate receiver id {rx.id!r}")
            seen_ids.add(rx.id)
            pos = (rx.lat, rx.lon)
            if pos in seen_pos:
                raise ValueError(
                    f"receivers {seen_pos[pos]!r} and {rx.id!r} have identical coordinates {pos}"
                )
            seen_pos[pos] = rx.id
        return self

    @cached_property
    def frame(self) -> LocalFrame:
        """The tangent-plane frame at the reference point."""
        return LocalFrame(self.reference.lat, self.reference.lon)

    @property
    def ids(self) -> list[str]:
        """Receiver ids in file order."""
        return [rx.id for rx in self.receivers]

    def index_of(self, station_id: str) -> int:
        """Index of a receiver by id; raises HeimdallError naming the id if unknown."""
        try:
            return self.ids.index(station_id)
        except ValueError:
            raise HeimdallError(
                f"unknown station {station_id!r} in network {self.name!r} (known: {', '.join(self.ids)})"
            ) from None

    @cached_property
    def positions_km(self) -> NDArray[np.float64]:
        """Receiver (east_km, north_km) in the local frame, shape (R, 2)."""
        lat = np.array([rx.lat for rx in self.receivers])
        lon = np.array([rx.lon for rx in self.receivers])
        east, north = self.frame.to_local_km(lat, lon)
        return np.stack([east, north], axis=-1)

    @property
    def heights_m(self) -> NDArray[np.float64]:
        """Effective antenna heights, m, shape (R,)."""
        return np.array([rx.height_m for rx in self.receivers])

    def to_yaml(self) -> str:
        """Serialise to YAML (the same schema ``load_network`` reads)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def list_packaged(folder: str) -> list[str]:
    """Names of the YAML files packaged in ``folder`` (below ``heimdall/network``)."""
    root = resources.files(_PACKAGED).joinpath(*folder.split("/"))
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def list_networks() -> list[str]:
    """Names of the networks packaged with Heimdall."""
    return list_packaged("networks")


def _read_yaml(text: str, source: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HeimdallError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise HeimdallError(f"{source}: expected a mapping at the top level")
    return data


def parse_yaml_model(text: str, source: str, model: type[M], what: str) -> M:
    """Parse and validate YAML text as ``model``; errors name the source and the field."""
    data = _read_yaml(text, source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HeimdallError(f"{source}: invalid {what}: {describe_validation_error(exc)}") from None


def load_yaml_model(name_or_path: str | Path, model: type[M], what: str, folder: str) -> M:
    """Load a packaged ``what`` by name (a file of ``folder``) or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        if not path.is_file():
            raise HeimdallError(f"{what} file {str(path)!r} does not exist")
        return parse_yaml_model(path.read_text(encoding="utf-8"), str(path), model, what)
    name, packaged = str(name_or_path), list_packaged(folder)
    if name not in packaged:
        raise HeimdallError(
            f"unknown {what} {name!r}: give a packaged name ({', '.join(packaged)}) or a path to a .yaml file"
        )
    text = resources.files(_PACKAGED).joinpath(*folder.split("/"), f"{name}.yaml").read_text(encoding="utf-8")
    return parse_yaml_model(text, f"packaged {what} {name!r}", model, what)


def parse_network(text: str, source: str = "<network>") -> Network:
    """Parse and validate a network from YAML text; errors name the source and field."""
    return parse_yaml_model(text, source, Network, "network")


def load_network(name_or_path: str | Path) -> Network:
    """Load a packaged network by name (``nw-italy``) or a network YAML file by path."""
    return load_yaml_model(name_or_path, Network, "network", "networks")
