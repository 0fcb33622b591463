"""Where transmitters are: the uniform prior and a clustered prior of towns, roads and fixed stations.

Real transmitters, and above all labelled ones (APRS beacons, repeaters, club
members driving around), are not uniform: people live in towns whose sizes
follow a heavy-tailed law (Gibrat's law gives log-normal sizes), mobiles move
along roads between towns, and a few fixed stations transmit again and again.
The **clustered** prior draws, per world (from the world seed alone):

- towns: a Poisson number (``towns_per_1000_km2`` × area / 1000 km²) placed
  uniformly over the transmitter area, each with a log-normal radius
  (median ``town_radius_km``, log-σ ``town_radius_sigma_ln``) and a weight
  proportional to its area (radius²);
- roads: straight segments joining each town to its ``road_neighbours``
  nearest towns (a nearest-neighbour road graph);
- ``fixed_stations`` fixed sites, uniform over the area.

and per transmitter a kind from ``position_mix``: ``town`` (a town by weight,
then a circular Gaussian offset of the town's radius), ``road`` (a segment by
length, a uniform point on it, a Gaussian lateral offset ``road_offset_km``)
or ``fixed`` (one of the fixed sites). Points outside the transmitter area are
drawn again. The **uniform** prior is uniform over the transmitter area (the
default of test sets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from heimdall.errors import HeimdallError
from heimdall.sim.seeds import Stream, WorldPart, generator

if TYPE_CHECKING:
    from heimdall.sim.simulator import World

Prior = Literal["uniform", "clustered"]
PRIORS: tuple[str, ...] = ("uniform", "clustered")
_MAX_REDRAWS = 100


@dataclass(frozen=True)
class TownLayout:
    """Towns, roads and fixed stations of one world (local frame, km).

    Attributes
    ----------
    town_km
        Town centres, (T, 2) km.
    town_radius_km
        Gaussian spread of each town, (T,) km.
    road_a_km, road_b_km
        Ends of the road segments, (S, 2) km each.
    fixed_km
        Fixed stations, (F, 2) km.

    """

    town_km: NDArray[np.float64]
    town_radius_km: NDArray[np.float64]
    road_a_km: NDArray[np.float64]
    road_b_km: NDArray[np.float64]
    fixed_km: NDArray[np.float64]

    @property
    def road_length_km(self) -> NDArray[np.float64]:
        """Length of each road segment, (S,) km."""
        return np.hypot(*(self.road_b_km - self.road_a_km).T)


def draw_layout(world: World) -> TownLayout:
    """The town layout of ``world``, drawn from its seed alone (stream WORLD, part TOWNS)."""
    cfg = world.config
    rng = generator(Stream.WORLD, world.seed, WorldPart.TOWNS)
    e0, e1, n0, n1 = world.tx_area_km
    area_km2 = (e1 - e0) * (n1 - n0)
    n_towns = max(1, int(rng.poisson(cfg.towns_per_1000_km2 * area_km2 / 1000.0)))
    towns = np.column_stack([rng.uniform(e0, e1, n_towns), rng.uniform(n0, n1, n_towns)])
    radius = cfg.town_radius_km * np.exp(cfg.town_radius_sigma_ln * rng.standard_normal(n_towns))
    fixed = np.column_stack(
        [rng.uniform(e0, e1, cfg.fixed_stations), rng.uniform(n0, n1, cfg.fixed_stations)]
    )
    pairs: set[tuple[int, int]] = set()
    if n_towns > 1:
        dist = np.hypot(*(towns[:, None, :] - towns[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(dist, np.inf)
        k = min(cfg.road_neighbours, n_towns - 1)
        for i, row in enumerate(np.argsort(dist, axis=1)[:, :k]):
            pairs.update((min(i, int(j)), max(i, int(j))) for j in row)
    ends = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return TownLayout(towns, radius, towns[ends[:, 0]], towns[ends[:, 1]], fixed)


def _mix(world: World, layout: TownLayout) -> NDArray[np.float64]:
    """Probabilities of (town, road, fixed), renormalised over the kinds this layout has."""
    mix = world.config.position_mix
    p = np.array([mix.get("town", 0.0), mix.get("road", 0.0), mix.get("fixed", 0.0)])
    p *= [layout.town_km.shape[0] > 0, layout.road_a_km.shape[0] > 0, layout.fixed_km.shape[0] > 0]
    if p.sum() <= 0.0:
        p = np.array([1.0, 0.0, 0.0])
    return p / p.sum()


def _clustered(world: World, layout: TownLayout, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    kind = rng.choice(3, size=n, p=_mix(world, layout))
    out = np.empty((n, 2))
    town = np.flatnonzero(kind == 0)
    if town.size:
        w = layout.town_radius_km**2
        pick = rng.choice(w.size, size=town.size, p=w / w.sum())
        spread = layout.town_radius_km[pick, None] * rng.standard_normal((town.size, 2))
        out[town] = layout.town_km[pick] + spread
    road = np.flatnonzero(kind == 1)
    if road.size:
        length = layout.road_length_km
        pick = rng.choice(length.size, size=road.size, p=length / length.sum())
        t = rng.random(road.size)[:, None]
        a, b = layout.road_a_km[pick], layout.road_b_km[pick]
        jitter = world.config.road_offset_km * rng.standard_normal((road.size, 2))
        out[road] = a + t * (b - a) + jitter
    fixed = np.flatnonzero(kind == 2)
    if fixed.size:
        out[fixed] = layout.fixed_km[rng.integers(0, layout.fixed_km.shape[0], size=fixed.size)]
    return out


def draw_positions(
    world: World, rng: np.random.Generator, n: int, prior: str = "uniform"
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Draw ``n`` transmitter positions of ``world`` from ``prior``.

    Parameters
    ----------
    world
        The world (its transmitter area and, for ``clustered``, its town layout).
    rng
        Seeded generator of the caller (a session's stream).
    n
        How many positions.
    prior
        ``"uniform"`` over ``world.tx_area_km`` or ``"clustered"`` (module docstring).

    Returns
    -------
    east_km, north_km
        Arrays of shape (n,), km in the network's local frame, inside the transmitter area.

    """
    if prior not in PRIORS:
        raise HeimdallError(f"unknown position prior {prior!r}: give one of {', '.join(PRIORS)}")
    e0, e1, n0, n1 = world.tx_area_km
    if prior == "uniform":
        return rng.uniform(e0, e1, n), rng.uniform(n0, n1, n)
    layout = world.town_layout
    pts = _clustered(world, layout, rng, n)
    for _ in range(_MAX_REDRAWS):
        out = (pts[:, 0] < e0) | (pts[:, 0] > e1) | (pts[:, 1] < n0) | (pts[:, 1] > n1)
        if not out.any():
            break
        pts[out] = _clustered(world, layout, rng, int(out.sum()))
    pts[:, 0] = np.clip(pts[:, 0], e0, e1)
    pts[:, 1] = np.clip(pts[:, 1], n0, n1)
    return pts[:, 0], pts[:, 1]
