"""Names taken from files stay inside their folder or store (docs/DATA.md "Safe paths").

Every test plants real files OUTSIDE the folder being read (a second SigMF
export, a second store, a second acquisition session) and points a name at
them with ``..``, an absolute path or a symbolic link. The read must be
refused with an error naming the file and the field, and a Python audit hook
proves that no file under the planted folder was ever opened (``open`` is an
audited event for every Python, numpy memmap, pyarrow-through-fsspec and Zarr
read).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heimdall.data.acquisition import read_acquisition_dir
from heimdall.data.paths import resolve_inside, safe_key
from heimdall.data.session import SessionBatch
from heimdall.data.sigmf_io import export_session, read_sigmf_dir
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError

META = {"network": None, "world_seed": 0, "note": "safe paths test"}


def test_audit_hook_sees_reads_through_links(opens_under, tmp_path: Path) -> None:
    """The instrument itself: a read through a symbolic link is seen (else the tests below prove nothing)."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "out" / "f")
    with opens_under(tmp_path / "out") as seen:
        (tmp_path / "link").read_text()
        np.save(tmp_path / "in.npy", np.zeros(3))  # outside the watched folder: not recorded
    assert seen == [os.path.realpath(tmp_path / "out" / "f")]


# ---------------------------------------------------------------------- the check itself
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../x", "'..' segment"),
        ("a/../../x", "'..' segment"),
        ("a\\..\\x", "'..' segment"),
        ("/etc/passwd", "absolute path"),
        ("\\\\server\\share\\x", "absolute path"),
        ("C:\\x", "absolute path"),
        ("s3://other-bucket/key", "URI"),
        ("", "non-empty"),
        (None, "non-empty"),
    ],
)
def test_bad_names_refused_locally_and_on_object_stores(tmp_path: Path, name: Any, why: str) -> None:
    for check in (
        lambda: resolve_inside(tmp_path, name, source="f.json", field="dir"),
        lambda: safe_key("bucket/prefix", name, source="f.json", field="dir"),
    ):
        with pytest.raises(HeimdallError, match=f"f.json: field 'dir' names .*{why}"):
            check()


def test_names_inside_resolve_like_the_os(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "inner").symlink_to(tmp_path / "real")  # a link that stays inside is fine
    for name in ["a.bin", "sub/b.bin", "./c", "inner/d"]:
        got = resolve_inside(tmp_path, name, source="s", field="f")
        assert got == Path(os.path.realpath(os.path.join(tmp_path, name)))
    assert safe_key("bucket/prefix/", "shards/0-ab", source="s", field="f") == "bucket/prefix/shards/0-ab"
    (tmp_path / "away").symlink_to(tmp_path.parent)
    with pytest.raises(HeimdallError, match=r"field 'f' names 'away/x', which resolves to .* outside"):
        resolve_inside(tmp_path / ".", "away/x", source="s", field="f")


# ---------------------------------------------------------------------- SigMF
def _sigmf_pair(tmp_path: Path, batch: SessionBatch) -> tuple[Path, Path, Path]:
    """Session 0 exported to ``sig/``, session 1 planted in ``outside/``; returns (root, session, planted)."""
    root, outside = tmp_path / "sig", tmp_path / "outside"
    session = export_session(batch, 0, root)
    planted = export_session(batch, 1, outside)
    return root, session, planted


def _collection(folder: Path) -> Path:
    return next(folder.glob("*.sigmf-collection"))


def _first_meta(folder: Path) -> Path:
    return sorted(folder.glob("*.sigmf-meta"))[0]


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def _set_stream(collection: Path, name: str) -> None:
    _edit_json(collection, lambda c: c["collection"]["core:streams"][0].update(name=name))


def _relink(link: Path, target: Path) -> None:
    link.unlink()
    link.symlink_to(target)


def _sigmf_relative(session: Path, planted: Path) -> str:
    meta = _first_meta(planted)
    _set_stream(_collection(session), os.path.relpath(meta, session).removesuffix(".sigmf-meta"))
    return r"core:streams\[0\]\.name' names '\.\./.*', which has a '\.\.' segment"


