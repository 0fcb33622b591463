"""``heimdall export``: checkpoint or training run -> checked ONNX in the object store -> registry."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from heimdall.errors import HeimdallError
from heimdall.export.grid_onnx import GridExportReport, export_grid_model, grid_metadata
from heimdall.export.onnx import ExportReport, export_model, require_finite_parameters
from heimdall.models.grid_predictor import KIND
from heimdall.models.predict import read_checkpoint


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
    radio_map: str | None = None,
) -> ExportReport | GridExportReport:
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
    radio_map
        A fitted radio map (``heimdall map fit``) whose fields go into the graph: only for a
        grid-posterior model (the production model); None: the model without a map.

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
        payload = read_checkpoint(checkpoint)
        if payload.get("kind") == KIND:
            return _export_grid(payload, out, radio_map, evaluation, run_id, register, alias,
                                tracking_uri, storage_options, run_tags, str(checkpoint))  # fmt: skip
        if radio_map is not None:
            raise HeimdallError(
                f"--map: {checkpoint} is a Gaussian LocalizationNet: it has no fields to take a radio map; "
                "export a grid-posterior model (configs/gridnet.yaml) with --map"
            )
        model = load_model(checkpoint)
        require_finite_parameters(model, f"checkpoint {str(checkpoint)!r}")
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


def _export_grid(
    payload: dict[str, Any],
    out: str,
    radio_map: str | None,
    evaluation: Path | None,
    run_id: str | None,
    register: str | None,
    alias: str | None,
    tracking_uri: str | None,
    storage_options: dict[str, Any] | None,
    run_tags: dict[str, str],
    checkpoint: str = "checkpoint",
) -> GridExportReport:
    """Export a grid-posterior model, with the fields of ``radio_map`` when given.

    The checkpoint's parameters (named ``checkpoint`` in errors) and the map's fields
    (:func:`heimdall.maps.artifact.load_map`) must be finite.
    """
    from heimdall.export.evaluation import NO_TEST_REPORT, load_test_evaluation
    from heimdall.models.grid_predictor import N_SLOTS, training_provenance
    from heimdall.models.gridnet import gridnet_from_payload

    model, training = gridnet_from_payload(payload)
    require_finite_parameters(model, f"checkpoint {checkpoint!r}")
    map_meta = None
    n_slots = N_SLOTS
    if radio_map is not None:
        from heimdall.maps.artifact import load_map

        rmap, map_meta = load_map(radio_map, storage_options)
        if rmap.coef is None:
            raise HeimdallError(
                f"--map {radio_map}: fitted from {rmap.n_labels} labelled sessions, fewer than the fit's "
                f"min_labels ({rmap.config.min_labels}): it has no fields to put in a model"
            )
        model.load_map(rmap)
        n_slots = len(rmap.network.receivers)
    provenance = training_provenance(training)
    summary = None
    if evaluation is not None:
        summary = load_test_evaluation(Path(evaluation), provenance, run_tags, storage_options)
    metadata = grid_metadata(model, n_slots, training, map_meta, radio_map, summary)
    metadata |= provenance
    if summary is None:
        metadata["evaluation_status"] = NO_TEST_REPORT
    report = export_grid_model(model, out, metadata, storage_options)
    if register:
        from heimdall.export.registry import register_export

        report.registered = register_export(report, report.onnx_bytes, register, alias, run_id, tracking_uri)
    return report
