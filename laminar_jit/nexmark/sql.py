"""Each Nexmark query in SQL, as DuckDB runs it over the same generated events.

The tests compare every query's result with its SQL here, and the benchmarks
time DuckDB on it as a yardstick. Tables ``person``, ``auction`` and ``bid``
are the generated streams plus two columns: ``arrival`` (the row's position
in its stream) and ``t`` (``date_time`` in epoch milliseconds), see
:func:`duckdb_connection`. Timestamps in results are epoch milliseconds.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .generator import side_input

__all__ = ["SQL", "duckdb_connection"]

#: Query name -> DuckDB SQL giving the query's result (rows in any order, except
#: q0-q2, whose rows come in arrival order: DuckDB preserves insertion order). For
#: the updating queries (q4, q15-q19) it is the result their changelog describes.
SQL = {
    "q0": "SELECT auction, bidder, price, date_time, extra FROM bid",
    "q1": "SELECT auction, bidder, (0.908 * price)::DECIMAL(23, 3) AS price, date_time, extra FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    "q3": """
        SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id
        WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA')""",
    "q4": """
        SELECT category, avg(final) AS avg_final FROM (
            SELECT a.id, a.category, max(b.price) AS final FROM auction a JOIN bid b
            ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id, a.category)
        GROUP BY category""",
    "q5": """
        WITH w AS (SELECT auction, (t // 2000 - k) * 2000 AS starttime FROM bid, range(5) r(k)),
             c AS (SELECT auction, starttime, count(*) AS num FROM w GROUP BY ALL)
        SELECT auction, num, starttime, starttime + 10000 AS endtime FROM c
        QUALIFY rank() OVER (PARTITION BY starttime ORDER BY num DESC) = 1""",
    "q6": """
        WITH q AS (SELECT a.id, a.seller, a.expires, max(b.price) AS final FROM auction a JOIN bid b
                   ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires GROUP BY ALL)
        SELECT seller, epoch_ms(expires::TIMESTAMP) + 1 AS date_time,
               avg(final) OVER (PARTITION BY seller ORDER BY expires, id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW)
               AS avg_final FROM q""",
    "q7": """
        SELECT auction, price, bidder, t AS date_time, t // 10000 * 10000 AS window_start,
               t // 10000 * 10000 + 10000 AS window_end FROM bid
        QUALIFY rank() OVER (PARTITION BY t // 10000 ORDER BY price DESC) = 1""",
    "q8": """
        SELECT p.id, p.name, p.t // 10000 * 10000 AS starttime FROM person p
        JOIN (SELECT DISTINCT seller, t // 10000 AS w FROM auction) a ON p.id = a.seller AND p.t // 10000 = a.w""",
    "q9": """
        SELECT a.id, a.item_name, a.description, a.initial_bid, a.reserve, a.t AS date_time, epoch_ms(a.expires::TIMESTAMP) AS expires,
               a.seller, a.category, b.auction, b.bidder, b.price, b.t AS bid_date_time
        FROM auction a JOIN bid b ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires
        QUALIFY row_number() OVER (PARTITION BY a.id ORDER BY b.price DESC, b.date_time, b.arrival) = 1""",
    "q10": """
        SELECT auction, bidder, price, date_time, extra, strftime(date_time, '%Y-%m-%d') AS dt,
               strftime(date_time, '%H:%M') AS hm FROM bid""",
    "q11": """
        WITH s AS (SELECT bidder, t, sum(CASE WHEN t - prev > 10000 THEN 1 ELSE 0 END)
                       OVER (PARTITION BY bidder ORDER BY t ROWS UNBOUNDED PRECEDING) AS session
                   FROM (SELECT bidder, t, lag(t) OVER (PARTITION BY bidder ORDER BY t) AS prev FROM bid))
        SELECT bidder, count(*) AS bid_count, min(t) AS starttime, max(t) + 10000 AS endtime
        FROM s GROUP BY bidder, session""",
    # (q12's windows are of processing time, which SQL over the events cannot know: its totals per bidder)
    "q12": "SELECT bidder, count(*) AS bid_count FROM bid GROUP BY bidder",
    "q13": """
        SELECT b.auction, b.bidder, b.price, b.date_time, s.value FROM bid b
        LEFT JOIN side s ON b.auction % 10000 = s.key ORDER BY b.arrival""",
    "q14": """
        SELECT auction, bidder, price * 0.908::DOUBLE AS price,
               CASE WHEN hour(date_time) BETWEEN 8 AND 18 THEN 'dayTime'
                    WHEN hour(date_time) <= 6 OR hour(date_time) >= 20 THEN 'nightTime'
                    ELSE 'otherTime' END AS bid_time_type,
               date_time, extra, length(extra) - length(replace(extra, 'c', '')) AS c_counts
        FROM bid WHERE price * 0.908::DOUBLE > 1000000 AND price * 0.908::DOUBLE < 50000000""",
    "q20": """
        SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.t AS bid_date_time, b.extra AS bid_extra,
               a.item_name, a.description, a.initial_bid, a.reserve, a.t AS auction_date_time,
               epoch_ms(a.expires::TIMESTAMP) AS expires, a.seller, a.category, a.extra AS auction_extra
        FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10""",
    # updating queries: the SQL gives the result their changelog describes in the end
    # (q15-q17: FILTER bands rank1 price < 10,000, rank2 < 1,000,000, rank3 the rest)
    "q15": """
        SELECT strftime(date_time, '%Y-%m-%d') AS day,
               count(*) AS total_bids,
               count(*) FILTER (WHERE price < 10000) AS rank1_bids,
               count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
               count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
               count(DISTINCT bidder) AS total_bidders,
               count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
               count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
               count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
               count(DISTINCT auction) AS total_auctions,
               count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
               count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
               count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions
        FROM bid GROUP BY day""",
    "q16": """
        SELECT channel, strftime(date_time, '%Y-%m-%d') AS day, max(strftime(date_time, '%H:%M')) AS minute,
               count(*) AS total_bids,
               count(*) FILTER (WHERE price < 10000) AS rank1_bids,
               count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
               count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
               count(DISTINCT bidder) AS total_bidders,
               count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders,
               count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders,
               count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders,
               count(DISTINCT auction) AS total_auctions,
               count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions,
               count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions,
               count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions
        FROM bid GROUP BY channel, day""",
    "q17": """
        SELECT auction, strftime(date_time, '%Y-%m-%d') AS day, count(*) AS total_bids,
               count(*) FILTER (WHERE price < 10000) AS rank1_bids,
               count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids,
               count(*) FILTER (WHERE price >= 1000000) AS rank3_bids,
               min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price,
               sum(price)::BIGINT AS sum_price
        FROM bid GROUP BY auction, day""",
    "q18": """
        SELECT auction, bidder, price, channel, url, t AS date_time FROM bid
        QUALIFY row_number() OVER (PARTITION BY bidder, auction ORDER BY t DESC, arrival DESC) = 1""",
    "q19": """
        SELECT auction, bidder, price, channel, url, t AS date_time,
               row_number() OVER (PARTITION BY auction ORDER BY price DESC, arrival) AS rank_number
        FROM bid QUALIFY rank_number <= 10""",
    # (DuckDB's regexp_extract gives '' where Flink's REGEXP_EXTRACT gives NULL)
    "q21": """
        SELECT auction, bidder, price, channel,
               CASE lower(channel) WHEN 'apple' THEN '0' WHEN 'google' THEN '1' WHEN 'facebook' THEN '2'
                    WHEN 'baidu' THEN '3'
                    ELSE nullif(regexp_extract(url, '(&|^)channel_id=([^&]*)', 2), '') END AS channel_id
        FROM bid WHERE regexp_extract(url, '(&|^)channel_id=([^&]*)', 2) <> ''
                    OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')""",
    # (lists are 1-based: Flink's SPLIT_INDEX(url, '/', 3) is element 4; past the end both give NULL)
    "q22": """
        SELECT auction, bidder, price, channel, string_split(url, '/')[4] AS dir1,
               string_split(url, '/')[5] AS dir2, string_split(url, '/')[6] AS dir3 FROM bid""",
}


def duckdb_connection(events):
    """A DuckDB connection with ``events`` registered as ``person``, ``auction`` and ``bid`` (and q13's ``side``).

    Parameters
    ----------
    events : NexmarkEvents

    Returns
    -------
    duckdb.DuckDBPyConnection
        Needs the ``duckdb`` package (in the test extra).
    """
    import duckdb

    con = duckdb.connect()
    for stream in ("person", "auction", "bid"):
        t = events.table(stream)
        t = t.append_column("arrival", pa.array(np.arange(t.num_rows)))
        t = t.append_column("t", pc.cast(t["date_time"], pa.int64()))
        con.register(stream, t)
    con.register("side", side_input())
    return con
