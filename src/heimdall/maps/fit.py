"""Fit per-receiver radio maps from labelled sessions (alternating least squares + kriging).

Model of the measured power (dB, nominal full scale, frequency term moved
into the data, :mod:`heimdall.maps.observations`) of receiver i in session b:

    y_bi = P_b + g_i(d_bi) + s_i(x_b) + e_bi,   e_bi ~ N(0, τ² + label inflation)

- P_b: the transmit power, unknown per session, estimated jointly; the
  level of (P, g) is fixed by anchoring the mean estimated power at the
  centre of the published power range (only differences matter to a
  localiser, which marginalises P);
- g_i: the median path loss with its intercept (gain, site and clutter
  offsets), :mod:`heimdall.maps.pathloss`: the whole law fitted per receiver
  (``pathloss_shape: fitted``), or the prior law's shape kept and only the
  2 m and 70 cm intercepts fitted (``prior``: a pretrained model's law);
- s_i: the receiver's spatial field per band (2 m, 70 cm), zero-mean Gaussian
  process with exponential covariance whose σ, ℓ and nugget τ are estimated
  from the residuals' same-band empirical variogram (:mod:`heimdall.maps.kriging`),
  pooled over receivers, and the cross-band correlation ρ from cross-band pairs
  (co-kriging: each band's field uses both bands' labels);
- silent receivers (power below a measured threshold) and clipped ones
  (above) are censored: each iteration replaces them by their conditional
  expectation under the current prediction (EM for a censored Gaussian,
  Tobin 1958; Dempster, Laird & Rubin 1977) and adds the conditional variance
  to their nugget;
- label position uncertainty r inflates a label's nugget by σ² (1 − ρ(r));
- wrong labels (a station beaconing a typed-in position from elsewhere): after
  ``outlier_after_iterations`` iterations, and again after each one, every
  labelled session is tested against the current fit (:func:`outlier_p_values`:
  leave-one-out residuals, P_b re-estimated, chi-square over its receivers);
  sessions with p below ``outlier_p_value`` are left out of the next iteration
  and of the final fields, and are re-tested every time (an outlier can return).

Each iteration: impute censored values, fit g_i, estimate (σ, ℓ, τ),
krige the field at the labels (leave-one-out), re-estimate P_b, test the
labels. The final field is kriged on the grid from the labels kept: mean and
variance per receiver; far from labels they return to the prior (0, σ²).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr, ndtri
from scipy.stats import chi2

from heimdall.data.session import SessionBatch
from heimdall.errors import HeimdallError
from heimdall.maps.config import MapsConfig
from heimdall.maps.grid import MapGrid
from heimdall.maps.kriging import (
    FieldHyper,
    cross_band_corr,
    empirical_variogram,
    fit_variogram,
    krige,
    mean_variance,
    trend_variance,
)
from heimdall.maps.observations import (
    BANDS,
    CLIPPED,
    HEARD,
    SILENT,
    LabelledObservations,
    observations_from_batch,
)
from heimdall.maps.pathloss import (
    design,
    fit_coefficients,
    fit_intercepts,
    height_averaged_gain_db,
    prior_gain_db,
    prior_shape_coefficients,
)
from heimdall.network import Network

#: Lag bins of the empirical variogram, km.
VARIOGRAM_BINS_KM = np.concatenate(
    [np.arange(0.0, 10.0, 1.0), np.arange(10.0, 40.0, 2.5), np.arange(40.0, 101.0, 10.0)]
)


@dataclass
class RadioMap:
    """Fitted radio maps of one network.

    Attributes
    ----------
    network
        The receivers (ids, positions, heights) and the local frame.
    grid
        Where the fields live.
    hyper
        Estimated field statistics (σ, ℓ, nugget τ), dB / km.
    coef
        (R, 3 + K) path-loss coefficients (intercept, exponent, exponent changes, 70 cm intercept
        change), ``None`` if unfitted.
    knots_km
        Path-loss knots, km.
    field_db, field_var_db2
        (n_bands, R, n_north, n_east) kriged field mean (dB) and variance (dB²) per band of :data:`BANDS`.
    config
        Settings of the fit.
    train
        The labelled observations fitted (kept for ``--update``).
    power_dbm
        (N,) estimated transmit power of the fitted sessions (anchored), dBm.
    metrics
        Fit diagnostics (held-out residuals, timings, counts, ``n_outliers``).
    outliers
        (N,) True for the sessions of ``train`` left out as wrong labels (:func:`outlier_p_values`).

    """

    network: Network
    grid: MapGrid
    hyper: FieldHyper
    coef: NDArray[np.float64] | None
    knots_km: tuple[float, ...]
    field_db: NDArray[np.float32]
    field_var_db2: NDArray[np.float32]
    config: MapsConfig
    train: LabelledObservations
    power_dbm: NDArray[np.float64]
    metrics: dict[str, Any] = field(default_factory=dict)
    outliers: NDArray[np.bool_] | None = None

    @property
    def n_labels(self) -> int:
        """Labelled sessions given to the fit (outliers included)."""
        return len(self.train)

    @property
    def outlier_session_ids(self) -> list[int]:
        """Session ids of the labels left out as wrong (:func:`outlier_p_values`)."""
        if self.outliers is None:
            return []
        return [int(s) for s in self.train.session_id[self.outliers]]

    @property
    def rx_km(self) -> NDArray[np.float64]:
        """(R, 2) receiver positions, km."""
        return self.network.positions_km

    def observe(self, batch: SessionBatch) -> LabelledObservations:
        """The sessions of ``batch`` (labelled or not) measured as this map's labels were.

        The same receivers (the map's network order) and the same detection threshold
        (``config.detection_snr_db``): the censored terms of the located sessions then mean
        what they meant in the fit.
        """
        return observations_from_batch(
            batch, self.network, labelled_only=False, detection_snr_db=self.config.detection_snr_db
        )

    def pathloss_db(self, points_km: NDArray[np.float64], band: NDArray | int = 0) -> NDArray[np.float64]:
        """g_i at points (..., 2) in ``band`` (int or (...)): (R, ...) dB (fitted law, or the prior one)."""
        d = np.hypot(
            points_km[None, ..., 0] - _expand(self.rx_km[:, 0], points_km.ndim - 1),
            points_km[None, ..., 1] - _expand(self.rx_km[:, 1], points_km.ndim - 1),
        )
        return _gain(self, d, band)

    def predict(
        self, points_km: NDArray[np.float64], band: NDArray | int = 0
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Predicted power − P (dB) and its variance without the nugget (dB²) at points (..., 2): (R, ...).

        ``band``: index into :data:`BANDS`, one int or per point (...).
        """
        e, n = points_km[..., 0], points_km[..., 1]
        if np.ndim(band) == 0:
            field = self.grid.bilinear(self.field_db[int(band)], e, n)
            var = self.grid.bilinear(self.field_var_db2[int(band)], e, n)
        else:
            sel = np.asarray(band)[None] == 1
            field = np.where(
                sel, self.grid.bilinear(self.field_db[1], e, n), self.grid.bilinear(self.field_db[0], e, n)
            )
            var = np.where(
                sel,
                self.grid.bilinear(self.field_var_db2[1], e, n),
                self.grid.bilinear(self.field_var_db2[0], e, n),
            )
        return self.pathloss_db(points_km, band) + field, var


def _expand(v: NDArray, extra: int) -> NDArray:
    return v.reshape(-1, *([1] * extra))


def _gain(m: RadioMap, d: NDArray[np.float64], band: NDArray | int = 0) -> NDArray[np.float64]:
    """Path-loss gain (dB) for distances (R, ...) of each receiver in ``band`` (int or (...))."""
    if m.coef is None:
        cfg = m.config
        h = _expand(m.network.heights_m, d.ndim - 1)
        return prior_gain_db(d, cfg.prior_tx_height_m, h, cfg.prior_exponents, cfg.prior_clutter_db)
    x = design(d, m.knots_km, np.asarray(band)[None] if np.ndim(band) else band)  # (R, ..., p)
    return np.einsum("r...p,rp->r...", x, m.coef)


def _distances(pos_km: NDArray[np.float64], rx_km: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, R) label-receiver distances, km."""
    return np.hypot(pos_km[:, None, 0] - rx_km[None, :, 0], pos_km[:, None, 1] - rx_km[None, :, 1])


def is_holdout(session_id: NDArray[np.int64], fraction: float, seed: int) -> NDArray[np.bool_]:
    """Deterministic held-out flag per session id (seeded hash): an update holds out the same ones."""
    if fraction <= 0:
        return np.zeros(len(session_id), dtype=bool)
    h = (
        np.asarray(session_id, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
    ) >> np.uint64(11)
    return (h % np.uint64(1_000_000)).astype(np.float64) < fraction * 1_000_000


def _impute(
    y: NDArray, cens: NDArray, state: NDArray, mu: NDArray, sd: NDArray
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Values and extra variances: heard as measured; censored by their conditional mean and variance."""
    val = np.where(state == HEARD, y, np.nan)
    extra = np.zeros(y.shape)
    for code, sign in ((SILENT, 1.0), (CLIPPED, -1.0)):
        c = state == code
        if not c.any():
            continue
        a = sign * (cens[c] - mu[c]) / sd[c]  # standardised distance inside the allowed side
        lam = np.exp(-0.5 * a * a - 0.5 * np.log(2 * np.pi) - log_ndtr(a))  # φ(a)/Φ(a)
        val[c] = mu[c] - sign * sd[c] * lam
        extra[c] = sd[c] ** 2 * np.clip(1.0 - a * lam - lam * lam, 1e-3, 1.0)
    return val, extra


def outlier_p_values(
    obs: LabelledObservations,
    state: NDArray[np.int8],
    pred_db: NDArray[np.float64],
    var_db2: NDArray[np.float64],
    power_dbm: NDArray[np.float64] | None = None,
    calibrate: bool = False,
) -> NDArray[np.float64]:
    """p-value per labelled session of "this label fits the map" (small: a wrong label).

    Parameters
    ----------
    obs
        Labelled sessions (measured powers, censoring levels).
    state
        (N, R) receiver states used (:data:`HEARD`, :data:`SILENT`, :data:`CLIPPED`, else unused).
    pred_db
        (N, R) predicted power − P at the label, dB: path loss + the field kriged
        **without** the session (leave-one-out), so that a label cannot explain itself.
    var_db2
        (N, R) variance of a capture around ``pred_db`` + P, dB²: capture σ² (nugget)
        + kriging variance + label-position inflation.
    power_dbm
        (N,) known transmit powers (bench oracle); None: P re-estimated from the
        session's heard receivers (weighted mean), which takes one degree of freedom.
    calibrate
        Scale the variances by c that puts the heard part of the median session at
        its χ² median (median_b F_{n_b−1}(T_b / c) = ½, :func:`median_scale`): their
        overall level then comes from the labels themselves, robustly (up to half of
        them may be wrong), as a MAD scales a robust z-score (Hampel 1974). False: c = 1.

    Returns
    -------
    (N,) p = χ²_k survival function of T, 1 where k = 0 (a session with one heard
    receiver and nothing else cannot be tested).

    Notes
    -----
    T = Σ_heard (r_i − P̂)² / v_i + Σ_censored χ²₁⁻¹(1 − q_i). A heard receiver
    contributes its squared standardised residual (Gaussian model: χ²₁, and the
    whole heard part χ²_{n−1} with P̂ estimated, Cochran 1934). A silent (clipped)
    receiver contributes the χ²₁ quantile of q_i = Φ((c_i − μ_i)/√v_i), the
    probability of a capture as low (high) as its censoring level c_i under the
    prediction μ_i: a receiver predicted loud that stayed silent is as damning as a
    heard residual of the same tail probability; it counts (one degree of freedom)
    only where the prediction found the censoring less likely than not (q_i < ½),
    so that the receivers expected silent do not dilute the test. k = n_heard − 1
    (or n_heard with P known) + the censored receivers counted. A displaced label
    (a typed-in position from elsewhere) sees a different distance pattern to the
    receivers than the one its powers were received with, which P cannot absorb.

    """
    heard = state == HEARD
    w = np.where(heard, 1.0 / var_db2, 0.0)
    r = np.where(heard, obs.y_db - pred_db, 0.0)
    n_heard = heard.sum(axis=1)
    if power_dbm is None:
        p_hat = np.sum(w * r, axis=1) / np.maximum(w.sum(axis=1), 1e-12)
        dof = np.maximum(n_heard - 1, 0).astype(np.float64)
    else:
        p_hat = np.asarray(power_dbm, dtype=np.float64)
        dof = n_heard.astype(np.float64)
    t = np.sum(w * np.where(heard, r - p_hat[:, None], 0.0) ** 2, axis=1)
    scale = median_scale(t, dof) if calibrate else 1.0
    t = t / scale
    mu = p_hat[:, None] + pred_db
    sd = np.sqrt(var_db2 * scale)
    a = np.full(state.shape, np.inf)
    silent, clipped = state == SILENT, state == CLIPPED
    a[silent] = ((obs.cens_db - mu) / sd)[silent]
    a[clipped] = ((mu - obs.cens_db) / sd)[clipped]
    counted = a < 0.0  # q = Φ(a) < ½
    q = np.exp(log_ndtr(np.where(counted, a, 0.0)))
    t = t + np.sum(np.where(counted, ndtri(np.maximum(q, 1e-300) / 2.0) ** 2, 0.0), axis=1)
    dof = dof + counted.sum(axis=1)
    return np.where(dof > 0, chi2.sf(t, np.maximum(dof, 1.0)), 1.0)


def median_scale(t: NDArray[np.float64], dof: NDArray[np.float64]) -> float:
    """Scale c of the statistic: median_b F_χ²(T_b / c; k_b) = ½ over sessions with k_b > 0; 1 if none.

    Bisection on log c.
    """
    ok = dof > 0
    if not ok.any():
        return 1.0
    t, dof = t[ok], dof[ok]
    lo, hi = np.log(1e-3), np.log(1e3)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.median(chi2.cdf(t / np.exp(mid), dof)) > 0.5:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


@dataclass
class _State:
    power: NDArray[np.float64]  # (N,)
    coef: NDArray[np.float64]  # (R, p)
    hyper: FieldHyper
    s_loo: NDArray[np.float64]  # (N, R)
    s_var: NDArray[np.float64]  # (N, R)


def _pooled_hyper(
    pos: NDArray, z: NDArray, use: NDArray, band: NDArray, cfg: MapsConfig, seed: int
) -> FieldHyper | None:
    """Same-band variogram pooled over receivers and bands (counts add), then the cross-band ρ.

    None if too few lags; ρ stays 1 (one shared field) without cross-band pairs.
    """
    rng = np.random.default_rng(seed)
    nb = len(VARIOGRAM_BINS_KM) - 1
    cnt, gsum, hsum = np.zeros(nb), np.zeros(nb), np.zeros(nb)
    for i in range(z.shape[1]):
        for q in range(len(BANDS)):
            ok = use[:, i] & (band == q)
            if ok.sum() < 3:
                continue
            lag, gam, c = empirical_variogram(pos[ok], z[ok, i], VARIOGRAM_BINS_KM, rng)
            which = np.digitize(lag, VARIOGRAM_BINS_KM) - 1
            np.add.at(cnt, which, c)
            np.add.at(gsum, which, gam * c)
            np.add.at(hsum, which, lag * c)
    nz = cnt > 0
    try:
        hyper = fit_variogram(
            hsum[nz] / cnt[nz], gsum[nz] / cnt[nz], cnt[nz].astype(np.int64), cfg.min_nugget_db
        )
    except ValueError:
        return None
    num = den = 0.0
    for i in range(z.shape[1]):
        ok = use[:, i]
        a, b = cross_band_corr(pos[ok], z[ok, i], band[ok], hyper)
        num, den = num + a, den + b
    rho = float(np.clip(num / den, 0.0, 1.0)) if den > 1.0 else 1.0
    return replace(hyper, band_corr=rho)


def _iterate(
    obs: LabelledObservations,
    rx_km: NDArray,
    st: _State,
    cfg: MapsConfig,
    iterations: int,
    estimate_hyper: bool,
    known_power: bool,
    outliers: NDArray[np.bool_] | None = None,
) -> tuple[_State, NDArray, NDArray, NDArray, NDArray[np.bool_]]:
    """Alternating fit: the state, field targets z (N, R), their nuggets, the labels used, the outliers.

    The mask (N, R) is the labels the fields use; the flags (N,) the sessions left out
    as wrong labels (:func:`outlier_p_values`).
    """
    x = design(_distances(obs.pos_km, rx_km), cfg.pathloss_knots_km, obs.band[:, None])  # (N, R, p)
    state = obs.state if cfg.censored else np.where(obs.state == HEARD, HEARD, 0).astype(np.int8)
    use = state != 0
    heard = state == HEARD
    centre = 0.5 * sum(cfg.power_range_dbm)
    z = np.zeros(obs.y_db.shape)
    nug = np.zeros(obs.y_db.shape)
    out = np.zeros(len(obs), bool) if outliers is None else outliers.copy()
    for it in range(iterations):
        fit_use = use & ~out[:, None]
        g = np.einsum("nrp,rp->nr", x, st.coef)
        mu = st.power[:, None] + g + st.s_loo
        sd = np.sqrt(st.hyper.nugget_db**2 + st.s_var)
        val, extra = _impute(obs.y_db, obs.cens_db, state, mu, sd)
        t = val - st.power[:, None]
        coef = st.coef.copy()
        for i in range(rx_km.shape[0]):
            ok = fit_use[:, i]
            if cfg.pathloss_shape == "prior":
                if ok.sum() >= 2:
                    coef[i] = fit_intercepts(x[ok, i], t[ok, i] - st.s_loo[ok, i], st.coef[i])
            elif ok.sum() >= x.shape[2] + 2:
                coef[i] = fit_coefficients(x[ok, i], t[ok, i] - st.s_loo[ok, i], cfg.pathloss_ridge)
        g = np.einsum("nrp,rp->nr", x, coef)
        z = np.where(use, t - g, 0.0)
        hyper = st.hyper
        if estimate_hyper:
            hyper = _pooled_hyper(obs.pos_km, z, fit_use, obs.band, cfg, seed=cfg.holdout_seed) or hyper
        nug = hyper.nugget_db**2 + hyper.label_inflation(obs.radius_km)[:, None] + extra
        s_loo = np.zeros(z.shape)
        s_var = np.full(z.shape, hyper.sigma_db**2)
        for i in range(rx_km.shape[0]):
            ok = np.flatnonzero(fit_use[:, i])
            s_loo[ok, i], s_var[ok, i] = krige(
                obs.pos_km[ok], z[ok, i], nug[ok, i], obs.pos_km[ok], hyper,
                cfg.neighbours, cfg.max_corr_multiple * hyper.corr_km, exclude_self=True,
                train_band=obs.band[ok], query_band=obs.band[ok],
            )  # fmt: skip
            left = np.flatnonzero(use[:, i] & out)  # outliers: predicted from the labels kept
            if left.size:
                s_loo[left, i], s_var[left, i] = krige(
                    obs.pos_km[ok], z[ok, i], nug[ok, i], obs.pos_km[left], hyper,
                    cfg.neighbours, cfg.max_corr_multiple * hyper.corr_km,
                    train_band=obs.band[ok], query_band=obs.band[left],
                )  # fmt: skip
        power = st.power
        if not known_power:
            w = np.where(heard, 1.0 / (hyper.nugget_db**2 + s_var), 0.0)
            resid = np.where(heard, obs.y_db - g - s_loo, 0.0)
            power = np.sum(w * resid, axis=1) / np.maximum(w.sum(axis=1), 1e-12)
            shift = float(np.mean(power[~out] if (~out).any() else power)) - centre  # anchor the level
            power = power - shift
            coef[:, 0] += shift
            z = np.where(use, val - power[:, None] - np.einsum("nrp,rp->nr", x, coef), 0.0)
        if estimate_hyper:
            g = np.einsum("nrp,rp->nr", x, coef)
            resid = np.where(heard, obs.y_db - power[:, None] - g - s_loo, 0.0)
            tau = calibrated_nugget_db(resid, s_var, heard & ~out[:, None], cfg.min_nugget_db, known_power)
            hyper = replace(hyper, nugget_db=tau)
            nug = hyper.nugget_db**2 + hyper.label_inflation(obs.radius_km)[:, None] + extra
        st = _State(power, coef, hyper, s_loo, s_var)
        if cfg.outlier_p_value > 0 and it + 1 >= cfg.outlier_after_iterations:
            pred = np.einsum("nrp,rp->nr", x, coef) + s_loo
            var = hyper.nugget_db**2 + s_var + hyper.label_inflation(obs.radius_km)[:, None]
            p = outlier_p_values(obs, state, pred, var, power if known_power else None, calibrate=True)
            out = p < cfg.outlier_p_value
    return st, z, nug, use & ~out[:, None], out


def power_dof_factor(state: NDArray[np.int8], outliers: NDArray[np.bool_] | None = None) -> float:
    """Share of a field's variance left in the residuals once each session's power is estimated.

    A session's power is estimated from its n_b heard receivers, so it absorbs their mean
    field: with independent fields of variance σ² per receiver, a heard residual keeps
    σ² (1 − 1/n_b) (equal weights). Returns the mean of 1 − 1/n_b over the heard entries
    of the sessions kept (1 if none): the factor by which the residuals' variogram sill
    understates σ². Sessions with one heard receiver count 0 (their residual is all power).
    Floored at 1/4 (σ at most doubled) against labels almost all heard by one receiver.
    """
    heard = state == HEARD
    if outliers is not None:
        heard = heard & ~outliers[:, None]
    n_b = heard.sum(axis=1)
    if n_b.sum() == 0:
        return 1.0
    per_entry = np.repeat(1.0 - 1.0 / np.maximum(n_b, 1), n_b)
    return float(max(np.mean(per_entry), 0.25))


def calibrated_nugget_db(
    resid_db: NDArray[np.float64],
    field_var_db2: NDArray[np.float64],
    heard: NDArray[np.bool_],
    min_nugget_db: float,
    known_power: bool = False,
) -> float:
    """Per-capture σ (dB) that makes leave-one-out residuals standard: Σ r² / (τ² + v) = dof.

    ``resid_db`` (N, R): heard powers minus estimated power, path loss and the field kriged
    without the label; ``field_var_db2`` its kriging variance. Estimating P_b from a
    session's n_b heard receivers takes one degree of freedom: dof = Σ_b (n_b − 1)
    (Σ n_b when the power is known). Solved by bisection on log τ². The variogram's
    nugget is a poorer estimate: its short lags mix the field's own roughness at the
    label spacing with the capture noise.
    """
    n_b = heard.sum(axis=1)
    dof = float(np.sum(n_b if known_power else np.maximum(n_b - 1, 0)))
    r2, v = resid_db[heard] ** 2, field_var_db2[heard]
    if dof <= 0 or r2.size == 0:
        return float(min_nugget_db)
    lo, hi = 2.0 * np.log(min_nugget_db), 2.0 * np.log(30.0)
    if np.sum(r2 / (np.exp(lo) + v)) <= dof:
        return float(min_nugget_db)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if np.sum(r2 / (np.exp(mid) + v)) > dof:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.25 * (lo + hi)))


