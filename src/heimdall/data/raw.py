"""Recordings on their way into the store: per-receiver captures -> a :class:`SessionBatch`.

Importers (SigMF, the acquisition layout) describe each session as a
:class:`RawSession` whose receivers load their samples lazily. :func:`assemble`
turns sessions into a batch with the store's conventions (docs/DATA.md
"Importing recordings"):

- float IQ in full-scale units becomes int16 as ``clip(round(x * 32768), -32768, 32767)``;
  NaN or Inf anywhere is an error naming the file;
- receivers of one session sampled at different rates are resampled to the
  session's rate (the lowest, or the one asked for) with a polyphase FIR
  (:func:`scipy.signal.resample_poly`, Kaiser window β = 5);
- every capture is trimmed to the common length T of the import;
- a receiver whose state is not recorded is marked heard or silent from the SNR
  measured on its IQ (:func:`heimdall.posterior.measure.measure_power`: heard when the
  SNR over the capture bandwidth is at least 0 dB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly

from heimdall.data.session import HEARD, MODES, OFFLINE, SILENT, SessionBatch, pad_value
from heimdall.errors import HeimdallError

FULL_SCALE = 32768.0
MIN_RECEIVERS = 3
#: Sample rates (Hz) a capture may have: from audio-rate IQ (a few kHz) to a wideband SDR's (MHz).
#: Outside, resampling to a model's rate would take an absurd filter or factor (a 1e-6 Hz rate
#: asks for terabytes).
MIN_SAMPLE_RATE_HZ = 1_000.0
MAX_SAMPLE_RATE_HZ = 10_000_000.0
STATE_CODES: dict[str, int] = {"offline": OFFLINE, "heard": HEARD, "silent": SILENT}
#: Centre frequencies (Hz) a recording may have: above 0, below 10 GHz.
MAX_CENTER_FREQ_HZ = 1e10


@dataclass
class RawReceiver:
    """One receiver's capture as found in a file.

    ``load`` returns the samples as complex (full-scale units, |x| <= 1 at full scale)
    or as int16 pairs (T, 2); it is None for an offline receiver (no data).
    Unknown numbers are NaN; ``state`` None means "measure it from the IQ".
    """

    source: str
    station: str
    lat_deg: float
    lon_deg: float
    height_m: float = float("nan")
    fullscale_dbm: float = float("nan")
    sample_rate_hz: float = float("nan")
    center_freq_hz: float = float("nan")
    n_samples: int = 0
    start_ns: int = 0
    timing_sigma_s: float = float("nan")
    state: int | None = None
    load: Callable[[], np.ndarray] | None = None
    power_dbm: float = float("nan")
    snr_db: float = float("nan")
    delay_s: float = float("nan")
    clipped: bool = False


@dataclass
class RawSession:
    """One session as found in files: receivers plus session fields (truth NaN when unknown)."""

    source: str
    session_id: int
    center_freq_hz: float
    receivers: list[RawReceiver]
    world_seed: int = -1
    network_id: str = ""
    session_seed: int = -1
    tx_lat_deg: float = float("nan")
    tx_lon_deg: float = float("nan")
    tx_power_dbm: float = float("nan")
    tx_height_m: float = float("nan")
    mode: int = -1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def online(self) -> list[RawReceiver]:
        """Receivers with data."""
        return [r for r in self.receivers if r.load is not None and r.state != OFFLINE]


def mode_index(mode: str | None, source: str) -> int:
    """Index of ``mode`` in :data:`MODES` (-1 for None); unknown names raise HeimdallError."""
    if mode is None:
        return -1
    if mode not in MODES:
        raise HeimdallError(f"{source}: unknown mode {mode!r} (expected one of {list(MODES)})")
    return MODES.index(mode)


def to_int16(x: np.ndarray, source: str) -> tuple[NDArray[np.int16], bool]:
    """Complex full-scale samples (T,) -> int16 pairs (T, 2) and whether any sample clipped.

    ``int16 = clip(round(x * 32768), -32768, 32767)`` per component (round half to even).

    Raises
    ------
    HeimdallError
        NaN or Inf in the samples (names ``source``).

    """
    z = np.asarray(x)
    if not np.iscomplexobj(z):
        raise HeimdallError(f"{source}: IQ must be complex, got dtype {z.dtype}")
    pairs = np.stack([z.real, z.imag], axis=-1).astype(np.float64) * FULL_SCALE
    bad = ~np.isfinite(pairs)
    if bad.any():
        first = int(np.argwhere(bad.any(axis=-1))[0][0])
        raise HeimdallError(f"{source}: IQ contains NaN or Inf (first at sample {first})")
    rounded = np.rint(pairs)
    clipped = bool(((rounded > 32767) | (rounded < -32768)).any())
    return np.clip(rounded, -32768, 32767).astype(np.int16), clipped


def resampled_length(n: int, rate_in: float, rate_out: float) -> int:
    """Length of ``n`` samples resampled from ``rate_in`` to ``rate_out`` (what resample_poly gives)."""
    ratio = _ratio(rate_in, rate_out)
    return -(-n * ratio.numerator // ratio.denominator)


def _ratio(rate_in: float, rate_out: float) -> Fraction:
    return Fraction(rate_out / rate_in).limit_denominator(1000)


def resample(x: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """Resample complex ``x`` from ``rate_in`` to ``rate_out`` Hz (polyphase FIR, ratio within 1/1000)."""
    if rate_in == rate_out:
        return x
    ratio = _ratio(rate_in, rate_out)
    return resample_poly(x, ratio.numerator, ratio.denominator)


def check_sample_rate(rate_hz: float, where: str) -> None:
    """Refuse a sample rate outside :data:`MIN_SAMPLE_RATE_HZ` .. :data:`MAX_SAMPLE_RATE_HZ`.

    NaN, ±Inf, zero and negative rates included; the error names ``where`` (a file, or the
    option that asked for the rate).
    """
    if not MIN_SAMPLE_RATE_HZ <= rate_hz <= MAX_SAMPLE_RATE_HZ:  # False for NaN too
        raise HeimdallError(
            f"{where}: sample rate must be {MIN_SAMPLE_RATE_HZ:g} to {MAX_SAMPLE_RATE_HZ:g} Hz, got {rate_hz}"
        )


def check_frequency(value: float, key: str, where: str) -> None:
    """Refuse a centre frequency that is not finite, above 0 and below :data:`MAX_CENTER_FREQ_HZ`."""
    if not 0.0 < value < MAX_CENTER_FREQ_HZ:  # False for NaN too
        raise HeimdallError(
            f"{where}: field {key!r} must be a frequency above 0 and below {MAX_CENTER_FREQ_HZ:g} Hz, "
            f"got {value:g}"
        )


def check_degrees(value: float, key: str, where: str, limit: float, unknown_ok: bool = False) -> None:
    """Refuse a latitude (``limit`` 90) or longitude (``limit`` 180) outside [-limit, limit] degrees.

    NaN (unknown) passes when ``unknown_ok``; ±Inf never does.
    """
    if unknown_ok and np.isnan(value):
        return
    if not -limit <= value <= limit:  # False for NaN too
        raise HeimdallError(f"{where}: field {key!r} must be -{limit:g} to {limit:g} degrees, got {value:g}")


def session_rate(session: RawSession, rate_hz: float | None) -> float:
    """Sample rate (Hz) a session is brought to: ``rate_hz``, else the lowest of its receivers."""
    rates = [r.sample_rate_hz for r in session.online]
    for r in session.online:
        check_sample_rate(r.sample_rate_hz, r.source)
    if rate_hz is not None:
        check_sample_rate(rate_hz, "--sample-rate")
        return float(rate_hz)
    return float(min(rates))


def session_length(session: RawSession, rate_hz: float | None) -> int:
    """Common capture length (samples) of a session at its target rate: the shortest receiver's."""
    rate = session_rate(session, rate_hz)
    return min(resampled_length(r.n_samples, r.sample_rate_hz, rate) for r in session.online)


