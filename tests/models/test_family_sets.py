"""Validation sets of a network family: accepted for family training, refused across kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.models.config import TrainConfig
from heimdall.models.data import check_compatible, load_world_spec
from heimdall.sim.simulate_job import run_simulation

FAMILY = "family:piemonte-liguria"


def _store(tmp_path: Path, name: str, network: str, world_seed: int | str) -> tuple[str, SessionStore]:
    uri = str(tmp_path / name)
    run_simulation(uri, network, sessions=3, world_seed=world_seed, seed=1, duration_s=0.05, workers=1,
                   world_block=2)  # fmt: skip
    return uri, SessionStore.open(uri)


def _spec(network: str, world_seed: int | str):
    return load_world_spec(
        TrainConfig().with_overrides(data={"network": network, "world_seed": world_seed, "duration_s": 0.05})
    )


@pytest.mark.parametrize(
    ("store_network", "store_seeds", "train_network", "train_seeds", "refusal"),
    [
        (FAMILY, "1000-1999", FAMILY, "1000-1999", None),
        (FAMILY, "1000-1999", "nw-italy", 0, "another network family"),
        ("nw-italy", 0, FAMILY, "1000-1999", "another network family"),
        ("nw-italy", 0, "nw-italy", 0, None),
        ("ring-munich", 0, "nw-italy", 0, "another network than the training one"),
    ],
)
def test_validation_set_must_come_from_the_training_networks(
    tmp_path: Path, store_network, store_seeds, train_network, train_seeds, refusal
) -> None:
    uri, store = _store(tmp_path, "val", store_network, store_seeds)
    spec = _spec(train_network, train_seeds)
    if refusal is None:
        check_compatible(uri, store, spec)
        return
    with pytest.raises(HeimdallError, match=refusal) as exc:
        check_compatible(uri, store, spec)
    assert uri in str(exc.value)
