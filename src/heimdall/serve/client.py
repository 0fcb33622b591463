"""Build service requests from sessions (for clients, tests and the benchmark)."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np

from heimdall.data.session import OFFLINE, SessionBatch


def encode_iq(iq_pairs: np.ndarray, iq_format: Literal["int16", "float32"] = "int16") -> str:
    """Base64 of interleaved little-endian I/Q pairs, shape (T, 2); int16 raw or float32 full-scale 1.0."""
    if iq_format == "int16":
        return base64.b64encode(np.ascontiguousarray(iq_pairs, dtype="<i2").tobytes()).decode("ascii")
    return base64.b64encode(np.ascontiguousarray(iq_pairs, dtype="<f4").tobytes()).decode("ascii")


def session_request(
    batch: SessionBatch,
    index: int = 0,
    iq_format: Literal["int16", "float32"] = "int16",
    by_station: bool = True,
) -> dict[str, Any]:
    """The ``/v1/localize`` JSON body for session ``index`` of ``batch``.

    Receivers are named by station id (``by_station``) or given by lat/lon/height (with their
    nominal full-scale power ``fullscale_dbm`` when the session has it); offline slots are
    sent with ``"online": false``.
    """
    receivers = []
    for r in range(batch.n_receivers):
        rx: dict[str, Any] = (
            {"station": str(batch.rx_station[index, r])}
            if by_station
            else {
                "lat": float(batch.rx_lat_deg[index, r]),
                "lon": float(batch.rx_lon_deg[index, r]),
                "height_m": float(batch.rx_height_m[index, r]),
            }
        )
        fullscale = float(batch.rx_fullscale_dbm[index, r])
        if not by_station and np.isfinite(fullscale):
            rx["fullscale_dbm"] = fullscale
        if batch.rx_state[index, r] == OFFLINE:
            rx["online"] = False
        else:
            pairs = batch.iq[index, r]
            rx["iq"] = encode_iq(
                pairs if iq_format == "int16" else pairs.astype(np.float32) / 32768.0, iq_format
            )
        receivers.append(rx)
    return {
        "center_freq_hz": float(batch.center_freq_hz[index]),
        "sample_rate_hz": float(batch.sample_rate_hz[index]),
        "iq_format": iq_format,
        "receivers": receivers,
    }
