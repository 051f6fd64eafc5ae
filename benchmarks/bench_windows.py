"""Event-time window benchmarks against DuckDB's GROUP BY over the same table.

DuckDB sees the whole in-memory table at once; laminar streams it in
65,536-row batches with a bounded-out-of-orderness watermark (the table's
disorder is at most ``common.MAX_DISORDER_MS``, so no row is late) and emits
each window when the watermark passes it.
"""

from __future__ import annotations

import functools

import duckdb
import numpy as np
import pyarrow as pa

import laminar_jit as lj

from . import common

SIZE_MS = 10_000


def stream(dag: lj.StreamingDag, batches):
    """Feed ``batches`` to a fresh executor, end the input, and return the windows."""
    ex = lj.DagExecutor(dag)
    for batch in batches:
        ex.process_batch(common.SOURCE, batch)
    ex.finish()
    return ex.take_sink_outputs("out")


def wide_key(bidder, auction):
    # ~1 M distinct keys: every bidder (100 K) times the last digit of the auction
    return bidder * 10 + auction % 10


def tumbling_dag(keys: str, size: int = SIZE_MS) -> lj.StreamingDag:
    """10 s (or ``size`` ms) tumbling windows per key: count, sum(price), max(price).

    ``keys="none"``: one window for all rows, with aggregates that key shards
    run in two phases (count, min and max of the price, the sum of the auction ids).
    """
    b = (lj.DagBuilder()
         .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                 watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS)))
    upstream, key = common.SOURCE, "auction"
    if keys == "keys_1m":
        b = b.operator("wide", lj.Map(wide_key, output="key")).connect(common.SOURCE, "wide")
        upstream, key = "wide", "key"
    aggs = {"n": lj.count(), "total": lj.sum("price"), "top": lj.max("price")}
    if keys == "none":
        key, aggs = None, {"n": lj.count(), "low": lj.min("price"), "top": lj.max("price"),
                           "auctions": lj.sum("auction")}
    return (b.operator("per_key", lj.TumblingWindow(size=size, key=key, aggs=aggs))
            .connect(upstream, "per_key").sink_for("per_key", "out").build())


_SQL = {
    "auction": f"""SELECT ts // {SIZE_MS} * {SIZE_MS} AS window_start, auction, count(*) AS n,
                   sum(price) AS total, max(price) AS top FROM events GROUP BY ALL""",
    "keys_1m": f"""SELECT ts // {SIZE_MS} * {SIZE_MS} AS window_start, bidder * 10 + auction % 10 AS key,
                   count(*) AS n, sum(price) AS total, max(price) AS top FROM events GROUP BY ALL""",
    "none": f"""SELECT ts // {SIZE_MS} * {SIZE_MS} AS window_start, count(*) AS n, min(price) AS low,
                max(price) AS top, sum(auction) AS auctions FROM events GROUP BY ALL""",
}


class Tumbling:
    """10 s tumbling windows per auction (10 K zipf keys), per ~1 M keys or of all rows (DuckDB: :class:`TumblingDuckDB`).

    DuckDB runs in its own class (see ``bench_core.FilterMap``: its
    ``malloc_trim`` would tax laminar's allocations in a shared process).
    """

    params = ["auction", "keys_1m", "none"]
    param_names = ["keys"]
    timeout = 300

    def setup(self, keys):
        n = common.n_events()
        self.batches = common.event_batches(n, 65_536)
        self.dag = tumbling_dag(keys)
        common.run_dag(self.dag, self.batches[:2])  # compile / load the plan

    def _run(self):
        return stream(self.dag, self.batches)

    def time_laminar(self, keys):
        self._run()

    def peakmem_laminar(self, keys):
        self._run()

    def track_windows_emitted(self, keys):
        """Rows emitted by laminar; equals DuckDB's group count (a correctness canary)."""
        return self._run().num_rows

    track_windows_emitted.unit = "rows"


class TumblingDuckDB:
    """The :class:`Tumbling` aggregation as one DuckDB ``GROUP BY`` over the whole table."""

    params = ["auction", "keys_1m", "none"]
    param_names = ["keys"]
    timeout = 300

    def setup(self, keys):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.sql = _SQL[keys]
        self.con.sql(self.sql.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self, keys):
        self.con.close()

    def time_duckdb(self, keys):
        self.con.sql(self.sql).to_arrow_table()


