"""Session windows against DuckDB (gaps-and-islands SQL) and a plain-Python sessionizer."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import laminar_jit as lj
from conftest import split_table
from helpers import AGGS, GAP, SCHEMA, assert_windows, bursts, run_bids, watermark_before


def session_dag(delay: int, key="auction", lateness: int = 0, late: str = "drop", aggs=AGGS, touching=False):
    kw = dict(late="side_output", late_sink="late") if late == "side_output" else {}
    op = lj.SessionWindow(gap=GAP, key=key, aggs=aggs, allowed_lateness=lateness, touching=touching, **kw)
    return (lj.DagBuilder()
            .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(delay))
            .operator("w", op).connect("bids", "w").sink_for("w", "out").build())


_AGG_SQL = """count(*) AS n, count(price) AS c, sum(price) AS s, min(price) AS lo, max(price) AS hi,
              avg(price) AS avg,
              arg_min(price, (ts, arrival)) FILTER (WHERE price IS NOT NULL) AS f,
              arg_max(price, (ts, arrival)) FILTER (WHERE price IS NOT NULL) AS l"""


def duckdb_sessions(table: pa.Table, key: str = "auction", touching: bool = False) -> pl.DataFrame:
    """Gaps and islands in SQL: a new session where the previous event of the key is >= GAP behind
    (> GAP: ``touching``)."""
    t = table.append_column("arrival", pa.array(np.arange(table.num_rows)))
    con = duckdb.connect()
    con.register("t", t)
    return con.sql(f"""
        WITH d AS (SELECT *, ts - lag(ts) OVER (PARTITION BY {key} ORDER BY ts, arrival) AS step FROM t),
             s AS (SELECT *, sum(CASE WHEN step IS NULL OR step {'>' if touching else '>='} {GAP} THEN 1 ELSE 0 END)
                             OVER (PARTITION BY {key} ORDER BY ts, arrival ROWS UNBOUNDED PRECEDING) AS sid FROM d)
        SELECT min(ts) AS window_start, max(ts) + {GAP} AS window_end, {key}, {_AGG_SQL}
        FROM s GROUP BY {key}, sid ORDER BY window_end, {key} NULLS FIRST
    """).pl()


def python_session_ids(ts, keys, wm, lateness: int, touching: bool = False) -> np.ndarray:
    """Plain-Python sessionizer with the engine's lateness rules; -1 marks a late row.

    A row joins (and so merges) every session of its key that is still open
    at its watermark and that it is closer than GAP to; else it starts a new
    session, unless that session would already be due (the row is late). With
    ``touching``, a session exactly GAP away counts too (Flink's windows that touch merge).
    """
    touch = int(touching)
    sid = np.full(ts.size, -1, np.int64)
    alias: list[int] = []
    bounds: list[list[int]] = []
    open_by_key: dict = {}
    for i, (t, k, rw) in enumerate(zip(ts.tolist(), keys, wm.tolist())):
        live = [s for s in open_by_key.get(k, []) if bounds[s][1] + lateness > rw]
        hits = [s for s in live if bounds[s][0] - GAP < t + touch and t < bounds[s][1] + touch]
        if not hits:
            if t + GAP + lateness <= rw:
                open_by_key[k] = live
                continue
            bounds.append([t, t + GAP])
            alias.append(len(alias))
            live.append(len(bounds) - 1)
            hits = [len(bounds) - 1]
        keep = hits[0]
        for other in hits[1:]:
            bounds[keep] = [min(bounds[keep][0], bounds[other][0]), max(bounds[keep][1], bounds[other][1])]
            alias[other] = keep
            live.remove(other)
        bounds[keep] = [min(bounds[keep][0], t), max(bounds[keep][1], t + GAP)]
        open_by_key[k] = live
        sid[i] = keep
    resolve = np.array(alias, np.int64)
    for _ in range(len(alias)):
        nxt = resolve[resolve]
        if np.array_equal(nxt, resolve):
            break
        resolve = nxt
    return np.where(sid >= 0, resolve[np.maximum(sid, 0)], -1)


def python_reference(table: pa.Table, delay: int, lateness: int = 0,
                     touching: bool = False) -> tuple[pl.DataFrame, np.ndarray]:
    """Sessions of the Python sessionizer, aggregated by DuckDB; and the late-row mask."""
    ts = table.column("ts").to_numpy()
    sid = python_session_ids(ts, table.column("auction").to_pylist(), watermark_before(ts, delay), lateness,
                             touching)
    t = table.append_column("arrival", pa.array(np.arange(table.num_rows))).append_column("sid", pa.array(sid))
    con = duckdb.connect()
    con.register("t", t)
    want = con.sql(f"""
        SELECT min(ts) AS window_start, max(ts) + {GAP} AS window_end, auction, {_AGG_SQL}
        FROM t WHERE sid >= 0 GROUP BY auction, sid ORDER BY window_end, auction NULLS FIRST
    """).pl()
    return want, sid < 0


@pytest.mark.parametrize("touching", [False, True])
def test_sessions_every_aggregate_match_duckdb_gaps_and_islands(touching):
    """(``touching`` is a run-time setting: both share one compiled plan.)"""
    table = bursts(20_000, seed=1)
    ex, out = run_bids(session_dag(delay=100, touching=touching), table.to_batches(max_chunksize=3_000))
    assert ex.metrics.late_events == 0
    assert out["out"].schema.names == ["window_start", "window_end", "auction", *AGGS]
    want = duckdb_sessions(table, touching=touching)
    if touching:  # some rows are exactly GAP apart: fewer, merged sessions
        assert want.height < duckdb_sessions(table).height
    assert want.height > 1_000  # many sessions, many keys
    assert_windows(out["out"], want)


#: (delay, allowed lateness, late) of the split-invariance test: a fixed few operator configurations
#: (each compiles its own plan, seconds cold), two of them shared with other tests of this module:
#: no late rows; late rows to a side output; late rows dropped, with allowed lateness.
SESSION_CONFIGS = [(100, 0, "drop"), (20, 0, "side_output"), (0, 30, "drop")]
#: Whether sessions exactly GAP apart merge: a run-time setting, no plan of its own.


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), n=st.integers(0, 2_500), cuts=st.lists(st.integers(0, 2_500), max_size=10),
       config=st.sampled_from(SESSION_CONFIGS), touching=st.booleans())
def test_split_invariance_late_rows_and_merges(seed, n, cuts, config, touching):
    """Random splits (0- and 1-row batches too) with late rows: equal to the Python sessionizer."""
    delay, lateness, late_mode = config
    table = bursts(n, seed=seed)
    ex, out = run_bids(session_dag(delay=delay, lateness=lateness, late=late_mode, touching=touching),
                       split_table(table, cuts))
    want, late = python_reference(table, delay, lateness, touching)
    assert ex.metrics.late_events == int(late.sum())
    assert_windows(out["out"], want)
    if late_mode == "side_output":
        assert pl.from_arrow(out["late"]).equals(pl.from_arrow(table.filter(pa.array(late))), null_equal=True)


def test_late_row_merges_two_open_sessions():
    ex = lj.DagExecutor(session_dag(delay=100))  # the DAG of the first test: one compiled plan
    row = lambda ts, p: {"ts": ts, "auction": [7] * len(ts), "price": p, "ch": ["x"] * len(ts)}  # noqa: E731
    ex.process_batch("bids", row([0, 20, 100, 130], [1.0, 2.0, 3.0, 4.0]))  # sessions [0, 80) and [100, 190)
    assert ex.take_sink_outputs("out").num_rows == 0
    ex.process_batch("bids", row([50], [10.0]))  # 50 is closer than 60 to 20 and to 100: one session
    ex.finish()
    got = ex.take_sink_outputs("out").to_pylist()
    assert got == [{"window_start": 0, "window_end": 190, "auction": 7, "n": 5, "c": 5, "s": 20.0, "lo": 1.0,
                    "hi": 10.0, "avg": 4.0, "f": 1.0, "l": 4.0}]


def test_a_row_walks_past_a_closed_session_to_an_open_one_behind_it():
    """A key's sessions, newest first: [1200, 1260) open, [100, 160) closed by the watermark before the last row,
    [1000, 1060) open. The row at 1055 extends the oldest one, and so does the next (1110); the closed one, which
    the first row's update takes off the list before the fire emits it, stays as it was. Fed as one batch (the
    close and the rows in one call) and row by row."""
    row = lambda ts: {"ts": ts, "auction": [7] * len(ts), "price": [1.0] * len(ts), "ch": ["x"] * len(ts)}  # noqa: E731
    ts = [1000, 100, 1200, 1055, 1110]
    for batches in ([ts], [[t] for t in ts]):
        ex = lj.DagExecutor(session_dag(delay=1000))
        for b in batches:
            ex.process_batch("bids", row(b))
        ex.finish()
        got = [(r["window_start"], r["window_end"], r["n"]) for r in ex.take_sink_outputs("out").to_pylist()]
        assert got == [(100, 160, 1), (1000, 1170, 3), (1200, 1260, 1)], (batches, got)


def test_closed_sessions_never_change_and_late_rows_go_to_the_side_output():
    table = bursts(6_000, seed=3, disorder=300)
    ex, out = run_bids(session_dag(delay=20, late="side_output"), table.to_batches(max_chunksize=400))
    want, late = python_reference(table, 20)
    assert late.sum() > 0
    assert ex.metrics.late_events == late.sum()
    assert ex.metrics.node("w") == {"rows_in": table.num_rows, "rows_out": len(out["out"]),
                                    "late_events": late.sum()}
    assert pl.from_arrow(out["late"]).equals(pl.from_arrow(table.filter(pa.array(late))), null_equal=True)
    assert_windows(out["out"], want)


def test_sessions_are_emitted_as_the_watermark_passes_their_end():
    ex = lj.DagExecutor(session_dag(delay=0, aggs={"n": lj.count()}))
    row = lambda ts, k: {"ts": ts, "auction": k, "price": [1.0] * len(ts), "ch": ["x"] * len(ts)}  # noqa: E731
    ex.process_batch("bids", row([0, 30, 10], [1, 1, 2]))
    assert ex.take_sink_outputs("out").num_rows == 0
    ex.advance_watermark("bids", 90)  # [0, 90) of key 1 is due, [10, 70) of key 2 was due first
    got = ex.take_sink_outputs("out").to_pylist()
    assert [(r["window_start"], r["window_end"], r["auction"], r["n"]) for r in got] == [(10, 70, 2, 1), (0, 90, 1, 2)]
    ex.process_batch("bids", row([20], [1]))  # its own session [20, 80) is behind the watermark: late
    assert ex.metrics.late_events == 1
    ex.process_batch("bids", row([40], [1]))  # [40, 100) is still open: a new session, the emitted one stays
    assert ex.metrics.late_events == 1
    ex.finish()
    assert [(r["window_start"], r["window_end"], r["n"]) for r in ex.take_sink_outputs("out").to_pylist()] == [
        (40, 100, 1)]


def test_string_and_composite_keys():
    table = bursts(6_000, seed=4)
    # "ch" is encoded to dictionary codes: its DAG compiles to the same plan as the first test's.
    # Every distinct configuration compiles a plan (seconds cold), more the more aggregates it has.
    for key, aggs in [("ch", AGGS), (["ch", "auction"], {"n": lj.count(), "hi": lj.max("price")})]:
        _, out = run_bids(session_dag(delay=100, key=key, aggs=aggs), table.to_batches(max_chunksize=700))
        got = pl.from_arrow(out["out"])
        keys = [key] if isinstance(key, str) else key
        assert got.columns == ["window_start", "window_end", *keys, *aggs]
        assert got.schema["ch"] == pl.String
        t = table.append_column("arrival", pa.array(np.arange(table.num_rows)))
        con = duckdb.connect()
        con.register("t", t)
        part = ", ".join(keys)
        want = con.sql(f"""
            WITH d AS (SELECT *, ts - lag(ts) OVER (PARTITION BY {part} ORDER BY ts, arrival) AS step FROM t),
                 s AS (SELECT *, sum(CASE WHEN step IS NULL OR step >= {GAP} THEN 1 ELSE 0 END)
                       OVER (PARTITION BY {part} ORDER BY ts, arrival ROWS UNBOUNDED PRECEDING) AS sid FROM d)
            SELECT min(ts) AS window_start, max(ts) + {GAP} AS window_end, {part}, count(*) AS n, max(price) AS hi
            FROM s GROUP BY {part}, sid""").pl()
        order = ["window_start", "window_end", *keys]
        got = got.select(want.columns)
        assert got.sort(order, nulls_last=True).equals(want.sort(order, nulls_last=True), null_equal=True)


def test_timestamp_event_time_with_timedelta_gap():
    schema = pa.schema([("t", pa.timestamp("us")), ("user", pa.string())])
    dag = (lj.DagBuilder()
           .source("s", schema, event_time="t", watermark=lj.BoundedOutOfOrderness(dt.timedelta(seconds=1)))
           .operator("w", lj.SessionWindow(gap=dt.timedelta(minutes=5), key="user", aggs={"clicks": lj.count()}))
           .connect("s", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    start = dt.datetime(2026, 1, 1, 12, 0)
    times = [start, start + dt.timedelta(minutes=4), start + dt.timedelta(minutes=19), start + dt.timedelta(minutes=20)]
    ex.process_batch("s", pa.record_batch({"t": pa.array(times, pa.timestamp("us")),
                                           "user": ["ann", "ann", "bob", "ann"]}, schema=schema))
    ex.finish()
    got = ex.take_sink_outputs("out")
    assert got.schema.field("window_end").type == pa.timestamp("us")
    assert [(r["user"], r["window_start"], r["window_end"], r["clicks"]) for r in got.to_pylist()] == [
        ("ann", start, start + dt.timedelta(minutes=9), 2),
        ("bob", start + dt.timedelta(minutes=19), start + dt.timedelta(minutes=24), 1),
        ("ann", start + dt.timedelta(minutes=20), start + dt.timedelta(minutes=25), 1),
    ]


def test_session_state_stays_bounded_with_rotating_keys():
    ex = lj.DagExecutor(session_dag(delay=0, aggs={"n": lj.count()}))
    state = ex.state.operator_states[ex.dag.node("w").id]
    for i in range(60):
        ts = np.arange(1_000, dtype=np.int64) * 3 + i * 3_000
        ex.process_batch("bids", {"ts": ts, "auction": ts // 300 + i * 100_000, "price": np.ones(1_000),
                                  "ch": ["a"] * 1_000})
        ex.take_sink_outputs("out")
    assert len(state) <= 20 and len(state.heads) <= 20
    assert state.table.slot_capacity <= 4_096 and state.heads.slot_capacity <= 4_096


def test_session_configuration_errors():
    with pytest.raises(lj.SchemaError, match="gap must be positive"):
        (lj.DagBuilder().source("s", SCHEMA, event_time="ts")
         .operator("w", lj.SessionWindow(gap=0, aggs={"n": lj.count()})).connect("s", "w").sink_for("w", "o").build())
