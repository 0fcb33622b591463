"""SigMF export/import, acquisition-layout import, and their bad-input errors, driven through the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from sigmf import sigmffile

from heimdall.cli import main
from heimdall.data.session import HEARD, OFFLINE, SILENT, SessionBatch
from heimdall.data.store import SessionStore
from heimdall.posterior.measure import measure_power

from .conftest import expect_error

AssertSame = Callable[[SessionBatch, SessionBatch], None]
META = {"network": None, "world_seed": 0, "note": "interchange test"}


def run(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as exc:  # user errors exit 2 after printing one line
        raise AssertionError(f"exit {exc.code}") from None


def make_store(path: Path, batch: SessionBatch) -> str:
    store = SessionStore.create(path, META)
    store.append_shard(0, batch)
    return str(path)


def unlabelled_with_offline(batch: SessionBatch) -> SessionBatch:
    b = batch.select(slice(0, batch.n_sessions))
    b.tx_lat_deg[1] = np.nan
    b.tx_lon_deg[1] = np.nan
    b.rx_state[2, 3] = OFFLINE
    b.iq[2, 3] = 0
    return b


def test_sigmf_export_import_round_trip(
    assert_same: AssertSame, tmp_path: Path, sessions12: SessionBatch
) -> None:
    batch = unlabelled_with_offline(sessions12.select(slice(0, 4)))
    src = make_store(tmp_path / "src", batch.with_receiver_slots(8))  # one padded slot: not exported
    run(["data", "export-sigmf", src, "--out", str(tmp_path / "sigmf")])
    sessions = sorted((tmp_path / "sigmf").glob("session-*"))
    assert len(sessions) == 4
    # the files are valid SigMF (schema and sha512 checked by the sigmf package)
    meta = sigmffile.fromfile(str(sessions[0] / "rx02-torino.sigmf-meta"))
    samples = meta.read_samples()
    np.testing.assert_allclose(samples.real, batch.iq[0, 2, :, 0] / 32768.0, rtol=0, atol=0)
    g = meta.get_global_info()
    assert g["core:geolocation"]["coordinates"] == [batch.rx_lon_deg[0, 2], batch.rx_lat_deg[0, 2]]
    cap = meta.get_captures()[0]
    ns = int(batch.rx_start_ns[0, 2])
    assert cap["heimdall:nanoseconds"] == ns % 1_000_000_000
    assert cap["core:datetime"].endswith(f".{(ns % 1_000_000_000) // 1000:06d}Z")
    coll = json.loads((sessions[1] / "session-00000001.sigmf-collection").read_text())["collection"]
    assert "lat_deg" not in coll["heimdall:truth"] and "power_dbm" in coll["heimdall:truth"]  # unlabelled
    offline = json.loads((sessions[2] / "rx03-coazze.sigmf-meta").read_text())["global"]
    assert offline["heimdall:state"] == "offline" and offline["core:metadata_only"] is True
    assert not (sessions[2] / "rx03-coazze.sigmf-data").exists()

    run(["data", "import-sigmf", str(tmp_path / "sigmf"), "--out", str(tmp_path / "back")])
    back = SessionStore.open(tmp_path / "back")
    assert_same(back.read_all(), batch)
    assert back.content_hash() == SessionStore.open(src).content_hash()
    assert back.metadata["note"] == "interchange test"


def test_sigmf_export_refuses_a_folder_holding_another_store(
    tmp_path: Path, sessions12: SessionBatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exporting into a folder with another store's sessions would import as one mixed store."""
    first = make_store(tmp_path / "a", sessions12.select(slice(0, 2)))
    run(["data", "export-sigmf", first, "--out", str(tmp_path / "sig")])
    run(["data", "export-sigmf", first, "--out", str(tmp_path / "sig")])  # the same store again: fine
    other = SessionStore.create(tmp_path / "b", {**META, "note": "another store"})
    other.append_shard(0, sessions12.select(slice(2, 4)))
    expect_error(["data", "export-sigmf", str(tmp_path / "b"), "--out", str(tmp_path / "sig")], capsys,
                 "already holds an export of another store")  # fmt: skip
    (tmp_path / "sig" / "heimdall-dataset.json").unlink()
    expect_error(["data", "export-sigmf", str(tmp_path / "b"), "--out", str(tmp_path / "sig")], capsys,
                 "SigMF sessions without a heimdall-dataset.json")  # fmt: skip


def test_sigmf_export_limit_and_s3_source(s3_bucket: str, tmp_path: Path, sessions12: SessionBatch) -> None:
    uri = f"s3://{s3_bucket}/store"
    with SessionStore.create(uri, META) as store:
        store.append_shard(0, sessions12.select(slice(0, 5)))
    run(["data", "export-sigmf", uri, "--out", str(tmp_path / "x"), "--limit", "3"])
    assert len(list((tmp_path / "x").glob("session-*"))) == 3


