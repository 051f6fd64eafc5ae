"""``PostgresSink``: a run's output into a PostgreSQL table, exactly once, by two-phase commit."""

from __future__ import annotations

import hashlib
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...changelog import OP_COLUMN, RowKind, is_changelog
from ...errors import CheckpointError, DataError
from ..sinks import Sink
from . import _binary
from ._common import (PG_TYPES, PostgresConnectionError, TableName, arrow_to_pg, compatible, connect, redact, scrub,
                      sql_type)

__all__ = ["PostgresSink"]

#: what follows "<txn_prefix>:" in a gid this sink gives: the epoch, then ".<connection>" for connections > 0
_GID_TAIL = re.compile(r"(\d+)(?:\.\d+)?")

_MODES = ("append", "upsert")
_CHUNK = 1 << 21  # bytes encoded per COPY write (a scratch buffer reused chunk after chunk)
_RUN_ROWS = 1 << 16  # consecutive record batches smaller than this are concatenated before encoding
_PART_ROWS = 1 << 15  # a write is spread over several connections only with at least this many rows per part
_MAX_CONNECTIONS = 16


class PostgresSink(Sink):
    """Write a run's output into a PostgreSQL table, exactly once across crashes.

    Each epoch (the rows between two checkpoints) is written in one
    transaction with binary ``COPY``. At the checkpoint the transaction is
    prepared (``PREPARE TRANSACTION``: durable, invisible); once the
    checkpoint is saved it is committed (``COMMIT PREPARED``). A run resumed
    from checkpoint ``e`` first commits its sink's prepared transactions of
    epochs ``<= e`` (their checkpoint was saved, a crash cut the commit short)
    and rolls back the later ones (their rows are replayed). Readers therefore
    see every row exactly once, epoch by epoch.

    Why two-phase commit rather than an idempotent-epoch table: replayed
    epochs are not the same rows as the lost ones (checkpoints fall on time
    intervals), so rows must stay invisible until their checkpoint is saved;
    a prepared transaction keeps them invisible *and* durable with a single
    write, where a staging table would write every row twice. A run without a
    ``checkpoint_dir`` needs no prepared transaction: it commits once at the end.

    Rows are encoded from the Arrow buffers by compiled kernels straight into
    the binary ``COPY`` format, about 2 MB at a time, each chunk sent while
    the next is encoded (see :mod:`laminar_jit.io.postgres._binary`).

    Parameters
    ----------
    dsn : str
        libpq connection string or URL, e.g. ``"postgresql://user:pw@host:5432/db"``.
        Never printed with its password.
    table : str
        ``"name"`` or ``"schema.name"``. Created from the output schema when
        missing (types: see :mod:`laminar_jit.io.postgres._common`); an existing
        table must have a column of a compatible type for every output column.
    mode : {"append", "upsert"}, default "append"
        ``"upsert"``: each row replaces the row with its key (``INSERT ... ON
        CONFLICT (key) DO UPDATE`` from an unlogged staging table filled by
        ``COPY``); within one epoch the last row of a key wins. A changelog
        (rows with an ``op`` column, e.g. from
        :class:`~laminar_jit.GroupAggregate`) is applied as Flink's upsert
        sinks apply one: ``+I``/``+U`` upsert, ``-D`` deletes the key's row
        (``DELETE ... USING`` the staging table), ``-U`` is skipped, and the
        table has no ``op`` column. In ``"append"`` mode ``op`` is written
        as a column like any other.
    key : str or list of str, optional
        The key columns of ``"upsert"`` (required there). The table needs a
        primary key or unique index on exactly these columns (created with
        the table when missing).
    txn_prefix : str, optional
        Prefix of the prepared transactions' names (``"<prefix>:<epoch>"``),
        default ``"lj:<schema>.<table>"``. Two runs writing the same table at
        the same time need different prefixes; a second sink opening the same
        prefix fails with a :class:`CheckpointError`.
    connections : int, default 1
        ``"append"`` only: connections that ``COPY`` in parallel, each write
        of at least 32,768 rows per connection being split between them in
        row order, each connection in its own transaction of the epoch
        (prepared as ``"<prefix>:<epoch>.<i>"`` for ``i > 0``). One backend
        parsing ``COPY`` is what limits the load (the client's encoding takes
        about 5 % of it), so on a server with a spare core two connections
        load faster. Exactly-once holds as with one: the epoch's transactions
        are all prepared before its checkpoint is saved, all committed after,
        and a resumed run commits or rolls back every one of them. What is
        given up is the atomic visibility of an epoch: its transactions are
        committed one after the other, so a reader can see part of an epoch
        for that moment (or, after a crash between those commits, until the
        run is resumed). A run without checkpoints commits each connection's
        transaction at the end, one after the other.

    Raises
    ------
    PostgresConnectionError
        In :meth:`open`: the server cannot be reached or refuses the
        credentials; later: the connection dropped (the run stops; run it again
        with the same checkpoint_dir, nothing is lost or repeated).
    DataError
        In :meth:`open`: a column is missing or of an incompatible type, the
        upsert key has no unique index; in :meth:`write`: a value does not fit
        the column (overflow, NOT NULL violated, duplicate key in append mode).
    CheckpointError
        A checkpointed run on a server whose ``max_prepared_transactions`` is
        below ``connections``, or another open sink uses the same
        ``txn_prefix``.
    ValueError
        A bad argument, e.g. ``connections > 1`` with ``mode="upsert"``.

    Notes
    -----
    While an epoch is prepared its row locks are held (upsert) and the server
    keeps its transaction id; creating a logical replication slot waits for
    prepared transactions, so a CDC source started on the same server waits
    until the checkpoint commits. Restoring a checkpoint older than the
    latest does not remove rows already committed by later epochs.

    Examples
    --------
    >>> sink = lj.io.PostgresSink("postgresql://app@db/analytics", "bids_per_auction",
    ...                           mode="upsert", key=["auction", "window_start"])    # doctest: +SKIP
    >>> lj.run(dag, sources=..., sinks={"out": sink}, checkpoint_dir="chk/")      # doctest: +SKIP
    """

    exactly_once = True

    def __init__(self, dsn: str, table: str, mode: str = "append", key=None, txn_prefix: str | None = None,
                 connections: int = 1):
        super().__init__()
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("PostgresSink: dsn must be a libpq connection string or URL")
        self.dsn = dsn
        self.table = TableName.parse(table, "PostgresSink")
        if mode not in _MODES:
            raise ValueError(f"PostgresSink({str(self.table)!r}): mode must be 'append' or 'upsert', got {mode!r}")
        self.mode = mode
        keys = [key] if isinstance(key, str) else list(key or [])
        if mode == "upsert" and not keys:
            raise ValueError(f"PostgresSink({str(self.table)!r}): mode='upsert' needs key=<column or columns>")
        if mode == "append" and keys:
            raise ValueError(f"PostgresSink({str(self.table)!r}): key= is only used with mode='upsert'")
        self.key = keys
        self.txn_prefix = txn_prefix or f"lj:{self.table}"
        if len(self.txn_prefix) > 180:
            raise ValueError(f"PostgresSink: txn_prefix must be at most 180 characters, got {self.txn_prefix!r}")
        if isinstance(connections, bool) or not isinstance(connections, int) \
                or not 1 <= connections <= _MAX_CONNECTIONS:
            raise ValueError(f"PostgresSink({str(self.table)!r}): connections must be an int from 1 to "
                             f"{_MAX_CONNECTIONS}, got {connections!r}")
        if mode == "upsert" and connections > 1:
            raise ValueError(f"PostgresSink({str(self.table)!r}): mode='upsert' writes through one connection "
                             "(rows of one key in two open transactions would wait on each other's row locks); "
                             "leave connections=1")
        self.connections = connections
        self._conn = None  # the main connection: lock, recovery, DDL, upserts, COMMIT PREPARED
        self._extra: list = []  # further connections of an append sink (connections > 1)
        self._pool: ThreadPoolExecutor | None = None
        self._checkpointed = False
        self._open_epoch: int | None = None  # epoch of the transactions in progress
        self._begun: list[bool] = []  # per connection: has a transaction of the open epoch
        self._prepared: dict[int, list[str]] = {}  # epoch -> gids prepared, not yet committed
        self._kinds: list[tuple[str, str, pa.DataType]] = []  # (column, encoder kind, arrow type)
        self._stage = None
        self._changelog = False  # upsert mode, rows with an op column (set by open)

    def __repr__(self) -> str:
        more = f", connections={self.connections}" if self.connections > 1 else ""
        return f"PostgresSink({str(self.table)!r}, mode={self.mode!r}{more})"

    def _owner(self) -> str:
        return f"PostgresSink(table {str(self.table)!r})"

    def _gid(self, epoch: int, part: int = 0) -> str:
        """Name of the prepared transaction of ``epoch`` on connection ``part`` (``<prefix>:<epoch>[.<part>]``)."""
        return f"{self.txn_prefix}:{epoch}" if part == 0 else f"{self.txn_prefix}:{epoch}.{part}"

    def _connections(self) -> list:
        return [self._conn, *self._extra]

    # -- errors ------------------------------------------------------------------
    def _fail(self, exc: Exception, doing: str, conn=None) -> Exception:
        """A typed error for a psycopg exception raised on ``conn`` (default: the main one) while ``doing``.

        Only builds the error: a lost connection is dropped by :meth:`_raise`
        in the calling thread, never from a worker thread.
        """
        import psycopg

        conn = self._conn if conn is None else conn
        text = scrub(str(exc).strip(), self.dsn)
        if isinstance(exc, psycopg.OperationalError) or conn is None or conn.closed:
            return PostgresConnectionError(
                f"{self._owner()}: connection to {redact(self.dsn)} lost while {doing}: {text}. Nothing of the "
                "epoch in progress is visible; once the server is back, run lj.run again with the same "
                "checkpoint_dir — it resumes from the last checkpoint and no row is lost or written twice")
        return DataError(f"{self._owner()}: PostgreSQL refused {doing}: {type(exc).__name__}: {text}")

    def _raise(self, error: Exception):
        """Raise ``error``; a lost connection first drops every connection (the server aborts their work)."""
        if isinstance(error, PostgresConnectionError):
            self._drop_connections()
        raise error

    def _execute(self, query, params=None, doing: str = "a statement", conn=None):
        import psycopg

        conn = self._conn if conn is None else conn
        try:
            return conn.execute(query, params)
        except psycopg.Error as exc:
            self._raise(self._fail(exc, doing, conn))

    # -- protocol ----------------------------------------------------------------
    def open(self, schema, restored_epoch):
        super().open(schema, restored_epoch)
        self.close()
        self._conn = connect(self.dsn, self._owner(), autocommit=True)
        self._checkpointed = restored_epoch is not None
        self._open_epoch, self._prepared = None, {}
        lock = int.from_bytes(hashlib.blake2b(self.txn_prefix.encode(), digest_size=8).digest(), "big", signed=True)
        # A killed run's server process may hold the lock a moment longer, until the server notices.
        deadline = time.monotonic() + 10.0
        while not self._execute("SELECT pg_try_advisory_lock(%s)", (lock,)).fetchone()[0]:
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            self.close()
            raise CheckpointError(
                f"{self._owner()}: another PostgresSink with txn_prefix {self.txn_prefix!r} is open (another run "
                "writing this table?); give each concurrent run its own txn_prefix=")
        if self._checkpointed:
            enabled = int(self._execute("SHOW max_prepared_transactions").fetchone()[0])
            if enabled < self.connections:
                self.close()
                raise CheckpointError(
                    f"{self._owner()}: the server has max_prepared_transactions = {enabled}, and exactly-once "
                    f"needs {self.connections} prepared transaction(s) per epoch of this sink; set it (ALTER "
                    "SYSTEM SET max_prepared_transactions = 10, then restart the server), lower connections=, or "
                    "run without checkpoint_dir")
        self._recover(restored_epoch or 0)
        self._prepare_table(schema)
        try:
            self._extra = [connect(self.dsn, self._owner(), autocommit=True) for _ in range(self.connections - 1)]
        except PostgresConnectionError:
            self.close()
            raise
        if self._extra:
            self._pool = ThreadPoolExecutor(max_workers=len(self._extra), thread_name_prefix="lj-pg-sink")
        self._begun = [False] * self.connections

    def _recover(self, restored_epoch: int) -> None:
        """Commit this sink's prepared epochs the checkpoint covers, roll back the others."""
        rows = self._execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, %s)",
            (self.txn_prefix + ":",)).fetchall()
        for (gid,) in rows:
            tail = _GID_TAIL.fullmatch(gid[len(self.txn_prefix) + 1:])
            if tail is None:  # not a name this sink gives
                continue
            verb = "COMMIT" if int(tail.group(1)) <= restored_epoch else "ROLLBACK"
            self._execute(f"{verb} PREPARED %s".replace("%s", _literal(gid)), doing=f"{verb} PREPARED {gid!r}")

    def _columns(self) -> dict[str, tuple[str, bool, bool]]:
        """The table's columns: name -> (pg_type name, not null, has default)."""
        rows = self._execute(
            "SELECT a.attname, t.typname, a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (_qualified(self.table),)).fetchall()
        return {name: (typ, notnull, hasdef) for name, typ, notnull, hasdef in rows}

    def _prepare_table(self, schema: pa.Schema) -> None:
        from psycopg import sql

        owner = self._owner()
        # an upserted changelog is the table it describes: its op says what to do with a row, it is not stored
        self._changelog = self.mode == "upsert" and is_changelog(schema)
        if self._changelog:
            schema = schema.remove(schema.get_field_index(OP_COLUMN))
        for f in schema:
            if arrow_to_pg(f.type) is None:
                raise DataError(f"{owner}: output column {f.name!r} is {f.type}, which PostgresSink cannot write; "
                                "cast it to a number, string, bool, timestamp or date in the DAG")
        missing_key = [k for k in self.key if k not in schema.names]
        if missing_key:
            raise DataError(f"{owner}: key column(s) {missing_key} are not output columns {schema.names}")
        exists = self._execute("SELECT to_regclass(%s) IS NOT NULL", (_qualified(self.table),)).fetchone()[0]
        if not exists:
            cols = [sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(sql_type(arrow_to_pg(f.type))))
                    for f in schema]
            if self.key:
                cols.append(sql.SQL("PRIMARY KEY ({})").format(sql.SQL(", ").join(map(sql.Identifier, self.key))))
            self._execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.table.sql(),
                                                                               sql.SQL(", ").join(cols)),
                          doing=f"CREATE TABLE {self.table}")
        columns = self._columns()
        kinds = []
        for f in schema:
            if f.name not in columns:
                raise DataError(f"{owner}: the table has no column {f.name!r} (it has {list(columns)}); add it "
                                f"(ALTER TABLE {self.table} ADD COLUMN \"{f.name}\" "
                                f"{sql_type(arrow_to_pg(f.type))}) or drop the column from the output")
            pg = columns[f.name][0]
            if not compatible(f.type, pg):
                raise DataError(f"{owner}: column {f.name!r} is {pg} in PostgreSQL, the output has {f.type}; "
                                f"cast it in the DAG or ALTER TABLE {self.table} ALTER COLUMN \"{f.name}\" TYPE "
                                f"{sql_type(arrow_to_pg(f.type))}")
            kinds.append((f.name, *PG_TYPES[pg]))
        required = [c for c, (_, notnull, hasdef) in columns.items() if notnull and not hasdef
                    and c not in schema.names]
        if required:
            raise DataError(f"{owner}: the table's NOT NULL column(s) {required} have no default and are not in "
                            f"the output {schema.names}; give them defaults or add them to the output")
        self._kinds = kinds
        if self.mode == "upsert":
            self._check_unique_key()
            digest = hashlib.blake2b(self.txn_prefix.encode(), digest_size=4).hexdigest()
            self._stage = TableName(self.table.schema, f"_lj_stage_{self.table.name[:30]}_{digest}")
            names = sql.SQL(", ").join(sql.Identifier(n) for n, _, _ in self._kinds)
            self._execute(sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} AS SELECT {} FROM {} WITH NO DATA").format(
                self._stage.sql(), names, self.table.sql()), doing=f"creating staging table {self._stage}")
            self._execute(sql.SQL("TRUNCATE {}").format(self._stage.sql()), doing=f"TRUNCATE {self._stage}")

    def _check_unique_key(self) -> None:
        rows = self._execute(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL "
            "GROUP BY i.indexrelid", (_qualified(self.table),)).fetchall()
        if sorted(self.key) not in [sorted(r[0]) for r in rows]:
            raise DataError(f"{self._owner()}: mode='upsert' needs a primary key or unique index on exactly "
                            f"{self.key}; create one (CREATE UNIQUE INDEX ON {self.table} "
                            f"({', '.join(self.key)}))")

    def _columns_of(self, batch: pa.RecordBatch) -> list[tuple[str, pa.Array]]:
        """The batch's columns in table order, each cast to the Arrow type its PostgreSQL column takes."""
        columns = []
        for name, kind, arrow in self._kinds:
            col = batch.column(name)
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            if col.type != arrow and not (kind == "timestamp" and pa.types.is_timestamp(col.type)):
                try:
                    col = col.cast(arrow, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataError(f"{self._owner()}: column {name!r} ({col.type}) does not fit the table's "
                                    f"{arrow} column: {exc}; cast or clip it in the DAG") from None
            columns.append((kind, col))
        return columns

    def _encoders(self, table: pa.Table) -> list[_binary.Encoder]:
        """Encoders over the table's record batches (small neighbours concatenated), all cast up front.

        Casting everything before ``COPY`` starts means a value that does not
        fit raises :class:`DataError` while the epoch's transaction is intact.
        """
        return [_binary.Encoder(self._columns_of(batch)) for batch in _runs(table)]

    def _copy(self, part: int, target: TableName, pieces, doing: str) -> Exception | None:
        """``COPY`` rows ``pieces`` (encoder, first row, end row) through connection ``part``.

        Starts the epoch's transaction on that connection if needed. Returns
        the error instead of raising it (it may run in a worker thread).
        """
        import psycopg
        from psycopg import sql

        conn = self._conn if part == 0 else self._extra[part - 1]
        names = sql.SQL(", ").join(sql.Identifier(n) for n, _, _ in self._kinds)
        query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(target.sql(), names)
        try:
            if not self._begun[part]:
                conn.execute("BEGIN")
                self._begun[part] = True
            with conn.cursor() as cur, cur.copy(query) as copy:
                copy.write(_binary.HEADER)
                for encoder, lo, hi in pieces:  # the server parses a chunk while the next one is encoded
                    for chunk in encoder.chunks(_CHUNK, lo, hi):
                        copy.write(chunk)
                copy.write(_binary.TRAILER)
        except psycopg.Error as exc:
            return self._fail(exc, doing, conn)
        return None

    def write(self, table, epoch):
        if self._conn is None:
            raise CheckpointError(f"{self._owner()}: write before open (or after a lost connection); open it first")
        if self._open_epoch != epoch:
            if self._open_epoch is not None:  # lj.run pre-commits an epoch before writing the next one
                raise CheckpointError(f"{self._owner()}: rows of epoch {epoch} arrived while epoch "
                                      f"{self._open_epoch} was not pre-committed; call pre_commit first")
            self._open_epoch = epoch
        doing = f"COPY of {table.num_rows:,} rows (epoch {epoch})"
        if self.mode == "upsert":
            deleted = None
            if self._changelog:  # -U rows only announce the +U that follows them
                table = table.filter(pc.not_equal(table.column(OP_COLUMN), RowKind.UPDATE_BEFORE))
            table = _last_per_key(table, self.key)
            if self._changelog:  # per key, its last change: an upsert, or a -D that deletes the row
                gone = pc.equal(table.column(OP_COLUMN), RowKind.DELETE)
                deleted, table = table.filter(gone), table.filter(pc.invert(gone))
            columns = [n for n, _, _ in self._kinds]
            for rows, statement, what in ((table, _upsert_sql(self.table, self._stage, columns, self.key), "upsert"),
                                          (deleted, _delete_sql(self.table, self._stage, self.key), "delete")):
                if rows is None or (rows.num_rows == 0 and what == "delete"):
                    continue
                error = self._copy(0, self._stage, [(e, 0, e.num_rows) for e in self._encoders(rows)], doing)
                if error is not None:
                    self._raise(error)
                self._execute(statement, doing=f"the {what} of {rows.num_rows:,} rows (epoch {epoch})")
            return
        parts = _split(self._encoders(table), min(self.connections, max(1, table.num_rows // _PART_ROWS)))
        if len(parts) == 1:
            error = self._copy(0, self.table, parts[0], doing)
        else:  # one part per connection, each encoded and sent by its own thread (the kernels release the GIL)
            futures = [self._pool.submit(self._copy, i, self.table, pieces, doing)
                       for i, pieces in enumerate(parts) if i > 0]
            errors = [self._copy(0, self.table, parts[0], doing)] + [f.result() for f in futures]
            error = next((e for e in errors if isinstance(e, PostgresConnectionError)),
                         next((e for e in errors if e is not None), None))
        if error is not None:
            self._raise(error)

    def pre_commit(self, epoch):
        if self._open_epoch != epoch:
            return
        for part, conn in enumerate(self._connections()):
            if not self._begun[part]:
                continue
            if self._checkpointed:
                gid = self._gid(epoch, part)
                self._execute(f"PREPARE TRANSACTION {_literal(gid)}", doing=f"preparing epoch {epoch}", conn=conn)
                self._prepared.setdefault(epoch, []).append(gid)
            else:  # no checkpoint to wait for
                self._execute("COMMIT", doing=f"committing epoch {epoch}", conn=conn)
            self._begun[part] = False
        self._open_epoch = None

    def commit(self, epoch):
        gids = self._prepared.get(epoch, [])
        while gids:
            self._execute(f"COMMIT PREPARED {_literal(gids[0])}", doing=f"committing epoch {epoch}")
            gids.pop(0)
        self._prepared.pop(epoch, None)

    def _drop_connections(self) -> None:
        """Close every connection without a word to the server (it aborts their open transactions)."""
        for conn in self._connections():
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - already broken
                    pass
        self._conn, self._extra = None, []
        self._open_epoch, self._begun = None, [False] * self.connections
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def close(self):
        for part, conn in enumerate(self._connections()):
            if conn is not None and not conn.closed and self._open_epoch is not None and self._begun[part]:
                try:
                    conn.execute("ROLLBACK")  # an epoch not checkpointed: it will be replayed
                except Exception:  # noqa: BLE001 - the connection is gone; the server aborts the transaction
                    pass
        self._drop_connections()


def _qualified(table: TableName) -> str:
    return '"' + table.schema.replace('"', '""') + '"."' + table.name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _split(encoders: list, parts: int) -> list[list[tuple]]:
    """The encoders' rows as ``parts`` contiguous runs of (encoder, first row, end row), as even as rows allow."""
    total = sum(e.num_rows for e in encoders)
    if parts <= 1:
        return [[(e, 0, e.num_rows) for e in encoders]]
    bounds = [total * i // parts for i in range(parts + 1)]
    out: list[list[tuple]] = [[] for _ in range(parts)]
    base = 0
    for e in encoders:
        for i in range(parts):
            lo, hi = max(bounds[i], base), min(bounds[i + 1], base + e.num_rows)
            if lo < hi:
                out[i].append((e, lo - base, hi - base))
        base += e.num_rows
    return out


def _runs(table: pa.Table):
    """The table's record batches, runs of small ones concatenated to at least ``_RUN_ROWS`` rows."""
    group, rows = [], 0
    for batch in table.to_batches():
        if batch.num_rows == 0:
            continue
        group.append(batch)
        rows += batch.num_rows
        if rows >= _RUN_ROWS:
            yield group[0] if len(group) == 1 else pa.concat_batches(group)
            group, rows = [], 0
    if group:
        yield group[0] if len(group) == 1 else pa.concat_batches(group)


def _last_per_key(table: pa.Table, key: list[str]) -> pa.Table:
    """``table`` with only the last row of each key (ON CONFLICT cannot touch a row twice in one statement)."""
    index = "__lj_row"
    numbered = table.select(key).append_column(index, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = numbered.group_by(key, use_threads=False).aggregate([(index, "max")]).column(f"{index}_max")
    if len(last) == table.num_rows:
        return table
    return table.take(np.sort(last.to_numpy()))  # keep the output order of the rows kept


def _delete_sql(table: TableName, stage: TableName, key: list[str]):
    from psycopg import sql

    match = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in key)
    return sql.SQL("DELETE FROM {t} AS t USING {s} AS s WHERE {m}; TRUNCATE {s}").format(
        t=table.sql(), s=stage.sql(), m=match)


def _upsert_sql(table: TableName, stage: TableName, columns: list[str], key: list[str]):
    from psycopg import sql

    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    others = [c for c in columns if c not in key]
    action = (sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)) if others else sql.SQL("DO NOTHING")
    return sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({k}) {a}; TRUNCATE {s}").format(
        t=table.sql(), s=stage.sql(), c=cols, k=sql.SQL(", ").join(map(sql.Identifier, key)), a=action)
