"""Crash safety: `heimdall simulate` killed with SIGKILL mid-run keeps exactly the committed shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.data.store import SessionStore
from heimdall.sim import World

N_SESSIONS = 60
SHARD = 2
ARGS = ["--sessions", str(N_SESSIONS), "--shard-size", str(SHARD), "--workers", "1", "--seed", "5"]


def _commits(out: Path) -> int:
    cdir = out / "commits"
    return len([p for p in cdir.iterdir() if p.name.endswith(".json")]) if cdir.exists() else 0


@pytest.mark.slow
def test_sigkill_loses_nothing_committed_and_resume_completes(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim"
    cmd = [sys.executable, "-m", "heimdall.cli", "simulate", "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while _commits(out) < 2:  # shard k = 1 (the second) has committed
        assert proc.poll() is None, "writer ended before it could be killed"
        assert time.monotonic() < deadline, "writer never committed two shards"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = SessionStore.open(out)
    k = len(store.committed_shards())
    assert 2 <= k < N_SESSIONS // SHARD, "the kill must land mid-run"
    assert store.committed_shards() == list(range(k))
    assert len(store) == k * SHARD
    got = store.read_all()  # every committed shard reads completely
    np.testing.assert_array_equal(got.session_id, np.arange(k * SHARD))

    main(["simulate", "--out", str(out), *ARGS])  # rerun: resumes, does not start over
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed_shards"] == k and summary["sessions"] == N_SESSIONS
    done = SessionStore.open(out)
    assert len(done) == N_SESSIONS
    ids = done.sessions_table().column("session_id").to_numpy()
    np.testing.assert_array_equal(np.sort(ids), np.arange(N_SESSIONS))  # exactly N, none duplicated
    assert len(list((out / "shards").iterdir())) == N_SESSIONS // SHARD  # orphan shard removed
    # the sessions on both sides of the kill equal an independent simulation of the same seeds
    last_before, first_after = k * SHARD - 1, k * SHARD
    ref = world.simulate(2, 5, start_index=last_before)
    np.testing.assert_array_equal(done.read([last_before, first_after]).iq, ref.iq)
