"""The area a model was trained for, how far outside it a receiver may be, and answers outside it.

Transmitters of the training data were drawn in the rectangle spanned by the
network's receivers in the local frame, widened by the world's
``area_margin_km`` (``World.tx_area_km``). A model has seen receivers only at
the network's stations, so a receiver more than :data:`RECEIVER_TOLERANCE_KM`
outside that rectangle is refused: its answer would be an extrapolation.

An answer whose Gaussian N(μ, Σ) puts more than :data:`OUT_OF_AREA_MASS` of
its probability outside the rectangle is flagged ``out_of_area``: the model
has seen no transmitter there. The mass inside is the bivariate normal
probability of a rectangle, computed by conditioning (Genz, "Numerical
computation of rectangular bivariate and trivariate normal and t
probabilities", Stat. Comput. 14, 2004, §2):

    P = ∫_{e0}^{e1} φ(e; μe, σe) [Φ((n1 − m(e)) / s) − Φ((n0 − m(e)) / s)] de,
    m(e) = μn + ρ σn (e − μe) / σe,   s = σn sqrt(1 − ρ²),

with composite Gauss-Legendre quadrature, the panels broken where m(e)
crosses n0 or n1 so that each panel's integrand is smooth.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from heimdall.network import LocalFrame, Network

#: How far (km) outside the training rectangle a receiver may stand.
RECEIVER_TOLERANCE_KM = 50.0
#: Largest probability mass of an answer outside the trained area before it is flagged ``out_of_area``.
OUT_OF_AREA_MASS = 0.05
#: Half-width of the integration window, in standard deviations (mass beyond: < 1.3e-15).
_WINDOW_SIGMA = 8.0
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(24)


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

    def mass_inside(self, mean_km: ArrayLike, cov_km2: ArrayLike) -> float:
        """Probability that a point drawn from N(mean, cov) lies in the rectangle (see module docstring).

        Parameters
        ----------
        mean_km
            (east, north) of the mean, km.
        cov_km2
            2×2 covariance, km² (positive semi-definite).

        Returns
        -------
        float
            The probability in [0, 1], accurate to ~1e-6 (16 panels × 24 Gauss-Legendre nodes).

        """
        mu_e, mu_n = (float(v) for v in np.asarray(mean_km, dtype=np.float64))
        cov = np.asarray(cov_km2, dtype=np.float64)
        sd_e = float(np.sqrt(max(cov[0, 0], 0.0)))
        sd_n = float(np.sqrt(max(cov[1, 1], 0.0)))
        if sd_e == 0.0 or sd_n == 0.0:  # a degenerate Gaussian: the point (or segment) itself
            inside = self.outside_km(mu_e, mu_n) == 0.0
            return float(inside)
        rho = float(np.clip(cov[0, 1] / (sd_e * sd_n), -1.0, 1.0))
        s = sd_n * np.sqrt(max(1.0 - rho * rho, 0.0))
        a = max(self.east_min_km, mu_e - _WINDOW_SIGMA * sd_e)
        b = min(self.east_max_km, mu_e + _WINDOW_SIGMA * sd_e)
        if a >= b:
            return 0.0
        breaks = [a, b]
        if rho != 0.0:  # where the conditional mean m(e) crosses a north edge
            for edge in (self.north_min_km, self.north_max_km):
                e = mu_e + (edge - mu_n) * sd_e / (rho * sd_n)
                if a < e < b:
                    breaks.append(e)
        edges = np.sort(np.asarray(breaks))
        panels = np.concatenate([np.linspace(lo, hi, 17) for lo, hi in itertools.pairwise(edges)])
        lo, hi = panels[:-1], panels[1:]
        keep = hi > lo
        lo, hi = lo[keep], hi[keep]
        half = 0.5 * (hi - lo)
        e = (0.5 * (hi + lo))[:, None] + half[:, None] * _NODES[None, :]
        z = (e - mu_e) / sd_e
        density = np.exp(-0.5 * z * z) / (sd_e * np.sqrt(2.0 * np.pi))
        m = mu_n + rho * sd_n * z
        if s > 0.0:
            band = ndtr((self.north_max_km - m) / s) - ndtr((self.north_min_km - m) / s)
        else:
            band = ((m >= self.north_min_km) & (m <= self.north_max_km)).astype(np.float64)
        total = float(np.sum(half[:, None] * _WEIGHTS[None, :] * density * band))
        return min(max(total, 0.0), 1.0)

    def mass_outside(self, mean_km: ArrayLike, cov_km2: ArrayLike) -> float:
        """Probability (in [0, 1]) that a point drawn from N(mean, cov) lies outside the rectangle."""
        return 1.0 - self.mass_inside(mean_km, cov_km2)

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


def area_of(predictor: Any) -> TrainedArea | None:
    """The area a served model answers for, in its frame: its trained area, or its radio map's area.

    A Gaussian model's area comes from its metadata (:meth:`TrainedArea.from_metadata`); a
    grid-posterior model with a radio map answers on the map's grid (``map_area_km`` of its
    metadata, the area its fields were fitted for); a model with neither has none (None).
    """
    if hasattr(predictor, "area"):
        return predictor.area
    box = getattr(predictor, "map_area_km", None)
    return None if box is None else TrainedArea(*(float(v) for v in box))
