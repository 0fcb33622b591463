"""Log-likelihood building blocks of received power, vectorised over sessions × grid points.

Measured powers y_i (dB) of the heard receivers are modelled as
y_i = P0 + a_i(x) + ε_i, ε_i ~ N(0, σ_i²), with the transmit power P0 unknown
and a_i(x) the power gain from a candidate position x to receiver i. With
weights w_i = 1/σ_i², residuals r_i = y_i − a_i, W = Σ w_i,
m = Σ w_i r_i / W and Q = Σ w_i r_i² − W m² (weighted sum of squares about the
best P0):

    Π_i N(y_i) ∝ exp(−Q/2) · exp(−W (P0 − m)² / 2).

Hence the profile over P0 is −Q/2 at P0 = m, and a uniform prior on
[lo, hi] integrates to exp(−Q/2) [Φ((hi − m)√W) − Φ((lo − m)√W)] up to
factors that do not depend on x. Censored receivers add log Φ(s_j (t_j − P0 − a_j) / σ_j)
with s_j = +1 for a silent receiver (power below its threshold t_j) and
s_j = −1 for a clipped one (power above its measured lower bound).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr, logsumexp, ndtr, ndtri

#: Quadrature nodes of the transmit power P0 for censored terms; Gauss-Legendre nodes of the
#: transmitter height (the oracle and the radio-map posterior marginalise both the same way).
P0_NODES = 8
HEIGHT_NODES = 4
#: Log-likelihood margin (nats) below the heard-only maximum beyond which censored terms are skipped.
PRUNE_NATS = 30.0


def height_nodes(lo_m: float, hi_m: float, n: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gauss-Legendre nodes (m) and log-weights of the uniform law of the height on [lo, hi] (m)."""
    if hi_m - lo_m < 1e-9:
        return np.array([lo_m]), np.array([0.0])
    x, w = np.polynomial.legendre.leggauss(n)
    return lo_m + (x + 1.0) * 0.5 * (hi_m - lo_m), np.log(w / w.sum())


@dataclass(frozen=True)
class PowerObservations:
    """What a power-based estimator sees of B sessions with R receiver slots.

    Attributes
    ----------
    y_db
        Measured power (dB), (B, R); used where ``weight > 0``.
    weight
        1/σ² (dB⁻²) of heard, unclipped receivers, else 0, (B, R).
    cens_db
        Censoring level (dB), (B, R): the silent receiver's threshold or the
        clipped receiver's measured power.
    cens_sign
        +1 silent (power below ``cens_db``), −1 clipped (above), 0 none, (B, R).
    cens_sigma_db
        σ (dB) of the censored terms, (B, R).

    """

    y_db: NDArray[np.float64]
    weight: NDArray[np.float64]
    cens_db: NDArray[np.float64]
    cens_sign: NDArray[np.int8]
    cens_sigma_db: NDArray[np.float64]

    def select(self, index: NDArray[np.int64] | slice) -> PowerObservations:
        """Sessions at ``index``."""
        return PowerObservations(
            self.y_db[index], self.weight[index], self.cens_db[index],
            self.cens_sign[index], self.cens_sigma_db[index],
        )  # fmt: skip


def power_observations(
    band_db: NDArray[np.float64],
    noise_db: NDArray[np.float64],
    heard: NDArray[np.bool_],
    online: NDArray[np.bool_],
    clipped: NDArray[np.bool_],
    sigma_db: float,
    detection_snr_db: float,
) -> PowerObservations:
    """Observations from measured band power and noise (dB): heard, silent (censored), clipped.

    Parameters
    ----------
    band_db, noise_db
        Measured signal and noise power, dB (any common reference), (B, R).
    heard, online, clipped
        Receiver flags (B, R).
    sigma_db
        σ of every measurement, dB.
    detection_snr_db
        SNR (dB) from which a receiver counts as heard: silent means power < noise + this.

    """
    silent = online & ~heard
    clip = heard & clipped
    use = heard & ~clipped
    sign = np.where(silent, 1, np.where(clip, -1, 0)).astype(np.int8)
    cens = np.where(silent, noise_db + detection_snr_db, np.where(clip, band_db, 0.0))
    return PowerObservations(
        y_db=np.where(use, band_db, 0.0),
        weight=np.where(use, 1.0 / sigma_db**2, 0.0),
        cens_db=np.nan_to_num(cens),
        cens_sign=sign,
        cens_sigma_db=np.full(band_db.shape, float(sigma_db)),
    )


