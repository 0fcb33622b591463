from __future__ import annotations

import numpy as np
import pytest

from heimdall.eval.crlb import rss_crlb, tdoa_crlb
from heimdall.sim import World
from heimdall.sim.propagation import SPEED_OF_LIGHT_KM_S, path_loss_exponent


def test_ring_closed_form_known_power() -> None:
    """N receivers on a ring of radius d, transmitter at the centre, P0 known.

    Reference: docs/ARCHITECTURE.md closed form RMSE = 2d / sqrt(N b), b = (10 n / (σ ln 10))².
    """
    for n_rx, radius, n_exp, sigma in [(7, 40.0, 3.0, 6.0), (4, 10.0, 2.0, 3.0), (12, 80.0, 4.0, 8.0)]:
        ang = 2 * np.pi * np.arange(n_rx) / n_rx + 0.3
        rx = radius * np.stack([np.cos(ang), np.sin(ang)], axis=-1)[None]
        bound = rss_crlb(
            np.zeros((1, 2)), rx, np.ones((1, n_rx), bool), np.full((1, n_rx), n_exp), sigma, True
        )
        b = (10 * n_exp / (sigma * np.log(10))) ** 2
        assert bound.rmse_km[0] == pytest.approx(2 * radius / np.sqrt(n_rx * b), rel=0.01)
        assert not bound.singular[0]


def test_off_centre_unknown_power_matches_finite_differences(world: World) -> None:
    """Fisher matrix built independently by central finite differences of the mean received power.

    Reference: ``World.median_rx_power_dbm`` differentiated numerically in
    (east, north, P0) at off-centre points of the nw-italy network (not on a
    horizon breakpoint), F = JᵀJ / σ²; RMSE within 1 %.
    """
    rx = world.rx_east_north_km
    sigma = 9.2
    h_tx, f_mhz = 5.0, 145.0
    for tx in [(10.0, -20.0), (-60.0, 40.0), (90.0, 10.0)]:
        h = 1e-3

        def mean_power(e: float, n: float, p0: float) -> np.ndarray:
            return world.median_rx_power_dbm(e, n, p0, h_tx, f_mhz)

        e, n, p0 = tx[0], tx[1], 37.0
        jac = np.stack(
            [
                (mean_power(e + h, n, p0) - mean_power(e - h, n, p0)) / (2 * h),
                (mean_power(e, n + h, p0) - mean_power(e, n - h, p0)) / (2 * h),
                (mean_power(e, n, p0 + h) - mean_power(e, n, p0 - h)) / (2 * h),
            ],
            axis=-1,
        )
        fisher = jac.T @ jac / sigma**2
        ref_rmse = np.sqrt(np.trace(np.linalg.inv(fisher)[:2, :2]))
        d = world.distance_km(e, n)
        slope = path_loss_exponent(d, h_tx, world.network.heights_m, 2.0, 4.0, 4.0 / 3.0)
        bound = rss_crlb(np.array([tx]), rx[None], np.ones((1, len(rx)), bool), slope[None], sigma)
        assert bound.rmse_km[0] == pytest.approx(ref_rmse, rel=0.01)


def test_singular_sessions_are_counted_not_averaged() -> None:
    """Two receivers cannot fix (east, north, P0): the Fisher matrix is singular."""
    rx = np.array([[[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]]])
    used = np.array([[True, True, False]])
    bound = rss_crlb(np.array([[20.0, 20.0]]), rx, used, np.full((1, 3), 3.0), 6.0)
    assert bound.singular[0] and np.isnan(bound.rmse_km[0])
    used3 = np.ones((1, 3), bool)
    assert not rss_crlb(np.array([[20.0, 20.0]]), rx, used3, np.full((1, 3), 3.0), 6.0).singular[0]


def test_tdoa_square_closed_form() -> None:
    """Four receivers at the corners of a square, transmitter at the centre, equal σ_t.

    Reference: with unknown emission time the Fisher position block is
    Σ u uᵀ/(c σ)² minus the mean-direction term (zero by symmetry) = (2/(cσ)²) I,
    so RMSE = c σ (per axis c σ / sqrt(2)).
    """
    rx = np.array([[[30.0, 30.0], [-30.0, 30.0], [-30.0, -30.0], [30.0, -30.0]]])
    sigma = 1e-7
    bound = tdoa_crlb(np.zeros((1, 2)), rx, np.ones((1, 4), bool), np.full((1, 4), sigma))
    assert bound.rmse_km[0] == pytest.approx(SPEED_OF_LIGHT_KM_S * sigma, rel=0.01)
