"""Replayable sources of record batches: the :class:`Source` protocol, and sources in memory or streams.

A source yields the rows of a data set as Arrow record batches and can start
over from any saved position. A position is the number of rows of the source
already consumed (a non-negative int, stored in checkpoints as JSON), so
``source.batches(position)`` resumes a run exactly where it stopped. File
sources live in :mod:`.files`; :func:`~.adapt.as_source` turns what users pass
into a source.
"""

from __future__ import annotations

import abc
import numbers
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import CheckpointError, DataError

__all__ = ["EmptySource", "MemorySource", "Source", "StreamSource"]

class Source(abc.ABC):
    """Base class of replayable sources of record batches.

    Subclasses set :attr:`schema` at construction, implement :meth:`batches`
    and, when the row count is cheap to know, :attr:`total_rows`.

    Attributes
    ----------
    schema : pyarrow.Schema
        Schema of the batches the source yields.
    """

    schema: pa.Schema
    #: True for a source that has no end of its own (a change stream): when its iterator
    #: returns (stopped, or idle past a timeout), ``lj.run`` stops resumably instead of
    #: finishing (windows stay open; the next run with the checkpoint continues). Such a
    #: source may yield an empty batch while idle, so the run can checkpoint meanwhile.
    unbounded: bool = False

    @abc.abstractmethod
    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the source's rows from row ``start_row`` on, as record batches.

        Every call starts afresh (replay). The concatenation of the yielded
        batches equals rows ``[start_row:]`` of the whole source exactly, and
        no yielded batch is empty (except from an :attr:`unbounded` source, while idle).

        Parameters
        ----------
        start_row : int, default 0
            0-based row of the whole source to start from: the number of rows
            already consumed.

        Returns
        -------
        Iterator[pyarrow.RecordBatch]

        Raises
        ------
        ValueError
            If ``start_row`` is not an int >= 0.
        CheckpointError
            If ``start_row`` is beyond the last row of the source.
        """

    @property
    def total_rows(self) -> int | None:
        """Number of rows in the whole source if cheaply known, else ``None``."""
        return None

    def describe(self) -> str:
        """Short human label of the source, e.g. ``"ParquetSource('bids.parquet')"``."""
        return f"{type(self).__name__}()"

    def split(self, shards: int) -> list["Source"]:
        """Cut the source into ``shards`` disjoint sources for parallel readers.

        Together the shards hold exactly this source's rows; each is
        replayable on its own (positions count rows of the shard). Parts
        that can be read independently (batches, row groups, files, chunks)
        are dealt round robin, so the shards move through event time
        together. This default, for sources that can only be read from the
        start, puts everything in shard 0 and leaves the others empty.

        Parameters
        ----------
        shards : int
            Number of shards (>= 1).

        Returns
        -------
        list of Source
        """
        shards = _positive_int(shards, "shards", self.describe())
        return [self] + [EmptySource(self.schema) for _ in range(shards - 1)]

    def __repr__(self) -> str:
        return self.describe()

    def part_rows(self) -> list[int] | None:
        """Rows of each part :meth:`split` deals round robin, in order; None when it deals none (the default).

        With them, a position of the whole source tells each shard's
        (:func:`laminar_jit.io.shards.split_position`), so a run that moves to
        partitions keeps reading the source in parallel.
        """
        return None

    def position_after(self, position: int, batch: pa.RecordBatch) -> int:
        """The position to store once ``batch``, yielded by this source at ``position``, is consumed.

        Positions count rows, so the default is ``position + batch.num_rows``.
        A source whose positions are not row counts (a CDC source's LSNs)
        overrides it; runners call it right after taking each batch.
        """
        return position + batch.num_rows

    def checkpoint_committed(self, position: int) -> None:
        """A checkpoint holding ``position`` for this source is saved and its epoch committed.

        A run will never again ask for rows before ``position``, so a source
        that keeps them (a change log, a broker's offsets) may release them.
        The default does nothing.
        """

    # helpers for subclasses

    def _check_start_row(self, start_row: Any, total: int | None = None) -> int:
        """Validate ``start_row`` (and compare it with ``total`` when known)."""
        if isinstance(start_row, bool) or not isinstance(start_row, numbers.Integral) or start_row < 0:
            raise ValueError(
                f"{self.describe()}: start_row must be an int >= 0 (a number of rows consumed), "
                f"got {start_row!r}"
            )
        start_row = int(start_row)
        if total is not None and start_row > total:
            self._beyond_end(start_row, total)
        return start_row

    def _damaged(self, where: str, position: int, exc: BaseException) -> DataError:
        """The :class:`DataError` of a read that failed at row ``position`` (``where``: the part read)."""
        read = f"The rows before row {position:,} were read" if position else "No row was read"
        return DataError(
            f"{self.describe()}: cannot read {where}: {type(exc).__name__}: {exc}. {read}; the file is "
            "truncated or damaged from there on — replace it with a complete copy (rewrite it if it was cut "
            "off while being written)")

    def _beyond_end(self, start_row: int, total: int) -> None:
        raise CheckpointError(
            f"{self.describe()}: cannot resume at row {start_row}, the source has only {total} rows; "
            f"the checkpoint belongs to other data or the source shrank"
        )


# --------------------------------------------------------------------------- helpers


def _path(path: str | os.PathLike[str], kind: str) -> str:
    """``path`` as an absolute str (workers of a partitioned run have other working directories),
    or FileNotFoundError if it is not an existing file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind}: no such file: {path!r}")
    return os.path.abspath(path)


def _positive_int(value: Any, name: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


def _drop_rows(
    batches: Iterable[pa.RecordBatch], skip: int, at_end: Callable[[int], None] | None = None
) -> Iterator[pa.RecordBatch]:
    """Yield the non-empty batches of ``batches`` minus their first ``skip`` rows.

    ``at_end(total)`` is called with the number of rows seen once the input is
    exhausted (not when the consumer stops early).
    """
    seen = 0
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        if seen + n > skip:
            yield batch if seen >= skip else batch.slice(skip - seen)
        seen += n
    if at_end is not None:
        at_end(seen)


def _guarded(batches: Iterable[pa.RecordBatch], source: Source, position: int, unit: str,
             before_read: Callable[[], None] | None = None) -> Iterator[pa.RecordBatch]:
    """Yield ``batches``; a read that fails becomes a :class:`DataError` naming ``source`` and the position.

    ``position`` is the row of the whole source the first batch starts at;
    ``unit`` names what each batch is (``"batch"`` of an IPC stream, ``"block"``
    of a CSV file) in the message; ``before_read``, called before each read,
    may raise ``OSError`` to stop it. Batches are checked, never rows: the
    cost is one ``try`` per batch.
    """
    it = iter(batches)
    index = 0
    while True:
        try:
            if before_read is not None:
                before_read()
            batch = next(it)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as exc:
            raise source._damaged(f"{unit} {index} of this read (from row {position:,})", position, exc) from exc
        index += 1
        position += batch.num_rows
        yield batch


def _rechunk(batches: Iterable[pa.RecordBatch], max_rows: int | None) -> Iterator[pa.RecordBatch]:
    """Split batches longer than ``max_rows`` into slices of at most ``max_rows`` rows."""
    for batch in batches:
        if max_rows is None or batch.num_rows <= max_rows:
            yield batch
        else:
            for offset in range(0, batch.num_rows, max_rows):
                yield batch.slice(offset, max_rows)


def _seek(ends: np.ndarray, start_row: int) -> tuple[int, int]:
    """(index of the chunk holding ``start_row``, rows to drop from it), given cumulative chunk ends."""
    index = int(np.searchsorted(ends, start_row, side="right"))
    before = int(ends[index - 1]) if index > 0 else 0
    return index, start_row - before


# --------------------------------------------------------------------------- memory


class MemorySource(Source):
    """Record batches held in memory.

    Parameters
    ----------
    batches : list or tuple of pyarrow.RecordBatch, pyarrow.Table or pyarrow.RecordBatch
        The data. A table is split into its record batches; empty batches are
        dropped.
    schema : pyarrow.Schema, optional
        Schema of the batches. Required when ``batches`` is empty; otherwise
        every batch must match it.

    Raises
    ------
    TypeError
        If ``batches`` is not one of the accepted types.
    ValueError
        If the batches do not all share one schema, or there are none and no
        ``schema`` is given.

    Examples
    --------
    >>> import pyarrow as pa
    >>> src = MemorySource(pa.table({"x": [1, 2, 3]}))
    >>> [b.num_rows for b in src.batches(1)]
    [2]
    """

    def __init__(
        self,
        batches: pa.Table | pa.RecordBatch | list[pa.RecordBatch] | tuple[pa.RecordBatch, ...],
        *,
        schema: pa.Schema | None = None,
    ) -> None:
        if isinstance(batches, pa.Table):
            schema = batches.schema if schema is None else schema
            items = batches.to_batches()
        elif isinstance(batches, pa.RecordBatch):
            items = [batches]
        elif isinstance(batches, (list, tuple)):
            items = list(batches)
            for i, b in enumerate(items):
                if not isinstance(b, pa.RecordBatch):
                    raise TypeError(
                        f"MemorySource: item {i} is a {type(b).__name__}, expected a pyarrow.RecordBatch"
                    )
        else:
            raise TypeError(
                "MemorySource takes a list/tuple of pyarrow.RecordBatch, a pyarrow.Table or a "
                f"pyarrow.RecordBatch, got {type(batches).__name__}"
            )
        if schema is None:
            if not items:
                raise ValueError(
                    "MemorySource: no batches, so the schema is unknown; pass schema=pa.schema([...])"
                )
            schema = items[0].schema
        elif not isinstance(schema, pa.Schema):
            raise TypeError(f"MemorySource: schema must be a pyarrow.Schema, got {type(schema).__name__}")
        for i, b in enumerate(items):
            if not b.schema.equals(schema):
                raise ValueError(
                    f"MemorySource: batch {i} has a different schema than "
                    f"{'the given schema' if i == 0 else 'batch 0'}.\n"
                    f"expected:\n{schema}\nbatch {i}:\n{b.schema}"
                )
        self.schema = schema
        self._batches = [b for b in items if b.num_rows > 0]
        self._ends = np.cumsum([b.num_rows for b in self._batches], dtype=np.int64)

    @property
    def total_rows(self) -> int:
        """Number of rows held."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def describe(self) -> str:
        """Short label with the number of batches and rows held."""
        n = len(self._batches)
        return f"MemorySource({n} batch{'' if n == 1 else 'es'}, {self.total_rows} rows)"

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the held batches from row ``start_row`` on (see :meth:`Source.batches`).

        Whole batches before ``start_row`` are skipped; the one holding it is sliced.
        """
        start_row = self._check_start_row(start_row, self.total_rows)
        index, skip = _seek(self._ends, start_row)
        return self._iter(index, skip)

    def _iter(self, index: int, skip: int) -> Iterator[pa.RecordBatch]:
        for i in range(index, len(self._batches)):
            yield self._batches[i].slice(skip) if i == index and skip else self._batches[i]

    def part_rows(self) -> list[int]:
        """Rows of each batch (the parts :meth:`split` deals)."""
        return np.diff(self._ends, prepend=0).tolist()

    def split(self, shards: int) -> list[Source]:
        """Deal the batches round robin into ``shards`` sources (see :meth:`Source.split`)."""
        shards = _positive_int(shards, "shards", self.describe())
        return [MemorySource(self._batches[i::shards], schema=self.schema) for i in range(shards)]


# --------------------------------------------------------------------------- parquet


class StreamSource(Source):
    """Any object exporting an Arrow C stream, re-exported on every replay.

    Wraps an object with ``__arrow_c_stream__`` (a Polars DataFrame, a DuckDB
    relation, a pyarrow Table or RecordBatchReader, ...) or a zero-argument
    callable returning one, e.g. ``StreamSource(lambda: con.sql("select ..."))``,
    called on every :meth:`batches`. Each call exports the stream afresh and
    skips the rows before ``start_row`` (they are produced, then dropped).

    The types are those the object exports (Polars exports strings as
    ``string_view``, for instance); the engine casts as needed. The schema is
    taken from one export at construction: for a DuckDB relation (or a
    callable) that runs the query once more.

    Parameters
    ----------
    obj : object with ``__arrow_c_stream__``, or a zero-argument callable returning one
        The data.
    batch_size : int, optional
        Maximum number of rows per yielded batch; batches are yielded as
        exported when omitted.

    Raises
    ------
    TypeError
        If ``obj`` neither exports an Arrow C stream nor is callable.
    ValueError
        If ``batch_size`` is given and is not a positive int.

    Warnings
    --------
    A one-shot object such as a ``pyarrow.RecordBatchReader`` can be read only
    once, so it cannot replay: a second :meth:`batches` call raises
    :class:`~laminar_jit.errors.CheckpointError`. The same error is raised when
    a second export fails, or when an export that ran to its end yields fewer
    rows than an earlier one did (how a consumed stream shows). Pass a
    re-exportable object (a Table, a Polars DataFrame, a DuckDB relation) or a
    callable building the stream instead.

    Examples
    --------
    >>> import polars as pl
    >>> src = StreamSource(pl.DataFrame({"x": [1, 2, 3]}))
    >>> [b.num_rows for b in src.batches(2)]
    [1]
    """

    def __init__(self, obj: Any, *, batch_size: int | None = None) -> None:
        if hasattr(obj, "__arrow_c_stream__"):
            self._factory = None
        elif callable(obj):
            self._factory = obj
        else:
            raise TypeError(
                "StreamSource takes an object with __arrow_c_stream__ (a Polars DataFrame, a DuckDB "
                "relation, a pyarrow Table or RecordBatchReader) or a zero-argument callable returning "
                f"one, got {type(obj).__name__}"
            )
        self._obj = obj
        self._one_shot = isinstance(obj, pa.RecordBatchReader)
        self._exports = 0
        self._max_rows = 0  # most rows seen by an export read to its end
        self.batch_size = (
            None if batch_size is None else _positive_int(batch_size, "batch_size", self.describe())
        )
        if self._one_shot:
            self.schema = obj.schema  # exporting a reader is fine, but reading its schema is enough
        else:
            with pa.RecordBatchReader.from_stream(self._target()) as reader:
                self.schema = reader.schema

    def describe(self) -> str:
        """``"StreamSource(<type or callable name>)"``."""
        if self._factory is not None:
            return f"StreamSource({getattr(self._factory, '__qualname__', type(self._factory).__name__)})"
        return f"StreamSource({type(self._obj).__name__})"

    def _target(self) -> Any:
        if self._factory is None:
            return self._obj
        target = self._factory()
        if not hasattr(target, "__arrow_c_stream__"):
            raise TypeError(
                f"{self.describe()}: the callable returned a {type(target).__name__}, "
                "expected an object with __arrow_c_stream__"
            )
        return target

    def _one_shot_error(self, detail: str) -> CheckpointError:
        return CheckpointError(
            f"{self.describe()}: {detail}; the object is one-shot and cannot replay. Pass a "
            "re-exportable object (a pyarrow Table, a Polars DataFrame, a DuckDB relation) or a "
            "callable returning a fresh stream, e.g. StreamSource(lambda: con.sql('...'))"
        )

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Export the stream afresh and yield its rows from row ``start_row`` on.

        See :meth:`Source.batches`.

        Parameters
        ----------
        start_row : int, default 0
            Number of rows already consumed.

        Raises
        ------
        ValueError
            If ``start_row`` is not an int >= 0.
        CheckpointError
            If the object is one-shot and was already read, or the stream ends
            before ``start_row`` (raised when the iteration reaches the end).
        DataError
            If the stream's schema differs from :attr:`schema`.
        """
        start_row = self._check_start_row(start_row)
        if self._one_shot and self._exports:
            raise self._one_shot_error("the RecordBatchReader was already read by an earlier batches() call")
        return self._iter(start_row)

    def _iter(self, start_row: int) -> Iterator[pa.RecordBatch]:
        try:
            reader = pa.RecordBatchReader.from_stream(self._target())
        except Exception as exc:
            if self._exports and self._factory is None:
                raise self._one_shot_error(f"exporting the stream again failed ({exc})") from exc
            raise
        self._exports += 1

        def at_end(total: int) -> None:
            if total < self._max_rows:
                raise self._one_shot_error(
                    f"this export yielded {total} rows, an earlier one {self._max_rows}"
                )
            self._max_rows = total
            if total < start_row:
                self._beyond_end(start_row, total)

        with reader:
            if not reader.schema.equals(self.schema):
                raise DataError(
                    f"{self.describe()}: the stream's schema changed since construction.\n"
                    f"expected:\n{self.schema}\nnow:\n{reader.schema}"
                )
            yield from _rechunk(_drop_rows(reader, start_row, at_end), self.batch_size)


# --------------------------------------------------------------------------- several


class EmptySource(Source):
    """A source without rows (an empty shard).

    Parameters
    ----------
    schema : pyarrow.Schema
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema

    @property
    def total_rows(self) -> int:
        """Always 0."""
        return 0

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield nothing (``start_row`` must be 0)."""
        self._check_start_row(start_row, 0)
        return iter(())



