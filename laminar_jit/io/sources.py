"""Replayable sources of record batches.

A source yields the rows of a data set as Arrow record batches and can start
over from any saved position. A position is the number of rows of the source
already consumed (a non-negative int, stored in checkpoints as JSON), so
``source.batches(position)`` resumes a run exactly where it stopped.
"""

from __future__ import annotations

import abc
import numbers
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import CheckpointError, DataError

__all__ = [
    "ConcatSource",
    "CsvSource",
    "EmptySource",
    "IpcSource",
    "MemorySource",
    "ParquetSource",
    "Source",
    "StreamSource",
    "as_source",
]

_PARQUET_SUFFIXES = (".parquet", ".pq")
_IPC_SUFFIXES = (".arrow", ".ipc", ".feather", ".arrows")


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

    @abc.abstractmethod
    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the source's rows from row ``start_row`` on, as record batches.

        Every call starts afresh (replay). The concatenation of the yielded
        batches equals rows ``[start_row:]`` of the whole source exactly, and
        no yielded batch is empty.

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

    def split(self, shards: int) -> list[Source]:
        """Deal the batches round robin into ``shards`` sources (see :meth:`Source.split`)."""
        shards = _positive_int(shards, "shards", self.describe())
        return [MemorySource(self._batches[i::shards], schema=self.schema) for i in range(shards)]


# --------------------------------------------------------------------------- parquet


class ParquetSource(Source):
    """A Parquet file, read in batches with row-group aware seeking.

    Resuming at a row skips every row group before the one holding it without
    reading them.

    Parameters
    ----------
    path : str or os.PathLike
        The Parquet file.
    batch_size : int, default 65_536
        Maximum number of rows per yielded batch.
    columns : sequence of str, optional
        Columns to read, in this order; all by default.
    row_groups : sequence of int, optional
        Read only these row groups, in this order (a shard of the file, see
        :meth:`split`); all by default.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing file.
    DataError
        If the footer cannot be read (a truncated file); when iterating, if
        a row group cannot be read — the message names the row group and the
        first row not read.
    ValueError
        If ``batch_size`` is not a positive int or a column is not in the file.

    Examples
    --------
    >>> src = ParquetSource("bids.parquet", columns=["ts", "price"])  # doctest: +SKIP
    >>> for batch in src.batches(start_row=1_000): ...                # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = 65_536,
        columns: Iterable[str] | None = None,
        row_groups: Iterable[int] | None = None,
    ) -> None:
        self.path = _path(path, "ParquetSource")
        self.batch_size = _positive_int(batch_size, "batch_size", self.describe())
        try:
            with pq.ParquetFile(self.path) as pf:
                self._metadata = pf.metadata
                schema = pf.schema_arrow
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"{self.describe()}: cannot read the file's footer (its schema and row groups): "
                f"{type(exc).__name__}: {exc}. No row was read; the file is truncated, was not completely "
                "written, or is not Parquet — replace it with a complete copy") from exc
        if columns is not None:
            columns = [columns] if isinstance(columns, str) else list(columns)
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise ValueError(f"{self.describe()}: no column(s) {missing}; the file has {schema.names}")
            schema = pa.schema([schema.field(c) for c in columns], metadata=schema.metadata)
        self.columns = columns
        self.schema = schema
        md = self._metadata
        groups = list(range(md.num_row_groups)) if row_groups is None else [int(g) for g in row_groups]
        bad = [g for g in groups if not 0 <= g < md.num_row_groups]
        if bad:
            raise ValueError(f"{self.describe()}: no row group(s) {bad}; the file has {md.num_row_groups}")
        self.row_groups = groups
        self._ends = np.cumsum([md.row_group(i).num_rows for i in groups], dtype=np.int64)

    @property
    def total_rows(self) -> int:
        """Number of rows in the file (or its row groups), from its metadata."""
        return int(self._ends[-1]) if len(self._ends) else 0

    def split(self, shards: int) -> list[Source]:
        """Deal the row groups round robin into ``shards`` sources (see :meth:`Source.split`)."""
        shards = _positive_int(shards, "shards", self.describe())
        return [ParquetSource(self.path, self.batch_size, self.columns, self.row_groups[i::shards])
                for i in range(shards)]

    def describe(self) -> str:
        """``"ParquetSource('<path>')"``."""
        return f"ParquetSource({self.path!r})"

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the file's rows from row ``start_row`` on (see :meth:`Source.batches`).
        """
        start_row = self._check_start_row(start_row, self.total_rows)
        group, skip = _seek(self._ends, start_row)
        return self._iter(group, skip)

    def _iter(self, group: int, skip: int) -> Iterator[pa.RecordBatch]:
        if group >= len(self._ends):
            return
        names = self.schema.names
        with pq.ParquetFile(self.path, metadata=self._metadata) as pf:
            it = (b for t in self._row_groups(pf, group, skip) for b in t.to_batches(max_chunksize=self.batch_size))
            for batch in _drop_rows(it, skip):
                yield batch if batch.schema.names == names else batch.select(names)

    def _row_groups(self, pf: pq.ParquetFile, first: int, skip: int) -> Iterator[pa.Table]:
        """The source's row groups from ``first`` on; one that cannot be read raises :class:`DataError`."""
        for i in range(first, len(self.row_groups)):
            g = self.row_groups[i]
            start = int(self._ends[i - 1]) if i else 0
            try:
                # One row group at a time on this thread: Arrow's decode threads cost more than they
                # save here (the executor and, in a partitioned run, the other workers need the cores).
                table = pf.read_row_group(g, columns=self.columns, use_threads=False)
            except (OSError, pa.ArrowException) as exc:
                reached = start + (skip if i == first else 0)
                raise self._damaged(f"row group {g} (rows {start:,} to {int(self._ends[i]) - 1:,})", reached,
                                    exc) from exc
            yield table