def write_acquisition(root: Path, batch: SessionBatch) -> None:
    """The original layout written independently of the importer: complex64 .npy + metadata.json."""
    z = batch.iq_complex()
    for i in range(batch.n_sessions):
        folder = root / "sessions" / f"{int(batch.session_id[i])}"
        folder.mkdir(parents=True)
        receivers = []
        for j in range(batch.n_receivers):
            online = bool(batch.rx_state[i, j] != OFFLINE)
            ns = int(batch.rx_start_ns[i, j])
            sec, rem = divmod(ns, 1_000_000_000)
            stamp = np.datetime64(sec, "s").astype(str)
            receivers.append({
                "n": j, "station_id": str(batch.rx_station[i, j]), "lat": float(batch.rx_lat_deg[i, j]),
                "lon": float(batch.rx_lon_deg[i, j]), "height_m": float(batch.rx_height_m[i, j]),
                "fullscale_dbm": float(batch.rx_fullscale_dbm[i, j]), "online": online,
                "start_time": f"{stamp}.{rem:09d}Z", "timing_sigma_s": float(batch.rx_timing_sigma_s[i, j]),
            })  # fmt: skip
            if online:
                np.save(folder / f"websdr_{j}.npy", z[i, j].astype(np.complex64))
        meta = {"frequency_hz": float(batch.center_freq_hz[i]),
                "sample_rate_hz": float(batch.sample_rate_hz[i]),
                "truth": {"lat": float(batch.tx_lat_deg[i]), "lon": float(batch.tx_lon_deg[i])},
                "receivers": receivers}  # fmt: skip
        (folder / "metadata.json").write_text(json.dumps(meta))


def test_acquisition_import_then_sigmf_round_trip(
    assert_same: AssertSame, tmp_path: Path, sessions12: SessionBatch
) -> None:
    batch = sessions12.select(slice(0, 5))
    write_acquisition(tmp_path / "acq", batch)
    run(["data", "import-heimdall", str(tmp_path / "acq"), "--out", str(tmp_path / "a"), "--shard-size", "2"])
    got = SessionStore.open(tmp_path / "a").read_all()
    np.testing.assert_array_equal(got.iq, batch.iq)  # int16 -> /32768 complex64 -> int16 is exact
    np.testing.assert_array_equal(got.session_id, batch.session_id)
    np.testing.assert_array_equal(got.rx_start_ns, batch.rx_start_ns)
    for name in ("rx_lat_deg", "rx_lon_deg", "tx_lat_deg", "tx_lon_deg"):
        np.testing.assert_allclose(getattr(got, name), getattr(batch, name), rtol=0, atol=1e-9)
    # states: offline kept; heard / silent from the measured SNR (>= 0 dB), the documented rule
    m = measure_power(batch)
    want = np.where(batch.rx_state == OFFLINE, OFFLINE, np.where(m.heard, HEARD, SILENT))
    np.testing.assert_array_equal(got.rx_state, want)
    assert np.isnan(got.tx_power_dbm).all() and (got.mode == -1).all() and (got.world_seed == -1).all()

    run(["data", "export-sigmf", str(tmp_path / "a"), "--out", str(tmp_path / "s")])
    run(["data", "import-sigmf", str(tmp_path / "s"), "--out", str(tmp_path / "b")])
    assert_same(SessionStore.open(tmp_path / "b").read_all(), got)


def test_acquisition_resamples_mixed_rates(tmp_path: Path, sessions12: SessionBatch) -> None:
    """A 1 kHz tone of amplitude 0.5 recorded at 24 kHz keeps frequency and amplitude at 12 kHz.

    Reference: closed form x[n] = 0.5 exp(2πi·1000·n/12000) (the polyphase filter passes 1 kHz flat).
    """
    batch = sessions12.select([0])
    write_acquisition(tmp_path / "acq", batch)
    folder = tmp_path / "acq" / "sessions" / "0"
    t = np.arange(2 * batch.n_samples + 200) / 24_000.0
    np.save(folder / "websdr_0.npy", (0.5 * np.exp(2j * np.pi * 1000.0 * t)).astype(np.complex64))
    meta = json.loads((folder / "metadata.json").read_text())
    meta["receivers"][0]["sample_rate_hz"] = 24_000.0
    (folder / "metadata.json").write_text(json.dumps(meta))
    run(["data", "import-heimdall", str(tmp_path / "acq"), "--out", str(tmp_path / "a")])
    got = SessionStore.open(tmp_path / "a").read_all()
    assert got.sample_rate_hz[0] == 12_000.0 and got.n_samples == batch.n_samples
    z = got.iq_complex()[0, 0, 100:-100]
    ref = 0.5 * np.exp(2j * np.pi * 1000.0 * (np.arange(got.n_samples) / 12_000.0))[100:-100]
    np.testing.assert_allclose(z, ref, atol=2e-3)
    np.testing.assert_array_equal(got.iq[0, 1:], batch.iq[0, 1:])


