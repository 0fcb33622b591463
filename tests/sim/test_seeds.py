"""Named random streams: no two uses share a stream (heimdall.sim.seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from heimdall.errors import HeimdallError
from heimdall.sim.seeds import Stream, generator, seed_sequence

COLLIDING = ([0, 1_000_000 + 43 * 10**8, 0], [0, 6032704, 1])


def _state(seq: np.random.SeedSequence) -> bytes:
    return seq.generate_state(4, np.uint32).tobytes()


def test_the_old_scheme_collides() -> None:
    """The bug being fixed: SeedSequence(list) maps these two triples to one stream."""
    a, b = (np.random.SeedSequence(k) for k in COLLIDING)
    assert _state(a) == _state(b)


def test_the_collision_pair_gives_different_streams() -> None:
    a, b = (seed_sequence(Stream.STORED, *k) for k in COLLIDING)
    assert _state(a) != _state(b)
    assert (
        generator(Stream.STORED, *COLLIDING[0]).random() != generator(Stream.STORED, *COLLIDING[1]).random()
    )


def test_streams_are_disjoint_over_a_sampled_set() -> None:
    """Every (stream, keys) of a sample, including equal keys of different purposes,
    different arities, keys across the 2**32 boundary and spawned children, has its own state."""
    rng = np.random.default_rng(0)
    keys: list[tuple[int, ...]] = [(), (0,), (0, 0), (0, 0, 0), (2**32,), (0, 1), (1, 0), (2**32 - 1, 1)]
    keys += [tuple(int(k) for k in rng.integers(0, 2**40, size=n)) for n in (1, 2, 3) for _ in range(40)]
    keys += [tuple(int(x) for x in k) for k in COLLIDING]
    states: dict[bytes, tuple] = {}
    for stream in Stream:
        for key in keys:
            seq = seed_sequence(stream, *key)
            for tag, s in [("direct", seq), *((f"child{i}", c) for i, c in enumerate(seq.spawn(2)))]:
                st = _state(s)
                assert st not in states, (stream, key, tag, states.get(st))
                states[st] = (stream, key, tag)
    assert len(states) == len(Stream) * len(set(keys)) * 3


def test_same_keys_same_stream() -> None:
    assert _state(seed_sequence(Stream.TRAIN, 3, 4)) == _state(seed_sequence(Stream.TRAIN, 3, 4))


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_keys_out_of_range_are_refused(bad: int) -> None:
    with pytest.raises(HeimdallError, match="key 1"):
        seed_sequence(Stream.WORLD, 0, bad)
