"""A kernel that raises: lj.KernelError from the call that passed the row, and that call has no effect.

The reference for "no effect" is an executor that never saw the rejected
batch: it must end with the same outputs, metrics and watermarks.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import laminar_jit as lj
from laminar_jit.executor import faults

from conftest import BIDS, make_bids, split_table


@lj.kernel
def checked_eur(price):
    if price < 0:
        raise ValueError("negative price")
    return price * 0.5


@lj.kernel
def checked_a(a):
    if a < 0:
        raise ValueError("negative a")
    return a * 0.5


def _window_dag():
    """Map (may raise) -> string-keyed tumbling window, and the Map's rows to a sink of their own."""
    return (lj.DagBuilder()
            .source("bids", BIDS, event_time="ts", watermark=lj.BoundedOutOfOrderness(200))
            .operator("eur", lj.Map(checked_eur, output="eur"))
            .operator("w", lj.TumblingWindow(1_000, key="channel", aggs={"n": lj.count(), "s": lj.sum("eur")}))
            .connect("bids", "eur").connect("eur", "w")
            .sink_for("w", "out").sink_for("eur", "rows").build())


DAG = _window_dag()


def _bad_batch(table: pa.Table, rng, rows: int, at: int) -> pa.RecordBatch:
    """``rows`` rows of ``table`` with a negative price at row ``at`` and a channel never seen before."""
    take = table.slice(int(rng.integers(0, max(table.num_rows - rows, 1))), rows).combine_chunks()
    price = take.column("price").to_numpy(zero_copy_only=False).copy()
    price[at] = -1.0
    channel = pa.array(["new-" + str(i) for i in range(rows)])
    out = take.set_column(take.schema.get_field_index("price"), "price", pa.array(price))
    out = out.set_column(out.schema.get_field_index("channel"), "channel", channel)
    return out.to_batches()[0]


def _summary(ex) -> dict:
    m = ex.metrics
    return {"events_in": m.events_in, "batches": m.batches, "late": m.late_events,
            "per_node": m.per_node, "wm": ex.watermark("bids")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 3_000), cuts=st.lists(st.integers(0, 3_000), max_size=6),
       bad_at=st.integers(0, 10), bad_rows=st.sampled_from([1, 2, 50, 300, 5_000]), seed=st.integers(0, 2**16),
       parallelism=st.sampled_from([1, 2, 3]))
def test_a_rejected_batch_has_no_effect_whatever_the_batching(n, cuts, bad_at, bad_rows, seed, parallelism):
    # with key shards (parallelism > 1) the call is taken back in every shard
    table = make_bids(n, seed=seed)
    batches = split_table(table, cuts)
    rng = np.random.default_rng(seed)
    row = int(rng.integers(0, bad_rows))
    bad = _bad_batch(make_bids(max(bad_rows, 1), seed=seed + 1), rng, bad_rows, row)
    at = bad_at % (len(batches) + 1)

    clean, hit = lj.DagExecutor(DAG), lj.DagExecutor(DAG, parallelism=parallelism)
    assert hit.shards == parallelism, hit.shards_note
    for i, b in enumerate(batches + [None]):
        if i == at:
            with pytest.raises(lj.KernelError) as info:
                hit.process_batch("bids", bad)
            err = info.value
            assert (err.node, err.source, err.row) == ("eur", "bids", row)
            assert isinstance(err.__cause__, ValueError) and "negative price" in str(err)
            assert f"row {row} of the batch" in str(err) and "'eur'" in str(err)
        if b is not None:
            clean.process_batch("bids", b)
            hit.process_batch("bids", b)
    for ex in (clean, hit):
        ex.finish()
    assert _summary(hit) == _summary(clean)
    for sink in ("out", "rows"):
        assert hit.take_sink_outputs(sink).equals(clean.take_sink_outputs(sink)), sink
    # The rejected batch's new strings were not added to the dictionary either.
    assert len(hit.state.dictionaries[("bids", "channel")]) == len(clean.state.dictionaries[("bids", "channel")])


