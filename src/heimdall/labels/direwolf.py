"""Decode AX.25 frames from audio with Dire Wolf's ``atest`` (Debian package ``direwolf``).

Audio is written to a temporary 16-bit mono WAV file; ``atest -h`` demodulates
it (Bell 202 AFSK, 1200 Bd, its default "E+" demodulator, only frames whose
FCS checks: ``-F 0``) and prints each frame as hexadecimal bytes, which are
parsed here into addresses (with the has-been-repeated bits) and the
information field — nothing is taken from Dire Wolf's text rendering, which
escapes unprintable bytes. Several clips are decoded in one ``atest`` run,
separated by silence, and each decoded frame is mapped back to its clip by
the time Dire Wolf reports (the end of the frame).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError
from heimdall.labels.fm import to_pcm16

ATEST = "atest"
PACKAGE = "direwolf"
#: Silence between clips in one atest run, s (longer than a frame's decoding delay).
GAP_S = 0.5
_DECODED_RE = re.compile(r"DECODED\[\d+\]\s+(\d+):(\d+(?:\.\d+)?)")
_HEX_RE = re.compile(r"^\s+[0-9a-f]{3}:\s+((?:[0-9a-f]{2} ?)+)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class Frame:
    """One decoded AX.25 frame.

    Attributes
    ----------
    source, destination
        ``CALL`` or ``CALL-SSID``.
    path
        Digipeater entries, each ``(CALL[-SSID], has_been_repeated)``.
    info
        Information field bytes.
    time_s
        Where in its clip the frame ended, s (Dire Wolf's time stamp).

    """

    source: str
    destination: str
    path: tuple[tuple[str, bool], ...]
    control: int
    pid: int
    info: bytes
    time_s: float = float("nan")

    @property
    def repeated(self) -> bool:
        """Any digipeater entry has its has-been-repeated (H) bit set."""
        return any(h for _, h in self.path)

    @property
    def tnc2(self) -> str:
        """``SRC>DEST,DIGI*,...:info`` (TNC2 monitor format, info as Latin-1)."""
        head = ",".join([self.destination, *(c + ("*" if h else "") for c, h in self.path)])
        return f"{self.source}>{head}:{self.info.decode('latin-1')}"

    def key(self) -> tuple[str, str, tuple[tuple[str, bool], ...], bytes]:
        """What two receivers must agree on: addresses, path and information."""
        return self.source, self.destination, self.path, self.info


def _address(raw: bytes) -> tuple[str, int]:
    call = "".join(chr(b >> 1) for b in raw[:6]).rstrip()
    ssid = (raw[6] >> 1) & 0x0F
    return (f"{call}-{ssid}" if ssid else call), raw[6]


def parse_frame(octets: bytes, time_s: float = float("nan")) -> Frame | None:
    """An AX.25 frame (without flags and FCS) from its bytes; None if the address field is malformed."""
    n_addr = 0
    while 7 * (n_addr + 1) <= len(octets):
        n_addr += 1
        if octets[7 * n_addr - 1] & 0x01:
            break
    else:
        return None
    if n_addr < 2 or n_addr > 10 or len(octets) < 7 * n_addr + 2:
        return None
    dest, _ = _address(octets[0:7])
    src, _ = _address(octets[7:14])
    path = []
    for k in range(2, n_addr):
        call, ssid_byte = _address(octets[7 * k : 7 * k + 7])
        path.append((call, bool(ssid_byte & 0x80)))
    ctl, pid = octets[7 * n_addr], octets[7 * n_addr + 1]
    return Frame(src, dest, tuple(path), ctl, pid, bytes(octets[7 * n_addr + 2 :]), time_s)


def parse_atest_output(text: str) -> list[Frame]:
    """Frames from the output of ``atest -h`` (one DECODED line, then a hex dump per frame)."""
    frames: list[Frame] = []
    time_s: float | None = None
    hex_bytes: list[str] = []

    def flush() -> None:
        if time_s is not None and hex_bytes:
            frame = parse_frame(bytes.fromhex("".join(hex_bytes)), time_s)
            if frame is not None:
                frames.append(frame)

    for line in _ANSI_RE.sub("", text).splitlines():
        m = _DECODED_RE.search(line)
        if m:
            flush()
            time_s, hex_bytes = 60.0 * int(m.group(1)) + float(m.group(2)), []
            continue
        h = _HEX_RE.match(line)
        if h and time_s is not None:
            hex_bytes.extend(h.group(1).split())
    flush()
    return frames


def atest_path() -> str:
    """Path of ``atest``; HeimdallError naming the Debian package when it is missing."""
    path = shutil.which(ATEST)
    if path is None:
        raise HeimdallError(
            f"APRS decoder '{ATEST}' not found on PATH: install the Debian package '{PACKAGE}' "
            f"(apt-get install -y {PACKAGE}, or run make install)"
        )
    return path


def write_wav(path: Path, audio: NDArray[np.int16], rate_hz: int) -> None:
    """Write 16-bit mono PCM ``audio`` to a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate_hz))
        w.writeframes(np.ascontiguousarray(audio, dtype="<i2").tobytes())


def decode_clips(
    clips: list[NDArray[np.floating]], rate_hz: int, timeout_s: float = 600.0
) -> list[list[Frame]]:
    """Decode each audio clip (float, 1 = full deviation, at ``rate_hz``): frames per clip.

    Raises
    ------
    HeimdallError
        ``atest`` is missing or fails.

    """
    exe = atest_path()
    if not clips:
        return []
    gap = np.zeros(int(GAP_S * rate_hz), dtype=np.int16)
    starts, parts, pos = [], [], 0
    for clip in clips:
        pcm = to_pcm16(clip)
        starts.append(pos / rate_hz)
        parts.extend([pcm, gap])
        pos += pcm.size + gap.size
    with tempfile.TemporaryDirectory(prefix="heimdall-atest-") as tmp:
        wav = Path(tmp) / "clips.wav"
        write_wav(wav, np.concatenate(parts), rate_hz)
        try:
            proc = subprocess.run(
                [exe, "-h", "-F", "0", "-B", "1200", str(wav)],
                capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HeimdallError(f"'{ATEST}' (package {PACKAGE}) failed to run: {exc}") from None
    frames = parse_atest_output(proc.stdout)
    if proc.returncode != 0 and not frames:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        raise HeimdallError(f"'{ATEST}' (package {PACKAGE}) exited with {proc.returncode}: {tail[0]}")
    out: list[list[Frame]] = [[] for _ in clips]
    edges = np.asarray(starts)
    for f in frames:
        k = int(np.searchsorted(edges, f.time_s, side="right")) - 1
        if 0 <= k < len(clips):
            out[k].append(
                Frame(f.source, f.destination, f.path, f.control, f.pid, f.info, f.time_s - starts[k])
            )
    return out
