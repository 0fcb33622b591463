"""The inference service as a real process over HTTP: answers, refusals, limits."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from scipy.signal import resample_poly
from scipy.stats import multivariate_normal

from heimdall.data.session import OFFLINE, SessionBatch
from heimdall.export.predictor import OnnxPredictor
from heimdall.models.ellipse import SCALE_95
from heimdall.serve.client import encode_iq, session_request

pytestmark = pytest.mark.slow


def _post(served, body: Any, path: str = "/v1/localize") -> httpx.Response:
    return httpx.post(served.url + path, json=body, timeout=30.0)


def _core(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "inference_ms"}


def test_health_and_model_card(served, network) -> None:
    assert httpx.get(served.url + "/health").json()["status"] == "ok"
    card = httpx.get(served.url + "/v1/model").json()
    assert [rx["id"] for rx in card["network"]["receivers"]] == network.ids
    area = card["trained_area"]
    for rx in network.receivers:  # the trained area holds every receiver of the network
        assert area["lat_min"] < rx.lat < area["lat_max"] and area["lon_min"] < rx.lon < area["lon_max"]
    assert card["inputs"]["n_samples"] == 3000 and card["inputs"]["sample_rate_hz"] == 12000.0
    # a free-form summary naming no held-out test set is not shown as a test figure
    assert card["evaluation"] is None and "not shown as a test figure" in card["evaluation_status"]
    assert card["limits"]["min_heard_receivers"] == 3 and card["limits"]["max_body_bytes"] == 8 * 1024 * 1024
    schema = httpx.get(served.url + "/openapi.json").json()
    assert {"/v1/localize", "/v1/localize/batch", "/health", "/v1/model"} <= set(schema["paths"])


def test_binds_loopback_by_default(served) -> None:
    """Started without --host, the server listens on 127.0.0.1 only (Linux /proc/net/tcp: 0100007F)."""
    port = int(served.url.rsplit(":", 1)[1])
    listening = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[3] == "0A"
    ]
    assert f"0100007F:{port:04X}" in listening
    assert f"00000000:{port:04X}" not in listening


def test_answer_matches_direct_onnxruntime_run(
    served, sessions: SessionBatch, predictor: OnnxPredictor
) -> None:
    """Lat/lon and ellipses equal an independent computation from onnxruntime on the stored session.

    Reference: the predictor's own input path (contracts §3 ``session_inputs``), the
    tangent-plane inverse, and the ellipse from numpy's eigen-decomposition of Σ.
    """
    mean, cov = predictor.predict(sessions)
    for i in range(sessions.n_sessions):
        answer = _post(served, session_request(sessions, i)).json()
        lat, lon = predictor.frame.to_latlon(mean[i, 0], mean[i, 1])
        assert answer["latitude"] == pytest.approx(float(lat), abs=1e-6)  # 1e-6 degree ~ 0.1 m
        assert answer["longitude"] == pytest.approx(float(lon), abs=1e-6)
        lam, vec = np.linalg.eigh(cov[i])
        major = answer["ellipse_1sigma"]
        assert major["semi_major_m"] == pytest.approx(np.sqrt(lam[1]) * 1000.0, rel=1e-5)
        assert major["semi_minor_m"] == pytest.approx(np.sqrt(lam[0]) * 1000.0, rel=1e-5)
        azimuth = np.degrees(np.arctan2(vec[0, 1], vec[1, 1])) % 180.0
        assert (
            min(abs(major["orientation_deg"] - azimuth), 180 - abs(major["orientation_deg"] - azimuth)) < 1e-3
        )
        assert answer["ellipse_95"]["semi_major_m"] == pytest.approx(
            major["semi_major_m"] * SCALE_95, rel=1e-9
        )
        assert answer["unmapped_receivers"] == []
        assert answer["out_of_area"] is bool(_mass_outside(predictor, mean[i], cov[i]) > 0.05)
        features = answer["geojson"]["features"]
        assert features[0]["geometry"]["coordinates"] == pytest.approx(
            [answer["longitude"], answer["latitude"]]
        )
        ring = np.array(features[1]["geometry"]["coordinates"][0])
        east, north = predictor.frame.to_local_km(ring[:, 1], ring[:, 0])
        d = np.stack([east, north], -1) - mean[i]
        m2 = np.einsum(
            "ni,ij,nj->n", d, np.linalg.inv(cov[i]), d
        )  # every vertex of the 1σ ring at distance 1
        np.testing.assert_allclose(m2, 1.0, rtol=1e-4)  # cm-level float32 differences of the mean


def _mass_outside(predictor: OnnxPredictor, mean: np.ndarray, cov: np.ndarray) -> float:
    """Gaussian mass outside the trained rectangle (network ± the world's margin), scipy's bivariate CDF."""
    net, margin = predictor.network, predictor.metadata["world"]["area_margin_km"]
    east, north = predictor.frame.to_local_km(
        np.array([rx.lat for rx in net.receivers]), np.array([rx.lon for rx in net.receivers])
    )
    e0, e1, n0, n1 = east.min() - margin, east.max() + margin, north.min() - margin, north.max() + margin
    cdf = multivariate_normal(mean, cov).cdf
    return 1.0 - (cdf([e1, n1]) - cdf([e0, n1]) - cdf([e1, n0]) + cdf([e0, n0]))


def test_heard_and_silent_follow_the_simulated_snr(served, sessions: SessionBatch) -> None:
    """Receivers the simulator put > 10 dB above noise are heard; < -10 dB silent; offline ones neither."""
    for i in range(sessions.n_sessions):
        answer = _post(served, session_request(sessions, i)).json()
        for r, station in enumerate(sessions.rx_station[i]):
            snr = sessions.rx_snr_db[i, r]
            if sessions.rx_state[i, r] == OFFLINE:
                assert station not in answer["receivers_heard"] + answer["receivers_silent"]
            elif snr > 10.0:
                assert station in answer["receivers_heard"]
            elif snr < -10.0:
                assert station in answer["receivers_silent"]


def test_station_ids_positions_and_float32_give_the_same_answer(served, sessions: SessionBatch) -> None:
    reference = _core(_post(served, session_request(sessions, 0)).json())
    by_position = _core(_post(served, session_request(sessions, 0, by_station=False)).json())
    as_float = _core(_post(served, session_request(sessions, 0, iq_format="float32")).json())
    assert by_position["latitude"] == pytest.approx(reference["latitude"], abs=1e-9)
    assert by_position["ellipse_1sigma"] == pytest.approx(reference["ellipse_1sigma"], rel=1e-6)
    assert as_float == reference


def _with_iq(body: dict, transform, iq_format: str = "float32", rate: float | None = None) -> dict:
    """The request with every online receiver's IQ replaced by transform(complex samples)."""
    out = copy.deepcopy(body)
    out["iq_format"] = iq_format
    if rate is not None:
        out["sample_rate_hz"] = rate
    for rx in out["receivers"]:
        if "iq" in rx:
            pairs = np.frombuffer(base64.b64decode(rx["iq"]), dtype="<i2").reshape(-1, 2) / 32768.0
            z = transform(pairs[:, 0] + 1j * pairs[:, 1])
            rx["iq"] = encode_iq(np.stack([z.real, z.imag], -1), "float32")
    return out


def test_longer_captures_are_trimmed_shorter_refused_other_rates_resampled(served, sessions) -> None:
    body = session_request(sessions, 0)
    reference = _core(_post(served, body).json())
    rng = np.random.default_rng(0)
    longer = _with_iq(body, lambda z: np.concatenate([z, 0.01 * rng.normal(size=600)]))
    assert _core(_post(served, longer).json()) == reference  # only the first 3000 samples count
    shorter = _with_iq(body, lambda z: z[:2400])
    r = _post(served, shorter)
    assert r.status_code == 422 and "needs at least 0.2500 s" in r.json()["detail"][0]["msg"]
    # 24 kHz captures (the 12 kHz ones upsampled) are resampled back and answered near the same place. Not
    # exactly: both polyphase filters cut the noise at the ±6 kHz band edges, which the features see. The
    # resampler itself is checked against a closed form in test_inputs.py.
    upsampled = _with_iq(body, lambda z: resample_poly(np.concatenate([z, z[-64:]]), 2, 1), rate=24000.0)
    answer = _post(served, upsampled).json()
    strong = {
        str(s) for s, snr in zip(sessions.rx_station[0], sessions.rx_snr_db[0], strict=True) if snr > 10.0
    }
    assert strong <= set(answer["receivers_heard"])
    shift_m = np.hypot(
        (answer["latitude"] - reference["latitude"]) * 111_000.0,
        (answer["longitude"] - reference["longitude"])
        * 111_000.0
        * np.cos(np.radians(reference["latitude"])),
    )
    assert shift_m < reference["ellipse_1sigma"]["semi_major_m"]


def _malformed(body: dict) -> list[tuple[str, dict | bytes, int, str]]:
    """(name, request body, expected status, text the message must contain)."""
    bad_b64 = copy.deepcopy(body)
    bad_b64["receivers"][0]["iq"] = "@@not base64@@"
    with_nan = _with_iq(body, lambda z: np.where(np.arange(z.size) == 17, np.nan, z))
    mismatched = _with_iq(body, lambda z: z)
    online = [rx for rx in mismatched["receivers"] if "iq" in rx]
    online[1]["iq"] = encode_iq(np.zeros((2900, 2)), "float32")
    two = copy.deepcopy(body)
    two["receivers"] = [rx for rx in two["receivers"] if "iq" in rx][:2]
    unknown = copy.deepcopy(body)
    unknown["receivers"][0]["station"] = "atlantis"
    far = copy.deepcopy(body)
    far["receivers"][0] = {
        "lat": 10.0,
        "lon": 10.0,
        "iq": next(rx["iq"] for rx in body["receivers"] if "iq" in rx),
    }
    off_station = copy.deepcopy(body)
    online = next(i for i, rx in enumerate(body["receivers"]) if "iq" in rx)
    off_station["receivers"][online] = {"lat": 45.6, "lon": 8.0, "iq": body["receivers"][online]["iq"]}
    rng = np.random.default_rng(1)
    noise_only = copy.deepcopy(body)
    for rx in noise_only["receivers"]:
        if "iq" in rx:
            rx["iq"] = encode_iq(rng.normal(0, 100, size=(3000, 2)).astype(np.int16), "int16")
    silence = copy.deepcopy(body)
    for rx in silence["receivers"]:
        if "iq" in rx:
            rx["iq"] = encode_iq(np.zeros((3000, 2), np.int16), "int16")
    as_string = {**body, "sample_rate_hz": "12000"}
    huge = copy.deepcopy(body) | {"iq_format": "float32"}
    for rx in huge["receivers"]:
        if "iq" in rx:
            rx["iq"] = encode_iq(np.full((3000, 2), 1e20, np.float32), "float32")
    tiny_rate = copy.deepcopy(body)
    tiny_rate["receivers"][online]["sample_rate_hz"] = 1e-6
    nan_json = b'{"center_freq_hz": NaN, "sample_rate_hz": 12000, "receivers": [{"station": "torino"}]}'
    return [
        ("bad base64", bad_b64, 422, "not valid base64"),
        ("NaN in IQ", with_nan, 422, "NaN or Inf"),
        ("NaN in JSON", nan_json, 422, "finite number"),
        ("mismatched lengths", mismatched, 422, "same length"),
        ("two receivers", two, 422, "at least 3 needed"),
        ("unknown station", unknown, 422, "unknown station 'atlantis'"),
        ("far receiver", far, 422, "outside the area this model was trained for"),
        (
            "receiver at no station",
            off_station,
            422,
            "'45.60000,8.00000' at (45.60000, 8.00000) is not a station",
        ),
        ("nobody heard it", noise_only, 422, "receivers heard the transmitter"),
        ("digital silence", silence, 422, "only 0 receivers heard the transmitter"),
        ("wrong type", {**body, "receivers": "torino"}, 422, "valid list"),
        ("number as a string", as_string, 422, "sample_rate_hz"),
        ("1e-6 Hz", {**body, "sample_rate_hz": 1e-6}, 422, "greater than or equal to 1000"),
        ("float32 1e20 × full scale", huge, 422, "beyond ±1e+06"),
        ("1e-6 Hz for one receiver", tiny_rate, 422, "greater than or equal to 1000"),
        ("bad format", {**body, "iq_format": "int8"}, 422, "int16"),
        ("not JSON", b"{receivers: [", 422, "JSON"),
        ("50 MB body", b" " * (50 * 1024 * 1024), 413, "exceeds the limit"),
    ]


def test_malformed_requests_get_clear_4xx_and_leave_the_service_answering(served, sessions) -> None:
    body = session_request(sessions, 1)
    before = _core(_post(served, body).json())
    for name, bad, status, text in _malformed(body):
        if isinstance(bad, bytes):
            r = httpx.post(
                served.url + "/v1/localize",
                content=bad,
                timeout=30.0,
                headers={"content-type": "application/json"},
            )
        else:
            r = _post(served, bad)
        assert r.status_code == status, (name, r.text[:300])
        assert text in r.text, (name, r.text[:300])
        assert "Traceback" not in r.text
    assert _core(_post(served, body).json()) == before


def test_refusal_names_the_field(served, sessions) -> None:
    body = session_request(sessions, 0)
    body["receivers"][2]["iq"] = "###"
    detail = _post(served, body).json()["detail"]
    assert detail[0]["loc"] == ["body", "receivers", 2, "iq"]
    batch = {"sessions": [session_request(sessions, 0), body]}
    detail = _post(served, batch, "/v1/localize/batch").json()["detail"]
    assert detail[0]["loc"] == ["body", "sessions", 1, "receivers", 2, "iq"]


def test_batch_answers_equal_single_answers(served, sessions) -> None:
    singles = [_post(served, session_request(sessions, i)).json() for i in range(sessions.n_sessions)]
    reply = _post(
        served,
        {"sessions": [session_request(sessions, i) for i in range(sessions.n_sessions)]},
        "/v1/localize/batch",
    ).json()
    assert len(reply["results"]) == len(singles)
    for one, many in zip(singles, reply["results"], strict=True):
        assert many["latitude"] == pytest.approx(one["latitude"], abs=1e-7)
        assert many["ellipse_1sigma"] == pytest.approx(one["ellipse_1sigma"], rel=1e-5)
        assert many["receivers_heard"] == one["receivers_heard"]


def test_chunked_body_over_the_limit_is_refused_while_streaming(served) -> None:
    """A body without Content-Length is counted as it arrives; over 8 MiB it gets 413."""

    def chunks():
        for _ in range(12):
            yield b" " * (1024 * 1024)

    r = httpx.post(
        served.url + "/v1/localize", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]
