"""Generated steps against checked-in text, and settings that stay out of the text.

Each case renders the step of every source of a small DAG — the module text
that :func:`laminar_jit.executor.plan.compile_plan` would write to the plan
cache and compile — without compiling it, and compares it with
``tests/golden/<case>__<source>.py``. A change to a generator, to the
renderer, or to a per-row kernel the renderer inlines (``kernels/hashtable.py``,
``kernels/joins.py``) changes the text: read the diff, and when the change is
intended rewrite the goldens with::

    LAMINAR_JIT_UPDATE_GOLDEN=1 python -m pytest -n 0 tests/test_codegen_golden.py

The golden files are generated text (they name kernels bound at import, such
as ``kernel_1``), kept as ``.py`` so a diff reads as code.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import laminar_jit as lj
from laminar_jit.executor.plan import _STEP_MEMO
from laminar_jit.executor.render import render, render_plan

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LAMINAR_JIT_UPDATE_GOLDEN") == "1"

EVENTS = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("x", pa.float64()), ("tag", pa.string())])
RIGHT = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("y", pa.float64())])


def positive(x):
    return x > 0.0


def double(x):
    return x * 2.0


def small(x):
    return x < 100.0


def keep(x, k):
    return x > 1.0 or k == 3


def running_sum(st, x):
    st.total += x
    return st.total


def count_and_arm(st, ts, x):
    st.n += 1
    st.timer = ts + 60
    return st.n, False


def quiet(st, t):
    return st.n, True


def _events(b: lj.DagBuilder, delay: int = 5) -> lj.DagBuilder:
    return b.source("s", EVENTS, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=delay))


def filter_map() -> lj.StreamingDag:
    """source -> filter -> map -> sink."""
    return (_events(lj.DagBuilder())
            .operator("f", lj.Filter(positive)).operator("m", lj.Map(double, output="x2"))
            .connect("s", "f").connect("f", "m").sink_for("m", "out").build())


def fan_out_fan_in() -> lj.StreamingDag:
    """A multicast to two filters whose outputs meet again (a union), plus a map on one branch."""
    return (_events(lj.DagBuilder())
            .operator("a", lj.Filter(positive)).operator("b", lj.Filter(small))
            .operator("m", lj.Map(double, output="x")).operator("u", lj.Filter(keep))
            .connect("s", "a").connect("s", "b").connect("b", "m").connect("a", "u").connect("m", "u")
            .sink_for("u", "out").sink_for("a", "positives").build())


def tumbling(size: int = 1_000, lateness: int = 0, delay: int = 5) -> lj.StreamingDag:
    """A keyed tumbling window with two aggregates (count, max)."""
    return (_events(lj.DagBuilder(), delay)
            .operator("w", lj.TumblingWindow(size=size, key="k", allowed_lateness=lateness,
                                             aggs={"n": lj.count(), "hi": lj.max("x")}))
            .connect("s", "w").sink_for("w", "out").build())


def sliding(size: int = 1_000, slide: int = 250, lateness: int = 0) -> lj.StreamingDag:
    return (_events(lj.DagBuilder())
            .operator("w", lj.SlidingWindow(size=size, slide=slide, key="k", allowed_lateness=lateness,
                                            aggs={"n": lj.count(), "s": lj.sum("x")}))
            .connect("s", "w").sink_for("w", "out").build())


def session(gap: int = 60, lateness: int = 0) -> lj.StreamingDag:
    """A session window keyed by a string column, with a late side output."""
    return (_events(lj.DagBuilder())
            .operator("w", lj.SessionWindow(gap=gap, key="tag", allowed_lateness=lateness,
                                            aggs={"n": lj.count(), "avg": lj.mean("x")},
                                            late="side_output", late_sink="late"))
            .connect("s", "w").sink_for("w", "out").build())


def interval_join(lower: int = -50, upper: int = 50) -> lj.StreamingDag:
    return (_events(lj.DagBuilder())
            .source("r", RIGHT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=5))
            .operator("j", lj.IntervalJoin("k", "k", lower=lower, upper=upper))
            .connect("s", "j", port="left").connect("r", "j", port="right").sink_for("j", "out").build())


def window_join(size: int = 1_000) -> lj.StreamingDag:
    return (_events(lj.DagBuilder())
            .source("r", RIGHT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=5))
            .operator("j", lj.WindowJoin(size, "k", "k"))
            .connect("s", "j", port="left").connect("r", "j", port="right").sink_for("j", "out").build())


def dedup(within: int = 1_000) -> lj.StreamingDag:
    return (_events(lj.DagBuilder())
            .operator("d", lj.Dedup(key="k", within=within)).connect("s", "d").sink_for("d", "out").build())


def topn(n: int = 3, window: int = 1_000) -> lj.StreamingDag:
    return (_events(lj.DagBuilder())
            .operator("t", lj.TopN(n, by="x", key="k", window=window)).connect("s", "t").sink_for("t", "out")
            .build())


def topn_ties(n: int = 2, window: int = 1_000) -> lj.StreamingDag:
    """TopN keeping ties (SQL ``rank()``): the tie-row kernels' calls and the column copies around them."""
    return (_events(lj.DagBuilder())
            .operator("t", lj.TopN(n, by="x", key="k", window=window, ties=True)).connect("s", "t")
            .sink_for("t", "out").build())


