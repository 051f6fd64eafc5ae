"""Updating results: GroupAggregate, changelog streams, applying them, checkpoints, state TTL.

Every result is checked against DuckDB over the rows consumed so far, after every batch (the
changelog applied must equal the batch query at each step), with random batch splits including
empty and 1-row batches, skewed keys with nulls, NaN and null values and out-of-order times.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import split_table
from helpers import SCHEMA, Crashing, events

import laminar_jit as lj
from laminar_jit.changelog import RowKind

AGGS = {"n": lj.count(), "c": lj.count("price"), "s": lj.sum("price"), "lo": lj.min("price"),
        "hi": lj.max("price"), "avg": lj.mean("price")}
SQL_AGGS = "count(*) AS n, count(price) AS c, sum(price) AS s, min(price) AS lo, max(price) AS hi, avg(price) AS avg"


def group_dag(schema, key, aggs=AGGS, event_time="ts", watermark=None, **kw):
    return (lj.DagBuilder().source("bids", schema, event_time=event_time, watermark=watermark)
            .operator("g", lj.GroupAggregate(key=key, aggs=aggs, **kw))
            .connect("bids", "g").sink_for("g", "out").build())


def random_cuts(rng, n: int, pieces: int) -> list[int]:
    """Cut positions with repeats (empty batches) and neighbours (1-row batches)."""
    cuts = list(rng.integers(0, n + 1, pieces))
    cuts += [c + 1 for c in cuts[:3]] + [cuts[0]]
    return cuts


def assert_same(got: pa.Table, want: pa.Table, keys) -> None:
    """Equal as sets of rows (sorted by key); floats within 1e-9 relative, NaN equal to NaN, nulls equal."""
    got, want = got.sort_by([(k, "ascending") for k in keys]), want.sort_by([(k, "ascending") for k in keys])
    assert got.num_rows == want.num_rows, (got.num_rows, want.num_rows)
    assert got.column_names == want.column_names
    for name in got.column_names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        for x, y in zip(a, b):
            if isinstance(x, float) and isinstance(y, float):
                assert (x != x and y != y) or x == pytest.approx(y, rel=1e-9, abs=1e-9), (name, x, y)
            else:
                assert x == y, (name, x, y)


def duck(sql: str, **tables) -> pa.Table:
    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)
    return con.sql(sql).to_arrow_table()


def test_group_aggregate_equals_duckdb_after_every_batch():
    rng = np.random.default_rng(1)
    table = events(3_000, seed=1)
    dag = group_dag(SCHEMA, "auction")
    ex = lj.DagExecutor(dag)
    log, seen = [], 0
    for b in split_table(table, random_cuts(rng, table.num_rows, 12)):
        ex.process_batch("bids", b)
        seen += b.num_rows
        log.append(ex.take_sink_outputs("out"))
        prefix = table.slice(0, seen)
        want = duck(f"SELECT auction, {SQL_AGGS} FROM t GROUP BY auction", t=prefix)
        assert_same(lj.apply_changelog(pa.concat_tables(log)), want, ["auction"])
    changes = pa.concat_tables(log)
    ops = changes.column("op").to_numpy()
    assert set(np.unique(ops)) == {RowKind.INSERT, RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER}
    # every -U is followed by the +U of the same key and retracts exactly the row last emitted for it
    before = np.flatnonzero(ops == RowKind.UPDATE_BEFORE)
    assert (ops[before + 1] == RowKind.UPDATE_AFTER).all()
    keys = changes.column("auction").to_pylist()
    assert all(keys[i] == keys[i + 1] for i in before)
    assert changes.schema.field("op").type == pa.int8()
    # one insert per key, ever (no state TTL): the changelog never retracts a key away
    assert (ops == RowKind.INSERT).sum() == len(set(keys))


def test_unchanged_results_emit_nothing():
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.int64())])
    dag = group_dag(schema, "k", aggs={"hi": lj.max("v")})
    ex = lj.DagExecutor(dag)
    ex.process_batch("bids", pa.record_batch({"ts": [1, 2], "k": [1, 2], "v": [5, 5]}, schema=schema))
    first = ex.take_sink_outputs("out")
    ex.process_batch("bids", pa.record_batch({"ts": [3, 4], "k": [1, 2], "v": [3, 9]}, schema=schema))
    second = ex.take_sink_outputs("out")
    assert first.to_pylist() == [{"k": 1, "hi": 5, "op": 0}, {"k": 2, "hi": 5, "op": 0}]
    assert second.to_pylist() == [{"k": 2, "hi": 5, "op": 1}, {"k": 2, "hi": 9, "op": 2}]


def test_count_distinct_equals_duckdb_and_filters_by_nulls():
    """count_distinct over floats (-0.0 is 0.0, NaN one value), ints and a FILTER written as a nullable column."""
    rng = np.random.default_rng(8)
    n = 4_000
    v = rng.integers(0, 40, n).astype(np.float64)
    v[rng.random(n) < 0.05] = np.nan
    v[rng.random(n) < 0.05] = -0.0
    q = rng.integers(0, 300, n)
    table = pa.table({"ts": np.arange(n), "k": np.minimum(rng.zipf(1.4, n), 30),
                      "v": pa.array(v, mask=rng.random(n) < 0.05), "q": q,
                      "q_low": pa.array(q, mask=q >= 100)})  # count(DISTINCT q) FILTER (WHERE q < 100)
    aggs = {"dv": lj.count_distinct("v"), "dq": lj.count_distinct("q"), "dq_low": lj.count_distinct("q_low"),
            "n_low": lj.count("q_low")}
    ex = lj.DagExecutor(group_dag(table.schema, "k", aggs=aggs))
    log = []
    for b in split_table(table, random_cuts(rng, n, 15)):
        ex.process_batch("bids", b)
        log.append(ex.take_sink_outputs("out"))
    want = duck("SELECT k, count(DISTINCT v) AS dv, count(DISTINCT q) AS dq, count(DISTINCT q) FILTER (WHERE q < 100) "
                "AS dq_low, count(*) FILTER (WHERE q < 100) AS n_low FROM t GROUP BY k", t=table)
    assert_same(lj.apply_changelog(pa.concat_tables(log)), want, ["k"])


def word_table(n: int, seed: int, dictionary: bool) -> pa.Table:
    """Strings whose byte order is not their order of first appearance (accents, case, prefixes, empty)."""
    rng = np.random.default_rng(seed)
    words = np.array(["pear", "apple", "ápple", "zebra", "app", "Zoo", "", "banana", "apples", "äpfel"])
    w = pa.array(words[rng.integers(0, len(words), n)], mask=rng.random(n) < 0.1)
    return pa.table({"ts": np.arange(n), "k": pa.array(np.minimum(rng.zipf(1.5, n), 25), mask=rng.random(n) < 0.03),
                     "w": pa.compute.dictionary_encode(w) if dictionary else w})


@pytest.mark.parametrize("dictionary", [False, True])
def test_string_min_max_and_counts_equal_duckdb_after_every_batch(dictionary):
    rng = np.random.default_rng(12)
    table = word_table(3_000, 12, dictionary)
    aggs = {"lo": lj.min("w"), "hi": lj.max("w"), "c": lj.count("w"), "d": lj.count_distinct("w")}
    ex = lj.DagExecutor(group_dag(table.schema, "k", aggs=aggs))
    log, seen = [], 0
    for b in split_table(table, random_cuts(rng, table.num_rows, 12)):
        ex.process_batch("bids", b)
        log.append(ex.take_sink_outputs("out"))
        seen += b.num_rows
        if b.num_rows:
            want = duck("SELECT k, min(w) AS lo, max(w) AS hi, count(w) AS c, count(DISTINCT w) AS d FROM t "
                        "GROUP BY k", t=table.slice(0, seen).cast(word_table(1, 0, False).schema))
            assert_same(lj.apply_changelog(pa.concat_tables(log)), want, ["k"])
    assert lj.apply_changelog(pa.concat_tables(log)).schema.field("hi").type == pa.string()


def test_string_min_max_checkpoint_restore_and_shards(tmp_path):
    table = word_table(2_000, 13, True)
    dag = group_dag(table.schema, "k", aggs={"lo": lj.min("w"), "hi": lj.max("w")})
    batches = split_table(table, [300, 300, 301, 900, 1500])
    want = duck("SELECT k, min(w) AS lo, max(w) AS hi FROM t GROUP BY k",
                t=table.cast(word_table(1, 0, False).schema))
    ex = lj.DagExecutor(dag)
    for b in batches[:3]:
        ex.process_batch("bids", b)
    first = ex.take_sink_outputs("out")
    ex.checkpoint().save(tmp_path / "cp")
    again = lj.DagExecutor(dag, parallelism=2)
    again.restore(lj.Checkpoint.load(tmp_path / "cp"))
    for b in batches[3:]:
        again.process_batch("bids", b)
    again.finish()
    assert_same(lj.apply_changelog(pa.concat_tables([first, again.take_sink_outputs("out")])), want, ["k"])


def test_string_aggregates_that_cannot_be_computed_are_refused():
    table = word_table(10, 0, False)
    with pytest.raises(lj.SchemaError, match=r"aggregate 's' reads the string column 'w'.*count, count_distinct, min"):
        group_dag(table.schema, "k", aggs={"s": lj.sum("w")})


def test_string_min_max_over_a_changelog_find_the_next_value_by_its_bytes():
    # a retracted minimum or maximum is found again among the key's values by their bytes, not their codes:
    # 'b', 'zz', 'a' get codes 0, 1, 2; when 'zz' goes, the greatest left is 'b' (code 0), not 'a' (code 2)
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("w", pa.string()), ("op", pa.int8())])
    ops = [(0, 1, "b", 0), (1, 2, "zz", 0), (2, 3, "a", 0), (3, 2, "zz", 1)]  # +I, +I, +I, -U
    dag = (lj.DagBuilder().source("bids", schema, event_time="ts")
           .operator("g", lj.GroupAggregate(key="k", aggs={"hi": lj.max("w"), "lo": lj.min("w")}))
           .operator("one", lj.Map(lambda k: k * 0, output="g")).connect("bids", "g").connect("g", "one")
           .operator("top", lj.GroupAggregate(key="g", aggs={"hi": lj.max("hi"), "lo": lj.min("lo")}))
           .connect("one", "top").sink_for("top", "out").build())
    ex = lj.DagExecutor(dag)
    for ts, k, w, op in ops:
        ex.process_batch("bids", pa.table({"ts": [ts], "k": [k], "w": [w], "op": pa.array([op], pa.int8())}))
    got = lj.apply_changelog(ex.take_sink_outputs("out"))
    assert got.select(["hi", "lo"]).to_pylist() == [{"hi": "b", "lo": "a"}]


@pytest.mark.parametrize("dictionary", [False, True])
def test_string_min_max_of_a_changelog_equal_duckdb(dictionary):
    # the outer aggregate takes the inner one's changes (its -U rows retract strings): max of the keys' minima
    rng = np.random.default_rng(31)
    table = word_table(4_000, 31, dictionary)
    text = ("CREATE TABLE bids (WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);\n"
            "SELECT MOD(k, 4) AS g, MAX(m) AS hi, MIN(m) AS lo, COUNT(m) AS c FROM "
            "(SELECT k, MIN(w) AS m FROM bids GROUP BY k) GROUP BY MOD(k, 4)")
    ex = lj.DagExecutor(lj.sql(text, sources={"bids": table.schema}))
    for b in split_table(table, random_cuts(rng, table.num_rows, 12)):
        ex.process_batch("bids", b)
    want = duck("SELECT k % 4 AS g, max(m) AS hi, min(m) AS lo, count(m) AS c FROM "
                "(SELECT k, min(w) AS m FROM t GROUP BY k) GROUP BY k % 4",
                t=table.cast(word_table(1, 0, False).schema))
    assert_same(lj.apply_changelog(ex.take_sink_outputs("out")), want, ["g"])


@pytest.mark.parametrize("key", [["ch"], ["auction", "ch"]])
def test_string_and_composite_keys(key):
    rng = np.random.default_rng(2)
    table = events(2_000, seed=2)
    dag = group_dag(SCHEMA, key)
    ex = lj.DagExecutor(dag)
    for b in split_table(table, random_cuts(rng, table.num_rows, 6)):
        ex.process_batch("bids", b)
    ex.finish()
    keys = ", ".join(key)
    want = duck(f"SELECT {keys}, {SQL_AGGS} FROM t GROUP BY {keys}", t=table)
    assert_same(lj.apply_changelog(ex.take_sink_outputs("out")), want, key)


@pytest.mark.parametrize("key", [["a"], ["a", "b"]])
def test_many_keys_each_fold_only_their_own_rows(key):
    """About 95 K keys of one integer column or 150 K of two (skewed, nulls among them), far more than a call's cache of recent
    keys' slots holds, so keys share its lines (pairs with the same ``a`` too); final state against DuckDB."""
    rng = np.random.default_rng(5)
    n = 300_000
    hot = rng.random(n) < 0.5
    a = np.where(hot, rng.zipf(1.3, n) % 1_000, rng.integers(0, 150_000, n))
    b = np.where(hot, rng.integers(0, 6_000, n), rng.integers(0, 150, n))  # a hot ``a`` has thousands of pairs
    table = pa.table({"ts": np.arange(n, dtype=np.int64), "a": pa.array(a, mask=rng.random(n) < 0.01),
                      "b": pa.array(b, mask=rng.random(n) < 0.01), "price": rng.integers(1, 100, n).astype(np.float64)})
    dag = group_dag(table.schema, key, aggs={"n": lj.count(), "s": lj.sum("price")})
    ex = lj.DagExecutor(dag)
    for batch in split_table(table, random_cuts(rng, n, 8)):
        ex.process_batch("bids", batch)
    ex.finish()
    keys = ", ".join(key)
    want = duck(f"SELECT {keys}, count(*) AS n, sum(price) AS s FROM t GROUP BY {keys}", t=table)
    assert want.num_rows > 90_000
    assert_same(lj.apply_changelog(ex.take_sink_outputs("out")), want, key)


