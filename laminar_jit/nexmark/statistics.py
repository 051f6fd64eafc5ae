"""The Nexmark queries of daily statistics and calendar columns: q10 and q15-q17.

Kernels are at module level: their compiled plans are cached on disk.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..dag import StreamingDag
from ..ops import ArrowMap, Project
from ..ops.aggregates import count, count_distinct, mean
from ..ops.aggregates import max as max_
from ..ops.aggregates import min as min_
from ..ops.aggregates import sum as sum_
from ..ops.group import GroupAggregate
from ._common import _DICT_STRING, _builder


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
    return (*_dt_hm(date_time), *_bands(price, bidder, auction))


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
    day``. ``minute`` is the text ``'HH:mm'`` (a dictionary over the day's minutes, worked out once per
    distinct minute), its maximum kept as a string's (compared by its bytes).
    """
    return (_builder(["bid"], max_delay)
            .operator("bands", ArrowMap(_day_minute_bidder_auction_bands,
                                        output={"day": _DICT_STRING, "minute": _DICT_STRING, **_BAND_NAMES}))
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
