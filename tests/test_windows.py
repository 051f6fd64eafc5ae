"""Tumbling windows, watermarks and late data against DuckDB / numpy references."""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import laminar_jit as lj
from conftest import checkpointed_run, split_table
from helpers import AGGS, GAP, SCHEMA, SIZE, assert_windows, bursts, events, run_bids, watermark_before


def window_dag(delay: int, key="auction", late: str = "drop", lateness: int = 0, slide: int = SIZE):
    kw = dict(late="side_output", late_sink="late") if late == "side_output" else {}
    kw.update(key=key, aggs=AGGS, allowed_lateness=lateness)
    op = lj.TumblingWindow(size=SIZE, **kw) if slide == SIZE else lj.SlidingWindow(size=SIZE, slide=slide, **kw)
    return (lj.DagBuilder()
            .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(delay))
            .operator("w", op)
            .connect("bids", "w").sink_for("w", "out").build())


def late_mask(ts: np.ndarray, delay: int, lateness: int = 0, slide: int = SIZE) -> np.ndarray:
    """Reference: a row is late when the last window holding it ended (plus lateness) at the watermark."""
    last_start = (ts // slide) * slide
    return last_start + SIZE + lateness <= watermark_before(ts, delay)


def reference(table: pa.Table, key="auction", delay=None, lateness: int = 0, slide: int = SIZE) -> pl.DataFrame:
    """DuckDB: each row joins every window holding it that was still open when it arrived."""
    ts = table.column("ts").to_numpy()
    wm = watermark_before(ts, delay) if delay is not None else np.full(ts.size, np.iinfo(np.int64).min)
    t = table.append_column("arrival", pa.array(np.arange(table.num_rows))).append_column("wm", pa.array(wm))
    con = duckdb.connect()
    con.register("t", t)
    group = f", {key}" if key else ""
    return con.sql(f"""
        WITH w AS (
            SELECT *, unnest(generate_series((floor((ts - {SIZE}) / {slide})::BIGINT + 1) * {slide}, (ts // {slide}) * {slide},
                                             {slide})) AS window_start
            FROM t)
        SELECT window_start, window_start + {SIZE} AS window_end{group},
               count(*) AS n, count(price) AS c, sum(price) AS s, min(price) AS lo, max(price) AS hi,
               avg(price) AS avg,
               arg_min(price, (ts, arrival)) FILTER (WHERE price IS NOT NULL) AS f,
               arg_max(price, (ts, arrival)) FILTER (WHERE price IS NOT NULL) AS l
        FROM w WHERE window_start + {SIZE + lateness} > wm
        GROUP BY ALL ORDER BY window_end{group} NULLS FIRST
    """).pl()


def test_tumbling_every_aggregate_matches_duckdb():
    table = events(20_000, seed=1)
    ex, out = run_bids(window_dag(delay=400), table.to_batches(max_chunksize=3_000))
    assert ex.metrics.late_events == 0
    assert out["out"].schema.names == ["window_start", "window_end", "auction", *AGGS]
    assert_windows(out["out"], reference(table))


@pytest.mark.parametrize("slide", [SIZE, 250])
def test_key_zero_in_window_zero_is_told_from_freed_slots(slide):
    # tumbling fires scan the table by slot and tell freed slots by their key (0, 0),
    # which is also the live key of auction 0 in the window starting at 0: it must still
    # fire; sliding fires accumulate dense keys by offset from the least, here 0
    table = events(6_000, seed=5)
    auction = pc.subtract(table.column("auction"), 1)  # auction 0 is the most frequent
    table = table.set_column(1, "auction", auction)
    ex, out = run_bids(window_dag(delay=200, slide=slide), table.to_batches(max_chunksize=97))
    got = pl.from_arrow(out["out"])
    assert got.filter((pl.col("auction") == 0) & (pl.col("window_start") == 0)).height == 1
    assert_windows(out["out"], reference(table, delay=200, slide=slide))


#: (delay, allowed lateness, slide, late) of the split-invariance test. Every distinct configuration
#: compiles its own plan (seconds each, cold), so the random data and splits vary per example while
#: the operator configurations are a fixed few, most of them shared with the tests below:
#: tumbling with many late rows, tumbling with lateness and a side output, sliding with panes of
#: gcd(size, slide) < slide and late rows, sliding with slide dividing size and no late rows.
WINDOW_CONFIGS = [(0, 0, SIZE, "drop"), (100, 500, SIZE, "side_output"), (50, 0, 400, "drop"),
                  (400, 0, 200, "drop")]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), n=st.integers(0, 3_000), cuts=st.lists(st.integers(0, 3_000), max_size=10),
       config=st.sampled_from(WINDOW_CONFIGS))
