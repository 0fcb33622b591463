"""Measuring a store: threads give the same observations, in order; the detection threshold."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from heimdall.data.store import SessionStore
from heimdall.maps.observations import (
    HEARD,
    SILENT,
    LabelledObservations,
    observations_from_store,
    slot_observations,
)
from heimdall.posterior.measure import measure_power
from heimdall.sim.family import scenarios_from_metadata
from heimdall.sim.simulate_job import run_simulation
from heimdall.sim.simulator import band_of


def _assert_same(a: LabelledObservations, b: LabelledObservations) -> None:
    for f in fields(LabelledObservations):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)


def test_threaded_measurement_equals_the_serial_one(tmp_path) -> None:
    """Five shards measured one at a time, three at a time, and the first 9 sessions (a shard cut)."""
    uri = str(tmp_path / "lab")
    run_simulation(uri, "nw-italy", 20, world_seed=3, seed=4, duration_s=0.1, shard_size=4, workers=1)
    serial, net = observations_from_store(uri, workers=1)
    threaded, _ = observations_from_store(uri, workers=3)
    assert len(serial) == 20
    assert np.all(np.diff(serial.session_id) > 0)
    _assert_same(threaded, serial)
    first, _ = observations_from_store(uri, net, limit=9, workers=2)
    _assert_same(first, serial.select(slice(0, 9)))


def test_a_lower_detection_threshold_hears_weak_captures_that_are_measurements(tmp_path) -> None:
    """At −5 dB the captures measured between −5 and 0 dB SNR become heard, and they are measurements:
    their measured power is within 1 dB of the simulator's true received power (gain offset added).
    At 0 dB they are censored at noise + 0 dB; at −5 dB the silent ones at noise − 5 dB."""
    uri = str(tmp_path / "s")
    run_simulation(uri, "nw-italy", 120, world_seed=5, seed=8, duration_s=1.0, workers=1)
    store = SessionStore.open(uri)
    batch = store.read_all()
    meas = measure_power(batch)
    _, c0, s0 = slot_observations(batch)
    y5, c5, s5 = slot_observations(batch, detection_snr_db=-5.0)
    weak = meas.online & ~meas.clipped & (meas.snr_db >= -5.0) & (meas.snr_db < 0.0)
    assert weak.sum() >= 5, weak.sum()
    assert np.all(s0[weak] == SILENT) and np.all(s5[weak] == HEARD)
    np.testing.assert_array_equal(s0[~weak], s5[~weak])
    shift = 20.0 * np.log10(batch.center_freq_hz / 1e6)[:, None] * np.ones_like(y5)
    np.testing.assert_allclose(c0[weak], (meas.noise_dbm + shift)[weak], atol=1e-9)
    np.testing.assert_allclose(y5[weak], (meas.band_dbm + shift)[weak], atol=1e-9)
    silent5 = s5 == SILENT
    np.testing.assert_allclose(c5[silent5], (meas.noise_dbm - 5.0 + shift)[silent5], atol=1e-9)
    scenarios = scenarios_from_metadata(store.metadata)
    world = scenarios.world_of(int(batch.world_seed[0]), str(batch.network_id[0]))
    gain = np.stack([world.gain_offset_db_for(band_of(f)) for f in batch.center_freq_hz])
    err = (meas.band_dbm - (batch.rx_power_dbm + gain))[weak]  # both at the nominal full scale
    assert np.max(np.abs(err)) < 1.0, err
