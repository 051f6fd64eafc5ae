"""Timer heap kernels: a binary min-heap of (time, slot) pairs in two int64 arrays.

Entries order by time, ties by ``rank[slot]``: the arrival number of the
key's first row (the rows of every call so far, plus the row's position),
unique per key and the same in one executor and in every key shard, so
timers due at the same time fire in the order their keys first arrived
however the input was batched, sharded or restored (slots differ between
shards and after a restore). The heap holds ``count`` entries in
``times[:count]`` / ``slots[:count]``; the caller keeps ``count`` and
guarantees capacity.
"""

from __future__ import annotations

from .._jit import njit, njit_borrowing

__all__ = ["heap_pop", "heap_push"]


@njit(inline="always")
def _before(times, slots, rank, i, j):
    return times[i] < times[j] or (times[i] == times[j] and rank[slots[i]] < rank[slots[j]])


@njit_borrowing
def heap_push(times, slots, count, t, s, rank):
    """Insert ``(t, s)``, ordered by (time, ``rank[slot]``); returns the new count."""
    i = count
    times[i] = t
    slots[i] = s
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(times, slots, rank, i, parent):
            break
        times[i], times[parent] = times[parent], times[i]
        slots[i], slots[parent] = slots[parent], slots[i]
        i = parent
    return count + 1


@njit_borrowing
def heap_pop(times, slots, count, rank):
    """Remove the smallest entry (read it from index 0 first); returns the new count."""
    count -= 1
    times[0] = times[count]
    slots[0] = slots[count]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= count:
            break
        child = left
        if left + 1 < count and _before(times, slots, rank, left + 1, left):
            child = left + 1
        if not _before(times, slots, rank, child, i):
            break
        times[i], times[child] = times[child], times[i]
        slots[i], slots[child] = slots[child], slots[i]
        i = child
    return count
