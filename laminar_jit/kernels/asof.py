"""The as-of join's watermark-driven passes: emitting the left rows whose match is settled.

An as-of join keeps each key's rows of a side in a doubly linked chain
ordered by (event time, arrival) (see :mod:`.joins`, which also holds the
row stores, the chains and the constants these passes use). As the
watermark advances, :func:`asof_fire` emits the queued left rows whose match
no right row still to come can change, and frees the right rows no queued
row needs; :func:`asof_prune` frees, as right rows arrive, those no left row
at or after a time can match.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from .hashtable import ht_delete
from .joins import (
    _WM_MAX,
    _WM_MIN,
    BACKWARD,
    FORWARD,
    chain_unlink,
    order_settled,
    reserve_pairs,
    row_release,
)

__all__ = ["asof_fire", "asof_prune"]


@njit(inline="always")
def asof_prune(direction, tol, s, h, buckets, keys, meta, free, heads, aux, base, ts, nxt, prv, flag):
    """Free right rows of slot ``s`` that no left row at or after ``h`` can match (``tol`` < 0: none)."""
    q = heads[s, 2]
    while q != -1:
        if direction == FORWARD:
            if ts[q] >= h:
                break
        elif nxt[q] == -1 or ts[nxt[q]] >= h:  # keep the last row before h: the next rows' backward match
            break
        chain_unlink(heads, 2, s, nxt, prv, q)
        row_release(aux, base, flag, q)
        q = heads[s, 2]
    if tol >= 0 and direction != FORWARD and q != -1 and nxt[q] == -1 and h > _WM_MIN + tol and ts[q] < h - tol:
        chain_unlink(heads, 2, s, nxt, prv, q)
        row_release(aux, base, flag, q)


@njit
def asof_fire(W, direction, tol, emit_unmatched, buckets, keys, meta, free, heads, active, aux, lbase, rbase,
              lts, lseq, lnxt, lprv, lslot, lflag, rts, rnxt, rprv, rflag, out_l, out_r, n_out):
    """Emit the queued left rows whose as-of match the watermark ``W`` has settled; prune right rows.

    Walks the keys with queued rows (``active[1:active[0] + 1]``), merging each
    key's left chain with its right chain in time order. A left row at ``t <
    W`` is decided when no right row still to come can beat its candidate:
    backward always; forward once a row in ``[t, W)`` exists; nearest also
    when the backward candidate is at least as close as ``W`` is. At ``W`` =
    +inf every row is decided. ``tol`` < 0 means no tolerance. The rows come
    out in (left event time, arrival) order. A backward join decides every
    row before ``W``: :func:`_asof_backward` reads them in the order they
    came instead of key by key.
    """
    out_l, out_r = reserve_pairs(out_l, out_r, n_out, aux[lbase + 2])
    if direction == BACKWARD:
        return _asof_backward(W, tol, emit_unmatched, buckets, keys, meta, free, heads, active, aux, lbase, rbase,
                              lts, lseq, lnxt, lprv, lslot, lflag, rts, rnxt, rprv, rflag, out_l, out_r, n_out)
    first = n_out
    na = active[0]
    a = 1
    low_ts = _WM_MAX
    while a <= na:
        s = active[a]
        li = heads[s, 0]
        rb = np.int64(-1)
        r = heads[s, 2]
        while li != -1 and lts[li] < W:
            t = lts[li]
            while r != -1 and rts[r] <= t:
                rb = r
                r = rnxt[r]
            # f: the forward candidate, the last-arrived row of the earliest time >= t
            f = r
            if rb != -1 and rts[rb] == t:
                f = rb
            else:
                while f != -1 and rnxt[f] != -1 and rts[rnxt[f]] == rts[f]:
                    f = rnxt[f]
            settled = f != -1 and rts[f] < W
            end = W == _WM_MAX or (tol >= 0 and t + tol < W)
            if direction == BACKWARD:
                due = True
                best = rb
            elif direction == FORWARD:
                due = settled or end
                best = f if settled else np.int64(-1)
            else:
                due = settled or end or (rb != -1 and W - t >= t - rts[rb])
                if rb == -1:
                    best = f if settled else np.int64(-1)
                elif not settled or t - rts[rb] <= rts[f] - t:
                    best = rb
                else:
                    best = f
            if not due:
                break
            if best != -1 and tol >= 0 and (rts[best] - t > tol or t - rts[best] > tol):
                best = np.int64(-1)
            if best != -1 or emit_unmatched:
                out_l[n_out] = li
                out_r[n_out] = best
                n_out += 1
            nl = lnxt[li]
            row_release(aux, lbase, lflag, li)
            li = nl
        # the emitted rows were the oldest of the chain: cut them off at once
        low_ts = min(low_ts, _settle_key(W, direction, tol, s, li, buckets, keys, meta, free, heads, aux, rbase,
                                         lts, lprv, rts, rnxt, rprv, rflag))
        if li == -1:
            active[a] = active[na]
            na -= 1
        else:
            a += 1
    active[0] = na
    aux[lbase + 4] = low_ts
    order_settled(out_l, out_r, first, n_out, np.int64(0), lts, lseq)
    return out_l, out_r, n_out


@njit(inline="always")
def _settle_key(W, direction, tol, s, li, buckets, keys, meta, free, heads, aux, rbase, lts, lprv, rts, rnxt, rprv,
                rflag):
    """Start key ``s``'s chain of queued left rows at ``li`` (-1: none left), free the right rows no queued row
    needs and, once the key holds no rows, its slot. Returns the event time of ``li`` (int64 max: none)."""
    heads[s, 0] = li
    if li == -1:
        heads[s, 1] = -1
    else:
        lprv[li] = -1
    t = _WM_MAX if li == -1 else lts[li]
    asof_prune(direction, tol, s, min(W, t), buckets, keys, meta, free, heads, aux, rbase, rts, rnxt, rprv, rflag)
    if li == -1 and heads[s, 2] == -1:
        ht_delete(buckets, keys, meta, free, s)
    return t


@njit
def _asof_backward(W, tol, emit_unmatched, buckets, keys, meta, free, heads, active, aux, lbase, rbase,
                   lts, lseq, lnxt, lprv, lslot, lflag, rts, rnxt, rprv, rflag, out_l, out_r, n_out):
    """:func:`asof_fire` of a backward join: every queued left row before ``W`` is decided.

    One pass over the left rows in the order they were appended (from the
    first that may be live): each due row takes the last right row of its
    key at or before its time, found from where the key's previous row left
    off (forward along the key's right chain, or back for a row older than
    that one). Reading the rows in sequence, rather than each key's chain in
    turn, reads the store as it lies in memory. A key's due rows are the
    oldest of its chain, so they are cut off at once afterwards, from the
    latest of them; then the key's right rows no queued row needs are freed.
    """
    na = active[0]
    cursor = np.empty(heads.shape[0], np.int64)  # per key: the right row its last due row took (-1: none yet)
    last = np.empty(heads.shape[0], np.int64)  # per key: its due row latest by (time, arrival) (-1: none)
    for a in range(1, na + 1):
        cursor[active[a]] = -1
        last[active[a]] = -1
    first = n_out
    start = aux[lbase]  # the first row left live
    for li in range(aux[lbase + 1], aux[lbase]):
        if lflag[li] == 0:
            continue
        t = lts[li]
        if t >= W:
            start = min(start, li)
            continue
        s = lslot[li]
        c = cursor[s]
        if c != -1 and rts[c] > t:  # older than the key's row before it: step back
            while c != -1 and rts[c] > t:
                c = rprv[c]
        else:
            nx = heads[s, 2] if c == -1 else rnxt[c]
            while nx != -1 and rts[nx] <= t:
                c = nx
                nx = rnxt[nx]
        cursor[s] = c
        best = c
        if best != -1 and tol >= 0 and t - rts[best] > tol:
            best = np.int64(-1)
        if best != -1 or emit_unmatched:
            out_l[n_out] = li
            out_r[n_out] = best
            n_out += 1
        b = last[s]
        if b == -1 or t > lts[b] or (t == lts[b] and lseq[li] > lseq[b]):
            last[s] = li
        row_release(aux, lbase, lflag, li)
    low_ts = _WM_MAX
    a = 1
    while a <= na:
        s = active[a]
        b = last[s]
        li = heads[s, 0] if b == -1 else lnxt[b]  # the due rows were the oldest of the chain: cut them off at once
        low_ts = min(low_ts, _settle_key(W, BACKWARD, tol, s, li, buckets, keys, meta, free, heads, aux, rbase,
                                         lts, lprv, rts, rnxt, rprv, rflag))
        if li == -1:
            active[a] = active[na]
            na -= 1
        else:
            a += 1
    active[0] = na
    aux[lbase + 1] = start
    aux[lbase + 4] = low_ts
    order_settled(out_l, out_r, first, n_out, np.int64(0), lts, lseq)
    return out_l, out_r, n_out
