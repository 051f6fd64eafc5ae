"""OverAggregate (SQL's OVER): each row with aggregates over its key's frame, against DuckDB's window functions."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj
from conftest import checkpointed_run, split_table
from helpers import assert_rows


def assert_same_rows(got: pa.Table, want: pa.Table) -> None:
    """Same rows in any order; floats to 1e-9 relative, NaN equal to NaN, nulls equal."""
    want = want.cast(got.schema)
    assert got.column_names == want.column_names and got.num_rows == want.num_rows
    keys = [(c, "ascending") for c in ("ts", "k", "ch", "i", "v") if c in got.column_names]
    got, want = got.sort_by(keys), want.sort_by(keys)
    for name in got.column_names:
        g, w = got.column(name), want.column(name)
        assert g.is_null().equals(w.is_null()), name
        if pa.types.is_floating(g.type):
            a, b = g.fill_null(0.0).to_numpy(), w.fill_null(0.0).to_numpy()
            assert np.allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True), name
        else:
            assert g.equals(w), name

SCHEMA = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("ch", pa.string()), ("v", pa.float64()),
                    ("i", pa.int64())])
DELAY = 10
AGGS = {"n": lj.count(), "c": lj.count("v"), "s": lj.sum("v"), "si": lj.sum("i"), "m": lj.mean("v"),
        "lo": lj.min("v"), "hi": lj.max("i")}
#: (frame, preceding, DuckDB's frame)
FRAMES = [("range", None, "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
          ("rows", None, "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
          ("rows", 3, "ROWS BETWEEN 3 PRECEDING AND CURRENT ROW"),
          ("range", 40, "RANGE BETWEEN 40 PRECEDING AND CURRENT ROW")]


def events(n: int = 3_000, seed: int = 0) -> pa.Table:
    """Times 1.5 apart on average (so some are equal: peers) shuffled within blocks of 10, beyond the
    watermark's delay (some rows are late); skewed keys with nulls, null values, NaN and infinities."""
    rng = np.random.default_rng(seed)
    ts = rng.permuted((np.arange(n) * 3).reshape(-1, 10), axis=1).ravel() // 2
    v = rng.random(n) * 100
    v[rng.random(n) < 0.01] = np.nan
    v[rng.random(n) < 0.005] = np.inf
    return pa.table({"ts": ts, "k": pa.array(np.minimum(rng.zipf(1.5, n), 9), mask=rng.random(n) < 0.05),
                     "ch": pa.array(rng.choice(["a", "b", "c"], n), mask=rng.random(n) < 0.05),
                     "v": pa.array(v, mask=rng.random(n) < 0.1), "i": rng.integers(-50, 50, n)}, schema=SCHEMA)


def on_time(table: pa.Table) -> pa.Table:
    """The rows that are not late (event time at least the watermark when they arrive), with their arrival
    order ``seq``."""
    ts = table.column("ts").to_numpy()
    arrived = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min + DELAY], ts]))[:-1] - DELAY
    kept = table.filter(pa.array(ts >= arrived))
    return kept.append_column("seq", pa.array(np.arange(kept.num_rows)))


