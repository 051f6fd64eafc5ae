"""The step's per-node bookkeeping kernels (``kernels/counters.py``) against plain Python.

Every plan calls them once per node and batch: a wrong counter or a watermark
that goes back would show in every operator's metrics and late-row decisions.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from laminar_jit.kernels.counters import count_in, count_out, inputs_watermark, propagate_watermark

WM_MIN = np.iinfo(np.int64).min
WM_MAX = np.iinfo(np.int64).max
WATERMARKS = st.lists(st.sampled_from([WM_MIN, WM_MAX, -5, 0, 3, 7]) | st.integers(-100, 100), min_size=6, max_size=6)


@settings(max_examples=60, deadline=None)
@given(wm=WATERMARKS, idle=st.lists(st.booleans(), min_size=6, max_size=6),
       inputs=st.lists(st.integers(0, 4), min_size=1, max_size=3), node=st.just(5))
def test_a_node_takes_the_least_watermark_of_its_active_inputs_and_never_goes_back(wm, idle, inputs, node):
    wm, idle = np.array(wm, np.int64), np.array(idle)
    active_inputs = [u for u in inputs if not idle[u]]
    least = min((wm[u] for u in active_inputs), default=WM_MAX)
    ids = tuple(np.int64(u) for u in inputs)
    assert inputs_watermark(wm, idle, ids) == (least, bool(active_inputs))
    before = wm[node]
    active = propagate_watermark(wm, idle, ids, np.int64(node))
    assert active == bool(active_inputs)
    assert wm[node] == (max(before, least) if active_inputs else before)
    assert idle[node] == (not active_inputs)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 50), degree=st.integers(0, 3), skip=st.booleans(), processed=st.booleans())
def test_counters_add_rows_in_out_routed_multicast_and_skipped(rows, degree, skip, processed):
    metrics = np.zeros(8, np.int64)
    offsets = np.array([0, 2, 2 + degree], np.int32)
    count_in(metrics, rows, np.int64(0), np.int64(1 if processed else -1), np.int64(2 if skip else -1))
    count_out(metrics, offsets, np.int64(1), rows, np.int64(3), np.int64(4), np.int64(5))
    assert metrics.tolist() == [rows, rows if processed else 0, int(skip and rows == 0),
                                rows, rows * degree, int(degree > 1 and rows > 0), 0, 0]
