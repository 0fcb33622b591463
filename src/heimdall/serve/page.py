"""The map page of ``heimdall serve`` (``/``) and the routes it calls.

Routes added to the service (``/v1`` ones are guarded by the API token like the others):

- ``GET /``: the page (Leaflet, world-atlas borders and coastlines and
  topojson-client, all served from the package: ``static/vendor``, copied from
  npm at build time by ``make vendor``). Its Content-Security-Policy lets it
  reach only this server and the tile host.
- ``POST /v1/posterior``: a ``/v1/localize`` request; the same answer plus
  ``receivers`` (id, position, heard / silent / offline) and ``posterior``: the
  density as a PNG heat raster with its lat/lon bounds, the 50 % and 90 % HPD
  contours, the modes with their probability and the MAP point
  (:mod:`heimdall.serve.raster`).
- ``POST /v1/upload/sigmf``: the files of one SigMF session as base64
  (:mod:`heimdall.serve.upload`); the same answer, with the truth when the
  collection carries ``heimdall:truth``.
- ``GET /v1/sessions`` and ``GET /v1/sessions/{index}``: the stored set given
  with ``heimdall serve --data URI``, and one session's answer with its truth.

For today's Gaussian model the posterior is N(mean, Σ) evaluated by the service
on the raster; its MAP point is the mean itself (``"kind": "gaussian"``). For a
grid-posterior model it is the model's posterior on its grid
(:mod:`heimdall.serve.posterior`): the raster is its density, the HPD contours,
the modes (with their basins' probability) and the MAP point are its own
(``"kind": "grid"``), and ``regions`` holds the 50 % and 90 % regions as GeoJSON
with their areas, as in ``/v1/localize``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from heimdall.data.session import STATE_NAMES, SessionBatch
from heimdall.errors import HeimdallError
from heimdall.eval.webmap import script_json
from heimdall.models.ellipse import SCALE_95, mahalanobis_sq
from heimdall.network.geodesy import LocalFrame, geodesic_distance_km
from heimdall.serve.inputs import PreparedSession, RequestError, prepare_session
from heimdall.serve.posterior import Located, map_raster
from heimdall.serve.raster import gaussian_raster, raster_payload
from heimdall.serve.schemas import LocalizeRequest
from heimdall.serve.upload import (
    UploadRequest,
    name_receivers,
    read_upload,
    session_request,
)

#: Default basemap: OpenStreetMap's standard tiles (tile usage policy: a few users, with attribution).
DEFAULT_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = "© OpenStreetMap contributors"
#: The page's files (index.html, page.js, heimdall-map.js, page.css; vendor/ from npm).
STATIC_DIR = Path(str(resources.files("heimdall.serve") / "static"))
#: Vendor files the page needs (``make vendor`` copies them from web/node_modules).
VENDOR_FILES = ("leaflet.js", "leaflet.css", "topojson-client.min.js", "countries-50m.json")

#: The service's answers of prepared sessions, and what each was computed from.
Answerer = Callable[[list[PreparedSession]], tuple[list[dict[str, Any]], list[Located]]]


@dataclass(frozen=True)
class PageConfig:
    """What the page shows besides the model: basemap tiles and an optional stored set.

    Attributes
    ----------
    tiles
        Tile URL template (``{z}``, ``{x}``, ``{y}``, optional ``{s}``); None: borders only.
    attribution
        Attribution shown for the tiles.
    data
        Session store (folder or ``s3://`` URI) offered as a list to pick from.
    storage_options
        Object-store options for ``data``.

    """

    tiles: str | None = DEFAULT_TILES
    attribution: str = OSM_ATTRIBUTION
    data: str | None = None
    storage_options: dict[str, Any] | None = field(default=None, compare=False)


def check_tiles(template: str | None) -> str | None:
    """The tile template, checked (HeimdallError naming ``--tiles``); None or 'none' for no tiles."""
    if template is None or template.strip().lower() in ("", "none"):
        return None
    parts = urlsplit(template)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise HeimdallError(f"--tiles: {template!r} is not an http(s) URL template")
    missing = [k for k in ("{z}", "{x}", "{y}") if k not in template]
    if missing:
        raise HeimdallError(f"--tiles: {template!r} lacks {', '.join(missing)}")
    return template


def tile_origin(template: str | None) -> str:
    """The CSP source of the tile host (``{s}`` subdomains as a wildcard); '' without tiles."""
    if not template:
        return ""
    parts = urlsplit(template.replace("{s}", "tiles-subdomain"))
    return f"{parts.scheme}://{parts.netloc.replace('tiles-subdomain', '*')}"


def content_security_policy(tiles: str | None) -> str:
    """The page may load scripts, styles and data from this server only, images also from the tiles."""
    img = " ".join(x for x in ("'self'", "data:", tile_origin(tiles)) if x)
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {img}; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    )


def missing_vendor(static_dir: Path = STATIC_DIR) -> list[str]:
    """Vendor files absent from the package (the web assets were not built)."""
    return [f for f in VENDOR_FILES if not (static_dir / "vendor" / f).is_file()]


def truth_of(
    batch: SessionBatch, frame: LocalFrame, answer: dict[str, Any], mean: Any, cov: Any
) -> dict | None:
    """The labelled truth beside the answer: position, error (km), inside the 1σ and 95 % ellipses.

    ``mean`` (km) and ``cov`` (km²) are in ``frame``. For a grid answer (``answer["posterior"]``
    holding a ``map`` point) the MAP point's error is added as ``map_error_km``.
    """
    if not bool(batch.labelled[0]):
        return None
    lat, lon = float(batch.tx_lat_deg[0]), float(batch.tx_lon_deg[0])
    east, north = frame.to_local_km(lat, lon)
    m2 = float(mahalanobis_sq(mean, cov, np.array([east, north])))
    truth = {
        "latitude": lat,
        "longitude": lon,
        "error_km": float(geodesic_distance_km(lat, lon, answer["latitude"], answer["longitude"])),
        "inside_1sigma": m2 <= 1.0,
        "inside_95": m2 <= SCALE_95**2,
    }
    post = answer.get("posterior") or {}
    if post.get("kind") == "grid":
        best = post["map"]
        truth["map_error_km"] = float(geodesic_distance_km(lat, lon, best["latitude"], best["longitude"]))
    return truth


def gaussian_posterior(predictor: Any, mean_km: Any, cov_km2: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """The page's ``posterior`` of a Gaussian answer: raster, HPD contours, modes, MAP point (degrees).

    The Gaussian's MAP point is its mean (the answer's latitude, longitude); the one mode is
    placed there exactly rather than at the densest pixel's centre.
    """
    payload = raster_payload(gaussian_raster(predictor.frame, mean_km, cov_km2))
    point = {"latitude": answer["latitude"], "longitude": answer["longitude"]}
    if payload["modes"]:
        payload["modes"][0].update(point)
    return {"kind": "gaussian", "map": point, **payload}


def grid_posterior(located: Located, answer: dict[str, Any]) -> dict[str, Any]:
    """The page's ``posterior`` of a grid answer: its raster, HPD contours, modes and MAP (degrees).

    The raster, and the contours traced on it, are the posterior map's density
    (:func:`heimdall.serve.posterior.map_raster`); the modes are the map's own (refined below the
    grid step, with their basins' mass as ``probability``) and the MAP point is the answer's.
    """
    pmap = located.posterior_map
    if pmap is None:
        raise ValueError("a Gaussian answer has no posterior map")
    payload = raster_payload(map_raster(pmap))
    post = answer["posterior"]
    modes = []
    for m in post["modes"]:
        density = float(np.exp(pmap.log_density_at(np.array([[m["east_km"], m["north_km"]]]))[0]))
        modes.append(
            {
                "latitude": m["latitude"],
                "longitude": m["longitude"],
                "density_per_km2": density,
                "probability": m["mass"],
            }
        )
    point = {"latitude": post["map"]["latitude"], "longitude": post["map"]["longitude"]}
    return {**payload, "kind": "grid", "map": point, "modes": modes, "regions": post["hpd"]}


def posterior_result(
    predictor: Any,
    answer: Answerer,
    request: LocalizeRequest,
    names: list[str] | None = None,
    batch: SessionBatch | None = None,
) -> dict[str, Any]:
    """The ``/v1/localize`` answer of ``request`` plus its receivers, posterior raster and truth.

    ``names`` label the receivers in refusals (requests the page built); ``batch`` is the
    session the request came from, for its truth.
    """
    try:
        prepared = prepare_session(request, predictor)
    except RequestError as exc:
        raise exc if names is None else name_receivers(exc, names) from None
    results, located = answer([prepared])
    result, loc = results[0], located[0]
    result["receivers"] = [
        {"id": rid, "latitude": float(la), "longitude": float(lo), "state": STATE_NAMES[int(s)]}
        for rid, la, lo, s in zip(
            prepared.ids, prepared.lat_deg, prepared.lon_deg, prepared.state, strict=True
        )
    ]
    if loc.posterior_map is None:
        result["posterior"] = gaussian_posterior(predictor, loc.mean_km, loc.cov_km2, result)
    else:
        result["posterior"] = grid_posterior(loc, result)
    if batch is not None:
        truth = truth_of(batch, loc.frame, result, loc.mean_km, loc.cov_km2)
        if truth is not None:
            result["truth"] = truth
    return result


def _open_store(config: PageConfig) -> Any:
    from heimdall.data.store import SessionStore

    if config.data is None:
        return None
    try:
        return SessionStore.open(config.data, config.storage_options)
    except HeimdallError as exc:
        raise HeimdallError(f"--data: {exc}") from None


def _not_found(msg: str) -> JSONResponse:
    return JSONResponse(
        status_code=404, content={"detail": [{"loc": ["path"], "msg": msg, "type": "not_found"}]}
    )


def mount_page(
    app: FastAPI,
    predictor: Any,
    answer: Answerer,
    config: PageConfig | None = None,
    token_required: bool = False,
) -> None:
    """Add the page, its static files and its ``/v1`` routes to ``app``.

    Parameters
    ----------
    app
        The service's application.
    predictor
        The exported model it serves.
    answer
        The service's answer function for prepared sessions (what ``/v1/localize`` returns).
    config
        Basemap and stored set.
    token_required
        Whether ``/v1`` routes need an API token (the page then asks for it before calling them).

    """
    config = config or PageConfig()
    tiles = check_tiles(config.tiles)
    store = _open_store(config)
    rate, n_samples = predictor.sample_rate_hz, predictor.n_samples
    page_config = {
        "basemap": {"tiles": tiles, "attribution": config.attribution if tiles else ""},
        "has_data": store is not None,
        "token_required": token_required,
    }
    csp = content_security_policy(tiles)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        missing = missing_vendor()
        if missing:
            return HTMLResponse(
                "<!DOCTYPE html><title>Heimdall</title><p>The map page's web assets are missing "
                f"({', '.join(missing)}): run <code>make vendor</code> and restart the server.</p>",
                status_code=503,
            )
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        html = html.replace("__HEIMDALL_CONFIG__", script_json(page_config))
        return HTMLResponse(
            html, headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"}
        )

    @app.post("/v1/posterior", tags=["map page"], include_in_schema=False)
    def posterior(request: LocalizeRequest) -> dict[str, Any]:
        """The answer of ``/v1/localize`` with the posterior raster, HPD contours, modes and receivers."""
        return posterior_result(predictor, answer, request)

    @app.post("/v1/upload/sigmf", tags=["map page"], include_in_schema=False)
    def upload_sigmf(upload: UploadRequest) -> dict[str, Any]:
        """Locate an uploaded SigMF session (its .sigmf-meta/.sigmf-data files, base64)."""
        batch = read_upload(upload, rate, n_samples)
        request, names = session_request(batch, predictor.network)
        result = posterior_result(predictor, answer, request, names, batch)
        result["source"] = f"upload of {len(upload.files)} files"
        return result

    @app.get("/v1/sessions", tags=["map page"], include_in_schema=False)
    def sessions() -> Any:
        """The stored set of ``heimdall serve --data``: index, session id, whether the truth is known."""
        if store is None:
            return _not_found("this server has no stored set (start it with --data URI)")
        table = store.sessions_table()
        ids = table.column("session_id").to_pylist()
        lat = np.asarray(table.column("tx_lat_deg").to_numpy(zero_copy_only=False), dtype=np.float64)
        return {
            "data": config.data,
            "sessions": [
                {"index": i, "session_id": int(sid), "labelled": bool(np.isfinite(lat[i]))}
                for i, sid in enumerate(ids)
            ],
        }

    @app.get("/v1/sessions/{index}", tags=["map page"], include_in_schema=False)
    def stored_session(index: int) -> Any:
        """One stored session's answer with its posterior and, when known, its truth."""
        if store is None:
            return _not_found("this server has no stored set (start it with --data URI)")
        if not 0 <= index < len(store):
            return _not_found(f"session index {index} out of range (the set holds {len(store)})")
        batch = store.read([index])
        request, names = session_request(batch, predictor.network)
        result = posterior_result(predictor, answer, request, names, batch)
        result["source"] = f"stored #{index} (id {int(batch.session_id[0])})"
        return result