# ----------------------------------------------------------------------------- changelog input

CHANGES = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.float64()), ("q", pa.int32()),
                     ("op", pa.int8())])


def random_changelog(n: int, seed: int) -> pa.Table:
    """A consistent changelog: inserts, updates (-U old, +U new) and deletes of rows inserted before.

    Values repeat (so min/max see duplicates and retractions of the current extreme), some are null
    or NaN, keys are skewed.
    """
    rng = np.random.default_rng(seed)
    live: list[tuple] = []
    rows: list[tuple] = []
    for t in range(n):
        r = rng.random()
        if live and r < 0.25:  # delete
            row = live.pop(int(rng.integers(len(live))))
            rows.append(row + (RowKind.DELETE,))
        elif live and r < 0.45:  # update: retract then add a changed row of the same key
            i = int(rng.integers(len(live)))
            old = live[i]
            new = (t, old[1], _value(rng), int(rng.integers(0, 6)))
            live[i] = new
            rows += [old + (RowKind.UPDATE_BEFORE,), new + (RowKind.UPDATE_AFTER,)]
        else:
            k = int(min(rng.zipf(1.5), 12)) if rng.random() > 0.03 else None
            row = (t, k, _value(rng), int(rng.integers(0, 6)))
            live.append(row)
            rows.append(row + (RowKind.INSERT,))
    cols = list(zip(*rows))
    return pa.table([pa.array(c, t.type) for c, t in zip(cols, CHANGES)], schema=CHANGES)


