"""LocalizationNet: receivers' captures -> 2-D Gaussian position of the transmitter (docs/ARCHITECTURE.md §4).

Per receiver slot a shared encoder turns the features of :mod:`heimdall.models.features`
(small CNN over the log-power spectrogram + MLP over the scalars) and the receiver's
position (east / north km in the network frame, antenna height) into a token; masked
multi-head self-attention mixes the tokens of the online receivers (any count, any
subset offline; an online receiver that hears nothing stays in, its silence is
information); masked mean pooling feeds a head that gives

- the mean: a softmax-weighted average of the online receivers' positions (a learned
  centroid) plus a learned offset, in km;
- the Cholesky factor L of a full 2×2 covariance Σ = L Lᵀ in km²: diagonal
  ``floor + scale·softplus(·)`` with ``floor`` = :data:`CHOL_FLOOR_KM` (0.2 km, so Σ
  stays positive definite and no ellipse is smaller than ~200 m), off-diagonal free;
  then times a post-hoc temperature τ, buffer ``temperature`` (1 until calibrated: L → τ L, Σ → τ² Σ).

Masked slots may hold NaN / Inf: they are replaced by zeros with ``torch.where``
before any arithmetic, excluded from attention keys and from pooling, so they
cannot change the outputs. Every op exports to ONNX (opset 17).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from heimdall.models.features import SCALAR_NAMES, FeatureBlock

CHOL_FLOOR_KM = 0.2
_NEG_LARGE = -1e9


@dataclass
class NetConfig:
    """Architecture of :class:`LocalizationNet` (sizes are counts; see module docstring)."""

    n_samples: int = 12000
    sample_rate_hz: float = 12000.0
    n_fft: int = 128
    n_time: int = 16
    n_bins: int = 32
    binning: str = "linear"
    use_spectrogram: bool = True
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    cnn_channels: int = 16
    dropout: float = 0.0
    chol_scale_km: float = 20.0


@dataclass
class Normalisation:
    """Feature normalisation constants estimated from training data (saved as buffers)."""

    spec_mean: float = -80.0
    spec_std: float = 10.0
    scalar_mean: list[float] = field(default_factory=lambda: [-60.0, -75.0, 5.0, 0.0])
    scalar_std: list[float] = field(default_factory=lambda: [15.0, 5.0, 10.0, 500.0])
    pos_center_km: list[float] = field(default_factory=lambda: [0.0, 0.0])
    pos_scale_km: float = 100.0
    log_height_mean: float = 2.0
    log_height_std: float = 0.5
    log_freq_mean: float = 8.3
    log_freq_std: float = 0.25


class MaskedSelfAttention(nn.Module):
    """Pre-norm transformer block whose attention ignores masked key slots."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d_model, d_model)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Tokens x (B, R, D), mask (B, R) True = online -> (B, R, D)."""
        b, r, d = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(self.norm1(x)).reshape(b, r, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d_head))  # (B, H, R, R)
        key_ok = mask[:, None, None, :]
        scores = torch.where(key_ok, scores, torch.full_like(scores, _NEG_LARGE))
        attn = torch.softmax(scores, dim=-1)
        mixed = (attn @ v).permute(0, 2, 1, 3).reshape(b, r, d)
        x = x + self.out(mixed)
        return x + self.ff(self.norm2(x))


class SpectrogramEncoder(nn.Module):
    """Small CNN: (N, n_time, n_bins) normalised dB -> (N, D)."""

    def __init__(self, channels: int, d_model: int) -> None:
        super().__init__()
        c = channels
        self.conv = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.GELU(),
        )  # fmt: skip
        self.proj = nn.Linear(4 * c, d_model)

    def forward(self, spec: Tensor) -> Tensor:
        """Encode spectrograms."""
        h = self.conv(spec.unsqueeze(1))
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return self.proj(pooled)


def _mlp(n_in: int, d_model: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, d_model), nn.GELU(), nn.Linear(d_model, d_model))


