"""The posterior raster against closed forms: Gaussian density, HPD ellipses, mixture modes, Mercator rows."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from heimdall.network.geodesy import LocalFrame
from heimdall.serve.raster import (
    gaussian_bounds,
    gaussian_raster,
    hpd_contours,
    hpd_threshold,
    modes,
    raster_of,
    raster_payload,
)

FRAME = LocalFrame(44.8, 8.6)
CASES = {
    "round": (np.array([0.0, 0.0]), np.array([[100.0, 0.0], [0.0, 100.0]])),
    "tilted": (np.array([35.0, -20.0]), np.array([[900.0, 420.0], [420.0, 300.0]])),
    "narrow": (np.array([-60.0, 40.0]), np.array([[4.0, 0.0], [0.0, 36.0]])),
}


def _mahalanobis_sq(frame, mean, cov, lat, lon):
    e, n = frame.to_local_km(lat, lon)
    d = np.stack([e - mean[0], n - mean[1]], axis=-1)
    return np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_gaussian_raster_closed_forms(case: str) -> None:
    mean, cov = CASES[case]
    r = gaussian_raster(FRAME, mean, cov)
    norm = 1.0 / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
    # ±4σ of the major axis holds all but exp(-8) of the mass (χ²₂ tail), at least
    assert r.mass.sum() == pytest.approx(1.0, abs=2e-3)
    # density at each pixel equals N(x; μ, Σ) at that pixel's centre
    m2 = _mahalanobis_sq(FRAME, mean, cov, r.lat_deg, r.lon_deg)
    np.testing.assert_allclose(r.density, norm * np.exp(-0.5 * m2), rtol=1e-9)
    # cell areas add up to the box's area in the local frame (a rectangle there, up to the projection)
    assert r.cell_area_km2.min() > 0
    for level in (0.5, 0.9):
        radius_sq = -2.0 * np.log(1.0 - level)  # χ²₂ quantile
        # the HPD threshold is the density on the ellipse of that Mahalanobis radius: (1 − p) / (2π √det Σ)
        assert hpd_threshold(r, level) == pytest.approx((1.0 - level) * norm, rel=0.03)
        lines = hpd_contours(r, level)
        assert len(lines) == 1
        ring = np.array(lines[0])
        got = _mahalanobis_sq(FRAME, mean, cov, ring[:, 0], ring[:, 1])
        np.testing.assert_allclose(got, radius_sq, rtol=0.03)
    [mode] = modes(r)
    lat, _ = FRAME.to_latlon(*mean)
    assert _mahalanobis_sq(FRAME, mean, cov, mode["latitude"], mode["longitude"]) < 0.01
    assert mode["probability"] == pytest.approx(1.0, abs=0.01)  # one basin: all the raster's mass
    assert abs(mode["latitude"] - lat) < 0.05


def test_rows_are_equally_spaced_in_web_mercator() -> None:
    mean, cov = CASES["tilted"]
    r = gaussian_raster(FRAME, mean, cov)
    h, w = r.density.shape
    y = np.log(np.tan(np.pi / 4 + np.radians(r.lat_deg[:, 0]) / 2))
    y_n = np.log(np.tan(np.pi / 4 + np.radians(r.north) / 2))
    y_s = np.log(np.tan(np.pi / 4 + np.radians(r.south) / 2))
    np.testing.assert_allclose(y, y_n + (np.arange(h) + 0.5) / h * (y_s - y_n), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        r.lon_deg[0], r.west + (np.arange(w) + 0.5) / w * (r.east - r.west), atol=1e-12
    )
    south, west, north, east = gaussian_bounds(FRAME, mean, cov)
    assert (r.south, r.west, r.north, r.east) == (south, west, north, east)


def test_two_component_modes_have_the_closed_form_probabilities() -> None:
    """Two far-apart isotropic Gaussians (weights 0.7, 0.3, same σ): two modes at the centres,
    each holding its weight (the basins split at the saddle, where both densities are negligible);
    the 90 % region's threshold t satisfies Σ (wᵢ − t·2πσ²) = 0.9, so each component holds wᵢ − 0.05."""
    sigma, w1, w2 = 5.0, 0.7, 0.3
    c1, c2 = np.array([-40.0, 0.0]), np.array([40.0, 10.0])

    def log_density(e, n):
        g = lambda c: np.exp(-((e - c[0]) ** 2 + (n - c[1]) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)  # noqa: E731
        return np.log(w1 * g(c1) + w2 * g(c2) + 1e-300)

    lat, lon = FRAME.to_latlon(np.array([-80.0, 80.0]), np.array([-40.0, 50.0]))
    r = raster_of(FRAME, log_density, (lat.min(), lon.min(), lat.max(), lon.max()), size=400)
    found = modes(r)
    assert [m["probability"] for m in found] == pytest.approx([w1, w2], abs=0.01)
    for m, c in zip(found, (c1, c2), strict=True):
        e, n = FRAME.to_local_km(m["latitude"], m["longitude"])
        assert np.hypot(e - c[0], n - c[1]) < 0.5  # within a pixel (0.4 km) of the component's centre
    t90 = hpd_threshold(r, 0.9) * 2 * np.pi * sigma**2
    assert t90 == pytest.approx((w1 + w2 - 0.9) / 2, abs=0.005)
    assert len(hpd_contours(r, 0.5)) == len(hpd_contours(r, 0.9)) == 2


def test_png_is_the_density() -> None:
    mean, cov = CASES["tilted"]
    r = gaussian_raster(FRAME, mean, cov)
    payload = raster_payload(r)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload["raster"]["png_base64"]))))
    assert img.shape == (*r.density.shape, 4)
    assert np.unravel_index(np.argmax(img[..., 3]), r.density.shape) == np.unravel_index(
        np.argmax(r.density), r.density.shape
    )
    outside = r.density < hpd_threshold(r, 0.99)
    assert outside.any() and (img[..., 3][outside] == 0).all()  # transparent outside the 99 % region
    # opacity grows with density
    alpha = img[..., 3][~outside].astype(float)
    assert np.corrcoef(alpha, r.density[~outside])[0, 1] > 0.9
    assert payload["raster"]["bounds"] == r.bounds()
    assert [h["level"] for h in payload["hpd"]] == [0.5, 0.9]