def _value(rng):
    r = rng.random()
    return None if r < 0.05 else float("nan") if r < 0.07 else float(rng.integers(0, 8))


def net_rows(changes: pa.Table) -> pa.Table:
    """Reference: the rows a changelog leaves (plain Python multiset; values compared as repr for NaN)."""
    from collections import Counter

    count: Counter = Counter()
    first: dict = {}
    for row in changes.to_pylist():
        op = row.pop("op")
        key = repr(sorted(row.items()))
        first.setdefault(key, row)
        count[key] += 1 if op in (0, 2) else -1
    return pa.Table.from_pylist([first[k] for k, c in count.items() for _ in range(c)],
                                schema=CHANGES.remove(CHANGES.get_field_index("op")))


def test_changelog_input_is_consumed_with_retractions():
    """Min/max over retractions keep each key's values; a key whose rows all go is deleted (-D)."""
    rng = np.random.default_rng(3)
    table = random_changelog(2_500, seed=3)
    aggs = {"n": lj.count(), "c": lj.count("v"), "s": lj.sum("v"), "lo": lj.min("v"), "hi": lj.max("v"),
            "avg": lj.mean("v"), "qlo": lj.min("q"), "qhi": lj.max("q"), "qs": lj.sum("q"),
            "dv": lj.count_distinct("v"), "dq": lj.count_distinct("q")}
    dag = group_dag(CHANGES, "k", aggs=aggs)
    ex = lj.DagExecutor(dag)
    log, seen = [], 0
    sql = ("SELECT k, count(*) AS n, count(v) AS c, sum(v) AS s, min(v) AS lo, max(v) AS hi, avg(v) AS avg, "
           "min(q) AS qlo, max(q) AS qhi, sum(q)::BIGINT AS qs, count(DISTINCT v) AS dv, count(DISTINCT q) AS dq "
           "FROM t GROUP BY k")
    for b in split_table(table, random_cuts(rng, table.num_rows, 20)):
        ex.process_batch("bids", b)
        seen += b.num_rows
        log.append(ex.take_sink_outputs("out"))
        want = duck(sql, t=net_rows(table.slice(0, seen)))
        assert_same(lj.apply_changelog(pa.concat_tables(log)), want, ["k"])
    ops = pa.concat_tables(log).column("op").to_numpy()
    assert (ops == RowKind.DELETE).any()  # keys were deleted away and came back


