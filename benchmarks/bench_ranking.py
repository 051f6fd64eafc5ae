"""Deduplication and top-N against DuckDB's ``row_number()`` over the same table.

laminar streams the table in 65,536-row batches; DuckDB sees the whole table.
``Dedup`` keeps the first row of each (bidder, 10 s interval) in arrival
order, DuckDB ranks by event time within each partition (the table has no
arrival column; the ranking work is the same). ``TopN`` keeps the three
highest bids per auction per 10 s window (ties broken by arrival in laminar,
arbitrarily in DuckDB; the row counts agree).
"""

from __future__ import annotations

import duckdb

import laminar_jit as lj

from . import common

WITHIN_MS = 10_000


def dedup_dag() -> lj.StreamingDag:
    """First bid per bidder (100 K keys) per 10 s interval."""
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("first_bid", lj.Dedup(key="bidder", within=WITHIN_MS))
            .connect(common.SOURCE, "first_bid").sink_for("first_bid", "out").build())


_SQL = f"""SELECT * FROM events
           QUALIFY row_number() OVER (PARTITION BY bidder, ts // {WITHIN_MS} ORDER BY ts) = 1"""


class _Streamed:
    """Stream the standard table through ``make_dag()`` in 65,536-row batches and drain the sink."""

    timeout = 300
    make_dag = None

    def setup(self):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = type(self).make_dag()
        common.run_dag(self.dag, self.batches[:2])  # compile / load the plan

    def _run(self):
        ex = lj.DagExecutor(self.dag)
        for batch in self.batches:
            ex.process_batch(common.SOURCE, batch)
        ex.finish()
        return ex.take_sink_outputs("out")

    def time_laminar(self):
        self._run()

    def peakmem_laminar(self):
        self._run()

    def track_rows_out(self):
        """Rows out (DuckDB returns as many: a correctness canary)."""
        return self._run().num_rows

    track_rows_out.unit = "rows"


class Dedup(_Streamed):
    """First bid per bidder per 10 s (DuckDB: :class:`DedupDuckDB`)."""

    make_dag = staticmethod(dedup_dag)


class DedupDuckDB:
    """The :class:`Dedup` workload as one DuckDB ``QUALIFY row_number()`` query."""

    timeout = 300

    def setup(self):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.con.sql(_SQL.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self):
        self.con.close()

    def time_duckdb(self):
        self.con.sql(_SQL).to_arrow_table()


TOP_N = 3
TOP_WINDOW_MS = 10_000


def topn_dag(key: str | None = "auction") -> lj.StreamingDag:
    """The three highest bids per auction (``key``; None: of all bids) per 10 s window."""
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("top", lj.TopN(TOP_N, by="price", key=key, window=TOP_WINDOW_MS))
            .connect(common.SOURCE, "top").sink_for("top", "out").build())


_TOPN_SQL = f"""SELECT ts // {TOP_WINDOW_MS} * {TOP_WINDOW_MS} AS window_start, *,
                       row_number() OVER (PARTITION BY auction, ts // {TOP_WINDOW_MS} ORDER BY price DESC) AS rank
                FROM events QUALIFY rank <= {TOP_N}"""


class TopN(_Streamed):
    """Three highest bids per auction per 10 s (DuckDB: :class:`TopNDuckDB`)."""

    make_dag = staticmethod(topn_dag)


class TopNDuckDB:
    """The :class:`TopN` workload as one DuckDB ``QUALIFY row_number()`` query."""

    timeout = 300

    def setup(self):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.con.sql(_TOPN_SQL.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self):
        self.con.close()

    def time_duckdb(self):
        self.con.sql(_TOPN_SQL).to_arrow_table()


def topn_ties_dag() -> lj.StreamingDag:
    """The bids ranked in the top three by price band (price rounded down to 10) per auction per 10 s window,
    ties included (SQL ``rank() <= 3``): the bands make ties common (with 5 M events, 1.78 M rows against
    :class:`TopN`'s 1.65 M)."""
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("band", lj.Map(_price_band, output="band"))
            .operator("top", lj.TopN(TOP_N, by="band", key="auction", window=TOP_WINDOW_MS, ties=True))
            .connect(common.SOURCE, "band").connect("band", "top").sink_for("top", "out").build())


def _price_band(price):
    return (price // 10) * 10


_TIES_SQL = f"""SELECT ts // {TOP_WINDOW_MS} * {TOP_WINDOW_MS} AS window_start, *,
                       rank() OVER (PARTITION BY auction, ts // {TOP_WINDOW_MS} ORDER BY band DESC) AS rank
                FROM (SELECT *, floor(price / 10) * 10 AS band FROM events) QUALIFY rank <= {TOP_N}"""


class TopNTies(_Streamed):
    """:class:`TopN` by price band with ``ties=True`` (DuckDB: :class:`TopNTiesDuckDB`)."""

    make_dag = staticmethod(topn_ties_dag)


class TopNTiesDuckDB(TopNDuckDB):
    """The :class:`TopNTies` workload as one DuckDB ``QUALIFY rank()`` query."""

    def setup(self):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.con.sql(_TIES_SQL.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def time_duckdb(self):
        self.con.sql(_TIES_SQL).to_arrow_table()
