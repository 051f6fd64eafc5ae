"""Updating results: ``GroupAggregate`` against the append-only window of the same shape, and DuckDB.

``GroupAggregate`` keeps one result per key over the whole stream and emits
a changelog (an insert, or a retraction and an update, per key a batch
touched). Its yardsticks, on the same events and keys:

* :class:`WholeStreamWindow`: the append-only operator of the same shape, a
  tumbling window with the same key and aggregates whose one window spans
  the whole stream, so it holds every key for the whole run as the group
  aggregate does (and emits once, at the end). An updating operator should
  stay within 2x of it. :class:`bench_windows.Tumbling` (10 s windows) holds
  only the keys of the open windows, about 1 % of them with ~1 M keys;
* DuckDB's ``GROUP BY`` over the whole in-memory table (:class:`GroupDuckDB`):
  the final result, computed once.

``GroupOfGroups`` feeds the changelog of one group aggregate into another
(how many auctions have each bid count, and the largest total among them),
the retracting path: every update of an auction's count takes the auction out
of its old group and puts it into the new one.

``UnboundedTopN`` (the three highest bids per auction so far) and
``DedupLast`` (each bidder's latest bid) are the updating rankings; their
append-only yardstick is the same ranking over one window spanning the
stream (``WholeStreamTopN``), and DuckDB's ``row_number()`` over the whole
table (:class:`RankedDuckDB`). ``DedupLastFloor`` is the essential work of
``DedupLast`` written as two bare kernels (a key lookup and a compare per
row; a retraction and an update per changed key per batch): how close the
operator comes to what its output costs.
"""

from __future__ import annotations

import duckdb
import numpy as np

import laminar_jit as lj
from laminar_jit._jit import njit

from . import common
from .bench_ranking import TOP_N, _Streamed
from .bench_windows import stream, tumbling_dag, wide_key

#: A window size (ms) that puts the whole benchmark stream in one window.
WHOLE_STREAM_MS = 10**13

_AGGS = {"n": lj.count(), "total": lj.sum("price"), "top": lj.max("price")}
#: ``distinct``: bids and distinct bidders per auction (a value table per key; no window yardstick).
_DISTINCT = {"n": lj.count(), "bidders": lj.count_distinct("bidder")}


def group_dag(keys: str) -> lj.StreamingDag:
    """count, sum(price), max(price) per auction (10 K zipf keys) or per ~1 M keys, or (``distinct``) bids and
    distinct bidders per auction, updated per batch."""
    b = lj.DagBuilder().source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                               watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
    upstream, key = common.SOURCE, "auction"
    if keys == "keys_1m":
        b = b.operator("wide", lj.Map(wide_key, output="key")).connect(common.SOURCE, "wide")
        upstream, key = "wide", "key"
    return (b.operator("per_key", lj.GroupAggregate(key=key, aggs=_DISTINCT if keys == "distinct" else _AGGS))
            .connect(upstream, "per_key").sink_for("per_key", "out").build())


def group_of_groups_dag() -> lj.StreamingDag:
    """Per auction: bids and their total; then per bid count: auctions, and the largest total (retracting)."""
    return (lj.DagBuilder().source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts")
            .operator("per_auction", lj.GroupAggregate(key="auction", aggs={"n": lj.count(),
                                                                              "total": lj.sum("price")}))
            .operator("per_count", lj.GroupAggregate(key="n", aggs={"auctions": lj.count(),
                                                                      "best": lj.max("total")}))
            .connect(common.SOURCE, "per_auction").connect("per_auction", "per_count")
            .sink_for("per_count", "out").build())


_SQL = {
    "auction": "SELECT auction, count(*) AS n, sum(price) AS total, max(price) AS top FROM events GROUP BY ALL",
    "keys_1m": """SELECT bidder * 10 + auction % 10 AS key, count(*) AS n, sum(price) AS total,
                  max(price) AS top FROM events GROUP BY ALL""",
    "distinct": "SELECT auction, count(*) AS n, count(DISTINCT bidder) AS bidders FROM events GROUP BY ALL",
}


