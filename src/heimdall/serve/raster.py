"""A posterior density on a map raster: grid, PNG heat layer, HPD contours and modes.

The raster is laid out for a web map's image overlay (Leaflet ``L.imageOverlay``):
columns are equally spaced in longitude and rows equally spaced in Web Mercator
*y* between the south and north bounds (EPSG:3857, y = ln tan(π/4 + φ/2)), so
stretching the image over its lat/lon bounds puts every pixel where it belongs.
Row 0 is the northernmost. The density is evaluated at pixel centres in the
model's local frame (per km²) and each cell's area (km²) is the area of its
four corners in the same frame, so ``sum(density * area)`` is the probability
the raster holds.

Highest-posterior-density (HPD) regions follow Hyndman (1996), "Computing and
graphing highest density regions", Am. Stat. 50(2): the region of mass p is
{x : f(x) ≥ f_p}, with f_p the largest density threshold whose region holds at
least p; on a grid, cells sorted by density are accumulated until their mass
reaches p (:func:`heimdall.posterior.density.hpd_threshold`, cells weighted by
their area). Contours of f = f_p are traced with marching squares (contourpy, as
matplotlib does). Modes are the local maxima with the mass of their basins of
attraction (:func:`heimdall.posterior.modes.top_modes`), as for every posterior map.

For a Gaussian N(μ, Σ) the HPD region of mass p is the ellipse of squared
Mahalanobis radius -2 ln(1 - p) (χ² with 2 degrees of freedom), which the tests
use as the closed form.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.network.geodesy import LocalFrame
from heimdall.posterior.density import hpd_threshold as density_threshold
from heimdall.posterior.modes import top_modes

#: HPD levels drawn as contours on the map.
HPD_LEVELS = (0.5, 0.9)
#: Pixels along the longer side of a raster.
DEFAULT_SIZE = 192
#: The heat layer is transparent outside this HPD region (the rest holds ≤ 1 % of the mass).
SHOWN_LEVEL = 0.99

LogDensity = Callable[[NDArray[np.float64], NDArray[np.float64]], NDArray[np.float64]]


def mercator_y(lat_deg: ArrayLike) -> NDArray[np.float64]:
    """Web Mercator ordinate on the unit sphere, ln tan(π/4 + φ/2) (dimensionless)."""
    phi = np.radians(np.asarray(lat_deg, dtype=np.float64))
    return np.log(np.tan(np.pi / 4.0 + phi / 2.0))


def mercator_lat(y: ArrayLike) -> NDArray[np.float64]:
    """Latitude (degrees) of a Web Mercator ordinate: 2 atan(eʸ) − π/2."""
    return np.degrees(2.0 * np.arctan(np.exp(np.asarray(y, dtype=np.float64))) - np.pi / 2.0)


@dataclass(frozen=True)
class Raster:
    """A density on a lat/lon raster (see module docstring for the layout).

    Attributes
    ----------
    south, west, north, east
        Bounds of the image, degrees.
    lat_deg, lon_deg
        Pixel centres (H, W), degrees.
    density
        Probability density at the pixel centres (H, W), per km².
    cell_area_km2
        Area of each cell (H, W) in the local frame, km².

    """

    south: float
    west: float
    north: float
    east: float
    lat_deg: NDArray[np.float64]
    lon_deg: NDArray[np.float64]
    density: NDArray[np.float64]
    cell_area_km2: NDArray[np.float64]

    @property
    def mass(self) -> NDArray[np.float64]:
        """Probability of each cell (H, W): density × area."""
        return self.density * self.cell_area_km2

    def bounds(self) -> dict[str, float]:
        """The image bounds, degrees."""
        return {"south": self.south, "west": self.west, "north": self.north, "east": self.east}


def _pixel_edges(south: float, west: float, north: float, east: float, h: int, w: int) -> tuple:
    y_edges = np.linspace(mercator_y(north), mercator_y(south), h + 1)  # row 0 north
    lon_edges = np.linspace(west, east, w + 1)
    y_mid = 0.5 * (y_edges[:-1] + y_edges[1:])
    lon_mid = 0.5 * (lon_edges[:-1] + lon_edges[1:])
    return mercator_lat(y_edges), lon_edges, mercator_lat(y_mid), lon_mid


def raster_of(
    frame: LocalFrame,
    log_density: LogDensity,
    bounds: tuple[float, float, float, float],
    size: int = DEFAULT_SIZE,
) -> Raster:
    """Evaluate ``log_density(east_km, north_km)`` (log of a density per km²) on a map raster.

    Parameters
    ----------
    frame
        The model's local frame (east, north in km).
    log_density
        Vectorised natural log of the density, per km².
    bounds
        (south, west, north, east), degrees.
    size
        Pixels along the longer side (in km) of the box.

    """
    south, west, north, east = (float(b) for b in bounds)
    mid_lat, mid_lon = 0.5 * (south + north), 0.5 * (west + east)
    e_w = frame.to_local_km(np.array([mid_lat, mid_lat]), np.array([west, east]))[0]
    n_s = frame.to_local_km(np.array([south, north]), np.array([mid_lon, mid_lon]))[1]
    width_km, height_km = abs(e_w[1] - e_w[0]), abs(n_s[1] - n_s[0])
    scale = size / max(width_km, height_km, 1e-9)
    w = max(8, round(width_km * scale))
    h = max(8, round(height_km * scale))
    lat_e, lon_e, lat_c, lon_c = _pixel_edges(south, west, north, east, h, w)
    lat, lon = np.meshgrid(lat_c, lon_c, indexing="ij")
    e, n = frame.to_local_km(lat, lon)
    density = np.exp(log_density(e, n))
    ce, cn = frame.to_local_km(*np.meshgrid(lat_e, lon_e, indexing="ij"))
    # shoelace area of each quad (corners: top-left, top-right, bottom-right, bottom-left)
    quad_e = [ce[:-1, :-1], ce[:-1, 1:], ce[1:, 1:], ce[1:, :-1]]
    quad_n = [cn[:-1, :-1], cn[:-1, 1:], cn[1:, 1:], cn[1:, :-1]]
    area = 0.5 * np.abs(
        sum(quad_e[k] * quad_n[(k + 1) % 4] - quad_e[(k + 1) % 4] * quad_n[k] for k in range(4))
    )
    return Raster(south, west, north, east, lat, lon, density, area)


def gaussian_bounds(
    frame: LocalFrame, mean_km: ArrayLike, cov_km2: ArrayLike, n_sigma: float = 4.0, min_half_km: float = 5.0
) -> tuple[float, float, float, float]:
    """(south, west, north, east), degrees, of the square of half-side n_sigma·√λ_max around the mean."""
    mean = np.asarray(mean_km, dtype=np.float64)
    half = max(
        n_sigma * float(np.sqrt(np.linalg.eigvalsh(np.asarray(cov_km2, dtype=np.float64))[-1])), min_half_km
    )
    east = mean[0] + np.array([-half, half, half, -half, 0.0, 0.0, -half, half])
    north = mean[1] + np.array([-half, -half, half, half, -half, half, 0.0, 0.0])
    lat, lon = frame.to_latlon(east, north)
    return float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max())


def gaussian_log_density(mean_km: ArrayLike, cov_km2: ArrayLike) -> LogDensity:
    """The log density ln N(x; μ, Σ) per km²: −½ (x−μ)ᵀ Σ⁻¹ (x−μ) − ln(2π √det Σ)."""
    mean = np.asarray(mean_km, dtype=np.float64)
    cov = np.asarray(cov_km2, dtype=np.float64)
    inv = np.linalg.inv(cov)
    log_norm = np.log(2.0 * np.pi * np.sqrt(np.linalg.det(cov)))

    def log_density(east: NDArray[np.float64], north: NDArray[np.float64]) -> NDArray[np.float64]:
        de, dn = east - mean[0], north - mean[1]
        m2 = inv[0, 0] * de * de + 2.0 * inv[0, 1] * de * dn + inv[1, 1] * dn * dn
        return -0.5 * m2 - log_norm

    return log_density


def gaussian_raster(
    frame: LocalFrame, mean_km: ArrayLike, cov_km2: ArrayLike, size: int = DEFAULT_SIZE
) -> Raster:
    """The Gaussian posterior N(mean, cov) (local km, km²) on a raster covering ±4σ of the major axis."""
    return raster_of(
        frame, gaussian_log_density(mean_km, cov_km2), gaussian_bounds(frame, mean_km, cov_km2), size
    )


def hpd_threshold(raster: Raster, level: float) -> float:
    """Density f_p (per km²) whose superlevel set holds ``level`` of the raster's mass (Hyndman 1996)."""
    with np.errstate(divide="ignore"):
        log_d = np.log(raster.density.ravel())[None]
        log_a = np.log(raster.cell_area_km2.ravel())
    return float(np.exp(density_threshold(log_d, level, log_a)[0]))


