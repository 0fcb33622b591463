"""Request and response bodies of the inference service (JSON, validated by pydantic).

Units follow docs/ARCHITECTURE.md §3b: positions in WGS84 degrees at the edges, antenna
heights in m, sample rates in samples/s, frequencies in Hz, ellipse semi-axes
in m with the orientation as the azimuth of the major axis in degrees
clockwise from north in [0, 180).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from heimdall.data.raw import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ

#: Most sessions accepted by one ``/v1/localize/batch`` request.
MAX_BATCH_SESSIONS = 32
#: Most receivers in one session.
MAX_RECEIVERS = 64
#: Longest base64 IQ string of one receiver, characters (a 60 s float32 capture at 48 kHz).
MAX_IQ_CHARS = 32_000_000
#: Nominal full-scale power (dBm) of a receiver given without ``fullscale_dbm`` and not in the network.
DEFAULT_FULLSCALE_DBM = -50.0

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class ReceiverIn(BaseModel):
    """One receiver of a session: a station of the model's network, or a position.

    Give either ``station`` (an id of the model's network; its position and
    antenna height come from the network file) or ``lat``, ``lon`` (and
    optionally ``height_m``). An online receiver carries its capture in ``iq``.
    """

    model_config = _STRICT

    station: str | None = Field(
        default=None, min_length=1, max_length=128, description="Station id from the model's network."
    )
    lat: float | None = Field(default=None, ge=-90.0, le=90.0, description="Latitude, WGS84 degrees.")
    lon: float | None = Field(default=None, ge=-180.0, le=180.0, description="Longitude, WGS84 degrees.")
    height_m: float | None = Field(
        default=None, gt=0.0, le=5000.0, description="Effective antenna height above average terrain, m."
    )
    online: bool = Field(default=True, description="False for a receiver that delivered no capture.")
    iq: str | None = Field(
        default=None,
        max_length=MAX_IQ_CHARS,
        description="Base64 of interleaved little-endian I, Q pairs (int16 or float32, see iq_format).",
    )
    sample_rate_hz: float | None = Field(
        default=None,
        ge=MIN_SAMPLE_RATE_HZ,
        le=MAX_SAMPLE_RATE_HZ,
        description="This capture's sample rate (overrides the session's).",
    )
    fullscale_dbm: float | None = Field(
        default=None,
        ge=-120.0,
        le=30.0,
        description="Nominal received power at digital full scale, dBm (read by posterior models, which "
        "measure absolute power): default the station's value in the model's network, else "
        f"{DEFAULT_FULLSCALE_DBM:g} dBm.",
    )

    @model_validator(mode="after")
    def _check(self) -> ReceiverIn:
        if self.station is None and (self.lat is None or self.lon is None):
            raise ValueError("give either 'station' or both 'lat' and 'lon'")
        if self.station is not None and (self.lat is not None or self.lon is not None):
            raise ValueError("give either 'station' or 'lat'/'lon', not both")
        if self.online and self.iq is None:
            raise ValueError("an online receiver needs 'iq' (or set 'online': false)")
        return self


class LocalizeRequest(BaseModel):
    """One session: simultaneous captures of one transmission by several receivers."""

    model_config = _STRICT

    center_freq_hz: float = Field(gt=1e6, le=1e10, description="Centre frequency of the captures, Hz.")
    sample_rate_hz: float = Field(
        ge=MIN_SAMPLE_RATE_HZ,
        le=MAX_SAMPLE_RATE_HZ,
        description="Sample rate of the captures, samples/s (resampled to the model's).",
    )
    iq_format: Literal["int16", "float32"] = Field(
        default="int16", description="int16 (full scale 32768) or float32 (full scale 1.0) I/Q pairs."
    )
    receivers: list[ReceiverIn] = Field(min_length=1, max_length=MAX_RECEIVERS)
    posterior_png: bool = Field(
        default=False,
        description="Grid-posterior models: add `posterior.raster`, the posterior density as a PNG heat "
        "image (base64) with its lat/lon bounds. Ignored by Gaussian models.",
    )


class BatchRequest(BaseModel):
    """Several independent sessions answered in one call."""

    model_config = _STRICT

    sessions: list[LocalizeRequest] = Field(min_length=1, max_length=MAX_BATCH_SESSIONS)


class EllipseOut(BaseModel):
    """An uncertainty ellipse: semi-axes in m, major-axis azimuth in degrees in [0, 180)."""

    semi_major_m: float
    semi_minor_m: float
    orientation_deg: float


class PointOut(BaseModel):
    """A position: WGS84 degrees and (east, north) km in the answer's local frame (``posterior.frame``)."""

    latitude: float
    longitude: float
    east_km: float
    north_km: float


