"""Gaussian-process field with exponential covariance: local kriging and the empirical variogram.

Covariance C(h) = σ² exp(−h / ℓ) (Gudmundson, Electronics Letters 1991, for
log-normal shadowing); observations z_b = s(x_b) + e_b with a per-label
nugget variance n_b (capture noise, label position uncertainty, censored
imputation). Simple kriging (zero prior mean; Cressie, *Statistics for
Spatial Data*, 1993, §3.2) at a query point uses only its ``k`` nearest
labels within ``max_km`` (a local neighbourhood: the exponential kernel
screens distant labels), so N labels cost O(G k³) and stay linear in N.
Far from every label the prediction returns to the prior: mean 0, variance σ².

Two bands (2 m, 70 cm) see correlated fields: the covariance between a
band-a and a band-b observation is C(h)·ρ_ab with ρ_ab = 1 for the same band
and ρ (``band_corr``) across bands (an intrinsic coregionalisation model;
Wackernagel, *Multivariate Geostatistics*, 2003, ch. 23): kriging a band's
field uses both bands' labels (co-kriging). ρ is estimated from the
cross-band semivariogram γ_x(h) = τ² + σ² (1 − ρ e^(−h/ℓ)) at short lags.

Hyper-parameters (σ², ℓ, nugget τ²) are fitted to the empirical
semivariogram γ(h) = ½ E[(z_a − z_b)²] = τ² + σ² (1 − e^(−h/ℓ)) by weighted
least squares with Cressie's (1985) weights N_h / γ(h)².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

_CHUNK = 4096


@dataclass(frozen=True)
class FieldHyper:
    """Field statistics: σ (dB), correlation distance ℓ (km), per-capture nugget σ (dB), cross-band ρ.

    ``common_var_db2`` is the variance (dB²) of the field part common to a session's receivers
    that the labelled sessions' estimated powers absorbed (:func:`heimdall.maps.fit.common_field_var_db2`);
    0 where the powers were known or too few labels were fitted. Kriging does not use it.
    """

    sigma_db: float
    corr_km: float
    nugget_db: float
    band_corr: float = 1.0
    common_var_db2: float = 0.0

    def cov(self, h_km: NDArray[np.float64]) -> NDArray[np.float64]:
        """C(h) = σ² exp(−h/ℓ), dB²."""
        return self.sigma_db**2 * np.exp(-h_km / self.corr_km)

    def label_inflation(self, sigma_km: NDArray[np.float64]) -> NDArray[np.float64]:
        """Extra variance (dB²) of a label with Gaussian position error σ per axis (km): σ_f² (1 − ρ(r̄)).

        r̄ = σ √(π/2) is the mean distance of the true position from the label (Rayleigh law).
        """
        r = np.asarray(sigma_km) * np.sqrt(np.pi / 2.0)
        return self.sigma_db**2 * (1.0 - np.exp(-r / self.corr_km))


def krige(
    train_km: NDArray[np.float64],
    values: NDArray[np.float64],
    nugget_db2: NDArray[np.float64],
    query_km: NDArray[np.float64],
    hyper: FieldHyper,
    k: int = 32,
    max_km: float | None = None,
    exclude_self: bool = False,
    train_band: NDArray[np.int8] | None = None,
    query_band: NDArray[np.int8] | int | None = None,
    with_weight_sums: bool = False,
) -> tuple[NDArray[np.float64], ...]:
    """Local simple kriging of a zero-mean exponential field: mean and variance (dB, dB²) at queries.

    Parameters
    ----------
    train_km
        (N, 2) label positions, km.
    values
        (N,) observed field values, dB.
    nugget_db2
        (N,) observation noise variances, dB².
    query_km
        (M, 2) query points, km.
    hyper
        Field statistics.
    k
        Neighbours per query.
    max_km
        Labels farther than this are ignored (default 4 ℓ).
    exclude_self
        Queries are the labels themselves (M = N): leave each one out (cross-validation).
    train_band, query_band
        Band index of the labels (N,) and of the queries ((M,) or one int): labels of
        the other band count with covariance ρ C(h); None: one band.
    with_weight_sums
        Also return the (M, 2) sums of the kriging weights of the labels of the query's
        band and of the other band (what a trend estimated from the labels leaks into
        the prediction: :func:`trend_variance`).

    """
    m = len(query_km)
    mean = np.zeros(m)
    var = np.full(m, hyper.sigma_db**2)
    wsum = np.zeros((m, 2))
    n = len(train_km)
    if n == 0 or m == 0:
        return (mean, var, wsum) if with_weight_sums else (mean, var)
    max_km = 4.0 * hyper.corr_km if max_km is None else max_km
    k = min(k + int(exclude_self), n)
    tree = cKDTree(train_km)
    dist, idx = tree.query(query_km, k=k, distance_upper_bound=max_km)
    dist, idx = dist.reshape(m, k), idx.reshape(m, k)
    if exclude_self:
        own = idx == np.arange(m)[:, None]
        idx[own], dist[own] = n, np.inf
        order = np.argsort(dist, axis=1, kind="stable")
        dist, idx = np.take_along_axis(dist, order, 1), np.take_along_axis(idx, order, 1)
    active = np.flatnonzero(np.isfinite(dist[:, 0]))
    # padding label (index n): no covariance with anything, huge nugget -> zero weight
    pts = np.vstack([train_km, [[0.0, 0.0]]])
    vals = np.append(values, 0.0)
    nug = np.append(nugget_db2, 1e12)
    s2 = hyper.sigma_db**2
    rho = float(hyper.band_corr)
    banded = train_band is not None and rho != 1.0
    if banded:
        tb = np.append(np.asarray(train_band, dtype=np.int8), 0)
        qb = np.broadcast_to(np.asarray(0 if query_band is None else query_band, dtype=np.int8), (m,))
    for start in range(0, len(active), _CHUNK):
        rows = active[start : start + _CHUNK]
        ii = idx[rows]
        pad = ii == n
        px, py = pts[ii, 0], pts[ii, 1]  # (c, k)
        dx = px[:, :, None] - px[:, None, :]
        dy = py[:, :, None] - py[:, None, :]
        dd = np.sqrt(dx * dx + dy * dy)
        dd *= -1.0 / hyper.corr_km
        cov = np.exp(dd, out=dd)
        cov *= s2
        cov[pad[:, :, None] | pad[:, None, :]] = 0.0
        kstar = np.where(pad, 0.0, s2 * np.exp(-np.where(pad, 0.0, dist[rows]) / hyper.corr_km))
        if banded:
            bb = tb[ii]
            cov *= np.where(bb[:, :, None] != bb[:, None, :], rho, 1.0)
            kstar *= np.where(bb != qb[rows, None], rho, 1.0)
        cov[:, np.arange(k), np.arange(k)] = np.where(pad, 0.0, s2) + nug[ii]
        w = np.linalg.solve(cov, kstar[..., None])[..., 0]
        mean[rows] = np.einsum("ck,ck->c", w, vals[ii])
        var[rows] = np.maximum(s2 - np.einsum("ck,ck->c", w, kstar), 0.0)
        if with_weight_sums:
            w = np.where(pad, 0.0, w)
            same = tb[ii] == qb[rows, None] if banded else np.ones(w.shape, bool)
            wsum[rows, 0] = np.sum(np.where(same, w, 0.0), axis=1)
            wsum[rows, 1] = np.sum(np.where(same, 0.0, w), axis=1)
    return (mean, var, wsum) if with_weight_sums else (mean, var)


def mean_variance(
    pos_km: NDArray[np.float64],
    nugget_db2: NDArray[np.float64],
    hyper: FieldHyper,
    rng: np.random.Generator,
    pairs: int = 200_000,
) -> float:
    """Variance (dB²) of the plain mean of n labels' values z = s(x) + e under the field's law.

    Var(z̄) = (1/n²) [Σ_a≠b C(h_ab) + Σ_a (σ² + n_a)]: the error of an intercept
    estimated as the labels' mean residual, which is large when the labels cluster
    (their fields are correlated: a town's shadowing cannot be told from the receiver's
    gain). The off-diagonal mean of C is exact for few labels and estimated from
    ``pairs`` random pairs otherwise (standard error below 1e-3 σ² with the default).
    """
    n = len(pos_km)
    if n == 0:
        raise ValueError("the mean of no labels has no variance")
    if n == 1:
        return float(hyper.sigma_db**2 + nugget_db2[0])
    if n * (n - 1) // 2 <= pairs:
        a, b = np.triu_indices(n, 1)
    else:
        a, b = rng.integers(0, n, pairs), rng.integers(0, n, pairs)
        keep = a != b
        a, b = a[keep], b[keep]
    off = float(np.mean(hyper.cov(np.hypot(*(pos_km[a] - pos_km[b]).T))))
    return off * (n - 1) / n + float(hyper.sigma_db**2 + np.mean(nugget_db2)) / n


def trend_variance(
    weight_sums: NDArray[np.float64], same_band_db2: float, other_band_db2: float
) -> NDArray[np.float64]:
    """Extra prediction variance (dB²) from intercepts estimated from the labels (universal kriging).

    The predictor ĉ_q + Σ_k w_k (z_k − ĉ_(b_k)) errs by δ_q (1 − W_same) − δ_o W_other
    beyond the simple-kriging error, where δ are the intercepts' errors (variances
    ``same_band_db2``, ``other_band_db2``, taken independent) and W the weight sums
    (:func:`krige` ``with_weight_sums``): close to dense labels W_same → 1 and nothing
    is added; far from every label the whole intercept variance is (Cressie 1993, §3.4).
    """
    w_same, w_other = weight_sums[..., 0], weight_sums[..., 1]
    return (1.0 - w_same) ** 2 * same_band_db2 + w_other**2 * other_band_db2


def empirical_variogram(
    pos_km: NDArray[np.float64],
    values: NDArray[np.float64],
    bins_km: NDArray[np.float64],
    rng: np.random.Generator,
    neighbours: int = 16,
    random_pairs: int = 100_000,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Binned semivariance of one receiver's residuals: lag centres (km), γ (dB²), pair counts.

    Pairs: every label with its ``neighbours`` nearest (short lags, dense where
    labels cluster) plus ``random_pairs`` random pairs (long lags); all pairs
    when there are few labels.
    """
    n = len(pos_km)
    if n < 2:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    if n * (n - 1) // 2 <= neighbours * n + random_pairs:
        a, b = np.triu_indices(n, 1)
    else:
        _, nb = cKDTree(pos_km).query(pos_km, k=min(neighbours + 1, n))
        a1 = np.repeat(np.arange(n), nb.shape[1] - 1)
        b1 = nb[:, 1:].reshape(-1)
        a2 = rng.integers(0, n, random_pairs)
        b2 = rng.integers(0, n, random_pairs)
        a, b = np.concatenate([a1, a2]), np.concatenate([b1, b2])
        keep = a != b  # mutual neighbours count twice: a harmless re-weighting of short lags
        a, b = a[keep], b[keep]
    h = np.hypot(*(pos_km[a] - pos_km[b]).T)
    g = 0.5 * (values[a] - values[b]) ** 2
    which = np.digitize(h, bins_km) - 1
    ok = (which >= 0) & (which < len(bins_km) - 1)
    count = np.bincount(which[ok], minlength=len(bins_km) - 1)
    gsum = np.bincount(which[ok], weights=g[ok], minlength=len(bins_km) - 1)
    hsum = np.bincount(which[ok], weights=h[ok], minlength=len(bins_km) - 1)
    nz = count > 0
    return hsum[nz] / count[nz], gsum[nz] / count[nz], count[nz]