# ---------------------------------------------------------------------- bad input
@pytest.fixture
def exported(tmp_path: Path, sessions12: SessionBatch) -> Path:
    src = make_store(tmp_path / "src", sessions12.select(slice(0, 2)))
    run(["data", "export-sigmf", src, "--out", str(tmp_path / "sig")])
    return tmp_path / "sig"


def test_sigmf_meta_missing(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (exported / "session-00000001" / "rx04-passo-giovi.sigmf-meta").unlink()
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "rx04-passo-giovi.sigmf-meta", "missing")  # fmt: skip


def test_sigmf_meta_corrupt(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (exported / "session-00000000" / "rx01-montanaro.sigmf-meta").write_text('{"global": ')
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "rx01-montanaro.sigmf-meta", "corrupt")  # fmt: skip


def test_sigmf_data_short(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = exported / "session-00000000" / "rx00-aquila-giaveno.sigmf-data"
    data.write_bytes(data.read_bytes()[:1000])
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "rx00-aquila-giaveno.sigmf-data", "250 ci16_le samples", "says 600",
                 "core:sample_count")  # fmt: skip


def test_sigmf_wrong_dtype(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = exported / "session-00000000" / "rx00-aquila-giaveno.sigmf-meta"
    meta = json.loads(path.read_text())
    meta["global"]["core:datatype"] = "rf32_le"
    path.write_text(json.dumps(meta))
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "rx00-aquila-giaveno.sigmf-meta", "core:datatype", "rf32_le")  # fmt: skip


@pytest.mark.parametrize("rate", [1e-6, 0.0, -12000.0, 1e12])
def test_sigmf_absurd_sample_rate(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], rate: float
) -> None:
    """A rate no receiver has is refused by name, before any resampling (1e-6 Hz asked for terabytes)."""
    path = exported / "session-00000000" / "rx00-aquila-giaveno.sigmf-meta"
    meta = json.loads(path.read_text())
    meta["global"]["core:sample_rate"] = rate
    del meta["global"]["core:sha512"]
    path.write_text(json.dumps(meta))
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "rx00-aquila-giaveno", "sample rate must be 1000 to 1e+07 Hz")  # fmt: skip


def _edit_collection(folder: Path, edit) -> str:
    path = folder / "session-00000000.sigmf-collection"
    coll = json.loads(path.read_text())
    edit(coll["collection"])
    path.write_text(json.dumps(coll))
    return path.name


def _edit_meta(folder: Path, edit) -> str:
    path = folder / "rx01-montanaro.sigmf-meta"
    meta = json.loads(path.read_text())
    meta.pop("global", {}).pop("core:sha512", None) if edit is None else None
    edit(meta)
    path.write_text(json.dumps(meta))
    return path.name


@pytest.mark.parametrize(
    ("where", "edit", "message"),
    [
        ("collection", lambda c: c.update({"heimdall:truth": [1, 2]}), "'heimdall:truth' must be an object"),
        (
            "collection",
            lambda c: c.update({"heimdall:world_seed": float("inf")}),
            "'heimdall:world_seed' must be an integer, got inf",
        ),
        ("collection", lambda c: c.update({"heimdall:session_seed": "7"}), "'heimdall:session_seed' must be"),
        ("meta", lambda m: m.update({"global": [1]}), "invalid SigMF meta"),
        (
            "meta",
            lambda m: m["captures"][0].update({"heimdall:nanoseconds": 1e300}),
            "'heimdall:nanoseconds' must be an integer",
        ),
        (
            "meta",
            lambda m: m["global"]["core:geolocation"].update({"coordinates": ["8.1", 45.0]}),
            "'lon' must be a finite number",
        ),
        (
            "meta",
            lambda m: m["global"]["core:geolocation"].update({"coordinates": [8.1, 145.0]}),
            "core:geolocation: field 'lat' must be -90 to 90 degrees, got 145",
        ),
        (
            "meta",
            lambda m: m["global"]["core:geolocation"].update({"coordinates": [700.0, 45.0]}),
            "core:geolocation: field 'lon' must be -180 to 180 degrees, got 700",
        ),
        (
            "meta",
            lambda m: m["global"].update({"heimdall:fullscale_dbm": float("-inf")}),
            "'heimdall:fullscale_dbm' must be a finite number",
        ),
        (
            "meta",
            lambda m: m["annotations"][0].update({"core:sample_count": "many"}),
            "'core:sample_count' must be an integer, got 'many'",
        ),
        (
            "meta",
            lambda m: m["annotations"][0].update({"core:sample_start": 1.5}),
            "'core:sample_start' must be an integer, got 1.5",
        ),
        (
            "meta",
            lambda m: m["annotations"][0].update({"core:sample_count": -600}),
            "'core:sample_count' must be >= 0, got -600",
        ),
        (
            "meta",
            lambda m: m["global"].update({"core:num_channels": "two"}),
            "'core:num_channels' must be an integer, got 'two'",
        ),
        (
            "meta",
            lambda m: m["captures"][0].update({"core:frequency": -1.0}),
            "'core:frequency' must be a frequency above 0 and below 1e+10 Hz, got -1",
        ),
        (
            "collection",
            lambda c: c["heimdall:truth"].update({"lat_deg": 123.0}),
            "'lat_deg' must be -90 to 90 degrees, got 123",
        ),
        (
            "collection",
            lambda c: c["heimdall:truth"].update({"lon_deg": -190.0}),
            "'lon_deg' must be -180 to 180 degrees, got -190",
        ),
    ],
)
def test_sigmf_field_of_the_wrong_kind(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, edit, message: str
) -> None:
    """Each malformed field is refused naming the file and the field (they were tracebacks)."""
    folder = exported / "session-00000000"
    name = _edit_collection(folder, edit) if where == "collection" else _edit_meta(folder, edit)
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys, name, message)


