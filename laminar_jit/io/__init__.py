"""Sources and sinks: where a run's batches come from and where its outputs go.

``sources`` holds the :class:`Source` protocol and the in-memory and stream
sources, ``files`` the Parquet, CSV and IPC sources, ``adapt`` turns what users
pass into a source, ``sinks`` the sinks; ``delta`` and ``postgres`` connect to
Delta Lake tables and PostgreSQL.
"""

from .adapt import ConcatSource, as_source
from .delta import DeltaSink, DeltaSource
from .files import CsvSource, IpcSource, ParquetSource
from .postgres import PostgresCdcSource, PostgresConnectionError, PostgresSink
from .sinks import CallbackSink, MemorySink, ParquetSink, Sink
from .sources import EmptySource, MemorySource, Source, StreamSource

__all__ = ["CallbackSink", "ConcatSource", "CsvSource", "DeltaSink", "DeltaSource", "EmptySource", "IpcSource",
           "MemorySink", "MemorySource", "ParquetSink", "ParquetSource", "PostgresCdcSource",
           "PostgresConnectionError", "PostgresSink", "Sink", "Source", "StreamSource", "as_source"]
