"""SigMF import and export (docs/DATA.md "SigMF convention").

A session is a SigMF collection; each receiver slot a SigMF recording::

    DIR/session-{id:08d}/session-{id:08d}.sigmf-collection
    DIR/session-{id:08d}/rx{slot:02d}-{station}.sigmf-meta (+ .sigmf-data, ci16_le)

Receiver position: ``core:geolocation`` GeoJSON point [lon, lat] (degrees);
capture start: capture ``core:datetime`` (UTC, microseconds) plus
``heimdall:nanoseconds`` (ns within the second, exact) and
``heimdall:timing_sigma_s`` (s); offline receivers are metadata-only
recordings with ``heimdall:state`` "offline"; the transmitter truth is the
collection's ``heimdall:truth`` object. The store metadata travels in
``DIR/heimdall-dataset.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sigmf import SigMFCollection, SigMFFile
from sigmf.error import SigMFError

from heimdall.data.digest import used_slots
from heimdall.data.fs import load_json_object
from heimdall.data.paths import resolve_inside
from heimdall.data.raw import (
    STATE_CODES,
    RawReceiver,
    RawSession,
    check_degrees,
    check_frequency,
    mode_index,
)
from heimdall.data.session import MODES, OFFLINE, STATE_NAMES, SessionBatch
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError

EXTENSION = {"name": "heimdall", "version": "1.0.0", "optional": True}
DATASET_FILE = "heimdall-dataset.json"
#: SigMF complex datatypes accepted on import, bytes per complex sample.
ACCEPTED_DATATYPES: dict[str, int] = {
    "ci16_le": 4, "ci16_be": 4, "cf32_le": 8, "cf32_be": 8, "cf64_le": 16, "cf64_be": 16,
    "ci8": 2, "ci32_le": 8, "ci32_be": 8,
}  # fmt: skip
_NS = 1_000_000_000
#: Global field naming a non-conforming dataset file (SigMF specification 1.x, "core:dataset").
_DATASET_KEY = "core:dataset"


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def iso_utc(ns: int) -> str:
    """``core:datetime`` of a UTC time in ns since the epoch (ISO 8601, microseconds, 'Z')."""
    sec, rem = divmod(int(ns), _NS)
    stamp = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rem // 1000:06d}Z"


_ISO = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?$")


def parse_utc_ns(text: str, where: str) -> int:
    """UTC ns since the epoch from ISO 8601 with up to 9 fractional digits ('Z' or an offset)."""
    m = _ISO.match(str(text).strip())
    if not m:
        raise HeimdallError(f"{where}: time {text!r} is not ISO 8601 (YYYY-MM-DDTHH:MM:SS[.fffffffff]Z)")
    base = dt.datetime.fromisoformat(m.group(1) + (m.group(3) or "Z").replace("Z", "+00:00"))
    frac = int((m.group(2) or "0").ljust(9, "0"))
    return int(base.timestamp()) * _NS + frac


# ---------------------------------------------------------------------- export
def _slot_name(slot: int, station: str) -> str:
    return f"rx{slot:02d}-" + (re.sub(r"[^A-Za-z0-9_.-]", "_", station) or "unnamed")


def _recording(batch: SessionBatch, i: int, j: int, folder: Path) -> str:
    name = _slot_name(j, str(batch.rx_station[i, j]))
    state = int(batch.rx_state[i, j])
    start_ns = int(batch.rx_start_ns[i, j])
    global_info = _clean({
        SigMFFile.DATATYPE_KEY: "ci16_le",
        SigMFFile.SAMPLE_RATE_KEY: float(batch.sample_rate_hz[i]),
        SigMFFile.NUM_CHANNELS_KEY: 1,
        SigMFFile.RECORDER_KEY: "heimdall",
        SigMFFile.DESCRIPTION_KEY: f"session {int(batch.session_id[i])}, receiver {batch.rx_station[i, j]}",
        SigMFFile.EXTENSIONS_KEY: [EXTENSION],
        "heimdall:session_id": int(batch.session_id[i]),
        "heimdall:slot": j,
        "heimdall:station": str(batch.rx_station[i, j]),
        "heimdall:state": STATE_NAMES[state],
        "heimdall:antenna_height_m": _finite(batch.rx_height_m[i, j]),
        "heimdall:fullscale_dbm": _finite(batch.rx_fullscale_dbm[i, j]),
        "heimdall:rx_power_dbm": _finite(batch.rx_power_dbm[i, j]),
        "heimdall:rx_snr_db": _finite(batch.rx_snr_db[i, j]),
        "heimdall:rx_delay_s": _finite(batch.rx_delay_s[i, j]),
        "heimdall:clipped": bool(batch.rx_clipped[i, j]),
    })  # fmt: skip
    lat, lon = float(batch.rx_lat_deg[i, j]), float(batch.rx_lon_deg[i, j])
    if np.isfinite(lat) and np.isfinite(lon):
        global_info[SigMFFile.GEOLOCATION_KEY] = {"type": "Point", "coordinates": [lon, lat]}
    if state == OFFLINE:
        global_info[SigMFFile.METADATA_ONLY_KEY] = True
        meta = SigMFFile(global_info=global_info)
    else:
        data_path = folder / f"{name}.sigmf-data"
        data_path.write_bytes(np.ascontiguousarray(batch.iq[i, j]).astype("<i2").tobytes())
        meta = SigMFFile(global_info=global_info, data_file=str(data_path))
    meta.add_capture(0, metadata=_clean({
        SigMFFile.FREQUENCY_KEY: float(batch.center_freq_hz[i]),
        SigMFFile.DATETIME_KEY: iso_utc(start_ns),
        "heimdall:nanoseconds": start_ns % _NS,
        "heimdall:timing_sigma_s": _finite(batch.rx_timing_sigma_s[i, j]),
    }))  # fmt: skip
    if state != OFFLINE:
        meta.add_annotation(0, batch.n_samples, metadata={SigMFFile.LABEL_KEY: "capture"})
    meta.tofile(str(folder / f"{name}.sigmf-meta"), overwrite=True)
    return name


def _truth(batch: SessionBatch, i: int) -> dict[str, Any] | None:
    mode = int(batch.mode[i])
    truth = _clean({
        "lat_deg": _finite(batch.tx_lat_deg[i]), "lon_deg": _finite(batch.tx_lon_deg[i]),
        "power_dbm": _finite(batch.tx_power_dbm[i]), "height_m": _finite(batch.tx_height_m[i]),
        "mode": MODES[mode] if mode >= 0 else None,
    })  # fmt: skip
    return truth or None


def export_session(batch: SessionBatch, i: int, out_dir: Path) -> Path:
    """Write session ``i`` of ``batch`` as one SigMF collection folder (atomically: temp folder, rename)."""
    sid = int(batch.session_id[i])
    # a folder linked out of out_dir is refused, never written through or deleted
    final = resolve_inside(out_dir, f"session-{sid:08d}", source=str(out_dir), field="session folder")
    tmp = resolve_inside(out_dir, f".session-{sid:08d}.tmp", source=str(out_dir), field="session folder")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [_recording(batch, i, j, tmp) for j in range(int(used_slots(batch.select([i]))[0]))]
    collection = SigMFCollection(
        metafiles=[f"{n}.sigmf-meta" for n in names],
        metadata={
            SigMFCollection.COLLECTION_KEY: _clean(
                {
                    SigMFCollection.VERSION_KEY: SigMFFile().get_global_field(SigMFFile.VERSION_KEY),
                    SigMFCollection.DESCRIPTION_KEY: f"Heimdall session {sid}",
                    SigMFCollection.EXTENSIONS_KEY: [EXTENSION],
                    "heimdall:session_id": sid,
                    "heimdall:world_seed": int(batch.world_seed[i]),
                    "heimdall:network_id": str(batch.network_id[i]) or None,
                    "heimdall:session_seed": int(batch.session_seed[i]),
                    "heimdall:truth": _truth(batch, i),
                }
            )
        },
        base_path=str(tmp),
    )
    collection.tofile(str(tmp / f"session-{sid:08d}"), overwrite=True)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def export_sigmf(
    uri: str,
    out_dir: str | Path,
    limit: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Export the first ``limit`` sessions (all when None) of the store ``uri`` to SigMF in ``out_dir``."""
    if limit is not None and limit < 0:
        raise HeimdallError(f"--limit must be >= 0, got {limit}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeimdallError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None
    written = 0
    with SessionStore.open(uri, storage_options) as store:
        store.require_sessions()
        total = len(store) if limit is None else min(limit, len(store))
        meta_file = resolve_inside(out, DATASET_FILE, source=str(out), field="dataset metadata file")
        _refuse_other_export(out, meta_file, store.metadata)
        meta_file.write_text(json.dumps({"metadata": store.metadata}, indent=1))
        for batch in store.iter_shards():
            for i in range(batch.n_sessions):
                if written >= total:
                    break
                export_session(batch, i, out)
                written += 1
                if progress is not None:
                    progress(1)
            if written >= total:
                break
    return {"sessions": written, "out": str(out)}


def _refuse_other_export(out: Path, meta_file: Path, metadata: dict[str, Any]) -> None:
    """HeimdallError when ``out`` already holds SigMF sessions of another store.

    Importing the folder would read both sets as one store under this store's metadata.
    Sessions of the same store (same metadata) may be written again.
    """
    if meta_file.exists():
        previous = _read_json(meta_file, "dataset metadata").get("metadata")
        if previous == json.loads(json.dumps(metadata)):
            return
        why = "an export of another store (its metadata differ)"
    elif next(out.rglob("*.sigmf-collection"), None) is not None:
        why = f"SigMF sessions without a {DATASET_FILE}"
    else:
        return
    raise HeimdallError(f"{out}: already holds {why}; export into an empty folder")


# ---------------------------------------------------------------------- import
def _read_json(path: Path, what: str) -> dict[str, Any]:
    return load_json_object(path.read_text, str(path), what)


def _number(d: dict[str, Any], key: str, where: str, default: float = float("nan")) -> float:
    """Field ``key`` of ``d`` as a float (``default`` when absent); not a number or ±inf is refused."""
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or np.isinf(value):
        raise HeimdallError(f"{where}: field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _integer(d: dict[str, Any], key: str, where: str, default: int) -> int:
    """Field ``key`` of ``d`` as an int (``default`` when absent); anything but an integer is refused."""
    value = d.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise HeimdallError(f"{where}: field {key!r} must be an integer, got {value!r}")
    return value


def _load_recording(meta_path: Path, collection: Path, session_id: int, position: int) -> RawReceiver:
    metadata = _read_json(meta_path, f"SigMF meta (listed in {collection.name})")
    try:
        with warnings.catch_warnings():  # a short data file is reported below, naming file and field
            warnings.simplefilter("ignore", UserWarning)
            # from the JSON already read, without a data file: sigmf's own lookup would follow
            # core:dataset anywhere; the data file is found (inside the folder) by _attach_data
            sf = SigMFFile(metadata=metadata, skip_checksum=True)
    except (
        SigMFError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
    ) as exc:  # e.g. "global": [1]
        raise HeimdallError(f"{meta_path}: invalid SigMF meta ({type(exc).__name__}: {exc})") from None
    g = sf.get_global_info()
    where = str(meta_path)
    captures = sf.get_captures() or [{}]
    cap = captures[0]
    state_name = g.get("heimdall:state")
    if state_name is not None and state_name not in STATE_CODES:
        raise HeimdallError(
            f"{where}: field 'heimdall:state' is {state_name!r}, expected one of {list(STATE_CODES)}"
        )
    geo = g.get(SigMFFile.GEOLOCATION_KEY) or {}
    coords = geo.get("coordinates") if isinstance(geo, dict) else None
    if not (isinstance(coords, list) and len(coords) >= 2):
        raise HeimdallError(f"{where}: field 'core:geolocation' missing or not a GeoJSON point [lon, lat]")
    point, geo_where = {"lon": coords[0], "lat": coords[1]}, f"{where} core:geolocation"
    lon_deg, lat_deg = (_number(point, k, geo_where) for k in ("lon", "lat"))
    check_degrees(lat_deg, "lat", geo_where, 90.0)
    check_degrees(lon_deg, "lon", geo_where, 180.0)
    start_ns = 0
    if SigMFFile.DATETIME_KEY in cap:
        start_ns = parse_utc_ns(cap[SigMFFile.DATETIME_KEY], f"{where} core:datetime")
        if "heimdall:nanoseconds" in cap:
            ns = _integer(cap, "heimdall:nanoseconds", where, 0)
            if not 0 <= ns < _NS or ns // 1000 != (start_ns % _NS) // 1000:
                raise HeimdallError(
                    f"{where}: field 'heimdall:nanoseconds' {ns} disagrees with core:datetime"
                )
            start_ns = start_ns - start_ns % _NS + ns
    rx = RawReceiver(
        source=where,
        station=str(g.get("heimdall:station", meta_path.name.removesuffix(".sigmf-meta"))),
        lat_deg=lat_deg, lon_deg=lon_deg,
        height_m=_number(g, "heimdall:antenna_height_m", where),
        fullscale_dbm=_number(g, "heimdall:fullscale_dbm", where),
        sample_rate_hz=_number(g, SigMFFile.SAMPLE_RATE_KEY, where),
        start_ns=start_ns,
        timing_sigma_s=_number(cap, "heimdall:timing_sigma_s", where),
        state=STATE_CODES[state_name] if state_name is not None else None,
        power_dbm=_number(g, "heimdall:rx_power_dbm", where),
        snr_db=_number(g, "heimdall:rx_snr_db", where),
        delay_s=_number(g, "heimdall:rx_delay_s", where),
        clipped=bool(g.get("heimdall:clipped", False)),
    )  # fmt: skip
    rx.center_freq_hz = _number(cap, SigMFFile.FREQUENCY_KEY, where)
    if not np.isnan(rx.center_freq_hz):  # absent: another recording of the session gives it
        check_frequency(rx.center_freq_hz, SigMFFile.FREQUENCY_KEY, where)
    if rx.state == OFFLINE or g.get(SigMFFile.METADATA_ONLY_KEY):
        rx.state = OFFLINE
        return rx
    _attach_data(rx, sf, metadata, meta_path)
    return rx


def _attach_data(rx: RawReceiver, sf: SigMFFile, metadata: dict[str, Any], meta_path: Path) -> None:
    g = sf.get_global_info()
    where = str(meta_path)
    dtype = g.get(SigMFFile.DATATYPE_KEY)
    if dtype not in ACCEPTED_DATATYPES:
        raise HeimdallError(
            f"{where}: field 'core:datatype' is {dtype!r}; Heimdall needs complex IQ, one of "
            f"{sorted(ACCEPTED_DATATYPES)}"
        )
    if _integer(g, SigMFFile.NUM_CHANNELS_KEY, where, 1) != 1:
        raise HeimdallError(f"{where}: field 'core:num_channels' must be 1 (one receiver per recording)")
    data_path = _data_file(g, meta_path)
    if not data_path.exists():
        raise HeimdallError(f"{data_path}: SigMF data file missing")
    size = data_path.stat().st_size
    width = ACCEPTED_DATATYPES[dtype]
    n_file = size // width
    n_meta = _annotated_end(sf.get_annotations(), where)
    if size % width or n_file < n_meta:
        raise HeimdallError(
            f"{data_path}: holds {size} bytes = {size / width:g} {dtype} samples, but {meta_path.name} "
            f"says {n_meta} (annotation core:sample_count)"
        )
    if n_file == 0:
        raise HeimdallError(f"{data_path}: SigMF data file is empty")
    expected_hash = g.get(SigMFFile.SHA512_KEY)
    rx.n_samples = n_meta or n_file
    rx.source = str(data_path)

    def load() -> np.ndarray:
        if expected_hash:
            from sigmf.hashing import calculate_sha512

            if calculate_sha512(filename=str(data_path)) != expected_hash:
                raise HeimdallError(f"{data_path}: data does not match core:sha512 in {meta_path.name}")
        if dtype in ("ci16_le", "ci16_be") and _DATASET_KEY not in g:
            pairs = np.fromfile(data_path, dtype="<i2" if dtype.endswith("le") else ">i2").reshape(-1, 2)
            return pairs[: rx.n_samples].astype(np.int16)
        with warnings.catch_warnings():  # sigmf with the checked data file (skips core:header_bytes)
            warnings.simplefilter("ignore", UserWarning)
            with_data = SigMFFile(metadata=metadata, data_file=str(data_path), skip_checksum=True)
        return np.asarray(with_data.read_samples(0, rx.n_samples))

    rx.load = load


def _annotated_end(annotations: Any, where: str) -> int:
    """End (exclusive sample index) of the last annotation: ``core:sample_start + core:sample_count``."""
    if not isinstance(annotations, list):
        raise HeimdallError(f"{where}: field 'annotations' must be a list, got {annotations!r}")
    end = 0
    for k, a in enumerate(annotations):
        w = f"{where} annotations[{k}]"
        if not isinstance(a, dict):
            raise HeimdallError(f"{w}: expected an object, got {a!r}")
        start = _integer(a, SigMFFile.SAMPLE_START_KEY, w, 0)
        count = _integer(a, SigMFFile.SAMPLE_COUNT_KEY, w, 0)
        for key, value in ((SigMFFile.SAMPLE_START_KEY, start), (SigMFFile.SAMPLE_COUNT_KEY, count)):
            if value < 0:
                raise HeimdallError(f"{w}: field {key!r} must be >= 0, got {value}")
        end = max(end, start + count)
    return end


def _data_file(g: dict[str, Any], meta_path: Path) -> Path:
    """The recording's data file: ``core:dataset`` if given, else ``<stem>.sigmf-data``, inside its folder."""
    named = g.get(_DATASET_KEY)
    if named is not None:
        return resolve_inside(meta_path.parent, named, source=str(meta_path), field="core:dataset")
    default = meta_path.name.removesuffix(".sigmf-meta") + ".sigmf-data"
    return resolve_inside(meta_path.parent, default, source=str(meta_path), field="dataset file")


def read_collection(path: Path, fallback_id: int) -> RawSession:
    """A session from one ``.sigmf-collection`` file and the recordings it lists."""
    coll = _read_json(path, "SigMF collection")
    info = coll.get(SigMFCollection.COLLECTION_KEY)
    if not isinstance(info, dict):
        raise HeimdallError(f"{path}: field 'collection' missing")
    streams = info.get(SigMFCollection.STREAMS_KEY)
    if not isinstance(streams, list):
        raise HeimdallError(f"{path}: field 'core:streams' missing or not a list")
    sid = info.get("heimdall:session_id", fallback_id)
    if isinstance(sid, bool) or not isinstance(sid, int):
        raise HeimdallError(f"{path}: field 'heimdall:session_id' must be an integer, got {sid!r}")
    receivers = []
    for k, stream in enumerate(streams):
        name = stream.get("name") if isinstance(stream, dict) else None
        if not isinstance(name, str):
            raise HeimdallError(f"{path}: core:streams[{k}] has no 'name'")
        meta_name = name if name.endswith(".sigmf-meta") else f"{name}.sigmf-meta"
        meta_path = resolve_inside(path.parent, meta_name, source=str(path), field=f"core:streams[{k}].name")
        receivers.append(_load_recording(meta_path, path, sid, k))
    freqs = [r.center_freq_hz for r in receivers if np.isfinite(r.center_freq_hz)]
    if not freqs:
        raise HeimdallError(f"{path}: no recording has a capture 'core:frequency'")
    truth = info.get("heimdall:truth") or {}
    where = str(path)
    if not isinstance(truth, dict):
        raise HeimdallError(f"{where}: field 'heimdall:truth' must be an object, got {truth!r}")
    tx_lat, tx_lon = _number(truth, "lat_deg", where), _number(truth, "lon_deg", where)
    check_degrees(tx_lat, "lat_deg", f"{where} heimdall:truth", 90.0, unknown_ok=True)
    check_degrees(tx_lon, "lon_deg", f"{where} heimdall:truth", 180.0, unknown_ok=True)
    return RawSession(
        source=where, session_id=int(sid), center_freq_hz=float(freqs[0]), receivers=receivers,
        world_seed=_integer(info, "heimdall:world_seed", where, -1),
        network_id=str(info.get("heimdall:network_id") or ""),
        session_seed=_integer(info, "heimdall:session_seed", where, -1),
        tx_lat_deg=tx_lat, tx_lon_deg=tx_lon,
        tx_power_dbm=_number(truth, "power_dbm", where), tx_height_m=_number(truth, "height_m", where),
        mode=mode_index(truth.get("mode"), where),
    )  # fmt: skip


def read_sigmf_dir(directory: str | Path) -> tuple[list[RawSession], dict[str, Any]]:
    """Sessions (one per ``*.sigmf-collection``, by path) under ``directory``, and the dataset metadata.

    Collections without ``heimdall:session_id`` get ids 0, 1, ... in path order.
    """
    root = Path(directory)
    if not root.is_dir():
        raise HeimdallError(f"{root}: not a folder")
    paths = sorted(root.rglob("*.sigmf-collection"))
    if not paths:
        raise HeimdallError(f"{root}: no .sigmf-collection files (Heimdall reads one collection per session)")
    paths = [resolve_inside(root, str(p.relative_to(root)), source=str(root), field="collection file")
             for p in paths]  # fmt: skip
    sessions = [read_collection(p, k) for k, p in enumerate(paths)]
    meta_file = resolve_inside(root, DATASET_FILE, source=str(root), field="dataset metadata file")
    metadata = _read_json(meta_file, "dataset metadata").get("metadata", {}) if meta_file.exists() else {}
    return sessions, metadata
