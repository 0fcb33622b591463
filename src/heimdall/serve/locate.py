"""``heimdall locate``: one session (stored or a folder of SigMF recordings) -> position and ellipses.

The answer is given in lat/lon with the 1σ and 95 % ellipses (docs/ARCHITECTURE.md §3b),
the geodesic distance and initial bearing from each receiver to the
estimate, each receiver's measured SNR and state (offline / heard / silent,
from :func:`heimdall.posterior.measure.measure_power`), and, for labelled
sessions, the truth beside the answer: the error in km and whether the truth
lies inside the 1σ and 95 % ellipses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from heimdall.data.raw import MIN_RECEIVERS
from heimdall.data.session import OFFLINE, STATE_NAMES, SessionBatch
from heimdall.errors import HeimdallError
from heimdall.export.predictor import Predictor
from heimdall.models.ellipse import SCALE_95, mahalanobis_sq
from heimdall.network.geodesy import geodesic_distance_km
from heimdall.serve.answer import answer_of, receiver_table
from heimdall.serve.posterior import Located, posterior_answer


def _sigmf_session(folder: Path, index: int | None, rate_hz: float, n_samples: int) -> SessionBatch:
    """One session of a SigMF folder, resampled to the model's rate and cut to its length."""
    from heimdall.data.raw import assemble, session_length
    from heimdall.data.sigmf_io import read_sigmf_dir

    sessions, _ = read_sigmf_dir(folder)
    if index is None and len(sessions) > 1:
        raise HeimdallError(f"{folder}: holds {len(sessions)} sessions; pick one as {folder}#INDEX")
    i = index or 0
    if not 0 <= i < len(sessions):
        raise HeimdallError(f"{folder}#{i}: index out of range (the folder holds {len(sessions)} sessions)")
    available = session_length(sessions[i], rate_hz)
    if available < n_samples:
        raise HeimdallError(
            f"{sessions[i].source}: captures give {available} samples at {rate_hz:g} Hz; "
            f"the model needs {n_samples}"
        )
    return assemble([sessions[i]], n_samples, rate_hz)


def load_session(
    source: str, sample_rate_hz: float, n_samples: int, storage_options: dict[str, Any] | None = None
) -> SessionBatch:
    """One session from a store (``URI#index``) or a SigMF folder (``FOLDER`` or ``FOLDER#index``).

    SigMF captures are resampled to ``sample_rate_hz`` and cut to ``n_samples`` (the model's);
    ``storage_options`` (endpoint, credentials) apply to ``s3://`` stores.
    """
    from heimdall.data.store import SessionStore

    base, sep, index_text = source.rpartition("#") if "#" in source else (source, "", "")
    index = None
    if sep:
        try:
            index = int(index_text)
        except ValueError:
            raise HeimdallError(
                f"{source!r}: the part after '#' must be a session index, got {index_text!r}"
            ) from None
    if Path(base).is_dir() and any(Path(base).rglob("*.sigmf-collection")):
        return _sigmf_session(Path(base), index, sample_rate_hz, n_samples)
    if index is None:
        raise HeimdallError(f"{source!r}: give a stored session as URI#index or a folder of SigMF recordings")
    store = SessionStore.open(base, storage_options)
    if not 0 <= index < len(store):
        raise HeimdallError(f"{source!r}: index {index} out of range (the store holds {len(store)} sessions)")
    return store.read([index])


def refuse_unanswerable(one: SessionBatch, detection_snr_db: float | None = None) -> None:
    """HeimdallError unless the session has :data:`MIN_RECEIVERS` online receivers that heard it.

    The service's rule (:func:`heimdall.serve.inputs.prepare_session`): with fewer, a position
    is not determined and a model would answer from its prior alone. ``detection_snr_db``: the
    model's detection threshold, dB (default the reference rule's).
    """
    from heimdall.posterior.measure import DETECTION_SNR_DB, measure_power

    ids = np.array([str(s) or f"slot {r}" for r, s in enumerate(one.rx_station[0])])
    online = one.rx_state[0] != OFFLINE
    if online.sum() < MIN_RECEIVERS:
        raise HeimdallError(
            f"session {int(one.session_id[0])}: {int(online.sum())} online receivers "
            f"({', '.join(ids[online]) or 'none'}); at least {MIN_RECEIVERS} needed"
        )
    threshold = DETECTION_SNR_DB if detection_snr_db is None else detection_snr_db
    heard = measure_power(one, detection_snr_db=threshold).heard[0] & online
    if heard.sum() < MIN_RECEIVERS:
        raise HeimdallError(
            f"session {int(one.session_id[0])}: only {int(heard.sum())} receivers heard the transmitter "
            f"({', '.join(ids[heard]) or 'none'}); at least {MIN_RECEIVERS} needed "
            f"(silent: {', '.join(ids[online & ~heard]) or 'none'})"
        )


def locate_first(predictor: Predictor, batch: SessionBatch) -> Located:
    """The model's answer for the first session of ``batch`` (one model run).

    A posterior model answers in the session's frame with its posterior map
    (``locate_one``); a Gaussian one in its own frame, without a map.
    """
    one = batch.select([0])
    refuse_unanswerable(one, getattr(predictor, "detection_snr_db", None))
    if hasattr(predictor, "locate_one"):
        mean_km, cov_km2, posterior = predictor.locate_one(one)
        return Located(mean_km, cov_km2, posterior.frame, posterior)
    mean, cov = predictor.predict(one)
    return Located(mean[0], cov[0], predictor.frame, None)