def test_split_invariance_and_late_rows(seed, n, cuts, config):
    """Tumbling and sliding windows (panes of gcd(size, slide)) over random splits, with late rows."""
    delay, lateness, slide, late = config
    table = events(n, seed=seed)
    ex, out = run_bids(window_dag(delay=delay, lateness=lateness, slide=slide, late=late), split_table(table, cuts))
    late_rows = late_mask(table.column("ts").to_numpy(), delay, lateness=lateness, slide=slide)
    assert ex.metrics.late_events == int(late_rows.sum())
    assert_windows(out["out"], reference(table, delay=delay, lateness=lateness, slide=slide))
    if late == "side_output":
        assert pl.from_arrow(out["late"]).equals(pl.from_arrow(table.filter(pa.array(late_rows))), null_equal=True)


def test_batches_larger_than_a_piece_match_duckdb():
    """Window plans run big batches in pieces (``WINDOW_PIECE_ROWS``); results stay the reference's."""
    from laminar_jit.executor.plan import WINDOW_PIECE_ROWS

    table = events(2 * WINDOW_PIECE_ROWS + 123, seed=12)
    for slide in (SIZE, 200):
        ex, out = run_bids(window_dag(delay=400, slide=slide), [table])
        assert ex.metrics.batches == 1 and ex.metrics.late_events == 0
        assert_windows(out["out"], reference(table, slide=slide))


@pytest.mark.parametrize("keys", ["dense", "dense with nulls", "sparse with nulls"])
def test_sliding_every_aggregate_matches_duckdb(keys):
    # a fire accumulates windows of dense keys (a narrow range) by key offset, the null
    # group apart and first, and merges the key-sorted panes of sparse ones: all must
    # agree with the reference
    table = events(20_000, seed=11)
    if keys == "dense":
        table = table.set_column(1, "auction", pc.fill_null(table.column("auction"), 0))
    if keys.startswith("sparse"):
        table = table.set_column(1, "auction", pc.multiply(pc.subtract(table.column("auction"), 30), 10**15))
    ex, out = run_bids(window_dag(delay=400, slide=200), table.to_batches(max_chunksize=4_000))
    assert ex.metrics.late_events == 0
    assert_windows(out["out"], reference(table, slide=200))


# These two tests share one operator configuration (one compiled plan), also drawn by the split test.
def test_late_rows_go_to_the_side_output_unchanged():
    table = events(8_000, seed=2, disorder=900)
    ex, out = run_bids(window_dag(delay=100, late="side_output", lateness=500), table.to_batches(max_chunksize=500))
    late = late_mask(table.column("ts").to_numpy(), 100, lateness=500)
    assert late.sum() > 0
    # NaN prices make Arrow's equals() false; Polars compares NaN as equal
    assert pl.from_arrow(out["late"]).equals(pl.from_arrow(table.filter(pa.array(late))), null_equal=True)
    assert_windows(out["out"], reference(table, delay=100, lateness=500))
    assert ex.metrics.late_events == late.sum()


def test_allowed_lateness_keeps_windows_open():
    table = events(8_000, seed=3, disorder=900)
    _, out = run_bids(window_dag(delay=100, late="side_output", lateness=500), table.to_batches(max_chunksize=500))
    ts = table.column("ts").to_numpy()
    late = late_mask(ts, 100, lateness=500)
    assert 0 < late.sum() < late_mask(ts, 100).sum()  # rows late without lateness are kept
    assert pl.from_arrow(out["late"]).height == late.sum()
    assert_windows(out["out"], reference(table, delay=100, lateness=500))


