"""Receiver networks (YAML files) and the geodesy of their local km frame."""

from heimdall.network.geodesy import LocalFrame, geodesic_distance_km
from heimdall.network.network import Network, Receiver, list_networks, load_network

__all__ = [
    "LocalFrame",
    "Network",
    "Receiver",
    "geodesic_distance_km",
    "list_networks",
    "load_network",
]
