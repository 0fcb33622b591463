"""Network families and the second packaged network."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.errors import HeimdallError
from heimdall.network import list_networks, load_network
from heimdall.network.family import list_network_families, load_network_family, parse_network_family
from heimdall.sim.family import Scenarios, WorldSeeds
from heimdall.sim.world import load_world


@pytest.mark.parametrize("name", ["piemonte-liguria", "upper-bavaria"])
def test_drawn_networks_respect_the_family(name: str) -> None:
    fam = load_network_family(name)
    scen = Scenarios(fam, load_world(), WorldSeeds.parse("0"))
    counts = set()
    for seed in range(25):
        net = scen.network_for(seed)
        counts.add(len(net.receivers))
        assert fam.receivers_min <= len(net.receivers) <= fam.receivers_max
        pos = net.positions_km
        d = np.hypot(*(pos[:, None] - pos[None]).transpose(2, 0, 1))
        assert d[~np.eye(len(pos), dtype=bool)].min() >= fam.min_spacing_km
        r = fam.region
        assert all(
            r.lat_min <= rx.lat <= r.lat_max and r.lon_min <= rx.lon <= r.lon_max for rx in net.receivers
        )
        assert all(fam.height_m_min <= rx.height_m <= fam.height_m_max + 0.05 for rx in net.receivers)
        assert net.name == f"{name}#{seed}"
    assert len(counts) > 3
    # same seed, same network (bytes of its YAML)
    assert scen.network_for(7).to_yaml() == scen.network_for(7).to_yaml()
    assert scen.network_for(7).to_yaml() != scen.network_for(8).to_yaml()


def test_family_too_small_region_is_refused() -> None:
    text = (
        "name: tiny\nregion: {lat_min: 45.0, lat_max: 45.05, lon_min: 8.0, lon_max: 8.05}\nreceivers_min: 5\n"
    )
    fam = parse_network_family(text, "tiny.yaml")
    with pytest.raises(HeimdallError, match="region too small"):
        fam.draw(np.random.default_rng(0), 0)


def test_bad_family_file_names_the_field() -> None:
    with pytest.raises(HeimdallError, match=r"bad\.yaml.*region"):
        parse_network_family("name: x\n", "bad.yaml")
    with pytest.raises(HeimdallError, match="unknown network family"):
        load_network_family("atlantis")


def test_second_network_is_packaged_with_a_ring_geometry() -> None:
    """ring-munich: 5-10 receivers around a centre (nw-italy is a line of clusters)."""
    assert {"nw-italy", "ring-munich"} <= set(list_networks())
    assert {"piemonte-liguria", "upper-bavaria"} <= set(list_network_families())
    ring = load_network("ring-munich")
    assert 5 <= len(ring.receivers) <= 10
    pos = ring.positions_km
    centre = pos[ring.index_of("muenchen")]
    around = np.delete(pos, ring.index_of("muenchen"), axis=0) - centre
    bearings = np.sort(np.degrees(np.arctan2(around[:, 0], around[:, 1])) % 360)
    gaps = np.diff(np.concatenate([bearings, bearings[:1] + 360]))
    assert gaps.max() < 120  # receivers all around the centre, no empty side

    # nw-italy by contrast leaves a wide empty sector around its centroid (a line of clusters)
    italy = load_network("nw-italy").positions_km
    rel = italy - italy.mean(0)
    b_it = np.sort(np.degrees(np.arctan2(rel[:, 0], rel[:, 1])) % 360)
    assert np.diff(np.concatenate([b_it, b_it[:1] + 360])).max() > 120
