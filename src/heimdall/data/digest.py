"""Content digests of sessions and datasets (lineage; docs/DATA.md "Content hash").

A session's digest is SHA-256 over a canonical encoding of all its fields
(IQ and table values), independent of how it is stored: trailing padded
slots (offline with an empty station id) are dropped, numbers are encoded
little-endian in their schema dtype, NaNs are made canonical and strings are
UTF-8 with a length prefix. A dataset's hash is SHA-256 over its session
digests in order, so it does not depend on shard size, storage back end or
provenance (creation time, software version).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import fields

import numpy as np

from heimdall.data.session import OFFLINE, SessionBatch

_SESSION_TAG = b"heimdall-session-v1\0"
_DATASET_TAG = b"heimdall-dataset-v1\0"
#: Schema dtype of each field but the strings (``rx_station``, ``network_id``): encodings are fixed
#: whatever dtype an array arrives in.
FIELD_DTYPES: dict[str, str] = {
    "session_id": "<i8", "world_seed": "<i8", "session_seed": "<i8", "center_freq_hz": "<f8",
    "sample_rate_hz": "<f8", "tx_lat_deg": "<f8", "tx_lon_deg": "<f8", "tx_power_dbm": "<f8",
    "tx_height_m": "<f8", "mode": "i1", "rx_lat_deg": "<f8", "rx_lon_deg": "<f8", "rx_height_m": "<f8",
    "rx_fullscale_dbm": "<f8", "rx_state": "i1", "rx_start_ns": "<i8", "rx_timing_sigma_s": "<f8",
    "rx_power_dbm": "<f8", "rx_snr_db": "<f8", "rx_delay_s": "<f8", "rx_clipped": "?", "iq": "<i2",
    "label_radius_m": "<f8", "rx_burst_dbfs": "<f8", "rx_burst_noise_dbfs": "<f8",
}  # fmt: skip


#: Optional float fields left out of a session's digest when all NaN (older stores hash the same).
_NAN_OPTIONAL = ("label_radius_m", "rx_burst_dbfs", "rx_burst_noise_dbfs")


def used_slots(batch: SessionBatch) -> np.ndarray:
    """Per session the receiver count without trailing padded slots, shape (B,), int64.

    A padded slot is offline and has an empty station id.
    """
    pad = (batch.rx_state == OFFLINE) & (batch.rx_station == "")
    r = batch.n_receivers
    # index of the last non-padded slot + 1 (0 when every slot is padding)
    not_pad = ~pad
    last = r - np.argmax(not_pad[:, ::-1], axis=1)
    return np.where(not_pad.any(axis=1), last, 0).astype(np.int64)


def _canonical(name: str, values: np.ndarray) -> bytes:
    if name in ("rx_station", "network_id"):
        return b"".join(struct.pack("<I", len(e)) + e for e in (str(v).encode() for v in values))
    arr = np.asarray(values).astype(FIELD_DTYPES[name], copy=False)
    if arr.dtype.kind == "f":
        arr = np.where(np.isnan(arr), np.nan, arr).astype(FIELD_DTYPES[name])
    return np.ascontiguousarray(arr).tobytes()


def session_digests(batch: SessionBatch) -> list[bytes]:
    """SHA-256 digest (32 bytes) of every session of ``batch``, in order."""
    names = [f.name for f in fields(SessionBatch)]
    slots = used_slots(batch)
    out = []
    for i in range(batch.n_sessions):
        h = hashlib.sha256(_SESSION_TAG)
        r = int(slots[i])
        h.update(struct.pack("<q", r))
        for name in names:
            arr = getattr(batch, name)
            if name == "network_id" and not str(arr[i]):
                continue  # unknown network: the digest of stores written before the column existed
            values = arr[i] if name in SessionBatch.SESSION_FIELDS else arr[i, :r]
            if name in _NAN_OPTIONAL and np.all(np.isnan(values)):
                continue  # absent optional measurement: the digest of stores written before it existed
            h.update(name.encode() + b"\0")
            h.update(_canonical(name, np.atleast_1d(values)))
        out.append(h.digest())
    return out


def dataset_hash(digests: list[bytes]) -> str:
    """Hex SHA-256 over session digests in dataset order."""
    h = hashlib.sha256(_DATASET_TAG)
    h.update(struct.pack("<q", len(digests)))
    for d in digests:
        h.update(d)
    return h.hexdigest()