def keyed_kernel() -> lj.StreamingDag:
    return (_events(lj.DagBuilder())
            .operator("r", lj.KeyedKernel(running_sum, key="k", state={"total": np.float64},
                                          output={"total": pa.float64()}))
            .connect("s", "r").sink_for("r", "out").build())


def keyed_timer() -> lj.StreamingDag:
    """A keyed kernel with an event-time timer (the heap and its firing loop)."""
    return (_events(lj.DagBuilder())
            .operator("r", lj.KeyedKernel(count_and_arm, key="k", state={"n": np.int64},
                                          output={"n": pa.int64(), "quiet": pa.bool_()}, on_timer=quiet))
            .connect("s", "r").sink_for("r", "out").build())


CASES = {
    "filter_map": filter_map,
    "fan_out_fan_in": fan_out_fan_in,
    "tumbling": tumbling,
    "sliding": sliding,
    "session": session,
    "interval_join": interval_join,
    "window_join": window_join,
    "dedup": dedup,
    "topn": topn,
    "topn_ties": topn_ties,
    "keyed_kernel": keyed_kernel,
    "keyed_timer": keyed_timer,
}


def _compare(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        return
    if not path.exists():
        pytest.fail(f"{path.name} does not exist; create it with LAMINAR_JIT_UPDATE_GOLDEN=1")
    want = path.read_text()
    if text != want:
        diff = "".join(difflib.unified_diff(want.splitlines(keepends=True), text.splitlines(keepends=True),
                                            f"golden/{path.name}", "generated"))
        pytest.fail(f"the generated step differs from golden/{path.name} (if intended, rewrite the goldens "
                    f"with LAMINAR_JIT_UPDATE_GOLDEN=1):\n{diff}", pytrace=False)


@pytest.mark.parametrize("case", CASES)
def test_generated_step_matches_golden(case):
    dag = CASES[case]()
    assert dag.fingerprint is not None  # module-level kernels: the plan is cacheable
    for source in dag.sources:
        _compare(GOLDEN / f"{case}__{source}.py", render_plan(dag, source, cacheable=True))


def test_key_shard_step_matches_golden():
    # a key shard's plan: the step reads the shard's rows (``shard_rows``) of each piece; a ShardStep
    # runs the pieces and concatenates the sinks' rows (see executor/pieces.py)
    _compare(GOLDEN / "tumbling_shard__s.py", render_plan(tumbling(), "s", cacheable=True, sharded=True))


def test_key_shard_join_step_matches_golden():
    # a key shard's join notes where each pair's arriving row is (``out_p``): the shards' pairs merge by it;
    text = render_plan(interval_join(), "s", cacheable=True, sharded=True)
    assert "out_p[n_out] = i" in text and "po_" in text
    # settled rows (outer and anti joins) come after the batch's arrivals, by event time, then arrival number
    assert "settled_labels(" in text and "seq + i" in text
    _compare(GOLDEN / "interval_join_shard__s.py", text)


def test_key_shard_timer_step_matches_golden():
    # a key shard's keyed kernel labels a timer's output with the first row whose watermark reaches it
    # (``first_reaching``) and its time (``otie``); the sink returns those ties after its columns
    text = render_plan(keyed_timer(), "s", cacheable=True, sharded=True)
    assert "first_reaching(rwm, rw_scalar, rw_cap, rw_floor, tt, n_rows)" in text and "ties0_" in text
    _compare(GOLDEN / "keyed_timer_shard__s.py", text)


def test_every_golden_file_belongs_to_a_case():
    expected = {f"{case}__{source}.py" for case, build in CASES.items() for source in build().sources}
    expected |= {"tumbling_shard__s.py", "interval_join_shard__s.py", "keyed_timer_shard__s.py"}
    assert {p.name for p in GOLDEN.glob("*.py")} == expected


def test_rendering_is_deterministic():
    assert render_plan(tumbling(), "s", cacheable=True) == render_plan(tumbling(), "s", cacheable=True)


# ----------------------------------------------------------------------------- settings are values, not text

#: Pairs of DAGs that differ only in operator settings. Windows, Dedup, TopN and source watermarks read
#: theirs from the step's ``settings`` argument (TopN's n, a shape of its state, is compiled in); joins (today) keep theirs in their state's ``params``
#: array (``state/joins.py``). Either way the pair must render one text.
SETTINGS_VARIANTS = {
    "tumbling size": (lambda: tumbling(size=1_000), lambda: tumbling(size=5_000)),
    "tumbling lateness": (lambda: tumbling(lateness=0), lambda: tumbling(lateness=200)),
    "watermark delay": (lambda: tumbling(delay=5), lambda: tumbling(delay=900)),
    "sliding size and slide": (lambda: sliding(1_000, 250), lambda: sliding(3_000, 500)),
    "session gap and lateness": (lambda: session(60, 0), lambda: session(300, 40)),
    "dedup interval": (lambda: dedup(1_000), lambda: dedup(7_000)),
    "top-n window": (lambda: topn(3, 1_000), lambda: topn(3, 2_000)),
    "top-n with ties window": (lambda: topn_ties(2, 1_000), lambda: topn_ties(2, 2_000)),
    "interval join bounds": (lambda: interval_join(-50, 50), lambda: interval_join(-10, 400)),
    "window join size": (lambda: window_join(1_000), lambda: window_join(60_000)),
}


@pytest.mark.parametrize("variant", SETTINGS_VARIANTS)
def test_dags_differing_in_settings_render_one_text(variant):
    a, b = (build() for build in SETTINGS_VARIANTS[variant])
    differ = False
    for source in a.sources:
        ra, rb = render(a, source, cacheable=True), render(b, source, cacheable=True)
        assert ra.text == rb.text
        assert ra.settings.dtype == rb.settings.dtype == np.int64
        assert ra.settings.shape == rb.settings.shape
        differ |= not np.array_equal(ra.settings, rb.settings)
    if not differ and "join" in variant:  # joins keep their bounds in their state's params array
        params = [d.node("j").op.new_state(d.node("j").bound).params for d in (a, b)]
        differ = not np.array_equal(*params)
    assert differ


def test_tumbling_settings_are_the_step_values():
    # settings[0] is the source's watermark delay (the source is generated first), then the window's
    got = render(tumbling(size=1_000, lateness=200, delay=5), "s").settings.tolist()
    assert got[0] == 5
    assert 1_000 in got[1:] and 200 in got[1:]


def test_executors_of_dags_differing_in_settings_share_one_compiled_step():
    first = lj.DagExecutor(tumbling(size=1_000, lateness=0, delay=5))
    second = lj.DagExecutor(tumbling(size=5_000, lateness=200, delay=900))
    assert second.plan("s").step is first.plan("s").step
    assert second.compile_seconds == 0.0  # from the in-process memo, not loaded again
    assert not np.array_equal(first.plan("s").settings, second.plan("s").settings)
    assert sum(step is first.plan("s").step for step in _STEP_MEMO.values()) == 1
    # and each runs with its own settings
    batch = {"ts": [100, 1_200, 4_000, 6_000], "k": [1, 1, 1, 1], "x": [1.0, 2.0, 3.0, 4.0],
             "tag": ["a", "b", "a", "b"]}
    for ex in (first, second):
        ex.process_batch("s", batch)
        ex.finish()
    assert first.take_sink_outputs("out").column("n").to_pylist() == [1, 1, 1, 1]
    got = second.take_sink_outputs("out")
    assert got.column("window_start").to_pylist() == [0, 5_000]
    assert got.column("n").to_pylist() == [3, 1]
