from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.sim.simulate_job import run_simulation

SCHEMA_METRICS = {
    "median_km", "mean_km", "p90_km", "rmse_km", "cep50_km",
    "coverage_1sigma", "coverage_2sigma", "nll", "ellipse_area_km2_median",
}  # fmt: skip


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("eval") / "sessions"
    run_simulation(
        out=str(out), network="nw-italy", sessions=24, world_seed=0, seed=77, shard_size=10, workers=1
    )
    return str(out)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An untrained LocalizationNet in the nw-italy frame (the pipeline, not its accuracy, is tested)."""
    import torch

    from heimdall.models.net import LocalizationNet
    from heimdall.models.predict import save_model
    from heimdall.network import load_network

    torch.manual_seed(0)
    net = load_network("nw-italy")
    model = LocalizationNet(metadata={"ref_lat": net.reference.lat, "ref_lon": net.reference.lon})
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path)
    return str(path)


@pytest.mark.slow
def test_cli_json_report(
    small_store: str, tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The full CLI: JSON only on stdout with the issue's schema, files written, HTML self-contained."""
    out = tmp_path / "report"
    main(
        [
            "evaluate",
            "--model",
            tiny_model,
            "--data",
            small_store,
            "--out",
            str(out),
            "--json",
            "--limit",
            "20",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 20 and report["data"] == small_store
    assert set(report["estimators"]) == {"model", "weighted_centroid", "rss_ml", "oracle_mean", "oracle_map"}
    for name, metrics in report["estimators"].items():
        assert SCHEMA_METRICS <= set(metrics), name
        assert metrics["n"] == 20 and metrics["median_km"] > 0
    assert report["estimators"]["weighted_centroid"]["coverage_1sigma"] is None
    posterior_keys = {
        "map_median_km",
        "hpd_coverage_50",
        "hpd_coverage_90",
        "hpd90_area_km2_median",
        "log_score",
    }
    for name in ("oracle_mean", "rss_ml"):  # estimators with a grid posterior
        assert posterior_keys <= set(report["estimators"][name]), name
        assert (
            0.0
            <= report["estimators"][name]["hpd_coverage_50"]
            <= report["estimators"][name]["hpd_coverage_90"]
        )
    assert (
        report["estimators"]["oracle_mean"]["map_median_km"]
        == report["estimators"]["oracle_map"]["median_km"]
    )
    assert 0.0 <= report["estimators"]["rss_ml"]["coverage_1sigma"] <= 1.0
    assert set(report["oracle_hpd_coverage"]) == {"p393", "p865"}
    assert report["crlb_rmse_km"]["median"] > 0 and isinstance(report["crlb_rmse_km"]["singular"], int)
    boot = report["model_minus_rss_ml_median_km"]
    assert boot["ci95_low_km"] <= boot["diff_km"] <= boot["ci95_high_km"]
    goals = report["model_goals"]
    assert goals["beats_rss_ml"] == (boot["ci95_high_km"] < 0)
    assert set(goals) == {"median_ratio_to_oracle_mean", "median_vs_oracle", "beats_rss_ml",
                          "coverage_overall", "coverage_strata"}  # fmt: skip
    for name in (
        "report.json",
        "report.html",
        "error_cdf.png",
        "calibration.png",
        "map.png",
        "error_heatmap.png",
    ):
        assert (out / name).stat().st_size > 0, name
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and 'src="http' not in page
    assert json.loads((out / "report.json").read_text())["estimators"] == report["estimators"]


def test_baselines_only_table(small_store: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    main(["evaluate", "--data", small_store, "--out", str(tmp_path), "--baselines",
          "weighted_centroid,rss_ml",
          "--limit", "12"])  # fmt: skip
    captured = capsys.readouterr()
    assert "evaluation of 12 sessions" in captured.out and "report.html" in captured.err
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n"] == 12 and set(report["estimators"]) == {"weighted_centroid", "rss_ml"}
    assert report["oracle_hpd_coverage"] == {"p393": None, "p865": None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baselines", "kalman"], "unknown baseline 'kalman'"),
        (["--baselines", "none"], "nothing to evaluate"),
        (["--limit", "0"], "--limit must be >= 1"),
    ],
)
def test_user_errors_are_one_line(
    small_store: str, tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--data", small_store, "--out", str(tmp_path), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_missing_store_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "evaluate",
                "--data",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "r"),
                "--baselines",
                "rss_ml",
            ]
        )
    assert exc.value.code == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_report_logged_to_mlflow(small_store: str, tmp_path: Path) -> None:
    """A real MLflow sqlite store: metrics and artifacts land in the given run."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("eval-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    main(["evaluate", "--data", small_store, "--out", str(tmp_path / "r"), "--baselines",
          "weighted_centroid,rss_ml",
          "--limit", "10", "--mlflow-run", run_id, "--tracking-uri", uri])  # fmt: skip
    metrics = client.get_run(run_id).data.metrics
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert metrics["eval.rss_ml.median_km"] == pytest.approx(report["estimators"]["rss_ml"]["median_km"])
    names = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/report.html" in names


@pytest.mark.slow
def test_oracle_hpd_coverage_is_nominal(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The check that the oracle is right, on 300 reference-world sessions.

    Tolerance: 3 binomial standard errors at n = 300 (±0.085 at 39.3 %, ±0.059 at
    86.5 %); the ±3-point check on 2,000 sessions is bench/evaluate.py.
    """
    from heimdall.eval.evaluate import evaluate_store
    from heimdall.eval.metrics import hpd_coverage

    out = tmp_path_factory.mktemp("hpd") / "sessions"
    run_simulation(out=str(out), network="nw-italy", sessions=300, world_seed=0, seed=4321, shard_size=100)
    result = evaluate_store(str(out), None, ["oracle"])
    assert result.hpd_level is not None and np.all(np.isfinite(result.hpd_level))
    cov = hpd_coverage(result.hpd_level)
    assert abs(cov["p393"] - 0.393) < 0.085
    assert abs(cov["p865"] - 0.865) < 0.059


def test_evaluates_a_store_on_s3(s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A store on a real HTTP S3 endpoint (moto_server), read through the same CLI."""
    uri = f"s3://{s3_bucket}/sessions"
    run_simulation(out=uri, network="nw-italy", sessions=6, world_seed=0, seed=5, shard_size=6, workers=1)
    main(
        [
            "evaluate",
            "--data",
            uri,
            "--out",
            str(tmp_path),
            "--baselines",
            "weighted_centroid,rss_ml",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 6 and report["data"] == uri
