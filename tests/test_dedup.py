"""``lj.Dedup`` against DuckDB's ``row_number()`` over the same out-of-order events."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import laminar_jit as lj
from conftest import checkpointed_run, split_table
from helpers import SCHEMA, events, run_bids, watermark_before

WITHIN = 1_000


def dedup_dag(delay: int, key=("auction",), lateness: int = 0, late: str = "drop", offset: int = 0):
    kw = dict(late="side_output", late_sink="late") if late == "side_output" else {}
    op = lj.Dedup(key=list(key), within=WITHIN, allowed_lateness=lateness, offset=offset, **kw)
    return (lj.DagBuilder()
            .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(delay))
            .operator("d", op).connect("bids", "d").sink_for("d", "out").build())


def reference(table: pa.Table, delay: int, key=("auction",), lateness: int = 0, offset: int = 0):
    """DuckDB: rows not late when they arrive, first per (key, interval) in arrival order; and the late rows."""
    ts = table.column("ts").to_numpy()
    t = table.append_column("arrival", pa.array(np.arange(table.num_rows))) \
             .append_column("wm", pa.array(watermark_before(ts, delay)))
    con = duckdb.connect()
    con.register("t", t)
    cols = ", ".join(SCHEMA.names)
    interval = f"floor((ts - {offset}) / {WITHIN})::BIGINT * {WITHIN} + {offset}"  # floor, as epoch-aligned windows
    keep = con.sql(f"""
        SELECT {cols} FROM t WHERE {interval} + {WITHIN + lateness} > wm
        QUALIFY row_number() OVER (PARTITION BY {', '.join(key)}, {interval} ORDER BY arrival) = 1
        ORDER BY arrival""").to_arrow_table()
    late = con.sql(f"SELECT {cols} FROM t WHERE {interval} + {WITHIN + lateness} <= wm ORDER BY arrival")
    return keep, late.to_arrow_table()


def same(got: pa.Table, want: pa.Table) -> None:
    assert got.num_rows == want.num_rows
    assert pl.from_arrow(got).equals(pl.from_arrow(want.cast(got.schema)), null_equal=True)


@pytest.mark.parametrize("key", [("auction",), ("ch",), ("ch", "auction")])
def test_dedup_matches_duckdb_row_number(key):
    table = events(30_000, seed=5, disorder=600)
    ex, out = run_bids(dedup_dag(delay=300, key=key, late="side_output"), table.to_batches(max_chunksize=4_000))
    keep, late = reference(table, delay=300, key=key)
    assert 0 < keep.num_rows < table.num_rows and late.num_rows > 0
    same(out["out"], keep)
    same(out["late"], late)
    assert ex.metrics.late_events == late.num_rows


#: (delay, allowed lateness, offset) of the split-invariance test: a fixed few operator configurations
#: (each compiles its own plan), the first shared with test_state_is_forgotten_as_the_watermark_passes:
#: late rows; late rows with lateness and an offset; an offset and no late rows.
DEDUP_CONFIGS = [(100, 0, 0), (0, 400, 250), (2_000, 0, 250)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(0, 3_000), cuts=st.lists(st.integers(0, 3_000), max_size=8),
       config=st.sampled_from(DEDUP_CONFIGS))
def test_split_invariance_lateness_and_offset(seed, n, cuts, config):
    delay, lateness, offset = config
    table = events(n, seed=seed, disorder=800)
    dag = dedup_dag(delay=delay, lateness=lateness, offset=offset)
    _, out = run_bids(dag, split_table(table, cuts + [1, 1, 2]))  # with empty and 1-row batches
    keep, _ = reference(table, delay=delay, lateness=lateness, offset=offset)
    same(out["out"], keep)


def test_state_is_forgotten_as_the_watermark_passes():
    """Memory stays bounded by the intervals the watermark has not passed, however many keys come and go."""
    rng = np.random.default_rng(1)
    ex = lj.DagExecutor(dedup_dag(delay=100))
    node = ex.dag.node("d").id
    for step in range(40):
        ts = np.sort(rng.integers(step * 10_000, (step + 1) * 10_000, 2_000))
        auction = rng.integers(step * 10_000, step * 10_000 + 5_000, 2_000)  # new keys every step
        ex.process_batch("bids", {"ts": ts, "auction": auction, "price": np.ones(2_000), "ch": ["x"] * 2_000})
        assert len(ex.state.operator_states[node]) <= 2 * 2_000 * 2  # about one interval per key stays open
    assert ex.take_sink_outputs("out").num_rows > 0


def test_dedup_feeds_a_window_and_checkpoints(tmp_path):
    """Dedup's output keeps the event time (a window downstream works) and its state is checkpointed."""
    table = events(20_000, seed=8)
    b = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
         .operator("d", lj.Dedup(key="auction", within=WITHIN))
         .operator("w", lj.TumblingWindow(size=5_000, key="ch", aggs={"n": lj.count()}))
         .connect("bids", "d").connect("d", "w").sink_for("w", "out").build())
    batches = table.to_batches(max_chunksize=3_000)
    _, whole = run_bids(b, batches)
    assert checkpointed_run(b, batches, 3, tmp_path / "cp").equals(whole["out"])
    keep, _ = reference(table, delay=400)
    counts = (pl.from_arrow(keep).group_by((pl.col("ts") // 5_000 * 5_000).alias("window_start"), "ch")
              .agg(pl.len().cast(pl.Int64).alias("n")))
    got = pl.from_arrow(whole["out"]).select("window_start", "ch", "n")
    assert got.sort("window_start", "ch").equals(counts.sort("window_start", "ch").select(got.columns))


def test_dedup_configuration_errors():
    with pytest.raises(ValueError, match="needs key="):
        lj.Dedup(key=None, within=10)
    with pytest.raises(ValueError, match="late_sink"):
        lj.Dedup(key="auction", within=10, late="side_output")
    b = lj.DagBuilder().source("bids", SCHEMA).operator("d", lj.Dedup(key="auction", within=10))
    with pytest.raises(lj.SchemaError, match="event-time column"):
        b.connect("bids", "d").sink_for("d", "out").build()
    b = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts").operator("d", lj.Dedup(key="price", within=10))
         .connect("bids", "d").sink_for("d", "out"))
    with pytest.raises(lj.SchemaError, match="floating-point keys"):
        b.build()
    b = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts").operator("d", lj.Dedup(key="auction", within=0))
         .connect("bids", "d").sink_for("d", "out"))
    with pytest.raises(lj.SchemaError, match="within must be positive"):
        b.build()
