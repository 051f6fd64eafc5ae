"""Kernels of OVER aggregates: each row with an aggregate of its key's rows up to it, in event-time order.

:class:`~laminar_jit.OverAggregate` hands :func:`over_fold` the rows the
watermark made ready, in (event time, arrival) order. Values travel as
int64: integers as they are, floats as their bits. A key's state is one row
of ``rec`` (int64[slots, 3 + 9 A], ``A`` aggregates), so folding a row in
touches a cache line or two whatever the key:

``rec[s, 0:3]``
    The rows in the key's frame (a bounded frame's), the first and the last
    of them (pool entry + 1; 0: none).
``rec[s, c:c + 9]`` with ``c = 3 + 9 a``, per aggregate ``a``
    Non-null values in the frame (for ``count()``: rows); their sum (for
    floats the finite part, as bits: NaN, +inf and -inf are counted apart in
    ``c + 3 .. c + 5`` so that they leave the frame again — Flink's
    retraction — and a compensation in ``c + 8``, Neumaier's, so that a large
    value leaving the frame takes no precision with it); an unbounded
    frame's running min or max; and the first and last candidate (entry + 1)
    of a bounded min or max.

A bounded frame (``n PRECEDING`` rows, or a time range) keeps its rows in a
pool, one row of ``ent`` (int64[entries, 2 + 4 A]) each: time, next entry
(+ 1), then per aggregate its value, whether it is non-null, and the next
and previous candidate (+ 1) of the aggregate's min/max deque. ``free`` is
a stack of unused entries (``meta[0]`` of them; the caller keeps one per
row it folds). Rows leave the frame from its first; the deque is monotone:
a row drops the candidates it beats from the back, the frame's oldest row
leaves from the front, so the front is the frame's min or max, in amortized
O(1) per row whatever the frame's length. Links and counts are 0 when
empty, so new state is all zeros.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing
from .changelog import COUNT, COUNT_ROWS, MAX, MEAN, MIN, SUM, _f2i, _i2f

__all__ = ["over_fold", "state_width", "entry_width"]


def state_width(n_aggs: int) -> int:
    """Columns of ``rec`` for ``n_aggs`` aggregates."""
    return 3 + 9 * n_aggs


def entry_width(n_aggs: int) -> int:
    """Columns of ``ent`` for ``n_aggs`` aggregates."""
    return 2 + 4 * n_aggs


@njit(inline="always")
def _beats(x, y, is_float, is_max):
    """Value ``x`` beats ``y`` (bits of floats: NaN above every number, as the engine's min/max order it)."""
    if is_float:
        a, b = _i2f(x), _i2f(y)
        if is_max:
            return (a > b) or (a != a and b == b)
        return (a < b) or (b != b and a == a)
    return x > y if is_max else x < y


@njit_borrowing(fastmath=False)  # (as over_fold: reassociation would fold Neumaier's correction to zero)
def _take(rec, s, c, is_float, x, sign):
    """Add (``sign`` 1) or take away (-1) one non-null value ``x`` of the aggregate at column ``c``."""
    rec[s, c] += sign
    if not is_float:
        rec[s, c + 1] += sign * x
        return
    v = _i2f(x)
    if v != v:
        rec[s, c + 3] += sign
    elif v == np.inf:
        rec[s, c + 4] += sign
    elif v == -np.inf:
        rec[s, c + 5] += sign
    else:  # Neumaier's compensated sum: a large value that enters and leaves takes no precision with it
        total = _i2f(rec[s, c + 1])
        x = sign * v
        t = total + x
        if abs(total) >= abs(x):
            rec[s, c + 8] = _f2i(_i2f(rec[s, c + 8]) + ((total - t) + x))
        else:
            rec[s, c + 8] = _f2i(_i2f(rec[s, c + 8]) + ((x - t) + total))
        rec[s, c + 1] = _f2i(t)


@njit_borrowing(fastmath=False)
def _float_sum(rec, s, c):
    if rec[s, c + 3] > 0 or (rec[s, c + 4] > 0 and rec[s, c + 5] > 0):
        return np.nan
    if rec[s, c + 4] > 0:
        return np.inf
    if rec[s, c + 5] > 0:
        return -np.inf
    return _i2f(rec[s, c + 1]) + _i2f(rec[s, c + 8])


@njit(fastmath=False)  # (reassociation would fold the compensated sum's correction to zero)
def over_fold(slots, ts, vals, ok, kinds, floats, bounded, by_rows, preceding, rec, ent, free, meta, out, out_ok):
    """Fold the ready rows, in (time, arrival) order, into their keys' frames.

    Row ``r`` has slot ``slots[r]``, time ``ts[r]`` and per aggregate the
    value ``vals[r, a]`` (``ok[r, a]`` false: null). ``bounded``: a frame of
    ``preceding`` rows before the row (``by_rows``) or of the times
    ``[t - preceding, t]``; otherwise every row of the key so far. In a
    RANGE frame rows of one key and time are peers: the rows of a time all
    enter their frames before any result is read, so each sees its peers.
    Writes row ``r``'s results to ``out[r, a]`` (``out_ok`` false: null).
    Rows leave a frame before the next row enters it, so a key reuses the
    entries it freed.
    """
    m = slots.size
    n_aggs = kinds.size
    i = 0
    while i < m:
        t = ts[i]
        j = i + 1
        if not by_rows:
            while j < m and ts[j] == t:
                j += 1
        for r in range(i, j):
            s = slots[r]
            if bounded:
                while rec[s, 0] > 0:  # rows that leave the frame (by rows: room for this one)
                    e = rec[s, 1] - 1
                    if (by_rows and rec[s, 0] <= preceding) or (not by_rows and ent[e, 0] >= t - preceding):
                        break
                    for a in range(n_aggs):
                        b, c = 2 + 4 * a, 3 + 9 * a
                        if ent[e, b + 1]:
                            _take(rec, s, c, floats[a], ent[e, b], -1)
                        if rec[s, c + 6] == e + 1:  # the oldest candidate leaves
                            nxt = ent[e, b + 2]
                            rec[s, c + 6] = nxt
                            if nxt == 0:
                                rec[s, c + 7] = 0
                            else:
                                ent[nxt - 1, b + 3] = 0
                    rec[s, 1] = ent[e, 1]
                    rec[s, 0] -= 1
                    free[meta[0]] = e
                    meta[0] += 1
                meta[0] -= 1
                e = free[meta[0]]
                ent[e, 0] = t
                ent[e, 1] = 0
                for a in range(n_aggs):
                    b, c = 2 + 4 * a, 3 + 9 * a
                    ent[e, b] = vals[r, a]
                    ent[e, b + 1] = 1 if ok[r, a] else 0
                    ent[e, b + 2] = 0
                    ent[e, b + 3] = 0
                    k = kinds[a]
                    if ok[r, a] and (k == MIN or k == MAX):  # candidates it beats never win again
                        q = rec[s, c + 7]
                        while q > 0 and not _beats(ent[q - 1, b], vals[r, a], floats[a], k == MAX):
                            q = ent[q - 1, b + 3]
                        ent[e, b + 3] = q
                        if q == 0:
                            rec[s, c + 6] = e + 1
                        else:
                            ent[q - 1, b + 2] = e + 1
                        rec[s, c + 7] = e + 1
                if rec[s, 0] == 0:
                    rec[s, 1] = e + 1
                else:
                    ent[rec[s, 2] - 1, 1] = e + 1
                rec[s, 2] = e + 1
                rec[s, 0] += 1
            for a in range(n_aggs):
                if not ok[r, a]:
                    continue
                c = 3 + 9 * a
                _take(rec, s, c, floats[a], vals[r, a], 1)
                k = kinds[a]
                if not bounded and (k == MIN or k == MAX):
                    if rec[s, c] == 1 or _beats(vals[r, a], rec[s, c + 2], floats[a], k == MAX):
                        rec[s, c + 2] = vals[r, a]
        for r in range(i, j):
            s = slots[r]
            for a in range(n_aggs):
                c = 3 + 9 * a
                k = kinds[a]
                n = rec[s, c]
                v, valid = np.int64(0), True
                if k == COUNT_ROWS or k == COUNT:
                    v = n
                elif n <= 0:
                    valid = False
                elif k == SUM:
                    v = _f2i(_float_sum(rec, s, c)) if floats[a] else rec[s, c + 1]
                elif k == MEAN:
                    v = _f2i((_float_sum(rec, s, c) if floats[a] else np.float64(rec[s, c + 1])) / n)
                elif not bounded:
                    v = rec[s, c + 2]
                else:  # a bounded min or max: the deque's front
                    v = ent[rec[s, c + 6] - 1, 2 + 4 * a]
                out[r, a] = v
                out_ok[r, a] = valid
        i = j
