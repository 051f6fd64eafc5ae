"""``lj.TopN`` against DuckDB's ``row_number()`` over the same out-of-order events."""

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

WINDOW = 1_000


def topn_dag(n: int, key=("auction",), descending=True, delay: int = 300, lateness: int = 0, late="drop",
             offset: int = 0):
    kw = dict(late="side_output", late_sink="late") if late == "side_output" else {}
    op = lj.TopN(n, by="price", key=list(key) or None, window=WINDOW, descending=descending,
                 allowed_lateness=lateness, offset=offset, **kw)
    return (lj.DagBuilder()
            .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(delay))
            .operator("top", op).connect("bids", "top").sink_for("top", "out").build())


def reference(table: pa.Table, n: int, key=("auction",), descending=True, delay: int = 300, lateness: int = 0,
              offset: int = 0) -> pa.Table:
    """DuckDB: rows not late on arrival with a non-null, non-NaN price, ranked per (key, window)."""
    ts = table.column("ts").to_numpy()
    t = table.append_column("arrival", pa.array(np.arange(table.num_rows))) \
             .append_column("wm", pa.array(watermark_before(ts, delay)))
    con = duckdb.connect()
    con.register("t", t)
    partition = ", ".join([*key, "window_start"])
    order = "DESC" if descending else "ASC"
    return con.sql(f"""
        WITH w AS (SELECT *, floor((ts - {offset}) / {WINDOW})::BIGINT * {WINDOW} + {offset} AS window_start FROM t),
        r AS (SELECT *, row_number() OVER (PARTITION BY {partition} ORDER BY price {order}, arrival) AS rank
              FROM w WHERE window_start + {WINDOW + lateness} > wm AND price IS NOT NULL AND NOT isnan(price))
        SELECT window_start, window_start + {WINDOW} AS window_end, rank, {', '.join(SCHEMA.names)}
        FROM r WHERE rank <= {n}""").to_arrow_table()


def same(got: pa.Table, want: pa.Table, key=("auction",)) -> None:
    """Equal rows; compared in (window, key, rank) order (string keys are emitted in first-seen order)."""
    by = ["window_start", *key, "rank"]
    g = pl.from_arrow(got).sort(by, nulls_last=False)
    w = pl.from_arrow(want.cast(got.schema)).sort(by, nulls_last=False)
    assert g.columns == w.columns
    assert g.equals(w, null_equal=True)


@pytest.mark.parametrize("n, key, descending", [(3, ("auction",), True), (1, ("ch",), False),
                                                (2, ("ch", "auction"), True), (5, (), False)])
def test_topn_matches_duckdb_row_number(n, key, descending):
    table = events(30_000, seed=6, disorder=600)
    ex, out = run_bids(topn_dag(n, key, descending, late="side_output"), table.to_batches(max_chunksize=4_000))
    want = reference(table, n, key, descending)
    assert want.num_rows > 100
    same(out["out"], want, key)
    got = pl.from_arrow(out["out"])
    assert got["window_end"].is_sorted()  # emitted window by window
    assert out["late"].num_rows == ex.metrics.late_events > 0


def test_integer_keys_are_emitted_in_window_key_rank_order():
    table = events(10_000, seed=2)
    _, out = run_bids(topn_dag(3, late="side_output"), table.to_batches(max_chunksize=2_500))  # a DAG compiled above
    got = pl.from_arrow(out["out"])
    assert got.equals(got.sort(["window_end", "auction", "rank"], nulls_last=False))


#: (n, delay, allowed lateness, offset, late) of the split-invariance test: a fixed few operator
#: configurations (each compiles its own plan, seconds cold), the first shared with
#: test_topn_matches_duckdb_row_number: late rows; late rows with lateness and an offset;
#: late rows with an offset and no lateness.
TOPN_CONFIGS = [(3, 300, 0, 0, "side_output"), (2, 0, 400, 250, "drop"), (2, 150, 0, 250, "drop")]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_rows=st.integers(0, 2_000), cuts=st.lists(st.integers(0, 2_000), max_size=8),
       config=st.sampled_from(TOPN_CONFIGS))
def test_split_invariance_lateness_and_offset(seed, n_rows, cuts, config):
    n, delay, lateness, offset, late = config
    table = events(n_rows, seed=seed, disorder=800)
    dag = topn_dag(n, delay=delay, lateness=lateness, offset=offset, late=late)
    _, out = run_bids(dag, split_table(table, cuts + [1, 1, 2]))  # with empty and 1-row batches
    same(out["out"], reference(table, n, delay=delay, lateness=lateness, offset=offset))


def test_topn_feeds_a_keyed_window_downstream():
    """One fired (key, window) emits up to n rows: the state downstream must make room for all of them.

    2,000 auctions x 50 kept rows fire in one call triggered by a single row,
    creating about 100,000 new (auction, rank) keys downstream at once.
    """
    rng = np.random.default_rng(0)
    m = 120_000
    table = pa.table({"ts": np.sort(rng.integers(0, WINDOW, m)), "auction": rng.integers(0, 2_000, m),
                      "price": rng.random(m), "ch": ["x"] * m}, schema=SCHEMA)
    dag = (lj.DagBuilder()
           .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("top", lj.TopN(50, by="price", key="auction", window=WINDOW))
           .operator("per_rank", lj.TumblingWindow(size=WINDOW, key=["auction", "rank"], aggs={"n": lj.count()}))
           .connect("bids", "top").connect("top", "per_rank").sink_for("per_rank", "out").build())
    late = pa.table({"ts": [10 * WINDOW], "auction": [0], "price": [1.0], "ch": ["x"]}, schema=SCHEMA)
    _, out = run_bids(dag, table.to_batches(max_chunksize=1_000) + late.to_batches())
    want = pl.from_arrow(reference(pa.concat_tables([table, late]), 50, delay=0))
    got = pl.from_arrow(out["out"])
    assert got.height == want.height > 99_000 and got["n"].to_list() == [1] * got.height
    by = ["window_start", "auction", "rank"]
    assert got.select(by).sort(by).equals(want.select(by).sort(by))


def test_topn_state_is_checkpointed(tmp_path):
    table = events(20_000, seed=9)
    dag = topn_dag(2, key=("ch", "auction"), late="side_output")  # string and int keys; compiled above
    batches = table.to_batches(max_chunksize=3_000)
    _, whole = run_bids(dag, batches)
    both = checkpointed_run(dag, batches, 3, tmp_path / "cp")
    assert pl.from_arrow(both).equals(pl.from_arrow(whole["out"]), null_equal=True)


def test_topn_configuration_errors():
    with pytest.raises(ValueError, match=r"n must be an int in \[1, 1024\]"):
        lj.TopN(0, by="price", window=10)
    with pytest.raises(ValueError, match="needs window="):
        lj.TopN(3, by="price")
    b = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts").operator("t", lj.TopN(3, by="ch", window=10))
         .connect("bids", "t").sink_for("t", "out"))
    with pytest.raises(lj.SchemaError, match="TopN by column 'ch' is string"):
        b.build()
    clash = pa.schema([("ts", pa.int64()), ("rank", pa.int64())])
    b = (lj.DagBuilder().source("s", clash, event_time="ts").operator("t", lj.TopN(3, by="rank", window=10))
         .connect("s", "t").sink_for("t", "out"))
    with pytest.raises(lj.SchemaError, match="'rank' clashes"):
        b.build()
