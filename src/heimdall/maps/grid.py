"""The regular grid a radio map lives on (local km frame), with bilinear look-up."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class MapGrid:
    """Cell centres ``east0 + i·step`` (i < n_east), ``north0 + j·step`` (j < n_north), km."""

    east0_km: float
    north0_km: float
    step_km: float
    n_east: int
    n_north: int

    @staticmethod
    def covering(rx_km: NDArray[np.float64], margin_km: float, step_km: float) -> MapGrid:
        """A grid over the receivers' bounding box plus ``margin_km`` (km), spacing ``step_km``."""
        e0, n0 = rx_km.min(axis=0) - margin_km
        e1, n1 = rx_km.max(axis=0) + margin_km
        n_e = max(1, int(np.ceil((e1 - e0) / step_km)))
        n_n = max(1, int(np.ceil((n1 - n0) / step_km)))
        return MapGrid(float(e0 + 0.5 * step_km), float(n0 + 0.5 * step_km), float(step_km), n_e, n_n)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_north, n_east)."""
        return (self.n_north, self.n_east)

    @property
    def area_km(self) -> tuple[float, float, float, float]:
        """(east_min, east_max, north_min, north_max) of the cells' outer edges, km."""
        h = 0.5 * self.step_km
        return (
            self.east0_km - h,
            self.east0_km + (self.n_east - 0.5) * self.step_km,
            self.north0_km - h,
            self.north0_km + (self.n_north - 0.5) * self.step_km,
        )

    @property
    def points_km(self) -> NDArray[np.float64]:
        """Cell centres (n_north · n_east, 2), row-major (north slowest), km."""
        ee, nn = np.meshgrid(
            self.east0_km + self.step_km * np.arange(self.n_east),
            self.north0_km + self.step_km * np.arange(self.n_north),
        )
        return np.stack([ee.ravel(), nn.ravel()], axis=-1)

    def bilinear(self, values: NDArray, east_km: NDArray, north_km: NDArray) -> NDArray[np.float64]:
        """Interpolate ``values`` (..., n_north, n_east) at points S: (..., *S); edge value outside."""
        x = np.clip((np.asarray(east_km) - self.east0_km) / self.step_km, 0.0, max(self.n_east - 1.000001, 0))
        y = np.clip(
            (np.asarray(north_km) - self.north0_km) / self.step_km, 0.0, max(self.n_north - 1.000001, 0)
        )
        i0 = np.floor(x).astype(np.int64)
        j0 = np.floor(y).astype(np.int64)
        i1 = np.minimum(i0 + 1, self.n_east - 1)
        j1 = np.minimum(j0 + 1, self.n_north - 1)
        wx, wy = x - i0, y - j0
        v = np.asarray(values, dtype=np.float64)
        return (v[..., j0, i0] * (1 - wx) + v[..., j0, i1] * wx) * (1 - wy) + (
            v[..., j1, i0] * (1 - wx) + v[..., j1, i1] * wx
        ) * wy

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the artifact metadata."""
        return asdict(self)
