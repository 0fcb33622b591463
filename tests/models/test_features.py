import numpy as np
import onnxruntime as ort
import pytest
import torch

from heimdall.models.features import FeatureBlock, bin_edges, binning_matrix
from heimdall.posterior.measure import capture_powers

FS = 12000.0


def _tone_plus_noise(n: int, amp: float, f_hz: float, noise_power: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    x = amp * np.exp(2j * np.pi * f_hz * t) + np.sqrt(noise_power / 2) * (
        rng.standard_normal(n) + 1j * rng.standard_normal(n)
    )
    return np.stack([x.real, x.imag], axis=-1).astype(np.float32)


def test_spectrogram_equals_numpy_fft() -> None:
    """Reference: numpy.fft.fft of Hann-windowed frames, |X|² / (N Σw²), fftshifted, averaged, binned."""
    n_fft, n_time, n_bins, t = 64, 4, 16, 64 * 8
    block = FeatureBlock(t, FS, n_fft, n_time, n_bins, "linear")
    iq = _tone_plus_noise(t, 0.1, 1500.0, 1e-4, 0)
    spec, _ = block(torch.from_numpy(iq)[None])
    x = (iq[:, 0] + 1j * iq[:, 1]).astype(np.complex128).reshape(8, n_fft)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    p = np.abs(np.fft.fftshift(np.fft.fft(x * w, axis=1), axes=1)) ** 2 / (n_fft * np.sum(w**2))
    p = p.reshape(n_time, 2, n_fft).mean(axis=1).reshape(n_time, n_bins, n_fft // n_bins).sum(axis=2)
    assert np.allclose(spec[0].numpy(), 10 * np.log10(p + 1e-12), atol=1e-3)


def test_scalars_of_a_tone_in_noise() -> None:
    """Tone of amplitude 0.05 (-26.0 dBFS) at +1000 Hz in white noise of power 1e-5 (-50 dBFS):
    band power = 10 log10(mean |x|²) exactly; floor within 1 dB of -50; SNR within 1 dB of 24;
    frequency offset within 30 Hz of 1000.
    """
    t = 12000
    iq = _tone_plus_noise(t, 0.05, 1000.0, 1e-5, 1)
    _, sc = FeatureBlock(t, FS)(torch.from_numpy(iq)[None])
    band, floor, snr, offset = sc[0].tolist()
    assert abs(band - 10 * np.log10(np.mean(iq.astype(np.float64) ** 2) * 2)) < 1e-3
    assert abs(floor - (-50.0)) < 1.0
    assert abs(snr - (10 * np.log10(0.05**2 / 1e-5))) < 1.0
    assert abs(offset - 1000.0) < 30.0


def test_silence_stays_finite() -> None:
    """All-zero IQ (an offline slot after masking) gives finite features at the -120 dBFS floor."""
    spec, sc = FeatureBlock(3000, FS, 128, 4, 32)(torch.zeros(2, 3000, 2))
    assert torch.isfinite(spec).all() and torch.isfinite(sc).all()
    assert float(sc[0, 0]) == pytest.approx(-120.0, abs=1e-3)


def test_mel_bins_are_finer_near_the_centre() -> None:
    edges = bin_edges(128, 32, "mel")
    widths = np.diff(edges)
    assert edges[0] == 0 and edges[-1] == 128 and widths.size == 32 and np.all(widths >= 1)
    assert widths[16] < widths[-1] and widths[15] < widths[0]
    assert np.array_equal(binning_matrix(128, 32, "mel").sum(axis=0), widths)


@pytest.mark.parametrize("binning", ["linear", "mel"])
def test_feature_block_onnxruntime_matches_torch(tmp_path, binning: str) -> None:
    """The feature block exported to ONNX (opset 17), run by onnxruntime, matches torch within 1e-4 dB."""
    block = FeatureBlock(3000, FS, 128, 4, 32, binning).eval()
    gen = torch.Generator().manual_seed(3)
    levels = torch.tensor([1e-4, 1e-2, 0.3, 0.0]).reshape(4, 1, 1)
    iq = torch.randn(4, 3000, 2, generator=gen) * levels
    path = tmp_path / "features.onnx"
    torch.onnx.export(block, (iq,), str(path), dynamo=False, opset_version=17, input_names=["iq"],
                      output_names=["spec", "scalars"], dynamic_axes={"iq": {0: "n"}})  # fmt: skip
    spec_o, sc_o = ort.InferenceSession(str(path)).run(None, {"iq": iq.numpy()})
    spec_t, sc_t = block(iq)
    assert np.abs(spec_o - spec_t.numpy()).max() < 1e-4
    assert np.abs(sc_o[:, :3] - sc_t.numpy()[:, :3]).max() < 1e-4
    assert np.abs(sc_o[:, 3] - sc_t.numpy()[:, 3]).max() < 1e-2  # Hz


@pytest.mark.parametrize(
    ("amp", "f_hz", "noise_power"),
    [(0.0, 0.0, 1e-5), (0.003, 700.0, 1e-5), (0.01, -2300.0, 1e-5), (0.05, 1000.0, 1e-5), (0.2, 150.0, 1e-6)],
)
def test_total_power_noise_floor_and_snr_match_the_numpy_measurement(
    amp: float, f_hz: float, noise_power: float
) -> None:
    """One definition: on the same int16 IQ (noise alone, tone at SNR −0.8 … +46 dB) the torch
    features' total power, noise floor and SNR equal heimdall.posterior.measure's within
    0.01 dB (float32 against float64 arithmetic)."""
    rows = [_tone_plus_noise(12000, amp, f_hz, noise_power, seed) for seed in range(3)]
    iq16 = np.clip(np.round(np.stack(rows) * 32768.0), -32768, 32767).astype(np.int16)
    total, noise = capture_powers(iq16)
    _, sc = FeatureBlock(12000, FS)(torch.from_numpy(iq16.astype(np.float32) / 32768.0))
    sc = sc.double().numpy()
    np.testing.assert_allclose(sc[:, 0], 10 * np.log10(total), atol=0.01)
    np.testing.assert_allclose(sc[:, 1], 10 * np.log10(noise), atol=0.01)
    snr = 10 * np.log10(np.maximum(total - noise, 1e-3 * noise) / noise)  # the features floor SNR at −30 dB
    np.testing.assert_allclose(sc[:, 2], snr, atol=0.01)