def hpd_contours(raster: Raster, level: float) -> list[list[list[float]]]:
    """Closed lines [[lat, lon], …] (degrees) where the density equals the ``level`` HPD threshold."""
    import contourpy

    thr = hpd_threshold(raster, level)
    # pad with zero density so that regions touching the edge close
    z = np.pad(raster.density, 1)
    lat = np.pad(raster.lat_deg, 1, mode="edge")
    lon = np.pad(raster.lon_deg, 1, mode="edge")
    lat[0, :], lat[-1, :] = raster.north, raster.south
    lon[:, 0], lon[:, -1] = raster.west, raster.east
    gen = contourpy.contour_generator(lon, lat, z, line_type=contourpy.LineType.Separate)
    return [[[float(y), float(x)] for x, y in line] for line in gen.lines(thr) if len(line) >= 4]


def modes(raster: Raster, k: int = 3) -> list[dict[str, float]]:
    """The ``k`` most probable modes of the raster, most probable first.

    Each: ``latitude``, ``longitude`` (degrees, the mode's pixel centre),
    ``density_per_km2`` and ``probability``: the mass of the mode's basin of
    attraction (the cells that climb to it), as for every posterior map.
    """
    with np.errstate(divide="ignore"):
        log_d = np.log(raster.density)
    mass = raster.mass / raster.mass.sum()
    return [
        {
            "latitude": float(raster.lat_deg[m.row, m.col]),
            "longitude": float(raster.lon_deg[m.row, m.col]),
            "density_per_km2": float(raster.density[m.row, m.col]),
            "probability": m.mass,
        }
        for m in top_modes(log_d, mass, k)
    ]


