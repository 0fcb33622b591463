"""Where MLflow runs and the model registry live: one default for every stage.

A URI given on the command line or in a config wins, then ``MLFLOW_TRACKING_URI``, then a
sqlite file in the working folder (no server needed; MLflow's sqlite store holds the
registry too).
"""

from __future__ import annotations

import os

#: MLflow tracking store when none is given: a sqlite file in the working folder.
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The given URI, else ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