def _initial_state(
    obs: LabelledObservations, network: Network, cfg: MapsConfig, known_power: NDArray | None
) -> _State:
    """Start: the prior path loss, P_b from the heard receivers under it (or the known powers)."""
    rx_km = network.positions_km
    d = _distances(obs.pos_km, rx_km)
    if cfg.pathloss_shape == "prior":
        g0 = height_averaged_gain_db(
            d, cfg.tx_height_range_m, network.heights_m[None, :], cfg.prior_exponents, cfg.prior_clutter_db
        )
    else:
        g0 = prior_gain_db(
            d, cfg.prior_tx_height_m, network.heights_m[None, :], cfg.prior_exponents, cfg.prior_clutter_db
        )
    heard = obs.state == HEARD
    if known_power is None:
        power = np.nansum(np.where(heard, obs.y_db - g0, 0.0), axis=1) / np.maximum(heard.sum(axis=1), 1)
        if len(power):
            power += 0.5 * sum(cfg.power_range_dbm) - float(np.mean(power))
    else:
        power = np.asarray(known_power, dtype=np.float64)
    if cfg.pathloss_shape == "prior":
        coef = prior_shape_coefficients(
            network.heights_m, cfg.pathloss_knots_km, cfg.tx_height_range_m, cfg.prior_exponents,
            cfg.prior_clutter_db,
        )  # fmt: skip
    else:
        x = design(d, cfg.pathloss_knots_km, obs.band[:, None])
        coef = np.stack([fit_coefficients(x[:, i], g0[:, i], cfg.pathloss_ridge) for i in range(len(rx_km))])
    hyper = FieldHyper(cfg.prior_sigma_db, cfg.prior_corr_km, cfg.prior_nugget_db)
    n, r = obs.y_db.shape
    return _State(power, coef, hyper, np.zeros((n, r)), np.full((n, r), hyper.sigma_db**2))


