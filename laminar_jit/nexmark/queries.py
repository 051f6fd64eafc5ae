"""The Nexmark queries as DAGs.

Each query reads the streams it needs from sources named ``"person"``,
``"auction"`` and ``"bid"`` (event time ``date_time``, a bounded
out-of-orderness watermark) and writes its result to the sink ``"out"``.
Column names follow the specification's SQL (in snake case); the docstring
of each builder gives the SQL it answers, which the tests run in DuckDB over
the same events.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._progress import compiling
from ..dag import DagBuilder, StreamingDag
from ..executor import DagExecutor
from ..ops import ArrowMap, Filter, Map, Project
from ..ops.aggregates import count
from ..ops.dedup import Dedup
from ..ops.keyed import KeyedKernel
from ..ops.joins import IntervalJoin, WindowJoin
from ..ops.topn import TopN
from ..ops.windows import SessionWindow, SlidingWindow
from ..time import BoundedOutOfOrderness
from .generator import SCHEMAS, NexmarkEvents, auction_horizon_ms

__all__ = ["QUERIES", "QueryRun", "query", "run", "streams_of"]

_S = _dt.timedelta(seconds=1)


def _builder(streams, max_delay: int) -> DagBuilder:
    b = DagBuilder()
    for s in streams:
        b.source(s, SCHEMAS[s], event_time="date_time",
                 watermark=BoundedOutOfOrderness(_dt.timedelta(milliseconds=max_delay)))
    return b


# Kernels at module level: their compiled plans are cached on disk.

def _to_euro(price):
    return price * 0.908


def _every_123rd(auction):
    return auction % 123 == 0


def q0(max_delay: int = 100) -> StreamingDag:
    """Pass-through: ``SELECT auction, bidder, price, date_time, extra FROM bid``."""
    return (_builder(["bid"], max_delay)
            .operator("q0", Project(["auction", "bidder", "price", "date_time", "extra"]))
            .connect("bid", "q0").sink_for("q0", "out").build())


def q1(max_delay: int = 100) -> StreamingDag:
    """Currency conversion: ``SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid``."""
    return (_builder(["bid"], max_delay)
            .operator("euro", Map(_to_euro, output="price"))
            .operator("q1", Project(["auction", "bidder", "price", "date_time", "extra"]))
            .connect("bid", "euro").connect("euro", "q1").sink_for("q1", "out").build())


def q2(max_delay: int = 100) -> StreamingDag:
    """Selection: ``SELECT auction, price FROM bid WHERE auction % 123 = 0``."""
    return (_builder(["bid"], max_delay)
            .operator("selected", Filter(_every_123rd))
            .operator("q2", Project(["auction", "price"]))
            .connect("bid", "selected").connect("selected", "q2").sink_for("q2", "out").build())


#: States of q3's "local" sellers.
_Q3_STATES = pa.array(["OR", "ID", "CA"])
#: q3 joins every auction with every person of its seller, whenever they arrive (a
#: regular SQL join, whose state grows without bound as in any streaming engine).
_FOREVER = _dt.timedelta(days=365 * 1000)


def _is_category_10(category):
    return category == 10


def _is_local(local):
    return local


def _in_q3_states(state):
    return pc.is_in(state, value_set=_Q3_STATES)


def q3(max_delay: int = 100) -> StreamingDag:
    """Local item suggestion: auctions of category 10 by sellers in Oregon, Idaho or California.

    ``SELECT P.name, P.city, P.state, A.id FROM auction A JOIN person P ON A.seller = P.id
    WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')``. A regular join: a pair is
    emitted when its second row arrives, in either order, and both sides are kept.
    Only the columns the result needs are carried into the join: string columns
    a join keeps are interned in a dictionary for the life of the executor.
    """
    return (_builder(["person", "auction"], max_delay)
            .operator("category_10", Filter(_is_category_10))
            .operator("auctions", Project(["id", "seller", "date_time"]))
            .operator("state_flag", ArrowMap(_in_q3_states, output="local"))
            .operator("local_people", Filter(_is_local))
            .operator("people", Project(["id", "name", "city", "state", "date_time"]))
            .operator("joined", IntervalJoin("seller", "id", lower=-_FOREVER, upper=_FOREVER))
            .operator("q3", Project({"name": "name", "city": "city", "state": "state", "id": "id"}))
            .connect("auction", "category_10").connect("category_10", "auctions")
            .connect("person", "state_flag").connect("state_flag", "local_people").connect("local_people", "people")
            .connect("auctions", "joined", port="left").connect("people", "joined", port="right")
            .connect("joined", "q3").sink_for("q3", "out").build())


def _bid_in_time(date_time_right, expires):
    return date_time_right <= expires


def _bid_for_auction(st, category, price, expires):
    if price > st.final:
        st.final = price
    st.category = category
    st.timer = expires + 1  # the watermark passing the auction's end closes it
    return st.final, st.category, False


def _auction_closed(st, timestamp):
    return st.final, st.category, True


def _closed(closed):
    return closed


def _running_average(st, final):
    st.total += final
    st.n += 1
    return st.total / st.n


#: Longest auction of the generator at its default rate: 1 + 2 * (time until 100 more auctions) ms.
MAX_AUCTION_MS = 1 + 2 * auction_horizon_ms()


def q4(max_delay: int = 100, max_auction_ms: int = MAX_AUCTION_MS) -> StreamingDag:
    """Average closing price per category.

    ``SELECT category, AVG(final) FROM (SELECT MAX(B.price) AS final, A.category FROM auction A
    JOIN bid B ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires GROUP BY
    A.id, A.category) GROUP BY category``, as a stream of updates: when the watermark passes an
    auction's end, its highest bid is final, and the category's running average is emitted
    (``category``, ``date_time`` of the update, ``avg_final``). The last row per category is the
    SQL answer. Bids meet auctions in an interval join bounded by the longest auction
    (``max_auction_ms``; the generator's default rate gives :data:`MAX_AUCTION_MS`).
    """
    return (_builder(["auction", "bid"], max_delay)
            .operator("auctions", Project(["id", "category", "date_time", "expires"]))
            .operator("bids", Project(["auction", "price", "date_time"]))
            .operator("joined", IntervalJoin("id", "auction", lower=0, upper=max_auction_ms))
            .operator("in_time", Filter(_bid_in_time))
            .operator("winning", KeyedKernel(_bid_for_auction, key="id",
                                             state={"final": np.int64, "category": np.int64},
                                             output={"final": pa.int64(), "category": pa.int64(),
                                                     "closed": pa.bool_()},
                                             on_timer=_auction_closed))
            .operator("closed", Filter(_closed))
            .operator("average", KeyedKernel(_running_average, key="category",
                                             state={"total": np.float64, "n": np.int64},
                                             output={"avg_final": pa.float64()}))
            .operator("q4", Project(["category", "date_time", "avg_final"]))
            .connect("auction", "auctions").connect("bid", "bids")
            .connect("auctions", "joined", port="left").connect("bids", "joined", port="right")
            .connect("joined", "in_time").connect("in_time", "winning").connect("winning", "closed")
            .connect("closed", "average").connect("average", "q4").sink_for("q4", "out").build())


def q5(max_delay: int = 100) -> StreamingDag:
    """Hot items: the auction with the most bids in each 10 s window sliding by 2 s.

    ``SELECT auction, num, starttime, endtime FROM (SELECT auction, count(*) AS num,
    window_start AS starttime, window_end AS endtime FROM HOP(bid, 2 s, 10 s) GROUP BY
    auction, window) QUALIFY row_number() OVER (PARTITION BY starttime ORDER BY num DESC,
    auction) = 1``. One auction per window: of tied counts, the smallest auction id.

    A window's result carries its start as event time and leaves when the
    watermark passes its end, 10 s later; the top-1 step allows that lateness.
    """
    return (_builder(["bid"], max_delay)
            .operator("counts", SlidingWindow(size=10 * _S, slide=2 * _S, key="auction", aggs={"num": count()}))
            .operator("renamed", Project({"starttime": "window_start", "endtime": "window_end",
                                          "auction": "auction", "num": "num"}))
            .operator("hottest", TopN(1, by="num", window=2 * _S, allowed_lateness=10 * _S))
            .operator("q5", Project(["auction", "num", "starttime", "endtime"]))
            .connect("bid", "counts").connect("counts", "renamed").connect("renamed", "hottest")
            .connect("hottest", "q5").sink_for("q5", "out").build())


def q7(max_delay: int = 100) -> StreamingDag:
    """Highest bid: the bid with the highest price in each tumbling 10 s window.

    ``SELECT auction, price, bidder, date_time, window_start, window_end FROM bid
    QUALIFY row_number() OVER (PARTITION BY window ORDER BY price DESC, arrival) = 1``:
    of tied prices, the bid that arrived first. (``extra`` is left out: string
    columns kept in window state are interned in a dictionary for the life of
    the executor, which unique padding text would only fill.)
    """
    return (_builder(["bid"], max_delay)
            .operator("columns", Project(["auction", "price", "bidder", "date_time"]))
            .operator("highest", TopN(1, by="price", window=10 * _S))
            .operator("q7", Project(["auction", "price", "bidder", "date_time", "window_start", "window_end"]))
            .connect("bid", "columns").connect("columns", "highest").connect("highest", "q7")
            .sink_for("q7", "out").build())


def q8(max_delay: int = 100) -> StreamingDag:
    """Monitor new users: people who opened an auction in the tumbling 10 s window they joined.

    ``SELECT P.id, P.name, P.window_start AS starttime FROM (person per 10 s window) P JOIN
    (SELECT DISTINCT seller, window FROM auction) A ON P.id = A.seller AND P.window = A.window``.
    """
    return (_builder(["person", "auction"], max_delay)
            .operator("people", Project(["id", "name", "date_time"]))
            .operator("sellers", Dedup(key="seller", within=10 * _S))
            .operator("seller_times", Project(["seller", "date_time"]))
            .operator("joined", WindowJoin(10 * _S, left_key="id", right_key="seller"))
            .operator("q8", Project({"id": "id", "name": "name", "starttime": "window_start"}))
            .connect("person", "people").connect("auction", "sellers").connect("sellers", "seller_times")
            .connect("people", "joined", port="left").connect("seller_times", "joined", port="right")
            .connect("joined", "q8").sink_for("q8", "out").build())


def q11(max_delay: int = 100) -> StreamingDag:
    """User sessions: bids per bidder per session (more than 10 s without a bid closes a session).

    ``SELECT bidder, count(*) AS bid_count, SESSION_START(...) AS starttime, SESSION_END(...)
    AS endtime FROM bid GROUP BY bidder, SESSION(date_time, 10 s)``, with Flink's session
    windows: windows that touch merge, so bids exactly 10 s apart share a session
    (``SessionWindow(touching=True)``).
    """
    return (_builder(["bid"], max_delay)
            .operator("sessions", SessionWindow(10 * _S, key="bidder", aggs={"bid_count": count()}, touching=True))
            .operator("q11", Project({"bidder": "bidder", "bid_count": "bid_count", "starttime": "window_start",
                                      "endtime": "window_end"}))
            .connect("bid", "sessions").connect("sessions", "q11").sink_for("q11", "out").build())


_BID_COLUMNS = ["auction", "bidder", "price", "channel", "url", "date_time"]


def q18(max_delay: int = 100) -> StreamingDag:
    """Find the last bid of each (bidder, auction): an updating result (a changelog).

    ``SELECT auction, bidder, price, channel, url, dateTime FROM (SELECT *, ROW_NUMBER() OVER
    (PARTITION BY bidder, auction ORDER BY dateTime DESC) AS rank_number FROM bid) WHERE
    rank_number <= 1``: of bids at the same time, the one that arrived last (as Flink's
    event-time deduplication keeps). The canonical query also returns ``extra``; it is left
    out here because string columns kept in operator state are interned for the life of the
    executor, and ``extra`` is unique padding text per bid. The output carries ``op``: each
    pair's newer bid retracts the previous one (``-U``/``+U``).
    """
    return (_builder(["bid"], max_delay)
            .operator("columns", Project(_BID_COLUMNS))
            .operator("q18", Dedup(key=["bidder", "auction"], keep="last"))
            .connect("bid", "columns").connect("columns", "q18").sink_for("q18", "out").build())


def q19(max_delay: int = 100) -> StreamingDag:
    """Find the ten highest bids of each auction: an updating result (a changelog).

    ``SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC)
    AS rank_number FROM bid) WHERE rank_number <= 10``: of equal prices, the bid that arrived
    first ranks higher. ``extra`` is left out (see :func:`q18`). The output carries ``op``:
    a bid entering an auction's top ten retracts and re-emits the ranks it moves down.
    """
    return (_builder(["bid"], max_delay)
            .operator("columns", Project(_BID_COLUMNS))
            .operator("top10", TopN(10, by="price", key="auction", window=None))
            .operator("q19", Project({**{c: c for c in _BID_COLUMNS}, "rank_number": "rank", "op": "op"}))
            .connect("bid", "columns").connect("columns", "top10").connect("top10", "q19")
            .sink_for("q19", "out").build())


_CHANNEL_IDS = {"apple": "0", "google": "1", "facebook": "2", "baidu": "3"}
#: The computed string columns of q21 and q22 are dictionary-encoded, like the ``channel`` and ``url`` they
#: come from: worked out once per distinct value, no string is copied per row.
_DICT_STRING = pa.dictionary(pa.int32(), pa.string())


def _channel_id(channel, url):
    """q21's ``CASE``: a hot channel's fixed id, else ``REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)``;
    and whether the row is kept (the id was found or the channel is a hot one).

    The generator's ``channel`` and ``url`` are dictionaries over the same indices: then the strings are
    worked out once per distinct channel (10 K) and taken back to the rows by index, as a dictionary.
    """
    if pa.types.is_dictionary(channel.type) and pa.types.is_dictionary(url.type) and \
            channel.indices.equals(url.indices):
        ids, keep = _channel_id_of(channel.dictionary, url.dictionary)
        return pa.DictionaryArray.from_arrays(channel.indices, ids), pc.take(keep, channel.indices)
    ids, keep = _channel_id_of(channel.cast(pa.string()), url.cast(pa.string()))
    return ids.dictionary_encode(), keep


def _channel_id_of(channel, url):
    lower = pc.utf8_lower(channel)
    found = pc.struct_field(pc.extract_regex(url, r"(?:&|^)channel_id=(?P<id>[^&]*)"), "id")
    hot = pc.is_in(lower, value_set=pa.array(list(_CHANNEL_IDS)))
    fixed = pc.take(pa.array(list(_CHANNEL_IDS.values())), pc.index_in(lower, value_set=pa.array(list(_CHANNEL_IDS))))
    return pc.if_else(hot, fixed, found), pc.or_kleene(pc.is_valid(found), hot)


def _split_index(strings, sep: str, indices):
    """Flink's ``SPLIT_INDEX(s, sep, i)`` for each ``i`` of ``indices``: the ``i``-th (0-based) piece, null past
    the last (one split for all)."""
    parts = pc.split_pattern(strings, sep)
    n = len(parts)
    lengths = pc.fill_null(pc.list_value_length(parts), 0).to_numpy()
    starts = parts.offsets.to_numpy()[:-1]
    flat = pc.list_flatten(parts)
    out = []
    for index in indices:
        has = lengths > index
        if not has.any():
            out.append(pa.nulls(n, pa.string()))
            continue
        picked = flat.take(pa.array(np.where(has, starts + index, 0), pa.int64()))
        out.append(pc.if_else(pa.array(has), picked, pa.nulls(n, pa.string())))
    return out


def _url_dirs(url):
    """q22's three ``SPLIT_INDEX`` columns, worked out per distinct url when ``url`` is a dictionary."""
    if pa.types.is_dictionary(url.type):
        return tuple(pa.DictionaryArray.from_arrays(url.indices, d) for d in _split_index(url.dictionary, "/", (3, 4, 5)))
    return tuple(d.dictionary_encode() for d in _split_index(url.cast(pa.string()), "/", (3, 4, 5)))