def test_group_of_groups_and_filters_pass_the_changelog_through():
    """A changelog through a Filter into a second GroupAggregate (how many auctions have each count)."""
    rng = np.random.default_rng(4)
    table = events(2_000, seed=4)
    dag = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts")
           .operator("per_auction", lj.GroupAggregate(key="auction", aggs={"n": lj.count()}))
           .operator("busy", lj.Filter(lambda n: n >= 3))
           .operator("hist", lj.GroupAggregate(key="n", aggs={"auctions": lj.count()}))
           .connect("bids", "per_auction").connect("per_auction", "busy").connect("busy", "hist")
           .sink_for("hist", "out").build())
    ex = lj.DagExecutor(dag)
    log, seen = [], 0
    for b in split_table(table, random_cuts(rng, table.num_rows, 8)):
        ex.process_batch("bids", b)
        seen += b.num_rows
        log.append(ex.take_sink_outputs("out"))
        want = duck("SELECT n, count(*) AS auctions FROM (SELECT auction, count(*) AS n FROM t GROUP BY auction) "
                    "WHERE n >= 3 GROUP BY n", t=table.slice(0, seen))
        assert_same(lj.apply_changelog(pa.concat_tables(log)), want, ["n"])


# ----------------------------------------------------------------------------- build-time checks

def test_a_changelog_into_an_append_only_operator_is_rejected_naming_both_nodes():
    b = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts")
         .operator("g", lj.GroupAggregate(key="auction", aggs={"n": lj.count()}))
         .operator("keep", lj.Filter(lambda n: n > 1))
         .operator("dedup", lj.Dedup(key="auction", within=10))
         .connect("bids", "g").connect("g", "keep").connect("keep", "dedup").sink_for("dedup", "out"))
    with pytest.raises(lj.SchemaError, match=r"'dedup'.*changelog.*'g'"):
        b.build()
    src = (lj.DagBuilder().source("cdc", CHANGES, event_time="ts")
           .operator("w", lj.TumblingWindow(size=10, key="k", aggs={"n": lj.count()}))
           .connect("cdc", "w").sink_for("w", "out"))
    with pytest.raises(lj.SchemaError, match=r"'w'.*changelog.*'cdc'"):
        src.build()


def test_dropping_the_op_column_of_a_changelog_is_rejected():
    b = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts")
         .operator("g", lj.GroupAggregate(key="auction", aggs={"n": lj.count()}))
         .operator("p", lj.Project(["auction", "n"]))
         .connect("bids", "g").connect("g", "p").sink_for("p", "out"))
    with pytest.raises(lj.SchemaError, match=r"'p'.*'op'"):
        b.build()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="cannot be updated"):
        lj.GroupAggregate(key="auction", aggs={"f": lj.first("price")})
    with pytest.raises(ValueError, match="key="):
        lj.GroupAggregate(key=None, aggs={"n": lj.count()})
    with pytest.raises(lj.SchemaError, match="state_ttl.*event-time"):
        group_dag(SCHEMA, "auction", event_time=None, state_ttl=10)
    with pytest.raises(lj.SchemaError, match="'nope'"):
        group_dag(SCHEMA, "auction", aggs={"s": lj.sum("nope")})
    with pytest.raises(lj.SchemaError, match="clashes"):
        group_dag(SCHEMA, "auction", aggs={"op": lj.count()})


# ----------------------------------------------------------------------------- sinks, checkpoints, TTL

