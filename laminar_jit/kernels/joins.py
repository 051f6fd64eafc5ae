"""Row stores of the two-input join operators.

A join side keeps its buffered rows in parallel per-row arrays (event time,
arrival number, links, owning key slot, flags, payload columns). New rows are
appended after the last one, so a call writes its rows in sequence (reusing
freed rows, scattered wherever the watermark or a key's newer row freed them,
made a call's writes random: 3-6x slower per row); freed rows stay in place,
flagged, until the owner compacts the store between calls (see
:meth:`laminar_jit.state.joins.JoinState.reserve`).

Interval and window joins keep each slot's rows — one key within one time
bucket (the window, or ``event time >> shift`` for interval joins) — in a
singly linked list, newest arrival first: ``heads[slot, 2 * side]``, with
the list's length - 1 in ``heads[slot, 2 * side + 1]``.
Inserting is O(1) however late a row arrives. A probe looks up the at most
two buckets its range touches and sorts the partners it finds by event time
(:func:`order_partners`), so its cost is its matches plus those buckets'
other rows, never a walk over rows far ahead or behind in time. The
watermark frees rows in one sequential pass over a side's rows
(:func:`expire_buckets`).

As-of joins keep each key's rows in a doubly linked chain ordered by (event
time, arrival): ``heads[slot, 2 * side]`` is its oldest row,
``heads[slot, 2 * side + 1]`` its newest. Inserting walks back from the
newest row, so in-order input costs O(1); their watermark-driven passes are
in :mod:`.asof`.

``aux[base:base + 5]`` of a side holds ``high_water, first, live,
min_expiry, min_ts``, where every row before ``first`` is free (interval and
window joins, and the queued side of as-of joins; 0 otherwise); the owner guarantees room after the high
water before a call (see :class:`laminar_jit.state.joins.JoinState`).
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing
from .hashtable import ht_delete, ht_delete_many
from .sorting import argsort_pairs

__all__ = ["BACKWARD", "FORWARD", "INTERVAL", "NEAREST", "WINDOW", "chain_insert",
           "chain_unlink", "compact_heads", "compact_links", "compact_rows", "emitted_min", "expire_buckets",
           "live_rows", "order_partners", "order_settled", "reserve_pairs", "reserve_positions", "row_alloc",
           "row_release"]



@njit(inline="always")
def row_alloc(aux, base):
    """A new row after the last one of the side whose counters start at ``aux[base]``."""
    i = aux[base]
    aux[base] = i + 1
    aux[base + 2] += 1
    return i


@njit_borrowing
def row_release(aux, base, flag, i):
    """Free row ``i`` (after :func:`chain_unlink`): flagged 0, it stays in place until the store is compacted."""
    flag[i] = 0
    aux[base + 2] -= 1


@njit
def live_rows(flag, lo, hw):
    """The live rows of a side among rows ``lo`` to ``hw - 1`` (every row before ``lo`` is free), in order.

    Returns ``keep``, their numbers ascending, and ``new``: row ``lo + i``'s
    number once :func:`compact_rows` has moved ``keep`` to the front (-1 for
    a free row). One pass over the flags of the rows that may be live.
    """
    keep = np.empty(hw - lo, np.int64)
    new = np.empty(hw - lo, np.int64)
    j = 0
    for i in range(lo, hw):
        if flag[i] != 0:
            keep[j] = i
            new[i - lo] = j
            j += 1
        else:
            new[i - lo] = -1
    return keep[:j], new


@njit
def compact_rows(arr, keep):
    """Move the rows ``keep`` (ascending) of one row array to its front, in order (in place: row ``keep[j]``
    is never before ``j``). The rows after them are left as they are: a new row's fields are all written when
    it is appended."""
    for j in range(keep.size):
        arr[j] = arr[keep[j]]


@njit
def compact_links(arr, keep, new, lo):
    """:func:`compact_rows` of a link array: each moved link is renumbered by ``new`` of :func:`live_rows`
    (``lo`` its first row; a link to a free row, or -1, becomes -1 — such as the stale link of a row in no
    list, a row without a key, which nothing reads)."""
    for j in range(keep.size):
        q = arr[keep[j]] - lo
        arr[j] = new[q] if 0 <= q < new.size else -1


@njit
def compact_heads(heads, c, keep, slot):
    """After :func:`compact_rows` moved the rows ``keep`` to the front (``slot`` among them): the lists' rows in
    column ``c`` of ``heads`` renumbered. A list's first (or last) row is a live row or -1, so only the moved
    rows can be one: this costs the live rows, where renumbering the column costs every slot."""
    for j in range(keep.size):
        s = slot[j]
        if s >= 0 and heads[s, c] == keep[j]:
            heads[s, c] = j


@njit(inline="always")
def chain_insert(heads, h, s, ts, seq, nxt, prv, i):
    """Link row ``i`` into the chain of slot ``s`` (columns ``h``, ``h + 1`` of ``heads``) by (ts, seq)."""
    t = ts[i]
    q = seq[i]
    p = heads[s, h + 1]
    while p != -1 and (ts[p] > t or (ts[p] == t and seq[p] > q)):
        p = prv[p]
    if p == -1:  # new oldest row
        nx = heads[s, h]
        heads[s, h] = i
    else:
        nx = nxt[p]
        nxt[p] = i
    prv[i] = p
    nxt[i] = nx
    if nx == -1:
        heads[s, h + 1] = i
    else:
        prv[nx] = i


@njit_borrowing
def chain_unlink(heads, h, s, nxt, prv, i):
    """Remove row ``i`` from the chain of slot ``s``."""
    p = prv[i]
    nx = nxt[i]
    if p == -1:
        heads[s, h] = nx
    else:
        nxt[p] = nx
    if nx == -1:
        heads[s, h + 1] = p
    else:
        prv[nx] = p


@njit
def reserve_positions(out_p, n_out, more):
    """:func:`reserve_pairs` of a key shard's third pair array (the position of each pair's arriving row)."""
    if n_out + more <= out_p.size:
        return out_p
    grown = np.empty(max(2 * out_p.size, n_out + more), np.int64)
    for i in range(n_out):
        grown[i] = out_p[i]
    return grown


@njit
def reserve_pairs(out_l, out_r, n_out, more):
    """Output buffers with room for ``more`` pairs after the first ``n_out`` (the same ones when they fit).

    Loops write pairs straight into the buffers after reserving their worst
    case once; growing inside a hot loop would make Numba count references
    to the rebound arrays on every iteration.
    """
    if n_out + more <= out_l.size:
        return out_l, out_r
    size = max(2 * out_l.size, n_out + more)
    grown_l = np.empty(size, np.int64)
    grown_r = np.empty(size, np.int64)
    for i in range(n_out):  # a loop, not a slice assignment: see ``selection.concat``
        grown_l[i] = out_l[i]
        grown_r[i] = out_r[i]
    return grown_l, grown_r


# ----------------------------------------------------------------------------- watermark-driven passes
# Shared by every join node (the operator's geometry is passed at run time), so
# they compile once and come from Numba's disk cache in every later process.

INTERVAL, WINDOW = 0, 1
BACKWARD, FORWARD, NEAREST = 0, 1, 2
_WM_MIN = np.iinfo(np.int64).min
_WM_MAX = np.iinfo(np.int64).max


@njit
def _expiry(kind, t, a, b):
    """Time after which (strictly) a buffered row with event time ``t`` is useless.

    Interval joins pass ``a`` = upper (left rows) or -lower (right rows);
    window joins ``a`` = size and ``b`` = offset.
    """
    if kind == WINDOW:
        return ((t - b) // a) * a + b + a - 1
    return t + a


@njit
def _delete_slots(buckets, keys, meta, free, heads, dead):
    """Delete the key slots ``dead``, whose lists are all empty, from the table of an interval or window join."""
    if dead.size > meta[0] - dead.size:
        # most slots go at once (a bucket expires for all its keys together): rebuilding the
        # table around the slots that stay beats one backward-shift delete each
        kept = np.empty(meta[0] - dead.size, np.int64)
        m = 0
        for s in range(meta[1]):
            if (heads[s, 0] != -1 or heads[s, 2] != -1) and m < kept.size:
                kept[m] = s
                m += 1
        ht_delete_many(buckets, keys, meta, free, dead, kept[:m])
    else:  # (what ht_delete_many does with fewer deletions than survivors, without finding the survivors)
        for j in range(dead.size):
            ht_delete(buckets, keys, meta, free, dead[j])


@njit
def _release_side(side, buckets, keys, meta, free, heads, aux, base, flag):
    """:func:`expire_buckets` when every row of the side goes and none is emitted (an inner join's end of
    input): each row is released and each list of the side emptied in one sequential pass over the rows and
    one over the slots, instead of a random access per row to its slot. A slot whose other list is empty
    goes too, in slot order (the general pass frees slots in the order their first row went)."""
    h = 2 * side
    for i in range(aux[base + 1], aux[base]):
        flag[i] = 0
    aux[base + 2] = 0
    aux[base + 1] = aux[base]
    dead = np.empty(meta[0], np.int64)
    n_dead = 0
    for s in range(meta[1]):
        if heads[s, h] != -1:
            heads[s, h] = -1
            heads[s, h + 1] = -1
            if heads[s, 2 - h] == -1:
                dead[n_dead] = s
                n_dead += 1
    _delete_slots(buckets, keys, meta, free, heads, dead[:n_dead])
    aux[base + 3] = _WM_MAX
    aux[base + 4] = _WM_MAX


@njit
def expire_buckets(W, kind, a, b, emit, side, buckets, keys, meta, free, heads, aux, base,
                   ts, seq, slot, flag, nxt, out_l, out_r, n_out):
    """Free the rows of one side whose expiry the watermark ``W`` passed (interval and window joins).

    Rows never matched are emitted first when ``emit`` (outer and anti joins),
    paired with -1 on the other side (``side`` 0 = left), in (event time,
    arrival) order. One sequential pass over the side's rows frees them and
    notes the slots they leave; then each noted slot's list is cut down to
    its live rows — at once when none is left, the usual case, as a bucket
    expires whole — and a slot whose two lists are empty is freed.
    ``heads[slot, 2 * side + 1]`` holds the list's length - 1; during the
    pass, a noted slot's is ``-2 - live`` instead. The pass runs only when
    the side's least expiry has passed, starts at the side's first row that
    may be live (``aux[base + 1]``: rows expire about in the order they were
    appended, so the pass reads little more than the live rows), and leaves
    that row, the side's least expiry and event time in ``aux``. When the
    watermark is +inf and nothing is emitted (an inner join's end of input),
    :func:`_release_side` frees the side without visiting a slot per row.
    """
    if aux[base + 3] >= W:
        return out_l, out_r, n_out
    if W == _WM_MAX and not emit:  # the end of input of an inner join: every row goes, nothing is emitted
        _release_side(side, buckets, keys, meta, free, heads, aux, base, flag)
        return out_l, out_r, n_out
    if emit:  # (an inner join emits nothing here)
        out_l, out_r = reserve_pairs(out_l, out_r, n_out, aux[base + 2])
    h = 2 * side
    # a window join's row is live while its window holds W: its time is at least that window's start (one
    # division per pass instead of one per row); an interval join's while t + a >= W
    live_from = ((W - b) // a) * a + b if kind == WINDOW else _WM_MIN
    low_ts = _WM_MAX
    cut = np.empty(aux[base + 2], np.int64)
    n_cut = 0
    first = n_out
    start = aux[base]  # the first row left live
    for i in range(aux[base + 1], aux[base]):
        if flag[i] == 0:
            continue
        t = ts[i]
        if t >= live_from if kind == WINDOW else t + a >= W:
            low_ts = min(low_ts, t)
            start = min(start, i)
            continue
        if emit and flag[i] == 1:
            out_l[n_out] = i if side == 0 else -1
            out_r[n_out] = -1 if side == 0 else i
            n_out += 1
        s = slot[i]
        if s >= 0:
            v = heads[s, h + 1]
            if v >= -1:  # first row freed from this list: note the slot (live = v + 1, minus this row)
                cut[n_cut] = s
                n_cut += 1
                heads[s, h + 1] = -2 - v
            else:
                heads[s, h + 1] = v + 1
        row_release(aux, base, flag, i)
    order_settled(out_l, out_r, first, n_out, side, ts, seq)  # released rows keep their values
    n_dead = 0  # the slots to free, written over the front of ``cut`` (never ahead of the reads)
    for c in range(n_cut):
        s = cut[c]
        live = -2 - heads[s, h + 1]
        heads[s, h + 1] = live - 1
        if live == 0:
            heads[s, h] = -1
        else:
            prev = np.int64(-1)
            q = heads[s, h]
            while q != -1:
                nq = nxt[q]
                if flag[q] == 0:  # released by this pass (rows freed earlier are in no list)
                    if prev == -1:
                        heads[s, h] = nq
                    else:
                        nxt[prev] = nq
                else:
                    prev = q
                q = nq
        if heads[s, h] == -1 and heads[s, 2 - h] == -1:  # both lists empty: the slot goes
            cut[n_dead] = s
            n_dead += 1
    _delete_slots(buckets, keys, meta, free, heads, cut[:n_dead])
    aux[base + 1] = start
    aux[base + 3] = _WM_MAX if low_ts == _WM_MAX else _expiry(kind, low_ts, a, b)  # (monotone in t)
    aux[base + 4] = low_ts
    return out_l, out_r, n_out


#: Partners of one probe up to this many are ordered by insertion sort (they arrive nearly
#: ordered); more go through the radix argsort.
_INSERTION_MAX = 32


@njit
def order_partners(out_l, out_r, start, n_out, partner_left, ts, seq):
    """Order the pairs ``[start, n_out)`` of one probe newest partner first, by (event time, arrival).

    The partner is the pair's left row when ``partner_left``, else its right
    row; ``ts``/``seq`` are the partner side's. Lists hold rows newest
    arrival first and buckets are visited newest first, so the pairs come
    nearly ordered and a small probe's insertion sort does little work.
    """
    m = n_out - start
    rows = out_l if partner_left else out_r
    other = out_r if partner_left else out_l
    if m <= _INSERTION_MAX:
        for e in range(start + 1, n_out):
            r = rows[e]
            o = other[e]
            t = ts[r]
            q = seq[r]
            j = e - 1
            while j >= start and (ts[rows[j]] < t or (ts[rows[j]] == t and seq[rows[j]] < q)):
                rows[j + 1] = rows[j]
                other[j + 1] = other[j]
                j -= 1
            rows[j + 1] = r
            other[j + 1] = o
        return
    major = np.empty(m, np.int64)
    minor = np.empty(m, np.int64)
    old_r = np.empty(m, np.int64)
    old_o = np.empty(m, np.int64)
    for e in range(m):  # ~x reverses the order without overflow: ascending sort, newest first
        r = rows[start + e]
        major[e] = ~ts[r]
        minor[e] = ~seq[r]
        old_r[e] = r
        old_o[e] = other[start + e]
    order = argsort_pairs(major, minor)
    for e in range(m):
        rows[start + e] = old_r[order[e]]
        other[start + e] = old_o[order[e]]


@njit
def order_settled(out_l, out_r, start, n_out, side, ts, seq):
    """Reorder the pairs ``[start, n_out)`` by (event time, arrival) of their row on ``side`` (0 = left).

    The watermark settles rows in row-store order (an expiry scan) or in the
    order keys got queued rows (as-of resolution), both accidents of the
    state's history; sorting makes the order of one call's settled rows a
    property of the rows alone (README: "Order of output rows"). Only settled
    rows are sorted: not at all when they are in order already (an expiry
    scan of rows that came in time order), by their arrival numbers when
    those put them in time order too (an as-of resolution of rows that came
    in time order: one pass placing each at its number), else with the
    radix argsort windows use.
    """
    m = n_out - start
    if m < 2:
        return
    rows = out_l if side == 0 else out_r
    major = np.empty(m, np.int64)
    minor = np.empty(m, np.int64)
    old_l = np.empty(m, np.int64)
    old_r = np.empty(m, np.int64)
    ordered = True
    for e in range(m):  # loops, not slice copies: see ``selection.concat``
        i = rows[start + e]
        major[e] = ts[i]
        minor[e] = seq[i]
        old_l[e] = out_l[start + e]
        old_r[e] = out_r[start + e]
        if e > 0 and (major[e] < major[e - 1] or (major[e] == major[e - 1] and minor[e] < minor[e - 1])):
            ordered = False
    if ordered:
        return
    order = _by_arrival(major, minor)
    if order.size == 0:
        order = argsort_pairs(major, minor)
    for e in range(m):
        out_l[start + e] = old_l[order[e]]
        out_r[start + e] = old_r[order[e]]


@njit
def _by_arrival(major, minor):
    """The order of rows by arrival number ``minor`` if it orders them by (``major``, ``minor``) too; else an
    empty array (also when the numbers repeat or are too sparse to place each at its own)."""
    m = minor.size
    lo, hi = minor.min(), minor.max()
    if hi - lo >= 4 * m:
        return np.empty(0, np.int64)
    at = np.full(hi - lo + 1, -1, np.int64)
    for e in range(m):
        p = minor[e] - lo
        if at[p] != -1:
            return np.empty(0, np.int64)
        at[p] = e
    order = np.empty(m, np.int64)
    j = 0
    for p in range(at.size):
        e = at[p]
        if e != -1:
            if j > 0 and major[e] < major[order[j - 1]]:
                return np.empty(0, np.int64)
            order[j] = e
            j += 1
    return order


@njit
def emitted_min(pl, m, ts):
    """The least event time ``ts`` of the left rows of the first ``m`` pairs ``pl`` (int64 max when none).

    A join's output watermark must not pass a row it emitted in the same call:
    rows that reach an operator through a boundary step arrive after the step
    that set the watermark (a semi, anti or outer join no longer buffers the
    left rows it emitted, so its oldest buffered row no longer holds it back).
    """
    out = np.iinfo(np.int64).max
    for e in range(m):
        i = pl[e]
        if i >= 0 and ts[i] < out:
            out = ts[i]
    return out
