"""An honest model card: test figures from a held-out set only (which set, how many sessions, when).

The tiny model of ``conftest.trained`` was trained on simulated sessions and selected and
calibrated on ``trained.val_uri``. A separate stored set (other session seeds) is the test
set. The card and the registry must carry figures of that set with its content hash, or
say that there are none; a report on the validation (or training) set is refused. Also:
``export --run latest`` looks only in the configured training experiment.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from heimdall.cli import main
from heimdall.data.store import SessionStore
from heimdall.errors import HeimdallError
from heimdall.export.evaluation import (
    NOT_VERIFIED,
    TEST_KIND,
    card_evaluation,
    load_test_evaluation,
)
from heimdall.export.onnx import model_metadata, to_onnx_bytes
from heimdall.export.predictor import OnnxPredictor
from heimdall.export.registry import latest_training_run
from heimdall.serve.app import model_card
from heimdall.sim.simulate_job import run_simulation

from .conftest import DURATION_S, Trained

pytestmark = pytest.mark.slow
FIGURES = ("median_km", "mean_km", "p90_km", "rmse_km", "coverage_1sigma", "coverage_2sigma", "nll")


@pytest.fixture(scope="module")
def test_set(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Six sessions of the model's world with seeds neither training nor validation used."""
    out = str(tmp_path_factory.mktemp("test-set") / "test")
    run_simulation(out=out, network="nw-italy", sessions=6, world_seed=0, seed=31, duration_s=DURATION_S,
                   shard_size=6, workers=1)  # fmt: skip
    return out


def _evaluate(trained: Trained, data: str, out: Path, *extra: str) -> Path:
    main(["evaluate", "--model", str(trained.checkpoint), "--data", data, "--out", str(out),
          "--baselines", "weighted_centroid", "--json", *extra])  # fmt: skip
    return out / "report.json"


