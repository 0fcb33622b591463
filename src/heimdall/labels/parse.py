"""What a decoded APRS frame says: its kind and, for position reports, the position.

The APRS Data Type Identifier (first information byte, APRS101 ch. 5) sorts
frames: ``! = / @`` positions, ``` ` ``` / ``'`` (and 0x1C, 0x1D) Mic-E,
``;`` objects, ``)`` items, ``}`` third-party traffic, ``:`` messages, ``>``
status. Objects, items and third-party frames carry *another* station's
position and are reported as such, never as a position of the sender. The
position itself is parsed with ``aprslib`` (which centres an ambiguous
position in its ambiguity box).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import aprslib
from aprslib.exceptions import ParseError, UnknownFormat

from heimdall.labels.direwolf import Frame

_KIND_OF_DTI = {
    ";": "object", ")": "item", "}": "third-party", ":": "message", ">": "status",
    "!": "position", "=": "position", "/": "position", "@": "position",
    "`": "position", "'": "position", "\x1c": "position", "\x1d": "position",
}  # fmt: skip
logging.getLogger("aprslib").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Report:
    """The meaning of one frame.

    Attributes
    ----------
    kind
        ``position``, ``object``, ``item``, ``third-party``, ``message``, ``status``,
        ``other`` or ``invalid`` (a position-type frame aprslib cannot parse).
    lat_deg, lon_deg
        Reported position, degrees (NaN unless ``kind == "position"``).
    fmt
        ``uncompressed``, ``compressed`` or ``mic-e`` ('' unless a position).
    ambiguity
        Position ambiguity 0..4.
    detail
        Why a position-type frame is invalid ('' otherwise).

    """

    kind: str
    lat_deg: float = math.nan
    lon_deg: float = math.nan
    fmt: str = ""
    ambiguity: int = 0
    detail: str = ""


def classify(frame: Frame) -> Report:
    """Kind and position of ``frame`` (never raises)."""
    if not frame.info:
        return Report("other")
    kind = _KIND_OF_DTI.get(chr(frame.info[0]), "other")
    if kind != "position":
        return Report(kind)
    try:
        parsed = aprslib.parse(frame.tnc2)
    except (ParseError, UnknownFormat, ValueError, KeyError, IndexError) as exc:
        return Report("invalid", detail=str(exc))
    fmt = str(parsed.get("format", ""))
    if "latitude" not in parsed or fmt not in ("uncompressed", "compressed", "mic-e"):
        return Report("invalid", detail=f"no position (format {fmt!r})")
    return Report(
        "position", float(parsed["latitude"]), float(parsed["longitude"]), fmt,
        int(parsed.get("posambiguity", 0) or 0),
    )  # fmt: skip
