"""Receivers the model never saw, and answers outside the area it covers (in-process app).

Probability masses are checked against closed forms (a product of normal CDFs for a
diagonal covariance), scipy's bivariate normal CDF and a Monte Carlo count; the
`out_of_area` flag against a predictor whose answer is fixed in advance.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.stats import multivariate_normal, norm

from heimdall.export.predictor import OnnxPredictor
from heimdall.network.geodesy import geodesic_distance_km
from heimdall.serve.app import create_app
from heimdall.serve.area import TrainedArea
from heimdall.serve.client import session_request

AREA = TrainedArea(-10.0, 20.0, -5.0, 5.0)


@pytest.mark.parametrize(
    ("mean", "sd"),
    [
        ((0.0, 0.0), (3.0, 2.0)),
        ((20.0, 0.0), (4.0, 1.0)),
        ((25.0, 6.0), (2.0, 3.0)),
        ((5.0, -5.0), (0.1, 40.0)),
    ],
)
def test_mass_inside_diagonal_is_the_product_of_normal_cdfs(mean, sd) -> None:
    cov = np.diag(np.square(sd))
    expected = (norm.cdf(20.0, mean[0], sd[0]) - norm.cdf(-10.0, mean[0], sd[0])) * (
        norm.cdf(5.0, mean[1], sd[1]) - norm.cdf(-5.0, mean[1], sd[1])
    )
    assert AREA.mass_inside(mean, cov) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("rho", [-0.999, -0.6, 0.3, 0.95, 0.9999])
def test_mass_inside_correlated_matches_scipy_and_monte_carlo(rho: float) -> None:
    mean, sd = np.array([18.0, 3.0]), np.array([8.0, 4.0])
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    dist = multivariate_normal(mean, cov)
    box = dist.cdf([20, 5]) - dist.cdf([-10, 5]) - dist.cdf([20, -5]) + dist.cdf([-10, -5])
    got = AREA.mass_inside(mean, cov)
    assert got == pytest.approx(box, abs=1e-6)
    x = np.random.default_rng(0).multivariate_normal(mean, cov, size=400_000)
    inside = (x[:, 0] >= -10) & (x[:, 0] <= 20) & (x[:, 1] >= -5) & (x[:, 1] <= 5)
    assert got == pytest.approx(inside.mean(), abs=4e-3)  # > 5 binomial standard errors
    assert AREA.mass_outside(mean, cov) == pytest.approx(1.0 - got, abs=1e-12)


class Fixed:
    """A predictor answering every session with one Gaussian, fixed in advance (mean km, cov km²)."""

    def __init__(
        self, inner: Any, mean_km=(0.0, 0.0), cov_km2=((1.0, 0.0), (0.0, 1.0)), mapped: bool = False
    ):
        self._inner = inner
        self.mean = np.asarray(mean_km, float)
        self.cov = np.asarray(cov_km2, float)
        self.accepts_unmapped_receivers = mapped

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def run(self, iq, rx_pos, rx_mask, center_freq_hz):
        b = iq.shape[0]
        return np.tile(self.mean, (b, 1)), np.tile(self.cov, (b, 1, 1))


def _east_edge(predictor) -> tuple[float, float]:
    """East edge (km) and the north centre of the trained rectangle, from the network and the world margin."""
    net, margin = predictor.network, predictor.metadata["world"]["area_margin_km"]
    east, north = predictor.frame.to_local_km(
        np.array([rx.lat for rx in net.receivers]), np.array([rx.lon for rx in net.receivers])
    )
    return float(east.max() + margin), float(0.5 * (north.min() + north.max()))


@pytest.mark.parametrize(
    ("offset_sd", "out_of_area"),
    [
        (-30.0, False),  # deep inside
        (-2.0, False),  # mass outside Φ(-2) = 2.3 %
        (-1.5, True),  # Φ(-1.5) = 6.7 % > 5 %
        (0.0, True),  # on the edge: half outside
        (40.0, True),  # far outside (200 km east)
    ],
)
def test_out_of_area_flags_more_than_5_percent_outside(predictor, sessions, offset_sd, out_of_area) -> None:
    """σ = 5 km east-west, 1 km north-south, the mean `offset_sd` σ from the east edge of the trained area."""
    edge, centre = _east_edge(predictor)
    fixed = Fixed(predictor, (edge + offset_sd * 5.0, centre), ((25.0, 0.0), (0.0, 1.0)))
    client = TestClient(create_app(fixed))
    single = client.post("/v1/localize", json=session_request(sessions, 0)).json()
    assert single["out_of_area"] is out_of_area
    batch = client.post("/v1/localize/batch", json={"sessions": [session_request(sessions, 1)]}).json()
    assert batch["results"][0]["out_of_area"] is out_of_area


def _moved(body: dict, index: int, lat: float, lon: float) -> dict:
    out = copy.deepcopy(body)
    rx = out["receivers"][index]
    rx.pop("station")
    rx.update({"lat": lat, "lon": lon})
    return out


def _online_index(body: dict) -> int:
    return next(i for i, rx in enumerate(body["receivers"]) if "iq" in rx)


@pytest.mark.parametrize(("south_km", "accepted"), [(0.0, True), (0.9, True), (1.2, False), (5.0, False)])
def test_receiver_positions_match_stations_within_1_km(predictor, sessions, south_km, accepted) -> None:
    """A receiver moved south of its station: accepted within 1 km (geodesic), else 422 naming it.

    (South: every other station of nw-italy is more than 8 km from the moved position.)
    """
    body = session_request(sessions, 0)
    i = _online_index(body)
    station = predictor.network.receivers[predictor.network.index_of(body["receivers"][i]["station"])]
    lat = station.lat - south_km / 111.13  # 1° of latitude at 45° N: 111.13 km (WGS84 meridian arc)
    assert float(geodesic_distance_km(station.lat, station.lon, lat, station.lon)) == pytest.approx(
        south_km, abs=0.01
    )
    client = TestClient(create_app(predictor))
    r = client.post("/v1/localize", json=_moved(body, i, lat, station.lon))
    if accepted:
        assert r.status_code == 200 and r.json()["unmapped_receivers"] == []
        return
    assert r.status_code == 422
    item = r.json()["detail"][0]
    assert item["loc"] == ["body", "receivers", i]
    assert f"receiver '{lat:.5f},{station.lon:.5f}' at ({lat:.5f}, {station.lon:.5f})" in item["msg"]
    assert (
        f"not a station of network 'nw-italy' (the nearest, '{station.id}', is {south_km:.1f} km"
        in item["msg"]
    )


def test_a_model_with_receiver_maps_lists_unmapped_receivers(predictor, sessions) -> None:
    """A predictor that accepts unmapped receivers answers and lists the one 5 km from any station."""
    body = session_request(sessions, 0)
    i = _online_index(body)
    station = predictor.network.receivers[predictor.network.index_of(body["receivers"][i]["station"])]
    lat = station.lat + 5.0 / 111.13
    client = TestClient(create_app(Fixed(predictor, mapped=True)))
    answer = client.post("/v1/localize", json=_moved(body, i, lat, station.lon)).json()
    assert answer["unmapped_receivers"] == [f"{lat:.5f},{station.lon:.5f}"]
    assert client.get("/v1/model").json()["limits"]["accepts_unmapped_receivers"] is True
    assert client.post("/v1/localize", json=body).json()["unmapped_receivers"] == []


def test_a_position_matching_a_station_given_twice_is_a_duplicate(predictor, sessions) -> None:
    body = session_request(sessions, 0)
    i = _online_index(body)
    station = predictor.network.receivers[predictor.network.index_of(body["receivers"][i]["station"])]
    twice = copy.deepcopy(body)
    twice["receivers"].append(
        {"lat": station.lat + 0.002, "lon": station.lon, "iq": body["receivers"][i]["iq"]}
    )
    r = TestClient(create_app(predictor)).post("/v1/localize", json=twice)
    assert r.status_code == 422 and f"receivers given more than once: {station.id}" in r.text


def test_a_family_trained_model_takes_receivers_anywhere(family_model_path, short_world, sessions) -> None:
    """Trained on networks drawn from a family: a receiver 5 km from every station is no stranger
    (answered, listed nowhere), where the fixed-station model refuses it (the test above)."""
    body = session_request(sessions, 0)
    i = _online_index(body)
    station = short_world.network.receivers[short_world.network.index_of(body["receivers"][i]["station"])]
    moved = _moved(body, i, station.lat - 5.0 / 111.13, station.lon)
    predictor = OnnxPredictor(family_model_path.read_bytes(), str(family_model_path))
    r = TestClient(create_app(predictor)).post("/v1/localize", json=moved)
    assert r.status_code == 200, r.text
    assert r.json()["unmapped_receivers"] == []
