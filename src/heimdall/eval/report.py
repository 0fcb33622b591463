"""The evaluation report: JSON (fixed schema), PNG plots, one self-contained HTML page, MLflow.

JSON keys (issue 5; more may be added): ``n``, ``data``, ``estimators`` (per name:
``median_km``, ``mean_km``, ``p90_km``, ``rmse_km``, ``cep50_km``,
``coverage_1sigma``, ``coverage_2sigma``, ``nll``, ``ellipse_area_km2_median``;
covariance fields null without a covariance; an estimator whose answer is a grid
posterior — ``oracle_mean``, ``rss_ml`` — has ``median_km`` of its posterior mean and
``map_median_km``, ``hpd_coverage_50``, ``hpd_coverage_90``, ``hpd90_area_km2_median``,
``log_score``: :func:`heimdall.eval.metrics.posterior_summary`), ``oracle_hpd_coverage``
(``p393``, ``p865``) and ``crlb_rmse_km`` (``median``, ``mean``, ``singular``).
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from heimdall.errors import HeimdallError
from heimdall.eval.crlb import Bound
from heimdall.eval.evaluate import ESTIMATOR_NAMES, EvalResult
from heimdall.eval.metrics import (
    calibration_curve,
    errors_km,
    hpd_coverage,
    paired_bootstrap_median_diff,
    posterior_summary,
    strata,
    summary,
)
from heimdall.eval.webmap import report_map
from heimdall.models.ellipse import ellipse_polygon_km
from heimdall.tracking_store import resolve_tracking_uri

#: The embedded MLflow store, as for training.
PLOTS = ("error_cdf.png", "calibration.png", "map.png", "error_heatmap.png")
_COLORS = {
    "model": "tab:red", "weighted_centroid": "tab:gray", "rss_ml": "tab:blue",
    "oracle_mean": "tab:green", "oracle_map": "tab:olive", "tdoa_ml": "tab:purple",
    "radio_map_kriging": "tab:orange",
}  # fmt: skip


def _bound_summary(bound: Bound | None) -> dict[str, Any] | None:
    if bound is None:
        return None
    finite = bound.rmse_km[~bound.singular & np.isfinite(bound.rmse_km)]
    return {
        "median": float(np.median(finite)) if finite.size else None,
        "mean": float(np.mean(finite)) if finite.size else None,
        "singular": int(bound.singular.sum()),
    }


def report_json(result: EvalResult) -> dict[str, Any]:
    """The report as a JSON-ready dict (schema in the module docstring)."""
    truth = result.truth_km
    ests = {name: summary(est, truth) for name, est in result.estimates.items()}
    for name, scores in result.posteriors.items():
        ests[name].update(posterior_summary(scores, result.map_estimates[name], truth))
    out: dict[str, Any] = {
        "n": len(truth),
        "data": result.data,
        "estimators": ests,
        "oracle_hpd_coverage": hpd_coverage(result.hpd_level)
        if result.hpd_level is not None
        else {"p393": None, "p865": None},
        "crlb_rmse_km": _bound_summary(result.crlb),
        "tdoa_crlb_rmse_km": _bound_summary(result.tdoa_crlb),
        "strata": {
            name: strata(est, truth, result.n_heard, result.inside) for name, est in result.estimates.items()
        },
        "calibration": {
            name: calibration_curve(est, truth)
            for name, est in result.estimates.items()
            if est.cov_km2 is not None
        },
        "timings_s": {k: round(v, 3) for k, v in result.timings_s.items()},
        "notes": result.notes,
    }
    if result.provenance is not None:  # in-world / unseen world, overlaps (heimdall.eval.provenance)
        out["provenance"] = result.provenance
    hpd = out["oracle_hpd_coverage"]
    if hpd["p393"] is not None:
        out["oracle_check_passed"] = bool(
            abs(hpd["p393"] - 0.393) <= 0.03 and abs(hpd["p865"] - 0.865) <= 0.03
        )
        if "oracle_mean" in ests and ests["oracle_mean"]["median_km"]:
            ref = ests["oracle_mean"]["median_km"]
            out["ratio_to_oracle_mean"] = (
                {name: e["median_km"] / ref for name, e in ests.items() if e["median_km"] is not None}
                if out["oracle_check_passed"]
                else None
            )
    if "model" in result.estimates and "rss_ml" in result.estimates:
        out["model_minus_rss_ml_median_km"] = paired_bootstrap_median_diff(
            errors_km(result.estimates["model"], truth), errors_km(result.estimates["rss_ml"], truth)
        )
    if "model" in result.estimates:
        out["model_goals"] = model_goals(out)
    return out


def model_goals(report: dict[str, Any], min_stratum: int = 30) -> dict[str, Any]:
    """The issue's goals for a model, each True / False (None when a reference is missing).

    ``median_vs_oracle``: median ≤ 1.10 × oracle_mean (only once the oracle check passed);
    ``beats_rss_ml``: the bootstrap 95 % interval of the median difference lies below 0;
    ``coverage_overall``: 1σ and 2σ coverage within ±5 points of 39.3 / 86.5 %;
    ``coverage_strata``: within ±10 points in every stratum of ≥ ``min_stratum`` sessions.
    """
    ests, strata_m = report["estimators"], report["strata"].get("model", {})
    m = ests["model"]
    nominal = (1.0 - np.exp(-0.5), 1.0 - np.exp(-2.0))

    def within(s: dict[str, Any], tol: float) -> bool:
        return bool(
            abs(s["coverage_1sigma"] - nominal[0]) <= tol and abs(s["coverage_2sigma"] - nominal[1]) <= tol
        )

    oracle = ests.get("oracle_mean")
    ratio = m["median_km"] / oracle["median_km"] if oracle and report.get("oracle_check_passed") else None
    boot = report.get("model_minus_rss_ml_median_km")
    big = {k: v for k, v in strata_m.items() if v["n"] >= min_stratum and v["coverage_1sigma"] is not None}
    return {
        "median_ratio_to_oracle_mean": ratio,
        "median_vs_oracle": None if ratio is None else bool(ratio <= 1.10),
        "beats_rss_ml": None if boot is None else bool(boot["ci95_high_km"] < 0.0),
        "coverage_overall": None if m["coverage_1sigma"] is None else within(m, 0.05),
        "coverage_strata": {k: within(v, 0.10) for k, v in big.items()},
    }


def _plot_error_cdf(result: EvalResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ESTIMATOR_NAMES:
        if name in result.estimates:
            e = np.sort(errors_km(result.estimates[name], result.truth_km))
            ax.plot(e, np.arange(1, e.size + 1) / e.size, label=name, color=_COLORS[name])
    b = result.crlb.rmse_km[~result.crlb.singular]
    if b.size:
        b = np.sort(b)
        ax.plot(b, np.arange(1, b.size + 1) / b.size, "k--", label="RSS CRLB (per-session RMSE)")
    ax.set_xscale("log")
    ax.set_xlabel("error, km")
    ax.set_ylabel("fraction of sessions")
    ax.set_title(f"error CDF ({len(result.truth_km)} sessions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_calibration(result: EvalResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    k = np.linspace(0.5, 3.0, 11)
    ax.plot(k, 1 - np.exp(-(k**2) / 2), "k--", label="ideal 1 − exp(−k²/2)")
    for name, est in result.estimates.items():
        curve = calibration_curve(est, result.truth_km)
        if curve is not None:
            ax.plot(curve["k"], curve["observed"], marker="o", ms=3, label=name, color=_COLORS[name])
    ax.set_xlabel("k (ellipse scale, σ)")
    ax.set_ylabel("fraction of truths inside the k-σ ellipse")
    ax.set_title("calibration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _primary(result: EvalResult) -> str | None:
    for name in ("model", "oracle_mean", "rss_ml", "tdoa_ml"):
        est = result.estimates.get(name)
        if est is not None and est.cov_km2 is not None:
            return name
    return None


def _plot_map(result: EvalResult, path: Path, n_show: int = 12, seed: int = 0) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    rx = result.rx_km.reshape(-1, 2)
    rx = np.unique(np.round(rx[np.all(np.isfinite(rx), axis=1)], 3), axis=0)
    ax.scatter(rx[:, 0], rx[:, 1], marker="^", s=70, c="k", label="receivers", zorder=5)
    name = _primary(result)
    rng = np.random.default_rng(seed)
    show = rng.choice(len(result.truth_km), size=min(n_show, len(result.truth_km)), replace=False)
    ax.scatter(*result.truth_km[show].T, marker="x", c="tab:red", label="truth", zorder=6)
    if name is not None:
        est = result.estimates[name]
        assert est.cov_km2 is not None
        for i in show:
            for k, style in ((1.0, "-"), (2.0, ":")):
                poly = ellipse_polygon_km(est.mean_km[i], est.cov_km2[i], k)
                ax.plot(poly[:, 0], poly[:, 1], style, color=_COLORS[name], lw=1)
            ax.plot(*np.stack([result.truth_km[i], est.mean_km[i]]).T, color="0.6", lw=0.7)
        ax.scatter(*est.mean_km[show].T, s=12, color=_COLORS[name], label=f"{name} (1σ solid, 2σ dotted)")
    e0, e1, n0, n1 = result.area_km
    ax.set_xlim(e0 - 20, e1 + 20)
    ax.set_ylim(n0 - 20, n1 + 20)
    ax.set_aspect("equal")
    ax.set_xlabel("east, km")
    ax.set_ylabel("north, km")
    ax.set_title("sample sessions")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_heatmap(result: EvalResult, path: Path, cell_km: float = 25.0) -> None:
    names = [
        n for n in ("model", "rss_ml", "oracle_mean", "tdoa_ml", "weighted_centroid") if n in result.estimates
    ][:3]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5.2 * max(1, len(names)), 4.5), squeeze=False)
    e0, e1, n0, n1 = result.area_km
    be = np.arange(e0, e1 + cell_km, cell_km)
    bn = np.arange(n0, n1 + cell_km, cell_km)
    ie = np.clip(np.digitize(result.truth_km[:, 0], be) - 1, 0, len(be) - 2)
    jn = np.clip(np.digitize(result.truth_km[:, 1], bn) - 1, 0, len(bn) - 2)
    rx = result.rx_km.reshape(-1, 2)
    rx = rx[np.all(np.isfinite(rx), axis=1)]
    grids = []
    for name in names:
        err = errors_km(result.estimates[name], result.truth_km)
        med = np.full((len(bn) - 1, len(be) - 1), np.nan)
        for j in range(len(bn) - 1):
            for i in range(len(be) - 1):
                sel = (ie == i) & (jn == j)
                if sel.sum() >= 3:
                    med[j, i] = np.median(err[sel])
        grids.append(med)
    vmax = np.nanmax([np.nanmax(g) if np.isfinite(g).any() else 1.0 for g in grids]) if grids else 1.0
    for ax, name, med in zip(axes[0], names, grids, strict=False):
        im = ax.pcolormesh(be, bn, med, cmap="viridis", vmin=0, vmax=vmax)
        ax.scatter(rx[:, 0], rx[:, 1], marker="^", c="w", edgecolors="k", s=50)
        ax.set_aspect("equal")
        ax.set_title(f"{name}: median error, km")
        ax.set_xlabel("east, km")
        ax.set_ylabel("north, km")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _html(report: dict[str, Any], out: Path, map_html: str = "") -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "—"
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    cols = ["n", "median_km", "mean_km", "p90_km", "rmse_km", "cep50_km",
            "coverage_1sigma", "coverage_2sigma", "nll", "ellipse_area_km2_median"]  # fmt: skip
    rows = "".join(
        "<tr><td>" + html.escape(name) + "</td>" + "".join(f"<td>{fmt(m[c])}</td>" for c in cols) + "</tr>"
        for name, m in report["estimators"].items()
    )
    imgs = "".join(
        f'<h2>{html.escape(p[:-4].replace("_", " "))}</h2><img src="data:image/png;base64,'
        f'{base64.b64encode((out / p).read_bytes()).decode()}" alt="{p}">'
        for p in PLOTS
        if (out / p).exists()
    )
    extra = {k: v for k, v in report.items() if k not in ("estimators", "strata", "calibration")}
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Heimdall evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}"
        "</style></head><body>"
        f"<h1>Heimdall evaluation: {html.escape(str(report['data']))}</h1>"
        "<table><tr><th>estimator</th>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>" + rows + "</table>"
        f"<h2>bounds, oracle check, notes</h2><pre>{html.escape(json.dumps(extra, indent=1))}</pre>"
        f"<h2>strata</h2><pre>{html.escape(json.dumps(report['strata'], indent=1))}</pre>"
        + map_html
        + imgs
        + "</body></html>"
    )


def write_report(result: EvalResult, out_dir: str | Path, plots: bool = True) -> dict[str, Any]:
    """Write ``report.json``, the PNG plots and ``report.html`` to ``out_dir`` (atomic per file)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeimdallError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None
    report = report_json(result)
    if plots:
        for name, fn in zip(
            PLOTS, (_plot_error_cdf, _plot_calibration, _plot_map, _plot_heatmap), strict=True
        ):
            tmp = out / f".{name}.tmp.png"
            fn(result, tmp)
            os.replace(tmp, out / name)
    _atomic_write(out / "report.json", json.dumps(report, indent=1))
    _atomic_write(out / "report.html", _html(report, out, report_map(result) if plots else ""))
    return report


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def log_to_mlflow(
    report: dict[str, Any], out_dir: str | Path, run_id: str, tracking_uri: str | None = None
) -> None:
    """Log the report's metrics (``eval.<estimator>.<metric>``) and files to an existing MLflow run."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(uri)
    try:
        client.get_run(run_id)
    except Exception as exc:  # mlflow raises its own exception types
        raise HeimdallError(f"MLflow run {run_id!r} not found: {exc}") from None
    for name, m in report["estimators"].items():
        for key, value in m.items():
            if isinstance(value, int | float) and value is not None and np.isfinite(value):
                client.log_metric(run_id, f"eval.{name}.{key}", float(value))
    for key in ("p393", "p865"):
        value = report["oracle_hpd_coverage"].get(key)
        if value is not None:
            client.log_metric(run_id, f"eval.oracle_hpd.{key}", float(value))
    crlb = report.get("crlb_rmse_km") or {}
    if crlb.get("median") is not None:
        client.log_metric(run_id, "eval.crlb_rmse_km.median", float(crlb["median"]))
    client.log_artifacts(run_id, str(out_dir), artifact_path="evaluation")
