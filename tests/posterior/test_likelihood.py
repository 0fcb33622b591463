from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from heimdall.posterior.grid import grid_moments
from heimdall.posterior.likelihood import (
    PowerObservations,
    heard_stats,
    log_interval_prob,
    log_power_prior_mass,
    truncated_normal_nodes,
)


def test_heard_stats_against_brute_force() -> None:
    """m, W, Q compared with a direct weighted least-squares fit per candidate (numpy lstsq)."""
    rng = np.random.default_rng(0)
    b, r, g = 3, 5, 7
    w = rng.uniform(0.1, 1.0, (b, r)) * (rng.random((b, r)) > 0.2)
    obs = PowerObservations(
        rng.normal(-90, 10, (b, r)), w, np.zeros((b, r)), np.zeros((b, r), np.int8), np.ones((b, r))
    )
    gain = rng.normal(-100, 20, (r, g))
    m, big_w, q = heard_stats(obs, gain)
    for i in range(b):
        for k in range(g):
            res = obs.y_db[i] - gain[:, k]
            p0 = np.sum(w[i] * res) / np.sum(w[i])
            assert m[i, k] == pytest.approx(p0, abs=1e-9)
            assert q[i, k] == pytest.approx(np.sum(w[i] * (res - p0) ** 2), abs=1e-6)
    # per-session candidates (B, R, K) give the same answer
    m3, _, q3 = heard_stats(obs, np.broadcast_to(gain, (b, r, g)).copy())
    np.testing.assert_allclose(m3, m, atol=1e-9)
    np.testing.assert_allclose(q3, q, atol=1e-6)
    np.testing.assert_allclose(big_w, w.sum(1))


def test_log_interval_prob_in_both_tails() -> None:
    """Reference: scipy.stats.norm log CDF / log SF differences, including far tails."""
    lo = np.array([-1.0, -40.0, 30.0, -60.0, 2.0])
    hi = np.array([1.0, -35.0, 31.0, -59.5, 2.0 + 1e-3])
    with np.errstate(divide="ignore"):
        ref = np.where(
            lo > 0,
            stats.norm.logsf(lo) + np.log1p(-np.exp(stats.norm.logsf(hi) - stats.norm.logsf(lo))),
            stats.norm.logcdf(hi) + np.log1p(-np.exp(stats.norm.logcdf(lo) - stats.norm.logcdf(hi))),
        )
    np.testing.assert_allclose(log_interval_prob(lo, hi), ref, rtol=1e-9)


def test_tabulated_prior_mass_matches_exact() -> None:
    rng = np.random.default_rng(1)
    m = rng.uniform(-40, 120, (4, 500))
    sw = np.array([0.3, 1.0, 2.0, 0.05])
    exact = log_interval_prob((27.0 - m) * sw[:, None], (47.0 - m) * sw[:, None])
    np.testing.assert_allclose(log_power_prior_mass(m, sw, 27.0, 47.0), exact, atol=5e-3)


def test_truncated_nodes_mean() -> None:
    """The equal-mass nodes average to the truncated normal's mean (scipy.stats.truncnorm)."""
    mean, sd = np.array([30.0, 50.0, 37.0]), np.array([2.0, 3.0, 20.0])
    nodes = truncated_normal_nodes(mean, sd, 27.0, 47.0, 64)
    ref = stats.truncnorm.mean((27.0 - mean) / sd, (47.0 - mean) / sd, loc=mean, scale=sd)
    np.testing.assert_allclose(nodes.mean(-1), ref, atol=0.02)
    assert nodes.min() >= 27.0 and nodes.max() <= 47.0


def test_grid_moments_of_a_gaussian() -> None:
    """A Gaussian sampled on a fine grid: mean and covariance come back (closed form)."""
    e, n = np.meshgrid(np.arange(-30, 30, 0.25), np.arange(-30, 30, 0.25))
    pts = np.stack([e.ravel(), n.ravel()], -1)
    cov = np.array([[9.0, 3.0], [3.0, 4.0]])
    mu = np.array([2.0, -1.0])
    d = pts - mu
    ll = -0.5 * np.einsum("gi,ij,gj->g", d, np.linalg.inv(cov), d)[None]
    mean, c = grid_moments(ll, pts)
    np.testing.assert_allclose(mean[0], mu, atol=1e-6)
    np.testing.assert_allclose(c[0], cov, atol=0.01)
    _, c2 = grid_moments(ll, pts, np.array([[5.0, -1.0]]))
    np.testing.assert_allclose(c2[0], cov + np.outer([-3.0, 0.0], [-3.0, 0.0]), atol=0.01)


def test_censored_terms_are_added_where_they_can_matter() -> None:
    """Cells more than ``prune_nats`` below the heard-only best are dropped (−inf); when the
    censored term sinks every kept cell by more than 20 nats, every cell is evaluated instead."""
    from heimdall.posterior.likelihood import add_pruned

    heard = np.array([[0.0, -10.0, -40.0, -100.0]])
    mild = add_pruned(heard, lambda k, cols: np.full(len(cols), -1.0), prune_nats=30.0)
    np.testing.assert_array_equal(mild, [[-1.0, -11.0, -np.inf, -np.inf]])
    # a term of −60 at the two best cells and 0 elsewhere: the cut leaves the best at −60 < −30 − 20
    harsh = add_pruned(heard, lambda k, cols: np.where(cols < 2, -60.0, 0.0), prune_nats=30.0)
    np.testing.assert_array_equal(harsh, [[-60.0, -70.0, -40.0, -100.0]])


@pytest.mark.parametrize("var_shape", ["shared", "per_height"])
def test_log_posterior_with_field_variance_against_quadrature(var_shape: str) -> None:
    """Heard receivers with a field variance v_i(x) under H heights: the grid log posterior is
    log Σ_h w_h ∫ Π_i N(y_i; P0 + μ_ih(x), 1/w_i + v_ih(x)) dP0 / (hi − lo) (trapezoid rule over P0,
    independent of the closed form), up to one constant per session (variance shared by the
    heights, the weights computed once, or a different variance per height)."""
    from heimdall.posterior.likelihood import log_posterior_grid

    rng = np.random.default_rng(3)
    b, r, g, h = 2, 4, 6, 3
    w = rng.uniform(0.05, 0.3, (b, r))
    w[1, 0] = 0.0  # one receiver not heard
    obs = PowerObservations(
        rng.normal(-60, 8, (b, r)), w, np.zeros((b, r)), np.zeros((b, r), np.int8), np.ones((b, r))
    )
    mean = rng.normal(-100, 6, (h, r, g))
    var = rng.uniform(0.0, 30.0, (1, r, g) if var_shape == "shared" else (h, r, g))
    log_w = np.log(np.array([0.2, 0.5, 0.3]))
    lo, hi = 30.0, 50.0
    got = log_posterior_grid(mean, var, obs, (lo, hi), log_weight=log_w)
    p0 = np.linspace(lo, hi, 20001)
    vb = np.broadcast_to(var, mean.shape)
    for i in range(b):
        want = np.empty(g)
        for k in range(g):
            like = np.zeros_like(p0)
            for j in range(h):
                heard = w[i] > 0
                sd = np.sqrt(1.0 / w[i, heard] + vb[j, heard, k])
                mu = p0[:, None] + mean[j, heard, k][None]
                logpdf = stats.norm.logpdf(obs.y_db[i, heard][None], mu, sd).sum(axis=1)
                like += np.exp(log_w[j] + logpdf)
            want[k] = np.log(np.trapezoid(like, p0) / (hi - lo))
        np.testing.assert_allclose(got[i] - got[i].max(), want - want.max(), atol=1e-4)
