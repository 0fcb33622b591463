"""Network families: receiver networks drawn at random in a region.

A family file gives a region (a latitude / longitude box), the receiver count
range, a minimum spacing, the antenna height range and the other receiver
properties; :meth:`NetworkFamily.draw` places receivers uniformly in the box
with the minimum spacing (sequential inhibition: a candidate closer than the
spacing to an accepted receiver is rejected, Diggle 2003, "Statistical
analysis of spatial point patterns", §6.3 — real web receivers are operated by
different people in different towns) and draws effective heights log-uniformly
(most sites are low roofs, a few are hills or towers). Packaged families live
in ``networks/families/``; any other file is given by path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from heimdall.errors import HeimdallError
from heimdall.network.geodesy import LocalFrame
from heimdall.network.network import Band, Network, Receiver, list_packaged, load_yaml_model, parse_yaml_model

_PACKAGED = "heimdall.network"
_MAX_TRIES = 10_000


class Region(BaseModel):
    """A latitude / longitude box, degrees."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat_min: float = Field(ge=-90.0, le=90.0)
    lat_max: float = Field(ge=-90.0, le=90.0)
    lon_min: float = Field(ge=-180.0, le=180.0)
    lon_max: float = Field(ge=-180.0, le=180.0)

    @model_validator(mode="after")
    def _check(self) -> Region:
        if self.lat_min >= self.lat_max or self.lon_min >= self.lon_max:
            raise ValueError("region needs lat_min < lat_max and lon_min < lon_max")
        return self


class NetworkFamily(BaseModel):
    """Receiver networks drawn in a region (see module docstring).

    Attributes
    ----------
    name : str
        Family name; a drawn network is named ``<name>#<network seed>``.
    region : Region
        Where receivers stand (and the reference point: the box centre).
    receivers_min, receivers_max : int
        Receiver count range (uniform), 3..12 by default.
    min_spacing_km : float
        Minimum distance between two receivers, km.
    height_m_min, height_m_max : float
        Effective antenna height range (log-uniform), m.
    online_prob : float
        Probability that a receiver is online for a session.
    noise_figure_db, fullscale_dbm, sample_rate_hz, bands
        As :class:`heimdall.network.Receiver`, the same for every receiver.

    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    region: Region
    receivers_min: int = Field(default=3, ge=3, le=64)
    receivers_max: int = Field(default=12, ge=3, le=64)
    min_spacing_km: float = Field(default=15.0, ge=0.0)
    height_m_min: float = Field(default=10.0, gt=0.0)
    height_m_max: float = Field(default=400.0, gt=0.0, le=5000.0)
    online_prob: float = Field(default=0.95, ge=0.0, le=1.0)
    noise_figure_db: float = Field(default=6.0, ge=0.0, le=30.0)
    fullscale_dbm: float = Field(default=-50.0, ge=-120.0, le=30.0)
    sample_rate_hz: float = Field(default=12000.0, gt=0.0)
    bands: list[Band] = Field(default_factory=lambda: ["2m", "70cm"], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> NetworkFamily:
        if self.receivers_min > self.receivers_max:
            raise ValueError("receivers_min must not exceed receivers_max")
        if self.height_m_min > self.height_m_max:
            raise ValueError("height_m_min must not exceed height_m_max")
        return self

    def network_id(self, seed: int) -> str:
        """The name of the network drawn with ``seed``."""
        return f"{self.name}#{int(seed)}"

    def draw(self, rng: np.random.Generator, seed: int) -> Network:
        """Draw one network with ``rng`` (seeded by the caller from ``seed``, which names it).

        Raises
        ------
        HeimdallError
            The region cannot hold the receivers at the minimum spacing.

        """
        reg = self.region
        frame = LocalFrame(0.5 * (reg.lat_min + reg.lat_max), 0.5 * (reg.lon_min + reg.lon_max))
        n = int(rng.integers(self.receivers_min, self.receivers_max + 1))
        lat: list[float] = []
        lon: list[float] = []
        pos: list[tuple[float, float]] = []
        for _ in range(_MAX_TRIES):
            if len(pos) == n:
                break
            la, lo = rng.uniform(reg.lat_min, reg.lat_max), rng.uniform(reg.lon_min, reg.lon_max)
            e, nn = frame.to_local_km(la, lo)
            if all(np.hypot(e - pe, nn - pn) >= self.min_spacing_km for pe, pn in pos):
                lat.append(round(float(la), 5))
                lon.append(round(float(lo), 5))
                pos.append((float(e), float(nn)))
        if len(pos) < n:
            raise HeimdallError(
                f"network family {self.name!r}: region too small for {n} receivers "
                f"{self.min_spacing_km} km apart"
            )
        log_h = rng.uniform(np.log(self.height_m_min), np.log(self.height_m_max), size=n)
        receivers = [
            Receiver(
                id=f"rx{k:02d}",
                name=f"{self.name} receiver {k}",
                lat=lat[k],
                lon=lon[k],
                height_m=round(float(np.exp(log_h[k])), 1),
                noise_figure_db=self.noise_figure_db,
                fullscale_dbm=self.fullscale_dbm,
                online_prob=self.online_prob,
                sample_rate_hz=self.sample_rate_hz,
                bands=list(self.bands),
            )
            for k in range(n)
        ]
        return Network(
            name=self.network_id(seed),
            description=f"drawn from network family {self.name!r} with seed {int(seed)}",
            reference={"lat": frame.ref_lat_deg, "lon": frame.ref_lon_deg},
            receivers=receivers,
        )


def list_network_families() -> list[str]:
    """Names of the network families packaged with Heimdall."""
    return list_packaged("networks/families")


def parse_network_family(text: str, source: str = "<network family>") -> NetworkFamily:
    """Parse and validate a network family from YAML text; errors name the source and field."""
    return parse_yaml_model(text, source, NetworkFamily, "network family")


def load_network_family(name_or_path: str | Path) -> NetworkFamily:
    """Load a packaged network family by name or a family YAML file by path."""
    return load_yaml_model(name_or_path, NetworkFamily, "network family", "networks/families")
