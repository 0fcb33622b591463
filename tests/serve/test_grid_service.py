"""`heimdall serve` with grid-posterior models over HTTP: posterior answers, receivers, PNG, card, page.

Two exported GridPosteriorNets (untrained: the service's behaviour does not depend on the
weights): one without a radio map (any receivers) and one carrying a map fitted from 150
simulated labelled sessions of world 13. Answers are checked against the predictor run on
the same sessions read from a store (an independent input path: no request decoding,
resampling or station matching).
"""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from heimdall.data.session import SessionBatch
from heimdall.data.store import SessionStore
from heimdall.export.grid_onnx import export_grid_model, grid_metadata
from heimdall.export.predictor import load_predictor
from heimdall.maps.artifact import load_map, save_map
from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.observations import observations_from_store
from heimdall.models.grid_predictor import GridPosteriorPredictor
from heimdall.models.gridnet import GridPosteriorNet
from heimdall.network.geodesy import geodesic_distance_km
from heimdall.serve.client import session_request
from heimdall.sim.simulate_job import run_simulation

from .conftest import Served, start_server, stop_server

pytestmark = pytest.mark.slow
torch.set_num_threads(1)

N_LABELLED = 150


@dataclass(frozen=True)
class GridSetup:
    """Stores, map and exported models of the tests."""

    root: Path
    labelled: str
    test: str
    radio_map: str
    no_map: Path
    with_map: Path
    picked: list[int]  # test sessions with ≥ 4 receivers > 10 dB above noise


@pytest.fixture(scope="module")
def grid_setup(tmp_path_factory: pytest.TempPathFactory) -> GridSetup:
    root = tmp_path_factory.mktemp("grid-serve")
    lab, test = str(root / "lab"), str(root / "test")
    run_simulation(lab, "nw-italy", N_LABELLED, world_seed=13, seed=3, duration_s=0.05, workers=1)
    run_simulation(test, "nw-italy", 12, world_seed=13, seed=4, duration_s=0.1, workers=1)  # 1200 samples
    obs, net = observations_from_store(lab)
    save_map(fit_radio_map(obs, net, MapsConfig()), str(root / "map"), sources=[lab])
    rmap, meta = load_map(str(root / "map"))
    plain = GridPosteriorNet(MapsConfig())
    export_grid_model(plain, str(root / "plain"), grid_metadata(plain, 12, {}))
    mapped = GridPosteriorNet(rmap.config)
    mapped.load_map(rmap)
    n_rx = len(rmap.network.receivers)
    pretrained = {"training_network": "family:alps-ring"}  # as the production model: a family, then a map
    export_grid_model(
        mapped, str(root / "mapped"), grid_metadata(mapped, n_rx, pretrained, meta, str(root / "map"))
    )
    batch = SessionStore.open(test).read_all()
    picked = [i for i in range(batch.n_sessions) if (batch.rx_snr_db[i] > 10.0).sum() >= 4][:2]
    assert len(picked) == 2
    return GridSetup(
        root,
        lab,
        test,
        str(root / "map"),
        root / "plain" / "model.onnx",
        root / "mapped" / "model.onnx",
        picked,
    )


@pytest.fixture(scope="module")
def servers(grid_setup: GridSetup) -> Iterator[dict[str, Served]]:
    started = {"no_map": start_server(grid_setup.no_map), "with_map": start_server(grid_setup.with_map)}
    try:
        yield started
    finally:
        for s in started.values():
            stop_server(s)


@pytest.fixture(scope="module")
def stored(grid_setup: GridSetup) -> SessionBatch:
    return SessionStore.open(grid_setup.test).read_all()


def _post(served: Served, body: dict, path: str = "/v1/localize") -> httpx.Response:
    return httpx.post(served.url + path, json=body, timeout=60.0)


def _request(kind: str, batch: SessionBatch, i: int, **kw) -> dict:
    """Stations by id for the map model; positions (with full-scale power) for the model without a map."""
    return session_request(batch, i, by_station=kind == "with_map", **kw)