def censored_loglik(
    obs: PowerObservations, p0_db: NDArray[np.float64], gain_db: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Σ_j log Φ(s_j (t_j − P0 − a_j) / σ_j) over censored receivers.

    Parameters
    ----------
    obs
        B sessions.
    p0_db
        Transmit power at each candidate (B, ...), dB.
    gain_db
        a_j at each candidate (B, R, ...) matching ``p0_db`` after the receiver axis, dB.

    """
    out = np.zeros(p0_db.shape)
    for j in np.flatnonzero(np.any(obs.cens_sign != 0, axis=0)):
        sign = obs.cens_sign[:, j].astype(np.float64)
        active = sign != 0
        if not active.any():
            continue
        shape = (-1,) + (1,) * (p0_db.ndim - 1)
        z = (obs.cens_db[:, j].reshape(shape) - p0_db - gain_db[:, j]) / obs.cens_sigma_db[:, j].reshape(
            shape
        )
        out += np.where(active.reshape(shape), log_ndtr(sign.reshape(shape) * z), 0.0)
    return out


def heard_stats(
    obs: PowerObservations, gain_db: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Best power m, total weight W and residual sum of squares Q at every candidate.

    Parameters
    ----------
    obs
        B sessions.
    gain_db
        a_i(x): (R, G) shared by all sessions, or (B, R, G) per session, dB.

    Returns
    -------
    m_db (B, G), weight (B,), q (B, G)

    """
    w = obs.weight
    y = np.where(w > 0, obs.y_db, 0.0)
    wy, wyy = w * y, w * y * y
    big_w = w.sum(1)
    safe_w = np.where(big_w > 0, big_w, 1.0)[:, None]
    if gain_db.ndim == 2:
        b = len(w)
        prod = np.concatenate([w, wy]) @ gain_db  # Σ w a, Σ w y a
        s1 = prod[:b]
        np.subtract(wy.sum(1)[:, None], s1, out=s1)  # Σ w r
        q = w @ (gain_db * gain_db)  # Σ w a²
        wya = prod[b:]
        wya *= 2.0
        q -= wya
        q += wyy.sum(1)[:, None]  # Σ w r²
    else:
        s1 = wy.sum(1)[:, None] - np.einsum("br,brg->bg", w, gain_db)
        q = (
            wyy.sum(1)[:, None]
            - 2.0 * np.einsum("br,brg->bg", wy, gain_db)
            + np.einsum("br,brg->bg", w, gain_db * gain_db)
        )
    m = s1 / safe_w
    s1 *= m
    q -= s1
    np.maximum(q, 0.0, out=q)
    return m, big_w, q


def log_interval_prob(lo: NDArray[np.float64], hi: NDArray[np.float64]) -> NDArray[np.float64]:
    """log(Φ(hi) − Φ(lo)) for lo ≤ hi, stable in both tails.

    Where lo < −8 and hi > 8 the value is 0 to within 1e-15 and is not computed.
    """
    lo, hi = np.broadcast_arrays(lo, hi)
    out = np.zeros(lo.shape)
    need = (lo > -8.0) | (hi < 8.0)
    lo, hi = lo[need], hi[need]
    flip = lo > 0
    a = np.where(flip, -hi, lo)
    b = np.where(flip, -lo, hi)
    lb, la = log_ndtr(b), log_ndtr(a)
    with np.errstate(divide="ignore"):
        out[need] = lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))
    return out


