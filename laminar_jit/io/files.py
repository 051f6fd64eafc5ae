"""Sources that read files: Parquet, CSV and Arrow IPC (positions count rows, as for every source)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from ..errors import DataError
from .sources import Source, _drop_rows, _guarded, _path, _positive_int, _rechunk, _seek

__all__ = ["CsvSource", "IpcSource", "ParquetSource"]

_PARQUET_SUFFIXES = (".parquet", ".pq")
_IPC_SUFFIXES = (".arrow", ".ipc", ".feather", ".arrows")


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

    def part_rows(self) -> list[int]:
        """Rows of each row group (the parts :meth:`split` deals)."""
        return np.diff(self._ends, prepend=0).tolist()

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