# --------------------------------------------------------------------------- csv


class CsvSource(Source):
    """A CSV file with a header row, parsed in a stream with a known schema.

    The schema fixes the columns read (by header name), their order and their
    types. Resuming at a row skips the rows before it at parse level, without
    converting them. The defaults read back what :func:`pyarrow.csv.write_csv`
    writes: an unquoted empty field is null, a quoted empty string ``""`` is
    an empty string.

    Parameters
    ----------
    path : str or os.PathLike
        The CSV file.
    schema : pyarrow.Schema
        Columns to read and their types, in output order.
    batch_size : int, default 65_536
        Maximum number of rows per yielded batch. The CSV reader cuts batches
        by bytes (``block_size``); longer ones are sliced.
    delimiter : str, default ","
        Field delimiter.
    block_size : int, optional
        Bytes parsed per block; pyarrow's default (1 MiB) when omitted.
    null_values : list of str, optional
        Strings read as null; pyarrow's defaults when omitted.
    quoted_strings_can_be_null : bool, default False
        Whether a quoted field equal to a null value (e.g. ``""``) reads as
        null in string columns.

    Raises
    ------
    TypeError
        If ``schema`` is not a pyarrow.Schema.
    FileNotFoundError
        If ``path`` is not an existing file.
    ValueError
        If ``batch_size`` or ``block_size`` is not a positive int.
    pyarrow.ArrowKeyError
        If a column of ``schema`` is missing from the header.
    DataError
        If a block of the file cannot be parsed or converted (a row cut off
        by truncation, a value of the wrong type): the message names the
        file, the row the damaged block starts at (every row before it was
        yielded) and pyarrow's description of the bad row.

    Notes
    -----
    :attr:`total_rows` is unknown (``None``). Resuming past the end of the
    file costs a full parse to count its rows for the error message.
    Rows are parsed in blocks of ``block_size`` bytes, so a damaged row stops
    the source at the start of its block. A file cut exactly at the end of a
    row, or inside the last field of its last row, is still a valid (shorter)
    CSV file and cannot be told from a complete one.

    Examples
    --------
    >>> import pyarrow as pa
    >>> src = CsvSource("bids.csv", pa.schema([("ts", pa.int64()), ("price", pa.float64())]))  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: pa.Schema,
        batch_size: int = 65_536,
        *,
        delimiter: str = ",",
        block_size: int | None = None,
        null_values: list[str] | None = None,
        quoted_strings_can_be_null: bool = False,
    ) -> None:
        if not isinstance(schema, pa.Schema):
            raise TypeError(
                f"CsvSource needs schema=pa.schema([...]) giving the columns and their types, "
                f"got {type(schema).__name__}"
            )
        self.path = _path(path, "CsvSource")
        self.schema = schema
        self.batch_size = _positive_int(batch_size, "batch_size", self.describe())
        if block_size is not None:
            block_size = _positive_int(block_size, "block_size", self.describe())
        self.block_size = block_size
        self._parse = pa_csv.ParseOptions(delimiter=delimiter)
        extra = {} if null_values is None else {"null_values": list(null_values)}
        self._convert = pa_csv.ConvertOptions(
            column_types=schema,
            include_columns=schema.names,
            strings_can_be_null=True,
            quoted_strings_can_be_null=quoted_strings_can_be_null,
            **extra,
        )
        try:
            with self._open(0):  # fail early on a missing column or an unreadable header
                pass
        except (OSError, pa.ArrowInvalid) as exc:  # a damaged first block (a missing column is ArrowKeyError)
            raise self._damaged("the header and the first block", 0, exc) from exc

    def describe(self) -> str:
        """``"CsvSource('<path>')"``."""
        return f"CsvSource({self.path!r})"

    def _open(self, skip: int, convert: pa_csv.ConvertOptions | None = None) -> pa.RecordBatchReader:
        read = pa_csv.ReadOptions(skip_rows_after_names=skip)
        if self.block_size is not None:
            read.block_size = self.block_size
        return pa_csv.open_csv(
            self.path, read_options=read, parse_options=self._parse, convert_options=convert or self._convert
        )

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the file's rows from row ``start_row`` on (see :meth:`Source.batches`).

        Parameters
        ----------
        start_row : int, default 0
            Number of data rows (after the header) already consumed.

        Raises
        ------
        ValueError
            If ``start_row`` is not an int >= 0.
        CheckpointError
            If the file has fewer than ``start_row`` data rows (raised when
            the iteration reaches the end).
        """
        return self._iter(self._check_start_row(start_row))

    def _iter(self, start_row: int) -> Iterator[pa.RecordBatch]:
        schema, names = self.schema, self.schema.names
        any_rows = False
        try:
            reader = self._open(start_row)  # parses the first block
        except (OSError, pa.ArrowInvalid) as exc:
            raise self._damaged(f"block 0 of this read (from row {start_row:,})", start_row, exc) from exc
        with reader:
            for batch in _rechunk(_guarded(reader, self, start_row, "block"), self.batch_size):
                if batch.num_rows == 0:
                    continue
                any_rows = True
                if batch.schema.names != names:
                    batch = batch.select(names)
                yield batch if batch.schema.equals(schema) else batch.cast(schema)
        if not any_rows and start_row > 0 and not self._has_row(start_row - 1):
            self._beyond_end(start_row, self._count_rows())

    def _has_row(self, row: int) -> bool:
        """Whether data row ``row`` exists (parsed, not converted, up to it)."""
        with self._open(row) as reader:
            return any(b.num_rows for b in reader)

    def _count_rows(self) -> int:
        first = self.schema.field(0)
        convert = pa_csv.ConvertOptions(
            column_types={first.name: pa.string()}, include_columns=[first.name], strings_can_be_null=True
        )
        with self._open(0, convert) as reader:
            return sum(b.num_rows for b in reader)


