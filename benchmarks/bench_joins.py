"""Joins against DuckDB on the same in-memory tables.

* ``Asof``: 5 M trades joined with the prevailing quote among 5 M quotes over
  1,000 symbols (backward, inner) — DuckDB's ``ASOF JOIN``.
* ``Interval``: 2 M rows per side over 10,000 keys, ``right.ts - left.ts``
  within ±1 s — DuckDB's ``BETWEEN`` join. ``IntervalFloor``: its essential work
  as one compiled loop over the same batches (``benchmarks/floors.py``);
  ``IntervalBucketFloor``: the same with probes bounded as the engine's are.
* ``SkewedInterval``: 1 M rows per side over 10,000 keys, one of which has
  ``hot_share`` of the rows, every row up to 100 ms late (the watermark's
  bound), within ±10 ms; with ``lead`` the right side runs 100 s of event
  time ahead of the left (so the hot key's right rows pile up while the
  left watermark holds them). Insert and probe cost per row must stay flat
  as the hot key grows: ``track_input_rows_per_s`` against ``hot_share``.
  ``SkewedIntervalDuckDB`` runs the same join in DuckDB.

laminar streams both tables in 65,536-row batches, alternating between the
two inputs in event-time order (the way two live feeds arrive); DuckDB sees
whole tables. ``track_rows_out`` is the join's row count, which DuckDB's
query returns too (a correctness canary); ``track_input_rows_per_s`` is both
inputs' rows over the laminar run's wall time.
"""

from __future__ import annotations

import time

import duckdb
import numpy as np
import pyarrow as pa

import laminar_jit as lj

from . import common, floors

BATCH = 65_536
TRADES = pa.schema([("ts", pa.int64()), ("symbol", pa.int64()), ("price", pa.float64()), ("size", pa.int64())])
QUOTES = pa.schema([("ts", pa.int64()), ("symbol", pa.int64()), ("bid", pa.float64()), ("ask", pa.float64())])
LEFT = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("a", pa.float64())])
RIGHT = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("b", pa.float64())])


def asof_tables() -> tuple[pa.Table, pa.Table]:
    """5 M trades and 5 M quotes (20 K each with ``LAMINAR_BENCH_SMALL=1``) over 1,000 symbols, in time order."""
    n = 20_000 if common.small() else 5_000_000
    rng = np.random.default_rng(common.SEED)
    span = n * 2  # ms: 500 rows per second per side
    trades = pa.table({"ts": np.sort(rng.integers(0, span, n)), "symbol": rng.integers(0, 1000, n),
                       "price": rng.uniform(10, 500, n), "size": rng.integers(1, 1000, n)}, schema=TRADES)
    mid = rng.uniform(10, 500, n)
    quotes = pa.table({"ts": np.sort(rng.integers(0, span, n)), "symbol": rng.integers(0, 1000, n),
                       "bid": mid - 0.01, "ask": mid + 0.01}, schema=QUOTES)
    return trades, quotes


def interval_tables() -> tuple[pa.Table, pa.Table]:
    """2 M rows per side (20 K with ``LAMINAR_BENCH_SMALL=1``) over 10,000 keys, 1,000 rows per second per side."""
    n = 20_000 if common.small() else 2_000_000
    rng = np.random.default_rng(common.SEED + 1)
    left = pa.table({"ts": np.sort(rng.integers(0, n, n)), "k": rng.integers(0, 10_000, n),
                     "a": rng.uniform(0, 1, n)}, schema=LEFT)
    right = pa.table({"ts": np.sort(rng.integers(0, n, n)), "k": rng.integers(0, 10_000, n),
                      "b": rng.uniform(0, 1, n)}, schema=RIGHT)
    return left, right


#: Rows per side of ``SkewedInterval``, and how far (ms) its rows may arrive late.
SKEW_ROWS, SKEW_DISORDER = 1_000_000, 100


