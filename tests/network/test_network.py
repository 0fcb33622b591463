"""Networks: packaged default, YAML validation with clear errors."""

from __future__ import annotations

import pytest
import yaml

from heimdall.errors import HeimdallError
from heimdall.network import list_networks, load_network
from heimdall.network.network import parse_network

DEFAULT_STATIONS = {  # docs/ARCHITECTURE.md §8
    "Aquila di Giaveno": (45.020, 7.290),
    "Montanaro": (45.234, 7.857),
    "Torino": (45.044, 7.672),
    "Coazze": (45.048, 7.238),
    "Passo del Giovi": (44.561, 8.956),
    "Genova": (44.395, 8.956),
    "Milano Baggio": (45.478, 9.123),
}


def test_default_network_matches_design() -> None:
    net = load_network("nw-italy")
    assert "nw-italy" in list_networks()
    assert {rx.name: (rx.lat, rx.lon) for rx in net.receivers} == DEFAULT_STATIONS
    assert all(set(rx.bands) == {"2m", "70cm"} for rx in net.receivers)
    # the reference point sits inside the network: every receiver within 120 km of it
    assert (abs(net.positions_km) < 120).all()


def test_network_yaml_round_trip(tmp_path) -> None:
    net = load_network("nw-italy")
    path = tmp_path / "copy.yaml"
    path.write_text(net.to_yaml())
    assert load_network(path) == net


def _doc(**changes) -> dict:
    doc = yaml.safe_load(load_network("nw-italy").to_yaml())
    doc.update(changes)
    return doc


def _with_receiver(i: int, **changes) -> dict:
    doc = _doc()
    doc["receivers"][i] = {**doc["receivers"][i], **changes}
    return doc


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (_with_receiver(1, id="aquila-giaveno"), "duplicate receiver id 'aquila-giaveno'"),
        (_with_receiver(1, lat=45.020, lon=7.290), "identical coordinates"),
        (_with_receiver(2, lat=95.0), "receivers.2.lat"),
        (_with_receiver(2, lon=-181.0), "receivers.2.lon"),
        (_doc(receivers=_doc()["receivers"][:2]), "at least 3 receivers"),
        (_with_receiver(0, antenna="yagi"), "receivers.0.antenna"),
        (_doc(colour="blue"), "colour"),
        (_with_receiver(3, bands=["6m"]), "receivers.3.bands"),
    ],
)
def test_invalid_networks_name_the_problem(doc: dict, fragment: str) -> None:
    with pytest.raises(HeimdallError, match="invalid network") as err:
        parse_network(yaml.safe_dump(doc), "my.yaml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("my.yaml")


def test_malformed_yaml_and_unknown_name(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(HeimdallError, match="not valid YAML"):
        load_network(bad)
    with pytest.raises(HeimdallError, match="unknown network 'nw-mars'"):
        load_network("nw-mars")
    with pytest.raises(HeimdallError, match="does not exist"):
        load_network(tmp_path / "missing.yaml")


def test_index_of_unknown_station() -> None:
    net = load_network("nw-italy")
    assert net.index_of("genova") == 5
    with pytest.raises(HeimdallError, match="unknown station 'nowhere'"):
        net.index_of("nowhere")
