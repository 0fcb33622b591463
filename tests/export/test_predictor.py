"""`load_predictor`: a checkpoint and its ONNX export answer the same sessions alike (predictor protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.data.store import SessionStore
from heimdall.export.onnx import PARITY_TOLERANCE_M, model_metadata, to_onnx_bytes
from heimdall.export.predictor import OnnxPredictor, load_predictor
from heimdall.models.predict import Predictor as TorchPredictor

pytestmark = pytest.mark.slow


def test_checkpoint_and_onnx_predictors_agree_on_stored_sessions(trained, trained_model, tmp_path) -> None:
    """Both predictors take a SessionBatch; means agree within 1 m, covariances within 1e-3 relative."""
    path = tmp_path / "m.onnx"
    path.write_bytes(to_onnx_bytes(trained_model, model_metadata(trained_model)))
    torch_p = load_predictor(str(trained.checkpoint))
    onnx_p = load_predictor(str(path))
    assert isinstance(torch_p, TorchPredictor) and isinstance(onnx_p, OnnxPredictor)
    assert onnx_p.frame == torch_p.frame
    batch = SessionStore.open(trained.val_uri).read(np.arange(12))
    mean_t, cov_t = torch_p.predict(batch)
    mean_o, cov_o = onnx_p.predict(batch)
    assert mean_o.shape == (12, 2) and cov_o.shape == (12, 2, 2)
    assert np.max(np.linalg.norm(mean_t - mean_o, axis=-1)) * 1000.0 < PARITY_TOLERANCE_M
    np.testing.assert_allclose(cov_o, cov_t, rtol=1e-3)


def test_onnx_predictor_refuses_other_sample_rates(trained, trained_model, tmp_path) -> None:
    onnx_p = OnnxPredictor(to_onnx_bytes(trained_model, model_metadata(trained_model)), "memory")
    batch = SessionStore.open(trained.val_uri).read([0])
    batch.sample_rate_hz[:] = 24000.0
    from heimdall.errors import HeimdallError

    with pytest.raises(HeimdallError, match="24000"):
        onnx_p.predict(batch)


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    from heimdall.errors import HeimdallError

    with pytest.raises(HeimdallError, match="does not exist"):
        load_predictor(str(tmp_path / "none.ckpt"))