#: Channels of :func:`string_table`: 50 values of 3-12 characters, some sharing a prefix.
CHANNELS = [f"{p}-{i}" for p in ("web", "app", "partner", "ios", "android-tv") for i in range(10)]


@functools.lru_cache(maxsize=2)
def string_table(n: int) -> pa.Table:
    """The standard events plus ``channel``, a string column (one of :data:`CHANNELS`, zipf-skewed)."""
    rng = np.random.default_rng(common.SEED + 1)
    pick = np.minimum(rng.zipf(1.3, n), len(CHANNELS)) - 1
    return common.event_table(n).append_column("channel", pa.array(np.array(CHANNELS)[pick]))


def string_dag() -> lj.StreamingDag:
    """10 s tumbling windows per auction: count, min and max of the string ``channel``."""
    schema = string_table(10).schema
    aggs = {"n": lj.count(), "lo": lj.min("channel"), "hi": lj.max("channel")}
    return (lj.DagBuilder()
            .source(common.SOURCE, schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("per_key", lj.TumblingWindow(size=SIZE_MS, key="auction", aggs=aggs))
            .connect(common.SOURCE, "per_key").sink_for("per_key", "out").build())


class TumblingStrings:
    """:class:`Tumbling` per auction with min/max of a string column (DuckDB: :class:`TumblingStringsDuckDB`).

    The strings are dictionary codes in the window state; min and max compare their bytes.
    """

    timeout = 300

    def setup(self):
        self.batches = tuple(string_table(common.n_events()).to_batches(max_chunksize=65_536))
        self.dag = string_dag()
        stream(self.dag, self.batches[:2])  # compile / load the plan

    def time_laminar(self):
        stream(self.dag, self.batches)

    def track_windows_emitted(self):
        """Rows emitted; equals DuckDB's group count."""
        return stream(self.dag, self.batches).num_rows

    track_windows_emitted.unit = "rows"


class TumblingStringsDuckDB:
    """The :class:`TumblingStrings` aggregation as one DuckDB ``GROUP BY``."""

    timeout = 300
    sql = (f"SELECT ts // {SIZE_MS} * {SIZE_MS} AS window_start, auction, count(*) AS n, min(channel) AS lo, "
           "max(channel) AS hi FROM events GROUP BY ALL")

    def setup(self):
        self.con = duckdb.connect()
        self.con.register("events", string_table(common.n_events()))
        self.con.sql(self.sql.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self):
        self.con.close()

    def time_duckdb(self):
        self.con.sql(self.sql).to_arrow_table()

    def track_windows_emitted(self):
        return self.con.sql(f"SELECT count(*) FROM ({self.sql})").fetchall()[0][0]

    track_windows_emitted.unit = "rows"


#: Per-window statistics beyond the sums: distinct bidders (a value set per window), and the mean and
#: standard deviation of the price (Welford's update).
STATISTICS = {
    "distinct": ({"n": lj.count(), "bidders": lj.count_distinct("bidder")}, "count(DISTINCT bidder) AS bidders"),
    "stddev": ({"n": lj.count(), "mean": lj.mean("price"), "sd": lj.stddev_samp("price")},
               "avg(price) AS mean, stddev_samp(price) AS sd"),
}


def statistics_dag(statistic: str) -> lj.StreamingDag:
    """10 s tumbling windows per auction: rows, and the aggregates of ``STATISTICS[statistic]``."""
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("per_auction", lj.TumblingWindow(size=SIZE_MS, key="auction", aggs=STATISTICS[statistic][0]))
            .connect(common.SOURCE, "per_auction").sink_for("per_auction", "out").build())


class TumblingStatistics:
    """:class:`Tumbling` per auction counting distinct bidders, or the price's standard deviation
    (DuckDB: :class:`TumblingStatisticsDuckDB`)."""

    params = list(STATISTICS)
    param_names = ["statistic"]
    timeout = 300

    def setup(self, statistic):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = statistics_dag(statistic)
        stream(self.dag, self.batches[:2])  # compile / load the plan

    def time_laminar(self, statistic):
        stream(self.dag, self.batches)

    def track_windows_emitted(self, statistic):
        """Rows emitted; equals DuckDB's group count."""
        return stream(self.dag, self.batches).num_rows

    track_windows_emitted.unit = "rows"


