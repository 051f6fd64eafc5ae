"""count_distinct in tumbling, sliding and session windows against DuckDB's count(DISTINCT)."""

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
        "n": lj.count()}


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
    distinct = "count(DISTINCT price) AS dp, count(DISTINCT ch) AS dc, count(DISTINCT bidder) AS db, count(*) AS n"
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


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session"])
def test_count_distinct_matches_duckdb_at_one_and_two_shards_and_across_a_rescaled_checkpoint(kind):
    """Floats (-0.0 is 0.0, NaN one value), strings (plain and dictionary-encoded batches) and ints, nulls
    skipped, over out-of-order rows with late ones (tumbling, sliding) cut at random with an empty and a
    one-row batch; at 1 and 2 key shards, and checkpointed at 2 shards, restored at 1 and at 3."""
    table = distinct_table(kind, seed=5)
    delay = 100 if kind == "session" else 20
    rng = np.random.default_rng(5)
    cuts = sorted(rng.integers(0, table.num_rows, 12).tolist() + [700, 700, 701])
    batches = [b if j % 2 else b.set_column(3, "ch", pc.dictionary_encode(b.column(3)))
               for j, b in enumerate(split_table(table, cuts))]
    dag = (lj.DagBuilder().source("bids", table.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(delay))
           .operator("w", window_op(kind)).connect("bids", "w").sink_for("w", "out").build())
    want = ordered(reference(kind, table, delay))
    assert len(want) > 100 and any(r["dp"] > 1 for r in want)
    for parallelism in (1, 2):
        ex = lj.DagExecutor(dag, parallelism=parallelism)
        assert ex.shards == parallelism
        for b in batches:
            ex.process_batch("bids", b)
        ex.finish()
        assert (ex.metrics.late_events > 0) == (kind != "session")
        got = ex.take_sink_outputs("out")
        assert got.schema.field("dc").type == pa.int64()
        assert ordered(got.to_pylist()) == want, parallelism
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
        assert ordered(rows) == want, restored_at


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
