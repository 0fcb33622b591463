"""Measuring a labelled store: shards measured in threads give the same observations, in order."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from heimdall.maps.observations import LabelledObservations, observations_from_store
from heimdall.sim.simulate_job import run_simulation


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
