"""Accuracy and calibration metrics of position estimates (km, local frame).

The Gaussian formulas (coverage, NLL, ellipse area) have one home,
:func:`heimdall.models.metrics.gaussian_metrics`, shared with training; this
module adds the report's error statistics, strata, bootstrap and posterior scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.eval.estimate import Estimate
from heimdall.models.ellipse import mahalanobis_sq
from heimdall.models.metrics import gaussian_metrics
from heimdall.posterior.scores import PosteriorScores

#: k-σ levels of the calibration curve; ideal coverage 1 − exp(−k²/2).
CALIBRATION_K = tuple(np.round(np.arange(0.5, 3.01, 0.25), 2).tolist())


def errors_km(est: Estimate, truth_km: NDArray[np.float64]) -> NDArray[np.float64]:
    """Horizontal error of each estimate, km."""
    return np.hypot(*(est.mean_km - truth_km).T)


def _nan_if_empty(values: NDArray[np.float64], fn: Any) -> float | None:
    finite = values[np.isfinite(values)]
    return float(fn(finite)) if finite.size else None


def mahalanobis(est: Estimate, truth_km: NDArray[np.float64]) -> NDArray[np.float64] | None:
    """Squared Mahalanobis distance of the truths (B,), None without covariance."""
    if est.cov_km2 is None:
        return None
    cov = est.cov_km2 + 1e-12 * np.eye(2)
    return mahalanobis_sq(est.mean_km, cov, truth_km)


def summary(est: Estimate, truth_km: NDArray[np.float64]) -> dict[str, Any]:
    """The fixed metric set of one estimator (JSON-ready; covariance fields None without one).

    ``cep50_km`` is the radius of the circle around the truth that holds half of
    the estimates (the median radial error); ``nll`` is the mean 2-D Gaussian
    negative log-likelihood in nats with positions in km; ``ellipse_area_km2_median``
    is the median area π sqrt(det Σ) of the 1σ ellipse.
    """
    err = errors_km(est, truth_km)
    out: dict[str, Any] = {
        "n": int(err.size),
        "median_km": _nan_if_empty(err, np.median),
        "mean_km": _nan_if_empty(err, np.mean),
        "p90_km": _nan_if_empty(err, lambda e: np.percentile(e, 90)),
        "rmse_km": _nan_if_empty(err, lambda e: np.sqrt(np.mean(e**2))),
        "cep50_km": _nan_if_empty(err, np.median),
        "coverage_1sigma": None,
        "coverage_2sigma": None,
        "nll": None,
        "ellipse_area_km2_median": None,
    }
    if est.cov_km2 is not None and err.size:
        g = gaussian_metrics(est.mean_km, est.cov_km2 + 1e-12 * np.eye(2), truth_km)
        out["coverage_1sigma"] = g["coverage_1sigma"]
        out["coverage_2sigma"] = g["coverage_2sigma"]
        out["nll"] = g["nll"]
        out["ellipse_area_km2_median"] = g["median_area_km2"]
    return out


def calibration_curve(est: Estimate, truth_km: NDArray[np.float64]) -> dict[str, list[float]] | None:
    """Observed vs expected coverage of the k-σ ellipses for k in :data:`CALIBRATION_K`."""
    d2 = mahalanobis(est, truth_km)
    if d2 is None or not d2.size:
        return None
    k = np.asarray(CALIBRATION_K)
    return {
        "k": k.tolist(),
        "expected": (1.0 - np.exp(-(k**2) / 2.0)).tolist(),
        "observed": [float(np.mean(d2 <= kk * kk)) for kk in k],
    }


def strata(
    est: Estimate, truth_km: NDArray[np.float64], n_heard: NDArray[np.int64], inside: NDArray[np.bool_]
) -> dict[str, dict[str, Any]]:
    """Per-stratum n, median error and 1σ / 2σ coverage: receivers heard, inside / outside the hull."""
    groups: dict[str, NDArray[np.bool_]] = {"inside_hull": inside, "outside_hull": ~inside}
    for k in np.unique(n_heard):
        groups[f"heard_{int(k)}"] = n_heard == k
    out = {}
    for name, sel in groups.items():
        if not sel.any():
            continue
        part = Estimate(est.mean_km[sel], None if est.cov_km2 is None else est.cov_km2[sel])
        s = summary(part, truth_km[sel])
        out[name] = {k: s[k] for k in ("n", "median_km", "coverage_1sigma", "coverage_2sigma")}
    return out


def _paired_bootstrap(
    a: NDArray[np.float64], b: NDArray[np.float64], statistic: Any, n_boot: int, seed: int
) -> dict[str, float]:
    """statistic(a) − statistic(b) and the 2.5 / 97.5 percentiles of its paired bootstrap."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        raise ValueError(f"paired bootstrap needs two equal, non-empty 1-D samples, got {a.shape}, {b.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    diffs = statistic(a[idx], axis=1) - statistic(b[idx], axis=1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(statistic(a) - statistic(b)), "ci95_low": float(lo), "ci95_high": float(hi)}


def paired_bootstrap_median_diff(
    err_a: NDArray[np.float64], err_b: NDArray[np.float64], n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Median(err_a) − median(err_b) with a paired bootstrap 95 % interval (km).

    Sessions are resampled with replacement (the same draw for both estimators).
    """
    out = _paired_bootstrap(err_a, err_b, np.median, n_boot, seed)
    return {"diff_km": out["diff"], "ci95_low_km": out["ci95_low"], "ci95_high_km": out["ci95_high"]}


def paired_bootstrap_mean_diff(
    a: NDArray[np.float64], b: NDArray[np.float64], n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean(a) − mean(b) with a paired bootstrap 95 % interval, in the samples' unit.

    For per-session scores of two estimators on the same sessions, e.g. the log score
    (nats per km²: a positive difference favours ``a``). Sessions are resampled with
    replacement, the same draw for both.
    """
    return _paired_bootstrap(a, b, np.mean, n_boot, seed)


def hpd_coverage(levels: NDArray[np.float64]) -> dict[str, float | None]:
    """Fraction of truths inside the 39.3 % and 86.5 % highest-posterior-density regions."""
    lv = levels[np.isfinite(levels)]
    if not lv.size:
        return {"p393": None, "p865": None}
    p1, p2 = 1.0 - np.exp(-0.5), 1.0 - np.exp(-2.0)
    return {"p393": float(np.mean(lv <= p1)), "p865": float(np.mean(lv <= p2))}


def posterior_summary(
    scores: PosteriorScores, mode: Estimate, truth_km: NDArray[np.float64]
) -> dict[str, Any]:
    """Metrics of an estimator whose answer is a grid posterior (JSON-ready).

    ``map_median_km``: median error of the posterior mode; ``hpd_coverage_50`` /
    ``hpd_coverage_90``: fraction of truths inside the 50 % / 90 % highest-density
    regions (ideal 0.5 / 0.9); ``hpd90_area_km2_median``: median area of the 90 %
    region; ``log_score``: mean log density at the truth, nats per km² (higher is better).
    """
    lv = scores.hpd_level[np.isfinite(scores.hpd_level)]
    return {
        "map_median_km": _nan_if_empty(errors_km(mode, truth_km), np.median),
        "hpd_coverage_50": float(np.mean(lv <= 0.5)) if lv.size else None,
        "hpd_coverage_90": float(np.mean(lv <= 0.9)) if lv.size else None,
        "hpd90_area_km2_median": _nan_if_empty(scores.hpd90_area_km2, np.median),
        "log_score": _nan_if_empty(scores.log_score, np.mean),
    }
