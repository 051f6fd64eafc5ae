"""Arrow columns -> PostgreSQL binary ``COPY`` data, with compiled kernels (no Python loop per row).

The binary format is a header, then per row a big-endian int16 field count
and per field an int32 length (-1 for NULL) followed by the value's bytes,
then an int16 -1 trailer.

:class:`Encoder` reads each column through zero-copy numpy views of its Arrow
buffers (values, validity bitmap, string offsets and bytes; values under a
null are never read, so nothing is filled; only booleans, bit-packed in
Arrow, and timestamps in units other than microseconds are converted first)
and writes rows straight into a scratch buffer reused from one range of rows
to the next: row
sizes, then row starts by a running sum, then one Numba kernel pass per
column that writes the length words and the big-endian values at each row's
cursor. The caller hands each range to ``COPY`` while the next one is
encoded, so the server parses one range while the client encodes the next,
and no whole-table byte string is ever built.

Rejected: CSV written by ``pyarrow.csv`` — simpler, but PostgreSQL's text
parsing of numbers made ``COPY`` about twice as slow (230 k vs 500 k rows/s for
four numeric columns on the same machine and load). A numpy structured array
of big-endian fields with fancy-index scatters (the previous encoder) — no
compiled code, but whole-table temporaries and two whole copies
(``tobytes``, the header concatenation): for 1 M rows of four 8-byte columns,
medians of 7 alternating runs on a loaded two-vCPU machine, 605 ms against
85 ms for :meth:`Encoder.chunks` (the sink's path); with a nullable text
column added, 4.3–4.9 s against 0.19–0.32 s for :func:`encode` (two runs).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from ..._jit import njit

__all__ = ["HEADER", "TRAILER", "Encoder", "encode"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
#: 2000-01-01, PostgreSQL's epoch, in Unix microseconds and days.
_PG_EPOCH_US = 946_684_800_000_000
_PG_EPOCH_DAYS = 10_957

#: encoder kind -> (Arrow type the values are read as, numpy dtype of their bits)
_FIXED = {"int2": (pa.int16(), np.int16), "int4": (pa.int32(), np.int32), "int8": (pa.int64(), np.int64),
          "float4": (pa.float32(), np.int32), "float8": (pa.float64(), np.int64), "bool": (pa.uint8(), np.uint8),
          "timestamp": (None, np.int64), "date": (pa.date32(), np.int32)}
_VARIABLE = ("text", "bytea")
_NO_BITS = np.zeros(0, np.uint8)


# ----------------------------------------------------------------------------- kernels


@njit
def _null_sizes(sizes, width, bits, bit0):
    """sizes[r] -= width for every null row r (validity bit 0)."""
    for r in range(sizes.shape[0]):
        b = bit0 + r
        if not (bits[b >> 3] >> (b & 7)) & 1:
            sizes[r] -= width


@njit
def _var_sizes(sizes, offsets, bits, bit0):
    """sizes[r] += byte length of value r, for every non-null row r."""
    nullable = bits.shape[0] > 0
    for r in range(sizes.shape[0]):
        if nullable:
            b = bit0 + r
            if not (bits[b >> 3] >> (b & 7)) & 1:
                continue
        sizes[r] += offsets[r + 1] - offsets[r]


@njit
def _begin_rows(buf, at, sizes, ncols, cursor):
    """Write each row's field count at its start (rows back to back from ``at``); cursor[r] = after it."""
    p = at
    for r in range(sizes.shape[0]):
        buf[p] = (ncols >> 8) & 0xFF
        buf[p + 1] = ncols & 0xFF
        cursor[r] = p + 2
        p += sizes[r]
    return p


@njit
def _begin_uniform(buf, at, size, n, ncols, cursor):
    """:func:`_begin_rows` for rows of one size."""
    p = at
    for r in range(n):
        buf[p] = (ncols >> 8) & 0xFF
        buf[p + 1] = ncols & 0xFF
        cursor[r] = p + 2
        p += size
    return p


@njit
def _put_fixed(buf, cursor, values, delta, bits, bit0):
    """Per row: int32 length (or -1 for null) and the value, big-endian, at cursor[r]; advance the cursor.

    Byte positions are unsigned so that Numba emits no negative-index
    wraparound per store (which kept LLVM from merging the byte stores).
    """
    width = values.itemsize
    nullable = bits.shape[0] > 0
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    ff = np.uint64(0xFF)
    for r in range(values.shape[0]):
        p = np.uint64(cursor[r])
        if nullable:
            b = bit0 + r
            if not (bits[b >> 3] >> (b & 7)) & 1:
                buf[p] = 0xFF
                buf[p + one] = 0xFF
                buf[p + two] = 0xFF
                buf[p + three] = 0xFF
                cursor[r] += 4
                continue
        buf[p] = 0
        buf[p + one] = 0
        buf[p + two] = 0
        buf[p + three] = width
        v = np.uint64(np.int64(values[r]) + delta)
        for j in range(width):
            buf[p + np.uint64(4 + j)] = (v >> np.uint64(8 * (width - 1 - j))) & ff
        cursor[r] += 4 + width


