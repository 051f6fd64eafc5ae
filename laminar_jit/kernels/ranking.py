"""TopN: the kept rows of due (key, window) slots, ranked.

A TopN node keeps, per (key, window) slot, up to ``n`` rows in columns of
``[slot, c]`` arrays (``count[s]`` of them, each with its arrival number
``seq[s, c]``). :func:`topn_rows` ranks the kept rows of the slots a
watermark made due; the plan copies the payload columns in that order.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["topn_rows"]


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
        for a in range(m):  # insertion sort of the kept rows: best first, ties by arrival
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
        for a in range(m):
            row_slot[w] = s
            row_col[w] = idx[a]
            rank[w] = a + 1
            w += 1
    return row_slot, row_col, rank