def test_memory_sink_applies_the_changelog_and_parquet_keeps_the_op_column(tmp_path):
    table = events(1_500, seed=5)
    dag = group_dag(SCHEMA, "auction")
    mem, pq_dir = lj.io.MemorySink(), tmp_path / "out"
    lj.run(dag, sources={"bids": lj.io.MemorySource(split_table(table, [300, 700, 701]))},
           sinks={"out": mem})
    want = duck(f"SELECT auction, {SQL_AGGS} FROM t GROUP BY auction", t=table)
    assert_same(mem.table(), want, ["auction"])
    assert "op" in mem.changelog().column_names and "op" not in mem.table().column_names
    pq = lj.io.ParquetSink(pq_dir)
    lj.run(dag, sources={"bids": lj.io.MemorySource(split_table(table, [300, 700, 701]))}, sinks={"out": pq})
    written = pq.read()
    assert written.schema.field("op").type == pa.int8()
    assert_same(lj.apply_changelog(written), want, ["auction"])


@pytest.mark.parametrize("source", ["bids", "cdc"])
def test_checkpoint_and_restore_continue_identically(tmp_path, source):
    rng = np.random.default_rng(6)
    if source == "bids":
        table, dag = events(2_000, seed=6), group_dag(SCHEMA, "auction")
    else:
        table = random_changelog(2_000, seed=6)
        dag = group_dag(CHANGES, "k", aggs={"n": lj.count(), "lo": lj.min("v"), "hi": lj.max("q"),
                                            "d": lj.count_distinct("v")})
    batches = split_table(table, random_cuts(rng, table.num_rows, 10))
    clean = lj.DagExecutor(dag)
    for b in batches:
        clean.process_batch("bids", b)
    clean.finish()
    want = clean.take_sink_outputs("out")
    for at in (3, 9):
        ex = lj.DagExecutor(dag)
        for b in batches[:at]:
            ex.process_batch("bids", b)
        first = ex.take_sink_outputs("out")
        ex.checkpoint().save(tmp_path / f"cp{at}")
        again = lj.DagExecutor(dag)
        again.restore(lj.Checkpoint.load(tmp_path / f"cp{at}"))
        for b in batches[at:]:
            again.process_batch("bids", b)
        again.finish()
        got = pa.concat_tables([first, again.take_sink_outputs("out")])
        # the applied result is the same; so is every change after the first call following the restore
        assert_same(lj.apply_changelog(got), lj.apply_changelog(want), [dag.node("g").op.keys[0]])


def test_a_corrupt_checkpoint_is_refused_and_changes_nothing(tmp_path):
    table = random_changelog(500, seed=7)
    dag = group_dag(CHANGES, "k", aggs={"lo": lj.min("v")})
    ex = lj.DagExecutor(dag)
    ex.process_batch("bids", table)
    cp = ex.checkpoint()
    state = cp.states["g"]
    state["mhead"] = state["mhead"] + 10_000  # points outside the value table
    fresh = lj.DagExecutor(dag)
    with pytest.raises(lj.CheckpointError):
        fresh.restore(cp)
    fresh.process_batch("bids", table)
    assert_same(lj.apply_changelog(fresh.take_sink_outputs("out")),
                lj.apply_changelog(ex.take_sink_outputs("out")), ["k"])


def test_state_ttl_forgets_idle_keys_in_event_time():
    """A key idle for longer than the TTL (by the watermark) starts again with +I; its state is freed."""
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.int64())])
    dag = group_dag(schema, "k", aggs={"n": lj.count(), "s": lj.sum("v")}, state_ttl=100,
                    watermark=lj.BoundedOutOfOrderness(max_delay=0))
    ex = lj.DagExecutor(dag)

    def feed(ts, k, v):
        ex.process_batch("bids", pa.record_batch({"ts": ts, "k": k, "v": v}, schema=schema))
        return [(r["k"], r["n"], r["s"], r["op"]) for r in ex.take_sink_outputs("out").to_pylist()]

    assert feed([0, 50], [1, 1], [1, 2]) == [(1, 2, 3, 0)]
    assert feed([120], [2], [5]) == [(2, 1, 5, 0)]  # watermark 120: key 1 last seen at 50, not expired
    assert feed([149], [1], [4]) == [(1, 2, 3, 1), (1, 3, 7, 2)]  # 50 + 100 > 149: still alive
    # the watermark passes 149 + 100: key 1 is forgotten, so its next row inserts afresh (no retraction)
    # (a call's changes come in slot order: key 1 was seen first)
    assert feed([260, 261], [2, 1], [1, 10]) == [(1, 1, 10, 0), (2, 1, 5, 1), (2, 2, 6, 2)]
    state = ex.state.operator_states[dag.node("g").id]
    assert len(state) == 2
    feed([1_000], [3], [0])  # everything but key 3 is idle: purged from the table
    assert len(state) == 1


def test_a_rejected_batch_changes_nothing():
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.float64())])

    @lj.kernel
    def checked(v):
        if v < 0:
            raise ValueError("negative")
        return v

    dag = (lj.DagBuilder().source("bids", schema, event_time="ts")
           .operator("m", lj.Map(checked, output="w"))
           .operator("g", lj.GroupAggregate(key="k", aggs={"s": lj.sum("w"), "hi": lj.max("w")}))
           .connect("bids", "m").connect("m", "g").sink_for("g", "out").build())
    good = pa.record_batch({"ts": [1, 2, 3], "k": [1, 2, 1], "v": [1.0, 2.0, 3.0]}, schema=schema)
    bad = pa.record_batch({"ts": [4, 5], "k": [1, 3], "v": [7.0, -1.0]}, schema=schema)
    ex, clean = lj.DagExecutor(dag), lj.DagExecutor(dag)
    for e in (ex, clean):
        e.process_batch("bids", good)
    with pytest.raises(lj.KernelError):
        ex.process_batch("bids", bad)
    for e in (ex, clean):
        e.process_batch("bids", good)
    assert ex.take_sink_outputs("out").to_pylist() == clean.take_sink_outputs("out").to_pylist()


