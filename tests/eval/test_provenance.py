"""`heimdall evaluate` against a model's training provenance: overlaps refused and named, worlds stated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from heimdall.cli import main
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.eval.provenance import ProvenanceCheck, check_provenance, enforce
from heimdall.models.config import TRAIN_SEED_BASE
from heimdall.network import load_network
from heimdall.sim import World, load_world
from heimdall.sim.seeds import Stream
from heimdall.sim.simulate_job import run_simulation

DURATION_S = 0.05  # short captures: these tests read tables and digests, not signals


def _simulate(root: Path, name: str, network: str, world_seed: int | str, seed: int, sessions: int) -> str:
    out = root / name
    run_simulation(
        out=str(out), network=network, sessions=sessions, world_seed=world_seed, seed=seed,
        duration_s=DURATION_S, shard_size=8, workers=1, world_block=2,
    )  # fmt: skip
    return str(out)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("prov")
    out = {
        "val": _simulate(root, "val", "nw-italy", 0, 1001, 6),
        # the first 3 sessions of the validation set's seed: the same sessions, another content hash
        "val_prefix": _simulate(root, "val-prefix", "nw-italy", 0, 1001, 3),
        "test": _simulate(root, "test", "nw-italy", 0, 1000, 3),
        "world7": _simulate(root, "world7", "nw-italy", 7, 1000, 3),
        "ring": _simulate(root, "ring", "ring-munich", 7, 1000, 2),
        "family": _simulate(root, "family", "family:piemonte-liguria", "1000-1999", 1000, 4),
        # a stored set whose session seeds lie in the on-the-fly training range: other stream, no overlap
        "stored_in_range": _simulate(root, "stored-in-range", "nw-italy", 0, TRAIN_SEED_BASE + 5, 3),
    }
    # sessions drawn on the TRAIN stream (as on-the-fly training draws them), written to a store
    world = World(load_network("nw-italy"), load_world().with_overrides(duration_s=DURATION_S), 0)
    batch = world.simulate(3, TRAIN_SEED_BASE + 5, 0, stream=Stream.TRAIN)
    meta = {**SessionStore.open(out["stored_in_range"]).metadata, "session_stream": "train"}
    store = SessionStore.create(str(root / "train-stream"), meta)
    store.append_shard(0, batch)
    out["train_stream"] = str(root / "train-stream")
    return out


def _metadata(stores: dict[str, str], **changes: Any) -> dict[str, Any]:
    """Model metadata as models.train.build_model writes it: on-the-fly training in world 0 of nw-italy."""
    net = load_network("nw-italy")
    world = SessionStore.open(stores["val"]).metadata["world"]
    meta = {
        "ref_lat": net.reference.lat, "ref_lon": net.reference.lon, "network_name": "nw-italy",
        "network": net.model_dump(mode="json"), "world": world, "world_seed": 0,
        "dataset_uri": f"sim://nw-italy?world_seed=0&seed_base={TRAIN_SEED_BASE}", "dataset_hash": "f" * 64,
        "val_dataset_uri": stores["val"], "val_dataset_hash": SessionStore.open(stores["val"]).content_hash(),
        "train_seed_base": TRAIN_SEED_BASE,
    }  # fmt: skip
    return meta | changes


def _check(stores: dict[str, str], key: str, **changes: Any) -> ProvenanceCheck:
    return check_provenance(_metadata(stores, **changes), SessionStore.open(stores[key]), stores[key])


@pytest.mark.parametrize(
    ("key", "named"),
    [
        ("val", "is the validation set (content hash"),
        ("val_prefix", "shares 3 of its 3 sessions with the validation set"),
        (
            "train_stream",
            "3 sessions of world seed 0 on nw-italy drawn from the TRAIN stream with session seeds",
        ),
    ],
)
def test_overlap_is_refused_and_named(stores: dict[str, str], key: str, named: str) -> None:
    check = _check(stores, key)
    assert any(named in o for o in check.overlaps), check.overlaps
    with pytest.raises(HeimdallError, match="overlaps the model's training") as exc:
        enforce(check, stores[key], allow_overlap=False)
    assert named in str(exc.value) and "--allow-overlap" in str(exc.value)


def test_stored_stream_never_overlaps_training_seeds(stores: dict[str, str]) -> None:
    """Same world, network and session seeds as training, but the STORED stream: other sessions."""
    stored = set(SessionStore.open(stores["stored_in_range"]).session_digests())
    drawn = set(SessionStore.open(stores["train_stream"]).session_digests())
    assert not stored & drawn  # independent of the checker: the streams really differ
    check = _check(stores, "stored_in_range")
    assert check.overlaps == [] and check.worlds == "in-world"


def test_training_set_hash_is_named(stores: dict[str, str]) -> None:
    h = SessionStore.open(stores["test"]).content_hash()
    check = _check(stores, "test", dataset_hash=h, dataset_uri=stores["test"], train_seed_base=None)
    assert check.overlaps == [f"store {stores['test']} is the training set (content hash {h[:16]}…)"]


@pytest.mark.parametrize(
    ("key", "changes", "worlds", "network"),
    [
        ("test", {}, "in-world", "training network"),
        ("world7", {}, "unseen world", "training network"),
        ("ring", {}, "unseen world", "unseen network"),
        ("test", {"world_seed": "1000-1999"}, "unseen world", "training network"),
        # a family-trained model: a family store is its family, nw-italy an unseen network of its region
        ("family", {"world_seed": "1000-1999", "network_name": "piemonte-liguria#0"}, "training family",
         "training family"),
        ("test", {"world_seed": "1000-1999", "network_name": "piemonte-liguria#0"}, "unseen world",
         "unseen network"),
    ],
)  # fmt: skip
def test_worlds_and_network_are_stated(
    stores: dict[str, str], key: str, changes: dict[str, Any], worlds: str, network: str
) -> None:
    check = _check(stores, key, **changes)
    assert (check.worlds, check.network) == (worlds, network)
    assert check.overlaps == []
    assert check.summary.startswith(f"{worlds}, {network}")


def test_distance_and_region_of_an_unseen_network(stores: dict[str, str]) -> None:
    """ring-munich lies ~400 km from nw-italy's reference, outside the piemonte-liguria region."""
    check = _check(stores, "ring", world_seed="1000-1999", network_name="piemonte-liguria#0")
    italy, munich = load_network("nw-italy").reference, load_network("ring-munich").reference
    east, north = load_network("nw-italy").frame.to_local_km(munich.lat, munich.lon)
    assert check.details["store_network_distance_km"] == pytest.approx((east**2 + north**2) ** 0.5, abs=0.1)
    assert 300 < check.details["store_network_distance_km"] < 600, (italy, munich)
    assert check.details["store_inside_family_region"] is False


