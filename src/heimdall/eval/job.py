"""The ``evaluate`` job: load the model, evaluate it and the baselines, write and log the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from heimdall.errors import HeimdallError
from heimdall.eval.evaluate import PredictorLike, evaluate_store, parse_baselines
from heimdall.eval.report import log_to_mlflow, write_report


def load_any_predictor(
    spec: str, storage_options: dict[str, Any] | None = None, tracking_uri: str | None = None
) -> PredictorLike:
    """A predictor from a checkpoint, an ONNX file / URI or ``models:/NAME@ALIAS`` (contracts §3)."""
    try:
        from heimdall.export.predictor import load_predictor
    except ImportError:  # the export stage is optional for evaluation
        from heimdall.models.predict import Predictor

        if not Path(spec).is_file():
            raise HeimdallError(f"--model: checkpoint {spec!r} does not exist") from None
        return Predictor.from_checkpoint(spec)
    return load_predictor(spec, storage_options=storage_options, tracking_uri=tracking_uri)


def run_evaluation(
    data: str,
    out: str | Path,
    model: str | None = None,
    baselines: str = "all",
    limit: int | None = None,
    storage_options: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    mlflow_run: str | None = None,
    plots: bool = True,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate and write ``report.json``, plots and ``report.html`` to ``out``; returns the report.

    Parameters
    ----------
    data
        Labelled session store URI.
    out
        Report folder.
    model
        Checkpoint / ONNX / ``models:/`` spec, or None for a baselines-only report.
    baselines
        ``all``, ``none`` or a comma-separated list.
    limit
        Evaluate only the first ``limit`` sessions.
    storage_options
        Object-store settings.
    tracking_uri, mlflow_run
        Log the report to this existing MLflow run.
    plots
        Draw the PNG plots.
    progress, on_total
        Progress callbacks.

    """
    names = parse_baselines(baselines)
    if model is None and not names:
        raise HeimdallError("nothing to evaluate: give --model or some --baselines")
    predictor = load_any_predictor(model, storage_options, tracking_uri) if model else None
    result = evaluate_store(data, predictor, names, limit, storage_options, progress, on_total)
    report = write_report(result, out, plots=plots)
    if mlflow_run:
        log_to_mlflow(report, out, mlflow_run, tracking_uri)
    return report
