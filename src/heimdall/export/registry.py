"""MLflow: log an exported model as a run artifact, register it as a version with an alias, fetch it back.

The tracking store defaults to ``sqlite:///mlruns.db`` in the working folder
(docs/ARCHITECTURE.md §7), or ``$MLFLOW_TRACKING_URI``, or any URI given
(``http://…`` for an ``mlflow server``). A registered version's ``source`` is
the run's ``onnx`` artifact folder (``model.onnx`` + ``model.json``); its tags
carry the model's metadata (reference point, sample rate, length, network,
dataset hash) and the object-store URI it was written to; the ``evaluation*``
tags and the description carry the held-out test evaluation (set URI, content
hash, sessions, date, figures) or say there is none
(:mod:`heimdall.export.evaluation`). ``--run latest`` looks only in the named
training experiment. Models come back from the registry as ONNX bytes (no
pickle); checkpoints from run artifacts go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heimdall.errors import HeimdallError
from heimdall.tracking_store import resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from heimdall.export.grid_onnx import GridExportReport
    from heimdall.export.onnx import ExportReport

EXPORT_EXPERIMENT = "heimdall-export"
ARTIFACT_DIR = "onnx"
#: A training run's model file: the Gaussian network's, or the grid-posterior model's.
MODEL_ARTIFACTS = ("model/model.pt", "model/gridnet.pt")
_SPEC = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_TAG_KEYS = ("ref_lat", "ref_lon", "sample_rate_hz", "n_samples", "network_name", "dataset_hash")


@contextmanager
def _no_download_bars() -> Iterator[None]:
    """Silence MLflow's artifact-download progress bars (stdout stays clean for --json) for one call."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An MLflow client on the resolved tracking URI (also its registry)."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _export_run(c: MlflowClient) -> str:
    exp = c.get_experiment_by_name(EXPORT_EXPERIMENT)
    exp_id = exp.experiment_id if exp is not None else c.create_experiment(EXPORT_EXPERIMENT)
    return c.create_run(exp_id, run_name="export").info.run_id


