"""``heimdall export``: checkpoint or training run -> checked ONNX in the object store -> registry."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from heimdall.errors import HeimdallError
from heimdall.export.onnx import ExportReport, export_model


def run_export(
    out: str,
    checkpoint: Path | None = None,
    run_id: str | None = None,
    register: str | None = None,
    alias: str | None = "production",
    evaluation: Path | None = None,
    tracking_uri: str | None = None,
    storage_options: dict[str, Any] | None = None,
    experiment: str | None = None,
) -> ExportReport:
    """Export a model given by ``checkpoint`` or MLflow ``run_id`` to ``out`` and optionally register it.

    Parameters
    ----------
    out
        Folder / prefix (local or ``s3://``) or a ``.onnx`` path.
    checkpoint
        Lightning ``.ckpt`` or saved model file (read with ``torch.load(weights_only=True)``).
    run_id
        MLflow training run, or ``latest``: the newest finished run of ``experiment`` that
        logged a model; its model artifact is exported and the ONNX file logged to it.
    register
        Registered model name (None: no registration).
    alias
        Alias pointing at the new version.
    evaluation
        ``report.json`` of ``heimdall evaluate`` on a held-out test set; refused when its
        set is the model's training or validation set (:mod:`heimdall.export.evaluation`).
        Without it the model card says there is no test evaluation.
    tracking_uri
        MLflow tracking URI (default ``sqlite:///mlruns.db``).
    storage_options
        Object-store settings for ``s3://`` (also used to open the test set).
    experiment
        Experiment searched by ``run_id="latest"`` (default: the training config's default,
        ``heimdall``).

    """
    from heimdall.export.evaluation import NO_TEST_REPORT, load_test_evaluation
    from heimdall.models.predict import load_model

    if (checkpoint is None) == (run_id is None):
        raise HeimdallError("give exactly one of --checkpoint and --run")
    if evaluation is not None and not Path(evaluation).is_file():
        raise HeimdallError(f"evaluation report {str(evaluation)!r} does not exist")
    run_tags: dict[str, str] = {}
    validation: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        if run_id is not None:
            from heimdall.export.registry import latest_training_run, run_checkpoint

            if run_id == "latest":
                run_id = latest_training_run(tracking_uri, experiment)
            artifact = run_checkpoint(run_id, tmp, tracking_uri)
            checkpoint, run_tags = artifact.path, artifact.tags
            if artifact.metrics:
                validation = {
                    "run_id": run_id,
                    "metrics": artifact.metrics,
                    "note": "validation set: used for checkpoint selection and temperature calibration; "
                    "not a test figure",
                }
        assert checkpoint is not None
        model = load_model(checkpoint)
    model.metadata.pop("evaluation", None)  # only a verified test report below may fill it
    summary = None
    if evaluation is not None:
        summary = load_test_evaluation(Path(evaluation), model.metadata, run_tags, storage_options)
    else:
        model.metadata["evaluation_status"] = NO_TEST_REPORT
    if validation is not None:
        model.metadata["validation"] = validation
    report = export_model(model, out, summary, storage_options)
    if register:
        from heimdall.export.registry import register_export

        report.registered = register_export(report, report.onnx_bytes, register, alias, run_id, tracking_uri)
    return report
