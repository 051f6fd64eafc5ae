"""Replayable sources: every start row gives exactly the rest of the data."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from laminar_jit.errors import CheckpointError
from laminar_jit.io import CsvSource, IpcSource, MemorySource, ParquetSource, Source, StreamSource, as_source
from laminar_jit.io.shards import ShardsRest, resume_shards, split_position

N = 10_000
SCHEMA = pa.schema([
    ("ts", pa.int64()),
    ("key", pa.int32()),
    ("price", pa.float64()),
    ("name", pa.string()),
    ("flag", pa.bool_()),
])


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rng = np.random.default_rng(42)
    price = np.round(rng.uniform(-100, 100, N), 3)
    return pa.table({
        "ts": np.arange(N, dtype=np.int64) * 7 + rng.integers(-50, 50, N),
        "key": rng.integers(0, 100, N).astype(np.int32),
        "price": pa.array(price, mask=rng.random(N) < 0.1),
        "name": pa.array(rng.choice(["alpha", "b", "", "gamma delta"], N)),
        "flag": rng.random(N) < 0.5,
    }, schema=SCHEMA)


def uneven_batches(table: pa.Table) -> list[pa.RecordBatch]:
    cuts = [0, 1, 1, 500, 2_345, 2_346, 5_000, 9_999, N]  # includes empty and 1-row pieces
    return [table.slice(lo, hi - lo).combine_chunks().to_batches()[0] if hi > lo
            else pa.RecordBatch.from_pylist([], schema=table.schema)
            for lo, hi in zip(cuts[:-1], cuts[1:])]


def start_rows(boundaries=(), total=N) -> list[int]:
    rng = np.random.default_rng(7)
    rows = {0, 1, 2, total - 1, total}
    for b in boundaries:
        rows.update(r for r in (b - 1, b, b + 1) if 0 <= r <= total)
    rows.update(int(r) for r in rng.integers(0, total, 12))
    return sorted(rows)


def collect(source: Source, start: int, batch_size: int | None = None) -> pa.Table:
    batches = list(source.batches(start))
    assert all(b.num_rows > 0 for b in batches)
    if batch_size is not None:
        assert all(b.num_rows <= batch_size for b in batches)
    assert all(b.schema.equals(source.schema) for b in batches)
    return pa.Table.from_batches(batches, schema=source.schema)


def check_replay(source: Source, table: pa.Table, rows, batch_size: int | None = None) -> None:
    assert collect(source, 0, batch_size).equals(table)
    for k in rows:
        assert collect(source, k, batch_size).equals(table.slice(k)), k


def check_bad_starts(source: Source, total: int = N) -> None:
    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ValueError):
            list(source.batches(bad))
    for beyond in (total + 1, total + 1_000):
        with pytest.raises(CheckpointError, match=rf"{beyond}.*{total}") as info:
            list(source.batches(beyond))
        assert source.describe() in str(info.value)


# ---------------------------------------------------------------- memory


def test_memory_replay(table):
    batches = uneven_batches(table)
    src = MemorySource(batches)
    assert src.total_rows == N and src.schema.equals(SCHEMA)
    assert repr(src) == src.describe() == "MemorySource(7 batches, 10000 rows)"
    check_replay(src, table, start_rows(np.cumsum([b.num_rows for b in batches])))
    check_bad_starts(src)
    assert MemorySource(table).total_rows == N
    assert collect(MemorySource(batches[3]), 0).equals(pa.Table.from_batches([batches[3]]))
    assert collect(MemorySource(tuple(batches)), 4_321).equals(table.slice(4_321))


def test_a_source_continued_as_shards_reads_what_each_shard_has_left(table):
    # positions a partitioned run's two readers reached in their shards (MemorySource deals batches)
    batches = table.to_batches(max_chunksize=1_000)
    src = MemorySource(batches)
    shards = src.split(2)
    at = [3_000, 1_500]  # shard 0 three batches in, shard 1 one and a half
    rest = resume_shards(src, "bids", {"bids": 4_500, "bids@shard0/2": 3_000, "bids@shard1/2": 1_500}, "ts")
    assert isinstance(rest, ShardsRest) and rest.total_rows == N
    assert resume_shards(src, "bids", {"bids": 4_500}, "ts") is src  # read whole: itself
    position, got, last_ts = 4_500, [], []
    for batch in rest.batches(position):
        position = rest.position_after(position, batch)
        got.append(batch)
        last_ts.append((rest._taken, pc.max(batch.column("ts")).as_py()))
    want = pa.concat_tables([collect(shard, a) for shard, a in zip(shards, at)])
    assert pa.Table.from_batches(got).sort_by("ts").equals(want.sort_by("ts"))  # each shard's rest, once
    assert position == N and rest.shard_positions("bids") == {"bids@shard0/2": shards[0].total_rows,
                                                              "bids@shard1/2": shards[1].total_rows}
    # each shard once (neither read yet), then the one furthest behind in event time: shard 1, whose next
    # three batches end before shard 0's first
    assert [i for i, _ in last_ts[:5]] == [0, 1, 1, 1, 0]


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_a_position_of_the_whole_source_tells_each_shards(tmp_path, table, shards):
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=777)
    for src in (MemorySource(uneven_batches(table)), ParquetSource(tmp_path / "t.parquet"),
                as_source([MemorySource(table.slice(0, 4_000)), MemorySource(table.slice(4_000))])):
        for position in (0, 1, 2_345, 5_000, N - 1, N):
            at = split_position(src, position, shards)
            assert sum(at) == position
            read = pa.concat_tables([collect(shard, 0).slice(0, a) for shard, a in zip(src.split(shards), at)])
            order = [(c, "ascending") for c in table.column_names]
            assert read.sort_by(order).equals(table.slice(0, position).sort_by(order))  # the prefix, by shards
    assert split_position(StreamSource(table), 10, 2) is None  # deals no parts


def test_memory_errors(table):
    with pytest.raises(ValueError, match="schema"):
        MemorySource([])
    empty = MemorySource([], schema=SCHEMA)
    assert empty.total_rows == 0 and list(empty.batches(0)) == []
    with pytest.raises(CheckpointError):
        list(empty.batches(1))
    good = table.slice(0, 10).to_batches()[0]
    other = pa.record_batch({"ts": pa.array([1], pa.int64())})
    with pytest.raises(ValueError, match=r"batch 2 .*\n(.|\n)*ts: int64") as info:
        MemorySource([good, good, other])
    assert "name: string" in str(info.value)
    with pytest.raises(ValueError, match="batch 0"):
        MemorySource([good], schema=other.schema)
    with pytest.raises(TypeError, match="item 1"):
        MemorySource([good, table])
    with pytest.raises(TypeError):
        MemorySource({"ts": [1]})


# ---------------------------------------------------------------- parquet


@pytest.mark.parametrize("batch_size", [1_000, 4_096, 65_536])
def test_parquet_replay(tmp_path, table, batch_size):
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=1_337)
    src = ParquetSource(path, batch_size=batch_size)
    assert src.total_rows == N and src.schema.equals(SCHEMA)
    assert src.describe() == f"ParquetSource({str(path)!r})"
    groups = range(0, N, 1_337)
    check_replay(src, table, start_rows(list(groups) + [g + batch_size for g in groups]), batch_size)
    check_bad_starts(src)


def test_parquet_columns_and_errors(tmp_path, table):
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=1_337)
    src = ParquetSource(str(path), batch_size=777, columns=["name", "ts"])
    assert src.schema.names == ["name", "ts"]
    expected = table.select(["name", "ts"])
    check_replay(src, expected, [0, 5, 1_336, 1_337, 1_338, 9_000, N], 777)
    with pytest.raises(ValueError, match="nope"):
        ParquetSource(path, columns=["nope"])
    for bad in (0, -5, True, 2.5):
        with pytest.raises(ValueError, match="batch_size"):
            ParquetSource(path, batch_size=bad)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        ParquetSource(tmp_path / "missing.parquet")


def test_parquet_empty_file(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(SCHEMA.empty_table(), path)
    src = ParquetSource(path)
    assert src.total_rows == 0 and list(src.batches(0)) == []
    with pytest.raises(CheckpointError):
        list(src.batches(1))


# ---------------------------------------------------------------- csv


@pytest.mark.parametrize("batch_size", [100, 1_000, 65_536])
def test_csv_replay(tmp_path, table, batch_size):
    path = tmp_path / "data.csv"
    pa_csv.write_csv(table, path)
    src = CsvSource(path, SCHEMA, batch_size=batch_size, block_size=64 * 1024)
    assert src.total_rows is None
    rows = [0, 1, 2, 999, 1_000, 1_001, 4_567, N - 1, N] if batch_size == 100 else start_rows()
    check_replay(src, table, rows, batch_size)
    check_bad_starts(src)


def test_csv_schema_order_delimiter_and_errors(tmp_path, table):
    path = tmp_path / "data.tsv"
    pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(delimiter="\t"))
    schema = pa.schema([("name", pa.string()), ("price", pa.float32()), ("ts", pa.int64())])
    src = CsvSource(path, schema, batch_size=3_000, delimiter="\t")
    expected = table.select(["name", "price", "ts"]).cast(schema)
    check_replay(src, expected, [0, 2_999, 3_000, 7_777, N], 3_000)
    with pytest.raises(TypeError, match="schema"):
        CsvSource(path, ["name"])
    with pytest.raises(FileNotFoundError):
        CsvSource(tmp_path / "missing.csv", schema)
    with pytest.raises(pa.ArrowKeyError, match="nope"):
        CsvSource(path, pa.schema([("nope", pa.int64())]), delimiter="\t")
    with pytest.raises(ValueError, match="batch_size"):
        CsvSource(path, schema, batch_size=0)


# ---------------------------------------------------------------- ipc


def write_ipc(path, table, stream: bool) -> list[int]:
    batches = uneven_batches(table)
    new = pa.ipc.new_stream if stream else pa.ipc.new_file
    with new(path, table.schema) as writer:
        for b in batches:
            writer.write_batch(b)
    return list(np.cumsum([b.num_rows for b in batches]))


@pytest.mark.parametrize("suffix", [".arrow", ".arrows"])
def test_ipc_replay(tmp_path, table, suffix):
    path = tmp_path / f"data{suffix}"
    ends = write_ipc(path, table, stream=suffix == ".arrows")
    src = IpcSource(path)
    assert src.format == ("stream" if suffix == ".arrows" else "file")
    assert src.total_rows == (None if src.format == "stream" else N)
    assert src.schema.equals(SCHEMA)
    check_replay(src, table, start_rows(ends))
    check_bad_starts(src)


def test_ipc_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        IpcSource(tmp_path / "missing.arrow")
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not arrow at all" * 10)
    with pytest.raises(ValueError, match="neither"):
        IpcSource(junk)


# ---------------------------------------------------------------- arrow c stream


def test_stream_polars_replay(table):
    df = pl.from_arrow(table)
    src = StreamSource(df, batch_size=900)
    assert src.total_rows is None
    assert src.schema.names == SCHEMA.names
    # Polars exports its own types (e.g. string_view): compare after casting back
    expected = pa.Table.from_batches(list(src.batches(0))).cast(SCHEMA)
    assert expected.equals(table)
    for k in start_rows():
        got = collect(src, k, 900).cast(SCHEMA)
        assert got.equals(table.slice(k)), k
    check_bad_starts(src)


def test_stream_duckdb_and_callable():
    rel = duckdb.sql("select range::bigint as i, range::varchar as s from range(5000)")
    src = StreamSource(rel, batch_size=1_024)
    expected = pa.table({"i": pa.array(range(5000), pa.int64()), "s": [str(i) for i in range(5000)]})
    check_replay(src, expected.cast(src.schema), [0, 1, 1_023, 1_024, 4_999, 5_000], 1_024)
    con = duckdb.connect()
    lazy = StreamSource(lambda: con.sql("select range::bigint as i from range(300)"))
    assert collect(lazy, 123).column("i").to_pylist() == list(range(123, 300))
    assert collect(lazy, 0).num_rows == 300
    with pytest.raises(CheckpointError, match="301.*300"):
        list(lazy.batches(301))


def test_stream_one_shot_reader(table):
    reader = pa.RecordBatchReader.from_batches(SCHEMA, uneven_batches(table))
    src = StreamSource(reader)
    assert collect(src, 10).equals(table.slice(10))
    with pytest.raises(CheckpointError, match="one-shot"):
        list(src.batches(0))
    # a consumed stream exported through a wrapper is caught by its row count
    inner = pa.RecordBatchReader.from_batches(SCHEMA, table.to_batches())

    class Wrapper:
        def __arrow_c_stream__(self, requested_schema=None):
            return inner.__arrow_c_stream__(requested_schema)

    wrapped = StreamSource(Wrapper())
    assert collect(wrapped, 0).equals(table)
    with pytest.raises(CheckpointError, match="one-shot"):
        list(wrapped.batches(0))


def test_stream_errors():
    with pytest.raises(TypeError, match="__arrow_c_stream__"):
        StreamSource(42)
    with pytest.raises(ValueError, match="batch_size"):
        StreamSource(pa.table({"x": [1]}), batch_size=0)


# ---------------------------------------------------------------- as_source


def test_as_source_dispatch(tmp_path, table):
    src = MemorySource(table)
    assert as_source(src) is src
    assert isinstance(as_source(table), MemorySource)
    assert isinstance(as_source(table.to_batches()[0]), MemorySource)
    assert isinstance(as_source(uneven_batches(table)), MemorySource)
    assert isinstance(as_source(tuple(uneven_batches(table))), MemorySource)
    pq.write_table(table, tmp_path / "a.parquet")
    pq.write_table(table, tmp_path / "a.PQ")
    assert isinstance(as_source(tmp_path / "a.parquet"), ParquetSource)
    assert isinstance(as_source(str(tmp_path / "a.PQ")), ParquetSource)
    for suffix, stream in ((".arrow", False), (".ipc", False), (".feather", False), (".arrows", True)):
        write_ipc(tmp_path / f"a{suffix}", table, stream)
        ipc = as_source(tmp_path / f"a{suffix}")
        assert isinstance(ipc, IpcSource) and ipc.format == ("stream" if stream else "file")
    assert isinstance(as_source(pl.DataFrame({"x": [1, 2]})), StreamSource)
    rel = duckdb.connect().sql("select 42 as answer")
    duck = as_source(rel)
    assert isinstance(duck, StreamSource)
    assert collect(duck, 0).column("answer").to_pylist() == [42]
    reader = pa.RecordBatchReader.from_batches(SCHEMA, table.to_batches())
    assert isinstance(as_source(reader), StreamSource)


def test_as_source_errors(tmp_path, table):
    with pytest.raises(TypeError, match=r"CsvSource\(path, schema="):
        as_source(tmp_path / "a.csv")
    with pytest.raises(TypeError, match="suffix"):
        as_source("data.txt")
    with pytest.raises(TypeError, match="accepted"):
        as_source(42)
    with pytest.raises(TypeError, match="accepted"):
        as_source({"x": [1]})
    with pytest.raises(TypeError):
        as_source([table, table])
    with pytest.raises(ValueError, match="schema"):
        as_source([])
    with pytest.raises(FileNotFoundError):
        as_source(tmp_path / "missing.parquet")