def test_windows_are_emitted_when_the_watermark_passes_and_never_again():
    ex = lj.DagExecutor(window_dag(delay=0))
    ex.process_batch("bids", {"ts": [100, 900, 1_500], "auction": [1, 1, 2], "price": [1.0, 2.0, 3.0],
                              "ch": ["a", "a", "b"]})
    first = ex.take_sink_outputs("out")  # watermark 1500 closes [0, 1000)
    assert first.column("window_start").to_pylist() == [0]
    assert first.column("n").to_pylist() == [2]
    ex.process_batch("bids", {"ts": [10], "auction": [1], "price": [50.0], "ch": ["x"]})  # late for [0, 1000)
    assert ex.take_sink_outputs("out").num_rows == 0
    assert ex.metrics.late_events == 1
    ex.advance_watermark("bids", 2_000)  # punctuation closes [1000, 2000)
    got = ex.take_sink_outputs("out")
    assert got.column("window_start").to_pylist() == [1_000] and got.column("hi").to_pylist() == [3.0]
    assert ex.watermark("bids") == 2_000
    ex.finish()
    assert ex.take_sink_outputs("out").num_rows == 0
    assert ex.watermark("bids") == 2**63 - 1


def test_string_keys_come_back_as_strings():
    table = events(6_000, seed=4)
    _, out = run_bids(window_dag(delay=400, key="ch"), table.to_batches(max_chunksize=1_000))
    got = pl.from_arrow(out["out"])
    assert got.schema["ch"] == pl.String
    want = reference(table, key="ch")
    cols = ["window_start", "window_end", "ch", "n", "c", "lo", "hi"]
    assert got.select(cols).sort(cols[:3]).equals(want.select(cols).sort(cols[:3]), null_equal=True)


#: Strings of the string-aggregate test: empty, multibyte, a NUL, prefixes of each other.
WORDS = ["web", "app", "api", "", "Zeta", "apple", "ä", "webhook", "a\x00b", "ap"]


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session", "large batches"])
@pytest.mark.parametrize("parallelism", [1, 2])
def test_string_aggregates_match_the_same_window_over_the_strings_byte_order(kind, parallelism, tmp_path):
    """count/min/max/first/last of a string column against the same window over each string's rank in byte
    order (an int column, whose window aggregates the DuckDB tests check): nulls, late rows, batches cut at
    random with an empty and a one-row batch, half of them dictionary-encoded. "large batches": tumbling
    windows fed batches of several pieces (each piece reads the whole dictionary)."""
    rng = np.random.default_rng(21)
    n = 60_000 if kind == "large batches" else 4_000
    table = bursts(n, seed=21, disorder=150) if kind == "session" else events(n, seed=21, disorder=1_500)
    rank = {w: r for r, w in enumerate(sorted(WORDS, key=str.encode))}
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), table.num_rows)]
    null = rng.random(table.num_rows) < 0.15
    table = table.set_column(3, "ch", pa.array(words, mask=null)).append_column(
        "r", pa.array([rank[w] for w in words], pa.int64(), mask=null))
    make = {"tumbling": lambda aggs: lj.TumblingWindow(SIZE, key="auction", aggs=aggs),
            "large batches": lambda aggs: lj.TumblingWindow(SIZE, key="auction", aggs=aggs),
            "sliding": lambda aggs: lj.SlidingWindow(SIZE, 250, key="auction", aggs=aggs),
            "session": lambda aggs: lj.SessionWindow(GAP, key="auction", aggs=aggs)}[kind]
    dag = (lj.DagBuilder().source("bids", table.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(20))
           .operator("s", make({f: getattr(lj, f)("ch") for f in ("count", "min", "max", "first", "last")}))
           .operator("r", make({f: getattr(lj, f)("r") for f in ("count", "min", "max", "first", "last")}))
           .connect("bids", "s").connect("bids", "r").sink_for("s", "strings").sink_for("r", "ranks").build())
    cuts = sorted(rng.integers(0, table.num_rows, 12 if n < 10_000 else 1).tolist() + [500, 500, 501])
    batches = [b if j % 2 else b.set_column(3, "ch", pc.dictionary_encode(b.column(3)))
               for j, b in enumerate(split_table(table, cuts))]
    ex = lj.DagExecutor(dag, parallelism=parallelism)
    assert ex.shards == parallelism
    for b in batches:
        ex.process_batch("bids", b)
    ex.finish()
    got, want = ex.take_sink_outputs("strings"), ex.take_sink_outputs("ranks")
    assert got.num_rows == want.num_rows > 100 and ex.metrics.late_events > 0
    assert got.schema.field("min").type == pa.string() and got.schema.field("count").type == pa.int64()
    by_rank = sorted(WORDS, key=str.encode)
    for f in ("min", "max", "first", "last"):
        want = want.set_column(want.schema.get_field_index(f), f,
                               pa.array([None if r is None else by_rank[r] for r in want.column(f).to_pylist()]))
    order = [("window_start", "ascending"), ("auction", "ascending")]
    assert got.sort_by(order).to_pylist() == want.sort_by(order).to_pylist()
    if parallelism == 1 and kind != "large batches":  # the codes in the state and the dictionary restore together
        resumed = checkpointed_run(dag, batches, 7, tmp_path / "chk", sink="strings")
        assert resumed.sort_by(order).to_pylist() == got.sort_by(order).to_pylist()


