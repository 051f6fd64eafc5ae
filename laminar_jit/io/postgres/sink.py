"""``PostgresSink``: a run's output into a PostgreSQL table, exactly once, by two-phase commit."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pyarrow as pa

from ...errors import CheckpointError, DataError
from ..sinks import Sink
from . import _binary
from ._common import (PG_TYPES, PostgresConnectionError, TableName, arrow_to_pg, compatible, connect, redact, scrub,
                      sql_type)

__all__ = ["PostgresSink"]

_MODES = ("append", "upsert")
_CHUNK = 1 << 22  # bytes per COPY write


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
        ``COPY``); within one epoch the last row of a key wins.
    key : str or list of str, optional
        The key columns of ``"upsert"`` (required there). The table needs a
        primary key or unique index on exactly these columns (created with
        the table when missing).
    txn_prefix : str, optional
        Prefix of the prepared transactions' names (``"<prefix>:<epoch>"``),
        default ``"lj:<schema>.<table>"``. Two runs writing the same table at
        the same time need different prefixes; a second sink opening the same
        prefix fails with a :class:`CheckpointError`.

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
        A checkpointed run on a server with ``max_prepared_transactions = 0``,
        or another open sink uses the same ``txn_prefix``.

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

    def __init__(self, dsn: str, table: str, mode: str = "append", key=None, txn_prefix: str | None = None):
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
        self._conn = None
        self._checkpointed = False
        self._open_epoch: int | None = None  # epoch of the transaction in progress
        self._prepared: set[int] = set()
        self._kinds: list[tuple[str, str, pa.DataType]] = []  # (column, encoder kind, arrow type)
        self._stage = None

    def __repr__(self) -> str:
        return f"PostgresSink({str(self.table)!r}, mode={self.mode!r})"

    def _owner(self) -> str:
        return f"PostgresSink(table {str(self.table)!r})"

    def _gid(self, epoch: int) -> str:
        return f"{self.txn_prefix}:{epoch}"

    # -- errors ------------------------------------------------------------------
    def _fail(self, exc: Exception, doing: str) -> Exception:
        """A typed error for a psycopg exception raised while ``doing``."""
        import psycopg

        text = scrub(str(exc).strip(), self.dsn)
        if isinstance(exc, psycopg.OperationalError) or self._conn is None or self._conn.closed:
            self._conn = None
            return PostgresConnectionError(
                f"{self._owner()}: connection to {redact(self.dsn)} lost while {doing}: {text}. Nothing of the "
                "epoch in progress is visible; once the server is back, run lj.run again with the same "
                "checkpoint_dir — it resumes from the last checkpoint and no row is lost or written twice")
        return DataError(f"{self._owner()}: PostgreSQL refused {doing}: {type(exc).__name__}: {text}")

    def _execute(self, query, params=None, doing: str = "a statement"):
        import psycopg

        try:
            return self._conn.execute(query, params)
        except psycopg.Error as exc:
            raise self._fail(exc, doing) from None

    # -- protocol ----------------------------------------------------------------
    def open(self, schema, restored_epoch):
        super().open(schema, restored_epoch)
        self.close()
        self._conn = connect(self.dsn, self._owner(), autocommit=True)
        self._checkpointed = restored_epoch is not None
        self._open_epoch, self._prepared = None, set()
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
            if enabled == 0:
                self.close()
                raise CheckpointError(
                    f"{self._owner()}: the server has max_prepared_transactions = 0, and exactly-once needs "
                    "prepared transactions; set it (ALTER SYSTEM SET max_prepared_transactions = 10, then "
                    "restart the server) or run without checkpoint_dir")
        self._recover(restored_epoch or 0)
        self._prepare_table(schema)

    def _recover(self, restored_epoch: int) -> None:
        """Commit this sink's prepared epochs the checkpoint covers, roll back the others."""
        rows = self._execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND starts_with(gid, %s)",
            (self.txn_prefix + ":",)).fetchall()
        for (gid,) in rows:
            tail = gid[len(self.txn_prefix) + 1:]
            if not tail.isdigit():
                continue
            verb = "COMMIT" if int(tail) <= restored_epoch else "ROLLBACK"
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

    def _encode(self, table: pa.Table) -> bytes:
        columns = []
        for name, kind, arrow in self._kinds:
            col = table.column(name)
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            if col.type != arrow and not (kind == "timestamp" and pa.types.is_timestamp(col.type)):
                try:
                    col = col.cast(arrow, safe=True)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataError(f"{self._owner()}: column {name!r} ({col.type}) does not fit the table's "
                                    f"{arrow} column: {exc}; cast or clip it in the DAG") from None
            columns.append((kind, col))
        return _binary.encode(columns, table.num_rows)

    def _copy(self, target: TableName, data: bytes, doing: str) -> None:
        import psycopg
        from psycopg import sql

        names = sql.SQL(", ").join(sql.Identifier(n) for n, _, _ in self._kinds)
        query = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(target.sql(), names)
        try:
            with self._conn.cursor() as cur, cur.copy(query) as copy:
                view = memoryview(data)
                for start in range(0, len(data), _CHUNK):
                    copy.write(view[start:start + _CHUNK])
        except psycopg.Error as exc:
            raise self._fail(exc, doing) from None

    def write(self, table, epoch):
        if self._open_epoch != epoch:
            if self._open_epoch is not None:  # lj.run pre-commits an epoch before writing the next one
                raise CheckpointError(f"{self._owner()}: rows of epoch {epoch} arrived while epoch "
                                      f"{self._open_epoch} was not pre-committed; call pre_commit first")
            self._execute("BEGIN", doing=f"starting the transaction of epoch {epoch}")
            self._open_epoch = epoch
        if self.mode == "append":
            self._copy(self.table, self._encode(table), f"COPY of {table.num_rows:,} rows (epoch {epoch})")
            return
        table = _last_per_key(table, self.key)
        self._copy(self._stage, self._encode(table), f"COPY of {table.num_rows:,} rows (epoch {epoch})")
        self._execute(_upsert_sql(self.table, self._stage, [n for n, _, _ in self._kinds], self.key),
                      doing=f"the upsert of {table.num_rows:,} rows (epoch {epoch})")

    def pre_commit(self, epoch):
        if self._open_epoch != epoch:
            return
        if self._checkpointed:
            self._execute(f"PREPARE TRANSACTION {_literal(self._gid(epoch))}", doing=f"preparing epoch {epoch}")
            self._prepared.add(epoch)
        else:
            self._execute("COMMIT", doing=f"committing epoch {epoch}")  # no checkpoint to wait for
        self._open_epoch = None

    def commit(self, epoch):
        if epoch in self._prepared:
            self._execute(f"COMMIT PREPARED {_literal(self._gid(epoch))}", doing=f"committing epoch {epoch}")
            self._prepared.discard(epoch)

    def close(self):
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                if self._open_epoch is not None:
                    conn.execute("ROLLBACK")  # an epoch not checkpointed: it will be replayed
            except Exception:  # noqa: BLE001 - the connection is gone; the server aborts the transaction
                pass
            conn.close()
        self._open_epoch = None


def _qualified(table: TableName) -> str:
    return '"' + table.schema.replace('"', '""') + '"."' + table.name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _last_per_key(table: pa.Table, key: list[str]) -> pa.Table:
    """``table`` with only the last row of each key (ON CONFLICT cannot touch a row twice in one statement)."""
    index = "__lj_row"
    numbered = table.select(key).append_column(index, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = numbered.group_by(key, use_threads=False).aggregate([(index, "max")]).column(f"{index}_max")
    if len(last) == table.num_rows:
        return table
    return table.take(np.sort(last.to_numpy()))  # keep the output order of the rows kept


def _upsert_sql(table: TableName, stage: TableName, columns: list[str], key: list[str]):
    from psycopg import sql

    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    others = [c for c in columns if c not in key]
    action = (sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)) if others else sql.SQL("DO NOTHING")
    return sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ON CONFLICT ({k}) {a}; TRUNCATE {s}").format(
        t=table.sql(), s=stage.sql(), c=cols, k=sql.SQL(", ").join(map(sql.Identifier, key)), a=action)
