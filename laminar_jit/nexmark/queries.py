"""The Nexmark queries as DAGs.

Each query reads the streams it needs from sources named ``"person"``,
``"auction"`` and ``"bid"`` (event time ``date_time``, a bounded
out-of-orderness watermark) and writes its result to the sink ``"out"``.
Column names follow the specification's SQL (in snake case); the docstring
of each builder gives the SQL it answers, which the tests run in DuckDB over
the same events.
"""

from __future__ import annotations

import time
from decimal import Decimal
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
from ..ops.arrow_functions import count_char, split_index
from ..ops.topn import TopN
from ..ops.windows import SessionWindow, SlidingWindow, TumblingWindow
from ..time import ProcessingTime
from ._common import _DICT_STRING, _S, _builder
from .generator import SCHEMAS, NexmarkEvents, side_input
from .joins import q3, q4, q6, q8, q9, q20
from .statistics import q10, q15, q16, q17

__all__ = ["QUERIES", "QueryRun", "query", "run", "streams_of"]

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


def _euro_decimal(price):
    """``0.908 * price`` exactly, as the canonical sink's ``DECIMAL(23, 3)``."""
    return pc.multiply(pc.cast(price, pa.decimal128(19, 0)), pa.scalar(Decimal("0.908"), pa.decimal128(3, 3)))


def q1(max_delay: int = 100) -> StreamingDag:
    """Currency conversion: ``SELECT auction, bidder, 0.908 * price AS price, date_time, extra FROM bid``.

    ``price`` is ``DECIMAL(23, 3)`` as in the canonical sink: computed exactly by an ``ArrowMap``
    (kernels do not compute in decimals; ``lj.Map(lambda price: price * 0.908, ...)`` gives DOUBLE).
    """
    return (_builder(["bid"], max_delay)
            .operator("euro", ArrowMap(_euro_decimal, output={"price": pa.decimal128(23, 3)}))
            .operator("q1", Project(["auction", "bidder", "price", "date_time", "extra"]))
            .connect("bid", "euro").connect("euro", "q1").sink_for("q1", "out").build())


def q2(max_delay: int = 100) -> StreamingDag:
    """Selection: ``SELECT auction, price FROM bid WHERE auction % 123 = 0``."""
    return (_builder(["bid"], max_delay)
            .operator("selected", Filter(_every_123rd))
            .operator("q2", Project(["auction", "price"]))
            .connect("bid", "selected").connect("selected", "q2").sink_for("q2", "out").build())


def q5(max_delay: int = 100) -> StreamingDag:
    """Hot items: the auctions with the most bids in each 10 s window sliding by 2 s.

    ``SELECT auction, num, starttime, endtime FROM (SELECT auction, count(*) AS num,
    window_start AS starttime, window_end AS endtime FROM HOP(bid, 2 s, 10 s) GROUP BY
    auction, window) AS AuctionBids JOIN (SELECT max(num) AS maxn, starttime, endtime FROM ...
    GROUP BY starttime, endtime) AS MaxBids ON ... AND AuctionBids.num >= MaxBids.maxn``: every
    auction tied for the most bids of a window (``TopN(1, ties=True)``, SQL's ``rank() = 1``).

    A window's result carries its start as event time and leaves when the
    watermark passes its end, 10 s later; the top-1 step allows that lateness.
    """
    return (_builder(["bid"], max_delay)
            .operator("counts", SlidingWindow(size=10 * _S, slide=2 * _S, key="auction", aggs={"num": count()}))
            .operator("renamed", Project({"starttime": "window_start", "endtime": "window_end",
                                          "auction": "auction", "num": "num"}))
            .operator("hottest", TopN(1, by="num", window=2 * _S, allowed_lateness=10 * _S, ties=True))
            .operator("q5", Project(["auction", "num", "starttime", "endtime"]))
            .connect("bid", "counts").connect("counts", "renamed").connect("renamed", "hottest")
            .connect("hottest", "q5").sink_for("q5", "out").build())


