"""Watermark kernels: the per-row running watermark of a source batch."""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["batch_watermarks", "due_cuts", "running_watermark", "source_watermark"]


@njit
def running_watermark(event_time, n, watermark, delay):
    """Watermark in force *before* each row, and after the last one.

    The source watermark advances row by row as ``max(event time seen) -
    delay`` and never goes back, so a row's lateness does not depend on how
    the stream was cut into batches.

    Returns
    -------
    before : int64[n]
    after : int64
    """
    before = np.empty(n, np.int64)
    return before, _fill_watermarks(event_time, n, watermark, delay, before)


@njit
def batch_watermarks(event_time, n, watermark, delay):
    """:func:`running_watermark` as one array: the watermark before each row, then the one after the last.

    Key shards work it out once per batch and hand each piece's slice to
    every shard, whose step would otherwise work out the whole piece's again.
    """
    out = np.empty(n + 1, np.int64)
    out[n] = _fill_watermarks(event_time, n, watermark, delay, out)
    return out


@njit(inline="always")
def _fill_watermarks(event_time, n, watermark, delay, before):
    """``before[i]``: the watermark before row ``i``, for the first ``n`` rows; returns the one after them."""
    current = watermark
    for i in range(n):
        before[i] = current
        candidate = event_time[i] - delay
        if candidate > current:
            current = candidate
    return current


@njit
def source_watermark(event_time, n, watermark, delay):
    """The watermark after the last row: :func:`running_watermark` without the per-row values.

    Plans call it when no operator reads a source row's own watermark.
    """
    current = watermark
    for i in range(n):
        candidate = event_time[i] - delay
        if candidate > current:
            current = candidate
    return current


_BLOCK = 256


@njit
def due_cuts(event_time, watermark, delay, grids, piece):
    """Rows before which a batch feeding sliding windows must be cut (see ``DagExecutor._cut_at_due_windows``).

    Parameters
    ----------
    event_time : int64[n]
        The batch's event times.
    watermark, delay : int
        The source watermark before the batch and its bounded-out-of-orderness delay.
    grids : int64[g, 4]
        Per sliding window: ``slide``, ``phase`` (a window becomes due when the
        watermark reaches ``phase + k * slide``), allowed lateness, and 1 when
        its event time is the source's (then a cut is needed only if a later
        row falls in a window made due), else 0 (always cut).
    piece : int
        Cut at least every ``piece`` rows.

    Returns
    -------
    int64 array
        Increasing row indices in ``[1, n)``.
    """
    n = event_time.size
    cuts = np.empty(n, np.int64)
    c = 0
    if n < 2:
        return cuts[:0]
    # least event time of each block of rows and of all blocks after it: with a
    # scan of the rest of a row's block, the least event time from any row on
    blocks = (n + _BLOCK - 1) // _BLOCK
    after = np.empty(blocks + 1, np.int64)
    after[blocks] = np.iinfo(np.int64).max
    for b in range(blocks - 1, -1, -1):
        low = after[b + 1]
        for k in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            low = min(low, event_time[k])
        after[b] = low
    g = grids.shape[0]
    epoch = np.empty(g, np.int64)
    nxt = np.empty(g, np.int64)  # the watermark at which the grid's epoch next changes
    for j in range(g):
        if watermark == np.iinfo(np.int64).min:  # the first watermark starts an epoch
            epoch[j] = watermark
            nxt[j] = watermark
        else:
            epoch[j] = (watermark - grids[j, 1]) // grids[j, 0]
            nxt[j] = grids[j, 1] + (epoch[j] + 1) * grids[j, 0]
    soonest = nxt.min() if g else np.iinfo(np.int64).max
    current = watermark
    last_cut = 0
    for i in range(1, n):
        candidate = event_time[i - 1] - delay
        if candidate > current:
            current = candidate
        cut = i - last_cut >= piece
        if current >= soonest:  # some grid changes epoch: one division per change, not per row
            soonest = np.iinfo(np.int64).max
            for j in range(g):
                if current >= nxt[j]:
                    e = (current - grids[j, 1]) // grids[j, 0]
                    if e != epoch[j]:
                        epoch[j] = e
                        if grids[j, 3] == 0:
                            cut = True
                        else:
                            low = after[i // _BLOCK + 1]
                            for k in range(i, min(n, (i // _BLOCK + 1) * _BLOCK)):
                                low = min(low, event_time[k])
                            if low < grids[j, 1] + e * grids[j, 0] - grids[j, 2]:
                                cut = True
                    nxt[j] = grids[j, 1] + (e + 1) * grids[j, 0]
                if nxt[j] < soonest:
                    soonest = nxt[j]
        if cut:
            cuts[c] = i
            c += 1
            last_cut = i
    return cuts[:c]
