"""``heimdall data label`` on simulated APRS traffic: counts, truth never read, resumable."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.data.session import MODES
from heimdall.data.store import SessionStore
from heimdall.labels.job import blank_truth, read_labels
from heimdall.network.geodesy import geodesic_distance_km

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("atest") is None, reason="direwolf not installed"),
]


def _json(capsys, *argv: str) -> dict:
    main(list(argv))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def aprs_store(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("aprs") / "sim")
    main(["simulate", "--mode", "aprs", "--positions", "clustered", "--sessions", "12", "--shard-size", "6",
          "--seed", "3", "--workers", "1", "--out", out])  # fmt: skip
    return out


def test_label_counts_truth_and_resume(aprs_store: str, tmp_path, capsys) -> None:
    out = str(tmp_path / "lab")
    summary = _json(capsys, "data", "label", aprs_store, "--out", out, "--json")
    assert summary["n_sessions"] == 12
    assert summary["n_labelled"] + summary["n_unlabelled"] + summary["n_coarse"] == 12
    assert summary["n_labelled"] >= 1 and "n_wrong" in summary
    src = SessionStore.open(aprs_store).read_all()
    lab = SessionStore.open(out)
    assert len(lab) == summary["n_labelled"]
    batch = lab.read_all()
    assert np.all(batch.mode == MODES.index("aprs")) and np.all(np.isnan(batch.tx_power_dbm))
    # the contract map fit reads: 99 % radius per label, burst powers where online, bookkeeping blank
    assert np.all(np.isfinite(batch.label_radius_m)) and np.all(batch.label_radius_m > 0)
    assert np.array_equal(np.isfinite(batch.rx_burst_dbfs), batch.rx_state != 0)
    assert np.all(np.isnan(batch.rx_power_dbm)) and np.all(np.isnan(batch.rx_snr_db))
    # n_wrong recounted from the truth: labels farther than their radius + 100 m
    records = {r["session_id"]: r for r in read_labels(out)}
    wrong = 0
    for r in records.values():
        i = int(np.flatnonzero(src.session_id == r["session_id"])[0])
        err_m = 1000 * geodesic_distance_km(src.tx_lat_deg[i], src.tx_lon_deg[i], r["lat_deg"], r["lon_deg"])
        wrong += int(err_m > r["radius_m"] + 100.0)
        assert r["packet"].startswith(r["source"] + ">") and r["decoded_by"]
    assert wrong == summary["n_wrong"]
    again = _json(capsys, "data", "label", aprs_store, "--out", out, "--json")
    assert again == summary


def test_blanked_truth_changes_no_label(aprs_store: str, tmp_path, capsys) -> None:
    blank = str(tmp_path / "blank")
    src = SessionStore.open(aprs_store)
    with SessionStore.create(blank, src.metadata) as dst:
        for k, shard in enumerate(src.iter_shards()):
            dst.append_shard(k, blank_truth(shard))
    a = _json(capsys, "data", "label", aprs_store, "--out", str(tmp_path / "a"), "--json")
    b = _json(capsys, "data", "label", blank, "--out", str(tmp_path / "b"), "--json")
    assert "n_wrong" not in b
    assert a["content_hash"] == b["content_hash"]
    strip = lambda recs: [{k: v for k, v in r.items() if k != "wrong"} for r in recs]  # noqa: E731
    assert strip(read_labels(str(tmp_path / "a"))) == strip(read_labels(str(tmp_path / "b")))