class TumblingStatisticsDuckDB:
    """The :class:`TumblingStatistics` aggregations as one DuckDB ``GROUP BY``."""

    params = list(STATISTICS)
    param_names = ["statistic"]
    timeout = 300

    def setup(self, statistic):
        self.sql = (f"SELECT ts // {SIZE_MS} * {SIZE_MS} AS window_start, auction, count(*) AS n, "
                    f"{STATISTICS[statistic][1]} FROM events GROUP BY ALL")
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.con.sql(self.sql.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self, statistic):
        self.con.close()

    def time_duckdb(self, statistic):
        self.con.sql(self.sql).to_arrow_table()

    def track_windows_emitted(self, statistic):
        return self.con.sql(f"SELECT count(*) FROM ({self.sql})").fetchall()[0][0]

    track_windows_emitted.unit = "rows"


SLIDE_MS = 2_000


def sliding_dag() -> lj.StreamingDag:
    """10 s windows every 2 s, count per auction (panes of 2 s)."""
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("per_auction", lj.SlidingWindow(size=SIZE_MS, slide=SLIDE_MS, key="auction",
                                                      aggs={"n": lj.count()}))
            .connect(common.SOURCE, "per_auction").sink_for("per_auction", "out").build())


_SLIDING_SQL = f"""
    SELECT window_start, auction, count(*) AS n
    FROM (SELECT auction, unnest(generate_series((floor((ts - {SIZE_MS}) / {SLIDE_MS})::BIGINT + 1) * {SLIDE_MS},
                                                 (ts // {SLIDE_MS}) * {SLIDE_MS}, {SLIDE_MS})) AS window_start
          FROM events)
    GROUP BY ALL"""


class Sliding:
    """10 s windows sliding by 2 s, count per auction (DuckDB: :class:`SlidingDuckDB`)."""

    timeout = 300

    def setup(self):
        n = common.n_events()
        self.batches = common.event_batches(n, 65_536)
        self.dag = sliding_dag()
        common.run_dag(self.dag, self.batches[:2])

    def _run(self):
        return stream(self.dag, self.batches)

    def time_laminar(self):
        self._run()

    def track_windows_emitted(self):
        """Rows emitted by laminar; equals DuckDB's group count (a correctness canary)."""
        return self._run().num_rows

    track_windows_emitted.unit = "rows"


class SlidingDuckDB:
    """The :class:`Sliding` query in DuckDB: unnest each row's window starts, then GROUP BY."""

    timeout = 300

    def setup(self):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.con.sql(_SLIDING_SQL.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self):
        self.con.close()

    def time_duckdb(self):
        self.con.sql(_SLIDING_SQL).to_arrow_table()


GAP_MS = 1_000


def session_dag() -> lj.StreamingDag:
    """Sessions per auction with a 1 s gap: count, sum(price), max(price)."""
    aggs = {"n": lj.count(), "total": lj.sum("price"), "top": lj.max("price")}
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("sessions", lj.SessionWindow(gap=GAP_MS, key="auction", aggs=aggs))
            .connect(common.SOURCE, "sessions").sink_for("sessions", "out").build())


# gaps and islands: a new session where the auction's previous event is >= GAP_MS behind
_SESSION_SQL = f"""
    WITH d AS (SELECT *, ts - lag(ts) OVER (PARTITION BY auction ORDER BY ts) AS step FROM events),
         s AS (SELECT *, sum(CASE WHEN step IS NULL OR step >= {GAP_MS} THEN 1 ELSE 0 END)
                         OVER (PARTITION BY auction ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid FROM d)
    SELECT min(ts) AS window_start, max(ts) + {GAP_MS} AS window_end, auction,
           count(*) AS n, sum(price) AS total, max(price) AS top
    FROM s GROUP BY auction, sid"""


class Session:
    """Per-auction sessions, 1 s gap (DuckDB: :class:`SessionDuckDB`)."""

    timeout = 300

    def setup(self):
        n = common.n_events()
        self.batches = common.event_batches(n, 65_536)
        self.dag = session_dag()
        common.run_dag(self.dag, self.batches[:2])

    def _run(self):
        return stream(self.dag, self.batches)

    def time_laminar(self):
        self._run()

    def peakmem_laminar(self):
        self._run()

    def track_windows_emitted(self):
        """Sessions emitted by laminar; equals DuckDB's group count (a correctness canary)."""
        return self._run().num_rows

    track_windows_emitted.unit = "rows"


