"""Key shards (``DagExecutor(dag, parallelism=N)``): the same rows, in the same order, as one executor.

The reference is the unsharded executor, itself checked against DuckDB in the
window, session, dedup and top-N tests. Inputs are out of order, with null
and zipf-skewed keys, string keys, late rows, and random batch splits that
include empty and one-row batches; the runs also punctuate, mark sources idle
and interleave two sources of one window.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import laminar_jit as lj
from conftest import split_table
from helpers import (AGGS, DELAY, GAP, LEFT, RIGHT, SCHEMA, SIZE, arm_quiet_timer, bursts, events, interleaved, join_dag,
                     join_sources, make_side, on_quiet)
from laminar_jit.executor.shards import shard_plan
from laminar_jit.kernels.arrivals import first_reaching
from laminar_jit.kernels.merging import merge_cuts, merge_positions, merge_shards, merge_span


def _source(b, name="bids", delay=50):
    return b.source(name, SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=delay))


def _tumbling_two_sources():
    """Two sources into one tumbling window by auction (late rows to a side output), plus a filtered pass-through."""
    b = _source(_source(lj.DagBuilder()), "more")
    return (b.operator("cheap", lj.Filter(lambda price: price < 50.0)).connect("bids", "cheap")
            .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs=AGGS, allowed_lateness=20,
                                             late="side_output", late_sink="late"))
            .connect("cheap", "w").connect("more", "w")
            .sink_for("w", "out").sink_for("cheap", "passed").build())


def _sliding_by_string():
    """A sliding window by a string key, its results renamed and filtered before the sink."""
    return (_source(lj.DagBuilder())
            .operator("w", lj.SlidingWindow(SIZE, SIZE // 4, key="ch", aggs={"n": lj.count(), "s": lj.sum("price")}))
            .operator("busy", lj.Filter(lambda n: n > 2))
            .operator("named", lj.Project({"channel": "ch", "closes": "window_end", "n": "n", "s": "s"}))
            .connect("bids", "w").connect("w", "busy").connect("busy", "named").sink_for("named", "out").build())


def _sessions():
    """Sessions per auction behind a projection that keeps the key column."""
    return (_source(lj.DagBuilder(), delay=30)
            .operator("cols", lj.Project(["ts", "price", "auction"]))
            .operator("w", lj.SessionWindow(GAP, key="auction", aggs={"n": lj.count(), "hi": lj.max("price"),
                                                                        "f": lj.first("price")}))
            .connect("bids", "cols").connect("cols", "w").sink_for("w", "out").build())


def _dedup_and_topn():
    return (_source(lj.DagBuilder())
            .operator("d", lj.Dedup(key="auction", within=SIZE, late="side_output", late_sink="late"))
            .operator("t", lj.TopN(2, by="price", key="auction", window=SIZE))
            .connect("bids", "d").connect("bids", "t").sink_for("d", "first").sink_for("t", "top").build())


def _chained():
    """Windows of windows: per-auction counts of short windows, summed per auction over long ones."""
    return (_source(lj.DagBuilder())
            .operator("short", lj.TumblingWindow(SIZE // 4, key="auction", aggs={"n": lj.count(), "hi": lj.max("price")}))
            .operator("long", lj.TumblingWindow(SIZE, key="auction", allowed_lateness=SIZE,
                                                aggs={"windows": lj.count(), "n": lj.sum("n"), "hi": lj.max("hi")}))
            .connect("bids", "short").connect("short", "long").sink_for("short", "quarters").sink_for("long", "out")
            .build())


DAGS = {"tumbling": _tumbling_two_sources, "sliding": _sliding_by_string, "session": _sessions,
        "dedup+topn": _dedup_and_topn, "chained": _chained}
_BUILT: dict = {}


def _dag(name):
    if name not in _BUILT:
        _BUILT[name] = DAGS[name]()
    return _BUILT[name]


def _drive(dag, parallelism, steps):
    """Run ``steps`` ((source, batch) or ("advance", ts) / ("idle", source)); every sink's output and metrics."""
    ex = lj.DagExecutor(dag, parallelism=parallelism)
    assert ex.shards == parallelism, ex.shards_note
    _feed(ex, steps)
    ex.finish()
    outputs = ex.take_all_sink_outputs()
    m = ex.metrics
    return outputs, (m.events_processed, m.late_events, m.per_node), ex


def _restored_run(dag, steps, half: int, first_at: int, then_at: int) -> dict:
    """Every sink's rows of a run checkpointed after ``steps[:half]`` at ``first_at`` shards, restored at
    ``then_at`` and fed the rest (outputs read at the checkpoint, which runs the batches queued before it)."""
    first = lj.DagExecutor(dag, parallelism=first_at)
    _feed(first, steps[:half])
    taken = first.take_all_sink_outputs()
    restored = lj.DagExecutor(dag, parallelism=then_at)
    restored.restore(first.checkpoint())
    assert restored.shards == then_at, restored.shards_note
    _feed(restored, steps[half:])
    restored.finish()
    got = restored.take_all_sink_outputs()
    return {sink: pa.concat_tables([taken[sink], got[sink]]) for sink in got}


def _same(got: pa.Table, want: pa.Table) -> bool:
    """Equal schemas and rows in the same order (NaN equals NaN, unlike ``pa.Table.equals``)."""
    return got.schema.equals(want.schema) and pl.from_arrow(got).equals(pl.from_arrow(want), null_equal=True)


def _steps(dag, table, seed):
    rng = np.random.default_rng(seed)
    cuts = list(rng.integers(0, table.num_rows + 1, 14)) + [5, 5, 6]
    batches = split_table(table, cuts)
    sources = list(dag.sources)
    steps = []
    for b in batches:
        steps.append((sources[rng.integers(len(sources))], b))
        if rng.random() < 0.1:
            steps.append(("advance", int(b.column("ts").to_numpy().min()) if b.num_rows else 0))
        if len(sources) > 1 and rng.random() < 0.1:
            steps.append(("idle", sources[rng.integers(len(sources))]))
    return steps


@pytest.mark.parametrize("name", list(DAGS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]), bursty=st.booleans())
def test_sharded_runs_equal_one_executor_row_for_row(name, seed, shards, bursty):
    dag = _dag(name)
    table = (bursts if bursty else events)(1500, seed)
    steps = _steps(dag, table, seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, _ = _drive(dag, shards, steps)
    assert got.keys() == want.keys()
    for sink in want:
        assert _same(got[sink], want[sink]), sink
    assert got_metrics[0] == want_metrics[0]
    assert got_metrics[1] == want_metrics[1]
    for node, counts in want_metrics[2].items():
        assert got_metrics[2][node] == counts, node


@pytest.mark.parametrize("name", ["tumbling", "dedup+topn", "joins"])
@pytest.mark.parametrize("shards, part_copy", [(2, 8), (3, 1)])
def test_merges_cut_into_a_part_per_thread_give_one_executors_rows(name, shards, part_copy, monkeypatch):
    # every merge is cut into a part per thread; each part's thread copies its rows of every shard (up to
    # PART_COPY_SHARDS shards), or every shard's thread its own rows once all the parts are worked out
    from laminar_jit.executor import shardmerge as module

    if name == "joins":  # a join's pairs, merged by where their rows arrived
        dag = _BUILT.setdefault(name, JOIN_DAGS[name]())
        steps = _join_steps(17)
        want = _drive_join(dag, 1, steps)
    else:
        dag = _dag(name)
        steps = _steps(dag, bursts(3000, 17), 17)
        want = _drive(dag, 1, steps)[:2]
    monkeypatch.setattr(module, "PARALLEL_PLACE_ROWS", 1)
    monkeypatch.setattr(module, "PART_COPY_SHARDS", part_copy)
    got = _drive_join(dag, shards, steps) if name == "joins" else _drive(dag, shards, steps)[:2]
    for sink in want[0]:
        assert _same(got[0][sink], want[0][sink]), sink
    assert got[1] == want[1]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), cut_at=st.lists(st.integers(0, 40), max_size=4), seed=st.integers(0, 2**16))
