"""When a decoded APRS frame becomes a label, and how uncertain that label is.

A session is labelled only when every receiver that decoded a frame decoded
the *same* frame (addresses, path and information; two different frames in
one capture are a collision), the frame is an APRS position report of its
sender (objects ``;``, items ``)`` and third-party ``}`` traffic carry
another station's position), no digipeater entry of its path has the
has-been-repeated bit set (a digipeated copy was transmitted from the
digipeater, not from the reported position), and the reported position is
within radio range of every decoding receiver (a position typed in from far
away cannot have been heard there).

Uncertainty: the 99 % radius is bounded by the half-diagonal of the box the
format leaves (a full 0.01' step each way for unambiguous uncompressed /
Mic-E positions, since encoders may truncate; the half box for ambiguity
1..4, which the parser centres; half a base-91 step for compressed) plus the
99 % radius of a circular Gaussian GPS error, σ·sqrt(−2 ln 0.01) = 3.03 σ
(Rayleigh). σ = 3.7 m per axis: 9 m 95 % horizontal accuracy of the GPS
Standard Positioning Service (US DoD, *GPS SPS Performance Standard*, 5th
ed., 2020, Table 3.8-1). The sum of the two bounds exceeds the true 99 %
radius of their convolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError
from heimdall.labels.direwolf import Frame
from heimdall.labels.parse import Report, classify
from heimdall.network.geodesy import geodesic_distance_km

#: Metres per degree of latitude on the mean sphere (R = 6371.0 km).
M_PER_DEG = 6_371_000.0 * math.pi / 180.0
GPS_SIGMA_M = 3.7
#: Minute steps of DDMM.mm positions by ambiguity 0..4 (arc-minutes).
_STEP_MIN = (0.01, 0.1, 1.0, 10.0, 60.0)
_RAYLEIGH_99 = math.sqrt(-2.0 * math.log(0.01))

#: Outcomes of :func:`decide`, in the order they are checked.
REASONS: tuple[str, ...] = (
    "labelled", "no-decode", "disagree", "digipeated", "object", "item", "third-party",
    "message", "status", "other", "invalid", "out-of-range",
)  # fmt: skip


@dataclass(frozen=True)
class LabelPolicy:
    """Label acceptance parameters.

    Parameters
    ----------
    max_range_km
        Farthest a decoding receiver may be from the reported position, km
        (2 m line of sight from a 10 m mast to a 2000 m summit is ~200 km; ducting reaches farther).
    gps_sigma_m
        GPS error per axis, m.
    max_radius_km
        Labels with a larger 99 % radius are counted as coarse and kept out of the store, km.

    """

    max_range_km: float = 250.0
    gps_sigma_m: float = GPS_SIGMA_M
    max_radius_km: float = 1.0

    def __post_init__(self) -> None:
        """Refuse settings that would silently label nothing (or count labels it does not write).

        Raises
        ------
        HeimdallError
            ``max_range_km`` or ``max_radius_km`` not a finite number > 0, or ``gps_sigma_m`` not a
            finite number >= 0 (the message names the setting and its ``data label`` option).

        """
        for name, positive in (("max_range_km", True), ("max_radius_km", True), ("gps_sigma_m", False)):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < 0 or (positive and value == 0):
                option = f" (--{name.replace('_', '-')})" if positive else ""
                bound = "> 0" if positive else ">= 0"
                raise HeimdallError(f"{name}{option} must be a finite number {bound}, got {value!r}")

    def keeps(self, radius_m: float) -> bool:
        """Whether a label of 99 % radius ``radius_m`` (m) is written (else it is coarse)."""
        return radius_m <= 1000.0 * self.max_radius_km


@dataclass(frozen=True)
class Decision:
    """The outcome for one session: ``reason`` is one of :data:`REASONS`."""

    reason: str
    frame: Frame | None = None
    report: Report | None = None
    decoded_by: tuple[int, ...] = ()
    radius_m: float = math.nan

    @property
    def labelled(self) -> bool:
        """The session got a label."""
        return self.reason == "labelled"


def radius99_m(fmt: str, ambiguity: int, lat_deg: float, gps_sigma_m: float = GPS_SIGMA_M) -> float:
    """99 % radius (m) of a reported position's error: format box half-diagonal + GPS (see module doc)."""
    if fmt == "compressed":
        half_n, half_e = 0.5 / 380926.0, 0.5 / 190463.0  # degrees
    else:
        step = _STEP_MIN[ambiguity] / 60.0
        half_n = half_e = step if ambiguity == 0 else step / 2.0
    north = half_n * M_PER_DEG
    east = half_e * M_PER_DEG * math.cos(math.radians(lat_deg))
    return math.hypot(north, east) + _RAYLEIGH_99 * gps_sigma_m


def decide(
    frames: list[list[Frame]],
    rx_lat_deg: NDArray[np.float64],
    rx_lon_deg: NDArray[np.float64],
    policy: LabelPolicy | None = None,
) -> Decision:
    """Decide one session from the frames each receiver decoded (``frames[r]``)."""
    policy = policy or LabelPolicy()
    decoded_by = tuple(r for r, fs in enumerate(frames) if fs)
    if not decoded_by:
        return Decision("no-decode")
    distinct = {f.key(): f for r in decoded_by for f in frames[r]}
    if len(distinct) > 1:
        return Decision("disagree", decoded_by=decoded_by)
    frame = next(iter(distinct.values()))
    if frame.repeated:
        return Decision("digipeated", frame, decoded_by=decoded_by)
    report = classify(frame)
    if report.kind != "position":
        return Decision(report.kind, frame, report, decoded_by)
    dist = geodesic_distance_km(
        np.full(len(decoded_by), report.lat_deg), np.full(len(decoded_by), report.lon_deg),
        np.asarray(rx_lat_deg)[list(decoded_by)], np.asarray(rx_lon_deg)[list(decoded_by)],
    )  # fmt: skip
    if not np.all(np.asarray(dist) <= policy.max_range_km):
        return Decision("out-of-range", frame, report, decoded_by)
    radius = radius99_m(report.fmt, report.ambiguity, report.lat_deg, policy.gps_sigma_m)
    return Decision("labelled", frame, report, decoded_by, radius)
