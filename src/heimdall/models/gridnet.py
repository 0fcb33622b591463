"""GridPosteriorNet: the grid posterior of the transmitter position as a PyTorch module (exportable to ONNX).

The network computes, for every session and candidate point x, the unnormalised
log posterior of the received-power model of docs/ARCHITECTURE.md (§ radio maps):
the measured power (dB, + 20 log10 f/MHz, ITU-R P.525) of heard receiver i is

    y_i ~ N(P0 + μ_i(x, h), τ² + v_i(x)),

silent receivers (below their threshold t_i) add log Φ((t_i − P0 − μ_i) / s_i) and
clipped ones log Φ(−(t_i − P0 − μ_i) / s_i), s_i² = τ² + v_i(x) (Tobit censoring,
Tobin 1958). The transmit power P0 is uniform over the published range and
integrated out — in closed form for the heard terms, by quadrature for the
censored ones — and the transmitter height h over Gauss-Legendre nodes.

With a learnt map the fields hold each receiver's field minus the part common to the
labels' receivers, which the labels' estimated powers absorbed (variance c², the map's
``hyper.common_var_db2``): where the map is learnt a transmitter shows the effective
power P0 + c. Its prior is the published range convolved with N(0, s²(x)),
s²(x) = c² · max(0, 1 − v̄(x)/σ²) (v̄ the heard receivers' mean field variance at x, σ²
the map's sill: s² is c² on the labels and 0 far from them, where the fields return to the
prior; 0 when nothing is heard). The heard terms integrate it in closed form,
∫ N(P; m, 1/W) [Φ((hi − P)/s) − Φ((lo − P)/s)] dP = Φ((hi − m)/√(1/W + s²)) − Φ((lo − m)/√(1/W + s²));
the censored terms weigh their power nodes by the same prior (:meth:`GridPosteriorNet._censored`).

μ_i(x, h) = g_i(d) + s_i(x) + Δ(d, h):

- **learnt radio map** (:meth:`GridPosteriorNet.load_map`): g_i the receiver's fitted
  median path loss, s_i and v_i the kriged field mean and variance of the session's
  band (bilinear on the map grid), τ the fitted per-capture σ;
- **no map** (a network the model has no labels of): g_i the breakpoint law averaged
  over heights, s_i = 0 and v_i = σ_f², with the law's exponents, clutter, σ_f and τ
  learnt on world and network families (:mod:`heimdall.models.gridnet_train`).

Δ(d, h) = G(d, h) − Σ_k w_k G(d, h_k) moves the radio horizon with the height, G the
breakpoint law of the simulator (free space to the horizon 4.12 (√h_t + √h_r) km,
a steeper exponent beyond; ITU-R P.526). Everything is elementwise tensor algebra,
so the same module runs in PyTorch and, exported, in onnxruntime.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from heimdall.maps.config import MapsConfig
from heimdall.maps.fit import RadioMap
from heimdall.maps.observations import CLIPPED, HEARD, SILENT
from heimdall.posterior.likelihood import HEIGHT_NODES, height_nodes

#: Radio-horizon coefficient √(2 k a) for k = 4/3, a = 6371 km: km per √m.
HORIZON_KM_PER_SQRT_M = math.sqrt(2.0 * (4.0 / 3.0) * 6371.0 * 1000.0) / 1000.0
#: Free-space loss at 1 km and 1 MHz, dB (ITU-R P.525).
FREE_SPACE_1KM_1MHZ_DB = 32.45
#: Distances below these are clamped, km: the breakpoint law's and the fitted law's near limits.
MIN_LAW_DISTANCE_KM = 0.05
MIN_FIT_DISTANCE_KM = 1.0
#: Transmit-power quadrature nodes (over the heard terms' effective support) for the censored terms.
P0_QUADRATURE_NODES = 4


#: Chebyshev coefficients of erfc(x) = t exp(−x² + P(t)), t = 1 / (1 + x/2), x ≥ 0: fractional
#: error < 1.2e-7 everywhere (Press et al., Numerical Recipes, 2nd ed., §6.2, ``erfcc``).
_ERFC_COEFFS = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip


def log_erfc(x: Tensor) -> Tensor:
    """Log erfc(x) for x ≥ 0 in the log domain (no underflow in the far tail)."""
    t = 1.0 / (1.0 + 0.5 * x)
    poly = torch.full_like(x, _ERFC_COEFFS[-1])
    for c in reversed(_ERFC_COEFFS[:-1]):
        poly = c + t * poly
    return torch.log(t) - x * x + poly


def log_ndtr(z: Tensor) -> Tensor:
    """Log Φ(z) (nats), accurate to ~1e-7 in float32 at every z (via :func:`log_erfc`)."""
    x = torch.abs(z) / math.sqrt(2.0)
    lower = math.log(0.5) + log_erfc(x)  # log Φ(−|z|)
    upper = torch.log(torch.clamp(1.0 - torch.exp(lower), min=1e-30))  # log(1 − Φ(−|z|))
    return torch.where(z < 0, lower, upper)


def log_interval_prob(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Φ(hi) − Φ(lo)) for lo ≤ hi, computed on the side of the lower tail."""
    flip = lo > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    la, lb = log_ndtr(a), log_ndtr(b)
    return lb + torch.log(torch.clamp(1.0 - torch.exp(torch.clamp(la - lb, max=0.0)), min=1e-30))


