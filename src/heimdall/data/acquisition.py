"""Import of the original Heimdall acquisition layout (docs/DATA.md "Acquisition layout").

::

    DIR/sessions/{id}/metadata.json
    DIR/sessions/{id}/websdr_{n}.npy      complex64 (or complex128) IQ, shape (T,), full scale |x| = 1

``metadata.json`` (units in the names; ``*`` = required)::

    {
      "session_id": 17,                    # default: the folder name when it is an integer
      "frequency_hz": 145500000.0,         # * here or on every receiver
      "sample_rate_hz": 12000.0,           # * here or on every receiver with data
      "start_time": "2025-03-01T12:00:00.123456789Z",   # * here or on every receiver (UTC, ISO 8601, <= ns)
      "timing_sigma_s": 0.05,              # timing uncertainty (default unknown)
      "truth": {"lat": 45.1, "lon": 7.6, "power_dbm": 37.0, "height_m": 2.0, "mode": "nbfm"},
      "receivers": [
        {"n": 0, "station_id": "torino", "lat": 45.044, "lon": 7.672,   # *
         "height_m": 30.0, "fullscale_dbm": -50.0, "online": true,
         "frequency_hz": ..., "sample_rate_hz": ..., "start_time": ..., "timing_sigma_s": ...}
      ]
    }

Receiver ``n`` reads ``websdr_{n}.npy``; ``"online": false`` marks an offline receiver
(no file needed). Heard / silent is measured from the IQ. Frequencies must lie above 0 and
below 10 GHz, latitudes in [-90, 90] and longitudes in [-180, 180] degrees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from heimdall.data.fs import load_json_object
from heimdall.data.paths import resolve_inside
from heimdall.data.raw import RawReceiver, RawSession, check_degrees, check_frequency, mode_index
from heimdall.data.session import OFFLINE
from heimdall.data.sigmf_io import parse_utc_ns
from heimdall.errors import HeimdallError

METADATA_FILE = "metadata.json"


def _field(d: dict[str, Any], key: str, where: str, fallback: dict[str, Any] | None = None) -> Any:
    if key in d and d[key] is not None:
        return d[key]
    if fallback is not None and fallback.get(key) is not None:
        return fallback[key]
    raise HeimdallError(f"{where}: field {key!r} missing")


def _num(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HeimdallError(f"{where}: field {key!r} must be a number, got {value!r}")
    return float(value)


def _opt(d: dict[str, Any], key: str, where: str, fallback: dict[str, Any] | None = None) -> float:
    try:
        return _num(_field(d, key, where, fallback), key, where)
    except HeimdallError as exc:
        if "missing" in str(exc):
            return float("nan")
        raise


def _npy_loader(path: Path) -> tuple[int, Any]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise HeimdallError(f"{path}: IQ file missing") from None
    except (ValueError, OSError, EOFError) as exc:
        raise HeimdallError(f"{path}: not a readable .npy file ({exc})") from None
    if arr.dtype not in (np.complex64, np.complex128):
        raise HeimdallError(f"{path}: IQ dtype is {arr.dtype}, expected complex64")
    if arr.ndim != 1:
        raise HeimdallError(f"{path}: IQ shape is {arr.shape}, expected one dimension (T,)")
    return int(arr.shape[0]), lambda: np.asarray(np.load(path, allow_pickle=False))


def _receiver(entry: Any, k: int, folder: Path, meta: dict[str, Any], where: str) -> RawReceiver:
    w = f"{where} receivers[{k}]"
    if not isinstance(entry, dict):
        raise HeimdallError(f"{w}: expected an object")
    n = _field(entry, "n", w)
    if isinstance(n, bool) or not isinstance(n, int):
        raise HeimdallError(f"{w}: field 'n' must be an integer, got {n!r}")
    online = entry.get("online", True)
    start = _field(entry, "start_time", w, meta)
    iq_path = resolve_inside(folder, f"websdr_{n}.npy", source=where, field=f"receivers[{k}].n")
    rx = RawReceiver(
        source=str(iq_path),
        station=str(_field(entry, "station_id", w)),
        lat_deg=_num(_field(entry, "lat", w), "lat", w),
        lon_deg=_num(_field(entry, "lon", w), "lon", w),
        height_m=_opt(entry, "height_m", w),
        fullscale_dbm=_opt(entry, "fullscale_dbm", w),
        sample_rate_hz=_opt(entry, "sample_rate_hz", w, meta),
        center_freq_hz=_opt(entry, "frequency_hz", w, meta),
        start_ns=parse_utc_ns(start, f"{w} start_time"),
        timing_sigma_s=_opt(entry, "timing_sigma_s", w, meta),
    )  # fmt: skip
    check_degrees(rx.lat_deg, "lat", w, 90.0)
    check_degrees(rx.lon_deg, "lon", w, 180.0)
    if not np.isnan(rx.center_freq_hz):  # NaN: not given here nor for the session
        check_frequency(rx.center_freq_hz, "frequency_hz", w)
    if not online:
        rx.state = OFFLINE
        return rx
    if not np.isfinite(rx.sample_rate_hz):
        raise HeimdallError(f"{w}: field 'sample_rate_hz' missing")
    rx.n_samples, rx.load = _npy_loader(iq_path)
    return rx


def read_session(folder: Path, fallback_id: int) -> RawSession:
    """One session folder (``metadata.json`` + ``websdr_{n}.npy``); every file read stays inside it."""
    meta_path = resolve_inside(folder, METADATA_FILE, source=str(folder), field="manifest file")
    where = str(meta_path)
    meta = load_json_object(meta_path.read_text, where, "metadata")
    entries = _field(meta, "receivers", where)
    if not isinstance(entries, list):
        raise HeimdallError(f"{where}: field 'receivers' must be a list")
    freq = _opt(meta, "frequency_hz", where)
    if not np.isnan(freq):  # checked before the receivers that inherit it
        check_frequency(freq, "frequency_hz", where)
    receivers = [_receiver(e, k, folder, meta, where) for k, e in enumerate(entries)]
    numbers = [e["n"] for e in entries]
    if len(set(numbers)) != len(numbers):
        raise HeimdallError(f"{where}: receiver numbers 'n' repeat: {numbers}")
    listed = {f"websdr_{n}.npy" for n in numbers}
    for extra in sorted(p.name for p in folder.glob("websdr_*.npy")):
        if extra not in listed:
            raise HeimdallError(f"{folder / extra}: no receiver entry in {METADATA_FILE}")
    default_id = int(folder.name) if folder.name.isdigit() else fallback_id
    sid = meta.get("session_id", default_id)
    if isinstance(sid, bool) or not isinstance(sid, int):
        raise HeimdallError(f"{where}: field 'session_id' must be an integer, got {sid!r}")
    freqs = [r.center_freq_hz for r in receivers if np.isfinite(r.center_freq_hz)]
    if not np.isfinite(freq):
        if not freqs:
            raise HeimdallError(f"{where}: field 'frequency_hz' missing")
        freq = freqs[0]
    truth = meta.get("truth") or {}
    if not isinstance(truth, dict):
        raise HeimdallError(f"{where}: field 'truth' must be an object")
    tx_lat, tx_lon = _opt(truth, "lat", f"{where} truth"), _opt(truth, "lon", f"{where} truth")
    check_degrees(tx_lat, "lat", f"{where} truth", 90.0, unknown_ok=True)
    check_degrees(tx_lon, "lon", f"{where} truth", 180.0, unknown_ok=True)
    return RawSession(
        source=where, session_id=sid, center_freq_hz=freq, receivers=receivers,
        tx_lat_deg=tx_lat, tx_lon_deg=tx_lon,
        tx_power_dbm=_opt(truth, "power_dbm", where), tx_height_m=_opt(truth, "height_m", where),
        mode=mode_index(truth.get("mode"), where),
    )  # fmt: skip


def read_acquisition_dir(directory: str | Path) -> list[RawSession]:
    """Every session under ``directory/sessions/`` (or ``directory`` itself), sorted by folder name."""
    root = Path(directory)
    if not root.is_dir():
        raise HeimdallError(f"{root}: not a folder")
    base = root / "sessions" if (root / "sessions").is_dir() else root
    folders = sorted(
        (
            p
            for p in base.iterdir()
            if p.is_dir() and ((p / METADATA_FILE).exists() or any(p.glob("websdr_*.npy")))
        ),
        key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name),
    )
    if not folders:
        raise HeimdallError(f"{base}: no session folders with a {METADATA_FILE}")
    for p in folders:  # a linked session folder must stay inside too
        resolve_inside(base, p.name, source=str(base), field="session folder")
    return [read_session(p, k) for k, p in enumerate(folders)]
