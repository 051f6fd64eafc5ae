"""Processing time (``PROCTIME()``) and lookup joins of bounded tables in SQL, against DuckDB."""

from __future__ import annotations

import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj
from conftest import split_table
from helpers import assert_rows, bids, run_bids


def rates() -> pa.Table:
    """A bounded table keyed by ``key`` (0..49 without the multiples of 7), with a number, a string and a flag."""
    keys = np.array([k for k in range(50) if k % 7], dtype=np.int64)
    return pa.table({"key": keys, "rate": 1.0 + keys / 10, "name": [f"r{k}" for k in keys.tolist()],
                     "flag": (keys % 3 == 0).astype(np.int64)})


def channels() -> pa.Table:
    return pa.table({"channel": ["web", "api", "shop"], "cid": pa.array([1, 2, 3], pa.int64())})


def run_lookup(query: str, table: pa.Table, seed: int, **tables) -> pa.Table:
    dag = lj.sql(query, sources={"bids": table.schema, **tables})
    rng = np.random.default_rng(seed)
    cuts = list(rng.integers(0, table.num_rows + 1, 10)) + [5, 5, 6]
    _, out = run_bids(dag, split_table(table, cuts))
    return out["out"]


def duck_lookup(query: str, table: pa.Table, **tables) -> pa.Table:
    con = duckdb.connect()
    con.register("bids", table)
    for name, t in tables.items():
        con.register(name, t)
    return con.sql(query).to_arrow_table()


@pytest.mark.parametrize("query, oracle", [
    ("SELECT b.ts, b.auction, b.price * r.rate AS cost, r.name FROM (SELECT *, PROCTIME() AS pt FROM bids) b "
     "JOIN rates FOR SYSTEM_TIME AS OF b.pt AS r ON b.auction = r.key",
     "SELECT b.ts, b.auction, b.price * r.rate AS cost, r.name FROM bids b JOIN rates r ON b.auction = r.key"),
    ("SELECT b.ts, r.name, r.rate FROM (SELECT ts, auction, PROCTIME() AS pt FROM bids) AS b LEFT JOIN rates "
     "FOR SYSTEM_TIME AS OF b.pt AS r ON MOD(b.auction, 20) = r.key AND r.flag = 1",
     "SELECT b.ts, r.name, r.rate FROM bids b LEFT JOIN (SELECT * FROM rates WHERE flag = 1) r "
     "ON b.auction % 20 = r.key"),
    ("SELECT ts, price, name FROM (SELECT *, PROCTIME() AS pt FROM bids) b JOIN rates FOR SYSTEM_TIME AS OF "
     "b.pt AS r ON r.key = b.auction + 3 WHERE r.rate > 2.5 AND b.price < 70",
     "SELECT ts, price, name FROM bids b JOIN rates r ON r.key = b.auction + 3 WHERE r.rate > 2.5 AND b.price < 70"),
])
def test_lookup_joins_equal_duckdb(query, oracle):
    table = bids(3_000, seed=5)
    got = run_lookup(query, table, seed=6, rates=rates())
    want = duck_lookup(oracle, table, rates=rates())
    assert got.num_rows > 0
    assert_rows(got, want.cast(got.schema))


@pytest.mark.parametrize("dictionary", [False, True])
def test_a_string_key_is_looked_up_once_per_distinct_value(dictionary):
    table = bids(2_000, seed=7)
    ch = pa.array(np.where(np.arange(table.num_rows) % 11 == 0, None, table.column("ch").to_numpy(zero_copy_only=False)))
    table = table.set_column(3, "ch", pc.dictionary_encode(ch) if dictionary else ch)
    query = ("SELECT b.ts, b.ch, c.cid FROM (SELECT *, PROCTIME() AS pt FROM bids) b LEFT JOIN channels FOR "
             "SYSTEM_TIME AS OF b.pt AS c ON b.ch = c.channel")
    got = run_lookup(query, table, seed=8, channels=channels())
    want = duck_lookup("SELECT b.ts, b.ch, c.cid FROM bids b LEFT JOIN channels c ON b.ch = c.channel", table,
                       channels=channels())
    assert_rows(got, want.cast(pa.schema([got.schema.field(0), pa.field("ch", pa.string()), got.schema.field(2)])))


def test_proctime_windows_count_every_row_in_wall_clock_windows():
    table = bids(3_000, seed=9)
    before = int(time.time() * 1000)
    query = ("CREATE VIEW v AS SELECT *, PROCTIME() AS pt FROM bids;\n"
             "SELECT auction, COUNT(*) AS n, window_start FROM TABLE(TUMBLE(TABLE v, DESCRIPTOR(pt), "
             "INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end")
    dag = lj.sql(query, sources={"bids": table.schema})
    assert "ProcessingTime()" in lj.explain(query, sources={"bids": table.schema})
    got = run_lookup(query, table, seed=10)
    starts = pc.cast(got.column("window_start"), pa.int64()).to_numpy()
    assert ((starts >= before // 10_000 * 10_000) & (starts <= time.time() * 1000)).all()
    totals = got.group_by("auction").aggregate([("n", "sum")]).rename_columns(["auction", "n"])
    want = duck_lookup("SELECT auction, count(*) AS n FROM bids GROUP BY auction", table)
    assert_rows(totals, want.cast(totals.schema))
    assert dag.sources == ["bids"]


def test_lookup_mistakes_are_named():
    schema = bids(10, seed=0).schema
    stream = "SELECT b.ts FROM (SELECT *, PROCTIME() AS pt FROM bids) b JOIN rates FOR SYSTEM_TIME AS OF b.pt AS r "
    twice = pa.concat_tables([rates(), rates().slice(0, 1)])
    with pytest.raises(lj.SqlError, match=r"lookup table 'rates': column 'key' has repeated values"):
        lj.sql(stream + "ON b.auction = r.key", sources={"bids": schema, "rates": twice})
    with pytest.raises(lj.SqlError, match=r"pass 'rates' in sources as a pyarrow.Table"):
        lj.sql(stream + "ON b.auction = r.key", sources={"bids": schema, "rates": rates().schema})
    with pytest.raises(lj.SqlError, match=r"a lookup matches one expression"):
        lj.sql(stream + "ON b.auction < r.key", sources={"bids": schema, "rates": rates()})
    with pytest.raises(lj.SqlError, match=r"does not compare with"):
        lj.sql(stream + "ON b.ch = r.key", sources={"bids": schema, "rates": rates()})
    with pytest.raises(lj.SchemaError, match=r"table 'rates' has no column 'kee'.*did you mean 'key'"):
        lj.sql(stream + "ON b.auction = r.kee", sources={"bids": schema, "rates": rates()})
    with pytest.raises(lj.SqlError, match=r"PROCTIME\(\) is a table's processing time"):
        lj.sql("SELECT auction, PROCTIME() AS pt FROM (SELECT auction, COUNT(*) AS n FROM bids GROUP BY auction)",
               sources={"bids": schema})
