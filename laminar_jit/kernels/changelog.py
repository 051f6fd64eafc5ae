"""Kernels of updating results: a non-windowed group aggregate and applying changelogs.

A :class:`~laminar_jit.GroupAggregate` node keeps one slot per key in a
key table (see :mod:`.hashtable`), and a key's state in one row of two
arrays, so that folding a row in or emitting a key touches a few adjacent
cache lines (``A`` aggregates; positions from :func:`rec_columns`):

``rec`` int64[slots, 3 A + 5]
    Per aggregate ``a`` the non-null values folded in (added minus
    retracted; column ``A`` counts the key's rows), the integer accumulator
    (sum, or current min/max) and the integer result last emitted; then
    ``SHOWN`` (1 while the key's result is emitted and not retracted),
    ``MARK`` (the call that last touched the key; 0 for a free slot),
    ``LAST`` (the greatest event time folded in, for the idle-state TTL) and
    ``FLAGS`` (which emitted results were null; which min/max lost their
    value to a retraction and are found again when the node emits).
``frec`` float64[slots, 2 A]
    The floating accumulators, then the floating results last emitted.
``odd`` int64[slots, 3 A]
    Only for float sums/means over a changelog (else no rows): how many NaN,
    +inf and -inf the sum holds, kept apart from the finite part so that
    retracting them works.

Min and max over a changelog, and every ``count_distinct``, keep each
distinct value of a key with its multiplicity (as Flink's ``MinWithRetractAggFunction`` keeps a map), in a
second key table keyed by ``(slot * A + a, value bits)``: ``mlist[e]`` is
``(count, next, prev)`` of entry ``e`` and ``mhead[slot, a]`` the first
entry of the key's list (``mhead`` has no rows when no min/max needs it). Retracting the current minimum walks the key's
distinct values once, when the node emits.

The generated step folds rows in (its text adds to these arrays, calling
:func:`ms_add`/:func:`ms_remove` for min/max over a changelog) and
collects the keys it touched; :func:`group_emit` then writes the changes.
"""

from __future__ import annotations

import numpy as np

from .._jit import JIT_DISABLED, njit, njit_borrowing
from .strings import str_less
from .hashtable import ht_delete, ht_find, ht_find_or_insert
from .sorting import sorted_values

__all__ = [
    "COUNT_ROWS", "COUNT", "COUNT_DISTINCT", "MAX", "MEAN", "MIN", "SUM",
    "f64_bits", "float_bits", "group_emit", "group_forget", "group_purge", "ms_add", "ms_remove", "net_rows",
    "rank_key_f64", "rank_key_i64", "ranked_emit", "ranked_forget", "ranked_insert", "ranked_purge", "rec_columns",
    "refind_strings",
    "slot_order", "R_CNT", "R_CUR", "R_ECNT", "R_ESEQ", "R_KEY", "R_KEY2", "R_LAST", "R_MARK", "R_SEQ",
]

#: Aggregate kinds (``kinds[a]``).
COUNT_ROWS, COUNT, SUM, MEAN, MIN, MAX, COUNT_DISTINCT = 0, 1, 2, 3, 4, 5, 6
#: Flink RowKind codes.
_INSERT, _UPDATE_BEFORE, _UPDATE_AFTER, _DELETE = 0, 1, 2, 3


if JIT_DISABLED:
    def _f2i(x):
        return np.int64(np.float64(x).view(np.int64))

    def _i2f(b):
        return np.float64(np.int64(b).view(np.float64))
else:
    from numba.core import types
    from numba.extending import intrinsic

    @intrinsic
    def _f2i(typingctx, x):
        """The bits of a float64 as an int64."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.int64))
        return types.int64(types.float64), codegen

    @intrinsic
    def _i2f(typingctx, b):
        """The float64 whose bits an int64 holds."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float64))
        return types.float64(types.int64), codegen


