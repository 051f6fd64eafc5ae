"""Kernels that merge the outputs of key shards into the order of one stream.

Each shard emits its rows in the engine's order; a merge works out, for every
row of every shard, its position in the merged output (its *destination*),
and the shards then copy their own rows there in parallel (:func:`place`).
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing

__all__ = ["merge_positions", "merge_cuts", "merge_shards", "merge_span", "piece_rows", "place", "take_range"]


#: Merges of more shards than this keep their head rows in a heap, whose branches cost more than looking at
#: every head row up to here. 1 M window results, ms to merge them from k shards, scan | heap: k=8 39 | 72,
#: k=16 75 | 101, k=24 101 | 103, k=32 138 | 110, k=48 212 | 126, k=64 283 | 131.
HEAP_SHARDS = 24


@njit
def place(out, dest, values):
    """``out[dest[i]] = values[i]``."""
    for i in range(dest.size):
        out[dest[i]] = values[i]


@njit_borrowing
def _before_flat(major, middle, minor, i, j, by_middle, by_minor):
    """1 when row ``i`` sorts strictly before row ``j``, else 0; no branches on the data (merged runs interleave
    at random)."""
    lt = major[i] < major[j]
    eq = major[i] == major[j]
    if by_middle:
        lt = lt | (eq & (middle[i] < middle[j]))
        if by_minor:
            lt = lt | (eq & (middle[i] == middle[j]) & (minor[i] < minor[j]))
    return np.int64(lt)


@njit
def merge_positions(positions, n):
    """Merge the shards' rows passed on from a batch of ``n`` rows by their position in it.

    ``positions`` holds the shards' rows back to back, each shard's
    ascending (no row in two shards).
    Returns ``(rows, dest)``: the positions in order, and where each shard
    row goes among them.

    Every row passed on is marked in a byte per batch row; one pass over the
    marks numbers them (a row's number is its place in the output) and lists
    them; a shard row's destination is then the number at its position, a
    gather of independent loads. (Moving every row to its shard's next free
    destination in the pass instead kept the pass waiting on the store of the
    shard's counter: 2.2 ns a batch row against 1.1-1.6 here, 65 K rows
    dealt by hash, 20-100 % passed on.)
    """
    total = positions.size
    mark = np.zeros(n, np.uint8)
    for k in range(total):
        mark[positions[k]] = 1
    number = np.empty(n, np.int32)  # rows passed on before each batch row
    rows = np.empty(total + 1, np.int64)  # (branch-free: a row not passed on writes past the last one)
    o = 0
    for i in range(n):
        number[i] = o
        rows[o] = i
        o += np.int64(mark[i])
    dest = np.empty(total, np.int64)
    for k in range(total):
        dest[k] = number[positions[k]]
    return rows[:total], dest


@njit
def merge_shards(major, middle, minor, bounds, by_middle, by_minor):
    """Destinations of the shards' rows in their merged order, piece by piece.

    ``major``, ``middle`` and ``minor`` hold the shards' rows back to back;
    shard ``s``'s rows of piece ``p`` are ``bounds[s, p]:bounds[s, p + 1]``,
    sorted by (``major``, ``middle`` if ``by_middle``, ``minor`` if ``by_minor``).
    The merged output has piece after piece, each piece's rows in that order,
    ties going to the lower shard. Two shards merge in one linear pass, a
    few by looking at every shard's head row for each row, more than
    :data:`HEAP_SHARDS` through a heap of the head rows (O(rows x log shards)).
    Threads can share the work: :func:`merge_cuts`, then :func:`merge_span` per part.

    Returns
    -------
    dest : int64[rows]
        The merged position of each row.
    """
    dest = np.empty(major.size, np.int64)
    merge_span(dest, major, middle, minor, bounds, by_middle, by_minor, bounds[:, 0].copy(), bounds[:, -1].copy())
    return dest


@njit
def merge_cuts(major, middle, minor, bounds, by_middle, by_minor, parts):
    """Cut the shards' merge (as :func:`merge_shards`) into ``parts`` runs of merged rows, for as many threads.

    Part ``t`` is shard ``s``'s rows ``cuts[t, s]:cuts[t + 1, s]`` of every
    shard, the merged rows before it those of parts ``0..t-1``, so a thread
    per part works out its rows' destinations (:func:`merge_span`) without
    looking at another part's. The cuts fall before rows of the shard with
    the most rows at even steps (the other shards' rows before such a row are
    found by a binary search in its piece): O(parts x shards x log rows),
    parts of about equal size when the shards' rows are alike (keys dealt
    by hash).

    Returns
    -------
    cuts : int64[parts + 1, shards]
    """
    shards, pieces = bounds.shape[0], bounds.shape[1] - 1
    cuts = np.empty((parts + 1, shards), np.int64)
    big = 0
    for s in range(shards):
        cuts[0, s] = bounds[s, 0]
        cuts[parts, s] = bounds[s, pieces]
        if bounds[s, pieces] - bounds[s, 0] > bounds[big, pieces] - bounds[big, 0]:
            big = s
    size = bounds[big, pieces] - bounds[big, 0]
    p = 0
    for t in range(1, parts):
        e = bounds[big, 0] + t * size // parts  # the first row of part t in the biggest shard
        if e == bounds[big, pieces]:
            for s in range(shards):
                cuts[t, s] = bounds[s, pieces]
            continue
        while bounds[big, p + 1] <= e:  # e's piece
            p += 1
        for s in range(shards):
            if s == big:
                cuts[t, s] = e
                continue
            lo, hi = bounds[s, p], bounds[s, p + 1]
            while lo < hi:  # the rows of shard s's piece p merged before e (ties: the lower shard first)
                mid = (lo + hi) // 2
                if _before_flat(major, middle, minor, mid, e, by_middle, by_minor) or (
                        s < big and not _before_flat(major, middle, minor, e, mid, by_middle, by_minor)):
                    lo = mid + 1
                else:
                    hi = mid
            cuts[t, s] = lo
    return cuts


@njit
def merge_span(dest, major, middle, minor, bounds, by_middle, by_minor, lo, hi):
    """Destinations in the shards' merge (as :func:`merge_shards`) of shard ``s``'s rows ``lo[s]:hi[s]``,
    written to ``dest``: a part of :func:`merge_cuts` (or, from ``bounds[:, 0]`` to ``bounds[:, -1]``, all)."""
    shards, pieces = bounds.shape[0], bounds.shape[1] - 1
    part = np.empty_like(bounds)  # the part's rows of each shard's pieces
    o = 0  # merged rows before the part's
    for s in range(shards):
        o += lo[s] - bounds[s, 0]
        for p in range(pieces + 1):
            part[s, p] = min(max(bounds[s, p], lo[s]), hi[s])
    if shards == 2:
        _merge_two(dest, major, middle, minor, part, o, by_middle, by_minor)
    elif shards <= HEAP_SHARDS:
        _merge_scan(dest, major, middle, minor, part, o, by_middle, by_minor)
    else:
        _merge_heap(dest, major, middle, minor, part, o, by_middle, by_minor)


@njit
def _merge_two(dest, major, middle, minor, bounds, o, by_middle, by_minor):
    """:func:`merge_span` of two shards: one branch-free pass per piece, from both ends at once."""
    for p in range(bounds.shape[1] - 1):
        i, i_end = bounds[0, p], bounds[0, p + 1]
        j, j_end = bounds[1, p], bounds[1, p + 1]
        _merge_ends(dest, major, middle, minor, i, i_end, j, j_end, o, by_middle, by_minor)
        o += (i_end - i) + (j_end - j)


@njit
def _merge_ends(dest, major, middle, minor, i0, i_end, j0, j_end, o, by_middle, by_minor):
    """Place the rows of runs ``i0:i_end`` (shard 0) and ``j0:j_end`` (shard 1) from ``o`` on.

    The front takes the lesser head row (ties: shard 0's), the back the
    greater last row (ties: shard 1's), half of the rows each, in one loop:
    each step waits on its own comparison, and the two chains of loads and
    comparisons overlap (4.1 ns a row against 5.8 ns from the front only,
    14,000 rows interleaved at random). Indices past a run's end are clamped
    so that no load leaves it; the flags make such a run never chosen.
    """
    m = (i_end - i0) + (j_end - j0)
    if i_end == i0 or j_end == j0:  # one run: its rows in place
        lo = j0 if i_end == i0 else i0
        for q in range(m):
            dest[lo + q] = o + q
        return
    front = m // 2
    i, j = i0, j0
    ib, jb, ob = i_end - 1, j_end - 1, o + m - 1
    for step in range(m - front):
        # the back: shard 1's last row unless it sorts strictly before shard 0's (or shard 1 ran out)
        ii, jj = max(ib, i0), max(jb, j0)
        t = (ib < i0) | ((jb >= j0) & (1 - _before_flat(major, middle, minor, jj, ii, by_middle, by_minor)))
        dest[jb if t else ib] = ob
        jb -= t
        ib -= 1 - t
        ob -= 1
        if step < front:  # the front: shard 1's head only when it sorts strictly before shard 0's
            ic, jc = min(i, i_end - 1), min(j, j_end - 1)
            t = (i >= i_end) | ((j < j_end) & _before_flat(major, middle, minor, jc, ic, by_middle, by_minor))
            dest[j if t else i] = o
            j += t
            i += 1 - t
            o += 1


@njit_borrowing
def _heads_before(major, middle, minor, head, a, b, by_middle, by_minor):
    """True when shard ``a``'s head row goes before shard ``b``'s (ties: the lower shard first)."""
    i, j = head[a], head[b]
    if _before_flat(major, middle, minor, i, j, by_middle, by_minor):
        return True
    return a < b and not _before_flat(major, middle, minor, j, i, by_middle, by_minor)


@njit
def _merge_scan(dest, major, middle, minor, bounds, o, by_middle, by_minor):
    """:func:`merge_span` of a few shards: the least head row, found by looking at every shard's."""
    shards, pieces = bounds.shape[0], bounds.shape[1] - 1
    head = np.empty(shards, np.int64)
    for p in range(pieces):
        for s in range(shards):
            head[s] = bounds[s, p]
        while True:
            best = -1
            for s in range(shards):
                if head[s] == bounds[s, p + 1]:
                    continue
                if best < 0 or _before_flat(major, middle, minor, head[s], head[best], by_middle, by_minor):
                    best = s
            if best < 0:
                break
            dest[head[best]] = o
            head[best] += 1
            o += 1


@njit
def _merge_heap(dest, major, middle, minor, bounds, o, by_middle, by_minor):
    """:func:`merge_span` of many shards: a binary heap of the shards' head rows, O(rows x log shards)."""
    shards, pieces = bounds.shape[0], bounds.shape[1] - 1
    head = np.empty(shards, np.int64)
    heap = np.empty(shards, np.int64)  # shards with rows left in the piece, least head first
    for p in range(pieces):
        size = 0
        for s in range(shards):
            head[s] = bounds[s, p]
            if head[s] < bounds[s, p + 1]:  # push s, sifting up
                c = size
                size += 1
                while c > 0:
                    parent = (c - 1) >> 1
                    if not _heads_before(major, middle, minor, head, s, heap[parent], by_middle, by_minor):
                        break
                    heap[c] = heap[parent]
                    c = parent
                heap[c] = s
        while size > 0:
            s = heap[0]
            dest[head[s]] = o
            o += 1
            head[s] += 1
            if head[s] == bounds[s, p + 1]:  # s is done: the last shard of the heap takes the root
                size -= 1
                s = heap[size]
            c = 0  # sift s down from the root
            while True:
                child = 2 * c + 1
                if child >= size:
                    break
                if child + 1 < size and _heads_before(major, middle, minor, head, heap[child + 1], heap[child],
                                                      by_middle, by_minor):
                    child += 1
                if not _heads_before(major, middle, minor, head, heap[child], s, by_middle, by_minor):
                    break
                heap[c] = heap[child]
                c = child
            if size > 0:
                heap[c] = s


@njit
def take_range(out, values, rows, lo, hi):
    """``out[lo:hi] = values[rows[lo:hi]]`` (one thread's share of a merged sink's column)."""
    for i in range(lo, hi):
        out[i] = values[rows[i]]


@njit
def piece_rows(rows, a, lo, hi):
    """A shard's rows of the piece ``lo:hi`` as positions in the piece, from ``rows[a:]`` (ascending); and
    where the next piece's rows start in ``rows``."""
    b, end = a, rows.size
    while b < end:  # the first row at or after hi: a binary search
        mid = (b + end) // 2
        if rows[mid] < hi:
            b = mid + 1
        else:
            end = mid
    out = np.empty(b - a, np.int32)
    for j in range(b - a):
        out[j] = rows[a + j] - lo
    return out, b
