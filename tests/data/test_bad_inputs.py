"""Bad input found by a sweep: damaged IQ chunks, empty stores, out-of-range options and metadata.

Each case is refused with one line naming what is wrong (exit 2 through the CLI), never a
traceback and never a silent answer from wrong data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.data.fs import open_fs
from heimdall.data.session import SessionBatch
from heimdall.data.split import split_indices
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError

from .conftest import expect_error
from .test_interchange import write_acquisition

META = {"network": None, "world_seed": 0, "note": "bad input test"}


def two_shards(path: Path, batch: SessionBatch) -> str:
    """A store of ``batch`` in two shards (3 + rest sessions)."""
    with SessionStore.create(path, META) as store:
        store.append_shard(0, batch.select(slice(0, 3)))
        store.append_shard(1, batch.select(slice(3, batch.n_sessions)))
    return str(path)


def iq_chunk(store: Path, shard: int) -> Path:
    """The (only) IQ object of shard ``shard``: one Zarr shard holding every session's chunk."""
    (chunk,) = [p for p in store.glob(f"shards/{shard:06d}-*/iq.zarr/c/**/*") if p.is_file()]
    return chunk


def _flip_payload(data: bytes) -> bytes:
    """Flip 4 bytes in the middle of the compressed payload (well before the shard index at the end)."""
    out = bytearray(data)
    mid = len(out) // 2
    for k in range(mid, mid + 4):
        out[k] ^= 0x5A
    return bytes(out)


