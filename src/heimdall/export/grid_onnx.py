"""Export a GridPosteriorNet (with or without a radio map) to ONNX: the posterior is in the graph.

Inputs (``heimdall.models.gridnet_inputs.INPUT_NAMES``): ``y_db`` float32 [B, R],
``state`` int64 [B, R], ``cens_db`` float32 [B, R], ``rx_km`` float32 [B, R, 2],
``rx_height_m`` float32 [B, R], ``band`` int64 [B], ``points_km`` float32 [B, G, 2];
B and G are dynamic; R is fixed with a map (its receivers) and dynamic without one (at
most :data:`heimdall.models.grid_predictor.N_SLOTS`). Output ``log_post`` float32 [B, G]:
the unnormalised log posterior (nats) at the points. A radio map's path-loss coefficients and field grids are
constants of the graph. Metadata (kind, slots, network and map provenance with a map,
training provenance) is JSON under the ``heimdall`` key of ``metadata_props``.

Parity: onnxruntime against PyTorch on random observations (heard, silent, clipped,
unused slots, both bands) at random points: the normalised posteriors' total
variation must stay below :data:`PARITY_MAX_TV`.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError
from heimdall.export.onnx import OPSET, model_uri, report_dict, write_object
from heimdall.export.predictor import METADATA_KEY
from heimdall.models.grid_predictor import (
    KIND,
    GraphRunner,
    GridPosteriorPredictor,
    capture_format,
    map_metadata,
    torch_runner,
)
from heimdall.models.gridnet import GridPosteriorNet
from heimdall.models.gridnet_inputs import INPUT_NAMES

OUTPUT_NAME = "log_post"
#: Largest accepted total variation between the onnxruntime and PyTorch posteriors.
PARITY_MAX_TV = 1e-3


def _dynamic_axes(receivers_dynamic: bool) -> dict[str, dict[int, str]]:
    """Batch and points always dynamic; receivers too for a model without a map."""
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in INPUT_NAMES}
    if receivers_dynamic:
        for n in ("y_db", "state", "cens_db", "rx_km", "rx_height_m"):
            axes[n][1] = "receivers"
    axes["points_km"] = {0: "batch", 1: "points"}
    axes[OUTPUT_NAME] = {0: "batch", 1: "points"}
    return axes


@dataclass
class GridExportReport:
    """What a grid-posterior export wrote and measured."""

    uri: str
    size_bytes: int
    opset: int
    export_s: float
    parity_max_tv: float
    metadata: dict[str, Any] = field(default_factory=dict)
    registered: dict[str, Any] | None = None
    onnx_bytes: bytes = field(default=b"", repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (without the model bytes)."""
        return report_dict(self)


def random_observations(n_slots: int, batch: int, n_points: int, seed: int) -> dict[str, NDArray]:
    """Random graph inputs: receivers within 150 km, mixed states and bands, points around them."""
    rng = np.random.default_rng(seed)
    state = rng.choice([0, 1, 1, 1, 2, 3], size=(batch, n_slots)).astype(np.int64)
    state[:, 0] = 1
    return {
        "y_db": rng.uniform(-30.0, 10.0, (batch, n_slots)).astype(np.float32),
        "state": state,
        "cens_db": rng.uniform(-40.0, 0.0, (batch, n_slots)).astype(np.float32),
        "rx_km": rng.uniform(-75.0, 75.0, (batch, n_slots, 2)).astype(np.float32),
        "rx_height_m": rng.uniform(5.0, 60.0, (batch, n_slots)).astype(np.float32),
        "band": rng.integers(0, 2, batch).astype(np.int64),
        "points_km": rng.uniform(-100.0, 100.0, (batch, n_points, 2)).astype(np.float32),
    }


def to_onnx_bytes(model: GridPosteriorNet, n_slots: int, metadata: dict[str, Any]) -> bytes:
    """Export ``model`` with ``n_slots`` receiver slots and ``metadata``, checked by onnx.checker."""
    import onnx
    import torch

    example = random_observations(n_slots, 2, 5, 0)
    args = tuple(torch.from_numpy(example[n]) for n in INPUT_NAMES)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), args, buf, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes=_dynamic_axes(not model.has_map), opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    proto = onnx.load_from_string(buf.getvalue())
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata, sort_keys=True))
    proto.doc_string = "Heimdall GridPosteriorNet: measured receiver powers -> log posterior at points"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HeimdallError(f"exported ONNX graph fails onnx.checker: {exc}") from None
    return proto.SerializeToString()