class LocalizationNet(nn.Module):
    """Transmitter position (mean, covariance in km) from R receivers' captures.

    Parameters
    ----------
    config
        Architecture (:class:`NetConfig`).
    norm
        Normalisation constants from data (:class:`Normalisation`).
    metadata
        Provenance kept with the model (``ref_lat``, ``ref_lon``, ``sample_rate_hz``,
        ``n_samples``, ``network``, ``network_name``, ``world``, ``dataset_hash`` ...).

    """

    def __init__(
        self,
        config: NetConfig | None = None,
        norm: Normalisation | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or NetConfig()
        cfg = self.config
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.metadata.setdefault("sample_rate_hz", cfg.sample_rate_hz)
        self.metadata.setdefault("n_samples", cfg.n_samples)
        self.features = FeatureBlock(cfg.n_samples, cfg.sample_rate_hz, cfg.n_fft, cfg.n_time, cfg.n_bins,
                                     cfg.binning)  # fmt: skip
        self._register_norm(norm or Normalisation())
        d = cfg.d_model
        self.spec_encoder = SpectrogramEncoder(cfg.cnn_channels, d) if cfg.use_spectrogram else None
        self.scalar_encoder = _mlp(len(SCALAR_NAMES) + 1, d)  # + power relative to the strongest
        self.pos_encoder = _mlp(3, d)
        self.freq_encoder = _mlp(1, d)
        self.token_norm = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(
            MaskedSelfAttention(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        self.weight_head = nn.Linear(d, 1, bias=False)  # softmax ignores a shared bias
        self.head = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, 5))
        self.register_buffer("temperature", torch.tensor(1.0))

    def _register_norm(self, norm: Normalisation) -> None:
        self.norm_values = norm
        for name, value in asdict(norm).items():
            self.register_buffer(f"norm_{name}", torch.tensor(value, dtype=torch.float32))

    def set_normalisation(self, norm: Normalisation) -> None:
        """Replace the normalisation constants (buffers keep their identity)."""
        self.norm_values = norm
        for name, value in asdict(norm).items():
            getattr(self, f"norm_{name}").copy_(torch.tensor(value, dtype=torch.float32))

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @staticmethod
    def _relative_power(band_dbfs: Tensor, rx_mask: Tensor) -> Tensor:
        """Band power relative to the session's strongest online receiver, in units of 10 dB: (B·R, 1).

        Differences of received power do not depend on the unknown transmit power
        (P_i − P_j = path-loss and shadowing differences), so they carry the position.
        """
        masked = torch.where(rx_mask, band_dbfs, torch.full_like(band_dbfs, _NEG_LARGE))
        rel = (band_dbfs - masked.amax(dim=1, keepdim=True)) / 10.0
        return torch.where(rx_mask, rel, torch.zeros_like(rel)).reshape(-1, 1)

    def encode(self, iq: Tensor, rx_pos: Tensor, rx_mask: Tensor, center_freq_hz: Tensor) -> Tensor:
        """Per-receiver tokens (B, R, D), masked slots zeroed before any arithmetic."""
        b, r = iq.shape[0], iq.shape[1]
        iq = torch.where(rx_mask[:, :, None, None], iq, torch.zeros_like(iq))
        rx_pos = torch.where(rx_mask[:, :, None], rx_pos, torch.zeros_like(rx_pos))
        with torch.autocast(device_type=iq.device.type, enabled=False):  # DFT and logs stay float32
            spec, scalars = self.features(iq.float().reshape(b * r, iq.shape[2], 2))
        scal = (scalars - self.norm_scalar_mean) / self.norm_scalar_std
        token = self.scalar_encoder(
            torch.cat([scal, self._relative_power(scalars[:, 0].reshape(b, r), rx_mask)], 1)
        )
        if self.spec_encoder is not None:
            token = token + self.spec_encoder((spec - self.norm_spec_mean) / self.norm_spec_std)
        token = token.reshape(b, r, -1)
        en = (rx_pos[..., :2] - self.norm_pos_center_km) / self.norm_pos_scale_km
        log_h = (torch.log10(torch.clamp(rx_pos[..., 2:3], min=1.0)) - self.norm_log_height_mean) / (
            self.norm_log_height_std
        )
        token = token + self.pos_encoder(torch.cat([en, log_h], dim=-1))
        log_f = (torch.log10(torch.clamp(center_freq_hz, min=1.0)) - self.norm_log_freq_mean) / (
            self.norm_log_freq_std
        )
        token = token + self.freq_encoder(log_f.reshape(b, 1, 1))
        return self.token_norm(token)

    def forward_chol(
        self, iq: Tensor, rx_pos: Tensor, rx_mask: Tensor, center_freq_hz: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mean (B, 2) km and Cholesky factor L (B, 2, 2) km of the covariance (temperature applied)."""
        x = self.encode(iq, rx_pos, rx_mask, center_freq_hz)
        for block in self.blocks:
            x = block(x, rx_mask)
        x = self.final_norm(x)
        maskf = rx_mask.to(x.dtype).unsqueeze(-1)
        pooled_mean = (x * maskf).sum(dim=1) / torch.clamp(maskf.sum(dim=1), min=1.0)
        pooled_max = torch.where(rx_mask.unsqueeze(-1), x, torch.full_like(x, _NEG_LARGE)).amax(dim=1)
        pooled_max = torch.where(rx_mask.any(dim=1, keepdim=True), pooled_max, torch.zeros_like(pooled_max))
        out = self.head(torch.cat([pooled_mean, pooled_max], dim=-1)).float()
        logits = self.weight_head(x).squeeze(-1).float()
        logits = torch.where(rx_mask, logits, torch.full_like(logits, _NEG_LARGE))
        weights = torch.softmax(logits, dim=1)
        pos_en = torch.where(rx_mask[:, :, None], rx_pos, torch.zeros_like(rx_pos))[..., :2].float()
        centroid = (weights.unsqueeze(-1) * pos_en).sum(dim=1)
        mean = centroid + out[:, 0:2] * self.norm_pos_scale_km
        scale = self.config.chol_scale_km
        l11 = CHOL_FLOOR_KM + scale * F.softplus(out[:, 2])
        l22 = CHOL_FLOOR_KM + scale * F.softplus(out[:, 3])
        l21 = scale * out[:, 4]
        zero = torch.zeros_like(l11)
        chol = torch.stack([torch.stack([l11, zero], dim=-1), torch.stack([l21, l22], dim=-1)], dim=-2)
        return mean, chol * self.temperature

    def forward(
        self, iq: Tensor, rx_pos: Tensor, rx_mask: Tensor, center_freq_hz: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mean (B, 2) east/north km and covariance (B, 2, 2) km² (contracts §3).

        Parameters
        ----------
        iq
            float32 (B, R, T, 2) in full-scale units (int16 / 32768).
        rx_pos
            float32 (B, R, 3): east km, north km, antenna height m (model's local frame).
        rx_mask
            bool (B, R), True = online receiver; other slots may hold anything.
        center_freq_hz
            float32 (B,), Hz.

        """
        mean, chol = self.forward_chol(iq, rx_pos, rx_mask, center_freq_hz)
        return mean, chol @ chol.transpose(-1, -2)
