"""Watermark kernels: the per-row running watermark of a source batch."""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["running_watermark"]


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
    current = watermark
    for i in range(n):
        before[i] = current
        candidate = event_time[i] - delay
        if candidate > current:
            current = candidate
    return before, current
