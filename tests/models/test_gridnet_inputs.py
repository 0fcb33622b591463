"""The local frame a session without a map is located in: its centre and the receivers' spread."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.errors import HeimdallError
from heimdall.models.gridnet_inputs import MAX_RECEIVER_RADIUS_KM, session_frame
from heimdall.network.geodesy import geodesic_distance_km


@pytest.mark.parametrize(
    ("lat", "lon", "centre_lon"),
    [
        ([45.0, 45.2, 44.9], [7.5, 7.9, 8.1], 7.8333),  # the plain mean away from the antimeridian
        ([10.0, 10.1, 10.2, 10.3], [179.9, -179.9, 179.8, -179.8], 180.0),  # either side of it
    ],
)
def test_frame_is_centred_on_the_receivers(lat: list[float], lon: list[float], centre_lon: float) -> None:
    lat_a, lon_a = np.array(lat), np.array(lon)
    frame = session_frame(lat_a, lon_a)
    # the circular mean: the same meridian modulo 360 degrees
    assert np.cos(np.radians(frame.ref_lon_deg - centre_lon)) == pytest.approx(1.0, abs=1e-8)
    east, north = frame.to_local_km(lat_a, lon_a)
    # in a tangent plane at the centre, distances near it are the geodesic ones (orthographic: within 0.1 %)
    geo = geodesic_distance_km(frame.ref_lat_deg, frame.ref_lon_deg, lat_a, lon_a)
    np.testing.assert_allclose(np.hypot(east, north), geo, rtol=1e-3)
    assert geo.max() < 100.0


def test_receivers_spread_over_a_continent_are_refused() -> None:
    lat = np.array([-20.0, 0.0, 20.0])
    lon = np.array([-20.0, 0.0, 20.0])
    with pytest.raises(HeimdallError, match=f"at most {MAX_RECEIVER_RADIUS_KM:.0f} km"):
        session_frame(lat, lon)
    with pytest.raises(HeimdallError, match="spread too far"):  # the far side of the Earth
        session_frame(np.array([0.0, 0.0, 1.0]), np.array([0.0, 180.0, 90.0]))


def test_a_session_without_positions_is_refused() -> None:
    with pytest.raises(HeimdallError, match="no receiver with a finite position"):
        session_frame(np.full(3, np.nan), np.full(3, np.nan))


@pytest.mark.parametrize(("lat", "lon"), [(145.0, 8.0), (45.0, 700.0)])
def test_a_receiver_off_the_globe_is_refused(lat: float, lon: float) -> None:
    with pytest.raises(HeimdallError, match=r"receiver slot 1 .* not a position"):
        session_frame(np.array([45.0, lat, 45.1]), np.array([7.5, lon, 7.6]))
