"""``PostgresCdcSource``: a table's snapshot, then its changes streamed over logical replication (wal2json).

Positions (what checkpoints store) are ints in two ranges:

* ``0 <= p < 2**40``: ``p`` rows of the initial snapshot were consumed;
* ``p >= 2**40``: ``p = commit_lsn * 2**40 + k``: every change of the
  transactions that committed before ``commit_lsn`` (the LSN of a commit
  record) was consumed, and the first ``k`` rows of the one committing there.

The last snapshot batch already ends at ``(consistent point, 0)``, so a
position in the first range is always one inside the snapshot.
"""

from __future__ import annotations

import contextlib
import re
import select
import threading
import time
from collections.abc import Iterator

import pyarrow as pa

from ...errors import CheckpointError, DataError
from ..sources import Source, _positive_int
from ._common import (
    PG_TYPES,
    PostgresConnectionError,
    TableName,
    connect,
    redact,
    scrub,
)
from ._copy import copy_snapshot
from ._wal2json import ROWS, Decoder, int_to_lsn, lsn_to_int, wal2json_name

__all__ = ["PostgresCdcSource"]

_SLOT = re.compile(r"^[a-z0-9_]{1,50}$")
_RESERVED = ("op", "commit_ts")
_SESSION = "-c TimeZone=UTC -c DateStyle=ISO -c extra_float_digits=1"


