"""The order of output rows, as the README states it ("Order of output rows"), and restores that continue it.

Windows, sessions, TopN, Dedup and keyed kernels emit in an order that does
not depend on how the input was cut into batches, so a run checkpointed and
restored anywhere equals the uninterrupted run row for row. A join emits per
compiled step (pairs as their second row arrives, then the rows the watermark
settled), so its order follows step boundaries: a restore continues row for
row from a run whose steps were cut at the checkpoint as well.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import laminar_jit as lj

from conftest import split_table
from helpers import ASOF, LEFT, RIGHT, interleaved, join_dag, make_side

SCHEMA = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("s", pa.string()), ("v", pa.float64()),
                    ("id", pa.int64())])
DELAY = 300


def events(rows: int, seed: int) -> pa.Table:
    """Out-of-order rows (±250), an int key with a hot value and nulls, a string key, a unique arrival id."""
    rng = np.random.default_rng(seed)
    ts = np.arange(rows, dtype=np.int64) * 10 + rng.integers(-250, 250, rows)
    k = np.where(rng.random(rows) < 0.3, 7, rng.integers(0, 40, rows))
    return pa.table({"ts": ts, "k": pa.array(k, mask=rng.random(rows) < 0.05),
                     "s": pa.array(np.array(["b", "a", "c", "dd", ""], dtype=object)[rng.integers(0, 5, rows)]),
                     "v": np.round(rng.uniform(0, 100, rows), 2), "id": np.arange(rows)}, schema=SCHEMA)


def cut(table: pa.Table, seed: int) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    return split_table(table, list(rng.integers(0, table.num_rows + 1, 30)) + [9, 9, 10])


def _timer_count(st, ts):
    st.n += 1
    st.timer = ts + 500  # a key quiet for 500 time units fires
    return st.n, False


WINDOWED = {
    "tumbling": lambda key: lj.TumblingWindow(size=400, key=key, aggs={"n": lj.count(), "hi": lj.max("v")}),
    "sliding": lambda key: lj.SlidingWindow(size=600, slide=200, key=key, aggs={"n": lj.count()}),
    "session": lambda key: lj.SessionWindow(gap=30, key=key, aggs={"n": lj.count(), "first": lj.first("id")}),
    "topn": lambda key: lj.TopN(2, by="v", key=key, window=400),
    "dedup": lambda key: lj.Dedup(key=key, within=300),
    "keyed": lambda key: lj.KeyedKernel(_timer_count, key=key, state={"n": np.int64},
                                        output={"n": pa.int64(), "fired": pa.bool_()},
                                        on_timer=lambda st, t: (st.n, True)),
}


def dag_of(op):
    return (lj.DagBuilder().source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
            .operator("op", op).connect("s", "op").sink_for("op", "out").build())


def run(dag, feed, read_at=(), checkpoint_at=None) -> pa.Table:
    """Output over ``feed`` ((source, batch) pairs); outputs read before the batches at ``read_at``;
    with ``checkpoint_at``, a checkpoint there restored into a fresh executor that does the rest."""
    ex = lj.DagExecutor(dag)
    parts = []
    for i, (source, batch) in enumerate(feed):
        if i in read_at:
            parts.append(ex.take_sink_outputs("out"))
        if i == checkpoint_at:
            cp = ex.checkpoint()
            ex = lj.DagExecutor(dag)
            ex.restore(cp)
        ex.process_batch(source, batch)
    ex.finish()
    return pa.concat_tables(parts + [ex.take_sink_outputs("out")])


# Integer and string keys (composite keys restore through the same key tables; tests/test_checkpoint.py
# restores them): each case compiles its own plan, and the suite's cold run is mostly compiling.
@pytest.mark.parametrize("key", ["k", "s"])
@pytest.mark.parametrize("name", list(WINDOWED))
def test_windowed_operators_restore_row_for_row_anywhere(name, key):
    """No dependence on batch boundaries: a restore at any batch (small ones included) gives the same rows in the same order."""
    table = events(2500, 1)
    feed = [("s", b) for b in cut(table, 1)]
    dag = dag_of(WINDOWED[name](key))
    whole = run(dag, feed)
    assert whole.num_rows > 0
    assert run(dag, feed, read_at=range(0, len(feed), 2)).equals(whole)  # reading outputs cuts steps too
    for at in range(1, len(feed), 4):
        assert run(dag, feed, checkpoint_at=at).equals(whole), f"restored at batch {at}"


def _first_appearance(table: pa.Table, key: str) -> dict:
    """Rank of each key value by first arrival (null first: the null group sorts below every code)."""
    order = {None: -1}
    for value in table.column(key).to_pylist():
        order.setdefault(value, len(order))
    return order


@pytest.mark.parametrize("name", ["tumbling", "sliding", "session", "topn"])
@pytest.mark.parametrize("key", ["k", "s"])
def test_window_rows_come_by_window_end_then_key(name, key):
    table = events(2500, 2)
    out = run(dag_of(WINDOWED[name](key)), [("s", b) for b in cut(table, 2)]).to_pylist()
    # integer keys by value, string keys by first appearance (their dictionary codes); nulls first
    rank = _first_appearance(table, key) if key == "s" else {None: -(2**63)}
    sort_key = [(r["window_end"], rank.get(r[key], r[key]), r.get("rank", 0)) for r in out]
    assert sort_key == sorted(sort_key)
    assert len(set(sort_key)) == len(sort_key)  # one row per window and key (and rank)


def test_dedup_and_keyed_kernels_keep_arrival_order():
    table = events(2500, 3)
    feed = [("s", b) for b in cut(table, 3)]
    ids = run(dag_of(WINDOWED["dedup"]("k")), feed).column("id").to_pylist()
    assert ids == sorted(ids) and len(ids) > 100
    out = run(dag_of(WINDOWED["keyed"]("k")), feed)
    rows = out.filter(pa.compute.invert(out.column("fired")))
    assert rows.num_rows == table.num_rows
    # a row's own output comes in arrival order: its key and time are those of the input, in order
    assert rows.column("ts").equals(table.column("ts")) and rows.column("k").equals(table.column("k"))


# ----------------------------------------------------------------------------- joins

JOINS = {f"interval_{how}": (lambda how=how: lj.IntervalJoin("k", "k", lower=-20, upper=35, how=how))
         for how in ("inner", "left", "right", "full", "semi", "anti")}
JOINS["window"] = lambda: lj.WindowJoin(100, "k", "k")
JOINS.update({f"asof_{d}_{h}_{tol}": (lambda d=d, h=h, tol=tol: lj.AsofJoin("k", direction=d, tolerance=tol, how=h))
              for d, h, tol in ASOF})
JOINS["temporal"] = lambda: lj.TemporalJoin("k", "k", how="left")


def numbered(feed):
    """``feed`` with the left ``a`` and right ``b`` columns replaced by the row's arrival number over both inputs."""
    out, seen = [], 0
    for source, batch in feed:
        name = "a" if source == "L" else "b"
        ids = pa.array(np.arange(seen, seen + batch.num_rows, dtype=np.float64))
        out.append((source, batch.set_column(batch.schema.get_field_index(name), name, ids)))
        seen += batch.num_rows
    return out