@njit(inline="always")
def f64_bits(x):
    """A float's identity as an int64: its bits, with -0.0 as 0.0 and one NaN for all NaNs.

    (-0.0 is found by its bits: the package's fast-math flags include ``nsz``,
    under which LLVM folds ``x + 0.0`` and float tests for zero away.)
    """
    v = np.float64(x)
    if v != v:
        return np.int64(0x7FF8000000000000)
    bits = _f2i(v)
    if bits == np.int64(-0x8000000000000000):
        return np.int64(0)
    return bits


@njit(inline="always")
def _better(x, cur, is_max):
    """Whether ``x`` replaces ``cur`` as minimum (maximum): NaN sorts above every number, as in DuckDB."""
    if is_max:
        return x > cur or (x != x and cur == cur)
    return x < cur or (cur != cur and x == x)


@njit_borrowing
def _float_sum(frec, odd, s, a):
    """A float sum: its finite part plus, over a changelog, counts of NaN, +inf and -inf (retractable)."""
    if odd.shape[0] == 0:
        return frec[s, a]
    nan, pos, neg = odd[s, 3 * a], odd[s, 3 * a + 1], odd[s, 3 * a + 2]
    if nan > 0 or (pos > 0 and neg > 0):
        return np.nan
    if pos > 0:
        return np.inf
    if neg > 0:
        return -np.inf
    return frec[s, a]


@njit
def slot_order(dirty, high_water):
    """The touched slots ``dirty`` in slot order: the order their state lies in memory.

    Emitting keys in slot order reads their state front to back instead of at
    random (3-4x faster with ~100 K keys or more). Many slots: a bitmap over
    ``[0, high_water)`` scanned once; few: a sort.
    """
    if dirty.size * 8 < high_water:
        return sorted_values(dirty)
    seen = np.zeros(high_water, np.bool_)
    for j in range(dirty.size):
        seen[dirty[j]] = True
    out = np.empty(dirty.size, np.int64)
    m = 0
    for s in range(high_water):
        if seen[s]:
            out[m] = s
            m += 1
    return out[:m]


@njit_borrowing
def ms_add(mb, mk, mm, mf, mlist, mhead, s, a, n_aggs, bits):
    """Count one more value ``bits`` of aggregate ``a`` of slot ``s``; True when it is new to the key (it joins
    the key's list)."""
    e = ht_find_or_insert(mb, mk, mm, mf, s * n_aggs + a, bits)
    new = mlist[e, 0] == 0
    if new:
        h = mhead[s, a]
        mlist[e, 1] = h
        mlist[e, 2] = -1
        if h >= 0:
            mlist[h, 2] = e
        mhead[s, a] = e
    mlist[e, 0] += 1
    return new


@njit_borrowing
def ms_remove(mb, mk, mm, mf, mlist, mhead, s, a, n_aggs, bits):
    """Count one value ``bits`` of aggregate ``a`` of slot ``s`` less; True when its last copy went."""
    e = ht_find(mb, mk, mm, s * n_aggs + a, bits)
    gone = False
    if e >= 0:  # (a retraction of a value never added: nothing to take away)
        mlist[e, 0] -= 1
        if mlist[e, 0] <= 0:
            _unlink(mb, mk, mm, mf, mlist, mhead, s, a, e)
            gone = True
    return gone


@njit_borrowing
def _unlink(mb, mk, mm, mf, mlist, mhead, s, a, e):
    nxt, prv = mlist[e, 1], mlist[e, 2]
    if prv >= 0:
        mlist[prv, 1] = nxt
    else:
        mhead[s, a] = nxt
    if nxt >= 0:
        mlist[nxt, 2] = prv
    mlist[e, 0] = 0
    ht_delete(mb, mk, mm, mf, e)


