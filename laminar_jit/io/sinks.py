"""Sinks: where :func:`laminar_jit.run` delivers a DAG's outputs.

A run delivers rows in *epochs*: the rows emitted between two checkpoints
form one epoch. At a checkpoint the runner calls :meth:`Sink.pre_commit`
(make the epoch's rows durable but invisible), saves the checkpoint, then
calls :meth:`Sink.commit` (make them visible). When a run resumes from
checkpoint ``e`` it calls :meth:`Sink.open` with ``e``: epochs up to ``e``
are committed (finishing a commit a crash interrupted), anything later is
discarded, because the sources replay it. A sink that follows this protocol
delivers every row exactly once across crashes and restarts.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import _fs
from ..changelog import OP_COLUMN, RowKind, apply_changelog, is_changelog
from ..errors import DataError

__all__ = ["CallbackSink", "MemorySink", "ParquetSink", "Sink"]


class Sink:
    """Base class of sinks. Subclasses override :meth:`write` and, for exactly-once, the commit hooks.

    Attributes
    ----------
    schema : pyarrow.Schema or None
        Schema of the rows, known once :meth:`open` was called.
    """

    #: Whether rows survive crashes exactly once (two-phase commit).
    exactly_once = False

    def __init__(self):
        self.schema: pa.Schema | None = None

    def open(self, schema: pa.Schema, restored_epoch: int | None) -> None:
        """Called once before a run delivers rows.

        Parameters
        ----------
        schema : pyarrow.Schema
            Schema of the rows this sink receives.
        restored_epoch : int or None
            ``None``: the run keeps no checkpoints. ``0``: a checkpointed run
            starting from scratch. ``e > 0``: the run resumes from checkpoint
            epoch ``e``; rows of later epochs will be delivered again.
        """
        self.schema = schema

    def write(self, table: pa.Table, epoch: int) -> None:
        """Receive rows belonging to ``epoch`` (a non-empty table)."""
        raise NotImplementedError

    def pre_commit(self, epoch: int) -> None:
        """Make every row of ``epoch`` durable, not yet visible (before the checkpoint is saved)."""

    def commit(self, epoch: int) -> None:
        """Make the rows of ``epoch`` visible (after the checkpoint is saved)."""

    def close(self) -> None:
        """The run ended (finished, interrupted or failed)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MemorySink(Sink):
    """Collect a run's output in memory.

    Rows are kept per epoch, so a run resumed in the same process from an
    earlier checkpoint drops the epochs it replays: exactly-once within one
    process (nothing survives the process itself).

    Examples
    --------
    >>> out = lj.io.MemorySink()                                         # doctest: +SKIP
    >>> lj.run(dag, sources={"bids": table}, sinks={"out": out})         # doctest: +SKIP
    >>> out.table()                                                      # doctest: +SKIP
    """

    def __init__(self):
        super().__init__()
        self._parts: list[tuple[int, pa.Table]] = []

    def open(self, schema, restored_epoch):
        super().open(schema, restored_epoch)
        if restored_epoch is not None:
            self._parts = [(e, t) for e, t in self._parts if e <= restored_epoch]

    def write(self, table, epoch):
        self._parts.append((epoch, table))

    def table(self) -> pa.Table:
        """The result: everything received, in order, as one table (empty before any row).

        For a changelog (rows with an int8 ``op`` column, e.g. from
        :class:`~laminar_jit.GroupAggregate`) the changes are applied: the
        current result, without ``op`` (see :func:`laminar_jit.apply_changelog`).
        """
        return apply_changelog(self.changelog())

    def changelog(self) -> pa.Table:
        """Everything received, in order, as one table: for a changelog, the raw changes with ``op``."""
        tables = [t for _, t in self._parts]
        if not tables:
            return (self.schema or pa.schema([])).empty_table()
        return pa.concat_tables(tables)

    @property
    def num_rows(self) -> int:
        """Rows received so far."""
        return sum(t.num_rows for _, t in self._parts)

    def __repr__(self) -> str:
        return f"MemorySink(rows={self.num_rows:,})"


