"""APRS traffic of the ``aprs`` simulator mode: who keys up where, and what the packet says.

Each ``aprs`` session is one packet burst on 144.800 MHz (IARU region 1 APRS)
inside the capture. Per session (rates are per session, from the session's
own stream; documented in docs/SIMULATOR.md and docs/DATA.md):

- the **station** stands at the session's drawn position (the ``--positions``
  prior) with a callsign and SSID derived from its stream, and reports its
  true position plus GPS error (Gaussian, :data:`GPS_SIGMA_M` per axis) in
  one of the three formats (:data:`FORMAT_PROBS`), with position ambiguity
  1..4 at rate :data:`AMBIGUITY_RATE` (uncompressed and Mic-E only);
- **digipeated copies** (rate :data:`DIGIPEATED_RATE`): the burst is a
  digipeater's retransmission, keyed from the digipeater's fixed site
  (:data:`N_DIGIPEATERS` sites per world, from the world seed), its height
  and power; its path carries the digipeater's call with the has-been-repeated
  bit set. The session's truth is the digipeater's position;
- **typed-in positions** (rate :data:`TYPED_IN_RATE`): the station beacons a
  fixed position typed in elsewhere, at a uniform bearing and a log-uniform
  distance of 2-300 km from where it really is (a home position beaconed
  from a car, a copied configuration);
- **other traffic** (rates :data:`OTHER_RATES`): status ``>``, message ``:``
  and object ``;`` frames, which carry no position of the sender;
- **collisions** (rate :data:`COLLISION_RATE`): a second station (another
  draw from the prior) keys up while the burst is on the air; its level at
  each receiver follows its own median path loss and static shadowing.

The burst: TXDELAY flags (uniform 150-400 ms), the frame, 3 TXTAIL flags,
Bell 202 AFSK on FM with ±3 kHz peak deviation; the carrier is keyed only for
the burst (noise elsewhere in the capture). The truth ``rx_power_dbm`` is the
power while keyed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from heimdall.sim.afsk import AfskBurst
from heimdall.sim.aprs import FORMATS, PositionReport, frame_burst, position_frame, text_frame
from heimdall.sim.ax25 import Address, UIFrame

if TYPE_CHECKING:
    from heimdall.sim.simulator import SessionDraw, World

APRS_FREQ_HZ = 144.800e6
DEVIATION_HZ = 3000.0
GPS_SIGMA_M = 3.7
FORMAT_PROBS: dict[str, float] = {"uncompressed": 0.45, "compressed": 0.2, "mic-e": 0.35}
AMBIGUITY_RATE = 0.05
DIGIPEATED_RATE = 0.25
TYPED_IN_RATE = 0.03
OTHER_RATES: dict[str, float] = {"status": 0.03, "message": 0.02, "object": 0.02}
COLLISION_RATE = 0.03
N_DIGIPEATERS = 4
DIGI_HEIGHT_M = 20.0
DIGI_POWER_DBM = 40.0
TXDELAY_S = (0.15, 0.40)
_M_PER_DEG = 6_371_000.0 * math.pi / 180.0
_PREFIXES = ("IZ", "IK", "IW", "IU", "I", "HB9", "OE", "F4", "DL")
_SSIDS = (0, 5, 7, 9, 9, 9, 10, 15)


def world_overrides() -> dict[str, object]:
    """World parameters of ``--mode aprs``: every session APRS, on 144.800 MHz."""
    mhz = APRS_FREQ_HZ / 1e6
    return {"mode_probs": {"aprs": 1.0}, "band_2m_prob": 1.0, "band_2m_mhz": (mhz, mhz)}


@dataclass(frozen=True)
class AprsSession:
    """One session's APRS transmission (truth).

    Attributes
    ----------
    kind
        ``direct``, ``digipeated``, ``typed-in``, ``status``, ``message`` or ``object``.
    frame
        The frame on the air.
    burst
        Its AFSK burst (times relative to the capture start, s).
    tx_east_km, tx_north_km, tx_height_m, tx_power_dbm
        Who keys the transmitter (the digipeater for digipeated copies).
    collision, collision_level_db
        A colliding burst and its level relative to the main one at each receiver (dB), or None.

    """

    kind: str
    frame: UIFrame
    burst: AfskBurst
    tx_east_km: float
    tx_north_km: float
    tx_height_m: float
    tx_power_dbm: float
    phase0: float
    collision: AfskBurst | None = None
    collision_level_db: NDArray[np.float64] | None = None
    collision_phase0: float = 0.0


def digipeater_sites(world: World) -> NDArray[np.float64]:
    """Fixed digipeater sites of ``world`` (from the world seed alone), (N, 2) km."""
    rng = np.random.default_rng(np.random.SeedSequence([world.seed, 0xA985]))
    e0, e1, n0, n1 = world.tx_area_km
    return np.column_stack([rng.uniform(e0, e1, N_DIGIPEATERS), rng.uniform(n0, n1, N_DIGIPEATERS)])


def callsign(rng: np.random.Generator) -> Address:
    """A random callsign (European prefixes) and a common APRS SSID."""
    prefix = _PREFIXES[int(rng.integers(len(_PREFIXES)))]
    letters = "".join(chr(65 + int(v)) for v in rng.integers(0, 26, size=3))
    call = f"{prefix}{int(rng.integers(0, 10))}{letters}"[:6]
    return Address(call, int(_SSIDS[int(rng.integers(len(_SSIDS)))]))


def _offset_latlon(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / _M_PER_DEG, lon + east_m / (_M_PER_DEG * math.cos(math.radians(lat)))


def _report(rng: np.random.Generator, lat: float, lon: float) -> PositionReport:
    fmt = FORMATS[int(rng.choice(len(FORMATS), p=[FORMAT_PROBS[f] for f in FORMATS]))]
    ambiguity = int(rng.integers(1, 5)) if fmt != "compressed" and rng.random() < AMBIGUITY_RATE else 0
    course = int(rng.integers(1, 361))
    while course % 100 < 4:  # keeps Mic-E course bytes printable
        course = int(rng.integers(1, 361))
    return PositionReport(lat, lon, fmt, ambiguity, course_deg=course, speed_kn=int(rng.integers(1, 60)))


def _frame(rng: np.random.Generator, world: World, east_km: float, north_km: float) -> tuple[str, UIFrame]:
    """The kind and frame a station at (east, north) sends (path not yet digipeated)."""
    source = callsign(rng)
    path = (Address("WIDE1", 1), Address("WIDE2", 1))
    u = rng.random()
    others = list(OTHER_RATES.items())
    edges = np.cumsum([TYPED_IN_RATE, *(r for _, r in others)])
    lat, lon = (float(v) for v in world.network.frame.to_latlon(east_km, north_km))
    gps = rng.normal(0.0, GPS_SIGMA_M, size=2)
    if u < edges[0]:
        dist_m = 1000.0 * math.exp(rng.uniform(math.log(2.0), math.log(300.0)))
        bearing = rng.uniform(0.0, 2.0 * math.pi)
        lat, lon = _offset_latlon(lat, lon, dist_m * math.cos(bearing), dist_m * math.sin(bearing))
        return "typed-in", position_frame(source, _report(rng, lat, lon), path)
    for (kind, _), edge in zip(others, edges[1:], strict=True):
        if u < edge:
            where = position_frame(source, PositionReport(lat, lon)).info[1:].decode()
            info = {
                "status": ">Heimdall sim status",
                "message": ":IZ0XYZ   :hello{01",
                "object": f";REPEATER *092345z{where}",
            }[kind]
            return kind, text_frame(source, info, path)
    lat, lon = _offset_latlon(lat, lon, float(gps[0]), float(gps[1]))
    return "direct", position_frame(source, _report(rng, lat, lon), path)


def _burst(rng: np.random.Generator, frame: UIFrame, duration_s: float) -> AfskBurst:
    txdelay = float(rng.uniform(*TXDELAY_S))
    probe = frame_burst(frame, 0.0, txdelay)
    latest = max(0.02, duration_s - probe.duration_s - 0.02)
    return frame_burst(frame, float(rng.uniform(0.02, latest)), txdelay, float(rng.uniform(0, 2 * np.pi)))


def draw_aprs_session(rng: np.random.Generator, world: World, draw: SessionDraw) -> AprsSession:
    """Draw one session's APRS traffic for a station at ``draw``'s position (fixed draw order)."""
    cfg = world.config
    kind, frame = _frame(rng, world, draw.tx_east_km, draw.tx_north_km)
    east, north, height, power = draw.tx_east_km, draw.tx_north_km, draw.tx_height_m, draw.tx_power_dbm
    if rng.random() < DIGIPEATED_RATE:
        sites = digipeater_sites(world)
        k = int(rng.integers(len(sites)))
        digi = Address(f"IR0DG{chr(65 + k)}", 0, repeated=True)
        path = (digi, Address("WIDE1", 0, repeated=True), Address("WIDE2", 1))
        frame = UIFrame(frame.destination, frame.source, path, frame.info)
        kind = "digipeated"
        east, north, height, power = float(sites[k, 0]), float(sites[k, 1]), DIGI_HEIGHT_M, DIGI_POWER_DBM
    burst = _burst(rng, frame, cfg.duration_s)
    phase0 = float(rng.uniform(0.0, 2.0 * np.pi))
    if rng.random() >= COLLISION_RATE:
        return AprsSession(kind, frame, burst, east, north, height, power, phase0)
    from heimdall.sim.positions import draw_positions

    e2, n2 = (float(v[0]) for v in draw_positions(world, rng, 1, "uniform"))
    _, other = _frame(rng, world, e2, n2)
    p2 = float(rng.uniform(cfg.tx_power_dbm_min, cfg.tx_power_dbm_max))
    freq_mhz = APRS_FREQ_HZ / 1e6
    level = lambda e, n, p, h: (  # noqa: E731
        world.median_rx_power_dbm(e, n, p, h, freq_mhz) + world.static_shadowing_db(e, n)
    )
    rel = level(e2, n2, p2, cfg.tx_height_m_min) - level(east, north, power, height)
    start = burst.t0_s + float(rng.uniform(-0.5, 0.8)) * burst.duration_s
    second = frame_burst(other, start, float(rng.uniform(*TXDELAY_S)), float(rng.uniform(0, 2 * np.pi)))
    return AprsSession(
        kind, frame, burst, east, north, height, power, phase0,
        second, np.asarray(rel, dtype=np.float64), float(rng.uniform(0.0, 2.0 * np.pi)),
    )  # fmt: skip


def aprs_carrier(
    session: AprsSession,
    offset_s: NDArray[np.float64],
    sample_t: NDArray[np.float64],
    freq_error_hz: NDArray[np.float64],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Real and imaginary parts of the unit-power keyed carrier at every receiver, (R, T) each.

    Receiver r samples the transmission at times ``sample_t + offset_s[r]`` (s); its
    local oscillator error ``freq_error_hz[r]`` (Hz) rotates the phase. Zero while unkeyed.
    """
    t = sample_t[None, :] + offset_s[:, None]
    lo = 2.0 * np.pi * freq_error_hz[:, None] * sample_t[None, :]
    phase = session.burst.fm_phase(t, DEVIATION_HZ) + session.phase0 + lo
    z = np.exp(1j * phase) * session.burst.keyed(t)
    if session.collision is not None and session.collision_level_db is not None:
        amp = 10.0 ** (session.collision_level_db / 20.0)
        ph2 = session.collision.fm_phase(t, DEVIATION_HZ) + session.collision_phase0 + lo
        z = z + amp[:, None] * np.exp(1j * ph2) * session.collision.keyed(t)
    return z.real.astype(np.float32), z.imag.astype(np.float32)
