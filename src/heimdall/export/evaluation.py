"""The held-out test evaluation an export carries to the model card and the registry.

An evaluation figure is only worth quoting if the sessions behind it touched none of
training, checkpoint selection or temperature calibration (the latter two use the
validation set). ``heimdall export --evaluation report.json`` therefore reads the report
written by ``heimdall evaluate``, identifies its sessions by the store's content hash
(SHA-256 over the sessions' IQ and tables, :meth:`SessionStore.content_hash`), and
refuses it when that hash is the training or the validation set's recorded in the
model (or in its MLflow run), or when the set holds sessions an on-the-fly training
run drew (same world, world seed and a session seed in the run's training range).
What is kept, in the metadata key ``evaluation``:

- ``kind``: ``"held-out test"`` (:data:`TEST_KIND`);
- ``data``: ``uri``, ``content_hash``, ``n_sessions`` (evaluated; ``--limit`` may cut);
- ``evaluated_at`` (ISO 8601 UTC) and ``evaluated_at_source`` (the report's own field,
  else the report file's modification time);
- ``report_sha256`` of the report file; ``checked_against`` (training / validation hashes
  compared, None where unknown);
- ``model``: the model's figures (median / mean / p90 / RMSE error km, 1σ / 2σ coverage,
  NLL nats, median 1σ ellipse area km²); ``baselines``: the same for each baseline;
  ``model_minus_rss_ml_median_km`` and ``crlb_rmse_km_median`` where the report has them.

Without a test report the export stores ``evaluation: null`` and the reason under
``evaluation_status``; the training run's final validation metrics travel under
``validation``, labelled as such, never as ``evaluation``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heimdall.errors import HeimdallError

if TYPE_CHECKING:
    from heimdall.data.store import SessionStore

#: ``evaluation.kind`` of a verified held-out test evaluation.
TEST_KIND = "held-out test"
#: Why a model has no test evaluation, when the export was given none.
NO_TEST_REPORT = (
    "no held-out test evaluation was given at export (heimdall export --evaluation report.json, "
    "from heimdall evaluate on a test set); validation metrics are not test figures"
)
#: Why an evaluation summary that is not a verified test evaluation is not shown.
NOT_VERIFIED = (
    "the model's evaluation summary does not name a held-out test set (content hash, sessions, date); "
    "it is not shown as a test figure"
)
_FIGURES = (
    "n",
    "median_km",
    "mean_km",
    "p90_km",
    "rmse_km",
    "coverage_1sigma",
    "coverage_2sigma",
    "nll",
    "ellipse_area_km2_median",
)
#: Longest registry tag value written (MLflow limits tag values; the JSON must stay whole).
MAX_TAG_CHARS = 4000


def _read_report(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HeimdallError(f"evaluation report {str(path)!r} does not exist") from None
    except OSError as exc:
        raise HeimdallError(f"evaluation report {str(path)!r}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HeimdallError(f"evaluation report {str(path)!r}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HeimdallError(f"evaluation report {str(path)!r}: expected a JSON object")
    return data, raw


def _field(report: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = report.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HeimdallError(
            f"evaluation report {str(path)!r}: field {key!r} missing or not a "
            f"{getattr(kind, '__name__', kind)} (expected report.json of heimdall evaluate)"
        )
    return value


def _open_test_set(
    report: dict[str, Any], uri: str, path: Path, storage_options: dict[str, Any] | None
) -> tuple[SessionStore, str]:
    """The test store and its content hash, recomputed from the store (and checked against the report's)."""
    from heimdall.data.store import SessionStore

    stated = report.get("data_hash")
    try:
        store = SessionStore.open(uri, storage_options)
        actual = store.content_hash()
    except (HeimdallError, OSError) as exc:
        raise HeimdallError(
            f"evaluation report {str(path)!r}: its test set {uri!r} (field 'data') cannot be opened "
            f"to identify its sessions ({exc})"
        ) from None
    if stated is not None and stated != actual:
        raise HeimdallError(
            f"evaluation report {str(path)!r}: field 'data_hash' {stated} is not the content hash of {uri!r} "
            f"({actual}): the set changed since it was evaluated"
        )
    return store, actual


def training_sessions_in(store: SessionStore, metadata: dict[str, Any]) -> int:
    """How many of the store's sessions a model trained on the fly also drew for training.

    On-the-fly training simulates session seeds ``train_seed_base`` …
    ``train_seed_base + TRAIN_SEED_STRIDE - 1`` of its world (:mod:`heimdall.models.config`);
    a stored session of the same world and world seed with such a seed is one of them.
    """
    from heimdall.models.config import TRAIN_SEED_STRIDE

    base = metadata.get("train_seed_base")
    if base is None:
        return 0
    world = store.metadata.get("world")
    if world is not None and metadata.get("world") is not None and world != metadata["world"]:
        return 0
    table = store.sessions_table()
    seeds = np.asarray(table.column("session_seed"))
    worlds = np.asarray(table.column("world_seed"))
    inside = (worlds == metadata.get("world_seed")) & (seeds >= base) & (seeds < base + TRAIN_SEED_STRIDE)
    return int(inside.sum())


def _evaluated_at(report: dict[str, Any], path: Path) -> tuple[str, str]:
    stated = report.get("evaluated_at")
    if isinstance(stated, str) and stated:
        return stated, "report field 'evaluated_at'"
    when = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z"), "report file modification time"


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in _FIGURES}


