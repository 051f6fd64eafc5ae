"""PostgreSQL connectors: an exactly-once sink (two-phase commit) and a CDC source (logical decoding).

Both need psycopg 3, the CDC source also psycopg2 for the replication protocol
(``pip install 'laminar_jit[postgres]'``), imported when a connector is opened,
not when ``laminar_jit`` is imported.
"""

from ._common import PostgresConnectionError
from .cdc import PostgresCdcSource
from .sink import PostgresSink

__all__ = ["PostgresCdcSource", "PostgresConnectionError", "PostgresSink"]
