"""Merge labels of a key shard's rows emitted when the watermark moves (timers, a join's settled rows).

One executor fires a keyed kernel's timer just before the first row whose
watermark reaches the timer's time. A key shard sees only the rows of its
own keys, so it fires the timer at its next row, which may come later; it
labels the output with the position one executor would have fired it at,
worked out from the batch's per-row watermarks (every shard has them all).

A join emits, per step, its pairs as rows arrive, then the rows the
watermark settled (outer and anti joins' unmatched rows), each side's by
event time, then arrival. Settled rows are labelled past the batch's
positions, and tied by their time and arrival number.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["first_reaching", "settled_labels"]


@njit
def first_reaching(rwm, rw_scalar, rw_cap, rw_floor, t, n):
    """First row position whose watermark reaches ``t``; ``n`` when none does.

    A row's watermark is as the plan's loops compute it: ``rwm[i]`` (or
    ``rw_scalar`` when ``rwm`` is empty), lowered to ``rw_cap`` and then
    raised to ``rw_floor``. ``rwm`` never decreases, so the position is a
    binary search.

    Parameters
    ----------
    rwm : int64[n] or int64[0]
        The source watermark in force before each row of the batch.
    rw_scalar, rw_cap, rw_floor, t : int64
    n : int64
        Rows in the batch.
    """
    if rw_floor >= t:
        return 0
    if rw_cap < t:
        return n
    if rwm.size == 0:
        return 0 if rw_scalar >= t else n
    lo = 0
    hi = rwm.size
    while lo < hi:
        mid = (lo + hi) >> 1
        if rwm[mid] >= t:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit
def settled_labels(po, left_from, right_from, n_pairs, n, pl, pr, lts, lseq, rts, rseq):
    """A key shard's merge labels of a join's pairs: where each arrived, and its order among one position's.

    Pairs ``[0, left_from)`` were emitted as a row arrived: ``po`` holds that
    row's position. The watermark settled pairs ``[left_from, right_from)``
    (unmatched left rows) and ``[right_from, n_pairs)`` (unmatched right
    rows), each side's in (event time, arrival) order: they come after every
    arrival of the batch (``n``, then ``n + 1``), by the row's time ``lts`` /
    ``rts`` and arrival number ``lseq`` / ``rseq``.

    Returns
    -------
    position, time, arrival : int64[n_pairs]
        The merge keys, most significant first (time and arrival 0 for the pairs of arrivals).
    """
    position = np.empty(n_pairs, np.int64)
    time = np.zeros(n_pairs, np.int64)
    arrival = np.zeros(n_pairs, np.int64)
    for e in range(left_from):
        position[e] = po[e]
    for e in range(left_from, right_from):
        position[e] = n
        time[e] = lts[pl[e]]
        arrival[e] = lseq[pl[e]]
    for e in range(right_from, n_pairs):
        position[e] = n + 1
        time[e] = rts[pr[e]]
        arrival[e] = rseq[pr[e]]
    return position, time, arrival

