"""Shared fixtures: tiny generated worlds and sessions (no committed binaries)."""

from __future__ import annotations

import pytest

from heimdall.network import Network, load_network
from heimdall.sim import World, WorldConfig, load_world


@pytest.fixture(scope="session")
def network() -> Network:
    return load_network("nw-italy")


@pytest.fixture(scope="session")
def reference_world() -> WorldConfig:
    return load_world()


@pytest.fixture(scope="session")
def world(network: Network, reference_world: WorldConfig) -> World:
    return World(network, reference_world, seed=0)
