"""Sources and sinks: where a run's batches come from and where its outputs go."""

from .sinks import CallbackSink, MemorySink, ParquetSink, Sink
from .sources import CsvSource, IpcSource, MemorySource, ParquetSource, Source, StreamSource, as_source

__all__ = ["CallbackSink", "CsvSource", "IpcSource", "MemorySink", "MemorySource", "ParquetSink", "ParquetSource",
           "Sink", "Source", "StreamSource", "as_source"]
