"""APRS position reports: information fields, AX.25 frames and their AFSK/FM bursts.

Three position formats of the APRS Protocol Reference 1.0.1 (APRS101, 2000)
are encoded:

- ``uncompressed`` (ch. 8): ``!DDMM.mmN/DDDMM.mmE>`` — 0.01 arc-minute
  steps (18.5 m of latitude). Position ambiguity n = 1..4 blanks the last n
  minute digits of latitude and longitude (0.1', 1', 10', 1° boxes);
- ``compressed`` (ch. 9): ``!/YYYYXXXX>csT``, base-91 latitude
  380926·(90 − lat) and longitude 190463·(180 + lon): ~0.3 m steps; no ambiguity;
- ``mic-e`` (ch. 10): latitude digits, N/S, the longitude offset and E/W in
  the six characters of the AX.25 destination, longitude, speed and course
  in the information field (a backquote = current GPS fix). 0.01' steps; ambiguity
  blanks latitude digits from the right (the longitude follows).

A position is rounded to the nearest step of its format, so the error a
format adds is at most half a step in each coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heimdall.errors import HeimdallError
from heimdall.sim.afsk import BAUD, AfskBurst
from heimdall.sim.ax25 import Address, UIFrame, hdlc_bits, nrzi

FORMATS: tuple[str, ...] = ("uncompressed", "compressed", "mic-e")
#: Destination (tocall) of non-Mic-E packets: APZ = experimental software (APRS101 ch. 4).
TOCALL = "APZHMD"
#: Digit positions of "DDMM.mm" / "DDDMM.mm" blanked by ambiguity 1..4 (counted from the end).
_AMBIG_FROM_END = (1, 2, 4, 5)
#: Leading flags (TXDELAY) of a typical APRS transmitter: 300 ms (Dire Wolf's default).
TXDELAY_S = 0.3
#: Trailing flags (TXTAIL).
TXTAIL_FLAGS = 3


@dataclass(frozen=True)
class PositionReport:
    """An APRS position report to encode.

    Parameters
    ----------
    lat_deg, lon_deg
        Reported position, degrees (WGS 84).
    fmt
        One of :data:`FORMATS`.
    ambiguity
        Position ambiguity 0..4 (uncompressed and Mic-E only).
    symbol_table, symbol
        APRS symbol (``/`` and ``>`` = car).
    comment
        Free text after the position.
    course_deg, speed_kn
        Mic-E course (1..360 deg) and speed (knots).

    """

    lat_deg: float
    lon_deg: float
    fmt: str = "uncompressed"
    ambiguity: int = 0
    symbol_table: str = "/"
    symbol: str = ">"
    comment: str = ""
    course_deg: int = 88
    speed_kn: int = 1

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise HeimdallError(f"APRS position format {self.fmt!r}: expected one of {FORMATS}")
        if not 0 <= self.ambiguity <= 4 or (self.fmt == "compressed" and self.ambiguity):
            raise HeimdallError(f"APRS position ambiguity {self.ambiguity} is not valid for {self.fmt}")
        if not (-90.0 < self.lat_deg < 90.0 and -180.0 < self.lon_deg < 180.0):
            raise HeimdallError(f"APRS position ({self.lat_deg}, {self.lon_deg}) is out of range")


def _ddmm(value: float, deg_digits: int) -> str:
    """|value| degrees as DDMM.mm (or DDDMM.mm), rounded to the nearest 0.01'."""
    hundredths = round(abs(value) * 6000.0)
    deg, rem = divmod(hundredths, 6000)
    return f"{deg:0{deg_digits}d}{rem // 100:02d}.{rem % 100:02d}"


def _ambiguous(text: str, ambiguity: int) -> str:
    """Blank the last ``ambiguity`` minute digits of DDMM.mm / DDDMM.mm (the dot is kept)."""
    chars = list(text)
    digit_pos = [i for i, c in enumerate(chars) if c != "."][-4:]  # M M m m
    for i in digit_pos[::-1][:ambiguity]:
        chars[i] = " "
    return "".join(chars)


def _base91(value: int, width: int = 4) -> str:
    out = []
    for _ in range(width):
        value, digit = divmod(value, 91)
        out.append(chr(33 + digit))
    return "".join(reversed(out))


def uncompressed_info(rep: PositionReport) -> str:
    """``!DDMM.mmN/DDDMM.mmE>comment`` (APRS101 ch. 8, no timestamp, no messaging)."""
    lat = _ambiguous(_ddmm(rep.lat_deg, 2), rep.ambiguity) + ("N" if rep.lat_deg >= 0 else "S")
    lon = _ambiguous(_ddmm(rep.lon_deg, 3), rep.ambiguity) + ("E" if rep.lon_deg >= 0 else "W")
    return f"!{lat}{rep.symbol_table}{lon}{rep.symbol}{rep.comment}"