def q21(max_delay: int = 100) -> StreamingDag:
    """Add a channel id: ``SELECT auction, bidder, price, channel, CASE WHEN lower(channel) = 'apple' THEN '0' ... ELSE REGEXP_EXTRACT(url,
    '(&|^)channel_id=([^&]*)', 2) END AS channel_id FROM bid WHERE REGEXP_EXTRACT(...) IS NOT NULL OR
    lower(channel) IN ('apple', 'google', 'facebook', 'baidu')``, the string work done by Arrow compute
    functions in an ``ArrowMap`` (once per batch; strings never reach a kernel).
    """
    return (_builder(["bid"], max_delay)
            .operator("ids", ArrowMap(_channel_id, output={"channel_id": _DICT_STRING, "keep": pa.bool_()}))
            .operator("kept", Filter(_kept))
            .operator("q21", Project(["auction", "bidder", "price", "channel", "channel_id"]))
            .connect("bid", "ids").connect("ids", "kept").connect("kept", "q21").sink_for("q21", "out").build())


def _kept(keep):
    return keep


def q22(max_delay: int = 100) -> StreamingDag:
    """URL directories: ``SELECT auction, bidder, price, channel, SPLIT_INDEX(url, '/', 3) AS dir1,
    SPLIT_INDEX(url, '/', 4) AS dir2, SPLIT_INDEX(url, '/', 5) AS dir3 FROM bid`` (an ``ArrowMap``).
    """
    return (_builder(["bid"], max_delay)
            .operator("dirs", ArrowMap(_url_dirs, output={"dir1": _DICT_STRING, "dir2": _DICT_STRING,
                                                          "dir3": _DICT_STRING}))
            .operator("q22", Project(["auction", "bidder", "price", "channel", "dir1", "dir2", "dir3"]))
            .connect("bid", "dirs").connect("dirs", "q22").sink_for("q22", "out").build())


