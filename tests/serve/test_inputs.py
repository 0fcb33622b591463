"""Request decoding, resampling, the trained area and the body-size limit, against closed forms."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from heimdall.serve.area import TrainedArea
from heimdall.serve.inputs import RequestError, decode_iq, resample_to
from heimdall.serve.limits import BodySizeLimit


def test_decode_int16_and_float32_pairs() -> None:
    """Little-endian int16 pairs scale by 1/32768; float32 pairs pass through (values by hand)."""
    raw = np.array([[16384, -8192], [-32768, 32767]], dtype="<i2").tobytes()
    z = decode_iq(base64.b64encode(raw).decode(), "int16", ("iq",))
    np.testing.assert_array_equal(z, np.array([0.5 - 0.25j, -1.0 + 32767 / 32768 * 1j], dtype=np.complex64))
    raw = np.array([[0.125, -2.0]], dtype="<f4").tobytes()
    assert decode_iq(base64.b64encode(raw).decode(), "float32", ("iq",))[0] == 0.125 - 2.0j


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("***", "int16", "not valid base64"),
        (base64.b64encode(b"\x00" * 6).decode(), "int16", "6 bytes: not a whole number of int16"),
        (base64.b64encode(b"\x00" * 4).decode(), "float32", "4 bytes: not a whole number of float32"),
        (base64.b64encode(np.array([1.0, np.inf], "<f4").tobytes()).decode(), "float32", "NaN or Inf"),
    ],
)
def test_decode_refusals_name_the_field(text: str, fmt: str, message: str) -> None:
    with pytest.raises(RequestError, match=message) as exc:
        decode_iq(text, fmt, ("body", "receivers", 3, "iq"))
    assert exc.value.items[0][0] == ("body", "receivers", 3, "iq")


@pytest.mark.parametrize("rate_in", [16000.0, 24000.0, 12000.0, 11025.0])
def test_resampled_tone_matches_the_closed_form(rate_in: float) -> None:
    """A 700 Hz complex tone at rate_in becomes exp(2πi·700·n/12000) at 12 kHz (away from filter edges)."""
    n_in = int(rate_in * 0.3)
    x = np.exp(2j * np.pi * 700.0 * np.arange(n_in) / rate_in).astype(np.complex64)
    y = resample_to(x, rate_in, 12000.0, 3000, ("iq",))
    expected = np.exp(2j * np.pi * 700.0 * np.arange(3000) / 12000.0)
    assert y.shape == (3000,)
    np.testing.assert_allclose(y[200:2800], expected[200:2800], atol=2e-3)


def test_short_capture_is_refused_with_durations() -> None:
    x = np.zeros(2000, np.complex64)
    with pytest.raises(RequestError, match=r"0\.1000 s \(2000 samples at 20000 Hz\).*0\.2500 s"):
        resample_to(x, 20000.0, 12000.0, 3000, ("iq",))


def test_trained_area_distance_outside() -> None:
    """Distance to a rectangle: 0 inside, the gap along an axis, the corner distance diagonally."""
    area = TrainedArea(-10.0, 10.0, -5.0, 5.0)
    np.testing.assert_allclose(
        area.outside_km([0.0, 13.0, -13.0, 13.0], [0.0, 0.0, 9.0, 9.0]), [0.0, 3.0, 5.0, 5.0]
    )


def _drive(limit: int, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """Run BodySizeLimit around an echo app; returns (status, body, chunks the middleware pulled)."""
    pulled = 0

    async def app(scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    sent: list[dict] = []

    async def send(message) -> None:
        sent.append(message)

    scope = {"type": "http", "headers": headers}
    asyncio.run(BodySizeLimit(app, limit)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), pulled


def test_body_limit_by_header_reads_nothing() -> None:
    status, body, pulled = _drive(100, [b"x" * 50] * 10, [(b"content-length", b"500")])
    assert status == 413 and pulled == 0 and b"500 bytes exceeds the limit of 100" in body


def test_body_limit_while_streaming_stops_early() -> None:
    status, _, pulled = _drive(100, [b"x" * 50] * 10, [])
    assert status == 413 and pulled == 3  # 150 bytes > 100 after the third chunk; the rest never read


def test_body_under_limit_reaches_the_app_intact() -> None:
    status, body, _ = _drive(100, [b"ab", b"cd"], [])
    assert status == 200 and body == b"abcd"
