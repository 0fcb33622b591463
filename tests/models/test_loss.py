import math

import numpy as np
import torch

from heimdall.models.loss import beta_nll_loss, gaussian_nll


def _random_chol(gen: torch.Generator, n: int) -> torch.Tensor:
    chol = torch.zeros(n, 2, 2, dtype=torch.float64)
    chol[:, 0, 0] = 0.5 + 20 * torch.rand(n, generator=gen, dtype=torch.float64)
    chol[:, 1, 1] = 0.5 + 20 * torch.rand(n, generator=gen, dtype=torch.float64)
    chol[:, 1, 0] = 10 * torch.randn(n, generator=gen, dtype=torch.float64)
    return chol


def test_nll_matches_torch_multivariate_normal() -> None:
    """Reference: torch.distributions.MultivariateNormal(scale_tril=L).log_prob, float32 within 1e-5."""
    gen = torch.Generator().manual_seed(0)
    chol = _random_chol(gen, 256)
    mean = 50 * torch.randn(256, 2, generator=gen, dtype=torch.float64)
    truth = mean + 30 * torch.randn(256, 2, generator=gen, dtype=torch.float64)
    ref = -torch.distributions.MultivariateNormal(mean, scale_tril=chol).log_prob(truth)
    ours = gaussian_nll(mean.float(), chol.float(), truth.float()).double()
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_nll_hand_computed_float64() -> None:
    """Σ = L Lᵀ with L = [[2, 0], [1, 3]] -> Σ = [[4, 2], [2, 10]], det 36, Σ⁻¹ = [[10, -2], [-2, 4]] / 36.

    d = (1, 2): dᵀΣ⁻¹d = (10 - 8 + 16) / 36 = 0.5, so NLL = log 2π + ½ log 36 + ¼.
    """
    chol = torch.tensor([[[2.0, 0.0], [1.0, 3.0]]], dtype=torch.float64)
    nll = gaussian_nll(
        torch.zeros(1, 2, dtype=torch.float64), chol, torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    )
    expected = math.log(2 * math.pi) + 0.5 * math.log(36.0) + 0.25
    assert abs(float(nll[0]) - expected) < 1e-9


def test_beta_nll_weights_by_detached_variance() -> None:
    """β-NLL = mean((l11 l22)^β · NLL) with the weight carrying no gradient (Seitzer et al. 2022)."""
    chol = torch.tensor([[[2.0, 0.0], [0.0, 8.0]], [[1.0, 0.0], [0.5, 1.0]]], requires_grad=True)
    mean = torch.zeros(2, 2)
    truth = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    nll = gaussian_nll(mean, chol, truth)
    loss = beta_nll_loss(mean, chol, truth, beta=0.5)
    expected = (np.sqrt(16.0) * float(nll[0]) + 1.0 * float(nll[1])) / 2
    assert abs(float(loss) - expected) < 1e-5
    assert abs(float(beta_nll_loss(mean, chol, truth, 0.0)) - float(nll.mean())) < 1e-6
    (grad_beta,) = torch.autograd.grad(loss, chol)
    nll_w = gaussian_nll(mean, chol, truth)
    (grad_ref,) = torch.autograd.grad((torch.tensor([4.0, 1.0]) * nll_w).mean(), chol)
    assert torch.allclose(grad_beta, grad_ref, atol=1e-6)