def rec_columns(n_aggs):
    """Positions in ``rec`` of a node with ``n_aggs`` aggregates: (ival, SHOWN, MARK, LAST, oi, FLAGS, width).

    ``rec[s, a]`` (``a <= n_aggs``) are the counts, ``ival`` + a the integer
    accumulators, ``oi`` + a the integer results last emitted; ``FLAGS`` holds
    bit ``a`` (the result of ``a`` last emitted was null) and bit ``32 + a``
    (min/max ``a`` lost its value to a retraction: found again on emit).
    """
    ival = n_aggs + 1
    shown = 2 * n_aggs + 1
    return ival, shown, shown + 1, shown + 2, shown + 3, 3 * n_aggs + 4, 3 * n_aggs + 5


_rec_columns = njit(inline="always")(rec_columns) if not JIT_DISABLED else rec_columns


@njit
def _refind(mk, mlist, mhead, rec, frec, s, a, col, is_float, is_max):
    """Set a stale min/max ``a`` of slot ``s`` (at ``rec[s, col]`` or ``frec[s, a]``) from the key's values."""
    e = mhead[s, a]
    first = True
    while e >= 0:
        bits = mk[e, 1]
        if is_float:
            x = _i2f(bits)
            if first or _better(x, frec[s, a], is_max):
                frec[s, a] = x
        elif first or (bits > rec[s, col] if is_max else bits < rec[s, col]):
            rec[s, col] = bits
        first = False
        e = mlist[e, 1]


@njit
def refind_strings(dirty, a, col, flags, is_max, offsets, data, rec, mk, mlist, mhead):
    """Set the stale min/max ``a`` of the slots in ``dirty`` from their keys' values, comparing bytes.

    For an aggregate of a string column the values are dictionary codes
    (``rec[s, col]``), whose order is not the strings': this finds the least
    (greatest) code by its value ``data[offsets[c]:offsets[c + 1]]`` and clears
    the stale flag (bit ``32 + a`` of ``rec[s, flags]``), so :func:`group_emit`
    does not look again by number. Called before it, once per such aggregate.
    """
    bit = np.int64(1) << (32 + a)
    for j in range(dirty.size):
        s = dirty[j]
        if not rec[s, flags] & bit:
            continue
        e = mhead[s, a]
        first = True
        while e >= 0:
            code = mk[e, 1]
            if first or (str_less(offsets, data, rec[s, col], code) if is_max
                         else str_less(offsets, data, code, rec[s, col])):
                rec[s, col] = code
            first = False
            e = mlist[e, 1]
        rec[s, flags] &= ~bit


@njit
def _clear(rec, frec, odd, mb, mk, mm, mf, mlist, mhead, s):
    """Empty slot ``s``'s aggregates, results and min/max value lists (keeping its MARK)."""
    n_aggs = frec.shape[1] // 2
    _, shown, mark, last, _, _, width = _rec_columns(n_aggs)
    if mhead.shape[0]:
        for a in range(n_aggs):
            e = mhead[s, a]
            while e >= 0:
                nxt = mlist[e, 1]
                mlist[e, 0] = 0
                ht_delete(mb, mk, mm, mf, e)
                e = nxt
            mhead[s, a] = -1
    if odd.shape[0]:
        odd[s, :] = 0
    keep = rec[s, mark]
    rec[s, :] = 0
    rec[s, mark] = keep
    rec[s, last] = np.iinfo(np.int64).min
    frec[s, :] = 0.0


@njit
def group_forget(rec, frec, odd, mb, mk, mm, mf, mlist, mhead, s):
    """Drop slot ``s``'s state as if the key had never been seen (its idle-state TTL passed).

    Its emitted result is not retracted (Flink's behaviour): the key starts
    again with an insert. The slot stays, with its mark, for this call.
    """
    _clear(rec, frec, odd, mb, mk, mm, mf, mlist, mhead, s)