def q7(max_delay: int = 100) -> StreamingDag:
    """Highest bid: the bids at the highest price of each tumbling 10 s window.

    ``SELECT B.auction, B.price, B.bidder, B.dateTime FROM bid B JOIN (SELECT MAX(price) AS maxprice,
    window_end AS dateTime FROM TUMBLE(bid, 10 s) GROUP BY window) B1 ON B.price = B1.maxprice
    WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime``: every bid at its
    window's top price (``TopN(1, ties=True)``), with ``window_start`` and ``window_end``. A bid
    belongs to the window ``[start, end)`` (the SQL's ``BETWEEN`` also lets a bid at exactly the
    end meet the window before). ``extra`` is left out: string columns kept in window state are
    interned in a dictionary for the life of the executor, which unique padding text would only fill.
    """
    return (_builder(["bid"], max_delay)
            .operator("columns", Project(["auction", "price", "bidder", "date_time"]))
            .operator("highest", TopN(1, by="price", window=10 * _S, ties=True))
            .operator("q7", Project(["auction", "price", "bidder", "date_time", "window_start", "window_end"]))
            .connect("bid", "columns").connect("columns", "highest").connect("highest", "q7")
            .sink_for("q7", "out").build())


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


def q12(max_delay: int = 100) -> StreamingDag:
    """Processing-time windows: bids per bidder per 10 s of the wall clock.

    ``SELECT B.bidder, count(*) AS bid_count, TUMBLE_START(B.p_time, INTERVAL '10' SECOND) AS starttime,
    TUMBLE_END(B.p_time, INTERVAL '10' SECOND) AS endtime FROM (SELECT *, PROCTIME() AS p_time FROM bid) B
    GROUP BY B.bidder, TUMBLE(B.p_time, INTERVAL '10' SECOND)``: the source is declared with
    ``lj.ProcessingTime()`` (the engine stamps ``p_time`` as batches arrive) and a
    ``TumblingWindow`` counts over it. Which window a bid falls in depends on when it was fed,
    so only the totals per bidder can be compared with SQL (``max_delay`` does not apply).
    """
    return (DagBuilder().source("bid", SCHEMAS["bid"], event_time="p_time", watermark=ProcessingTime())
            .operator("windows", TumblingWindow(10 * _S, key="bidder", aggs={"bid_count": count()}))
            .operator("q12", Project({"bidder": "bidder", "bid_count": "bid_count", "starttime": "window_start",
                                      "endtime": "window_end"}))
            .connect("bid", "windows").connect("windows", "q12").sink_for("q12", "out").build())


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


class _OfLastDictionaries:
    """``fn`` of whole dictionaries (its outputs at index ``i`` a function of the inputs at ``i`` alone), worked
    out again only when they change: the generator's chunks share their dictionaries, so q21's regular
    expression and q22's splits run once per distinct url in a run instead of once per chunk."""

    def __init__(self, fn):
        self.fn = fn
        self.last = None  # (dictionaries, result), replaced as one (executors in threads may share it)

    def __call__(self, *dictionaries):
        last = self.last
        if last is not None and all(a.equals(b) for a, b in zip(last[0], dictionaries)):
            return last[1]
        result = self.fn(*dictionaries)
        self.last = (dictionaries, result)
        return result


def _channel_id(channel, url):
    """q21's ``CASE``: a hot channel's fixed id, else ``REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)``;
    and whether the row is kept (the id was found or the channel is a hot one).

    The generator's ``channel`` and ``url`` are dictionaries over the same indices: then the strings are
    worked out once per distinct channel (10 K; again only when the dictionaries change) and taken back to
    the rows by index, as a dictionary.
    """
    if pa.types.is_dictionary(channel.type) and pa.types.is_dictionary(url.type) and \
            channel.indices.equals(url.indices):
        ids, keep = _channel_id_per_url(channel.dictionary, url.dictionary)
        return pa.DictionaryArray.from_arrays(channel.indices, ids), pc.take(keep, channel.indices)
    ids, keep = _channel_id_of(channel.cast(pa.string()), url.cast(pa.string()))
    return ids.dictionary_encode(), keep


def _channel_id_of(channel, url):
    lower = pc.utf8_lower(channel)
    found = pc.struct_field(pc.extract_regex(url, r"(?:&|^)channel_id=(?P<id>[^&]*)"), "id")
    hot = pc.is_in(lower, value_set=pa.array(list(_CHANNEL_IDS)))
    fixed = pc.take(pa.array(list(_CHANNEL_IDS.values())), pc.index_in(lower, value_set=pa.array(list(_CHANNEL_IDS))))
    return pc.if_else(hot, fixed, found), pc.or_kleene(pc.is_valid(found), hot)


_channel_id_per_url = _OfLastDictionaries(_channel_id_of)
_dirs_per_url = _OfLastDictionaries(lambda urls: split_index(urls, "/", (3, 4, 5)))


