"""Named random streams that cannot collide.

``SeedSequence([a, b, c])`` turns each integer into 32-bit words and pads the
entropy with zeros, so different lists can give the same stream: an integer of
2³² or more spills into a second word, e.g. ``[0, 1_000_000 + 43·10⁸, 0]`` and
``[0, 6032704, 1]`` are the same words. Every stream of Heimdall is instead
``SeedSequence(entropy=ENTROPY, spawn_key=words)`` with a fixed 128-bit
entropy (exactly the 4-word pool, so no padding) and

    words = (stream, number of keys, lo32(k1), hi32(k1), lo32(k2), hi32(k2), ...)

Every key is written as exactly two words (0 ≤ k < 2⁶⁴), so the word tuple
determines (stream, keys) uniquely: two different uses never hash the same
input. A direct stream has an even number of words; ``spawn()`` children
append one word, so they have an odd number and cannot equal a direct stream
either. The :class:`Stream` value names the purpose, so a world's hidden truth,
stored sets, on-the-fly training and evaluation noise never share a stream
even when their integer keys are equal.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from heimdall.errors import HeimdallError

#: Heimdall's fixed entropy: 128 bits, top word non-zero (ASCII "Heimdall-worlds!").
ENTROPY = int.from_bytes(b"Heimdall-worlds!", "big")
_MAX_KEY = 2**64


class Stream(IntEnum):
    """Purposes of random streams; each value is the first word of its spawn key."""

    #: hidden truth of a world, keys (world seed, :class:`WorldPart`)
    WORLD = 1
    #: sessions of stored sets (``heimdall simulate``), keys (world seed, session seed, index)
    STORED = 2
    #: sessions simulated on the fly for training, keys (world seed, session seed, index)
    TRAIN = 3
    #: noise drawn by evaluation (e.g. Monte Carlo of the fading scatter, bootstrap)
    EVAL_NOISE = 4
    #: receiver networks drawn from a network family, keys (network seed,)
    NETWORK = 5
    #: which world / network a block of sessions gets, keys (session stream, session seed, block)
    ASSIGN = 6


class WorldPart(IntEnum):
    """Independent parts of a world's hidden truth (second key of :attr:`Stream.WORLD`)."""

    RECEIVERS = 1  # gain offsets (2 m, 70 cm innovation), frequency errors, site noise offsets
    FIELDS_2M = 2  # static shadowing fields, 2 m
    FIELDS_70CM = 3  # the 70 cm fields' independent innovation
    TOWNS = 4  # towns, roads and fixed stations of the clustered position prior


def seed_sequence(stream: Stream, *keys: int) -> np.random.SeedSequence:
    """The seed sequence of ``stream`` with integer ``keys`` (each 0 ≤ k < 2⁶⁴).

    Raises
    ------
    HeimdallError
        A key is negative or too large (names the key).

    """
    words = [int(stream), len(keys)]
    for pos, key in enumerate(keys):
        k = int(key)
        if not 0 <= k < _MAX_KEY:
            raise HeimdallError(f"random stream {stream.name}: key {pos} = {k} is outside 0 .. 2**64 - 1")
        words += [k & 0xFFFFFFFF, k >> 32]
    return np.random.SeedSequence(entropy=ENTROPY, spawn_key=tuple(words))


def generator(stream: Stream, *keys: int) -> np.random.Generator:
    """A PCG64 generator on :func:`seed_sequence` ``(stream, *keys)``."""
    return np.random.default_rng(seed_sequence(stream, *keys))
