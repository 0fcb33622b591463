"""The session: one transmission heard by R receivers at once (docs/ARCHITECTURE.md §2, §3b).

A :class:`SessionBatch` holds B sessions with a common receiver slot count R
(padded with offline slots) and a common capture length T. Receiver states
are kept apart everywhere: ``OFFLINE`` (no data, masked), ``HEARD``
(online, signal present), ``SILENT`` (online, too weak to hear: a censored
measurement that still carries information).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError

OFFLINE: int = 0
HEARD: int = 1
SILENT: int = 2
STATE_NAMES: dict[int, str] = {OFFLINE: "offline", HEARD: "heard", SILENT: "silent"}

MODES: tuple[str, ...] = ("nbfm", "cw", "fsk", "aprs")


def pad_value(field: str) -> object:
    """Fill value of receiver field ``field`` in a padded (empty, offline) slot."""
    if field == "rx_station":
        return ""
    if field == "rx_state":
        return OFFLINE
    if field == "rx_start_ns":
        return 0
    if field == "rx_clipped":
        return False
    return np.nan


@dataclass
class SessionBatch:
    """B sessions × R receiver slots × T samples.

    Per session (shape (B,)): ``session_id`` (int64, unique in a dataset),
    ``world_seed`` and ``session_seed`` (int64, -1 for real recordings),
    ``network_id`` (str: the receiver network the session was simulated with, a
    packaged name or ``<family>#<network seed>``; empty when unknown: real
    recordings and stores written before the column existed),
    ``center_freq_hz`` (float64, Hz), ``sample_rate_hz`` (float64, samples/s),
    truth (NaN / -1 when unknown): ``tx_lat_deg``, ``tx_lon_deg`` (degrees),
    ``tx_power_dbm`` (dBm), ``tx_height_m`` (m), ``mode`` (int8 index into
    :data:`MODES`, -1 unknown).

    Per receiver slot (shape (B, R)): ``rx_station`` (str), ``rx_lat_deg``,
    ``rx_lon_deg`` (degrees), ``rx_height_m`` (m), ``rx_fullscale_dbm``
    (nominal dBm at digital full scale), ``rx_state`` (int8: OFFLINE / HEARD /
    SILENT), ``rx_start_ns`` (int64 UTC ns since the epoch), ``rx_timing_sigma_s``
    (s), and simulator bookkeeping (NaN when unknown): ``rx_power_dbm`` (true
    mean received power at the antenna over the capture, dBm), ``rx_snr_db``
    (mean SNR over the capture bandwidth, dB), ``rx_delay_s`` (true propagation
    delay, s), ``rx_clipped`` (bool).

    Label and measurements added by the APRS labeller (``heimdall data label``;
    NaN when absent, and in stores written before the columns existed):
    ``label_radius_m`` (B,): the label's 99 % position-uncertainty radius, m
    (format resolution, position ambiguity and GPS error; docs/MAPS.md);
    ``rx_burst_dbfs`` (B, R): the band power measured over the packet burst,
    dBFS (signal only, noise removed); ``rx_burst_noise_dbfs`` (B, R): the
    noise power over the capture bandwidth measured outside the burst, dBFS.
    They are measurements of the recording, not simulator bookkeeping.

    ``iq``: int16, shape (B, R, T, 2), I and Q; as floats divide by 32768
    (full scale = 1.0). Offline slots hold zeros.
    """

    session_id: NDArray[np.int64]
    world_seed: NDArray[np.int64]
    session_seed: NDArray[np.int64]
    center_freq_hz: NDArray[np.float64]
    sample_rate_hz: NDArray[np.float64]
    tx_lat_deg: NDArray[np.float64]
    tx_lon_deg: NDArray[np.float64]
    tx_power_dbm: NDArray[np.float64]
    tx_height_m: NDArray[np.float64]
    mode: NDArray[np.int8]
    rx_station: NDArray[np.str_]
    rx_lat_deg: NDArray[np.float64]
    rx_lon_deg: NDArray[np.float64]
    rx_height_m: NDArray[np.float64]
    rx_fullscale_dbm: NDArray[np.float64]
    rx_state: NDArray[np.int8]
    rx_start_ns: NDArray[np.int64]
    rx_timing_sigma_s: NDArray[np.float64]
    rx_power_dbm: NDArray[np.float64]
    rx_snr_db: NDArray[np.float64]
    rx_delay_s: NDArray[np.float64]
    rx_clipped: NDArray[np.bool_]
    iq: NDArray[np.int16]
    network_id: NDArray[np.str_] | None = None  # optional for callers written before it existed
    label_radius_m: NDArray[np.float64] | None = None  # optional: NaN unless labelled by data label
    rx_burst_dbfs: NDArray[np.float64] | None = None  # optional: NaN unless measured over a burst
    rx_burst_noise_dbfs: NDArray[np.float64] | None = None

    SESSION_FIELDS: ClassVar[tuple[str, ...]] = (
        "session_id", "world_seed", "session_seed", "network_id", "center_freq_hz", "sample_rate_hz",
        "tx_lat_deg", "tx_lon_deg", "tx_power_dbm", "tx_height_m", "mode", "label_radius_m",
    )  # fmt: skip
    RECEIVER_FIELDS: ClassVar[tuple[str, ...]] = (
        "rx_station", "rx_lat_deg", "rx_lon_deg", "rx_height_m", "rx_fullscale_dbm",
        "rx_state", "rx_start_ns", "rx_timing_sigma_s", "rx_power_dbm", "rx_snr_db",
        "rx_delay_s", "rx_clipped", "rx_burst_dbfs", "rx_burst_noise_dbfs",
    )  # fmt: skip
    #: Fields that may be absent (older stores, callers written before them): filled on construction.
    OPTIONAL_FIELDS: ClassVar[tuple[str, ...]] = (
        "network_id", "label_radius_m", "rx_burst_dbfs", "rx_burst_noise_dbfs",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.network_id is None:
            self.network_id = np.full(self.session_id.shape, "", dtype=np.str_)
        elif self.network_id.dtype.kind != "U":
            self.network_id = np.asarray(self.network_id, dtype=np.str_).reshape(self.session_id.shape)
        if self.label_radius_m is None:
            self.label_radius_m = np.full(self.session_id.shape, np.nan)
        for name in ("rx_burst_dbfs", "rx_burst_noise_dbfs"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(self.rx_state.shape, np.nan))
        self.validate()

    @property
    def n_sessions(self) -> int:
        """Number of sessions B."""
        return int(self.session_id.shape[0])

    @property
    def n_receivers(self) -> int:
        """Receiver slots R."""
        return int(self.rx_state.shape[1])

    @property
    def n_samples(self) -> int:
        """Samples per capture T."""
        return int(self.iq.shape[2])

    @property
    def labelled(self) -> NDArray[np.bool_]:
        """Which sessions carry the transmitter's true position, shape (B,)."""
        return np.isfinite(self.tx_lat_deg) & np.isfinite(self.tx_lon_deg)

    @property
    def online(self) -> NDArray[np.bool_]:
        """Online receiver slots (heard or silent), shape (B, R)."""
        return self.rx_state != OFFLINE

    def iq_complex(self) -> NDArray[np.complex64]:
        """IQ as complex64 in full-scale units (int16 / 32768), shape (B, R, T)."""
        f = self.iq.astype(np.float32) / 32768.0
        return (f[..., 0] + 1j * f[..., 1]).astype(np.complex64)

    def validate(self) -> None:
        """Check shapes and dtypes; raise HeimdallError naming the field."""
        b = self.session_id.shape[0]
        for name in self.SESSION_FIELDS:
            arr = getattr(self, name)
            if arr.shape != (b,):
                raise HeimdallError(f"session field {name!r}: shape {arr.shape}, expected ({b},)")
        r = self.rx_state.shape[1] if self.rx_state.ndim == 2 else -1
        for name in self.RECEIVER_FIELDS:
            arr = getattr(self, name)
            if arr.shape != (b, r):
                raise HeimdallError(f"receiver field {name!r}: shape {arr.shape}, expected ({b}, {r})")
        if self.iq.dtype != np.int16 or self.iq.ndim != 4 or self.iq.shape[:2] != (b, r):
            raise HeimdallError(
                f"field 'iq': dtype {self.iq.dtype} shape {self.iq.shape}, expected int16 ({b}, {r}, T, 2)"
            )
        if self.iq.shape[3] != 2:
            raise HeimdallError(f"field 'iq': last axis has {self.iq.shape[3]} entries, expected 2 (I, Q)")

    def select(self, index: NDArray[np.int64] | slice | list[int]) -> SessionBatch:
        """Sessions at ``index`` as a new batch (copies)."""
        return SessionBatch(**{f.name: np.asarray(getattr(self, f.name)[index]).copy() for f in fields(self)})

    @staticmethod
    def concat(batches: list[SessionBatch]) -> SessionBatch:
        """Concatenate batches with the same R and T along the session axis."""
        if not batches:
            raise HeimdallError("cannot concatenate zero session batches")
        return SessionBatch(
            **{f.name: np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(SessionBatch)}
        )

    def with_receiver_slots(self, n_slots: int) -> SessionBatch:
        """Return the batch padded with offline slots up to ``n_slots`` receivers (copy if padded).

        Padded slots have an empty station id, state OFFLINE, NaN positions and
        levels, start time 0, ``rx_clipped`` False and zero IQ.
        """
        r = self.n_receivers
        if n_slots < r:
            raise HeimdallError(f"cannot pad {r} receiver slots down to {n_slots}")
        if n_slots == r:
            return self
        extra = n_slots - r
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in self.RECEIVER_FIELDS:
            arr = out[name]
            out[name] = np.concatenate(
                [arr, np.full((arr.shape[0], extra), pad_value(name), dtype=arr.dtype)], axis=1
            )
        iq = self.iq
        out["iq"] = np.concatenate(
            [iq, np.zeros((iq.shape[0], extra, *iq.shape[2:]), dtype=iq.dtype)], axis=1
        )
        return SessionBatch(**out)

    @staticmethod
    def concat_padded(batches: list[SessionBatch]) -> SessionBatch:
        """Concatenate batches with the same T, padding each to the largest receiver count."""
        if not batches:
            raise HeimdallError("cannot concatenate zero session batches")
        lengths = {b.n_samples for b in batches}
        if len(lengths) > 1:
            raise HeimdallError(
                f"cannot combine sessions with different capture lengths {sorted(lengths)} samples"
            )
        r = max(b.n_receivers for b in batches)
        return SessionBatch.concat([b.with_receiver_slots(r) for b in batches])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """All fields as a name -> array mapping."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def from_arrays(arrays: dict[str, np.ndarray]) -> SessionBatch:
        """Inverse of :meth:`to_arrays`; missing or extra fields raise HeimdallError."""
        names = {f.name for f in fields(SessionBatch)}
        missing = names - set(arrays) - set(SessionBatch.OPTIONAL_FIELDS)
        if missing:
            raise HeimdallError(f"session arrays miss fields {sorted(missing)}")
        return SessionBatch(**{n: np.asarray(arrays[n]) for n in names if n in arrays})