@njit
def _free(tb, tk, tm, tf, rec, frec, odd, mb, mk, mm, mf, mlist, mhead, s):
    _clear(rec, frec, odd, mb, mk, mm, mf, mlist, mhead, s)
    rec[s, _rec_columns(frec.shape[1] // 2)[2]] = 0  # MARK: a free slot
    ht_delete(tb, tk, tm, tf, s)


@njit
def group_emit(dirty, kinds, floats, tb, tk, tm, tf, rec, frec, odd, mb, mk, mm, mf, mlist, mhead):
    """The changes of the keys in ``dirty`` (slots touched this call), in slot order (:func:`slot_order`).

    Per key: ``+I`` its result when it had none; ``-U`` the old and ``+U``
    the new result when it changed (an unchanged result emits nothing, as in
    Flink); ``-D`` the old result when its rows were all retracted (the slot
    is then freed). Returns ``(keys, ops, ints, floats, nulls)``: the key ids
    and RowKind codes of the output rows and, per aggregate ``a``, its values
    ``ints[a]`` or ``floats[a]`` and null flags ``nulls[a]``.
    """
    n_aggs = kinds.size
    ival, shown_col, _, _, oi, flags, _ = _rec_columns(n_aggs)
    dirty = slot_order(dirty, tm[1])
    cap = 2 * dirty.size
    okeys = np.empty(cap, np.int64)
    oops = np.empty(cap, np.int8)
    vi = np.empty((n_aggs, cap), np.int64)
    vf = np.empty((n_aggs, cap), np.float64)
    vn = np.empty((n_aggs, cap), np.bool_)
    ni = np.zeros(n_aggs, np.int64)
    nf = np.zeros(n_aggs, np.float64)
    nn = np.zeros(n_aggs, np.bool_)
    m = 0
    for j in range(dirty.size):
        s = dirty[j]
        rows = rec[s, n_aggs]
        shown = rec[s, shown_col] == 1
        old_flags = rec[s, flags]
        changed = not shown
        for a in range(n_aggs):
            kind = kinds[a]
            c = rec[s, a]
            ni[a], nf[a], nn[a] = 0, 0.0, False
            if kind == COUNT_ROWS:
                ni[a] = rows
            elif kind == COUNT or kind == COUNT_DISTINCT:
                ni[a] = c
            elif c <= 0:
                nn[a] = True
            elif kind == SUM:
                ni[a], nf[a] = rec[s, ival + a], _float_sum(frec, odd, s, a)
            elif kind == MEAN:
                nf[a] = _float_sum(frec, odd, s, a) / c
            else:
                if (old_flags >> (32 + a)) & 1:
                    _refind(mk, mlist, mhead, rec, frec, s, a, ival + a, floats[a], kind == MAX)
                ni[a], nf[a] = rec[s, ival + a], frec[s, a]
            if shown and not changed:
                old = frec[s, n_aggs + a]
                same_f = nf[a] == old or (nf[a] != nf[a] and old != old)
                changed = nn[a] != ((old_flags >> a) & 1) or ni[a] != rec[s, oi + a] or not same_f
        key = tk[s, 0]
        if shown and (rows <= 0 or changed):  # retract what was emitted
            okeys[m] = key
            oops[m] = _DELETE if rows <= 0 else _UPDATE_BEFORE
            for a in range(n_aggs):
                vi[a, m], vf[a, m], vn[a, m] = rec[s, oi + a], frec[s, n_aggs + a], (old_flags >> a) & 1
            m += 1
        if rows > 0 and changed:
            okeys[m] = key
            oops[m] = _UPDATE_AFTER if shown else _INSERT
            nulls = 0
            for a in range(n_aggs):
                vi[a, m], vf[a, m], vn[a, m] = ni[a], nf[a], nn[a]
                rec[s, oi + a], frec[s, n_aggs + a] = ni[a], nf[a]
                if nn[a]:
                    nulls |= 1 << a
            rec[s, shown_col] = 1
            rec[s, flags] = nulls
            m += 1
        else:
            rec[s, flags] = old_flags & 0xFFFFFFFF  # stale min/max were found again
        if rows <= 0:  # nothing left of the key (or only retractions of rows never seen)
            _free(tb, tk, tm, tf, rec, frec, odd, mb, mk, mm, mf, mlist, mhead, s)
    return okeys[:m], oops[:m], vi[:, :m], vf[:, :m], vn[:, :m]


@njit
def group_purge(watermark, ttl, tb, tk, tm, tf, rec, frec, odd, mb, mk, mm, mf, mlist, mhead):
    """Free every key whose idle-state TTL passed (its last event time + ``ttl`` <= ``watermark``).

    Returns how many keys were freed. Their emitted results are not retracted.
    """
    freed = 0
    if watermark == np.iinfo(np.int64).min:
        return freed
    _, _, mark, last, _, _, _ = _rec_columns(frec.shape[1] // 2)
    for s in range(tm[1]):
        if rec[s, mark] != 0 and rec[s, last] <= watermark - ttl:
            _free(tb, tk, tm, tf, rec, frec, odd, mb, mk, mm, mf, mlist, mhead, s)
            freed += 1
    return freed


# ----------------------------------------------------------------------------- ranked rows (TopN, Dedup)
# An unbounded TopN (and Dedup(keep="last"), a TopN of one row by event time) keeps per key slot ``s``
# its best ``n`` rows, best first, in rows ``s * n + r`` of one int64 array ``R`` (a row's fields are
# adjacent, so offering a row or emitting a key touches a cache line or two):
#   R_KEY   the rank key of the current row at rank r (larger is better), R_SEQ its arrival number;
#   R_ESEQ  the arrival number of the row last emitted at rank r;
#   R_CNT, R_ECNT, R_MARK, R_LAST (in the slot's first row only): rows held now and as last emitted,
#           the call that last changed the slot (0: a free slot), the latest event time offered to it;
#   then the current row's columns (width W: every column as int64 — integers and codes as they are,
#   floats as their bits — and a bitmask of which are valid), then the last emitted row's.
R_KEY, R_SEQ, R_ESEQ, R_CNT, R_ECNT, R_MARK, R_LAST, R_KEY2, R_CUR = 0, 1, 2, 3, 4, 5, 6, 7, 8


@njit(inline="always")
def rank_key_f64(x, descending):
    """An int64 that orders like float ``x`` (or reversed for ``descending=False``): larger ranks first."""
    bits = _f2i(np.float64(x))
    if bits == np.int64(-0x8000000000000000):  # -0.0 ranks as 0.0 (an integer test: fast-math's nsz
        bits = np.int64(0)                      # folds ``x + 0.0`` and a float select away)
    key = bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF)
    return key if descending else ~key


@njit(inline="always")
def rank_key_i64(x, descending):
    """An int64 rank key for integer ``x``: larger ranks first (``~x`` reverses without overflow)."""
    v = np.int64(x)
    return v if descending else ~v


@njit(inline="always")
def float_bits(x):
    """A float's bits as int64, for the int64 row store (``.view(np.float64)`` reads them back)."""
    return _f2i(np.float64(x))


@njit_borrowing
def ranked_insert(R, s, n, key, key2, q, later_wins):
    """Put a row (rank keys ``key`` then ``key2``, arrival ``q``) into slot ``s``'s best-first list of at most
    ``n`` rows.

    Rows equal in ``key`` are ordered by ``key2`` (larger first; 0 for all
    without a second ORDER BY column); full ties go to the earlier row, or with ``later_wins`` to the later one. The
    rows after it move down one place (the last of a full list falls off).
    Returns the row's place, or -1 when it does not make the list; the caller
    then writes its columns to ``R[s * n + place, R_CUR:]``.
    """
    base = s * n
    m = R[base, R_CNT]
    pos = m
    for r in range(m):
        other = R[base + r, R_KEY]
        if key > other or (key == other and (key2 > R[base + r, R_KEY2]
                                             or (key2 == R[base + r, R_KEY2] and later_wins))):
            pos = r
            break
    if pos >= n:
        pos = -1
    else:
        width = (R.shape[1] - R_CUR) // 2
        last = m if m < n else n - 1  # rows pos .. last-1 move to pos+1 .. last
        for r in range(last - 1, pos - 1, -1):
            R[base + r + 1, R_KEY] = R[base + r, R_KEY]
            R[base + r + 1, R_KEY2] = R[base + r, R_KEY2]
            R[base + r + 1, R_SEQ] = R[base + r, R_SEQ]
            for c in range(R_CUR, R_CUR + width):
                R[base + r + 1, c] = R[base + r, c]
        R[base + pos, R_KEY] = key
        R[base + pos, R_KEY2] = key2
        R[base + pos, R_SEQ] = q
        if m < n:
            R[base, R_CNT] = m + 1
    return pos


@njit
def ranked_emit(dirty, high_water, n, R):
    """The changes of the slots in ``dirty`` since their rows were last emitted, rank by rank, in slot order.

    A rank whose row changed emits ``-U`` the old row and ``+U`` the new one
    (``+I`` when the rank was empty, ``-D`` when it emptied); then the emitted
    rows become the current ones. Returns ``(ranks, ops, columns)``: 1-based
    ranks, RowKind codes, and ``columns[c]`` the int64 values of column ``c``
    (the last: validity bitmasks).
    """
    width = (R.shape[1] - R_CUR) // 2
    old = R_CUR + width
    dirty = slot_order(dirty, high_water)
    total = 0
    for j in range(dirty.size):
        base = dirty[j] * n
        total += 2 * max(R[base, R_CNT], R[base, R_ECNT])
    ranks = np.empty(total, np.int64)
    ops = np.empty(total, np.int8)
    cols = np.empty((width, total), np.int64)
    m = 0
    for j in range(dirty.size):
        base = dirty[j] * n
        had_n, has_n = R[base, R_ECNT], R[base, R_CNT]
        for r in range(max(had_n, has_n)):
            row = base + r
            had, has = r < had_n, r < has_n
            if had and has and R[row, R_ESEQ] == R[row, R_SEQ]:
                continue
            if had:
                ranks[m] = r + 1
                ops[m] = _UPDATE_BEFORE if has else _DELETE
                for c in range(width):
                    cols[c, m] = R[row, old + c]
                m += 1
            if has:
                ranks[m] = r + 1
                ops[m] = _UPDATE_AFTER if had else _INSERT
                for c in range(width):
                    v = R[row, R_CUR + c]
                    cols[c, m] = v
                    R[row, old + c] = v
                R[row, R_ESEQ] = R[row, R_SEQ]
                m += 1
        R[base, R_ECNT] = has_n
    return ranks[:m], ops[:m], cols[:, :m]


@njit
def ranked_forget(R, s, n):
    """Drop slot ``s``'s rows as if the key had never been seen (its idle-state TTL passed).

    What it emitted is not retracted (Flink's behaviour): its next row is an insert.
    """
    base = s * n
    R[base, R_CNT] = 0
    R[base, R_ECNT] = 0


@njit
def ranked_purge(watermark, ttl, n, R, tb, tk, tm, tf):
    """Free every key whose idle-state TTL passed (its latest event time + ``ttl`` <= ``watermark``)."""
    freed = 0
    if watermark == np.iinfo(np.int64).min:
        return freed
    for s in range(tm[1]):
        base = s * n
        if R[base, R_MARK] != 0 and R[base, R_LAST] <= watermark - ttl:
            for r in range(n):
                for c in range(R.shape[1]):
                    R[base + r, c] = 0
            ht_delete(tb, tk, tm, tf, s)
            freed += 1
    return freed


@njit
def net_rows(offsets, signs, positions, counts, last):
    """Per group of equal rows: replay its changes in order (a retraction only takes away a row
    that is there); ``counts[g]`` the rows left, ``last[g]`` the position of its last addition."""
    for g in range(offsets.size - 1):
        c = 0
        for j in range(offsets[g], offsets[g + 1]):
            if signs[j] > 0:
                c += 1
                last[g] = positions[j]
            elif c > 0:
                c -= 1
        counts[g] = c