def dag_of(op, schema=SCHEMA, then=None):
    b = (lj.DagBuilder().source("s", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
         .operator("o", op).connect("s", "o"))
    if then is not None:
        b = b.operator("then", then).connect("o", "then").sink_for("then", "out")
    else:
        b = b.sink_for("o", "out")
    return b.build()


def run(dag, batches, **kw):
    ex = lj.DagExecutor(dag, **kw)
    for b in batches:
        ex.process_batch("s", b)
    ex.finish()
    return ex.take_sink_outputs("out"), ex


def oracle(table: pa.Table, frame: str, duck_frame: str, partition: str) -> pa.Table:
    kept = on_time(table)
    order = "ORDER BY ts, seq" if frame == "rows" else "ORDER BY ts"
    part = f"PARTITION BY {partition}" if partition else ""
    w = f"OVER ({part} {order} {duck_frame})"
    return duckdb.sql(f"SELECT ts, k, ch, v, i, count(*) {w} AS n, count(v) {w} AS c, sum(v) {w} AS s, "
                      f"sum(i) {w} AS si, avg(v) {w} AS m, min(v) {w} AS lo, max(i) {w} AS hi FROM kept"
                      ).arrow().read_all()


@pytest.mark.parametrize("frame,preceding,duck_frame", FRAMES)
@pytest.mark.parametrize("key", ["k", "ch", ["k", "ch"], None])
def test_over_aggregates_equal_duckdb_whatever_the_batches(frame, preceding, duck_frame, key):
    table = events(seed=len(str(key)))
    partition = ", ".join([key] if isinstance(key, str) else key or [])
    want = oracle(table, frame, duck_frame, partition)
    dag = dag_of(lj.OverAggregate(AGGS, key=key, frame=frame, preceding=preceding))
    rng = np.random.default_rng(5)
    for cuts in ([], [0, 1, 1, 2, 700], rng.integers(0, table.num_rows, 20).tolist()):
        got, ex = run(dag, split_table(table, cuts))
        assert_same_rows(got, want)
        assert ex.metrics.late_events == table.num_rows - want.num_rows > 0
        assert ex.metrics.per_node["o"]["late_events"] == table.num_rows - want.num_rows
        ts = got.column("ts").to_numpy()
        assert (np.diff(ts) >= 0).all() or len(cuts) > 0  # one call: rows leave in event-time order


def test_rows_wait_for_the_watermark_and_leave_in_event_time_order():
    table = pa.table({"ts": [5, 1, 3, 20, 3, 40], "k": [1, 1, 1, 1, 2, 1], "ch": ["x"] * 6,
                      "v": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "i": [1, 2, 3, 4, 5, 6]}, schema=SCHEMA)
    dag = dag_of(lj.OverAggregate({"s": lj.sum("v")}, key="k"))
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", table.slice(0, 4))  # watermark 20 - 10 = 10: ts 1, 3, 5 are ready
    first = ex.take_sink_outputs("out")
    assert first.column("ts").to_pylist() == [1, 3, 5] and first.column("s").to_pylist() == [2.0, 5.0, 6.0]
    ex.process_batch("s", table.slice(4))  # ts 3 of key 2 is late (below 10); watermark 30: ts 20 leaves
    assert ex.take_sink_outputs("out").to_pydict() == {"ts": [20], "k": [1], "ch": ["x"], "v": [4.0], "i": [4],
                                                       "s": [10.0]}
    assert ex.metrics.late_events == 1
    ex.finish()
    assert ex.take_sink_outputs("out").column("s").to_pylist() == [16.0]


def test_checkpoints_hold_waiting_rows_and_frames(tmp_path):
    table = events(2_000, seed=3)
    for frame, preceding, _ in FRAMES:
        dag = dag_of(lj.OverAggregate(AGGS, key="ch", frame=frame, preceding=preceding))
        batches = split_table(table, [0, 1, 500, 900, 900, 1_500])
        want, _ = run(dag, batches)
        got = checkpointed_run(dag, batches, 3, tmp_path / frame / str(preceding), source="s")
        assert_same_rows(got, want)


def test_a_raising_kernel_after_it_takes_the_call_back_with_its_state():
    @lj.kernel
    def picky(n):
        if n > 400:
            raise ValueError("too many")
        return n * 2

    dag = dag_of(lj.OverAggregate({"n": lj.count()}, frame="rows", preceding=None),
                 then=lj.Map(picky, output="n2"))
    table = events(1_000, seed=4)
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", table.slice(0, 300))
    before = ex.checkpoint()
    with pytest.raises(lj.KernelError, match="picky"):
        ex.process_batch("s", table.slice(300))
    after = ex.checkpoint()
    assert after.watermarks == before.watermarks
    for name, a in before.states["o"].items():
        assert np.array_equal(after.states["o"][name], a), name
    ex.process_batch("s", table.slice(300, 50))
    ex.finish()
    ref = lj.DagExecutor(dag)
    ref.process_batch("s", table.slice(0, 350))
    ref.finish()
    assert_same_rows(ex.take_sink_outputs("out"), ref.take_sink_outputs("out"))


def test_timestamps_and_a_time_range():
    schema = pa.schema([("ts", pa.timestamp("ms")), ("k", pa.int64()), ("v", pa.float64())])
    table = pa.table({"ts": pa.array([0, 1_000, 1_500, 3_000, 3_100], pa.timestamp("ms")), "k": [1, 1, 1, 1, 2],
                      "v": [1.0, 2.0, 4.0, 8.0, 16.0]}, schema=schema)
    dag = (lj.DagBuilder().source("s", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("o", lj.OverAggregate({"s": lj.sum("v")}, key="k", preceding=dt.timedelta(seconds=1.5)))
           .connect("s", "o").sink_for("o", "out").build())
    got, _ = run(dag, [table])
    assert got.column("s").to_pylist() == [1.0, 3.0, 7.0, 12.0, 16.0]  # (a frame [t - 1.5 s, t], both ends in)


def test_settings_and_inputs_are_checked():
    with pytest.raises(ValueError, match="frame='rows' counts rows"):
        lj.OverAggregate({"n": lj.count()}, frame="rows", preceding=dt.timedelta(seconds=1))
    with pytest.raises(ValueError, match="frame must be 'range' or 'rows'"):
        lj.OverAggregate({"n": lj.count()}, frame="groups")
    with pytest.raises(TypeError, match="must be lj.count"):
        lj.OverAggregate({"d": lj.count_distinct("k")})
    with pytest.raises(lj.SchemaError, match="reads the string column 'ch'"):
        dag_of(lj.OverAggregate({"m": lj.min("ch")}))
    with pytest.raises(lj.SchemaError, match="clashes with an input column"):
        dag_of(lj.OverAggregate({"v": lj.max("v")}))
    with pytest.raises(lj.SchemaError, match="orders rows by event time"):
        (lj.DagBuilder().source("s", SCHEMA).operator("o", lj.OverAggregate({"n": lj.count()}))
         .connect("s", "o").sink_for("o", "out").build())


def test_parallelism_runs_it_as_one_shard():
    table = events(1_000, seed=6)
    dag = dag_of(lj.OverAggregate(AGGS, key="k", frame="rows", preceding=3))
    want, _ = run(dag, [table])
    got, ex = run(dag, split_table(table, [100, 600]), parallelism=2)
    assert ex.shards == 1 and "leave the compiled step as a batch" in ex.shards_note
    assert_same_rows(got, want)


def test_downstream_window_over_its_rows():
    """A window reading the OVER aggregate's rows: they leave ahead of the watermark they carry, so none is late."""
    table = events(2_000, seed=8)
    dag = dag_of(lj.OverAggregate({"hi": lj.max("i")}, key="k", frame="rows", preceding=5),
                 then=lj.TumblingWindow(100, aggs={"n": lj.count(), "top": lj.max("hi")}))
    got, ex = run(dag, split_table(table, [0, 333, 1_200]))
    kept = on_time(table)
    rolled = duckdb.sql("SELECT ts, max(i) OVER (PARTITION BY k ORDER BY ts, seq ROWS BETWEEN 5 PRECEDING AND "
                        "CURRENT ROW) AS hi FROM kept").arrow().read_all()
    want = duckdb.sql("SELECT ts // 100 * 100 AS window_start, ts // 100 * 100 + 100 AS window_end, count(*) AS n, "
                      "max(hi) AS top FROM rolled GROUP BY 1, 2").arrow().read_all()
    assert_rows(got, want.cast(got.schema))
    assert ex.metrics.per_node["then"]["late_events"] == 0
    assert pc.sum(got.column("n")).as_py() == kept.num_rows


def test_a_large_value_leaving_the_frame_takes_no_precision_with_it():
    """Sums are added and taken away as rows enter and leave a frame, with a compensated sum: 1e20 entering
    and leaving leaves the small values' sum exact (a plain running sum would lose them)."""
    v = [1e20, 5.0, 0.25, 3.0, 0.125, 7.0]
    table = pa.table({"ts": list(range(6)), "k": [1] * 6, "ch": ["a"] * 6, "v": v, "i": [0] * 6}, schema=SCHEMA)
    got, _ = run(dag_of(lj.OverAggregate({"s": lj.sum("v"), "m": lj.mean("v")}, key="k", frame="rows",
                                         preceding=2)), [table])
    assert got.column("s").to_pylist() == [1e20, 1e20 + 5.0, 1e20 + 5.25, 8.25, 3.375, 10.125]
    assert got.column("m").to_pylist()[3:] == [8.25 / 3, 3.375 / 3, 10.125 / 3]