def breakpoint_gain_db(d_km: Tensor, tx_h_m: float, rx_h_m: Tensor, n_near: Tensor, n_far: Tensor) -> Tensor:
    """−L(d) at 1 MHz (dB) of the breakpoint law (ITU-R P.525 to the radio horizon, ``n_far`` beyond)."""
    d = torch.clamp(d_km, min=MIN_LAW_DISTANCE_KM)
    d_b = HORIZON_KM_PER_SQRT_M * (math.sqrt(tx_h_m) + torch.sqrt(rx_h_m))
    near = 10.0 * n_near * torch.log10(d)
    far = 10.0 * n_near * torch.log10(d_b) + 10.0 * n_far * torch.log10(d / d_b)
    return -(FREE_SPACE_1KM_1MHZ_DB + torch.where(d <= d_b, near, far))


class GridPosteriorNet(nn.Module):
    """Unnormalised log posterior (nats) of B sessions at per-session points; see the module docstring.

    Parameters
    ----------
    cfg
        Power range (dBm), height range (m), the breakpoint law's starting exponents
        and clutter loss (dB), σ_f and τ (dB) of the no-map case, path-loss knots (km).
    n_receivers
        Receiver slots of a map (0: no map).

    Learnable parameters (no map): ``n_near``, ``n_far``, ``clutter_db``, ``log_field_sigma_db``,
    ``log_nugget_db`` and ``band_offset_db`` (the 70 cm gain change: antennas, feeders, clutter).

    """

    def __init__(self, cfg: MapsConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or MapsConfig()
        self.power_range_dbm = tuple(float(v) for v in cfg.power_range_dbm)
        self.tx_height_range_m = tuple(float(v) for v in cfg.tx_height_range_m)
        self.knots_km = tuple(float(k) for k in cfg.pathloss_knots_km)
        heights, log_w = height_nodes(*self.tx_height_range_m, HEIGHT_NODES)
        self.heights_m = tuple(float(h) for h in heights)
        self.register_buffer("log_height_weight", torch.tensor(log_w, dtype=torch.float32))
        self.n_near = nn.Parameter(torch.tensor(float(cfg.prior_exponents[0])))
        self.n_far = nn.Parameter(torch.tensor(float(cfg.prior_exponents[1])))
        self.clutter_db = nn.Parameter(torch.tensor(float(cfg.prior_clutter_db)))
        self.log_field_sigma_db = nn.Parameter(torch.tensor(math.log(cfg.prior_sigma_db)))
        self.log_nugget_db = nn.Parameter(torch.tensor(math.log(cfg.prior_nugget_db)))
        self.band_offset_db = nn.Parameter(torch.tensor(0.0))
        self.has_map = False
        #: The map's common-field variance c² and field sill σ² (dB²); see the module docstring.
        self.map_common_var_db2 = 0.0
        self.map_sill_db2 = 1.0
        self.grid_geometry = (0.0, 0.0, 1.0, 1, 1)  # east0, north0, step (km), n_east, n_north
        for name in ("map_coef", "map_field_db", "map_field_var_db2", "map_nugget_db"):
            self.register_buffer(name, torch.zeros(0))

    # -- the learnt radio map -----------------------------------------------------------------
    def load_map(self, rmap: RadioMap) -> None:
        """Use a fitted radio map (its receivers are the slots, in the map's network order)."""
        if rmap.coef is None:
            raise ValueError("the radio map has no fitted path loss (fewer labels than min_labels)")
        g = rmap.grid
        self.has_map = True
        self.grid_geometry = (g.east0_km, g.north0_km, g.step_km, g.n_east, g.n_north)
        nb, r = rmap.field_db.shape[:2]
        self.map_coef = torch.tensor(rmap.coef, dtype=torch.float32)
        self.map_field_db = torch.tensor(rmap.field_db.reshape(nb, r, -1), dtype=torch.float32)
        self.map_field_var_db2 = torch.tensor(rmap.field_var_db2.reshape(nb, r, -1), dtype=torch.float32)
        self.map_nugget_db = torch.tensor(float(rmap.hyper.nugget_db))
        self.map_common_var_db2 = float(rmap.hyper.common_var_db2)
        self.map_sill_db2 = float(rmap.hyper.sigma_db) ** 2
        self.power_range_dbm = tuple(float(v) for v in rmap.config.power_range_dbm)
        self.knots_km = tuple(float(k) for k in rmap.knots_km)

    @property
    def nugget_db(self) -> Tensor:
        """Per-capture σ τ (dB)."""
        return self.map_nugget_db if self.has_map else torch.exp(self.log_nugget_db)

    def _fitted_gain(self, d_km: Tensor, band: Tensor) -> Tensor:
        """g_i(d) of the fitted piecewise-linear law (B, R, G), dB (:mod:`heimdall.maps.pathloss`)."""
        ld = torch.log10(torch.clamp(d_km, min=MIN_FIT_DISTANCE_KM))
        c = self.map_coef  # (R, 3 + K)
        out = c[None, :, 0:1] - 10.0 * ld * c[None, :, 1:2]
        for k, knot in enumerate(self.knots_km):
            out = out - 10.0 * torch.clamp(ld - math.log10(knot), min=0.0) * c[None, :, 2 + k : 3 + k]
        return out + band.to(d_km.dtype)[:, None, None] * c[None, :, -1:]

    def _field(self, points_km: Tensor, band: Tensor) -> tuple[Tensor, Tensor]:
        """Bilinear field mean (dB) and variance (dB²) of each session's band at its points: (B, R, G)."""
        e0, n0, step, n_e, n_n = self.grid_geometry
        x = torch.clamp((points_km[..., 0] - e0) / step, 0.0, max(n_e - 1.000001, 0.0))
        y = torch.clamp((points_km[..., 1] - n0) / step, 0.0, max(n_n - 1.000001, 0.0))
        i0, j0 = torch.floor(x), torch.floor(y)
        wx, wy = x - i0, y - j0
        i0, j0 = i0.long(), j0.long()
        i1 = torch.clamp(i0 + 1, max=n_e - 1)
        j1 = torch.clamp(j0 + 1, max=n_n - 1)
        r = self.map_field_db.shape[1]
        out = []
        for grid in (self.map_field_db, self.map_field_var_db2):
            per = grid[band]  # (B, R, cells)

            def at(j: Tensor, i: Tensor, per: Tensor = per) -> Tensor:
                idx = (j * n_e + i)[:, None, :].expand(-1, r, -1)
                return torch.gather(per, 2, idx)

            w_x, w_y = wx[:, None, :], wy[:, None, :]
            out.append(
                (at(j0, i0) * (1 - w_x) + at(j0, i1) * w_x) * (1 - w_y)
                + (at(j1, i0) * (1 - w_x) + at(j1, i1) * w_x) * w_y
            )
        return out[0], out[1]

    def predicted_power(
        self, rx_km: Tensor, rx_height_m: Tensor, band: Tensor, points_km: Tensor
    ) -> tuple[Tensor, Tensor]:
        """μ_i(x, h) for P0 = 0 dB per height node (H, B, R, G), dB; its variance v_i(x) (B, R, G), dB²."""
        diff = points_km[:, None, :, :] - rx_km[:, :, None, :]
        d = torch.sqrt(torch.sum(diff * diff, dim=-1) + 1e-12)  # (B, R, G)
        rx_h = rx_height_m[:, :, None]
        per_h = torch.stack(
            [breakpoint_gain_db(d, h, rx_h, self.n_near, self.n_far) for h in self.heights_m]
        )  # (H, B, R, G)
        w = torch.exp(self.log_height_weight)[:, None, None, None]
        average = torch.sum(w * per_h, dim=0)
        if self.has_map:
            field, var = self._field(points_km, band)
            base = self._fitted_gain(d, band) + field
        else:
            base = average - self.clutter_db + band.to(d.dtype)[:, None, None] * self.band_offset_db
            var = torch.exp(2.0 * self.log_field_sigma_db) * torch.ones_like(d)
        return base[None] + (per_h - average[None]), var

    def forward(
        self,
        y_db: Tensor,
        state: Tensor,
        cens_db: Tensor,
        rx_km: Tensor,
        rx_height_m: Tensor,
        band: Tensor,
        points_km: Tensor,
    ) -> Tensor:
        """Unnormalised log posterior (B, G), nats.

        Parameters
        ----------
        y_db
            (B, R) measured power + 20 log10(f / MHz), dB (dBm at nominal full scale); used where heard.
        state
            (B, R) 0 unused, 1 heard, 2 silent, 3 clipped (:mod:`heimdall.maps.observations`).
        cens_db
            (B, R) the silent receiver's threshold or the clipped receiver's measured power, same reference.
        rx_km, rx_height_m
            (B, R, 2) receiver positions (east, north) in the local frame, km; (B, R) heights, m.
        band
            (B,) 0 for 2 m, 1 for 70 cm (int64).
        points_km
            (B, G, 2) candidate positions, km.

        """
        mean, var = self.predicted_power(rx_km, rx_height_m, band, points_km)
        tau2 = self.nugget_db**2
        heard = (state == HEARD)[:, :, None].to(mean.dtype)  # (B, R, 1)
        y = torch.where(state == HEARD, y_db, torch.zeros_like(y_db))[:, :, None]
        w = heard / (tau2 + var)  # (B, R, G)
        r = y[None] - mean  # (H, B, R, G)
        big_w = torch.sum(w, dim=1)  # (B, G)
        any_heard = big_w > 0
        safe_w = torch.where(any_heard, big_w, torch.ones_like(big_w))
        s1 = torch.sum(w[None] * r, dim=2)  # (H, B, G)
        m = s1 / safe_w[None]
        q = torch.clamp(torch.sum(w[None] * r * r, dim=2) - s1 * m, min=0.0)
        log_det = torch.sum(heard * torch.log(torch.where(heard > 0, w, torch.ones_like(w))), dim=1)
        lo, hi = self.power_range_dbm
        sw = torch.sqrt(safe_w)[None]
        edge_sd = None
        if self.has_map and self.map_common_var_db2 > 0.0:
            mean_var = torch.sum(heard * var, dim=1) / torch.clamp(torch.sum(heard, dim=1), min=1.0)
            learnt = torch.clamp(1.0 - mean_var / self.map_sill_db2, 0.0, 1.0)  # (B, G)
            learnt = torch.where(any_heard, learnt, torch.zeros_like(learnt))  # no v̄: the published range
            edge_sd = torch.sqrt(self.map_common_var_db2 * learnt)  # s(x), dB
            sw = torch.rsqrt(1.0 / safe_w + edge_sd * edge_sd)[None]
        mass = log_interval_prob((lo - m) * sw, (hi - m) * sw)
        ll = -0.5 * q + 0.5 * log_det[None] - 0.5 * torch.log(safe_w)[None] + mass
        ll = torch.where(any_heard[None], ll, torch.zeros_like(ll))
        ll = ll + self._censored(state, cens_db, mean, var, tau2, m, safe_w, any_heard, edge_sd)
        ll = ll + self.log_height_weight[:, None, None]
        return torch.logsumexp(ll, dim=0)

    def _censored(
        self,
        state: Tensor,
        cens_db: Tensor,
        mean: Tensor,
        var: Tensor,
        tau2: Tensor,
        m: Tensor,
        big_w: Tensor,
        any_heard: Tensor,
        edge_sd: Tensor | None = None,
    ) -> Tensor:
        """Log E[Π_j Φ(s_j z_j)] over P0 given the heard terms (H, B, G).

        P0 given the heard terms is N(m, 1/W) truncated to the power range [lo, hi]. Its
        effective support — the points of [lo, hi] where the density is within e^−6.125
        (3.5 σ) of its largest value there, |P0 − m| ≤ √((c − m)² + (3.5 σ)²) with c the
        mean m clamped to the range, so a mean outside the range keeps its short tail — is
        cut into equal cells; each cell contributes its exact probability (a difference of
        Φ) at its conditional mean m + σ (φ(α) − φ(β)) / (Φ(β) − Φ(α)) (the truncated-normal
        mean, Johnson, Kotz & Balakrishnan 1994, §10.1), so only Φ's curvature within a cell
        (≤ 1.75 σ wide for 4 cells) is approximated: within 5e-3 nats of adaptive quadrature in
        the tests, where 8 midpoint nodes were 0.35 nats off for a mean far outside the range.
        Nothing heard: midpoint nodes over the whole range, equal weights.

        Soft edges (``edge_sd`` s(x), (B, G) dB; the module docstring): the prior is the range
        convolved with N(0, s²), so the support reaches 3.5 s beyond each end and each node's
        weight is multiplied by the prior there, Φ((hi − P)/s) − Φ((lo − P)/s).
        """
        lo, hi = self.power_range_dbm
        k = P0_QUADRATURE_NODES
        frac = torch.tensor(np.arange(k + 1) / k, dtype=mean.dtype)
        sd = 1.0 / torch.sqrt(big_w)[None, :, :, None]  # (1, B, G, 1)
        heard = any_heard[None, :, :, None]
        centre = m[..., None]
        spread = 0.0 * sd if edge_sd is None else 3.5 * edge_sd[None, :, :, None]
        lo_t, hi_t = lo - spread, hi + spread  # the prior's effective support, dB
        inside = torch.minimum(torch.maximum(centre, lo_t), hi_t)
        outside = centre - inside  # mean − mode (dB), 0 inside the range
        reach = torch.sqrt(outside * outside + (3.5 * sd) ** 2)
        a = torch.where(heard, torch.minimum(torch.maximum(centre - reach, lo_t), hi_t), lo_t)
        b = torch.where(heard, torch.minimum(torch.maximum(centre + reach, lo_t), hi_t), hi_t)
        edges = a + (b - a) * frac  # (H, B, G, K + 1), dB
        z = (edges - centre) / sd
        z_lo, z_hi = z[..., :-1], z[..., 1:]
        log_mass = log_interval_prob(z_lo, z_hi)  # (H, B, G, K)
        log_phi = -0.5 * z * z - 0.5 * math.log(2.0 * math.pi)
        ratio_lo = torch.exp(torch.clamp(log_phi[..., :-1] - log_mass, max=30.0))
        ratio_hi = torch.exp(torch.clamp(log_phi[..., 1:] - log_mass, max=30.0))
        cell_mean = centre + sd * torch.clamp(ratio_lo - ratio_hi, z_lo, z_hi)  # kept in its cell
        midpoint = 0.5 * (edges[..., :-1] + edges[..., 1:])
        nodes = torch.where(heard, cell_mean, midpoint)
        log_w = torch.where(heard, log_mass, 0.0 * log_mass)
        if edge_sd is not None:
            s_edge = edge_sd[None, :, :, None]
            safe = torch.clamp(s_edge, min=1e-6)
            prior = log_interval_prob((lo - nodes) / safe, (hi - nodes) / safe)
            log_w = log_w + torch.where(s_edge > 0, prior, torch.zeros_like(prior))
        log_w = log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)
        nodes = nodes[:, :, None]  # (H, B, 1, G, K)
        sign = torch.where(state == SILENT, 1.0, torch.where(state == CLIPPED, -1.0, 0.0)).to(mean.dtype)
        cens = torch.where(sign != 0, cens_db, torch.zeros_like(cens_db))
        z = (cens[None, :, :, None, None] - nodes - mean[..., None]) / torch.sqrt(tau2 + var)[None, ..., None]
        s = sign[None, :, :, None, None]  # (1, B, R, 1, 1)
        terms = torch.where(s != 0, log_ndtr(s * z), torch.zeros_like(z))  # (H, B, R, G, K)
        total = log_w + torch.sum(terms, dim=2)
        return torch.logsumexp(total, dim=-1)


