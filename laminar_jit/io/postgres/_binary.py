"""Arrow columns -> PostgreSQL binary ``COPY`` data, with numpy (no Python loop per row).

The binary format is a header, then per row a big-endian int16 field count
and per field an int32 length (-1 for NULL) followed by the value's bytes,
then an int16 -1 trailer. Fixed-width columns are converted to big-endian
arrays; when no column has nulls and none is variable-width every row has the
same layout and the whole batch is one numpy structured array. Otherwise row
offsets come from a cumulative sum of row sizes and each column is scattered
into place with fancy indexing.

Rejected: CSV written by ``pyarrow.csv`` — simpler, but PostgreSQL's text
parsing of numbers made ``COPY`` about twice as slow (230 k vs 500 k rows/s for
four numeric columns on the same machine and load).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["HEADER", "TRAILER", "encode"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
#: 2000-01-01, PostgreSQL's epoch, in Unix microseconds and days.
_PG_EPOCH_US = 946_684_800_000_000
_PG_EPOCH_DAYS = 10_957

_FIXED = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4", "float8": ">f8", "bool": "u1",
          "timestamp": ">i8", "date": ">i4"}


def _fixed_values(kind: str, arr: pa.Array) -> np.ndarray:
    """The column as a big-endian numpy array of the PostgreSQL binary representation (nulls as 0)."""
    if kind == "timestamp":
        arr = arr.cast(pa.timestamp("us", tz=arr.type.tz), safe=False).cast(pa.int64())
        values = pc.fill_null(arr, 0).to_numpy() - _PG_EPOCH_US
    elif kind == "date":
        values = pc.fill_null(arr.cast(pa.date32()).cast(pa.int32()), 0).to_numpy() - _PG_EPOCH_DAYS
    elif kind == "bool":
        values = pc.fill_null(arr, False).to_numpy(zero_copy_only=False).view(np.uint8)
    else:
        values = pc.fill_null(arr, 0).to_numpy()
    return values.astype(_FIXED[kind], copy=False)


def _var_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets of n+1 entries, uint8 data) of a string/binary column."""
    arr = arr.cast(pa.large_binary())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    return offsets, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8))


def _scatter(buf: np.ndarray, positions: np.ndarray, matrix: np.ndarray) -> None:
    """buf[positions[i] + j] = matrix[i, j]."""
    width = matrix.shape[1]
    buf[(positions[:, None] + np.arange(width)).ravel()] = matrix.ravel()


def encode(columns: list[tuple[str, pa.Array]], num_rows: int) -> bytes:
    """Binary COPY data (header and trailer included) of ``num_rows`` rows.

    Parameters
    ----------
    columns : list of (kind, pyarrow.Array)
        Per column its encoder kind (see ``_common.PG_TYPES``) and values,
        already cast to the Arrow type of that kind.
    num_rows : int
    """
    n = num_rows
    prepared = []
    for kind, arr in columns:
        valid = None if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
        if kind in _FIXED:
            prepared.append((kind, valid, _fixed_values(kind, arr)))
        else:
            prepared.append((kind, valid, _var_values(arr)))
    if all(k in _FIXED and v is None for k, v, _ in prepared):
        fields = [("count", ">i2")]
        for i, (kind, _, values) in enumerate(prepared):
            fields += [(f"len{i}", ">i4"), (f"val{i}", values.dtype)]
        rows = np.empty(n, dtype=np.dtype(fields))
        rows["count"] = len(prepared)
        for i, (_, _, values) in enumerate(prepared):
            rows[f"len{i}"] = values.dtype.itemsize
            rows[f"val{i}"] = values
        return HEADER + rows.tobytes() + TRAILER

    # General layout: sizes per row and column, then scatter.
    lengths = []  # per column: int64 byte length per row (-1 for null)
    for kind, valid, values in prepared:
        if kind in _FIXED:
            length = np.full(n, values.dtype.itemsize, dtype=np.int64)
        else:
            offsets, _ = values
            length = np.diff(offsets)
        if valid is not None:
            length = np.where(valid, length, -1)
        lengths.append(length)
    row_size = 2 + 4 * len(prepared) + sum(np.maximum(length, 0) for length in lengths)
    row_start = np.empty(n, dtype=np.int64)
    row_start[0:1] = len(HEADER)
    np.cumsum(row_size[:-1], out=row_start[1:])
    row_start[1:] += len(HEADER)
    total = len(HEADER) + int(row_size.sum()) + len(TRAILER)
    buf = np.empty(total, dtype=np.uint8)
    buf[:len(HEADER)] = np.frombuffer(HEADER, np.uint8)
    buf[-2:] = 0xFF
    _scatter(buf, row_start, np.full(n, len(prepared), ">i2").view(np.uint8).reshape(n, 2))
    cursor = row_start + 2
    for (kind, valid, values), length in zip(prepared, lengths):
        _scatter(buf, cursor, length.astype(">i4").view(np.uint8).reshape(n, 4))
        cursor += 4
        if kind in _FIXED:
            width = values.dtype.itemsize
            matrix = values.view(np.uint8).reshape(n, width)
            if valid is None:
                _scatter(buf, cursor, matrix)
            else:
                _scatter(buf, cursor[valid], matrix[valid])
        else:
            offsets, data = values
            size = np.maximum(length, 0)
            rows = np.flatnonzero(size)
            if len(rows):
                sizes = size[rows]
                starts = np.repeat(cursor[rows], sizes)
                sources = np.repeat(offsets[rows], sizes)
                within = np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
                buf[starts + within] = data[sources + within]
        cursor += np.maximum(length, 0)
    return buf.tobytes()
