"""Hand-made APRS sessions: our encoder's bursts on FM in 12 kHz IQ with noise."""

from __future__ import annotations

import numpy as np

from heimdall.data.session import HEARD, SessionBatch
from heimdall.sim.aprs import frame_burst
from heimdall.sim.ax25 import UIFrame

FS = 12000.0
#: Two receivers 20 km apart near Milan.
RX_LAT = np.array([45.40, 45.58])
RX_LON = np.array([9.10, 9.20])


def session_of(frame: UIFrame | None, cnr_db: float = 25.0, seed: int = 0, corrupt_bit: int | None = None,
               duration_s: float = 1.2, session_id: int = 0) -> SessionBatch:  # fmt: skip
    """One session, two receivers; ``frame`` None = noise only. CNR over the 12 kHz capture, dB."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration_s * FS)) / FS
    iq = np.zeros((2, t.size), dtype=np.complex128)
    if frame is not None:
        burst = frame_burst(frame, 0.1, txdelay_s=0.2, corrupt_bit=corrupt_bit)
        for r in range(2):
            iq[r] = np.exp(1j * (burst.fm_phase(t + 0.01 * r, 3000.0) + rng.uniform(0, 6.3)))
            iq[r] *= burst.keyed(t + 0.01 * r)
    noise = (rng.standard_normal(iq.shape) + 1j * rng.standard_normal(iq.shape)) / np.sqrt(2.0)
    x = 0.05 * (iq * 10 ** (cnr_db / 20.0) + noise) / 10 ** (cnr_db / 20.0)
    q = np.stack([x.real, x.imag], axis=-1) * 32768.0
    f1, r2 = np.ones(1), np.ones((1, 2))
    return SessionBatch(
        session_id=np.array([session_id], np.int64), world_seed=np.array([-1], np.int64),
        session_seed=np.array([-1], np.int64), center_freq_hz=144.8e6 * f1, sample_rate_hz=FS * f1,
        tx_lat_deg=np.nan * f1, tx_lon_deg=np.nan * f1, tx_power_dbm=np.nan * f1,
        tx_height_m=np.nan * f1, mode=np.array([-1], np.int8),
        rx_station=np.array([["rx-a", "rx-b"]]), rx_lat_deg=RX_LAT[None, :].copy(),
        rx_lon_deg=RX_LON[None, :].copy(), rx_height_m=10.0 * r2, rx_fullscale_dbm=-10.0 * r2,
        rx_state=np.full((1, 2), HEARD, np.int8), rx_start_ns=np.zeros((1, 2), np.int64),
        rx_timing_sigma_s=0.05 * r2, rx_power_dbm=np.nan * r2, rx_snr_db=np.nan * r2,
        rx_delay_s=np.nan * r2, rx_clipped=np.zeros((1, 2), bool),
        iq=np.round(q).astype(np.int16)[None],
    )  # fmt: skip