def test_apply_changelog():
    t = pa.table({"k": pa.array([1, 1, 2, 2, 1, None, None, 3], pa.int64()),
                  "v": pa.array([1.0, 1.0, float("nan"), float("nan"), 1.0, None, None, 4.0]),
                  "op": pa.array([0, 0, 0, 3, 1, 0, 2, 3], pa.int8())})
    got = lj.apply_changelog(t).to_pylist()
    # (1, 1.0) twice then one retracted; (2, NaN) deleted; (None, None) twice; -D of an absent row ignored
    assert got == [{"k": 1, "v": 1.0}, {"k": None, "v": None}, {"k": None, "v": None}]
    plain = pa.table({"k": [1, 2]})
    assert lj.apply_changelog(plain) is plain
    with pytest.raises(ValueError, match="RowKind"):
        lj.apply_changelog(pa.table({"k": [1], "op": pa.array([7], pa.int8())}))
    assert [RowKind(i).short for i in range(4)] == ["+I", "-U", "+U", "-D"]


# ----------------------------------------------------------------------------- unbounded TopN, Dedup(keep="last")

def with_arrival(table: pa.Table) -> pa.Table:
    return table.append_column("arrival", pa.array(np.arange(table.num_rows, dtype=np.int64)))


def ranked_dag(op, schema=SCHEMA):
    return (lj.DagBuilder().source("bids", schema, event_time="ts")
            .operator("r", op).connect("bids", "r").sink_for("r", "out").build())


RANKED = {
    "top3": (lambda: lj.TopN(3, by="price", key="auction", window=None),
             "SELECT row_number() OVER w AS rank, ts, auction, price, ch FROM t "
             "WHERE price IS NOT NULL AND NOT isnan(price) "
             "WINDOW w AS (PARTITION BY auction ORDER BY price DESC, arrival) QUALIFY rank <= 3",
             ["auction", "rank"]),
    "bottom2_composite": (lambda: lj.TopN(2, by="ts", key=["ch", "auction"], window=None, descending=False),
                          "SELECT row_number() OVER w AS rank, ts, auction, price, ch FROM t "
                          "WINDOW w AS (PARTITION BY ch, auction ORDER BY ts, arrival) QUALIFY rank <= 2",
                          ["ch", "auction", "rank"]),
    "top1_global": (lambda: lj.TopN(1, by="price", window=None),
                    "SELECT row_number() OVER w AS rank, ts, auction, price, ch FROM t "
                    "WHERE price IS NOT NULL AND NOT isnan(price) "
                    "WINDOW w AS (ORDER BY price DESC, arrival) QUALIFY rank <= 1", ["rank"]),
    # ORDER BY two columns: many rows tie in auction, then price (nulls last, NaN the largest) decides
    "top2_two_columns": (lambda: lj.TopN(2, by=["auction", "price"], key="ch", window=None, descending=[True, False]),
                         "SELECT row_number() OVER w AS rank, ts, auction, price, ch FROM t "
                         "WINDOW w AS (PARTITION BY ch ORDER BY auction DESC, price ASC NULLS LAST, arrival) "
                         "QUALIFY rank <= 2", ["ch", "rank"]),
    "last": (lambda: lj.Dedup(key="auction", keep="last"),
             "SELECT ts, auction, price, ch FROM t "
             "QUALIFY row_number() OVER (PARTITION BY auction ORDER BY ts DESC, arrival DESC) = 1", ["auction"]),
}


@pytest.mark.parametrize("case", list(RANKED))
def test_unbounded_ranking_equals_duckdb_after_every_batch(case):
    make, sql, keys = RANKED[case]
    rng = np.random.default_rng(8)
    table = events(2_500, seed=8)
    ex = lj.DagExecutor(ranked_dag(make()))
    log, seen = [], 0
    for b in split_table(table, random_cuts(rng, table.num_rows, 14)):
        ex.process_batch("bids", b)
        seen += b.num_rows
        log.append(ex.take_sink_outputs("out"))
        want = duck(sql, t=with_arrival(table.slice(0, seen)))
        assert_same(lj.apply_changelog(pa.concat_tables(log)), want, keys)
    changes = pa.concat_tables(log)
    ops = changes.column("op").to_numpy()
    assert (ops == RowKind.UPDATE_BEFORE).sum() == (ops == RowKind.UPDATE_AFTER).sum() > 0
    assert not (ops == RowKind.DELETE).any()


def test_ranked_rows_keep_every_column_type():
    """Strings, nulls, booleans, small ints, float32 and timestamps come back as they went in."""
    schema = pa.schema([("ts", pa.timestamp("ms")), ("k", pa.string()), ("flag", pa.bool_()),
                        ("q", pa.int16()), ("f", pa.float32()), ("note", pa.large_string())])
    rows = pa.table({"ts": pa.array([5, 3, 9, 1], pa.timestamp("ms")), "k": ["a", "b", "a", "b"],
                     "flag": [True, None, False, True], "q": pa.array([1, -2, None, 4], pa.int16()),
                     "f": pa.array([1.5, None, -2.25, 0.0], pa.float32()),
                     "note": pa.array(["x", None, "zz", "y"], pa.large_string())}, schema=schema)
    ex = lj.DagExecutor(ranked_dag(lj.Dedup(key="k", keep="last"), schema))
    ex.process_batch("bids", rows)
    got = lj.apply_changelog(ex.take_sink_outputs("out"))
    assert got.schema == schema
    assert sorted(got.to_pylist(), key=lambda r: r["k"]) == [rows.slice(2, 1).to_pylist()[0],
                                                            rows.slice(1, 1).to_pylist()[0]]


