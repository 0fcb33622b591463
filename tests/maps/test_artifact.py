"""Map fit from a store: blind to simulator bookkeeping, artifact round trip (local, S3), CLI, MLflow."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from heimdall.data.session import HEARD, OFFLINE, SessionBatch
from heimdall.data.store import SessionStore
from heimdall.maps.artifact import load_map
from heimdall.maps.estimator import radio_map_posterior
from heimdall.maps.job import fit_map_from_store, fit_maps_from_store, run_map_fit
from heimdall.maps.observations import HEARD as OBS_HEARD
from heimdall.sim.simulate_job import run_simulation

CONFIG = "min_labels: 10\nholdout_fraction: 0.2\niterations: 3\n"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("lab") / "store")
    run_simulation(out, "nw-italy", 48, world_seed=3, seed=5, duration_s=0.25, shard_size=24, workers=1)
    return out


def _blank(batch: SessionBatch) -> SessionBatch:
    """Only what a real recording has: IQ, receiver metadata, label; simulator bookkeeping erased."""
    nan_s, nan_r = np.full(batch.n_sessions, np.nan), np.full(batch.rx_state.shape, np.nan)
    return dataclasses.replace(
        batch,
        world_seed=np.full(batch.n_sessions, -1), session_seed=np.full(batch.n_sessions, -1),
        tx_power_dbm=nan_s, tx_height_m=nan_s, mode=np.full(batch.n_sessions, -1, np.int8),
        rx_power_dbm=nan_r, rx_snr_db=nan_r, rx_delay_s=nan_r,
        rx_clipped=np.zeros(batch.rx_state.shape, bool),
        rx_state=np.where(batch.rx_state == OFFLINE, OFFLINE, HEARD).astype(np.int8),
    )  # fmt: skip


@pytest.mark.slow
def test_blanking_simulator_fields_leaves_fit_and_estimator_identical(labelled: str, tmp_path: Path) -> None:
    src = SessionStore.open(labelled)
    blank_uri = str(tmp_path / "blank")
    dst = SessionStore.create(blank_uri, {"network": src.metadata["network"]})
    for k, shard in enumerate(src.iter_shards()):
        dst.append_shard(k, _blank(shard))
    cfg = tmp_path / "maps.yaml"
    cfg.write_text(CONFIG)
    run_map_fit(labelled, str(tmp_path / "a"), config=cfg, log_mlflow=False)
    run_map_fit(blank_uri, str(tmp_path / "b"), config=cfg, log_mlflow=False)
    a, meta_a = load_map(str(tmp_path / "a"))
    b, meta_b = load_map(str(tmp_path / "b"))
    assert a.metrics["fitted"] and a.n_labels > 10
    for name in ("field_db", "field_var_db2", "coef", "power_dbm"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert meta_a["hyper"] == meta_b["hyper"]
    pa, pb = radio_map_posterior(a, a.train, step_km=4.0), radio_map_posterior(b, b.train, step_km=4.0)
    np.testing.assert_array_equal(pa.mean_km, pb.mean_km)
    np.testing.assert_array_equal(pa.scores.hpd_level, pb.scores.hpd_level)


def _check_round_trip(labelled: str, uri: str, tmp_path: Path, log: bool) -> None:
    cfg = tmp_path / "maps.yaml"
    cfg.write_text(CONFIG)
    meta = run_map_fit(
        labelled, uri, config=cfg, tracking_uri=f"sqlite:///{tmp_path}/mlruns.db", log_mlflow=log
    )
    m, back = load_map(uri)
    assert back["map_version"] == 1 and back["n_labels"] == m.n_labels == meta["n_labels"]
    for key in ("network", "frame", "grid", "hyper", "metrics", "created_utc", "sources"):
        assert key in back
    assert m.field_db.shape == (2, 7, back["grid"]["n_north"], back["grid"]["n_east"])  # 2 m, 70 cm
    assert np.all(m.field_var_db2 <= m.hyper.sigma_db**2 + 1e-3)
    assert m.hyper.common_var_db2 > 0.0  # the labels' powers absorbed a common field, kept with the map
    if not log:
        return
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns.db").get_run(meta["mlflow_run_id"])
    assert run.data.params["n_labels"] == str(m.n_labels)
    assert "holdout_rms_db_map" in run.data.metrics


@pytest.mark.slow
def test_round_trip_local(labelled: str, tmp_path: Path) -> None:
    _check_round_trip(labelled, str(tmp_path / "map"), tmp_path, log=True)


@pytest.mark.slow
def test_round_trip_s3(labelled: str, s3_bucket: str, tmp_path: Path) -> None:
    _check_round_trip(labelled, f"s3://{s3_bucket}/maps/v1", tmp_path, log=False)


@pytest.mark.slow
def test_one_measurement_serves_several_fits(labelled: str, tmp_path: Path) -> None:
    """fit_maps_from_store: each map equals the one fitted on its own, also where a setting measures
    the labels differently (another detection threshold: measured once per threshold)."""
    cfg = tmp_path / "maps.yaml"
    cfg.write_text(CONFIG)
    prior = {"pathloss_shape": "prior", "sigma_power_dof": True}
    plain, own = fit_maps_from_store(labelled, [None, prior], config=cfg)
    for got, alone in ((plain, fit_map_from_store(labelled, config=cfg)),
                       (own, fit_map_from_store(labelled, config=cfg, prior=prior))):  # fmt: skip
        assert got.config == alone.config
        np.testing.assert_array_equal(got.coef, alone.coef)
        np.testing.assert_array_equal(got.field_var_db2, alone.field_var_db2)
    assert own.config.pathloss_shape == "prior" and not np.array_equal(own.coef, plain.coef)
    low = {"detection_snr_db": -5.0}
    again, heard_low = fit_maps_from_store(labelled, [None, low], config=cfg)
    alone = fit_map_from_store(labelled, config=cfg, prior=low)
    np.testing.assert_array_equal(heard_low.train.state, alone.train.state)
    np.testing.assert_array_equal(heard_low.coef, alone.coef)
    np.testing.assert_array_equal(again.train.state, plain.train.state)
    assert heard_low.config.detection_snr_db == -5.0 and plain.config.detection_snr_db == 0.0
    assert np.sum(heard_low.train.state == OBS_HEARD) >= np.sum(plain.train.state == OBS_HEARD)


@pytest.mark.slow
def test_missing_map_is_a_clear_error(tmp_path: Path) -> None:
    from heimdall.errors import HeimdallError

    with pytest.raises(HeimdallError, match=r"map\.json"):
        load_map(str(tmp_path / "nothing"))
