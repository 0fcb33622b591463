"""What a map fit may read of a labelled store: measured power, receiver metadata, the label.

Per labelled session b and network receiver i the fit sees

- y_bi = measured band power (dBm via the receiver's *nominal* full scale)
  + 20 log10(f_b / MHz): the free-space frequency term of the path loss
  (ITU-R P.525) moved into the data, so that one map serves both bands;
- the receiver's state: heard, silent (power below its measured noise floor
  + the detection SNR: censored from above), clipped (power above the
  measured value: censored from below) or offline (no data);
- the label: the transmitter's position and its uncertainty: the session
  column ``label_radius_m`` is a 99 % radius (m; ``heimdall data label``
  writes it); for a circular Gaussian error of σ per axis r99 = σ √(2 ln 100)
  = 3.03 σ, and σ is what the fit uses; NaN (a simulated or surveyed label) is 0;
- where the labeller measured the packet burst (``rx_burst_dbfs``,
  ``rx_burst_noise_dbfs``: APRS, a transmitter keyed for a fraction of the
  capture), that band power and noise floor replace the whole-capture ones.

Nothing else: the simulator's bookkeeping (true transmit power, height,
mode, per-receiver true power / SNR / state / clipping) is never read.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.data.session import SessionBatch
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.network import Network
from heimdall.posterior.likelihood import PowerObservations, power_observations
from heimdall.posterior.measure import DETECTION_SNR_DB, measure_power

#: Receiver states of a labelled observation.
UNUSED, HEARD, SILENT, CLIPPED = 0, 1, 2, 3
#: Bands a map has a field for (index = ``LabelledObservations.band``), and where they split, Hz.
BANDS = ("2m", "70cm")
BAND_SPLIT_HZ = 300e6
#: r99 / σ of a circular Gaussian position error: √(2 ln 100).
R99_PER_SIGMA = float(np.sqrt(2.0 * np.log(100.0)))


@dataclass(frozen=True)
class LabelledObservations:
    """N labelled sessions seen by the R receivers of one network.

    Attributes
    ----------
    session_id
        (N,) session ids.
    pos_km
        (N, 2) label positions (east, north) in the network's local frame, km.
    radius_km
        (N,) label position uncertainty, σ per axis, km (0: exact).
    y_db
        (N, R) measured power + 20 log10(f / MHz), dB (dBm at nominal full scale); NaN unless heard.
    cens_db
        (N, R) censoring level, same reference as ``y_db``: the silent receiver's
        threshold (noise + detection SNR) or the clipped receiver's measured power.
    state
        (N, R) :data:`UNUSED`, :data:`HEARD`, :data:`SILENT` or :data:`CLIPPED`.
    band
        (N,) band index into :data:`BANDS` (0: 2 m, 1: 70 cm) of the carrier.

    """

    session_id: NDArray[np.int64]
    pos_km: NDArray[np.float64]
    radius_km: NDArray[np.float64]
    y_db: NDArray[np.float64]
    cens_db: NDArray[np.float64]
    state: NDArray[np.int8]
    band: NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.session_id)

    def select(self, index: NDArray[np.int64] | NDArray[np.bool_] | slice) -> LabelledObservations:
        """Sessions at ``index``."""
        return LabelledObservations(
            self.session_id[index], self.pos_km[index], self.radius_km[index],
            self.y_db[index], self.cens_db[index], self.state[index], self.band[index],
        )  # fmt: skip

    @staticmethod
    def concat(parts: list[LabelledObservations]) -> LabelledObservations:
        """Concatenate along sessions (same network)."""
        return LabelledObservations(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in LabelledObservations.__dataclass_fields__
            )
        )

    def power_observations(self, sigma_db: float) -> PowerObservations:
        """The likelihood's observations (:func:`heimdall.posterior.likelihood.power_observations`), σ in dB.

        The measured band power (heard, clipped) and noise floor (silent: threshold
        − detection SNR) go through the same constructor as the oracle's.
        """
        heard = (self.state == HEARD) | (self.state == CLIPPED)
        band = np.where(self.state == HEARD, self.y_db, np.where(self.state == CLIPPED, self.cens_db, np.nan))
        noise = np.where(self.state == SILENT, self.cens_db - DETECTION_SNR_DB, np.nan)
        return power_observations(
            band, noise, heard, self.state != UNUSED, self.state == CLIPPED, sigma_db, DETECTION_SNR_DB
        )

    def to_arrays(self) -> dict[str, NDArray]:
        """Arrays for an ``.npz`` (prefix ``obs_``)."""
        return {f"obs_{f}": getattr(self, f) for f in LabelledObservations.__dataclass_fields__}

    @staticmethod
    def from_arrays(arrays: Any) -> LabelledObservations:
        """Inverse of :meth:`to_arrays` (maps written before ``band`` existed: all 2 m)."""
        out = {
            f: arrays[f"obs_{f}"] for f in LabelledObservations.__dataclass_fields__ if f"obs_{f}" in arrays
        }
        out.setdefault("band", np.zeros(len(out["session_id"]), np.int8))
        return LabelledObservations(**{k: np.asarray(v) for k, v in out.items()})


def band_index(freq_hz: NDArray[np.float64]) -> NDArray[np.int8]:
    """Index into :data:`BANDS` of carrier frequencies (Hz): 0 below :data:`BAND_SPLIT_HZ`, else 1."""
    return (np.asarray(freq_hz) >= BAND_SPLIT_HZ).astype(np.int8)


def slot_observations(
    batch: SessionBatch, detection_snr_db: float = DETECTION_SNR_DB
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int8]]:
    """Per receiver slot (B, S): y (dB, NaN unless heard), censoring level (dB) and state.

    y = measured band power (dBm at the nominal full scale) + 20 log10(f / MHz);
    band power, noise floor, heard and clipped come from
    :func:`heimdall.posterior.measure.measure_power`, or from the labeller's burst
    measurement (``rx_burst_dbfs``, ``rx_burst_noise_dbfs``) where it exists. A receiver is
    heard from a measured SNR of ``detection_snr_db`` (dB over the capture bandwidth); a
    silent one is censored at its noise floor + ``detection_snr_db``.
    """
    meas = measure_power(batch, detection_snr_db=detection_snr_db)
    burst = meas.online & np.isfinite(batch.rx_burst_dbfs) & np.isfinite(batch.rx_burst_noise_dbfs)
    band_dbm = np.where(burst, batch.rx_burst_dbfs + batch.rx_fullscale_dbm, meas.band_dbm)
    noise_dbm = np.where(burst, batch.rx_burst_noise_dbfs + batch.rx_fullscale_dbm, meas.noise_dbm)
    heard = np.where(burst, band_dbm - noise_dbm >= detection_snr_db, meas.heard) & meas.online
    shift = 20.0 * np.log10(batch.center_freq_hz / 1e6)[:, None]
    clipped = heard & meas.clipped
    state = np.where(
        heard & ~clipped, HEARD, np.where(clipped, CLIPPED, np.where(meas.online, SILENT, UNUSED))
    ).astype(np.int8)
    y = np.where(state == HEARD, band_dbm + shift, np.nan)
    threshold = noise_dbm + detection_snr_db + shift
    cens = np.where(state == CLIPPED, band_dbm + shift, np.where(state == SILENT, threshold, np.nan))
    return y, cens, state


def observations_from_batch(
    batch: SessionBatch,
    network: Network,
    labelled_only: bool = True,
    detection_snr_db: float = DETECTION_SNR_DB,
) -> LabelledObservations:
    """Measure a batch's IQ and map its receiver slots onto ``network`` (by station id).

    Band power, noise floor, heard and clipped come from
    :func:`heimdall.posterior.measure.measure_power`, or from the labeller's burst
    measurement where it exists. Unlabelled sessions are dropped (``labelled_only``)
    or kept with NaN positions; slots whose station is not in the network are ignored.
    ``detection_snr_db``: see :func:`slot_observations`.
    """
    keep = np.flatnonzero(batch.labelled) if labelled_only else np.arange(batch.n_sessions)
    batch = batch.select(keep)
    radius_km = np.nan_to_num(batch.label_radius_m) / R99_PER_SIGMA / 1000.0
    slot_y, slot_cens, slot_state = slot_observations(batch, detection_snr_db)
    n, r = batch.n_sessions, len(network.receivers)
    y = np.full((n, r), np.nan)
    cens = np.full((n, r), np.nan)
    state = np.full((n, r), UNUSED, dtype=np.int8)
    ids = {rid: k for k, rid in enumerate(network.ids)}
    for slot in range(batch.n_receivers):
        col = np.array([ids.get(str(s), -1) for s in batch.rx_station[:, slot]])
        b = np.flatnonzero((col >= 0) & (slot_state[:, slot] != UNUSED))
        y[b, col[b]] = slot_y[b, slot]
        cens[b, col[b]] = slot_cens[b, slot]
        state[b, col[b]] = slot_state[b, slot]
    east, north = network.frame.to_local_km(batch.tx_lat_deg, batch.tx_lon_deg)
    return LabelledObservations(
        session_id=batch.session_id.astype(np.int64),
        pos_km=np.stack([east, north], axis=-1).astype(np.float64),
        radius_km=radius_km,
        y_db=y,
        cens_db=cens,
        state=state,
        band=band_index(batch.center_freq_hz),
    )


@dataclass
class NetworkCoverage:
    """How the receivers of a store's labelled sessions match a network's stations (by station id).

    Attributes
    ----------
    n_sessions
        Labelled sessions read.
    n_sessions_off_network
        Those none of whose receivers is a station of the network: a fit cannot use them.
    stations_off_network
        Station ids of the labelled sessions' receivers that are not in the network.
    stations
        Every station id of the labelled sessions' receivers.

    """

    n_sessions: int = 0
    n_sessions_off_network: int = 0
    stations_off_network: set[str] = field(default_factory=set)
    stations: set[str] = field(default_factory=set)

    def add(self, batch: SessionBatch, network: Network) -> None:
        """Count the labelled sessions of ``batch`` (empty station ids are padding slots)."""
        batch = batch.select(np.flatnonzero(batch.labelled))
        station = batch.rx_station.astype(str)
        present = station != ""
        in_net = np.isin(station, np.asarray(network.ids, dtype=str)) & present
        self.n_sessions += batch.n_sessions
        self.n_sessions_off_network += int(np.sum(~in_net.any(axis=1)))
        self.stations.update(station[present].tolist())
        self.stations_off_network.update(station[present & ~in_net].tolist())

    def metrics(self) -> dict[str, int]:
        """Counts for a fit's metrics: sessions and station ids of the store outside the network."""
        return {
            "n_sessions_off_network": self.n_sessions_off_network,
            "n_stations_off_network": len(self.stations_off_network),
        }

    def check(self, uri: str, network: Network) -> None:
        """Refuse a store none of whose labelled sessions has a receiver of ``network``.

        Raises
        ------
        HeimdallError
            Naming the network, some of the store's station ids and the network's.

        """
        if self.n_sessions and self.n_sessions_off_network == self.n_sessions:
            raise HeimdallError(
                f"{uri}: none of the {self.n_sessions} labelled sessions has a receiver of network "
                f"{network.name!r} (store stations: {_some(self.stations)}; network stations: "
                f"{_some(network.ids)}): use the network the store was recorded with"
            )


