"""The map page's routes in-process: posterior, SigMF upload, stored sets, the page itself."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from heimdall.data.session import OFFLINE, SessionBatch
from heimdall.data.sigmf_io import export_session
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.models.ellipse import SCALE_95, mahalanobis_sq
from heimdall.network.geodesy import geodesic_distance_km
from heimdall.serve import page as page_module
from heimdall.serve.app import create_app
from heimdall.serve.client import session_request
from heimdall.serve.page import PageConfig, check_tiles, content_security_policy, tile_origin

TILES = "http://127.0.0.1:9/{z}/{x}/{y}.png"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, sessions: SessionBatch) -> Path:
    path = tmp_path_factory.mktemp("page-app") / "store"
    with SessionStore.create(str(path), {"note": "page app test"}) as store:
        store.append_shard(0, sessions)
    return path


@pytest.fixture(scope="module")
def client(predictor, store_path: Path) -> TestClient:
    return TestClient(create_app(predictor, page=PageConfig(tiles=TILES, data=str(store_path))))


@pytest.fixture(scope="module")
def sigmf_folder(tmp_path_factory: pytest.TempPathFactory, sessions: SessionBatch) -> Path:
    return export_session(sessions, 0, tmp_path_factory.mktemp("page-sigmf"))


def _files(paths: list[Path], rename: dict[str, str] | None = None) -> dict:
    rename = rename or {}
    return {
        "files": [
            {"name": rename.get(p.name, p.name), "data_base64": base64.b64encode(p.read_bytes()).decode()}
            for p in paths
        ]
    }


def _core(answer: dict) -> dict:
    keep = ("latitude", "longitude", "ellipse_1sigma", "ellipse_95", "geojson", "receivers_heard")
    return {k: answer[k] for k in keep}


def test_posterior_is_the_localize_answer_plus_its_raster(client, sessions: SessionBatch, predictor) -> None:
    body = session_request(sessions, 1)
    answer = client.post("/v1/localize", json=body).json()
    post = client.post("/v1/posterior", json=body).json()
    assert _core(post) == _core(answer)
    assert post["posterior"]["map"] == {"latitude": answer["latitude"], "longitude": answer["longitude"]}
    # the raster holds the Gaussian of the model's output: its densest pixel is next to the mean
    mean, cov = predictor.predict(sessions.select([1]))
    [mode] = post["posterior"]["modes"]
    e, n = predictor.frame.to_local_km(mode["latitude"], mode["longitude"])
    assert float(mahalanobis_sq(mean[0], cov[0], np.array([e, n]))) < 0.01
    assert mode["density_per_km2"] == pytest.approx(
        1 / (2 * np.pi * np.sqrt(np.linalg.det(cov[0]))), rel=0.01
    )
    assert post["posterior"]["raster"]["mass_in_raster"] == pytest.approx(1.0, abs=2e-3)
    states = {r["id"]: r["state"] for r in post["receivers"]}
    for j, sid in enumerate(sessions.rx_station[1]):
        if sessions.rx_state[1, j] == OFFLINE:
            assert states[str(sid)] == "offline"
        else:
            assert states[str(sid)] == ("heard" if str(sid) in answer["receivers_heard"] else "silent")
    for r in post["receivers"]:
        j = list(sessions.rx_station[1]).index(r["id"])
        assert (
            geodesic_distance_km(
                r["latitude"], r["longitude"], sessions.rx_lat_deg[1, j], sessions.rx_lon_deg[1, j]
            )
            < 1e-3
        )


def test_upload_answers_like_the_stored_session_with_its_truth(client, sigmf_folder: Path, sessions) -> None:
    answer = client.post("/v1/localize", json=session_request(sessions, 0)).json()
    result = client.post("/v1/upload/sigmf", json=_files(sorted(sigmf_folder.iterdir()))).json()
    assert result["latitude"] == pytest.approx(answer["latitude"], abs=1e-9)
    assert result["longitude"] == pytest.approx(answer["longitude"], abs=1e-9)
    truth = result["truth"]
    assert truth["latitude"] == pytest.approx(float(sessions.tx_lat_deg[0]))
    expected = geodesic_distance_km(
        truth["latitude"], truth["longitude"], answer["latitude"], answer["longitude"]
    )
    assert truth["error_km"] == pytest.approx(float(expected))
    e95 = answer["ellipse_95"]["semi_major_m"] / answer["ellipse_1sigma"]["semi_major_m"]
    assert e95 == pytest.approx(SCALE_95)
    # without the collection file: every uploaded recording, same answer (the truth is in the collection)
    no_coll = [p for p in sorted(sigmf_folder.iterdir()) if not p.name.endswith(".sigmf-collection")]
    result2 = client.post("/v1/upload/sigmf", json=_files(no_coll)).json()
    assert result2["latitude"] == result["latitude"] and "truth" not in result2


def _unknown_station(folder: Path, tmp: Path) -> list[Path]:
    """A copy of the session where one recording claims a station the model does not know, far away."""
    out = tmp / "unknown"
    out.mkdir(exist_ok=True)
    for p in folder.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    meta = next(p for p in sorted(out.glob("*.sigmf-meta")) if p.with_suffix(".sigmf-data").exists())
    doc = json.loads(meta.read_text())
    doc["global"]["heimdall:station"] = "nowhere"
    doc["global"]["core:geolocation"] = {"type": "Point", "coordinates": [2.35, 48.85]}
    meta.write_text(json.dumps(doc))
    return sorted(out.iterdir())


@pytest.mark.parametrize(
    "case, expect",
    [
        ("bad_name", "not a SigMF file name"),
        ("bad_base64", "not valid base64"),
        ("data_only", "no .sigmf-meta file"),
        ("orphan_data", "no matching"),
        ("two_receivers", "at least 3 needed"),
        ("unknown_station", "nowhere"),
        ("not_json", "sigmf-meta"),
        ("not_utf8", "sigmf-meta"),
        ("empty_data", "holds 0 bytes"),
        ("no_datatype", "core:datatype"),
        ("global_not_an_object", "invalid SigMF meta"),
        ("zero_frequency", "field 'core:frequency' must be a frequency above 0"),
        ("audio_frequency", "center_freq_hz from the SigMF files"),  # readable, but no request's
        ("micro_hz_rate", "sample rate must be 1000 to 1e+07 Hz"),
    ],
)
def test_upload_refusals_name_the_problem(
    client, sigmf_folder: Path, tmp_path: Path, case: str, expect: str
) -> None:
    files = sorted(sigmf_folder.iterdir())
    metas = [p for p in files if p.name.endswith(".sigmf-meta") and p.with_suffix(".sigmf-data").exists()]
    if case == "bad_name":
        body = _files(files, {files[0].name: "../evil.sigmf-meta"})
    elif case == "bad_base64":
        body = _files(files)
        body["files"][0]["data_base64"] = "@@@"
    elif case == "data_only":
        body = _files([p for p in files if p.name.endswith(".sigmf-data")])
    elif case == "orphan_data":
        body = _files([p for p in files if p != metas[0]])
    elif case == "two_receivers":
        body = _files([*metas[:2], *(p.with_suffix(".sigmf-data") for p in metas[:2])])
    elif case == "unknown_station":
        body = _files(_unknown_station(sigmf_folder, tmp_path))
    elif case in ("zero_frequency", "audio_frequency", "micro_hz_rate"):  # every recording says so
        body = _files(files)
        for f in body["files"]:
            if f["name"].endswith(".sigmf-meta"):
                doc = json.loads(base64.b64decode(f["data_base64"]))
                doc["global"].pop("core:sha512", None)
                if case.endswith("frequency"):
                    doc["captures"][0]["core:frequency"] = 0.0 if case == "zero_frequency" else 1e3
                else:
                    doc["global"]["core:sample_rate"] = 1e-6
                f["data_base64"] = base64.b64encode(json.dumps(doc).encode()).decode()
    else:
        body = _files(files)
        names = [f["name"] for f in body["files"]]
        if case == "empty_data":
            body["files"][names.index(metas[0].with_suffix(".sigmf-data").name)]["data_base64"] = ""
        else:
            doc = json.loads(metas[0].read_text())
            doc["global"].pop("core:datatype")
            content = {
                "global_not_an_object": json.dumps({**doc, "global": [1]}).encode(),
                "not_json": b"not json",
                "not_utf8": b"\xff\xfe{",
                "no_datatype": json.dumps(doc).encode(),
            }
            body["files"][names.index(metas[0].name)]["data_base64"] = base64.b64encode(
                content[case]
            ).decode()
    r = client.post("/v1/upload/sigmf", json=body)
    assert r.status_code == 422, r.text
    msgs = " ".join(d["msg"] + " " + ".".join(map(str, d["loc"])) for d in r.json()["detail"])
    assert expect in msgs
    assert "/tmp" not in msgs and "heimdall-upload-" not in msgs  # no server paths in the message


def test_stored_sessions(client, sessions: SessionBatch, predictor) -> None:
    listing = client.get("/v1/sessions").json()
    assert [s["session_id"] for s in listing["sessions"]] == [int(x) for x in sessions.session_id]
    assert all(s["labelled"] for s in listing["sessions"])
    one = client.get("/v1/sessions/2").json()
    direct = client.post("/v1/localize", json=session_request(sessions, 2)).json()
    assert one["latitude"] == pytest.approx(direct["latitude"], abs=1e-9)
    assert one["truth"]["longitude"] == pytest.approx(float(sessions.tx_lon_deg[2]))
    assert client.get("/v1/sessions/99").status_code == 404
    bare = TestClient(create_app(predictor, page=PageConfig(tiles=None)))
    assert bare.get("/v1/sessions").status_code == 404


def test_index_page_config_and_policy(client, predictor, monkeypatch) -> None:
    r = client.get("/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert (
        "connect-src 'self'" in csp
        and "script-src 'self'" in csp
        and "img-src 'self' data: http://127.0.0.1:9" in csp
    )
    start = r.text.index('id="heimdall-config" type="application/json">') + len(
        'id="heimdall-config" type="application/json">'
    )
    config = json.loads(r.text[start : r.text.index("</script>", start)])
    assert config == {
        "basemap": {"tiles": TILES, "attribution": "© OpenStreetMap contributors"},
        "has_data": True,
        "token_required": False,
    }
    assert client.get("/static/page.js").status_code == 200
    monkeypatch.setattr(page_module, "missing_vendor", lambda: ["leaflet.js"])
    r = client.get("/")
    assert r.status_code == 503 and "make vendor" in r.text


@pytest.mark.parametrize(
    "template, origin",
    [
        ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
        ("https://{s}.tiles.example.org:8443/t/{z}/{x}/{y}.png", "https://*.tiles.example.org:8443"),
        (None, ""),
    ],
)
def test_tile_origin(template, origin) -> None:
    assert tile_origin(template) == origin
    assert ("img-src 'self' data:" + (f" {origin}" if origin else "") + ";") in content_security_policy(
        template
    )


@pytest.mark.parametrize("bad", ["ftp://x/{z}/{x}/{y}", "https://x/tiles.png", "tiles/{z}/{x}/{y}.png"])
def test_bad_tile_templates_are_refused(bad: str, predictor) -> None:
    with pytest.raises(HeimdallError, match="--tiles"):
        check_tiles(bad)
    with pytest.raises(HeimdallError, match="--tiles"):
        create_app(predictor, page=PageConfig(tiles=bad))
    assert check_tiles("none") is None


def test_missing_stored_set_is_refused_at_start(predictor, tmp_path: Path) -> None:
    with pytest.raises(HeimdallError, match="--data"):
        create_app(predictor, page=PageConfig(tiles=None, data=str(tmp_path / "no-such-store")))
