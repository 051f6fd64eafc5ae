"""TopN: the kept rows of due (key, window) slots, ranked.

A TopN node keeps, per (key, window) slot, up to ``n`` rows in columns of
``[slot, c]`` arrays (``count[s]`` of them, each with its arrival number
``seq[s, c]``). :func:`topn_rows` ranks the kept rows of the slots a
watermark made due; the plan copies the payload columns in that order.

``TopN(ties=True)`` (SQL ``rank() <= n``) also keeps *tie rows*: per slot
whose ``n`` places are taken, every other row equal in ``by`` to its n-th
best value (the worst kept one). They live in a pool of rows shared by all
slots (see :class:`laminar_jit.state.ties.TieRows`): per pool row its slot
(``tie_slot``, -1 when free), the next row of the same slot (``tie_next``)
and its arrival number (``tie_seq``); per slot the first of its rows
(``tie_head``, -1: none); and ``tie_pool = [free list head, high water,
live rows, the row the last offer took]``. The invariant: a slot's tie rows all equal its n-th best value.
When a better row pushes that value up, they all rank below ``n`` and are
freed at once. :func:`topn_tie_offer` places one row; :func:`topn_tie_rows`
ranks due slots' kept and tie rows; :func:`topn_tie_free` frees the tie
rows of fired slots. The pool never grows here: the state reserves one
pool row per input row before a call (a row adds at most one tie row).
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing

__all__ = ["topn_rows", "topn_tie_free", "topn_tie_offer", "topn_tie_rows"]

#: ``tie_pool`` registers: the head of the free list (-1: empty), rows ever handed out, rows in use,
#: and the tie row the last :func:`topn_tie_offer` took (-1: none).
TIE_FREE, TIE_HIGH_WATER, TIE_LIVE, TIE_TAKEN = 0, 1, 2, 3


@njit
def _rank_kept(s, m, by, seq, descending, idx):
    """Sort the ``m`` kept rows of slot ``s`` into ``idx[:m]``: best first, ties by arrival (insertion sort)."""
    for a in range(m):
        v = a
        e = a - 1
        while e >= 0:
            x = by[s, v]
            y = by[s, idx[e]]
            ahead = (x > y) if descending else (x < y)
            if not (ahead or (x == y and seq[s, v] < seq[s, idx[e]])):
                break
            idx[e + 1] = idx[e]
            e -= 1
        idx[e + 1] = v


@njit
def topn_rows(fired, order, count, by, seq, descending):
    """The output rows of due TopN slots: slot, column and rank, slot after slot.

    Parameters
    ----------
    fired, order : numpy.ndarray
        The due slots and their output order (see :func:`.due_slots`).
    count : numpy.ndarray
        Rows kept per slot.
    by : numpy.ndarray
        ``[slot, c]`` values of the ranking column.
    seq : numpy.ndarray
        ``[slot, c]`` arrival numbers: ties rank the earlier arrival first.
    descending : bool
        Rank larger values first.

    Returns
    -------
    row_slot, row_col, rank : numpy.ndarray
        int64 per output row: where its values are kept, and its rank from 1.
    """
    total = 0
    for o in range(fired.size):
        total += count[fired[o]]
    row_slot = np.empty(total, np.int64)
    row_col = np.empty(total, np.int64)
    rank = np.empty(total, np.int64)
    idx = np.empty(by.shape[1], np.int64)
    w = 0
    for o in range(fired.size):
        s = fired[order[o]]
        m = count[s]
        _rank_kept(s, m, by, seq, descending, idx)
        for a in range(m):
            row_slot[w] = s
            row_col[w] = idx[a]
            rank[w] = a + 1
            w += 1
    return row_slot, row_col, rank


@njit_borrowing
def _tie_alloc(s, tie_head, tie_pool, tie_slot, tie_next):
    """A free pool row, linked at the head of slot ``s``'s tie rows (-1 if the pool is full: a reserve bug)."""
    o = tie_pool[TIE_FREE]
    if o >= 0:
        tie_pool[TIE_FREE] = tie_next[o]
    elif tie_pool[TIE_HIGH_WATER] < tie_slot.size:  # (full cannot happen after the state's reserve)
        o = tie_pool[TIE_HIGH_WATER]
        tie_pool[TIE_HIGH_WATER] = o + 1
    if o >= 0:
        tie_pool[TIE_LIVE] += 1
        tie_slot[o] = s
        tie_next[o] = tie_head[s]
        tie_head[s] = o
    return o


@njit_borrowing
def _tie_release(s, tie_head, tie_pool, tie_slot, tie_next):
    """Put slot ``s``'s tie rows back on the free list."""
    first = tie_head[s]
    o = first
    last = first
    while o >= 0:
        tie_slot[o] = -1
        tie_pool[TIE_LIVE] -= 1
        last = o
        o = tie_next[o]
    if first >= 0:
        tie_next[last] = tie_pool[TIE_FREE]
        tie_pool[TIE_FREE] = first
        tie_head[s] = -1


