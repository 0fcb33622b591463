"""From a Gaussian in the model's local frame to what a user reads: lat/lon, ellipses, GeoJSON.

The 1σ ellipse follows docs/ARCHITECTURE.md §3b (semi-axes in m, major-axis azimuth in
degrees clockwise from north in [0, 180)); the 95 % ellipse is the 1σ one
scaled by sqrt(χ²₂(0.95)) = 2.448 (:data:`heimdall.models.ellipse.SCALE_95`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from heimdall.models.ellipse import SCALE_95, Ellipse, ellipse_of, ellipse_polygon_km
from heimdall.network.geodesy import LocalFrame, bearing_deg, geodesic_distance_km


@dataclass(frozen=True)
class Answer:
    """A located transmitter: position (degrees) and its 1σ and 95 % ellipses."""

    latitude: float
    longitude: float
    ellipse_1sigma: Ellipse
    ellipse_95: Ellipse
    geojson: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (the service's response fields)."""
        return {
            "latitude": self.latitude,
            "longitude": self.longitude,
            "ellipse_1sigma": asdict(self.ellipse_1sigma),
            "ellipse_95": asdict(self.ellipse_95),
            "geojson": self.geojson,
        }


def _polygon_feature(ring: list[list[float]], name: str, ellipse: Ellipse) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"name": name, **asdict(ellipse)},
    }


def answer_of(frame: LocalFrame, mean_km: ArrayLike, cov_km2: ArrayLike, n_vertices: int = 72) -> Answer:
    """Position, ellipses and a GeoJSON FeatureCollection (point + 1σ and 95 % polygons).

    Parameters
    ----------
    frame
        The model's local frame.
    mean_km
        (east, north) of the mean, km.
    cov_km2
        2×2 covariance, km².
    n_vertices
        Vertices of each ellipse polygon.

    """
    mean = np.asarray(mean_km, dtype=np.float64)
    cov = np.asarray(cov_km2, dtype=np.float64)
    one = ellipse_of(cov)
    e95 = one.scaled(SCALE_95)
    # the mean and both closed rings (n_vertices + 1 points each) in one projection call
    pts = np.concatenate(
        [mean[None], *(ellipse_polygon_km(mean, cov, k, n_vertices) for k in (1.0, SCALE_95))]
    )
    lat, lon = frame.to_latlon(pts[:, 0], pts[:, 1])
    lonlat = np.column_stack([lon, lat]).tolist()
    ring = n_vertices + 1
    point = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": lonlat[0]},
        "properties": {"name": "estimate"},
    }
    features = [
        point,
        _polygon_feature(lonlat[1 : 1 + ring], "ellipse_1sigma", one),
        _polygon_feature(lonlat[1 + ring :], "ellipse_95", e95),
    ]
    return Answer(float(lat[0]), float(lon[0]), one, e95, {"type": "FeatureCollection", "features": features})


def receiver_table(
    answer: Answer, ids: list[str], lat_deg: ArrayLike, lon_deg: ArrayLike
) -> list[dict[str, Any]]:
    """Geodesic distance (km) and initial bearing (degrees from north) from each receiver to the estimate."""
    lat = np.asarray(lat_deg, dtype=np.float64)
    lon = np.asarray(lon_deg, dtype=np.float64)
    dist = geodesic_distance_km(lat, lon, answer.latitude, answer.longitude)
    bearing = bearing_deg(lat, lon, answer.latitude, answer.longitude)
    return [
        {"receiver": rid, "distance_km": float(d), "bearing_deg": float(b)}
        for rid, d, b in zip(ids, dist, bearing, strict=True)
    ]