@pytest.mark.parametrize("kind", ["no_map", "with_map"])
def test_localize_answers_with_the_posterior(kind: str, servers, grid_setup: GridSetup, stored) -> None:
    path = grid_setup.no_map if kind == "no_map" else grid_setup.with_map
    predictor = load_predictor(str(path), threads=1)
    assert isinstance(predictor, GridPosteriorPredictor) and predictor.has_map is (kind == "with_map")
    for i in grid_setup.picked:
        r = _post(servers[kind], _request(kind, stored, i))
        assert r.status_code == 200, r.text
        answer = r.json()
        post = answer["posterior"]
        # the answer's mean (and ellipse) is the predictor's on the stored session, within 10 m,
        # in the session's frame (the answer's: a frame at a no-map session's receivers)
        mean, cov, pmap = predictor.locate_one(stored.select([i]))
        lat, lon = pmap.frame.to_latlon(mean[0], mean[1])
        assert float(geodesic_distance_km(lat, lon, answer["latitude"], answer["longitude"])) < 0.01
        assert answer["ellipse_1sigma"]["semi_major_m"] == pytest.approx(
            1000.0 * np.sqrt(np.linalg.eigvalsh(cov)[-1]), rel=1e-3
        )
        p_mean, _ = predictor.predict(stored.select([i]))  # predict: the same mean, in predictor.frame
        p_lat, p_lon = predictor.frame.to_latlon(p_mean[0, 0], p_mean[0, 1])
        assert float(geodesic_distance_km(p_lat, p_lon, answer["latitude"], answer["longitude"])) < 0.01
        assert post["mean"]["latitude"] == pytest.approx(answer["latitude"], abs=1e-9)
        # MAP, modes with their basins' mass, nested HPD regions as GeoJSON MultiPolygons
        assert np.isfinite([post["map"]["latitude"], post["map"]["longitude"]]).all()
        masses = [m["mass"] for m in post["modes"]]
        assert 1 <= len(masses) <= 3 and all(0.0 < m <= 1.0 for m in masses) and sum(masses) <= 1.0 + 1e-9
        assert masses == sorted(masses, reverse=True)
        a50, a90 = post["hpd"]["0.5"]["area_km2"], post["hpd"]["0.9"]["area_km2"]
        assert 0.0 < a50 <= a90
        for level in ("0.5", "0.9"):
            geometry = post["hpd"][level]["geojson"]
            assert geometry["type"] == "MultiPolygon" and len(geometry["coordinates"]) >= 1
        # the 50 % region lies inside the grid the posterior was evaluated on
        e0, e1, n0, n1 = post["grid"]["area_km"]
        assert e0 <= post["map"]["east_km"] <= e1 and n0 <= post["map"]["north_km"] <= n1
        # out_of_area: more than 5 % of the posterior on the outermost cells of its grid
        assert answer["out_of_area"] is (post["edge_mass"] > 0.05)
        assert answer["model_version"].startswith("sha256:")


def test_posterior_png_is_a_decodable_image_with_bounds(servers, grid_setup: GridSetup, stored) -> None:
    i = grid_setup.picked[0]
    plain = _post(servers["with_map"], _request("with_map", stored, i)).json()
    assert plain["posterior"]["raster"] is None
    answer = _post(servers["with_map"], _request("with_map", stored, i) | {"posterior_png": True}).json()
    raster = answer["posterior"]["raster"]
    image = Image.open(io.BytesIO(base64.b64decode(raster["png_base64"])))
    assert image.format == "PNG" and image.size == (raster["width"], raster["height"])
    b = raster["bounds"]
    best = answer["posterior"]["map"]
    assert b["south"] < best["latitude"] < b["north"] and b["west"] < best["longitude"] < b["east"]
    assert raster["mass_in_raster"] == pytest.approx(1.0, abs=0.05)  # bilinear density over the grid
    # the densest pixel is opaque, pixels outside the 99 % region transparent
    alpha = np.asarray(image.convert("RGBA"))[..., 3]
    assert alpha.max() == 255 and (alpha == 0).mean() > 0.2


def test_map_model_refuses_receivers_it_has_no_field_for(servers, stored, grid_setup: GridSetup) -> None:
    body = _request("with_map", stored, grid_setup.picked[0])
    unknown = copy.deepcopy(body)
    unknown["receivers"][0]["station"] = "atlantis"
    r = _post(servers["with_map"], unknown)
    assert r.status_code == 422 and "atlantis" in r.text
    moved = session_request(stored, grid_setup.picked[0], by_station=False)
    moved["receivers"][1]["lat"] += 0.2  # 22 km north of its station
    r = _post(servers["with_map"], moved)
    assert r.status_code == 422
    [item] = r.json()["detail"]
    assert item["loc"] == ["body", "receivers", 1] and "not a station of network" in item["msg"]
    # a receiver by its station's position is that station: the same answer as by id
    by_position = _post(servers["with_map"], session_request(stored, grid_setup.picked[0], by_station=False))
    assert by_position.status_code == 200
    assert by_position.json()["latitude"] == pytest.approx(
        _post(servers["with_map"], body).json()["latitude"]
    )
    twice = copy.deepcopy(body)  # one station by id and again by its position
    twice["receivers"].append(session_request(stored, grid_setup.picked[0], by_station=False)["receivers"][0])
    r = _post(servers["with_map"], twice)
    assert r.status_code == 422 and "more than once" in r.text
    # the model without a map takes the moved receiver (positions only, no network)
    assert _post(servers["no_map"], moved).status_code == 200
    named = _post(servers["no_map"], body)
    assert named.status_code == 422 and "no network" in named.text


