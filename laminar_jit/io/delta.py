"""Delta Lake: an exactly-once sink and an incremental source (local tables, the ``delta`` extra).

The sink commits in two phases, as the run's checkpoints do:

* ``pre_commit(epoch)`` (before the checkpoint is written) writes the epoch's
  rows as Parquet files inside the table directory. No log entry names them,
  so no reader sees them. A manifest of the files goes to
  ``_laminar_staging/<app_id>/epoch-<n>.json`` beside them, durably.
* ``commit(epoch)`` (after the checkpoint is on disk) adds the files in one
  Delta transaction that also records ``Transaction(app_id, epoch)``.
  A replay after a crash asks the table for the app id's version first and
  commits nothing the table already holds.
* ``open(schema, restored_epoch)`` finishes what a crash interrupted: staged
  epochs the restored checkpoint covers are committed, later ones deleted.

Rows are written once: committing adds the staged files, it does not copy
them. The source reads the log of an append-only table version by version
(``_delta_log/<version>.json``, the Delta protocol's commit files), so a
position is a row count over a fixed order: versions ascending, files in the
order each version added them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .._fs import fsync_dir
from ..errors import DataError
from .sinks import Sink
from .sources import Source

__all__ = ["DeltaSink", "DeltaSource"]

_STAGING = "_laminar_staging"


def _deltalake():
    try:
        import deltalake
        from deltalake import transaction
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('Delta Lake support needs the deltalake package: pip install "laminar-jit[delta]"') from exc
    return deltalake, transaction


class DeltaSink(Sink):
    """Write a sink's rows to a Delta Lake table, exactly once across crashes and restarts.

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the table (local file system). Created when missing,
        with the sink's schema.
    mode : {"append", "overwrite"}, default "append"
        ``"overwrite"`` replaces what the table held with the run's first
        committed epoch (in the same transaction); later epochs append.
    partition_by : str or list of str, optional
        Partition columns of a new table (Hive-style directories). An existing
        table keeps its own partitioning, which must match when given.
    app_id : str, default "laminar_jit"
        The Delta application id under which epochs are recorded. Two runs
        writing one table at the same time need different ids; a new run
        (no checkpoint to resume) refuses a table that already records
        epochs under its id, since it would take them for its own.

    Notes
    -----
    Readers (Polars ``read_delta``, DuckDB's ``delta_scan``, Spark,
    ``deltalake.DeltaTable``) see each epoch's rows at once when its
    checkpoint commits, never a part of an epoch. Without a
    ``checkpoint_dir``, ``lj.run`` commits everything as one epoch at the end.

    Examples
    --------
    >>> sink = DeltaSink("/tmp/bids_per_auction", partition_by="window_start")  # doctest: +SKIP
    >>> lj.run(dag, sources={"bids": bids}, sinks={"out": sink}, checkpoint_dir="chk")  # doctest: +SKIP
    """

    exactly_once = True

    def __init__(self, path, mode: str = "append", partition_by=None, app_id: str = "laminar_jit"):
        super().__init__()
        if mode not in ("append", "overwrite"):
            raise ValueError(f"DeltaSink: mode must be 'append' or 'overwrite', got {mode!r}")
        if not isinstance(app_id, str) or not app_id or "/" in app_id:
            raise ValueError(f"DeltaSink: app_id must be a non-empty name without '/', got {app_id!r}")
        _deltalake()
        self.path = Path(path)
        self.mode = mode
        self.partition_by = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
        self.app_id = app_id
        self._buffer: list[pa.Table] = []
        self._overwrite_pending = mode == "overwrite"

    def __repr__(self) -> str:
        return f"DeltaSink({str(self.path)!r}, mode={self.mode!r}, app_id={self.app_id!r})"

    @property
    def _staging(self) -> Path:
        return self.path / _STAGING / self.app_id

    def _manifest(self, epoch: int) -> Path:
        return self._staging / f"epoch-{epoch:08d}.json"

    def _table(self):
        deltalake, _ = _deltalake()
        return deltalake.DeltaTable(str(self.path))

    # -- protocol --------------------------------------------------------------
    def open(self, schema, restored_epoch):
        super().open(schema, restored_epoch)
        deltalake, _ = _deltalake()
        self._buffer = []
        if deltalake.DeltaTable.is_deltatable(str(self.path)):
            table = self._table()
            self._check_schema(table)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            deltalake.DeltaTable.create(str(self.path), schema=schema, partition_by=self.partition_by or None)
            table = self._table()
        done = table.transaction_version(self.app_id)
        staged = sorted(int(p.stem[6:]) for p in self._staging.glob("epoch-*.json")) if self._staging.is_dir() else []
        if not restored_epoch:
            if done is not None:
                raise DataError(
                    f"DeltaSink: table {str(self.path)!r} already records epochs up to {done} of app id "
                    f"{self.app_id!r} from another run; resume that run with its checkpoint_dir, or give this "
                    "run its own DeltaSink(app_id=...)")
            for epoch in staged:  # a run that never checkpointed: nothing of it was committed
                self._discard(epoch)
            return
        self._overwrite_pending = self.mode == "overwrite" and done is None
        for epoch in staged:
            if epoch <= restored_epoch:
                self.commit(epoch)  # the checkpoint covers it; committing again is a no-op
            else:
                self._discard(epoch)

    def _check_schema(self, table) -> None:
        have = pa.schema(table.schema().to_arrow())
        want = self.schema
        missing = [f.name for f in want if f.name not in have.names]
        if missing or len(have) != len(want):
            raise DataError(f"DeltaSink: table {str(self.path)!r} has columns {have.names}, the sink writes "
                            f"{want.names}; write to a new path or make the sink's columns match")
        parts = list(table.metadata().partition_columns)
        if self.partition_by and self.partition_by != parts:
            raise DataError(f"DeltaSink: table {str(self.path)!r} is partitioned by {parts}, not "
                            f"{self.partition_by}; leave partition_by out or write to a new path")
        self.partition_by = parts

    def write(self, table, epoch):
        self._buffer.append(pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table)

    def pre_commit(self, epoch):
        rows = pa.concat_tables(self._buffer) if self._buffer else self.schema.empty_table()
        self._buffer = []
        self._staging.mkdir(parents=True, exist_ok=True)
        files = self._write_files(rows, epoch) if rows.num_rows else []
        manifest = self._manifest(epoch)
        tmp = manifest.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"epoch": epoch, "files": files}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, manifest)
        fsync_dir(self._staging)

    def _write_files(self, rows: pa.Table, epoch: int) -> list[dict]:
        written = []
        partitioning = None
        if self.partition_by:
            partitioning = pads.partitioning(pa.schema([rows.schema.field(c) for c in self.partition_by]),
                                             flavor="hive")
        pads.write_dataset(rows, str(self.path), format="parquet", partitioning=partitioning,
                           basename_template=f"part-{self.app_id}-{epoch:08d}-{uuid.uuid4().hex}-{{i}}.parquet",
                           existing_data_behavior="overwrite_or_ignore", max_rows_per_file=4_000_000,
                           file_visitor=lambda f: written.append((f.path, f.metadata.num_rows)))
        files = []
        for path, n in written:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
            rel = os.path.relpath(path, self.path)
            values = dict(part.split("=", 1) for part in Path(rel).parts[:-1])
            files.append({"path": rel, "size": os.path.getsize(path), "rows": n,
                          "partition": {k: (None if v == "__HIVE_DEFAULT_PARTITION__" else v) for k, v in values.items()}})
        return files

    def commit(self, epoch):
        manifest = self._manifest(epoch)
        if not manifest.exists():
            return
        files = json.loads(manifest.read_text())["files"]
        table = self._table()
        done = table.transaction_version(self.app_id)
        if done is None or done < epoch:
            _, transaction = _deltalake()
            now = int(time.time() * 1000)
            actions = [transaction.AddAction(f["path"], f["size"], f["partition"], now, True,
                                             json.dumps({"numRecords": f["rows"]})) for f in files]
            mode = "overwrite" if self._overwrite_pending else "append"
            table.create_write_transaction(
                actions, mode=mode, schema=self.schema, partition_by=self.partition_by or None,
                commit_properties=transaction.CommitProperties(
                    app_transactions=[transaction.Transaction(self.app_id, epoch)]))
            self._overwrite_pending = False
        manifest.unlink()
        fsync_dir(self._staging)

    def _discard(self, epoch: int) -> None:
        manifest = self._manifest(epoch)
        for f in json.loads(manifest.read_text())["files"]:
            (self.path / f["path"]).unlink(missing_ok=True)
        manifest.unlink()

    def close(self):
        self._buffer = []  # rows of an epoch that was not checkpointed

    def read(self) -> pa.Table:
        """The table's committed rows (what any Delta reader sees)."""
        return self._table().to_pyarrow_table()


