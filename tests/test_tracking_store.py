"""The MLflow tracking URI every stage resolves: the default, the environment, and refused schemes."""

from __future__ import annotations

import pytest

from heimdall.errors import HeimdallError
from heimdall.tracking_store import DEFAULT_TRACKING_URI, resolve_tracking_uri


def test_given_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == DEFAULT_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///other.db")
    assert resolve_tracking_uri() == "sqlite:///other.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    "uri",
    ["mlruns", "/tmp/mlruns", "file:///tmp/mlruns", "postgresql+psycopg2://u@h/db", "https://mlflow.example"],
)
def test_mlflow_stores_are_accepted(uri: str) -> None:
    assert resolve_tracking_uri(uri) == uri


@pytest.mark.parametrize("uri", ["banana://x", "s3://bucket/runs", "sqllite:///typo.db"])
def test_a_scheme_mlflow_has_no_store_for_is_refused(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HeimdallError, match="MLflow has no store for scheme"):
        resolve_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # from the environment too
    with pytest.raises(HeimdallError, match=uri.split(":")[0]):
        resolve_tracking_uri()