def test_a_shard_step_runs_the_pieces_and_appends_their_results(n, cut_at, seed):
    # ShardStep against the step called once on the whole batch: a step that passes on its rows, a column
    # of their values (with nulls where the value is odd, or none), and a boundary node's watermark
    from laminar_jit.executor.pieces import PieceLayout, ShardStep

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, rng.integers(0, n + 1), replace=False)).astype(np.int32) if n else \
        np.empty(0, np.int32)
    values = rng.integers(0, 9, n)
    cuts = np.array([0, *sorted({c for c in cut_at if 0 < c < n}), n], np.int64)  # as DagExecutor._cuts
    wms = np.cumsum(rng.integers(0, 3, n + 1))
    nulls_in = rng.integers(0, 3)  # 0: no piece has nulls, 1: every piece, 2: pieces from row n // 2 on

    def step(m, col, col_valid, bytes_, offsets, settings_, metrics, wm, idle, shard_rows, source_wms, state):
        assert col.size == m and bytes_.size == 3 and source_wms.size == m + 1
        vals = col[shard_rows]
        odd = vals % 2 == 0
        first = int(source_wms[0])
        valid = odd if nulls_in == 1 or (nulls_in == 2 and first >= wms[n // 2]) else np.empty(0, np.bool_)
        wm[7] = source_wms[-1]
        state[0] += 1
        return shard_rows, False, vals, valid

    layout = PieceLayout(columns=3, whole=frozenset({2}), rows=(0,), values=(2,), boundaries=(7,), returns=4)
    wm, state = np.zeros(8, np.int64), np.zeros(1, np.int64)
    got = ShardStep(step, layout)(rows, cuts, wms, values, np.ones(n, bool), np.arange(3), None, None, None,
                                  wm, None, state)
    assert state[0] == cuts.size - 1
    assert got[0].dtype == np.int64 and got[0].tolist() == rows.tolist()
    pieces = np.searchsorted(rows, cuts)
    assert got[1].tolist() == (pieces - pieces[0]).tolist()  # where each piece's rows start
    assert got[2].tolist() == values[rows].tolist()
    want_valid, masked = [], False
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        piece = values[rows[(rows >= lo) & (rows < hi)]]
        nulls = nulls_in == 1 or (nulls_in == 2 and wms[lo] >= wms[n // 2])
        masked |= bool(nulls and piece.size)
        want_valid += (piece % 2 == 0).tolist() if nulls else [True] * piece.size
    assert got[3].tolist() == (want_valid if masked else [])  # a flag per row once some piece has nulls
    assert got[4].tolist() == [0] + [int(wms[c]) for c in cuts[1:-1]]  # the boundary's watermark before each
    assert got[5].tolist() == [int(wms[c]) for c in cuts[1:]]


@pytest.mark.parametrize("name", ["tumbling", "sliding", "dedup+topn"])
def test_a_batch_in_one_piece_or_many_gives_one_executors_rows(name, monkeypatch):
    # a shard call of one piece returns the step's arrays as they are; of more, copies them one after the other
    from laminar_jit.executor import shards

    dag = _dag(name)
    table = bursts(3000, 11)
    steps = _steps(dag, table, 11) + [(dag.sources[0], table)]  # (the whole table: a call of many pieces)
    want, want_metrics, _ = _drive(dag, 1, steps)
    for piece_rows in (shards.WINDOW_PIECE_ROWS, 16):  # every batch in one piece; most in many
        monkeypatch.setattr(shards, "WINDOW_PIECE_ROWS", piece_rows)
        got, got_metrics, _ = _drive(dag, 2, steps)
        for sink in want:
            assert _same(got[sink], want[sink]), sink
        assert got_metrics == want_metrics


@st.composite
def _random_dags(draw):
    """A random shardable DAG: a window-family operator by a random key, maybe behind and before stateless ones."""
    kind = draw(st.sampled_from(["tumbling", "sliding", "session", "topn", "dedup"]))
    key = draw(st.sampled_from([["auction"], ["ch"], ["ch", "auction"]]))
    pre = draw(st.sampled_from([None, "filter", "project"]))
    post = draw(st.booleans())
    b = _source(lj.DagBuilder(), delay=draw(st.sampled_from([0, 50])))
    up = "bids"
    if pre is not None:
        b.operator("pre", lj.Filter(lambda price: price > 10.0) if pre == "filter"
                   else lj.Project(["ts", "ch", "price", "auction"])).connect(up, "pre")
        up = "pre"
    aggs = {"n": lj.count(), "s": lj.sum("price")}
    op = {"tumbling": lambda: lj.TumblingWindow(SIZE, key=key, aggs=aggs),
          "sliding": lambda: lj.SlidingWindow(SIZE, SIZE // 2, key=key, aggs=aggs),
          "session": lambda: lj.SessionWindow(GAP, key=key, aggs=aggs),
          "topn": lambda: lj.TopN(2, by="price", key=key, window=SIZE),
          "dedup": lambda: lj.Dedup(key=key, within=SIZE)}[kind]()
    b.operator("op", op).connect(up, "op")
    last = "op"
    if post:
        b.operator("post", lj.Filter(lambda price: price < 90.0) if kind in ("dedup", "topn")
                   else lj.Filter(lambda n: n > 1)).connect("op", "post")
        last = "post"
    return b.sink_for(last, "out").build(), len(key) > 1


@settings(max_examples=4, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built=_random_dags(), seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_random_shardable_dags_equal_one_executor(built, seed, shards):
    # derandomized: the same few DAGs every run, so their plans come from the disk cache after the first
    dag, composite = built
    steps = _steps(dag, bursts(1200, seed), seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, _ = _drive(dag, shards, steps)
    if composite:  # rows of one window end come in shard order with composite keys
        assert _sorted(got["out"]).equals(_sorted(want["out"]), null_equal=True)
    else:
        assert _same(got["out"], want["out"])
    assert got_metrics == want_metrics


def test_a_shard_without_rows_still_emits_what_the_watermark_made_due():
    # one key: every row goes to one shard; the other shards see only the watermark
    dag = _dag("session")
    table = bursts(400, 3)
    table = table.set_column(1, "auction", pa.array(np.full(table.num_rows, 7, np.int64)))
    steps = _steps(dag, table, 3)
    want, _, _ = _drive(dag, 1, steps)
    got, _, ex = _drive(dag, 3, steps)
    assert _same(got["out"], want["out"])
    assert ex.watermark("w") == np.iinfo(np.int64).max


def test_watermarks_and_late_rows_are_decided_on_the_whole_batch():
    # rows late only against the watermark of *other* keys' rows earlier in the same batch
    dag = _dag("tumbling")
    ts = np.array([0, 10_000, 500, 10_001, 600], np.int64)
    batch = pa.table({"ts": ts, "auction": pa.array([1, 2, 3, 4, 5], pa.int64()),
                      "price": [1.0, 2.0, 3.0, 4.0, 5.0], "ch": ["a"] * 5}, schema=SCHEMA)
    steps = [("idle", "more"), ("bids", batch.to_batches()[0])]
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, _ = _drive(dag, 2, steps)
    assert want["late"].num_rows == 2
    assert _same(got["late"], want["late"]) and _same(got["out"], want["out"])
    assert got_metrics[1] == want_metrics[1] == 2


def test_a_window_ending_its_stage_keeps_its_late_rows_and_its_rows_reach_sinks_of_the_next():
    # counts per auction (late rows to a side output: rows of the source's stage) feed the top count of all
    # (shard 0's stage), and a sink of that stage reads the counts' columns as they came
    dag = (_source(lj.DagBuilder())
           .operator("per", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()}, allowed_lateness=20,
                                              late="side_output", late_sink="late"))
           .operator("busy", lj.Filter(lambda n: n > 1))
           .operator("renamed", lj.Project({"starttime": "window_start", "endtime": "window_end",
                                            "auction": "auction", "n": "n"}))
           .operator("top", lj.TopN(1, by="n", window=SIZE, allowed_lateness=SIZE + 100, ties=True))
           .connect("bids", "per").connect("per", "busy").connect("busy", "renamed").connect("renamed", "top")
           .sink_for("top", "out").sink_for("busy", "busy_counts").build())
    steps = _steps(dag, events(2000, 5), 5)  # disorder beyond the delay and lateness: late rows
    want, want_metrics, _ = _drive(dag, 1, steps)
    for shards in (2, 3):
        got, got_metrics, _ = _drive(dag, shards, steps)
        assert want["late"].num_rows > 0 and want["busy_counts"].num_rows > 0
        for sink in want:
            assert _same(got[sink], want[sink]), sink
        assert got_metrics == want_metrics


def test_what_cannot_be_sharded_runs_as_one_executor_and_says_why(caplog):
    b = _source(lj.DagBuilder())
    keyless = b.operator("w", lj.TumblingWindow(SIZE, aggs={"n": lj.count()})).connect("bids", "w") \
        .sink_for("w", "out").build()
    assert "has no key" in shard_plan(keyless)
    ex = lj.DagExecutor(keyless, parallelism=2)
    assert ex.shards == 1 and "has no key" in ex.shards_note
    assert any("parallelism=2 has no effect" in r.getMessage() and "has no key" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")
    ex.process_batch("bids", events(50, 1).to_batches()[0])
    ex.finish()
    assert ex.take_sink_outputs("out").num_rows > 0

    rekeyed = (_source(lj.DagBuilder())
               .operator("m", lj.Map(lambda auction: auction % 3, output="auction")).connect("bids", "m")
               .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("m", "w")
               .sink_for("w", "out").build())
    assert "computes a key column" in shard_plan(rekeyed)
    renamed = (_source(lj.DagBuilder())
               .operator("p", lj.Project({"ts": "ts", "auction": "ch"})).connect("bids", "p")
               .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("p", "w")
               .sink_for("w", "out").build())
    assert "renames or computes a key column" in shard_plan(renamed)

    chained = (_source(lj.DagBuilder())
               .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("bids", "w")
               .operator("d", lj.Dedup(key="auction", within=SIZE)).connect("w", "d")
               .sink_for("d", "out").build())
    assert "through 'd' (a Dedup" in shard_plan(chained)

    two_keys = (_source(lj.DagBuilder())
                .operator("a", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("bids", "a")
                .operator("c", lj.TumblingWindow(SIZE, key="ch", aggs={"n": lj.count()})).connect("bids", "c")
                .sink_for("a", "x").sink_for("c", "y").build())
    assert "share no key column" in shard_plan(two_keys)

    unordered = (_source(lj.DagBuilder())
                 .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("bids", "w")
                 .operator("p", lj.Project(["auction", "n"])).connect("w", "p").sink_for("p", "out").build())
    assert "does not receive the window_end" in shard_plan(unordered)

    stateless = (_source(lj.DagBuilder()).operator("f", lj.Filter(lambda price: price > 1.0))
                 .connect("bids", "f").sink_for("f", "out").build())
    assert "no keyed state" in shard_plan(stateless)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), parallelism=st.sampled_from([2, 3]))
def test_a_dag_without_state_runs_whole_batches_side_by_side(seed, parallelism):
    # outputs, metrics and watermarks of one thread, whatever the batches (empty, one-row and large ones)
    dag = _BUILT.setdefault("stateless", (
        _source(lj.DagBuilder()).operator("f", lj.Filter(lambda price: price > 20.0)).connect("bids", "f")
        .operator("m", lj.Map(lambda price: price * 2.0, output="twice")).connect("f", "m")
        .sink_for("m", "out").sink_for("bids", "all").build()))
    rng = np.random.default_rng(seed)
    table = bursts(200_000, seed)
    cuts = np.sort(np.concatenate([rng.integers(0, table.num_rows, 30), [5, 5, 6, 40_000]]))
    batches = split_table(table, list(cuts))
    runs = []
    for par in (1, parallelism):
        ex = lj.DagExecutor(dag, parallelism=par)
        outputs, marks = [], []
        for i, b in enumerate(batches):
            ex.process_batch("bids", b)
            if i % 7 == 6:  # reading outputs or watermarks runs what is queued
                marks.append((ex.watermark("bids"), ex.watermark("m"), ex.state.idle.tolist()))
                outputs.append(ex.take_all_sink_outputs())
        ex.finish()
        outputs.append(ex.take_all_sink_outputs())
        m = ex.metrics
        runs.append(({sink: pa.concat_tables([o[sink] for o in outputs]) for sink in dag.sinks}, marks,
                     (m.events_in, m.events_processed, m.per_node)))
    (want, want_marks, want_metrics), (got, got_marks, got_metrics) = runs
    assert "side by side" in ex.shards_note and ex.key_shards is None
    for sink in want:
        assert want[sink].num_rows > 1000 and _same(got[sink], want[sink]), sink
    assert got_marks == want_marks and got_metrics == want_metrics


def test_parallelism_is_a_positive_int_or_auto():
    dag = _dag("session")
    with pytest.raises(ValueError, match="parallelism"):
        lj.DagExecutor(dag, parallelism=0)
    with pytest.raises(ValueError, match="parallelism"):
        lj.DagExecutor(dag, parallelism="many")
    from laminar_jit.executor.shards import resolve_parallelism
    import os

    assert resolve_parallelism("auto") == len(os.sched_getaffinity(0))
    assert resolve_parallelism(None) == 1


def _composite():
    """Composite keys (a string and a nullable int), ordered differently by two operators."""
    return (_source(lj.DagBuilder(), delay=30)
            .operator("w", lj.TumblingWindow(SIZE, key=["ch", "auction"], aggs={"n": lj.count(), "s": lj.sum("price")}))
            .operator("se", lj.SessionWindow(GAP, key=["auction", "ch"], aggs={"n": lj.count(), "hi": lj.max("price")}))
            .connect("bids", "w").connect("bids", "se").sink_for("w", "out").sink_for("se", "sessions").build())


def _sorted(t: pa.Table) -> pl.DataFrame:
    return pl.from_arrow(t).sort(t.column_names, nulls_last=True)


@pytest.mark.parametrize("name", [*DAGS, "composite"])
@pytest.mark.parametrize("before, after", [(2, 1), (2, 3), (1, 2), (3, 2)])
def test_a_checkpoint_restores_at_any_parallelism(name, before, after, tmp_path):
    # a checkpoint saves the shards' states merged, as one executor's; a restore splits them by key group
    if name == "composite":
        _BUILT.setdefault(name, _composite())
    dag = _dag(name)
    seed = 7 * before + after
    steps = _steps(dag, bursts(1500, seed), seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    half = len(steps) // 2
    first = lj.DagExecutor(dag, parallelism=before)
    _feed(first, steps[:half])
    path = tmp_path / "cp"
    first.checkpoint().save(path)
    restored = lj.DagExecutor(dag, parallelism=after)
    assert restored.shards == after, restored.shards_note
    restored.restore(lj.Checkpoint.load(path))
    for ex in (first, restored):  # the checkpointed executor carries on unaffected
        _feed(ex, steps[half:])
        ex.finish()
        got = ex.take_all_sink_outputs()
        for sink in want:
            if name == "composite":  # rows of one window end come in shard order with composite keys
                assert _sorted(got[sink]).equals(_sorted(want[sink]), null_equal=True), sink
            else:
                assert _same(got[sink], want[sink]), sink
        m = ex.metrics
        assert (m.events_processed, m.late_events, m.per_node) == want_metrics


def test_key_groups_move_between_shards_to_even_out_skewed_keys():
    # zipf keys: ranges of key groups give one shard ~70 % of the rows; the shards are rebalanced by load
    dag = _dag("session")
    steps = [("bids", b) for b in bursts(30_000, 1).to_batches(max_chunksize=3_000)]
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, ex = _drive(dag, 2, steps)
    assert _same(got["out"], want["out"]) and got_metrics == want_metrics
    shards = ex.key_shards
    ranges = np.arange(len(shards.group_shard)) * 2 // len(shards.group_shard)
    share = np.bincount(shards.group_shard, weights=shards.group_rows, minlength=2) / shards.group_rows.sum()
    assert np.bincount(ranges, weights=shards.group_rows).max() / shards.group_rows.sum() > 0.6
    assert share.max() < 0.52, share


def _feed(ex, steps):
    for what, arg in steps:
        if what == "advance":
            ex.advance_watermark("bids", arg)
        elif what == "idle":
            ex.mark_idle(arg)
        else:
            ex.process_batch(what, arg)


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int32(), pa.uint32(), pa.uint64(), pa.bool_(),
                                        pa.timestamp("ms"), pa.date32(), pa.duration("us")], ids=str)
def test_state_key_values_hash_to_their_rows_key_group(arrow_type):
    # a restore finds each entry's key group from the int64 the state keeps; it must be its rows' group
    from laminar_jit.executor.keyhash import mix_column
    from laminar_jit.executor.boundary import _to_arrow
    from laminar_jit.kernels.partitioning import HASH_SEED

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 2**63 - 1, 500, dtype=np.int64).astype(np.uint64) * np.uint64(2)  # high bit set too
    if pa.types.is_boolean(arrow_type):
        arr = pa.array(rng.random(500) < 0.5, mask=rng.random(500) < 0.1)
    else:
        width = np.dtype(arrow_type.to_pandas_dtype()).itemsize if not pa.types.is_temporal(arrow_type) \
            else arrow_type.bit_width // 8
        storage = {1: np.int8, 4: np.int32, 8: np.int64}[width]
        if arrow_type in (pa.uint32(), pa.uint64()):
            storage = np.uint32 if width == 4 else np.uint64
        values = raw.astype(storage)
        arr = pa.array(values, mask=rng.random(500) < 0.1).cast(arrow_type) if not pa.types.is_temporal(arrow_type) \
            else pa.array(values, mask=rng.random(500) < 0.1).view(arrow_type)
    rows = np.full(500, HASH_SEED, np.uint64)
    mix_column(rows, arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    storage_type = pa.int8() if pa.types.is_boolean(arrow_type) else (
        pa.int64() if not pa.types.is_temporal(arrow_type) or arrow_type.bit_width == 64 else pa.int32())
    as_state = arr.cast(storage_type) if pa.types.is_boolean(arrow_type) else (
        arr.view(storage_type) if pa.types.is_temporal(arrow_type) else arr)
    kept = as_state.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)  # what np.int64(value) keeps
    entries = np.full(500, HASH_SEED, np.uint64)
    mix_column(entries, _to_arrow(kept, valid, arrow_type))
    assert (entries == rows).all()


def test_a_bad_checkpoint_leaves_every_shard_unchanged():
    dag = _dag("session")
    steps = _steps(dag, bursts(600, 5), 5)
    want, _, _ = _drive(dag, 2, steps)
    ex = lj.DagExecutor(dag, parallelism=2)
    _feed(ex, steps[:5])
    other = lj.DagExecutor(_dag("sliding")).checkpoint()
    with pytest.raises(lj.CheckpointError, match="different DAG"):
        ex.restore(other)
    _feed(ex, steps[5:])
    ex.finish()
    got = ex.take_all_sink_outputs()
    assert _same(got["out"], want["out"])


def test_key_groups_are_the_top_byte_of_the_row_hash():
    # one integer-like key column is hashed straight into groups; other keys go through the row hash
    from laminar_jit.executor.keyhash import key_groups, key_hash

    rng = np.random.default_rng(5)
    n = 1000
    ints = rng.integers(-2**40, 2**40, n)
    nulls = rng.random(n) < 0.1
    batch = pa.record_batch({
        "i64": pa.array(ints, mask=nulls), "i32": pa.array(ints.astype(np.int32)),
        "u8": pa.array(ints.astype(np.uint8)), "flag": pa.array(ints % 2 == 0, mask=nulls),
        "ts": pa.array(ints, pa.timestamp("ms")), "day": pa.array(ints.astype(np.int32) % 20000, pa.date32()),
        "s": pa.array([f"k{x % 50}" for x in ints]),
    })
    for keys in (["i64"], ["i32"], ["u8"], ["flag"], ["ts"], ["day"], ["s"], ["i64", "s"]):
        want = (key_hash(batch, tuple(keys)) >> np.uint64(56)).astype(np.uint8)
        assert key_groups(batch, tuple(keys), 8).tolist() == want.tolist(), keys


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([1, 2, 2, 3, 4, 9, 25, 40]), pieces=st.integers(1, 3),
       by=st.sampled_from(["major", "middle", "minor"]), long=st.booleans())
def test_merge_kernels_match_a_stable_sort(seed, shards, pieces, by, long):
    # (more than HEAP_SHARDS = 24 shards merge through a heap, fewer by a scan of every head row, two
    # from both ends at once) each shard's rows of a piece are sorted by (major, middle, minor), or a
    # prefix of those (``by``); the merge orders the pieces one after the other and, within one, every
    # shard's rows as a stable sort would
    rng = np.random.default_rng(seed)
    ranked, by_middle = by == "minor", by != "major"
    runs, bounds = [], np.zeros((shards, pieces + 1), np.int64)
    for s in range(shards):
        for p in range(pieces):
            m = int(rng.integers(0, 40 if long else 6))
            keys = np.stack([rng.integers(0, 3, m), rng.integers(0, 4, m) if by_middle else np.zeros(m, np.int64),
                             rng.integers(0, 2, m) if ranked else np.zeros(m, np.int64)])
            keys = keys[:, np.lexsort(keys[::-1])]
            runs.append((p, s, keys))
            bounds[s, p + 1] = bounds[s, p] + m
    flat = np.concatenate([keys for _, _, keys in sorted(runs, key=lambda r: (r[1], r[0]))], axis=1)
    offsets = np.concatenate(([0], np.cumsum(bounds[:, -1])))
    bounds = bounds + offsets[:-1, None]
    piece = np.concatenate([np.full(bounds[s, p + 1] - bounds[s, p], p) for s in range(shards) for p in range(pieces)])
    shard = np.concatenate([np.full(bounds[s, -1] - bounds[s, 0], s) for s in range(shards)])
    middle, minor = flat[1], flat[2]
    if not by_middle:  # (what the merge must not look at)
        middle = rng.integers(0, 4, middle.size)
    dest = merge_shards(flat[0].copy(), middle.copy(), minor.copy(), bounds, by_middle, ranked)
    order = np.lexsort((shard, *((minor,) if ranked else ()), *((middle,) if by_middle else ()), flat[0], piece))
    want = np.empty_like(order)
    want[order] = np.arange(order.size)
    assert dest.tolist() == want.tolist()
    for parts in (2, 3, 7):  # threads, each working out a part of the merge
        cuts = merge_cuts(flat[0], middle, minor, bounds, by_middle, ranked, parts)
        split = np.full(dest.size, -1, np.int64)
        for t in range(parts):
            merge_span(split, flat[0], middle, minor, bounds, by_middle, ranked, cuts[t], cuts[t + 1])
            mine = np.concatenate([split[cuts[t, s]:cuts[t + 1, s]] for s in range(shards)])
            before = int((cuts[t] - bounds[:, 0]).sum())  # a part's rows follow every earlier part's
            assert sorted(mine.tolist()) == list(range(before, before + mine.size))
        assert split.tolist() == want.tolist()
    # rows passed on: disjoint ascending positions per shard, merged by position
    n = int(rng.integers(0, 41))  # (an empty batch too)
    owner = rng.integers(0, shards + 1, n)  # shards + 1: no shard passed the row on
    positions = np.concatenate([np.flatnonzero(owner == s) for s in range(shards)]).astype(np.int64)
    rows, dest = merge_positions(positions, n)
    assert rows.tolist() == np.flatnonzero(owner < shards).tolist()
    assert rows[dest].tolist() == positions.tolist()


# ----------------------------------------------------------------------------- updating results
def _updating():
    """Updating GROUP BYs (a composite key behind a map; string min/max with idle keys forgotten), an unbounded
    TopN and the last row per auction (``Dedup(keep="last")``), all sharing the auction column."""
    return (_source(lj.DagBuilder())
            .operator("m", lj.Map(lambda price: price * 2.0, output="twice")).connect("bids", "m")
            .operator("g", lj.GroupAggregate(key=["auction", "ch"], aggs={
                "n": lj.count(), "c": lj.count("price"), "s": lj.sum("twice"), "lo": lj.min("price"),
                "hi": lj.max("price"), "avg": lj.mean("price"), "d": lj.count_distinct("price")}))
            .connect("m", "g")
            .operator("t", lj.TopN(2, by="price", key="auction", window=None)).connect("bids", "t")
            .operator("cheap", lj.Filter(lambda s: s < 500.0)).connect("g", "cheap")
            .operator("d", lj.Dedup(key="auction", keep="last")).connect("bids", "d")
            .operator("g2", lj.GroupAggregate(key="auction", aggs={"lo": lj.min("ch"), "hi": lj.max("ch"),
                                                                   "k": lj.count_distinct("ch")}, state_ttl=300))
            .connect("bids", "g2")
            .sink_for("cheap", "out").sink_for("t", "top").sink_for("d", "last").sink_for("g2", "strings").build())


_CHANGELOG_SCHEMA = pa.schema([*SCHEMA, ("op", pa.int8())])


def _retracting():
    """A GROUP BY over a changelog: min/max and distinct counts keep their values to take retractions back."""
    return (lj.DagBuilder().source("bids", _CHANGELOG_SCHEMA, event_time="ts",
                                   watermark=lj.BoundedOutOfOrderness(max_delay=50))
            .operator("g", lj.GroupAggregate(key="ch", aggs={"n": lj.count(), "lo": lj.min("price"),
                                                             "hi": lj.max("price"), "d": lj.count_distinct("auction"),
                                                             "s": lj.sum("price")}))
            .connect("bids", "g").sink_for("g", "out").build())


def _changelog(table: pa.Table, seed: int) -> pa.Table:
    """``table`` as inserts, with a third of its rows deleted again somewhere after they came."""
    rng = np.random.default_rng(seed)
    n = table.num_rows
    gone = np.flatnonzero(rng.random(n) < 0.33)
    at = np.minimum(gone + rng.integers(1, 200, gone.size), n)  # each retraction after its insert
    order = np.argsort(np.concatenate([np.arange(n), at]), kind="stable")
    rows = table.take(np.concatenate([np.arange(n), gone])[order])
    op = np.concatenate([np.zeros(n, np.int8), np.full(gone.size, 3, np.int8)])[order]
    return rows.append_column("op", pa.array(op))


UPDATING_DAGS = {"updating": _updating, "retracting": _retracting}


def _drive_calls(dag, parallelism, steps):
    """Every sink's rows with the number of the call that emitted them, and the metrics."""
    ex = lj.DagExecutor(dag, parallelism=parallelism)
    assert ex.shards == parallelism, ex.shards_note
    out = {sink: [] for sink in dag.sinks}
    watermarks = []
    for call, step in enumerate(steps):
        _feed(ex, [step])
        for sink, t in ex.take_all_sink_outputs().items():
            out[sink].append(t.append_column("call", pa.array(np.full(t.num_rows, call, np.int64))))
        watermarks.append([ex.watermark(node.name) for node in dag.nodes])
    ex.finish()
    m = ex.metrics
    return {sink: pa.concat_tables(parts) for sink, parts in out.items()}, (m.events_processed, m.per_node,
                                                                             watermarks)


def _same_changes(got: pa.Table, want: pa.Table, keys) -> bool:
    """The same changes in every call, and each key's changes in the same order (keys may interleave differently)."""
    by = [*keys, "call"]
    g, w = (pl.from_arrow(t).sort(by, nulls_last=True, maintain_order=True) for t in (got, want))
    return got.schema.equals(want.schema) and g.equals(w, null_equal=True)


def _assert_same_outputs(got: dict, want: dict, plan, keys) -> None:
    """Every sink's rows as one executor's: row for row, or a changelog per key (``keys(sink)``) and call."""
    for sink in want:
        if plan.merge[sink] == ("changes",):  # keys interleave by shard within a call
            assert _same_changes(got[sink], want[sink], keys(sink)), sink
        else:
            assert _same(got[sink], want[sink]), sink


_KEYS = {"out": ["auction", "ch"], "top": ["auction"], "last": ["auction"], "strings": ["auction"]}


@pytest.mark.parametrize("name", list(UPDATING_DAGS))
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_updating_results_shard_with_the_same_changes_per_call_and_per_key(name, seed, shards):
    # each key's changes come from its shard, in its order; within a call, keys come shard by shard
    dag = _BUILT.setdefault(name, UPDATING_DAGS[name]())
    assert shard_plan(dag).merge == {sink: ("changes",) for sink in dag.sinks}
    table = bursts(1500, seed)
    if name == "retracting":
        table = _changelog(table, seed)
    steps = _steps(dag, table, seed)
    want, want_metrics = _drive_calls(dag, 1, steps)
    got, got_metrics = _drive_calls(dag, shards, steps)
    for sink in want:
        keys = ["ch"] if name == "retracting" else [k for k in _KEYS[sink] if k in want[sink].column_names]
        assert _same_changes(got[sink], want[sink], keys), sink
        assert want[sink].num_rows > 0
    assert got_metrics == want_metrics


@pytest.mark.parametrize("name", list(UPDATING_DAGS))
@pytest.mark.parametrize("before, after", [(2, 1), (2, 3), (1, 2)])
def test_updating_state_restores_at_any_parallelism(name, before, after, tmp_path):
    dag = _BUILT.setdefault(name, UPDATING_DAGS[name]())
    seed = 5 * before + after
    table = bursts(1500, seed)
    if name == "retracting":
        table = _changelog(table, seed)
    steps = _steps(dag, table, seed)
    half = len(steps) // 2
    runs = []
    for parallelism in (1, before):  # one executor throughout, and the one checkpointed
        ex = lj.DagExecutor(dag, parallelism=parallelism)
        _feed(ex, steps[:half])
        ex.take_all_sink_outputs()
        runs.append(ex)
        checkpoint = ex.checkpoint()  # (it runs the batches still queued, in both)
    checkpoint.save(tmp_path / "cp")
    restored = lj.DagExecutor(dag, parallelism=after)
    assert restored.shards == after, restored.shards_note
    restored.restore(lj.Checkpoint.load(tmp_path / "cp"))
    outputs = []
    for ex in (*runs, restored):
        _feed(ex, steps[half:])
        ex.finish()
        outputs.append(ex.take_all_sink_outputs())
    want = outputs[0]
    for got in outputs[1:]:  # the checkpointed executor carries on unaffected, the restored one alike
        for sink in want:
            keys = ["ch"] if name == "retracting" else [k for k in _KEYS[sink] if k in want[sink].column_names]
            g, w = (pl.from_arrow(x).sort(keys, nulls_last=True, maintain_order=True) for x in (got[sink], want[sink]))
            assert g.equals(w, null_equal=True) and want[sink].num_rows > 0, sink


def _nested():
    """Changelogs into GROUP BYs of another key: auctions per bid count (with their top price and distinct
    auctions) from a GROUP BY per auction, and rows per rank from an unbounded TopN per auction."""
    return (_source(lj.DagBuilder())
            .operator("per_auction", lj.GroupAggregate(key="auction", aggs={"n": lj.count(), "hi": lj.max("price")}))
            .connect("bids", "per_auction")
            .operator("per_count", lj.GroupAggregate(key="n", aggs={
                "auctions": lj.count(), "top": lj.max("hi"), "low": lj.min("hi"), "d": lj.count_distinct("auction")}))
            .connect("per_auction", "per_count")
            .operator("t", lj.TopN(2, by="price", key="auction", window=None)).connect("bids", "t")
            .operator("per_rank", lj.GroupAggregate(key="rank", aggs={"n": lj.count(), "hi": lj.max("price")}))
            .connect("t", "per_rank")
            .sink_for("per_count", "hist").sink_for("per_rank", "ranks").build())


_NESTED_KEYS = {"hist": ["n"], "ranks": ["rank"]}


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_changelogs_are_dealt_out_again_by_the_key_of_the_group_by_they_feed(seed, shards):
    # the changes of a call reach the next GROUP BY in another order than one executor's, which a GROUP BY's
    # counts, min/max value lists and distinct values do not see: each key's changes per call are the same
    dag = _BUILT.setdefault("nested", _nested())
    plan = shard_plan(dag)
    assert plan.keys == {"bids": ("auction",), "per_auction": ("n",), "t": ("rank",)}
    assert plan.merge == {"per_auction": ("changes",), "t": ("changes",), "hist": ("changes",),
                          "ranks": ("changes",)}
    table = bursts(1500, seed)
    steps = _steps(dag, table, seed)
    want, want_metrics = _drive_calls(dag, 1, steps)
    got, got_metrics = _drive_calls(dag, shards, steps)
    for sink, keys in _NESTED_KEYS.items():
        assert _same_changes(got[sink], want[sink], keys), sink
        assert pc.sum(pc.equal(want[sink]["op"], 1)).as_py() > 0, sink  # retractions reached the GROUP BY
    assert got_metrics == want_metrics


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_groups_fed_by_changelogs_restore_at_any_parallelism(before, after, tmp_path):
    dag = _BUILT.setdefault("nested", _nested())
    seed = 3 * before + after
    steps = _steps(dag, bursts(1500, seed), seed)
    half = len(steps) // 2
    ex = lj.DagExecutor(dag, parallelism=before)
    _feed(ex, steps[:half])
    ex.take_all_sink_outputs()
    ex.checkpoint().save(tmp_path / "cp")
    one = lj.DagExecutor(dag)
    _feed(one, steps[:half])
    one.take_all_sink_outputs()
    restored = lj.DagExecutor(dag, parallelism=after)
    assert restored.shards == after, restored.shards_note
    restored.restore(lj.Checkpoint.load(tmp_path / "cp"))
    outputs = []
    for run in (one, restored):
        _feed(run, steps[half:])
        run.finish()
        outputs.append(run.take_all_sink_outputs())
    want, got = outputs
    for sink, keys in _NESTED_KEYS.items():
        g, w = (pl.from_arrow(x).sort(keys, maintain_order=True) for x in (got[sink], want[sink]))
        assert g.equals(w, null_equal=True) and want[sink].num_rows > 0, sink


def test_a_changelog_feeds_key_shards_only_where_its_order_cannot_show():
    def fed(op, first=lj.GroupAggregate(key="auction", aggs={"n": lj.count(), "hi": lj.max("price")})):
        return (_source(lj.DagBuilder()).operator("g", first)
                .connect("bids", "g").operator("h", op).connect("g", "h").sink_for("h", "out").build())

    assert "sums floats ('s'" in shard_plan(fed(lj.GroupAggregate(key="n", aggs={"s": lj.sum("hi")})))
    top = lj.TopN(2, by="price", key="auction", window=None)
    assert "forgets idle keys" in shard_plan(fed(lj.GroupAggregate(key="rank", aggs={"k": lj.count()},
                                                                   state_ttl=100), first=top))
    assert not isinstance(shard_plan(fed(lj.GroupAggregate(key="n", aggs={"s": lj.sum("n")}))), str)  # integers


def test_updating_shards_are_taken_back_when_a_kernel_raises():
    def checked(hi):
        if hi > 99.0:
            raise ValueError("too dear")
        return hi

    dag = (_source(lj.DagBuilder())
           .operator("g", lj.GroupAggregate(key="auction", aggs={"n": lj.count(), "hi": lj.max("price")}))
           .operator("m", lj.Map(checked, output="hi")).connect("bids", "g").connect("g", "m")
           .sink_for("m", "out").build())
    rng = np.random.default_rng(4)
    good = events(400, 4).to_batches()[0]
    cheap = good.set_column(2, "price", pa.array(np.minimum(good.column("price").to_numpy(zero_copy_only=False), 50)))
    bad = cheap.set_column(2, "price", pa.array(np.where(rng.random(400) < 0.01, 99.5, 1.0)))
    ex, clean = lj.DagExecutor(dag, parallelism=2), lj.DagExecutor(dag, parallelism=2)
    assert ex.shards == 2, ex.shards_note
    for e in (ex, clean):
        e.process_batch("bids", cheap)
    with pytest.raises(lj.KernelError, match="too dear"):
        ex.process_batch("bids", bad)
    for e in (ex, clean):
        e.process_batch("bids", cheap)
    assert _same(ex.take_sink_outputs("out"), clean.take_sink_outputs("out"))


def test_a_restored_last_row_is_replaced_by_the_next_row_of_its_key():
    # arrival numbers tell a key's new row from the one it last emitted; a restore keeps them counting on
    dag = (_source(lj.DagBuilder()).operator("d", lj.Dedup(key="auction", keep="last")).connect("bids", "d")
           .sink_for("d", "out").build())
    row = lambda ts, price: pa.record_batch([pa.array([ts]), pa.array([7]), pa.array([price]), pa.array(["web"])],
                                            schema=SCHEMA)
    for before, after in [(2, 1), (1, 2), (2, 3)]:
        ex = lj.DagExecutor(dag, parallelism=before)
        ex.process_batch("bids", row(1, 1.0))
        assert [r["op"] for r in ex.take_sink_outputs("out").to_pylist()] == [0]
        restored = lj.DagExecutor(dag, parallelism=after)
        restored.restore(ex.checkpoint())
        restored.process_batch("bids", row(2, 2.0))
        assert [(r["price"], r["op"]) for r in restored.take_sink_outputs("out").to_pylist()] == [(1.0, 1), (2.0, 2)]


# ----------------------------------------------------------------------------- joins
_LEFT = LEFT
_RIGHT = pa.schema([*RIGHT, ("tag", pa.string())])


def _join_sources(delay):
    return (lj.DagBuilder()
            .source("L", _LEFT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=delay))
            .source("R", _RIGHT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=delay)))