def test_model_without_provenance_is_not_refused(stores: dict[str, str]) -> None:
    check = check_provenance(
        {"ref_lat": 45.0, "ref_lon": 8.0}, SessionStore.open(stores["val"]), stores["val"]
    )
    assert check.overlaps == [] and check.worlds == "unknown" and "unknown" in check.summary


@pytest.fixture(scope="module")
def model_trained_on_val(stores: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """An untrained net whose metadata says: on-the-fly world 0, validated on ``stores['val']``."""
    import torch

    from heimdall.models.net import LocalizationNet, NetConfig
    from heimdall.models.predict import save_model

    torch.manual_seed(0)
    meta = _metadata(stores, n_samples=round(DURATION_S * 12000), sample_rate_hz=12000.0)

    model = LocalizationNet(NetConfig(n_samples=meta["n_samples"], n_fft=64, n_time=4), metadata=meta)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path)
    return str(path)


@pytest.mark.slow
def test_cli_refuses_then_allows_overlap(
    stores: dict[str, str], model_trained_on_val: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["evaluate", "--model", model_trained_on_val, "--data", stores["val"], "--out", str(tmp_path),
            "--baselines", "none"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err.replace("\n", " ")
    assert exc.value.code != 0 and "is the validation set" in err and not (tmp_path / "report.json").exists()
    main([*args, "--allow-overlap", "--json"])
    report = json.loads(capsys.readouterr().out)
    prov = report["provenance"]
    assert prov["overlap_allowed"] is True and "is the validation set" in prov["overlaps"][0]
    assert prov["summary"].startswith("OVERLAPS TRAINING: in-world, training network")
    assert any(n.startswith("OVERLAP ALLOWED") for n in report["notes"])


def test_cli_table_header_states_unseen_world(
    stores: dict[str, str], model_trained_on_val: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    main(["evaluate", "--model", model_trained_on_val, "--data", stores["world7"], "--out", str(tmp_path),
          "--baselines", "none"])  # fmt: skip
    out = capsys.readouterr().out
    assert "unseen world, training network" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["provenance"]["worlds"] == "unseen world" and report["provenance"]["overlaps"] == []
