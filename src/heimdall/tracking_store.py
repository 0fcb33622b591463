"""Where MLflow runs and the model registry live: one default for every stage.

A URI given on the command line or in a config wins, then ``MLFLOW_TRACKING_URI``, then a
sqlite file in the working folder (no server needed; MLflow's sqlite store holds the
registry too). A URI whose scheme MLflow has no store for is refused when it is resolved,
before any work is done (a training run would otherwise end in MLflow's error after it).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from heimdall.errors import HeimdallError

#: MLflow tracking store when none is given: a sqlite file in the working folder.
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
#: URI schemes of MLflow's own tracking stores ("" and "file": a local folder of runs; the
#: database schemes: SQLAlchemy stores, which hold the registry too; http(s): a tracking server).
TRACKING_SCHEMES = frozenset(
    {"", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc"}
)


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The given URI, else ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`.

    Raises
    ------
    HeimdallError
        The URI's scheme is none of :data:`TRACKING_SCHEMES` (its ``+driver`` suffix aside).

    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter, C:\runs: a local folder
        scheme = ""
    if scheme not in TRACKING_SCHEMES:
        raise HeimdallError(
            f"tracking URI {uri!r}: MLflow has no store for scheme {scheme!r} "
            "(use sqlite:///FILE.db, a folder, or http(s)://SERVER)"
        )
    return uri