def _joins():
    """Six joins of ``L`` and ``R``: an inner interval join of filtered left rows (late rows to side outputs)
    with a map over its pairs; a window join by a composite key with a string, its right side deduplicated
    first (as Nexmark q8); a semi join; a full outer and an anti interval join, whose unmatched
    rows (null keys among them) come out as the watermark settles them; a left as-of join (nearest, within a
    tolerance) of the filtered left rows, whose rows wait for the watermark too."""
    return (_join_sources(25)
            .operator("cheap", lj.Filter(lambda a: a < 90.0)).connect("L", "cheap")
            .operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35, late="side_output",
                                           late_sink={"left": "late_l", "right": "late_r"}))
            .connect("cheap", "j", port="left").connect("R", "j", port="right")
            .operator("sum", lj.Map(lambda a, b: a + b, output="ab")).connect("j", "sum")
            .operator("d", lj.Dedup(key=["k", "tag"], within=100)).connect("R", "d")
            .operator("wj", lj.WindowJoin(100, ["k", "tag"], ["k", "tag"]))
            .connect("L", "wj", port="left").connect("d", "wj", port="right")
            .operator("semi", lj.IntervalJoin("k", "k", lower=-30, upper=30, how="semi"))
            .connect("L", "semi", port="left").connect("R", "semi", port="right")
            .sink_for("sum", "out").sink_for("cheap", "passed").sink_for("wj", "windowed").sink_for("d", "firsts")
            .operator("full", lj.IntervalJoin("k", "k", lower=-10, upper=12, how="full"))
            .connect("L", "full", port="left").connect("R", "full", port="right")
            .operator("anti", lj.IntervalJoin("k", "k", lower=-5, upper=25, how="anti"))
            .connect("L", "anti", port="left").connect("R", "anti", port="right")
            .operator("asof", lj.AsofJoin("k", direction="nearest", tolerance=30, how="left"))
            .connect("cheap", "asof", port="left").connect("R", "asof", port="right")
            .sink_for("semi", "semis").sink_for("full", "outer").sink_for("anti", "antis").sink_for("asof", "nearest")
            .build())


