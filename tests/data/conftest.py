"""Tiny simulated sessions for the data tests (seeded, generated on the fly)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import numpy as np
import pytest

from heimdall.cli import main
from heimdall.data.session import SessionBatch
from heimdall.network import Network
from heimdall.sim import World, WorldConfig


@pytest.fixture(scope="session")
def short_world(network: Network, reference_world: WorldConfig) -> World:
    """The reference world with 50 ms captures (600 samples at 12 kHz) to keep tests fast."""
    return World(network, reference_world.with_overrides(duration_s=0.05), seed=0)


@pytest.fixture(scope="session")
def sessions12(short_world: World) -> SessionBatch:
    """Twelve simulated sessions (session seed 3)."""
    return short_world.simulate(12, 3)


def _assert_same_sessions(got: SessionBatch, want: SessionBatch) -> None:
    """IQ and integer fields bit-exact; other floats (coordinates) within 1e-9; NaNs in the same places."""
    assert got.n_sessions == want.n_sessions
    for f in fields(SessionBatch):
        a, b = getattr(got, f.name), getattr(want, f.name)
        assert a.shape == b.shape, f.name
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9, equal_nan=True, err_msg=f.name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=f.name)


@pytest.fixture(scope="session")
def assert_same() -> Callable[[SessionBatch, SessionBatch], None]:
    """Compare two batches field by field (see :func:`_assert_same_sessions`)."""
    return _assert_same_sessions


def expect_error(args: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    """Run the CLI with ``args``: it must exit 2 with every fragment in its one-line error."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = "".join(capsys.readouterr().err.split())  # the console wraps long lines
    for fragment in fragments:
        assert "".join(fragment.split()) in err, err
