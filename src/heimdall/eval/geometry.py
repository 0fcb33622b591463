"""Session geometry in the local km frame and the hull strata (grid: :mod:`heimdall.posterior.grid`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as PolygonPath
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError

from heimdall.data.session import SessionBatch
from heimdall.network.geodesy import LocalFrame


@dataclass(frozen=True)
class Geometry:
    """Receiver and transmitter positions of B sessions in one local frame (km).

    Attributes
    ----------
    rx_km
        Receiver (east, north), (B, R, 2) km.
    rx_height_m
        Receiver antenna heights, (B, R) m.
    online
        Receiver slot has data, (B, R).
    tx_km
        True transmitter (east, north), (B, 2) km; NaN when unlabelled.

    """

    rx_km: NDArray[np.float64]
    rx_height_m: NDArray[np.float64]
    online: NDArray[np.bool_]
    tx_km: NDArray[np.float64]


def session_geometry(batch: SessionBatch, frame: LocalFrame) -> Geometry:
    """Convert a batch's lat/lon to the local frame."""
    east, north = frame.to_local_km(batch.rx_lat_deg, batch.rx_lon_deg)
    tx_e, tx_n = frame.to_local_km(batch.tx_lat_deg, batch.tx_lon_deg)
    return Geometry(
        rx_km=np.stack([east, north], axis=-1),
        rx_height_m=np.asarray(batch.rx_height_m, dtype=np.float64),
        online=batch.online,
        tx_km=np.stack([tx_e, tx_n], axis=-1),
    )


def default_area_km(rx_km: NDArray[np.float64], margin_km: float = 30.0) -> tuple[float, float, float, float]:
    """Receivers' bounding box plus a margin (km): the search area when no world is known."""
    pts = rx_km.reshape(-1, 2)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    return (
        float(pts[:, 0].min() - margin_km),
        float(pts[:, 0].max() + margin_km),
        float(pts[:, 1].min() - margin_km),
        float(pts[:, 1].max() + margin_km),
    )


def inside_hull(points_km: NDArray[np.float64], rx_km: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Whether each point (B, 2) lies inside the convex hull of its session's online receivers.

    ``rx_km`` is (B, R, 2) with NaN on offline slots; fewer than 3 non-collinear
    receivers have no interior (False).
    """
    out = np.zeros(points_km.shape[0], dtype=bool)
    for b in range(points_km.shape[0]):
        pts = rx_km[b][np.all(np.isfinite(rx_km[b]), axis=1)]
        if len(pts) < 3 or not np.all(np.isfinite(points_km[b])):
            continue
        try:
            hull = ConvexHull(pts)
        except QhullError:
            continue
        out[b] = PolygonPath(pts[hull.vertices]).contains_point(points_km[b])
    return out
