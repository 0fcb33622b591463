"""Our AX.25 / APRS / AFSK encoder against the standards and two independent decoders.

Dire Wolf (``atest``) and multimon-ng decode the audio of our encoder; audio
from Dire Wolf's own ``gen_packets`` decodes through our FM/IQ path.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import wave

import aprslib
import numpy as np
import pytest

from heimdall.labels.direwolf import decode_clips, write_wav
from heimdall.labels.fm import iq_to_audio
from heimdall.labels.policy import M_PER_DEG
from heimdall.sim.aprs import PositionReport, frame_burst, position_frame
from heimdall.sim.ax25 import Address, crc16_x25, hdlc_bits, nrzi, stuff_bits

needs_direwolf = pytest.mark.skipif(shutil.which("atest") is None, reason="direwolf not installed")
needs_multimon = pytest.mark.skipif(shutil.which("multimon-ng") is None, reason="multimon-ng not installed")

PATH = (Address("WIDE1", 1, repeated=True), Address("WIDE2", 1))
CASES = [
    PositionReport(45.46421, 9.18951, "uncompressed"),
    PositionReport(-33.86785, 151.20732, "uncompressed", ambiguity=2),
    PositionReport(45.46421, 9.18951, "compressed"),
    PositionReport(40.01499, -105.27055, "compressed"),
    PositionReport(45.46421, 9.18951, "mic-e"),
    PositionReport(-33.86785, -5.20732, "mic-e", ambiguity=1),
    PositionReport(12.5, 105.9031, "mic-e"),  # multimon-ng stops printing at bytes < 0x20
]


def _tolerance_deg(rep: PositionReport) -> float:
    """Largest coordinate error the format allows (deg): half a step, or the half ambiguity box."""
    if rep.fmt == "compressed":
        return 0.5 / 190463.0 + 1e-9
    step = (0.01, 0.1, 1.0, 10.0, 60.0)[rep.ambiguity] / 60.0
    return (step / 2.0) * (1.0 + 1e-6)


def _audio(frame, rate: int) -> np.ndarray:
    burst = frame_burst(frame, 0.05, txdelay_s=0.15)
    t = np.arange(int((burst.end_s + 0.05) * rate)) / rate
    return burst.audio(t)


def test_crc16_x25_check_value_and_residue() -> None:
    assert crc16_x25(b"123456789") == 0x906E  # catalogue check value
    assert crc16_x25(b"") == 0x0000
    data = b"Heimdall APRS"
    fcs = crc16_x25(data)
    # appending the FCS (LSB first) leaves the X.25 "good FCS" residue 0xF0B8 (before the final XOR)
    assert crc16_x25(data + bytes([fcs & 0xFF, fcs >> 8])) ^ 0xFFFF == 0xF0B8


def test_address_field_bytes() -> None:
    # AX.25 2.2 Fig. 3.5 style: each character shifted left, SSID byte 0b CRRSSSSX
    frame = position_frame(Address("N0CALL", 7), PositionReport(10.0, 10.0), (Address("WIDE1", 1, True),))
    body = frame.body()
    assert body[:6] == bytes(ord(c) << 1 for c in "APZHMD")
    assert body[6] == 0x80 | 0x60  # destination: C bit set, not last
    assert body[7:13] == bytes(ord(c) << 1 for c in "N0CALL")
    assert body[13] == 0x60 | (7 << 1)  # source: C bit clear, SSID 7, not last
    assert body[20] == 0x80 | 0x60 | (1 << 1) | 0x01  # digipeater: H bit, SSID 1, last address
    assert body[21:23] == bytes([0x03, 0xF0])


def test_bit_stuffing_and_nrzi() -> None:
    rng = np.random.default_rng(0)
    bits = (rng.random(2000) < 0.8).astype(np.uint8)  # long runs of ones
    stuffed = stuff_bits(bits)
    assert "111111" not in "".join(map(str, stuffed))
    # unstuff independently: drop the bit after every five ones
    out, ones, skip = [], 0, False
    for b in stuffed.tolist():
        if skip:
            assert b == 0
            skip, ones = False, 0
            continue
        out.append(b)
        ones = ones + 1 if b else 0
        if ones == 5:
            skip = True
    assert np.array_equal(np.array(out), bits)
    levels = nrzi(np.array([0, 1, 1, 0, 0], dtype=np.uint8), start=1)
    assert levels.tolist() == [0, 0, 0, 1, 0]
    flags = hdlc_bits(b"", 2, 0)
    assert flags.tolist() == [0, 1, 1, 1, 1, 1, 1, 0] * 2


@needs_direwolf
@pytest.mark.parametrize("rep", CASES, ids=lambda r: f"{r.fmt}-amb{r.ambiguity}-{r.lat_deg:.0f}")
def test_direwolf_decodes_our_audio(rep: PositionReport, tmp_path) -> None:
    frame = position_frame(Address("IZ2ABC", 9), rep, PATH)
    frames = decode_clips([_audio(frame, 44100)], 44100)[0]
    assert len(frames) == 1
    got = frames[0]
    assert got.source == "IZ2ABC-9"
    assert got.path == (("WIDE1-1", True), ("WIDE2-1", False))
    assert got.tnc2 == frame.monitor_text
    parsed = aprslib.parse(got.tnc2)
    assert parsed["format"] == rep.fmt
    tol = _tolerance_deg(rep)
    assert abs(parsed["latitude"] - rep.lat_deg) <= tol
    assert abs(parsed["longitude"] - rep.lon_deg) <= tol
    assert int(parsed.get("posambiguity", 0) or 0) == rep.ambiguity


@needs_multimon
@pytest.mark.parametrize("rep", CASES[::2], ids=lambda r: r.fmt)
def test_multimon_decodes_our_audio(rep: PositionReport, tmp_path) -> None:
    frame = position_frame(Address("DL1XYZ", 15), rep, PATH)
    raw = tmp_path / "a.raw"
    raw.write_bytes((_audio(frame, 22050) * 16000).astype("<i2").tobytes())
    out = subprocess.run(
        ["multimon-ng", "-q", "-A", "-t", "raw", "-a", "AFSK1200", str(raw)],
        capture_output=True, timeout=60, check=True,
    ).stdout.decode("latin-1")  # fmt: skip
    lines = [ln[len("APRS: ") :] for ln in out.splitlines() if ln.startswith("APRS: ")]
    assert lines == [frame.monitor_text]
    parsed = aprslib.parse(lines[0])
    assert abs(parsed["latitude"] - rep.lat_deg) <= _tolerance_deg(rep)
    assert abs(parsed["longitude"] - rep.lon_deg) <= _tolerance_deg(rep)


@needs_direwolf
def test_gen_packets_audio_decodes_through_our_fm_iq_path(tmp_path) -> None:
    text = "WB2OSZ-1>APDW12,WIDE2-2:!4237.14NS07120.83W#"
    (tmp_path / "msg.txt").write_text(text)  # gen_packets keeps a trailing newline in the frame
    wav = tmp_path / "gen.wav"
    subprocess.run(
        ["gen_packets", "-r", "48000", "-o", str(wav), str(tmp_path / "msg.txt")],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)
    audio /= np.abs(audio).max()
    fs = 12000.0  # decimate the audio to the IQ rate, then FM-modulate with 3 kHz peak deviation
    audio12 = audio[:: rate // int(fs)]
    phase = 2.0 * np.pi * 3000.0 * np.cumsum(audio12) / fs
    rng = np.random.default_rng(1)
    noise = 10 ** (-15 / 20) * (rng.standard_normal(phase.size) + 1j * rng.standard_normal(phase.size))
    iq = np.exp(1j * (phase + 0.7)) + noise / math.sqrt(2.0)
    frames = decode_clips([iq_to_audio(iq, fs, 22050)], 22050)[0]
    assert [f.tnc2 for f in frames] == [text]


def test_m_per_deg_is_mean_earth_sphere() -> None:
    assert M_PER_DEG == pytest.approx(111_194.93, abs=0.01)


def test_write_wav_roundtrip(tmp_path) -> None:
    pcm = (np.arange(100) - 50).astype(np.int16)
    write_wav(tmp_path / "x.wav", pcm, 22050)
    with wave.open(str(tmp_path / "x.wav")) as w:
        assert w.getframerate() == 22050
        assert np.array_equal(np.frombuffer(w.readframes(100), dtype="<i2"), pcm)