class CallbackSink(Sink):
    """Hand each output table to ``fn(table)`` as soon as it is produced.

    **At-least-once**: after a crash the run resumes from its last
    checkpoint and ``fn`` sees the rows emitted since then a second time.
    Make ``fn`` idempotent (e.g. upsert by key and window) if that matters.

    Parameters
    ----------
    fn : callable
        Called with a non-empty :class:`pyarrow.Table`.
    """

    def __init__(self, fn):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"CallbackSink: fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def write(self, table, epoch):
        self.fn(table)

    def __repr__(self) -> str:
        return f"CallbackSink({getattr(self.fn, '__qualname__', self.fn)!r})"


_PART = re.compile(r"^part-(\d{8})-(\d{5})\.parquet$")
_STAGING = "_staging"
#: The directory name of a null partition value (pyarrow's and Hive's).
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


class ParquetSink(Sink):
    """Write a run's output as Parquet files, exactly once across crashes.

    Rows are staged per epoch under ``directory/_staging/`` and become
    ``directory/part-<epoch>-<n>.parquet`` by an atomic rename only once the
    checkpoint closing that epoch is saved. On restart, staged files of
    epochs after the restored checkpoint are discarded (and committed ones,
    should an older checkpoint be restored), so reading the directory as a
    dataset — ``pyarrow.dataset``, Polars and DuckDB all skip names starting
    with ``_`` — gives exactly the output: no duplicates, no gaps. Without a
    checkpoint directory the run commits everything when it ends.

    Storage failures (a full disk, a failing rename) never make rows visible
    twice or in part: a staged file whose write fails is removed, and a commit
    that fails halfway moves the files it had committed back to staging
    before raising, so the epoch is all visible or not at all.

    A changelog (rows with an ``op`` column, see :mod:`laminar_jit.changelog`)
    is written as it comes, ``op`` included (``mode="append"``), or, with
    ``mode="upsert"`` and a primary ``key``, kept as the table it describes:
    each committed epoch replaces the files of the one before by the table
    with the epoch's changes applied (per key the last ``+I``/``+U`` row, or
    none after a ``-D``; ``-U`` rows are skipped, as in Flink's upsert sinks),
    so the directory always holds one consistent version and :meth:`read`
    returns it.

    With ``partition_by``, rows are written Hive-style under
    ``directory/<col>=<value>/.../part-<epoch>-<n>.parquet`` (values
    URL-encoded, a null as ``__HIVE_DEFAULT_PARTITION__``), the partition
    columns left out of the files as Flink's and Hive's file sinks do; an
    epoch commits all its partitions or none, and :meth:`read` returns the
    rows with the partition columns (as strings) at the end.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing. A run starting from scratch requires it to hold
        no committed part files.
    rows_per_file : int, default 1,000,000
        Rows buffered in memory before a staged file is written.
    compression : str, default "zstd"
        Parquet compression codec.
    mode : {"append", "upsert"}, default "append"
        Append every row, or keep the table of the latest row per ``key``
        (read it with :meth:`read`: while a commit replaces one version by
        the next, the directory briefly holds both).
    key : str or list of str, optional
        The primary key of ``mode="upsert"`` (columns of the sink's input).
    partition_by : str or list of str, optional
        Column(s) whose values name the sub-directories rows are written to
        (``mode="append"`` only). Read the directory back with
        ``pyarrow.dataset.dataset(directory, partitioning="hive")``, Polars'
        ``scan_parquet(..., hive_partitioning=True)`` or DuckDB's
        ``read_parquet(..., hive_partitioning=true)``.

    Examples
    --------
    >>> sink = lj.io.ParquetSink("out/")                                 # doctest: +SKIP
    >>> lj.run(dag, sources=..., sinks={"out": sink}, checkpoint_dir="chk/")  # doctest: +SKIP
    >>> sink.read()                                                      # doctest: +SKIP
    >>> per_seller = lj.io.ParquetSink("sellers/", mode="upsert", key="seller")  # doctest: +SKIP
    >>> by_day = lj.io.ParquetSink("bids/", partition_by=["dt", "hm"])   # doctest: +SKIP
    """

    exactly_once = True

    def __init__(self, directory, rows_per_file: int = 1_000_000, compression: str = "zstd",
                 mode: str = "append", key=None, partition_by=None):
        super().__init__()
        if not isinstance(rows_per_file, int) or isinstance(rows_per_file, bool) or rows_per_file <= 0:
            raise ValueError(f"ParquetSink: rows_per_file must be a positive int, got {rows_per_file!r}")
        if mode not in ("append", "upsert"):
            raise ValueError(f"ParquetSink: mode must be 'append' or 'upsert', got {mode!r}")
        keys = (key,) if isinstance(key, str) else tuple(key or ())
        if (mode == "upsert") != bool(keys):
            raise ValueError("ParquetSink: mode='upsert' needs key= (the primary key column(s)), and only it "
                             "takes one")
        partitions = (partition_by,) if isinstance(partition_by, str) else tuple(partition_by or ())
        if partitions and mode != "append":
            raise ValueError("ParquetSink: partition_by writes rows as they come (mode='append'); an upserted "
                             "table is not partitioned")
        self.partition_by = partitions
        self.directory = Path(directory)
        self.rows_per_file = rows_per_file
        self.compression = compression
        self.mode = mode
        self.key = keys
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._epoch: int | None = None
        self._seq = 0
        #: upsert mode: the table as of the last pre-committed epoch
        self._current: pa.Table | None = None

    def __repr__(self) -> str:
        return f"ParquetSink({str(self.directory)!r})"

    # -- files ---------------------------------------------------------------
    def _stage_dir(self, epoch: int) -> Path:
        return self.directory / _STAGING / f"epoch-{epoch:08d}"

    def committed_files(self) -> list[Path]:
        """Committed part files, in output order (epoch, then sequence; then partition)."""
        if not self.directory.is_dir():
            return []
        return _parts(self.directory, deep=bool(self.partition_by))

    def read(self) -> pa.Table:
        """The committed output as one table, in order (empty with the sink's schema if none).

        In upsert mode: the table as of the last committed epoch.
        """
        files = self.committed_files()
        if self.mode == "upsert" and files:
            newest = max(_epoch_of(p) for p in files)
            files = [p for p in files if _epoch_of(p) == newest]
        if not files:
            schema = self.schema or pa.schema([])
            if self.mode == "upsert" and OP_COLUMN in schema.names:
                schema = schema.remove(schema.get_field_index(OP_COLUMN))
            if self.partition_by:
                schema = pa.schema([f for f in schema if f.name not in self.partition_by]
                                   + [pa.field(c, pa.string()) for c in self.partition_by])
            return schema.empty_table()
        if not self.partition_by:
            return pa.concat_tables([pq.read_table(p) for p in files])
        tables = []
        for p in files:
            t = pq.read_table(p)
            values = dict(_partition_values(p.parent.relative_to(self.directory)))
            for c in self.partition_by:
                t = t.append_column(c, pa.array([values[c]] * t.num_rows, pa.string()))
            tables.append(t)
        return pa.concat_tables(tables)

    # -- protocol --------------------------------------------------------------
    def open(self, schema, restored_epoch):
        super().open(schema, restored_epoch)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._buffer, self._buffered, self._epoch, self._seq, self._current = [], 0, None, 0, None
        staging = self.directory / _STAGING
        staged = sorted(int(p.name[6:]) for p in staging.glob("epoch-*")) if staging.is_dir() else []
        if restored_epoch is None or restored_epoch == 0:
            committed = self.committed_files()
            if committed:
                raise DataError(
                    f"ParquetSink: {str(self.directory)!r} already holds {len(committed)} committed part file(s) "
                    "from another run; write to an empty directory, remove the files, or resume that run "
                    "with its checkpoint_dir")
            shutil.rmtree(staging, ignore_errors=True)
            return
        for epoch in staged:  # finish commits a crash interrupted; drop what will be replayed
            if epoch <= restored_epoch:
                self.commit(epoch)
            else:
                shutil.rmtree(self._stage_dir(epoch), ignore_errors=True)
        for p in self.committed_files():
            if _epoch_of(p) > restored_epoch:
                p.unlink()
        if self.mode == "upsert":
            self._drop_superseded()
            self._current = self.read()
        _fs.fsync_dir(self.directory)

    def write(self, table, epoch):
        if self.mode == "upsert":  # applied to the table when the epoch pre-commits
            missing = [k for k in self.key if k not in table.column_names]
            if missing:
                raise DataError(f"ParquetSink: upsert key column(s) {missing} are not in the sink's rows "
                                f"({', '.join(table.column_names)}); pass key= columns the sink receives")
            if self._epoch != epoch:
                self._buffer, self._epoch = [], epoch
            self._buffer.append(table)
            return
        if self._epoch != epoch:
            self._flush()
            self._epoch, self._seq = epoch, 0
        missing = [c for c in self.partition_by if c not in table.column_names]
        if missing:
            raise DataError(f"ParquetSink: partition column(s) {missing} are not in the sink's rows "
                            f"({', '.join(table.column_names)}); pass partition_by= columns the sink receives")
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.rows_per_file:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        stage = self._stage_dir(self._epoch)
        stage.mkdir(parents=True, exist_ok=True)
        name = f"part-{self._epoch:08d}-{self._seq:05d}.parquet"
        table = pa.concat_tables(self._buffer)
        # a failed write removes its partial file, so a staged file is always complete
        if not self.partition_by:
            _fs.write_parquet(table, stage / name, self.compression)
        else:
            for where, rows in _partitioned(table, self.partition_by):
                (stage / where).mkdir(parents=True, exist_ok=True)
                _fs.write_parquet(rows, stage / where / name, self.compression)
        self._buffer, self._buffered = [], 0
        self._seq += 1

    def pre_commit(self, epoch):
        if self.mode == "upsert":
            self._stage_upserted(epoch)
        elif self._epoch == epoch:
            self._flush()
        stage = self._stage_dir(epoch)
        if stage.is_dir():
            _fs.fsync_dir(stage)

    def commit(self, epoch):
        """Move the epoch's staged files into the directory, all or none.

        Raises
        ------
        OSError
            A rename or the directory sync failed. The files already moved are
            moved back first, so readers see none of the epoch's rows; the
            epoch stays staged and the next :meth:`open` resuming from its
            checkpoint commits it again.
        """
        stage = self._stage_dir(epoch)
        if not stage.is_dir():
            return
        parts = _parts(stage, deep=bool(self.partition_by))
        moved = []
        try:
            for p in parts:
                target = self.directory / p.relative_to(stage)
                if target.parent != self.directory:  # a partition's directory
                    target.parent.mkdir(parents=True, exist_ok=True)
                _fs.replace(p, target)
                moved.append(p)
            for d in {self.directory / p.parent.relative_to(stage) for p in parts}:
                _fs.fsync_dir(d)
            _fs.fsync_dir(self.directory)
        except OSError:
            # An epoch of several files must not show up half: undo the renames (renames within one
            # file system need no free space, so this works on a full disk too).
            for p in reversed(moved):
                try:
                    _fs.replace(self.directory / p.relative_to(stage), p)
                except OSError:  # pragma: no cover - the file system refuses renames both ways
                    pass
            raise
        shutil.rmtree(stage)
        if self.mode == "upsert":
            self._drop_superseded()

    # -- upsert mode --------------------------------------------------------------
    def _stage_upserted(self, epoch: int) -> None:
        """Stage the whole table with this epoch's changes applied (the next committed version)."""
        changes = self._buffer if self._epoch == epoch else []
        self._buffer = []
        if self._current is None:
            schema = self.schema if self.schema is not None else changes[0].schema if changes else None
            if schema is None:
                return
            if OP_COLUMN in schema.names and is_changelog(schema):
                schema = schema.remove(schema.get_field_index(OP_COLUMN))
            self._current = schema.empty_table()
        if not changes and self.committed_files():
            return  # nothing changed: the committed version stays
        table = upsert(self._current, pa.concat_tables(changes) if changes else None, self.key)
        stage = self._stage_dir(epoch)
        stage.mkdir(parents=True, exist_ok=True)
        for seq, start in enumerate(range(0, max(table.num_rows, 1), self.rows_per_file)):
            _fs.write_parquet(table.slice(start, self.rows_per_file), stage / f"part-{epoch:08d}-{seq:05d}.parquet",
                              self.compression)
        self._current = table

    def _drop_superseded(self) -> None:
        """Remove committed files of versions older than the newest (a commit interrupted before it did)."""
        files = self.committed_files()
        if files:
            newest = max(_epoch_of(p) for p in files)
            for p in files:
                if _epoch_of(p) < newest:
                    p.unlink()
            _fs.fsync_dir(self.directory)