@pytest.fixture(scope="module")
def test_report(trained: Trained, test_set: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _evaluate(trained, test_set, tmp_path_factory.mktemp("eval") / "test")


def _card(onnx_path: Path) -> dict:
    return model_card(OnnxPredictor(onnx_path.read_bytes(), str(onnx_path)), 1024)


def test_card_and_registry_carry_the_held_out_test_figures(
    trained: Trained, test_set: str, test_report: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    main(["export", "--run", trained.run_id, "--evaluation", str(test_report), "--out", str(tmp_path / "m"),
          "--register", "carded", "--tracking-uri", trained.tracking_uri])  # fmt: skip
    report = json.loads(test_report.read_text())
    card = _card(tmp_path / "m" / "model.onnx")
    evaluation = card["evaluation"]
    # which set: URI and the content hash computed independently from the store
    assert evaluation["kind"] == TEST_KIND
    assert evaluation["data"] == {
        "uri": test_set,
        "content_hash": SessionStore.open(test_set).content_hash(),
        "n_sessions": 6,
    }
    assert report["n"] == 6
    # when: the report file's time (the report has no timestamp of its own), ISO 8601 UTC
    when = datetime.fromisoformat(evaluation["evaluated_at"].replace("Z", "+00:00"))
    assert abs(when.timestamp() - test_report.stat().st_mtime) < 1.0 and when.tzinfo == UTC
    # figures: the report's own, for the model and the baseline
    for key in FIGURES:
        assert evaluation["model"][key] == report["estimators"]["model"][key]
        assert (
            evaluation["baselines"]["weighted_centroid"][key]
            == report["estimators"]["weighted_centroid"][key]
        )
    # checked against both sets the model saw
    assert evaluation["checked_against"]["val"] == SessionStore.open(trained.val_uri).content_hash()
    assert evaluation["checked_against"]["train"] is not None
    assert card["evaluation_status"].startswith("held-out test set")
    # validation metrics travel labelled, not as evaluation
    assert card["validation"]["run_id"] == trained.run_id
    assert all(k.startswith("final_val_") for k in card["validation"]["metrics"])
    assert card["data"]["val_dataset_hash"] == evaluation["checked_against"]["val"]

    version = MlflowClient(trained.tracking_uri, trained.tracking_uri).get_model_version_by_alias(
        "carded", "production"
    )
    assert version.tags["evaluation.set"] == TEST_KIND
    assert version.tags["evaluation.data_uri"] == test_set
    assert version.tags["evaluation.data_hash"] == evaluation["data"]["content_hash"]
    assert version.tags["evaluation.n_sessions"] == "6"
    assert version.tags["evaluation.evaluated_at"] == evaluation["evaluated_at"]
    assert float(version.tags["evaluation.model.median_km"]) == report["estimators"]["model"]["median_km"]
    assert json.loads(version.tags["evaluation"]) == evaluation
    assert (
        "Test figures" in version.description
        and evaluation["data"]["content_hash"][:12] in version.description
    )


def test_a_report_on_the_validation_set_is_refused(
    trained: Trained, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Temperature and checkpoint were fitted on the validation set: its figures are not test figures."""
    monkeypatch.chdir(tmp_path)
    report = _evaluate(trained, trained.val_uri, tmp_path / "on-val", "--allow-overlap")  # evaluate says so
    capsys.readouterr()
    for source in (["--checkpoint", str(trained.checkpoint)], ["--run", trained.run_id]):
        with pytest.raises(SystemExit) as exc:
            main(["export", *source, "--evaluation", str(report), "--out", str(tmp_path / "m"),
                  "--tracking-uri", trained.tracking_uri])  # fmt: skip
        err = "".join(capsys.readouterr().err.split())  # rich wraps lines
        assert exc.value.code == 2
        assert "on-val/report.json" in err and "validationset" in err
        assert not (tmp_path / "m").exists()


def test_a_report_on_the_training_set_or_a_changed_set_is_refused(test_set: str, test_report: Path) -> None:
    content_hash = SessionStore.open(test_set).content_hash()
    with pytest.raises(HeimdallError, match="training set") as exc:
        load_test_evaluation(test_report, {"dataset_hash": content_hash})
    assert str(test_report) in str(exc.value)
    with pytest.raises(HeimdallError, match="validation set"):  # hash known only from the run's tags
        load_test_evaluation(test_report, {}, {"dataset.val.hash": content_hash})
    changed = test_report.with_name("changed.json")
    changed.write_text(json.dumps({**json.loads(test_report.read_text()), "data_hash": "0" * 64}))
    with pytest.raises(HeimdallError, match="'data_hash'"):
        load_test_evaluation(changed, {})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: {**r, "estimators": {"rss_ml": r["estimators"]["weighted_centroid"]}}, "no 'model'"),
        (lambda r: {k: v for k, v in r.items() if k != "data"}, "field 'data'"),
        (lambda r: {**r, "data": "/nonexistent/store"}, "cannot be opened"),
        (lambda r: {**r, "n": 0}, "no sessions"),
    ],
    ids=["baselines-only", "no-data", "absent-set", "empty"],
)
def test_reports_that_name_no_evaluated_test_set_are_refused(test_report: Path, edit, message: str) -> None:
    bad = test_report.with_name("bad.json")
    bad.write_text(json.dumps(edit(json.loads(test_report.read_text()))))
    with pytest.raises(HeimdallError, match=message):
        load_test_evaluation(bad, {})


def test_validation_metrics_posing_as_evaluation_are_not_shown(
    trained_model, trained: Trained, tmp_path
) -> None:
    """Older exports stored the run's validation metrics as ``evaluation``; the card does not show them."""
    posing = {"run_id": trained.run_id, "metrics": {"final_val_median_error_km": 30.0}}
    metadata = model_metadata(trained_model, posing)
    assert metadata["evaluation"] == posing  # stored as given by the low-level export ...
    card = model_card(OnnxPredictor(to_onnx_bytes(trained_model, metadata), "old.onnx"), 1024)
    assert card["evaluation"] is None and card["evaluation_status"] == NOT_VERIFIED  # ... never shown as test
    assert card_evaluation({"evaluation": None})[0] is None


def test_latest_run_is_picked_in_the_configured_experiment_only(
    trained: Trained, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A newer finished run with a model in another experiment (here a hostile one) is never picked."""
    db = tmp_path / "mlruns.db"
    shutil.copy(trained.tracking_uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    intruder = client.create_run(client.create_experiment("other", str(tmp_path / "other-artifacts")))
    marker = tmp_path / "marker"
    staged = tmp_path / "stage" / "model.pt"
    staged.parent.mkdir()

    class Payload:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    torch.save({"state_dict": Payload()}, staged)
    client.log_artifact(intruder.info.run_id, str(staged), "model")
    client.set_terminated(intruder.info.run_id)
    assert (
        client.get_run(intruder.info.run_id).info.start_time > client.get_run(trained.run_id).info.start_time
    )

    assert latest_training_run(uri, "export-test") == trained.run_id
    assert latest_training_run(uri, "other") == intruder.info.run_id
    with pytest.raises(HeimdallError, match="no experiment 'heimdall'"):  # the default config's experiment
        latest_training_run(uri)
    # through the CLI, the experiment named by the training config
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"tracking": {"uri": uri, "experiment": "export-test"}}))
    monkeypatch.chdir(tmp_path)
    main(["export", "--run", "latest", "--config", str(config), "--out", str(tmp_path / "m")])
    card = _card(tmp_path / "m" / "model.onnx")
    assert card["validation"]["run_id"] == trained.run_id
    capsys.readouterr()
    with pytest.raises(SystemExit):  # --experiment names the hostile one: its file is refused, not run
        main(["export", "--run", "latest", "--experiment", "other", "--tracking-uri", uri,
              "--out", str(tmp_path / "m2")])  # fmt: skip
    assert "refused" in capsys.readouterr().err and not marker.exists()


def test_a_set_of_on_the_fly_training_sessions_is_refused(
    trained_model, test_report: Path, test_set: str, tmp_path: Path
) -> None:
    """Stored sessions simulated with the training run's own seeds (same world) are training sessions."""
    from heimdall.models.config import TRAIN_SEED_BASE

    assert trained_model.metadata["train_seed_base"] == TRAIN_SEED_BASE  # config seed 0
    leaked = str(tmp_path / "leaked")
    run_simulation(out=leaked, network="nw-italy", sessions=2, world_seed=0, seed=TRAIN_SEED_BASE + 5,
                   duration_s=DURATION_S, shard_size=2, workers=1)  # fmt: skip
    report = tmp_path / "report.json"
    report.write_text(json.dumps({**json.loads(test_report.read_text()), "data": leaked, "n": 2}))
    with pytest.raises(HeimdallError, match=r"2 sessions .* training sessions"):
        load_test_evaluation(report, trained_model.metadata)
    # the held-out set (seeds 31..36) passes the same check
    assert load_test_evaluation(test_report, trained_model.metadata)["data"]["uri"] == test_set
