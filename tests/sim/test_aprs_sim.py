"""The ``aprs`` simulator mode: a keyed burst inside the capture, digipeated copies from the digipeater."""

from __future__ import annotations

import shutil

import numpy as np

from heimdall.data.session import MODES
from heimdall.labels.direwolf import decode_clips
from heimdall.labels.fm import iq_to_audio
from heimdall.sim.aprs_traffic import APRS_FREQ_HZ, digipeater_sites, world_overrides
from heimdall.sim.simulator import World


def test_aprs_sessions_are_one_burst_on_144800(network, reference_world) -> None:
    world = World(network, reference_world.with_overrides(**world_overrides()), seed=0)
    batch = world.simulate(6, session_seed=5)
    assert np.all(batch.mode == MODES.index("aprs"))
    assert np.all(batch.center_freq_hz == APRS_FREQ_HZ)
    iq = batch.iq_complex()
    sites = world.network.frame.to_latlon(*digipeater_sites(world).T)
    digipeated = 0
    for b in range(batch.n_sessions):
        r = int(np.nanargmax(np.where(batch.rx_state[b] > 0, batch.rx_snr_db[b], np.nan)))
        p = np.abs(iq[b, r, : iq.shape[2] // 120 * 120]).reshape(-1, 120) ** 2
        blocks = p.mean(axis=1)
        on = blocks > 10 * np.percentile(blocks, 5)  # strong receiver: keyed blocks stand > 10 dB out
        # one burst of TXDELAY 150-400 ms + frame (> 150 ms) that ends before the capture does
        assert 0.3 <= on.mean() <= 0.95 and not on[0] and not on[-1]
        at_digi = np.isclose(batch.tx_lat_deg[b], sites[0], atol=1e-9) & np.isclose(
            batch.tx_lon_deg[b], sites[1], atol=1e-9
        )
        assert at_digi.sum() <= 1
        if shutil.which("atest") is None:
            continue
        frames = decode_clips([iq_to_audio(iq[b, r], world.sample_rate_hz)], 22050)[0]
        assert len(frames) == 1  # the strongest receiver decodes the one packet
        # a digipeated copy (H bit in its path) is transmitted from a digipeater site, nothing else is
        assert frames[0].repeated == bool(at_digi.any())
        digipeated += int(frames[0].repeated)
    if shutil.which("atest") is not None:
        assert 0 < digipeated < batch.n_sessions