def heat_rgba(raster: Raster) -> NDArray[np.uint8]:
    """RGBA pixels (H, W, 4): colour and opacity grow with density; transparent outside the 99 % HPD."""
    from matplotlib import colormaps

    rel = raster.density / max(float(raster.density.max()), 1e-300)
    rgba = colormaps["plasma"](rel)
    alpha = 0.2 + 0.8 * np.sqrt(rel)
    alpha[raster.density < hpd_threshold(raster, SHOWN_LEVEL)] = 0.0
    rgba[..., 3] = alpha
    return np.round(rgba * 255.0).astype(np.uint8)


def png_bytes(rgba: NDArray[np.uint8]) -> bytes:
    """PNG file of RGBA pixels (H, W, 4)."""
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, rgba, format="png")
    return buf.getvalue()


def raster_image(raster: Raster) -> dict[str, Any]:
    """JSON-ready heat layer of a raster: PNG (base64), lat/lon bounds, size, peak density, mass."""
    png = png_bytes(heat_rgba(raster))
    h, w = raster.density.shape
    return {
        "bounds": raster.bounds(),
        "width": w,
        "height": h,
        "rows": "equally spaced in Web Mercator y, row 0 north",
        "png_base64": base64.b64encode(png).decode("ascii"),
        "density_max_per_km2": float(raster.density.max()),
        "mass_in_raster": float(raster.mass.sum()),
    }


def raster_payload(raster: Raster) -> dict[str, Any]:
    """JSON-ready heat layer, HPD contours and modes of a raster (the service's ``posterior`` field)."""
    return {
        "raster": raster_image(raster),
        "hpd": [
            {"level": p, "density_per_km2": hpd_threshold(raster, p), "contours": hpd_contours(raster, p)}
            for p in HPD_LEVELS
        ],
        "modes": modes(raster),
    }
