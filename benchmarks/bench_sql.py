"""Streaming SQL: a query compiled by ``lj.sql`` against the same DAG built with the Python API, and DuckDB.

``lj.sql`` produces an ordinary DAG, so its step should cost what the
hand-built one costs: ``time_sql`` and ``time_python`` run the same filter
and 10 s tumbling window (count, sum and max of the price, per auction) over
the standard events; :class:`SqlDuckDB` runs the same SQL in DuckDB over the
whole in-memory table; :class:`SqlCumulate` times ``CUMULATE`` windows against DuckDB, and
:class:`SqlNexmark` Nexmark's canonical texts against the hand-built queries.
"""

from __future__ import annotations

import duckdb

import laminar_jit as lj

from . import common
from .bench_windows import SIZE_MS, stream

_QUERY = f"""
CREATE TABLE {common.SOURCE} (WATERMARK FOR ts AS ts - INTERVAL '{common.MAX_DISORDER_MS}' MILLISECOND);
SELECT window_start, auction, COUNT(*) AS n, SUM(price) AS total, MAX(price) AS top
FROM TABLE(TUMBLE(TABLE {common.SOURCE}, DESCRIPTOR(ts), INTERVAL '{SIZE_MS}' MILLISECOND))
WHERE price > 1 GROUP BY window_start, window_end, auction"""


def _positive(price):
    return price > 1


def python_dag() -> lj.StreamingDag:
    """:data:`_QUERY` built with the Python API."""
    aggs = {"n": lj.count(), "total": lj.sum("price"), "top": lj.max("price")}
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("positive", lj.Filter(_positive))
            .operator("per_key", lj.TumblingWindow(size=SIZE_MS, key="auction", aggs=aggs))
            .operator("columns", lj.Project(["window_start", "auction", "n", "total", "top"]))
            .connect(common.SOURCE, "positive").connect("positive", "per_key").connect("per_key", "columns")
            .sink_for("columns", "out").build())


class SqlTumbling:
    """The SQL-compiled and the hand-built DAG of one windowed query, side by side."""

    timeout = 300

    def setup(self):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.sql_dag = lj.sql(_QUERY, sources={common.SOURCE: common.EVENT_SCHEMA})
        self.python_dag = python_dag()
        for dag in (self.sql_dag, self.python_dag):
            common.run_dag(dag, self.batches[:2])  # compile / load the plans

    def time_sql(self):
        stream(self.sql_dag, self.batches)

    def time_python(self):
        stream(self.python_dag, self.batches)

    def track_rows_out(self):
        """Windows emitted (the hand-built DAG and DuckDB emit as many)."""
        return stream(self.sql_dag, self.batches).num_rows

    track_rows_out.unit = "rows"


class SqlDuckDB:
    """The same query in DuckDB over the whole in-memory table."""

    timeout = 300

    def setup(self):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.sql = (f"SELECT ts // {SIZE_MS} * {SIZE_MS} AS window_start, auction, count(*) AS n, sum(price) AS total,"
                    " max(price) AS top FROM events WHERE price > 1 GROUP BY ALL")

    def teardown(self):
        self.con.close()

    def time_duckdb(self):
        self.con.sql(self.sql).to_arrow_table()


_STEP_MS = SIZE_MS // 10
_CUMULATE = f"""
CREATE TABLE {common.SOURCE} (WATERMARK FOR ts AS ts - INTERVAL '{common.MAX_DISORDER_MS}' MILLISECOND);
SELECT window_start, window_end, auction, COUNT(*) AS n, SUM(price) AS total
FROM TABLE(CUMULATE(TABLE {common.SOURCE}, DESCRIPTOR(ts), INTERVAL '{_STEP_MS}' MILLISECOND,
                    INTERVAL '{SIZE_MS}' MILLISECOND))
GROUP BY window_start, window_end, auction"""


class SqlCumulate:
    """``CUMULATE`` windows (a 10 s window reported every second) compiled by ``lj.sql``, and DuckDB computing the
    same windows over the whole in-memory table (each row once per cumulating window it is in)."""

    timeout = 300

    def setup(self):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = lj.sql(_CUMULATE, sources={common.SOURCE: common.EVENT_SCHEMA})
        common.run_dag(self.dag, self.batches[:2])  # compile / load the plan
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.sql = (f"SELECT ws AS window_start, ws + e * {_STEP_MS} AS window_end, auction, count(*) AS n, "
                    f"sum(price) AS total FROM (SELECT *, ts // {SIZE_MS} * {SIZE_MS} AS ws, "
                    f"unnest(range(1, {SIZE_MS // _STEP_MS + 1})) AS e FROM events) "
                    f"WHERE ts < ws + e * {_STEP_MS} GROUP BY ALL")

    def teardown(self):
        self.con.close()

    def time_sql(self):
        stream(self.dag, self.batches)

    def time_duckdb(self):
        self.con.sql(self.sql).to_arrow_table()


class SqlNexmark:
    """Nexmark queries compiled from Flink SQL (``lj.nexmark.sql_query``) next to the hand-built ones
    (``bench_nexmark.NexmarkQuery`` runs those with DuckDB's yardstick): ``time_sql`` and ``time_python`` are one
    run each over the same generated events."""

    params = list(lj.nexmark.FLINK_SQL)
    param_names = ["query"]
    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self, query):
        from .bench_nexmark import MAX_DELAY, feed, nexmark_events

        self.feed, self.events = feed, nexmark_events()
        self.sql_dag = lj.nexmark.sql_query(query, MAX_DELAY)
        self.python_dag = lj.nexmark.query(query, MAX_DELAY)
        for dag in (self.sql_dag, self.python_dag):
            feed(dag, self.events.chunks[:1])  # compile / load the plans

    def time_sql(self, query):
        self.feed(self.sql_dag, self.events.chunks)

    def time_python(self, query):
        self.feed(self.python_dag, self.events.chunks)
