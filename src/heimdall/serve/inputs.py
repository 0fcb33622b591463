"""Turn a service request into the exported graph's inputs, refusing what it cannot answer.

Steps per session (docs/ARCHITECTURE.md §6): decode each receiver's base64 IQ
(little-endian int16 pairs, full scale 32768, or float32 pairs, full scale 1.0),
check the captures are finite and equally long in time, resample them to the
model's sample rate with a polyphase filter (:func:`scipy.signal.resample_poly`),
refuse captures shorter than the model's length and **keep the first
``n_samples`` of longer ones** (trimmed), place receivers in the model's local
frame, refuse receivers far outside the trained area and receivers the model
has no field for (a position that is none of its network's stations, see
:mod:`heimdall.serve.stations`; listed as unmapped instead for a predictor
that accepts them), and decide which online receivers heard the transmitter
with :func:`heimdall.posterior.measure.measure_power` (measured SNR over the
capture bandwidth ≥ 0 dB). Fewer than
:data:`MIN_RECEIVERS` online or heard receivers is refused.

Every refusal is a :class:`RequestError` whose items name the JSON field
(``loc``) like FastAPI's own validation errors, so the service answers 422.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly

from heimdall.data.raw import MIN_RECEIVERS  # fewest online, and fewest heard, for an answer
from heimdall.data.session import HEARD, OFFLINE, SILENT, SessionBatch
from heimdall.posterior.measure import DETECTION_SNR_DB, measure_power
from heimdall.serve.area import area_of
from heimdall.serve.schemas import DEFAULT_FULLSCALE_DBM, LocalizeRequest, ReceiverIn
from heimdall.serve.stations import (
    STATION_TOLERANCE_KM,
    accepts_unmapped,
    nearest_station,
    trained_on_network_family,
)

if TYPE_CHECKING:
    from heimdall.export.predictor import OnnxPredictor
    from heimdall.models.grid_predictor import GridPosteriorPredictor

    ServedModel = OnnxPredictor | GridPosteriorPredictor

#: Antenna height (m) of a receiver given by lat/lon without ``height_m``.
DEFAULT_HEIGHT_M = 30.0
#: Largest denominator of the resampling ratio (model rate / capture rate).
_MAX_RATIO_DENOMINATOR = 1000
#: Largest |I| or |Q| of float32 IQ (full scale 1.0): 120 dB above full scale, more than any
#: receiver's dynamic range; beyond it the samples are not in full-scale units (and their power
#: overflows float32 at ~1e19).
MAX_FLOAT_IQ = 1e6
_PAIR_BYTES = {"int16": 4, "float32": 8}
_DTYPES = {"int16": np.dtype("<i2"), "float32": np.dtype("<f4")}

Loc = tuple[str | int, ...]


class RequestError(Exception):
    """A request the model cannot answer; ``items`` are (loc, message) pairs."""

    def __init__(self, items: list[tuple[Loc, str]]):
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in items))
        self.items = items


@dataclass
class PreparedSession:
    """Graph inputs for one session (R receivers) and the receivers' bookkeeping.

    ``rx_pos`` is in the served model's frame; ``lat_deg``, ``lon_deg`` (degrees),
    ``stations`` (the network station each receiver is, else its own id) and
    ``fullscale_dbm`` (nominal dBm at digital full scale) are what a grid-posterior
    model reads besides the IQ (:mod:`heimdall.serve.posterior`).
    """

    iq: NDArray[np.float32]  # (R, T, 2) full-scale units
    rx_pos: NDArray[np.float32]  # (R, 3) east km, north km, height m
    rx_mask: NDArray[np.bool_]  # (R,) online
    center_freq_hz: float
    ids: list[str]
    state: NDArray[np.int8]  # (R,) OFFLINE / HEARD / SILENT
    unmapped_ids: list[str] = field(default_factory=list)  # receivers the model has no field for
    lat_deg: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))  # (R,)
    lon_deg: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))  # (R,)
    stations: list[str] = field(default_factory=list)
    fullscale_dbm: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))  # (R,) dBm
    posterior_png: bool = False  # the request asked for the posterior's PNG raster

    @property
    def heard_ids(self) -> list[str]:
        """Ids of the receivers that heard the transmitter."""
        return [i for i, s in zip(self.ids, self.state, strict=True) if s == HEARD]

    @property
    def silent_ids(self) -> list[str]:
        """Ids of online receivers that did not hear it (censored)."""
        return [i for i, s in zip(self.ids, self.state, strict=True) if s == SILENT]


def decode_iq(text: str, iq_format: str, loc: Loc) -> NDArray[np.complex64]:
    """Decode base64 interleaved I/Q pairs into complex64 full-scale samples."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError([(loc, "not valid base64 (RFC 4648 alphabet, padded)")]) from None
    pair = _PAIR_BYTES[iq_format]
    if len(raw) == 0 or len(raw) % pair:
        raise RequestError(
            [
                (
                    loc,
                    f"decodes to {len(raw)} bytes: not a whole number of {iq_format} I/Q pairs "
                    f"({pair} bytes each)",
                )
            ]
        )
    pairs = np.frombuffer(raw, dtype=_DTYPES[iq_format]).reshape(-1, 2).astype(np.float32, order="C")
    if iq_format == "float32":
        bad = np.flatnonzero(~np.isfinite(pairs).all(axis=1))
        if bad.size:
            raise RequestError([(loc, f"contains NaN or Inf (first at sample {int(bad[0])})")])
        big = np.flatnonzero((np.abs(pairs) > MAX_FLOAT_IQ).any(axis=1))
        if big.size:
            raise RequestError(
                [
                    (
                        loc,
                        f"float32 IQ beyond ±{MAX_FLOAT_IQ:g} (first at sample {int(big[0])}): full scale "
                        "is 1.0, and this is 120 dB above it",
                    )
                ]
            )
    else:
        pairs /= np.float32(32768.0)
    return pairs.view(np.complex64).reshape(-1)  # (I, Q) float32 pairs are complex64 samples: no copy


