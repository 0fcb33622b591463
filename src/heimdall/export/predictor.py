"""Run an exported model with onnxruntime, and load any predictor from a spec string.

:class:`OnnxPredictor` implements the predictor protocol of the models stage
(``frame``, ``metadata``, ``predict(batch) -> (mean_km, cov_km2)``), so
``heimdall evaluate`` and ``heimdall locate`` treat a PyTorch checkpoint, an
ONNX file in an object store and a registered model alike.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError
from heimdall.models.grid_predictor import KIND as GRID_KIND
from heimdall.models.grid_predictor import N_SLOTS as GRID_SLOTS
from heimdall.network import LocalFrame, Network

if TYPE_CHECKING:
    import onnxruntime as ort

    from heimdall.data.session import SessionBatch
    from heimdall.serve.area import TrainedArea

#: ONNX metadata_props key holding the model's metadata as JSON.
METADATA_KEY = "heimdall"
INPUT_NAMES: tuple[str, ...] = ("iq", "rx_pos", "rx_mask", "center_freq_hz")
OUTPUT_NAMES: tuple[str, ...] = ("mean_km", "cov_km2")


class Predictor(Protocol):
    """What every predictor offers (contracts: models stage)."""

    frame: LocalFrame
    metadata: dict[str, Any]

    def predict(self, batch: SessionBatch) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean (B, 2) km and covariance (B, 2, 2) km² in ``frame``."""
        ...