def cross_band_corr(
    pos_km: NDArray[np.float64],
    values: NDArray[np.float64],
    band: NDArray[np.int8],
    hyper: FieldHyper,
    neighbours: int = 8,
) -> tuple[float, float]:
    """Cross-band ρ from pairs of labels of different bands: Σ w ρ̂ and Σ w (weights to pool receivers).

    Each band-0 label is paired with its ``neighbours`` nearest band-1 labels within 2ℓ; a pair at
    lag h gives ρ̂ = (τ² + σ² − ½ (z_a − z_b)²) / (σ² e^(−h/ℓ)), weighted by e^(−2h/ℓ)
    (the pairs that carry information on ρ).
    """
    a, b = band == 0, band == 1
    if a.sum() < 1 or b.sum() < 1:
        return 0.0, 0.0
    pa, pb, za, zb = pos_km[a], pos_km[b], values[a], values[b]
    k = min(neighbours, len(pb))
    dist, idx = cKDTree(pb).query(pa, k=k, distance_upper_bound=2.0 * hyper.corr_km)
    dist, idx = dist.reshape(len(pa), k), idx.reshape(len(pa), k)
    ok = np.isfinite(dist)
    if not ok.any():
        return 0.0, 0.0
    h = dist[ok]
    g = 0.5 * (np.repeat(za, k).reshape(len(pa), k)[ok] - zb[idx[ok]]) ** 2
    s2, t2 = hyper.sigma_db**2, hyper.nugget_db**2
    e = np.exp(-h / hyper.corr_km)
    w = e * e
    rho = (t2 + s2 - g) / (s2 * e)
    return float(np.sum(w * rho)), float(np.sum(w))


