import numpy as np
import pytest
import torch

from heimdall.models.net import CHOL_FLOOR_KM, LocalizationNet, NetConfig

T = 3000


def tiny_net(seed: int = 0, **kw) -> LocalizationNet:
    torch.manual_seed(seed)
    cfg = NetConfig(n_samples=T, n_time=4, d_model=16, n_heads=2, n_layers=2, cnn_channels=4, **kw)
    return LocalizationNet(cfg).eval()


@pytest.mark.parametrize("r", [3, 7, 16])
def test_output_shapes_and_positive_definite(r: int, net_inputs) -> None:
    net = tiny_net()
    mean, cov = net(*net_inputs(5, r, r))
    assert mean.shape == (5, 2) and cov.shape == (5, 2, 2)
    assert torch.isfinite(mean).all() and torch.isfinite(cov).all()
    assert torch.allclose(cov, cov.transpose(1, 2))
    eig = torch.linalg.eigvalsh(cov.double())
    assert (eig > 0).all()
    _, chol = net.forward_chol(*net_inputs(5, r, r))
    assert (torch.diagonal(chol, dim1=1, dim2=2) >= CHOL_FLOOR_KM - 1e-6).all()


def test_nan_and_inf_in_masked_slots_do_not_leak(net_inputs) -> None:
    net = tiny_net()
    iq, pos, mask, freq = net_inputs(6, 9, 1)
    ref_mean, ref_cov = net(iq, pos, mask, freq)
    bad_iq, bad_pos = iq.clone(), pos.clone()
    bad_iq[~mask] = float("nan")
    bad_iq[~mask, ::2, 0] = float("inf")
    bad_iq[~mask, 1::3, 1] = -float("inf")
    bad_pos[~mask] = float("nan")
    bad_pos[~mask, 2] = float("inf")
    mean, cov = net(bad_iq, bad_pos, mask, freq)
    assert torch.isfinite(mean).all() and torch.isfinite(cov).all()
    assert (mean - ref_mean).abs().max() < 1e-6 and (cov - ref_cov).abs().max() < 1e-6 * ref_cov.abs().max()
    # and the gradient of the online inputs stays finite too
    bad_iq.requires_grad_(True)
    m, c = net(bad_iq, bad_pos, mask, freq)
    (m.sum() + c.sum()).backward()
    assert torch.isfinite(bad_iq.grad[mask]).all()


def test_permutation_invariance_random_weights(net_inputs, assert_permutation_invariant) -> None:
    with torch.no_grad():
        for seed in range(3):
            assert_permutation_invariant(tiny_net(seed), net_inputs(4, 7, 10 + seed), seed)


def test_every_parameter_gets_a_gradient(net_inputs) -> None:
    net = tiny_net().train()
    mean, cov = net(*net_inputs(4, 7, 2))
    (mean.square().sum() + cov.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(float(p.grad.abs().sum()) > 0 for p in net.parameters())


def test_scalars_only_ablation_has_no_spectrogram_branch(net_inputs) -> None:
    net = tiny_net(use_spectrogram=False)
    assert net.spec_encoder is None
    assert net.n_parameters() < tiny_net().n_parameters()
    mean, _ = net(*net_inputs(2, 4, 3))
    assert torch.isfinite(mean).all()


def test_temperature_scales_covariance(net_inputs) -> None:
    net = tiny_net()
    inputs = net_inputs(3, 5, 4)
    mean, cov = net(*inputs)
    net.temperature.fill_(3.0)
    mean2, cov2 = net(*inputs)
    assert torch.allclose(mean, mean2) and torch.allclose(cov2, 9.0 * cov, rtol=1e-5)


def test_whole_model_exports_with_dynamic_batch_and_receivers(tmp_path, net_inputs) -> None:
    """TorchScript export (opset 17), dynamic B and R: onnxruntime matches torch within 1 m, 1e-3 relative."""
    import onnxruntime as ort

    net = tiny_net()
    names = ["iq", "rx_pos", "rx_mask", "center_freq_hz"]
    dyn = {n: {0: "B", 1: "R"} for n in names[:3]} | {"center_freq_hz": {0: "B"}}
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, net_inputs(2, 5, 0), str(path), dynamo=False, opset_version=17, input_names=names,
                      output_names=["mean_km", "cov_km2"], dynamic_axes=dyn)  # fmt: skip
    sess = ort.InferenceSession(str(path))
    for b, r in ((1, 3), (3, 16)):
        inputs = net_inputs(b, r, b + r)
        got = sess.run(None, {n: x.numpy() for n, x in zip(names, inputs, strict=True)})
        with torch.no_grad():
            want = net(*inputs)
        assert np.abs(got[0] - want[0].numpy()).max() < 1e-3
        assert np.abs(got[1] - want[1].numpy()).max() < 1e-3 * float(want[1].abs().max())
