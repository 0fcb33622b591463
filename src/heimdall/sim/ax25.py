"""AX.25 UI frames as the bits an HDLC modem puts on the air.

A frame (AX.25 Link Access Protocol v2.2, TAPR/ARRL 1998, §3 and §4.3.3) is::

    flag 0x7E | destination (7) | source (7) | digipeaters (7 each, 0-8) |
    control 0x03 (UI) | PID 0xF0 (no layer 3) | information | FCS (2, LSB first) | flag 0x7E

Each address byte holds an ASCII character shifted left by one bit; the
seventh byte is the SSID byte ``C/H R R S S S S X``: the command bit C
(destination 1 and source 0 for a command frame), or for a digipeater entry
the has-been-repeated bit H; the reserved bits R = 1; the SSID; and the
extension bit X set only on the last address. Bytes go out least significant
bit first; after five consecutive ones in the frame body a zero is stuffed;
flags are not stuffed. The line code is NRZI: a zero is a tone change, a one
keeps the tone (Bell 202 AFSK, see :mod:`heimdall.sim.afsk`).

The FCS is CRC-16/X.25 (ISO/IEC 13239: polynomial 0x1021 reflected = 0x8408,
initial value 0xFFFF, final XOR 0xFFFF); its check value over the ASCII bytes
``123456789`` is 0x906E (Greg Cook, *Catalogue of parametrised CRC algorithms*).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError

FLAG = 0x7E
CONTROL_UI = 0x03
PID_NO_LAYER3 = 0xF0
MAX_DIGIPEATERS = 8
_CALL_RE = re.compile(r"^[A-Z0-9]{1,6}$")


def crc16_x25(data: bytes) -> int:
    """CRC-16/X.25 (the AX.25 FCS) of ``data``: reflected 0x1021, init 0xFFFF, xorout 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


@dataclass(frozen=True)
class Address:
    """One AX.25 address: callsign (1-6 upper-case letters/digits), SSID 0-15, H/C bit."""

    call: str
    ssid: int = 0
    repeated: bool = False

    def __post_init__(self) -> None:
        if not _CALL_RE.match(self.call):
            raise HeimdallError(f"AX.25 callsign {self.call!r}: expected 1-6 upper-case letters or digits")
        if not 0 <= self.ssid <= 15:
            raise HeimdallError(f"AX.25 SSID of {self.call}: {self.ssid} is outside 0..15")

    @staticmethod
    def parse(text: str) -> Address:
        """``CALL``, ``CALL-SSID`` or ``CALL-SSID*`` (``*`` = has been repeated)."""
        repeated = text.endswith("*")
        body = text.rstrip("*")
        call, _, ssid = body.partition("-")
        return Address(call, int(ssid) if ssid else 0, repeated)

    def __str__(self) -> str:
        return (f"{self.call}-{self.ssid}" if self.ssid else self.call) + ("*" if self.repeated else "")

    def encode(self, high_bit: bool, last: bool) -> bytes:
        """The 7 address bytes; ``high_bit`` is the C bit (or H bit for a digipeater)."""
        chars = bytes((ord(c) << 1) for c in self.call.ljust(6))
        ssid = 0x60 | (self.ssid << 1) | (0x80 if high_bit else 0) | (0x01 if last else 0)
        return chars + bytes([ssid])


@dataclass(frozen=True)
class UIFrame:
    """An AX.25 UI frame: destination, source, digipeater path and information field."""

    destination: Address
    source: Address
    path: tuple[Address, ...]
    info: bytes

    def __post_init__(self) -> None:
        if len(self.path) > MAX_DIGIPEATERS:
            raise HeimdallError(f"AX.25 path has {len(self.path)} digipeaters, at most {MAX_DIGIPEATERS}")

    @property
    def monitor_text(self) -> str:
        """TNC2 monitor format, ``SRC>DEST,DIGI1*,DIGI2:info`` (as Dire Wolf prints it)."""
        head = ",".join([str(self.destination), *(str(a) for a in self.path)])
        return f"{self.source}>{head}:{self.info.decode('latin-1')}"

    def body(self) -> bytes:
        """Address, control, PID and information bytes (what the FCS covers)."""
        out = self.destination.encode(high_bit=True, last=False)
        out += self.source.encode(high_bit=False, last=not self.path)
        for k, digi in enumerate(self.path):
            out += digi.encode(high_bit=digi.repeated, last=k == len(self.path) - 1)
        return out + bytes([CONTROL_UI, PID_NO_LAYER3]) + self.info

    def octets(self) -> bytes:
        """Body plus FCS (CRC-16/X.25, least significant byte first); no flags."""
        body = self.body()
        fcs = crc16_x25(body)
        return body + bytes([fcs & 0xFF, fcs >> 8])


def _lsb_bits(data: bytes) -> NDArray[np.uint8]:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")


def stuff_bits(bits: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """HDLC bit stuffing: a 0 after every run of five 1s."""
    out: list[int] = []
    run = 0
    for b in bits.tolist():
        out.append(b)
        run = run + 1 if b else 0
        if run == 5:
            out.append(0)
            run = 0
    return np.array(out, dtype=np.uint8)


def hdlc_bits(octets: bytes, n_flags_before: int, n_flags_after: int = 2) -> NDArray[np.uint8]:
    """Line bits (before NRZI) of one frame: flags, stuffed body + FCS, flags."""
    flag = _lsb_bits(bytes([FLAG]))
    return np.concatenate(
        [np.tile(flag, n_flags_before), stuff_bits(_lsb_bits(octets)), np.tile(flag, n_flags_after)]
    )


def nrzi(bits: NDArray[np.uint8], start: int = 1) -> NDArray[np.uint8]:
    """NRZI line levels: a 0 toggles the level, a 1 keeps it; ``start`` is the level before bit 0."""
    toggles = np.cumsum(1 - bits.astype(np.int64))
    return ((start + toggles) % 2).astype(np.uint8)