JOIN_DAGS = {"joins": _joins}


def _join_steps(seed):
    right = make_side(900, seed + 1, RIGHT)
    right = right.append_column("tag", pa.array(np.random.default_rng(seed).choice(["x", "yy", "", "zzz"], 900)))
    return interleaved(make_side(900, seed, LEFT), right, seed)


def _drive_join(dag, parallelism, steps):
    """Every sink's rows, the metrics, and every node's watermark after each step."""
    ex = lj.DagExecutor(dag, parallelism=parallelism)
    assert ex.shards == parallelism, ex.shards_note
    watermarks = []
    for source, b in steps:
        ex.process_batch(source, b)
        watermarks.append([ex.watermark(node.name) for node in dag.nodes])
    ex.finish()
    m = ex.metrics
    return ex.take_all_sink_outputs(), (m.events_processed, m.late_events, m.per_node, watermarks)


@pytest.mark.parametrize("name", list(JOIN_DAGS))
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_joins_in_key_shards_give_one_executors_rows_in_its_order(name, seed, shards):
    # each pair comes from the shard owning its key, merged by where the row that emitted it arrived
    dag = _BUILT.setdefault(name, JOIN_DAGS[name]())
    assert set(shard_plan(dag).merge.values()) <= {("arrivals",), ("rows",)}
    steps = _join_steps(seed)
    want, want_metrics = _drive_join(dag, 1, steps)
    got, got_metrics = _drive_join(dag, shards, steps)
    for sink in want:
        assert sink.startswith("late") or want[sink].num_rows > 50, sink
        assert _same(got[sink], want[sink]), sink
    assert got_metrics == want_metrics