def check_session(session: RawSession) -> None:
    """Reject sessions that cannot be used (fewer than 3 receivers, none online)."""
    if len(session.receivers) < MIN_RECEIVERS:
        raise HeimdallError(
            f"{session.source}: session {session.session_id} has {len(session.receivers)} receivers; "
            f"at least {MIN_RECEIVERS} are needed"
        )
    if not session.online:
        raise HeimdallError(f"{session.source}: session {session.session_id} has no receiver with data")


def _receiver_iq(rx: RawReceiver, rate: float, n_samples: int) -> tuple[NDArray[np.int16], bool]:
    assert rx.load is not None
    data = rx.load()
    if data.dtype == np.int16 and rate == rx.sample_rate_hz:
        return data[:n_samples], bool(((data == 32767) | (data == -32768)).any())
    z = data[..., 0] / FULL_SCALE + 1j * (data[..., 1] / FULL_SCALE) if data.dtype == np.int16 else data
    if not np.isfinite(z).all():
        to_int16(z, rx.source)  # raises, naming the file
    z = resample(z, rx.sample_rate_hz, rate)
    return to_int16(z[:n_samples], rx.source)


def assemble(sessions: list[RawSession], n_samples: int, rate_hz: float | None = None) -> SessionBatch:
    """Build a batch of ``sessions`` with captures of ``n_samples`` at their target rates.

    Receivers are padded to the largest count with offline slots; states that the
    files do not record are measured from the IQ.
    """
    r_max = max(len(s.receivers) for s in sessions)
    b = len(sessions)
    arrays: dict[str, np.ndarray] = {
        name: np.full((b, r_max), pad_value(name), dtype=dtype) for name, dtype in _RECEIVER_DTYPES.items()
    }
    arrays["rx_station"] = np.full((b, r_max), "", dtype=object)
    iq = np.zeros((b, r_max, n_samples, 2), dtype=np.int16)
    measure_mask = np.zeros((b, r_max), dtype=bool)
    for i, s in enumerate(sessions):
        rate = session_rate(s, rate_hz)
        for j, rx in enumerate(s.receivers):
            arrays["rx_station"][i, j] = rx.station
            arrays["rx_lat_deg"][i, j], arrays["rx_lon_deg"][i, j] = rx.lat_deg, rx.lon_deg
            arrays["rx_height_m"][i, j], arrays["rx_fullscale_dbm"][i, j] = rx.height_m, rx.fullscale_dbm
            arrays["rx_start_ns"][i, j], arrays["rx_timing_sigma_s"][i, j] = rx.start_ns, rx.timing_sigma_s
            arrays["rx_power_dbm"][i, j], arrays["rx_snr_db"][i, j] = rx.power_dbm, rx.snr_db
            arrays["rx_delay_s"][i, j], arrays["rx_clipped"][i, j] = rx.delay_s, rx.clipped
            if rx.load is None or rx.state == OFFLINE:
                arrays["rx_state"][i, j] = OFFLINE
                continue
            iq[i, j], clipped = _receiver_iq(rx, rate, n_samples)
            arrays["rx_clipped"][i, j] = rx.clipped or clipped
            if rx.state is None:
                measure_mask[i, j] = True
                arrays["rx_state"][i, j] = HEARD  # provisional, measured below
            else:
                arrays["rx_state"][i, j] = rx.state
    sess = {
        "session_id": np.array([s.session_id for s in sessions], dtype=np.int64),
        "world_seed": np.array([s.world_seed for s in sessions], dtype=np.int64),
        "network_id": np.array([s.network_id for s in sessions], dtype=np.str_),
        "session_seed": np.array([s.session_seed for s in sessions], dtype=np.int64),
        "center_freq_hz": np.array([s.center_freq_hz for s in sessions], dtype=np.float64),
        "sample_rate_hz": np.array([session_rate(s, rate_hz) for s in sessions], dtype=np.float64),
        "tx_lat_deg": np.array([s.tx_lat_deg for s in sessions], dtype=np.float64),
        "tx_lon_deg": np.array([s.tx_lon_deg for s in sessions], dtype=np.float64),
        "tx_power_dbm": np.array([s.tx_power_dbm for s in sessions], dtype=np.float64),
        "tx_height_m": np.array([s.tx_height_m for s in sessions], dtype=np.float64),
        "mode": np.array([s.mode for s in sessions], dtype=np.int8),
    }
    arrays["rx_station"] = arrays["rx_station"].astype(str)
    batch = SessionBatch(**sess, **arrays, iq=iq)
    if measure_mask.any():
        _mark_heard_silent(batch, measure_mask)
    return batch


