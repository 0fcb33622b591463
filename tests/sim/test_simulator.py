"""Simulator bookkeeping, reproducibility, receiver states and options."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.data.session import HEARD, OFFLINE, SILENT, SessionBatch
from heimdall.errors import HeimdallError
from heimdall.network import load_network
from heimdall.sim import World, load_world
from heimdall.sim.runner import SimulationSpec, iter_shards
from heimdall.sim.simulator import band_of

NET = load_network("nw-italy")
SHORT = load_world().with_overrides(duration_s=0.1)


def _same(a: SessionBatch, b: SessionBatch) -> bool:
    return (
        all(
            x.shape == y.shape and x.dtype == y.dtype and x.tobytes() == y.tobytes()
            for x, y in zip(a.to_arrays().values(), b.to_arrays().values(), strict=True)
        )
        and a.iq.tobytes() == b.iq.tobytes()
    )


def test_same_seeds_same_bytes_whatever_the_batching() -> None:
    whole = World(NET, SHORT, 3).simulate(6, session_seed=9)
    again = World(NET, SHORT, 3).simulate(6, session_seed=9)
    split = SessionBatch.concat(
        [World(NET, SHORT, 3).simulate(2, 9), World(NET, SHORT, 3).simulate(4, 9, start_index=2)]
    )
    assert _same(whole, again)
    assert _same(whole, split)


def test_parallel_workers_give_the_same_bytes() -> None:
    spec = SimulationSpec(NET, SHORT, 3, 9)
    serial = SessionBatch.concat([b for _, b in iter_shards(spec, 10, 4, workers=1)])
    parallel = SessionBatch.concat([b for _, b in iter_shards(spec, 10, 4, workers=2)])
    assert _same(serial, parallel)
    assert _same(serial, World(NET, SHORT, 3).simulate(10, 9))


def test_different_seeds_differ() -> None:
    a = World(NET, SHORT, 3).simulate(3, session_seed=1)
    b = World(NET, SHORT, 3).simulate(3, session_seed=2)
    c = World(NET, SHORT, 4).simulate(3, session_seed=1)
    assert not np.array_equal(a.tx_lat_deg, b.tx_lat_deg)
    assert not np.array_equal(a.iq, b.iq)
    assert not np.array_equal(a.iq, c.iq)


def test_states_and_bookkeeping_are_consistent(world: World) -> None:
    b = world.simulate(60, session_seed=11)
    assert b.iq.shape == (60, 7, 12_000, 2) and b.iq.dtype == np.int16
    assert set(np.unique(b.rx_state)) <= {OFFLINE, HEARD, SILENT}
    online = b.rx_state != OFFLINE
    # offline slots hold no data; online slots do
    assert not b.iq[~online].any()
    assert (np.abs(b.iq[online]).reshape(online.sum(), -1).max(axis=1) > 0).all()
    # heard <=> online and SNR above the detection threshold
    thr = world.config.detection_snr_db
    assert ((b.rx_state == HEARD) == (online & (b.rx_snr_db >= thr))).all()
    assert ((b.rx_state == SILENT) == (online & (b.rx_snr_db < thr))).all()
    # transmitters inside the placement area, power and height in the configured ranges
    east, north = NET.frame.to_local_km(b.tx_lat_deg, b.tx_lon_deg)
    e0, e1, n0, n1 = world.tx_area_km
    assert ((east >= e0) & (east <= e1) & (north >= n0) & (north <= n1)).all()
    assert (b.tx_power_dbm >= 27).all() and (b.tx_power_dbm <= 47).all()
    assert (b.tx_height_m >= 1.5).all() and (b.tx_height_m <= 10).all()
    assert ((b.center_freq_hz >= 144e6) & (b.center_freq_hz <= 146e6)
            | (b.center_freq_hz >= 430e6) & (b.center_freq_hz <= 440e6)).all()  # fmt: skip
    # propagation delay = slant distance / c
    d = np.hypot(world.distance_km(east, north), (NET.heights_m - b.tx_height_m[:, None]) / 1000)
    np.testing.assert_allclose(b.rx_delay_s, d / 299_792.458, rtol=1e-9)


def test_mean_power_at_full_scale_matches_bookkeeping() -> None:
    """Mean |x|^2 of the IQ (dBFS) = 10 log10(10^(S/10) + 10^(N/10)) at the true gain, +-0.5 dB."""
    w = World(NET, SHORT.with_overrides(duration_s=0.5), 2)
    b = w.simulate(20, session_seed=1)
    x = b.iq_complex().astype(np.complex128)
    measured = 10 * np.log10(np.mean(np.abs(x) ** 2, axis=-1) + 1e-30)
    noise = b.rx_power_dbm - b.rx_snr_db  # site offset and this capture's wander included
    level = np.stack([w.gain_offset_db_for(band_of(f)) for f in b.center_freq_hz]) - b.rx_fullscale_dbm
    expected = 10 * np.log10(10 ** ((b.rx_power_dbm + level) / 10) + 10 ** ((noise + level) / 10))
    sel = (b.rx_state != OFFLINE) & ~b.rx_clipped
    assert np.max(np.abs(measured[sel] - expected[sel])) < 0.5


def test_agc_normalises_level() -> None:
    w = World(NET, SHORT.with_overrides(agc=True), 2)
    b = w.simulate(10, session_seed=1)
    x = b.iq_complex().astype(np.complex128)
    level = 10 * np.log10(np.mean(np.abs(x) ** 2, axis=-1) + 1e-30)
    on = b.rx_state != OFFLINE
    np.testing.assert_allclose(level[on], w.config.agc_target_dbfs, atol=0.05)


def test_synchronised_has_no_frequency_error_and_ns_timing() -> None:
    w = World(NET, SHORT.with_overrides(synchronised=True), 0)
    assert (w.freq_error_hz == 0).all()
    b = w.simulate(2, session_seed=0)
    assert b.rx_timing_sigma_s == pytest.approx(1e-7)
    assert b.rx_start_ns.dtype == np.int64 and (b.rx_start_ns % 1000 != 0).any()
    unsync = World(NET, SHORT, 0)
    assert np.abs(unsync.freq_error_hz).max() <= 100 and np.abs(unsync.freq_error_hz).max() > 0


def test_clipping_is_flagged() -> None:
    hot = World(NET, SHORT.with_overrides(tx_power_dbm_min=80.0, tx_power_dbm_max=80.0), 0)
    b = hot.simulate(5, session_seed=0)
    assert b.rx_clipped.any()
    clipped = b.rx_clipped
    assert (np.abs(b.iq[clipped]).reshape(clipped.sum(), -1).max(axis=1) >= 32767).all()


def test_bad_arguments() -> None:
    with pytest.raises(HeimdallError, match="sessions must be >= 0"):
        World(NET, SHORT, 0).simulate(-1, 0)
    with pytest.raises(HeimdallError, match="world seed"):
        World(NET, SHORT, -3)