class OnnxPredictor:
    """An exported LocalizationNet run by onnxruntime.

    Parameters
    ----------
    model_bytes
        The serialised ONNX model (with Heimdall metadata in ``metadata_props``).
    source
        Where it came from (file, URI or ``models:/NAME@ALIAS``), for messages.
    version
        A label for answers; defaults to ``sha256:`` and the first 12 hex digits of the bytes.
    threads
        onnxruntime intra-op threads (None: onnxruntime's default, all cores).
    model_dir
        The model file's local folder, where external tensor data may live (every
        ``location`` must resolve inside it); None (bytes, URI, registry): external data
        are refused (:mod:`heimdall.export.external_data`).

    """

    def __init__(
        self,
        model_bytes: bytes,
        source: str,
        version: str | None = None,
        threads: int | None = None,
        model_dir: Path | None = None,
    ):
        import onnxruntime as ort

        from heimdall.export.external_data import inline_external_data

        self.source = source
        self.size_bytes = len(model_bytes)
        self.version = version or "sha256:" + hashlib.sha256(model_bytes).hexdigest()[:12]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
        graph_bytes = inline_external_data(model_bytes, source, model_dir)  # before onnxruntime sees it
        try:
            self.session: ort.InferenceSession = ort.InferenceSession(
                graph_bytes, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise HeimdallError(
                f"{source}: not a loadable ONNX model ({type(exc).__name__}: {exc})"
            ) from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUT_NAMES:
            raise HeimdallError(f"{source}: ONNX inputs are {names}, expected {INPUT_NAMES}")
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise HeimdallError(
                f"{source}: ONNX file has no {METADATA_KEY!r} metadata (not exported by Heimdall)"
            )
        self.metadata: dict[str, Any] = json.loads(props[METADATA_KEY])
        self.frame = LocalFrame(float(self.metadata["ref_lat"]), float(self.metadata["ref_lon"]))
        self.sample_rate_hz = float(self.metadata["sample_rate_hz"])
        self.n_samples = int(self.metadata["n_samples"])
        self._mask_dtype = np.bool_ if self.session.get_inputs()[2].type == "tensor(bool)" else np.float32

    @cached_property
    def network(self) -> Network | None:
        """The network the model was trained on (None for models of imported data without one)."""
        dump = self.metadata.get("network")
        return Network.model_validate(dump) if dump else None

    @cached_property
    def area(self) -> TrainedArea | None:
        """The area the model was trained for (None without a network)."""
        from heimdall.serve.area import TrainedArea

        return TrainedArea.from_metadata(self.metadata)

    def run(
        self,
        iq: NDArray[np.float32],
        rx_pos: NDArray[np.float32],
        rx_mask: NDArray[np.bool_],
        center_freq_hz: NDArray[np.float32],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Run the graph on model inputs (contracts §3); mean (B, 2) km and covariance (B, 2, 2) km²."""
        feeds = {
            "iq": np.ascontiguousarray(iq, dtype=np.float32),
            "rx_pos": np.ascontiguousarray(rx_pos, dtype=np.float32),
            "rx_mask": np.ascontiguousarray(rx_mask, dtype=self._mask_dtype),
            "center_freq_hz": np.ascontiguousarray(center_freq_hz, dtype=np.float32),
        }
        mean, cov = self.session.run(list(OUTPUT_NAMES), feeds)[:2]
        return np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)

    def predict(self, batch: SessionBatch) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean (B, 2) km and covariance (B, 2, 2) km² of a session batch in :attr:`frame`."""
        from heimdall.models.predict import session_inputs

        if batch.n_samples < self.n_samples:
            raise HeimdallError(
                f"sessions have {batch.n_samples} samples per capture; the model needs {self.n_samples}"
            )
        rates = np.unique(batch.sample_rate_hz)
        if rates.size and not np.allclose(rates, self.sample_rate_hz):
            raise HeimdallError(
                f"sessions sampled at {rates.tolist()} Hz; the model expects {self.sample_rate_hz:g} Hz"
            )
        inputs = session_inputs(batch, self.frame, self.n_samples)
        return self.run(inputs["iq"], inputs["rx_pos"], inputs["rx_mask"], inputs["center_freq_hz"])


def read_bytes(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """Read a whole object from a local path or object-store URI (HeimdallError if missing)."""
    from heimdall.data.fs import open_fs

    fs, path = open_fs(uri, storage_options)
    if fs.isdir(path):
        path = path.rstrip("/") + "/model.onnx"
    try:
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        raise HeimdallError(f"{uri}: no such model file") from None


def load_predictor(
    spec: str | Path,
    storage_options: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    threads: int | None = None,
) -> Predictor:
    """A predictor from a checkpoint path, an ONNX path / URI, or ``models:/NAME@ALIAS``.

    Parameters
    ----------
    spec
        ``*.ckpt`` (PyTorch, via :func:`heimdall.models.predict.Predictor.from_checkpoint`),
        ``*.onnx`` or a folder holding ``model.onnx`` (local or ``s3://``), or a registered
        model ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``.
    storage_options
        Object-store settings (endpoint, credentials) for ``s3://`` URIs.
    tracking_uri
        MLflow tracking URI for ``models:/`` (default ``sqlite:///mlruns.db``).
    threads
        onnxruntime intra-op threads.

    """
    text = str(spec)
    if text.startswith("models:/"):
        from heimdall.export.registry import fetch_registered

        model_bytes, version = fetch_registered(text, tracking_uri, storage_options)
        return predictor_from_bytes(model_bytes, text, version=version, threads=threads)
    if text.endswith((".ckpt", ".pt")):
        from heimdall.models.predict import Predictor as TorchPredictor
        from heimdall.models.predict import read_checkpoint

        if "://" not in text and not Path(text).is_file():
            raise HeimdallError(f"checkpoint {text!r} does not exist")
        payload = read_checkpoint(text)
        if payload.get("kind") == GRID_KIND:
            from heimdall.models.grid_predictor import GridPosteriorPredictor, torch_runner
            from heimdall.models.gridnet import gridnet_description, gridnet_from_payload

            model, training = gridnet_from_payload(payload)
            meta = {
                "kind": GRID_KIND,
                "n_slots": GRID_SLOTS,
                "training": training,
                "model": gridnet_description(model),
            }
            return GridPosteriorPredictor(torch_runner(model.eval()), meta, text, "checkpoint")
        return TorchPredictor.from_checkpoint(text)
    from heimdall.export.external_data import model_folder

    model_dir = model_folder(text)
    return predictor_from_bytes(read_bytes(text, storage_options), text, threads=threads, model_dir=model_dir)


def onnx_kind(model_bytes: bytes) -> str | None:
    """The ``kind`` in a Heimdall ONNX file's metadata (None: a Gaussian LocalizationNet or not ours)."""
    import onnx

    try:
        proto = onnx.load_from_string(model_bytes)
    except Exception:  # not ONNX: the predictor's own loader gives the readable error
        return None
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                meta = json.loads(prop.value)
            except json.JSONDecodeError:
                return None
            return meta.get("kind") if isinstance(meta, dict) else None
    return None


def predictor_from_bytes(
    model_bytes: bytes,
    source: str,
    version: str | None = None,
    threads: int | None = None,
    model_dir: Path | None = None,
) -> Predictor:
    """The predictor of an exported model: grid-posterior or Gaussian, by its metadata's ``kind``."""
    if onnx_kind(model_bytes) == GRID_KIND:
        from heimdall.export.grid_onnx import grid_predictor_from_bytes

        return grid_predictor_from_bytes(model_bytes, source, version, threads=threads or 1)
    return OnnxPredictor(model_bytes, source, version=version, threads=threads, model_dir=model_dir)
