"""Dictionary-encoded strings (Polars ``Categorical``/``Enum``, Arrow ``dictionary<…, string>``).

Every keyed operator, the joins and plain pass-through run on the same rows
three or four ways — plain strings, dictionary batches each carrying a
dictionary of its own (shuffled, with unused, repeated and null entries),
the same batches under a source schema declared ``dictionary<int32,
string>``, and Polars DataFrames with a categorical column handed straight to
``process_batch`` — and must give identical output. The windows are also
checked against DuckDB.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj
from laminar_jit.state.dictionary import StringDictionary

from conftest import split_table

DICT = pa.dictionary(pa.int32(), pa.string())
VALUES = ["web", "app", "api", "", "ios", "tv", "car", "watch"]
DELAY = 700  # more than the data's disorder (rows are up to 600 apart out of order): no row is late


def schema(key_type=pa.string(), tag_type=pa.string()) -> pa.Schema:
    return pa.schema([("ts", pa.int64()), ("k", key_type), ("n", pa.int64()), ("v", pa.float64()),
                      ("tag", tag_type)])


def events(rows: int, seed: int) -> pa.Table:
    """Out-of-order rows; string key ``k`` with a hot value and 8% nulls; a string pass-through ``tag``."""
    rng = np.random.default_rng(seed)
    ts = np.arange(rows, dtype=np.int64) * 10 + rng.integers(-300, 300, rows)
    keys = np.array(VALUES, dtype=object)[np.where(rng.random(rows) < 0.3, 0, rng.integers(0, len(VALUES), rows))]
    return pa.table({"ts": ts, "k": pa.array(keys, pa.string(), mask=rng.random(rows) < 0.08),
                     "n": rng.integers(0, 4, rows),
                     "v": pa.array(np.round(rng.uniform(0, 100, rows), 2), mask=rng.random(rows) < 0.05),
                     "tag": pa.array(rng.choice(["x", "yy", "zzz"], rows))}, schema=schema())


def batches(table: pa.Table, seed: int) -> list[pa.RecordBatch]:
    """Random cuts, with empty and one-row batches among them."""
    rng = np.random.default_rng(seed)
    cuts = list(rng.integers(0, table.num_rows + 1, 25)) + [5, 5, 6, 6, 7]
    return split_table(table, cuts)


def categorical(array: pa.Array, rng) -> pa.DictionaryArray:
    """``array`` as a dictionary of its own: every value shuffled, plus unused, repeated and null entries."""
    own = sorted(set(array.drop_null().to_pylist()) | set(VALUES))
    entries = [*rng.permutation(own + ["unused-1", "unused-2"]).tolist(), None, "app"]
    null_entry, second_app = len(entries) - 2, len(entries) - 1
    found = pc.index_in(array, value_set=pa.array(entries[:null_entry]))  # null for null rows
    codes = found.fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint32)
    mask = ~found.is_valid().to_numpy(zero_copy_only=False)
    pick = rng.random(len(array)) < 0.5
    codes[mask & pick] = null_entry  # a valid index to the null entry is a null row as well
    codes[(codes == entries.index("app")) & pick & ~mask] = second_app
    mask &= ~pick
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.uint32(), mask=mask), pa.array(entries, pa.large_string()))


def as_categorical(parts: list[pa.RecordBatch], seed: int, columns=("k", "tag")) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for b in parts:
        for name in columns:
            i = b.schema.get_field_index(name)
            b = b.set_column(i, name, categorical(b.column(i), rng))
        out.append(b)
    return out


def as_polars(parts: list[pa.RecordBatch]) -> list[pl.DataFrame]:
    """Polars frames with ``k`` and ``tag`` cast to ``Categorical`` (exported as ``dictionary<uint32, string_view>``)."""
    return [pl.from_arrow(b).with_columns(pl.col("k", "tag").cast(pl.Categorical)) for b in parts]


def run(dag, feed, sinks=("out",)) -> dict[str, pa.Table]:
    ex = lj.DagExecutor(dag)
    for source, b in feed:
        ex.process_batch(source, b)
    ex.finish()
    return {s: ex.take_sink_outputs(s) for s in sinks}


def one_source(op, source_schema: pa.Schema, sink_from: str = "op"):
    wm = lj.BoundedOutOfOrderness(max_delay=DELAY)
    return (lj.DagBuilder().source("s", source_schema, event_time="ts", watermark=wm)
            .operator("op", op).connect("s", "op").sink_for(sink_from, "out").build())


def _count_rows(st, n):
    st.seen += 1
    st.total += n
    return st.seen, st.total


rms = lj.UserAggregate("rms", state={"ss": np.float64, "c": np.int64},
                       update=lambda st, x: (st[0] + x * x, st[1] + 1),
                       merge=lambda a, b: (a[0] + b[0], a[1] + b[1]),
                       finalize=lambda st: np.sqrt(st[0] / st[1]))
AGGS = {"rows": lj.count(), "s": lj.sum("v"), "hi": lj.max("v"), "first_n": lj.first("n")}
KEYED = {
    "tumbling": lambda: lj.TumblingWindow(size=500, key="k", aggs=AGGS),
    "sliding": lambda: lj.SlidingWindow(size=600, slide=200, key="k", aggs=AGGS),
    "session": lambda: lj.SessionWindow(gap=40, key="k", aggs=AGGS),
    "user_aggregate": lambda: lj.TumblingWindow(size=500, key=["k", "n"], aggs={"rms": rms("v"), "c": lj.count()}),
    "dedup": lambda: lj.Dedup(key="k", within=300),
    "topn": lambda: lj.TopN(2, by="v", key="k", window=500),
    "keyed_kernel": lambda: lj.KeyedKernel(_count_rows, key="k", state={"seen": np.int64, "total": np.int64},
                                           output={"seen": pa.int64(), "total": pa.int64()}),
    "pass_through": lambda: lj.Filter(lambda v: v > 20.0),
}


def plain_strings(table: pa.Table) -> pa.Table:
    """Dictionary columns decoded, so outputs of differently declared sources compare."""
    return pa.table({name: col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col
                     for name, col in zip(table.column_names, table.columns)})


@pytest.mark.parametrize("name", list(KEYED))
@pytest.mark.parametrize("seed", [0, 1])
def test_keyed_operators_give_the_same_output_for_categorical_and_plain_keys(name, seed):
    table = events(1500, seed)
    parts = batches(table, seed)
    cats = as_categorical(parts, seed)
    want = run(one_source(KEYED[name](), schema()), [("s", b) for b in parts])["out"]
    assert want.num_rows > 0
    # plain string schema, dictionary batches (each with its own dictionary) and Polars categoricals
    assert run(one_source(KEYED[name](), schema()), [("s", b) for b in cats])["out"].equals(want)
    assert run(one_source(KEYED[name](), schema()), [("s", df) for df in as_polars(parts)])["out"].equals(want)
    # a source declared with dictionary columns, as Polars' schema gives them
    got = run(one_source(KEYED[name](), schema(DICT, DICT)), [("s", b) for b in cats])["out"]
    assert got.schema.field("k").type == (DICT if name in ("dedup", "pass_through") else pa.string())
    if "tag" in got.column_names:  # carried through unchanged, or kept in state and decoded
        assert got.schema.field("tag").type == (DICT if name in ("dedup", "pass_through") else pa.string())
    assert plain_strings(got).equals(want)


def test_keyed_windows_on_categorical_keys_match_duckdb():
    table = events(3000, 7)
    cats = as_categorical(batches(table, 7), 7)
    got = run(one_source(lj.TumblingWindow(size=500, key="k", aggs={"rows": lj.count(), "s": lj.sum("v")}),
                         schema(DICT, DICT)), [("s", b) for b in cats])["out"]
    con = duckdb.connect()
    con.register("t", table)
    # floor division: DuckDB's // truncates toward zero, and times here go below 0
    want = con.sql("SELECT CAST(floor(ts / 500) * 500 AS BIGINT) AS window_start, "
                   "CAST(floor(ts / 500) * 500 + 500 AS BIGINT) AS window_end, k, "
                   "count(*) AS rows, sum(v) AS s FROM t GROUP BY ALL").pl()
    g = pl.from_arrow(got).sort("window_start", "k", nulls_last=True)
    want = want.sort("window_start", "k", nulls_last=True).with_columns(pl.col("rows").cast(pl.Int64))
    assert g.select("window_start", "window_end", "k", "rows").equals(
        want.select("window_start", "window_end", "k", "rows"), null_equal=True)
    np.testing.assert_allclose(g["s"].fill_null(-1).to_numpy(), want["s"].fill_null(-1).to_numpy())
    # window end, then key in order of first appearance, as for plain strings
    assert got["window_end"].to_numpy().tolist() == sorted(got["window_end"].to_numpy().tolist())


JOINS = {
    "interval_full": lambda: lj.IntervalJoin("k", "k", lower=-30, upper=30, how="full"),
    "interval_anti": lambda: lj.IntervalJoin("k", "k", lower=-30, upper=30, how="anti"),
    "window": lambda: lj.WindowJoin(200, "k", "k"),
    "asof": lambda: lj.AsofJoin("k", direction="backward", how="left"),
    "temporal": lambda: lj.TemporalJoin("k", "k", how="left"),
}


def join_dag(op, left: pa.Schema, right: pa.Schema):
    wm = lj.BoundedOutOfOrderness(max_delay=DELAY)
    return (lj.DagBuilder().source("L", left, event_time="ts", watermark=wm)
            .source("R", right, event_time="ts", watermark=wm)
            .operator("j", op).connect("L", "j", port="left").connect("R", "j", port="right")
            .sink_for("j", "out").build())


@pytest.mark.parametrize("name", list(JOINS))
def test_joins_on_categorical_keys_give_the_same_output(name):
    left, right = events(800, 3), events(700, 4).drop_columns(["n"])
    lparts, rparts = batches(left, 3), batches(right, 4)
    # interleave the two inputs deterministically, empty and one-row batches included
    order = [("L", i) for i in range(len(lparts))] + [("R", i) for i in range(len(rparts))]
    order = [order[i] for i in np.random.default_rng(5).permutation(len(order))]

    def feed(lp, rp):
        return [(s, (lp if s == "L" else rp)[i]) for s, i in order]

    rschema = schema().remove(schema().get_field_index("n"))
    want = run(join_dag(JOINS[name](), schema(), rschema), feed(lparts, rparts))["out"]
    assert want.num_rows > 0
    lcat, rcat = as_categorical(lparts, 8), as_categorical(rparts, 9)
    got = run(join_dag(JOINS[name](), schema(), rschema), feed(lcat, rcat))["out"]
    assert got.equals(want)
    # one side declared with dictionary columns, the other plain: keys still compare
    dict_left = pa.schema([f.with_type(DICT) if f.name in ("k", "tag") else f for f in schema()])
    got = run(join_dag(JOINS[name](), dict_left, rschema), feed(lcat, rparts))["out"]
    assert got.schema.field("k").type == pa.string()  # join columns are kept in the row store: plain strings out
    assert got.equals(want)


def test_a_batch_the_declared_dictionary_cannot_hold_is_rejected_and_changes_nothing():
    narrow = pa.dictionary(pa.int8(), pa.string())
    dag = one_source(lj.TumblingWindow(size=500, key="k", aggs={"rows": lj.count()}), schema(narrow))
    table = events(600, 2)
    parts = batches(table, 2)
    want = run(dag, [("s", b) for b in parts])["out"]
    ex = lj.DagExecutor(dag)
    for i, b in enumerate(parts):
        if i == 3:
            many = pa.table({"ts": np.full(300, 10**6), "k": [f"key{j}" for j in range(300)], "n": np.zeros(300, np.int64),
                             "v": np.ones(300), "tag": ["x"] * 300})
            with pytest.raises(lj.DataError, match=r"source 's': column 'k' .*cannot be cast safely to dictionary"):
                ex.process_batch("s", many)
        ex.process_batch("s", b)
    ex.finish()
    assert ex.take_sink_outputs("out").equals(want)


def test_unsupported_dictionary_values_name_the_column_and_the_fix():
    binary_dict = pa.dictionary(pa.int32(), pa.binary())
    with pytest.raises(lj.SchemaError, match=r"key column 'k' is dictionary<values=binary.*pa.string\(\)"):
        one_source(lj.TumblingWindow(size=500, key="k", aggs={"rows": lj.count()}), schema(binary_dict))


def test_dictionary_encoding_uses_each_batchs_own_dictionary():
    """Codes of dictionary batches equal those of the same plain strings: first appearance, nulls -1."""
    rng = np.random.default_rng(11)
    plain, from_dicts = StringDictionary(), StringDictionary()
    for _ in range(300):
        n = int(rng.integers(0, 12))
        values = pa.array(np.array(VALUES, dtype=object)[rng.integers(0, len(VALUES), n)], pa.string(),
                          mask=rng.random(n) < 0.2)
        encoded = categorical(values, rng)
        if n > 3 and rng.random() < 0.5:  # a chunked column whose chunks carry different dictionaries
            cut = n // 2
            encoded = pa.chunked_array([encoded.slice(0, cut), categorical(values.slice(cut), rng)])
        c1, v1 = plain.encode(values)
        c2, v2 = from_dicts.encode(encoded)
        np.testing.assert_array_equal(c1, c2)
        np.testing.assert_array_equal(c1 >= 0, values.is_valid().to_numpy(zero_copy_only=False))
        assert (v2.size == 0) == (values.null_count == 0) or v2.all()
    assert plain.values().equals(from_dicts.values())
    assert "unused-1" not in from_dicts.values().to_pylist()  # entries no row uses are not interned