def _some(ids: Any, n: int = 5) -> str:
    """Up to ``n`` sorted ids, then how many more."""
    ids = sorted(ids)
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(ids[:n]) + more


def store_network(store: SessionStore, network: Network | None) -> Network:
    """The network of a store: the one given, else the store's metadata ``network``."""
    if network is not None:
        return network
    meta = store.metadata.get("network")
    if not meta:
        raise HeimdallError(f"{store.uri}: the store's metadata has no 'network'; give --network")
    return Network.model_validate(meta)


#: Most shards :func:`observations_from_store` measures at once (each holds a shard's IQ).
MAX_MEASURE_WORKERS = 4


def observations_from_store(
    uri: str,
    network: Network | None = None,
    storage_options: dict[str, Any] | None = None,
    limit: int | None = None,
    max_label_radius_m: float | None = None,
    workers: int | None = None,
    detection_snr_db: float = DETECTION_SNR_DB,
) -> tuple[LabelledObservations, Network]:
    """Every labelled session of a store (shard by shard), with the network used.

    Parameters
    ----------
    uri
        Session store (folder or ``s3://``).
    network
        Receiver network; default the store's metadata ``network``.
    storage_options
        Object-store settings.
    limit
        Read only the first ``limit`` sessions.
    max_label_radius_m
        Leave out labels whose 99 % radius (``label_radius_m``) is larger, m.
    workers
        Shards measured at once, in threads (the measurement is numpy work outside the
        GIL; the next shard is read meanwhile); default the CPU count, at most
        :data:`MAX_MEASURE_WORKERS`. The result does not depend on it.
    detection_snr_db
        Measured SNR (dB over the capture bandwidth) from which a receiver is heard.

    """
    obs, net, _ = observations_with_coverage(
        uri, network, storage_options, limit, max_label_radius_m, workers, detection_snr_db
    )
    return obs, net


