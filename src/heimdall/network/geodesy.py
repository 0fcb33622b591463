"""Geodesy: WGS84 lat/lon <-> local east/north (km) on the tangent plane.

The local frame is PROJ's ellipsoidal orthographic projection centred on the
network's reference point: a point on the ellipsoid is projected along the
tangent plane's normal, so (east, north) equal the E and N components of the
local ENU vector (the tangent-plane convention of docs/ARCHITECTURE.md §3b), and the
inverse is exact. Distances inside Heimdall are planar distances in this
frame; over the ~200 km of a network they differ from geodesics by < 0.1 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pyproj import Geod, Transformer

_WGS84 = Geod(ellps="WGS84")


@dataclass(frozen=True)
class LocalFrame:
    """Tangent-plane frame at a reference point.

    Parameters
    ----------
    ref_lat_deg, ref_lon_deg
        Reference point (WGS84 latitude / longitude, degrees).

    """

    ref_lat_deg: float
    ref_lon_deg: float

    @cached_property
    def _forward(self) -> Transformer:
        return _orthographic(self.ref_lat_deg, self.ref_lon_deg)

    def to_local_km(
        self, lat_deg: ArrayLike, lon_deg: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Convert lat/lon (degrees) to (east_km, north_km); any shape, vectorised."""
        lat = np.asarray(lat_deg, dtype=np.float64)
        lon = np.asarray(lon_deg, dtype=np.float64)
        east, north = self._forward.transform(lon, lat)
        return np.asarray(east, dtype=np.float64), np.asarray(north, dtype=np.float64)

    def to_latlon(
        self, east_km: ArrayLike, north_km: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Convert (east_km, north_km) back to (lat_deg, lon_deg); exact inverse."""
        east = np.asarray(east_km, dtype=np.float64)
        north = np.asarray(north_km, dtype=np.float64)
        lon, lat = self._forward.transform(east, north, direction="INVERSE")
        return np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)


@lru_cache(maxsize=256)
def _orthographic(ref_lat_deg: float, ref_lon_deg: float) -> Transformer:
    """The lat/lon → local km transformer at a reference point (built once per point: ~15 ms each)."""
    proj = f"+proj=ortho +lat_0={ref_lat_deg!r} +lon_0={ref_lon_deg!r} +ellps=WGS84 +units=km"
    return Transformer.from_crs("EPSG:4326", proj, always_xy=True)


def geodesic_distance_km(
    lat1_deg: ArrayLike, lon1_deg: ArrayLike, lat2_deg: ArrayLike, lon2_deg: ArrayLike
) -> NDArray[np.float64]:
    """Geodesic distance on the WGS84 ellipsoid in km (Karney's algorithm via pyproj)."""
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (lat1_deg, lon1_deg, lat2_deg, lon2_deg))
    )
    _, _, dist_m = _WGS84.inv(lon1, lat1, lon2, lat2)
    return np.asarray(dist_m, dtype=np.float64) / 1000.0


def bearing_deg(
    lat1_deg: ArrayLike, lon1_deg: ArrayLike, lat2_deg: ArrayLike, lon2_deg: ArrayLike
) -> NDArray[np.float64]:
    """Initial geodesic bearing from point 1 to point 2, degrees clockwise from north in [0, 360)."""
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(
        *(np.asarray(a, dtype=np.float64) for a in (lat1_deg, lon1_deg, lat2_deg, lon2_deg))
    )
    az, _, _ = _WGS84.inv(lon1, lat1, lon2, lat2)
    return np.mod(np.asarray(az, dtype=np.float64), 360.0)
