"""``heimdall serve``: load an exported model once and serve it with uvicorn."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from heimdall.errors import HeimdallError

if TYPE_CHECKING:
    from heimdall.serve.page import PageConfig

#: Default limit on open connections (uvicorn's ``limit_concurrency``); beyond it uvicorn answers 503.
DEFAULT_MAX_CONNECTIONS = 100


def serve_model(
    spec: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body_bytes: int = 32 * 1024 * 1024,
    threads: int | None = None,
    tracking_uri: str | None = None,
    storage_options: dict[str, Any] | None = None,
    max_concurrent: int | None = None,
    queue_timeout_s: float | None = None,
    token: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    page: PageConfig | None = None,
) -> None:
    """Serve the ONNX model ``spec`` (path, URI or ``models:/NAME@ALIAS``) on ``host:port`` until stopped.

    The model is a Gaussian network or a grid-posterior model (``kind`` in its metadata);
    the latter answers with its posterior as well (:mod:`heimdall.serve.posterior`).

    Parameters
    ----------
    spec
        The exported model (a PyTorch checkpoint is refused: export it first).
    host, port
        Where to listen; the default binds this machine only. Any other interface is
        refused without ``token`` (:func:`heimdall.serve.auth.check_exposure`).
    max_body_bytes
        Request-size limit, bytes.
    threads
        onnxruntime intra-op threads.
    tracking_uri
        MLflow tracking URI for ``models:/`` specs.
    max_concurrent
        Requests in flight at once (default :data:`heimdall.serve.app.DEFAULT_MAX_CONCURRENT`).
    queue_timeout_s
        Wait for a free slot before 503, s (default :data:`heimdall.serve.app.DEFAULT_QUEUE_TIMEOUT_S`).
    token
        API token for ``/v1`` routes (``Authorization: Bearer <token>``); None or empty: none.
    max_connections
        Open connections at most; further ones get uvicorn's immediate 503.
    page
        The map page at ``/``: tile URL template and stored set (default: OpenStreetMap, none).

    """
    from heimdall.serve.app import DEFAULT_MAX_CONCURRENT, DEFAULT_QUEUE_TIMEOUT_S
    from heimdall.serve.auth import check_exposure, check_token

    if str(spec).endswith((".ckpt", ".pt")):
        raise HeimdallError(f"{spec}: the service runs exported models; run `heimdall export` first")
    if not 0 < port < 65536:
        raise HeimdallError(f"--port must be in 1..65535, got {port}")
    if max_body_bytes < 1024:
        raise HeimdallError(f"--max-body-mb must allow at least 1 KiB, got {max_body_bytes} bytes")
    max_concurrent = DEFAULT_MAX_CONCURRENT if max_concurrent is None else max_concurrent
    queue_timeout_s = DEFAULT_QUEUE_TIMEOUT_S if queue_timeout_s is None else queue_timeout_s
    if max_concurrent < 1:
        raise HeimdallError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    if not 0.0 <= queue_timeout_s <= 600.0:
        raise HeimdallError(f"--queue-timeout must be in 0..600 s, got {queue_timeout_s:g}")
    if max_connections <= max_concurrent:
        raise HeimdallError(
            f"--max-connections ({max_connections}) must exceed --max-concurrent ({max_concurrent})"
        )
    token = check_token(token)
    warning = check_exposure(host, token)  # refuses a non-loopback host without a token
    if warning:
        print(warning, file=sys.stderr, flush=True)

    import uvicorn

    from heimdall.export.predictor import OnnxPredictor, load_predictor
    from heimdall.models.grid_predictor import GridPosteriorPredictor
    from heimdall.serve.app import create_app

    predictor = load_predictor(
        spec, storage_options=storage_options, tracking_uri=tracking_uri, threads=threads
    )
    assert isinstance(predictor, OnnxPredictor | GridPosteriorPredictor)
    app = create_app(
        predictor,
        max_body_bytes=max_body_bytes,
        max_concurrent=max_concurrent,
        queue_timeout_s=queue_timeout_s,
        token=token,
        page=page,
    )
    guard = "API token required on /v1" if token else "no API token"
    print(
        f"serving {predictor.version} from {spec} on http://{host}:{port} (docs at /docs; {guard}; "
        f"{max_concurrent} requests at once, queue timeout {queue_timeout_s:g} s)",
        flush=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        limit_concurrency=max_connections,
    )