class ModeOut(PointOut):
    """A local maximum of the posterior and the probability of its basin of attraction."""

    mass: float = Field(ge=0.0, le=1.0)


class RegionOut(BaseModel):
    """A highest-posterior-density region: its area and its outline."""

    area_km2: float = Field(description="Area of the region (whole grid cells), km².")
    geojson: dict[str, Any] = Field(description="GeoJSON MultiPolygon geometry, [lon, lat] degrees.")


class RasterOut(BaseModel):
    """The posterior density as a PNG heat image stretched over its lat/lon bounds."""

    png_base64: str
    bounds: dict[str, float] = Field(description="south, west, north, east, degrees.")
    width: int
    height: int
    rows: str
    density_max_per_km2: float
    mass_in_raster: float


class PosteriorOut(BaseModel):
    """A grid-posterior model's answer: the posterior on its grid, summarised (docs/SERVING.md)."""

    map: PointOut = Field(description="Most probable position (MAP), refined below the grid step.")
    mean: PointOut = Field(description="Posterior mean (the answer's latitude / longitude).")
    cov_km2: list[list[float]] = Field(description="Posterior covariance (east, north), km².")
    edge_mass: float = Field(
        description="Posterior mass in the outermost cells of the grid (`out_of_area` when over 0.05)."
    )
    modes: list[ModeOut] = Field(description="Up to three most probable modes, most probable first.")
    hpd: dict[str, RegionOut] = Field(description='Highest-density regions by level: "0.5", "0.9".')
    frame: dict[str, float] = Field(description="Reference point of the local frame, degrees.")
    grid: dict[str, Any] = Field(description="The grid the posterior was evaluated on.")
    raster: RasterOut | None = Field(default=None, description="Only when `posterior_png` was requested.")


class LocalizeResponse(BaseModel):
    """Where the transmitter is, with its 1σ and 95 % ellipses and a GeoJSON rendering."""

    latitude: float
    longitude: float
    ellipse_1sigma: EllipseOut
    ellipse_95: EllipseOut
    geojson: dict[str, Any]
    receivers_heard: list[str]
    receivers_silent: list[str]
    unmapped_receivers: list[str] = Field(
        description="Receivers the model has no field for, answered from a prior field (only models "
        "that accept them; others refuse such receivers with 422)."
    )
    out_of_area: bool = Field(
        description="True when more than 5 % of the answer's probability (the Gaussian of the ellipses) "
        "lies outside the area the model was trained for (false for a model without one): the model has "
        "seen no transmitter there. For a grid-posterior model: more than 5 % of the posterior lies in "
        "the outermost cells of the grid it searched (`posterior.edge_mass`): the transmitter may be outside."
    )
    posterior: PosteriorOut | None = Field(
        default=None, description="The grid posterior (grid-posterior models); null for Gaussian models."
    )
    model_version: str
    inference_ms: float


class BatchResponse(BaseModel):
    """Answers in the order of the request's sessions."""

    results: list[LocalizeResponse]
    inference_ms: float


class Health(BaseModel):
    """Liveness and the loaded model."""

    status: Literal["ok"]
    model_version: str


class ErrorItem(BaseModel):
    """One problem with a request: where (``loc``) and what (``msg``)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """A rejected request."""

    detail: list[ErrorItem] | str