def logsumexp0(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Log Σ exp(x) over axis 0 (fast for a short axis; −inf where all are −inf)."""
    top = x.max(axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.sum(np.exp(x - safe), axis=0))


def truncated_normal_nodes(
    mean: NDArray[np.float64], sd: NDArray[np.float64], lo: float, hi: float, n_nodes: int
) -> NDArray[np.float64]:
    """Equal-mass quadrature nodes of N(mean, sd²) truncated to [lo, hi]: (..., n_nodes).

    Node k is the quantile (k + ½)/K of the truncated law (midpoint rule in
    probability), exact in the tails by working on the lower tail side.
    """
    u = (np.arange(n_nodes) + 0.5) / n_nodes
    a = (lo - mean) / sd
    b = (hi - mean) / sd
    flip = a > 0
    aa = np.where(flip, -b, a)[..., None]
    bb = np.where(flip, -a, b)[..., None]
    uu = np.where(flip[..., None], 1.0 - u, u)
    pa, pb = ndtr(aa), ndtr(bb)
    z = ndtri(np.clip(pa + (pb - pa) * uu, 1e-300, 1.0 - 1e-16))
    z = np.where(flip[..., None], -z, z)
    return mean[..., None] + sd[..., None] * z


def log_power_prior_mass(
    m_db: NDArray[np.float64], sqrt_w: NDArray[np.float64], lo_db: float, hi_db: float, step_db: float = 0.05
) -> NDArray[np.float64]:
    """log[Φ((hi − m)√W) − Φ((lo − m)√W)] for m (B, N) and per-session √W (B,), via a fine table.

    Per session the function of m is tabulated every ``step_db`` over
    [lo − 12/√W, hi + 12/√W] and linearly interpolated (error < W·step²/8 nats,
    ~0.001 here); values of m outside the table are computed exactly.
    """
    span = 12.0 / np.maximum(sqrt_w, 1e-6)
    m0 = lo_db - span
    n_tab = int(np.ceil((hi_db - lo_db + 2.0 * span.max()) / step_db)) + 2
    if m_db.shape[1] <= n_tab:  # few points: exact is cheaper than a table
        sw = sqrt_w[:, None]
        return log_interval_prob((lo_db - m_db) * sw, (hi_db - m_db) * sw)
    grid = m0[:, None] + step_db * np.arange(n_tab)[None, :]
    table = log_interval_prob((lo_db - grid) * sqrt_w[:, None], (hi_db - grid) * sqrt_w[:, None])
    pos = (m_db - m0[:, None]) / step_db
    inside = (pos >= 0) & (pos < n_tab - 1)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_tab - 2)
    frac = np.clip(pos - i0, 0.0, 1.0)
    t0 = np.take_along_axis(table, i0, axis=1)
    t1 = np.take_along_axis(table, i0 + 1, axis=1)
    out = t0 + (t1 - t0) * frac
    if not inside.all():
        sw = np.broadcast_to(sqrt_w[:, None], m_db.shape)[~inside]
        out[~inside] = log_interval_prob((lo_db - m_db[~inside]) * sw, (hi_db - m_db[~inside]) * sw)
    return out


def power_marginal_loglik(
    stats: list[tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]],
    lo_db: float,
    hi_db: float,
) -> NDArray[np.float64]:
    """−Q/2 + log[Φ((hi − m)√W) − Φ((lo − m)√W)] for H candidate sets: (H, B, G).

    ``stats`` are :func:`heard_stats` results (m, W, Q), one per set (e.g. per
    transmitter height). Sessions with nothing heard get 0.
    """
    big_w = stats[0][1]
    sw = np.sqrt(big_w)
    out = np.stack([-0.5 * q + log_power_prior_mass(m, sw, lo_db, hi_db) for m, _, q in stats])
    return np.where((big_w > 0)[None, :, None], out, 0.0)


def variance_weights(
    obs: PowerObservations, var_db2: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-candidate weights of the heard receivers when the field has its own variance.

    The heard receiver's variance is 1/w_i + v_i(x), so w_i(x) = 1 / (1/w_i + v_i(x)).

    Parameters
    ----------
    obs
        B sessions.
    var_db2
        The field's variance v_i(x): (R, G) shared or (B, R, G) per session, dB².

    Returns
    -------
    w (B, R, G), weight (B, G), log_det (B, G)
        Weights (0 where not heard, dB⁻²), their total W(x) and Σ_i log w_i(x).

    """
    w0 = obs.weight[:, :, None]
    heard = w0 > 0
    var = np.asarray(var_db2, dtype=np.float64)
    if var.ndim == 2:
        var = var[None]
    w = np.where(heard, 1.0 / (1.0 / np.where(heard, w0, 1.0) + var), 0.0)  # (B, R, G)
    with np.errstate(divide="ignore"):
        log_det = np.sum(np.where(heard, np.log(np.where(heard, w, 1.0)), 0.0), axis=1)
    return w, w.sum(axis=1), log_det


def weighted_residuals(
    obs: PowerObservations, mean_db: NDArray[np.float64], w: NDArray[np.float64], big_w: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Best power m (B, G) dB and residual sum of squares Q (B, G) given per-candidate weights.

    ``mean_db``: the predicted gain a_i(x), (R, G) shared or (B, R, G) per session, dB;
    ``w``, ``big_w``: :func:`variance_weights`.
    """
    if mean_db.ndim == 2:
        mean_db = mean_db[None]
    r = np.where(w > 0, obs.y_db[:, :, None] - mean_db, 0.0)
    wr = w * r
    s1 = wr.sum(axis=1)
    m = s1 / np.where(big_w > 0, big_w, 1.0)
    q = np.maximum(np.sum(wr * r, axis=1) - s1 * m, 0.0)
    return m, q


def heard_stats_var(
    obs: PowerObservations, mean_db: NDArray[np.float64], var_db2: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """:func:`heard_stats` when the predicted field has its own variance at every candidate.

    The heard receiver's variance is 1/w_i + v_i(x), so weights vary with x:
    w_i(x) = 1 / (1/w_i + v_i(x)).

    Parameters
    ----------
    obs
        B sessions.
    mean_db
        Predicted gain a_i(x): (R, G) shared or (B, R, G) per session, dB.
    var_db2
        Its variance v_i(x), broadcastable to ``mean_db``, dB².

    Returns
    -------
    m_db (B, G), weight (B, G), q (B, G), log_det (B, G)
        Best power, total weight W(x), residual sum of squares and Σ_i log w_i(x).

    """
    var = np.asarray(var_db2, dtype=np.float64)
    if var.shape[-2:] != mean_db.shape[-2:]:
        var = np.broadcast_to(var, mean_db.shape)
    w, big_w, log_det = variance_weights(obs, var)
    m, q = weighted_residuals(obs, mean_db, w, big_w)
    return m, big_w, q, log_det


def log_posterior_grid(
    mean_rx_db: NDArray[np.float64],
    var_db2: NDArray[np.float64] | float,
    obs: PowerObservations,
    p0_range_db: tuple[float, float],
    log_weight: NDArray[np.float64] | None = None,
    log_prior: NDArray[np.float64] | None = None,
    p0_nodes: int = 8,
    prune_nats: float = PRUNE_NATS,
) -> NDArray[np.float64]:
    """Log posterior of the transmitter position on a grid, transmit power marginalised (B, G).

    For every candidate x and session, the measured powers y_i (dB) of heard
    receivers are N(P0 + μ_i(x), 1/w_i + v_i(x)), silent receivers add
    Φ((t_j − P0 − μ_j(x)) / s_j(x)) and clipped ones Φ(−(t_j − P0 − μ_j(x)) / s_j(x))
    with s_j² = σ_j² + v_j(x) (Tobit censoring, Tobin 1958). P0 (dB) is uniform on
    ``p0_range_db``: the heard part is integrated in closed form,

        ∫ Π_i N(y_i) dP0 / (hi − lo) ∝ exp(−Q/2 + ½ Σ log w_i − ½ log W) [Φ((hi − m)√W) − Φ((lo − m)√W)],

    and the censored part by ``p0_nodes`` equal-mass nodes of P0's conditional
    law given the heard terms (a truncated normal; uniform when nothing is heard).
    H alternative fields (e.g. transmitter heights) are mixed with ``log_weight``.

    Parameters
    ----------
    mean_rx_db
        Predicted received power at each grid point for P0 = 0 dB: (R, G) or
        (H, R, G) shared by the sessions, or (H, B, R, G) per session; dB in the
        reference of ``obs`` (any per-receiver constant such as a known gain
        offset belongs here).
    var_db2
        Variance of that prediction (dB²), broadcastable to ``mean_rx_db``
        (0: the field is known exactly, as for the oracle; a radio map's kriging variance).
    obs
        Observations of B sessions (:func:`power_observations`).
    p0_range_db
        Support (lo, hi) of the uniform prior of P0, dB (dBm for dBm data).
    log_weight
        Log weights (H,) of the alternative fields, summing to 1 in probability; None: equal.
    log_prior
        Log prior density of the position on the grid (G,); None: flat.
    p0_nodes
        Quadrature nodes of P0 for the censored terms.
    prune_nats
        Cells more than this below the session's best heard-only value skip the
        censored terms (−inf; they are ≤ 0), unless that leaves no cell within
        20 nats of the cut.

    Returns
    -------
    NDArray
        Unnormalised log posterior (B, G), nats; −inf where pruned.

    """
    mean = np.asarray(mean_rx_db, dtype=np.float64)
    if mean.ndim == 2:
        mean = mean[None]
    n_h = mean.shape[0]
    var_in = np.asarray(var_db2, dtype=np.float64)
    var = np.broadcast_to(var_in, mean.shape)
    exact = not np.any(var)
    # one variance for every height (the usual case): the weights are computed once
    shared = var_in.ndim < mean.ndim or var_in.shape[0] == 1
    lw = np.full(n_h, -np.log(n_h)) if log_weight is None else np.asarray(log_weight, dtype=np.float64)
    lo, hi = p0_range_db
    parts = []
    for k in range(n_h):
        if exact:
            m, big_w, q = heard_stats(obs, mean[k])
            big_w = np.broadcast_to(big_w[:, None], m.shape)
            log_det = np.zeros_like(m)
        else:
            if k == 0 or not shared:
                w, big_w, log_det = variance_weights(obs, var[k])
            m, q = weighted_residuals(obs, mean[k], w, big_w)
        sw = np.sqrt(big_w)
        heard = big_w > 0
        with np.errstate(divide="ignore"):
            mass = log_interval_prob((lo - m) * sw, (hi - m) * sw) if not exact else None
        if exact:  # one W per session: the tabulated prior mass is exact to ~0.001 nats
            mass = log_power_prior_mass(m, sw[:, 0], lo, hi)
        with np.errstate(divide="ignore"):
            ll = -0.5 * q + 0.5 * log_det - 0.5 * np.log(np.where(heard, big_w, 1.0)) + mass
        parts.append(np.where(heard, ll, 0.0) + lw[k])
    out = np.stack(parts)  # (H, B, G)
    for b in np.flatnonzero(np.any(obs.cens_sign != 0, axis=1)):
        out[:, b] = _with_censored(obs.select([b]), mean, var, b, out[:, b], (lo, hi), p0_nodes, prune_nats)
    total = logsumexp0(out)
    return total if log_prior is None else total + np.asarray(log_prior)[None]


def _with_censored(
    obs: PowerObservations,
    mean: NDArray[np.float64],
    var: NDArray[np.float64],
    b: int,
    heard: NDArray[np.float64],
    p0_range_db: tuple[float, float],
    n_nodes: int,
    prune_nats: float,
) -> NDArray[np.float64]:
    """Add one session's censored terms to its heard log-likelihood (H, G), pruning hopeless cells."""

    def term(k: int, cols: NDArray[np.int64]) -> NDArray[np.float64]:
        mu = mean[k] if mean.ndim == 3 else mean[k, b]
        v = var[k] if var.ndim == 3 else var[k, b]
        return _censored_expectation(obs, mu[:, cols], v[:, cols], p0_range_db, n_nodes)

    return add_pruned(heard, term, prune_nats)


def add_pruned(
    heard: NDArray[np.float64],
    term: Callable[[int, NDArray[np.int64]], NDArray[np.float64]],
    prune_nats: float = PRUNE_NATS,
) -> NDArray[np.float64]:
    """``heard + term`` (H, G) for one session, the ≤ 0 censored term only where it can matter.

    Only cells within ``prune_nats`` of the best heard-only value get ``term(k, cols)``
    (the others are −inf: negligible posterior); if that leaves nothing within 20 nats of
    the cut, every cell is evaluated.
    """
    top = heard.max()
    cols = np.flatnonzero(heard.max(axis=0) >= top - prune_nats)
    out = np.full_like(heard, -np.inf)
    for _ in range(2):
        for k in range(heard.shape[0]):
            out[k, cols] = heard[k, cols] + term(k, cols)
        if out.max() >= top - prune_nats + 20.0 or len(cols) == heard.shape[1]:
            break
        cols = np.arange(heard.shape[1])
    return out


def _censored_expectation(
    obs: PowerObservations,
    mean: NDArray[np.float64],
    var: NDArray[np.float64],
    p0_range_db: tuple[float, float],
    n_nodes: int,
) -> NDArray[np.float64]:
    """Log E[Π_j Φ] over the law of P0 given one session's heard terms, at C candidates: (C,)."""
    lo, hi = p0_range_db
    if np.any(var):
        m, big_w, _, _ = heard_stats_var(obs, mean, var)
        m, big_w = m[0], big_w[0]
    else:
        m, w1, _ = heard_stats(obs, mean)
        m, big_w = m[0], np.full(m.shape[1], w1[0])
    if np.all(big_w > 0):
        nodes = truncated_normal_nodes(m, 1.0 / np.sqrt(big_w), lo, hi, n_nodes)  # (C, K)
    else:
        u = (np.arange(n_nodes) + 0.5) / n_nodes
        nodes = np.broadcast_to(lo + (hi - lo) * u, (mean.shape[1], n_nodes))
    sigma = obs.cens_sigma_db[0][:, None]
    scale = np.sqrt(sigma**2 + var)  # (R, C)
    ll = np.zeros(nodes.shape)
    for j in np.flatnonzero(obs.cens_sign[0] != 0):
        z = (obs.cens_db[0, j] - nodes - mean[j][:, None]) / scale[j][:, None]
        ll += log_ndtr(float(obs.cens_sign[0, j]) * z)
    return logsumexp(ll, axis=1) - np.log(n_nodes)
