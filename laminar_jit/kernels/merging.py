"""Kernels that merge the outputs of key shards into the order of one stream.

Each shard emits its rows in the engine's order; a merge works out, for every
row of every shard, its position in the merged output (its *destination*),
and the shards then copy their own rows there in parallel (:func:`place`).
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["append_rows", "append_valid", "append_values", "merge_positions", "merge_shards", "piece_rows", "place", "take_range"]


@njit
def place(out, dest, values):
    """``out[dest[i]] = values[i]``."""
    for i in range(dest.size):
        out[dest[i]] = values[i]


@njit(inline="always")
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
    ties going to the lower shard. Two shards merge in one linear pass; more
    cost O(rows x shards).

    Returns
    -------
    dest : int64[rows]
        The merged position of each row.
    """
    if bounds.shape[0] == 2:
        return _merge_two(major, middle, minor, bounds, by_middle, by_minor)
    return _merge_many(major, middle, minor, bounds, by_middle, by_minor)


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


@njit
def _merge_many(major, middle, minor, bounds, by_middle, by_minor):
    """:func:`merge_shards` of any number of shards: the least head row, shard by shard."""
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
