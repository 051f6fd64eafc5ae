"""count_distinct, variances and standard deviations in tumbling, sliding and session windows against DuckDB."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj
from conftest import split_table
from helpers import GAP, SIZE, bursts, events, watermark_before

SLIDE = 250
WORDS = ["", "a", "ab", "b", "Zoo", "zoo", "ápple", "apple", "x" * 40, "y"]
AGGS = {"dp": lj.count_distinct("price"), "dc": lj.count_distinct("ch"), "db": lj.count_distinct("bidder"),
        "n": lj.count(), "vp": lj.var_pop("price"), "vs": lj.var_samp("bidder"), "sp": lj.stddev_pop("bidder"),
        "ss": lj.stddev_samp("price")}
#: Float results, compared within rounding (merged panes and sessions add in another order than DuckDB).
MOMENTS = ("vp", "vs", "sp", "ss")


def distinct_table(kind: str, seed: int) -> pa.Table:
    """The window tests' events (zipf auctions with nulls, nulls and NaN in price) with 0.0 and -0.0 prices,
    a string ``ch`` of ten words with nulls, and an int ``bidder`` with nulls."""
    rng = np.random.default_rng(seed)
    table = bursts(5_000, seed=seed, disorder=40) if kind == "session" else events(5_000, seed=seed, disorder=1_500)
    n = table.num_rows
    price = table.column("price").to_numpy(zero_copy_only=False).copy()
    price[rng.random(n) < 0.05] = 0.0
    price[rng.random(n) < 0.05] = -0.0
    price_valid = table.column("price").is_valid().to_numpy(zero_copy_only=False)
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), n)]
    return (table.set_column(2, "price", pa.array(price, mask=~price_valid))
            .set_column(3, "ch", pa.array(words, mask=rng.random(n) < 0.1))
            .append_column("bidder", pa.array(rng.integers(0, 25, n), mask=rng.random(n) < 0.1)))


def window_op(kind: str):
    return {"tumbling": lambda: lj.TumblingWindow(SIZE, key="auction", aggs=AGGS),
            "sliding": lambda: lj.SlidingWindow(SIZE, SLIDE, key="auction", aggs=AGGS),
            "session": lambda: lj.SessionWindow(GAP, key="auction", aggs=AGGS)}[kind]()


def reference(kind: str, table: pa.Table, delay: int) -> list[dict]:
    """DuckDB: per window and auction, the distinct prices, words and bidders of the rows not late on arrival."""
    ts = table.column("ts").to_numpy()
    t = table.append_column("wm", pa.array(watermark_before(ts, delay)))
    con = duckdb.connect()
    con.register("t", t)
    distinct = ("count(DISTINCT price) AS dp, count(DISTINCT ch) AS dc, count(DISTINCT bidder) AS db, count(*) AS n, "
                # (a NaN makes a variance NaN; DuckDB gives 0.0 for one NaN alone, as for any one value)
                "CASE WHEN bool_or(isnan(price)) THEN 'nan'::DOUBLE ELSE var_pop(price) END AS vp, "
                "var_samp(bidder) AS vs, stddev_pop(bidder) AS sp, stddev_samp(price) AS ss")
    if kind == "session":  # (no row is late here: the delay exceeds the disorder)
        query = f"""
            WITH g AS (SELECT *, ts - lag(ts) OVER (PARTITION BY auction ORDER BY ts) AS gap FROM t),
                 s AS (SELECT *, sum(CASE WHEN gap < {GAP} THEN 0 ELSE 1 END)
                                 OVER (PARTITION BY auction ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM g)
            SELECT min(ts) AS window_start, max(ts) + {GAP} AS window_end, auction, {distinct}
            FROM s GROUP BY auction, sid"""
    else:
        slide = SIZE if kind == "tumbling" else SLIDE
        query = f"""
            WITH w AS (SELECT *, unnest(generate_series((floor((ts - {SIZE}) / {slide})::BIGINT + 1) * {slide},
                                                        (ts // {slide}) * {slide}, {slide})) AS window_start FROM t)
            SELECT window_start, window_start + {SIZE} AS window_end, auction, {distinct}
            FROM w WHERE window_start + {SIZE} > wm GROUP BY window_start, auction"""
    return con.sql(query).arrow().read_all().to_pylist()


def ordered(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["window_start"], r["auction"] is None, r["auction"] or 0))


def assert_same(got: list[dict], want: list[dict], what) -> None:
    """Equal rows (in window, key order); the float moments within rounding, null where DuckDB's are."""
    got, want = ordered(got), ordered(want)
    exact = lambda rows: [{k: v for k, v in r.items() if k not in MOMENTS} for r in rows]  # noqa: E731
    assert exact(got) == exact(want), what
    for m in MOMENTS:
        g = np.array([np.nan if r[m] is None else r[m] for r in got])
        w = np.array([np.nan if r[m] is None else r[m] for r in want])
        assert [r[m] is None for r in got] == [r[m] is None for r in want], (what, m)
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9, err_msg=f"{what} {m}")


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session"])
def test_count_distinct_and_variances_match_duckdb_at_one_and_two_shards_and_across_a_rescaled_checkpoint(kind):
    """count_distinct of floats (-0.0 is 0.0, NaN one value), strings (plain and dictionary-encoded batches)
    and ints, and variances and standard deviations (NaN propagates; a sample one under two values is null),
    nulls skipped, over out-of-order rows with late ones (tumbling, sliding) cut at random with an empty and a
    one-row batch; at 1 and 2 key shards, and checkpointed at 2 shards, restored at 1 and at 3."""
    table = distinct_table(kind, seed=5)
    delay = 100 if kind == "session" else 20
    rng = np.random.default_rng(5)
    cuts = sorted(rng.integers(0, table.num_rows, 12).tolist() + [700, 700, 701])
    batches = [b if j % 2 else b.set_column(3, "ch", pc.dictionary_encode(b.column(3)))
               for j, b in enumerate(split_table(table, cuts))]
    dag = (lj.DagBuilder().source("bids", table.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(delay))
           .operator("w", window_op(kind)).connect("bids", "w").sink_for("w", "out").build())
    want = reference(kind, table, delay)
    assert len(want) > 100 and any(r["dp"] > 1 for r in want) and any(r["vs"] is None for r in want)
    for parallelism in (1, 2):
        ex = lj.DagExecutor(dag, parallelism=parallelism)
        assert ex.shards == parallelism
        for b in batches:
            ex.process_batch("bids", b)
        ex.finish()
        assert (ex.metrics.late_events > 0) == (kind != "session")
        got = ex.take_sink_outputs("out")
        assert got.schema.field("dc").type == pa.int64() and got.schema.field("vp").type == pa.float64()
        assert_same(got.to_pylist(), want, parallelism)
    at = len(batches) // 2
    for restored_at in (1, 3):
        ex = lj.DagExecutor(dag, parallelism=2)
        for b in batches[:at]:
            ex.process_batch("bids", b)
        first = ex.take_sink_outputs("out")
        again = lj.DagExecutor(dag, parallelism=restored_at)
        again.restore(ex.checkpoint())
        for b in batches[at:]:
            again.process_batch("bids", b)
        again.finish()
        rows = first.to_pylist() + again.take_sink_outputs("out").to_pylist()
        assert_same(rows, want, f"restored at {restored_at}")


def test_value_sets_are_freed_with_their_windows():
    """Every (key, window)'s set is emptied when the window fires: the sets' tables hold only open windows."""
    table = distinct_table("tumbling", seed=9)
    dag = (lj.DagBuilder().source("bids", table.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(20))
           .operator("w", window_op("tumbling")).connect("bids", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    for b in split_table(table, [2_500]):
        ex.process_batch("bids", b)
        state = ex.state.operator_states[dag.node("w").id]
        sizes = next(field for name, field, _ in state.fields if name == "a0_n")  # dp's set sizes
        assert len(state.sets[0][1]) == int(sizes[state.table.live_slots()].sum()) > 0
    ex.finish()
    state = ex.state.operator_states[dag.node("w").id]
    assert len(state.table) == 0 and all(len(t) == 0 for _, t, _ in state.sets)