def test_batch_equals_single_answers(servers, stored, grid_setup: GridSetup) -> None:
    bodies = [_request("with_map", stored, i) for i in grid_setup.picked]
    batch = _post(servers["with_map"], {"sessions": bodies}, "/v1/localize/batch").json()["results"]
    for body, got in zip(bodies, batch, strict=True):
        single = _post(servers["with_map"], body).json()
        assert got["latitude"] == pytest.approx(single["latitude"], abs=1e-9)
        assert got["posterior"]["hpd"]["0.9"]["area_km2"] == pytest.approx(
            single["posterior"]["hpd"]["0.9"]["area_km2"], rel=1e-9
        )


def test_model_card_says_kind_and_which_labels_fitted_the_map(servers, grid_setup: GridSetup) -> None:
    card = httpx.get(servers["with_map"].url + "/v1/model").json()
    assert card["kind"] == "grid-posterior"
    fitted = card["posterior"]["radio_map"]
    assert fitted["uri"] == grid_setup.radio_map and fitted["sources"] == [grid_setup.labelled]
    assert 0.8 * N_LABELLED <= fitted["n_labels"] <= N_LABELLED and fitted["map_version"] == 1
    assert card["network"]["name"] == "nw-italy" and card["trained_area"] is not None
    assert card["posterior"]["detection_snr_db"] == 0.0  # the map's (fitted with the default)
    plain = httpx.get(servers["no_map"].url + "/v1/model").json()
    assert plain["kind"] == "grid-posterior" and plain["posterior"]["radio_map"] is None
    assert plain["network"] is None and "at most 12" in plain["posterior"]["receivers"]


def test_map_page_shows_the_grid_posterior(servers, stored, grid_setup: GridSetup) -> None:
    body = _request("with_map", stored, grid_setup.picked[1])
    answer = _post(servers["with_map"], body).json()
    page = _post(servers["with_map"], body, "/v1/posterior").json()
    post = page["posterior"]
    assert post["kind"] == "grid"
    assert post["map"] == {k: answer["posterior"]["map"][k] for k in ("latitude", "longitude")}
    assert [m["probability"] for m in post["modes"]] == [m["mass"] for m in answer["posterior"]["modes"]]
    assert post["regions"]["0.9"]["area_km2"] == answer["posterior"]["hpd"]["0.9"]["area_km2"]
    assert {h["level"] for h in post["hpd"]} == {0.5, 0.9} and post["hpd"][1]["contours"]
    assert post["raster"]["png_base64"] and len(page["receivers"]) == stored.n_receivers


def test_locate_html_runs_the_model_once(grid_setup: GridSetup, tmp_path: Path, monkeypatch, capsys) -> None:
    """``locate --html`` formats one model run: the printed answer and the map page's MAP are the same."""
    import json

    from heimdall.cli import main

    calls = []
    original = GridPosteriorPredictor.locate_one

    def counted(self, batch, index=0):
        calls.append(index)
        return original(self, batch, index)

    monkeypatch.setattr(GridPosteriorPredictor, "locate_one", counted)
    out = tmp_path / "located.html"
    i = grid_setup.picked[0]
    model = str(grid_setup.no_map)
    main(["locate", f"{grid_setup.test}#{i}", "--model", model, "--html", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert len(calls) == 1
    page = out.read_text(encoding="utf-8")
    assert json.dumps(printed["posterior"]["map"]["latitude"]) in page


def test_model_without_map_answers_across_the_antimeridian_and_refuses_a_continent(
    servers, stored, grid_setup: GridSetup
) -> None:
    """The same receivers moved in longitude to straddle 180° give the same answer moved; receivers
    thousands of km apart are refused by name (they asked for a grid of a million cells)."""
    body = session_request(stored, grid_setup.picked[0], by_station=False)
    here = _post(servers["no_map"], body)
    assert here.status_code == 200, here.text
    shift = 180.0 - float(np.mean([rx["lon"] for rx in body["receivers"]]))
    moved = copy.deepcopy(body)
    for rx in moved["receivers"]:
        rx["lon"] = (rx["lon"] + shift + 180.0) % 360.0 - 180.0
    assert {np.sign(rx["lon"]) for rx in moved["receivers"]} == {-1.0, 1.0}  # either side of 180°
    there = _post(servers["no_map"], moved)
    assert there.status_code == 200, there.text
    a, b = here.json(), there.json()
    assert b["latitude"] == pytest.approx(a["latitude"], abs=1e-6)
    assert np.cos(np.radians(b["longitude"] - a["longitude"] - shift)) == pytest.approx(1.0, abs=1e-12)
    assert b["posterior"]["hpd"]["0.9"]["area_km2"] == pytest.approx(a["posterior"]["hpd"]["0.9"]["area_km2"])
    spread = copy.deepcopy(body)
    for i, rx in enumerate(spread["receivers"]):
        rx["lat"] = rx["lon"] = -20.0 + 40.0 * i / (len(spread["receivers"]) - 1)
    r = _post(servers["no_map"], spread)
    assert r.status_code == 422 and "spread too far" in r.text