def observations_with_coverage(
    uri: str,
    network: Network | None = None,
    storage_options: dict[str, Any] | None = None,
    limit: int | None = None,
    max_label_radius_m: float | None = None,
    workers: int | None = None,
    detection_snr_db: float = DETECTION_SNR_DB,
) -> tuple[LabelledObservations, Network, NetworkCoverage]:
    """:func:`observations_from_store`, and how the store's receivers matched the network.

    Parameters are those of :func:`observations_from_store`.

    Raises
    ------
    HeimdallError
        No labelled session, or none with a receiver of the network (:meth:`NetworkCoverage.check`).

    """
    store = SessionStore.open(uri, storage_options=storage_options)
    net = store_network(store, network)
    total = len(store) if limit is None else min(limit, len(store))
    n_workers = max(1, workers or min(MAX_MEASURE_WORKERS, os.cpu_count() or 1))
    coverage = NetworkCoverage()
    sessions = _counted(_first_sessions(store, total, max_label_radius_m), coverage, net)
    parts = list(_measured(sessions, net, n_workers, detection_snr_db))
    obs = LabelledObservations.concat(parts) if parts else None
    if obs is None or len(obs) == 0:
        raise HeimdallError(f"{uri}: no labelled sessions (tx_lat_deg / tx_lon_deg) to fit a map from")
    coverage.check(uri, net)
    return obs, net, coverage


