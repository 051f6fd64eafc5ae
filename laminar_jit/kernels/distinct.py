"""Distinct values of window slots: the state of ``count_distinct`` in windows.

A window's ``count_distinct`` keeps, per (key, window) slot, the set of the
distinct values folded into it, as Flink keeps a map view per window. The
sets of one aggregate share one key table keyed by ``(slot, value)``
(``buckets``/``keys``/``meta``/``free``, see :mod:`.hashtable`); ``nxt[e]``
threads a slot's entries on a list whose head the slot keeps in its ``h``
field (-1: empty), and its ``n`` field counts them. A value is an int64: an
integer, a string's dictionary code, or a float's bits (:func:`distinct_bits`:
-0.0 is 0.0 and every NaN one value, as in DuckDB).

* :func:`distinct_add` folds one value into a slot (the window update);
* :func:`distinct_move` folds one slot's set into another and empties it (two
  sessions merged by a row);
* :func:`distinct_union` counts the values of a slot's set not yet seen by a
  scratch set (a sliding window merging its panes, which stay as they are);
* :func:`distinct_clear` empties a slot's set (the slot is freed);
* :func:`scratch_set` allocates such a scratch set.

The caller guarantees room (``KeyTable.reserve``: one entry per row folded
in); moving deletes each entry before inserting, so it needs none.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing
from .changelog import f64_bits
from .hashtable import ht_delete, ht_find_or_insert

__all__ = ["distinct_add", "distinct_bits", "distinct_clear", "distinct_move", "distinct_union", "scratch_set"]


@njit(inline="always")
def distinct_bits(x):
    """The identity of a float value in a distinct set (its bits; -0.0 as 0.0, one NaN)."""
    return f64_bits(x)


@njit_borrowing  # (a call per row counted a reference per array, seven of them, until compiled without)
def distinct_add(buckets, keys, meta, free, nxt, h, s, v):
    """Put value ``v`` in slot ``s``'s set; True when it was not there yet."""
    live = meta[0]
    e = ht_find_or_insert(buckets, keys, meta, free, s, v)
    if meta[0] == live:
        return False
    nxt[e] = h[s]
    h[s] = e
    return True


@njit
def distinct_clear(buckets, keys, meta, free, nxt, h, s):
    """Empty slot ``s``'s set (its entries go back to the table's free slots)."""
    e = h[s]
    while e >= 0:
        follow = nxt[e]
        ht_delete(buckets, keys, meta, free, e)
        nxt[e] = -1
        e = follow
    h[s] = -1


@njit
def distinct_move(buckets, keys, meta, free, nxt, h, a, d):
    """Fold slot ``a``'s set into slot ``d``'s and empty ``a``'s; returns how many values ``d`` gained."""
    gained = 0
    e = h[a]
    while e >= 0:
        follow = nxt[e]
        v = keys[e, 1]
        ht_delete(buckets, keys, meta, free, e)  # first, so the insert below reuses its slot
        nxt[e] = -1
        if distinct_add(buckets, keys, meta, free, nxt, h, d, v):
            gained += 1
        e = follow
    h[a] = -1
    return gained


@njit
def distinct_union(sb, sk, sm, sf, cell, keys, nxt, head):
    """Add the values of the set whose list starts at ``head`` to the scratch set under ``cell``.

    Returns how many of them the scratch set did not hold under ``cell`` (a
    window's distinct values not in the panes it merged before this one).
    """
    gained = 0
    e = head
    while e >= 0:
        live = sm[0]
        ht_find_or_insert(sb, sk, sm, sf, cell, keys[e, 1])
        if sm[0] != live:
            gained += 1
        e = nxt[e]
    return gained


@njit
def scratch_set(n):
    """An empty key table of width 2 with room for ``n`` keys: ``(buckets, keys, meta, free)``."""
    cap = 16
    while cap < 2 * n:
        cap *= 2
    buckets = np.full(cap, -1, np.int32)
    keys = np.zeros((max(n, 1), 2), np.int64)
    meta = np.zeros(5, np.int64)
    meta[3] = 2
    meta[4] = cap  # every bucket active: it lives for one fire
    free = np.zeros(max(n, 1), np.int32)
    return buckets, keys, meta, free
