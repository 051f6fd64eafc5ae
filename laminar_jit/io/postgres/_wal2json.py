"""wal2json messages decoded in bulk into Arrow, and the LSN arithmetic of CDC positions.

Positions of :class:`~laminar_jit.io.postgres.cdc.PostgresCdcSource` pack a
commit LSN and a row count into one int (see that module's docstring).
"""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from ._common import TableName

__all__ = ["DELETE", "INSERT", "ROWS", "UPDATE_AFTER", "UPDATE_BEFORE", "Decoder", "int_to_lsn", "lsn_to_int",
           "wal2json_name"]

#: Flink RowKind codes of the ``op`` column.
INSERT, UPDATE_BEFORE, UPDATE_AFTER, DELETE = 0, 1, 2, 3

ROWS = 1 << 40  # position = commit LSN * ROWS + rows of that transaction consumed


_INTS = {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64()}


_JSON_NUMBERS = ("int2", "int4", "int8", "float4", "float8", "numeric", "oid")  # wal2json writes them unquoted


_HEX = np.full(256, 0, np.uint64)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint64)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint64)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint64)


def lsn_to_int(lsn: str) -> int:
    """``"16/B374D848"`` -> the 64-bit LSN."""
    hi, _, lo = lsn.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(value: int) -> str:
    """The 64-bit LSN ``value`` as PostgreSQL writes it (``"16/B374D848"``)."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _lsns(strings: pa.Array) -> np.ndarray:
    """LSN strings ``"X/Y"`` (no nulls) to uint64, vectorized."""
    if len(strings) == 0:
        return np.zeros(0, np.uint64)
    parts = pc.split_pattern(strings, "/")
    out = np.zeros(len(strings), np.uint64)
    for i, shift in ((0, 32), (1, 0)):
        padded = pc.utf8_lpad(pc.list_element(parts, i), width=8, padding="0")
        _, offsets, data = padded.buffers()
        first = int(np.frombuffer(offsets, np.int32, count=1, offset=4 * padded.offset)[0])
        digits = np.frombuffer(data, np.uint8, count=8 * len(strings), offset=first)
        value = np.zeros(len(strings), np.uint64)
        for d in digits.reshape(-1, 8).T:
            value = (value << np.uint64(4)) | _HEX[d]
        out |= value << np.uint64(shift)
    return out


class Decoder:
    """wal2json format-2 messages -> record batches of the source's schema, in bulk with pyarrow.

    Tracks the transaction reached (its commit LSN and rows seen) across
    calls, and drops the rows at or before the position a stream resumes at.
    """

    def __init__(self, source):
        self.source = source
        self.fields = list(source.schema)[:-2]
        typs = [typ for _, typ in source._columns]
        self.json_types = [self._json_type(f.type, t) for f, t in zip(self.fields, typs)]
        self.bytea = [t == "bytea" for t in typs]
        # wal2json writes {"name":"<col>","value":v}; renaming each to {"c<j>":v} makes one struct type
        self.renames = [(b'{"name":' + _json_str(f.name) + b',"value":', b'{"c%d":' % j)
                        for j, f in enumerate(self.fields)]
        item = pa.list_(pa.struct([pa.field(f"c{j}", t) for j, t in enumerate(self.json_types)]))
        self.json_schema = pa.schema([("action", pa.string()), ("timestamp", pa.string()), ("lsn", pa.string()),
                                      ("columns", item), ("identity", item)])

    @staticmethod
    def _json_type(arrow: pa.DataType, typ: str) -> pa.DataType:
        if typ in _INTS:
            return pa.int64()
        if typ in _JSON_NUMBERS:
            return pa.float64()
        if arrow == pa.bool_():
            return pa.bool_()
        return pa.string()

    def resume(self, position: int) -> None:
        """Next rows come from a stream restarted at the slot: skip up to ``position``."""
        self.position = position
        self.skip_txn, self.skip_rows = divmod(position, ROWS) if position >= ROWS else (0, 0)
        self.txn, self.seen = 0, 0  # commit LSN of the transaction in progress, its rows so far

    def decode(self, payloads: list[bytes]):
        """Yield ``(batch, position after it)`` for the rows in ``payloads`` (whole messages, in order)."""
        buf = b"\n".join(payloads)
        for old, new in self.renames:
            buf = buf.replace(old, new)
        table = pa_json.read_json(
            io.BytesIO(buf), read_options=pa_json.ReadOptions(use_threads=False, block_size=len(buf) + 1),
            parse_options=pa_json.ParseOptions(explicit_schema=self.json_schema, unexpected_field_behavior="ignore"))
        action = table.column("action").combine_chunks()
        is_b = pc.equal(action, "B").to_numpy(zero_copy_only=False)
        is_u = pc.equal(action, "U").to_numpy(zero_copy_only=False)
        is_d = pc.equal(action, "D").to_numpy(zero_copy_only=False)
        is_i = pc.equal(action, "I").to_numpy(zero_copy_only=False)
        # commit LSN of each line: the last B message's (lines before the first B: the carried transaction)
        b_lsn = _lsns(table.column("lsn").combine_chunks().filter(pa.array(is_b)))
        txn_idx = np.cumsum(is_b) - 1
        line_txn = np.where(txn_idx >= 0, b_lsn[np.maximum(txn_idx, 0)] if len(b_lsn) else 0,
                            np.uint64(self.txn)).astype(np.uint64)
        change = np.flatnonzero(is_i | is_u | is_d)
        new_txn = int(b_lsn[-1]) if len(b_lsn) else self.txn
        if len(change) == 0:
            if new_txn != self.txn:
                self.txn, self.seen = new_txn, 0
            return
        n_c = len(change)
        upd = is_u[change]
        counts = 1 + upd.astype(np.int64)
        row_change = np.repeat(np.arange(n_c), counts)
        n = len(row_change)
        first_of = np.zeros(n, bool)
        first_of[np.cumsum(counts) - counts] = True
        c_action_u = upd[row_change]
        c_action_d = is_d[change][row_change]
        op = np.where(c_action_d, DELETE, np.where(c_action_u, np.where(first_of, UPDATE_BEFORE, UPDATE_AFTER),
                                                   INSERT)).astype(np.int8)
        use_identity = (op == UPDATE_BEFORE) | (op == DELETE)
        row_txn = line_txn[change][row_change]
        # row index within its transaction
        starts = np.r_[True, row_txn[1:] != row_txn[:-1]]
        start_at = np.flatnonzero(starts)
        k = np.arange(n) - start_at[np.cumsum(starts) - 1]
        if row_txn[0] == self.txn:
            k[: (start_at[1] if len(start_at) > 1 else n)] += self.seen
        last_txn = int(row_txn[-1])
        if new_txn != last_txn:  # the chunk ends with the B of a transaction without rows yet
            self.txn, self.seen = new_txn, 0
        else:
            self.txn, self.seen = last_txn, int(k[-1]) + 1
        keep = None
        if self.skip_txn:
            keep = (row_txn > self.skip_txn) | ((row_txn == self.skip_txn) & (k >= self.skip_rows))
            if keep.all():
                keep = None
                self.skip_txn = 0
            elif not keep.any():
                return
        # values: per column, the element of "columns" (or "identity") of each row's change
        commit_us = pc.cast(table.column("timestamp").combine_chunks().take(pa.array(change)),
                            pa.timestamp("us", "UTC"))
        commit_ms = pc.divide(pc.cast(commit_us, pa.int64()), 1000).to_numpy(zero_copy_only=False)[row_change]
        sides = []
        for name in ("identity", "columns"):
            lists = table.column(name).combine_chunks().take(pa.array(change))
            parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            sides.append((parents, pc.list_flatten(lists).flatten()))  # one array per column, offsets applied
        (p_id, f_id), (p_col, f_col) = sides
        n_id = len(p_id)
        arrays = []
        for j, f in enumerate(self.fields):
            idx = np.full(n, -1, np.int64)
            for parents, values, mask, base in ((p_id, f_id[j], use_identity, 0), (p_col, f_col[j], ~use_identity, n_id)):
                valid = values.is_valid().to_numpy(zero_copy_only=False)
                at = np.full(n_c, -1, np.int64)
                at[parents[valid]] = np.flatnonzero(valid) + base
                idx = np.where(mask, at[row_change], idx)
            both = pa.concat_arrays([f_id[j], f_col[j]])
            col = both.take(pa.array(idx, mask=idx < 0))
            if self.bytea[j]:  # wal2json writes the hex digits alone; the snapshot reads bytea::text
                col = pc.binary_join_element_wise("\\x", col, "")
            arrays.append(col if col.type == f.type else pc.cast(col, f.type))
        arrays += [pa.array(op), pa.array(commit_ms.astype(np.int64))]
        whole = pa.RecordBatch.from_arrays(arrays, schema=self.source.schema)
        row_end = row_txn * np.uint64(1)  # commit LSN per row; position after row r: LSN * ROWS + k + 1
        if keep is not None:
            sel = np.flatnonzero(keep)
            whole = whole.take(pa.array(sel))
            row_end, k = row_end[sel], k[sel]
        size = self.source.batch_size
        for start in range(0, whole.num_rows, size):
            stop = min(start + size, whole.num_rows)
            self.position = int(row_end[stop - 1]) * ROWS + int(k[stop - 1]) + 1
            yield whole.slice(start, stop - start), self.position


def _json_str(text: str) -> bytes:
    """``text`` as a JSON string the way wal2json escapes it."""
    import json

    return json.dumps(text, ensure_ascii=False).encode("utf-8")


def wal2json_name(table: TableName) -> str:
    """``schema.table`` as wal2json's add-tables option wants it (``\\`` escapes ``,``, ``.``, spaces)."""
    def esc(part: str) -> str:
        return re.sub(r"([,. \\])", r"\\\1", part)
    return f"{esc(table.schema)}.{esc(table.name)}"
