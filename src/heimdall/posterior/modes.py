"""Modes of a grid posterior and their probability mass (basins of steepest ascent).

Every cell points to its densest 8-neighbour if that is denser than itself,
else to itself (a local maximum). Following the pointers partitions the grid
into basins of attraction, one per local maximum — the discrete watershed of
the density (Vincent & Soille, IEEE PAMI 1991, by steepest ascent rather than
flooding). A mode's mass is the posterior mass of its basin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Mode:
    """A local maximum of the posterior: cell index (row, col) and its basin's probability mass."""

    row: int
    col: int
    mass: float


def basins(values: NDArray[np.float64]) -> NDArray[np.int64]:
    """Flat index of the local maximum each cell ascends to, (n_north, n_east) → same shape.

    Cells are ordered by value, then by lower flat index, so a plateau or two
    equal cells astride a peak ascend to one maximum.
    """
    n_n, n_e = values.shape
    v = np.where(np.isfinite(values), values, -np.inf)
    padded = np.full((n_n + 2, n_e + 2), -np.inf)
    padded[1:-1, 1:-1] = v
    flat = np.arange(n_n * n_e).reshape(n_n, n_e)
    pad_idx = np.pad(flat, 1, mode="edge")  # outside cells are -inf: their index is never taken
    shifts = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]  # the cell itself among its neighbours
    nb = np.stack([padded[1 + dr : 1 + dr + n_n, 1 + dc : 1 + dc + n_e] for dr, dc in shifts])
    nb_idx = np.stack([pad_idx[1 + dr : 1 + dr + n_n, 1 + dc : 1 + dc + n_e] for dr, dc in shifts])
    # strict total order (value, then lower index): ties never form cycles; -inf cells never lead
    top = nb.max(axis=0)
    best_idx = np.where(nb == top, nb_idx, n_n * n_e).min(axis=0)
    best_idx = np.where(np.isfinite(top), best_idx, flat)
    ptr = best_idx.ravel()
    while True:  # pointer jumping: log2(longest ascent) rounds
        nxt = ptr[ptr]
        if np.array_equal(nxt, ptr):
            break
        ptr = nxt
    return ptr.reshape(n_n, n_e)


def top_modes(values: NDArray[np.float64], prob: NDArray[np.float64], k: int = 3) -> list[Mode]:
    """The ``k`` modes with the largest basin mass, largest first.

    Parameters
    ----------
    values
        Log density (n_north, n_east).
    prob
        Cell masses (n_north, n_east), summing to 1.
    k
        How many modes.

    """
    roots = basins(values).ravel()
    mass = np.bincount(roots, weights=prob.ravel(), minlength=roots.size)
    order = np.argsort(-mass, kind="stable")[:k]
    n_e = values.shape[1]
    return [Mode(int(i // n_e), int(i % n_e), float(mass[i])) for i in order if mass[i] > 0]