def _parts(directory: Path, deep: bool) -> list[Path]:
    """Part files directly in ``directory`` (or, ``deep``, in its partition sub-directories too), in output
    order: epoch, sequence, then partition."""
    found = directory.rglob("part-*.parquet") if deep else directory.iterdir()
    if deep:
        found = (p for p in found if _STAGING not in p.relative_to(directory).parts)
    return sorted((p for p in found if _PART.match(p.name)), key=lambda p: (p.name, str(p)))


def _partitioned(table: pa.Table, columns) -> list[tuple[Path, pa.Table]]:
    """``table``'s rows per distinct value of ``columns``: (Hive path ``col=value/...``, rows without them)."""
    from urllib.parse import quote

    keys = table.select(list(columns))
    keys = keys.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                for f in keys.schema]))  # (each batch may bring its own dictionary)
    groups = (keys.append_column("__row", pa.array(np.arange(table.num_rows)))
              .group_by(list(columns), use_threads=False).aggregate([("__row", "list")]))
    rest = table.drop_columns(list(columns))
    out = []
    for g in groups.to_pylist():
        where = Path(*(f"{quote(c, safe='')}={_HIVE_NULL if g[c] is None else quote(str(g[c]), safe='')}"
                       for c in columns))
        out.append((where, rest.take(pa.array(g["__row_list"], pa.int64()))))
    return out


