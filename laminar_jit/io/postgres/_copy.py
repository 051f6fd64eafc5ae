"""A table's snapshot read with ``COPY ... TO STDOUT``, parsed by pyarrow's CSV reader."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from ._common import PG_TYPES

__all__ = ["copy_snapshot"]


class _CopyReader(io.RawIOBase):
    """The output of a psycopg ``COPY ... TO STDOUT`` as a binary file, for pyarrow's streaming CSV reader."""

    def __init__(self, copy):
        self._chunks = iter(copy)
        self._rest = b""

    def at_end(self) -> bool:
        """Whether the output is empty from here on (reads ahead one chunk)."""
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return True
            self._rest = bytes(chunk)
        return False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = bytes(chunk)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def copy_snapshot(conn, table, columns, schema: pa.Schema, snapshot_ms: int,
                  batch_size: int) -> Iterator[pa.RecordBatch]:
    """A table's rows as batches of ``schema`` (its columns, then ``op`` 0 and ``commit_ts`` ``snapshot_ms``),
    read with ``COPY ... TO STDOUT (FORMAT csv)`` on ``conn`` and parsed by pyarrow's streaming CSV reader.

    ``columns`` are the table's (name, PostgreSQL type) pairs; timestamps travel as microseconds since the
    epoch, types pyarrow cannot parse as text. Batches hold at most ``batch_size`` rows.
    """
    from psycopg import sql

    exprs = []
    for name, typ in columns:
        col = sql.Identifier(name)
        if typ in ("timestamp", "timestamptz"):
            exprs.append(sql.SQL("(extract(epoch FROM {}) * 1000000)::bigint").format(col))
        elif typ in PG_TYPES and typ != "bytea":
            exprs.append(col)
        else:
            exprs.append(sql.SQL("{}::text").format(col))
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT csv)").format(
        sql.SQL(", ").join(exprs), table.sql())
    fields = list(schema)[:-2]
    read_types = {f.name: (pa.int64() if pa.types.is_timestamp(f.type) else f.type) for f in fields}
    with conn.cursor() as cur, cur.copy(query) as copy:
        raw = _CopyReader(copy)
        if raw.at_end():  # an empty table (pyarrow refuses an empty CSV file)
            return
        reader = pa_csv.open_csv(
            io.BufferedReader(raw, 1 << 20),
            read_options=pa_csv.ReadOptions(column_names=[f.name for f in fields], block_size=1 << 24,
                                            use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(column_types=read_types, null_values=[""],
                                                  strings_can_be_null=True, quoted_strings_can_be_null=False,
                                                  true_values=["t"], false_values=["f"]))
        for block in reader:
            n = block.num_rows
            arrays = [block.column(f.name).cast(f.type) for f in fields]
            arrays += [pa.array(np.zeros(n, np.int8)), pa.array(np.full(n, snapshot_ms, np.int64))]
            whole = pa.RecordBatch.from_arrays(arrays, schema=schema)
            for start in range(0, n, batch_size):
                yield whole.slice(start, batch_size)
