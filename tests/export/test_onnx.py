"""ONNX export of a trained LocalizationNet: parity with PyTorch, checker, metadata, object stores."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from heimdall.errors import HeimdallError
from heimdall.export.onnx import (
    PARITY_TOLERANCE_M,
    compare,
    export_model,
    model_metadata,
    random_inputs,
    simulated_inputs,
    to_onnx_bytes,
)
from heimdall.export.predictor import INPUT_NAMES, METADATA_KEY, OnnxPredictor, load_predictor
from heimdall.models.net import LocalizationNet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_bytes(trained_model: LocalizationNet) -> bytes:
    return to_onnx_bytes(trained_model, model_metadata(trained_model, {"median_error_km": 12.5}))


@pytest.fixture(scope="module")
def ort_predictor(onnx_bytes: bytes) -> OnnxPredictor:
    return OnnxPredictor(onnx_bytes, "memory")


@pytest.mark.parametrize("receivers", [3, 7, 12])
@pytest.mark.parametrize("batch", [1, 17])
def test_parity_with_pytorch_on_trained_checkpoint(
    trained_model: LocalizationNet, ort_predictor: OnnxPredictor, batch: int, receivers: int
) -> None:
    """onnxruntime and PyTorch (the reference) agree within 1 m and 1e-3 relative covariance."""
    inputs = random_inputs(trained_model.metadata, batch, receivers, seed=100 * batch + receivers)
    case = compare(trained_model, ort_predictor, inputs, "random")
    assert case.batch == batch and case.receivers == receivers
    assert case.max_position_diff_m < PARITY_TOLERANCE_M
    assert case.max_cov_rel_diff < 1e-3


def test_parity_on_simulated_sessions(trained_model: LocalizationNet, ort_predictor: OnnxPredictor) -> None:
    """Sessions of the model's own world (real signal shapes, offline slots) also agree within 1 m."""
    inputs = simulated_inputs(trained_model.metadata, 6, seed=3)
    assert inputs is not None
    assert compare(trained_model, ort_predictor, inputs, "simulated").max_position_diff_m < PARITY_TOLERANCE_M


def test_masked_slots_do_not_change_the_answer(ort_predictor: OnnxPredictor) -> None:
    """NaN in offline slots (iq and position) gives exactly the answer of zeros there."""
    inputs = random_inputs(ort_predictor.metadata, 4, 7, seed=5)
    mean_nan, cov_nan = ort_predictor.run(**inputs)
    clean = {k: np.nan_to_num(v) if v.dtype == np.float32 else v for k, v in inputs.items()}
    mean_zero, cov_zero = ort_predictor.run(**clean)
    assert np.isfinite(mean_nan).all() and np.isfinite(cov_nan).all()
    np.testing.assert_allclose(mean_nan, mean_zero, atol=1e-6)
    np.testing.assert_allclose(cov_nan, cov_zero, rtol=1e-6)


def test_graph_passes_full_check_and_carries_metadata(
    onnx_bytes: bytes, trained_model: LocalizationNet
) -> None:
    """The full checker passes; B and R are dynamic; metadata holds frame, rate, network, evaluation."""
    proto = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input
    }
    assert list(dims) == list(INPUT_NAMES)
    assert dims["iq"] == ["batch", "receivers", trained_model.metadata["n_samples"], 2]
    assert dims["rx_mask"] == ["batch", "receivers"]
    assert proto.graph.input[2].type.tensor_type.elem_type == onnx.TensorProto.BOOL
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props[METADATA_KEY])
    for key in ("ref_lat", "ref_lon", "sample_rate_hz", "n_samples", "network_name", "dataset_hash"):
        assert meta[key] == trained_model.metadata[key]
        assert props[key] == str(trained_model.metadata[key])
    assert meta["network"]["name"] == "nw-italy" and meta["world"]["duration_s"] == 0.25
    assert meta["evaluation"] == {"median_error_km": 12.5}
    assert len(onnx_bytes) < 5e6


def test_export_to_local_folder_writes_model_and_report(trained_model: LocalizationNet, tmp_path) -> None:
    """export_model writes model.onnx and a model.json report whose parity cases passed."""
    report = export_model(trained_model, str(tmp_path / "exported"), n_simulated=2)
    assert report.uri == str(tmp_path / "exported" / "model.onnx")
    data = (tmp_path / "exported" / "model.onnx").read_bytes()
    assert len(data) == report.size_bytes
    sidecar = json.loads((tmp_path / "exported" / "model.json").read_text())
    assert sidecar["size_bytes"] == report.size_bytes
    assert {c["name"] for c in sidecar["parity"]} >= {"random B=1 R=3", "random B=17 R=7", "simulated B=2"}
    assert all(c["max_position_diff_m"] < PARITY_TOLERANCE_M for c in sidecar["parity"])
    assert not list((tmp_path / "exported").glob("*.tmp"))


def test_export_to_s3_and_load_back(trained_model: LocalizationNet, s3_bucket: str) -> None:
    """Written to moto_server over HTTP; loaded back from s3:// it answers as PyTorch does (< 1 m)."""
    uri = f"s3://{s3_bucket}/models/tiny"
    report = export_model(trained_model, uri, n_simulated=0)
    assert report.uri == f"{uri}/model.onnx"
    predictor = load_predictor(uri)  # a folder URI resolves to its model.onnx
    assert isinstance(predictor, OnnxPredictor) and predictor.size_bytes == report.size_bytes
    inputs = random_inputs(trained_model.metadata, 3, 7, seed=9)
    with torch.no_grad():
        mean_t, _ = trained_model(*(torch.from_numpy(inputs[k]) for k in INPUT_NAMES))
    mean_o, _ = predictor.run(**inputs)
    assert np.max(np.linalg.norm(mean_t.numpy() - mean_o, axis=-1)) * 1000.0 < PARITY_TOLERANCE_M


def test_export_to_missing_bucket_is_a_clear_error(trained_model: LocalizationNet, s3_endpoint: str) -> None:
    with pytest.raises(HeimdallError, match="no-such-bucket"):
        export_model(trained_model, "s3://no-such-bucket/m", n_simulated=0)


def test_loading_a_non_model_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(HeimdallError, match=r"bad\.onnx"):
        load_predictor(str(bad))
    with pytest.raises(HeimdallError, match="no such model file"):
        load_predictor(str(tmp_path / "missing.onnx"))
