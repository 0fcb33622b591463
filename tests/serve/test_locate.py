"""`heimdall locate` on a stored session and on the same session as SigMF recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.data.sigmf_io import export_sigmf
from heimdall.data.store import SessionStore
from heimdall.sim.simulate_job import run_simulation

pytestmark = pytest.mark.slow

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius: the spherical reference for distances and bearings


def _haversine_km(lat1, lon1, lat2, lon2):
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def _spherical_bearing_deg(lat1, lon1, lat2, lon2):
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.degrees(np.arctan2(y, x)) % 360.0


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("locate") / "sessions")
    run_simulation(
        out=uri,
        network="nw-italy",
        sessions=3,
        world_seed=0,
        seed=21,
        duration_s=0.25,
        shard_size=3,
        workers=1,
    )
    return uri


def _locate(capsys, *args: str) -> dict:
    main(["locate", *args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_locate_stored_session_prints_truth_distances_and_writes_geojson(
    capsys, store_uri: str, model_path: Path, tmp_path: Path
) -> None:
    """Distances and bearings agree with the spherical formulas (< 0.5 %, < 0.5°); truth is the stored one."""
    geojson = tmp_path / "answer.geojson"
    result = _locate(capsys, f"{store_uri}#1", "--model", str(model_path), "--geojson", str(geojson))
    session = SessionStore.open(store_uri).read([1])
    truth = result["truth"]
    assert (truth["latitude"], truth["longitude"]) == (session.tx_lat_deg[0], session.tx_lon_deg[0])
    lat, lon = result["latitude"], result["longitude"]
    assert truth["error_km"] == pytest.approx(
        _haversine_km(lat, lon, truth["latitude"], truth["longitude"]), rel=5e-3
    )
    assert [row["receiver"] for row in result["receivers"]] == list(session.rx_station[0])
    for r, row in enumerate(result["receivers"]):
        rlat, rlon = session.rx_lat_deg[0, r], session.rx_lon_deg[0, r]
        assert row["distance_km"] == pytest.approx(_haversine_km(rlat, rlon, lat, lon), rel=5e-3)
        diff = abs(row["bearing_deg"] - _spherical_bearing_deg(rlat, rlon, lat, lon))
        assert min(diff, 360 - diff) < 0.5
        assert row["state"] in {"heard", "silent", "offline"}
    collection = json.loads(geojson.read_text())
    names = [f["properties"]["name"] for f in collection["features"]]
    assert names == ["estimate", "ellipse_1sigma", "ellipse_95", "truth"]
    ring = collection["features"][2]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 73


def test_locate_sigmf_folder_gives_the_stored_answer(
    capsys, store_uri: str, model_path: Path, tmp_path
) -> None:
    """The same session exported to SigMF (ci16, same rate) is located exactly where the stored one is."""
    export_sigmf(store_uri, tmp_path / "sigmf")
    from_store = _locate(capsys, f"{store_uri}#2", "--model", str(model_path))
    from_sigmf = _locate(capsys, f"{tmp_path / 'sigmf'}#2", "--model", str(model_path))
    assert from_sigmf["latitude"] == pytest.approx(from_store["latitude"], abs=1e-9)
    assert from_sigmf["ellipse_1sigma"] == pytest.approx(from_store["ellipse_1sigma"], rel=1e-9)
    assert from_sigmf["truth"] == pytest.approx(from_store["truth"])
    single = next((tmp_path / "sigmf").glob("session-*"))  # one session's own folder needs no index
    assert "latitude" in _locate(capsys, str(single), "--model", str(model_path))


def test_human_output_and_errors(capsys, store_uri: str, model_path: Path) -> None:
    main(["locate", f"{store_uri}#0", "--model", str(model_path)])
    out = capsys.readouterr().out
    assert "1σ ellipse" in out and "truth" in out and "distance km" in out
    with pytest.raises(SystemExit) as exc:
        main(["locate", f"{store_uri}#99", "--model", str(model_path)])
    assert exc.value.code == 2 and "out of range" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(SystemExit):
        main(["locate", store_uri, "--model", str(model_path)])
    assert "URI#index" in " ".join(capsys.readouterr().err.split())


def test_locate_a_session_and_a_model_on_s3(
    capsys, s3_bucket: str, s3_endpoint: str, model_path: Path
) -> None:
    """Store and model on the S3 endpoint (moto_server): the same answer as from local copies."""
    import boto3

    uri = f"s3://{s3_bucket}/sessions"
    run_simulation(out=uri, network="nw-italy", sessions=1, world_seed=0, seed=21, duration_s=0.25, workers=1)
    boto3.client("s3", endpoint_url=s3_endpoint).upload_file(str(model_path), s3_bucket, "models/model.onnx")
    remote = _locate(capsys, f"{uri}#0", "--model", f"s3://{s3_bucket}/models", "--endpoint-url", s3_endpoint)
    local = _locate(capsys, f"{uri}#0", "--model", str(model_path))
    assert remote["latitude"] == local["latitude"] and remote["ellipse_95"] == local["ellipse_95"]
    assert remote["truth"]["latitude"] == SessionStore.open(uri).read([0]).tx_lat_deg[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("offline", "2 online receivers"),  # the others never delivered a capture
        ("silence", "only 2 receivers heard the transmitter"),  # online, digital silence
    ],
)
def test_a_session_too_few_receivers_heard_is_refused(
    capsys, store_uri: str, model_path: Path, tmp_path: Path, change: str, message: str
) -> None:
    """As the service does: fewer than 3 online or heard receivers is an error, not a prior-only answer."""
    from heimdall.data.session import OFFLINE

    source = SessionStore.open(store_uri)
    batch = source.read([0])
    online = np.flatnonzero(batch.rx_state[0] != OFFLINE)
    assert len(online) >= 3
    for r in online[2:]:
        batch.iq[0, r] = 0
        if change == "offline":
            batch.rx_state[0, r] = OFFLINE
    out = tmp_path / "few"
    SessionStore.create(out, source.metadata).append_shard(0, batch)
    with pytest.raises(SystemExit) as exc:
        main(["locate", f"{out}#0", "--model", str(model_path)])
    assert exc.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
