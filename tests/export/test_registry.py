"""`heimdall export` through MLflow: from a training run, registered with an alias, loaded back by alias."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.errors import HeimdallError
from heimdall.export.onnx import random_inputs
from heimdall.export.predictor import OnnxPredictor, load_predictor

pytestmark = pytest.mark.slow


def test_export_run_register_and_load_by_alias(trained, tmp_path, monkeypatch, capsys) -> None:
    """Export the training run's model, register it, and get identical answers back via models:/NAME@ALIAS."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "store"
    main(
        [
            "export",
            "--run",
            trained.run_id,
            "--out",
            str(out),
            "--register",
            "tiny",
            "--alias",
            "candidate",
            "--tracking-uri",
            trained.tracking_uri,
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["registered"]["model_uri"] == "models:/tiny@candidate"
    assert printed["registered"]["run_id"] == trained.run_id

    from_file = load_predictor(str(out / "model.onnx"))
    from_registry = load_predictor("models:/tiny@candidate", tracking_uri=trained.tracking_uri)
    assert isinstance(from_registry, OnnxPredictor) and from_registry.version == "tiny/v1"
    inputs = random_inputs(from_file.metadata, 5, 7, seed=1)
    for a, b in zip(from_file.run(**inputs), from_registry.run(**inputs), strict=True):
        np.testing.assert_array_equal(a, b)

    client = MlflowClient(trained.tracking_uri, trained.tracking_uri)
    version = client.get_model_version_by_alias("tiny", "candidate")
    assert version.run_id == trained.run_id
    assert float(version.tags["ref_lat"]) == from_file.metadata["ref_lat"]
    assert version.tags["dataset_hash"] == from_file.metadata["dataset_hash"]
    assert version.tags["heimdall.uri"] == str(out / "model.onnx")
    # without a test report there is no evaluation; the run's validation metrics travel labelled as such
    assert from_registry.metadata["evaluation"] is None and version.tags["evaluation"] == "null"
    assert "no held-out test evaluation" in version.tags["evaluation.status"]
    assert "evaluation.data_hash" not in version.tags and "No held-out test evaluation" in version.description
    validation = from_registry.metadata["validation"]
    assert validation["run_id"] == trained.run_id
    assert {"final_val_median_error_km", "final_val_coverage_1sigma"} <= set(validation["metrics"])
    assert json.loads(version.tags["validation"]) == validation
    artifacts = {a.path for a in client.list_artifacts(trained.run_id, "onnx")}
    assert artifacts == {"onnx/model.onnx", "onnx/model.json"}


def test_new_version_moves_the_alias(trained, tmp_path, monkeypatch) -> None:
    """A second registration under the same name becomes version 2; the alias follows, version 1 stays."""
    monkeypatch.chdir(tmp_path)
    for k in range(2):
        main(
            [
                "export",
                "--checkpoint",
                str(trained.checkpoint),
                "--out",
                str(tmp_path / f"v{k}.onnx"),
                "--register",
                "moving",
                "--alias",
                "prod",
                "--tracking-uri",
                trained.tracking_uri,
            ]
        )
    assert load_predictor("models:/moving@prod", tracking_uri=trained.tracking_uri).version == "moving/v2"
    assert load_predictor("models:/moving/1", tracking_uri=trained.tracking_uri).version == "moving/v1"


def test_latest_run_is_the_training_run(trained) -> None:
    from heimdall.export.registry import latest_training_run

    assert latest_training_run(trained.tracking_uri, "export-test") == trained.run_id


def test_unknown_alias_and_bad_spec_are_clear_errors(trained) -> None:
    with pytest.raises(HeimdallError, match="no such registered model version"):
        load_predictor("models:/tiny@nope", tracking_uri=trained.tracking_uri)
    with pytest.raises(HeimdallError, match="expected models:/NAME@ALIAS"):
        load_predictor("models:/a/b/c", tracking_uri=trained.tracking_uri)


def test_export_needs_exactly_one_source(tmp_path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_evaluate_takes_onnx_and_registered_models(trained, tmp_path, monkeypatch, capsys) -> None:
    """`heimdall evaluate --model`: the checkpoint's figures from its ONNX export and registered version."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            "export",
            "--checkpoint",
            str(trained.checkpoint),
            "--out",
            str(tmp_path / "m"),
            "--register",
            "evaluated",
            "--tracking-uri",
            trained.tracking_uri,
        ]
    )
    capsys.readouterr()
    medians = {}
    for name, spec in [
        ("ckpt", str(trained.checkpoint)),
        ("onnx", str(tmp_path / "m" / "model.onnx")),
        ("registry", "models:/evaluated@production"),
    ]:
        main(
            [
                "evaluate",
                "--data",
                trained.val_uri,
                "--out",
                str(tmp_path / name),
                "--model",
                spec,
                "--baselines",
                "none",
                "--json",
                "--allow-overlap",  # the validation set: same figures for every form of the model
                "--tracking-uri",
                trained.tracking_uri,
            ]
        )
        medians[name] = json.loads(capsys.readouterr().out)["estimators"]["model"]["median_km"]
    assert medians["onnx"] == pytest.approx(medians["ckpt"], abs=1e-3)  # 1 m
    assert medians["registry"] == medians["onnx"]