def onnx_runner(
    model_bytes: bytes, source: str, threads: int | None = 1
) -> tuple[GraphRunner, dict[str, Any]]:
    """An onnxruntime runner of a grid-posterior graph and its metadata."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise HeimdallError(f"{source}: not a loadable ONNX model ({type(exc).__name__}: {exc})") from None
    names = tuple(i.name for i in session.get_inputs())
    if names != INPUT_NAMES:
        raise HeimdallError(f"{source}: ONNX inputs are {names}, expected {INPUT_NAMES}")
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise HeimdallError(
            f"{source}: ONNX file has no {METADATA_KEY!r} metadata (not exported by Heimdall)"
        )

    def run(feeds: dict[str, NDArray]) -> NDArray[np.float32]:
        return session.run([OUTPUT_NAME], {n: feeds[n] for n in INPUT_NAMES})[0]

    return run, json.loads(props[METADATA_KEY])


def posterior_tv(lp_a: NDArray[np.float64], lp_b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Total variation (B,) between two sets of unnormalised log posteriors over the same points."""
    with np.errstate(invalid="ignore"):  # non-finite posteriors give NaN, which the parity check refuses
        pa = np.exp(lp_a - lp_a.max(axis=1, keepdims=True))
        pb = np.exp(lp_b - lp_b.max(axis=1, keepdims=True))
        return 0.5 * np.abs(pa / pa.sum(1, keepdims=True) - pb / pb.sum(1, keepdims=True)).sum(1)


def parity_max_tv(model: GridPosteriorNet, runner: GraphRunner, n_slots: int, seed: int = 0) -> float:
    """Largest total variation between PyTorch and ``runner`` on random inputs of several shapes.

    NaN (or inf) as soon as one case's total variation is not finite (NaN posteriors): never
    hidden by a finite case.
    """
    reference = torch_runner(model)
    worst = 0.0
    for k, (b, g) in enumerate(((1, 50), (5, 400), (3, 2000))):
        feeds = random_observations(n_slots, b, g, seed + k)
        if model.has_map:  # points over the map's area
            e0, n0, step, n_e, n_n = model.grid_geometry
            rng = np.random.default_rng(seed + k)
            feeds["points_km"][..., 0] = rng.uniform(e0, e0 + step * n_e, (b, g))
            feeds["points_km"][..., 1] = rng.uniform(n0, n0 + step * n_n, (b, g))
        tv = float(
            np.max(
                posterior_tv(np.asarray(reference(feeds), np.float64), np.asarray(runner(feeds), np.float64))
            )
        )
        if not math.isfinite(tv):
            return tv  # NaN / inf posteriors: a failure (max() would pass over a NaN)
        worst = max(worst, tv)
    return worst


def grid_metadata(
    model: GridPosteriorNet,
    n_slots: int,
    training: dict[str, Any],
    map_meta: dict[str, Any] | None = None,
    map_uri: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata of an export: kind, slots, training provenance, and the radio map that fitted the fields."""
    import torch

    from heimdall import __version__
    from heimdall.models.gridnet import gridnet_description

    rate, n_samples = capture_format(training)
    meta: dict[str, Any] = {
        "kind": KIND,
        "model": gridnet_description(model),
        "n_slots": int(n_slots),
        "training": training,
        "evaluation": evaluation,
        "sample_rate_hz": rate,
        "n_samples": n_samples,
        "power_range_dbm": list(model.power_range_dbm),
        "tx_height_range_m": list(model.tx_height_range_m),
        "export": {"opset": OPSET, "heimdall_version": __version__, "torch_version": torch.__version__},
    }
    if map_meta is not None:
        meta |= map_metadata(model, map_meta, map_uri)
    return meta


def export_grid_model(
    model: GridPosteriorNet,
    out: str,
    metadata: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
) -> GridExportReport:
    """Export, compare with PyTorch, and write ``model.onnx`` (+ ``model.json`` report) to ``out``."""
    start = time.perf_counter()
    n_slots = int(metadata["n_slots"])
    data = to_onnx_bytes(model, n_slots, metadata)
    export_s = time.perf_counter() - start
    uri = model_uri(out)
    runner, _ = onnx_runner(data, uri)
    tv = parity_max_tv(model, runner, n_slots)
    if not math.isfinite(tv):
        raise HeimdallError(
            f"ONNX / PyTorch parity: the posteriors are not finite (total variation {tv}): the model's "
            "parameters or its radio map's fields hold NaN or inf"
        )
    if not tv <= PARITY_MAX_TV:
        raise HeimdallError(
            f"ONNX and PyTorch posteriors disagree: total variation {tv:.3g} > {PARITY_MAX_TV}"
        )
    write_object(uri, data, storage_options)
    report = GridExportReport(uri, len(data), OPSET, export_s, tv, metadata, onnx_bytes=data)
    sidecar = uri.removesuffix(".onnx") + ".json"
    write_object(sidecar, json.dumps(report.as_dict(), indent=1).encode(), storage_options)
    return report


def grid_predictor_from_bytes(
    model_bytes: bytes, source: str, version: str | None = None, threads: int | None = 1
) -> GridPosteriorPredictor:
    """A :class:`GridPosteriorPredictor` running an exported graph in onnxruntime."""
    import hashlib

    runner, meta = onnx_runner(model_bytes, source, threads)
    label = version or "sha256:" + hashlib.sha256(model_bytes).hexdigest()[:12]
    pred = GridPosteriorPredictor(runner, meta, source, label)
    pred.size_bytes = len(model_bytes)  # type: ignore[attr-defined]
    return pred