@njit_borrowing
def topn_tie_offer(s, x, q, count, by, seq, descending, tie_head, tie_pool, tie_slot, tie_next, tie_seq):
    """Where a row with ranking value ``x`` (arrival ``q``) goes in slot ``s`` of a TopN keeping ties.

    The slot's ``n = by.shape[1]`` places fill first. Then a row equal to
    the worst kept value becomes a tie row; a better one replaces the worst
    kept row (the latest among equals), which becomes a tie row if another
    kept row still has its value, and otherwise takes the slot's tie rows
    with it (they all rank below ``n`` now). ``count``, the tie pool and
    ``tie_seq`` are updated here; the caller stores the row's values.

    Compiled without reference counting (``njit_borrowing``), so a plan's row loop
    calls it as a plain call LLVM inlines; it returns one number, so the second
    result is left in ``tie_pool[TIE_TAKEN]``.

    Returns
    -------
    c : int
        ``c >= 0``: store the row at ``[s, c]`` of the kept rows, after
        copying the row kept there to the tie row ``tie_pool[TIE_TAKEN]``
        when that is not -1. ``c == -1``: store the row as the tie row
        ``tie_pool[TIE_TAKEN]``, or drop it if that is -1.
    """
    top = by.shape[1]
    m = count[s]
    c = np.int64(-1)
    o = np.int64(-1)
    if m < top:
        count[s] = m + 1
        c = m
    else:
        worst = 0
        for d in range(1, top):  # the worst kept row, the latest of equals
            worse = (by[s, d] < by[s, worst]) if descending else (by[s, d] > by[s, worst])
            if worse or (by[s, d] == by[s, worst] and seq[s, d] > seq[s, worst]):
                worst = d
        w = by[s, worst]
        if (x > w) if descending else (x < w):
            c = worst
            tied = False
            for d in range(top):
                if d != worst and by[s, d] == w:
                    tied = True
                    break
            if tied:  # the n-th best value stays: the replaced row ties it
                o = _tie_alloc(s, tie_head, tie_pool, tie_slot, tie_next)
                if o >= 0:
                    tie_seq[o] = seq[s, worst]
            else:  # the n-th best value rises past the slot's tie rows: they rank below n now
                _tie_release(s, tie_head, tie_pool, tie_slot, tie_next)
        elif x == w:  # ties the n-th best value
            o = _tie_alloc(s, tie_head, tie_pool, tie_slot, tie_next)
            if o >= 0:
                tie_seq[o] = q
    tie_pool[TIE_TAKEN] = o
    return c


@njit
def topn_tie_rows(fired, order, count, by, seq, descending, tie_head, tie_next, tie_seq):
    """The output rows of due slots of a TopN keeping ties: slot, column or tie row, and SQL rank.

    Like :func:`topn_rows`, with ``rank`` 1 + the rows strictly better, and
    each slot's tie rows ranked with its kept rows of the n-th best value:
    that group is emitted in arrival order.

    Returns
    -------
    row_slot, row_col, rank : numpy.ndarray
        int64 per output row: its slot; ``row_col >= 0`` a kept row's column,
        else the tie row ``-1 - row_col``; its rank from 1.
    """
    total = 0
    for o in range(fired.size):
        s = fired[o]
        total += count[s]
        t = tie_head[s]
        while t >= 0:
            total += 1
            t = tie_next[t]
    row_slot = np.empty(total, np.int64)
    row_col = np.empty(total, np.int64)
    rank = np.empty(total, np.int64)
    idx = np.empty(by.shape[1], np.int64)
    w = 0
    for o in range(fired.size):
        s = fired[order[o]]
        m = count[s]
        _rank_kept(s, m, by, seq, descending, idx)
        last = m  # kept rows [last, m) rank with the tie rows (none without tie rows)
        if tie_head[s] >= 0:
            last = m - 1
            while last > 0 and by[s, idx[last - 1]] == by[s, idx[m - 1]]:
                last -= 1
        r = 0
        for a in range(last):
            if a == 0 or by[s, idx[a]] != by[s, idx[a - 1]]:
                r = a + 1
            row_slot[w] = s
            row_col[w] = idx[a]
            rank[w] = r
            w += 1
        if last == m:
            continue
        k = m - last
        t = tie_head[s]
        while t >= 0:
            k += 1
            t = tie_next[t]
        cols = np.empty(k, np.int64)
        seqs = np.empty(k, np.int64)
        for a in range(last, m):
            cols[a - last] = idx[a]
            seqs[a - last] = seq[s, idx[a]]
        j = m - last
        t = tie_head[s]
        while t >= 0:
            cols[j] = -1 - t
            seqs[j] = tie_seq[t]
            j += 1
            t = tie_next[t]
        for a in np.argsort(seqs):  # arrival numbers are unique
            row_slot[w] = s
            row_col[w] = cols[a]
            rank[w] = last + 1
            w += 1
    return row_slot, row_col, rank


@njit
def topn_tie_free(fired, tie_head, tie_pool, tie_slot, tie_next):
    """Free the tie rows of the slots ``fired`` (before the slots themselves are freed and reused)."""
    for o in range(fired.size):
        _tie_release(fired[o], tie_head, tie_pool, tie_slot, tie_next)
