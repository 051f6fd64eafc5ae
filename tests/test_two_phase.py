"""Windows without a key in key shards, in two phases (``DagExecutor(dag, parallelism=N, two_phase=True)``).

Every shard aggregates its share of each batch (dealt by place, not key) and
the shards' partial results of a window are combined into its one row as it
fires. The reference is one executor (itself checked against DuckDB in the
window tests): the same rows in the same order, the same late rows and
metrics, over out-of-order input with nulls and NaN, random batch splits
(empty and one-row batches among them), punctuation, and checkpoints that
restore at another parallelism.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import laminar_jit as lj
from conftest import split_table
from helpers import SCHEMA, SIZE, bursts, events
from laminar_jit.executor.partials import combine_partials, combine_topn
from laminar_jit.executor.shards import shard_plan

#: Aggregates that combine exactly: counts, an integer sum (with nulls), minima and maxima of a float column
#: with nulls and NaN, and of the event time.
AGGS = {"n": lj.count(), "priced": lj.count("price"), "auctions": lj.sum("auction"), "low": lj.min("price"),
        "high": lj.max("price"), "first_ts": lj.min("ts"), "top": lj.max("auction")}


def _dag(kind: str):
    """A window of all rows (late rows to a side output), its results to one sink and, filtered, to another.

    ``topn``: the best three prices of each window with their ties (late rows to a side output), and the two
    lowest auctions (nulls never ranked), their rows to two sinks.
    """
    if kind == "topn":
        return (lj.DagBuilder()
                .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=50))
                .operator("cheap", lj.Filter(lambda price: price < 80.0)).connect("bids", "cheap")
                .operator("best", lj.TopN(3, by="price", window=SIZE, ties=True, allowed_lateness=20,
                                          late="side_output", late_sink="late")).connect("cheap", "best")
                .operator("first", lj.TopN(2, by="auction", window=SIZE // 2, descending=False)).connect("cheap", "first")
                .sink_for("best", "all").sink_for("first", "lowest").build())
    op = (lj.TumblingWindow(SIZE, aggs=AGGS, allowed_lateness=20, late="side_output", late_sink="late")
          if kind == "tumbling" else lj.SlidingWindow(SIZE, SIZE // 4, aggs=AGGS))
    return (lj.DagBuilder()
            .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=50))
            .operator("cheap", lj.Filter(lambda price: price < 80.0)).connect("bids", "cheap")
            .operator("w", op).connect("cheap", "w")
            .operator("busy", lj.Filter(lambda n: n > 2)).connect("w", "busy")
            .sink_for("w", "all").sink_for("busy", "busy_windows").build())


_DAGS = {kind: _dag(kind) for kind in ("tumbling", "sliding", "topn")}


def _steps(table: pa.Table, seed: int) -> list:
    rng = np.random.default_rng(seed)
    if seed % 3 == 0:  # prices in four values: many rows tie a window's best
        price = table.column("price")
        coarse = np.floor(price.to_numpy(zero_copy_only=False) / 25.0)  # (NaN stays NaN: never ranked)
        table = table.set_column(2, "price", pa.array(coarse, mask=price.is_null().to_numpy(zero_copy_only=False)))
    steps = []
    for b in split_table(table, list(rng.integers(0, table.num_rows + 1, 14)) + [5, 5, 6]):
        steps.append(("bids", b))
        if rng.random() < 0.1:
            steps.append(("advance", int(b.column("ts").to_numpy().min()) if b.num_rows else 0))
    return steps


def _feed(ex, steps) -> None:
    for what, arg in steps:
        if what == "advance":
            ex.advance_watermark("bids", arg)
        else:
            ex.process_batch(what, arg)


def _run(dag, parallelism: int, steps) -> tuple:
    ex = lj.DagExecutor(dag, parallelism=parallelism, two_phase=True)
    assert ex.shards == parallelism, ex.shards_note
    _feed(ex, steps)
    ex.finish()
    m = ex.metrics
    return ex.take_all_sink_outputs(), (m.events_processed, m.late_events, m.per_node)


def _same(got: pa.Table, want: pa.Table) -> bool:
    return got.schema.equals(want.schema) and pl.from_arrow(got).equals(pl.from_arrow(want), null_equal=True)


@pytest.mark.parametrize("kind", list(_DAGS))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]), bursty=st.booleans())
def test_windows_without_a_key_in_two_phases_equal_one_executor(kind, seed, shards, bursty):
    dag = _DAGS[kind]
    steps = _steps((bursts if bursty else events)(2000, seed), seed)
    want, want_metrics = _run(dag, 1, steps)
    got, got_metrics = _run(dag, shards, steps)
    assert got.keys() == want.keys()
    for sink in want:
        assert _same(got[sink], want[sink]), sink
    assert got_metrics == want_metrics  # (the window's rows out: combined, not per shard)


def test_the_shards_share_the_rows_and_the_late_rows_are_one_executors():
    dag = _DAGS["tumbling"]
    ex = lj.DagExecutor(dag, parallelism=2, two_phase=True)
    one_window = pa.table({"ts": np.arange(40, dtype=np.int64), "auction": pa.array([5] * 40, pa.int64()),
                           "price": [1.0] * 40, "ch": ["a"] * 40}, schema=SCHEMA)
    ex.process_batch("bids", one_window)
    assert ex.metrics.events_in == 40  # (reading the metrics runs the queued small batch)
    # rows are dealt by place, not key: both shards hold a part of the one open window
    assert [len(shard.operator_states[dag.node("w").id]) for shard in ex.key_shards.shards] == [1, 1]
    ex.finish()
    assert ex.take_sink_outputs("all").to_pydict()["n"] == [40]
    steps = _steps(events(3000, 4), 4)  # disorder beyond the watermark delay and lateness: late rows
    want, _ = _run(dag, 1, steps)
    got, _ = _run(dag, 2, steps)
    assert want["late"].num_rows > 0 and _same(got["late"], want["late"]) and _same(got["all"], want["all"])


@pytest.mark.parametrize("kind", list(_DAGS))
@pytest.mark.parametrize("before, after", [(2, 1), (2, 3), (1, 2), (3, 2)])
def test_a_two_phase_checkpoint_restores_at_any_parallelism(kind, before, after):
    # the shards' entries of one window combine into one executor's entry; a restore puts them in shard 0
    dag = _DAGS[kind]
    seed = 7 * before + after
    steps = _steps(bursts(2000, seed), seed)
    want, _ = _run(dag, 1, steps)
    half = len(steps) // 2
    first = lj.DagExecutor(dag, parallelism=before, two_phase=True)
    _feed(first, steps[:half])
    taken = first.take_all_sink_outputs()
    restored = lj.DagExecutor(dag, parallelism=after, two_phase=True)
    restored.restore(first.checkpoint())
    assert restored.shards == after
    _feed(restored, steps[half:])
    restored.finish()
    got = restored.take_all_sink_outputs()
    for sink in want:
        assert _same(pa.concat_tables([taken[sink], got[sink]]), want[sink]), sink


def test_partial_results_combine_per_window_end_within_each_piece():
    spec = _DAGS["tumbling"].node("w").bound.spec
    f64, i64 = pa.float64(), pa.int64()
    rows = pa.RecordBatch.from_pydict({
        "window_end": pa.array([10, 10, 20, 20, 20], pa.timestamp("ms")),
        "n": pa.array([2, 3, 1, 4, 5], i64),
        "auctions": pa.array([None, 7, None, None, 1], i64),
        "low": pa.array([float("nan"), 2.5, None, 1.0, float("nan")], f64),
        "high": pa.array([float("nan"), 2.5, None, None, None], f64),
    })
    # pieces: rows [0, 2) and [2, 5), then the second piece's last row apart: [2, 4) and [4, 5)
    got, pieces = combine_partials(rows, spec, np.array([0, 2, 5], np.int64))
    assert pieces.tolist() == [0, 1, 2]
    assert got.to_pydict()["n"] == [5, 10] and got.to_pydict()["auctions"] == [7, 1]
    low, high = got.column("low").to_pylist(), got.column("high").to_pylist()
    assert low == [2.5, 1.0]  # NaN sorts above every number: a minimum skips it
    assert np.isnan(high[0]) and high[1] is None  # a maximum keeps it; no shard's value: null
    got, pieces = combine_partials(rows, spec, np.array([0, 2, 4, 5], np.int64))
    assert pieces.tolist() == [0, 1, 2, 3] and got.to_pydict()["n"] == [5, 5, 5]


@pytest.mark.parametrize("ties", [True, False])
def test_the_shards_best_rows_of_a_window_are_ranked_again_by_value_then_arrival(ties):
    spec = SimpleNamespace(by="price", topn=2, ties=ties, descending=True)
    # two window ends; the shards' rows of each one after the other, arrival numbers in "rank"
    rows = pa.RecordBatch.from_pydict({
        "window_end": pa.array([10, 10, 10, 10, 10, 20, 20, 20], pa.timestamp("ms")),
        "rank": pa.array([4, 9, 2, 7, 8, 5, 3, 6], pa.int64()),
        "price": pa.array([5.0, 3.0, 5.0, 3.0, 1.0, 2.0, 2.0, 9.0]),
        "ch": ["a", "b", "c", "d", "e", "f", "g", "h"]})
    got, pieces = combine_topn(rows, spec, np.array([0, 8], np.int64))
    got = got.to_pydict()
    if ties:  # window 10: the two fives (arrivals 2, 4), no further row ties the second; window 20: 9, then both twos
        assert got["ch"] == ["c", "a", "h", "g", "f"] and got["rank"] == [1, 1, 1, 2, 2]
    else:
        assert got["ch"] == ["c", "a", "h", "g"] and got["rank"] == [1, 2, 1, 2]
    assert pieces.tolist() == [0, len(got["ch"])]
    # rows of one window end in two pieces are ranked within each piece
    got, pieces = combine_topn(rows, spec, np.array([0, 2, 8], np.int64))
    assert got.to_pydict()["ch"][:2] == ["a", "b"] and pieces.tolist()[:2] == [0, 2]
    assert got.column("rank").type == pa.int64() and got.schema.equals(rows.schema)


def test_minima_and_maxima_of_dates_times_and_booleans_combine_in_their_types():
    spec = SimpleNamespace(aggs=tuple((name, agg) for name, agg in [
        ("d_lo", lj.min("d")), ("d_hi", lj.max("d")), ("t_lo", lj.min("t")), ("b_hi", lj.max("b")),
        ("b_lo", lj.min("b")), ("at", lj.max("at"))]))
    days = pa.array([3, None, 1, 9], pa.int32()).cast(pa.date32())
    rows = pa.RecordBatch.from_pydict({
        "window_end": pa.array([10, 10, 20, 20], pa.timestamp("ms")),
        "d_lo": days, "d_hi": days,
        "t_lo": pa.array([5, 4, None, None], pa.int32()).cast(pa.time32("s")),
        "b_hi": pa.array([False, True, None, False]), "b_lo": pa.array([False, True, None, False]),
        "at": pa.array([7, 2, 5, None], pa.int64()).cast(pa.timestamp("us")),
    })
    got, _ = combine_partials(rows, spec, np.array([0, 4], np.int64))
    assert got.schema.equals(rows.schema)
    want = rows.take(pa.array([0, 2])).to_pydict()
    got = got.to_pydict()
    assert got["d_lo"] == [want["d_lo"][0], want["d_lo"][1]] and got["d_hi"] == [want["d_hi"][0], rows.column("d_hi")[3].as_py()]
    assert got["t_lo"] == [rows.column("t_lo")[1].as_py(), None]
    assert got["b_hi"] == [True, False] and got["b_lo"] == [False, False]
    assert got["at"] == [rows.column("at")[0].as_py(), rows.column("at")[2].as_py()]


def test_what_does_not_combine_runs_in_one_executor_and_says_why():
    def keyless(op):
        return (lj.DagBuilder()
                .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=50))
                .operator("w", op).connect("bids", "w").sink_for("w", "out").build())

    counts = keyless(lj.TumblingWindow(SIZE, aggs={"n": lj.count()}))
    assert "two_phase=True runs it" in shard_plan(counts)  # off unless asked for
    assert lj.DagExecutor(counts, parallelism=2, two_phase=True).shards == 2
    for op, why in [(lj.TumblingWindow(SIZE, aggs={"s": lj.sum("price")}), "rounding follows the order"),
                    (lj.TumblingWindow(SIZE, aggs={"m": lj.mean("auction")}), "does not combine"),
                    (lj.SessionWindow(100, aggs={"n": lj.count()}), "session without a key"),
                    (lj.TopN(1, by="price", window=None), "it is not a window")]:
        ex = lj.DagExecutor(keyless(op), parallelism=2, two_phase=True)
        assert ex.shards == 1 and why in ex.shards_note, ex.shards_note
    # a window without a key behind another stateful operator: its stage runs in shard 0 (an exchange)
    chained = (lj.DagBuilder()
               .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=50))
               .operator("per", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()}))
               .operator("all", lj.TumblingWindow(SIZE, aggs={"keys": lj.count(), "most": lj.max("n")}))
               .connect("bids", "per").connect("per", "all").sink_for("all", "out").build())
    steps = _steps(bursts(1500, 3), 3)
    want, want_metrics = _run(chained, 1, steps)
    got, got_metrics = _run(chained, 2, steps)
    assert _same(got["out"], want["out"]) and got_metrics == want_metrics


def test_run_takes_two_phase_in_one_process_only():
    dag = _DAGS["tumbling"]
    batches = events(2000, 9).to_batches(max_chunksize=300)
    outputs = []
    for opts in ({}, {"parallelism": 2, "two_phase": True}):
        sinks = {name: lj.io.MemorySink() for name in ("all", "busy_windows", "late")}
        stats = lj.run(dag, {"bids": batches}, sinks, progress=False, **opts)
        assert stats.shards == opts.get("parallelism", 1)
        outputs.append({name: sink.table() for name, sink in sinks.items()})
    for name, want in outputs[0].items():
        assert _same(outputs[1][name], want), name
    with pytest.raises(ValueError, match="two_phase"):
        lj.run(dag, {"bids": batches}, {name: lj.io.MemorySink() for name in ("all", "busy_windows", "late")},
               partitions=2, two_phase=True, progress=False)