def locate_session(
    predictor: Predictor, batch: SessionBatch, located: Located | None = None
) -> dict[str, Any]:
    """Locate the first session of ``batch``; a JSON-ready result (see module docstring).

    ``located``: :func:`locate_first`'s answer when the caller already has it (no second model run).
    """
    from heimdall.posterior.measure import DETECTION_SNR_DB, measure_power

    one = batch.select([0])
    located = located or locate_first(predictor, one)
    frame, posterior = located.frame, located.posterior_map
    mean, cov = located.mean_km[None], located.cov_km2[None]
    answer = answer_of(frame, mean[0], cov[0])
    measured = measure_power(one, detection_snr_db=getattr(predictor, "detection_snr_db", DETECTION_SNR_DB))
    ids = [str(s) for s in one.rx_station[0]]
    table = receiver_table(answer, ids, one.rx_lat_deg[0], one.rx_lon_deg[0])
    for row, state, heard, snr in zip(
        table, one.rx_state[0], measured.heard[0], measured.snr_db[0], strict=True
    ):
        online = STATE_NAMES[int(state)] != "offline"
        row["state"] = ("heard" if heard else "silent") if online else "offline"
        row["snr_db"] = float(snr) if online else None
    result: dict[str, Any] = {
        **answer.as_dict(),
        "receivers": table,
        "model_version": str(getattr(predictor, "version", "checkpoint")),
    }
    if posterior is not None:
        result["posterior"] = posterior_answer(located)
    if one.labelled[0]:
        t_lat, t_lon = float(one.tx_lat_deg[0]), float(one.tx_lon_deg[0])
        east, north = frame.to_local_km(t_lat, t_lon)
        m2 = float(mahalanobis_sq(mean[0], cov[0], np.array([east, north])))
        result["truth"] = {
            "latitude": t_lat,
            "longitude": t_lon,
            "error_km": float(geodesic_distance_km(t_lat, t_lon, answer.latitude, answer.longitude)),
            "inside_1sigma": m2 <= 1.0,
            "inside_95": m2 <= SCALE_95**2,
        }
        if posterior is not None:
            t_km = np.array(posterior.frame.to_local_km(t_lat, t_lon), dtype=np.float64)
            best = result["posterior"]["map"]
            result["truth"]["map_error_km"] = float(
                geodesic_distance_km(t_lat, t_lon, best["latitude"], best["longitude"])
            )
            result["truth"]["hpd_level"] = posterior.hpd_level_of(t_km)
    return result


def write_geojson(result: dict[str, Any], path: Path) -> None:
    """Write the answer's GeoJSON (point + ellipse polygons, truth point when known) atomically."""
    collection = json.loads(json.dumps(result["geojson"]))
    if "truth" in result:
        truth = result["truth"]
        collection["features"].append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [truth["longitude"], truth["latitude"]]},
                "properties": {"name": "truth"},
            }
        )
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(collection, indent=1))
        tmp.replace(path)
    except OSError as exc:
        raise HeimdallError(f"cannot write GeoJSON {str(path)!r}: {exc.strerror}") from None


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Human-readable lines: position, ellipses, truth when known."""
    one, e95 = result["ellipse_1sigma"], result["ellipse_95"]
    lines = [
        f"latitude {result['latitude']:.5f}  longitude {result['longitude']:.5f}  "
        f"(model {result['model_version']})",
        f"1σ ellipse:  {one['semi_major_m'] / 1000:.2f} × {one['semi_minor_m'] / 1000:.2f} km, "
        f"major axis {one['orientation_deg']:.1f}° from north",
        f"95% ellipse: {e95['semi_major_m'] / 1000:.2f} × {e95['semi_minor_m'] / 1000:.2f} km",
    ]
    post = result.get("posterior")
    if post is not None:
        best = post["map"]
        lines.append(
            f"MAP      {best['latitude']:.5f}  {best['longitude']:.5f}  (the most probable position)"
        )
        for k, m in enumerate(post["modes"], 1):
            lines.append(
                f"mode {k}   {m['latitude']:.5f}  {m['longitude']:.5f}  mass {100 * m['mass']:.0f} %"
            )
        for level, region in post["hpd"].items():
            lines.append(f"{100 * float(level):.0f} % region: {region['area_km2']:.0f} km²")
    if "truth" in result:
        t = result["truth"]
        lines.append(
            f"truth    {t['latitude']:.5f}  {t['longitude']:.5f}: error {t['error_km']:.2f} km, "
            f"inside 1σ: {'yes' if t['inside_1sigma'] else 'no'}, "
            f"inside 95%: {'yes' if t['inside_95'] else 'no'}"
        )
        if "map_error_km" in t:
            inside = "yes" if t["hpd_level"] <= 0.9 else "no"
            lines.append(f"MAP error {t['map_error_km']:.2f} km; truth inside the 90 % region: {inside}")
    return lines


def receivers_table(result: dict[str, Any]) -> Any:
    """A rich table of the receivers: state, measured SNR, distance and bearing to the estimate."""
    from rich.table import Table

    table = Table("receiver", "state", "SNR dB", "distance km", "bearing °", title="receivers → estimate")
    for row in result["receivers"]:
        snr = "" if row["snr_db"] is None else f"{row['snr_db']:.1f}"
        table.add_row(
            row["receiver"], row["state"], snr, f"{row['distance_km']:.1f}", f"{row['bearing_deg']:.1f}"
        )
    return table
