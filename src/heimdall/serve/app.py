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

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from heimdall.export.predictor import OnnxPredictor
from heimdall.serve.answer import answer_of
from heimdall.serve.area import OUT_OF_AREA_MASS, RECEIVER_TOLERANCE_KM
from heimdall.serve.auth import BearerToken, document_bearer
from heimdall.serve.inputs import (
    MIN_RECEIVERS,
    PreparedSession,
    RequestError,
    prepare_session,
    stack_sessions,
)
from heimdall.serve.limits import BodySizeLimit, ConcurrencyLimit
from heimdall.serve.page import PageConfig, mount_page
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


def model_card(predictor: OnnxPredictor, max_body_bytes: int) -> dict[str, Any]:
    """What the model is for: network, trained area, data, held-out test evaluation and limits.

    ``evaluation`` holds figures from a held-out test set only (which set: URI and content
    hash, how many sessions, when), as verified at export by
    :func:`heimdall.export.evaluation.load_test_evaluation`; otherwise it is null and
    ``evaluation_status`` says why. Validation metrics (used for checkpoint selection and
    temperature calibration) appear under ``validation``, labelled, never as ``evaluation``.
    """
    from heimdall.export.evaluation import card_evaluation

    meta = predictor.metadata
    net = predictor.network
    area = predictor.area
    evaluation, evaluation_status = card_evaluation(meta)
    return {
        "model_version": predictor.version,
        "source": predictor.source,
        "size_bytes": predictor.size_bytes,
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


def _answer(predictor: OnnxPredictor, sessions: list[PreparedSession]) -> tuple[list[dict[str, Any]], float]:
    inputs = stack_sessions(sessions)
    start = time.perf_counter()
    mean, cov = predictor.run(**inputs)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    results = []
    area = predictor.area
    for k, s in enumerate(sessions):
        outside = 0.0 if area is None else area.mass_outside(mean[k], cov[k])
        results.append(
            {
                **answer_of(predictor.frame, mean[k], cov[k]).as_dict(),
                "receivers_heard": s.heard_ids,
                "receivers_silent": s.silent_ids,
                "unmapped_receivers": s.unmapped_ids,
                "out_of_area": bool(outside > OUT_OF_AREA_MASS),
                "model_version": predictor.version,
                "inference_ms": elapsed_ms / len(sessions),
            }
        )
    return results, elapsed_ms


def create_app(
    predictor: OnnxPredictor,
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
        The exported model.
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
        description="Locate a transmitter from simultaneous receiver captures, with an uncertainty ellipse. "
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

    @app.get("/v1/model")
    def model() -> dict[str, Any]:
        """Model card: network, trained area, data, evaluation summary and limits."""
        return card

    @app.post("/v1/localize", response_model=LocalizeResponse, responses=_ERRORS)
    def localize(request: LocalizeRequest) -> dict[str, Any]:
        """Locate the transmitter of one session."""
        results, _ = _answer(predictor, [prepare_session(request, predictor)])
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
        results, elapsed_ms = _answer(predictor, prepared)
        return {"results": results, "inference_ms": elapsed_ms}

    mount_page(app, predictor, lambda s: _answer(predictor, s)[0], page, token is not None)  # page at /
    # outermost last: the token is checked first, then a slot is taken, then the body is read
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(ConcurrencyLimit, max_concurrent=max_concurrent, queue_timeout_s=queue_timeout_s)
    if token is not None:
        app.add_middleware(BearerToken, token=token)
        document_bearer(app)
    return app