@njit
def _put_var(buf, cursor, offsets, data, bits, bit0):
    """Per row: int32 byte length (or -1 for null) and the bytes at cursor[r]; advance the cursor."""
    nullable = bits.shape[0] > 0
    one, two, three, four = np.uint64(1), np.uint64(2), np.uint64(3), np.uint64(4)
    for r in range(cursor.shape[0]):
        p = np.uint64(cursor[r])
        if nullable:
            b = bit0 + r
            if not (bits[b >> 3] >> (b & 7)) & 1:
                buf[p] = 0xFF
                buf[p + one] = 0xFF
                buf[p + two] = 0xFF
                buf[p + three] = 0xFF
                cursor[r] += 4
                continue
        a = np.uint64(offsets[r])
        length = np.uint64(offsets[r + 1]) - a
        buf[p] = (length >> np.uint64(24)) & np.uint64(0xFF)
        buf[p + one] = (length >> np.uint64(16)) & np.uint64(0xFF)
        buf[p + two] = (length >> np.uint64(8)) & np.uint64(0xFF)
        buf[p + three] = length & np.uint64(0xFF)
        p += four
        for j in range(length):
            buf[p + j] = data[a + j]
        cursor[r] += 4 + np.int64(length)


# ----------------------------------------------------------------------------- columns


def _buffer(buf, dtype, offset: int, count: int) -> np.ndarray:
    """``count`` items of ``dtype`` from an Arrow buffer, starting at item ``offset`` (a view, no copy)."""
    if buf is None or count == 0:
        return np.zeros(count, dtype)
    return np.frombuffer(buf, dtype=dtype, count=count, offset=offset * np.dtype(dtype).itemsize)


class _Column:
    """One column as numpy views: fixed-width bits (+ delta) or offsets + bytes, and its validity bitmap."""

    __slots__ = ("bit0", "bits", "data", "delta", "offsets", "values", "variable", "width")

    def __init__(self, kind: str, arr: pa.Array):
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        n = len(arr)
        self.variable = kind in _VARIABLE
        self.delta = 0
        if self.variable:
            t = arr.type
            if pa.types.is_string(t) or pa.types.is_binary(t):
                width = np.int32
            else:
                if not (pa.types.is_large_string(t) or pa.types.is_large_binary(t)):
                    arr = arr.cast(pa.large_binary())  # string_view, binary_view
                width = np.int64
            buffers = arr.buffers()
            self.offsets = _buffer(buffers[1], width, arr.offset, n + 1)
            self.data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else _NO_BITS
            self.values, self.width = None, 0
        else:
            arrow, bits_dtype = _FIXED[kind]
            if kind == "timestamp":
                arr = arr.cast(pa.timestamp("us", tz=arr.type.tz), safe=False)
                self.delta = -_PG_EPOCH_US
            elif kind == "date":
                arr = arr.cast(arrow)
                self.delta = -_PG_EPOCH_DAYS
            elif arr.type != arrow:
                arr = arr.cast(arrow)  # bool -> one byte per value; the sink has cast the others already
            self.values = _buffer(arr.buffers()[1], bits_dtype, arr.offset, n)
            self.width = self.values.itemsize
            self.offsets = self.data = None
        validity = arr.buffers()[0]
        if arr.null_count and validity is not None:
            self.bits, self.bit0 = np.frombuffer(validity, np.uint8), arr.offset
        else:
            self.bits, self.bit0 = _NO_BITS, 0