def _counted(
    batches: Iterator[SessionBatch], coverage: NetworkCoverage, net: Network
) -> Iterator[SessionBatch]:
    """``batches`` unchanged, each counted into ``coverage`` as it passes."""
    for batch in batches:
        coverage.add(batch, net)
        yield batch


def _first_sessions(
    store: SessionStore, total: int, max_label_radius_m: float | None
) -> Iterator[SessionBatch]:
    """The store's first ``total`` sessions, shard by shard (the next shard read ahead)."""
    done = 0
    for shard in store.iter_shards(prefetch=True):
        if done >= total:
            return
        batch = shard.select(slice(0, total - done)) if shard.n_sessions > total - done else shard
        done += batch.n_sessions
        if max_label_radius_m is not None:
            batch = batch.select(np.flatnonzero(~(batch.label_radius_m > max_label_radius_m)))
        yield batch


def _measured(
    batches: Iterator[SessionBatch], net: Network, workers: int, detection_snr_db: float
) -> Iterator[LabelledObservations]:
    """:func:`observations_from_batch` of each batch, in order, ``workers`` at a time in threads."""
    if workers == 1:
        yield from (observations_from_batch(b, net, True, detection_snr_db) for b in batches)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[LabelledObservations]] = deque()
        for batch in batches:
            pending.append(pool.submit(observations_from_batch, batch, net, True, detection_snr_db))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
