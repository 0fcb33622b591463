"""The area a model was trained for, and how far outside it a receiver may be.

Transmitters of the training data were drawn in the rectangle spanned by the
network's receivers in the local frame, widened by the world's
``area_margin_km`` (``World.tx_area_km``). A model has seen receivers only at
the network's stations, so a receiver more than :data:`RECEIVER_TOLERANCE_KM`
outside that rectangle is refused: its answer would be an extrapolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heimdall.network import LocalFrame, Network

#: How far (km) outside the training rectangle a receiver may stand.
RECEIVER_TOLERANCE_KM = 50.0


@dataclass(frozen=True)
class TrainedArea:
    """A rectangle in the local frame (km) and the tolerance for receivers around it (km)."""

    east_min_km: float
    east_max_km: float
    north_min_km: float
    north_max_km: float
    tolerance_km: float = RECEIVER_TOLERANCE_KM

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> TrainedArea | None:
        """The area from a model's metadata (``network`` and ``world``), or None without a network."""
        if not metadata.get("network"):
            return None
        network = Network.model_validate(metadata["network"])
        frame = LocalFrame(float(metadata["ref_lat"]), float(metadata["ref_lon"]))
        lat = np.array([rx.lat for rx in network.receivers])
        lon = np.array([rx.lon for rx in network.receivers])
        east, north = frame.to_local_km(lat, lon)
        margin = float((metadata.get("world") or {}).get("area_margin_km", 0.0))
        return cls(
            float(east.min() - margin),
            float(east.max() + margin),
            float(north.min() - margin),
            float(north.max() + margin),
        )

    def outside_km(self, east_km: ArrayLike, north_km: ArrayLike) -> NDArray[np.float64]:
        """Distance (km) of points outside the rectangle; 0 inside."""
        east = np.asarray(east_km, dtype=np.float64)
        north = np.asarray(north_km, dtype=np.float64)
        de = np.maximum(np.maximum(self.east_min_km - east, east - self.east_max_km), 0.0)
        dn = np.maximum(np.maximum(self.north_min_km - north, north - self.north_max_km), 0.0)
        return np.hypot(de, dn)

    def latlon_bounds(self, frame: LocalFrame) -> dict[str, float]:
        """The rectangle's corners as a lat/lon bounding box (degrees)."""
        east = np.array([self.east_min_km, self.east_max_km, self.east_min_km, self.east_max_km])
        north = np.array([self.north_min_km, self.north_min_km, self.north_max_km, self.north_max_km])
        lat, lon = frame.to_latlon(east, north)
        return {
            "lat_min": float(lat.min()),
            "lat_max": float(lat.max()),
            "lon_min": float(lon.min()),
            "lon_max": float(lon.max()),
        }
