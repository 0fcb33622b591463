"""The bench-only reference ``gp_oracle``: a radio map fitted with what only the simulator knows.

Kriging with the world's true field statistics (σ, correlation distance, per-capture σ, the
2 m / 70 cm field correlation) and the labelled transmitters' true powers, the path-loss law
fitted to the labels as ``radio_map_kriging`` fits it: the best a map learner can do with the
same N labels. Shared by ``bench/adapt.py`` and ``bench/map_calibration.py``.
"""

from __future__ import annotations

import numpy as np

from heimdall.data.store import SessionStore
from heimdall.eval.noise import capture_sigma_db
from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import RadioMap, fit_radio_map
from heimdall.maps.kriging import FieldHyper
from heimdall.maps.observations import LabelledObservations
from heimdall.network import Network
from heimdall.sim import WorldConfig


def world_of(store: SessionStore) -> WorldConfig:
    """The simulated world of a store (its metadata: bench-only bookkeeping)."""
    return WorldConfig.model_validate(store.metadata["world"])


def true_hyper(wcfg: WorldConfig, net: Network) -> FieldHyper:
    """The world's own field statistics (σ and ℓ in dB and km, per-capture σ in dB)."""
    return FieldHyper(wcfg.static_shadowing_sigma_db, wcfg.static_shadowing_corr_km,
                      capture_sigma_db(wcfg, net.receivers[0].sample_rate_hz),
                      wcfg.band_field_correlation)  # fmt: skip


def fit_gp_oracle(
    obs: LabelledObservations, net: Network, cfg: MapsConfig, labelled: SessionStore
) -> RadioMap:
    """``gp_oracle``'s map from the labels ``obs`` of the store ``labelled`` (true powers read there)."""
    table = labelled.sessions_table()
    power = dict(zip(table.column("session_id").to_pylist(), table.column("tx_power_dbm").to_pylist(),
                     strict=True))  # fmt: skip
    known = np.array([power[s] for s in obs.session_id.tolist()])
    return fit_radio_map(obs, net, cfg, known_power_dbm=known, hyper=true_hyper(world_of(labelled), net))
