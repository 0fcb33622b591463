"""Summary of a session store: sizes, receiver states, measured SNR, labels, hash (``heimdall data info``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from heimdall.data.session import HEARD, OFFLINE, SILENT
from heimdall.data.store import SessionStore

#: Percentiles of the measured SNR reported, %.
SNR_PERCENTILES: tuple[int, ...] = (5, 25, 50, 75, 95)


def store_info(
    uri: str, storage_options: dict[str, Any] | None = None, max_sessions: int = 2000
) -> dict[str, Any]:
    """Describe the store at ``uri``.

    Receiver states and labels come from the tables (all sessions); the SNR
    distribution is measured from the IQ (:func:`heimdall.posterior.measure.measure_power`,
    SNR over the capture bandwidth in dB) of heard and silent receivers of the
    first ``max_sessions`` sessions.
    """
    from heimdall.posterior.measure import measure_power

    with SessionStore.open(uri, storage_options) as store:
        sessions = store.sessions_table()
        receivers = store.receivers_table()
        state = receivers.column("rx_state").to_numpy()
        station = np.array(receivers.column("rx_station").to_pylist(), dtype=object)
        real = (state != OFFLINE) | (station != "")  # not a padding slot
        n = len(store)
        sid = receivers.column("session_id").to_numpy()
        online_per_session = np.bincount(np.searchsorted(np.unique(sid), sid[state != OFFLINE]), minlength=n)
        lat = sessions.column("tx_lat_deg").to_numpy() if n else np.array([])
        lon = sessions.column("tx_lon_deg").to_numpy() if n else np.array([])
        snrs: list[np.ndarray] = []
        measured = 0
        for batch in store.iter_shards():
            if measured >= max_sessions:
                break
            part = batch.select(slice(0, max_sessions - measured))
            m = measure_power(part)
            snrs.append(m.snr_db[m.online])
            measured += part.n_sessions
        snr = np.concatenate(snrs) if snrs else np.array([])
        rates = np.unique(sessions.column("sample_rate_hz").to_numpy()) if n else np.array([])
        meta = store.metadata
        return {
            "uri": uri,
            "sessions": n,
            "shards": len(store.committed_shards()),
            "receiver_slots": int(real.sum()),
            "receivers_per_session": {
                "max_slots": int(max((int(c["n_receivers"]) for c in store.shard_records()), default=0)),
                "online_mean": float(online_per_session.mean()) if n else 0.0,
                "online_min": int(online_per_session.min()) if n else 0,
            },
            "states": {
                "offline": int(((state == OFFLINE) & real).sum()),
                "heard": int((state == HEARD).sum()),
                "silent": int((state == SILENT).sum()),
            },
            "snr_db_measured": {
                "receivers": int(snr.size),
                "sessions": measured,
                **{f"p{p}": float(np.percentile(snr, p)) for p in SNR_PERCENTILES if snr.size},
            },
            "labelled_fraction": float((np.isfinite(lat) & np.isfinite(lon)).mean()) if n else 0.0,
            "sample_rates_hz": [float(r) for r in rates],
            "n_samples": sorted({int(c["n_samples"]) for c in store.shard_records()}),
            "content_hash": store.content_hash(),
            "network": (meta.get("network") or {}).get("name"),
            "world_seed": meta.get("world_seed"),
            "session_seed": meta.get("session_seed"),
            "provenance": store.provenance,
        }
