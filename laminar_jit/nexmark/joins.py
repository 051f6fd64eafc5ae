"""The Nexmark queries that join streams: q3, q4, q6, q8, q9 and q20.

Kernels are at module level: their compiled plans are cached on disk.
"""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..dag import StreamingDag
from ..ops import ArrowMap, Filter, Project
from ..ops.aggregates import mean
from ..ops.dedup import Dedup
from ..ops.group import GroupAggregate
from ..ops.joins import IntervalJoin, WindowJoin
from ..ops.keyed import KeyedKernel
from ..ops.topn import TopN
from ._common import _S, _builder


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
    :func:`~laminar_jit.nexmark.queries.q18`).
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
