"""Sources and sinks: where a run's batches come from and where its outputs go."""

from .sinks import CallbackSink, MemorySink, ParquetSink, Sink
from .sources import (ConcatSource, CsvSource, EmptySource, IpcSource, MemorySource, ParquetSource, Source,
                      StreamSource, as_source)

__all__ = ["CallbackSink", "ConcatSource", "CsvSource", "EmptySource", "IpcSource", "MemorySink", "MemorySource",
           "ParquetSink", "ParquetSource", "Sink", "Source", "StreamSource", "as_source"]
