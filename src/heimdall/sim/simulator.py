"""The world simulator: sessions of IQ captures from a receiver network.

A :class:`World` is fixed by a network, a :class:`WorldConfig` and a world
seed: the hidden receiver gain offsets (per band), site noise offsets and
frequency errors, the static shadowing fields (per band) and the town layout
of the clustered position prior are drawn from the world seed alone. A session
is fixed by (stream, world seed, session seed, session index): each session
draws from its own named streams (:mod:`heimdall.sim.seeds`), so the same seeds
give the same bytes whatever the batch size. See docs/SIMULATOR.md and
``reference-world.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.data.session import HEARD, MODES, OFFLINE, SILENT, SessionBatch
from heimdall.errors import HeimdallError
from heimdall.network import Network
from heimdall.sim.aprs_traffic import aprs_carrier, draw_aprs_session
from heimdall.sim.fading import interpolate_gain, rician_gain
from heimdall.sim.positions import TownLayout, draw_layout, draw_positions
from heimdall.sim.propagation import (
    SPEED_OF_LIGHT_KM_S,
    median_path_loss_db,
    noise_power_dbm,
)
from heimdall.sim.seeds import Stream, WorldPart, generator, seed_sequence
from heimdall.sim.shadowing import GridSpec, bilinear, exponential_field
from heimdall.sim.waveforms import draw_waveform
from heimdall.sim.world import WorldConfig

#: Capture start of session 0 (UTC ns): 2026-01-01T00:00:00Z; session k starts k minutes later.
EPOCH_NS = 1_767_225_600_000_000_000
SESSION_SPACING_NS = 60_000_000_000
_FIELD_PAD_KM = 10.0
_CHANNEL_STEP_HZ = 12_500.0
#: The bands a world models; a frequency below 300 MHz is 2 m, above is 70 cm.
BANDS: tuple[str, ...] = ("2m", "70cm")
_BAND_SPLIT_HZ = 300e6


def band_of(freq_hz: float) -> str:
    """The band (``"2m"`` or ``"70cm"``) of a carrier frequency in Hz."""
    return "2m" if float(freq_hz) < _BAND_SPLIT_HZ else "70cm"


def correlated(x: NDArray, z: NDArray, rho: float) -> NDArray:
    """ρ x + sqrt(1 − ρ²) z: unit-variance partner of ``x`` with correlation ρ (z independent of x)."""
    return rho * x + np.sqrt(1.0 - rho**2) * z


@dataclass(frozen=True)
class SessionDraw:
    """The random choices of one session (truth), before any IQ is made."""

    tx_east_km: float
    tx_north_km: float
    tx_power_dbm: float
    tx_height_m: float
    center_freq_hz: float
    mode: str
    online: NDArray[np.bool_]
    capture_shadow_db: NDArray[np.float64]
    noise_wander_db: NDArray[np.float64]
    clock_error_s: NDArray[np.float64]
    start_ns: int


class World:
    """A receiver network, its world parameters and the hidden truth drawn from the world seed.

    Parameters
    ----------
    network
        The receivers.
    config
        Simulator parameters (units in ``reference-world.yaml``).
    seed
        World seed: fixes gain offsets, site noise offsets, frequency errors, static
        shadowing maps and the town layout.

    Attributes
    ----------
    gain_offset_db
        True 2 m gain offsets, (R,) dB (:meth:`gain_offset_db_for` gives either band).
    noise_offset_db
        True offsets of each site's noise floor from the nominal, (R,) dB (both bands).
    freq_error_hz
        Local-oscillator errors, (R,) Hz.

    """

    def __init__(self, network: Network, config: WorldConfig, seed: int) -> None:
        if seed < 0:
            raise HeimdallError(f"world seed must be >= 0, got {seed}")
        rates = {rx.sample_rate_hz for rx in network.receivers}
        if len(rates) != 1:
            raise HeimdallError(
                f"network {network.name!r}: the simulator needs one sample rate, got {sorted(rates)}"
            )
        self.network = network
        self.config = config
        self.seed = int(seed)
        self.sample_rate_hz = float(rates.pop())
        self.n_samples = round(config.duration_s * self.sample_rate_hz)
        n_rx = len(network.receivers)
        rng = generator(Stream.WORLD, self.seed, WorldPart.RECEIVERS)
        z_gain = rng.standard_normal((2, n_rx))
        drawn_ferr = rng.uniform(-config.freq_error_max_hz, config.freq_error_max_hz, size=n_rx)
        drawn_noise = rng.normal(0.0, config.site_noise_sigma_db, size=n_rx)
        sigma_g, rho_g = config.gain_offset_sigma_db, config.band_gain_correlation
        drawn_gain = {"2m": sigma_g * z_gain[0], "70cm": sigma_g * correlated(z_gain[0], z_gain[1], rho_g)}
        self._gain_db = {  # a gain given in the network file holds in both bands
            band: np.array([g if rx.gain_offset_db is None else rx.gain_offset_db
                            for g, rx in zip(drawn, network.receivers, strict=True)])
            for band, drawn in drawn_gain.items()
        }  # fmt: skip
        self.gain_offset_db = self._gain_db["2m"]
        self.noise_offset_db = np.array(
            [g if rx.noise_offset_db is None else rx.noise_offset_db
             for g, rx in zip(drawn_noise, network.receivers, strict=True)]
        )  # fmt: skip
        self.freq_error_hz = np.array(
            [f if rx.freq_error_hz is None else rx.freq_error_hz
             for f, rx in zip(drawn_ferr, network.receivers, strict=True)]
        )  # fmt: skip
        if config.synchronised:
            self.freq_error_hz = np.zeros_like(self.freq_error_hz)

    # ----------------------------------------------------------------- geometry
    @cached_property
    def rx_east_north_km(self) -> NDArray[np.float64]:
        """Receiver positions in the local frame, (R, 2) km."""
        return self.network.positions_km

    @cached_property
    def tx_area_km(self) -> tuple[float, float, float, float]:
        """Where transmitters are placed: (east_min, east_max, north_min, north_max), km."""
        pos = self.rx_east_north_km
        m = self.config.area_margin_km
        return (
            float(pos[:, 0].min() - m),
            float(pos[:, 0].max() + m),
            float(pos[:, 1].min() - m),
            float(pos[:, 1].max() + m),
        )

    @cached_property
    def field_grid(self) -> GridSpec:
        """The grid of the static shadowing fields (transmitter area plus a pad)."""
        e0, e1, n0, n1 = self.tx_area_km
        step = self.config.static_field_resolution_km
        e0, n0 = e0 - _FIELD_PAD_KM, n0 - _FIELD_PAD_KM
        n_e = int(np.ceil((e1 + _FIELD_PAD_KM - e0) / step)) + 1
        n_n = int(np.ceil((n1 + _FIELD_PAD_KM - n0) / step)) + 1
        return GridSpec(e0, n0, step, n_e, n_n)

    def gain_offset_db_for(self, band: str = "2m") -> NDArray[np.float64]:
        """True gain offsets of the receivers in ``band`` (``"2m"`` / ``"70cm"``), (R,) dB.

        The 70 cm offsets are ρ x + sqrt(1 − ρ²) z times σ, x the 2 m draw in σ units,
        ρ = ``band_gain_correlation`` (shared feeder and receiver, different antenna
        gain and preamp per band).
        """
        return self._gain_db[_check_band(band)]

    def _draw_fields(self, part: WorldPart) -> NDArray[np.float32]:
        return exponential_field(
            self.field_grid,
            self.config.static_shadowing_sigma_db,
            self.config.static_shadowing_corr_km,
            generator(Stream.WORLD, self.seed, part),
            len(self.network.receivers),
        )

    @cached_property
    def static_fields_db(self) -> NDArray[np.float32]:
        """Static 2 m shadowing maps, one per receiver, (R, n_north, n_east) dB."""
        return self._draw_fields(WorldPart.FIELDS_2M)

    @cached_property
    def static_fields_70cm_db(self) -> NDArray[np.float32]:
        """Static 70 cm maps: ρ f_2m + sqrt(1 − ρ²) g with g an independent field of the same law.

        ρ = ``band_field_correlation``: the terrain obstructing a path is shared by
        both bands, clutter and diffraction loss differ with wavelength. A linear
        combination of independent fields of covariance C has covariance C again, so
        each band's field keeps σ and the correlation distance, and the two are
        correlated by ρ at every point (exactly, not by rescaling).
        """
        rho = self.config.band_field_correlation
        if rho == 1.0:
            return self.static_fields_db
        fresh = self._draw_fields(WorldPart.FIELDS_70CM)
        return correlated(self.static_fields_db, fresh, rho).astype(np.float32)

    def static_fields_for(self, band: str = "2m") -> NDArray[np.float32]:
        """Static shadowing maps of ``band``, (R, n_north, n_east) dB."""
        return self.static_fields_db if _check_band(band) == "2m" else self.static_fields_70cm_db

    def static_shadowing_db(
        self, east_km: ArrayLike, north_km: ArrayLike, band: str = "2m"
    ) -> NDArray[np.float64]:
        """Static shadowing (dB) of every receiver in ``band`` for a transmitter at the points: (R, *S)."""
        return bilinear(self.field_grid, self.static_fields_for(band), east_km, north_km)

    @cached_property
    def town_layout(self) -> TownLayout:
        """Towns, roads and fixed stations of the clustered position prior (:mod:`heimdall.sim.positions`)."""
        return draw_layout(self)

    def distance_km(self, east_km: ArrayLike, north_km: ArrayLike) -> NDArray[np.float64]:
        """Horizontal distance (km) from points (shape S) to every receiver: (*S, R)."""
        e = np.asarray(east_km, dtype=np.float64)[..., None]
        n = np.asarray(north_km, dtype=np.float64)[..., None]
        pos = self.rx_east_north_km
        return np.hypot(e - pos[:, 0], n - pos[:, 1])

    def median_rx_power_dbm(
        self,
        east_km: ArrayLike,
        north_km: ArrayLike,
        tx_power_dbm: ArrayLike,
        tx_height_m: ArrayLike,
        freq_mhz: ArrayLike,
    ) -> NDArray[np.float64]:
        """Median received power (dBm, no shadowing) at every receiver: (*S, R).

        Transmit power minus the median path loss and the transmitter's clutter loss.
        """
        d = self.distance_km(east_km, north_km)
        cfg = self.config
        loss = median_path_loss_db(
            d,
            np.asarray(freq_mhz)[..., None],
            np.asarray(tx_height_m)[..., None],
            self.network.heights_m,
            cfg.path_loss_exponent_near,
            cfg.path_loss_exponent_far,
            cfg.horizon_k_factor,
        )
        return np.asarray(tx_power_dbm)[..., None] - loss - cfg.clutter_loss_db

    def noise_dbm(self, freq_mhz: float) -> NDArray[np.float64]:
        """True mean noise power (dBm) over the capture bandwidth at every receiver: (R,).

        The nominal noise plus each site's hidden noise offset; a capture adds its
        own wander (``noise_wander_sigma_db``), recorded as ``rx_power_dbm − rx_snr_db``.
        """
        return self.nominal_noise_dbm(freq_mhz) + self.noise_offset_db

    def nominal_noise_dbm(self, freq_mhz: float) -> NDArray[np.float64]:
        """Nominal noise power (dBm) over the capture bandwidth at every receiver: (R,).

        Thermal noise, the receiver's noise figure and the median rural man-made noise
        (ITU-R P.372): what an estimator that does not know the site may assume.
        """
        nf = np.array([rx.noise_figure_db for rx in self.network.receivers])
        return noise_power_dbm(
            self.sample_rate_hz,
            nf,
            freq_mhz,
            self.config.manmade_noise_c_db,
            self.config.manmade_noise_d_db,
        )

    # ----------------------------------------------------------------- sessions
    def draw_session(self, rng: np.random.Generator, index: int, positions: str = "uniform") -> SessionDraw:
        """Draw one session's transmitter and per-capture randomness (fixed draw order).

        ``positions`` is the transmitter position prior (:func:`heimdall.sim.positions.draw_positions`).
        """
        cfg = self.config
        east_a, north_a = draw_positions(self, rng, 1, positions)
        east, north = float(east_a[0]), float(north_a[0])
        power = rng.uniform(cfg.tx_power_dbm_min, cfg.tx_power_dbm_max)
        height = rng.uniform(cfg.tx_height_m_min, cfg.tx_height_m_max)
        is_2m = rng.random() < cfg.band_2m_prob
        lo, hi = cfg.band_2m_mhz if is_2m else cfg.band_70cm_mhz
        freq = np.round(rng.uniform(lo, hi) * 1e6 / _CHANNEL_STEP_HZ) * _CHANNEL_STEP_HZ
        modes = [m for m in MODES if m in cfg.mode_probs]  # fixed order: a reloaded config may sort keys
        mode = modes[int(rng.choice(len(modes), p=[cfg.mode_probs[m] for m in modes]))]
        n_rx = len(self.network.receivers)
        band = "2m" if is_2m else "70cm"
        covers = np.array([band in rx.bands for rx in self.network.receivers])
        online = (rng.random(n_rx) < np.array([rx.online_prob for rx in self.network.receivers])) & covers
        capture_shadow = rng.normal(0.0, cfg.capture_shadowing_sigma_db, size=n_rx)
        wander = rng.normal(0.0, cfg.noise_wander_sigma_db, size=n_rx)
        clock_error = rng.normal(0.0, cfg.timing_sigma_s, size=n_rx)
        start_ns = EPOCH_NS + index * SESSION_SPACING_NS + int(rng.integers(0, SESSION_SPACING_NS // 2))
        return SessionDraw(
            east, north, power, height, float(freq), mode, online, capture_shadow, wander,
            clock_error, start_ns,
        )  # fmt: skip

    def simulate(
        self,
        n_sessions: int,
        session_seed: int,
        start_index: int = 0,
        progress: Callable[[int], None] | None = None,
        *,
        stream: Stream = Stream.STORED,
        positions: str = "uniform",
        network_id: str | None = None,
    ) -> SessionBatch:
        """Simulate sessions ``start_index .. start_index + n_sessions - 1``.

        Parameters
        ----------
        n_sessions
            How many sessions.
        session_seed
            Seed of this set of sessions (with the world seed and index it fixes each one).
        start_index
            Index of the first session (its ``session_id``).
        progress
            Called with 1 after each session (for progress bars).
        stream
            Purpose of the sessions (:class:`heimdall.sim.seeds.Stream`): stored sets
            and on-the-fly training never share a stream, whatever their seeds.
        positions
            Transmitter position prior, ``"uniform"`` or ``"clustered"``.
        network_id
            Recorded per session (default: the network's name).

        """
        if n_sessions < 0:
            raise HeimdallError(f"number of sessions must be >= 0, got {n_sessions}")
        if session_seed < 0:
            raise HeimdallError(f"session seed must be >= 0, got {session_seed}")
        parts = []
        for k in range(start_index, start_index + n_sessions):
            parts.append(self._simulate_one(session_seed, k, stream, positions, network_id))
            if progress is not None:
                progress(1)
        if not parts:
            return _empty_batch(len(self.network.receivers), self.n_samples)
        return SessionBatch.concat(parts)

    def _simulate_one(
        self, session_seed: int, index: int, stream: Stream, positions: str, network_id: str | None
    ) -> SessionBatch:
        cfg = self.config
        root = seed_sequence(stream, self.seed, int(session_seed), int(index))
        rng_draw, rng_fade, rng_wave, rng_noise = (np.random.default_rng(s) for s in root.spawn(4))
        draw = self.draw_session(rng_draw, index, positions)
        aprs = None
        if draw.mode == "aprs":  # one packet burst, maybe from a digipeater (heimdall.sim.aprs_traffic)
            aprs = draw_aprs_session(np.random.default_rng(root.spawn(1)[0]), self, draw)
            draw = replace(draw, tx_east_km=aprs.tx_east_km, tx_north_km=aprs.tx_north_km,
                           tx_height_m=aprs.tx_height_m, tx_power_dbm=aprs.tx_power_dbm)  # fmt: skip
        n_rx, n_t, fs = len(self.network.receivers), self.n_samples, self.sample_rate_hz
        freq_mhz = draw.center_freq_hz / 1e6
        band = band_of(draw.center_freq_hz)

        d_km = self.distance_km(draw.tx_east_km, draw.tx_north_km)
        d3_km = np.hypot(d_km, (self.network.heights_m - draw.tx_height_m) / 1000.0)
        static = self.static_shadowing_db(draw.tx_east_km, draw.tx_north_km, band)
        median = self.median_rx_power_dbm(
            draw.tx_east_km, draw.tx_north_km, draw.tx_power_dbm, draw.tx_height_m, freq_mhz
        )
        power_dbm = median + static + draw.capture_shadow_db  # before fast fading
        delay_s = d3_km / SPEED_OF_LIGHT_KM_S

        sample_t = np.arange(n_t) / fs
        gains, _ = rician_gain(
            rng_fade, n_rx, cfg.duration_s, cfg.fading_rate_hz, cfg.rician_k_db, cfg.doppler_hz
        )
        fade = interpolate_gain(gains, cfg.fading_rate_hz, sample_t)
        fade_power = np.mean(fade.real.astype(np.float64) ** 2 + fade.imag.astype(np.float64) ** 2, axis=-1)
        rx_power_dbm = power_dbm + 10.0 * np.log10(fade_power)
        noise_dbm = self.noise_dbm(freq_mhz) + draw.noise_wander_db
        snr_db = rx_power_dbm - noise_dbm

        offset_s = draw.clock_error_s - delay_s  # sample n is s(n/fs + offset)
        if aprs is not None:
            cos_p, sin_p = aprs_carrier(aprs, offset_s, sample_t, self.freq_error_hz)
        else:
            phase = self._received_phase(rng_wave, draw.mode, offset_s, sample_t)
            phase += 2.0 * np.pi * self.freq_error_hz[:, None] * sample_t
            phase32 = np.mod(phase, 2.0 * np.pi).astype(np.float32)
            cos_p, sin_p = np.cos(phase32), np.sin(phase32)

        fullscale = np.array([rx.fullscale_dbm for rx in self.network.receivers])
        level_db = self.gain_offset_db_for(band) - fullscale  # dBm -> dBFS at this receiver
        amp = (10.0 ** ((power_dbm + level_db) / 20.0)).astype(np.float32)
        noise_amp = (10.0 ** ((noise_dbm + level_db) / 20.0) / np.sqrt(2.0)).astype(np.float32)
        noise = rng_noise.standard_normal((n_rx, n_t, 2), dtype=np.float32)
        g_re = amp[:, None] * fade.real
        g_im = amp[:, None] * fade.imag
        iq = noise
        iq *= noise_amp[:, None, None]
        iq[..., 0] += g_re * cos_p - g_im * sin_p
        iq[..., 1] += g_re * sin_p + g_im * cos_p
        if cfg.agc:
            total = np.mean(np.sum(iq.astype(np.float64) ** 2, axis=-1), axis=-1)
            iq *= np.sqrt(10.0 ** (cfg.agc_target_dbfs / 10.0) / total).astype(np.float32)[:, None, None]
        quantised, clipped = _quantise(iq, cfg.quantisation_bits)

        state = np.where(draw.online, np.where(snr_db >= cfg.detection_snr_db, HEARD, SILENT), OFFLINE)
        quantised[~draw.online] = 0
        tx_lat, tx_lon = self.network.frame.to_latlon(draw.tx_east_km, draw.tx_north_km)
        rxs = self.network.receivers
        return SessionBatch(
            session_id=np.array([index], dtype=np.int64),
            world_seed=np.array([self.seed], dtype=np.int64),
            session_seed=np.array([session_seed], dtype=np.int64),
            network_id=np.array([network_id or self.network.name], dtype=np.str_),
            center_freq_hz=np.array([draw.center_freq_hz]),
            sample_rate_hz=np.array([fs]),
            tx_lat_deg=np.array([float(tx_lat)]),
            tx_lon_deg=np.array([float(tx_lon)]),
            tx_power_dbm=np.array([draw.tx_power_dbm]),
            tx_height_m=np.array([draw.tx_height_m]),
            mode=np.array([MODES.index(draw.mode)], dtype=np.int8),
            rx_station=np.array([[rx.id for rx in rxs]], dtype=np.str_),
            rx_lat_deg=np.array([[rx.lat for rx in rxs]]),
            rx_lon_deg=np.array([[rx.lon for rx in rxs]]),
            rx_height_m=self.network.heights_m[None, :].copy(),
            rx_fullscale_dbm=fullscale[None, :],
            rx_state=state.astype(np.int8)[None, :],
            rx_start_ns=np.full((1, n_rx), draw.start_ns, dtype=np.int64),
            rx_timing_sigma_s=np.full((1, n_rx), cfg.timing_sigma_s),
            rx_power_dbm=rx_power_dbm[None, :],
            rx_snr_db=snr_db[None, :],
            rx_delay_s=delay_s[None, :],
            rx_clipped=(clipped & draw.online)[None, :],
            iq=quantised[None],
        )

    def _received_phase(
        self,
        rng: np.random.Generator,
        mode: str,
        offset_s: NDArray[np.float64],
        sample_t: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Phase (rad) of the transmitted waveform as each receiver samples it: (R, T).

        Synchronised worlds evaluate the analytic phase at each receiver's exact
        times (a true fractional delay); otherwise offsets are rounded to whole
        samples (they are far below the capture's timing uncertainty).
        """
        cfg, fs = self.config, self.sample_rate_hz
        t_lo = float(offset_s.min()) - 2.0 / fs
        t_hi = float(offset_s.max()) + cfg.duration_s + 2.0 / fs
        wave = draw_waveform(
            rng, mode, t_lo, t_hi, cfg.nbfm_deviation_hz, tuple(cfg.nbfm_audio_hz),
            cfg.fsk_baud, cfg.fsk_deviation_hz, cfg.fsk_bt,
        )  # fmt: skip
        if cfg.synchronised:
            return wave.phase(sample_t[None, :] + offset_s[:, None])
        shift = np.round(offset_s * fs).astype(np.int64)
        base = int(shift.min())
        grid = wave.phase((base + np.arange(sample_t.size + int(shift.max()) - base)) / fs)
        idx = (shift - base)[:, None] + np.arange(sample_t.size)[None, :]
        return grid[idx]


def _check_band(band: str) -> str:
    if band not in BANDS:
        raise HeimdallError(f"unknown band {band!r}: give one of {', '.join(BANDS)}")
    return band


def _quantise(iq: NDArray[np.float32], bits: int) -> tuple[NDArray[np.int16], NDArray[np.bool_]]:
    """Clip to full scale and quantise to ``bits``; returns int16 (÷32768 = full scale) and clip flags."""
    clipped = (iq.max(axis=(-1, -2)) >= 1.0) | (iq.min(axis=(-1, -2)) <= -1.0)
    levels = float(2 ** (bits - 1))
    q = np.clip(np.round(iq * levels), -levels, levels - 1) * (32768.0 / levels)
    return q.astype(np.int16), clipped


def _empty_batch(n_rx: int, n_t: int) -> SessionBatch:
    f64 = np.zeros((0,), dtype=np.float64)
    r64 = np.zeros((0, n_rx), dtype=np.float64)
    return SessionBatch(
        session_id=np.zeros((0,), np.int64), world_seed=np.zeros((0,), np.int64),
        session_seed=np.zeros((0,), np.int64), network_id=np.zeros((0,), np.str_),
        center_freq_hz=f64, sample_rate_hz=f64,
        tx_lat_deg=f64, tx_lon_deg=f64, tx_power_dbm=f64, tx_height_m=f64,
        mode=np.zeros((0,), np.int8), rx_station=np.zeros((0, n_rx), dtype=np.str_),
        rx_lat_deg=r64, rx_lon_deg=r64, rx_height_m=r64, rx_fullscale_dbm=r64,
        rx_state=np.zeros((0, n_rx), np.int8), rx_start_ns=np.zeros((0, n_rx), np.int64),
        rx_timing_sigma_s=r64, rx_power_dbm=r64, rx_snr_db=r64, rx_delay_s=r64,
        rx_clipped=np.zeros((0, n_rx), bool), iq=np.zeros((0, n_rx, n_t, 2), np.int16),
    )  # fmt: skip