@pytest.mark.parametrize("name", list(JOIN_DAGS))
@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_join_state_restores_at_any_parallelism(name, before, after, tmp_path):
    dag = _BUILT.setdefault(name, JOIN_DAGS[name]())
    steps = _join_steps(3 * before + after)
    half = len(steps) // 2
    # the reference reads its outputs where the checkpoint is taken, as the run checkpointed does: a batch
    # under 256 rows waits for the next, and reading outputs runs it, so what a step settles (an outer join's
    # unmatched rows) depends on where outputs are read (README: "Order of output rows")
    one = lj.DagExecutor(dag)
    for source, b in steps[:half]:
        one.process_batch(source, b)
    before_cp = one.take_all_sink_outputs()
    for source, b in steps[half:]:
        one.process_batch(source, b)
    one.finish()
    want = {sink: pa.concat_tables([t, one.take_sink_outputs(sink)]) for sink, t in before_cp.items()}
    first = lj.DagExecutor(dag, parallelism=before)
    for source, b in steps[:half]:
        first.process_batch(source, b)
    taken = first.take_all_sink_outputs()
    first.checkpoint().save(tmp_path / "cp")
    restored = lj.DagExecutor(dag, parallelism=after)
    assert restored.shards == after, restored.shards_note
    restored.restore(lj.Checkpoint.load(tmp_path / "cp"))
    for ex in (first, restored):
        for source, b in steps[half:]:
            ex.process_batch(source, b)
        ex.finish()
        got = ex.take_all_sink_outputs()
        for sink in want:
            assert _same(pa.concat_tables([taken[sink], got[sink]]), want[sink]), sink