def fit_variogram(
    lag_km: NDArray[np.float64],
    gamma_db2: NDArray[np.float64],
    count: NDArray[np.int64],
    min_nugget_db: float,
    max_corr_km: float = 200.0,
) -> FieldHyper:
    """Weighted least-squares fit of γ(h) = τ² + σ² (1 − e^(−h/ℓ)) (Cressie 1985 weights).

    Raises ValueError with fewer than 3 lag bins.
    """
    if len(lag_km) < 3:
        raise ValueError("fewer than 3 lag bins: cannot fit a variogram")
    sill0 = float(np.average(gamma_db2[-max(1, len(gamma_db2) // 3) :]))
    x0 = np.array([np.log(max(0.5 * sill0, 1e-2)), np.log(10.0), np.log(max(0.1 * sill0, min_nugget_db**2))])

    def model(p: NDArray) -> NDArray:
        s2, ell, t2 = np.exp(p)
        return t2 + s2 * (1.0 - np.exp(-lag_km / ell))

    def resid(p: NDArray) -> NDArray:
        mod = model(p)
        return np.sqrt(count) * (gamma_db2 / mod - 1.0)

    lo = [np.log(1e-4), np.log(0.2), np.log(min_nugget_db**2)]
    hi = [np.log(1e4), np.log(max_corr_km), np.log(1e4)]
    x0 = np.clip(x0, np.array(lo) + 1e-6, np.array(hi) - 1e-6)
    sol = least_squares(resid, x0, bounds=(lo, hi))
    s2, ell, t2 = np.exp(sol.x)
    return FieldHyper(float(np.sqrt(s2)), float(ell), float(np.sqrt(t2)))