_RECEIVER_DTYPES: dict[str, Any] = {
    "rx_lat_deg": np.float64, "rx_lon_deg": np.float64, "rx_height_m": np.float64,
    "rx_fullscale_dbm": np.float64, "rx_state": np.int8, "rx_start_ns": np.int64,
    "rx_timing_sigma_s": np.float64, "rx_power_dbm": np.float64, "rx_snr_db": np.float64,
    "rx_delay_s": np.float64, "rx_clipped": np.bool_,
}  # fmt: skip


def _mark_heard_silent(batch: SessionBatch, mask: NDArray[np.bool_]) -> None:
    from heimdall.posterior.measure import measure_power

    m = measure_power(batch)
    batch.rx_state[mask] = np.where(m.heard[mask], HEARD, SILENT).astype(np.int8)
    unknown_snr = mask & np.isnan(batch.rx_snr_db)
    batch.rx_snr_db[unknown_snr] = m.snr_db[unknown_snr]


def common_length(sessions: Iterable[RawSession], rate_hz: float | None, n_samples: int | None) -> int:
    """Capture length T of an import: ``n_samples`` if given (sessions must be as long), else the shortest.

    Raises
    ------
    HeimdallError
        A session shorter than ``n_samples``, or an empty import.

    """
    lengths = []
    for s in sessions:
        t = session_length(s, rate_hz)
        if n_samples is not None and t < n_samples:
            raise HeimdallError(f"{s.source}: session {s.session_id} has {t} samples, fewer than {n_samples}")
        lengths.append(t)
    if not lengths:
        raise HeimdallError("no sessions found to import")
    t = n_samples if n_samples is not None else min(lengths)
    if t < 1:
        raise HeimdallError("the shortest capture of the import has no samples")
    return t


def chunks(items: list[RawSession], size: int) -> Iterator[list[RawSession]]:
    """Consecutive groups of ``size`` sessions."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def check_unique_ids(sessions: list[RawSession]) -> None:
    """Raise HeimdallError naming both sources when two sessions share an id."""
    seen: dict[int, str] = {}
    for s in sessions:
        if s.session_id in seen:
            raise HeimdallError(f"duplicate session id {s.session_id}: {seen[s.session_id]} and {s.source}")
        seen[s.session_id] = s.source
