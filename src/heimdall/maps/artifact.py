"""The radio-map artifact: a folder (local or ``s3://``) with the grids and their JSON metadata.

Layout::

    URI/maps.npz     field mean / variance grids (band, R, n_north, n_east), path-loss coefficients,
                     the fitted labels' observations and estimated powers (for ``--update``)
    URI/map.json     metadata, written LAST: a reader never sees a half-written map

The metadata names the network, the local frame, the grid, N labels, the
estimated hyper-parameters, the held-out fit residuals, the session ids of the
labels left out as wrong (``outlier_session_ids``; their count is the metric
``n_outliers``), the map version (1, then +1 per update), the creation time and
the labelled stores used.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
from typing import Any

import numpy as np

from heimdall.data.fs import is_remote, join, load_json_object, open_fs
from heimdall.errors import HeimdallError
from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import RadioMap, previous_held
from heimdall.maps.grid import MapGrid
from heimdall.maps.kriging import FieldHyper
from heimdall.maps.observations import BANDS, LabelledObservations
from heimdall.network import Network
from heimdall.tracking_store import resolve_tracking_uri

FORMAT = "heimdall-radio-map"
FORMAT_VERSION = 1
ARRAYS = "maps.npz"
METADATA = "map.json"


def map_metadata(m: RadioMap, sources: list[str], version: int) -> dict[str, Any]:
    """The JSON metadata of a map (plain types only)."""
    from heimdall import __version__

    frame = m.network.frame
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "map_version": int(version),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "heimdall_version": __version__,
        "network": m.network.model_dump(mode="json"),
        "frame": {"ref_lat_deg": frame.ref_lat_deg, "ref_lon_deg": frame.ref_lon_deg},
        "grid": m.grid.to_json(),
        "receivers": m.network.ids,
        "n_labels": m.n_labels,
        "hyper": {
            "sigma_db": m.hyper.sigma_db,
            "corr_km": m.hyper.corr_km,
            "nugget_db": m.hyper.nugget_db,
            "band_corr": m.hyper.band_corr,
            "common_var_db2": m.hyper.common_var_db2,
        },
        "bands": list(BANDS),
        "pathloss_knots_km": list(m.knots_km),
        "power_range_dbm": list(m.config.power_range_dbm),
        "config": m.config.model_dump(mode="json"),
        "metrics": {k: v for k, v in m.metrics.items() if not k.startswith("_")},
        "outlier_session_ids": m.outlier_session_ids,
        "sources": sources,
    }


def _put(fs: Any, path: str, data: bytes, remote: bool) -> None:
    if remote:
        fs.pipe_file(path, data)  # an S3 PUT is atomic
        return
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def save_map(
    m: RadioMap,
    uri: str,
    sources: list[str] | None = None,
    version: int = 1,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the map to ``uri`` (arrays first, metadata last); returns the metadata."""
    fs, root = open_fs(uri, storage_options)
    remote = is_remote(uri)
    if not remote:
        fs.makedirs(root, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "field_db": m.field_db,
        "field_var_db2": m.field_var_db2,
        "coef": np.zeros((0, 0)) if m.coef is None else m.coef,
        "power_dbm": m.power_dbm,
        **m.train.to_arrays(),
    }
    held = previous_held(m)
    if held is not None:
        arrays.update({f"held_{k}": v for k, v in held.to_arrays().items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _put(fs, join(root, ARRAYS), buf.getvalue(), remote)
    meta = map_metadata(m, sources or [], version)
    _put(fs, join(root, METADATA), json.dumps(meta, indent=1, allow_nan=True).encode(), remote)
    return meta


def load_map(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[RadioMap, dict[str, Any]]:
    """Read a map and its metadata from ``uri``."""
    fs, root = open_fs(uri, storage_options)
    meta_path = join(root, METADATA)
    meta = load_json_object(lambda: fs.cat_file(meta_path), f"{uri}/{METADATA}", "radio-map metadata")
    if meta.get("format") != FORMAT:
        raise HeimdallError(f"{uri}/{METADATA}: not a radio map (format {meta.get('format')!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise HeimdallError(
            f"{uri}/{METADATA}: format_version {meta['format_version']} is newer than this Heimdall"
        )
    try:
        blob = fs.cat_file(join(root, ARRAYS))
        arrays = dict(np.load(io.BytesIO(blob)))
    except (FileNotFoundError, OSError, ValueError) as exc:
        raise HeimdallError(f"{uri}/{ARRAYS}: radio-map grids missing or corrupt ({exc})") from None
    coef = arrays["coef"]
    m = RadioMap(
        network=Network.model_validate(meta["network"]),
        grid=MapGrid(**meta["grid"]),
        hyper=FieldHyper(**meta["hyper"]),
        coef=None if coef.size == 0 else coef,
        knots_km=tuple(meta["pathloss_knots_km"]),
        field_db=_banded(arrays["field_db"]),
        field_var_db2=_banded(arrays["field_var_db2"]),
        config=MapsConfig.model_validate(meta["config"]),
        train=LabelledObservations.from_arrays(arrays),
        power_dbm=arrays["power_dbm"],
        metrics=dict(meta.get("metrics", {})),
    )
    m.outliers = np.isin(m.train.session_id, np.asarray(meta.get("outlier_session_ids", []), np.int64))
    if "held_obs_session_id" in arrays:
        m.metrics["_held"] = LabelledObservations.from_arrays(
            {k[5:]: v for k, v in arrays.items() if k.startswith("held_")}
        )
    return m, meta


def _banded(grid: np.ndarray) -> np.ndarray:
    """Field grids (band, R, n_north, n_east); a grid without a band axis serves both bands."""
    return grid if grid.ndim == 4 else np.stack([grid] * len(BANDS))


def log_map_to_mlflow(meta: dict[str, Any], uri: str, tracking_uri: str | None = None) -> str:
    """Log a map's parameters, metrics and metadata JSON to MLflow (experiment ``heimdall-maps``); run id."""
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment("heimdall-maps")
    with mlflow.start_run(run_name=f"map-{meta['network']['name']}-v{meta['map_version']}") as run:
        mlflow.log_params({
            "network": meta["network"]["name"], "map_uri": uri, "map_version": meta["map_version"],
            "n_labels": meta["n_labels"], "grid_step_km": meta["grid"]["step_km"],
            **{f"hyper_{k}": round(v, 4) for k, v in meta["hyper"].items()},
        })  # fmt: skip
        mlflow.log_metrics({k: float(v) for k, v in meta["metrics"].items() if isinstance(v, int | float)})
        mlflow.log_dict(meta, "map.json")
        return str(run.info.run_id)
