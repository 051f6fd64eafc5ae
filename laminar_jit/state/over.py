"""State of an OVER aggregate: its waiting rows, and per key its frame's sums, counts and rows."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from ..kernels.over import entry_width, over_fold, state_width
from ..kernels.sorting import argsort_pairs
from .dictionary import StringDictionary
from .keytable import KeyTable, check_names, put_table, take_table

__all__ = ["OverState", "WATERMARK_COLUMN"]

#: The column of the input batch holding each row's watermark at arrival (when the rows have their own).
WATERMARK_COLUMN = "__laminar_watermark"
#: The key of a null key value (the engine's null group).
_NULL = np.iinfo(np.int64).min


def _numbers(col, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``col`` as numpy ``dtype`` values (0 under nulls) and its validity (all true without nulls)."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    valid = np.ones(len(col), np.bool_) if not col.null_count else col.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type) or pa.types.is_duration(col.type) \
            or pa.types.is_time(col.type):
        col = col.cast(pa.int64())
    values = col.fill_null(0).cast(pa.from_numpy_dtype(dtype), safe=False).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=dtype), valid


def _ipc(table: pa.Table) -> np.ndarray:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return np.frombuffer(sink.getvalue(), np.uint8).copy()


def _from_ipc(data: np.ndarray) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(np.ascontiguousarray(data, np.uint8).tobytes())).read_all()


class OverState:
    """Per-node state of an :class:`~laminar_jit.OverAggregate`, owned by the executor.

    Rows wait in :attr:`pending` (Arrow batches, in arrival order) until the
    watermark passes their event time; then :meth:`process` folds them into
    their key's frame (see :mod:`laminar_jit.kernels.over` for ``rec``, the
    per-key state, and ``ent``, the pool of a bounded frame's rows).

    Parameters
    ----------
    bound : Bound
        The operator bound to its input schema.
    capacity : int
        Initial number of key slots.
    """

    def __init__(self, bound, capacity: int = 1024):
        spec = bound.spec
        self.spec = spec
        self.schema = bound.input_schema
        self.out_schema = bound.output_schema
        self.table = KeyTable(width=2, capacity=capacity)
        self.strings = {k: StringDictionary(t) for k, t in spec.strings}
        self.rec = np.zeros((self.table.slot_capacity, state_width(len(spec.kinds))), np.int64)
        self.ent = np.zeros((0, entry_width(len(spec.kinds))), np.int64)
        self.free = np.empty(0, np.int64)
        self.meta = np.zeros(1, np.int64)
        self.pending: list[pa.RecordBatch] = []
        self.pending_ts = np.empty(0, np.int64)

    @property
    def bounded(self) -> bool:
        return self.spec.preceding is not None

    def _reserve_pool(self, rows: int) -> None:
        """Room for ``rows`` more entries in the pool (it doubles; entries keep their places)."""
        have = int(self.meta[0])
        if have >= rows:
            return
        old = self.ent.shape[0]
        size = max(2 * old, old + rows - have, 1024)
        ent = np.zeros((size, self.ent.shape[1]), np.int64)
        ent[:old] = self.ent
        free = np.empty(size, np.int64)
        free[:have] = self.free[:have]
        free[have:have + size - old] = np.arange(size - 1, old - 1, -1)
        self.ent, self.free = ent, free
        self.meta[0] = have + size - old

    def _slots(self, rows: pa.Table) -> np.ndarray:
        """The key slot of each row (null keys: one group)."""
        parts = []
        for k in self.spec.keys:
            col = rows.column(k)
            if k in self.strings:
                codes, _ = self.strings[k].encode(col)
                parts.append(np.where(codes < 0, _NULL, codes))
                continue
            values, valid = _numbers(col, np.dtype(np.int64))
            parts.append(np.where(valid, values, _NULL))
        zeros = np.zeros(rows.num_rows, np.int64)
        k0 = parts[0] if parts else zeros
        k1 = parts[1] if len(parts) > 1 else zeros
        slots = self.table.upsert_many(k0, k1).astype(np.int64)
        self.rec = self.table.grow_slots(self.rec)
        return slots

    def process(self, batch: pa.RecordBatch, wm_rows: int, wm_now: int) -> tuple[pa.Table, int]:
        """Take the input rows of one step and emit the rows the watermark ``wm_now`` made ready.

        Parameters
        ----------
        batch : pyarrow.RecordBatch
            The input rows (the input's columns, and :data:`WATERMARK_COLUMN`
            when the rows carry their own watermark).
        wm_rows : int
            The watermark the rows arrived under, when the batch does not
            carry one per row.
        wm_now : int
            The node's watermark after the step.

        Returns
        -------
        (pyarrow.Table, int)
            The emitted rows (input columns, then the aggregates) in
            (event time, arrival) order, and how many input rows were late.
        """
        spec = self.spec
        n_late = 0
        if batch.num_rows:
            ts, _ = _numbers(batch.column(spec.event_time), np.dtype(np.int64))
            if WATERMARK_COLUMN in batch.schema.names:
                arrived = batch.column(WATERMARK_COLUMN).to_numpy(zero_copy_only=False)
                batch = batch.drop_columns([WATERMARK_COLUMN])
            else:
                arrived = wm_rows
            keep = ts >= arrived  # (below the watermark: its frame has been emitted)
            n_late = int(keep.size - np.count_nonzero(keep))
            if n_late:
                batch, ts = batch.filter(pa.array(keep)), ts[keep]
            if batch.num_rows:
                self.pending.append(batch)
                self.pending_ts = np.concatenate([self.pending_ts, ts])
        ready = self.pending_ts < wm_now
        m = int(np.count_nonzero(ready))
        if m == 0:
            return self.out_schema.empty_table(), n_late
        waiting = pa.Table.from_batches(self.pending, self.pending[0].schema)
        if m == ready.size:
            rows, self.pending, ts = waiting, [], self.pending_ts
            self.pending_ts = np.empty(0, np.int64)
        else:
            rows = waiting.filter(pa.array(ready))
            rest = waiting.filter(pa.array(~ready)).combine_chunks()
            self.pending = rest.to_batches()
            ts, self.pending_ts = self.pending_ts[ready], self.pending_ts[~ready]
        return self._fold(rows, ts), n_late

    def _fold(self, rows: pa.Table, ts: np.ndarray) -> pa.Table:
        spec = self.spec
        m, a = rows.num_rows, len(spec.kinds)
        slots = self._slots(rows)
        vals = np.zeros((m, a), np.int64)
        ok = np.ones((m, a), np.bool_)
        for j, (column, is_float) in enumerate(zip(spec.columns, spec.floats)):
            if column is not None:
                values, ok[:, j] = _numbers(rows.column(column), np.dtype(np.float64 if is_float else np.int64))
                vals[:, j] = values.view(np.int64)
        if self.bounded:
            self._reserve_pool(m)
        emitted = argsort_pairs(ts, np.zeros(m, np.int64))  # (time, arrival): the kernel's and the output's order
        out = np.empty((m, a), np.int64)
        out_ok = np.empty((m, a), np.bool_)
        over_fold(slots[emitted], ts[emitted], vals[emitted], ok[emitted], np.array(spec.kinds, np.int64),
                  np.array(spec.floats, np.bool_), self.bounded, spec.by_rows, spec.preceding or 0, self.rec,
                  self.ent, self.free, self.meta, out, out_ok)
        rows = rows.take(emitted)
        columns = list(rows.columns)
        results = list(self.out_schema)[len(self.schema):]
        for j, f in enumerate(results):
            values = np.ascontiguousarray(out[:, j])
            if pa.types.is_floating(f.type):
                values = values.view(np.float64)
            mask = None if out_ok[:, j].all() else ~out_ok[:, j]
            arr = pa.array(values, mask=mask)
            columns.append(arr if arr.type == f.type else arr.cast(f.type))
        return pa.Table.from_arrays(columns, schema=pa.schema([*rows.schema, *results]))

    # -- checkpoints ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name; waiting rows and string keys as Arrow IPC bytes."""
        out: dict[str, np.ndarray] = {}
        put_table(out, "table", self.table)
        out["rec"] = self.rec[: self.table.high_water].copy()
        out["pool.ent"] = self.ent.copy()
        out["pool.free"] = self.free.copy()
        out["pool.meta"] = self.meta.copy()
        waiting = pa.Table.from_batches(self.pending, self.schema) if self.pending else self.schema.empty_table()
        out["pending"] = _ipc(waiting)
        out["pending_ts"] = self.pending_ts.copy()
        for k, d in self.strings.items():
            out[f"strings.{k}"] = _ipc(pa.table({"v": d.snapshot()}))
        return out

    def load_snapshot(self, arrays) -> None:
        """Replace this (fresh) state by :meth:`snapshot` output, validating it first.

        Raises
        ------
        ValueError
            When names, shapes or contents do not fit this operator's state; the state is then unchanged.
        """
        check_names(arrays, self.snapshot())
        table = take_table(arrays, "table")
        got = np.asarray(arrays["rec"])
        if got.dtype != np.int64 or got.shape != (table.high_water, self.rec.shape[1]):
            raise ValueError(f"rec: expected int64 of shape {(table.high_water, self.rec.shape[1])}, "
                             f"got {got.dtype} {got.shape}")
        rec = np.zeros((table.slot_capacity, self.rec.shape[1]), np.int64)
        rec[: table.high_water] = got
        ent, free, meta = (np.asarray(arrays[f"pool.{n}"], np.int64).copy() for n in ("ent", "free", "meta"))
        if ent.ndim != 2 or ent.shape[1] != self.ent.shape[1] or free.shape != (ent.shape[0],) \
                or meta.shape != (1,) or not 0 <= int(meta[0]) <= ent.shape[0]:
            raise ValueError("the pool arrays disagree in shape")
        waiting = _from_ipc(arrays["pending"])
        if waiting.schema != self.schema:
            raise ValueError(f"pending rows have schema {waiting.schema}, expected {self.schema}")
        pending_ts = np.asarray(arrays["pending_ts"], np.int64).copy()
        if pending_ts.size != waiting.num_rows:
            raise ValueError(f"pending_ts has {pending_ts.size} times for {waiting.num_rows} rows")
        strings = {k: StringDictionary.from_snapshot(_from_ipc(arrays[f"strings.{k}"]).column("v"),
                                                     d.value_type) for k, d in self.strings.items()}
        self.table, self.rec, self.ent, self.free, self.meta = table, rec, ent, free, meta
        self.pending = waiting.combine_chunks().to_batches() if waiting.num_rows else []
        self.pending_ts = pending_ts
        self.strings = strings
