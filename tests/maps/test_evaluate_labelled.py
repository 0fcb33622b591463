"""``evaluate --labelled`` / ``--map``: radio_map_kriging beside the baselines; models that cannot adapt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.errors import HeimdallError
from heimdall.sim.simulate_job import run_simulation

POSTERIOR_KEYS = (
    "median_km", "map_median_km", "hpd_coverage_50", "hpd_coverage_90", "hpd90_area_km2_median", "log_score",
)  # fmt: skip


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("evl")
    lab, test = str(root / "lab"), str(root / "test")
    run_simulation(
        lab, "nw-italy", 40, world_seed=11, seed=1, duration_s=0.25, workers=1, positions="clustered"
    )
    run_simulation(test, "nw-italy", 4, world_seed=11, seed=2, duration_s=0.25, workers=1)
    return lab, test


def _evaluate_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    main(["evaluate", *argv, "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_labelled_scores_radio_map_kriging(stores: tuple[str, str], capsys, tmp_path: Path) -> None:
    lab, test = stores
    report = _evaluate_json(capsys, "--labelled", lab, "--data", test, "--baselines", "rss_ml")
    ests = report["estimators"]
    assert report["n"] == 4
    for name in ("radio_map_kriging", "rss_ml"):
        for key in POSTERIOR_KEYS:
            assert key in ests[name], (name, key)
    rmk = ests["radio_map_kriging"]
    assert 0.0 <= rmk["hpd_coverage_50"] <= rmk["hpd_coverage_90"] <= 1.0
    assert 0.0 < rmk["hpd90_area_km2_median"] < 1e5 and np.isfinite(rmk["log_score"])
    # --map reuses a fit made by `map fit` (the same code path): the same answer
    main(["map", "fit", lab, "--out", str(tmp_path / "m"), "--tracking-uri", f"sqlite:///{tmp_path}/ml.db"])
    capsys.readouterr()
    again = _evaluate_json(capsys, "--map", str(tmp_path / "m"), "--data", test, "--baselines", "none")
    assert again["estimators"]["radio_map_kriging"]["median_km"] == pytest.approx(rmk["median_km"], abs=1e-9)


def test_labelled_with_a_model_that_cannot_adapt_is_an_error(monkeypatch, tmp_path: Path) -> None:
    """Today's Gaussian network has no radio map: ``--model M --labelled`` names why, before any work."""
    import heimdall.eval.job as job

    class Gaussian:
        frame = None
        metadata = None

        def predict(self, batch):  # pragma: no cover - never reached
            raise AssertionError("evaluated despite --labelled")

    monkeypatch.setattr(job, "load_any_predictor", lambda *a, **k: Gaussian())
    with pytest.raises(HeimdallError, match=r"--labelled: the model 'm\.ckpt' cannot adapt"):
        job.run_evaluation(str(tmp_path / "none"), tmp_path / "out", model="m.ckpt", labelled="lab")


def test_labelled_and_map_together_is_an_error(tmp_path: Path) -> None:
    import heimdall.eval.job as job

    with pytest.raises(HeimdallError, match="not both"):
        job.run_evaluation(str(tmp_path / "none"), tmp_path / "out", labelled="a", map_uri="b")