class SessionDuckDB:
    """The :class:`Session` query in DuckDB: ``lag`` over each auction, running sum of gaps, GROUP BY."""

    timeout = 300

    def setup(self):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.con.sql(_SESSION_SQL.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self):
        self.con.close()

    def time_duckdb(self):
        self.con.sql(_SESSION_SQL).to_arrow_table()

    def track_sessions(self):
        """DuckDB's session count, to compare with ``Session.track_windows_emitted``."""
        return self.con.sql(f"SELECT count(*) FROM ({_SESSION_SQL})").fetchall()[0][0]

    track_sessions.unit = "rows"


class WindowSmallBatches:
    """Per-batch overhead of the tumbling window DAG fed 1-row batches.

    ``time_one_row_batches`` pushes 2,000 single-row batches through one
    executor and drains the sink once at the end (divide by 2,000 for the
    cost per batch; small batches are coalesced into one compiled dispatch);
    ``time_one_row_batch_drained`` drains after each batch, the worst case.
    """

    def setup(self):
        self.dag = tumbling_dag("auction")
        table = common.event_table(2_000)
        self.rows = table.to_batches(max_chunksize=1)
        common.run_dag(self.dag, self.rows[:10])
        self.executor = lj.DagExecutor(self.dag)
        self.position = 0

    def time_one_row_batches(self):
        ex = lj.DagExecutor(self.dag)
        for row in self.rows:
            ex.process_batch(common.SOURCE, row)
        ex.take_sink_outputs("out")

    def time_one_row_batch_drained(self):
        self.executor.process_batch(common.SOURCE, self.rows[self.position % len(self.rows)])
        self.position += 1
        self.executor.take_sink_outputs("out")


#: OVER frames: (frame, preceding, DuckDB's frame) — each auction's last 11 rows, its last second, all its rows.
OVER_FRAMES = {
    "rows10": ("rows", 10, "ROWS BETWEEN 10 PRECEDING AND CURRENT ROW"),
    "range1s": ("range", 1_000, "RANGE BETWEEN 1000 PRECEDING AND CURRENT ROW"),
    "unbounded": ("range", None, "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
}


def over_dag(frame: str) -> lj.StreamingDag:
    """Every event with its auction's count, mean and max price over the frame ``OVER_FRAMES[frame]``."""
    kind, preceding, _ = OVER_FRAMES[frame]
    aggs = {"n": lj.count(), "avg_price": lj.mean("price"), "max_price": lj.max("price")}
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("moving", lj.OverAggregate(aggs, key="auction", frame=kind, preceding=preceding))
            .connect(common.SOURCE, "moving").sink_for("moving", "out").build())


class Over:
    """OVER aggregates per auction (SQL's ``agg OVER (PARTITION BY auction ORDER BY ts ...)``): every event
    out, in event-time order, with three aggregates of its frame (DuckDB: :class:`OverDuckDB`)."""

    params = list(OVER_FRAMES)
    param_names = ["frame"]
    timeout = 300

    def setup(self, frame):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = over_dag(frame)
        stream(self.dag, self.batches[:2])  # compile / load the plan

    def time_laminar(self, frame):
        stream(self.dag, self.batches)

    def track_rows_emitted(self, frame):
        """Rows emitted: every event (none is late)."""
        return stream(self.dag, self.batches).num_rows

    track_rows_emitted.unit = "rows"


class OverDuckDB:
    """The :class:`Over` aggregates as DuckDB window functions over the whole table."""

    params = list(OVER_FRAMES)
    param_names = ["frame"]
    timeout = 300

    def setup(self, frame):
        w = f"OVER (PARTITION BY auction ORDER BY ts {OVER_FRAMES[frame][2]})"
        self.sql = f"SELECT *, count(*) {w} AS n, avg(price) {w} AS avg_price, max(price) {w} AS max_price FROM events"
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.con.sql(self.sql.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self, frame):
        self.con.close()

    def time_duckdb(self, frame):
        self.con.sql(self.sql).to_arrow_table()

    def track_rows_emitted(self, frame):
        return self.con.sql(f"SELECT count(*) FROM ({self.sql})").fetchall()[0][0]

    track_rows_emitted.unit = "rows"