# --------------------------------------------------------------------------- arrow ipc


class IpcSource(Source):
    """An Arrow IPC file (random access) or IPC stream file, memory-mapped.

    The format is detected: the IPC *file* format (``.arrow``/``.feather``
    v2) seeks straight to the batch holding the start row; the *stream*
    format (``.arrows``) is read from the start, skipping rows.

    Parameters
    ----------
    path : str or os.PathLike
        The IPC file or stream.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing file.
    DataError
        If the file is neither an Arrow IPC file nor an Arrow IPC stream, or
        is an IPC file whose footer is missing (a truncated file); when
        iterating, if a batch cannot be read (a truncated stream) — the
        message names the batch and the first row not read.

    Examples
    --------
    >>> src = IpcSource("bids.arrow")  # doctest: +SKIP
    >>> src.total_rows                 # doctest: +SKIP
    10000
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = _path(path, "IpcSource")
        self._ends: np.ndarray | None = None
        with pa.memory_map(self.path) as src:
            try:
                reader = pa.ipc.open_file(src)
                self.format = "file"
            except pa.ArrowInvalid:
                src.seek(0)
                try:
                    reader = pa.ipc.open_stream(src)
                except (OSError, pa.ArrowException) as exc:
                    src.seek(0)
                    if src.read(6) == b"ARROW1":
                        raise DataError(
                            f"{self.describe()}: the file starts as an Arrow IPC file but its footer (the index of "
                            f"its batches) cannot be read: {exc}. No row was read; the file is truncated or was not "
                            "completely written — replace it with a complete copy") from exc
                    raise DataError(
                        f"{self.describe()}: the file is neither an Arrow IPC file nor an Arrow IPC stream "
                        f"({exc}); write it with pyarrow.ipc.new_file or new_stream") from exc
                self.format = "stream"
            self.schema = reader.schema

    @property
    def total_rows(self) -> int | None:
        """Number of rows for the IPC file format (computed once), ``None`` for a stream."""
        if self.format != "file":
            return None
        if self._ends is None:
            with pa.memory_map(self.path) as src:
                self._batch_ends(pa.ipc.open_file(src))
        return int(self._ends[-1]) if len(self._ends) else 0

    def describe(self) -> str:
        """``"IpcSource('<path>')"``."""
        return f"IpcSource({self.path!r})"

    def _batch_ends(self, reader: pa.ipc.RecordBatchFileReader) -> np.ndarray:
        if self._ends is None:
            lengths = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
            self._ends = np.cumsum(lengths, dtype=np.int64)
        return self._ends

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the file's rows from row ``start_row`` on (see :meth:`Source.batches`).

        Parameters
        ----------
        start_row : int, default 0
            Number of rows already consumed.

        Raises
        ------
        ValueError
            If ``start_row`` is not an int >= 0.
        CheckpointError
            If ``start_row`` exceeds the number of rows (for the stream
            format, raised when the iteration reaches the end).
        """
        start_row = self._check_start_row(start_row, self.total_rows)
        return self._iter_file(start_row) if self.format == "file" else self._iter_stream(start_row)

    def _check_size(self, mapped: int) -> None:
        """Raise ``OSError`` if the file is now shorter than its memory map.

        Touching mapped pages past the end of a file that shrank kills the
        process (SIGBUS) instead of raising, so each read checks first. A file
        cut while a batch already yielded is still in use can crash all the
        same: replace files, never rewrite them in place, while a run reads them.
        """
        size = os.stat(self.path).st_size
        if size < mapped:
            raise OSError(f"the file shrank from {mapped:,} to {size:,} bytes while being read (it is "
                          "memory-mapped; reading on would crash the process)")

    def _iter_file(self, start_row: int) -> Iterator[pa.RecordBatch]:
        with pa.memory_map(self.path) as src:
            try:
                reader = pa.ipc.open_file(src)
            except (OSError, pa.ArrowException) as exc:  # changed since construction
                raise self._damaged(f"the footer (to resume at row {start_row:,})", start_row, exc) from exc
            ends = self._batch_ends(reader)
            first, skip = _seek(ends, start_row)
            mapped = src.size()
            for i in range(first, reader.num_record_batches):
                try:
                    self._check_size(mapped)
                    batch = reader.get_batch(i)
                except (OSError, pa.ArrowException) as exc:
                    reached = start_row if i == first else int(ends[i - 1])
                    raise self._damaged(f"batch {i} of the file", reached, exc) from exc
                if batch.num_rows:
                    yield batch.slice(skip) if i == first and skip else batch

    def _iter_stream(self, start_row: int) -> Iterator[pa.RecordBatch]:
        def at_end(total: int) -> None:
            if total < start_row:
                self._beyond_end(start_row, total)

        with pa.memory_map(self.path) as src, pa.ipc.open_stream(src) as reader:
            mapped = src.size()
            batches = _guarded(reader, self, 0, "batch", lambda: self._check_size(mapped))
            yield from _drop_rows(batches, start_row, at_end)


# --------------------------------------------------------------------------- arrow c stream


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
