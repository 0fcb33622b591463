"""Full-covariance 2-D Gaussian negative log-likelihood in km, from the Cholesky factor.

For Σ = L Lᵀ with L = [[l11, 0], [l21, l22]] (l11, l22 > 0) and d = truth − mean (km):

    −log N(d; 0, Σ) = log(2π) + log l11 + log l22 + ½ (z1² + z2²),
    z1 = d1 / l11,  z2 = (d2 − l21 z1) / l22   (z = L⁻¹ d, forward substitution),

since log det Σ = 2 (log l11 + log l22) and dᵀ Σ⁻¹ d = |L⁻¹ d|² (Bishop, *Pattern
Recognition and Machine Learning*, eq. 2.43). The β-NLL option (Seitzer et al.,
"On the pitfalls of heteroscedastic uncertainty estimation", ICLR 2022) weights each
session's NLL by the stop-gradient of its variance to the power β, here the geometric
mean variance det(Σ)^(1/2) = l11 l22, i.e. the weight (l11 l22)^β (β = 0: plain NLL,
β = 0.5 is the paper's recommendation).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(mean_km: Tensor, chol_km: Tensor, truth_km: Tensor) -> Tensor:
    """Per-session NLL (nats) of truths (B, 2) under N(mean (B, 2), L Lᵀ), L (B, 2, 2) lower-triangular."""
    d = truth_km - mean_km
    l11, l21, l22 = chol_km[:, 0, 0], chol_km[:, 1, 0], chol_km[:, 1, 1]
    z1 = d[:, 0] / l11
    z2 = (d[:, 1] - l21 * z1) / l22
    return LOG_2PI + torch.log(l11) + torch.log(l22) + 0.5 * (z1 * z1 + z2 * z2)


def beta_nll_loss(mean_km: Tensor, chol_km: Tensor, truth_km: Tensor, beta: float = 0.0) -> Tensor:
    """Mean over the batch of the β-weighted NLL (β = 0 gives the plain mean NLL)."""
    nll = gaussian_nll(mean_km, chol_km, truth_km)
    if beta == 0.0:
        return nll.mean()
    weight = (chol_km[:, 0, 0] * chol_km[:, 1, 1]).detach() ** beta
    return (weight * nll).mean()
