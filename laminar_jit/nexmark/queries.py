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
from decimal import Decimal
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._progress import compiling
from ..dag import DagBuilder, StreamingDag
from ..executor import DagExecutor
from ..ops import ArrowMap, Filter, Map, Project
from ..ops.aggregates import count, count_distinct, mean
from ..ops.aggregates import max as max_
from ..ops.aggregates import min as min_
from ..ops.aggregates import sum as sum_
from ..ops.dedup import Dedup
from ..ops.group import GroupAggregate
from ..ops.keyed import KeyedKernel
from ..ops.joins import IntervalJoin, WindowJoin
from ..ops.topn import TopN
from ..ops.windows import SessionWindow, SlidingWindow, TumblingWindow
from ..time import BoundedOutOfOrderness, ProcessingTime
from .generator import SCHEMAS, NexmarkEvents, side_input

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


def _bid_before_expiry(date_time, expires):
    return date_time <= expires


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


def q4(max_delay: int = 100) -> StreamingDag:
    """Average closing price per category: an updating result (a changelog).

    ``SELECT category, AVG(final) AS avg_final FROM (SELECT MAX(B.price) AS final, A.category
    FROM auction A JOIN bid B ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category) GROUP BY category``. Each bid meets its auction in a join that keeps
    an auction for as long as bids may come (a regular join on the time bound ``B.date_time >=
    A.date_time``, bids on the left so that the output carries the bid's time; no bound on auction
    length is assumed, so the answer does not depend on the event rate) and forgets a bid once the
    watermark has passed it. When the
    watermark passes an auction's ``expires`` its highest bid is final, and the category's
    average is updated by a :class:`~laminar_jit.GroupAggregate`: output ``category``,
    ``avg_final``, ``op`` (``+I`` for a category's first auction, then ``-U``/``+U``). The
    changelog applied is the SQL answer. (Flink's plan also retracts each auction's running
    maximum as bids come; closing auctions first emits the same final state with fewer updates.)
    """
    return (_builder(["auction", "bid"], max_delay)
            .operator("auctions", Project(["id", "category", "date_time", "expires"]))
            .operator("bids", Project(["auction", "price", "date_time"]))
            .operator("joined", IntervalJoin("auction", "id", lower=-_FOREVER, upper=0))
            .operator("in_time", Filter(_bid_before_expiry))
            .operator("winning", KeyedKernel(_bid_for_auction, key="auction",
                                             state={"final": np.int64, "category": np.int64},
                                             output={"final": pa.int64(), "category": pa.int64(),
                                                     "closed": pa.bool_()},
                                             on_timer=_auction_closed))
            .operator("closed", Filter(_closed))
            .operator("final", Project(["category", "final"]))
            .operator("q4", GroupAggregate("category", {"avg_final": mean("final")}))
            .connect("auction", "auctions").connect("bid", "bids")
            .connect("bids", "joined", port="left").connect("auctions", "joined", port="right")
            .connect("joined", "in_time").connect("in_time", "winning").connect("winning", "closed")
            .connect("closed", "final").connect("final", "q4").sink_for("q4", "out").build())


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


#: Rows of q6's average: ``ROWS BETWEEN 10 PRECEDING AND CURRENT ROW``.
_Q6_ROWS = 11


def _last_11_average(st, final):
    """The mean of a seller's last 11 closing prices (this one and the 10 before), kept in a shift register."""
    st.f10, st.f9, st.f8, st.f7, st.f6, st.f5 = st.f9, st.f8, st.f7, st.f6, st.f5, st.f4
    st.f4, st.f3, st.f2, st.f1, st.f0 = st.f3, st.f2, st.f1, st.f0, final
    if st.n < 11:
        st.n += 1
    total = st.f0 + st.f1 + st.f2 + st.f3 + st.f4 + st.f5 + st.f6 + st.f7 + st.f8 + st.f9 + st.f10
    return total / st.n


