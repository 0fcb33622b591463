"""Session store: round trips (local and real S3 over HTTP), resume, duplicates, padding, hashing."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from heimdall.data.session import HEARD, OFFLINE, SessionBatch
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError

AssertSame = Callable[[SessionBatch, SessionBatch], None]
META = {"network": None, "world_seed": 0, "session_seed": 3, "note": "test"}


def write_three_shards(uri: str, batch: SessionBatch, **kw: object) -> SessionStore:
    store = SessionStore.create(uri, META, **kw)  # type: ignore[arg-type]
    store.append_shard(0, batch.select(slice(0, 5)))
    store.append_shard(1, batch.select(slice(5, 7)))
    store.append_shard(2, batch.select(slice(7, 12)))
    return store


def test_local_round_trip_bit_exact(
    assert_same: AssertSame, tmp_path: Path, sessions12: SessionBatch
) -> None:
    write_three_shards(str(tmp_path / "ds"), sessions12)
    store = SessionStore.open(tmp_path / "ds")
    assert len(store) == 12
    assert store.committed_shards() == [0, 1, 2]
    assert store.metadata == META
    order = [11, 0, 6, 6, 3, 7]
    assert_same(store.read(order), sessions12.select(order))
    assert_same(SessionBatch.concat(list(store.iter_shards())), sessions12)
    assert [b.n_sessions for b in store.iter_shards()] == [5, 2, 5]
    prov = store.provenance
    assert prov["heimdall_version"] and prov["created_utc"].startswith("20")


def test_prefetched_shards_are_the_same_stream(
    assert_same: AssertSame, tmp_path: Path, sessions12: SessionBatch
) -> None:
    """``iter_shards(prefetch=True)``: the same shards in the same order; stopping early leaves no
    reader thread behind; a shard that cannot be read fails the iteration where it comes."""
    write_three_shards(str(tmp_path / "ds"), sessions12)
    store = SessionStore.open(tmp_path / "ds")
    assert [b.n_sessions for b in store.iter_shards(prefetch=True)] == [5, 2, 5]
    assert_same(SessionBatch.concat(list(store.iter_shards(prefetch=True))), sessions12)
    before = threading.active_count()
    shards = store.iter_shards(prefetch=True)
    assert_same(next(shards), sessions12.select(slice(0, 5)))
    shards.close()
    assert threading.active_count() == before
    fresh = SessionStore.open(tmp_path / "ds")  # no tables cached yet
    victim = sorted((tmp_path / "ds").rglob("sessions.parquet"))[1]
    victim.unlink()
    got = []
    with pytest.raises(HeimdallError, match="missing or corrupt"):
        for batch in fresh.iter_shards(prefetch=True):
            got.append(batch.n_sessions)
    assert got == [5]


def test_s3_round_trip_matches_local(
    assert_same: AssertSame, tmp_path: Path, s3_bucket: str, sessions12: SessionBatch
) -> None:
    local = write_three_shards(str(tmp_path / "ds"), sessions12)
    uri = f"s3://{s3_bucket}/sets/train"
    write_three_shards(uri, sessions12).close()
    with SessionStore.open(uri) as store:
        assert len(store) == 12
        assert_same(store.read([2, 9, 5]), sessions12.select([2, 9, 5]))
        assert_same(store.read_all(), sessions12)
        assert store.content_hash() == local.content_hash()
        restored = pickle.loads(pickle.dumps(store))
        assert_same(restored.read([10]), sessions12.select([10]))
        restored.close()


def test_s3_missing_bucket(s3_endpoint: str) -> None:
    with pytest.raises(HeimdallError, match="no such S3 bucket 'absent-bucket'"):
        SessionStore.open("s3://absent-bucket/x")
    with pytest.raises(HeimdallError, match="no such S3 bucket"):
        SessionStore.create("s3://absent-bucket/x", META)


def test_variable_receiver_counts_are_padded_offline(tmp_path: Path, sessions12: SessionBatch) -> None:
    store = SessionStore.create(tmp_path / "ds", META)
    per_rx = {*SessionBatch.RECEIVER_FIELDS, "iq"}
    five = SessionBatch(**{
        f.name: getattr(sessions12, f.name)[:4, :5] if f.name in per_rx else getattr(sessions12, f.name)[:4]
        for f in fields(SessionBatch)
    })  # fmt: skip
    store.append_shard(0, five)
    store.append_shard(1, sessions12.select(slice(4, 8)).with_receiver_slots(9))
    got = store.read([0, 5])
    assert got.n_receivers == 9
    np.testing.assert_array_equal(got.rx_state[0, 5:], OFFLINE)
    np.testing.assert_array_equal(got.iq[0, 5:], 0)
    assert (got.rx_station[0, 5:] == "").all() and np.isnan(got.rx_lat_deg[0, 5:]).all()
    np.testing.assert_array_equal(got.iq[0, :5], sessions12.iq[0, :5])
    np.testing.assert_array_equal(got.iq[1, :7], sessions12.iq[5])
    # padding does not change a session's content digest
    other = SessionStore.create(tmp_path / "plain", META)
    other.append_shard(0, sessions12.select(slice(4, 8)))
    assert store.session_digests()[4:] == other.session_digests()


def test_content_hash_is_content_only(tmp_path: Path, sessions12: SessionBatch) -> None:
    three = write_three_shards(str(tmp_path / "a"), sessions12)
    one = SessionStore.create(tmp_path / "b", {"other": "metadata"})
    one.append_shard(7, sessions12)
    assert one.content_hash() == three.content_hash()  # shard sizes and metadata do not matter
    changed = sessions12.select(slice(0, 12))
    changed.iq[11, 6, 599, 1] ^= 1  # flip one bit of the last sample
    c = SessionStore.create(tmp_path / "c", META)
    c.append_shard(0, changed)
    assert c.content_hash() != three.content_hash()
    moved = sessions12.select(slice(0, 12))
    moved.rx_lat_deg[0, 0] += 1e-7
    d = SessionStore.create(tmp_path / "d", META)
    d.append_shard(0, moved)
    assert d.content_hash() != three.content_hash()
    assert len(three.content_hash()) == 64


def test_resume_and_metadata_checks(tmp_path: Path, sessions12: SessionBatch) -> None:
    uri = str(tmp_path / "ds")
    store = SessionStore.create(uri, META)
    store.append_shard(0, sessions12.select(slice(0, 6)))
    again = SessionStore.create(uri, META)
    assert again.committed_shards() == [0] and len(again) == 6
    with pytest.raises(HeimdallError, match="already committed"):
        again.append_shard(0, sessions12.select(slice(6, 12)))
    with pytest.raises(HeimdallError, match="different metadata"):
        SessionStore.create(uri, {**META, "world_seed": 1})
    with pytest.raises(HeimdallError, match="already exists"):
        SessionStore.create(uri, META, resume=False)
    with pytest.raises(HeimdallError, match="not a session store"):
        SessionStore.open(tmp_path / "nothing")
    with pytest.raises(HeimdallError, match=r"out of range 0\.\.5: 6"):
        again.read([6])
    with pytest.raises(HeimdallError, match="not JSON-serialisable"):
        SessionStore.create(tmp_path / "bad", {"x": object()})


def test_duplicate_session_ids_rejected(tmp_path: Path, sessions12: SessionBatch) -> None:
    store = SessionStore.create(tmp_path / "ds", META)
    store.append_shard(0, sessions12.select(slice(0, 6)))
    with pytest.raises(HeimdallError, match=r"session ids already in the store: \[5\]"):
        store.append_shard(1, sessions12.select(slice(5, 12)))
    twice = sessions12.select([7, 8, 7])
    with pytest.raises(HeimdallError, match=r"duplicate session ids in the new shard: \[7\]"):
        store.append_shard(1, twice)
    store.append_shard(1, sessions12.select(slice(6, 12)))
    assert len(SessionStore.open(tmp_path / "ds")) == 12


def test_uncommitted_shard_is_invisible_and_cleaned(
    assert_same: AssertSame, tmp_path: Path, sessions12: SessionBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = tmp_path / "ds"
    store = SessionStore.create(uri, META)
    store.append_shard(0, sessions12.select(slice(0, 6)))

    def die(self: SessionStore, rel: str, data: bytes) -> None:
        raise KeyboardInterrupt("killed before the commit record")

    monkeypatch.setattr(SessionStore, "_put_atomic", die)
    with pytest.raises(KeyboardInterrupt):
        store.append_shard(1, sessions12.select(slice(6, 12)))
    monkeypatch.undo()
    assert len(list((uri / "shards").iterdir())) == 2  # the data of shard 1 is on disk ...
    reader = SessionStore.open(uri)
    assert len(reader) == 6 and reader.committed_shards() == [0]  # ... but not visible
    writer = SessionStore.create(uri, META)
    assert len(list((uri / "shards").iterdir())) == 1  # resuming removed the orphan
    writer.append_shard(1, sessions12.select(slice(6, 12)))
    assert_same(SessionStore.open(uri).read_all(), sessions12)


def test_reader_sees_new_commits_after_refresh(tmp_path: Path, sessions12: SessionBatch) -> None:
    writer = SessionStore.create(tmp_path / "ds", META)
    reader = SessionStore.open(tmp_path / "ds")
    writer.append_shard(0, sessions12.select(slice(0, 4)))
    assert len(reader) == 0
    reader.refresh()
    assert len(reader) == 4
    assert reader.read([3]).rx_state.shape == (1, 7)
    assert (reader.read([0, 1, 2, 3]).rx_state != OFFLINE).any()
    assert HEARD in reader.read([0, 1, 2, 3]).rx_state