def test_queued_small_batches_keep_the_good_ones():
    """Small batches are not lost with a failing one; the failing call raises, not a later drain."""
    schema = pa.schema([("ts", pa.int64()), ("a", pa.float64())])
    dag = (lj.DagBuilder().source("s", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("m", lj.Map(checked_a, output="b"))
           .operator("w", lj.TumblingWindow(100, aggs={"n": lj.count(), "s": lj.sum("b")}))
           .connect("s", "m").connect("m", "w").sink_for("w", "out").sink_for("m", "rows").build())
    ex = lj.DagExecutor(dag)
    for i in range(3):
        ex.process_batch("s", {"ts": [i], "a": [float(i)]})
    with pytest.raises(lj.KernelError, match="row 0 of the batch"):
        ex.process_batch("s", {"ts": [3], "a": [-1.0]})
    for i in range(4, 11):
        ex.process_batch("s", {"ts": [i], "a": [1.0]})
    assert ex.metrics.events_in == 10
    ex.finish()
    assert ex.take_sink_outputs("rows").num_rows == 10
    assert ex.take_sink_outputs("out").to_pylist() == [
        {"window_start": 0, "window_end": 100, "n": 10, "s": 0.5 * (0 + 1 + 2) + 0.5 * 7}]


def test_the_issue_case_three_hundred_good_rows_then_a_failing_batch():
    schema = pa.schema([("ts", pa.int64()), ("a", pa.float64())])
    dag = (lj.DagBuilder().source("src", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("m", lj.Map(checked_a, output="b"))
           .operator("w", lj.TumblingWindow(size=1000, aggs={"n": lj.count(), "s": lj.sum("b")}))
           .connect("src", "m").connect("m", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    ex.process_batch("src", {"ts": np.arange(300), "a": np.full(300, 4.0)})
    a = np.full(300, 4.0)
    a[150] = -1
    with pytest.raises(lj.KernelError, match="row 150"):
        ex.process_batch("src", {"ts": np.arange(300, 600), "a": a})
    # A table of several record batches: the row is counted over the whole table.
    table = pa.Table.from_batches([pa.record_batch({"ts": np.arange(600, 610), "a": np.ones(10)}),
                                   pa.record_batch({"ts": [610, 611], "a": [1.0, -2.0]})])
    with pytest.raises(lj.KernelError, match="row 11 of the batch"):
        ex.process_batch("src", table)
    ex.finish()
    assert ex.take_sink_outputs("out").to_pylist() == [{"window_start": 0, "window_end": 1000, "n": 300, "s": 600.0}]


def _schema():
    return pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("a", pa.float64())])


def _rows(ts, k, a):
    return {"ts": np.asarray(ts, np.int64), "k": np.asarray(k, np.int64), "a": np.asarray(a, np.float64)}


def _assert_rejected(dag, good: list, bad, node: str, row, sink: str = "out", finish: bool = True):
    """``bad`` raises KernelError naming ``node`` and ``row``; outputs equal a run without it."""
    ex, clean = lj.DagExecutor(dag), lj.DagExecutor(dag)
    for b in good:
        ex.process_batch("s", b)
        clean.process_batch("s", b)
    with pytest.raises(lj.KernelError) as info:
        ex.process_batch("s", bad)
    assert info.value.node == node and info.value.row == row, str(info.value)
    assert info.value.__cause__ is not None
    if finish:
        ex.finish()
        clean.finish()
    assert ex.take_sink_outputs(sink).equals(clean.take_sink_outputs(sink))
    assert ex.metrics.per_node == clean.metrics.per_node
    return info.value


def test_filter_keyed_kernel_and_user_aggregate_failures_are_taken_back():
    def pred(a):
        if a >= 1_000.0:
            raise OverflowError("too large")
        return a > 1.0

    filt = (lj.DagBuilder().source("s", _schema(), event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
            .operator("f", lj.Filter(pred))
            .operator("w", lj.TumblingWindow(10, key="k", aggs={"n": lj.count()}))
            .connect("s", "f").connect("f", "w").sink_for("w", "out").build())
    _assert_rejected(filt, [_rows([1, 2, 3], [1, 2, 1], [2.0, 3.0, 0.0])],
                     _rows([4, 5, 6], [1, 1, 3], [5.0, 5e6, 1.0]), "f", 1)

    def step(st, a):
        if a < 0:
            raise ValueError("negative")
        st.total += a
        return st.total

    keyed = (lj.DagBuilder().source("s", _schema(), event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
             .operator("kk", lj.KeyedKernel(step, key="k", state={"total": np.float64}, output={"t": pa.float64()}))
             .connect("s", "kk").sink_for("kk", "out").build())
    _assert_rejected(keyed, [_rows([1, 2], [1, 2], [1.0, 2.0])], _rows([3, 4, 5], [1, 2, 1], [1.0, 1.0, -1.0]),
                     "kk", 2)

    def update(st, a):
        if a < 0:
            raise ValueError("negative in aggregate")
        return (st[0] + a,)

    total = lj.UserAggregate("total", state={"t": np.float64}, update=update,
                             merge=lambda x, y: (x[0] + y[0],), finalize=lambda st: st[0])
    agg = (lj.DagBuilder().source("s", _schema(), event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("w", lj.TumblingWindow(10, key="k", aggs={"t": total("a")}))
           .connect("s", "w").sink_for("w", "out").build())
    _assert_rejected(agg, [_rows([1, 2], [1, 2], [1.0, 2.0])], _rows([3, 4, 15], [1, 2, 1], [1.0, -1.0, 1.0]),
                     "w", 1)


def test_a_kernel_after_a_window_fails_the_call_that_fires_it_and_finish_can_be_retried():
    def check(n):
        if n > 2:
            raise ValueError("window too full")
        return n

    dag = (lj.DagBuilder().source("s", _schema(), event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("w", lj.TumblingWindow(10, key="k", aggs={"n": lj.count()}))
           .operator("c", lj.Map(check, output="n2"))
           .connect("s", "w").connect("w", "c").sink_for("c", "out").build())
    good = [_rows([1, 2, 3, 4], [1, 1, 2, 2], [0.0] * 4), _rows([11, 12, 13], [1, 1, 1], [0.0] * 3)]
    # The row at ts=21 (row 1) moves the watermark past 20: window [10, 20) of key 1, whose count of 3
    # makes the Map raise, fires.
    err = _assert_rejected(dag, good, _rows([19, 21], [1, 1], [0.0, 0.0]), "c", 1, finish=False)
    assert "'c'" in str(err)
    ex = lj.DagExecutor(dag)
    for b in good:
        ex.process_batch("s", b)
    assert ex.take_sink_outputs("out").num_rows == 2  # window [0, 10) of keys 1 and 2
    wm = ex.watermark("s")
    with pytest.raises(lj.KernelError, match="finish"):
        ex.finish()
    assert ex.watermark("s") == wm and ex.take_sink_outputs("out").num_rows == 0
    with pytest.raises(lj.KernelError):  # still failing, still nothing changed
        ex.finish()
    assert ex.metrics.events_in == 7


def test_which_kernels_may_raise():
    assert not faults.kernel_may_raise(lambda price: price * 2.0)
    assert faults.kernel_may_raise(checked_eur)

    def helper(x):
        assert x > 0
        return x

    @lj.kernel
    def outer(a):
        return helper(a) + 1.0

    assert faults.kernel_may_raise(outer)
    assert faults.kernel_may_raise(lambda a: outer(a))
    assert not faults.kernel_may_raise(lambda a: np.sqrt(a) + abs(a))
    assert faults.raising_kernels(DAG) == {"eur": ["checked_eur"]}


def test_an_unexpected_raise_in_an_unguarded_dag_stops_the_executor_until_restored(monkeypatch):
    monkeypatch.setattr("laminar_jit.executor.executor.raising_kernels", lambda dag: {})
    ex = lj.DagExecutor(DAG)
    table = make_bids(500, seed=1)
    ex.process_batch("bids", table)
    cp = ex.checkpoint()
    rng = np.random.default_rng(0)
    with pytest.raises(lj.KernelError, match="could not take the call back"):
        ex.process_batch("bids", _bad_batch(table, rng, 400, 7))
    with pytest.raises(lj.KernelError, match="Restore the last checkpoint"):
        ex.process_batch("bids", table)
    ex.restore(cp)
    ex.process_batch("bids", make_bids(300, seed=2))
    ex.finish()
    assert ex.take_sink_outputs("out").num_rows > 0


def test_run_stops_on_a_kernel_error_and_resumes_exactly_once_after_the_data_is_fixed(tmp_path):
    table = make_bids(6_000, seed=5)
    batches = split_table(table, range(500, 6_000, 500))
    broken = list(batches)
    price = broken[7].column("price").to_numpy(zero_copy_only=False).copy()
    price[13] = -5.0
    broken[7] = broken[7].set_column(broken[7].schema.get_field_index("price"), "price", pa.array(price))

    def sinks():
        return {"out": lj.io.ParquetSink(tmp_path / "out"), "rows": lj.io.ParquetSink(tmp_path / "rows")}

    with pytest.raises(lj.KernelError) as info:
        lj.run(DAG, sources={"bids": broken}, sinks=sinks(), checkpoint_dir=tmp_path / "chk",
               checkpoint_every=3, progress=False)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "checkpoint epoch" in notes and "3,500 of its rows" in notes and info.value.row == 13
    stats = lj.run(DAG, sources={"bids": batches}, sinks=(s := sinks()), checkpoint_dir=tmp_path / "chk",
                   checkpoint_every=3, progress=False)
    assert stats.resumed_from is not None and stats.finished
    ex = lj.DagExecutor(DAG)
    for b in batches:
        ex.process_batch("bids", b)
    ex.finish()
    for name in ("out", "rows"):
        want, got = ex.take_sink_outputs(name), s[name].read()
        assert got.num_rows == want.num_rows, name
        assert _sorted_rows(got) == _sorted_rows(want), name


def _sorted_rows(table: pa.Table) -> list:
    return sorted(zip(*[table[c].to_pylist() for c in table.column_names]), key=repr)


def _halved(price):
    return price * 0.5


@pytest.mark.parametrize("kind, kw", [("guarded", {}), ("guarded", {"parallelism": 2}), ("guarded", {"threads": 2}),
                                      ("stateless", {"parallelism": 2})])
def test_an_executor_and_its_state_go_when_the_last_reference_does(kind, kw):
    # helpers (fault guard, key shards, threads) hold the executor weakly: no reference cycle keeps the state
    # (and its arrays) alive until the garbage collector runs
    dag = DAG if kind == "guarded" else (lj.DagBuilder().source("bids", BIDS, event_time="ts")
                                         .operator("eur", lj.Map(_halved, output="eur")).connect("bids", "eur")
                                         .sink_for("eur", "rows").build())
    ex = lj.DagExecutor(dag, **kw)
    for batch in split_table(make_bids(3_000, 1), [700, 701, 2_000]):
        ex.process_batch("bids", batch)
    ex.finish()
    assert ex.take_sink_outputs("rows").num_rows == 3_000
    executor, state = weakref.ref(ex), weakref.ref(ex.state)
    was = gc.isenabled()
    gc.disable()
    try:
        del ex
        assert executor() is None and state() is None
    finally:
        if was:
            gc.enable()
