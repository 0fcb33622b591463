"""World and network families: reproducible, recorded per session, readable back."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.network.family import load_network_family
from heimdall.sim import World, load_world
from heimdall.sim.family import RANDOM_SEED_SPACE, Scenarios, WorldSeeds, scenarios_from_metadata
from heimdall.sim.seeds import Stream
from heimdall.sim.simulate_job import run_simulation

TINY = load_world().with_overrides(duration_s=0.02, static_field_resolution_km=2.0)


@pytest.mark.parametrize(
    ("text", "lo", "hi"),
    [("7", 7, 7), (7, 7, 7), ("0-99", 0, 99), (" 3 - 5 ", 3, 5), ("random", 0, RANDOM_SEED_SPACE - 1)],
)
def test_world_seeds_parse(text, lo: int, hi: int) -> None:
    seeds = WorldSeeds.parse(text)
    assert (seeds.lo, seeds.hi) == (lo, hi)


@pytest.mark.parametrize("text", ["9-3", "-1", "a-b", "some"])
def test_bad_world_seeds_are_refused(text: str) -> None:
    with pytest.raises(HeimdallError, match="world seed"):
        WorldSeeds.parse(text)


def _family(block: int = 3) -> Scenarios:
    return Scenarios(load_network_family("piemonte-liguria"), TINY, WorldSeeds.parse("0-99"), block)


def test_sessions_record_world_and_network_and_rebuild_them() -> None:
    fam = _family()
    b = fam.simulate(9, session_seed=4)
    assert len(set(b.world_seed.tolist())) == 3 and len(set(b.network_id.tolist())) == 3
    assert all(0 <= s <= 99 for s in b.world_seed)
    for i in (0, 4, 8):  # each session re-simulated alone in its recorded world equals the family's bytes
        world = fam.world_of(int(b.world_seed[i]), str(b.network_id[i]))
        alone = world.simulate(1, 4, start_index=i)
        r = alone.n_receivers
        assert world.network.name == b.network_id[i]
        np.testing.assert_array_equal(alone.iq[0], b.iq[i, :r])
        assert (b.rx_station[i, r:] == "").all()


def test_families_are_reproducible_and_independent_of_blocking_calls() -> None:
    a = _family().simulate(7, session_seed=1)
    parts = [_family().simulate(3, 1), _family().simulate(4, 1, start_index=3)]
    for part, rows in zip(parts, (slice(0, 3), slice(3, 7)), strict=True):
        np.testing.assert_array_equal(a.world_seed[rows], part.world_seed)
        np.testing.assert_array_equal(a.network_id[rows], part.network_id)
        np.testing.assert_array_equal(a.iq[rows, : part.n_receivers], part.iq)
    other = _family().simulate(7, session_seed=2)
    assert not np.array_equal(a.world_seed, other.world_seed)


def test_training_and_stored_streams_differ() -> None:
    world = World(load_network_family("piemonte-liguria").draw(np.random.default_rng(0), 0), TINY, 0)
    stored = world.simulate(2, 5)
    train = world.simulate(2, 5, stream=Stream.TRAIN)
    assert not np.array_equal(stored.tx_lat_deg, train.tx_lat_deg)


@pytest.mark.slow
def test_simulate_command_with_families_same_seeds_same_bytes(tmp_path) -> None:
    args = dict(network="family:piemonte-liguria", sessions=6, world_seed="0-99", seed=3, world_block=2,
                shard_size=4, duration_s=0.02, positions="clustered")  # fmt: skip
    one = run_simulation(out=str(tmp_path / "a"), workers=1, **args)
    two = run_simulation(out=str(tmp_path / "b"), workers=2, **args)
    assert one["content_hash"] == two["content_hash"]
    store = SessionStore.open(str(tmp_path / "a"))
    batch = store.read_all()
    assert store.metadata["world_seeds"] == "0-99" and store.metadata["positions"] == "clustered"
    scen = scenarios_from_metadata(store.metadata)
    i = 5
    world = scen.world_of(int(batch.world_seed[i]), str(batch.network_id[i]))
    again = world.simulate(1, 3, start_index=i, positions="clustered")
    np.testing.assert_array_equal(again.iq[0], batch.iq[i, : again.n_receivers])


def test_stores_without_the_network_column_still_read(tmp_path) -> None:
    """A store written before ``network_id`` existed reads back with an empty id and the same digests."""
    import pyarrow.parquet as pq

    world = World(load_network_family("piemonte-liguria").draw(np.random.default_rng(0), 0), TINY, 0)
    batch = world.simulate(3, 1)
    store = SessionStore.create(str(tmp_path / "s"), {"note": "old"})
    store.append_shard(0, batch)
    store.close()
    for path in tmp_path.rglob("sessions.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["network_id"]), path)
    old = SessionStore.open(str(tmp_path / "s")).read_all()
    assert (old.network_id == "").all()
    np.testing.assert_array_equal(old.iq, batch.iq)
    from heimdall.data.digest import session_digests

    batch.network_id = np.full(3, "", dtype=np.str_)
    assert session_digests(old) == session_digests(batch)
    assert session_digests(batch) != session_digests(world.simulate(3, 1))  # a known network is hashed


@pytest.mark.slow
def test_on_the_fly_training_records_world_and_network_per_session() -> None:
    """Training batches (TRAIN stream) draw one world and network per batch and carry both."""
    from heimdall.models.data import SimulatedBatches, WorldSpec, network_key

    fam = load_network_family("piemonte-liguria")
    base = fam.draw(np.random.default_rng(0), 0)
    spec = WorldSpec(
        base.model_dump(mode="json"), TINY.model_dump(mode="json"), "0-99", fam.model_dump(mode="json")
    )
    data = SimulatedBatches(spec, batch_size=4, seed_base=50, n_samples=240)
    first, again, second = data[0], SimulatedBatches(spec, 4, 50, 240)[0], data[1]
    assert first["world_seed"].unique().numel() == 1 and second["world_seed"].unique().numel() == 1
    assert int(first["world_seed"][0]) != int(second["world_seed"][0])
    assert (first["network_key"] >= 0).all() and int(first["network_key"][0]) != int(second["network_key"][0])
    assert bytes(first["iq"].numpy()) == bytes(again["iq"].numpy())
    # the key is the recorded network's name, hashed; the world seed is the one the family assigned
    scen = spec.scenarios(4)
    world_seed, network_seed = scen.pick(Stream.TRAIN, 50, 0)
    assert int(first["world_seed"][0]) == world_seed
    assert int(first["network_key"][0]) == int(network_key(np.array([fam.network_id(network_seed)]))[0])
