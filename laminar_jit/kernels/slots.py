"""Kernels of slot-keyed operator state: which entries a watermark made due.

Windows, sessions, Dedup and TopN keep one slot per (key, window) or (key,
session) in a :mod:`hash table <.hashtable>`. When the watermark advances,
their fire functions need the entries whose bound (a window start, a session
end) plus an offset (``size + lateness``, ``lateness``) it has reached, in
(bound, key) order. :func:`due_slots` finds them; what the operator does with
each entry (finalize its aggregates, reset its fields) stays in the plan.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from .hashtable import ht_find
from .sorting import argsort_pairs

__all__ = ["due_slots"]

WM_MAX = np.iinfo(np.int64).max


@njit
def due_slots(buckets, keys, meta, aux, bound, offset, wm_now, ordered=True):
    """The entries with ``bound[s] + offset <= wm_now``, and the others.

    Parameters
    ----------
    buckets, keys, meta : numpy.ndarray
        The operator's hash table (see :mod:`.hashtable`).
    aux : numpy.ndarray
        int64 operator registers; ``aux[1]`` is the least bound still open
        (``WM_MAX``: none), which lets most calls skip the scan. It is
        updated to the least bound of the entries that stay.
    bound : numpy.ndarray
        int64 per slot: the value compared with the watermark (may be a
        strided view such as ``keys[:, 1]``).
    offset : int
        Added to the bound before the comparison.
    wm_now : int
        The operator's watermark.
    ordered : bool
        Work out ``order`` (False: an empty one, for operators that emit
        nothing as entries go, such as Dedup: the sort was a quarter of its time).

    Returns
    -------
    fired : numpy.ndarray
        int32 slots of the due entries, in scan order.
    order : numpy.ndarray
        Positions into ``fired`` ordering the due entries by (bound, key) (empty unless ``ordered``).
    kept : numpy.ndarray
        int32 slots of the entries that stay (for :func:`.ht_delete_many`).

    Notes
    -----
    The table is scanned by slot, not by bucket, whenever it has no more
    slots than its bucket array: slot order is about insertion order, so the
    entries' state is then read nearly in sequence (a bucket-order scan was
    20 % slower on the tumbling benchmark, and a scan of the active buckets
    alone, two to four per live entry, reads the entries out of order too).
    Freed slots hold the key (0, 0), so only slots with that key need a
    probe to tell whether they are live.
    """
    do_fire = aux[1] != WM_MAX and aux[1] + offset <= wm_now
    by_slot = meta[1] <= buckets.size
    scan = (meta[1] if by_slot else meta[4]) if do_fire else 0
    fired = np.empty(meta[0] if do_fire else 0, np.int32)
    kept = np.empty(meta[0] if do_fire else 0, np.int32)
    cnt = 0
    n_kept = 0
    low = WM_MAX
    for bkt in range(scan):
        if by_slot:
            s = np.int64(bkt)
            if keys[s, 0] == 0 and keys[s, 1] == 0:  # freed, or the live key (0, 0)
                if ht_find(buckets, keys, meta, np.int64(0), np.int64(0)) != s:
                    s = -1
        else:
            s = np.int64(buckets[bkt])
        if s >= 0:
            v = bound[s]
            if v + offset <= wm_now:
                fired[cnt] = s
                cnt += 1
            else:
                kept[n_kept] = s
                n_kept += 1
                if v < low:
                    low = v
    if do_fire:
        aux[1] = low
    if not ordered:
        return fired[:cnt], np.empty(0, np.int64), kept[:n_kept]
    kk = np.empty(cnt, np.int64)
    vv = np.empty(cnt, np.int64)
    for j in range(cnt):
        kk[j] = keys[fired[j], 0]
        vv[j] = bound[fired[j]]
    return fired[:cnt], argsort_pairs(vv, kk), kept[:n_kept]