def q6(max_delay: int = 100) -> StreamingDag:
    """Average selling price by seller: per closed auction, the mean of its seller's last closing prices.

    ``SELECT Q.seller, AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.dateTime ROWS BETWEEN 10
    PRECEDING AND CURRENT ROW) FROM (SELECT MAX(B.price) AS final, A.seller, B.dateTime FROM auction
    A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires GROUP BY A.id,
    A.seller) Q``: an auction's price is final when the watermark passes its ``expires`` (as in
    :func:`q4`), and the seller's average over that auction and the 10 that closed before it is
    emitted then (``seller``, ``date_time`` = ``expires`` + 1 ms, ``avg_final`` as DOUBLE). The
    subquery's ``B.dateTime`` is not grouped; the closing time orders a seller's auctions here, and
    auctions closing in the same millisecond come in the order their first bids arrived (SQL leaves
    that order open). An append-only stream: each row is final.
    """
    ring = {f"f{i}": np.int64 for i in range(_Q6_ROWS)}
    return (_builder(["auction", "bid"], max_delay)
            .operator("auctions", Project(["id", "seller", "date_time", "expires"]))
            .operator("bids", Project(["auction", "price", "date_time"]))
            .operator("joined", IntervalJoin("auction", "id", lower=-_FOREVER, upper=0))
            .operator("in_time", Filter(_bid_before_expiry))
            .operator("winning", KeyedKernel(_bid_for_auction, key="auction", columns={"category": "seller"},
                                             state={"final": np.int64, "category": np.int64},
                                             output={"final": pa.int64(), "seller": pa.int64(),
                                                     "closed": pa.bool_()},
                                             on_timer=_auction_closed))
            .operator("closed", Filter(_closed))
            .operator("average", KeyedKernel(_last_11_average, key="seller", state={**ring, "n": np.int64},
                                             output={"avg_final": pa.float64()}))
            .operator("q6", Project(["seller", "date_time", "avg_final"]))
            .connect("auction", "auctions").connect("bid", "bids")
            .connect("bids", "joined", port="left").connect("auctions", "joined", port="right")
            .connect("joined", "in_time").connect("in_time", "winning").connect("winning", "closed")
            .connect("closed", "average").connect("average", "q6").sink_for("q6", "out").build())


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


_AUCTION_COLUMNS = ["id", "item_name", "description", "initial_bid", "reserve", "date_time", "expires", "seller",
                    "category"]


def q9(max_delay: int = 100) -> StreamingDag:
    """Winning bids: each auction with its highest bid so far, an updating result (a changelog).

    ``SELECT id, itemName, description, initialBid, reserve, dateTime, expires, seller, category,
    auction, bidder, price, bid_dateTime FROM (SELECT A.*, B.auction, B.bidder, B.price, B.dateTime
    AS bid_dateTime, ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.dateTime ASC) AS
    rownum FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND
    A.expires) WHERE rownum <= 1``. Bids meet their auction as in :func:`q4` and an unbounded
    ``TopN(1, by=["price", "date_time"], descending=[True, False])`` per auction keeps the best:
    the highest price, of equal prices the earliest bid. The ``extra`` columns are left out (see
    :func:`q18`).
    """
    return (_builder(["auction", "bid"], max_delay)
            .operator("auctions", Project(_AUCTION_COLUMNS))
            .operator("bids", Project(["auction", "bidder", "price", "date_time"]))
            .operator("joined", IntervalJoin("auction", "id", lower=-_FOREVER, upper=0))
            .operator("in_time", Filter(_bid_before_expiry))
            .operator("best", TopN(1, by=["price", "date_time"], key="id", window=None, descending=[True, False]))
            .operator("q9", Project({**{c: c for c in _AUCTION_COLUMNS}, "date_time": "date_time_right",
                                     "auction": "auction", "bidder": "bidder", "price": "price",
                                     "bid_date_time": "date_time", "op": "op"}))
            .connect("auction", "auctions").connect("bid", "bids")
            .connect("bids", "joined", port="left").connect("auctions", "joined", port="right")
            .connect("joined", "in_time").connect("in_time", "best").connect("best", "q9")
            .sink_for("q9", "out").build())


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
            pc.cast(pc.count_substring(extra, "c"), pa.int64()))


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


def q20(max_delay: int = 100) -> StreamingDag:
    """Filtered join: every bid with its auction, for auctions of category 10.

    ``SELECT auction, bidder, price, channel, url, B.dateTime, B.extra, itemName, description,
    initialBid, reserve, A.dateTime, expires, seller, category, A.extra FROM bid AS B INNER JOIN
    auction AS A ON B.auction = A.id WHERE A.category = 10``; the two ``dateTime`` and ``extra``
    columns are named ``bid_date_time``, ``bid_extra``, ``auction_date_time``, ``auction_extra``.
    A regular join: a pair is emitted when its second row arrives, in either order, and both sides
    are kept for the life of the query (as in any streaming engine without a state TTL).
    """
    bid = ["auction", "bidder", "price", "channel", "url", "date_time", "extra"]
    renamed = {"auction": "auction", "bidder": "bidder", "price": "price", "channel": "channel", "url": "url",
               "bid_date_time": "date_time", "bid_extra": "extra", "item_name": "item_name",
               "description": "description", "initial_bid": "initial_bid", "reserve": "reserve",
               "auction_date_time": "date_time_right", "expires": "expires", "seller": "seller",
               "category": "category", "auction_extra": "extra_right"}
    return (_builder(["auction", "bid"], max_delay)
            .operator("category_10", Filter(_is_category_10))
            .operator("auctions", Project(["id", "item_name", "description", "initial_bid", "reserve", "date_time",
                                           "expires", "seller", "category", "extra"]))
            .operator("bids", Project(bid))
            .operator("joined", IntervalJoin("auction", "id", lower=-_FOREVER, upper=_FOREVER))
            .operator("q20", Project(renamed))
            .connect("auction", "category_10").connect("category_10", "auctions").connect("bid", "bids")
            .connect("bids", "joined", port="left").connect("auctions", "joined", port="right")
            .connect("joined", "q20").sink_for("q20", "out").build())


