"""``heimdall export``: checkpoint or training run -> checked ONNX in the object store -> registry."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from heimdall.errors import HeimdallError
from heimdall.export.onnx import ExportReport, export_model


def _load_evaluation(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise HeimdallError(f"evaluation summary {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise HeimdallError(f"evaluation summary {str(path)!r}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HeimdallError(f"evaluation summary {str(path)!r}: expected a JSON object")
    return data


def run_export(
    out: str,
    checkpoint: Path | None = None,
    run_id: str | None = None,
    register: str | None = None,
    alias: str | None = "production",
    evaluation: Path | None = None,
    tracking_uri: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ExportReport:
    """Export a model given by ``checkpoint`` or MLflow ``run_id`` to ``out`` and optionally register it.

    Parameters
    ----------
    out
        Folder / prefix (local or ``s3://``) or a ``.onnx`` path.
    checkpoint
        Lightning ``.ckpt`` or saved model file.
    run_id
        MLflow training run (or ``latest``: the newest finished run that logged a model)
        whose model artifact is exported; the ONNX file is
        logged to that run, and its metrics become the evaluation summary unless
        ``evaluation`` is given.
    register
        Registered model name (None: no registration).
    alias
        Alias pointing at the new version.
    evaluation
        JSON file with an evaluation summary to store in the metadata.
    tracking_uri
        MLflow tracking URI (default ``sqlite:///mlruns.db``).
    storage_options
        Object-store settings for ``s3://``.

    """
    from heimdall.models.predict import load_model

    if (checkpoint is None) == (run_id is None):
        raise HeimdallError("give exactly one of --checkpoint and --run")
    summary = _load_evaluation(evaluation)
    with tempfile.TemporaryDirectory() as tmp:
        if run_id is not None:
            from heimdall.export.registry import latest_training_run, run_checkpoint

            if run_id == "latest":
                run_id = latest_training_run(tracking_uri)
            checkpoint, metrics = run_checkpoint(run_id, tmp, tracking_uri)
            if summary is None and metrics:
                summary = {"run_id": run_id, "metrics": metrics}
        assert checkpoint is not None
        model = load_model(checkpoint)
    report = export_model(model, out, summary, storage_options)
    if register:
        from heimdall.export.registry import register_export

        report.registered = register_export(report, report.onnx_bytes, register, alias, run_id, tracking_uri)
    return report