def compressed_info(rep: PositionReport) -> str:
    """``!/YYYYXXXX>csT`` + comment (APRS101 ch. 9); cs = two spaces: no course/speed/range."""
    y = round(380926.0 * (90.0 - rep.lat_deg))
    x = round(190463.0 * (180.0 + rep.lon_deg))
    return f"!{rep.symbol_table}{_base91(y)}{_base91(x)}{rep.symbol}  !{rep.comment}"


def mic_e_fields(rep: PositionReport) -> tuple[str, str]:
    """(destination callsign, information field) of a Mic-E report (APRS101 ch. 10).

    Message bits 110 ("M1: En Route"; never 000, the emergency code).
    """
    lat = _ddmm(rep.lat_deg, 2).replace(".", "")  # DDMMmm
    lon = _ddmm(rep.lon_deg, 3).replace(".", "")  # DDDMMmm
    deg, minutes, hundredths = int(lon[:3]), int(lon[3:5]), int(lon[5:7])
    offset = deg < 10 or deg >= 100
    north, west = rep.lat_deg >= 0, rep.lon_deg < 0
    # per character: does it take the P-Y series (True) or the 0-9 series (False)?
    upper = (True, True, False, north, offset, west)
    dest = []
    for k, (digit, up) in enumerate(zip(lat, upper, strict=True)):
        blank = k >= 6 - rep.ambiguity
        if blank:
            dest.append("Z" if up else "L")
        else:
            dest.append(chr(ord("P" if up else "0") + int(digit)))
    if deg < 10:
        d = deg + 90
    elif deg < 100:
        d = deg
    elif deg < 110:
        d = deg - 20
    else:
        d = deg - 100
    m = minutes + 60 if minutes < 10 else minutes
    speed = max(0, min(int(rep.speed_kn), 799))
    course = max(1, min(int(rep.course_deg), 360))
    sp = speed // 10 + 80  # 80 offset keeps the byte printable ('l' for 0)
    dc = (speed % 10) * 10 + course // 100
    se = course % 100
    info = "`" + "".join(chr(v + 28) for v in (d, m, hundredths, sp, dc, se))
    info += rep.symbol + rep.symbol_table + rep.comment
    return "".join(dest), info


def position_frame(source: Address, rep: PositionReport, path: tuple[Address, ...] = ()) -> UIFrame:
    """The AX.25 UI frame of a position report from ``source`` via ``path``."""
    if rep.fmt == "mic-e":
        dest_call, info = mic_e_fields(rep)
    elif rep.fmt == "compressed":
        dest_call, info = TOCALL, compressed_info(rep)
    else:
        dest_call, info = TOCALL, uncompressed_info(rep)
    return UIFrame(Address(dest_call), source, tuple(path), info.encode("latin-1"))


def text_frame(source: Address, info: str, path: tuple[Address, ...] = ()) -> UIFrame:
    """A UI frame with any APRS information field (status ``>``, message ``:``, object ``;`` ...)."""
    return UIFrame(Address(TOCALL), source, tuple(path), info.encode("latin-1"))


def frame_burst(
    frame: UIFrame,
    t0_s: float,
    txdelay_s: float = TXDELAY_S,
    audio_phase0: float = 0.0,
    corrupt_bit: int | None = None,
) -> AfskBurst:
    """The AFSK burst of ``frame`` keyed at ``t0_s`` (s): TXDELAY flags, frame, TXTAIL flags.

    ``corrupt_bit`` inverts one bit of the frame body (a frame whose FCS fails), for tests.
    """
    n_flags = max(1, round(txdelay_s * BAUD / 8.0))
    octets = bytearray(frame.octets())
    if corrupt_bit is not None:
        octets[corrupt_bit // 8 % len(octets)] ^= 1 << (corrupt_bit % 8)
    bits = hdlc_bits(bytes(octets), n_flags, TXTAIL_FLAGS)
    return AfskBurst(nrzi(bits), t0_s=t0_s, audio_phase0=audio_phase0)


def quantisation_step_m(fmt: str, lat_deg: float) -> tuple[float, float]:
    """(north, east) step of a format's grid at latitude ``lat_deg``, m (ambiguity 0)."""
    metres_per_deg = 111_195.0  # mean Earth radius 6371.0 km x pi / 180
    if fmt == "compressed":
        north, east = 1.0 / 380926.0, 1.0 / 190463.0
    else:
        north = east = 0.01 / 60.0
    return north * metres_per_deg, east * metres_per_deg * float(np.cos(np.radians(lat_deg)))