def locate_document(
    predictor: Any, batch: SessionBatch, result: dict[str, Any], title: str, located: Located | None = None
) -> str:
    """A self-contained HTML map of ``heimdall locate``'s answer (the page's drawing, assets inlined).

    Parameters
    ----------
    predictor
        The model that answered (PyTorch or ONNX predictor).
    batch
        The located session (first of the batch).
    result
        :func:`heimdall.serve.locate.locate_session`'s answer for it.
    title
        Shown in the header (e.g. the session's source).
    located
        The model's answer that ``result`` formats (:func:`heimdall.serve.locate.locate_first`);
        None: the model runs again.

    """
    from heimdall.eval.webmap import session_document
    from heimdall.serve.locate import locate_first

    one = batch.select([0])
    located = located or locate_first(predictor, one)
    states = {row["receiver"]: row["state"] for row in result["receivers"]}
    receivers = [
        {
            "id": str(sid),
            "latitude": float(la),
            "longitude": float(lo),
            "state": states.get(str(sid), "offline"),
        }
        for sid, la, lo in zip(one.rx_station[0], one.rx_lat_deg[0], one.rx_lon_deg[0], strict=True)
        if np.isfinite(la) and np.isfinite(lo)
    ]
    doc = {
        **{k: result[k] for k in ("latitude", "longitude", "ellipse_1sigma", "ellipse_95", "geojson")},
        "model_version": result.get("model_version", ""),
        "source": title,
        "receivers": receivers,
        "posterior": gaussian_posterior(predictor, located.mean_km, located.cov_km2, result)
        if located.posterior_map is None
        else grid_posterior(located, result),
    }
    if "truth" in result:
        doc["truth"] = result["truth"]
    return session_document(doc, title)


def write_locate_html(
    predictor: Any,
    batch: SessionBatch,
    result: dict[str, Any],
    path: Path,
    title: str,
    located: Located | None = None,
) -> None:
    """Write :func:`locate_document` to ``path`` atomically (HeimdallError naming the file on failure)."""
    text = locate_document(predictor, batch, result, title, located)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise HeimdallError(f"cannot write HTML {str(path)!r}: {exc.strerror}") from None
