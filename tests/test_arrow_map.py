"""ArrowMap: string (and other Arrow) columns brought to kernels by vectorized Arrow functions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj

SCHEMA = pa.schema([("ts", pa.int64()), ("city", pa.string()), ("price", pa.float64())])
CITIES = ["Boise", "Bend", "Kent", "Seattle", "Portland", None]


def _events(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    city = pa.array([CITIES[i] for i in rng.integers(0, len(CITIES), n)], pa.string())
    ts = np.arange(n) * 3 + rng.integers(0, 50, n)
    return pa.table([pa.array(ts), city, pa.array(rng.random(n) * 100)], schema=SCHEMA)


def _starts_with_b(city):
    return pc.starts_with(city, "B")


def _is_b(b_city):
    return b_city


def _city_length(city):
    return pc.utf8_length(city)


def _run(dag, table, pieces, source="s"):
    ex = lj.DagExecutor(dag)
    for lo, hi in zip(pieces[:-1], pieces[1:]):
        ex.process_batch(source, table.slice(lo, hi - lo))
    ex.finish()
    return ex, ex.take_all_sink_outputs()


def _dag():
    return (lj.DagBuilder()
            .source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(100))
            .operator("cheap", lj.Filter(lambda price: price < 80.0))
            .operator("renamed", lj.Project({"t": "ts", "town": "city", "price": "price"}))
            .operator("flags", lj.ArrowMap(lambda town: (pc.starts_with(town, "B"), pc.utf8_length(town)),
                                           output={"b_city": pa.bool_(), "length": pa.int64()}))
            .operator("b_only", lj.Filter(_is_b))
            .operator("per_length", lj.TumblingWindow(1_000, key="length", aggs={"n": lj.count(),
                                                                                  "sum": lj.sum("price")}))
            .connect("s", "cheap").connect("cheap", "renamed").connect("renamed", "flags")
            .connect("flags", "b_only").connect("b_only", "per_length")
            .sink_for("b_only", "rows").sink_for("per_length", "windows")
            .build())


def test_string_predicate_and_string_derived_key_match_polars():
    table = _events()
    ref = (pl.from_arrow(table).filter(pl.col("price") < 80.0)
           .rename({"ts": "t", "city": "town"})
           .with_columns(b_city=pl.col("town").str.starts_with("B"), length=pl.col("town").str.len_chars())
           .filter(pl.col("b_city")))
    windows = (ref.group_by((pl.col("t") // 1_000 * 1_000).alias("window_start"), "length")
               .agg(n=pl.len(), sum=pl.col("price").sum()).sort("window_start", "length"))
    rng = np.random.default_rng(3)
    dag = _dag()
    for pieces in ([0, table.num_rows],
                   sorted({0, table.num_rows, 1, 2, 2, *rng.integers(0, table.num_rows, 40).tolist()})):
        ex, out = _run(dag, table, pieces)
        got = pl.from_arrow(out["rows"])
        assert got.columns == ["t", "town", "price", "b_city", "length"]
        assert got.equals(ref)
        w = pl.from_arrow(out["windows"]).sort("window_start", "length")
        assert w["n"].to_list() == windows["n"].to_list()
        assert np.allclose(w["sum"].to_numpy(), windows["sum"].to_numpy())
        assert w["window_start"].to_list() == windows["window_start"].to_list()


def test_null_strings_give_null_outputs_and_filter_out():
    batch = pa.record_batch([pa.array([1, 2, 3]), pa.array(["Bend", None, "Kent"]), pa.array([1.0, 2.0, 3.0])],
                            schema=SCHEMA)
    dag = (lj.DagBuilder().source("s", SCHEMA)
           .operator("flag", lj.ArrowMap(_starts_with_b, output="b_city"))
           .operator("keep", lj.Filter(_is_b))
           .connect("s", "flag").connect("flag", "keep")
           .sink_for("flag", "all").sink_for("keep", "kept").build())
    ex, out = _run(dag, pa.Table.from_batches([batch]), [0, 3])
    assert out["all"]["b_city"].to_pylist() == [True, None, False]
    assert out["kept"]["city"].to_pylist() == ["Bend"]


def test_a_failing_function_rejects_the_batch_and_changes_nothing():

    def picky(city):
        if len(city) == 2:
            raise ValueError("two rows are not allowed")
        return pc.starts_with(city, "B")

    dag = (lj.DagBuilder().source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("flag", lj.ArrowMap(picky, output="b_city"))
           .operator("per_flag", lj.TumblingWindow(10, key="b_city", aggs={"n": lj.count()}))
           .connect("s", "flag").connect("flag", "per_flag").sink_for("per_flag", "out").build())
    table = _events(500)
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", table.slice(0, 300))
    before = ex.checkpoint()
    wm = ex.watermark("s")
    with pytest.raises(lj.KernelError, match="operator 'flag' \\(ArrowMap\\): picky raised ValueError"):
        ex.process_batch("s", table.slice(300, 2))
    assert ex.metrics.events_in == 300
    after = ex.checkpoint()
    assert ex.watermark("s") == wm and after.watermarks == before.watermarks
    for node, arrays in before.states.items():
        for name, a in arrays.items():
            assert np.array_equal(after.states[node][name], a), (node, name)
    ex.process_batch("s", table.slice(300, 200))
    ex.finish()
    ref = lj.DagExecutor(dag)
    ref.process_batch("s", table)
    ref.finish()
    assert ex.take_sink_outputs("out").equals(ref.take_sink_outputs("out"))


def test_bad_results_are_typed_errors():
    base = lj.DagBuilder().source("s", SCHEMA)
    # an output kernels cannot read (a list, a decimal) travels to sinks, as a source's column would ...
    split = lj.ArrowMap(lambda city: pc.split_pattern(city, "o"), "parts")
    dag = lj.DagBuilder().source("s", SCHEMA).operator("u", split).connect("s", "u").sink_for("u", "out").build()
    assert dag.node("u").schema.field("parts").type == pa.list_(pa.string())
    # ... and a kernel reading it is refused, naming the column and its type
    with pytest.raises(lj.SchemaError, match="'parts'.*list"):
        (lj.DagBuilder().source("s", SCHEMA).operator("u", split).operator("f", lj.Filter(lambda parts: parts > 0))
         .connect("s", "u").connect("u", "f").sink_for("f", "out").build())
    with pytest.raises(lj.SchemaError, match="parameter 'town' is not a column"):
        (base.operator("u", lj.ArrowMap(lambda town: pc.utf8_length(town), "n"))
         .connect("s", "u").sink_for("u", "out").build())
    short = (lj.DagBuilder().source("s", SCHEMA)
             .operator("u", lj.ArrowMap(lambda city: pc.utf8_length(city)[:1], "n"))
             .connect("s", "u").sink_for("u", "out").build())
    ex = lj.DagExecutor(short)
    with pytest.raises(lj.DataError, match="output 'n' must be a pyarrow Array of 1000 rows"):
        ex.process_batch("s", _events(1_000))
    with pytest.raises(TypeError):
        lj.ArrowMap("not a function", "x")


def test_arrow_maps_read_source_columns_only():
    after_map = (lj.DagBuilder().source("s", SCHEMA)
                 .operator("m", lj.Map(lambda price: price * 2.0, output="double"))
                 .operator("u", lj.ArrowMap(lambda double: pc.greater(double, 1.0), "big"))
                 .connect("s", "m").connect("m", "u").sink_for("u", "out").build())
    with pytest.raises(lj.SchemaError, match="ArrowMap\\) reads 'double', which the engine computes"):
        lj.DagExecutor(after_map)


def _upper(city):
    return pc.utf8_upper(city)


def test_string_outputs_travel_like_source_strings():
    """A computed string column reaches sinks, keys a window and is kept by an updating TopN, renamed on the way."""
    table = _events(6_000, seed=3)
    dag = (lj.DagBuilder()
           .source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(100))
           .operator("up", lj.ArrowMap(_upper, output="upper"))
           .operator("named", lj.Project({"ts": "ts", "name": "upper", "price": "price"}))
           .operator("per_name", lj.TumblingWindow(1_000, key="name", aggs={"n": lj.count()}))
           .operator("best", lj.TopN(1, by="price", key="name", window=None))
           .connect("s", "up").connect("up", "named").connect("named", "per_name").connect("named", "best")
           .sink_for("named", "rows").sink_for("per_name", "windows").sink_for("best", "top").build())
    _, out = _run(dag, table, [0, 0, 1, 700, 2_500, 6_000])
    df = pl.from_arrow(table).with_columns(name=pl.col("city").str.to_uppercase())
    assert out["rows"].column("name").to_pylist() == df["name"].to_list()
    windows = pl.from_arrow(out["windows"]).sort("window_start", "name", nulls_last=False)
    want = (df.group_by((pl.col("ts") // 1_000 * 1_000).alias("window_start"), "name").agg(pl.len().alias("n"))
            .sort("window_start", "name", nulls_last=False))
    assert windows.select("window_start", "name", "n").rows() == want.with_columns(pl.col("n").cast(pl.Int64)).rows()
    top = pl.from_arrow(lj.apply_changelog(out["top"])).sort("name", nulls_last=False)
    best = (df.with_row_index("arrival").sort("price", "arrival", descending=[True, False])
            .group_by("name", maintain_order=True).first().sort("name", nulls_last=False))
    assert top["name"].to_list() == best["name"].to_list()
    assert top["price"].to_list() == best["price"].to_list()
