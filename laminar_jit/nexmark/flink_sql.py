"""Nexmark queries as Flink SQL, compiled by :func:`laminar_jit.sql` into the same kind of DAG as :mod:`.queries`.

The texts follow nexmark/nexmark's ``queries/qN.sql`` in the syntax ``lj.sql``
reads (window table functions, ``ROW_NUMBER()`` / ``RANK()`` Top-N, joins);
the tests check that each gives the rows of the hand-built query.
"""

from __future__ import annotations

from ..dag import StreamingDag
from .generator import SCHEMAS

__all__ = ["FLINK_SQL", "sql_query"]

#: Query name -> Flink SQL text (the queries ``lj.sql`` compiles so far).
FLINK_SQL = {
    "q0": "SELECT auction, bidder, price, date_time, extra FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    "q3": """SELECT P.name, P.city, P.state, A.id FROM auction AS A JOIN person AS P ON A.seller = P.id
             WHERE A.category = 10 AND P.state IN ('OR', 'ID', 'CA')""",
    "q7": """SELECT auction, price, bidder, date_time, window_start, window_end FROM (
                 SELECT *, RANK() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rownum
                 FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)))
             WHERE rownum <= 1""",
    "q11": """SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
              FROM TABLE(SESSION(TABLE bid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
              GROUP BY bidder, window_start, window_end""",
    "q18": """SELECT auction, bidder, price, channel, url, date_time FROM (
                  SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC) AS rank_number
                  FROM bid)
              WHERE rank_number <= 1""",
    "q19": """SELECT auction, bidder, price, channel, url, date_time, rank_number FROM (
                  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
              WHERE rank_number <= 10""",
}


def sql_query(name: str, max_delay: int = 100) -> StreamingDag:
    """Nexmark query ``name`` compiled from :data:`FLINK_SQL` (sources ``person``, ``auction``, ``bid``; sink ``out``).

    Parameters
    ----------
    name : str
        A key of :data:`FLINK_SQL`.
    max_delay : int
        The watermark delay of every stream in milliseconds (the generator's ``max_delay``).

    Returns
    -------
    StreamingDag
    """
    from .. import sql

    if name not in FLINK_SQL:
        raise ValueError(f"no Flink SQL text for Nexmark query {name!r}; choose one of {', '.join(FLINK_SQL)}")
    tables = "".join(f"CREATE TABLE {s} (WATERMARK FOR date_time AS date_time - INTERVAL '{max_delay}' MILLISECOND);\n"
                     for s in SCHEMAS)
    return sql(tables + FLINK_SQL[name], sources=dict(SCHEMAS))