def _sigmf_absolute(session: Path, planted: Path) -> str:
    _set_stream(_collection(session), str(_first_meta(planted)))
    return r"core:streams\[0\]\.name' names '/.*absolute path"


def _sigmf_meta_link(session: Path, planted: Path) -> str:
    _relink(_first_meta(session), _first_meta(planted))
    return r"core:streams\[0\]\.name' names 'rx00-.*\.sigmf-meta', which resolves to .*outside"


def _sigmf_data_link(session: Path, planted: Path) -> str:
    _relink(sorted(session.glob("*.sigmf-data"))[0], sorted(planted.glob("*.sigmf-data"))[0])
    return (
        r"rx00-.*\.sigmf-meta: field 'dataset file' names 'rx00-.*\.sigmf-data', which resolves to .*outside"
    )


def _sigmf_dataset_key(value: Callable[[Path, Path], str], why: str) -> Callable[[Path, Path], str]:
    def plant(session: Path, planted: Path) -> str:
        data = sorted(planted.glob("*.sigmf-data"))[0]
        _edit_json(_first_meta(session), lambda m: m["global"].update({"core:dataset": value(session, data)}))
        return rf"rx00-.*\.sigmf-meta: field 'core:dataset' names .*{why}"

    return plant


def _sigmf_collection_link(session: Path, planted: Path) -> str:
    _relink(_collection(session), _collection(planted))
    return r"sig: field 'collection file' names 'session-.*\.sigmf-collection', which resolves to .*outside"


SIGMF_CASES: dict[str, Callable[[Path, Path], str]] = {
    "stream name ../": _sigmf_relative,
    "stream name absolute": _sigmf_absolute,
    "meta file symlink": _sigmf_meta_link,
    "data file symlink": _sigmf_data_link,
    "core:dataset ../": _sigmf_dataset_key(lambda s, d: os.path.relpath(d, s), "'..' segment"),
    "core:dataset absolute": _sigmf_dataset_key(lambda s, d: str(d), "absolute path"),
    "collection symlink": _sigmf_collection_link,
}


def _read_everything(root: Path) -> None:
    """What ``import-sigmf`` reads: every collection, meta and data file."""
    sessions, _ = read_sigmf_dir(root)
    for s in sessions:
        for rx in s.receivers:
            if rx.load is not None:
                rx.load()


@pytest.mark.parametrize("case", list(SIGMF_CASES))
def test_sigmf_names_leaving_the_folder_are_refused(
    opens_under, tmp_path: Path, sessions12: SessionBatch, case: str
) -> None:
    root, session, planted = _sigmf_pair(tmp_path, sessions12)
    _read_everything(root)  # the untouched export reads fine
    expected = SIGMF_CASES[case](session, planted)
    with opens_under(planted) as seen, pytest.raises(HeimdallError, match=expected):
        _read_everything(root)
    assert seen == [], f"read outside the SigMF folder: {seen}"


def test_sigmf_core_dataset_inside_the_folder_is_honoured(tmp_path: Path, sessions12: SessionBatch) -> None:
    """A non-conforming dataset name that stays inside is read (the same samples as the conforming file)."""
    root, session, _ = _sigmf_pair(tmp_path, sessions12)
    data = sorted(session.glob("*.sigmf-data"))[0]
    data.rename(session / "renamed.iq")
    _edit_json(_first_meta(session), lambda m: m["global"].update({"core:dataset": "renamed.iq"}))
    rx = read_sigmf_dir(root)[0][0].receivers[0]
    assert rx.load is not None and rx.source == str((session / "renamed.iq").resolve())
    z = rx.load()  # complex, full scale 1.0 (SigMF autoscale of ci16)
    pairs = np.rint(np.stack([z.real, z.imag], axis=-1) * 32768.0).astype(np.int16)
    np.testing.assert_array_equal(pairs, sessions12.iq[0, 0])


# ---------------------------------------------------------------------- session store
def _store_pair(tmp_path: Path, batch: SessionBatch) -> tuple[Path, Path]:
    """A store at ``ds`` (sessions 0-1) and a planted store at ``outside`` (sessions 2-3)."""
    victim, outside = tmp_path / "ds", tmp_path / "outside"
    for uri, rows in ((victim, slice(0, 2)), (outside, slice(2, 4))):
        with SessionStore.create(uri, META) as store:
            store.append_shard(0, batch.select(rows))
    return victim, outside


