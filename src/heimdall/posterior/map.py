"""One session's posterior of the transmitter position on a grid, and what a user reads from it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.network.geodesy import LocalFrame
from heimdall.posterior.density import (
    cell_probabilities,
    hpd_level,
    hpd_ranking,
    log_normaliser,
    ranked_threshold,
    refine_peak,
)
from heimdall.posterior.grid import SearchGrid, grid_moments, interpolate_on_grid
from heimdall.posterior.modes import top_modes
from heimdall.posterior.regions import multipolygon_geojson, polygons_area_km2, region_polygons_km

#: HPD levels a localisation answer reports.
HPD_LEVELS = (0.5, 0.9)


@dataclass(frozen=True)
class ModeSummary:
    """A posterior mode: position (east, north) km refined below the grid step, and its basin's mass."""

    east_km: float
    north_km: float
    mass: float


@dataclass(frozen=True)
class PosteriorMap:
    """A posterior density on a regular grid in a network's local frame.

    Attributes
    ----------
    grid
        The grid (cell centres, north-major order).
    log_density
        Log posterior density at the cell centres (G,), nats per km²: normalised so
        that Σ exp(log_density) · cell area = 1 (use :meth:`from_log_posterior`).
    frame
        Local frame of the grid (lat/lon conversion of regions and points).

    """

    grid: SearchGrid
    log_density: NDArray[np.float64]
    frame: LocalFrame

    @classmethod
    def from_log_posterior(cls, grid: SearchGrid, lp: NDArray[np.float64], frame: LocalFrame) -> PosteriorMap:
        """Normalise an unnormalised log posterior (G,) on ``grid`` to a density per km²."""
        lp = np.asarray(lp, dtype=np.float64)
        return cls(grid, lp - log_normaliser(lp[None], grid.cell_area_km2)[0], frame)

    @cached_property
    def image(self) -> NDArray[np.float64]:
        """Log density as an image (n_north, n_east), row 0 the southernmost."""
        return self.log_density.reshape(self.grid.n_north, self.grid.n_east)

    @cached_property
    def probabilities(self) -> NDArray[np.float64]:
        """Mass of every cell (G,), summing to 1."""
        return cell_probabilities(self.log_density[None])[0]

    def mean_cov(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Posterior mean (2,) km and covariance (2, 2) km² (plus the cell's own spread, step²/12)."""
        mean, cov = grid_moments(self.log_density[None], self.grid.points_km)
        quant = np.diag([self.grid.step_east_km**2, self.grid.step_north_km**2]) / 12.0
        return mean[0], cov[0] + quant

    def map_km(self) -> NDArray[np.float64]:
        """The mode (2,) km: best cell refined by a quadratic fit of the log density (:func:`refine_peak`)."""
        k = int(np.argmax(self.log_density))
        return self._refined(k // self.grid.n_east, k % self.grid.n_east)

    def _refined(self, row: int, col: int) -> NDArray[np.float64]:
        de, dn = refine_peak(self.image, row, col, self.grid.step_east_km, self.grid.step_north_km)
        return np.array([self.grid.east_km[col] + de, self.grid.north_km[row] + dn])

    def modes(self, k: int = 3) -> list[ModeSummary]:
        """The ``k`` most probable modes with the mass of their basins (:mod:`heimdall.posterior.modes`)."""
        prob = self.probabilities.reshape(self.image.shape)
        out = []
        for m in top_modes(self.image, prob, k):
            pos = self._refined(m.row, m.col)
            out.append(ModeSummary(float(pos[0]), float(pos[1]), min(float(m.mass), 1.0)))  # no 1 + 2e-16
        return out

    @cached_property
    def _hpd_ranking(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Log densities densest first (1, G) and their cumulative mass (1, G): every level's threshold."""
        return hpd_ranking(self.log_density[None])

    def hpd_threshold(self, level: float) -> float:
        """Log density (per km²) bounding the ``level`` HPD region."""
        return float(ranked_threshold(*self._hpd_ranking, level)[0])

    def hpd_area_km2(self, level: float) -> float:
        """Area of the ``level`` HPD region counted in whole cells, km²."""
        return float(np.sum(self.log_density >= self.hpd_threshold(level)) * self.grid.cell_area_km2)

    def hpd_polygons_km(self, level: float) -> list[list[NDArray[np.float64]]]:
        """The ``level`` HPD region as polygons (exterior ring, holes) in the local frame, km."""
        return region_polygons_km(self.grid, self.image, self.hpd_threshold(level))

    def hpd_polygon_area_km2(self, level: float) -> float:
        """Area of the ``level`` HPD region's polygons, km² (contours interpolated between cell centres)."""
        return polygons_area_km2(self.hpd_polygons_km(level))

    def hpd_geojson(self, level: float) -> dict[str, Any]:
        """The ``level`` HPD region as a GeoJSON MultiPolygon geometry ([lon, lat] degrees)."""
        return multipolygon_geojson(self.hpd_polygons_km(level), self.frame)

    def log_density_at(self, points_km: NDArray[np.float64]) -> NDArray[np.float64]:
        """Log density (per km²) at points (N, 2) km, bilinear between cell centres (clamped at the edge)."""
        pts = np.atleast_2d(np.asarray(points_km, dtype=np.float64))
        return interpolate_on_grid(
            self.grid, np.broadcast_to(self.log_density, (len(pts), self.log_density.size)), pts
        )

    def log_score(self, truth_km: NDArray[np.float64]) -> float:
        """Log density at the truth, nats per km² (Gneiting & Raftery 2007)."""
        return float(self.log_density_at(np.asarray(truth_km)[None])[0])

    def hpd_level_of(self, point_km: NDArray[np.float64]) -> float:
        """Mass of the cells denser than ``point_km``: it lies in the p-HPD region iff this is ≤ p."""
        lp_pt = self.log_density_at(np.asarray(point_km)[None])
        return float(hpd_level(self.log_density[None], lp_pt)[0])

    def answer(
        self,
        levels: tuple[float, ...] = HPD_LEVELS,
        n_modes: int = 3,
        moments: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None,
    ) -> dict[str, Any]:
        """JSON-ready answer in degrees: MAP, mean and covariance, top modes with their mass, HPD regions.

        ``hpd`` maps each level ("0.5", "0.9") to its area (km², whole cells) and its
        GeoJSON MultiPolygon ([lon, lat] degrees). ``moments``: a mean (2,) km and
        covariance (2, 2) km² in :attr:`frame` to report instead of the grid's own
        (:meth:`mean_cov`), e.g. those of a refined posterior.
        """
        mean, cov = self.mean_cov() if moments is None else moments
        modes = self.modes(n_modes)
        points = np.array([self.map_km(), mean, *([m.east_km, m.north_km] for m in modes)], dtype=np.float64)
        lat, lon = self.frame.to_latlon(points[:, 0], points[:, 1])  # one projection call for all points

        def where(i: int) -> dict[str, float]:
            east, north = float(points[i, 0]), float(points[i, 1])
            return {"latitude": float(lat[i]), "longitude": float(lon[i]), "east_km": east, "north_km": north}

        return {
            "map": where(0),
            "mean": where(1),
            "cov_km2": np.asarray(cov, dtype=np.float64).tolist(),
            "modes": [{**where(2 + k), "mass": m.mass} for k, m in enumerate(modes)],
            "hpd": {
                f"{p:g}": {"area_km2": self.hpd_area_km2(p), "geojson": self.hpd_geojson(p)} for p in levels
            },
            "frame": {"ref_lat_deg": self.frame.ref_lat_deg, "ref_lon_deg": self.frame.ref_lon_deg},
        }

    def summary(self, levels: tuple[float, ...] = HPD_LEVELS, n_modes: int = 3) -> dict[str, Any]:
        """JSON-ready answer: MAP, mean, covariance, modes, HPD regions (GeoJSON) and their areas."""
        mean, cov = self.mean_cov()
        mp = self.map_km()
        out: dict[str, Any] = {
            "map_km": mp.tolist(),
            "mean_km": mean.tolist(),
            "cov_km2": cov.tolist(),
            "modes": [vars(m) for m in self.modes(n_modes)],
        }
        for p in levels:
            key = f"hpd{round(100 * p)}"
            out[key] = self.hpd_geojson(p)
            out[f"{key}_area_km2"] = self.hpd_area_km2(p)
        return out
