"""State of an OVER aggregate: its waiting rows, and per key its frame's sums, counts and rows."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from ..kernels.over import over_fold
from ..kernels.sorting import argsort_pairs
from .dictionary import StringDictionary
from .keytable import KeyTable, check_names, put_table, take_table

__all__ = ["OverState", "WATERMARK_COLUMN"]

#: The column of the input batch holding each row's watermark at arrival (when the rows have their own).
WATERMARK_COLUMN = "_wm"
#: Per-slot arrays, pool arrays, and the arrays whose empty value is -1 (links).
_PER_SLOT = ("cnt", "acc_i", "acc_f", "odd", "ext_i", "ext_f", "length", "head", "tail", "dq_head", "dq_tail")
_POOL = ("nxt", "p_ts", "p_i", "p_f", "p_ok", "dq_nxt", "dq_prv", "free", "meta")
_LINKS = ("head", "tail", "dq_head", "dq_tail")
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
    their key's frame (see :mod:`laminar_jit.kernels.over` for the arrays).

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
        a = len(spec.kinds)
        cap = self.table.slot_capacity
        self.cnt = np.zeros((cap, a), np.int64)
        self.acc_i = np.zeros((cap, a), np.int64)
        self.acc_f = np.zeros((cap, a), np.float64)
        self.odd = np.zeros((cap, 3 * a), np.int64)
        self.ext_i = np.zeros((cap, a), np.int64)
        self.ext_f = np.zeros((cap, a), np.float64)
        self.length = np.zeros(cap, np.int64)
        self.head = np.full(cap, -1, np.int64)
        self.tail = np.full(cap, -1, np.int64)
        self.dq_head = np.full((cap, a), -1, np.int64)
        self.dq_tail = np.full((cap, a), -1, np.int64)
        self._pool(0)
        self.pending: list[pa.RecordBatch] = []
        self.pending_ts = np.empty(0, np.int64)

    @property
    def bounded(self) -> bool:
        return self.spec.preceding is not None

    def _pool(self, size: int) -> None:
        """An empty pool of ``size`` entries (all free)."""
        a = len(self.spec.kinds)
        self.nxt = np.full(size, -1, np.int64)
        self.p_ts = np.zeros(size, np.int64)
        self.p_i = np.zeros((size, a), np.int64)
        self.p_f = np.zeros((size, a), np.float64)
        self.p_ok = np.zeros((size, a), np.bool_)
        self.dq_nxt = np.full((size, a), -1, np.int64)
        self.dq_prv = np.full((size, a), -1, np.int64)
        self.free = np.arange(size - 1, -1, -1, dtype=np.int64)
        self.meta = np.array([size], np.int64)

    def _reserve_pool(self, rows: int) -> None:
        """Room for ``rows`` more entries in the pool (it doubles; entries keep their places)."""
        have = int(self.meta[0])
        if have >= rows:
            return
        old = self.nxt.size
        size = max(2 * old, old + rows - have, 1024)
        grown = size - old

        def extend(arr, fill):
            out = np.full((size,) + arr.shape[1:], fill, arr.dtype)
            out[:old] = arr
            return out

        self.nxt, self.p_ts = extend(self.nxt, -1), extend(self.p_ts, 0)
        self.p_i, self.p_f, self.p_ok = extend(self.p_i, 0), extend(self.p_f, 0.0), extend(self.p_ok, False)
        self.dq_nxt, self.dq_prv = extend(self.dq_nxt, -1), extend(self.dq_prv, -1)
        free = np.empty(size, np.int64)
        free[:have] = self.free[:have]
        free[have:have + grown] = np.arange(size - 1, old - 1, -1)
        self.free = free
        self.meta[0] = have + grown

    def _grow_slots(self) -> None:
        t = self.table
        self.cnt, self.acc_i, self.acc_f = t.grow_slots(self.cnt), t.grow_slots(self.acc_i), t.grow_slots(self.acc_f)
        self.odd, self.ext_i, self.ext_f = t.grow_slots(self.odd), t.grow_slots(self.ext_i), t.grow_slots(self.ext_f)
        self.length = t.grow_slots(self.length)
        self.head, self.tail = t.grow_slots(self.head, -1), t.grow_slots(self.tail, -1)
        self.dq_head, self.dq_tail = t.grow_slots(self.dq_head, -1), t.grow_slots(self.dq_tail, -1)

    def _slots(self, rows: pa.Table) -> np.ndarray:
        """The key slot of each row (null keys: one group)."""
        parts = []
        for k in self.spec.keys:
            col = rows.column(k)
            if k in self.strings:
                codes, valid = self.strings[k].encode(col)
                parts.append(np.where(codes < 0, _NULL, codes))
                continue
            values, valid = _numbers(col, np.dtype(np.int64))
            parts.append(np.where(valid, values, _NULL))
        zeros = np.zeros(rows.num_rows, np.int64)
        k0 = parts[0] if parts else zeros
        k1 = parts[1] if len(parts) > 1 else zeros
        slots = self.table.upsert_many(k0, k1).astype(np.int64)
        self._grow_slots()
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
        ivals = np.zeros((m, a), np.int64)
        fvals = np.zeros((m, a), np.float64)
        ok = np.ones((m, a), np.bool_)
        for j, (column, is_float) in enumerate(zip(spec.columns, spec.floats)):
            if column is None:
                continue
            values, ok[:, j] = _numbers(rows.column(column), np.dtype(np.float64 if is_float else np.int64))
            (fvals if is_float else ivals)[:, j] = values
        if self.bounded:
            self._reserve_pool(m)
        emitted = argsort_pairs(ts, np.zeros(m, np.int64))  # (time, arrival): the kernel's and the output's order
        out_i = np.empty((m, a), np.int64)
        out_f = np.empty((m, a), np.float64)
        out_ok = np.empty((m, a), np.bool_)
        over_fold(slots[emitted], ts[emitted], ivals[emitted], fvals[emitted], ok[emitted],
                  np.array(spec.kinds, np.int64), np.array(spec.floats, np.bool_),
                  self.bounded, spec.by_rows, spec.preceding or 0, self.cnt, self.acc_i, self.acc_f, self.odd,
                  self.ext_i, self.ext_f, self.length, self.head, self.tail, self.nxt, self.p_ts, self.p_i,
                  self.p_f, self.p_ok, self.free, self.meta, self.dq_head, self.dq_tail, self.dq_nxt, self.dq_prv,
                  out_i, out_f, out_ok)
        rows = rows.take(emitted)
        columns = list(rows.columns)
        results = list(self.out_schema)[len(self.schema):]
        for j, f in enumerate(results):
            values = out_f[:, j] if pa.types.is_floating(f.type) else out_i[:, j]
            mask = None if out_ok[:, j].all() else ~out_ok[:, j]
            arr = pa.array(values, mask=mask)
            columns.append(arr if arr.type == f.type else arr.cast(f.type))
        return pa.Table.from_arrays(columns, schema=pa.schema([*rows.schema, *results]))

    # -- checkpoints ---------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name; waiting rows and string keys as Arrow IPC bytes."""
        out: dict[str, np.ndarray] = {}
        put_table(out, "table", self.table)
        hw = self.table.high_water
        for name in _PER_SLOT:
            out[name] = getattr(self, name)[:hw].copy()
        for name in _POOL:
            out[f"pool.{name}"] = getattr(self, name).copy()
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
        hw = table.high_water
        cap = table.slot_capacity
        slots = {}
        for name in _PER_SLOT:
            template = getattr(self, name)
            got = np.asarray(arrays[name])
            if got.dtype != template.dtype or got.shape != (hw,) + template.shape[1:]:
                raise ValueError(f"{name}: expected {template.dtype} of shape {(hw,) + template.shape[1:]}, "
                                 f"got {got.dtype} {got.shape}")
            full = np.full((cap,) + template.shape[1:], -1 if name in _LINKS else 0, template.dtype)
            full[:hw] = got
            slots[name] = full
        pool = {name: np.asarray(arrays[f"pool.{name}"]).copy() for name in _POOL}
        size = pool["nxt"].size
        if any(pool[n].shape[0] != size for n in _POOL if n != "meta") \
                or pool["meta"].shape != (1,) or not 0 <= int(pool["meta"][0]) <= size:
            raise ValueError("pool arrays disagree in length")
        waiting = _from_ipc(arrays["pending"])
        if waiting.schema != self.schema:
            raise ValueError(f"pending rows have schema {waiting.schema}, expected {self.schema}")
        pending_ts = np.asarray(arrays["pending_ts"], np.int64).copy()
        if pending_ts.size != waiting.num_rows:
            raise ValueError(f"pending_ts has {pending_ts.size} times for {waiting.num_rows} rows")
        strings = {k: StringDictionary.from_snapshot(_from_ipc(arrays[f"strings.{k}"]).column("v"),
                                                     d.value_type) for k, d in self.strings.items()}
        self.table = table
        for name, value in {**slots, **pool}.items():
            setattr(self, name, value)
        self.pending = waiting.combine_chunks().to_batches() if waiting.num_rows else []
        self.pending_ts = pending_ts
        self.strings = strings
