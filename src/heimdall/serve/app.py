"""The inference service: FastAPI around one exported model run by onnxruntime (docs/ARCHITECTURE.md §6).

Routes: ``POST /v1/localize`` (one session), ``POST /v1/localize/batch``
(several, one graph run), ``GET /health``, ``GET /v1/model`` (model card) and
the OpenAPI schema at ``/openapi.json`` (docs at ``/docs``). The model is
loaded once, by the caller of :func:`create_app`. Every refusal is JSON with
a ``detail`` naming the field; nothing a client sends yields a 5xx other than
the documented 503 of a busy server (:class:`~heimdall.serve.limits.ConcurrencyLimit`).
With a token, ``/v1`` routes need ``Authorization: Bearer <token>``
(:mod:`heimdall.serve.auth`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from heimdall.serve.answer import answer_of
from heimdall.serve.area import OUT_OF_AREA_MASS, RECEIVER_TOLERANCE_KM, area_of
from heimdall.serve.auth import BearerToken, document_bearer
from heimdall.serve.inputs import (
    MIN_RECEIVERS,
    PreparedSession,
    RequestError,
    prepare_session,
)
from heimdall.serve.limits import BodySizeLimit, ConcurrencyLimit
from heimdall.serve.page import PageConfig, mount_page
from heimdall.serve.posterior import Located, edge_mass, is_grid, locate_prepared, posterior_answer
from heimdall.serve.schemas import (
    MAX_BATCH_SESSIONS,
    MAX_RECEIVERS,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    Health,
    LocalizeRequest,
    LocalizeResponse,
)
from heimdall.serve.stations import STATION_TOLERANCE_KM, accepts_unmapped

#: Default request-size limit, bytes (a batch of 32 sessions of 7 receivers × 1 s float32 at 12 kHz fits).
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
#: Default number of requests in flight at once (each holds at most one body, decoded).
DEFAULT_MAX_CONCURRENT = 4
#: Default wait for a free slot before a 503, s.
DEFAULT_QUEUE_TIMEOUT_S = 2.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Body is not decodable (e.g. not UTF-8 JSON)."},
    413: {"model": ErrorResponse, "description": "Request body over the size limit."},
    408: {"model": ErrorResponse, "description": "Request body not received within 30 s."},
    422: {"model": ErrorResponse, "description": "Invalid request; `detail[].loc` names the field."},
    401: {
        "model": ErrorResponse,
        "description": "Missing or wrong API token (only when the server has one): "
        "send `Authorization: Bearer <token>`.",
    },
    503: {
        "model": ErrorResponse,
        "description": "Busy: the limit of requests in flight was reached and no slot freed within the "
        "queue timeout; retry after the `Retry-After` header's seconds.",
    },
}


def _error_items(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's validation errors without the echoed input (IQ strings can be megabytes)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]


def _posterior_card(predictor: Any) -> dict[str, Any]:
    """How a grid-posterior model answers: its grid, receivers, and the labelled data that fitted its maps."""
    meta = predictor.metadata
    card: dict[str, Any] = {
        "coarse_step_km": predictor.coarse_step_km,
        "refine_factor": predictor.refine_factor,
        "search_area": "the radio map's area"
        if predictor.has_map
        else "the session's receivers' bounding box + 30 km",
        "receivers": "the map network's stations only"
        if predictor.has_map
        else f"any receivers, at most {predictor.n_slots} in a session",
        "hpd_levels": [0.5, 0.9],
        "n_modes": 3,
        "detection_snr_db": getattr(predictor, "detection_snr_db", None),
    }
    radio_map = meta.get("radio_map")
    card["radio_map"] = (
        None
        if radio_map is None
        else {
            k: radio_map.get(k) for k in ("uri", "map_version", "n_labels", "sources", "created_utc", "hyper")
        }
    )
    card["map_area_km"] = meta.get("map_area_km")
    return card


def model_card(predictor: Any, max_body_bytes: int) -> dict[str, Any]:
    """What the model is for: kind, network, trained area, data, held-out test evaluation and limits.

    ``kind`` is ``gaussian`` (a network answering with a mean and covariance) or
    ``grid-posterior`` (a posterior on a grid); the latter's ``posterior`` section says
    how it answers and, for a model with radio maps, which labelled data fitted them
    (``radio_map``: URI, map version, number of labelled sessions, their sources).

    ``evaluation`` holds figures from a held-out test set only (which set: URI and content
    hash, how many sessions, when), as verified at export by
    :func:`heimdall.export.evaluation.load_test_evaluation`; otherwise it is null and
    ``evaluation_status`` says why. Validation metrics (used for checkpoint selection and
    temperature calibration) appear under ``validation``, labelled, never as ``evaluation``.
    """
    from heimdall.export.evaluation import card_evaluation

    meta = predictor.metadata
    net = predictor.network
    area = area_of(predictor)
    evaluation, evaluation_status = card_evaluation(meta)
    grid = is_grid(predictor)
    return {
        "model_version": predictor.version,
        "kind": meta.get("kind") or "gaussian",
        "source": predictor.source,
        "size_bytes": getattr(predictor, "size_bytes", None),
        "posterior": _posterior_card(predictor) if grid else None,
        "network": None
        if net is None
        else {
            "name": net.name,
            "reference": {"lat": net.reference.lat, "lon": net.reference.lon},
            "receivers": [
                {"id": rx.id, "name": rx.name, "lat": rx.lat, "lon": rx.lon, "height_m": rx.height_m}
                for rx in net.receivers
            ],
        },
        "trained_area": None
        if area is None
        else {
            **area.latlon_bounds(predictor.frame),
            "receiver_tolerance_km": area.tolerance_km,
        },
        "inputs": {
            "sample_rate_hz": predictor.sample_rate_hz,
            "n_samples": predictor.n_samples,
            "duration_s": predictor.n_samples / predictor.sample_rate_hz,
            "iq_formats": ["int16", "float32"],
            "longer_captures": "trimmed to the first n_samples after resampling",
        },
        "data": {
            "training": meta.get("training") if grid else None,
            "dataset_hash": meta.get("dataset_hash"),
            "dataset_uri": meta.get("dataset_uri"),
            "val_dataset_uri": meta.get("val_dataset_uri"),
            "val_dataset_hash": meta.get("val_dataset_hash"),
            "world": meta.get("world"),
            "world_seed": meta.get("world_seed"),
        },
        "evaluation": evaluation,
        "evaluation_status": evaluation_status,
        "validation": meta.get("validation"),
        "limits": {
            "min_online_receivers": MIN_RECEIVERS,
            "min_heard_receivers": MIN_RECEIVERS,
            "max_receivers": MAX_RECEIVERS,
            "max_batch_sessions": MAX_BATCH_SESSIONS,
            "max_body_bytes": max_body_bytes,
            "receiver_tolerance_km": RECEIVER_TOLERANCE_KM,
            "note": "Accuracy figures hold for the world and network the model was trained on only.",
        },
    }


def _answer(
    predictor: Any, sessions: list[PreparedSession]
) -> tuple[list[dict[str, Any]], list[Located], float]:
    """The answers of prepared sessions, what they were computed from, and the model's run time (ms)."""
    located, elapsed_ms = locate_prepared(predictor, sessions)
    results = []
    area = area_of(predictor)
    for s, loc in zip(sessions, located, strict=True):
        if loc.posterior_map is not None:  # a grid posterior: its mass on the edge of the area it searched
            outside = edge_mass(loc.posterior_map)
        elif area is not None:  # a Gaussian: its mass outside the trained area
            outside = area.mass_outside(loc.mean_km, loc.cov_km2)
        else:
            outside = 0.0
        result = {
            **answer_of(loc.frame, loc.mean_km, loc.cov_km2).as_dict(),
            "receivers_heard": s.heard_ids,
            "receivers_silent": s.silent_ids,
            "unmapped_receivers": s.unmapped_ids,
            "out_of_area": bool(outside > OUT_OF_AREA_MASS),
            "model_version": predictor.version,
            "inference_ms": elapsed_ms / len(sessions),
        }
        if loc.posterior_map is not None:
            result["posterior"] = posterior_answer(loc, s.posterior_png)
        results.append(result)
    return results, located, elapsed_ms


