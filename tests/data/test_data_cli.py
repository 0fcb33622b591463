"""`heimdall data info` and `heimdall data split`, driven through the CLI (local and real S3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.data.session import HEARD, OFFLINE, SILENT, SessionBatch
from heimdall.data.store import SessionStore


def test_info_json_counts(
    tmp_path: Path, sessions12: SessionBatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with SessionStore.create(tmp_path / "ds", {"world_seed": 0}) as store:
        store.append_shard(0, sessions12.select(slice(0, 7)))
        store.append_shard(1, sessions12.select(slice(7, 12)))
    main(["data", "info", str(tmp_path / "ds"), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["sessions"] == 12 and info["shards"] == 2
    s = sessions12.rx_state  # counted directly from the simulated batch
    assert info["states"] == {"offline": int((s == OFFLINE).sum()), "heard": int((s == HEARD).sum()),
                              "silent": int((s == SILENT).sum())}  # fmt: skip
    assert info["labelled_fraction"] == 1.0
    assert info["snr_db_measured"]["receivers"] == int((s != OFFLINE).sum())
    assert info["content_hash"] == SessionStore.open(tmp_path / "ds").content_hash()
    main(["data", "info", str(tmp_path / "ds")])  # the table form runs too
    assert "content_hash" in capsys.readouterr().out


@pytest.mark.slow
def test_split_disjoint_seeded_over_s3(
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    sessions12: SessionBatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = str(tmp_path / "ds")
    with SessionStore.create(src, {"world_seed": 0}) as store:
        store.append_shard(0, sessions12)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint comes from the option only
    prefix = f"s3://{s3_bucket}/split"
    args = ["data", "split", src, "--out", prefix, "--fractions", "0.5,0.25,0.25", "--seed", "7",
            "--shard-size", "2", "--endpoint-url", s3_endpoint]  # fmt: skip
    main(args)
    opts = {"endpoint_url": s3_endpoint}
    parts = {name: SessionStore.open(f"{prefix}/{name}", opts) for name in ("train", "val", "test")}
    ids = {name: p.read_all().session_id for name, p in parts.items()}
    assert [len(v) for v in ids.values()] == [6, 3, 3]
    union = np.concatenate(list(ids.values()))
    np.testing.assert_array_equal(np.sort(union), np.arange(12))  # disjoint and complete
    test = parts["test"].read_all()
    np.testing.assert_array_equal(test.iq, sessions12.select(test.session_id).iq)
    assert parts["val"].metadata["split"]["name"] == "val"
    first = {n: p.content_hash() for n, p in parts.items()}
    main([*args[:4], f"{prefix}-again", *args[5:]])  # same seed -> same sessions in each split
    again = {n: SessionStore.open(f"{prefix}-again/{n}", opts).content_hash() for n in parts}
    assert again == first
    for p in parts.values():
        p.close()


def test_split_bad_fractions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "split", str(tmp_path), "--out", str(tmp_path / "o"), "--fractions", "0.8,0.1"])
    assert "expected three" in capsys.readouterr().err
