"""``lj.TopN`` against DuckDB's ``row_number()`` (and ``rank()`` with ``ties=True``) over the same out-of-order events."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import laminar_jit as lj
from laminar_jit.executor import faults
from conftest import checkpointed_run, split_table
from helpers import SCHEMA, events, run_bids, watermark_before

WINDOW = 1_000


def topn_dag(n: int, key=("auction",), descending=True, delay: int = 300, lateness: int = 0, late="drop",
             offset: int = 0, ties: bool = False):
    kw = dict(late="side_output", late_sink="late") if late == "side_output" else {}
    if ties:
        kw["ties"] = True
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


def test_many_keys_and_windows_keep_their_rows_apart():
    """1,000 keys (scattered: dense ones spread evenly over the lines) over 300 windows, one after the other
    (most keys in most windows), so (key, window) entries share lines of a call's cache of recent slots; and two
    windows of one key that share a line, both open in one call."""
    rng = np.random.default_rng(8)
    n = 300_000
    table = pa.table({"ts": np.arange(n, dtype=np.int64) + rng.integers(0, 50, n),
                      "auction": rng.integers(0, 10**12, 1_000)[rng.integers(0, 1_000, n)], "price": rng.random(n),
                      "ch": pa.array(["c"] * n)}, schema=SCHEMA)
    _, out = run_bids(topn_dag(2), table.to_batches(max_chunksize=65_536))
    want = reference(table, 2)
    assert want.num_rows > 250_000
    same(out["out"], want)

    from laminar_jit.kernels.hashtable import cache_line
    line = cache_line(np.int64(7), np.int64(0))
    far = next(w for w in range(WINDOW, 10**9, WINDOW) if cache_line(np.int64(7), np.int64(w)) == line)
    pair = pa.table({"ts": [10, far + 10], "auction": [7, 7], "price": [1.0, 2.0], "ch": ["c", "c"]}, schema=SCHEMA)
    _, out = run_bids(topn_dag(2, delay=2 * far), [pair.to_batches()[0]])
    same(out["out"], reference(pair, 2, delay=2 * far))
    assert out["out"].column("window_start").to_pylist() == [0, far]


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


# ----------------------------------------------------------------------------- ties=True: SQL rank()

def tied_events(n_rows: int, seed: int, disorder: int = 600) -> pa.Table:
    """:func:`events` (zipf-skewed auctions, some null; out of order) with prices of four small integers:
    many ties. Null and NaN prices stay where they were."""
    table = events(n_rows, seed=seed, disorder=disorder)
    old = table.column("price").combine_chunks()
    nan = np.isnan(old.fill_null(0.0).to_numpy(zero_copy_only=False))
    rng = np.random.default_rng(seed + 1)
    price = np.where(nan, np.nan, rng.integers(0, 4, n_rows).astype(np.float64))
    return table.set_column(2, "price", pa.array(price, mask=old.is_null().to_numpy(zero_copy_only=False)))


def rank_reference(table: pa.Table, n: int, key=("auction",), descending=True, delay: int = 300,
                   rank: str = "rank") -> pa.Table:
    """DuckDB: rows not late on arrival with a non-null, non-NaN price whose ``rank()`` (or ``row_number()``)
    is at most ``n``, in emission order: window end, key (nulls first), rank, arrival."""
    ts = table.column("ts").to_numpy()
    t = table.append_column("arrival", pa.array(np.arange(table.num_rows))) \
             .append_column("wm", pa.array(watermark_before(ts, delay)))
    con = duckdb.connect()
    con.register("t", t)
    partition = ", ".join([*key, "window_start"])
    order = "DESC" if descending else "ASC"
    by_key = "".join(f"{k} NULLS FIRST, " for k in key)
    return con.sql(f"""
        WITH w AS (SELECT *, floor(ts / {WINDOW})::BIGINT * {WINDOW} AS window_start FROM t),
        r AS (SELECT *, {rank}() OVER (PARTITION BY {partition} ORDER BY price {order}) AS rank
              FROM w WHERE window_start + {WINDOW} > wm AND price IS NOT NULL AND NOT isnan(price))
        SELECT window_start, window_start + {WINDOW} AS window_end, rank, {', '.join(SCHEMA.names)}
        FROM r WHERE rank <= {n} ORDER BY window_end, {by_key}rank, arrival""").to_arrow_table()


def same_order(got: pa.Table, want: pa.Table) -> None:
    """Equal rows in the same order (integer keys only: string keys are emitted in first-seen order)."""
    assert pl.from_arrow(got).equals(pl.from_arrow(want.cast(got.schema)), null_equal=True)


@pytest.mark.parametrize("n, key, descending", [(1, ("auction",), True), (3, ("auction",), False),
                                                (3, (), True), (1, ("ch", "auction"), False)])
def test_ties_match_duckdb_rank(n, key, descending):
    table = tied_events(20_000, seed=4)
    ex, out = run_bids(topn_dag(n, key, descending, late="side_output", ties=True),
                       table.to_batches(max_chunksize=3_000))
    want = rank_reference(table, n, key, descending)
    # the test would fail on row numbers: many windows keep more than n rows, and ranks repeat
    assert want.num_rows > rank_reference(table, n, key, descending, rank="row_number").num_rows + 100
    if "ch" in key:  # equal rows (sorted by every column: ranks repeat)
        got, want = pl.from_arrow(out["out"]), pl.from_arrow(want.cast(out["out"].schema))
        assert got.sort(got.columns, nulls_last=False).equals(want.sort(want.columns, nulls_last=False),
                                                             null_equal=True)
        assert got["window_end"].is_sorted()
    else:
        same_order(out["out"], want)
    assert out["late"].num_rows == ex.metrics.late_events > 0


#: (n, descending) of the split-invariance test (each compiles a plan; both shared with the test above).
TIES_CONFIGS = [(1, True), (3, False)]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_rows=st.integers(0, 2_000), cuts=st.lists(st.integers(0, 2_000), max_size=8),
       config=st.sampled_from(TIES_CONFIGS))
def test_ties_split_invariance(seed, n_rows, cuts, config):
    n, descending = config
    table = tied_events(n_rows, seed=seed, disorder=800)
    dag = topn_dag(n, descending=descending, late="side_output", ties=True)
    _, out = run_bids(dag, split_table(table, cuts + [1, 1, 2]))  # with empty and 1-row batches
    same_order(out["out"], rank_reference(table, n, descending=descending))


def test_ties_state_is_checkpointed(tmp_path):
    table = tied_events(20_000, seed=9)
    dag = topn_dag(1, late="side_output", ties=True)  # compiled above
    batches = table.to_batches(max_chunksize=3_000)
    _, whole = run_bids(dag, batches)
    for at in (1, 4):
        ex = lj.DagExecutor(dag)
        for b in batches[:at]:
            ex.process_batch("bids", b)
        state = ex.state.operator_states[dag.node("top").id]
        assert len(state.ties) > 0  # the checkpoint holds tie rows
        arrays = state.snapshot()
        arrays["tie.slot"] = arrays["tie.slot"] + state.table.high_water  # rows of slots that are not open
        with pytest.raises(ValueError, match="tie.slot names slots"):
            dag.node("top").op.new_state(dag.node("top").bound).load_snapshot(arrays)
        both = checkpointed_run(dag, batches, at, tmp_path / f"cp{at}")
        assert pl.from_arrow(both).equals(pl.from_arrow(whole["out"]), null_equal=True)


def test_ties_checkpoint_restores_at_another_parallelism(tmp_path):
    # key shards: a checkpoint merges the shards' tie rows into one state, a restore splits them by key
    table = tied_events(20_000, seed=12)
    dag = topn_dag(1, late="side_output", ties=True)
    batches = table.to_batches(max_chunksize=2_000)
    _, whole = run_bids(dag, batches)
    first = lj.DagExecutor(dag, parallelism=2)
    assert first.shards == 2, first.shards_note
    for b in batches[:5]:
        first.process_batch("bids", b)
    head = first.take_sink_outputs("out")
    first.checkpoint().save(tmp_path / "cp")
    for parallelism in (1, 3):
        again = lj.DagExecutor(dag, parallelism=parallelism)
        again.restore(lj.Checkpoint.load(tmp_path / "cp"))
        for b in batches[5:]:
            again.process_batch("bids", b)
        again.finish()
        got = pa.concat_tables([head, again.take_sink_outputs("out")])
        assert pl.from_arrow(got).equals(pl.from_arrow(whole["out"]), null_equal=True), parallelism


@lj.kernel
def checked_price(price):
    if price < 0:
        raise ValueError("negative price")
    return True


def test_ties_a_rejected_batch_has_no_effect(monkeypatch):
    # a kernel that raises makes the executor take the call back from a copy of the state (renewed every
    # 1,000 rows here, so the copy holds tie rows) and the calls since: tie rows included
    monkeypatch.setattr(faults, "MIN_LOG_ROWS", 1_000)
    dag = (lj.DagBuilder()
           .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(300))
           .operator("checked", lj.Filter(checked_price))
           .operator("top", lj.TopN(1, by="price", key="auction", window=WINDOW, ties=True))
           .connect("bids", "checked").connect("checked", "top").sink_for("top", "out").build())
    table = tied_events(12_000, seed=5)
    batches = table.to_batches(max_chunksize=1_500)
    bad = tied_events(500, seed=6)
    price = bad.column("price").to_numpy(zero_copy_only=False).copy()
    price[250] = -1.0
    bad = bad.set_column(2, "price", pa.array(price)).to_batches()[0]
    clean, hit = lj.DagExecutor(dag), lj.DagExecutor(dag)
    for i, b in enumerate(batches):
        if i == 4:
            assert len(hit.state.operator_states[dag.node("top").id].ties) > 0
            with pytest.raises(lj.KernelError, match="negative price"):
                hit.process_batch("bids", bad)
        clean.process_batch("bids", b)
        hit.process_batch("bids", b)
    clean.finish()
    hit.finish()
    assert hit.take_sink_outputs("out").equals(clean.take_sink_outputs("out"))


def test_ties_feed_a_keyed_window_downstream():
    """A window keeping ties emits any number of rows: the state downstream must make room for all of them.

    100,000 rows of one price in 500 auctions all tie for first place and
    fire in one call triggered by a single row, creating 100,000 new
    (auction, ts) keys downstream at once.
    """
    rng = np.random.default_rng(0)
    m = 100_000
    table = pa.table({"ts": np.sort(rng.integers(0, WINDOW, m)), "auction": rng.integers(0, 500, m),
                      "price": np.ones(m), "ch": ["x"] * m}, schema=SCHEMA)
    dag = (lj.DagBuilder()
           .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("top", lj.TopN(1, by="price", key="auction", window=WINDOW, ties=True))
           .operator("per_row", lj.TumblingWindow(size=WINDOW, key=["auction", "ts"], aggs={"n": lj.count()}))
           .connect("bids", "top").connect("top", "per_row").sink_for("per_row", "out").build())
    late = pa.table({"ts": [10 * WINDOW], "auction": [0], "price": [1.0], "ch": ["x"]}, schema=SCHEMA)
    _, out = run_bids(dag, table.to_batches(max_chunksize=1_000) + late.to_batches())
    got = pl.from_arrow(out["out"])
    want = pl.from_arrow(table).group_by(["auction", "ts"]).len()
    assert got.height == want.height + 1 > 60_000
    assert got["n"].sum() == m + 1


def test_ties_configuration():
    with pytest.raises(ValueError, match="only available for a windowed TopN"):
        lj.TopN(3, by="price", window=None, ties=True)
    with pytest.raises(TypeError, match="ties must be True or False"):
        lj.TopN(3, by="price", window=10, ties="yes")
    plain, tied = lj.TopN(3, by="price", window=10), lj.TopN(3, by="price", window=10, ties=True)
    assert plain.fingerprint() != tied.fingerprint()
    assert lj.TopN(3, by="price", window=10, ties=False).fingerprint() == plain.fingerprint()