def register_export(
    report: ExportReport | GridExportReport,
    onnx_bytes: bytes,
    name: str,
    alias: str | None = "production",
    run_id: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Log ``model.onnx`` and its report as artifacts of ``run_id`` (or a new export run) and register them.

    Returns
    -------
    dict
        ``name``, ``version``, ``alias``, ``run_id``, ``source`` and ``model_uri``
        (``models:/NAME@ALIAS``, or ``models:/NAME/VERSION`` without an alias).

    """
    from mlflow.exceptions import MlflowException

    from heimdall.export.evaluation import MAX_TAG_CHARS, registry_description, registry_tags
    from heimdall.export.grid_onnx import GridExportReport

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise HeimdallError(f"--register {name!r}: use letters, digits, '_', '.', '-'")
    if alias is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", alias):
        raise HeimdallError(f"--alias {alias!r}: use letters, digits, '_', '-' (not starting with a digit)")
    c = client(tracking_uri)
    own_run = run_id is None
    try:
        run_id = run_id or _export_run(c)
        run = c.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "model.onnx").write_bytes(onnx_bytes)
            (Path(tmp) / "model.json").write_text(json.dumps(report.as_dict(), indent=1))
            c.log_artifacts(run_id, tmp, artifact_path=ARTIFACT_DIR)
        c.log_metric(run_id, "onnx_size_bytes", report.size_bytes)
        if isinstance(report, GridExportReport):
            c.log_metric(run_id, "onnx_parity_max_tv", report.parity_max_tv)
        else:
            c.log_metric(
                run_id, "onnx_parity_max_m", max((p.max_position_diff_m for p in report.parity), default=0.0)
            )
        if own_run:
            c.set_terminated(run_id)
        source = f"{run.info.artifact_uri}/{ARTIFACT_DIR}"
        meta = report.metadata
        tags = {k: str(meta[k]) for k in _TAG_KEYS if meta.get(k) is not None}
        tags |= {"heimdall.uri": report.uri, "world_seed": str(meta.get("world_seed"))}
        tags |= registry_tags(meta)
        if meta.get("kind"):
            tags["kind"] = str(meta["kind"])
        rmap = meta.get("radio_map")
        if isinstance(rmap, dict):  # which labelled data fitted the fields
            tags |= {
                "radio_map.uri": str(rmap.get("uri")),
                "radio_map.n_labels": str(rmap.get("n_labels")),
                "radio_map.sources": json.dumps(rmap.get("sources", []))[:MAX_TAG_CHARS],
            }
        try:
            c.create_registered_model(name, description="Heimdall localisation model (ONNX)")
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        version = c.create_model_version(
            name,
            source=source,
            run_id=run_id,
            tags=tags,
            description=f"ONNX opset {report.opset}, {report.size_bytes} bytes, written to {report.uri}. "
            + registry_description(meta),
        ).version
        if alias:
            c.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise HeimdallError(f"MLflow at {resolve_tracking_uri(tracking_uri)}: {exc.message}") from None
    model_uri = f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"
    return {
        "name": name,
        "version": str(version),
        "alias": alias,
        "run_id": run_id,
        "source": source,
        "model_uri": model_uri,
    }


def fetch_registered(
    spec: str, tracking_uri: str | None = None, storage_options: dict[str, Any] | None = None
) -> tuple[bytes, str]:
    """The ONNX bytes of ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` and a ``NAME/vN`` label."""
    import mlflow
    from mlflow.exceptions import MlflowException

    match = _SPEC.match(spec)
    if match is None:
        raise HeimdallError(f"{spec!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, version = match["name"], match["alias"], match["version"]
    uri = resolve_tracking_uri(tracking_uri)
    c = client(tracking_uri)
    try:
        mv = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except MlflowException:
        raise HeimdallError(f"{spec}: no such registered model version in the registry at {uri}") from None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with _no_download_bars():
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{mv.source}/model.onnx", dst_path=tmp, tracking_uri=uri
                )
            data = Path(local).read_bytes()
    except (MlflowException, OSError):
        stored = (mv.tags or {}).get("heimdall.uri")
        if not stored:
            raise HeimdallError(f"{spec}: the artifact {mv.source}/model.onnx cannot be read") from None
        from heimdall.export.predictor import read_bytes

        data = read_bytes(stored, storage_options)
    return data, f"{name}/v{mv.version}"


def default_experiment() -> str:
    """The training config's default MLflow experiment (``tracking.experiment``)."""
    from heimdall.models.config import TrackingSection

    return TrackingSection().experiment


def latest_training_run(tracking_uri: str | None = None, experiment: str | None = None) -> str:
    """Id of the newest finished run of ``experiment`` that logged a model (:data:`MODEL_ARTIFACTS`).

    Only that experiment is searched (default: :func:`default_experiment`): a newer run
    of another experiment on the same server is never picked.
    """
    from mlflow.exceptions import MlflowException

    name = experiment or default_experiment()
    uri = resolve_tracking_uri(tracking_uri)
    if name == EXPORT_EXPERIMENT:
        raise HeimdallError(f"--experiment {name!r} holds export runs, not training runs")
    c = client(tracking_uri)
    try:
        exp = c.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            raise HeimdallError(
                f"--run latest: no experiment {name!r} in {uri} (name the training experiment with "
                "--experiment, or --config for its tracking.experiment)"
            )
        runs = c.search_runs(
            [exp.experiment_id],
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
        for run in runs:
            if any(a.path in MODEL_ARTIFACTS for a in c.list_artifacts(run.info.run_id, "model")):
                return str(run.info.run_id)
    except MlflowException as exc:
        raise HeimdallError(f"MLflow at {uri}: {exc.message}") from None
    raise HeimdallError(
        f"--run latest: no finished training run with a model in experiment {name!r} at {uri}"
    )


@dataclass
class RunArtifact:
    """A training run's downloaded model file, its final metrics and its tags (dataset hashes)."""

    path: Path
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def run_checkpoint(run_id: str, dst: str, tracking_uri: str | None = None) -> RunArtifact:
    """Download the model checkpoint logged by a training run, with the run's metrics and tags.

    Takes the run's final model file (``model.pt``, temperature-calibrated), else its
    ``.ckpt`` artifact (preferring one whose name holds ``best``). The file is only
    downloaded here; it is read by :func:`heimdall.models.predict.load_model`
    (``torch.load(weights_only=True)``).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        run = c.get_run(run_id)
    except MlflowException:
        raise HeimdallError(f"no MLflow run {run_id!r} at {resolve_tracking_uri(tracking_uri)}") from None
    files: list[str] = []
    stack = [""]
    while stack:
        for info in c.list_artifacts(run_id, stack.pop() or None):
            (stack if info.is_dir else files).append(info.path)
    ranked = sorted(
        (f for f in files if f.endswith((".ckpt", ".pt"))),
        key=lambda f: (not f.endswith("model.pt"), "best" not in f, f),
    )
    if not ranked:
        raise HeimdallError(f"run {run_id}: no .ckpt or .pt artifact to export (artifacts: {files})")
    with _no_download_bars():
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=ranked[0],
            dst_path=dst,
            tracking_uri=resolve_tracking_uri(tracking_uri),
        )
    metrics = dict(run.data.metrics)
    final = {k: v for k, v in metrics.items() if k.startswith("final_val_")}
    return RunArtifact(Path(local), final or metrics, dict(run.data.tags))