def iq_pairs(samples: NDArray[np.complex64]) -> NDArray[np.float32]:
    """Complex64 samples (..., T) as float32 (I, Q) pairs (..., T, 2): a view of the same memory."""
    x = np.ascontiguousarray(samples, dtype=np.complex64)
    return x.view(np.float32).reshape(*x.shape, 2)


def resample_to(
    x: NDArray[np.complex64], rate_hz: float, model_rate_hz: float, n_out: int, loc: Loc
) -> NDArray:
    """Resample a capture to the model's rate and keep its first ``n_out`` samples.

    Raises RequestError when the capture is shorter than ``n_out`` samples at the
    model's rate, or the rate ratio is not a fraction with denominator ≤ 1000.
    """
    ratio = Fraction(model_rate_hz / rate_hz).limit_denominator(_MAX_RATIO_DENOMINATOR)
    if ratio == 0 or abs(float(ratio) * rate_hz - model_rate_hz) > 1e-6 * model_rate_hz:
        raise RequestError([(loc, f"cannot resample {rate_hz:g} Hz to the model's {model_rate_hz:g} Hz")])
    up, down = ratio.numerator, ratio.denominator
    available = (len(x) * up) // down
    if available < n_out:
        raise RequestError(
            [
                (
                    loc,
                    f"capture is {len(x) / rate_hz:.4f} s ({len(x)} samples at {rate_hz:g} Hz); the model "
                    f"needs at least {n_out / model_rate_hz:.4f} s ({n_out} samples at {model_rate_hz:g} Hz)",
                )
            ]
        )
    if up == down:
        return x[:n_out]
    need = -(-n_out * down // up) + 32 * down  # input samples covering n_out plus the filter's tail
    y = resample_poly(x[:need], up, down)
    return y[:n_out].astype(np.complex64)


def _position(rx: ReceiverIn, loc: Loc, predictor: ServedModel) -> tuple[str, float, float, float]:
    """(id, lat, lon, height_m) of a receiver, from the model's network or the request."""
    if rx.station is not None:
        net = predictor.network
        if net is None:
            raise RequestError([((*loc, "station"), "this model has no network: give 'lat' and 'lon'")])
        if rx.station not in net.ids:
            raise RequestError(
                [
                    (
                        (*loc, "station"),
                        f"unknown station {rx.station!r} in network {net.name!r} "
                        f"(known: {', '.join(net.ids)})",
                    )
                ]
            )
        station = net.receivers[net.index_of(rx.station)]
        height = rx.height_m if rx.height_m is not None else station.height_m
        return rx.station, station.lat, station.lon, height
    assert rx.lat is not None and rx.lon is not None  # the schema guarantees it
    height = rx.height_m if rx.height_m is not None else DEFAULT_HEIGHT_M
    return f"{rx.lat:.5f},{rx.lon:.5f}", rx.lat, rx.lon, height


def _refuse_duplicates(ids: list[str], loc: Loc) -> None:
    """RequestError naming the receivers given more than once."""
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise RequestError([((*loc, "receivers"), f"receivers given more than once: {', '.join(dupes)}")])


def _match_stations(
    req: LocalizeRequest,
    ids: list[str],
    lat: list[float],
    lon: list[float],
    loc: Loc,
    predictor: ServedModel,
) -> tuple[list[str], list[str]]:
    """Each receiver's station id (its own id when it is none), and the ids of unmapped receivers.

    A receiver given by position is the network station within :data:`STATION_TOLERANCE_KM`
    of it. Any other is unmapped: refused (RequestError naming it and the nearest station)
    unless the predictor accepts unmapped receivers. Without a network, or for a model trained
    on a network family that has no radio map (it takes any receivers), nothing is matched; a
    model with a map answers for its map network's stations only, whatever it was trained on.
    """
    net = predictor.network
    if net is None or (trained_on_network_family(predictor) and not getattr(predictor, "has_map", False)):
        return list(ids), []
    stations, unmapped, errors = [], [], []
    for i, rx in enumerate(req.receivers):
        if rx.station is not None:
            stations.append(rx.station)
            continue
        near = nearest_station(net, lat[i], lon[i])
        if near.matches:
            stations.append(near.station_id)
            continue
        stations.append(ids[i])
        unmapped.append(ids[i])
        errors.append(
            (
                (*loc, "receivers", i),
                f"receiver {ids[i]!r} at ({lat[i]:.5f}, {lon[i]:.5f}) is not a station of network "
                f"{net.name!r} (the nearest, {near.station_id!r}, is {near.distance_km:.1f} km away; "
                f"a position within {STATION_TOLERANCE_KM:g} km of a station is that station): "
                "this model has no field for it",
            )
        )
    if errors and not accepts_unmapped(predictor):
        raise RequestError(errors)
    return stations, unmapped


def _captures(req: LocalizeRequest, loc: Loc) -> dict[int, tuple[NDArray[np.complex64], float]]:
    """Decoded captures of online receivers (slot -> (samples, rate)), equal durations checked."""
    captures: dict[int, tuple[NDArray[np.complex64], float]] = {}
    errors: list[tuple[Loc, str]] = []
    for i, rx in enumerate(req.receivers):
        if not rx.online:
            if rx.iq is not None:
                errors.append(((*loc, "receivers", i, "iq"), "an offline receiver must not carry 'iq'"))
            continue
        assert rx.iq is not None
        try:
            captures[i] = (
                decode_iq(rx.iq, req.iq_format, (*loc, "receivers", i, "iq")),
                rx.sample_rate_hz or req.sample_rate_hz,
            )
        except RequestError as exc:
            errors.extend(exc.items)
    if errors:
        raise RequestError(errors)
    durations = {i: len(x) / rate for i, (x, rate) in captures.items()}
    if durations:
        slack = max(1.0 / rate for _, rate in captures.values())
        if max(durations.values()) - min(durations.values()) > slack * 1.001:
            lengths = ", ".join(
                f"receivers[{i}]: {len(x)} samples at {rate:g} Hz" for i, (x, rate) in captures.items()
            )
            raise RequestError(
                [((*loc, "receivers"), f"simultaneous captures must have the same length ({lengths})")]
            )
    return captures


def _heard(
    samples: NDArray[np.complex64], online: NDArray[np.bool_], rate_hz: float, detection_snr_db: float
) -> NDArray[np.bool_]:
    """Heard flags from :func:`measure_power` (SNR is scale-free: each row is peak-normalised to int16).

    Heard from a measured SNR of ``detection_snr_db`` (dB; the model's). An all-zero capture
    (digital silence) counts as silent.
    """
    r = samples.shape[0]
    peak = np.max(np.abs(samples), axis=1, keepdims=True)
    scale = np.where(peak > 0, 0.5 / np.maximum(peak, 1e-30), 0.0)  # (R, 1) float32
    # a real factor scales I and Q alike: the float32 pairs times it are the scaled complex samples
    pairs = iq_pairs(samples) * scale[:, :, None]
    pairs *= np.float32(32768.0)
    iq = np.round(pairs, out=pairs).astype(np.int16)[None]
    nan_r = np.full((1, r), np.nan)
    batch = SessionBatch(
        session_id=np.zeros(1, np.int64),
        world_seed=np.full(1, -1, np.int64),
        session_seed=np.full(1, -1, np.int64),
        center_freq_hz=np.zeros(1),
        sample_rate_hz=np.full(1, rate_hz),
        tx_lat_deg=np.full(1, np.nan),
        tx_lon_deg=np.full(1, np.nan),
        tx_power_dbm=np.full(1, np.nan),
        tx_height_m=np.full(1, np.nan),
        mode=np.full(1, -1, np.int8),
        rx_station=np.full((1, r), "", dtype="<U1"),
        rx_lat_deg=nan_r,
        rx_lon_deg=nan_r,
        rx_height_m=nan_r,
        rx_fullscale_dbm=np.zeros((1, r)),
        rx_state=np.where(online, HEARD, OFFLINE).astype(np.int8)[None],
        rx_start_ns=np.zeros((1, r), np.int64),
        rx_timing_sigma_s=nan_r,
        rx_power_dbm=nan_r,
        rx_snr_db=nan_r,
        rx_delay_s=nan_r,
        rx_clipped=np.zeros((1, r), bool),
        iq=iq,
    )
    heard = measure_power(batch, detection_snr_db=detection_snr_db).heard[0]
    return heard & (peak[:, 0] > 0)  # digital silence is never "heard"


def _names(ids: list[str], which: NDArray[np.bool_]) -> str:
    """Comma-separated ids where ``which`` is True ('none' when empty)."""
    return ", ".join(ids[i] for i in np.flatnonzero(which)) or "none"


def _fullscale(req: LocalizeRequest, stations: list[str], predictor: ServedModel) -> NDArray[np.float64]:
    """Each receiver's nominal full-scale power (dBm): the request's, the station's, else the default."""
    net = predictor.network
    known = {rx.id: rx.fullscale_dbm for rx in net.receivers} if net is not None else {}
    return np.array(
        [
            rx.fullscale_dbm if rx.fullscale_dbm is not None else known.get(sid, DEFAULT_FULLSCALE_DBM)
            for rx, sid in zip(req.receivers, stations, strict=True)
        ]
    )


def _refuse_too_many(n_receivers: int, predictor: ServedModel, loc: Loc) -> None:
    """RequestError when a model without a map gets more receivers (online or not) than it has slots."""
    slots = getattr(predictor, "n_slots", None)
    if slots is not None and not getattr(predictor, "has_map", True) and n_receivers > slots:
        raise RequestError(
            [((*loc, "receivers"), f"{n_receivers} receivers; this model takes at most {slots}")]
        )


def prepare_session(req: LocalizeRequest, predictor: ServedModel, loc: Loc = ("body",)) -> PreparedSession:
    """Validate one session request and build the graph's inputs (raises RequestError)."""
    n_t, model_rate = predictor.n_samples, predictor.sample_rate_hz
    ids, lat, lon, height, errors = [], [], [], [], []
    for i, rx in enumerate(req.receivers):
        try:
            rid, la, lo, h = _position(rx, (*loc, "receivers", i), predictor)
        except RequestError as exc:
            errors.extend(exc.items)
            continue
        ids.append(rid), lat.append(la), lon.append(lo), height.append(h)
    if errors:
        raise RequestError(errors)
    _refuse_duplicates(ids, loc)
    east, north = predictor.frame.to_local_km(np.array(lat), np.array(lon))
    area = area_of(predictor)
    if area is not None:
        outside = area.outside_km(east, north)
        far = [
            (
                (*loc, "receivers", i),
                f"receiver {ids[i]!r} at ({lat[i]:.4f}, {lon[i]:.4f}) is {d:.0f} km outside "
                f"the area this model was trained for (tolerance {area.tolerance_km:.0f} km)",
            )
            for i, d in enumerate(outside)
            if d > area.tolerance_km
        ]
        if far:
            raise RequestError(far)
    stations, unmapped = _match_stations(req, ids, lat, lon, loc, predictor)
    _refuse_duplicates(stations, loc)

    captures = _captures(req, loc)
    online = np.array([rx.online for rx in req.receivers])
    if online.sum() < MIN_RECEIVERS:
        names = _names(ids, online)
        offline = f" (offline: {_names(ids, ~online)})" if (~online).any() else ""
        msg = f"{int(online.sum())} online receivers ({names}); at least {MIN_RECEIVERS} needed{offline}"
        raise RequestError([((*loc, "receivers"), msg)])
    _refuse_too_many(len(ids), predictor, loc)
    samples = np.zeros((len(ids), n_t), dtype=np.complex64)
    errors = []
    for i, (x, rate) in captures.items():
        try:
            samples[i] = resample_to(x, rate, model_rate, n_t, (*loc, "receivers", i, "iq"))
        except RequestError as exc:
            errors.extend(exc.items)
    if errors:
        raise RequestError(errors)

    heard = _heard(samples, online, model_rate, getattr(predictor, "detection_snr_db", DETECTION_SNR_DB))
    if heard.sum() < MIN_RECEIVERS:
        msg = (
            f"only {int(heard.sum())} receivers heard the transmitter ({_names(ids, heard)}); at least "
            f"{MIN_RECEIVERS} needed (silent: {_names(ids, online & ~heard)})"
        )
        raise RequestError([((*loc, "receivers"), msg)])
    iq = iq_pairs(samples)
    rx_pos = np.stack([east, north, np.array(height)], axis=-1).astype(np.float32)
    state = np.where(online, np.where(heard, HEARD, SILENT), OFFLINE).astype(np.int8)
    return PreparedSession(
        iq, rx_pos, online, float(req.center_freq_hz), ids, state, unmapped,
        np.array(lat, np.float64), np.array(lon, np.float64), stations,
        _fullscale(req, stations, predictor), req.posterior_png,
    )  # fmt: skip


def stack_sessions(sessions: list[PreparedSession]) -> dict[str, NDArray]:
    """Graph inputs for several sessions, padded to the largest receiver count with offline slots."""
    r = max(len(s.ids) for s in sessions)
    t = sessions[0].iq.shape[1]
    b = len(sessions)
    iq = np.zeros((b, r, t, 2), np.float32)
    rx_pos = np.zeros((b, r, 3), np.float32)
    rx_mask = np.zeros((b, r), bool)
    for k, s in enumerate(sessions):
        n = len(s.ids)
        iq[k, :n], rx_pos[k, :n], rx_mask[k, :n] = s.iq, s.rx_pos, s.rx_mask
    freq = np.array([s.center_freq_hz for s in sessions], np.float32)
    return {"iq": iq, "rx_pos": rx_pos, "rx_mask": rx_mask, "center_freq_hz": freq}
