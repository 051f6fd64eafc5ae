"""From what users pass to a :class:`~.sources.Source`: :func:`as_source` and :class:`ConcatSource`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from .files import _IPC_SUFFIXES, _PARQUET_SUFFIXES, IpcSource, ParquetSource
from .sources import EmptySource, MemorySource, Source, StreamSource, _drop_rows, _positive_int

__all__ = ["ConcatSource", "as_source"]


class ConcatSource(Source):
    """Several sources of one schema read one after another (e.g. one CSV or Parquet file per day).

    :meth:`split` deals whole parts round robin, so parallel readers take
    different files.

    Parameters
    ----------
    parts : sequence of Source or path
        The parts, in order; paths are wrapped with :func:`as_source`.

    Raises
    ------
    ValueError
        If there are no parts or their schemas differ.
    """

    def __init__(self, parts: Iterable[Any]) -> None:
        self.parts = [as_source(p) for p in parts]
        if not self.parts:
            raise ValueError("ConcatSource: no parts given")
        self.schema = self.parts[0].schema
        for i, part in enumerate(self.parts[1:], 1):
            if not part.schema.equals(self.schema):
                raise ValueError(f"ConcatSource: part {i} ({part.describe()}) has a different schema than "
                                 f"part 0.\nexpected:\n{self.schema}\npart {i}:\n{part.schema}")

    @property
    def total_rows(self) -> int | None:
        """Sum of the parts' rows when every part knows its count, else ``None``."""
        counts = [p.total_rows for p in self.parts]
        return None if None in counts else sum(counts)

    def describe(self) -> str:
        """``"ConcatSource(<n> parts)"``."""
        return f"ConcatSource({len(self.parts)} parts)"

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the parts' rows in order from row ``start_row`` on (see :meth:`Source.batches`)."""
        start_row = self._check_start_row(start_row, self.total_rows)
        return self._iter(start_row)

    def _iter(self, skip: int) -> Iterator[pa.RecordBatch]:
        for part in self.parts:
            total = part.total_rows
            if total is not None:
                if skip >= total:
                    skip -= total
                    continue
                yield from part.batches(skip)
                skip = 0
            else:
                seen = []
                yield from _drop_rows(part.batches(0), skip, seen.append)
                skip = max(0, skip - seen[0]) if seen else 0
        if skip:
            self._beyond_end(skip, 0)

    def part_rows(self) -> list[int] | None:
        """Rows of each part (the parts :meth:`split` deals), when every part knows its count."""
        counts = [p.total_rows for p in self.parts]
        return None if None in counts else counts

    def split(self, shards: int) -> list[Source]:
        """Deal the parts round robin into ``shards`` sources (see :meth:`Source.split`)."""
        shards = _positive_int(shards, "shards", self.describe())
        return [ConcatSource(self.parts[i::shards]) if self.parts[i::shards] else EmptySource(self.schema)
                for i in range(shards)]


# --------------------------------------------------------------------------- dispatch


def as_source(obj: Any) -> Source:
    """Wrap ``obj`` in the matching :class:`Source`.

    Parameters
    ----------
    obj : Source, list/tuple of pyarrow.RecordBatch, pyarrow.Table, pyarrow.RecordBatch, path, list of paths or sources, or object with ``__arrow_c_stream__``
        A :class:`Source` is returned as is; in-memory Arrow data becomes a
        :class:`MemorySource`; a list of paths or sources a :class:`ConcatSource`; a path ending in ``.parquet``/``.pq`` a
        :class:`ParquetSource`, in ``.arrow``/``.ipc``/``.feather``/``.arrows``
        an :class:`IpcSource`; any other object exporting an Arrow C stream
        (Polars DataFrame, DuckDB relation, RecordBatchReader) a
        :class:`StreamSource`.

    Returns
    -------
    Source

    Raises
    ------
    TypeError
        If ``obj`` is none of the above, or is a CSV path (a :class:`CsvSource`
        needs a schema: construct ``CsvSource(path, schema=...)``).

    Examples
    --------
    >>> import pyarrow as pa
    >>> as_source(pa.table({"x": [1, 2]}))
    MemorySource(1 batch, 2 rows)
    """
    if isinstance(obj, Source):
        return obj
    if isinstance(obj, (pa.Table, pa.RecordBatch)):
        return MemorySource(obj)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(o, (str, os.PathLike, Source)) for o in obj):
        return ConcatSource(obj)
    if isinstance(obj, (list, tuple)):
        return MemorySource(obj)  # TypeError for items other than record batches
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        suffix = os.path.splitext(path)[1].lower()
        if suffix in _PARQUET_SUFFIXES:
            return ParquetSource(path)
        if suffix in _IPC_SUFFIXES:
            return IpcSource(path)
        if suffix == ".csv":
            raise TypeError(
                f"as_source({path!r}): a CSV file needs a schema to be read; "
                "construct CsvSource(path, schema=pa.schema([...])) instead"
            )
        raise TypeError(
            f"as_source({path!r}): unknown file suffix {suffix!r}; expected one of "
            f"{', '.join(_PARQUET_SUFFIXES + _IPC_SUFFIXES)} (or construct a CsvSource for CSV)"
        )
    if hasattr(obj, "__arrow_c_stream__"):
        return StreamSource(obj)
    raise TypeError(
        f"as_source: cannot make a source from a {type(obj).__name__}; accepted: a Source, a "
        "list/tuple of pyarrow.RecordBatch, a pyarrow.Table or RecordBatch, a path to a "
        ".parquet/.pq/.arrow/.ipc/.feather/.arrows file, or an object with __arrow_c_stream__ "
        "(Polars DataFrame, DuckDB relation, RecordBatchReader); wrap a callable in StreamSource"
    )
