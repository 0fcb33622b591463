"""The application in-process (the same app `heimdall serve` runs), for what a subprocess cannot show."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from heimdall.errors import HeimdallError
from heimdall.serve.app import create_app
from heimdall.serve.client import session_request
from heimdall.serve.run import serve_model


@pytest.fixture(scope="module")
def client(predictor) -> TestClient:
    return TestClient(create_app(predictor, max_body_bytes=2 * 1024 * 1024))


def test_in_process_answers_equal_the_served_process(client, served, sessions) -> None:
    import httpx

    body = session_request(sessions, 2)
    here = client.post("/v1/localize", json=body).json()
    there = httpx.post(served.url + "/v1/localize", json=body, timeout=30).json()
    assert {k: v for k, v in here.items() if k != "inference_ms"} == {
        k: v for k, v in there.items() if k != "inference_ms"
    }
    assert here["inference_ms"] > 0


def test_offline_receiver_with_iq_and_duplicates_are_refused(client, sessions) -> None:
    body = session_request(sessions, 0)
    body["receivers"][0]["online"] = False
    detail = client.post("/v1/localize", json=body).json()["detail"]
    assert detail[0]["loc"] == ["body", "receivers", 0, "iq"] and "offline" in detail[0]["msg"]
    body = session_request(sessions, 0)
    body["receivers"].append(dict(body["receivers"][0]))
    assert "more than once" in client.post("/v1/localize", json=body).json()["detail"][0]["msg"]


def test_schema_level_refusals(client, sessions) -> None:
    body = session_request(sessions, 0)
    body["receivers"][0] = {"station": "torino", "lat": 45.0, "lon": 7.0, "iq": "AAAA"}
    r = client.post("/v1/localize", json=body)
    assert r.status_code == 422 and "not both" in r.text
    r = client.post("/v1/localize/batch", json={"sessions": []})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "sessions"]
    r = client.post("/v1/localize", json={**session_request(sessions, 0), "extra": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "extra"]


def test_serve_refuses_checkpoints_and_bad_ports(tmp_path) -> None:
    with pytest.raises(HeimdallError, match="heimdall export"):
        serve_model(str(tmp_path / "m.ckpt"))
    with pytest.raises(HeimdallError, match="--port"):
        serve_model(str(tmp_path / "m.onnx"), port=70000)


def test_answer_rings_are_the_ellipse_polygons_projected() -> None:
    """answer_of projects the mean and both rings in one call: the same coordinates as one ring at a time."""
    import numpy as np

    from heimdall.models.ellipse import SCALE_95, ellipse_polygon_lonlat
    from heimdall.network.geodesy import LocalFrame
    from heimdall.serve.answer import answer_of

    frame = LocalFrame(45.07, 7.69)
    mean, cov = np.array([12.5, -3.25]), np.array([[16.0, -5.0], [-5.0, 9.0]])
    answer = answer_of(frame, mean, cov, n_vertices=36)
    lat, lon = frame.to_latlon(mean[0], mean[1])
    assert (answer.latitude, answer.longitude) == (float(lat), float(lon))
    point, one, e95 = answer.geojson["features"]
    assert point["geometry"]["coordinates"] == [float(lon), float(lat)]
    assert one["geometry"]["coordinates"] == [ellipse_polygon_lonlat(frame, mean, cov, 1.0, 36)]
    assert e95["geometry"]["coordinates"] == [ellipse_polygon_lonlat(frame, mean, cov, SCALE_95, 36)]


def test_server_keeps_freed_memory_on_glibc() -> None:
    """`heimdall serve` makes glibc keep freed memory (checked in a fresh process: the setting is global)."""
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    code = "from heimdall.serve.run import keep_freed_memory; print(keep_freed_memory())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