DAMAGE: dict[str, tuple[Callable[[bytes], bytes | None], str]] = {
    "deleted": (lambda data: None, "IQ chunk missing"),
    "empty": (lambda data: b"", "IQ chunk is empty"),
    "random": (lambda data: os.urandom(len(data)), "IQ chunk corrupt"),
    "flipped": (_flip_payload, "IQ chunk corrupt"),
    "truncated": (lambda data: data[: len(data) // 2], "IQ chunk corrupt"),
}


def damage(chunk: Path, how: str) -> None:
    new = DAMAGE[how][0](chunk.read_bytes())
    if new is None:
        chunk.unlink()
    else:
        chunk.write_bytes(new)


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize(
    "command",
    [
        ["data", "info", "{store}"],
        ["data", "export-sigmf", "{store}", "--out", "{tmp}/sig"],
        ["data", "split", "{store}", "--out", "{tmp}/split"],
    ],
)
def test_damaged_iq_chunk_is_refused_naming_the_shard(
    tmp_path: Path, sessions12: SessionBatch, capsys: pytest.CaptureFixture[str], how: str, command: list[str]
) -> None:
    """A lost, emptied or damaged IQ object was read as zeros (zarr's fill value), as silently wrong
    samples (flipped payload bytes) or raised a zarr / blosc traceback."""
    store = two_shards(tmp_path / "ds", sessions12.select(slice(0, 6)))
    chunk = iq_chunk(tmp_path / "ds", 1)
    shard = chunk.relative_to(tmp_path / "ds").parts[1]
    damage(chunk, how)
    args = [a.format(store=store, tmp=tmp_path) for a in command]
    expect_error(args, capsys, f"shards/{shard}/iq.zarr", DAMAGE[how][1])


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_iq_chunk_random_access(tmp_path: Path, sessions12: SessionBatch, how: str) -> None:
    """Reading single sessions (training's random access) refuses the damaged shard, not the others."""
    two_shards(tmp_path / "ds", sessions12.select(slice(0, 6)))
    damage(iq_chunk(tmp_path / "ds", 0), how)
    store = SessionStore.open(tmp_path / "ds")
    np.testing.assert_array_equal(store.read([4]).iq, sessions12.iq[[4]])
    with pytest.raises(HeimdallError, match=DAMAGE[how][1]):
        store.read([1])


@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_missing_iq_chunk_on_s3_is_refused(
    s3_bucket: str, sessions12: SessionBatch, tmp_path: Path, how: str
) -> None:
    uri = f"s3://{s3_bucket}/ds"
    with SessionStore.create(uri, META) as store:
        store.append_shard(0, sessions12.select(slice(0, 3)))
    fs, root = open_fs(uri)
    (key,) = [k for k in fs.find(f"{root}/shards") if "/iq.zarr/c/" in k]
    if how == "deleted":
        fs.rm(key)
    else:
        fs.pipe(key, b"")
    with SessionStore.open(uri) as store, pytest.raises(HeimdallError, match=DAMAGE[how][1]):
        store.read([0])


# ---------------------------------------------------------------------- a store without sessions
@pytest.fixture
def empty_store(tmp_path: Path) -> str:
    SessionStore.create(tmp_path / "empty", META).close()
    return str(tmp_path / "empty")


def test_info_describes_an_empty_store(empty_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["data", "info", empty_store, "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["sessions"] == 0 and info["shards"] == 0 and info["receiver_slots"] == 0
    assert info["snr_db_measured"]["receivers"] == 0 and info["labelled_fraction"] == 0.0
    store = SessionStore.open(empty_store)
    assert store.sessions_table().num_rows == 0 and "session_id" in store.sessions_table().column_names
    assert store.receivers_table().num_rows == 0 and "rx_state" in store.receivers_table().column_names


@pytest.mark.parametrize(
    "command",
    [
        ["data", "split", "{store}", "--out", "{tmp}/split"],
        ["data", "export-sigmf", "{store}", "--out", "{tmp}/sig"],
        ["evaluate", "--data", "{store}", "--out", "{tmp}/eval"],
    ],
)
def test_consumers_of_an_empty_store_say_so(
    empty_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    args = [a.format(store=empty_store, tmp=tmp_path) for a in command]
    expect_error(args, capsys, empty_store, "the store holds no sessions")


def test_reading_an_empty_store_says_so(empty_store: str) -> None:
    store = SessionStore.open(empty_store)
    for read in (lambda: store.read([0]), store.read_all):
        with pytest.raises(HeimdallError, match="the store holds no sessions"):
            read()


# ---------------------------------------------------------------------- options
@pytest.fixture
def acquisition(tmp_path: Path, sessions12: SessionBatch) -> Path:
    write_acquisition(tmp_path / "acq", sessions12.select([0, 1]))
    return tmp_path / "acq"


@pytest.mark.parametrize("kind", ["import-sigmf", "import-heimdall"])
@pytest.mark.parametrize("rate", ["nan", "inf", "-inf", "1e9", "-100", "0", "999"])
def test_import_sample_rate_out_of_range(
    acquisition: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    rate: str,
) -> None:
    """--sample-rate outside 1 kHz .. 10 MHz: nan/inf crashed, 1e9 asked for 52 GiB, 0 meant the default."""
    src = acquisition
    if kind == "import-sigmf":
        main(["data", "import-heimdall", str(acquisition), "--out", str(tmp_path / "a")])
        capsys.readouterr()
        main(["data", "export-sigmf", str(tmp_path / "a"), "--out", str(tmp_path / "sig")])
        capsys.readouterr()
        src = tmp_path / "sig"
    out = tmp_path / "o"
    expect_error(["data", kind, str(src), "--out", str(out), "--sample-rate", rate], capsys,
                 "--sample-rate", "must be 1000 to 1e+07 Hz")  # fmt: skip
    assert not out.exists()  # refused before a store is created


def test_import_sample_rate_in_range_is_used(acquisition: Path, tmp_path: Path) -> None:
    main(["data", "import-heimdall", str(acquisition), "--out", str(tmp_path / "o"), "--sample-rate", "6000"])
    got = SessionStore.open(tmp_path / "o").read_all()
    assert (got.sample_rate_hz == 6000.0).all() and got.n_samples == 300


def test_split_negative_seed(
    tmp_path: Path, sessions12: SessionBatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = two_shards(tmp_path / "ds", sessions12.select(slice(0, 6)))
    expect_error(["data", "split", store, "--out", str(tmp_path / "o"), "--seed", "-4"], capsys,
                 "--seed", "must be >= 0", "-4")  # fmt: skip
    with pytest.raises(HeimdallError, match="must be >= 0"):
        split_indices(6, (0.5, 0.25, 0.25), -1)


# ---------------------------------------------------------------------- acquisition metadata
def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        d = meta
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (_set(["frequency_hz"], -1.0), ["field 'frequency_hz'", "-1"]),
        (_set(["frequency_hz"], 0), ["field 'frequency_hz'"]),
        (_set(["frequency_hz"], 2e10), ["field 'frequency_hz'", "2e+10"]),
        (_set(["frequency_hz"], float("nan")), ["field 'frequency_hz'"]),
        (_set(["receivers", 0, "frequency_hz"], -5.0), ["receivers[0]", "field 'frequency_hz'"]),
        (_set(["truth", "lat"], 123.0), ["field 'lat'", "123"]),
        (_set(["truth", "lon"], -181.0), ["field 'lon'", "-181"]),
        (_set(["truth", "lat"], float("inf")), ["field 'lat'"]),
        (_set(["receivers", 1, "lat"], 91.0), ["receivers[1]", "field 'lat'", "91"]),
        (_set(["receivers", 2, "lon"], 200.0), ["receivers[2]", "field 'lon'", "200"]),
        (_set(["receivers", 2, "lon"], float("nan")), ["receivers[2]", "field 'lon'"]),
    ],
)
def test_acquisition_metadata_out_of_range(
    acquisition: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: Callable[[dict[str, Any]], None],
    fragments: list[str],
) -> None:
    path = acquisition / "sessions" / "1" / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    expect_error(["data", "import-heimdall", str(acquisition), "--out", str(tmp_path / "o")], capsys,
                 "sessions/1/metadata.json", *fragments)  # fmt: skip
