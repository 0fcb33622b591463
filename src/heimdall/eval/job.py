"""The ``evaluate`` job: load the model, evaluate it and the baselines, write and log the report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.eval.evaluate import PredictorLike, evaluate_store, parse_baselines
from heimdall.eval.provenance import check_provenance, enforce
from heimdall.eval.report import log_to_mlflow, write_report
from heimdall.eval.threads import MODEL_THREADS
from heimdall.maps.artifact import load_map
from heimdall.maps.estimator import RadioMapLocator
from heimdall.maps.job import fit_map_from_store, fit_maps_from_store


def load_any_predictor(
    spec: str, storage_options: dict[str, Any] | None = None, tracking_uri: str | None = None
) -> PredictorLike:
    """A predictor from a checkpoint, an ONNX file / URI or ``models:/NAME@ALIAS`` (docs/ARCHITECTURE.md)."""
    try:
        from heimdall.export.predictor import load_predictor
    except ImportError:  # the export stage is optional for evaluation
        from heimdall.models.predict import Predictor

        if not Path(spec).is_file():
            raise HeimdallError(f"--model: checkpoint {spec!r} does not exist") from None
        return Predictor.from_checkpoint(spec)
    # onnxruntime's intra-op pool spins like torch's: one thread (heimdall.eval.threads)
    return load_predictor(
        spec, storage_options=storage_options, tracking_uri=tracking_uri, threads=MODEL_THREADS
    )


def _radio_maps(
    labelled: str | None,
    map_uri: str | None,
    storage_options: dict[str, Any] | None,
    predictor: PredictorLike | None,
) -> tuple[RadioMapLocator | None, Any]:
    """The radio-map estimator and the map the model adapts to (None: no map, or a model that cannot).

    From ``labelled`` both are fitted from one measurement of the store: ``radio_map_kriging``'s
    as ``map fit``, the model's as ``map fit --model`` (its learnt law is the prior). From
    ``map_uri`` both are that map.
    """
    if labelled is not None and map_uri is not None:
        raise HeimdallError("give --labelled (fit a radio map) or --map (reuse a fit), not both")
    adapts = predictor is not None and hasattr(predictor, "adapt")
    if labelled is not None:
        if not adapts:
            return RadioMapLocator(fit_map_from_store(labelled, storage_options=storage_options)), None
        from heimdall.models.grid_predictor import map_prior

        plain, own = fit_maps_from_store(labelled, [None, map_prior(predictor.metadata)],
                                         storage_options=storage_options)  # fmt: skip
        return RadioMapLocator(plain), own
    if map_uri is not None:
        rmap = load_map(map_uri, storage_options)[0]
        return RadioMapLocator(rmap), rmap if adapts else None
    return None, None


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
    allow_overlap: bool = False,
    labelled: str | None = None,
    map_uri: str | None = None,
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
    allow_overlap
        Evaluate even a store that overlaps the model's training or validation data
        (:mod:`heimdall.eval.provenance`); the report's ``provenance`` says so.
    labelled
        Labelled session store: radio maps are fitted from it (the code path of
        ``map fit``) and ``radio_map_kriging`` is scored; a ``model`` must be able to adapt.
    map_uri
        A fitted radio map (``map fit --out``) to score ``radio_map_kriging`` with, instead of fitting.

    Raises
    ------
    HeimdallError
        The store overlaps the model's training (each overlap named) and
        ``allow_overlap`` is False, or other user errors.

    """
    names = parse_baselines(baselines)
    if model is None and not names and labelled is None and map_uri is None:
        raise HeimdallError("nothing to evaluate: give --model, --labelled, --map or some --baselines")
    predictor = load_any_predictor(model, storage_options, tracking_uri) if model else None
    if predictor is not None and labelled is not None and not hasattr(predictor, "adapt"):
        raise HeimdallError(
            f"--labelled: the model {model!r} cannot adapt to labelled sessions (a Gaussian network has no "
            "radio map to fit); drop --model to score the baselines with radio_map_kriging"
        )
    radio_map, model_map = _radio_maps(labelled, map_uri, storage_options, predictor)
    if model_map is not None:
        predictor = predictor.adapt(model_map, map_uri=map_uri or labelled)
    check = None
    if predictor is not None:  # refuse an overlapping store before any work (heimdall.eval.provenance)
        store = SessionStore.open(data, storage_options=storage_options)
        check = enforce(
            check_provenance(predictor.metadata, store, data, storage_options), data, allow_overlap
        )
    result = evaluate_store(data, predictor, names, limit, storage_options, progress, on_total, radio_map)
    if check is not None:
        result.provenance = check.as_dict()
        if check.overlap_allowed:
            result.notes.append("OVERLAP ALLOWED (--allow-overlap): " + "; ".join(check.overlaps))
    report = write_report(result, out, plots=plots)
    if mlflow_run:
        log_to_mlflow(report, out, mlflow_run, tracking_uri)
    return report