def _stages():
    """Joins whose rows feed stateful operators: their rows leave the join's stage as one batch and are dealt to
    the shards again by the key of what they feed (as in one executor, whose next step reads them).

    An inner interval join's pairs into sessions and, filtered, into a tumbling window and an unbounded TopN
    by the join key, and past them to a sink; a full outer join's rows (unmatched ones as the watermark
    settles them, null keys among them) into a GroupAggregate by the right side's key column; an as-of
    join's rows into a GroupAggregate."""
    return (_join_sources(25)
            .operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35)).connect("L", "j", port="left")
            .connect("R", "j", port="right")
            .operator("near", lj.Filter(lambda a, b: a + b < 150.0)).connect("j", "near")
            .operator("w", lj.TumblingWindow(SIZE, key="k", aggs={"n": lj.count(), "s": lj.sum("b")},
                                             allowed_lateness=10)).connect("near", "w")
            .operator("t", lj.TopN(1, by=["b", "ts"], key="k", window=None)).connect("near", "t")
            .operator("full", lj.IntervalJoin("k", "k", lower=-10, upper=12, how="full"))
            .connect("L", "full", port="left").connect("R", "full", port="right")
            .operator("s", lj.SessionWindow(GAP, key="k", aggs={"n": lj.count(), "hi": lj.max("a")}))
            .connect("j", "s")
            .operator("u", lj.GroupAggregate(key="k_right", aggs={"n": lj.count(), "hi": lj.max("a")}))
            .connect("full", "u")
            .operator("asof", lj.AsofJoin("k", direction="backward")).connect("L", "asof", port="left")
            .connect("R", "asof", port="right")
            .operator("g", lj.GroupAggregate(key="k", aggs={"n": lj.count(), "hi": lj.max("b")}))
            .connect("asof", "g")
            .sink_for("w", "windows").sink_for("t", "best").sink_for("near", "pairs").sink_for("s", "sessions")
            .sink_for("g", "groups").sink_for("u", "unmatched").build())


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_join_rows_feeding_stateful_operators_are_dealt_to_the_shards_again(seed, shards):
    dag = _BUILT.setdefault("stages", _stages())
    plan = shard_plan(dag)
    assert plan.keys == {"L": ("k",), "R": ("k",), "j": ("k",), "full": ("k_right",), "asof": ("k",)}
    assert plan.merge["j"] == ("arrivals",) and plan.merge["pairs"] == ("rows",)
    steps = _join_steps(seed)
    want, want_metrics = _drive_calls(dag, 1, steps)
    got, got_metrics = _drive_calls(dag, shards, steps)
    assert all(t.num_rows > 20 for t in want.values())
    _assert_same_outputs(got, want, plan, lambda sink: ["k_right" if sink == "unmatched" else "k"])
    assert got_metrics == want_metrics


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_state_fed_by_join_rows_restores_at_any_parallelism(before, after):
    dag = _BUILT.setdefault("stages", _stages())
    steps = _join_steps(7 * before + after)
    half = len(steps) // 2
    want, got = _restored_run(dag, steps, half, 1, 1), _restored_run(dag, steps, half, before, after)
    for sink in want:
        assert want[sink].num_rows > 0, sink
        if sink in ("best", "groups", "unmatched"):  # changelogs: keys interleave by shard
            assert _sorted(got[sink]).equals(_sorted(want[sink])), sink
        else:
            assert _same(got[sink], want[sink]), sink