def test_a_window_takes_the_string_results_of_a_window_before_it():
    # 10 s extremes of the 1 s extremes per auction are the 10 s extremes of the rows (aligned windows)
    rng = np.random.default_rng(5)
    table = events(6_000, seed=5, disorder=0)
    table = table.set_column(3, "ch", pa.array([WORDS[i] for i in rng.integers(0, len(WORDS), table.num_rows)],
                                               mask=rng.random(table.num_rows) < 0.1))
    aggs = {"lo": lj.min("ch"), "hi": lj.max("ch")}
    dag = (lj.DagBuilder().source("bids", table.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("fine", lj.TumblingWindow(SIZE, key="auction", aggs=aggs))
           .operator("coarse", lj.TumblingWindow(10 * SIZE, aggs={"lo": lj.min("lo"), "hi": lj.max("hi")}))
           .operator("direct", lj.TumblingWindow(10 * SIZE, aggs=aggs))
           .connect("bids", "fine").connect("fine", "coarse").connect("bids", "direct")
           .sink_for("coarse", "two").sink_for("direct", "one").build())
    _, out = run_bids(dag, split_table(table, [1_000, 1_000, 1_001, 4_000]))
    cols = ["window_start", "lo", "hi"]
    assert out["two"].select(cols).to_pylist() == out["one"].select(cols).to_pylist()
    assert out["one"].num_rows > 3 and out["one"].schema.field("hi").type == pa.string()


def test_global_window_without_key():
    table = events(5_000, seed=5)
    _, out = run_bids(window_dag(delay=400, key=None), [table])
    assert_windows(out["out"], reference(table, key=None))


def test_timestamp_event_time_and_timedelta_sizes():
    schema = pa.schema([("t", pa.timestamp("ms")), ("v", pa.int32())])
    dag = (lj.DagBuilder()
           .source("s", schema, event_time="t", watermark=lj.BoundedOutOfOrderness(dt.timedelta(seconds=5)))
           .operator("w", lj.TumblingWindow(size=dt.timedelta(minutes=1), key="v",
                                            aggs={"n": lj.count(), "last_t": lj.last("t")}))
           .connect("s", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    ts = pa.array([0, 30_000, 61_000, 59_000, 125_000], pa.timestamp("ms"))
    ex.process_batch("s", pa.record_batch({"t": ts, "v": pa.array([1, 1, 1, 2, 1], pa.int32())}, schema=schema))
    ex.finish()
    got = ex.take_sink_outputs("out")
    assert got.schema.field("window_start").type == pa.timestamp("ms")
    assert got.schema.field("v").type == pa.int32()
    assert got.schema.field("last_t").type == pa.timestamp("ms")
    rows = got.to_pylist()
    assert [(r["window_start"].minute, r["v"], r["n"]) for r in rows] == [(0, 1, 2), (0, 2, 1), (1, 1, 1), (2, 1, 1)]


def test_window_output_flows_into_stateless_operators():
    dag = (lj.DagBuilder()
           .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
           .operator("w", lj.TumblingWindow(size=SIZE, key="auction", aggs={"n": lj.count(), "hi": lj.max("price")}))
           .operator("busy", lj.Filter(lambda n: n >= 5))
           .operator("spread", lj.Map(lambda hi, n: hi / n, output="per_bid"))
           .connect("bids", "w").connect("w", "busy").connect("busy", "spread").sink_for("spread", "out").build())
    table = events(10_000, seed=6)
    _, out = run_bids(dag, table.to_batches(max_chunksize=2_000))
    want = reference(table).filter(pl.col("n") >= 5).select("window_start", "window_end", "auction", "n", "hi") \
        .with_columns(per_bid=pl.col("hi") / pl.col("n"))
    assert pl.from_arrow(out["out"]).equals(want, null_equal=True)


def test_sliding_windows_into_a_keyed_window_with_room_for_every_fan_out():
    """Each (key, pane) entry falls in size/slide windows: when they all fire at once, the
    downstream window gets that many rows per entry and must have room for their keys."""
    keys = 3_000
    dag = (lj.DagBuilder()
           .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("w", lj.SlidingWindow(size=SIZE, slide=100, key="auction", aggs={"n": lj.count()}))
           .operator("per_slide", lj.TumblingWindow(size=100, key="auction", aggs={"m": lj.sum("n")},
                                                    allowed_lateness=SIZE))
           .connect("bids", "w").connect("w", "per_slide").sink_for("per_slide", "out").build())
    ts = np.arange(keys, dtype=np.int64) % 50
    _, out = run_bids(dag, [pa.table({"ts": ts, "auction": np.arange(keys), "price": np.ones(keys), "ch": ["a"] * keys},
                                schema=SCHEMA)])
    got = pl.from_arrow(out["out"])
    assert got.height == keys * SIZE // 100  # ten windows per key, one row each in the downstream window
    assert got["m"].to_list() == [1] * got.height
    assert got.select("window_start", "auction").is_unique().all()


def rotate_keys(slide: int, batches: int):
    """Window state after ``batches`` seconds of 100 new keys every 10 ms (none ever comes back)."""
    ex = lj.DagExecutor(window_dag(delay=0, slide=slide))
    for i in range(batches):
        ts = np.arange(1_000, dtype=np.int64) + i * 1_000
        ex.process_batch("bids", {"ts": ts, "auction": ts // 10 + i * 100_000, "price": np.ones(1_000),
                                  "ch": ["a"] * 1_000})
        ex.take_sink_outputs("out")
    return ex.state.operator_states[ex.dag.node("w").id]


def test_sliding_state_frees_panes_and_entries():
    state = rotate_keys(slide=250, batches=40)
    assert len(state) <= 500 and len(state.panes) <= 6  # about a window's worth, not the run's
    assert state.table.slot_capacity <= 4_096
    free = state.table.meta[1] - state.table.meta[0]  # every freed entry left its pane's list
    assert (state.fields[-1][1][state.table.free[:free]] == -1).all()


def test_a_pane_that_gains_entries_after_a_fire_is_merged_in_key_order_again():
    # windows of 4 every 2: pane [2, 4) is in [0, 4) and [2, 6). [0, 4) fires (and the pane's
    # list is sorted by key); then a row of a new key lands in the pane (at the head of its
    # list, out of order), on time for [2, 6): the window must count it and keep keys in order.
    dag = (lj.DagBuilder()
           .source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("w", lj.SlidingWindow(size=4, slide=2, key="auction", aggs={"n": lj.count(), "s": lj.sum("price")}))
           .connect("s", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    rows = lambda ts, keys: {"ts": ts, "auction": keys, "price": [1.0] * len(ts), "ch": ["x"] * len(ts)}  # noqa: E731
    ex.process_batch("s", rows([0, 2, 3, 3], [7, 9, 5, 9]))
    ex.advance_watermark("s", 4)
    first = ex.take_sink_outputs("out")
    assert first.select(["window_start", "auction", "n"]).to_pylist() == [
        {"window_start": -2, "auction": 7, "n": 1},
        {"window_start": 0, "auction": 5, "n": 1}, {"window_start": 0, "auction": 7, "n": 1},
        {"window_start": 0, "auction": 9, "n": 2}]
    ex.process_batch("s", rows([4, 3, 5], [6, 8, 9]))  # ts 3 is late for [0, 4) only
    assert ex.metrics.late_events == 0
    ex.finish()
    got = ex.take_sink_outputs("out").select(["window_start", "auction", "n"]).to_pylist()
    assert got == [
        {"window_start": 2, "auction": 5, "n": 1}, {"window_start": 2, "auction": 6, "n": 1},
        {"window_start": 2, "auction": 8, "n": 1}, {"window_start": 2, "auction": 9, "n": 3},
        {"window_start": 4, "auction": 6, "n": 1}, {"window_start": 4, "auction": 9, "n": 1}]


def test_state_stays_bounded_with_rotating_keys():
    state = rotate_keys(slide=SIZE, batches=60)
    assert state.table.slot_capacity <= 4_096  # 100 live keys per window, not 6 000 over the run
    assert len(state) <= 200


def test_two_sources_fan_in_waits_for_the_slower_watermark_and_idleness():
    dag = (lj.DagBuilder()
           .source("a", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .source("b", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("w", lj.TumblingWindow(size=SIZE, aggs={"n": lj.count()}))
           .connect("a", "w").connect("b", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    row = lambda t: {"ts": [t], "auction": [1], "price": [1.0], "ch": ["x"]}  # noqa: E731
    ex.process_batch("a", row(100))
    ex.process_batch("b", row(200))
    ex.process_batch("a", row(5_000))  # a is far ahead; b still holds the window back
    assert ex.take_sink_outputs("out").num_rows == 0
    ex.mark_idle("b")  # b goes quiet: it no longer holds the watermark back
    got = ex.take_sink_outputs("out")
    assert got.column("n").to_pylist() == [2]
    ex.process_batch("b", row(300))  # b is active again and its row is late for [0, 1000)
    assert ex.metrics.late_events == 1


def test_window_configuration_errors():
    with pytest.raises(ValueError, match="at least one aggregate"):
        lj.TumblingWindow(size=10)
    with pytest.raises(ValueError, match="late_sink"):
        lj.TumblingWindow(size=10, aggs={"n": lj.count()}, late="side_output")
    with pytest.raises(TypeError, match="needs a column"):
        lj.Agg("max")
    builder = lambda op, et="ts": (lj.DagBuilder().source("s", SCHEMA, event_time=et)  # noqa: E731
                                   .operator("w", op).connect("s", "w").sink_for("w", "o"))
    with pytest.raises(lj.SchemaError, match="'w'.*key column 'nope'"):
        builder(lj.TumblingWindow(size=10, key="nope", aggs={"n": lj.count()})).build()
    with pytest.raises(lj.SchemaError, match="'w'.*string column 'ch'.*count, count_distinct, min, max, first, last"):
        builder(lj.TumblingWindow(size=10, aggs={"s": lj.sum("ch")})).build()
    with pytest.raises(lj.SchemaError, match="event-time column"):
        builder(lj.TumblingWindow(size=10, aggs={"n": lj.count()}), et=None).build()
    with pytest.raises(lj.SchemaError, match="floating-point keys"):
        builder(lj.TumblingWindow(size=10, key="price", aggs={"n": lj.count()})).build()
    with pytest.raises(lj.SchemaError, match="size must be positive"):
        builder(lj.TumblingWindow(size=0, aggs={"n": lj.count()})).build()


def test_composite_keys_of_integers_and_strings():
    table = events(6_000, seed=12)
    dag = (lj.DagBuilder()
           .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
           .operator("w", lj.TumblingWindow(size=SIZE, key=["ch", "auction"],
                                            aggs={"n": lj.count(), "hi": lj.max("price")}))
           .connect("bids", "w").sink_for("w", "out").build())
    _, out = run_bids(dag, table.to_batches(max_chunksize=1_500))
    got = pl.from_arrow(out["out"])
    assert got.columns == ["window_start", "window_end", "ch", "auction", "n", "hi"]
    con = duckdb.connect()
    con.register("t", table)
    want = con.sql(f"""SELECT (ts // {SIZE}) * {SIZE} AS window_start, (ts // {SIZE}) * {SIZE} + {SIZE} AS window_end,
                              ch, auction, count(*) AS n, max(price) AS hi FROM t GROUP BY ALL""").pl()
    cols = got.columns
    assert got.sort(cols[:4], nulls_last=True).equals(want.sort(cols[:4], nulls_last=True), null_equal=True)


def _due_cuts_reference(ts, wm0, delay, grids):
    """numpy: rows where a grid's epoch changes and (when checked) a later row is before the made-due end."""
    before = np.empty(ts.size, np.int64)
    before[0] = wm0
    before[1:] = np.maximum(np.maximum.accumulate(ts[:-1]) - delay, wm0)
    later = np.minimum.accumulate(ts[::-1])[::-1]
    cuts = np.zeros(ts.size, np.bool_)
    for slide, phase, lateness, check in grids:
        epoch = (before - phase) // slide
        if wm0 == np.iinfo(np.int64).min:
            epoch[0] = np.iinfo(np.int64).min
        due = epoch[1:] != epoch[:-1]
        if check:
            due &= later[1:] < phase + epoch[1:] * slide - lateness
        cuts[1:] |= due
    return np.flatnonzero(cuts)


@pytest.mark.parametrize("seed", range(6))
def test_due_cuts_kernel_matches_numpy(seed):
    from laminar_jit.kernels.watermarks import due_cuts

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3_000))
    ts = np.arange(n, dtype=np.int64) * 3 + rng.integers(0, 400, n)
    grids = np.array([(200, int(rng.integers(0, 200)), int(rng.integers(0, 300)), int(rng.integers(0, 2))),
                      (150, 20, 0, 1)], np.int64)[: 1 + seed % 2]
    wm0 = np.iinfo(np.int64).min if seed % 3 == 0 else int(ts[0]) - 500
    delay = int(rng.integers(0, 500))
    want = _due_cuts_reference(ts, wm0, delay, grids)
    assert due_cuts(ts, wm0, delay, grids, n).tolist() == want.tolist()
    # a piece length adds cuts so that no piece is longer
    bounds = [0, *due_cuts(ts, wm0, delay, grids, 100).tolist(), n]
    assert set(want.tolist()) <= set(bounds) and max(np.diff(bounds)) <= 100


def test_32_bit_temporal_keys_come_back_as_their_type():
    # date32 and time32 keys are held as int64 in state; the output rebuilds them (an int64 -> date32 cast fails)
    schema = pa.schema([("ts", pa.int64()), ("day", pa.date32()), ("at", pa.time32("s"))])
    dag = (lj.DagBuilder().source("s", schema, event_time="ts", watermark=lj.Ascending())
           .operator("w", lj.TumblingWindow(10, key=["day", "at"], aggs={"n": lj.count()})).connect("s", "w")
           .sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    days = [dt.date(2024, 1, 1), dt.date(1969, 12, 31), None]
    ex.process_batch("s", pa.table({"ts": [1, 2, 3], "day": pa.array(days, pa.date32()),
                                    "at": pa.array([dt.time(9), dt.time(9), None], pa.time32("s"))}, schema=schema))
    ex.finish()
    out = ex.take_sink_outputs("out")
    assert out.schema.field("day").type == pa.date32() and out.schema.field("at").type == pa.time32("s")
    assert sorted(zip(out.column("day").to_pylist(), out.column("at").to_pylist(), out.column("n").to_pylist()),
                  key=str) == sorted([(days[0], dt.time(9), 1), (days[1], dt.time(9), 1), (None, None, 1)], key=str)


def test_processing_time_windows_fire_on_the_wall_clock():
    """lj.ProcessingTime(): rows are stamped on arrival; a window fires once a later batch arrives after its end."""
    import time

    schema = pa.schema([("k", pa.int64())])
    dag = (lj.DagBuilder().source("s", schema, event_time="p_time", watermark=lj.ProcessingTime())
           .operator("w", lj.TumblingWindow(size=dt.timedelta(milliseconds=200), key="k", aggs={"n": lj.count()}))
           .connect("s", "w").sink_for("w", "out").build())
    assert dag.node("s").op.schema.field("p_time").type == pa.timestamp("ms")
    ex = lj.DagExecutor(dag)
    before = time.time_ns() // 1_000_000
    ex.process_batch("s", pa.table({"k": [1, 1, 2]}))
    assert ex.take_sink_outputs("out").num_rows == 0  # its window is still open
    time.sleep(0.45)
    ex.process_batch("s", pa.table({"k": [1]}))  # the clock has passed the first window's end
    first = ex.take_sink_outputs("out")
    assert sorted(zip(first["k"].to_pylist(), first["n"].to_pylist())) == [(1, 2), (2, 1)]
    start = first["window_start"].cast(pa.int64()).to_numpy()
    assert np.all(start % 200 == 0) and np.all(start >= before - 200) and np.all(start <= before + 200)
    ex.finish()
    assert ex.take_sink_outputs("out")["n"].to_pylist() == [1]
    with pytest.raises(lj.SchemaError, match="engine adds the column 'k'"):
        lj.DagBuilder().source("s", schema, event_time="k", watermark=lj.ProcessingTime())