_DAY_MS, _MINUTE_MS = 86_400_000, 60_000
#: Price bands of q15-q17's ``FILTER`` clauses: ``price < 10,000``, ``< 1,000,000``, the rest.
_BANDS = (0, 10_000, 1_000_000, None)


def _days(date_time):
    """``DATE_FORMAT(date_time, 'yyyy-MM-dd')`` as a dictionary: the text of each of the few days, once."""
    day = np.floor_divide(pc.cast(date_time, pa.int64()).to_numpy(zero_copy_only=False), _DAY_MS)
    first, last = (int(day.min()), int(day.max())) if day.size else (0, 0)
    text = np.datetime_as_string((np.arange(first, last + 1) * _DAY_MS).astype("datetime64[ms]"), unit="D")
    return pa.DictionaryArray.from_arrays(pa.array(day - first, pa.int32()), pa.array(text, pa.string()))


def _bands(price, *columns):
    """Per column and price band, the column where ``price`` is in the band, else null: each ``FILTER
    (WHERE ...)`` as a column that ``count``/``count_distinct`` skip where its condition fails."""
    out = []
    for c in columns:
        for low, high in zip(_BANDS, _BANDS[1:]):
            keep = pc.greater_equal(price, low)
            if high is not None:
                keep = pc.and_(keep, pc.less(price, high))
            out.append(pc.if_else(keep, c, pa.scalar(None, c.type)))
    return tuple(out)


def _day_bidder_auction_bands(date_time, price, bidder, auction):
    return (_days(date_time), *_bands(price, bidder, auction))


def _day_minute_bidder_auction_bands(date_time, price, bidder, auction):
    ms = pc.cast(date_time, pa.int64()).to_numpy(zero_copy_only=False)
    minute = (ms % _DAY_MS) // _MINUTE_MS * 60  # seconds since midnight, whole minutes
    return (_days(date_time), pa.array(minute.astype(np.int32), pa.time32("s")), *_bands(price, bidder, auction))


def _day_price_bands(date_time, price):
    return (_days(date_time), *_bands(price, price))


_BAND_NAMES = {f"{c}_r{r}": pa.int64() for c in ("bidder", "auction") for r in (1, 2, 3)}


def _distinct_counts() -> dict:
    """q15's and q16's aggregates: bids, bidders and auctions, in total and per price band."""
    aggs = {"total_bids": count(), **{f"rank{r}_bids": count(f"bidder_r{r}") for r in (1, 2, 3)}}
    for column, counted in (("bidder", "bidders"), ("auction", "auctions")):
        aggs[f"total_{counted}"] = count_distinct(column)
        aggs.update({f"rank{r}_{counted}": count_distinct(f"{column}_r{r}") for r in (1, 2, 3)})
    return aggs


def q15(max_delay: int = 100) -> StreamingDag:
    """Bidding statistics per day: an updating result (a changelog).

    ``SELECT DATE_FORMAT(dateTime, 'yyyy-MM-dd') AS day, count(*) AS total_bids, count(*) FILTER
    (WHERE price < 10000) AS rank1_bids, ... (rank2: 10,000 <= price < 1,000,000; rank3: price >=
    1,000,000), count(DISTINCT bidder) AS total_bidders, count(DISTINCT bidder) FILTER (WHERE ...)
    AS rank1_bidders, ..., count(DISTINCT auction) AS total_auctions, ... FROM bid GROUP BY day``.
    An ``ArrowMap`` works out ``day`` (text, once per distinct day) and each ``FILTER`` as a column
    that is null where its condition fails; a :class:`~laminar_jit.GroupAggregate` counts them
    (``count`` and ``count_distinct`` skip nulls). Output: ``day``, the twelve counts, ``op``.
    """
    return (_builder(["bid"], max_delay)
            .operator("bands", ArrowMap(_day_bidder_auction_bands, output={"day": _DICT_STRING, **_BAND_NAMES}))
            .operator("q15", GroupAggregate("day", _distinct_counts()))
            .connect("bid", "bands").connect("bands", "q15").sink_for("q15", "out").build())


