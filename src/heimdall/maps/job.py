"""The ``map fit`` and ``map show`` jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from heimdall.errors import HeimdallError
from heimdall.maps.artifact import load_map, log_map_to_mlflow, save_map
from heimdall.maps.config import MapsConfig, load_maps_config
from heimdall.maps.fit import RadioMap, fit_radio_map
from heimdall.maps.observations import LabelledObservations, NetworkCoverage, observations_with_coverage
from heimdall.maps.plot import draw_maps
from heimdall.network import load_network


def fit_map_from_store(
    store: str,
    network: str | None = None,
    config: str | Path | None = None,
    previous: RadioMap | None = None,
    storage_options: dict[str, Any] | None = None,
    prior: dict[str, Any] | None = None,
) -> RadioMap:
    """Measure the labelled sessions of ``store`` and fit radio maps (the one code path of ``map fit``).

    With ``previous`` only the sessions it does not hold are added (``map fit --update``).
    ``prior`` overrides settings (e.g. a pretrained model's ``prior_*`` law and statistics).
    The map's metrics count the labelled sessions none of whose receivers is in the network
    (``n_sessions_off_network``) and the store's station ids outside it
    (``n_stations_off_network``); a store with no session on the network is refused.
    """
    return fit_maps_from_store(store, [prior], network, config, previous, storage_options)[0]


def fit_maps_from_store(
    store: str,
    priors: list[dict[str, Any] | None],
    network: str | None = None,
    config: str | Path | None = None,
    previous: RadioMap | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[RadioMap]:
    """:func:`fit_map_from_store` once per entry of ``priors`` (None: the settings as they are).

    The store is read and its captures measured once per distinct measurement setting
    (``max_label_radius_m``, ``detection_snr_db``) for all the fits (``evaluate --model
    --labelled`` fits ``radio_map_kriging``'s map and the model's own from the same labels).
    """
    net = load_network(network) if network else (previous.network if previous is not None else None)
    cfg = load_maps_config(config) if config else (previous.config if previous is not None else MapsConfig())
    cfgs = [MapsConfig.model_validate({**cfg.model_dump(), **p}) if p else cfg for p in priors]
    measured: dict[tuple[float, float], LabelledObservations] = {}  # one measurement per setting
    coverage: dict[tuple[float, float], NetworkCoverage] = {}
    for c in cfgs:
        key = (c.max_label_radius_m, c.detection_snr_db)
        if key not in measured:
            measured[key], net, coverage[key] = observations_with_coverage(
                store, net, storage_options, max_label_radius_m=key[0], detection_snr_db=key[1]
            )
    assert net is not None
    if previous is not None:
        if previous.network.ids != net.ids:
            raise HeimdallError(f"{store}: receivers {net.ids} differ from the map's {previous.network.ids}")
        known = set(previous.train.session_id.tolist())
        for key, obs in measured.items():
            new = np.array([s not in known for s in obs.session_id.tolist()], dtype=bool)
            measured[key] = obs.select(new)
            if len(measured[key]) == 0:
                raise HeimdallError(f"{store}: no labelled sessions that the previous map does not hold")
    maps = []
    for c in cfgs:
        key = (c.max_label_radius_m, c.detection_snr_db)
        m = fit_radio_map(measured[key], net, c, previous=previous)
        m.metrics.update(coverage[key].metrics())  # labelled sessions / stations the network left out
        maps.append(m)
    return maps


def run_map_fit(
    store: str,
    out: str,
    network: str | None = None,
    config: str | Path | None = None,
    update: str | None = None,
    storage_options: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    log_mlflow: bool = True,
    prior: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit (or, with ``update`` = a previous map URI, update) radio maps and write them to ``out``.

    Returns the map's metadata (plus ``mlflow_run_id``). ``prior``: see :func:`fit_map_from_store`.
    """
    previous, prev_meta = load_map(update, storage_options) if update else (None, None)
    m = fit_map_from_store(store, network, config, previous, storage_options, prior)
    sources = [*prev_meta["sources"], store] if prev_meta else [store]
    version = int(prev_meta["map_version"]) + 1 if prev_meta else 1
    meta = save_map(m, out, sources, version, storage_options)
    if log_mlflow:
        meta["mlflow_run_id"] = log_map_to_mlflow(meta, out, tracking_uri)
    return meta


def run_map_show(uri: str, out_dir: str | Path, storage_options: dict[str, Any] | None = None) -> list[Path]:
    """Draw every receiver's field of the map at ``uri`` into ``out_dir``."""
    m, _ = load_map(uri, storage_options)
    return draw_maps(m, out_dir)
