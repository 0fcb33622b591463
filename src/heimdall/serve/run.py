"""``heimdall serve``: load an exported model once and serve it with uvicorn."""

from __future__ import annotations

import ctypes
import gc
import sys
from typing import TYPE_CHECKING, Any

from heimdall.errors import HeimdallError
from heimdall.serve.connections import HEADER_TIMEOUT_S, header_deadline_protocol

if TYPE_CHECKING:
    from heimdall.serve.page import PageConfig

#: Default limit on open connections (uvicorn's ``limit_concurrency``); beyond it uvicorn answers 503.
DEFAULT_MAX_CONNECTIONS = 100
#: Blocks up to this size come from malloc's heaps, not fresh mappings (glibc's largest), bytes.
HEAP_BLOCK_LIMIT_BYTES = 32 * 1024 * 1024
#: Free memory a malloc heap keeps at its top rather than handing it back to the kernel, bytes.
HEAP_KEEP_BYTES = 64 * 1024 * 1024
#: glibc ``mallopt`` parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next request; whether it took (False off glibc).

    A request allocates and frees megabytes of numpy temporaries (decoded IQ, spectra,
    graph inputs and outputs, posterior grids). By default glibc maps every block over
    128 KiB afresh and hands freed heap tops back to the kernel, so every request faulted
    its pages in again: about 2,300 page faults and 3–5 ms of kernel time per grid-posterior
    request (7 receivers × 1 s) on the 2-core development machine. Served from the heaps
    (blocks up to :data:`HEAP_BLOCK_LIMIT_BYTES`) and kept there (up to
    :data:`HEAP_KEEP_BYTES` free per heap), the memory is reused by the next request. The
    price: the resident memory stays near its peak instead of shrinking between requests.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES)
    )


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
    header_timeout_s: float = HEADER_TIMEOUT_S,
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
    header_timeout_s
        Seconds a connection has to send a request's headers, from its opening and after each
        response (then it is closed: :mod:`heimdall.serve.connections`).
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
    if not 0.0 < header_timeout_s <= 600.0:
        raise HeimdallError(f"--header-timeout must be in (0, 600] s, got {header_timeout_s:g}")
    token = check_token(token)
    warning = check_exposure(host, token)  # refuses a non-loopback host without a token
    if warning:
        print(warning, file=sys.stderr, flush=True)

    import uvicorn

    from heimdall.export.predictor import OnnxPredictor, load_predictor
    from heimdall.models.grid_predictor import GridPosteriorPredictor
    from heimdall.serve.app import create_app

    keep_freed_memory()  # before the model is loaded: every allocation of the process follows it
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
    gc.collect()
    gc.freeze()  # the model, app and imports are permanent: collections stop scanning them
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
        http=header_deadline_protocol(header_timeout_s),
    )