def _composite_asof():
    """A left as-of join on a composite key (one of its columns computed on both sides): left rows with a null
    in either key column never match, and wait in a queue of their own for the watermark."""
    return (_join_sources(25).operator("j", lj.AsofJoin(["k", "t2"], direction="nearest", tolerance=40, how="left"))
            .operator("l2", lj.Map(lambda ts: ts // 200, output="t2"))
            .operator("r2", lj.Map(lambda ts: ts // 200, output="t2"))
            .connect("L", "l2").connect("R", "r2").connect("l2", "j", port="left").connect("r2", "j", port="right")
            .sink_for("j", "out").build())


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_a_left_asof_join_on_a_composite_key_shards(seed, shards):
    # the rows without a key (a null in either column) go to the shard of their hash; they come out unmatched
    dag = _BUILT.setdefault("composite_asof", _composite_asof())
    steps = _join_steps(seed)
    want, want_metrics = _drive_join(dag, 1, steps)
    got, got_metrics = _drive_join(dag, shards, steps)
    assert want["out"].num_rows > 500 and pc.sum(pc.is_null(want["out"]["b"])).as_py() > 50
    assert _same(got["out"], want["out"])
    assert got_metrics == want_metrics


def _waiting_without_key(ex, dag) -> int:
    """How many left rows without a key one executor's as-of join ``j`` has queued."""
    ex.watermark("L")  # (runs queued small batches)
    state = ex.state.operator_states[dag.node("j").id]
    fields = {name: arr for name, arr, _ in state.rows["left"]}
    return int(((fields["flag"] != 0) & (fields["slot"] == state.null_slot())).sum()) if state.null_slot() >= 0 else 0


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_queued_rows_without_a_key_restore_at_any_parallelism(before, after):
    # left rows without a key wait in each shard's queue of them; a checkpoint holds one queue, restored in shard 0
    dag = _BUILT.setdefault("composite_asof", _composite_asof())
    steps = _join_steps(11 * before + after)
    probe = lj.DagExecutor(dag)
    half = None
    for i, (source, b) in enumerate(steps):  # checkpoint where such rows wait
        probe.process_batch(source, b)
        if i >= len(steps) // 4 and _waiting_without_key(probe, dag) >= 2:
            half = i + 1
            break
    assert half is not None
    assert _same(_restored_run(dag, steps, half, before, after)["out"], _restored_run(dag, steps, half, 1, 1)["out"])


def test_merged_queues_of_rows_without_a_key_are_one_list_oldest_first():
    # shards merging their queues of rows without a key (a checkpoint, a rebalance): one list, oldest first
    dag = _BUILT.setdefault("composite_asof", _composite_asof())
    nid = dag.node("j").id
    parts = []
    for seed in (4, 5):  # two states with rows without a key waiting, as two shards would hold
        ex = lj.DagExecutor(dag)
        for source, b in _join_steps(seed):
            ex.process_batch(source, b)
            if _waiting_without_key(ex, dag) >= 2:
                break
        parts.append(ex.state.operator_states[nid])
    node = dag.node("j")
    merged = node.op.new_state(node.bound)
    merged.absorb(parts[1], parts[1].keyed_slots(), unkeyed=True)  # the later rows first
    merged.absorb(parts[0], [], unkeyed=True)
    fields = {name: arr for name, arr, _ in merged.rows["left"]}
    chain, r = [], merged.heads[merged.null_slot(), 0]
    while r != -1:  # forwards, checking the links back
        assert fields["prv"][r] == (chain[-1] if chain else -1)
        chain.append(r)
        r = fields["nxt"][r]
    assert merged.heads[merged.null_slot(), 1] == chain[-1]
    order = [(fields["ts"][r], fields["seq"][r]) for r in chain]
    assert order == sorted(order) and order == sorted(sum(map(_queued_without_key, parts), []))


def _queued_without_key(state) -> list:
    """The (time, arrival) of a left as-of join state's queued rows without a key."""
    null = state.null_slot()
    if null < 0:
        return []
    fields = {name: arr for name, arr, _ in state.rows["left"]}
    live = (fields["flag"] != 0) & (fields["slot"] == null)
    return list(zip(fields["ts"][live], fields["seq"][live]))


def test_joins_the_shards_cannot_run_say_why():
    rekeyed = (join_sources(lj.DagBuilder()).operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35))
               .connect("L", "j", port="left").connect("R", "j", port="right")
               .operator("w", lj.TumblingWindow(SIZE, key="k", aggs={"n": lj.count()})).connect("j", "w")
               .operator("g", lj.GroupAggregate(key="tag", aggs={"n": lj.count()})).connect("j", "g")
               .sink_for("w", "out").sink_for("g", "tags").build())
    assert "the stateful operators of the rows of 'j' (" in shard_plan(rekeyed)
    both = (join_sources(lj.DagBuilder()).operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35))
            .connect("L", "j", port="left").connect("L", "j", port="right").sink_for("j", "out").sink_for("R", "r")
            .build())
    assert "reaches both inputs" in shard_plan(both)


def test_restored_join_rows_keep_their_arrival_order_among_equal_times():
    # partners of equal time come newest first: rows arriving after a restore must count as newer
    dag = join_dag(lj.IntervalJoin("k", "k", lower=-20, upper=35))
    left = lambda ts, a: pa.record_batch([pa.array([ts]), pa.array([1]), pa.array([a]), pa.array(["x"])],  # noqa: E731
                                         schema=LEFT)
    right = lambda ts, b: pa.record_batch([pa.array([ts]), pa.array([1]), pa.array([b])], schema=RIGHT)  # noqa: E731
    for before, after in [(1, 1), (2, 1), (1, 2), (2, 3)]:
        ex = lj.DagExecutor(dag, parallelism=before)
        for b in (0.1, 0.2, 0.3):
            ex.process_batch("R", right(100, b))
        restored = lj.DagExecutor(dag, parallelism=after)
        restored.restore(ex.checkpoint())
        restored.process_batch("R", right(100, 2.0))
        restored.process_batch("L", left(100, 0.5))
        got = [r["b"] for r in restored.take_sink_outputs("out").to_pylist()]
        assert got == [2.0, 0.3, 0.2, 0.1], (before, after)


@pytest.mark.parametrize("name", ["updating", "joins"])
def test_a_state_refuses_to_absorb_keys_it_holds(name):
    # absorb moves entries whose keys are elsewhere; one it already holds would lose a key's state
    builders = {**UPDATING_DAGS, **JOIN_DAGS}
    dag = _BUILT.setdefault(name, builders[name]())
    ex = lj.DagExecutor(dag)
    steps = _join_steps(1) if name in JOIN_DAGS else [("bids", events(300, 1).to_batches()[0])]
    for source, b in steps:
        ex.process_batch(source, b)
    for state in ex.state.operator_states.values():
        slots = state.table.live_slots()
        assert slots.size
        with pytest.raises(ValueError, match=r"State\.absorb: \d+ of the \d+ entries have keys this state already"):
            state.absorb(state, slots)


# ----------------------------------------------------------------------------- keyed kernels
def _count_and_sum(st, price):
    st.n += 1
    st.total += price
    return st.n, st.total