def _url_dirs(url):
    """q22's three ``SPLIT_INDEX`` columns, worked out per distinct url when ``url`` is a dictionary."""
    if pa.types.is_dictionary(url.type):
        return tuple(pa.DictionaryArray.from_arrays(url.indices, d) for d in _dirs_per_url(url.dictionary))
    return tuple(d.dictionary_encode() for d in split_index(url.cast(pa.string()), "/", (3, 4, 5)))


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


#: q13's side table as Arrow arrays: its keys and values.
_SIDE = side_input()


def _side_value(auction):
    """q13's lookup: the side table's ``value`` of key ``auction % 10000`` (null when it has none), as a
    dictionary over the side table's values: a bid carries an index, no string is copied."""
    keys = pc.index_in(pa.array(auction.to_numpy(zero_copy_only=False) % len(_SIDE)), value_set=_SIDE["key"])
    return pa.DictionaryArray.from_arrays(keys, _SIDE["value"].combine_chunks())


def q13(max_delay: int = 100) -> StreamingDag:
    """Bounded side input join: each bid with the side table's value of ``auction % 10000``.

    ``SELECT B.auction, B.bidder, B.price, B.dateTime, S.value FROM (SELECT *, PROCTIME() AS p_time
    FROM bid) B JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON mod(B.auction, 10000) =
    S.key``. The side table (:func:`~laminar_jit.nexmark.side_input`) is bounded and does not
    change, so the lookup is an ``ArrowMap`` holding it: a hash lookup per bid into the table's
    keys, the value taken as a dictionary index.
    """
    return (_builder(["bid"], max_delay)
            .operator("side", ArrowMap(_side_value, output={"value": _DICT_STRING}))
            .operator("q13", Project(["auction", "bidder", "price", "date_time", "value"]))
            .connect("bid", "side").connect("side", "q13").sink_for("q13", "out").build())


_TIME_TYPES = pa.array(["dayTime", "nightTime", "otherTime"])


def _bid_time_type_and_c_counts(date_time, extra):
    """q14's ``CASE`` on the hour of the bid (a dictionary of three strings) and ``count_char(extra, 'c')``."""
    hour = (pc.cast(date_time, pa.int64()).to_numpy(zero_copy_only=False) // 3_600_000) % 24
    kind = np.where((hour >= 8) & (hour <= 18), 0, np.where((hour <= 6) | (hour >= 20), 1, 2)).astype(np.int32)
    return (pa.DictionaryArray.from_arrays(pa.array(kind), _TIME_TYPES),
            count_char(extra, "c"))


def _euro_price_in_range(price):
    euro = price * 0.908
    return euro > 1_000_000 and euro < 50_000_000


def q14(max_delay: int = 100) -> StreamingDag:
    """Calculated columns and a UDF filter.

    ``SELECT auction, bidder, 0.908 * price AS price, CASE WHEN HOUR(dateTime) >= 8 AND
    HOUR(dateTime) <= 18 THEN 'dayTime' WHEN HOUR(dateTime) <= 6 OR HOUR(dateTime) >= 20 THEN
    'nightTime' ELSE 'otherTime' END AS bidTimeType, dateTime, extra, count_char(extra, 'c') AS
    c_counts FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000`` (columns in
    snake case: ``bid_time_type``). The string work (the ``CASE`` and Flink's ``count_char`` UDF)
    is an ``ArrowMap``; the filter and the conversion are kernels.
    """
    return (_builder(["bid"], max_delay)
            .operator("in_range", Filter(_euro_price_in_range))
            .operator("strings", ArrowMap(_bid_time_type_and_c_counts,
                                          output={"bid_time_type": _DICT_STRING, "c_counts": pa.int64()}))
            .operator("euro", Map(_to_euro, output="price"))
            .operator("q14", Project(["auction", "bidder", "price", "bid_time_type", "date_time", "extra",
                                      "c_counts"]))
            .connect("bid", "in_range").connect("in_range", "strings").connect("strings", "euro")
            .connect("euro", "q14").sink_for("q14", "out").build())


#: Query name -> DAG factory.
QUERIES = {"q0": q0, "q1": q1, "q2": q2, "q3": q3, "q4": q4, "q5": q5, "q6": q6, "q7": q7, "q8": q8, "q9": q9,
           "q10": q10, "q11": q11, "q12": q12, "q13": q13, "q14": q14, "q15": q15, "q16": q16, "q17": q17, "q18": q18,
           "q19": q19, "q20": q20, "q21": q21, "q22": q22}


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
