"""The SQL corpus (``sql_corpus.CASES``) against DuckDB running each query's batch equivalent.

The events have unique, out-of-order times, skewed keys with nulls, null prices and strings; each
group of cases is compiled into one DAG (one sink per case) and fed the events cut at random, with an
empty and a one-row batch among them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj
import sql_corpus
from conftest import split_table
from helpers import SCHEMA, assert_rows, duck, run_bids

DDL = "CREATE TABLE bids (WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);\n"
ROWS = 2_000


def corpus_events(seed: int) -> pa.Table:
    """Unique times 9 ms apart arriving shuffled within blocks of 16 (up to 135 ms out of order); for odd seeds
    the string column is dictionary-encoded (as a source's strings often are)."""
    rng = np.random.default_rng(seed)
    ts = (np.arange(ROWS, dtype=np.int64) * 9).reshape(-1, 16)
    ts = rng.permuted(ts, axis=1).ravel()
    auction = np.minimum(rng.zipf(1.4, ROWS), 60).astype(np.int64)
    price = np.round(rng.uniform(0, 100, ROWS), 1)
    ch = pa.array(rng.choice(["web", "app", "api"], ROWS), mask=rng.random(ROWS) < 0.03)
    table = pa.table({"ts": ts, "auction": pa.array(auction, mask=rng.random(ROWS) < 0.03),
                      "price": pa.array(price, mask=rng.random(ROWS) < 0.05), "ch": ch}, schema=SCHEMA)
    if seed % 2:
        table = table.set_column(3, "ch", pc.dictionary_encode(table.column("ch")))
    return table


def _stateful(query: str) -> bool:
    return any(word in query for word in ("GROUP BY", "JOIN", "OVER", "EXISTS", "SELECT auction FROM", " bids b"))


def _groups() -> list[list[tuple[str, str, str]]]:
    """The cases in groups that share a DAG: eight filters and maps, or two stateful queries (a plan's compile
    grows faster than its size), reading the source at most eight times (it routes to eight operators)."""
    groups, current, reads = [], [], 0
    for case in sql_corpus.CASES:
        n = case[1].count("bids")
        size = 2 if _stateful(case[1]) else 8
        if current and (len(current) >= size or reads + n > 8 or _stateful(case[1]) != _stateful(current[0][1])):
            groups.append(current)
            current, reads = [], 0
        current.append(case)
        reads += n
    return groups + [current]


GROUPS = _groups()


def test_the_corpus_is_large():
    assert len(sql_corpus.CASES) >= 150
    assert sum(len(g) for g in GROUPS) == len(sql_corpus.CASES)


@pytest.mark.parametrize("g", range(len(GROUPS)))
def test_corpus_queries_equal_duckdb(g):
    cases = GROUPS[g]
    table = corpus_events(seed=g)
    text = DDL + "".join(f"INSERT INTO c{i} {query};\n" for i, (_, query, _) in enumerate(cases))
    rng = np.random.default_rng(1_000 + g)
    cuts = list(rng.integers(0, ROWS + 1, 10)) + [7, 7, 8]  # an empty batch and a one-row batch
    _, out = run_bids(lj.sql(text, sources={"bids": table.schema}), split_table(table, cuts))
    failures = []
    for i, (kind, query, oracle) in enumerate(cases):
        got = out[f"c{i}"]
        if kind == "changelog":
            got = lj.apply_changelog(got)
        try:
            assert_rows(got, duck(oracle, table).cast(got.schema))
        except (AssertionError, pa.ArrowInvalid) as e:
            failures.append(f"{query}\n    {e}")
    assert not failures, "\n".join(failures)