def skewed_tables(hot_share: float, lead_ms: int = 0) -> tuple[pa.Table, pa.Table]:
    """1 M rows per side (20 K with ``LAMINAR_BENCH_SMALL=1``), key 0 holding ``hot_share`` of them.

    One row per ms per side; each row's time is its slot minus up to
    ``SKEW_DISORDER`` ms, so rows arrive out of order by up to the
    watermark's bound and none is late. The right side's times are shifted
    ``lead_ms`` ahead (at most a tenth of the span, so the small tables still
    overlap).
    """
    n = 20_000 if common.small() else SKEW_ROWS
    lead_ms = min(lead_ms, n // 10)
    rng = np.random.default_rng(common.SEED + 2)

    def side(schema, shift, value):
        ts = np.arange(n, dtype=np.int64) - rng.integers(0, SKEW_DISORDER, n) + shift
        keys = np.where(rng.random(n) < hot_share, 0, rng.integers(1, 10_000, n))
        return pa.table({"ts": ts, "k": keys, value: rng.uniform(0, 1, n)}, schema=schema)

    return side(LEFT, 0, "a"), side(RIGHT, lead_ms, "b")


def _feed(left: pa.Table, right: pa.Table) -> list[tuple[str, pa.RecordBatch]]:
    """Both tables cut into batches, alternating left/right (both are in time order and span the same times)."""
    lb, rb = left.to_batches(BATCH), right.to_batches(BATCH)
    out = []
    for i in range(max(len(lb), len(rb))):
        out += [("left", b) for b in lb[i:i + 1]] + [("right", b) for b in rb[i:i + 1]]
    return out


def join_dag(left_schema, right_schema, op) -> lj.StreamingDag:
    """``left`` and ``right`` sources (watermarks 100 ms behind) into one join and a sink."""
    wm = lj.BoundedOutOfOrderness(max_delay=100)
    return (lj.DagBuilder()
            .source("left", left_schema, event_time="ts", watermark=wm)
            .source("right", right_schema, event_time="ts", watermark=wm)
            .operator("j", op).connect("left", "j", port="left").connect("right", "j", port="right")
            .sink_for("j", "out").build())


class _Join:
    timeout = 600
    make_tables = None
    make_op = None

    def setup(self):
        left, right = type(self).make_tables()
        self.feed = _feed(left, right)
        self.rows_in = left.num_rows + right.num_rows
        self.dag = join_dag(left.schema, right.schema, type(self).make_op())
        self._run(self.feed[:2])  # compile / load the plans

    def _run(self, feed=None):
        ex = lj.DagExecutor(self.dag)
        for source, batch in self.feed if feed is None else feed:
            ex.process_batch(source, batch)
        ex.finish()
        return ex.take_sink_outputs("out")

    def time_laminar(self):
        self._run()

    def peakmem_laminar(self):
        self._run()

    def track_rows_out(self):
        return self._run().num_rows

    track_rows_out.unit = "rows"

    def track_input_rows_per_s(self):
        start = time.perf_counter()
        self._run()
        return self.rows_in / (time.perf_counter() - start)

    track_input_rows_per_s.unit = "rows/s"


class _DuckDB:
    timeout = 600
    make_tables = None
    sql = ""

    def setup(self):
        left, right = type(self).make_tables()
        self.con = duckdb.connect()
        self.con.register("l", left)
        self.con.register("r", right)

    def teardown(self):
        self.con.close()

    def time_duckdb(self):
        self.con.sql(self.sql).to_arrow_table()

    def track_rows_out(self):
        return self.con.sql(f"SELECT count(*) AS n FROM ({self.sql})").to_arrow_table()["n"][0].as_py()

    track_rows_out.unit = "rows"


class Asof(_Join):
    """Trades with the prevailing quote of their symbol (DuckDB: :class:`AsofDuckDB`)."""

    make_tables = staticmethod(asof_tables)
    make_op = staticmethod(lambda: lj.AsofJoin("symbol", direction="backward"))


class AsofDuckDB(_DuckDB):
    """The :class:`Asof` workload as DuckDB's ``ASOF JOIN``."""

    make_tables = staticmethod(asof_tables)
    sql = ("SELECT l.*, r.ts AS ts_right, r.symbol AS symbol_right, r.bid, r.ask "
           "FROM l ASOF JOIN r ON l.symbol = r.symbol AND l.ts >= r.ts")


class Interval(_Join):
    """Rows within ±1 s of each other with equal keys (DuckDB: :class:`IntervalDuckDB`)."""

    make_tables = staticmethod(interval_tables)
    make_op = staticmethod(lambda: lj.IntervalJoin("k", "k", lower=-1_000, upper=1_000))


class IntervalDuckDB(_DuckDB):
    """The :class:`Interval` workload as a DuckDB ``BETWEEN`` join."""

    make_tables = staticmethod(interval_tables)
    sql = "SELECT * FROM l JOIN r ON l.k = r.k AND r.ts BETWEEN l.ts - 1000 AND l.ts + 1000"


class IntervalFloor:
    """The :class:`Interval` workload's essential work on one thread (:func:`benchmarks.floors.interval_floor`,
    the same batches in the same order): the yardstick for its input rows per second. ``setup`` checks its
    answer against :class:`IntervalDuckDB`'s query."""

    timeout = 600
    floor = staticmethod(floors.interval_floor)

    def setup(self):
        left, right = interval_tables()
        self.feed = _feed(left, right)
        got = self.floor(self.feed, -1_000, 1_000)  # (compiles)
        con = duckdb.connect()
        con.register("l", left)
        con.register("r", right)
        want = con.sql(IntervalDuckDB.sql).to_arrow_table().rename_columns(got.column_names)
        con.close()
        order = [(c, "ascending") for c in got.column_names]
        assert got.sort_by(order).equals(want.sort_by(order)), (got.num_rows, want.num_rows)

    def time_floor(self):
        self.floor(self.feed, -1_000, 1_000)


class IntervalBucketFloor(IntervalFloor):
    """:class:`IntervalFloor` with the rows listed per key and time bucket
    (:func:`benchmarks.floors.interval_bucket_floor`): the floor of a join whose probes stay bounded when one
    side runs far ahead, as the engine's do (``IntervalFloor`` walks every newer row of a key)."""

    floor = staticmethod(floors.interval_bucket_floor)


class SkewedInterval(_Join):
    """An interval join (±10 ms) under key skew and disorder, optionally with the right side far ahead.

    Parameters are the hot key's share of rows and the right side's lead in
    event time (0 or 100 s). Rows out are ``track_rows_out``; rows in per
    second ``track_input_rows_per_s`` should not fall as the hot key grows.
    """

    params = ([0.0, 0.05, 0.15, 0.3], [0, 100_000])
    param_names = ["hot_share", "lead_ms"]

    def setup(self, hot_share, lead_ms):
        left, right = skewed_tables(hot_share, lead_ms)
        self.feed = _feed(left, right)
        self.rows_in = left.num_rows + right.num_rows
        self.dag = join_dag(left.schema, right.schema, lj.IntervalJoin("k", "k", lower=-10, upper=10))
        self._run(self.feed[:2])

    def time_laminar(self, hot_share, lead_ms):
        self._run()

    def peakmem_laminar(self, hot_share, lead_ms):
        self._run()

    def track_rows_out(self, hot_share, lead_ms):
        return self._run().num_rows

    track_rows_out.unit = "rows"

    def track_input_rows_per_s(self, hot_share, lead_ms):
        return _Join.track_input_rows_per_s(self)

    track_input_rows_per_s.unit = "rows/s"


class SkewedIntervalDuckDB:
    """The :class:`SkewedInterval` workload as a DuckDB ``BETWEEN`` join over the whole tables."""

    params = SkewedInterval.params
    param_names = SkewedInterval.param_names
    timeout = 600
    sql = "SELECT * FROM l JOIN r ON l.k = r.k AND r.ts BETWEEN l.ts - 10 AND l.ts + 10"

    def setup(self, hot_share, lead_ms):
        left, right = skewed_tables(hot_share, lead_ms)
        self.con = duckdb.connect()
        self.con.register("l", left)
        self.con.register("r", right)

    def teardown(self, hot_share, lead_ms):
        self.con.close()

    def time_duckdb(self, hot_share, lead_ms):
        self.con.sql(self.sql).to_arrow_table()

    def track_rows_out(self, hot_share, lead_ms):
        return self.con.sql(f"SELECT count(*) AS n FROM ({self.sql})").to_arrow_table()["n"][0].as_py()

    track_rows_out.unit = "rows"
