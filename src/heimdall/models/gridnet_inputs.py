"""What GridPosteriorNet reads of a session: measured power per receiver slot, receiver geometry, band.

Two layouts:

- **network order** (a model with a radio map): slot i is the map network's receiver i,
  matched by station id; positions in the network's local frame;
- **session slots** (no map): the session's own receiver slots, padded to a fixed
  count, positions in a local frame centred on the session's receivers.

Only what a real recording has is read (:func:`heimdall.maps.observations.slot_observations`):
IQ-measured band power and noise floor (or the labeller's burst measurement), the carrier
frequency, the receivers' positions, heights and nominal full scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from heimdall.data.session import SessionBatch
from heimdall.errors import HeimdallError
from heimdall.maps.observations import UNUSED, LabelledObservations, band_index, slot_observations
from heimdall.network import LocalFrame, Network
from heimdall.network.geodesy import geodesic_distance_km
from heimdall.posterior.measure import DETECTION_SNR_DB

#: Input names of the exported graph, in the order of :meth:`GridInputs.arrays`, then ``points_km``.
INPUT_NAMES = ("y_db", "state", "cens_db", "rx_km", "rx_height_m", "band", "points_km")
#: Margin around the receivers' bounding box where a transmitter may be (km): the simulator's area.
AREA_MARGIN_KM = 30.0


@dataclass(frozen=True)
class GridInputs:
    """B sessions as GridPosteriorNet sees them (R receiver slots).

    Attributes
    ----------
    y_db, cens_db
        (B, R) measured power / censoring level + 20 log10(f / MHz), dB; 0 where unused.
    state
        (B, R) 0 unused, 1 heard, 2 silent, 3 clipped.
    rx_km, rx_height_m
        (B, R, 2) receiver positions in each session's frame (km), (B, R) heights (m).
    band
        (B,) 0 = 2 m, 1 = 70 cm.
    frames
        One local frame per session (positions above and posterior points are in it).

    """

    y_db: NDArray[np.float64]
    state: NDArray[np.int8]
    cens_db: NDArray[np.float64]
    rx_km: NDArray[np.float64]
    rx_height_m: NDArray[np.float64]
    band: NDArray[np.int8]
    frames: tuple[LocalFrame, ...]

    def __len__(self) -> int:
        return len(self.band)

    def select(self, index: NDArray[np.int64] | list[int]) -> GridInputs:
        """Sessions at ``index``."""
        idx = np.asarray(index, dtype=np.int64)
        return GridInputs(
            self.y_db[idx], self.state[idx], self.cens_db[idx], self.rx_km[idx], self.rx_height_m[idx],
            self.band[idx], tuple(self.frames[i] for i in idx),
        )  # fmt: skip

    def arrays(self) -> dict[str, NDArray]:
        """The graph's inputs except ``points_km`` (float32 / int64)."""
        return {
            "y_db": np.nan_to_num(self.y_db).astype(np.float32),
            "state": self.state.astype(np.int64),
            "cens_db": np.nan_to_num(self.cens_db).astype(np.float32),
            "rx_km": self.rx_km.astype(np.float32),
            "rx_height_m": self.rx_height_m.astype(np.float32),
            "band": self.band.astype(np.int64),
        }

    def tensors(self, points_km: NDArray[np.float64]) -> tuple[Any, ...]:
        """All inputs as torch tensors, with per-session points (B, G, 2) km."""
        import torch

        arrays = {**self.arrays(), "points_km": np.asarray(points_km, dtype=np.float32)}
        return tuple(torch.from_numpy(np.ascontiguousarray(arrays[n])) for n in INPUT_NAMES)

    def area_km(self, index: int, margin_km: float = AREA_MARGIN_KM) -> tuple[float, float, float, float]:
        """The receivers' bounding box + ``margin_km``: (east_min, east_max, north_min, north_max)."""
        used = self.rx_height_m[index] > 0
        pts = self.rx_km[index][used]
        return (
            float(pts[:, 0].min() - margin_km), float(pts[:, 0].max() + margin_km),
            float(pts[:, 1].min() - margin_km), float(pts[:, 1].max() + margin_km),
        )  # fmt: skip


def inputs_for_network(
    batch: SessionBatch, network: Network, detection_snr_db: float = DETECTION_SNR_DB
) -> GridInputs:
    """Sessions in the network's receiver order (slots matched by station id; others ignored).

    ``detection_snr_db``: the measured SNR (dB) from which a receiver is heard (its map's).
    """
    from heimdall.maps.observations import observations_from_batch

    obs: LabelledObservations = observations_from_batch(batch, network, False, detection_snr_db)
    b, r = obs.y_db.shape
    return GridInputs(
        obs.y_db, obs.state, obs.cens_db,
        np.broadcast_to(network.positions_km, (b, r, 2)).copy(),
        np.broadcast_to(network.heights_m, (b, r)).copy(),
        obs.band, (network.frame,) * b,
    )  # fmt: skip