def _keyed():
    """Running z-scores per auction behind a filter, a kernel of a composite key with a string, and a kernel
    whose timer fires when its auction has been quiet for 200 time units (behind the filter too)."""
    return (_source(lj.DagBuilder())
            .operator("cheap", lj.Filter(lambda price: price < 95.0)).connect("bids", "cheap")
            .operator("z", lj.recipes.zscore(key="auction", value="price")).connect("cheap", "z")
            .operator("sums", lj.KeyedKernel(_count_and_sum, key=["auction", "ch"],
                                             state={"n": np.int64, "total": np.float64},
                                             output={"n": pa.int64(), "total": pa.float64()}))
            .operator("quiet", lj.KeyedKernel(arm_quiet_timer, key="auction", state={"n": np.int64, "total": np.float64},
                                              output={"n": pa.int64(), "total": pa.float64(), "alarm": pa.bool_()},
                                              on_timer=on_quiet, columns={"temp": "price"}))
            .connect("cheap", "quiet").connect("bids", "sums")
            .sink_for("z", "out").sink_for("sums", "totals").sink_for("quiet", "alarms").build())


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_keyed_kernels_in_key_shards_give_one_executors_rows_in_its_order(seed, shards):
    # each key's state lives in one shard; rows merge by where their input row arrived
    dag = _BUILT.setdefault("keyed", _keyed())
    assert set(shard_plan(dag).merge.values()) == {("arrivals",)}
    table = bursts(1500, seed)
    steps = _steps(dag, table, seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    # timers of different keys due at one time and batch position fire in the order the keys first came: an
    # example is kept when some are (most seeds; seed 9837's timers all fall at different times)
    alarms = pl.from_arrow(want["alarms"]).filter(pl.col("alarm"))
    assume(alarms.group_by("ts").len()["len"].max() > 1)
    got, got_metrics, _ = _drive(dag, shards, steps)
    for sink in want:
        assert want[sink].num_rows > 500 and _same(got[sink], want[sink]), sink
    assert got_metrics == want_metrics
    assert pc.sum(want["alarms"]["alarm"]).as_py() > 100  # timers fired (before rows and at the batches' ends)


def _quiet_then_by_channel():
    """Keyed kernels whose rows feed stateful operators of another key, as in Nexmark q4 and q6: a quiet-auction
    timer kernel's alarms (timers of one time among them) into a running sum per alarm size (a keyed kernel,
    whose result depends on the order of its rows) and a GROUP BY alarm size, and past them to a sink."""
    return (_source(lj.DagBuilder())
            .operator("quiet", lj.KeyedKernel(arm_quiet_timer, key="auction", state={"n": np.int64, "total": np.float64},
                                              output={"n": pa.int64(), "total": pa.float64(), "alarm": pa.bool_()},
                                              on_timer=on_quiet, columns={"temp": "price"}))
            .connect("bids", "quiet")
            .operator("alarms", lj.Filter(lambda alarm: alarm)).connect("quiet", "alarms")
            .operator("by_size", lj.KeyedKernel(_count_and_sum, key="n", state={"n": np.int64, "total": np.float64},
                                                output={"count": pa.int64(), "running": pa.float64()},
                                                columns={"price": "total"}))
            .connect("alarms", "by_size")
            .operator("g", lj.GroupAggregate(key="n", aggs={"alarms": lj.count(), "hi": lj.max("total")}))
            .connect("alarms", "g")
            .sink_for("by_size", "running").sink_for("g", "groups").sink_for("quiet", "all").build())


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_keyed_kernel_rows_are_dealt_out_again_by_the_key_they_feed(seed, shards):
    dag = _BUILT.setdefault("rekeyed", _quiet_then_by_channel())
    plan = shard_plan(dag)
    assert plan.keys == {"bids": ("auction",), "quiet": ("n",)}
    steps = _steps(dag, bursts(1500, seed), seed)
    want, want_metrics = _drive_calls(dag, 1, steps)
    got, got_metrics = _drive_calls(dag, shards, steps)
    assert all(t.num_rows > 50 for t in want.values())  # (the smallest sink has 92-163 rows in 13 seeds drawn)
    _assert_same_outputs(got, want, plan, lambda sink: ["n"])
    assert got_metrics == want_metrics


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_keyed_state_restores_at_any_parallelism(before, after):
    dag = _BUILT.setdefault("keyed", _keyed())
    steps = _steps(dag, bursts(1500, before + 5 * after), 3)
    want, _, _ = _drive(dag, 1, steps)  # an uninterrupted run
    got = _restored_run(dag, steps, len(steps) // 2, before, after)
    for sink in want:
        assert _same(got[sink], want[sink]), sink


def _rekeyed_windows():
    """Window results fed to operators of another key or none, as in Nexmark q5: counts per auction in sliding
    windows (cut where windows become due) into the auctions with the most rows of each quarter (a TopN without
    a key, with ties) and a window over all of them (no key), and per-auction tumbling counts, late rows to a
    side output, into a window per count (another key). The operators fed allow less lateness than the sliding
    results have, so some are late: which ones depends on the watermark of the piece that emitted them."""
    return (_source(lj.DagBuilder())
            .operator("counts", lj.SlidingWindow(SIZE, SIZE // 4, key="auction", aggs={"num": lj.count()}))
            .operator("named", lj.Project({"start": "window_start", "end": "window_end", "auction": "auction",
                                           "num": "num"}))
            .operator("hottest", lj.TopN(1, by="num", window=SIZE // 4, allowed_lateness=SIZE // 2, ties=True))
            .connect("bids", "counts").connect("counts", "named").connect("named", "hottest")
            .operator("per", lj.TumblingWindow(SIZE // 2, key="auction", aggs={"n": lj.count(), "hi": lj.max("price")},
                                               allowed_lateness=20, late="side_output", late_sink="late"))
            .connect("bids", "per")
            .operator("by_n", lj.TumblingWindow(SIZE, key="n", aggs={"auctions": lj.count(), "hi": lj.max("hi")},
                                                allowed_lateness=SIZE)).connect("per", "by_n")
            .operator("all", lj.TumblingWindow(SIZE // 2, aggs={"windows": lj.count(), "rows": lj.sum("num")},
                                               allowed_lateness=SIZE // 4)).connect("counts", "all")
            .sink_for("hottest", "top").sink_for("by_n", "by_count").sink_for("all", "total")
            .sink_for("per", "per_auction").build())


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]), bursty=st.booleans())
def test_window_results_are_dealt_out_again_by_the_key_they_feed(seed, shards, bursty):
    dag = _BUILT.setdefault("rekeyed_windows", _rekeyed_windows())
    plan = shard_plan(dag)
    assert plan.keys == {"bids": ("auction",), "counts": (), "per": ("n",)}
    assert plan.merge["top"] == plan.merge["total"] == ("one",)
    table = bursts(30_000, seed) if bursty else events(30_000, seed)
    steps = _steps(dag, table, seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, _ = _drive(dag, shards, steps)
    for sink in want:
        assert sink == "late" or want[sink].num_rows > 0, sink
        assert _same(got[sink], want[sink]), sink
    assert got_metrics == want_metrics
    assert want_metrics[2]["hottest"]["late_events"] > 0  # results late by the watermark of their piece


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 3)])
def test_state_fed_by_window_results_restores_at_any_parallelism(before, after):
    # the reference is one executor checkpointed at the same point: a checkpoint runs the batches queued before it
    # as a step of their own, and which window results are late here depends on the watermark of that step
    dag = _BUILT.setdefault("rekeyed_windows", _rekeyed_windows())
    steps = _steps(dag, bursts(3000, before + 7 * after), 5)
    half = len(steps) // 2
    want, got = _restored_run(dag, steps, half, 1, 1), _restored_run(dag, steps, half, before, after)
    for sink in want:
        assert sink == "late" or want[sink].num_rows > 0, sink
        assert _same(got[sink], want[sink]), sink


def test_keyed_state_saved_before_keys_kept_their_first_arrival_still_loads():
    # such a checkpoint has no "first" array and one aux entry; its slots were in first-arrival order
    dag = _BUILT.setdefault("keyed", _keyed())
    nid = dag.node("quiet").id
    ex = lj.DagExecutor(dag)
    _feed(ex, _steps(dag, bursts(600, 1), 1))
    state = ex.state.operator_states[nid]
    arrays = state.snapshot()
    np.testing.assert_array_equal(arrays["first"], np.sort(arrays["first"]))  # new keys: increasing numbers
    old = {**{k: v for k, v in arrays.items() if k != "first"}, "aux": arrays["aux"][:1]}
    fresh = dag.node("quiet").op.new_state(dag.node("quiet").bound)
    fresh.load_snapshot(old)
    np.testing.assert_array_equal(fresh.first[: len(arrays["first"])], np.arange(len(arrays["first"])))
    assert fresh.aux[1] == len(arrays["first"]) and fresh.pending_timers == state.pending_timers
    broken = dag.node("quiet").op.new_state(dag.node("quiet").bound)
    with pytest.raises(ValueError, match="negative arrival number"):
        broken.load_snapshot({**arrays, "first": np.full_like(arrays["first"], -1)})
    assert len(broken) == 0


@settings(max_examples=200, deadline=None)
@given(wm=st.lists(st.integers(-50, 50), max_size=12), scalar=st.integers(-60, 60), cap=st.integers(-60, 60),
       floor=st.integers(-60, 60), t=st.integers(-60, 60), per_row=st.booleans())
def test_first_reaching_is_the_first_row_whose_clamped_watermark_reaches_the_time(wm, scalar, cap, floor, t, per_row):
    rwm = np.sort(np.array(wm, np.int64)) if per_row else np.zeros(0, np.int64)
    n = len(wm)
    rows = rwm if per_row else np.full(n, scalar, np.int64)
    clamped = np.maximum(np.minimum(rows, cap), floor)  # as the plans' ROW_WATERMARK
    want = next((i for i in range(n) if clamped[i] >= t), n)
    got = first_reaching(rwm, np.int64(scalar), np.int64(cap), np.int64(floor), np.int64(t), np.int64(n))
    assert got == want
