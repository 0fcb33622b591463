"""World and network families: a set whose sessions come from many worlds and networks.

A set of sessions is described by a :class:`Scenarios`: world parameters, the
world seeds it may use (:class:`WorldSeeds`: one seed, a range ``"0-99"`` or
``"random"``, uniform over 0 .. 2³¹ − 1) and the receiver network (a fixed
network or a :class:`~heimdall.network.family.NetworkFamily`). Sessions are
grouped in blocks of ``block`` consecutive indices; block ``j`` of a set with
session seed ``s`` gets its world seed and network seed from the stream
``ASSIGN(stream, s, j)`` (:mod:`heimdall.sim.seeds`), so the assignment is
reproducible and independent of batching and worker count. Every session
records its ``world_seed`` and ``network_id`` (the network's name, or
``<family>#<network seed>`` for a drawn one, which :meth:`Scenarios.network_for_id`
rebuilds). Building a world draws its static fields (about 0.5 s for nw-italy),
so stored sets draw a world per block of sessions (256 by default) and
on-the-fly training per batch.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from heimdall.data.session import SessionBatch
from heimdall.errors import HeimdallError
from heimdall.network import Network, load_network
from heimdall.network.family import NetworkFamily, load_network_family
from heimdall.sim.seeds import Stream, generator
from heimdall.sim.simulator import World
from heimdall.sim.world import WorldConfig

#: ``"random"`` world seeds are uniform over 0 .. RANDOM_SEED_SPACE − 1.
RANDOM_SEED_SPACE = 2**31
#: Network seeds of a family are uniform over 0 .. NETWORK_SEED_SPACE − 1.
NETWORK_SEED_SPACE = 2**31
#: Sessions per drawn world in stored sets.
DEFAULT_BLOCK = 256
FAMILY_PREFIX = "family:"
_CACHE_WORLDS = 4
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


@dataclass(frozen=True)
class WorldSeeds:
    """World seeds ``lo .. hi`` (inclusive), drawn uniformly; ``text`` as the user gave it."""

    lo: int
    hi: int
    text: str

    @classmethod
    def parse(cls, value: int | str) -> WorldSeeds:
        """``7``, ``"7"``, ``"0-99"`` or ``"random"``; errors name the value."""
        text = str(value).strip()
        if text == "random":
            return cls(0, RANDOM_SEED_SPACE - 1, text)
        if text.isdigit():
            return cls(int(text), int(text), text)
        match = _RANGE.match(text)
        if match and int(match[1]) <= int(match[2]):
            return cls(int(match[1]), int(match[2]), text)
        raise HeimdallError(f"world seed {text!r}: give a seed (7), an inclusive range (0-99) or 'random'")

    @property
    def fixed(self) -> bool:
        """True for a single world seed."""
        return self.lo == self.hi

    def __contains__(self, seed: int) -> bool:
        return self.lo <= int(seed) <= self.hi


def parse_network_source(text: str) -> Network | NetworkFamily:
    """A network name / YAML path, or ``family:<name or YAML path>`` for a network family."""
    if text.startswith(FAMILY_PREFIX):
        return load_network_family(text.removeprefix(FAMILY_PREFIX))
    return load_network(text)


@dataclass
class Scenarios:
    """Which world and network each session of a set is simulated in (module docstring).

    Parameters
    ----------
    network
        A fixed network or a network family.
    config
        World parameters (the same for every world of the family).
    world_seeds
        World seeds the set draws from.
    block
        Consecutive sessions sharing one drawn world and network (≥ 1).

    """

    network: Network | NetworkFamily
    config: WorldConfig
    world_seeds: WorldSeeds
    block: int = DEFAULT_BLOCK
    _worlds: OrderedDict[tuple[int, str], World] = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if self.block < 1:
            raise HeimdallError(f"sessions per world must be >= 1, got {self.block}")

    @property
    def is_family(self) -> bool:
        """True when worlds or networks are drawn (not one fixed world)."""
        return not self.world_seeds.fixed or isinstance(self.network, NetworkFamily)

    def describe(self) -> dict[str, Any]:
        """What a store's metadata records about the family (JSON-ready)."""
        fam = isinstance(self.network, NetworkFamily)
        return {
            "world_seeds": self.world_seeds.text,
            "network_family": self.network.model_dump(mode="json") if fam else None,
            "sessions_per_world": self.block,
        }

    def pick(self, stream: Stream, session_seed: int, block_index: int) -> tuple[int, int | None]:
        """World seed and network seed (None for a fixed network) of a block of sessions."""
        fam = isinstance(self.network, NetworkFamily)
        if self.world_seeds.fixed and not fam:
            return self.world_seeds.lo, None
        rng = generator(Stream.ASSIGN, int(stream), int(session_seed), int(block_index))
        world_seed = int(rng.integers(self.world_seeds.lo, self.world_seeds.hi + 1))
        network_seed = int(rng.integers(0, NETWORK_SEED_SPACE)) if fam else None
        return world_seed, network_seed

    def network_for(self, network_seed: int | None) -> Network:
        """The network of a block: the fixed one, or the family's draw with ``network_seed``."""
        if isinstance(self.network, Network):
            return self.network
        if network_seed is None:
            raise HeimdallError(f"network family {self.network.name!r} needs a network seed")
        return self.network.draw(generator(Stream.NETWORK, int(network_seed)), int(network_seed))

    def network_for_id(self, network_id: str) -> Network:
        """Rebuild a session's network from its recorded ``network_id``."""
        if isinstance(self.network, Network):
            if network_id not in ("", self.network.name):
                raise HeimdallError(f"network {network_id!r} is not this set's network {self.network.name!r}")
            return self.network
        name, _, seed = network_id.rpartition("#")
        if name != self.network.name or not seed.isdigit():
            raise HeimdallError(f"network {network_id!r} was not drawn from family {self.network.name!r}")
        return self.network_for(int(seed))

    def world(self, world_seed: int, network: Network) -> World:
        """The world (cached: the last few built)."""
        key = (int(world_seed), network.name)
        if key in self._worlds:
            self._worlds.move_to_end(key)
            return self._worlds[key]
        built = World(network, self.config, world_seed)
        self._worlds[key] = built
        while len(self._worlds) > _CACHE_WORLDS:
            self._worlds.popitem(last=False)
        return built

    def world_of(self, world_seed: int, network_id: str) -> World:
        """The world of a recorded session (its ``world_seed`` and ``network_id``)."""
        return self.world(world_seed, self.network_for_id(network_id))

    def simulate(
        self,
        n_sessions: int,
        session_seed: int,
        start_index: int = 0,
        *,
        stream: Stream = Stream.STORED,
        positions: str = "uniform",
        progress: Any = None,
    ) -> SessionBatch:
        """Sessions ``start_index ..`` each in its block's world (padded to the largest network)."""
        if n_sessions < 0:
            raise HeimdallError(f"number of sessions must be >= 0, got {n_sessions}")
        parts = []
        k, stop = start_index, start_index + n_sessions
        while k < stop or not parts:
            block = k // self.block
            end = min(stop, (block + 1) * self.block)
            world_seed, network_seed = self.pick(stream, session_seed, block)
            world = self.world(world_seed, self.network_for(network_seed))
            parts.append(
                world.simulate(end - k, session_seed, k, progress, stream=stream, positions=positions)
            )
            k = end
            if k >= stop:
                break
        return parts[0] if len(parts) == 1 else SessionBatch.concat_padded(parts)


def scenarios_from_metadata(metadata: dict[str, Any]) -> Scenarios:
    """The :class:`Scenarios` of a store written by ``heimdall simulate`` (old stores included).

    Use :meth:`Scenarios.world_of` with a session's ``world_seed`` and ``network_id``
    to rebuild the world it was simulated in (the oracle needs it).
    """
    config = WorldConfig.model_validate(metadata["world"])
    family = metadata.get("network_family")
    network: Network | NetworkFamily = (
        NetworkFamily.model_validate(family) if family else Network.model_validate(metadata["network"])
    )
    seeds = WorldSeeds.parse(metadata.get("world_seeds", metadata.get("world_seed", 0)))
    return Scenarios(network, config, seeds, int(metadata.get("sessions_per_world", DEFAULT_BLOCK)))