def test_sigmf_nan_in_float_iq(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = exported / "session-00000001"
    meta_path = folder / "rx02-torino.sigmf-meta"
    meta = json.loads(meta_path.read_text())
    meta["global"]["core:datatype"] = "cf32_le"
    del meta["global"]["core:sha512"]
    meta_path.write_text(json.dumps(meta))
    z = np.full(600, 0.1 + 0.1j, dtype=np.complex64)
    z[17] = np.nan
    (folder / "rx02-torino.sigmf-data").write_bytes(z.tobytes())
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "rx02-torino.sigmf-data", "NaN or Inf", "sample 17")  # fmt: skip


def test_sigmf_too_few_receivers(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = exported / "session-00000001" / "session-00000001.sigmf-collection"
    coll = json.loads(path.read_text())
    coll["collection"]["core:streams"] = coll["collection"]["core:streams"][:2]
    path.write_text(json.dumps(coll))
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "session-00000001.sigmf-collection", "2 receivers", "at least 3")  # fmt: skip


def test_sigmf_duplicate_session_ids(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(exported / "session-00000001", exported / "session-copy")
    expect_error(["data", "import-sigmf", str(exported), "--out", str(tmp_path / "o")], capsys,
                 "duplicate session id 1", "session-copy")  # fmt: skip


def test_acquisition_bad_inputs(
    tmp_path: Path, sessions12: SessionBatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_acquisition(tmp_path / "acq", sessions12.select([0, 1]))
    folder = tmp_path / "acq" / "sessions" / "0"
    args = ["data", "import-heimdall", str(tmp_path / "acq"), "--out", str(tmp_path / "o")]
    good = np.load(folder / "websdr_1.npy")
    bad = good.copy()
    bad[5] = np.inf
    np.save(folder / "websdr_1.npy", bad)
    expect_error(args, capsys, "websdr_1.npy", "NaN or Inf", "sample 5")
    np.save(folder / "websdr_1.npy", good.real.astype(np.float32))
    expect_error(args, capsys, "websdr_1.npy", "dtype is float32", "complex64")
    np.save(folder / "websdr_1.npy", good)
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["receivers"][2]["lat"]
    (folder / "metadata.json").write_text(json.dumps(meta))
    expect_error(args, capsys, "metadata.json receivers[2]", "'lat' missing")
    meta["receivers"] = meta["receivers"][:2]
    for p in folder.glob("websdr_*.npy"):
        if p.name not in ("websdr_0.npy", "websdr_1.npy"):
            p.unlink()
    (folder / "metadata.json").write_text(json.dumps(meta | {"session_id": 0}))
    expect_error(args, capsys, "sessions/0/metadata.json", "2 receivers", "at least 3")
    write_acquisition(tmp_path / "acq2", sessions12.select([0, 1]))
    other = tmp_path / "acq2" / "sessions" / "1" / "metadata.json"
    other.write_text(json.dumps(json.loads(other.read_text()) | {"session_id": 0}))
    expect_error(["data", "import-heimdall", str(tmp_path / "acq2"), "--out", str(tmp_path / "o2")], capsys,
                 "duplicate session id 0", "sessions/0/metadata.json",
                 "sessions/1/metadata.json")  # fmt: skip
