"""Export a LocalizationNet to ONNX, check it, and write it to an object store (docs/ARCHITECTURE.md §6).

The graph's inputs are what a client holds (contracts §3): ``iq`` float32
[B, R, T, 2] in full-scale units at the model's sample rate and length,
``rx_pos`` float32 [B, R, 3] (east km, north km, antenna height m in the
model's local frame), ``rx_mask`` **bool** [B, R] (True = online receiver;
other slots may hold anything) and ``center_freq_hz`` float32 [B]; B and R are
dynamic. Outputs: ``mean_km`` [B, 2] (east, north) and ``cov_km2`` [B, 2, 2].
Features and normalisation are inside the graph. The model's metadata
(reference point, sample rate, length, network, world, dataset hash,
evaluation summary) is stored as JSON under the ``heimdall`` key of the ONNX
``metadata_props``, and its main scalars under their own keys.

The routine follows timm's: ``model.eval()``, export with dynamic axes keyed
by input name (TorchScript exporter, opset 17), ``onnx.checker.check_model(
full_check=True)``, then onnxruntime against PyTorch on random and simulated
batches, with positions compared in metres.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError
from heimdall.export.predictor import INPUT_NAMES, METADATA_KEY, OUTPUT_NAMES, OnnxPredictor

if TYPE_CHECKING:
    import torch

    from heimdall.models.net import LocalizationNet

OPSET = 17
#: Largest accepted position difference between onnxruntime and PyTorch, m.
PARITY_TOLERANCE_M = 1.0
#: Largest accepted relative covariance difference (max |ΔΣ| / max |Σ|).
PARITY_COV_RTOL = 1e-3
#: Metadata keys also stored as plain ONNX metadata_props (strings) for other tools.
_PLAIN_KEYS = ("ref_lat", "ref_lon", "sample_rate_hz", "n_samples", "network_name", "dataset_hash")
_DYNAMIC_AXES = {
    "iq": {0: "batch", 1: "receivers"},
    "rx_pos": {0: "batch", 1: "receivers"},
    "rx_mask": {0: "batch", 1: "receivers"},
    "center_freq_hz": {0: "batch"},
    "mean_km": {0: "batch"},
    "cov_km2": {0: "batch"},
}


@dataclass
class ParityCase:
    """onnxruntime vs PyTorch on one batch: largest position difference (m) and relative Σ difference."""

    name: str
    batch: int
    receivers: int
    max_position_diff_m: float
    max_cov_rel_diff: float


@dataclass
class ExportReport:
    """What an export wrote and measured."""

    uri: str
    size_bytes: int
    opset: int
    export_s: float
    parity: list[ParityCase] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    registered: dict[str, Any] | None = None
    onnx_bytes: bytes = field(default=b"", repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (without the model bytes)."""
        return report_dict(self)


def report_dict(report: Any) -> dict[str, Any]:
    """An export report (a dataclass) as a JSON-ready mapping, without its ``onnx_bytes``."""
    out = asdict(report)
    del out["onnx_bytes"]
    return out


def require_finite_parameters(model: torch.nn.Module, source: str) -> None:
    """Refuse a model whose parameters or buffers hold NaN or ±inf: its graph would answer NaN.

    Parameters
    ----------
    model
        The network to export.
    source
        How messages name the model (e.g. ``checkpoint 'runs/x/gridnet.pt'``).

    Raises
    ------
    HeimdallError
        Naming the first non-finite parameter or buffer and how many of its values are bad.

    """
    import torch

    for name, value in model.state_dict().items():
        if not torch.is_floating_point(value):
            continue
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            shown = f"value {float(value.reshape(-1)[bad.reshape(-1)][0])}"
            count = "" if value.numel() == 1 else f"{int(bad.sum())} of {value.numel()} values not finite, "
            raise HeimdallError(
                f"{source}: parameter {name!r} is not finite ({count}{shown}): the model cannot be exported "
                "(a diverged or damaged training run?)"
            )


def _example_inputs(model: LocalizationNet) -> tuple:
    import torch

    n_t = int(model.metadata["n_samples"])
    return (
        torch.zeros(2, 4, n_t, 2),
        torch.zeros(2, 4, 3),
        torch.ones(2, 4, dtype=torch.bool),
        torch.full((2,), 145e6),
    )


