"""What the PostgreSQL sink and source share: connecting, naming, errors, and the type map.

Type map (Arrow <-> PostgreSQL), used to create tables, check existing ones,
encode binary ``COPY`` and read rows back:

============================================  ====================  ===========================
Arrow                                         PostgreSQL            read back as
============================================  ====================  ===========================
int8, int16, uint8                            smallint              int16
int32, uint16                                 integer               int32
int64, uint32, uint64 (if < 2**63)            bigint                int64
float16, float32                              real                  float32
float64                                       double precision      float64
bool                                          boolean               bool
string, large_string, string_view, dict       text                  string
binary, large_binary                          bytea                 (not read by the source)
timestamp[any unit] (no time zone)            timestamp             timestamp[us]
timestamp[any unit, tz]                       timestamptz           timestamp[us, UTC]
date32, date64                                date                  date32
============================================  ====================  ===========================

PostgreSQL keeps microseconds: nanosecond timestamps are truncated. Any other
PostgreSQL column type is read by the source as its text form (string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

from ...errors import LaminarError

__all__ = ["PostgresConnectionError", "TableName", "connect", "redact"]


class PostgresConnectionError(LaminarError, ConnectionError):
    """PostgreSQL cannot be reached, refused the credentials, or the connection dropped.

    A subclass of the built-in :class:`ConnectionError` (so of :class:`OSError`):
    :func:`laminar_jit.run` treats a sink failing with it like any storage
    failure (the run stops with a :class:`~laminar_jit.errors.CheckpointError`
    saying what is intact; calling it again resumes). The message never holds
    the password.
    """


def redact(dsn: str) -> str:
    """``dsn`` with its password replaced by ``***`` (URL or ``key=value`` form)."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(dsn)
        if "password" in parts:
            parts["password"] = "***"
        return make_conninfo(**parts)
    except Exception:  # noqa: BLE001 - an unparsable DSN: hide anything that looks like a secret
        dsn = re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)


def _password(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(dsn).get("password")
    except Exception:  # noqa: BLE001
        return None


def scrub(text: str, dsn: str) -> str:
    """``text`` without the DSN's password (server messages do not hold it, but be sure)."""
    pw = _password(dsn)
    return text.replace(pw, "***") if pw else text


def connect(dsn: str, owner: str, **kwargs):
    """A psycopg connection, or a :class:`PostgresConnectionError` naming the server and the cause."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(f"{owner} needs psycopg 3: pip install 'laminar_jit[postgres]'") from exc
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise PostgresConnectionError(
            f"{owner}: cannot connect to PostgreSQL at {redact(dsn)}: {scrub(str(exc).strip(), dsn)} — check "
            "host, port, database, user and password, and that the server accepts connections") from None
    if not kwargs.get("replication"):
        conn.execute("SET client_encoding TO 'UTF8'; SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO'")
        if not conn.autocommit:
            conn.commit()
    return conn


_IDENT = re.compile(r'^[A-Za-z_][A-Za-z0-9_$]*$')


@dataclass(frozen=True)
class TableName:
    """A table as ``schema.name`` (``public`` when no schema is given)."""

    schema: str
    name: str

    @classmethod
    def parse(cls, table: str, owner: str) -> "TableName":
        if not isinstance(table, str) or not table:
            raise ValueError(f"{owner}: table must be a non-empty str like 'events' or 'analytics.events', "
                             f"got {table!r}")
        schema, _, name = table.rpartition(".")
        return cls(schema or "public", name)

    def sql(self):
        from psycopg import sql

        return sql.Identifier(self.schema, self.name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


#: PostgreSQL type name (pg_type.typname) -> (encoder kind, Arrow type the column is cast to or read as)
PG_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "int2": ("int2", pa.int16()),
    "int4": ("int4", pa.int32()),
    "int8": ("int8", pa.int64()),
    "float4": ("float4", pa.float32()),
    "float8": ("float8", pa.float64()),
    "bool": ("bool", pa.bool_()),
    "text": ("text", pa.string()),
    "varchar": ("text", pa.string()),
    "bpchar": ("text", pa.string()),
    "bytea": ("bytea", pa.binary()),
    "timestamp": ("timestamp", pa.timestamp("us")),
    "timestamptz": ("timestamp", pa.timestamp("us", tz="UTC")),
    "date": ("date", pa.date32()),
}

_SQL_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real",
              "float8": "double precision", "bool": "boolean", "text": "text", "bytea": "bytea",
              "timestamp": "timestamp", "timestamptz": "timestamptz", "date": "date"}


def arrow_to_pg(t: pa.DataType) -> str | None:
    """pg_type name a column of Arrow type ``t`` is created as (None: not writable)."""
    if pa.types.is_dictionary(t):
        return arrow_to_pg(t.value_type)
    if t in (pa.int8(), pa.int16(), pa.uint8()):
        return "int2"
    if t in (pa.int32(), pa.uint16()):
        return "int4"
    if t in (pa.int64(), pa.uint32(), pa.uint64()):
        return "int8"
    if t in (pa.float16(), pa.float32()):
        return "float4"
    if t == pa.float64():
        return "float8"
    if t == pa.bool_():
        return "bool"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytea"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pa.types.is_date(t):
        return "date"
    return None


def sql_type(pg: str) -> str:
    return _SQL_NAMES[pg]


def _family(pg: str) -> str:
    return {"int2": "num", "int4": "num", "int8": "num", "float4": "num", "float8": "num",
            "timestamptz": "timestamp"}.get(pg, pg if pg not in ("varchar", "bpchar") else "text")


def compatible(arrow: pa.DataType, pg: str) -> bool:
    """Whether Arrow values of type ``arrow`` can be written to a column of pg_type ``pg`` (by a safe cast)."""
    created = arrow_to_pg(arrow)
    return created is not None and pg in PG_TYPES and _family(created) == _family(pg)
