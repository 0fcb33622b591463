"""``heimdall serve``: load an exported model once and serve it with uvicorn."""

from __future__ import annotations

from typing import Any

from heimdall.errors import HeimdallError


def serve_model(
    spec: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_body_bytes: int = 32 * 1024 * 1024,
    threads: int | None = None,
    tracking_uri: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Serve the ONNX model ``spec`` (path, URI or ``models:/NAME@ALIAS``) on ``host:port`` until stopped.

    Parameters
    ----------
    spec
        The exported model (a PyTorch checkpoint is refused: export it first).
    host, port
        Where to listen; the default binds this machine only.
    max_body_bytes
        Request-size limit, bytes.
    threads
        onnxruntime intra-op threads.
    tracking_uri
        MLflow tracking URI for ``models:/`` specs.

    """
    import uvicorn

    from heimdall.export.predictor import OnnxPredictor, load_predictor
    from heimdall.serve.app import create_app

    if str(spec).endswith((".ckpt", ".pt")):
        raise HeimdallError(f"{spec}: the service runs exported models; run `heimdall export` first")
    if not 0 < port < 65536:
        raise HeimdallError(f"--port must be in 1..65535, got {port}")
    if max_body_bytes < 1024:
        raise HeimdallError(f"--max-body-mb must allow at least 1 KiB, got {max_body_bytes} bytes")
    predictor = load_predictor(
        spec, storage_options=storage_options, tracking_uri=tracking_uri, threads=threads
    )
    assert isinstance(predictor, OnnxPredictor)
    app = create_app(predictor, max_body_bytes=max_body_bytes)
    print(f"serving {predictor.version} from {spec} on http://{host}:{port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