class Encoder:
    """Binary ``COPY`` rows of one set of equally long Arrow columns, a range of rows at a time.

    Parameters
    ----------
    columns : list of (kind, pyarrow.Array)
        Per column its encoder kind (see ``_common.PG_TYPES``) and values,
        already cast to the Arrow type of that kind (timestamps: any unit).

    Examples
    --------
    >>> enc = Encoder([("int8", pa.array([1, None, 3]))])
    >>> data = HEADER + b"".join(bytes(c) for c in enc.chunks()) + TRAILER
    """

    def __init__(self, columns: list[tuple[str, pa.Array]]):
        lengths = {len(arr) for _, arr in columns}
        if len(lengths) > 1:
            raise ValueError(f"Encoder: columns of different lengths {sorted(lengths)}")
        self.num_rows = lengths.pop() if lengths else 0
        self._cols = [_Column(kind, arr) for kind, arr in columns]
        self._ncols = len(self._cols)
        #: bytes of a row whose values are all non-null, variable-width values not counted
        self._base = 2 + 4 * self._ncols + sum(c.width for c in self._cols)
        self._uniform = all(not c.variable and not len(c.bits) for c in self._cols)
        var_bytes = sum(int(c.offsets[-1] - c.offsets[0]) for c in self._cols if c.variable)
        #: average encoded row size (an estimate when values are null or variable)
        self.row_bytes = self._base + (var_bytes // self.num_rows if self.num_rows else 0)

    def _sizes(self, start: int, stop: int) -> np.ndarray | None:
        """Encoded size of each row in [start, stop); None when every row has the size ``_base``."""
        if self._uniform:
            return None
        sizes = np.full(stop - start, self._base, np.int64)
        for c in self._cols:
            if c.variable:
                _var_sizes(sizes, c.offsets[start:stop + 1], c.bits, c.bit0 + start)
            elif len(c.bits):
                _null_sizes(sizes, c.width, c.bits, c.bit0 + start)
        return sizes

    def size(self, start: int = 0, stop: int | None = None) -> int:
        """Bytes of rows [start, stop) (no header, no trailer)."""
        stop = self.num_rows if stop is None else stop
        sizes = self._sizes(start, stop)
        return self._base * (stop - start) if sizes is None else int(sizes.sum())

    def write_into(self, buf: np.ndarray, at: int, start: int, stop: int, sizes=None) -> int:
        """Encode rows [start, stop) into ``buf`` (uint8) from byte ``at``; return the byte after the last row.

        ``buf`` must hold :meth:`size` ``(start, stop)`` bytes from ``at``.
        """
        n = stop - start
        if n <= 0:
            return at
        if sizes is None and not self._uniform:
            sizes = self._sizes(start, stop)
        cursor = np.empty(n, np.int64)
        if sizes is None:
            end = _begin_uniform(buf, at, self._base, n, self._ncols, cursor)
        else:
            end = _begin_rows(buf, at, sizes, self._ncols, cursor)
        for c in self._cols:
            if c.variable:
                _put_var(buf, cursor, c.offsets[start:stop + 1], c.data, c.bits, c.bit0 + start)
            else:
                _put_fixed(buf, cursor, c.values[start:stop], c.delta, c.bits, c.bit0 + start)
        return int(end)

    def chunks(self, chunk_bytes: int = 1 << 21, start: int = 0, stop: int | None = None) -> Iterator[memoryview]:
        """Rows [start, stop) as consecutive byte views of about ``chunk_bytes`` (no header, no trailer).

        Each view is of one scratch buffer (of this call: calls may run in
        parallel threads over disjoint ranges) that the next view overwrites:
        consume it (e.g. ``copy.write``, which copies) before advancing.
        """
        stop = self.num_rows if stop is None else stop
        step = max(1, chunk_bytes // max(self.row_bytes, 1))
        scratch = np.empty(0, np.uint8)
        for lo in range(start, stop, step):
            hi = min(lo + step, stop)
            sizes = self._sizes(lo, hi)
            total = self._base * (hi - lo) if sizes is None else int(sizes.sum())
            if len(scratch) < total:
                scratch = np.empty(max(total, int(len(scratch) * 1.5)), np.uint8)
            end = self.write_into(scratch, 0, lo, hi, sizes)
            yield scratch[:end].data


def encode(columns: list[tuple[str, pa.Array]], num_rows: int) -> bytes:
    """Binary COPY data (header and trailer included) of ``num_rows`` rows, as one byte string.

    Parameters
    ----------
    columns : list of (kind, pyarrow.Array)
        Per column its encoder kind (see ``_common.PG_TYPES``) and values,
        already cast to the Arrow type of that kind.
    num_rows : int
        The columns' length.

    Returns
    -------
    bytes
    """
    enc = Encoder(columns)
    if enc.num_rows != num_rows and columns:
        raise ValueError(f"encode: columns have {enc.num_rows} rows, not {num_rows}")
    body = enc.size()
    buf = np.empty(len(HEADER) + body + len(TRAILER), np.uint8)
    buf[:len(HEADER)] = np.frombuffer(HEADER, np.uint8)
    enc.write_into(buf, len(HEADER), 0, num_rows)
    buf[-2:] = 0xFF
    return buf.tobytes()