class GroupAggregate:
    """A non-windowed GROUP BY per auction or per ~1 M keys, emitted as a changelog every batch."""

    params = ["auction", "keys_1m", "distinct"]
    param_names = ["keys"]
    timeout = 300

    def setup(self, keys):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = group_dag(keys)
        common.run_dag(self.dag, self.batches[:2])  # compile / load the plan

    def _run(self):
        return stream(self.dag, self.batches)

    def time_laminar(self, keys):
        self._run()

    def peakmem_laminar(self, keys):
        self._run()

    def track_changes_emitted(self, keys):
        """Changelog rows emitted (inserts, retractions, updates)."""
        return self._run().num_rows

    track_changes_emitted.unit = "rows"


class WholeStreamWindow:
    """:class:`GroupAggregate`'s aggregation as an append-only window over the whole stream (emitted at the end)."""

    params = ["auction", "keys_1m"]
    param_names = ["keys"]
    timeout = 300

    def setup(self, keys):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = tumbling_dag(keys, size=WHOLE_STREAM_MS)
        common.run_dag(self.dag, self.batches[:2])

    def time_laminar(self, keys):
        stream(self.dag, self.batches)


class GroupOfGroups:
    """A changelog consumed with retractions: auctions per bid count, and the largest total among them."""

    timeout = 300

    def setup(self):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = group_of_groups_dag()
        common.run_dag(self.dag, self.batches[:2])

    def time_laminar(self):
        stream(self.dag, self.batches)


class GroupDuckDB:
    """The final result of :class:`GroupAggregate` as one DuckDB ``GROUP BY`` over the whole table."""

    params = ["auction", "keys_1m", "distinct"]
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


def ranked_dag(op) -> lj.StreamingDag:
    """``op`` (a TopN or Dedup) over the standard events."""
    return (lj.DagBuilder().source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                                   watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("ranked", op).connect(common.SOURCE, "ranked").sink_for("ranked", "out").build())


class UnboundedTopN(_Streamed):
    """The three highest bids per auction so far, as a changelog (rank by rank)."""

    make_dag = staticmethod(lambda: ranked_dag(lj.TopN(TOP_N, by="price", key="auction", window=None)))


class WholeStreamTopN(_Streamed):
    """:class:`UnboundedTopN`'s ranking as an append-only TopN over one window spanning the stream."""

    make_dag = staticmethod(lambda: ranked_dag(lj.TopN(TOP_N, by="price", key="auction", window=WHOLE_STREAM_MS)))


class DedupLast(_Streamed):
    """Each bidder's latest bid (100 K keys), as a changelog."""

    make_dag = staticmethod(lambda: ranked_dag(lj.Dedup(key="bidder", keep="last")))


class WholeStreamDedup(_Streamed):
    """:class:`DedupLast`'s keys deduplicated append-only over one interval spanning the stream (first bid)."""

    make_dag = staticmethod(lambda: ranked_dag(lj.Dedup(key="bidder", within=WHOLE_STREAM_MS)))


_RANKED_SQL = {
    "topn": f"""SELECT row_number() OVER (PARTITION BY auction ORDER BY price DESC) AS rank, *
                FROM events QUALIFY rank <= {TOP_N}""",
    "dedup_last": "SELECT * FROM events QUALIFY row_number() OVER (PARTITION BY bidder ORDER BY ts DESC) = 1",
}


class RankedDuckDB:
    """The final results of :class:`UnboundedTopN` and :class:`DedupLast` as DuckDB ``row_number()`` queries."""

    params = list(_RANKED_SQL)
    param_names = ["query"]
    timeout = 300

    def setup(self, query):
        self.con = duckdb.connect()
        self.con.register("events", common.event_table(common.n_events()))
        self.sql = _RANKED_SQL[query]
        self.con.sql(self.sql.replace("FROM events", "FROM (SELECT * FROM events LIMIT 10)")).to_arrow_table()

    def teardown(self, query):
        self.con.close()

    def time_duckdb(self, query):
        self.con.sql(self.sql).to_arrow_table()


