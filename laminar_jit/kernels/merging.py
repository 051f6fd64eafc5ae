"""Kernels that merge the outputs of key shards into the order of one stream.

Each shard emits its rows in the engine's order; a merge works out, for every
row of every shard, its position in the merged output (its *destination*),
and the shards then copy their own rows there in parallel (:func:`place`).
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["merge_destinations", "place", "place_take"]


@njit
def merge_destinations(major, middle, minor, starts, group):
    """Destination of each row of sorted runs merged by (``major``, ``middle``, ``minor``), group by group.

    Run ``r`` is rows ``starts[r]:starts[r + 1]`` of the key arrays, sorted by
    the three keys; consecutive runs with the same ``group`` (one batch
    piece, one run per shard) are merged with each other, ties going to the
    earlier run, and groups follow each other in run order. Costs
    O(rows x runs per group).
    """
    runs = group.shape[0]
    dest = np.empty(starts[runs], np.int64)
    head = starts[:-1].copy()
    o = 0
    r0 = 0
    while r0 < runs:
        r1 = r0 + 1
        while r1 < runs and group[r1] == group[r0]:
            r1 += 1
        while True:
            best = -1
            for r in range(r0, r1):
                i = head[r]
                if i == starts[r + 1]:
                    continue
                if best < 0:
                    best = r
                    continue
                j = head[best]
                if major[i] < major[j] or (major[i] == major[j] and (
                        middle[i] < middle[j] or (middle[i] == middle[j] and minor[i] < minor[j]))):
                    best = r
            if best < 0:
                break
            dest[head[best]] = o
            head[best] += 1
            o += 1
        r0 = r1
    return dest


@njit
def place(out, dest, values):
    """``out[dest[i]] = values[i]``."""
    for i in range(dest.size):
        out[dest[i]] = values[i]


@njit
def place_take(out, dest, values, rows):
    """``out[dest[i]] = values[rows[i]]``."""
    for i in range(dest.size):
        out[dest[i]] = values[rows[i]]