class DeltaSource(Source):
    """Read an append-only Delta Lake table version by version.

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the table (local file system).
    starting_version : int, default 0
        The first version whose added rows are read.
    ending_version : int, optional
        The last version read; default: the table's version when the source
        is created.
    batch_size : int, default 65,536
        Rows per batch at most.

    Notes
    -----
    A position is the number of rows read, over versions in ascending order
    and each version's files in the order its commit added them, so a
    checkpointed run resumes exactly there. Files a version adds without
    changing data (``optimize`` compaction) are skipped; a version that
    removes data (delete, overwrite) raises :class:`~laminar_jit.DataError`,
    since an append-only stream cannot express it.
    """

    def __init__(self, path, starting_version: int = 0, ending_version: int | None = None,
                 batch_size: int = 65_536):
        super().__init__()
        deltalake, _ = _deltalake()
        self.path = Path(path)
        if not deltalake.DeltaTable.is_deltatable(str(self.path)):
            raise DataError(f"DeltaSource: {str(self.path)!r} is not a Delta table (no _delta_log); "
                            "check the path")
        table = deltalake.DeltaTable(str(self.path))
        self.schema = pa.schema(table.schema().to_arrow())
        self.partition_by = list(table.metadata().partition_columns)
        self.starting_version = int(starting_version)
        self.ending_version = table.version() if ending_version is None else int(ending_version)
        self.batch_size = int(batch_size)
        self._files = self._added_files()

    def _added_files(self) -> list[tuple[int, str, dict, int]]:
        """(version, path, partition values, rows) of every data file added, in log order."""
        out = []
        log = self.path / "_delta_log"
        for version in range(self.starting_version, self.ending_version + 1):
            commit = log / f"{version:020d}.json"
            if not commit.exists():
                raise DataError(f"DeltaSource: {str(self.path)!r} has no commit file for version {version} "
                                "(the log was cleaned up); start at a later starting_version")
            for line in commit.read_text().splitlines():
                action = json.loads(line)  # one JSON object per action, a few per commit
                if "remove" in action and action["remove"].get("dataChange", True):
                    raise DataError(f"DeltaSource: version {version} of {str(self.path)!r} removes data "
                                    f"({action['remove']['path']}); the source reads append-only tables — "
                                    "start after that version")
                add = action.get("add")
                if add and add.get("dataChange", True):
                    stats = json.loads(add.get("stats") or "{}")
                    rows = stats.get("numRecords")
                    if rows is None:
                        rows = pq.ParquetFile(self.path / add["path"]).metadata.num_rows
                    out.append((version, add["path"], add.get("partitionValues") or {}, int(rows)))
        return out

    @property
    def total_rows(self) -> int:
        return sum(rows for *_, rows in self._files)

    def describe(self) -> str:
        return f"Delta table {str(self.path)!r} versions {self.starting_version}..{self.ending_version}"

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        skip = self._check_start_row(start_row, self.total_rows)
        return self._iter(skip)

    def _iter(self, skip: int) -> Iterator[pa.RecordBatch]:
        position = 0
        for version, path, partition, rows in self._files:
            position += rows
            if skip >= rows:
                skip -= rows
                continue
            try:
                data = pq.read_table(self.path / path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise self._damaged(f"data file {path!r} of version {version}", position - rows, exc) from exc
            for name in self.partition_by:  # Hive-style: the value is in the log, not the file
                value = pa.scalar(partition.get(name), pa.string())
                data = data.append_column(name, pa.repeat(value, data.num_rows).cast(self.schema.field(name).type))
            data = data.select(self.schema.names).cast(self.schema).slice(skip)
            skip = 0
            yield from data.to_batches(max_chunksize=self.batch_size)
