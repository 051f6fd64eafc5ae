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


def _busy(n, top):
    """A label per window (null when its top price is null) and the top price or -1."""
    label = pc.if_else(pc.is_null(top), pa.scalar(None, pa.string()), pc.if_else(pc.greater(n, 2), "busy", "quiet"))
    return label, pc.coalesce(top, -1.0)


def _window_dag(then=None):
    """Tumbling windows per city, then ``then`` (an ArrowMap of their results by default)."""
    return (lj.DagBuilder()
            .source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(60))
            .operator("per_city", lj.TumblingWindow(200, key="city", aggs={"n": lj.count(), "top": lj.max("price")}))
            .operator("label", then or lj.ArrowMap(_busy, output={"label": pa.string(), "top_or": pa.float64()}))
            .operator("known", lj.Filter(lambda top_or: top_or > 50.0))
            .connect("s", "per_city").connect("per_city", "label").connect("label", "known")
            .sink_for("label", "all").sink_for("known", "high").build())


def _events_with_null_prices(n, seed):
    table = _events(n, seed)
    rng = np.random.default_rng(seed)
    return table.set_column(2, "price", pa.array(table.column("price").to_numpy(), mask=rng.random(n) < 0.4))


def test_arrow_maps_over_window_results_match_polars_whatever_the_batches():
    """The ArrowMap reads a window's results (rows the step emits): they leave the step as a batch and a
    second step runs the ArrowMap's consumers; a kernel filter reads its output."""
    table = _events_with_null_prices(3_000, seed=5)
    df = pl.from_arrow(table)
    want = (df.group_by((pl.col("ts") // 200 * 200).alias("window_start"), "city")
            .agg(n=pl.len(), top=pl.col("price").max())
            .with_columns(label=pl.when(pl.col("top").is_null()).then(None)
                          .when(pl.col("n") > 2).then(pl.lit("busy")).otherwise(pl.lit("quiet")),
                          top_or=pl.col("top").fill_null(-1.0))
            .sort("window_start", "city", nulls_last=False))
    dag = _window_dag()
    rng = np.random.default_rng(2)
    for cuts in ([], [0, 0, 1, 2], rng.integers(0, 3_000, 25).tolist()):
        ex, out = _run(dag, table, sorted({0, table.num_rows, *cuts}) if cuts else [0, table.num_rows])
        got = pl.from_arrow(out["all"]).sort("window_start", "city", nulls_last=False)
        assert got.columns == ["window_start", "window_end", "city", "n", "top", "label", "top_or"]
        assert got.select("window_start", "city", "label", "top_or").rows() == \
            want.select("window_start", "city", "label", "top_or").rows()
        assert got["n"].to_list() == want["n"].cast(pl.Int64).to_list()
        high = pl.from_arrow(out["high"]).sort("window_start", "city", nulls_last=False)
        assert high.rows() == got.filter(pl.col("top_or") > 50.0).rows()
        assert ex.metrics.per_node["label"]["rows_in"] == len(want)


def test_an_arrow_map_between_windows_equals_the_same_function_as_a_kernel():
    """Window → ArrowMap → window gives the rows of window → Map → window: the rows between the steps carry
    the first window's watermark, as they do inside one step (late rows and fires alike)."""
    def _double_arrow(n):
        return pc.multiply(n, 2)

    def build(middle):
        return (lj.DagBuilder()
                .source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(30))
                .operator("small", lj.TumblingWindow(100, key="city", aggs={"n": lj.count()}))
                .operator("twice", middle)
                .operator("big", lj.SlidingWindow(1_000, 500, key="city", aggs={"m": lj.sum("n2"),
                                                                               "k": lj.count()}))
                .connect("s", "small").connect("small", "twice").connect("twice", "big")
                .sink_for("big", "out").sink_for("twice", "mid").build())

    table = _events(4_000, seed=7)
    rng = np.random.default_rng(8)
    cuts = sorted({0, table.num_rows, 1, 1, 2, *rng.integers(0, table.num_rows, 30).tolist()})
    _, arrow = _run(build(lj.ArrowMap(_double_arrow, output={"n2": pa.int64()})), table, cuts)
    _, kernel = _run(build(lj.Map(lambda n: n * 2, output="n2")), table, cuts)
    for sink in ("out", "mid"):
        key = ["window_start", "city"]
        assert arrow[sink].sort_by([(k, "ascending") for k in key]).equals(
            kernel[sink].sort_by([(k, "ascending") for k in key])), sink
    assert arrow["out"].num_rows > 0


def test_arrow_maps_over_a_map_a_union_and_a_join():
    """ArrowMaps after a Map's output, a union of two sources and a join's rows (each was refused before)."""
    other = pa.schema([("ts", pa.int64()), ("city", pa.string()), ("price", pa.float64())])
    dag = (lj.DagBuilder()
           .source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(50))
           .source("t", other, event_time="ts", watermark=lj.BoundedOutOfOrderness(50))
           .operator("m", lj.Map(lambda price: price * 2.0, output="double"))
           .operator("big", lj.ArrowMap(lambda double: pc.greater(double, 100.0), "big"))
           .operator("both", lj.Project(["ts", "city", "price"]))
           .operator("up", lj.ArrowMap(_upper, output="upper"))
           .operator("pairs", lj.IntervalJoin("city", "city", 0, 20))
           .operator("first", lj.ArrowMap(lambda city, price_right: (pc.utf8_slice_codeunits(city, 0, 1),
                                                                     pc.fill_null(price_right, -1.0)),
                                          output={"initial": pa.string(), "pr": pa.float64()}))
           .operator("per_initial", lj.TumblingWindow(500, key="initial", aggs={"n": lj.count(),
                                                                              "s": lj.sum("pr")}))
           .connect("s", "m").connect("m", "big")
           .connect("s", "both").connect("t", "both").connect("both", "up")
           .connect("s", "pairs", port="left").connect("t", "pairs", port="right")
           .connect("pairs", "first").connect("first", "per_initial")
           .sink_for("big", "bigs").sink_for("up", "uppers").sink_for("first", "joined").sink_for("per_initial", "w")
           .build())
    s, t = _events(1_500, seed=1), _events(1_000, seed=2)
    ex = lj.DagExecutor(dag)
    for lo in range(0, 1_500, 400):
        ex.process_batch("s", s.slice(lo, 400))
        ex.process_batch("t", t.slice(lo, 400))
    ex.finish()
    out = ex.take_all_sink_outputs()
    assert out["bigs"]["big"].to_pylist() == [None if p is None else p * 2 > 100 for p in s["price"].to_pylist()]
    both = pl.concat([pl.from_arrow(s), pl.from_arrow(t)])
    assert sorted(out["uppers"]["upper"].to_pylist(), key=str) == sorted(
        both["city"].str.to_uppercase().to_list(), key=str)
    joined = pl.from_arrow(out["joined"])
    want = (pl.from_arrow(s).join(pl.from_arrow(t), on="city", suffix="_right")
            .filter((pl.col("ts_right") - pl.col("ts")).is_between(0, 20)))
    assert len(joined) == len(want) > 0
    assert sorted(joined["initial"].to_list()) == sorted(want["city"].str.slice(0, 1).to_list())
    w = pl.from_arrow(out["w"])
    by_initial = (joined.group_by((pl.col("ts") // 500 * 500).alias("window_start"), "initial")
                  .agg(n=pl.len()).sort("window_start", "initial"))
    assert w.sort("window_start", "initial").select("window_start", "initial", "n").rows() == \
        by_initial.with_columns(pl.col("n").cast(pl.Int64)).rows()


def test_an_arrow_map_over_a_map_of_filtered_rows_in_small_batches():
    """Filtered source rows whose Map output an ArrowMap reads leave the step as a batch; a small batch's
    step leaves their source columns to Arrow (its rows are not all the batch's)."""
    dag = (lj.DagBuilder().source("s", SCHEMA)
           .operator("cheap", lj.Filter(lambda price: price < 50.0))
           .operator("m", lj.Map(lambda price: price * 2.0, output="double"))
           .operator("u", lj.ArrowMap(lambda double, city: pc.binary_join_element_wise(
               pc.cast(double, pa.string()), city, "@"), output={"tag": pa.string()}))
           .connect("s", "cheap").connect("cheap", "m").connect("m", "u").sink_for("u", "out").build())
    table = _events(3_000, seed=12)
    _, out = _run(dag, table, [0, 1, 2, 50, 700, 2_000, 3_000])
    want = pl.from_arrow(table).filter(pl.col("price") < 50.0).with_columns(double=pl.col("price") * 2.0)
    got = out["out"]
    assert got.column("ts").to_pylist() == want["ts"].to_list()
    assert got.column("double").to_pylist() == want["double"].to_list()
    assert got.column("tag").to_pylist() == [None if c is None else f"{pa.scalar(d).cast(pa.string()).as_py()}@{c}"
                                             for d, c in zip(want["double"].to_list(), want["city"].to_list())]


def test_an_arrow_map_over_a_map_before_a_window_is_refused():
    after_map = (lj.DagBuilder().source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(10))
                 .operator("m", lj.Map(lambda price: price * 2.0, output="double"))
                 .operator("u", lj.ArrowMap(lambda double: pc.greater(double, 1.0), "big"))
                 .operator("w", lj.TumblingWindow(10, key="big", aggs={"n": lj.count()}))
                 .connect("s", "m").connect("m", "u").connect("u", "w").sink_for("w", "out").build())
    with pytest.raises(lj.SchemaError, match=r"operator 'm' \(.*\) feeds an ArrowMap that reads a column it "
                                             r"computes from source rows, and a stateful operator follows"):
        lj.DagExecutor(after_map)


def test_a_failing_arrow_map_over_window_results_takes_the_call_back():
    def _picky(n, top):
        if pc.any(pc.greater(n, 40)).as_py():
            raise ValueError("a busy window")
        return _busy(n, top)

    dag = _window_dag(lj.ArrowMap(_picky, output={"label": pa.string(), "top_or": pa.float64()}))
    table = _events_with_null_prices(3_000, seed=9)
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", table.slice(0, 500))
    before, wm, first = ex.checkpoint(), ex.watermark("s"), ex.take_sink_outputs("all")
    start = (wm // 200 + 2) * 200  # fifty rows of one window, then one that makes it due
    crowded = pa.table({"ts": pa.array([start + i for i in range(50)] + [start + 2_000]),
                        "city": pa.array(["Kent"] * 51), "price": pa.array([1.0] * 51)}, schema=SCHEMA)
    with pytest.raises(lj.KernelError, match=r"operator 'label' \(ArrowMap\): _picky raised ValueError"):
        ex.process_batch("s", crowded)
    after = ex.checkpoint()
    assert ex.watermark("s") == wm and after.watermarks == before.watermarks
    for node, arrays in before.states.items():
        for name, a in arrays.items():
            assert np.array_equal(after.states[node][name], a), (node, name)
    assert ex.take_sink_outputs("all").num_rows == 0 and ex.metrics.events_in == 500
    ex.process_batch("s", table.slice(500))
    ex.finish()
    ref = lj.DagExecutor(dag)
    ref.process_batch("s", table)
    ref.finish()
    assert pa.concat_tables([first, ex.take_sink_outputs("all")]).equals(ref.take_sink_outputs("all"))


def test_arrow_maps_over_window_results_checkpoint_and_run_as_one_shard(tmp_path):
    from conftest import checkpointed_run, split_table

    dag = _window_dag()
    table = _events_with_null_prices(2_000, seed=11)
    batches = split_table(table, [0, 1, 300, 300, 900, 1_500])
    ref = lj.DagExecutor(dag)
    for b in batches:
        ref.process_batch("s", b)
    ref.finish()
    want = ref.take_sink_outputs("all")
    assert checkpointed_run(dag, batches, 3, tmp_path / "ck", source="s", sink="all").equals(want)
    two = lj.DagExecutor(dag, parallelism=2)
    assert two.shards == 1 and "'per_city' leave the compiled step as a batch" in two.shards_note
    for b in batches:
        two.process_batch("s", b)
    two.finish()
    assert two.take_sink_outputs("all").equals(want)


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


@pytest.mark.parametrize("char", ["c", "é"])
def test_count_char_equals_arrows_count_substring_on_every_layout(char):
    """``ops.arrow_functions.count_char`` (Nexmark's ``count_char`` UDF; ASCII by a compiled byte scan) against
    Arrow's ``count_substring``: random text with nulls and empty strings, in every string layout, sliced,
    dictionary-encoded and chunked."""
    from laminar_jit.ops.arrow_functions import count_char

    rng = np.random.default_rng(3)
    alphabet = np.array(list("abcé c"))
    words = ["".join(rng.choice(alphabet, rng.integers(0, 40))) for _ in range(5_000)]
    text = pa.array(words, mask=rng.random(5_000) < 0.05)
    layouts = [text, text.cast(pa.large_string()), text.cast(pa.string_view()), text.slice(17, 3_000),
               text.dictionary_encode(), pa.chunked_array([text.slice(0, 10), text.slice(10, 0), text.slice(10)]),
               text.slice(0, 0)]
    for strings in layouts:
        got = count_char(strings, char)
        want = pc.cast(pc.count_substring(strings.cast(pa.string()) if not pa.types.is_dictionary(strings.type)
                                          else strings.dictionary_decode(), pattern=char), pa.int64())
        assert got.type == pa.int64() and got.equals(want), strings.type
    assert pc.sum(count_char(text, char)).as_py() > 1_000