class PostgresCdcSource(Source):
    """A PostgreSQL table as a stream: a consistent snapshot, then every committed change.

    On a fresh start (position 0) a logical replication slot (plugin
    ``wal2json``) is created with an exported snapshot, and the table's rows
    as of that snapshot are read with ``COPY`` as inserts (``op`` = 0). Then
    the changes committed after the slot's consistent point are streamed over
    the replication protocol (``START_REPLICATION``, wal2json format 2) in
    commit order and decoded in bulk with pyarrow's JSON reader (Python only
    collects each message's bytes; nothing is parsed per row). Snapshot and
    changes meet with no gap and no duplicate.

    The position (what checkpoints store) is the commit LSN of the
    transaction reached, plus the number of its rows already consumed (a
    batch may end inside a transaction), packed into one int (:meth:`lsn_at`
    reads the LSN back). Nothing is confirmed to the server until a
    checkpoint holding a position is committed: :meth:`checkpoint_committed`
    then confirms the slot's flush position up to that transaction (with
    ``pg_replication_slot_advance`` while no stream holds the slot; a running
    stream is closed and reopened for it, at most every ``confirm_interval``
    seconds, because the replication driver would otherwise report more than
    was checkpointed). After a crash the slot still holds every change after
    the last committed checkpoint, and a resumed run skips those at or before
    its position, so each change is read exactly once.

    Batches have the table's columns, then ``op`` (int8, Flink RowKind: +I=0,
    -U=1, +U=2, -D=3) and ``commit_ts`` (int64 Unix milliseconds of the
    change's commit; snapshot rows: the time the slot was created), usable as
    event time. An update gives a -U row holding the old row's replica
    identity (the key columns, other columns null; the whole old row with
    ``ALTER TABLE ... REPLICA IDENTITY FULL``) followed by a +U row; a delete
    a -D row likewise.

    Parameters
    ----------
    dsn : str
        libpq connection string or URL; the user needs the REPLICATION
        attribute (or superuser) and SELECT on the table. Never printed with
        its password.
    table : str
        ``"name"`` or ``"schema.name"``.
    slot : str, default "lj_slot"
        Replication slot name (lowercase letters, digits, ``_``), owned by
        this source. It survives runs: a run resumed from a checkpoint
        continues from the slot; a run starting at position 0 (no
        checkpoint) drops the slot and takes a new snapshot. :meth:`drop`
        removes it.
    batch_size : int, default 65,536
        Maximum rows per batch.
    poll_interval : float, default 0.2
        Seconds to wait for the server when no change is pending.
    idle_timeout : float, optional
        End the stream once no change arrived for this many seconds (None:
        never; then the stream ends when :meth:`stop` is called).
    reconnect_timeout : float, default 30
        A dropped connection (server restart, network) is retried for this
        long, then :class:`PostgresConnectionError` is raised. A reconnect
        continues after the last row yielded: the slot still holds it.
    confirm_interval : float, default 10
        Least number of seconds between two confirmations of the slot while a
        stream runs (each reopens the stream, which then re-sends the
        transaction the checkpoint ended in). The slot keeps WAL from the last
        confirmation on.

    Raises
    ------
    PostgresConnectionError
        The server cannot be reached or refuses the credentials.
    DataError
        The table does not exist or has a column named ``op`` or
        ``commit_ts``, the slot exists for another plugin or database, or
        wal2json is not installed.

    Notes
    -----
    Needs ``wal_level = logical`` and a free replication slot
    (``max_replication_slots``). A slot keeps WAL on the server until it is
    confirmed, so drop the slots of abandoned pipelines, and checkpoint a run
    (``lj.run(checkpoint_dir=...)``) for its slot to advance. A run stopped
    while it read the initial snapshot cannot resume (the exported snapshot
    is gone with its connection): the resume raises
    :class:`~laminar_jit.errors.CheckpointError` saying how to start over.
    ``TRUNCATE`` is not captured; an unchanged TOASTed value in an update is
    null; wal2json writes ``NaN`` and infinite floats as null. Creating the
    slot waits for transactions in progress (prepared ones included) to end.

    Examples
    --------
    >>> src = lj.io.PostgresCdcSource("postgresql://repl@db/shop", "orders", slot="orders_lj")  # doctest: +SKIP
    >>> lj.run(dag, sources={"orders": src}, sinks=..., checkpoint_dir="chk/")                # doctest: +SKIP
    """

    def __init__(self, dsn: str, table: str, slot: str = "lj_slot", batch_size: int = 65_536,
                 poll_interval: float = 0.2, idle_timeout: float | None = None, reconnect_timeout: float = 30.0,
                 confirm_interval: float = 10.0):
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("PostgresCdcSource: dsn must be a libpq connection string or URL")
        self.dsn = dsn
        self.table = TableName.parse(table, "PostgresCdcSource")
        if not isinstance(slot, str) or not _SLOT.match(slot):
            raise ValueError(f"PostgresCdcSource({str(self.table)!r}): slot must be 1-50 lowercase letters, digits "
                             f"or '_', got {slot!r}")
        self.slot = slot
        self.batch_size = _positive_int(batch_size, "batch_size", self.describe())
        self.poll_interval = float(poll_interval)
        self.idle_timeout = idle_timeout
        self.reconnect_timeout = float(reconnect_timeout)
        self.confirm_interval = float(confirm_interval)
        conn = connect(dsn, self.describe(), autocommit=True)
        try:
            self._columns = self._read_columns(conn)
        finally:
            conn.close()
        fields = [pa.field(name, PG_TYPES.get(typ, ("", pa.string()))[1]) for name, typ in self._columns]
        fields = [pa.field(f.name, pa.string()) if f.type == pa.binary() else f for f in fields]
        self.schema = pa.schema(fields + [pa.field("op", pa.int8(), nullable=False),
                                          pa.field("commit_ts", pa.int64(), nullable=False)])
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._stop = threading.Event()
        self._ends: dict[int, int] = {}  # id(batch) -> position after it, until position_after asks
        self._streaming = False  # a replication connection holds the slot
        self._flush_target = 0  # LSN to confirm (the commit LSN of a committed checkpoint's transaction)
        self._confirmed = 0  # LSN known to be confirmed

    def __getstate__(self):  # picklable for partitioned runs (an Event, a connection are not)
        state = dict(self.__dict__)
        for key in ("_stop", "_ends", "_streaming", "_flush_target", "_confirmed"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_runtime()

    def describe(self) -> str:
        """``"PostgresCdcSource('<schema.table>', slot='<slot>')"``."""
        return f"PostgresCdcSource({str(self.table)!r}, slot={self.slot!r})"

    unbounded = True

    def stop(self) -> None:
        """End the stream once the changes the server has sent are read (thread-safe)."""
        self._stop.set()

    # -- positions ----------------------------------------------------------------
    def position_after(self, position: int, batch: pa.RecordBatch) -> int:
        """The position after ``batch`` (a commit LSN and a row count packed into an int, see the module)."""
        try:
            return self._ends.pop(id(batch))
        except KeyError:
            raise ValueError(f"{self.describe()}: position_after got a batch this source did not just "
                             "yield") from None

    @staticmethod
    def lsn_at(position: int) -> str | None:
        """Commit LSN (``"X/Y"``) of the transaction a position is in; None for a position in the snapshot."""
        return int_to_lsn(position // ROWS) if position >= ROWS else None

    @staticmethod
    def position_at(lsn: str) -> int:
        """The position of a stream starting at the first transaction committing at or after ``lsn``.

        For instance the slot's ``confirmed_flush_lsn``: ``source.batches(source.position_at(lsn))``
        reads the changes the slot holds, without a new snapshot.
        """
        return ROWS * lsn_to_int(lsn)

    def _yielded(self, batch: pa.RecordBatch, end: int) -> pa.RecordBatch:
        if len(self._ends) > 1024:  # a consumer that never asks: keep the map small
            del self._ends[next(iter(self._ends))]
        self._ends[id(batch)] = end
        return batch

    def checkpoint_committed(self, position: int) -> None:
        """A checkpoint holding ``position`` was committed: confirm the slot up to its transaction.

        The slot's flush position becomes the commit LSN of the transaction
        ``position`` is in; that transaction stays in the slot (a resumed run
        skips the rows of it already consumed), the ones before it are
        released. Nothing is confirmed for a position inside the snapshot.
        While a stream is open the confirmation waits for the stream's next
        read, at most every ``confirm_interval`` seconds (see the class).
        """
        position = int(position)
        if position < ROWS:
            return
        self._flush_target = max(self._flush_target, position // ROWS)
        if not self._streaming:
            self._advance_slot()

    def _advance_slot(self) -> None:
        """Confirm ``_flush_target`` with SQL while no stream holds the slot (best effort: else the next one)."""
        import psycopg

        if self._flush_target <= self._confirmed:
            return
        deadline = time.monotonic() + 5.0
        while True:
            try:
                conn = connect(self.dsn, self.describe(), autocommit=True)
            except PostgresConnectionError:
                return
            try:
                row = conn.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                                   (self.slot,)).fetchone()
                if row is None or row[0] is None:
                    return
                if lsn_to_int(row[0]) < self._flush_target:
                    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                                 (self.slot, int_to_lsn(self._flush_target)))
                self._confirmed = max(self._confirmed, self._flush_target)
                return
            except psycopg.errors.ObjectInUse:  # the server has not yet seen a stream's connection close
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            except psycopg.Error:
                return
            finally:
                conn.close()

    # -- set-up ------------------------------------------------------------------
    def _read_columns(self, conn) -> list[tuple[str, str]]:
        rows = conn.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (f'"{self.table.schema}"."{self.table.name}"',)).fetchall()
        if not rows:
            raise DataError(f"{self.describe()}: no table {str(self.table)!r} in the database of "
                            f"{redact(self.dsn)}; check the name (and schema) or create it")
        clash = [name for name, _ in rows if name in _RESERVED]
        if clash:
            raise DataError(f"{self.describe()}: the table has column(s) {clash}, names the source adds (op, "
                            "commit_ts); rename them or read a view-like copy of the table")
        return list(rows)

    def _slot_row(self, conn):
        return conn.execute("SELECT plugin, database = current_database(), active_pid FROM pg_replication_slots "
                            "WHERE slot_name = %s", (self.slot,)).fetchone()

    def _drop_stale_slot(self, conn) -> None:
        """A fresh start: drop the slot of an earlier run (one that never got past its first checkpoint)."""
        import psycopg

        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            row = self._slot_row(conn)
            if row is None:
                return
            plugin, same_db, pid = row
            if plugin != "wal2json" or not same_db:
                raise DataError(f"{self.describe()}: a replication slot {self.slot!r} exists for plugin {plugin!r} "
                                "or another database, so it is not this source's; choose another slot= name")
            try:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                return
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise DataError(f"{self.describe()}: replication slot {self.slot!r} is in use by server "
                                    f"process {pid}; stop the run reading it, or choose another slot= name") from None
                time.sleep(0.2)

    @classmethod
    def drop(cls, dsn: str, slot: str) -> None:
        """Remove the replication slot ``slot`` (a pipeline abandoned for good: frees the WAL it holds)."""
        import psycopg

        conn = connect(dsn, f"PostgresCdcSource.drop({slot!r})", autocommit=True)
        try:
            deadline = time.monotonic() + 10.0
            while conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                               (slot,)).fetchone()[0]:
                try:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                except psycopg.errors.ObjectInUse:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            # state kept by earlier versions of this source (a change-log table per slot)
            if conn.execute("SELECT to_regclass('laminar_jit.cdc_slots') IS NOT NULL").fetchone()[0]:
                conn.execute("DELETE FROM laminar_jit.cdc_slots WHERE slot = %s", (slot,))
                conn.execute(f'DROP TABLE IF EXISTS laminar_jit."cdc_log_{slot}"')
        finally:
            conn.close()

    # -- reading -----------------------------------------------------------------
    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the snapshot (from position 0), then the changes after position ``start_row``.

        ``start_row`` is a position of this source (see the class), as the
        runner stores it; 0 starts afresh with a new slot and snapshot.

        Raises
        ------
        CheckpointError
            ``start_row`` lies inside the initial snapshot (a run stopped while
            reading it), or the slot was dropped since the checkpoint.
        PostgresConnectionError
            The server stayed unreachable for ``reconnect_timeout`` seconds.
        """
        start_row = self._check_start_row(start_row)
        self._stop.clear()
        return self._iter(start_row)

    def _iter(self, position: int) -> Iterator[pa.RecordBatch]:
        if position == 0:
            position = yield from self._snapshot()
        elif position < ROWS:
            raise CheckpointError(
                f"{self.describe()}: cannot resume at row {position:,} of the initial snapshot: the run stopped "
                "while it read the snapshot, and the slot's exported snapshot ended with that run, so the rest "
                "cannot be read as of the same moment. Start over: delete the run's checkpoint_dir (and what its "
                f"sinks committed), call PostgresCdcSource.drop(dsn, {self.slot!r}) and run again")
        else:
            conn = connect(self.dsn, self.describe(), autocommit=True)
            try:
                if self._slot_row(conn) is None:
                    raise CheckpointError(
                        f"{self.describe()}: cannot resume at LSN {self.lsn_at(position)}: the replication slot "
                        f"{self.slot!r} no longer exists, so the changes since were lost; start over from a new "
                        "snapshot (a new checkpoint_dir, position 0)")
            finally:
                conn.close()
        yield from self._changes(position)

    def _snapshot(self):
        """Create the slot and yield the table's rows as of its snapshot; returns the position after them."""
        import psycopg
        from psycopg import sql

        conn = connect(self.dsn, self.describe(), autocommit=True)
        try:
            self._drop_stale_slot(conn)
            # The snapshot rows' event time: just before the slot exists, so no later change commits before it.
            snapshot_ms = conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()[0]
            try:
                repl = connect(self.dsn, self.describe(), autocommit=True, replication="database")
            except PostgresConnectionError as exc:
                if "replication" not in str(exc):
                    raise
                raise PostgresConnectionError(
                    f"{exc} — this user may not open a replication connection: give it the REPLICATION "
                    "attribute (ALTER ROLE <user> REPLICATION) or use a role that has it") from None
            try:
                try:
                    res = repl.execute(f"CREATE_REPLICATION_SLOT {self.slot} LOGICAL wal2json EXPORT_SNAPSHOT"
                                       ).fetchone()
                except Exception as exc:  # noqa: BLE001 - psycopg errors: name the likely causes
                    text = scrub(str(exc), self.dsn)
                    if "output_plugin_libraries" in text:  # servers that list the plugins replication users may name
                        hint = ("add wal2json to the server's output_plugin_libraries (postgresql.conf: "
                                "output_plugin_libraries = 'pgoutput, test_decoding, wal2json') and reload it")
                    elif "wal2json" in text:
                        hint = "install the wal2json output plugin (Debian: apt-get install postgresql-<version>-wal2json)"
                    else:
                        hint = ("the server needs wal_level = logical and a free max_replication_slots, the user "
                                "the REPLICATION attribute")
                    raise DataError(f"{self.describe()}: cannot create replication slot {self.slot!r}: "
                                    f"{text.strip()} — {hint}") from None
                consistent = ROWS * lsn_to_int(res[1])
                conn.autocommit = False
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(res[2])))
            finally:
                repl.close()  # the snapshot is imported: it lives on in this transaction
            rows = 0
            pending = None
            batches = copy_snapshot(conn, self.table, self._columns, self.schema, snapshot_ms, self.batch_size)
            while True:
                try:
                    batch = next(batches, None)
                except psycopg.OperationalError as exc:
                    raise PostgresConnectionError(
                        f"{self.describe()}: connection to {redact(self.dsn)} lost while reading the initial "
                        f"snapshot, after row {rows:,} ({scrub(str(exc).strip(), self.dsn)}); the snapshot ended "
                        "with it and cannot be resumed: run again from the start (without the checkpoint_dir of "
                        "this run; the slot is recreated)") from None
                if batch is None:
                    break
                if pending is not None:
                    yield self._yielded(pending, rows)
                rows += batch.num_rows
                pending = batch
            try:
                conn.rollback()
            except psycopg.OperationalError:
                pass  # every row was read; the server ended the transaction with the connection
            if pending is not None:
                yield self._yielded(pending, consistent)
            return consistent
        finally:
            conn.close()

    # -- the stream --------------------------------------------------------------
    def _replication_dsn(self) -> str:
        from psycopg2.extensions import make_dsn, parse_dsn

        options = parse_dsn(self.dsn).get("options", "")
        return make_dsn(self.dsn, options=f"{options} {_SESSION}".strip(), connect_timeout=10)

    def _start_stream(self, deadline: float):
        """A replication cursor streaming the slot from its confirmed position (retried until ``deadline``)."""
        try:
            import psycopg2
            import psycopg2.errors
            import psycopg2.extras
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError(f"{self.describe()} needs psycopg2 for the replication protocol: "
                              "pip install 'laminar_jit[postgres]'") from exc
        options = {"format-version": "2", "include-timestamp": "1", "include-lsn": "1", "include-types": "0",
                   "include-schemas": "0", "include-transaction": "1", "add-tables": wal2json_name(self.table)}
        self._advance_slot()  # a confirmation a checkpoint asked for while the slot was held
        while True:
            conn = None
            try:
                conn = psycopg2.connect(self._replication_dsn(),
                                        connection_factory=psycopg2.extras.LogicalReplicationConnection)
                cur = conn.cursor()
                cur.start_replication(slot_name=self.slot, decode=False, options=options, status_interval=5)
                return conn, cur
            except psycopg2.errors.UndefinedObject:
                if conn is not None:
                    conn.close()
                raise CheckpointError(f"{self.describe()}: the replication slot {self.slot!r} no longer exists, so "
                                      "the changes since the last checkpoint were lost; start over from a new "
                                      "snapshot (a new checkpoint_dir)") from None
            except psycopg2.OperationalError as exc:  # a server (re)starting, or the slot still held
                if conn is not None:
                    conn.close()
                text = scrub(str(exc).strip(), self.dsn)
                if ("authentication" in text or "permission" in text or "must be" in text
                        or "does not exist" in text):
                    raise PostgresConnectionError(
                        f"{self.describe()}: cannot stream the slot from {redact(self.dsn)}: {text} — the user "
                        "needs the REPLICATION attribute and pg_hba.conf must allow replication connections"
                    ) from None
                if time.monotonic() >= deadline:
                    raise PostgresConnectionError(
                        f"{self.describe()}: cannot stream replication slot {self.slot!r} from {redact(self.dsn)}: "
                        f"{text} (retried for {self.reconnect_timeout:g} s); run again once the server is back "
                        "— the slot keeps every change after the last checkpoint") from None
                time.sleep(0.3)

    def _changes(self, position: int) -> Iterator[pa.RecordBatch]:
        import psycopg2

        decoder = Decoder(self)
        decoder.resume(position)
        conn = cur = None
        last_change = last_confirm = last_beat = time.monotonic()
        pending: list[bytes] = []
        try:
            while True:
                if (cur is not None and self._flush_target > self._confirmed
                        and time.monotonic() - last_confirm >= self.confirm_interval):
                    # Confirm what a committed checkpoint covers: close the stream, advance the slot, reopen.
                    # (psycopg2 moves the flush position it reports to the server's WAL end by itself once
                    # the client has confirmed the last message it received, which would confirm rows no
                    # checkpoint holds yet; so the stream never sends a flush position.)
                    conn.close()
                    conn = cur = None
                    self._streaming = False
                    pending = []
                    decoder.resume(decoder.position)
                    last_confirm = time.monotonic()
                if cur is None:
                    self._streaming = True
                    conn, cur = self._start_stream(time.monotonic() + self.reconnect_timeout)
                try:
                    msg = cur.read_message()
                    while msg is not None:
                        pending.append(msg.payload)
                        if len(pending) >= self.batch_size:
                            break
                        msg = cur.read_message()
                    if pending:
                        for batch, end in decoder.decode(pending):
                            last_change = time.monotonic()
                            yield self._yielded(batch, end)
                        pending = []
                        continue
                    if self._stop.is_set():
                        return
                    if time.monotonic() - last_beat >= 1.0:
                        # idle: an empty batch now and then lets the runner checkpoint (and so commit)
                        # the rows already yielded without waiting for the next change
                        last_beat = time.monotonic()
                        yield self._yielded(pa.RecordBatch.from_pylist([], schema=self.schema), decoder.position)
                        continue
                    wait = self.poll_interval
                    if self.idle_timeout is not None:
                        left = self.idle_timeout - (time.monotonic() - last_change)
                        if left <= 0:
                            return
                        wait = min(wait, left)
                    select.select([conn], [], [], wait)
                except psycopg2.DatabaseError as exc:  # the connection dropped (server restart, network)
                    lost = str(exc).strip()
                    with contextlib.suppress(Exception):  # already broken
                        conn.close()
                    conn = cur = None
                    pending = []
                    decoder.resume(decoder.position)  # the slot replays from before what was yielded
                    try:
                        conn, cur = self._start_stream(time.monotonic() + self.reconnect_timeout)
                    except PostgresConnectionError as err:
                        raise PostgresConnectionError(
                            f"{self.describe()}: connection to {redact(self.dsn)} lost at LSN "
                            f"{self.lsn_at(decoder.position) or 'of the snapshot end'} ({scrub(lost, self.dsn)}) "
                            f"and not back within {self.reconnect_timeout:g} s: {err}; the slot keeps every change "
                            "after the last checkpoint: run again from it once the server is back") from None
        finally:
            self._streaming = False
            if conn is not None:
                conn.close()