#: Query name -> DAG factory.
QUERIES = {"q0": q0, "q1": q1, "q2": q2, "q3": q3, "q4": q4, "q5": q5, "q7": q7, "q8": q8, "q11": q11,
           "q18": q18, "q19": q19, "q21": q21, "q22": q22}


def query(name: str, max_delay: int = 100) -> StreamingDag:
    """The DAG of Nexmark query ``name`` (``"q0"``, ``"q1"``, …; see :data:`QUERIES`).

    Parameters
    ----------
    name : str
        Query name.
    max_delay : int
        Watermark delay of every source in milliseconds; use the ``max_delay``
        the events were generated with so none is late.

    Returns
    -------
    StreamingDag
        Sources ``"person"``, ``"auction"``, ``"bid"`` (those the query reads),
        sink ``"out"``.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> dag = lj.nexmark.query("q5")
    >>> dag.sources
    ['bid']
    """
    if name not in QUERIES:
        raise ValueError(f"unknown Nexmark query {name!r}; choose one of {', '.join(QUERIES)}")
    return QUERIES[name](max_delay)


def streams_of(dag: StreamingDag) -> list[str]:
    """The streams a query's DAG reads, in the order events are fed."""
    return [s for s in SCHEMAS if s in dag.sources]


@dataclass
class QueryRun:
    """What :func:`run` measured.

    Attributes
    ----------
    name : str
        The query.
    result : pyarrow.Table
        The rows of sink ``"out"``.
    events : int
        Events generated (all three streams, as Nexmark counts them).
    seconds : float
        Feeding every event and finishing, compile excluded.
    compile_seconds : float
        Building the DAG and an executor (compiling the plans or loading them
        from the disk cache) and running the first chunk through it.
    """

    name: str
    result: pa.Table
    events: int
    seconds: float
    compile_seconds: float

    @property
    def events_per_second(self) -> float:
        """Events generated per second of :attr:`seconds`."""
        return self.events / self.seconds if self.seconds > 0 else float("inf")


def run(name: str, events: NexmarkEvents, max_delay: int = 100) -> QueryRun:
    """Run query ``name`` over generated ``events``, chunk by chunk in arrival order.

    Parameters
    ----------
    name : str
        Query name.
    events : NexmarkEvents
        From :func:`laminar_jit.nexmark.generate`.
    max_delay : int
        The watermark delay (ms): the generator's ``max_delay``.

    Returns
    -------
    QueryRun
    """
    with compiling(f"compiling plan for {name} (cached on disk after the first run)") as took:
        dag = query(name, max_delay)
        streams = streams_of(dag)
        warm = DagExecutor(dag)  # compiles the plans (or loads them from the disk cache) ...
        if events.chunks:  # ... and the first chunk compiles what Python calls lazily (state growth, dictionaries)
            for s in streams:
                warm.process_batch(s, events.chunks[0][s])
        warm.finish()
    compile_seconds = took["seconds"]
    ex = DagExecutor(dag)
    t0 = time.perf_counter()
    for chunk in events.chunks:
        for s in streams:
            ex.process_batch(s, chunk[s])
    ex.finish()
    result = ex.take_sink_outputs("out")
    return QueryRun(name, result, events.events, time.perf_counter() - t0, compile_seconds)
