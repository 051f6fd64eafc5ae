"""User-defined aggregates (lj.UserAggregate) in every window kind, against DuckDB."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import laminar_jit as lj
from helpers import GAP, SCHEMA, SIZE, bursts, events

RMS = lj.UserAggregate(
    "rms", state={"ss": np.float64, "n": np.int64},
    update=lambda st, x: (st[0] + x * x, st[1] + 1),
    merge=lambda a, b: (a[0] + b[0], a[1] + b[1]),
    finalize=lambda st: np.sqrt(st[0] / st[1]),
)


def _span_update(st, x):
    return min(st[0], x), max(st[1], x)


SPAN = lj.UserAggregate(  # max - min, with a non-zero initial state
    "span", state={"lo": (np.float64, np.inf), "hi": (np.float64, -np.inf)},
    update=_span_update, merge=lambda a, b: (min(a[0], b[0]), max(a[1], b[1])),
    finalize=lambda st: st[1] - st[0],
)

AGGS = {"n": lj.count(), "rms": RMS("price"), "span": SPAN("price")}
SQL_AGGS = ("count(*) AS n, sqrt(sum(price * price) / count(price)) AS rms, max(price) - min(price) AS span")


def _run(op, table, chunk):
    dag = (lj.DagBuilder()
           .source("bids", SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
           .operator("w", op).connect("bids", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    for b in table.to_batches(max_chunksize=chunk):
        ex.process_batch("bids", b)
    ex.finish()
    assert ex.metrics.late_events == 0
    return pl.from_arrow(ex.take_sink_outputs("out"))


def _check(got: pl.DataFrame, want: pl.DataFrame):
    assert got.columns == want.columns and got.height == want.height
    assert got.select("window_start", "window_end", "auction", "n").equals(
        want.select("window_start", "window_end", "auction", "n"), null_equal=True)
    for c in ("rms", "span"):
        assert (got[c].is_null() == want[c].is_null()).all()
        assert np.allclose(got[c].drop_nulls().to_numpy(), want[c].drop_nulls().to_numpy(), equal_nan=True)


def _clean(n, seed, gen=events):
    table = gen(n, seed=seed)  # NaN prices make max-min NaN in both engines; keep them out of span
    price = table.column("price").to_numpy(zero_copy_only=False)
    fixed = pa.array(np.where(np.isnan(price), 1.0, price), mask=table.column("price").is_null().to_numpy(
        zero_copy_only=False))
    return table.set_column(2, "price", fixed)


@pytest.mark.parametrize("slide", [SIZE, 250])
def test_user_aggregate_in_tumbling_and_sliding_windows(slide):
    table = _clean(15_000, seed=21)
    op = lj.TumblingWindow(size=SIZE, key="auction", aggs=AGGS) if slide == SIZE else \
        lj.SlidingWindow(size=SIZE, slide=slide, key="auction", aggs=AGGS)
    got = _run(op, table, 2_000)
    con = duckdb.connect()
    con.register("t", table)
    want = con.sql(f"""
        WITH w AS (SELECT *, unnest(generate_series((floor((ts - {SIZE}) / {slide})::BIGINT + 1) * {slide},
                                                    (ts // {slide}) * {slide}, {slide})) AS window_start FROM t)
        SELECT window_start, window_start + {SIZE} AS window_end, auction, {SQL_AGGS}
        FROM w GROUP BY ALL ORDER BY window_end, auction NULLS FIRST""").pl()
    _check(got, want)


def test_user_aggregate_merges_sessions():
    table = _clean(15_000, seed=22, gen=bursts)
    got = _run(lj.SessionWindow(gap=GAP, key="auction", aggs=AGGS), table, 1_500)
    t = table.append_column("arrival", pa.array(np.arange(table.num_rows)))
    con = duckdb.connect()
    con.register("t", t)
    want = con.sql(f"""
        WITH d AS (SELECT *, ts - lag(ts) OVER (PARTITION BY auction ORDER BY ts, arrival) AS step FROM t),
             s AS (SELECT *, sum(CASE WHEN step IS NULL OR step >= {GAP} THEN 1 ELSE 0 END)
                             OVER (PARTITION BY auction ORDER BY ts, arrival ROWS UNBOUNDED PRECEDING) AS sid FROM d)
        SELECT min(ts) AS window_start, max(ts) + {GAP} AS window_end, auction, {SQL_AGGS}
        FROM s GROUP BY auction, sid ORDER BY window_end, auction NULLS FIRST""").pl()
    _check(got, want)


def test_user_aggregate_errors_name_the_operator():
    def build(agg):
        return (lj.DagBuilder().source("s", SCHEMA, event_time="ts")
                .operator("w", lj.TumblingWindow(size=10, aggs={"a": agg})).connect("s", "w").sink_for("w", "o").build())

    bad_arity = lj.UserAggregate("one", state={"a": np.float64, "b": np.float64},
                                 update=lambda st, x: (st[0] + x,), merge=lambda a, b: a, finalize=lambda st: st[0])
    with pytest.raises(lj.KernelError, match="'w'.*one\\('price'\\).*update returns.*tuple of 2"):
        build(bad_arity("price"))
    broken = lj.UserAggregate("broken", state={"a": np.float64},
                              update=lambda st, x: (st[0] + x.nope,), merge=lambda a, b: a, finalize=lambda st: st[0])
    with pytest.raises(lj.KernelError, match="'w'.*broken.*update does not compile"):
        build(broken("price"))
    with pytest.raises(ValueError, match="other than \\['_n'\\]"):
        lj.UserAggregate("s", state={"_n": np.int64}, update=None, merge=None, finalize=None)
    with pytest.raises(ValueError, match="numeric"):
        lj.UserAggregate("s", state={"a": np.str_}, update=None, merge=None, finalize=None)


def test_readme_rms_example():
    rms = lj.UserAggregate("rms", state={"ss": np.float64, "n": np.int64},
                           update=lambda st, x: (st[0] + x * x, st[1] + 1),
                           merge=lambda a, b: (a[0] + b[0], a[1] + b[1]),
                           finalize=lambda st: np.sqrt(st[0] / st[1]))
    got = _run(lj.TumblingWindow(size=60_000, key="auction", aggs={"rms": rms("price")}),
               pa.table({"ts": [0, 10, 70_000], "auction": [1, 1, 1], "price": pa.array([3.0, 4.0, None]),
                         "ch": ["a", "b", "c"]}, schema=SCHEMA), 10)
    assert got.rows() == [(0, 60_000, 1, np.sqrt(12.5)), (60_000, 120_000, 1, None)]
