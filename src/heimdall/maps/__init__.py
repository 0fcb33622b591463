"""Radio maps learned from labelled sessions: per-receiver path loss and kriged fields (docs/MAPS.md)."""

from heimdall.maps.artifact import load_map, save_map
from heimdall.maps.config import MapsConfig, load_maps_config
from heimdall.maps.estimator import MapPosterior, radio_map_posterior
from heimdall.maps.fit import RadioMap, fit_radio_map
from heimdall.maps.observations import LabelledObservations, observations_from_batch, observations_from_store

__all__ = [
    "LabelledObservations", "MapPosterior", "MapsConfig", "RadioMap", "fit_radio_map", "load_map",
    "load_maps_config", "observations_from_batch", "observations_from_store", "radio_map_posterior",
    "save_map",
]  # fmt: skip
