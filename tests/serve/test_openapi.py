"""Schemathesis against the running service's own OpenAPI schema: every operation, all checks, no 5xx."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

# Requests valid by the schema can still be unanswerable (captures shorter than the model's, fewer than
# three receivers heard, a station not in the network ...): the service answers those with a documented
# 422 naming the field, which the positive-data check must accept. Everything else is schemathesis' default.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "413", "422"]
"""


def test_schemathesis_all_checks_every_operation(served, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    events = tmp_path / "events.ndjson"
    exe = Path(sys.executable).parent / "schemathesis"
    proc = subprocess.run(
        [
            str(exe),
            "--config-file",
            str(config),
            "run",
            f"{served.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "100",
            "--seed",
            "1",
            "--no-color",
            "--workers",
            "1",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(events),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    cases: collections.Counter[str] = collections.Counter()
    for line in events.read_text().splitlines():
        event = json.loads(line)
        if "ScenarioFinished" in event:
            recorder = event["ScenarioFinished"].get("recorder") or {}
            cases[recorder.get("label")] += len(recorder.get("cases") or {})
    assert set(cases) == {
        "POST /v1/localize",
        "POST /v1/localize/batch",
        "GET /health",
        "HEAD /health",
        "GET /v1/model",
    }
    # operations with a body get >= 100 generated cases; the two GETs take no input at all, so
    # schemathesis has only their few distinct requests (methods, headers) to send
    assert cases["POST /v1/localize"] >= 100 and cases["POST /v1/localize/batch"] >= 100
    assert min(cases["GET /health"], cases["GET /v1/model"]) >= 1
    assert httpx.get(served.url + "/health").json()["status"] == "ok"  # still up afterwards
