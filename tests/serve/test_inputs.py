"""Request decoding, resampling, the trained area and the body-size limit, against closed forms."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from heimdall.serve.area import TrainedArea
from heimdall.serve.inputs import RequestError, decode_iq, iq_pairs, resample_to
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
        (
            base64.b64encode(np.array([0.5, 0.5, 1.0, -2e6], "<f4").tobytes()).decode(),
            "float32",
            r"beyond ±1e\+06 \(first at sample 1\)",
        ),
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


@pytest.mark.parametrize("fmt", ["int16", "float32"])
def test_decoded_samples_are_the_pairs_as_complex(fmt: str) -> None:
    """The complex64 view of the decoded pairs equals I + jQ built value by value."""
    rng = np.random.default_rng(11)
    pairs = rng.integers(-32768, 32768, (5000, 2)) if fmt == "int16" else rng.normal(0, 0.3, (5000, 2))
    raw = pairs.astype("<i2" if fmt == "int16" else "<f4")
    z = decode_iq(base64.b64encode(raw.tobytes()).decode(), fmt, ("iq",))
    x = raw.astype(np.float32) / (np.float32(32768.0) if fmt == "int16" else np.float32(1.0))
    assert z.dtype == np.complex64 and z.shape == (5000,)
    np.testing.assert_array_equal(z, (x[:, 0] + 1j * x[:, 1]).astype(np.complex64))
    np.testing.assert_array_equal(iq_pairs(z), x)


def test_heard_scales_each_capture_as_the_complex_samples_do() -> None:
    """The heard flags (peak-normalised int16 measurement) match scaling the complex samples themselves."""
    from heimdall.data.session import HEARD, OFFLINE
    from heimdall.posterior.measure import measure_power
    from heimdall.serve.inputs import _heard

    rng = np.random.default_rng(12)
    n = 2400
    tone = np.exp(2j * np.pi * 0.07 * np.arange(n))
    levels = np.array([0.3, 0.01, 0.0, 0.0, 0.2])[:, None]  # loud, faint, zeros, noise only, offline
    samples = (levels * tone + 0.001 * (rng.normal(size=(5, n)) + 1j * rng.normal(size=(5, n)))).astype(
        np.complex64
    )
    samples[2] = 0
    online = np.array([True, True, True, True, False])
    peak = np.max(np.abs(samples), axis=1, keepdims=True)
    scaled = samples * np.where(peak > 0, 0.5 / np.maximum(peak, 1e-30), 0.0)
    iq = np.round(np.stack([scaled.real, scaled.imag], axis=-1) * 32768.0).astype(np.int16)
    got = _heard(samples, online, 12000.0, 0.0)
    batch = _one_session(iq, np.where(online, HEARD, OFFLINE).astype(np.int8))
    np.testing.assert_array_equal(got, measure_power(batch).heard[0] & (peak[:, 0] > 0))
    assert got.tolist() == [True, True, False, False, False]


def _one_session(iq: np.ndarray, state: np.ndarray):
    from heimdall.data.session import SessionBatch

    r = iq.shape[0]
    nan1, nan_r = np.full(1, np.nan), np.full((1, r), np.nan)
    return SessionBatch(
        session_id=np.zeros(1, np.int64), world_seed=np.full(1, -1, np.int64),
        session_seed=np.full(1, -1, np.int64), center_freq_hz=np.zeros(1), sample_rate_hz=np.full(1, 12e3),
        tx_lat_deg=nan1, tx_lon_deg=nan1, tx_power_dbm=nan1, tx_height_m=nan1, mode=np.full(1, -1, np.int8),
        rx_station=np.full((1, r), "", dtype="<U1"), rx_lat_deg=nan_r, rx_lon_deg=nan_r, rx_height_m=nan_r,
        rx_fullscale_dbm=np.zeros((1, r)), rx_state=state[None], rx_start_ns=np.zeros((1, r), np.int64),
        rx_timing_sigma_s=nan_r, rx_power_dbm=nan_r, rx_snr_db=nan_r, rx_delay_s=nan_r,
        rx_clipped=np.zeros((1, r), bool), iq=iq[None],
    )  # fmt: skip


@pytest.mark.parametrize(("snr_db", "heard_at_0", "heard_at_minus5"), [(-3.0, False, True), (3.0, True, True),
                                                                       (-12.0, False, False)])  # fmt: skip
def test_heard_follows_the_models_detection_threshold(
    snr_db: float, heard_at_0: bool, heard_at_minus5: bool
) -> None:
    """A carrier at a known SNR over the 12 kHz capture (white noise + tone, 1 s): heard or not at 0 dB
    and at −5 dB, as the SNR says."""
    from heimdall.serve.inputs import _heard

    rng = np.random.default_rng(1)
    n, rate = 12_000, 12_000.0
    noise = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2.0)
    tone = 10.0 ** (snr_db / 20.0) * np.exp(2j * np.pi * 300.0 * np.arange(n) / rate)
    samples = (0.01 * (noise + tone)).astype(np.complex64)[None]
    online = np.array([True])
    assert bool(_heard(samples, online, rate, 0.0)[0]) is heard_at_0
    assert bool(_heard(samples, online, rate, -5.0)[0]) is heard_at_minus5


class _NanGaussian:
    """A Gaussian predictor whose answer for its second session is NaN (what overflowing captures gave)."""

    frame = None

    def run(self, **inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = len(inputs["iq"])
        mean, cov = np.zeros((b, 2)), np.tile(np.eye(2), (b, 1, 1))
        mean[1, 0] = np.nan
        return mean, cov


def test_a_non_finite_model_answer_is_refused_not_returned() -> None:
    """Never a 200 with null coordinates: the session whose answer is NaN is named."""
    from heimdall.serve.inputs import PreparedSession
    from heimdall.serve.posterior import locate_prepared

    def session() -> PreparedSession:
        return PreparedSession(
            np.zeros((3, 8, 2), np.float32), np.zeros((3, 3), np.float32), np.ones(3, bool), 145e6,
            ["a", "b", "c"], np.ones(3, np.int8),
        )  # fmt: skip

    with pytest.raises(RequestError, match="not finite") as exc:
        locate_prepared(_NanGaussian(), [session(), session()])
    assert [loc for loc, _ in exc.value.items] == [("body", "sessions", 1)]