def known_set_hashes(
    metadata: dict[str, Any], run_tags: dict[str, str] | None = None
) -> dict[str, str | None]:
    """Content hashes of the training and validation sets (model metadata, else MLflow run tags)."""
    tags = run_tags or {}
    return {
        "train": metadata.get("dataset_hash") or tags.get("dataset.train.hash"),
        "val": metadata.get("val_dataset_hash") or tags.get("dataset.val.hash"),
    }


def load_test_evaluation(
    path: Path,
    metadata: dict[str, Any],
    run_tags: dict[str, str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The held-out test evaluation summary of a ``heimdall evaluate`` report (schema: module docstring).

    Parameters
    ----------
    path
        ``report.json`` written by ``heimdall evaluate --model … --data TEST``.
    metadata
        The exported model's metadata (``dataset_hash``, ``val_dataset_hash``).
    run_tags
        Tags of the model's MLflow training run (``dataset.train.hash``, ``dataset.val.hash``),
        used where the metadata lacks a hash.
    storage_options
        Object-store settings to open the test set.

    Raises
    ------
    HeimdallError
        The report is not an evaluation of a model on a stored set, its set cannot be
        identified, or its set is the training or validation set (the message names the
        file and the field).

    """
    report, raw = _read_report(path)
    uri = _field(report, "data", str, path)
    n = _field(report, "n", int, path)
    estimators = _field(report, "estimators", dict, path)
    if not isinstance(estimators.get("model"), dict):
        raise HeimdallError(
            f"evaluation report {str(path)!r}: field 'estimators' has no 'model' (a baselines-only report)"
        )
    if n <= 0:
        raise HeimdallError(f"evaluation report {str(path)!r}: field 'n' is {n}: no sessions evaluated")
    store, content_hash = _open_test_set(report, uri, path, storage_options)
    known = known_set_hashes(metadata, run_tags)
    for name, label in (("train", "training"), ("val", "validation")):
        if known[name] is not None and known[name] == content_hash:
            raise HeimdallError(
                f"evaluation report {str(path)!r}: field 'data' {uri!r} has content hash {content_hash}, the "
                f"model's {label} set: its figures are not held-out test figures (evaluate on a test set "
                "that training, checkpoint selection and calibration never saw)"
            )
    shared = training_sessions_in(store, metadata)
    if shared:
        raise HeimdallError(
            f"evaluation report {str(path)!r}: field 'data' {uri!r} holds {shared} sessions of the model's "
            "world with session seeds from its on-the-fly training range (from "
            f"{metadata['train_seed_base']}): they are training sessions, not held-out test sessions"
        )
    when, source = _evaluated_at(report, path)
    out: dict[str, Any] = {
        "kind": TEST_KIND,
        "data": {"uri": uri, "content_hash": content_hash, "n_sessions": n},
        "evaluated_at": when,
        "evaluated_at_source": source,
        "report_sha256": hashlib.sha256(raw).hexdigest(),
        "checked_against": known,
        "model": _figures(estimators["model"]),
        "baselines": {
            name: _figures(s) for name, s in estimators.items() if name != "model" and isinstance(s, dict)
        },
    }
    diff = report.get("model_minus_rss_ml_median_km")
    if isinstance(diff, dict):
        out["model_minus_rss_ml_median_km"] = diff
    crlb = report.get("crlb_rmse_km")
    if isinstance(crlb, dict) and crlb.get("median") is not None:
        out["crlb_rmse_km_median"] = crlb["median"]
    return out


def is_test_evaluation(evaluation: Any) -> bool:
    """True for a summary written by :func:`load_test_evaluation` (kind, set hash, sessions, date)."""
    if not isinstance(evaluation, dict) or evaluation.get("kind") != TEST_KIND:
        return False
    data = evaluation.get("data")
    return (
        isinstance(data, dict)
        and bool(data.get("uri"))
        and bool(data.get("content_hash"))
        and isinstance(data.get("n_sessions"), int)
        and data["n_sessions"] > 0
        and bool(evaluation.get("evaluated_at"))
        and isinstance(evaluation.get("model"), dict)
    )


def card_evaluation(metadata: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The test evaluation to show for a model, or None, and a one-line status saying which.

    Anything in ``metadata["evaluation"]`` that is not a verified test summary (older
    exports stored validation metrics or free-form JSON there) is not shown.
    """
    evaluation = metadata.get("evaluation")
    if is_test_evaluation(evaluation):
        data = evaluation["data"]
        return evaluation, (
            f"held-out test set {data['uri']} (sha256 {data['content_hash'][:12]}…, "
            f"{data['n_sessions']} sessions, evaluated {evaluation['evaluated_at']})"
        )
    if evaluation is None:
        return None, str(metadata.get("evaluation_status") or NO_TEST_REPORT)
    return None, NOT_VERIFIED


def registry_tags(metadata: dict[str, Any]) -> dict[str, str]:
    """Registry version tags of the evaluation: status, set, hash, sessions, date, headline figures."""
    evaluation, status = card_evaluation(metadata)
    tags = {"evaluation.status": status[:MAX_TAG_CHARS]}
    if evaluation is None:
        tags["evaluation"] = "null"
    else:
        data, model = evaluation["data"], evaluation["model"]
        tags |= {
            "evaluation.set": TEST_KIND,
            "evaluation.data_uri": str(data["uri"]),
            "evaluation.data_hash": str(data["content_hash"]),
            "evaluation.n_sessions": str(data["n_sessions"]),
            "evaluation.evaluated_at": str(evaluation["evaluated_at"]),
        }
        for key in ("median_km", "coverage_1sigma", "coverage_2sigma"):
            if model.get(key) is not None:
                tags[f"evaluation.model.{key}"] = str(model[key])
        text = json.dumps(evaluation)
        if len(text) > MAX_TAG_CHARS:  # keep the JSON whole: drop the baselines, then the extras
            text = json.dumps({k: v for k, v in evaluation.items() if k != "baselines"})
        tags["evaluation"] = (
            text
            if len(text) <= MAX_TAG_CHARS
            else json.dumps({k: evaluation[k] for k in ("kind", "data", "evaluated_at", "model")})
        )
    validation = metadata.get("validation")
    if validation is not None:
        tags["validation"] = json.dumps(validation)[:MAX_TAG_CHARS]
    return tags


def registry_description(metadata: dict[str, Any]) -> str:
    """One sentence for the registered version's description: test figures and their set, or none."""
    evaluation, status = card_evaluation(metadata)
    if evaluation is None:
        return f"No held-out test evaluation: {status}."
    m = evaluation["model"]
    figures = ", ".join(
        f"{label} {m[key]:.3g}{unit}"
        for key, label, unit in (
            ("median_km", "median error", " km"),
            ("coverage_1sigma", "1σ coverage", ""),
            ("coverage_2sigma", "2σ coverage", ""),
        )
        if isinstance(m.get(key), int | float)
    )
    return f"Test figures ({figures}) on the {status}."