def _shard_dir(store: Path) -> Path:
    return store / json.loads((store / "commits" / "000000.json").read_text())["dir"]


def _store_relative(victim: Path, outside: Path) -> str:
    rel = os.path.relpath(_shard_dir(outside), victim)
    _edit_json(victim / "commits" / "000000.json", lambda r: r.update(dir=rel))
    return r"commits/000000\.json: field 'dir' names '\.\./outside/shards/.*', which has a '\.\.' segment"


def _store_absolute(victim: Path, outside: Path) -> str:
    _edit_json(victim / "commits" / "000000.json", lambda r: r.update(dir=str(_shard_dir(outside))))
    return r"commits/000000\.json: field 'dir' names '/.*absolute path"


def _store_shard_link(victim: Path, outside: Path) -> str:
    shard = _shard_dir(victim)
    for f in shard.rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted(shard.rglob("*"), reverse=True):
        d.rmdir()
    shard.rmdir()
    shard.symlink_to(_shard_dir(outside))
    return r"commits/000000\.json: field 'dir' names 'shards/.*', which resolves to .*outside"


def _store_commit_link(victim: Path, outside: Path) -> str:
    _relink(victim / "commits" / "000000.json", outside / "commits" / "000000.json")
    return r"commits/000000\.json: field 'commit record file' names 'commits/000000\.json', .*outside"


def _store_table_link(victim: Path, outside: Path) -> str:
    _relink(_shard_dir(victim) / "sessions.parquet", _shard_dir(outside) / "sessions.parquet")
    return (
        r"commits/000000\.json: field 'dir' names 'shards/.*/sessions\.parquet', which resolves to .*outside"
    )


def _store_chunk_link(victim: Path, outside: Path) -> str:
    def chunk(store: Path) -> Path:
        return next(
            p for p in (_shard_dir(store) / "iq.zarr").rglob("*") if p.is_file() and p.suffix != ".json"
        )

    target = chunk(outside)
    link = chunk(victim)
    _relink(link, target)
    return r"iq\.zarr: field 'Zarr array entry' names 'iq\.zarr/c/.*', which is a symbolic link .*outside"


STORE_CASES: dict[str, Callable[[Path, Path], str]] = {
    "commit dir ../": _store_relative,
    "commit dir absolute": _store_absolute,
    "shard folder symlink": _store_shard_link,
    "commit record symlink": _store_commit_link,
    "shard table symlink": _store_table_link,
    "zarr chunk symlink": _store_chunk_link,
}


def _read_store(uri: str) -> SessionBatch:
    with SessionStore.open(uri) as store:
        return store.read_all()


@pytest.mark.parametrize("case", list(STORE_CASES))
def test_store_commit_records_leaving_the_store_are_refused(
    opens_under, tmp_path: Path, sessions12: SessionBatch, case: str
) -> None:
    victim, outside = _store_pair(tmp_path, sessions12)
    np.testing.assert_array_equal(_read_store(str(victim)).session_id, sessions12.session_id[:2])
    expected = STORE_CASES[case](victim, outside)
    with opens_under(outside) as seen, pytest.raises(HeimdallError, match=expected):
        _read_store(str(victim))
    assert seen == [], f"read outside the store: {seen}"


def test_store_never_writes_through_a_linked_folder(tmp_path: Path, sessions12: SessionBatch) -> None:
    victim, outside = tmp_path / "ds", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    store = SessionStore.create(victim, META)
    (victim / "shards").symlink_to(outside)
    with pytest.raises(HeimdallError, match=r"field 'store layout' names 'shards/000000-.*outside"):
        store.append_shard(0, sessions12.select([0]))
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    # resuming removes uncommitted shard folders: a link there is unlinked, its target kept
    (victim / "shards").unlink()
    (victim / "shards").mkdir()
    (victim / "shards" / "000000-dead").symlink_to(outside)
    SessionStore.create(victim, META).close()
    assert not (victim / "shards" / "000000-dead").is_symlink()
    assert (outside / "keep.txt").read_text() == "keep"


