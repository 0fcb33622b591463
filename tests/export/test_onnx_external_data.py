"""ONNX external tensor data: read only from inside the model's folder, never for models from bytes.

The model is a tiny hand-built graph with Heimdall's inputs, outputs and metadata
whose two weight tensors live in an external file (``weights.bin``, W at offset 0,
C at offset 24), so its answer has a closed form: ``mean_km = sum_r rx_pos @ W``,
``cov_km2 = mean mean^T + C``. A different ``weights.bin`` is planted outside the
model's folder; a Python audit hook shows it is never opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from heimdall.errors import HeimdallError
from heimdall.export.predictor import METADATA_KEY, OnnxPredictor, load_predictor

W = np.arange(6, dtype=np.float32).reshape(3, 2) / 10.0
C = np.array([[4.0, 1.0], [1.0, 9.0]], dtype=np.float32)
FIELD = r"field \"external_data location of initializer 'W'\" names"


def _external(name: str, array: np.ndarray, location: str, offset: int) -> TensorProto:
    tensor = numpy_helper.from_array(array, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(array.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def model_bytes(location: str) -> bytes:
    """The tiny model, W and C stored externally at ``location`` (W at offset 0, C after it)."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("iq", f32, ["B", "R", "T", 2]),
        helper.make_tensor_value_info("rx_pos", f32, ["B", "R", 3]),
        helper.make_tensor_value_info("rx_mask", TensorProto.BOOL, ["B", "R"]),
        helper.make_tensor_value_info("center_freq_hz", f32, ["B"]),
    ]
    outputs = [
        helper.make_tensor_value_info("mean_km", f32, ["B", 2]),
        helper.make_tensor_value_info("cov_km2", f32, ["B", 2, 2]),
    ]
    nodes = [
        helper.make_node("ReduceSum", ["rx_pos", "ax1"], ["s"], keepdims=0),
        helper.make_node("MatMul", ["s", "W"], ["mean_km"]),
        helper.make_node("Unsqueeze", ["mean_km", "ax2"], ["col"]),
        helper.make_node("Unsqueeze", ["mean_km", "ax1"], ["row"]),
        helper.make_node("Mul", ["col", "row"], ["outer"]),
        helper.make_node("Add", ["outer", "C"], ["cov_km2"]),
    ]
    inits = [
        _external("W", W, location, 0),
        _external("C", C, location, W.nbytes),
        helper.make_tensor("ax1", i64, [1], [1]),
        helper.make_tensor("ax2", i64, [1], [2]),
    ]
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"ref_lat": 45.0, "ref_lon": 7.5, "sample_rate_hz": 12_000.0, "n_samples": 16}
    helper.set_model_props(model, {METADATA_KEY: json.dumps(meta)})
    return model.SerializeToString()


def write_weights(path: Path, w: np.ndarray = W, c: np.ndarray = C) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(w.tobytes() + c.tobytes())


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``model/`` (for the model) and ``outside/weights.bin`` (planted, other weights)."""
    write_weights(tmp_path / "outside" / "weights.bin", -W, -C)
    (tmp_path / "model").mkdir()
    return tmp_path / "model", tmp_path / "outside"


def test_external_data_inside_the_folder_loads_and_computes(layout: tuple[Path, Path]) -> None:
    folder, _ = layout
    (folder / "model.onnx").write_bytes(model_bytes("weights.bin"))
    write_weights(folder / "weights.bin")
    rng = np.random.default_rng(0)
    rx_pos = rng.normal(size=(4, 5, 3)).astype(np.float32)
    mean_ref = rx_pos.astype(np.float64).sum(axis=1) @ W.astype(np.float64)
    cov_ref = mean_ref[:, :, None] * mean_ref[:, None, :] + C
    for spec in (folder / "model.onnx", folder):  # the file, or its folder holding model.onnx
        predictor = load_predictor(str(spec))
        mean, cov = predictor.run(
            np.zeros((4, 5, 16, 2), np.float32), rx_pos, np.ones((4, 5), bool), np.full(4, 145e6, np.float32)
        )
        np.testing.assert_allclose(mean, mean_ref, rtol=1e-5)
        np.testing.assert_allclose(cov, cov_ref, rtol=1e-5)


def _relative(folder: Path, outside: Path) -> tuple[str, str]:
    return os.path.relpath(
        outside / "weights.bin", folder
    ), r"'\.\./outside/weights\.bin', which has a '\.\.' segment"


def _absolute(folder: Path, outside: Path) -> tuple[str, str]:
    return str(outside / "weights.bin"), r"'/.*/outside/weights\.bin', which is an absolute path"


def _symlink(folder: Path, outside: Path) -> tuple[str, str]:
    (folder / "weights.bin").symlink_to(outside / "weights.bin")
    return "weights.bin", r"'weights\.bin', which resolves to .*outside"


@pytest.mark.parametrize("plant", [_relative, _absolute, _symlink], ids=["../", "absolute", "symlink"])
def test_external_data_leaving_the_folder_is_refused(
    opens_under, layout: tuple[Path, Path], plant: Any
) -> None:
    folder, outside = layout
    location, why = plant(folder, outside)
    (folder / "model.onnx").write_bytes(model_bytes(location))
    with opens_under(outside) as seen, pytest.raises(HeimdallError, match=rf"model\.onnx: {FIELD} {why}"):
        load_predictor(str(folder / "model.onnx"))
    assert seen == []


def test_external_data_in_a_model_from_bytes_is_refused(
    opens_under, layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes (a URI, the registry) have no folder: a weights.bin in the working directory is never used."""
    _, outside = layout
    monkeypatch.chdir(outside)
    with opens_under(outside) as seen, pytest.raises(HeimdallError, match=rf"memory: {FIELD} 'weights\.bin'.*"
                                                                         "self-contained"):  # fmt: skip
        OnnxPredictor(model_bytes("weights.bin"), "memory")
    assert seen == []


def test_self_contained_model_from_bytes_is_unchanged() -> None:
    """Inlining the same weights gives a loadable model (the check does not touch ordinary models)."""
    model = onnx.load_model_from_string(model_bytes("weights.bin"))
    for tensor, value in zip(model.graph.initializer[:2], (W, C), strict=True):
        tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    predictor = OnnxPredictor(model.SerializeToString(), "memory")
    mean, _ = predictor.run(
        np.zeros((1, 2, 16, 2), np.float32), np.ones((1, 2, 3), np.float32), np.ones((1, 2), bool),
        np.full(1, 145e6, np.float32),
    )  # fmt: skip
    np.testing.assert_allclose(mean, [[2.0 * W[:, 0].sum(), 2.0 * W[:, 1].sum()]], rtol=1e-6)
