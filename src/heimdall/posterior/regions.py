"""Highest-posterior-density regions as polygons: filled contours of the grid's log density.

The region {x : lp(x) ≥ t} is traced by marching squares on the cell centres
(contourpy's filled contours, linear interpolation along cell edges), so
several islands and holes come out as separate polygons with interior rings.
The grid is padded by one ring of cells on the area's edge, below the
threshold, so every region closes there. Polygons are converted to
longitude/latitude through the network's local frame (GeoJSON, RFC 7946:
[lon, lat] positions, exterior rings counter-clockwise, holes clockwise).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
from contourpy import FillType, contour_generator
from numpy.typing import NDArray

from heimdall.network.geodesy import LocalFrame
from heimdall.posterior.grid import SearchGrid

Polygon = list[NDArray[np.float64]]  # exterior ring then holes, each (N, 2) km, closed


def region_polygons_km(grid: SearchGrid, values: NDArray[np.float64], threshold: float) -> list[Polygon]:
    """Polygons (east, north km) of {lp ≥ threshold} for a log density (n_north, n_east) on ``grid``."""
    e0, e1, n0, n1 = grid.area_km
    finite = np.isfinite(values)
    low = threshold - 1.0 - (np.nanmax(np.abs(values[finite])) if finite.any() else 0.0)
    z = np.full((values.shape[0] + 2, values.shape[1] + 2), low)
    z[1:-1, 1:-1] = np.where(finite, values, low)
    x = np.concatenate([[e0], grid.east_km, [e1]])
    y = np.concatenate([[n0], grid.north_km, [n1]])
    top = float(np.max(z)) + 1.0
    if top - 1.0 < threshold:
        return []
    gen = contour_generator(x, y, z, fill_type=FillType.OuterOffset)
    points_list, offsets_list = gen.filled(threshold, top)
    out: list[Polygon] = []
    for pts, offs in zip(points_list, offsets_list, strict=True):
        rings = [np.asarray(pts[offs[i] : offs[i + 1]], dtype=np.float64) for i in range(len(offs) - 1)]
        out.append([_orient(r, ccw=(i == 0)) for i, r in enumerate(rings)])
    return out


def _signed_area(ring: NDArray[np.float64]) -> float:
    """Shoelace signed area of a closed ring, positive counter-clockwise (km²)."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _orient(ring: NDArray[np.float64], ccw: bool) -> NDArray[np.float64]:
    if not np.allclose(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    return ring if (_signed_area(ring) > 0) == ccw else ring[::-1]


def polygons_area_km2(polygons: list[Polygon]) -> float:
    """Planar area (km²) of polygons with holes in the local frame."""
    return float(sum(abs(_signed_area(p[0])) - sum(abs(_signed_area(h)) for h in p[1:]) for p in polygons))


def multipolygon_geojson(polygons: list[Polygon], frame: LocalFrame) -> dict[str, Any]:
    """A GeoJSON MultiPolygon geometry ([lon, lat] degrees) of local-frame polygons."""
    rings = [ring for poly in polygons for ring in poly]
    if not rings:
        return {"type": "MultiPolygon", "coordinates": []}
    pts = np.concatenate(rings)
    lat, lon = frame.to_latlon(pts[:, 0], pts[:, 1])  # one projection call for every vertex
    lonlat = np.column_stack([lon, lat]).tolist()
    bounds = np.cumsum([0, *(len(r) for r in rings)]).tolist()
    flat = [lonlat[a:b] for a, b in pairwise(bounds)]
    coords, k = [], 0
    for poly in polygons:  # rings back into their polygons
        coords.append(flat[k : k + len(poly)])
        k += len(poly)
    return {"type": "MultiPolygon", "coordinates": coords}