#: Farthest a session's receiver may be from their centre (km). One VHF/UHF transmitter is heard
#: over a few hundred km at most (the radio horizon of 30 m masts is ~45 km; diffraction and
#: tropospheric scatter reach a few hundred); the search grid spans the receivers plus
#: :data:`AREA_MARGIN_KM`, so receivers thousands of km apart would ask for millions of cells.
MAX_RECEIVER_RADIUS_KM = 500.0


def session_frame(lat_deg: NDArray[np.float64], lon_deg: NDArray[np.float64]) -> LocalFrame:
    """A local frame at the centre of the finite receiver coordinates (degrees).

    The centre is the mean latitude and the circular mean longitude (receivers either side of
    the antimeridian are centred there, not on the far side of the Earth).

    Raises
    ------
    HeimdallError
        No receiver has a finite position, one is not a latitude / longitude, or one is
        farther than :data:`MAX_RECEIVER_RADIUS_KM` from the centre.

    """
    ok = np.isfinite(lat_deg) & np.isfinite(lon_deg)
    if not ok.any():
        raise HeimdallError("a session has no receiver with a finite position")
    bad = ok & ~((np.abs(lat_deg) <= 90.0) & (np.abs(lon_deg) <= 180.0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise HeimdallError(
            f"receiver slot {k} at latitude {lat_deg[k]:g}, longitude {lon_deg[k]:g}: not a position "
            "(latitude within ±90°, longitude within ±180°)"
        )
    lon = np.radians(lon_deg[ok])
    centre_lon = float(np.degrees(np.arctan2(np.mean(np.sin(lon)), np.mean(np.cos(lon)))))
    frame = LocalFrame(float(np.mean(lat_deg[ok])), centre_lon)
    radius = geodesic_distance_km(frame.ref_lat_deg, frame.ref_lon_deg, lat_deg[ok], lon_deg[ok])
    if radius.max() > MAX_RECEIVER_RADIUS_KM:
        raise HeimdallError(
            f"a session's receivers are spread too far: one is {radius.max():.0f} km from their centre "
            f"(at most {MAX_RECEIVER_RADIUS_KM:.0f} km: one VHF/UHF transmitter is not heard farther)"
        )
    return frame


def inputs_for_slots(batch: SessionBatch, n_slots: int) -> GridInputs:
    """Sessions in their own receiver slots, padded to ``n_slots``; one frame per session at its receivers."""
    if batch.n_receivers > n_slots:
        raise HeimdallError(f"{batch.n_receivers} receiver slots; this model takes at most {n_slots}")
    y, cens, state = slot_observations(batch)
    b, s = state.shape
    pad = n_slots - s
    frames = tuple(session_frame(batch.rx_lat_deg[i], batch.rx_lon_deg[i]) for i in range(b))
    rx = np.zeros((b, n_slots, 2))
    for i, f in enumerate(frames):
        ok = np.isfinite(batch.rx_lat_deg[i]) & np.isfinite(batch.rx_lon_deg[i])
        lat = np.where(ok, batch.rx_lat_deg[i], f.ref_lat_deg)
        e, n = f.to_local_km(lat, np.where(ok, batch.rx_lon_deg[i], f.ref_lon_deg))
        rx[i, :s, 0], rx[i, :s, 1] = e, n
    heights = np.zeros((b, n_slots))
    finite = np.isfinite(batch.rx_lat_deg) & np.isfinite(batch.rx_lon_deg)
    heights[:, :s] = np.where(
        finite, np.maximum(np.nan_to_num(batch.rx_height_m, nan=10.0), 1.0), 0.0
    )  # 0: no slot
    return GridInputs(
        np.pad(y, ((0, 0), (0, pad)), constant_values=np.nan),
        np.pad(state, ((0, 0), (0, pad)), constant_values=UNUSED),
        np.pad(cens, ((0, 0), (0, pad)), constant_values=np.nan),
        rx, heights, band_index(batch.center_freq_hz), frames,
    )  # fmt: skip


def truth_km(batch: SessionBatch, inputs: GridInputs) -> NDArray[np.float64]:
    """(B, 2) the sessions' transmitter (label) positions in their frames, km; NaN where unknown."""
    out = np.full((batch.n_sessions, 2), np.nan)
    for i, f in enumerate(inputs.frames):
        if np.isfinite(batch.tx_lat_deg[i]) and np.isfinite(batch.tx_lon_deg[i]):
            e, n = f.to_local_km(batch.tx_lat_deg[i : i + 1], batch.tx_lon_deg[i : i + 1])
            out[i] = (float(e[0]), float(n[0]))
    return out
