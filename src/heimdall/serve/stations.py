"""Which receivers of a request a model has a field for: positions matched to its network's stations.

Today's model (a Gaussian network) was trained on the fixed stations of one
network (the ``network`` of its metadata): every training session placed
receivers exactly there, so the model has learnt each station's radio field
(terrain shadowing, antenna, gain offset) and nothing in between. A receiver
given by ``lat``/``lon`` is taken as a station when it lies within
:data:`STATION_TOLERANCE_KM` of one; otherwise the model has no field for it
and the service refuses it (422 naming the receiver and the nearest station).

Why 1 km: the terrain shadowing of the reference world is a Gaussian field of
σ = 8 dB with exponential correlation over d₀ = 10 km (Gudmundson, Electron.
Lett. 27(23), 1991; ``static_shadowing_*`` in the reference world). Two points
d apart differ by σ·sqrt(2(1 − exp(−d/d₀))), 3.5 dB rms at d = 1 km: less than
the per-capture shadowing and receiver gain offsets the model is trained to
absorb (sqrt(2² + 4²) = 4.5 dB rms). It also covers station positions rounded
to 0.01° in receiver directories (≤ 0.56 km in latitude and 0.40 km in
longitude at 45° N, 0.68 km together). The closest two stations of nw-italy
(Aquila di Giaveno, Coazze) are 5.1 km apart, so no position matches two.

A model trained on a network family (``network_family`` in its metadata) saw
receivers drawn anywhere in the family's region, a new network for every batch: it
learnt no station's field, so no position is refused as unknown; the area check
(``out_of_area``) still says when an answer falls outside what it covers.

A predictor that can answer for a receiver it has no map for (a posterior
model with per-receiver radio maps, using that receiver's prior field) says so
with the attribute ``accepts_unmapped_receivers = True``; the service then
accepts such receivers and lists them in the answer's ``unmapped_receivers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from heimdall.network import Network
from heimdall.network.geodesy import geodesic_distance_km

#: Largest distance (km) between a receiver's position and a station for the two to be the same station.
STATION_TOLERANCE_KM = 1.0


def accepts_unmapped(predictor: Any) -> bool:
    """Whether ``predictor`` answers for receivers it has no field for (``accepts_unmapped_receivers``).

    Predictors without the attribute (today's exported Gaussian networks) do not.
    """
    return bool(getattr(predictor, "accepts_unmapped_receivers", False))


def trained_on_network_family(predictor: Any) -> bool:
    """Whether the predictor's model was trained on networks drawn from a family (any positions)."""
    return bool(getattr(predictor, "metadata", {}).get("network_family"))


@dataclass(frozen=True)
class NearestStation:
    """The station of a network nearest a position, and the geodesic distance to it (km)."""

    station_id: str
    distance_km: float

    @property
    def matches(self) -> bool:
        """True when the position is this station (within :data:`STATION_TOLERANCE_KM`)."""
        return self.distance_km <= STATION_TOLERANCE_KM


def nearest_station(network: Network, lat_deg: float, lon_deg: float) -> NearestStation:
    """The station of ``network`` nearest (``lat_deg``, ``lon_deg``) on the WGS84 ellipsoid."""
    lat = np.array([rx.lat for rx in network.receivers])
    lon = np.array([rx.lon for rx in network.receivers])
    dist = geodesic_distance_km(lat, lon, lat_deg, lon_deg)
    k = int(np.argmin(dist))
    return NearestStation(network.receivers[k].id, float(dist[k]))
