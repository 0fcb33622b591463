"""Damaged radio maps, stores off the map's network, sessions with nothing online: each a one-line error."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.maps.conftest import smooth_field, synth

from heimdall.cli import main
from heimdall.data.session import OFFLINE, SessionBatch
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.maps.artifact import load_map, save_map
from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import fit_radio_map
from heimdall.maps.job import fit_map_from_store
from heimdall.maps.locate import locate_with_map
from heimdall.maps.observations import observations_from_store
from heimdall.network import Network, load_network
from heimdall.sim.simulate_job import run_simulation

#: A small, coarse map: fitted path loss and fields in well under a second.
TINY = MapsConfig(grid_step_km=10.0, holdout_fraction=0.0, iterations=2, min_labels=10)


@pytest.fixture(scope="module")
def good_map(tmp_path_factory: pytest.TempPathFactory, network: Network) -> Path:
    """A fitted map of nw-italy (synthetic labels) saved to a folder."""
    rng = np.random.default_rng(0)
    pos = np.column_stack([rng.uniform(-40, 20, 40), rng.uniform(-30, 30, 40)])
    obs, _ = synth(network, pos, smooth_field, rng, noise_db=1.0)
    uri = tmp_path_factory.mktemp("map") / "good"
    m = fit_radio_map(obs, network, TINY)
    assert m.coef is not None
    save_map(m, str(uri), ["synthetic"])
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Six labelled simulated sessions of nw-italy (short captures)."""
    out = str(tmp_path_factory.mktemp("store") / "s")
    run_simulation(out, "nw-italy", 6, world_seed=3, seed=5, duration_s=0.05, workers=1)
    return out


def _meta(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        meta = json.loads((folder / "map.json").read_text())
        edit(meta)
        (folder / "map.json").write_text(json.dumps(meta))

    return damage


def _arrays(edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        with np.load(folder / "maps.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        edit(arrays)
        np.savez_compressed(folder / "maps.npz", **arrays)

    return damage


def _truncate(folder: Path) -> None:
    with open(folder / "maps.npz", "r+b") as f:
        f.truncate(500)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "npz-truncated": (_truncate, r"maps\.npz: radio-map grids corrupt"),
    "npz-garbage": (lambda f: (f / "maps.npz").write_bytes(b"not an archive"), r"maps\.npz: .*corrupt"),
    "npz-missing": (lambda f: (f / "maps.npz").unlink(), r"maps\.npz: radio-map grids missing"),
    "grid-missing": (_meta(lambda m: m.pop("grid")), r"map\.json: 'grid' missing"),
    "grid-not-object": (_meta(_set("grid", "big")), r"map\.json: 'grid' must be an object"),
    "grid-step-zero": (_meta(lambda m: m["grid"].__setitem__("step_km", 0)), r"grid\.step_km"),
    "grid-n-east-float": (_meta(lambda m: m["grid"].__setitem__("n_east", 2.5)), r"grid\.n_east"),
    "hyper-nan": (_meta(lambda m: m["hyper"].__setitem__("sigma_db", float("nan"))), r"hyper\.sigma_db"),
    "hyper-missing": (_meta(lambda m: m.pop("hyper")), r"'hyper' missing"),
    "network-missing": (_meta(lambda m: m.pop("network")), r"'network' missing"),
    "network-invalid": (_meta(lambda m: m["network"].pop("receivers")), r"invalid 'network' \(receivers"),
    "knots-text": (_meta(_set("pathloss_knots_km", "far")), r"'pathloss_knots_km' must be"),
    "format-version-text": (_meta(_set("format_version", "one")), r"'format_version' must be an integer"),
    "field-missing": (_arrays(lambda a: a.pop("field_db")), r"array 'field_db' missing"),
    "field-cut": (
        _arrays(lambda a: a.__setitem__("field_db", a["field_db"][..., :3])),
        r"'field_db' has shape \(2, 7, \d+, 3\), expected \(2, 7, \d+, \d+\)",
    ),
    "field-receivers": (
        _arrays(lambda a: a.__setitem__("field_var_db2", a["field_var_db2"][:, :5])),
        r"'field_var_db2' has shape .*receivers 7",
    ),
    "field-nan": (
        _arrays(lambda a: a.__setitem__("field_db", np.full_like(a["field_db"], np.nan))),
        r"'field_db' has \d+ of \d+ values not finite",
    ),
    "field-var-inf": (
        _arrays(lambda a: a["field_var_db2"].__setitem__((0, 0, 0, 0), np.inf)),
        r"'field_var_db2' has 1 of \d+ values not finite",
    ),
    "field-var-negative": (
        _arrays(lambda a: a["field_var_db2"].__setitem__((0, 0, 0, 0), -1.0)),
        r"'field_var_db2' has 1 of \d+ values below 0",
    ),
    "coef-nan": (_arrays(lambda a: a["coef"].__setitem__((0, 0), np.nan)), r"'coef' has 1 of \d+ values"),
    "coef-shape": (_arrays(lambda a: a.__setitem__("coef", a["coef"][:, :2])), r"'coef' has shape"),
    "power-shape": (_arrays(lambda a: a.__setitem__("power_dbm", a["power_dbm"][:3])), r"'power_dbm' has"),
    "obs-state-shape": (
        _arrays(lambda a: a.__setitem__("obs_state", a["obs_state"][:, :2])),
        r"'obs_state' has shape",
    ),
    "obs-text": (_arrays(lambda a: a.__setitem__("obs_y_db", np.array(["x"]))), r"'obs_y_db' has dtype"),
}


@pytest.fixture
def damaged(request: pytest.FixtureRequest, good_map: Path, tmp_path: Path) -> tuple[str, str]:
    damage, pattern = DAMAGE[request.param]
    copy = tmp_path / "damaged"
    shutil.copytree(good_map, copy)
    damage(copy)
    return str(copy), pattern


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_damaged_map_is_a_clear_error(damaged: tuple[str, str]) -> None:
    uri, pattern = damaged
    with pytest.raises(HeimdallError, match=pattern) as exc:
        load_map(uri)
    assert str(exc.value).startswith(uri) and "\n" not in str(exc.value)


def test_good_map_still_loads(good_map: Path) -> None:
    m, meta = load_map(str(good_map))
    assert m.coef is not None and m.field_db.shape == (2, 7, *m.grid.shape) and meta["map_version"] == 1


@pytest.mark.parametrize("damaged", ["npz-truncated", "field-cut", "field-nan"], indirect=True)
@pytest.mark.parametrize("command", ["locate", "show"])
def test_cli_on_a_damaged_map_prints_one_line(
    damaged: tuple[str, str], command: str, store: str, tmp_path: Path, capsys
) -> None:
    uri, _ = damaged
    argv = ["map", "locate", f"{store}#0", "--map", uri] if command == "locate" else ["map", "show", uri]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "png")] if command == "show" else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error" in err.lower() and Path(uri).name in err