def _grid_fields(
    obs: LabelledObservations,
    z: NDArray,
    nug: NDArray,
    use: NDArray,
    hyper: FieldHyper,
    grid: MapGrid,
    cfg: MapsConfig,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Kriged field mean and variance on the grid, (bands, R, n_north, n_east) dB and dB².

    With ``pathloss_shape: prior`` the intercepts are the only trend estimated from the
    labels, and their error is added to the variance where the labels do not pin it
    (:func:`heimdall.maps.kriging.trend_variance`): far from clustered labels a receiver's
    level is known no better than the labels' mean field.
    """
    pts = grid.points_km
    r = z.shape[1]
    mean = np.zeros((len(BANDS), r, *grid.shape), np.float32)
    var = np.zeros((len(BANDS), r, *grid.shape), np.float32)
    rng = np.random.default_rng(cfg.holdout_seed)
    trend = cfg.pathloss_shape == "prior"
    for i in range(r):
        ok = np.flatnonzero(use[:, i])
        level = _level_variances(obs, ok, nug[:, i], hyper, cfg, rng) if trend else [0.0] * len(BANDS)
        for q in range(len(BANDS)):
            m, v, wsum = krige(
                obs.pos_km[ok], z[ok, i], nug[ok, i], pts, hyper, cfg.neighbours,
                cfg.max_corr_multiple * hyper.corr_km, train_band=obs.band[ok], query_band=q,
                with_weight_sums=True,
            )  # fmt: skip
            if trend:
                v = v + trend_variance(wsum, level[q], level[1 - q])
            mean[q, i], var[q, i] = m.reshape(grid.shape), v.reshape(grid.shape)
    return mean, var


def _level_variances(
    obs: LabelledObservations,
    used: NDArray[np.int64],
    nug: NDArray[np.float64],
    hyper: FieldHyper,
    cfg: MapsConfig,
    rng: np.random.Generator,
) -> list[float]:
    """Error variance (dB²) of one receiver's 2 m and 70 cm intercepts fitted to the labels ``used``.

    A band without labels takes the other band's level (the 70 cm change is held at 0):
    its error is the other's plus a prior σ² for the band's own gain difference.
    """
    per_band: list[float | None] = []
    for q in range(len(BANDS)):
        sel = used[obs.band[used] == q]
        per_band.append(mean_variance(obs.pos_km[sel], nug[sel], hyper, rng) if sel.size else None)
    known = [v for v in per_band if v is not None]
    fallback = (min(known) if known else 0.0) + cfg.prior_sigma_db**2
    return [fallback if v is None else v for v in per_band]


def holdout_metrics(m: RadioMap, obs: LabelledObservations) -> dict[str, float]:
    """Residuals of held-out sessions: P re-estimated from each session's heard receivers.

    Returns the RMS residual (dB) with the map and with the path loss alone, and the
    mean standardised squared residual r² / (τ² + field variance) (≈ (n−1)/n when honest).
    """
    heard = obs.state == HEARD
    keep = heard.sum(axis=1) >= 2
    if not keep.any():
        return {}
    obs = obs.select(keep)
    heard = heard[keep]
    mean, var = m.predict(obs.pos_km, obs.band)  # (R, N)
    mean, var = mean.T, var.T
    path = m.pathloss_db(obs.pos_km, obs.band).T
    out: dict[str, float] = {"holdout_sessions": float(len(obs))}
    for name, pred, v in (
        ("map", mean, var),
        ("pathloss_only", path, np.full(var.shape, m.hyper.sigma_db**2)),
    ):
        w = np.where(heard, 1.0 / (m.hyper.nugget_db**2 + v), 0.0)
        r = np.where(heard, obs.y_db - pred, 0.0)
        p = np.sum(w * r, axis=1) / w.sum(axis=1)
        res = np.where(heard, r - p[:, None], 0.0)
        out[f"holdout_rms_db_{name}"] = float(np.sqrt(np.sum(res**2) / heard.sum()))
        out[f"holdout_z2_{name}"] = float(np.sum(w * res**2) / heard.sum())
    return out


def fit_radio_map(
    obs: LabelledObservations,
    network: Network,
    cfg: MapsConfig | None = None,
    known_power_dbm: NDArray[np.float64] | None = None,
    hyper: FieldHyper | None = None,
    previous: RadioMap | None = None,
) -> RadioMap:
    """Fit radio maps from labelled observations (or update ``previous`` with new ones).

    Parameters
    ----------
    obs
        Labelled sessions (new ones when ``previous`` is given).
    network
        Receivers, matching ``obs``' receiver axis.
    cfg
        Settings (default :class:`MapsConfig`).
    known_power_dbm
        (N,) true transmit powers, dBm: bench-only oracle input (``gp_oracle``); None in real use.
    hyper
        Fixed field statistics (bench-only oracle input); None: estimated from the labels.
    previous
        A fitted map: its sessions, powers and path loss start the fit (warm start), only
        ``obs`` is new; the statistics are re-estimated from all residuals.

    """
    cfg = cfg or (previous.config if previous is not None else MapsConfig())
    if previous is not None and previous.config.detection_snr_db != cfg.detection_snr_db:
        raise HeimdallError(
            f"detection_snr_db {cfg.detection_snr_db:g} dB differs from the previous map's "
            f"{previous.config.detection_snr_db:g} dB: its labels were measured with that threshold; "
            "refit from all the labels instead of updating"
        )
    t0 = time.perf_counter()
    grid = MapGrid.covering(network.positions_km, cfg.area_margin_km, cfg.grid_step_km)
    hold = is_holdout(obs.session_id, cfg.holdout_fraction, cfg.holdout_seed)
    held, fit_obs = obs.select(hold), obs.select(~hold)
    if known_power_dbm is not None:
        known_power_dbm = np.asarray(known_power_dbm)[~hold]
    has_heard = (fit_obs.state == HEARD).any(axis=1) | (known_power_dbm is not None)
    n_unheard = int(np.sum(~has_heard))  # nothing measured to fit from: left out, and counted
    fit_obs = fit_obs.select(has_heard)
    if known_power_dbm is not None:
        known_power_dbm = known_power_dbm[has_heard]
    iterations = cfg.iterations
    if previous is not None:
        new_start = _initial_state(fit_obs, network, cfg, known_power_dbm)
        if known_power_dbm is None:  # new sessions' powers under the current map
            mean, var = previous.predict(fit_obs.pos_km, fit_obs.band)
            heard = fit_obs.state == HEARD
            w = np.where(heard, 1.0 / (previous.hyper.nugget_db**2 + var.T), 0.0)
            r = np.where(heard, fit_obs.y_db - mean.T, 0.0)
            new_start.power = np.sum(w * r, axis=1) / np.maximum(w.sum(axis=1), 1e-12)
        fit_obs = LabelledObservations.concat([previous.train, fit_obs])
        n, r_ = fit_obs.y_db.shape
        start = _State(
            np.concatenate([previous.power_dbm, new_start.power]),
            previous.coef if previous.coef is not None else new_start.coef,
            previous.hyper if hyper is None else hyper,
            np.zeros((n, r_)),
            np.full((n, r_), previous.hyper.sigma_db**2),
        )
        iterations = max(2, cfg.iterations // 2)
        held = (
            LabelledObservations.concat([previous_held(previous), held]) if previous_held(previous) else held
        )
    else:
        start = _initial_state(fit_obs, network, cfg, known_power_dbm)
        if hyper is not None:
            start.hyper = hyper
    n_fit = len(fit_obs)
    if n_fit < cfg.min_labels:
        prior = (
            start.hyper
            if hyper is not None
            else FieldHyper(cfg.prior_sigma_db, cfg.prior_corr_km, cfg.prior_nugget_db)
        )
        zeros = np.zeros((len(BANDS), len(network.receivers), *grid.shape), np.float32)
        out = RadioMap(network, grid, prior, None, tuple(cfg.pathloss_knots_km), zeros,
                       zeros + np.float32(prior.sigma_db**2), cfg, fit_obs,
                       start.power if n_fit else np.zeros(0))  # fmt: skip
        out.metrics = {"n_labels": n_fit, "n_unheard_labels": n_unheard, "fitted": False,
                       "fit_seconds": time.perf_counter() - t0}  # fmt: skip
        out.metrics["_held"] = held
        return out
    st, z, nug, use, outliers = _iterate(
        fit_obs, network.positions_km, start, cfg, iterations, hyper is None, known_power_dbm is not None
    )
    if cfg.sigma_power_dof and hyper is None and known_power_dbm is None:
        f = power_dof_factor(fit_obs.state, outliers)
        st = replace(st, hyper=replace(st.hyper, sigma_db=st.hyper.sigma_db / np.sqrt(f)))
    if known_power_dbm is None:
        common = common_field_var_db2(st.power[~outliers], cfg.power_range_dbm)
        st = replace(st, hyper=replace(st.hyper, common_var_db2=common))
    mean, var = _grid_fields(fit_obs, z, nug, use, st.hyper, grid, cfg)
    out = RadioMap(
        network, grid, st.hyper, st.coef, tuple(cfg.pathloss_knots_km), mean, var, cfg, fit_obs, st.power,
        outliers=outliers,
    )  # fmt: skip
    out.metrics = {
        "n_labels": n_fit,
        "n_unheard_labels": n_unheard,
        "fitted": True,
        "n_censored": int(np.sum((fit_obs.state == SILENT) | (fit_obs.state == CLIPPED))),
        "n_outliers": int(outliers.sum()),
        "fit_seconds": time.perf_counter() - t0,
        **holdout_metrics(out, held),
    }
    out.metrics["_held"] = held
    return out


def common_field_var_db2(power_dbm: NDArray[np.float64], power_range_dbm: tuple[float, float]) -> float:
    """Variance (dB²) of the field common to a session's receivers, from the labels' estimated powers.

    A labelled session's estimated power is its true power plus the mean field (and capture
    noise) of the receivers that heard it, P̂_b = P_b + c_b, so the fitted fields hold each
    receiver's field minus that common part, and a transmitter where the labels are dense is
    predicted with an effective power P + c(x). With P uniform over the published range
    [lo, hi] (variance (hi − lo)²/12) and c independent of it, Var c = Var P̂ − (hi − lo)²/12
    (clamped at 0). The adapted model widens its power prior's edges by it where the map is
    learnt (:class:`heimdall.models.gridnet.GridPosteriorNet`).

    Parameters
    ----------
    power_dbm
        (N,) estimated transmit powers of the fitted labelled sessions, dBm.
    power_range_dbm
        The published transmit-power range (lo, hi), dBm.

    """
    lo, hi = power_range_dbm
    if len(power_dbm) < 2:
        return 0.0
    return float(max(np.var(power_dbm, ddof=1) - (hi - lo) ** 2 / 12.0, 0.0))


def previous_held(m: RadioMap) -> LabelledObservations | None:
    """Held-out sessions kept with a map (so that an update scores on all of them)."""
    held = m.metrics.get("_held")
    return held if isinstance(held, LabelledObservations) and len(held) else None


def without_fields(m: RadioMap) -> RadioMap:
    """The same map with its fields zeroed and prior variance (what N = 0 labels give)."""
    zeros = np.zeros_like(m.field_db)
    return replace(m, field_db=zeros, field_var_db2=zeros + np.float32(m.hyper.sigma_db**2))