def large_batches(left: pa.Table, right: pa.Table, rows: int) -> list:
    """Both inputs in batches of ``rows`` (never queued: every batch is a step of its own), alternating."""
    feed = []
    for i in range(0, max(left.num_rows, right.num_rows), rows):
        feed += [("L", b) for b in left.slice(i, rows).to_batches()]
        feed += [("R", b) for b in right.slice(i, rows).to_batches()]
    return feed


@pytest.mark.parametrize("name", list(JOINS))
def test_join_restore_continues_row_for_row(name):
    dag = join_dag(JOINS[name]())
    left, right = make_side(1500, 21, LEFT, keys=300, unique_ts=True), make_side(1500, 22, RIGHT, keys=300,
                                                                                  unique_ts=True)
    # small batches: the checkpoint ends the queued step, so compare with a run whose outputs are read there
    feed = interleaved(left, right, 21)
    for at in range(1, len(feed), 3):
        want = run(dag, feed, read_at=(at,))
        assert run(dag, feed, checkpoint_at=at).equals(want), f"restored at batch {at}"
    # batches of 256 rows or more are steps of their own: a restore anywhere equals the uninterrupted run
    feed = large_batches(left, right, 300)
    whole = run(dag, feed)
    assert whole.num_rows > 0
    for at in range(1, len(feed)):
        assert run(dag, feed, checkpoint_at=at).equals(whole), f"restored at batch {at}"


