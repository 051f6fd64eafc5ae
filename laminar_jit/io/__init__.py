"""Sources and sinks: where a run's batches come from and where its outputs go."""

from .delta import DeltaSink, DeltaSource
from .postgres import PostgresCdcSource, PostgresConnectionError, PostgresSink
from .sinks import CallbackSink, MemorySink, ParquetSink, Sink
from .sources import (ConcatSource, CsvSource, EmptySource, IpcSource, MemorySource, ParquetSource, Source,
                      StreamSource, as_source)

__all__ = ["CallbackSink", "ConcatSource", "CsvSource", "DeltaSink", "DeltaSource", "EmptySource", "IpcSource", "MemorySink", "MemorySource",
           "ParquetSink", "ParquetSource", "PostgresCdcSource", "PostgresConnectionError", "PostgresSink", "Sink", "Source", "StreamSource", "as_source"]