def test_sigmf_export_never_writes_through_a_linked_folder(tmp_path: Path, sessions12: SessionBatch) -> None:
    out, outside = tmp_path / "sig", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    out.mkdir()
    (out / "session-00000000").symlink_to(outside)
    with pytest.raises(
        HeimdallError, match=r"sig: field 'session folder' names 'session-00000000', .*outside"
    ):
        export_session(sessions12, 0, out)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]


@pytest.mark.slow
def test_s3_commit_records_with_escaping_keys_are_refused(s3_bucket: str, sessions12: SessionBatch) -> None:
    uri = f"s3://{s3_bucket}/sets/victim"
    with SessionStore.create(f"s3://{s3_bucket}/sets/planted", META) as planted:
        planted.append_shard(0, sessions12.select([2, 3]))
        planted_dir = planted.shard_records()[0]["dir"]
    with SessionStore.create(uri, META) as store:
        store.append_shard(0, sessions12.select([0, 1]))
        record = store.shard_records()[0]
        fs, commit = store.fs, f"{store.root}/commits/000000.json"
    for name, why in [
        (f"../planted/{planted_dir}", "'..' segment"),
        (f"/{s3_bucket}/sets/planted/{planted_dir}", "absolute path"),
        (f"s3://{s3_bucket}/sets/planted/{planted_dir}", "URI"),
    ]:
        fs.pipe_file(commit, json.dumps({**record, "dir": name}).encode())
        with pytest.raises(HeimdallError, match=rf"commits/000000\.json: field 'dir' names .*{why}"):
            _read_store(uri)


# ---------------------------------------------------------------------- acquisition layout
def _write_acquisition_session(folder: Path, seed: int) -> None:
    """One session of the original layout: three online receivers, 256 complex64 samples each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    receivers = []
    for n in range(3):
        iq = (rng.normal(size=256) + 1j * rng.normal(size=256)).astype(np.complex64) * 0.01
        np.save(folder / f"websdr_{n}.npy", iq)
        receivers.append({"n": n, "station_id": f"st{n}", "lat": 45.0 + n, "lon": 7.0 + n})
    meta = {"frequency_hz": 145.5e6, "sample_rate_hz": 12_000.0, "start_time": "2025-03-01T12:00:00Z",
            "receivers": receivers}  # fmt: skip
    (folder / "metadata.json").write_text(json.dumps(meta))


def _acq_npy_link(session: Path, planted: Path) -> str:
    _relink(session / "websdr_0.npy", planted / "websdr_0.npy")
    return r"metadata\.json: field 'receivers\[0\]\.n' names 'websdr_0\.npy', which resolves to .*outside"


def _acq_manifest_link(session: Path, planted: Path) -> str:
    _relink(session / "metadata.json", planted / "metadata.json")
    return r"field 'manifest file' names 'metadata\.json', which resolves to .*outside"


def _acq_folder_link(session: Path, planted: Path) -> str:
    for f in session.iterdir():
        f.unlink()
    session.rmdir()
    session.symlink_to(planted)
    return r"sessions: field 'session folder' names '1', which resolves to .*outside"


ACQ_CASES: dict[str, Callable[[Path, Path], str]] = {
    "iq file symlink": _acq_npy_link,
    "manifest symlink": _acq_manifest_link,
    "session folder symlink": _acq_folder_link,
}


@pytest.mark.parametrize("case", list(ACQ_CASES))
def test_acquisition_files_leaving_the_folder_are_refused(opens_under, tmp_path: Path, case: str) -> None:
    root, outside = tmp_path / "acq", tmp_path / "outside"
    _write_acquisition_session(root / "sessions" / "1", seed=1)
    _write_acquisition_session(outside / "9", seed=9)

    def read_all() -> None:
        for s in read_acquisition_dir(root):
            for rx in s.receivers:
                assert rx.load is not None
                rx.load()

    read_all()
    expected = ACQ_CASES[case](root / "sessions" / "1", outside / "9")
    with opens_under(outside) as seen, pytest.raises(HeimdallError, match=expected):
        read_all()
    assert seen == [], f"read outside the acquisition folder: {seen}"