def model_metadata(model: LocalizationNet, evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata stored with an export: the model's own plus evaluation summary and export facts."""
    import torch

    from heimdall import __version__

    meta = json.loads(json.dumps(model.metadata, default=str))
    missing = [k for k in ("ref_lat", "ref_lon", "sample_rate_hz", "n_samples") if k not in meta]
    if missing:
        raise HeimdallError(f"model metadata lacks {missing}: cannot export a model without its frame")
    meta["evaluation"] = evaluation if evaluation is not None else meta.get("evaluation")
    meta["export"] = {
        "opset": OPSET,
        "inputs": {
            "iq": "float32 [B,R,T,2] full scale 1.0",
            "rx_pos": "float32 [B,R,3] east km, north km, height m",
            "rx_mask": "bool [B,R] True = online",
            "center_freq_hz": "float32 [B] Hz",
        },
        "outputs": {"mean_km": "float32 [B,2] east, north km", "cov_km2": "float32 [B,2,2] km^2"},
        "heimdall_version": __version__,
        "torch_version": torch.__version__,
    }
    return meta


def to_onnx_bytes(model: LocalizationNet, metadata: dict[str, Any]) -> bytes:
    """Export ``model`` (eval mode) to ONNX bytes with ``metadata`` in metadata_props, fully checked."""
    import onnx
    import torch

    model = model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            _example_inputs(model),
            buf,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=_DYNAMIC_AXES,
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    props = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    props |= {k: str(metadata[k]) for k in _PLAIN_KEYS if metadata.get(k) is not None}
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (
        "Heimdall LocalizationNet: receivers' IQ -> transmitter mean (km) and covariance (km^2)"
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HeimdallError(f"exported ONNX graph fails onnx.checker: {exc}") from None
    return proto.SerializeToString()


def random_inputs(metadata: dict[str, Any], batch: int, receivers: int, seed: int) -> dict[str, NDArray]:
    """A random batch in the graph's input format: noise plus a carrier at random levels.

    Receivers stand within ±150 km of the reference point at 10–500 m; at least 3
    per session are online and the offline slots hold NaN (they must not matter).
    """
    rng = np.random.default_rng(seed)
    n_t, fs = int(metadata["n_samples"]), float(metadata["sample_rate_hz"])
    t = np.arange(n_t) / fs
    noise_amp = 10.0 ** (rng.uniform(-80.0, -40.0, size=(batch, receivers, 1)) / 20.0)
    tone_amp = 10.0 ** (rng.uniform(-90.0, -10.0, size=(batch, receivers, 1)) / 20.0)
    offset_hz = rng.uniform(-500.0, 500.0, size=(batch, receivers, 1))
    z = noise_amp * (rng.normal(size=(batch, receivers, n_t)) + 1j * rng.normal(size=(batch, receivers, n_t)))
    z = z / np.sqrt(2.0) + tone_amp * np.exp(2j * np.pi * offset_hz * t)
    iq = np.stack([z.real, z.imag], axis=-1).astype(np.float32)
    pos = np.stack(
        [
            rng.uniform(-150.0, 150.0, (batch, receivers)),
            rng.uniform(-150.0, 150.0, (batch, receivers)),
            rng.uniform(10.0, 500.0, (batch, receivers)),
        ],
        axis=-1,
    ).astype(np.float32)
    mask = rng.random((batch, receivers)) < 0.8
    mask[:, :3] = True
    iq[~mask] = np.nan
    pos[~mask] = np.nan
    freq = np.where(
        rng.random(batch) < 0.5, rng.uniform(144e6, 146e6, batch), rng.uniform(430e6, 440e6, batch)
    )
    return {"iq": iq, "rx_pos": pos, "rx_mask": mask, "center_freq_hz": freq.astype(np.float32)}


def simulated_inputs(metadata: dict[str, Any], n_sessions: int, seed: int) -> dict[str, NDArray] | None:
    """Sessions simulated in the model's own world, as graph inputs (None without network and world)."""
    from heimdall.models.predict import session_inputs
    from heimdall.network import LocalFrame, Network
    from heimdall.sim import World, WorldConfig
    from heimdall.sim.family import WorldSeeds

    if not metadata.get("network") or not metadata.get("world"):
        return None
    n_t, fs = int(metadata["n_samples"]), float(metadata["sample_rate_hz"])
    config = WorldConfig.model_validate(metadata["world"]).with_overrides(duration_s=n_t / fs)
    seeds = WorldSeeds.parse(metadata.get("world_seed", 0))  # a family model: its first training world
    world = World(Network.model_validate(metadata["network"]), config, seeds.lo)
    batch = world.simulate(n_sessions, session_seed=seed)
    return session_inputs(batch, LocalFrame(float(metadata["ref_lat"]), float(metadata["ref_lon"])), n_t)


def compare(
    model: LocalizationNet, predictor: OnnxPredictor, inputs: dict[str, NDArray], name: str
) -> ParityCase:
    """Run PyTorch and onnxruntime on the same inputs; position difference in metres."""
    import torch

    with torch.no_grad():
        mean_t, cov_t = model(*(torch.from_numpy(np.asarray(inputs[k])) for k in INPUT_NAMES))
    mean_o, cov_o = predictor.run(**inputs)
    mean_t, cov_t = mean_t.double().numpy(), cov_t.double().numpy()
    pos_m = float(np.max(np.linalg.norm(mean_t - mean_o, axis=-1)) * 1000.0)
    cov_rel = float(np.max(np.abs(cov_t - cov_o)) / max(float(np.max(np.abs(cov_t))), 1e-12))
    b, r = inputs["rx_mask"].shape
    return ParityCase(name, int(b), int(r), pos_m, cov_rel)


def parity_cases(
    model: LocalizationNet,
    predictor: OnnxPredictor,
    shapes: tuple[tuple[int, int], ...] = ((1, 3), (17, 7), (4, 12)),
    n_simulated: int = 4,
    seed: int = 0,
) -> list[ParityCase]:
    """Parity on random batches of the given (B, R) shapes and on ``n_simulated`` simulated sessions."""
    cases = [
        compare(model, predictor, random_inputs(model.metadata, b, r, seed + k), f"random B={b} R={r}")
        for k, (b, r) in enumerate(shapes)
    ]
    if n_simulated:
        sim = simulated_inputs(model.metadata, n_simulated, seed + 1000)
        if sim is not None:
            cases.append(compare(model, predictor, sim, f"simulated B={n_simulated}"))
    return cases


def check_parity(cases: list[ParityCase]) -> None:
    """Raise HeimdallError when a case exceeds :data:`PARITY_TOLERANCE_M` or :data:`PARITY_COV_RTOL`."""
    bad = [
        c
        for c in cases
        if not (c.max_position_diff_m < PARITY_TOLERANCE_M and c.max_cov_rel_diff < PARITY_COV_RTOL)
    ]
    if bad:
        raise HeimdallError(
            "ONNX and PyTorch disagree: "
            + "; ".join(
                f"{c.name}: {c.max_position_diff_m:.3g} m, covariance {c.max_cov_rel_diff:.2g}" for c in bad
            )
        )


def write_object(uri: str, data: bytes, storage_options: dict[str, Any] | None = None) -> str:
    """Write bytes to a local path or object-store URI atomically (local: temp file + rename)."""
    from heimdall.data.fs import is_remote, open_fs

    fs, path = open_fs(uri, storage_options)
    try:
        if not is_remote(uri):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = path + ".tmp"
            fs.pipe_file(tmp, data)
            fs.mv(tmp, path)
        else:
            fs.pipe_file(path, data)  # an object PUT is atomic
    except OSError as exc:
        raise HeimdallError(f"cannot write {uri}: {exc}") from None
    return uri


def model_uri(out: str) -> str:
    """The ONNX file an ``--out`` names: itself when it ends in ``.onnx``, else ``OUT/model.onnx``."""
    return out if out.endswith(".onnx") else out.rstrip("/") + "/model.onnx"


def export_model(
    model: LocalizationNet,
    out: str,
    evaluation: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
    n_simulated: int = 4,
) -> ExportReport:
    """Export, check, compare with PyTorch and write ``model.onnx`` (+ ``model.json`` report) to ``out``.

    Parameters
    ----------
    model
        The trained network (its ``metadata`` must hold the frame, rate and length).
    out
        Folder / prefix (local or ``s3://``) or a path ending in ``.onnx``.
    evaluation
        Evaluation summary stored in the metadata (e.g. median error km, coverage).
    storage_options
        Object-store settings for ``s3://``.
    n_simulated
        Simulated sessions in the parity check (0: random batches only).

    """
    start = time.perf_counter()
    metadata = model_metadata(model, evaluation)
    data = to_onnx_bytes(model, metadata)
    export_s = time.perf_counter() - start
    uri = model_uri(out)
    predictor = OnnxPredictor(data, uri)
    cases = parity_cases(model, predictor, n_simulated=n_simulated)
    check_parity(cases)
    write_object(uri, data, storage_options)
    report = ExportReport(uri, len(data), OPSET, export_s, cases, metadata, onnx_bytes=data)
    sidecar = uri.removesuffix(".onnx") + ".json"
    write_object(sidecar, json.dumps(report.as_dict(), indent=1).encode(), storage_options)
    return report