def gridnet_from_payload(payload: dict, name: str = "model file") -> tuple[GridPosteriorNet, dict]:
    """A model (eval mode) and its metadata from a checkpoint payload read safely (weights only).

    The payload holds ``maps_config`` (the start settings), ``state_dict`` (the learnt
    parameters, without a radio map) and ``metadata`` (training provenance).
    """
    from heimdall.errors import HeimdallError

    try:
        model = GridPosteriorNet(MapsConfig.model_validate(payload["maps_config"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise HeimdallError(f"{name}: not a valid grid-posterior checkpoint ({exc})") from None
    return model.eval(), dict(payload.get("metadata", {}))


def gridnet_description(model: GridPosteriorNet) -> dict:
    """The settings and learnt scalars of a model without its map (JSON): enough to rebuild it."""
    return {
        "maps_config": {
            "power_range_dbm": list(model.power_range_dbm),
            "tx_height_range_m": list(model.tx_height_range_m),
            "pathloss_knots_km": list(model.knots_km),
        },
        "parameters": {k: float(v.detach()) for k, v in model.named_parameters()},
    }


def gridnet_from_description(description: dict) -> GridPosteriorNet:
    """Inverse of :func:`gridnet_description` (the radio map is loaded separately)."""
    model = GridPosteriorNet(MapsConfig.model_validate(description["maps_config"]))
    with torch.no_grad():
        for name, value in description["parameters"].items():
            getattr(model, name).fill_(float(value))
    return model
