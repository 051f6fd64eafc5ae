"""Nexmark: the standard streaming benchmark's generator and queries.

``lj.nexmark.generate(events)`` produces the person, auction and bid streams;
``lj.nexmark.query("q5")`` builds a query's DAG; ``lj.nexmark.run`` feeds
generated events through it; ``lj.nexmark.SQL`` has each query in DuckDB's SQL.
"""

from .generator import (AUCTION_SCHEMA, BID_SCHEMA, PERSON_SCHEMA, NexmarkEvents, NexmarkSource, generate,
                        side_input, sources)
from .flink_sql import FLINK_SQL, NOT_COMPILED, SOURCE_VIEWS, sql_query
from .queries import QUERIES, QueryRun, query, run, streams_of
from .sql import SQL, duckdb_connection

__all__ = ["AUCTION_SCHEMA", "BID_SCHEMA", "FLINK_SQL", "NOT_COMPILED", "PERSON_SCHEMA", "QUERIES", "SOURCE_VIEWS",
           "SQL", "NexmarkEvents",
           "NexmarkSource", "QueryRun", "duckdb_connection", "generate", "query", "run", "side_input", "sources",
           "sql_query", "streams_of"]
