"""The step's bookkeeping per node: metric counters and watermarks, one call each.

The compiled step calls these once per node and batch (never per row). Keeping
them as functions rather than generated lines makes each plan's text, and
Numba's work compiling it, smaller: a node's counters and watermark were a
dozen generated statements, typed and lowered again in every plan.

Counter positions come from :class:`laminar_jit.executor.core.MetricsLayout`;
a position of -1 means "not counted".
"""

from __future__ import annotations

from .._jit import njit

__all__ = ["count_in", "count_out", "inputs_watermark", "propagate_watermark"]

WM_MAX = 9223372036854775807


@njit
def count_in(metrics, rows, rows_in, processed, skipped):
    """Rows arriving at a node: its ``rows_in``, the ``processed`` total, ``skipped`` when there are none."""
    metrics[rows_in] += rows
    if processed >= 0:
        metrics[processed] += rows
    if skipped >= 0 and rows == 0:
        metrics[skipped] += 1


@njit
def count_out(metrics, offsets, node, rows, rows_out, routed, multicast):
    """Rows leaving ``node`` along its ``offsets[node]:offsets[node + 1]`` edges of the routing table.

    ``routed`` counts each row once per edge; ``multicast`` counts a non-empty
    output sent to more than one edge.
    """
    metrics[rows_out] += rows
    degree = offsets[node + 1] - offsets[node]
    metrics[routed] += rows * degree
    if degree > 1 and rows > 0:
        metrics[multicast] += 1


@njit
def inputs_watermark(wm, idle, inputs):
    """The least watermark of the ``inputs`` (node ids) that are not idle, and whether any is not."""
    w = WM_MAX
    active = False
    for u in inputs:
        if not idle[u]:
            active = True
            if wm[u] < w:
                w = wm[u]
    return w, active


@njit
def propagate_watermark(wm, idle, inputs, node):
    """A node's watermark: the least of its active inputs'; it never goes back. Returns whether any input is active."""
    w, active = inputs_watermark(wm, idle, inputs)
    if active and w > wm[node]:
        wm[node] = w
    idle[node] = not active
    return active
