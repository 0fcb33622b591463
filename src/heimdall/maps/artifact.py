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

import dataclasses
import datetime as dt
import io
import json
import math
import secrets
import zipfile
import zlib
from typing import Any

import numpy as np
from pydantic import ValidationError

from heimdall.data.fs import is_remote, join, load_json_object, open_fs
from heimdall.errors import HeimdallError, describe_validation_error
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
    """Read a map and its metadata from ``uri``, checked before anything uses it.

    Parameters
    ----------
    uri
        Map folder (local or ``s3://``).
    storage_options
        Object-store settings.

    Returns
    -------
    tuple
        The map and its metadata.

    Raises
    ------
    HeimdallError
        Missing or corrupt ``map.json`` / ``maps.npz``, a required field or array missing or
        of the wrong type, arrays whose shapes disagree with the grid and the network
        (bands × receivers × n_north × n_east), or non-finite field or path-loss values: the
        message names the file and what is wrong.

    """
    fs, root = open_fs(uri, storage_options)
    meta_src = f"{uri}/{METADATA}"
    meta = load_json_object(lambda: fs.cat_file(join(root, METADATA)), meta_src, "radio-map metadata")
    if meta.get("format") != FORMAT:
        raise HeimdallError(f"{meta_src}: not a radio map (format {meta.get('format')!r})")
    version = meta.get("format_version", -1)
    if not _is_int(version):
        raise HeimdallError(f"{meta_src}: 'format_version' must be an integer, not {version!r}")
    if version > FORMAT_VERSION:
        raise HeimdallError(f"{meta_src}: format_version {version} is newer than this Heimdall")
    network, grid, hyper, knots, config = _checked_metadata(meta, meta_src)
    arrays = _read_arrays(fs, join(root, ARRAYS), f"{uri}/{ARRAYS}")
    _check_arrays(arrays, f"{uri}/{ARRAYS}", grid, len(network.receivers), len(knots))
    coef = arrays["coef"]
    m = RadioMap(
        network=network,
        grid=grid,
        hyper=hyper,
        coef=None if coef.size == 0 else coef,
        knots_km=knots,
        field_db=_banded(arrays["field_db"]),
        field_var_db2=_banded(arrays["field_var_db2"]),
        config=config,
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return _is_int(value) and abs(value) < 1e300


def _validated(model: Any, value: dict[str, Any], key: str, source: str) -> Any:
    """``model.model_validate(value)`` (a pydantic model); an invalid ``key`` is a HeimdallError."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise HeimdallError(f"{source}: invalid {key!r} ({describe_validation_error(exc)})") from None


def _require(meta: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, source: str) -> Any:
    """``meta[key]``, which must be present and of ``kind`` (``what`` describes it in the error)."""
    if key not in meta:
        raise HeimdallError(f"{source}: {key!r} missing ({what})")
    value = meta[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HeimdallError(f"{source}: {key!r} must be {what}, not {type(value).__name__} {value!r:.60}")
    return value


def _checked_metadata(
    meta: dict[str, Any], source: str
) -> tuple[Network, MapGrid, FieldHyper, tuple[float, ...], MapsConfig]:
    """The network, grid, field statistics, path-loss knots and settings of a map's metadata, checked."""
    network = _validated(
        Network, _require(meta, "network", dict, "the receiver network", source), "network", source
    )
    config = _validated(
        MapsConfig, _require(meta, "config", dict, "the fit settings", source), "config", source
    )
    fields = [f.name for f in dataclasses.fields(MapGrid)]
    grid = _require(meta, "grid", dict, f"an object with {', '.join(fields)}", source)
    if set(grid) != set(fields):
        raise HeimdallError(f"{source}: 'grid' has keys {sorted(grid)}, expected {sorted(fields)}")
    for k in ("n_east", "n_north"):
        if not _is_int(grid[k]) or grid[k] < 1:
            raise HeimdallError(f"{source}: grid.{k} must be an integer >= 1, not {grid[k]!r}")
    for k in ("east0_km", "north0_km", "step_km"):
        if not _is_number(grid[k]) or (k == "step_km" and grid[k] <= 0):
            raise HeimdallError(f"{source}: grid.{k} must be a finite number{' > 0' * (k == 'step_km')}, "
                                f"not {grid[k]!r}")  # fmt: skip
    hyper = _require(meta, "hyper", dict, "an object of field statistics", source)
    names = [f.name for f in dataclasses.fields(FieldHyper)]
    required = [f.name for f in dataclasses.fields(FieldHyper) if f.default is dataclasses.MISSING]
    if missing := [k for k in required if k not in hyper]:
        raise HeimdallError(f"{source}: hyper.{missing[0]} missing")
    if extra := sorted(set(hyper) - set(names)):
        raise HeimdallError(f"{source}: unknown hyper field(s) {extra}")
    for k, v in hyper.items():
        if not _is_number(v) or v < 0 or (k == "corr_km" and v == 0):
            raise HeimdallError(f"{source}: hyper.{k} must be a finite number >= 0 (corr_km > 0), not {v!r}")
    knots = _require(meta, "pathloss_knots_km", list, "a list of distances, km", source)
    if not all(_is_number(k) and k > 0 for k in knots):
        raise HeimdallError(f"{source}: 'pathloss_knots_km' must be finite distances > 0, not {knots!r:.80}")
    _require(meta, "map_version", int, "an integer", source)
    sources = _require(meta, "sources", list, "a list of store URIs", source)
    if not all(isinstance(s, str) for s in sources):
        raise HeimdallError(f"{source}: 'sources' must be a list of store URIs, not {sources!r:.80}")
    if not isinstance(meta.get("metrics", {}), dict):
        raise HeimdallError(f"{source}: 'metrics' must be an object, not {meta['metrics']!r:.60}")
    outliers = meta.get("outlier_session_ids", [])
    if not isinstance(outliers, list) or not all(_is_int(s) for s in outliers):
        raise HeimdallError(
            f"{source}: 'outlier_session_ids' must be a list of integers, not {outliers!r:.60}"
        )
    return network, MapGrid(**grid), FieldHyper(**hyper), tuple(float(k) for k in knots), config


def _read_arrays(fs: Any, path: str, source: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (read in full: a damaged member fails here)."""
    try:
        blob = fs.cat_file(path)
        npz = np.load(io.BytesIO(blob), allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except FileNotFoundError:
        raise HeimdallError(f"{source}: radio-map grids missing") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise HeimdallError(f"{source}: radio-map grids corrupt ({type(exc).__name__}: {exc})") from None


def _check_arrays(arrays: dict[str, np.ndarray], source: str, grid: MapGrid, n_rx: int, n_knots: int) -> None:
    """Shapes against the grid and the network (bands × receivers × grid), finite fields and path loss."""
    field = (len(BANDS), n_rx, *grid.shape)
    for name in ("field_db", "field_var_db2"):
        a = _numeric(arrays, name, source, "f")
        if a.shape not in (field, field[1:]):
            raise HeimdallError(
                f"{source}: {name!r} has shape {a.shape}, expected {field} (bands {len(BANDS)} × receivers "
                f"{n_rx} × grid n_north {grid.n_north} × n_east {grid.n_east})"
            )
        _finite(a, name, source, minimum=0.0 if name == "field_var_db2" else None)
    coef = _numeric(arrays, "coef", source, "f")
    if coef.size and coef.shape != (n_rx, 3 + n_knots):
        raise HeimdallError(
            f"{source}: 'coef' has shape {coef.shape}, expected ({n_rx}, {3 + n_knots}) "
            f"(receivers × path-loss coefficients of {n_knots} knots)"
        )
    _finite(coef, "coef", source)
    n = _check_observations(arrays, "", source, n_rx)
    power = _numeric(arrays, "power_dbm", source, "f")
    if power.shape != (n,):
        raise HeimdallError(f"{source}: 'power_dbm' has shape {power.shape}, expected ({n},) (one per label)")
    if "held_obs_session_id" in arrays:
        _check_observations(arrays, "held_", source, n_rx)


def _check_observations(arrays: dict[str, np.ndarray], prefix: str, source: str, n_rx: int) -> int:
    """Shapes of the stored labelled observations ``{prefix}obs_*``; their number of sessions."""
    n = len(_numeric(arrays, f"{prefix}obs_session_id", source, "iu"))
    shapes = {"pos_km": (n, 2), "radius_km": (n,), "y_db": (n, n_rx), "cens_db": (n, n_rx),
              "state": (n, n_rx), "band": (n,)}  # fmt: skip
    for f, shape in shapes.items():
        name = f"{prefix}obs_{f}"
        if f == "band" and name not in arrays:  # maps written before bands existed: all 2 m
            continue
        a = _numeric(arrays, name, source, "iu" if f in ("state", "band") else "f")
        if a.shape != shape:
            raise HeimdallError(
                f"{source}: {name!r} has shape {a.shape}, expected {shape} (labels × receivers)"
            )
    return n


def _numeric(arrays: dict[str, np.ndarray], name: str, source: str, kinds: str) -> np.ndarray:
    """``arrays[name]``, present and of a numpy dtype kind in ``kinds`` (``f`` float, ``i``/``u`` int)."""
    if name not in arrays:
        raise HeimdallError(f"{source}: array {name!r} missing")
    a = arrays[name]
    if a.dtype.kind not in kinds and not (kinds == "f" and a.dtype.kind in "iu"):
        raise HeimdallError(f"{source}: array {name!r} has dtype {a.dtype}, expected a numeric one ({kinds})")
    return a


def _finite(a: np.ndarray, name: str, source: str, minimum: float | None = None) -> None:
    """Refuse NaN / ±inf (and values below ``minimum``) in ``a``, naming how many."""
    bad = ~np.isfinite(a)
    if bad.any():
        raise HeimdallError(
            f"{source}: {name!r} has {int(bad.sum())} of {a.size} values not finite (NaN or inf)"
        )
    if minimum is not None and (low := int(np.sum(a < minimum))):
        raise HeimdallError(f"{source}: {name!r} has {low} of {a.size} values below {minimum:g}")


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
