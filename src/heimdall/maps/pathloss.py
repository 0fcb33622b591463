"""Median path loss fitted per receiver: a continuous piecewise-linear law in log10 distance.

−L(d) = c − 10 n log10 d − Σ_k 10 Δn_k max(0, log10(d / d_k))  (dB, d in km ≥ 1)

with intercept c (absorbs the receiver's gain offset, clutter loss and the
free-space constant), plus an intercept change c_70 for the 70 cm band (a
receiver's gain differs per band: antenna, preamp, filters), near exponent n
and exponent changes Δn_k at fixed knots d_k: the simulator-like breakpoint law (free space to the radio
horizon, a steeper exponent beyond; ITU-R P.525 / P.526) without assuming
where the horizon is. A ridge on Δn_k keeps sparse data near a straight line.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from heimdall.posterior.likelihood import HEIGHT_NODES, height_nodes
from heimdall.sim.propagation import median_path_loss_db

#: Distances below this are clamped (km): the law is not meant for the near field.
MIN_DISTANCE_KM = 1.0


def design(
    distance_km: NDArray[np.float64], knots_km: tuple[float, ...], band: NDArray | int = 0
) -> NDArray[np.float64]:
    """Regressors (..., 3 + K): 1, −10 log10 d, −10 max(0, log10(d / d_k)), [band is 70 cm].

    ``band`` (0 = 2 m, 1 = 70 cm) broadcasts against ``distance_km``.
    """
    ld = np.log10(np.maximum(distance_km, MIN_DISTANCE_KM))
    cols = [np.ones_like(ld), -10.0 * ld] + [-10.0 * np.maximum(0.0, ld - np.log10(k)) for k in knots_km]
    cols.append(np.broadcast_to(np.asarray(band, dtype=np.float64), ld.shape))
    return np.stack(cols, axis=-1)


#: Distances (km) on which a prior law is projected onto :func:`design`'s basis.
SHAPE_DISTANCES_KM = np.geomspace(MIN_DISTANCE_KM, 400.0, 200)


def fit_coefficients(x: NDArray[np.float64], t: NDArray[np.float64], ridge: float) -> NDArray[np.float64]:
    """Ridge least squares of ``t`` (n,) on ``x`` (n, p); the ridge applies to the knot terms only."""
    p = x.shape[1]
    pen = np.zeros(p)
    pen[2:-1] = ridge
    pen[-1] = 1e-3  # the band intercept: free, but defined when one band has no labels
    a = x.T @ x + np.diag(pen) + 1e-9 * np.eye(p)
    return np.linalg.solve(a, x.T @ t)


def prior_gain_db(
    distance_km: NDArray[np.float64],
    tx_height_m: float,
    rx_height_m: NDArray[np.float64],
    exponents: tuple[float, float],
    clutter_db: float,
) -> NDArray[np.float64]:
    """Unfitted −L − clutter (dB) at 1 MHz: the breakpoint law of :mod:`heimdall.sim.propagation`."""
    return (
        -median_path_loss_db(distance_km, 1.0, tx_height_m, rx_height_m, exponents[0], exponents[1])
        - clutter_db
    )


def fit_intercepts(
    x: NDArray[np.float64], t: NDArray[np.float64], coef: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Refit only the intercepts (2 m and the 70 cm change) of ``coef`` (p,); the law's shape is kept.

    Least squares of ``t`` (n,) − shape on the columns 1 and [band is 70 cm] of ``x`` (n, p),
    by :func:`fit_coefficients` (its small ridge defines the band change when one band has
    no labels).
    """
    shape = x[:, 1:-1] @ coef[1:-1]
    out = coef.copy()
    out[[0, -1]] = fit_coefficients(x[:, [0, -1]], t - shape, ridge=0.0)
    return out


def height_averaged_gain_db(
    distance_km: NDArray[np.float64],
    tx_height_range_m: tuple[float, float],
    rx_height_m: NDArray[np.float64],
    exponents: tuple[float, float],
    clutter_db: float,
) -> NDArray[np.float64]:
    """:func:`prior_gain_db` averaged (in dB) over the transmitter heights, as the grid model does.

    The heights and weights are the likelihood's quadrature nodes over ``tx_height_range_m``
    (:func:`heimdall.posterior.likelihood.height_nodes`), so that a map whose law is this
    average reproduces the no-map model's median law.
    """
    heights, log_w = height_nodes(*tx_height_range_m, HEIGHT_NODES)
    w = np.exp(log_w)
    return sum(
        wk * prior_gain_db(distance_km, float(h), rx_height_m, exponents, clutter_db)
        for h, wk in zip(heights, w, strict=True)
    )


def prior_shape_coefficients(
    rx_height_m: NDArray[np.float64],
    knots_km: tuple[float, ...],
    tx_height_range_m: tuple[float, float],
    exponents: tuple[float, float],
    clutter_db: float,
) -> NDArray[np.float64]:
    """(R, 3 + K) coefficients of the height-averaged prior law of each receiver on :func:`design`'s basis.

    Projected by least squares over :data:`SHAPE_DISTANCES_KM` (log-spaced, so every
    decade of distance counts alike), independently of where labels lie.
    """
    x = design(SHAPE_DISTANCES_KM, knots_km)
    out = []
    for h in np.asarray(rx_height_m, dtype=np.float64):
        g = height_averaged_gain_db(
            SHAPE_DISTANCES_KM, tx_height_range_m, np.float64(h), exponents, clutter_db
        )
        out.append(fit_coefficients(x, g, ridge=0.0))
    return np.stack(out)