def _steps(dag, feed):
    """Each step's output: one batch at a time, outputs read after each (and after finish)."""
    ex = lj.DagExecutor(dag)
    out = []
    for source, batch in feed:
        ex.process_batch(source, batch)
        out.append(ex.take_sink_outputs("out").to_pylist())
    ex.finish()
    out.append(ex.take_sink_outputs("out").to_pylist())
    return out


@pytest.mark.parametrize("name", ["interval_inner", "interval_full", "interval_anti", "window",
                                  "asof_nearest_left_None", "asof_backward_inner_None", "temporal"])
def test_join_steps_emit_pairs_by_arrival_then_settled_rows_by_time(name):
    left, right = make_side(1200, 31, LEFT, keys=50, unique_ts=False), make_side(1200, 32, RIGHT, keys=50)
    feed = numbered(interleaved(left, right, 31))
    asof = name.startswith(("asof", "temporal"))
    n_rows = 0
    for rows in _steps(join_dag(JOINS[name]()), feed):
        n_rows += len(rows)
        if asof:  # every row is settled by the watermark: by left event time, then arrival
            key = [(r["ts"], r["a"]) for r in rows]
            assert key == sorted(key)
            continue
        # pairs: a row with both sides, or (semi) a left row emitted at its match while a step ran
        paired = [r for r in rows if r["a"] is not None and r.get("b") is not None]
        settled = rows[len(paired):]
        assert rows[:len(paired)] == paired, "pairs come before the settled rows"
        # by the arrival of the row completing the pair; its partners newest first (time, then arrival)
        completing = [max(r["a"], r["b"]) for r in paired]
        assert completing == sorted(completing)
        for c in set(completing):
            partners = [(r["ts_right"], r["b"]) if r["b"] != c else (r["ts"], r["a"])
                        for r, x in zip(paired, completing) if x == c]
            assert partners == sorted(partners, reverse=True)
        # settled rows: unmatched left rows, then unmatched right rows, each by event time then arrival
        left_rows = [(r["ts"], r["a"]) for r in settled if r["a"] is not None]
        right_rows = [(r["ts_right"], r["b"]) for r in settled if r["a"] is None]
        assert [r["a"] is not None for r in settled] == sorted([r["a"] is not None for r in settled], reverse=True)
        assert left_rows == sorted(left_rows) and right_rows == sorted(right_rows)
    assert n_rows > 100


def test_order_settled_sorts_only_the_settled_pairs_by_time_then_arrival():
    from laminar_jit.kernels.joins import order_settled

    rng = np.random.default_rng(4)
    ts, seq = rng.integers(0, 5, 40).astype(np.int64), rng.permutation(40).astype(np.int64)
    out_l = np.concatenate([np.arange(5), rng.permutation(np.arange(5, 40))]).astype(np.int64)
    out_r = -np.ones(40, np.int64)
    before = out_l.copy()
    order_settled(out_l, out_r, 5, 40, 0, ts, seq)
    np.testing.assert_array_equal(out_l[:5], before[:5])  # the pairs before ``start`` stay put
    assert sorted(out_l[5:].tolist()) == list(range(5, 40))
    key = [(ts[i], seq[i]) for i in out_l[5:]]
    assert key == sorted(key)