def test_minus_zero_ties_with_zero_in_a_ranking():
    """-0.0 and 0.0 are one value to ORDER BY (SQL, DuckDB): a tie, which the earlier row wins."""
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.float64()), ("id", pa.int64())])
    rows = pa.table({"ts": [1, 2, 3, 4], "k": [1, 1, 2, 2], "v": [-0.0, 0.0, 0.0, -0.0], "id": [10, 11, 12, 13]},
                    schema=schema)
    for descending in (True, False):
        ex = lj.DagExecutor(ranked_dag(lj.TopN(1, by="v", key="k", window=None, descending=descending), schema))
        ex.process_batch("bids", rows)
        got = lj.apply_changelog(ex.take_sink_outputs("out"))
        assert sorted(r["id"] for r in got.to_pylist()) == [10, 12], descending


def test_unbounded_ranking_checkpoints_and_rejects_misuse(tmp_path):
    rng = np.random.default_rng(9)
    table = events(2_000, seed=9)
    dag = ranked_dag(lj.TopN(2, by="price", key="auction", window=None))
    batches = split_table(table, random_cuts(rng, table.num_rows, 8))
    clean = lj.DagExecutor(dag)
    for b in batches:
        clean.process_batch("bids", b)
    want = lj.apply_changelog(clean.take_sink_outputs("out"))
    ex = lj.DagExecutor(dag)
    for b in batches[:4]:
        ex.process_batch("bids", b)
    first = ex.take_sink_outputs("out")
    ex.checkpoint().save(tmp_path / "cp")
    again = lj.DagExecutor(dag)
    again.restore(lj.Checkpoint.load(tmp_path / "cp"))
    for b in batches[4:]:
        again.process_batch("bids", b)
    assert_same(lj.apply_changelog(pa.concat_tables([first, again.take_sink_outputs("out")])), want,
                ["auction", "rank"])
    with pytest.raises(TypeError, match="with window=None, two"):
        lj.TopN(1, by=["price", "ts"], window=10)  # a windowed TopN ranks by one column
    with pytest.raises(ValueError, match="one bool per column"):
        lj.TopN(1, by=["price", "ts"], window=None, descending=[True])
    with pytest.raises(ValueError, match="within="):
        lj.Dedup(key="auction")
    with pytest.raises(ValueError, match="leave them out"):
        lj.Dedup(key="auction", within=10, keep="last")
    with pytest.raises(ValueError, match="leave them out"):
        lj.TopN(2, by="price", key="auction", window=None, allowed_lateness=5)
    b = (lj.DagBuilder().source("bids", SCHEMA, event_time="ts")
         .operator("last", lj.Dedup(key="auction", keep="last"))
         .operator("w", lj.TumblingWindow(size=10, key="auction", aggs={"n": lj.count()}))
         .connect("bids", "last").connect("last", "w").sink_for("w", "out"))
    with pytest.raises(lj.SchemaError, match=r"'w'.*changelog.*'last'"):
        b.build()


# ----------------------------------------------------------------------------- Parquet: append and upsert

def test_parquet_upsert_keeps_the_current_table_exactly_once_across_a_crash(tmp_path):
    table = random_changelog(3_000, seed=10)
    batches = split_table(table, list(range(100, 3_000, 100)))
    dag = group_dag(CHANGES, "k", aggs={"n": lj.count(), "s": lj.sum("v"), "hi": lj.max("q")})
    want = duck("SELECT k, count(*) AS n, sum(v) AS s, max(q) AS hi FROM t GROUP BY k", t=net_rows(table))
    for crash_after in (None, 7, 19):
        out = tmp_path / f"up{crash_after}"
        source = Crashing(batches, after=crash_after)
        opts = dict(checkpoint_dir=out / "chk", checkpoint_every=3, progress=False)
        if crash_after is not None:
            with pytest.raises(RuntimeError, match="crash"):
                lj.run(dag, {"bids": source}, {"out": lj.io.ParquetSink(out / "upsert", mode="upsert", key="k")},
                       **opts)
            midway = lj.io.ParquetSink(out / "upsert", mode="upsert", key="k").read()
            assert midway.num_rows and "op" not in midway.column_names  # one whole committed version
        # (a new sink object, as after a restart)
        lj.run(dag, {"bids": source}, {"out": lj.io.ParquetSink(out / "upsert", mode="upsert", key="k")}, **opts)
        upserted = lj.io.ParquetSink(out / "upsert", mode="upsert", key="k").read()
        assert_same(upserted, want, ["k"])
        assert len({p.name[5:13] for p in (out / "upsert").glob("part-*")}) == 1  # superseded versions removed
    # append mode keeps the changelog, op included; applied it is the same table
    appended = lj.io.ParquetSink(tmp_path / "append_only")
    lj.run(dag, {"bids": lj.io.MemorySource(batches)}, {"out": appended}, progress=False)
    assert appended.read().schema.field("op").type == pa.int8()
    assert_same(lj.apply_changelog(appended.read()), want, ["k"])


