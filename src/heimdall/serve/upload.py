"""Sessions for the map page: an uploaded SigMF collection or a stored session, as a service request.

An upload is the files of one session (docs/DATA.md "SigMF convention"): the
``.sigmf-meta`` and ``.sigmf-data`` of each receiver and, optionally, the
``.sigmf-collection`` listing them (without one, every uploaded recording is
taken, in file-name order). The files are written to a private temporary
folder and read with the project's SigMF reader
(:func:`heimdall.serve.locate.load_session`: resampled to the model's rate and
cut to its length), then turned into a ``/v1/localize`` request so that the
service's own checks (stations, area, online and heard receivers) apply.
Every refusal names the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from heimdall.data.session import OFFLINE, SessionBatch
from heimdall.errors import HeimdallError
from heimdall.network import Network
from heimdall.serve.client import encode_iq
from heimdall.serve.inputs import RequestError
from heimdall.serve.schemas import MAX_RECEIVERS, LocalizeRequest

#: File names an upload may hold (no folders).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,200}\.sigmf-(meta|data|collection)$")
#: Longest base64 file content, characters (a 60 s cf32 capture at 48 kHz).
MAX_FILE_CHARS = 32_000_000


class UploadedFile(BaseModel):
    """One file of an upload: its name and its bytes as base64."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=255, description="File name, e.g. rx00-torino.sigmf-meta.")
    data_base64: str = Field(max_length=MAX_FILE_CHARS, description="The file's bytes, base64 (RFC 4648).")


class UploadRequest(BaseModel):
    """The files of one SigMF session."""

    model_config = ConfigDict(extra="forbid", strict=True)

    files: list[UploadedFile] = Field(min_length=1, max_length=2 * MAX_RECEIVERS + 1)


def _refuse(name: str, msg: str) -> RequestError:
    return RequestError([(("body", "files", name), msg)])


def write_upload(upload: UploadRequest, folder: Path) -> None:
    """Decode the files into ``folder`` (one session), adding a collection when none was sent."""
    names = [f.name for f in upload.files]
    for f in upload.files:
        if not _NAME.match(f.name):
            raise _refuse(
                f.name, "not a SigMF file name (expected NAME.sigmf-meta, .sigmf-data or .sigmf-collection)"
            )
        if names.count(f.name) > 1:
            raise _refuse(f.name, "sent more than once")
        try:
            data = base64.b64decode(f.data_base64, validate=True)
        except (binascii.Error, ValueError):
            raise _refuse(f.name, "content is not valid base64") from None
        (folder / f.name).write_bytes(data)
    metas = sorted(n for n in names if n.endswith(".sigmf-meta"))
    collections = [n for n in names if n.endswith(".sigmf-collection")]
    if not metas:
        raise _refuse(names[0], "no .sigmf-meta file: upload each receiver's .sigmf-meta and .sigmf-data")
    if len(collections) > 1:
        raise _refuse(collections[1], "more than one .sigmf-collection: upload one session at a time")
    for n in names:
        if n.endswith(".sigmf-data") and n.replace(".sigmf-data", ".sigmf-meta") not in names:
            raise _refuse(n, f"no matching {n.replace('.sigmf-data', '.sigmf-meta')} in the upload")
    if not collections:
        streams = [{"name": n.removesuffix(".sigmf-meta")} for n in metas]
        (folder / "upload.sigmf-collection").write_text(
            json.dumps({"collection": {"core:version": "1.2.0", "core:streams": streams}})
        )


def read_upload(upload: UploadRequest, sample_rate_hz: float, n_samples: int) -> SessionBatch:
    """The uploaded session at the model's rate and length (RequestError naming the file when unreadable)."""
    from heimdall.serve.locate import load_session

    with tempfile.TemporaryDirectory(prefix="heimdall-upload-") as tmp:
        folder = Path(tmp)
        write_upload(upload, folder)
        try:
            return load_session(str(folder), sample_rate_hz, n_samples)
        except (HeimdallError, ValueError, KeyError, TypeError, OSError) as exc:  # unreadable files
            text = (
                str(exc)
                if isinstance(exc, HeimdallError)
                else f"unreadable SigMF ({type(exc).__name__}: {exc})"
            )
            msg = text.replace(str(folder) + "/", "").replace(str(folder), "the upload")
            raise RequestError([(("body", "files"), msg)]) from None


def session_request(batch: SessionBatch, network: Network | None) -> tuple[LocalizeRequest, list[str]]:
    """The ``/v1/localize`` request of the first session of ``batch``, and each receiver's station name.

    A receiver whose station id belongs to the model's network is named by it;
    any other by its lat/lon/height (the service matches it to a station or refuses it).
    """
    ids = set(network.ids) if network is not None else set()
    receivers: list[dict[str, Any]] = []
    names: list[str] = []
    for r in range(batch.n_receivers):
        station = str(batch.rx_station[0, r])
        lat, lon, height = (float(a[0, r]) for a in (batch.rx_lat_deg, batch.rx_lon_deg, batch.rx_height_m))
        if station in ids:
            rx: dict[str, Any] = {"station": station}
        elif np.isfinite(lat) and np.isfinite(lon):
            rx = {"lat": lat, "lon": lon}
            if np.isfinite(height) and height > 0:
                rx["height_m"] = height
            fullscale = float(batch.rx_fullscale_dbm[0, r])
            if np.isfinite(fullscale):
                rx["fullscale_dbm"] = fullscale
        else:
            continue  # an unused slot
        if batch.rx_state[0, r] == OFFLINE:
            rx["online"] = False
        else:
            rx["iq"] = encode_iq(batch.iq[0, r])
        receivers.append(rx)
        names.append(station or f"slot {r}")
    try:
        request = LocalizeRequest.model_validate(
            {
                "center_freq_hz": float(batch.center_freq_hz[0]),
                "sample_rate_hz": float(batch.sample_rate_hz[0]),
                "iq_format": "int16",
                "receivers": receivers,
            },
            strict=False,
        )
    except ValidationError as exc:  # readable files whose values no request may have (e.g. 0 Hz)
        raise RequestError(
            [
                (("body", "files"), f"{'.'.join(map(str, e['loc']))} from the SigMF files: {e['msg']}")
                for e in exc.errors(include_url=False)
            ]
        ) from None
    return request, names


def name_receivers(exc: RequestError, names: list[str]) -> RequestError:
    """The same refusal with ``receivers[i]`` also named in the message (for requests the page built)."""
    items = []
    for loc, msg in exc.items:
        k = list(loc).index("receivers") if "receivers" in loc else -1
        if 0 <= k < len(loc) - 1 and isinstance(loc[k + 1], int) and loc[k + 1] < len(names):
            msg = f"receiver {names[loc[k + 1]]}: {msg}"
        items.append((loc, msg))
    return RequestError(items)