def _partition_values(where: Path) -> list[tuple[str, str | None]]:
    """The (column, value) pairs a partition's relative path names (see :func:`_partitioned`)."""
    from urllib.parse import unquote

    pairs = []
    for part in where.parts:
        c, _, v = part.partition("=")
        pairs.append((unquote(c), None if v == _HIVE_NULL else unquote(v)))
    return pairs


def _epoch_of(path: Path) -> int:
    return int(_PART.match(path.name).group(1))


def upsert(table: pa.Table, changes: pa.Table | None, key) -> pa.Table:
    """``table`` (unique per ``key``) with ``changes`` applied in order: per key the last ``+I``/``+U`` row
    replaces the key's row, a last ``-D`` removes it; ``-U`` rows are skipped; rows without ``op`` are upserts."""
    if changes is None or not changes.num_rows:
        return table
    if is_changelog(changes.schema):
        ops = changes.column(OP_COLUMN)
        changes = changes.filter(pc.not_equal(ops, RowKind.UPDATE_BEFORE)).drop_columns([OP_COLUMN])
        ops = ops.filter(pc.not_equal(ops, RowKind.UPDATE_BEFORE))
    else:
        ops = pa.nulls(changes.num_rows, pa.int8()).fill_null(RowKind.INSERT)
    changes = changes.select(table.column_names).cast(table.schema)
    n_old = table.num_rows
    both = pa.concat_tables([table, changes])
    order = pa.array(np.arange(both.num_rows, dtype=np.int64))
    delete = np.concatenate([np.zeros(n_old, np.bool_),
                             np.asarray(ops.to_numpy(zero_copy_only=False)) == RowKind.DELETE])
    last = (both.select(list(key)).append_column("__row", order)
            .group_by(list(key), use_threads=False).aggregate([("__row", "max")]))
    rows = np.sort(last.column("__row_max").to_numpy())
    rows = rows[~delete[rows]]
    return both.take(pa.array(rows, pa.int64()))

    def close(self):
        self._buffer, self._buffered = [], 0  # unstaged rows belong to an epoch that was not checkpointed
