"""World simulator: receiver networks, propagation, shadowing, fading and IQ (docs/SIMULATOR.md)."""

from heimdall.sim.simulator import World
from heimdall.sim.world import WorldConfig, load_world

__all__ = ["World", "WorldConfig", "load_world"]