def create_app(
    predictor: Any,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
    token: str | None = None,
    page: PageConfig | None = None,
) -> FastAPI:
    """The application serving ``predictor`` (already loaded), with its limits and optional token.

    Parameters
    ----------
    predictor
        The exported model: an :class:`~heimdall.export.predictor.OnnxPredictor` (Gaussian) or a
        :class:`~heimdall.models.grid_predictor.GridPosteriorPredictor` (grid posterior).
    max_body_bytes
        Largest accepted request body, bytes; larger ones get 413 before being read.
    max_concurrent
        Requests in flight at once (all routes but ``/health``).
    queue_timeout_s
        How long a further request waits for a slot, s, before 503 with ``Retry-After``.
    token
        API token required on ``/v1`` routes (``Authorization: Bearer <token>``); None: no check.
    page
        Map page at ``/``: basemap tiles and stored set (:mod:`heimdall.serve.page`).

    """
    app = FastAPI(
        title="Heimdall inference service",
        version=predictor.version,
        description="Locate a transmitter from simultaneous receiver captures, with an uncertainty ellipse "
        "(and, for a grid-posterior model, the posterior: MAP, modes, highest-density regions). "
        f"Captures are resampled to {predictor.sample_rate_hz:g} Hz; at least {predictor.n_samples} samples "
        "at that rate are needed and longer captures are trimmed to their first samples.",
    )
    card = model_card(predictor, max_body_bytes)
    card.setdefault("limits", {}).update(
        {
            "max_concurrent_requests": max_concurrent,
            "queue_timeout_s": queue_timeout_s,
            "station_tolerance_km": STATION_TOLERANCE_KM,
            "accepts_unmapped_receivers": accepts_unmapped(predictor),
            "out_of_area_mass": OUT_OF_AREA_MASS,
        }
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _error_items(exc)})

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        items = [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in exc.items]
        return JSONResponse(status_code=422, content={"detail": items})

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """Liveness and the loaded model's version."""
        return {"status": "ok", "model_version": predictor.version}

    @app.head("/health", response_model=Health)
    def health_head() -> dict[str, Any]:
        """Liveness for load balancers that probe with HEAD (headers only)."""
        return health()

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        """Model card: network, trained area, data, evaluation summary and limits."""
        return card

    @app.post("/v1/localize", response_model=LocalizeResponse, responses=_ERRORS)
    def localize(request: LocalizeRequest) -> dict[str, Any]:
        """Locate the transmitter of one session."""
        results, _, _ = _answer(predictor, [prepare_session(request, predictor)])
        return results[0]

    @app.post("/v1/localize/batch", response_model=BatchResponse, responses=_ERRORS)
    def localize_batch(request: BatchRequest) -> dict[str, Any]:
        """Locate the transmitters of several independent sessions (one graph run)."""
        prepared, errors = [], []
        for k, session in enumerate(request.sessions):
            try:
                prepared.append(prepare_session(session, predictor, ("body", "sessions", k)))
            except RequestError as exc:
                errors.extend(exc.items)
        if errors:
            raise RequestError(errors)
        results, _, elapsed_ms = _answer(predictor, prepared)
        return {"results": results, "inference_ms": elapsed_ms}

    mount_page(app, predictor, lambda s: _answer(predictor, s)[:2], page, token is not None)  # page at /
    # outermost last: the token is checked first, then a slot is taken, then the body is read
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(ConcurrencyLimit, max_concurrent=max_concurrent, queue_timeout_s=queue_timeout_s)
    if token is not None:
        app.add_middleware(BearerToken, token=token)
        document_bearer(app)
    return app