def q16(max_delay: int = 100) -> StreamingDag:
    """Channel statistics per day: an updating result (a changelog).

    ``SELECT channel, DATE_FORMAT(dateTime, 'yyyy-MM-dd') AS day, max(DATE_FORMAT(dateTime, 'HH:mm'))
    AS minute, count(*) AS total_bids, ...`` (the counts of :func:`q15`) ``FROM bid GROUP BY channel,
    day``. ``minute`` is a time of day (Arrow ``time32[s]``, whole minutes) rather than the text
    ``'HH:mm'``: the latest minute is the same, and kernels compare times but not text.
    """
    return (_builder(["bid"], max_delay)
            .operator("bands", ArrowMap(_day_minute_bidder_auction_bands,
                                        output={"day": _DICT_STRING, "minute": pa.time32("s"), **_BAND_NAMES}))
            .operator("q16", GroupAggregate(["channel", "day"], {"minute": max_("minute"), **_distinct_counts()}))
            .connect("bid", "bands").connect("bands", "q16").sink_for("q16", "out").build())


def q17(max_delay: int = 100) -> StreamingDag:
    """Auction statistics per day: an updating result (a changelog).

    ``SELECT auction, DATE_FORMAT(dateTime, 'yyyy-MM-dd') AS day, count(*) AS total_bids, count(*)
    FILTER (WHERE price < 10000) AS rank1_bids, ... (the bands of :func:`q15`), min(price) AS
    min_price, max(price) AS max_price, avg(price) AS avg_price, sum(price) AS sum_price FROM bid
    GROUP BY auction, day``.
    """
    aggs = {"total_bids": count(), **{f"rank{r}_bids": count(f"price_r{r}") for r in (1, 2, 3)},
            "min_price": min_("price"), "max_price": max_("price"), "avg_price": mean("price"),
            "sum_price": sum_("price")}
    return (_builder(["bid"], max_delay)
            .operator("bands", ArrowMap(_day_price_bands,
                                        output={"day": _DICT_STRING, **{f"price_r{r}": pa.int64() for r in (1, 2, 3)}}))
            .operator("q17", GroupAggregate(["auction", "day"], aggs))
            .connect("bid", "bands").connect("bands", "q17").sink_for("q17", "out").build())


#: ``'HH:mm'`` of each minute of a day, by minute.
_MINUTE_TEXT = pa.array([f"{m // 60:02d}:{m % 60:02d}" for m in range(24 * 60)])


def _dt_hm(date_time):
    """q10's ``DATE_FORMAT(dateTime, 'yyyy-MM-dd')`` and ``DATE_FORMAT(dateTime, 'HH:mm')``, as dictionaries."""
    ms = pc.cast(date_time, pa.int64()).to_numpy(zero_copy_only=False)
    minute = pa.array(((ms % _DAY_MS) // _MINUTE_MS).astype(np.int32))
    return _days(date_time), pa.DictionaryArray.from_arrays(minute, _MINUTE_TEXT)


def q10(max_delay: int = 100) -> StreamingDag:
    """Log to a file system: every bid with its day and minute, for a sink partitioned by them.

    ``INSERT INTO fs_sink SELECT auction, bidder, price, dateTime, extra, DATE_FORMAT(dateTime,
    'yyyy-MM-dd'), DATE_FORMAT(dateTime, 'HH:mm') FROM bid``, where ``fs_sink`` is ``PARTITIONED BY
    (dt, hm)``: write sink ``"out"`` with ``lj.io.ParquetSink(directory, partition_by=["dt", "hm"])``
    (``directory/dt=2024-01-01/hm=00:00/part-….parquet``, exactly once; ``lj.nexmark.run`` keeps the
    rows in memory). ``dt`` and ``hm`` are worked out once per distinct day and minute.
    """
    return (_builder(["bid"], max_delay)
            .operator("dt_hm", ArrowMap(_dt_hm, output={"dt": _DICT_STRING, "hm": _DICT_STRING}))
            .operator("q10", Project(["auction", "bidder", "price", "date_time", "extra", "dt", "hm"]))
            .connect("bid", "dt_hm").connect("dt_hm", "q10").sink_for("q10", "out").build())


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