def test_upsert_applies_the_last_change_per_key():
    from laminar_jit.io.sinks import upsert

    current = pa.table({"k": [1, 2, 3], "v": [1.0, 2.0, 3.0]})
    changes = pa.table({"k": [1, 1, 2, 4, 4, None], "v": [1.0, 5.0, 2.0, 7.0, 7.0, 9.0],
                        "op": pa.array([1, 2, 3, 0, 3, 0], pa.int8())})
    got = upsert(current, changes, ("k",))
    assert sorted(got.to_pylist(), key=lambda r: (r["k"] is None, r["k"])) == [
        {"k": 1, "v": 5.0}, {"k": 3, "v": 3.0}, {"k": None, "v": 9.0}]
    with pytest.raises(ValueError, match="needs key="):
        lj.io.ParquetSink("x", mode="upsert")


def test_upsert_recovers_from_a_commit_cut_short(tmp_path):
    """A crash after an upsert commit moved its files in but before it removed the older version."""
    schema = pa.schema([("k", pa.int64()), ("v", pa.int64()), ("op", pa.int8())])
    sink = lj.io.ParquetSink(tmp_path, mode="upsert", key="k")
    sink.open(schema, None)
    sink.write(pa.table({"k": [1, 2], "v": [10, 20], "op": pa.array([0, 0], pa.int8())}), 1)
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(pa.table({"k": [1, 1, 2], "v": [10, 11, 20], "op": pa.array([1, 2, 3], pa.int8())}), 2)
    sink.pre_commit(2)
    for p in (tmp_path / "_staging" / "epoch-00000002").iterdir():  # commit(2), cut short
        p.rename(tmp_path / p.name)
    assert {p.name[5:13] for p in tmp_path.glob("part-*")} == {"00000001", "00000002"}
    again = lj.io.ParquetSink(tmp_path, mode="upsert", key="k")
    assert again.read().to_pylist() == [{"k": 1, "v": 11}]  # the newest version, even before recovery
    again.open(schema, 2)
    assert {p.name[5:13] for p in tmp_path.glob("part-*")} == {"00000002"}
    assert again.read().to_pylist() == [{"k": 1, "v": 11}]
    older = lj.io.ParquetSink(tmp_path / "b", mode="upsert", key="k")
    older.open(schema, None)
    older.write(pa.table({"k": [5], "v": [50], "op": pa.array([0], pa.int8())}), 1)
    older.pre_commit(1)
    older.commit(1)
    older.write(pa.table({"k": [5], "v": [50], "op": pa.array([3], pa.int8())}), 2)
    older.pre_commit(2)  # the checkpoint of epoch 2 was never saved: a restart from 1 drops it
    restarted = lj.io.ParquetSink(tmp_path / "b", mode="upsert", key="k")
    restarted.open(schema, 1)
    assert restarted.read().to_pylist() == [{"k": 5, "v": 50}]
    restarted.write(pa.table({"k": [6], "v": [60], "op": pa.array([0], pa.int8())}), 2)
    restarted.pre_commit(2)
    restarted.commit(2)
    assert sorted(r["k"] for r in restarted.read().to_pylist()) == [5, 6]


def test_ranked_state_ttl_forgets_idle_keys():
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.int64())])
    dag = (lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=0))
           .operator("last", lj.Dedup(key="k", keep="last", state_ttl=100))
           .connect("bids", "last").sink_for("last", "out").build())
    ex = lj.DagExecutor(dag)

    def feed(ts, k):
        ex.process_batch("bids", pa.record_batch({"ts": ts, "k": k, "v": [0] * len(ts)}, schema=schema))
        return [(r["k"], r["ts"], r["op"]) for r in ex.take_sink_outputs("out").to_pylist()]

    assert feed([0, 50], [1, 1]) == [(1, 50, 0)]
    assert feed([120], [2]) == [(2, 120, 0)]
    assert feed([149], [1]) == [(1, 50, 1), (1, 149, 2)]  # 50 + 100 > 149: still alive
    # key 1 (latest 149) is 100 behind the watermark (260) when its next row comes: forgotten, so +I
    assert feed([260, 261], [2, 1]) == [(1, 261, 0), (2, 120, 1), (2, 260, 2)]
    state = ex.state.operator_states[dag.node("last").id]
    assert len(state) == 2
    feed([1_000], [3])  # keys 1 and 2 idle: purged
    assert len(state) == 1
    with pytest.raises(ValueError, match="state_ttl"):
        lj.Dedup(key="k", within=10, state_ttl=5)
    with pytest.raises(ValueError, match="state_ttl"):
        lj.TopN(2, by="v", window=10, state_ttl=5)


def test_a_changelog_source_with_an_unknown_op_code_is_rejected_and_changes_nothing():
    table = random_changelog(300, seed=11)
    dag = group_dag(CHANGES, "k", aggs={"n": lj.count(), "s": lj.sum("v"), "hi": lj.max("q")})
    ex, clean = lj.DagExecutor(dag), lj.DagExecutor(dag)
    bad = table.slice(0, 50).set_column(4, "op", pa.array([0] * 49 + [7], pa.int8()))
    with pytest.raises(lj.DataError, match="'op' holds 7, which is no RowKind"):
        ex.process_batch("bids", bad)
    for e in (ex, clean):
        e.process_batch("bids", table)
    assert repr(ex.take_sink_outputs("out").to_pylist()) == repr(clean.take_sink_outputs("out").to_pylist())
