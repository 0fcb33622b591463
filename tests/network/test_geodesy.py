"""Geodesy: tangent-plane frame and geodesic distance against independent references."""

from __future__ import annotations

import numpy as np

from heimdall.network.geodesy import LocalFrame, bearing_deg, geodesic_distance_km


def test_round_trip_within_1e9_degrees() -> None:
    rng = np.random.default_rng(0)
    frame = LocalFrame(44.97, 8.16)
    lat = rng.uniform(43.5, 46.5, size=1000)
    lon = rng.uniform(6.5, 10.0, size=1000)
    east, north = frame.to_local_km(lat, lon)
    lat2, lon2 = frame.to_latlon(east, north)
    assert np.max(np.abs(lat2 - lat)) < 1e-9
    assert np.max(np.abs(lon2 - lon)) < 1e-9


def test_meridian_degree_length() -> None:
    """WGS84 meridian arc from 44.5 to 45.5 deg N is 111.141 km (standard tables: M(45) ~ 111.13 km/deg)."""
    d = geodesic_distance_km(44.5, 8.0, 45.5, 8.0)
    assert abs(float(d) - 111.141) < 0.01


def test_tangent_plane_is_local_enu() -> None:
    """East/north of the frame equal the ENU projection built from ECEF by hand (WGS84 formulas)."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)

    def ecef(lat, lon):
        lat, lon = np.radians(lat), np.radians(lon)
        n = a / np.sqrt(1 - e2 * np.sin(lat) ** 2)
        return np.array(
            [n * np.cos(lat) * np.cos(lon), n * np.cos(lat) * np.sin(lon), n * (1 - e2) * np.sin(lat)]
        )

    lat0, lon0 = 44.97, 8.16
    frame = LocalFrame(lat0, lon0)
    for lat, lon in [(45.478, 9.123), (44.395, 7.0), (45.9, 8.16)]:
        d = ecef(lat, lon) - ecef(lat0, lon0)
        p, lam = np.radians(lat0), np.radians(lon0)
        east = -np.sin(lam) * d[0] + np.cos(lam) * d[1]
        north = -np.sin(p) * np.cos(lam) * d[0] - np.sin(p) * np.sin(lam) * d[1] + np.cos(p) * d[2]
        e, n = frame.to_local_km(lat, lon)
        assert abs(float(e) - east / 1000) < 1e-6 and abs(float(n) - north / 1000) < 1e-6


def test_planar_distance_close_to_geodesic() -> None:
    frame = LocalFrame(44.97, 8.16)
    e1, n1 = frame.to_local_km(45.478, 9.123)
    e2, n2 = frame.to_local_km(44.395, 7.238)
    planar = np.hypot(e1 - e2, n1 - n2)
    geo = geodesic_distance_km(45.478, 9.123, 44.395, 7.238)
    assert abs(planar - geo) / geo < 1e-3


def test_bearing_cardinal() -> None:
    assert abs(float(bearing_deg(45.0, 8.0, 46.0, 8.0))) < 1e-6
    assert abs(float(bearing_deg(45.0, 8.0, 45.0, 9.0)) - 90.0) < 0.5
