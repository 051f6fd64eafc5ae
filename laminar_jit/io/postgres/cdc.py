"""``PostgresCdcSource``: a table's snapshot, then its changes, from logical decoding (wal2json)."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.csv as pa_csv

from ...errors import CheckpointError, DataError
from ..sources import Source, _positive_int
from ._common import PG_TYPES, PostgresConnectionError, TableName, connect, redact, scrub

__all__ = ["PostgresCdcSource"]

#: Flink RowKind codes of the ``op`` column.
INSERT, UPDATE_BEFORE, UPDATE_AFTER, DELETE = 0, 1, 2, 3
_SLOT = re.compile(r"^[a-z0-9_]{1,50}$")
_RESERVED = ("op", "commit_ts")
_STATE = "laminar_jit.cdc_slots"

_STATE_DDL = """
CREATE SCHEMA IF NOT EXISTS laminar_jit;
CREATE TABLE IF NOT EXISTS laminar_jit.cdc_slots (
    slot text PRIMARY KEY,
    source_table text NOT NULL,
    status text NOT NULL,              -- 'creating' until the snapshot is in the log, then 'ready'
    snapshot_rows bigint NOT NULL DEFAULT 0,
    rows bigint NOT NULL DEFAULT 0,    -- rows in the log so far (the last _lj_seq)
    trimmed bigint NOT NULL DEFAULT 0, -- rows deleted from the head of the log
    pumped_lsn pg_lsn                  -- the log holds every change committed before this LSN
)"""

# One statement moves the slot's pending changes into the log: wal2json (format 2) turns each change into
# JSON, jsonb_populate_record turns the JSON into a row of the table's type, and row_number() numbers the
# rows densely after the last one in the log. An UPDATE becomes two rows: -U (the old row's replica
# identity) and +U; a DELETE one -D row with the replica identity.
_PUMP = """
WITH raw AS MATERIALIZED (
    SELECT c.n, c.data::jsonb AS j
    FROM pg_logical_slot_peek_changes({slot}, NULL, {limit}, 'format-version', '2', 'include-timestamp', '1',
                                      'include-lsn', '1', 'add-tables', {add_tables})
         WITH ORDINALITY AS c(lsn, xid, data, n)
), changes AS (
    SELECT r.n, x.sub, x.op, r.j->>'lsn' AS lsn, r.j->>'timestamp' AS ts,
           (SELECT jsonb_object_agg(e->>'name', e->'value') FROM jsonb_array_elements(x.cols) e) AS obj
    FROM raw r CROSS JOIN LATERAL (VALUES
        (0, CASE r.j->>'action' WHEN 'I' THEN 0 WHEN 'U' THEN 1 ELSE 3 END,
            CASE r.j->>'action' WHEN 'I' THEN r.j->'columns' ELSE r.j->'identity' END),
        (1, 2, CASE WHEN r.j->>'action' = 'U' THEN r.j->'columns' END)) AS x(sub, op, cols)
    WHERE r.j->>'action' IN ('I', 'U', 'D') AND x.cols IS NOT NULL
), ins AS (
    INSERT INTO {log}
    SELECT {base} + row_number() OVER (ORDER BY c.n, c.sub), c.lsn::pg_lsn,
           (extract(epoch FROM c.ts::timestamptz) * 1000)::bigint, c.op, rec.*
    FROM changes c CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, c.obj) AS rec
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT max((j->>'nextlsn')::pg_lsn) FROM raw WHERE j->>'action' = 'C')
"""


class PostgresCdcSource(Source):
    """A PostgreSQL table as a stream: a consistent snapshot, then every committed change.

    On first use a logical replication slot (plugin ``wal2json``) is created
    with an exported snapshot; the table's rows as of that snapshot go to a
    *change log* table (``laminar_jit."cdc_log_<slot>"``), all as inserts
    (``op`` = 0). From then on changes decoded from the slot are appended to
    the log in commit order by one SQL statement per poll (``pg_logical_slot_peek_changes``
    → ``jsonb_populate_record`` → ``INSERT``), and the slot is advanced past
    them only once that transaction committed: the slot never drops a change
    the log does not hold, the snapshot and the changes meet with no gap and no
    duplicate. Batches are read from the log with ``COPY ... TO STDOUT`` into
    pyarrow's CSV reader; no Python code runs per row.

    The position (what checkpoints store) is the number of log rows consumed.
    Log row ``p`` records the LSN of its change (:meth:`lsn_at`), so a
    position names an LSN exactly, also in the middle of a transaction; a run
    resumed from a checkpoint continues at the next log row, exactly once.
    Log rows are deleted once a run resumes after them, or when
    :meth:`checkpoint_committed` is called with a position.

    Batches have the table's columns, then ``op`` (int8, Flink RowKind: +I=0,
    -U=1, +U=2, -D=3) and ``commit_ts`` (int64 Unix milliseconds of the
    change's commit; snapshot rows: the time the slot was created), usable as event
    time. An update gives a -U row holding the old row's replica identity (the
    key columns, other columns null; the whole old row with ``ALTER TABLE ...
    REPLICA IDENTITY FULL``) followed by a +U row; a delete a -D row likewise.

    Parameters
    ----------
    dsn : str
        libpq connection string or URL; the user needs the REPLICATION
        attribute (or superuser) and CREATE on the database (for the
        ``laminar_jit`` schema). Never printed with its password.
    table : str
        ``"name"`` or ``"schema.name"``.
    slot : str, default "lj_slot"
        Replication slot name (lowercase letters, digits, ``_``). It survives
        runs: a new run with the same slot continues where the old one's
        checkpoint left off. :meth:`drop` removes it.
    batch_size : int, default 65,536
        Maximum rows per batch.
    poll_interval : float, default 0.2
        Seconds between polls of the slot when the log has been read to its end.
    idle_timeout : float, optional
        End the stream once no change arrived for this many seconds (None:
        never; then the stream ends when :meth:`stop` is called).
    reconnect_timeout : float, default 30
        A dropped connection (server restart, network) is retried for this
        long, then :class:`PostgresConnectionError` is raised. The log is
        durable, so a reconnect continues at the same row.

    Raises
    ------
    PostgresConnectionError
        The server cannot be reached or refuses the credentials.
    DataError
        The table does not exist, has a column named ``op`` or ``commit_ts``,
        the slot belongs to another table, or wal2json is not installed.

    Notes
    -----
    Needs ``wal_level = logical`` and a free replication slot
    (``max_replication_slots``). A slot keeps WAL on the server until it is
    advanced, so drop slots of abandoned pipelines. ``TRUNCATE`` of the table
    is not captured. Creating the slot waits for transactions in progress
    (prepared ones included) to end.

    Examples
    --------
    >>> src = lj.io.PostgresCdcSource("postgresql://repl@db/shop", "orders", slot="orders_lj")  # doctest: +SKIP
    >>> lj.run(dag, sources={"orders": src}, sinks=..., checkpoint_dir="chk/")                # doctest: +SKIP
    """

    def __init__(self, dsn: str, table: str, slot: str = "lj_slot", batch_size: int = 65_536,
                 poll_interval: float = 0.2, idle_timeout: float | None = None, reconnect_timeout: float = 30.0):
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
        self._stop = threading.Event()
        conn = connect(dsn, self.describe(), autocommit=True)
        try:
            self._columns = self._read_columns(conn)
        finally:
            conn.close()
        fields = [pa.field(name, PG_TYPES.get(typ, ("", pa.string()))[1]) for name, typ in self._columns]
        fields = [pa.field(f.name, pa.string()) if f.type == pa.binary() else f for f in fields]
        self.schema = pa.schema(fields + [pa.field("op", pa.int8(), nullable=False),
                                          pa.field("commit_ts", pa.int64(), nullable=False)])

    def __getstate__(self):  # picklable for partitioned runs (an Event is not)
        state = dict(self.__dict__)
        state["_stop"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._stop = threading.Event()

    def describe(self) -> str:
        """``"PostgresCdcSource('<schema.table>', slot='<slot>')"``."""
        return f"PostgresCdcSource({str(self.table)!r}, slot={self.slot!r})"

    @property
    def log_table(self) -> TableName:
        """The change log table of this slot."""
        return TableName("laminar_jit", f"cdc_log_{self.slot}")

    def stop(self) -> None:
        """End the stream after the changes committed so far (thread-safe)."""
        self._stop.set()

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

    def _setup(self, conn) -> None:
        """Create the slot, its log and the snapshot in the log, unless done by an earlier run."""
        from psycopg import sql

        conn.execute(_STATE_DDL)
        row = conn.execute(f"SELECT source_table, status FROM {_STATE} WHERE slot = %s", (self.slot,)).fetchone()
        slot_exists = conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                                   (self.slot,)).fetchone()[0] > 0
        if row is not None and row[0] != str(self.table):
            raise DataError(f"{self.describe()}: slot {self.slot!r} streams table {row[0]!r}; give this source "
                            "its own slot= or drop that one (PostgresCdcSource.drop)")
        if row is not None and row[1] == "ready":
            if not slot_exists:
                raise CheckpointError(f"{self.describe()}: the replication slot {self.slot!r} was dropped, so "
                                      "changes since were lost; drop the source's state (PostgresCdcSource.drop) "
                                      "and start over from a new snapshot")
            return
        if slot_exists:
            if row is None:
                raise DataError(f"{self.describe()}: a replication slot {self.slot!r} exists but was not created "
                                "by laminar_jit; choose another slot= name")
            conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))  # a set-up a crash cut short
        conn.execute(f"INSERT INTO {_STATE} (slot, source_table, status) VALUES (%s, %s, 'creating') "
                     "ON CONFLICT (slot) DO UPDATE SET status = 'creating'", (self.slot, str(self.table)))
        # The snapshot rows' event time: just before the slot exists, so no later change commits before it.
        snapshot_ms = conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()[0]
        repl = connect(self.dsn, self.describe(), autocommit=True, replication="database")
        try:
            try:
                res = repl.execute(f"CREATE_REPLICATION_SLOT {self.slot} LOGICAL wal2json EXPORT_SNAPSHOT").fetchone()
            except Exception as exc:  # noqa: BLE001 - psycopg errors: name the likely causes
                text = scrub(str(exc), self.dsn)
                hint = ("install the wal2json output plugin (Debian: apt-get install postgresql-<version>-wal2json)"
                        if "wal2json" in text else "the server needs wal_level = logical and a free "
                        "max_replication_slots, the user the REPLICATION attribute")
                raise DataError(f"{self.describe()}: cannot create replication slot {self.slot!r}: {text.strip()} "
                                f"— {hint}") from None
            consistent_point, snapshot = res[1], res[2]
            log = self.log_table.sql()
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(log))
                conn.execute(sql.SQL(
                    "CREATE TABLE {log} AS SELECT 0::bigint AS _lj_seq, '0/0'::pg_lsn AS _lj_lsn, "
                    "0::bigint AS commit_ts, 0::smallint AS op, t.* FROM {table} t WITH NO DATA; "
                    "ALTER TABLE {log} ADD PRIMARY KEY (_lj_seq)").format(log=log, table=self.table.sql()))
                n = conn.execute(sql.SQL(
                    "INSERT INTO {log} SELECT row_number() OVER (), {lsn}::pg_lsn, "
                    "{ms}::bigint, 0, t.* FROM {table} t").format(log=log, table=self.table.sql(),
                                                  lsn=sql.Literal(consistent_point),
                                                  ms=sql.Literal(snapshot_ms))).rowcount
                conn.execute(f"UPDATE {_STATE} SET status = 'ready', snapshot_rows = %s, rows = %s, trimmed = 0, "
                             "pumped_lsn = %s WHERE slot = %s", (n, n, consistent_point, self.slot))
        finally:
            repl.close()

    @classmethod
    def drop(cls, dsn: str, slot: str) -> None:
        """Remove the replication slot ``slot``, its change log and its state (a pipeline abandoned for good)."""
        conn = connect(dsn, f"PostgresCdcSource.drop({slot!r})", autocommit=True)
        try:
            if conn.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            if conn.execute("SELECT to_regclass('laminar_jit.cdc_slots') IS NOT NULL").fetchone()[0]:
                conn.execute(f"DELETE FROM {_STATE} WHERE slot = %s", (slot,))
            conn.execute(f'DROP TABLE IF EXISTS laminar_jit."cdc_log_{slot}"')
        finally:
            conn.close()

    # -- the log -----------------------------------------------------------------
    def _state(self, conn) -> tuple[int, int]:
        rows, trimmed = conn.execute(f"SELECT rows, trimmed FROM {_STATE} WHERE slot = %s", (self.slot,)).fetchone()
        return rows, trimmed

    def _trim(self, conn, upto: int) -> None:
        from psycopg import sql

        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE _lj_seq <= {}").format(self.log_table.sql(), sql.Literal(upto)))
            conn.execute(f"UPDATE {_STATE} SET trimmed = greatest(trimmed, %s) WHERE slot = %s", (upto, self.slot))

    def _pump(self, conn, limit: int = 200_000) -> int:
        """Move pending changes from the slot into the log; returns the number of log rows added."""
        from psycopg import sql

        confirmed, pumped = conn.execute(
            f"SELECT s.confirmed_flush_lsn, c.pumped_lsn FROM pg_replication_slots s, {_STATE} c "
            "WHERE s.slot_name = %s AND c.slot = s.slot_name", (self.slot,)).fetchone()
        if confirmed < pumped:  # a crash between the log's commit and the slot's advance
            conn.execute("SELECT pg_replication_slot_advance(%s, %s)", (self.slot, pumped))
        with conn.transaction():
            base = conn.execute(f"SELECT rows FROM {_STATE} WHERE slot = %s FOR UPDATE", (self.slot,)).fetchone()[0]
            query = sql.SQL(_PUMP).format(
                slot=sql.Literal(self.slot), limit=sql.Literal(limit),
                add_tables=sql.Literal(_wal2json_name(self.table)),
                log=self.log_table.sql(), base=sql.Literal(base), table=self.table.sql())
            added, upto = conn.execute(query).fetchone()
            if upto is not None:
                conn.execute(f"UPDATE {_STATE} SET rows = rows + %s, pumped_lsn = %s WHERE slot = %s",
                             (added, upto, self.slot))
        if upto is not None:
            conn.execute("SELECT pg_replication_slot_advance(%s, %s)", (self.slot, upto))
        return added

    def _read(self, conn, after: int) -> pa.RecordBatch | None:
        """Log rows ``after+1 ..`` (at most batch_size) as a record batch, None if there are none."""
        from psycopg import sql

        exprs = []
        for name, typ in self._columns:
            col = sql.Identifier(name)
            if typ in ("timestamp", "timestamptz"):
                exprs.append(sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(col))
            elif typ in PG_TYPES and typ != "bytea":
                exprs.append(col)
            else:
                exprs.append(sql.SQL("{}::text").format(col))
        query = sql.SQL("COPY (SELECT {}, op, commit_ts FROM {} WHERE _lj_seq > {} ORDER BY _lj_seq LIMIT {}) "
                        "TO STDOUT (FORMAT csv)").format(sql.SQL(", ").join(exprs), self.log_table.sql(),
                                                         sql.Literal(after), sql.Literal(self.batch_size))
        out = io.BytesIO()
        with conn.cursor() as cur, cur.copy(query) as copy:
            for chunk in copy:
                out.write(chunk)
        if not out.tell():
            return None
        out.seek(0)
        read_types = {f.name: (pa.int64() if pa.types.is_timestamp(f.type) else f.type) for f in self.schema}
        table = pa_csv.read_csv(
            out, read_options=pa_csv.ReadOptions(column_names=self.schema.names, block_size=1 << 26),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types=read_types, null_values=[""],
                                                  strings_can_be_null=True, quoted_strings_can_be_null=False,
                                                  true_values=["t"], false_values=["f"]))
        columns = [table.column(f.name).cast(f.type) for f in self.schema]
        return pa.Table.from_arrays(columns, schema=self.schema).combine_chunks().to_batches()[0]

    def lsn_at(self, position: int) -> str | None:
        """LSN of the change at log row ``position`` (None once trimmed or beyond the log)."""
        from psycopg import sql

        conn = connect(self.dsn, self.describe(), autocommit=True)
        try:
            row = conn.execute(sql.SQL("SELECT _lj_lsn::text FROM {} WHERE _lj_seq = {}").format(
                self.log_table.sql(), sql.Literal(position))).fetchone()
        finally:
            conn.close()
        return row[0] if row else None

    def checkpoint_committed(self, position: int) -> None:
        """A checkpoint holding ``position`` was saved: log rows up to it are no longer needed."""
        conn = connect(self.dsn, self.describe(), autocommit=True)
        try:
            self._trim(conn, int(position))
        finally:
            conn.close()

    # -- reading -----------------------------------------------------------------
    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """Yield the snapshot, then the changes, from log row ``start_row`` on (see :meth:`Source.batches`).

        Raises
        ------
        CheckpointError
            ``start_row`` is beyond the log, or before rows already deleted
            from it (a checkpoint older than the one a run resumed from).
        PostgresConnectionError
            The server stayed unreachable for ``reconnect_timeout`` seconds.
        """
        start_row = self._check_start_row(start_row)
        self._stop.clear()
        return self._iter(start_row)

    def _connect_retrying(self, since: float | None = None):
        import psycopg

        deadline = (since or time.monotonic()) + self.reconnect_timeout
        while True:
            try:
                return connect(self.dsn, self.describe(), autocommit=True)
            except PostgresConnectionError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
            except psycopg.Error:  # pragma: no cover - the server is starting up
                time.sleep(0.5)

    def _iter(self, position: int) -> Iterator[pa.RecordBatch]:
        import psycopg

        conn = connect(self.dsn, self.describe(), autocommit=True)
        try:
            self._setup(conn)
            rows, trimmed = self._state(conn)
            if position < trimmed:
                raise CheckpointError(f"{self.describe()}: cannot resume at row {position:,}: the change log was "
                                      f"trimmed up to row {trimmed:,} by a later checkpoint; resume with the checkpoint_dir "
                                      "of the run that read them, or call PostgresCdcSource.drop(dsn, slot) to start "
                                      "over from a new snapshot")
            if position > rows:
                raise CheckpointError(f"{self.describe()}: cannot resume at row {position:,}, the change log has "
                                      f"{rows:,} rows; the checkpoint belongs to another slot or the log was reset")
            if position > trimmed:
                self._trim(conn, position)
            last_change = time.monotonic()
            while True:
                try:
                    batch = self._read(conn, position)
                    if batch is not None:
                        position += batch.num_rows
                        last_change = time.monotonic()
                        yield batch
                        continue
                    added = self._pump(conn)
                except psycopg.errors.ObjectInUse:
                    # the slot is still held by the server process of a run that was just killed
                    if time.monotonic() - last_change > self.reconnect_timeout:
                        raise
                    time.sleep(0.2)
                    continue
                except psycopg.OperationalError as exc:
                    lost = time.monotonic()
                    conn.close()
                    try:
                        conn = self._connect_retrying(lost)
                    except PostgresConnectionError:
                        raise PostgresConnectionError(
                            f"{self.describe()}: connection to {redact(self.dsn)} lost at log row {position:,} "
                            f"({scrub(str(exc).strip(), self.dsn)}) and not back within {self.reconnect_timeout:g} s; "
                            "the change log is durable: run again from the last checkpoint once the server is "
                            "back") from None
                    continue
                if added:
                    continue
                if self._stop.is_set():
                    return
                if self.idle_timeout is not None and time.monotonic() - last_change >= self.idle_timeout:
                    return
                time.sleep(self.poll_interval)
        finally:
            conn.close()


def _wal2json_name(table: TableName) -> str:
    """``schema.table`` as wal2json's add-tables option wants it (``\\`` escapes ``,``, ``.``, spaces)."""
    def esc(part: str) -> str:
        return re.sub(r"([,. \\])", r"\\\1", part)
    return f"{esc(table.schema)}.{esc(table.name)}"
