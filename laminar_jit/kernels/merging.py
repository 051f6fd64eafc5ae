"""Kernels that merge the outputs of key shards into the order of one stream.

Each shard emits its rows in the engine's order; a merge works out, for every
row of every shard, its position in the merged output (its *destination*),
and the shards then copy their own rows there in parallel (:func:`place`).
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing

__all__ = ["append_rows", "append_valid", "append_values", "merge_positions", "merge_shards", "piece_rows", "place", "take_range"]


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
def merge_positions(positions, offsets, n):
    """Merge the shards' rows passed on from a batch of ``n`` rows by their position in it.

    ``positions`` holds the shards' rows back to back, shard ``s``'s at
    ``offsets[s]:offsets[s + 1]``, each ascending (no row in two shards).
    Returns ``(rows, dest)``: the positions in order, and where each shard
    row goes among them.
    """
    shards = offsets.size - 1
    total = positions.size
    owner = np.zeros(n, np.int64)  # 1 + the shard that passed the row on, 0 for none
    for s in range(shards):
        for i in range(offsets[s], offsets[s + 1]):
            owner[positions[i]] = s + 1
    fill = np.empty(shards + 1, np.int64)
    fill[0] = total  # rows no shard passed on write to a spare slot
    for s in range(shards):
        fill[s + 1] = offsets[s]
    dest = np.empty(total + 1, np.int64)
    rows = np.empty(total + 1, np.int64)
    o = 0
    for i in range(n):  # branch-free
        s = owner[i]
        k = fill[s]
        dest[k] = o
        rows[o] = i
        taken = np.int64(s != 0)
        fill[s] = k + taken
        o += taken
    return rows[:total], dest[:total]


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

    Returns
    -------
    dest : int64[rows]
        The merged position of each row.
    """
    if bounds.shape[0] == 2:
        return _merge_two(major, middle, minor, bounds, by_middle, by_minor)
    if bounds.shape[0] <= HEAP_SHARDS:
        return _merge_scan(major, middle, minor, bounds, by_middle, by_minor)
    return _merge_heap(major, middle, minor, bounds, by_middle, by_minor)


@njit
def _merge_two(major, middle, minor, bounds, by_middle, by_minor):
    """:func:`merge_shards` of two shards: one linear, branch-free pass per piece."""
    dest = np.full(major.size, -1, np.int64)
    o = np.int64(0)  # not a literal 0: _merge_heads would compile for Literal[int](0) and again for int64
    for p in range(bounds.shape[1] - 1):
        i, i_end = bounds[0, p], bounds[0, p + 1]
        j, j_end = bounds[1, p], bounds[1, p + 1]
        _merge_heads(dest, major, middle, minor, i, i_end, j, j_end, o, by_middle, by_minor)
        o_end = o + (i_end - i) + (j_end - j)
        # the run left over when the other ran out: its unplaced rows end the piece
        for lo, hi in ((i, i_end), (j, j_end)):
            r = hi
            while r > lo and dest[r - 1] < 0:
                r -= 1
            for q in range(r, hi):
                dest[q] = o_end - (hi - q)
        o = o_end
    return dest


@njit
def _merge_heads(dest, major, middle, minor, i, i_end, j, j_end, o, by_middle, by_minor):
    """Place rows of runs ``i:i_end`` and ``j:j_end`` from ``o`` on until one of them runs out.

    A function of its own that returns nothing: with the heads used after the
    loop (to place the rest), LLVM compiled this loop 4x slower.
    """
    while i < i_end and j < j_end:
        t = _before_flat(major, middle, minor, j, i, by_middle, by_minor)
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
def _merge_scan(major, middle, minor, bounds, by_middle, by_minor):
    """:func:`merge_shards` of a few shards: the least head row, found by looking at every shard's."""
    shards, pieces = bounds.shape[0], bounds.shape[1] - 1
    dest = np.empty(major.size, np.int64)
    head = np.empty(shards, np.int64)
    o = 0
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
    return dest


@njit
def _merge_heap(major, middle, minor, bounds, by_middle, by_minor):
    """:func:`merge_shards` of many shards: a binary heap of the shards' head rows, O(rows x log shards)."""
    shards, pieces = bounds.shape[0], bounds.shape[1] - 1
    dest = np.empty(major.size, np.int64)
    head = np.empty(shards, np.int64)
    heap = np.empty(shards, np.int64)  # shards with rows left in the piece, least head first
    o = 0
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
    return dest


@njit
def take_range(out, values, rows, lo, hi):
    """``out[lo:hi] = values[rows[lo:hi]]`` (one thread's share of a merged sink's column)."""
    for i in range(lo, hi):
        out[i] = values[rows[i]]


@njit
def piece_rows(rows, a, lo, hi):
    """A shard's rows of the piece ``lo:hi`` as positions in the piece, from ``rows[a:]`` (ascending); and
    where the next piece's rows start in ``rows``."""
    b = a
    while b < rows.size and rows[b] < hi:
        b += 1
    out = np.empty(b - a, np.int32)
    for j in range(b - a):
        out[j] = rows[a + j] - lo
    return out, b


@njit
def _room(buf, n, m):
    """``buf``, or a copy of it at least twice as large when ``m`` items do not fit (its first ``n`` kept)."""
    if m <= buf.size:
        return buf
    bigger = np.empty(max(m, 2 * buf.size), buf.dtype)
    for j in range(n):  # a loop: slice assignment costs more to compile
        bigger[j] = buf[j]
    return bigger


@njit
def append_rows(buf, n, x, lo):
    """``buf[:n]`` followed by the positions ``x + lo``: the (possibly new) array and its length."""
    m = n + x.size
    buf = _room(buf, n, m)
    for j in range(x.size):
        buf[n + j] = x[j] + lo
    return buf, m


@njit
def append_values(buf, n, x):
    """``buf[:n]`` followed by ``x``: the (possibly new) array and its length."""
    m = n + x.size
    buf = _room(buf, n, m)
    for j in range(x.size):
        buf[n + j] = x[j]
    return buf, m


@njit
def append_valid(buf, n, valid, size, masked):
    """Validity of ``size`` more values after ``n`` (``valid``, or all true when it is empty).

    Nothing is written until some part has nulls (``masked`` False): then the
    rows before it are filled in as valid. Returns the (possibly new) array
    and whether any part so far had nulls.
    """
    if valid.size == 0 and not masked:
        return buf, False
    m = n + size
    if not masked:  # the first nulls: every row before them was valid
        buf = np.empty(max(m, 2 * n), np.bool_)
        for j in range(n):
            buf[j] = True
    else:
        buf = _room(buf, n, m)
    for j in range(size):
        buf[n + j] = valid[j] if valid.size else True
    return buf, True