def _renamed(
    batch: SessionBatch, sessions: list[int], slots: slice, prefix: str = "elsewhere"
) -> SessionBatch:
    """``batch`` with the stations of ``slots`` in ``sessions`` renamed out of the network."""
    station = batch.rx_station.astype(object).copy()
    for b in sessions:
        for s in range(batch.n_receivers)[slots]:
            station[b, s] = f"{prefix}-{s}"
    return dataclasses.replace(batch, rx_station=station.astype(str))


def _copy_store(src: str, out: Path, edit: Callable[[SessionBatch], SessionBatch]) -> str:
    source = SessionStore.open(src)
    with SessionStore.create(out, source.metadata) as st:
        st.append_shard(0, edit(source.read_all()))
    return str(out)


@pytest.mark.parametrize("network_name", ["ring-munich"])
def test_store_off_the_network_is_refused(store: str, network_name: str) -> None:
    with pytest.raises(
        HeimdallError, match=rf"none of the 6 labelled sessions.*network '{network_name}'"
    ) as exc:
        fit_map_from_store(store, network=network_name)
    assert "aquila-giaveno" in str(exc.value)  # some of the store's station ids
    with pytest.raises(HeimdallError, match=network_name):
        observations_from_store(store, load_network(network_name))


@pytest.mark.parametrize(
    ("sessions", "slots", "off_sessions", "off_stations"),
    [
        ([0, 1], slice(None), 2, 7),  # two sessions wholly elsewhere: counted, the rest fitted
        ([0, 1, 2], slice(0, 2), 0, 2),  # two receivers renamed in three sessions: still on the network
    ],
    ids=["sessions-off", "receivers-off"],
)
def test_partly_off_network_is_counted(
    store: str, tmp_path: Path, sessions: list[int], slots: slice, off_sessions: int, off_stations: int
) -> None:
    uri = _copy_store(store, tmp_path / "partly", lambda b: _renamed(b, sessions, slots))
    m = fit_map_from_store(uri)
    assert m.metrics["n_sessions_off_network"] == off_sessions
    assert m.metrics["n_stations_off_network"] == off_stations
    meta = save_map(m, str(tmp_path / "map"))
    assert meta["metrics"]["n_sessions_off_network"] == off_sessions  # in map.json and printed by map fit


def test_all_offline_session_says_nothing_is_online(good_map: Path, store: str) -> None:
    rmap, _ = load_map(str(good_map))
    batch = SessionStore.open(store).read_all().select([0])
    offline = dataclasses.replace(batch, rx_state=np.full(batch.rx_state.shape, OFFLINE, np.int8))
    with pytest.raises(
        HeimdallError, match=r"none of its receivers in the map's network 'nw-italy' .* is online"
    ):
        locate_with_map(rmap, offline)
    with pytest.raises(HeimdallError, match=r"none of its receivers \[.*\] is in the map's network"):
        locate_with_map(rmap, _renamed(batch, [0], slice(None)))
