"""The exchange without a cluster: key hashing, partitioning, DAG cutting and source shards."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import laminar_jit as lj
from laminar_jit.distributed import key_hash, partition_batch, split_dag


def _rows(batch):
    return sorted(zip(*[batch.column(i).to_pylist() for i in range(batch.num_columns)]), key=repr)


def test_one_value_hashes_alike_whatever_its_arrow_type():
    ints = [3, -1, None, 2**40, 0]
    for a, b in [(pa.array(ints, pa.int64()), pa.array([3, -1, None, 2**40, 0], pa.int64()).cast(pa.int64())),
                 (pa.array([3, -1, None, 7, 0], pa.int32()), pa.array([3, -1, None, 7, 0], pa.int64())),
                 (pa.array([3, 1, None, 7, 0], pa.uint16()), pa.array([3, 1, None, 7, 0], pa.int8())),
                 (pa.array([3, -1, None, 7, 0], pa.timestamp("ms")), pa.array([3, -1, None, 7, 0], pa.int64())),
                 (pa.array([True, False, None], pa.bool_()), pa.array([1, 0, None], pa.int64())),
                 (pa.array(["a", "", None, "ab", "é"]), pa.array(["a", "", None, "ab", "é"], pa.large_string())),
                 (pa.array(["a", "", None, "ab", "é"]),
                  pa.array(["a", "", None, "ab", "é"]).dictionary_encode()),
                 (pa.array(["x", "y", "z", "a", "b"]).slice(3), pa.array(["a", "b"]))]:
        ha = key_hash(pa.record_batch({"k": a}), ("k",))
        hb = key_hash(pa.record_batch({"k": b}), ("k",))
        np.testing.assert_array_equal(ha, hb)


def test_hash_separates_values_and_nulls_share_one():
    batch = pa.record_batch({"k": pa.array([1, 2, None, None, 1]), "s": pa.array(["ab", "ba", None, None, "ab"])})
    for keys in (("k",), ("s",), ("k", "s")):
        h = key_hash(batch, keys)
        assert h[0] == h[4] and h[2] == h[3] and len({h[0], h[1], h[2]}) == 3
    # column order matters and two columns are not their concatenation
    pair = pa.record_batch({"a": [1, 2], "b": [2, 1]})
    h = key_hash(pair, ("a", "b"))
    assert h[0] != h[1]


@pytest.mark.parametrize("partitions", [1, 2, 3, 7])
def test_partitioning_keeps_every_row_once_in_arrival_order_and_groups_keys(partitions):
    rng = np.random.default_rng(partitions)
    n = 5_000
    keys = rng.zipf(1.3, n) % 300
    batch = pa.record_batch({"k": pa.array(keys, mask=rng.random(n) < 0.05), "i": np.arange(n),
                             "name": pa.array([f"n{k}" for k in keys])})
    parts = partition_batch(batch, ("k",), partitions)
    assert len(parts) == partitions
    seen = []
    owner = {}
    for p, piece in enumerate(parts):
        if piece is None:
            continue
        i = piece.column("i").to_numpy()
        assert (np.diff(i) > 0).all()  # arrival order kept
        seen.append(i)
        for k in set(piece.column("k").to_pylist()):
            assert owner.setdefault(k, p) == p  # a key lives on one partition
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    if partitions > 1:
        assert sum(piece is not None for piece in parts) == partitions  # 300 keys reach every partition
    assert partition_batch(batch.slice(0, 0), ("k",), partitions) == [None] * partitions


def test_two_partitions_split_a_uniform_key_space_evenly():
    batch = pa.record_batch({"k": np.arange(100_000)})
    sizes = [p.num_rows for p in partition_batch(batch, ("k",), 2)]
    assert abs(sizes[0] - sizes[1]) < 2_000


# ----------------------------------------------------------------------------- cutting the DAG

SCHEMA = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("j", pa.int64()), ("v", pa.float64())])


def _builder():
    return (lj.DagBuilder()
            .source("s", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(10))
            .operator("f", lj.Filter(lambda v: v > 0))
            .connect("s", "f"))


def test_split_puts_stateless_prefix_in_the_reader_and_keys_the_exchange():
    dag = (_builder()
           .operator("w", lj.TumblingWindow(10, key="k", aggs={"n": lj.count()}))
           .operator("d", lj.Dedup(["k", "j"], within=10))
           .operator("m", lj.Map(lambda n: n * 2, output="n2"))
           .operator("w2", lj.TumblingWindow(100, key="k", aggs={"m": lj.max("n2")}))
           .connect("f", "w").connect("f", "d").connect("w", "m").connect("m", "w2")
           .sink_for("f", "raw").sink_for("w2", "out").sink_for("d", "dd").build())
    plan = split_dag(dag, 2)
    assert [(x.node, x.keys) for x in plan.exchanges] == [("f", ("k",))]
    assert set(plan.reader.execution_order) == {"s", "f", "raw", "f@exchange"}
    assert plan.reader_sinks == ("raw",) and set(plan.partition_sinks) == {"out", "dd"}
    assert plan.partition.sources == ["f"] and plan.partition.node("f").op.watermark is None
    assert plan.partition.schema_of("f").equals(dag.schema_of("f"))


def test_split_ships_only_the_columns_windows_read():
    windows = (_builder()
               .operator("w", lj.TumblingWindow(10, key="k", aggs={"n": lj.count(), "hi": lj.max("v")}))
               .operator("g", lj.SessionWindow(5, key="k", aggs={"n": lj.count()}))
               .connect("f", "w").connect("f", "g").sink_for("w", "out").sink_for("g", "sessions").build())
    plan = split_dag(windows, 2)
    (x,) = plan.exchanges
    assert (x.node, x.keys, x.schema.names, x.event_time) == ("f@columns", ("k",), ["ts", "k", "v"], "ts")
    assert set(plan.reader.execution_order) == {"s", "f", "f@columns", "f@columns@exchange"}
    assert plan.partition.sources == ["f@columns"] and plan.partition.schema_of("f@columns").equals(x.schema)
    assert plan.partition.schema_of("out").equals(windows.schema_of("out"))
    # an operator that passes rows on, or a window sending late rows on unchanged, needs every column
    for op in (lj.Dedup("k", within=10),
               lj.TumblingWindow(10, key="k", aggs={"n": lj.count()}, late="side_output", late_sink="late")):
        dag = _builder().operator("o", op).connect("f", "o").sink_for("o", "out").build()
        (x,) = split_dag(dag, 2).exchanges
        assert x.node == "f" and x.schema.equals(dag.schema_of("f"))


def test_split_refuses_what_cannot_be_partitioned():
    unkeyed = _builder().operator("w", lj.TumblingWindow(10, aggs={"n": lj.count()})).connect("f", "w") \
        .sink_for("w", "out").build()
    with pytest.raises(lj.PartitioningError, match="'w'.*no key"):
        split_dag(unkeyed, 2)
    assert split_dag(unkeyed, 1).exchanges[0].keys == ()  # one partition needs no key
    regrouped = (_builder().operator("w", lj.TumblingWindow(10, key="k", aggs={"n": lj.count()}))
                 .operator("w2", lj.TumblingWindow(100, key="n", aggs={"c": lj.count()}))
                 .connect("f", "w").connect("w", "w2").sink_for("w2", "out").build())
    with pytest.raises(lj.PartitioningError, match="'w2'.*groups rows by \\['n'\\].*partitioned by \\['k'\\]"):
        split_dag(regrouped, 2)
    stateless = _builder().sink_for("f", "out").build()
    with pytest.raises(lj.PartitioningError, match="no stateful operator"):
        split_dag(stateless, 2)
    renamed = (_builder().operator("p", lj.Project({"key": "j", "ts": "ts"}))
               .operator("w", lj.TumblingWindow(10, key="key", aggs={"n": lj.count()}))
               .operator("w2", lj.TumblingWindow(100, key="key", aggs={"c": lj.count()}))
               .connect("f", "p").connect("p", "w").connect("w", "w2").sink_for("w2", "out").build())
    assert split_dag(renamed, 2).exchanges[0].keys == ("key",)


def test_split_join_sides_keep_their_own_keys():
    other = pa.schema([("ts", pa.int64()), ("id", pa.int32()), ("x", pa.int64())])
    dag = (_builder().source("o", other, event_time="ts", watermark=lj.BoundedOutOfOrderness(10))
           .operator("j", lj.IntervalJoin("k", "id", -5, 5))
           .connect("f", "j", port="left").connect("o", "j", port="right").sink_for("j", "out").build())
    plan = split_dag(dag, 3)
    assert {x.node: x.keys for x in plan.exchanges} == {"f": ("k",), "o": ("id",)}


# ----------------------------------------------------------------------------- source shards

def _table(n=10_000):
    rng = np.random.default_rng(1)
    return pa.table({"ts": np.arange(n), "k": rng.integers(0, 50, n)})


def _whole(source, start=0):
    batches = list(source.batches(start))
    assert all(b.num_rows for b in batches)
    return pa.Table.from_batches(batches, schema=source.schema)


def _check_shards(source, shards, expected: pa.Table):
    parts = source.split(shards)
    assert len(parts) == shards
    got = pa.concat_tables([_whole(p) for p in parts])
    assert got.num_rows == expected.num_rows
    assert got.sort_by("ts").equals(expected.sort_by("ts"))
    for p in parts:  # every shard replays from any position
        whole = _whole(p)
        if whole.num_rows > 3:
            assert _whole(p, whole.num_rows // 2 + 1).equals(whole.slice(whole.num_rows // 2 + 1))


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_memory_parquet_concat_and_default_sources_split_into_disjoint_shards(tmp_path, shards):
    t = _table()
    _check_shards(lj.io.MemorySource(t.to_batches(max_chunksize=700)), shards, t)
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=900)
    src = lj.io.ParquetSource(tmp_path / "t.parquet", batch_size=256)
    _check_shards(src, shards, t)
    assert src.split(shards)[0].row_groups == list(range(0, 12, shards))
    paths = []
    for i in range(5):
        pq.write_table(t.slice(i * 2_000, 2_000), tmp_path / f"p{i}.parquet")
        paths.append(tmp_path / f"p{i}.parquet")
    concat = lj.io.as_source(paths)
    assert isinstance(concat, lj.io.ConcatSource)
    _check_shards(concat, shards, t)
    one = lj.io.StreamSource(lambda: t.to_reader(max_chunksize=999))
    parts = one.split(shards)
    assert _whole(parts[0]).equals(_whole(one)) and all(p.total_rows == 0 for p in parts[1:])


def test_nexmark_sources_equal_the_generator_and_split_by_chunk():
    events = lj.nexmark.generate(120_000, seed=5, chunk_size=10_000)
    srcs = lj.nexmark.sources(120_000, seed=5, chunk_size=10_000)
    for stream, src in srcs.items():
        whole = events.table(stream)
        assert src.total_rows == whole.num_rows
        assert _whole(src).equals(whole)
        parts = src.split(3)
        assert [p.chunks for p in parts] == [list(range(i, 12, 3)) for i in range(3)]
        by_chunk = {c: b for p in parts for c, b in zip(p.chunks, p.batches())}  # one batch per chunk here
        assert pa.Table.from_batches([by_chunk[c] for c in range(12)]).equals(whole)
        k = whole.num_rows // 3 + 5
        assert _whole(src, k).equals(whole.slice(k))