# ----------------------------------------------------------------------------- Dedup(keep="last")'s floor

#: Fields of a bucket of :class:`DedupLastFloor`'s table (one cache line holds two buckets).
_KEY, _BEST, _PENDING, _HELD = 0, 1, 2, 3


@njit
def _latest(key, ts, table, dirty):
    """Per row: its key's bucket (open addressing; the bucket holds the key's state, so a row costs one random
    access), and whether the row is the key's latest so far; the buckets changed, in first-touch order, into
    ``dirty``. Returns their number."""
    mask = table.shape[0] - 1
    empty = np.iinfo(np.int64).min
    nd = 0
    for i in range(key.size):
        k = key[i]
        b = (k * np.int64(-7046029254386353131)) >> np.int64(40) & mask
        while table[b, _KEY] != k and table[b, _KEY] != empty:
            b = (b + 1) & mask
        if table[b, _KEY] == empty:
            table[b, _KEY], table[b, _BEST], table[b, _PENDING], table[b, _HELD] = k, empty, -1, 0
        if ts[i] >= table[b, _BEST]:
            table[b, _BEST] = ts[i]
            if table[b, _PENDING] < 0:
                dirty[nd] = b
                nd += 1
            table[b, _PENDING] = i
    return nd


@njit
def _changes(dirty, table, emitted, c0, c1, c2, c3):
    """Per changed bucket: ``-U`` its emitted row and ``+U`` the latest (``+I`` the first time); the columns."""
    m = 0
    for j in range(dirty.size):
        m += 2 if table[dirty[j], _HELD] else 1
    ops = np.empty(m, np.int8)
    out = np.empty((4, m), np.int64)
    m = 0
    for j in range(dirty.size):
        b = dirty[j]
        held = table[b, _HELD] != 0
        if held:
            ops[m] = 1
            for c in range(4):
                out[c, m] = emitted[b, c]
            m += 1
        i = table[b, _PENDING]
        ops[m] = 2 if held else 0
        out[0, m], out[1, m], out[2, m], out[3, m] = c0[i], c1[i], c2[i], c3[i]
        for c in range(4):
            emitted[b, c] = out[c, m]
        table[b, _HELD] = 1
        table[b, _PENDING] = -1
        m += 1
    return ops, out


class DedupLastFloor:
    """:class:`DedupLast`'s essential work as two bare kernels, its floor on this machine.

    Per row a hash lookup (the bucket is the key's state: one random access)
    and a compare with the key's latest event time; per batch, for each key it
    changed, ``-U`` the row emitted before and ``+U`` the new one, written as
    int64 columns. No null handling, no Arrow output, no checkpointable layout:
    what ``Dedup(keep="last")`` cannot do with less. ``time_floor`` against
    :class:`WholeStreamDedup` bounds how close to the append-only operator an
    updating dedup can come with these events.
    """

    timeout = 300

    def setup(self):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.columns = [tuple(b.column(name).to_numpy().view(np.int64) for name in ("ts", "auction", "bidder", "price"))
                        for b in self.batches]
        self._run(self.columns[:2])

    def _run(self, columns):
        table = np.full((1 << 18, 4), np.iinfo(np.int64).min, np.int64)  # 100 K bidders: load 0.38
        emitted = np.zeros((table.shape[0], 4), np.int64)
        rows = 0
        for ts, auction, bidder, price in columns:
            dirty = np.empty(ts.size, np.int64)
            nd = _latest(bidder, ts, table, dirty)
            ops, _ = _changes(dirty[:nd], table, emitted, ts, auction, bidder, price)
            rows += ops.size
        return rows

    def time_floor(self):
        self._run(self.columns)

    def track_rows_out(self):
        """Changelog rows (``DedupLast`` emits as many)."""
        return self._run(self.columns)

    track_rows_out.unit = "rows"
