"""Kernels of OVER aggregates: each row with an aggregate of its key's rows up to it, in event-time order.

:class:`~laminar_jit.OverAggregate` hands :func:`over_fold` the rows the
watermark made ready, in (event time, arrival) order. Per slot (key)
and aggregate ``a`` the state is:

``cnt[s, a]``
    Non-null values in the frame (for ``count()``: rows).
``acc_i[s, a]`` / ``acc_f[s, a]``
    Their integer or floating sum; for floats, NaN and infinities are
    counted apart in ``odd[s, 3 a .. 3 a + 2]`` so that they leave the frame
    again (the finite part is added and taken away: Flink's retraction).
``ext_i[s, a]`` / ``ext_f[s, a]``
    The running min or max of an unbounded frame.

A bounded frame (``n PRECEDING`` rows, or a time range) also keeps each
key's rows in the frame as a list in a pool of entries: ``head``/``tail``
per slot, ``nxt`` per entry, the entry's time ``p_ts`` and values
``p_i``/``p_f``/``p_ok``; ``free`` is a stack of unused entries
(``meta[0]`` of them; the caller keeps one per row it folds). Rows leave
the frame from the head. A bounded min or max keeps a monotone deque of
candidates per key (``dq_head``/``dq_tail`` per slot, ``dq_nxt``/``dq_prv``
per entry): a row drops the candidates it beats from the back, the frame's
oldest row leaves from the front, so the front is the frame's min or max,
in amortized O(1) per row whatever the frame's length.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from .changelog import COUNT, COUNT_ROWS, MAX, MEAN, MIN, SUM

__all__ = ["over_fold"]


@njit(inline="always")
def _better(x, y, is_max):
    """``x`` beats ``y`` (NaN above every number, as the engine's min/max order it)."""
    if is_max:
        return (x > y) or (x != x and y == y)
    return (x < y) or (y != y and x == x)


@njit(inline="always")
def _odd_slot(x):
    """Which non-finite kind ``x`` is: 0 NaN, 1 +inf, 2 -inf, -1 finite."""
    if x != x:
        return 0
    if x == np.inf:
        return 1
    if x == -np.inf:
        return 2
    return -1


@njit(inline="always")
def _take(cnt, acc_i, acc_f, odd, s, a, is_float, xi, xf, sign):
    """Add (``sign`` 1) or take away (-1) one non-null value of aggregate ``a`` in slot ``s``."""
    cnt[s, a] += sign
    if is_float:
        k = _odd_slot(xf)
        if k >= 0:
            odd[s, 3 * a + k] += sign
        else:
            acc_f[s, a] += sign * xf
    else:
        acc_i[s, a] += sign * xi


@njit(inline="always")
def _float_sum(acc_f, odd, s, a):
    if odd[s, 3 * a] > 0 or (odd[s, 3 * a + 1] > 0 and odd[s, 3 * a + 2] > 0):
        return np.nan
    if odd[s, 3 * a + 1] > 0:
        return np.inf
    if odd[s, 3 * a + 2] > 0:
        return -np.inf
    return acc_f[s, a]


@njit
def over_fold(slots, ts, ivals, fvals, ok, kinds, floats, bounded, by_rows, preceding,
              cnt, acc_i, acc_f, odd, ext_i, ext_f, length, head, tail, nxt, p_ts, p_i, p_f, p_ok, free, meta,
              dq_head, dq_tail, dq_nxt, dq_prv, out_i, out_f, out_ok):
    """Fold the ready rows, in (time, arrival) order, into their keys' frames.

    Row ``r`` has slot ``slots[r]``, time ``ts[r]`` and per aggregate the
    value ``ivals[r, a]`` or ``fvals[r, a]`` (``ok[r, a]`` false: null).
    ``bounded``: a frame of ``preceding`` rows before the row (``by_rows``)
    or of the times ``[t - preceding, t]``; otherwise every row of the key
    so far. In a RANGE frame rows of one key and time are peers: the rows
    of a time all enter their frames before any result is read, so each
    sees its peers. Writes row ``r``'s results to ``out_i[r, a]`` or
    ``out_f[r, a]`` (``out_ok`` false: null). The pool must hold a free
    entry per row. Rows leave a frame before the next row enters it, so a
    key reuses the entries it freed.
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
            if bounded:  # rows that leave the frame (by rows: room for this one)
                while length[s] > 0 and ((by_rows and length[s] > preceding)
                                         or (not by_rows and p_ts[head[s]] < t - preceding)):
                    e = head[s]
                    for a in range(n_aggs):
                        if p_ok[e, a]:
                            _take(cnt, acc_i, acc_f, odd, s, a, floats[a], p_i[e, a], p_f[e, a], -1)
                        if dq_head[s, a] == e:  # the oldest candidate leaves
                            dq_head[s, a] = dq_nxt[e, a]
                            if dq_head[s, a] < 0:
                                dq_tail[s, a] = -1
                            else:
                                dq_prv[dq_head[s, a], a] = -1
                    head[s] = nxt[e]
                    length[s] -= 1
                    free[meta[0]] = e
                    meta[0] += 1
                meta[0] -= 1
                e = free[meta[0]]
                p_ts[e] = t
                nxt[e] = -1
                for a in range(n_aggs):
                    p_i[e, a] = ivals[r, a]
                    p_f[e, a] = fvals[r, a]
                    p_ok[e, a] = ok[r, a]
                    k = kinds[a]
                    if ok[r, a] and (k == MIN or k == MAX):  # candidates no better than this one never win again
                        q = dq_tail[s, a]
                        while q >= 0 and not (_better(p_f[q, a], fvals[r, a], k == MAX) if floats[a] else
                                              (p_i[q, a] > ivals[r, a] if k == MAX else p_i[q, a] < ivals[r, a])):
                            q = dq_prv[q, a]
                        dq_prv[e, a] = q
                        dq_nxt[e, a] = -1
                        if q < 0:
                            dq_head[s, a] = e
                        else:
                            dq_nxt[q, a] = e
                        dq_tail[s, a] = e
                if length[s] == 0:
                    head[s] = e
                else:
                    nxt[tail[s]] = e
                tail[s] = e
                length[s] += 1
            for a in range(n_aggs):
                if not ok[r, a]:
                    continue
                _take(cnt, acc_i, acc_f, odd, s, a, floats[a], ivals[r, a], fvals[r, a], 1)
                k = kinds[a]
                if not bounded and (k == MIN or k == MAX):
                    first = cnt[s, a] == 1
                    if floats[a]:
                        if first or _better(fvals[r, a], ext_f[s, a], k == MAX):
                            ext_f[s, a] = fvals[r, a]
                    elif first or (ivals[r, a] > ext_i[s, a] if k == MAX else ivals[r, a] < ext_i[s, a]):
                        ext_i[s, a] = ivals[r, a]
        for r in range(i, j):
            s = slots[r]
            for a in range(n_aggs):
                k = kinds[a]
                c = cnt[s, a]
                vi, vf, valid = np.int64(0), 0.0, True
                if k == COUNT_ROWS or k == COUNT:
                    vi = c
                elif c <= 0:
                    valid = False
                elif k == SUM:
                    if floats[a]:
                        vf = _float_sum(acc_f, odd, s, a)
                    else:
                        vi = acc_i[s, a]
                elif k == MEAN:
                    vf = (_float_sum(acc_f, odd, s, a) if floats[a] else np.float64(acc_i[s, a])) / c
                elif not bounded:
                    vi, vf = ext_i[s, a], ext_f[s, a]
                else:  # a bounded min or max: the first candidate of the frame
                    e = dq_head[s, a]
                    vi, vf = p_i[e, a], p_f[e, a]
                out_i[r, a] = vi
                out_f[r, a] = vf
                out_ok[r, a] = valid
        i = j
