"""Fit per-receiver radio maps from labelled sessions (alternating least squares + kriging).

Model of the measured power (dB, nominal full scale, frequency term moved
into the data, :mod:`heimdall.maps.observations`) of receiver i in session b:

    y_bi = P_b + g_i(d_bi) + s_i(x_b) + e_bi,   e_bi ~ N(0, τ² + label inflation)

- P_b: the transmit power, unknown per session, estimated jointly; the
  level of (P, g) is fixed by anchoring the mean estimated power at the
  centre of the published power range (only differences matter to a
  localiser, which marginalises P);
- g_i: the median path loss with its intercept (gain, site and clutter
  offsets), :mod:`heimdall.maps.pathloss`;
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
- label position uncertainty r inflates a label's nugget by σ² (1 − ρ(r)).

Each iteration: impute censored values, fit g_i, estimate (σ, ℓ, τ),
krige the field at the labels (leave-one-out), re-estimate P_b. The final
field is kriged on the grid: mean and variance per receiver; far from labels
they return to the prior (0, σ²).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr

from heimdall.maps.config import MapsConfig
from heimdall.maps.grid import MapGrid
from heimdall.maps.kriging import FieldHyper, cross_band_corr, empirical_variogram, fit_variogram, krige
from heimdall.maps.observations import BANDS, CLIPPED, HEARD, SILENT, LabelledObservations
from heimdall.maps.pathloss import design, fit_coefficients, prior_gain_db
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
        Fit diagnostics (held-out residuals, timings, counts).

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

    @property
    def n_labels(self) -> int:
        """Labelled sessions the map was fitted on."""
        return len(self.train)

    @property
    def rx_km(self) -> NDArray[np.float64]:
        """(R, 2) receiver positions, km."""
        return self.network.positions_km

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
) -> tuple[_State, NDArray, NDArray, NDArray]:
    """Alternating fit; returns the state, field targets z (N, R), their nuggets and the use mask."""
    x = design(_distances(obs.pos_km, rx_km), cfg.pathloss_knots_km, obs.band[:, None])  # (N, R, p)
    state = obs.state if cfg.censored else np.where(obs.state == HEARD, HEARD, 0).astype(np.int8)
    use = state != 0
    heard = state == HEARD
    centre = 0.5 * sum(cfg.power_range_dbm)
    z = np.zeros(obs.y_db.shape)
    nug = np.zeros(obs.y_db.shape)
    for _ in range(iterations):
        g = np.einsum("nrp,rp->nr", x, st.coef)
        mu = st.power[:, None] + g + st.s_loo
        sd = np.sqrt(st.hyper.nugget_db**2 + st.s_var)
        val, extra = _impute(obs.y_db, obs.cens_db, state, mu, sd)
        t = val - st.power[:, None]
        coef = st.coef.copy()
        for i in range(rx_km.shape[0]):
            ok = use[:, i]
            if ok.sum() >= x.shape[2] + 2:
                coef[i] = fit_coefficients(x[ok, i], t[ok, i] - st.s_loo[ok, i], cfg.pathloss_ridge)
        g = np.einsum("nrp,rp->nr", x, coef)
        z = np.where(use, t - g, 0.0)
        hyper = st.hyper
        if estimate_hyper:
            hyper = _pooled_hyper(obs.pos_km, z, use, obs.band, cfg, seed=cfg.holdout_seed) or hyper
        nug = hyper.nugget_db**2 + hyper.label_inflation(obs.radius_km)[:, None] + extra
        s_loo = np.zeros(z.shape)
        s_var = np.full(z.shape, hyper.sigma_db**2)
        for i in range(rx_km.shape[0]):
            ok = np.flatnonzero(use[:, i])
            s_loo[ok, i], s_var[ok, i] = krige(
                obs.pos_km[ok], z[ok, i], nug[ok, i], obs.pos_km[ok], hyper,
                cfg.neighbours, cfg.max_corr_multiple * hyper.corr_km, exclude_self=True,
                train_band=obs.band[ok], query_band=obs.band[ok],
            )  # fmt: skip
        power = st.power
        if not known_power:
            w = np.where(heard, 1.0 / (hyper.nugget_db**2 + s_var), 0.0)
            resid = np.where(heard, obs.y_db - g - s_loo, 0.0)
            power = np.sum(w * resid, axis=1) / np.maximum(w.sum(axis=1), 1e-12)
            shift = float(np.mean(power)) - centre  # anchor the level (P and intercepts trade off)
            power = power - shift
            coef[:, 0] += shift
            z = np.where(use, val - power[:, None] - np.einsum("nrp,rp->nr", x, coef), 0.0)
        if estimate_hyper:
            g = np.einsum("nrp,rp->nr", x, coef)
            resid = np.where(heard, obs.y_db - power[:, None] - g - s_loo, 0.0)
            tau = calibrated_nugget_db(resid, s_var, heard, cfg.min_nugget_db, known_power)
            hyper = replace(hyper, nugget_db=tau)
            nug = hyper.nugget_db**2 + hyper.label_inflation(obs.radius_km)[:, None] + extra
        st = _State(power, coef, hyper, s_loo, s_var)
    return st, z, nug, use


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
    pts = grid.points_km
    r = z.shape[1]
    mean = np.zeros((len(BANDS), r, *grid.shape), np.float32)
    var = np.zeros((len(BANDS), r, *grid.shape), np.float32)
    for q in range(len(BANDS)):
        for i in range(r):
            ok = np.flatnonzero(use[:, i])
            m, v = krige(
                obs.pos_km[ok], z[ok, i], nug[ok, i], pts, hyper, cfg.neighbours,
                cfg.max_corr_multiple * hyper.corr_km, train_band=obs.band[ok], query_band=q,
            )  # fmt: skip
            mean[q, i], var[q, i] = m.reshape(grid.shape), v.reshape(grid.shape)
    return mean, var


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
    t0 = time.perf_counter()
    grid = MapGrid.covering(network.positions_km, cfg.area_margin_km, cfg.grid_step_km)
    hold = is_holdout(obs.session_id, cfg.holdout_fraction, cfg.holdout_seed)
    held, fit_obs = obs.select(hold), obs.select(~hold)
    if known_power_dbm is not None:
        known_power_dbm = np.asarray(known_power_dbm)[~hold]
    has_heard = (fit_obs.state == HEARD).any(axis=1) | (known_power_dbm is not None)
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
        out.metrics = {"n_labels": n_fit, "fitted": False, "fit_seconds": time.perf_counter() - t0}
        out.metrics["_held"] = held
        return out
    st, z, nug, use = _iterate(
        fit_obs, network.positions_km, start, cfg, iterations, hyper is None, known_power_dbm is not None
    )
    mean, var = _grid_fields(fit_obs, z, nug, use, st.hyper, grid, cfg)
    out = RadioMap(
        network, grid, st.hyper, st.coef, tuple(cfg.pathloss_knots_km), mean, var, cfg, fit_obs, st.power
    )
    out.metrics = {
        "n_labels": n_fit,
        "fitted": True,
        "n_censored": int(np.sum((fit_obs.state == SILENT) | (fit_obs.state == CLIPPED))),
        "fit_seconds": time.perf_counter() - t0,
        **holdout_metrics(out, held),
    }
    out.metrics["_held"] = held
    return out


def previous_held(m: RadioMap) -> LabelledObservations | None:
    """Held-out sessions kept with a map (so that an update scores on all of them)."""
    held = m.metrics.get("_held")
    return held if isinstance(held, LabelledObservations) and len(held) else None


def without_fields(m: RadioMap) -> RadioMap:
    """The same map with its fields zeroed and prior variance (what N = 0 labels give)."""
    zeros = np.zeros_like(m.field_db)
    return replace(m, field_db=zeros, field_var_db2=zeros + np.float32(m.hyper.sigma_db**2))
