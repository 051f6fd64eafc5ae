"""State of a keyed kernel: a key table, one state record per key, and a timer heap."""

from __future__ import annotations

import numpy as np

from .._jit import JIT_DISABLED
from .keytable import KeyedEntries, KeyTable, check_like, check_names, put_tables, take_slots, take_tables

__all__ = ["KeyedState"]

#: A state record's ``timer`` when no timer is set (``laminar_jit.ops.keyed.NO_TIMER``; state does not import ops).
_NO_TIMER = np.iinfo(np.int64).min


class _StateRecord(np.record):
    """One key's state record under ``NUMBA_DISABLE_JIT``: ``st.field`` is the field, always.

    ``np.record`` looks up attributes before fields, so a field named like a
    numpy scalar method (``mean``, ``min``, ``sum``, ``size``, ...) would read
    as the method; compiled kernels see only the fields.
    """

    def __getattribute__(self, attr):
        fields = np.void.__getattribute__(self, "dtype").fields
        if fields is not None and attr in fields:
            return self[attr]
        return super().__getattribute__(attr)


def _grown_records(values: np.ndarray, capacity: int, init: np.ndarray) -> np.ndarray:
    """``values`` in a new array of ``capacity`` records, the new ones ``init``.

    Copied as bytes: numpy assigns structured records field by field (600 K
    records of 25 bytes grown to 1 M: 16.5 ms, as bytes 5.3 ms).
    """
    width = values.dtype.itemsize
    grown = np.empty(capacity, values.dtype)
    raw = grown.view(np.uint8).reshape(capacity, width)
    raw[: values.size] = np.ascontiguousarray(values).view(np.uint8).reshape(values.size, width)
    raw[values.size:] = np.asarray(init, values.dtype).reshape(1).view(np.uint8)
    return grown


def _records(values: np.ndarray) -> np.ndarray:
    """Under ``NUMBA_DISABLE_JIT`` kernels are plain Python: give them ``state.field`` access.

    Indexing the returned array gives a :class:`_StateRecord`, a view whose
    assignments (``st.n += 1``) write to the array, as in compiled code.
    """
    return values.view(np.dtype((_StateRecord, values.dtype))) if JIT_DISABLED else values


class KeyedState(KeyedEntries):
    """Per-node keyed-kernel state, owned by the executor, passed to the compiled step.

    Keys map to dense slots of a :class:`KeyTable`; ``values[slot]`` is that
    key's state record (a numpy structured array with the user's fields,
    plus ``timer`` when the kernel has ``on_timer``). Pending timers are a
    binary heap of (time, slot) in ``heap_times``/``heap_slots`` with
    ``aux[0]`` entries, ordered by time, then by ``first[slot]``: the arrival
    number of the key's first row (``aux[1]`` counts the rows of every call
    so far; a new key takes that count plus its row's position), so timers of
    one time fire in the order their keys first arrived, whatever the slots
    (see :mod:`laminar_jit.kernels.timers`). Moving a key's timer leaves a
    stale entry that is skipped when it surfaces, and :meth:`reserve`
    compacts the heap when stale entries outnumber live keys.

    Parameters
    ----------
    bound : Bound
        The keyed kernel bound to its input schema.
    capacity : int
        Initial number of key slots.
    """

    def __init__(self, bound, capacity: int = 1024):
        op = bound.op
        self.table = KeyTable(width=2, capacity=capacity)
        self.key_tables = [KeyTable(width=2, capacity=capacity) for _ in bound.spec.keys[1:]]
        self.init = np.array(tuple(init for _, _, init in op.state_fields), dtype=op.state_dtype)
        self.values = _records(np.empty(self.table.slot_capacity, op.state_dtype))
        self.values[:] = self.init
        self.timers = op.on_timer is not None
        self.heap_times = np.empty(max(capacity, 1) if self.timers else 0, np.int64)
        self.heap_slots = np.empty(self.heap_times.size, np.int64)
        self.first = np.full(self.table.slot_capacity if self.timers else 0, -1, np.int64)
        self.aux = np.zeros(2, np.int64)  # timer heap entries, rows counted for arrival numbers

    def __len__(self) -> int:
        """Keys with state."""
        return len(self.table)

    @property
    def pending_timers(self) -> int:
        """Heap entries (an upper bound on the timers that can fire)."""
        return int(self.aux[0])

    def max_emit(self, rows: int) -> int:
        """Rows one call given ``rows`` input rows can emit: one per row plus capped timer firings."""
        return 2 * rows + self.pending_timers

    def reserve(self, extra: int) -> None:
        """Guarantee room for ``extra`` new keys and timer entries before a compiled call."""
        for table in self.key_tables:
            if table.headroom < extra:
                table.reserve(extra)
        if self.table.headroom < extra:
            self.table.reserve(extra)
            if self.values.size < self.table.slot_capacity:
                self.values = _records(_grown_records(self.values, self.table.slot_capacity, self.init))
        if not self.timers:
            return
        if self.first.size < self.table.slot_capacity:
            grown = np.full(self.table.slot_capacity, -1, np.int64)
            grown[: self.first.size] = self.first
            self.first = grown
        count = int(self.aux[0])
        if count > 2 * len(self.table) + 1024:
            self._compact()
            count = int(self.aux[0])
        if self.heap_times.size < count + extra:
            size = max(self.heap_times.size, 1)
            while size < count + extra:
                size *= 2
            for name in ("heap_times", "heap_slots"):
                old = getattr(self, name)
                new = np.empty(size, np.int64)
                new[:count] = old[:count]
                setattr(self, name, new)

    def _compact(self) -> None:
        """Drop stale heap entries (the key's timer moved); an array sorted as the heap orders is a valid heap."""
        count = int(self.aux[0])
        t, s = self.heap_times[:count], self.heap_slots[:count]
        live = self.values["timer"][s] == t
        # a key's live entry is the one at its timer: one per key (first numbers are unique per key)
        pairs = np.unique(np.stack([t[live], self.first[s[live]], s[live]], axis=1), axis=0)  # by (time, first)
        self.heap_times[: len(pairs)] = pairs[:, 0]
        self.heap_slots[: len(pairs)] = pairs[:, 2]
        self.aux[0] = len(pairs)

    def recode(self, key_maps: list, value_maps: dict) -> None:
        """Rewrite the string codes of the keys (records hold numbers only: ``value_maps`` is empty)."""
        self.recode_keys(key_maps)

    def absorb(self, src: "KeyedState", slots) -> None:
        """Copy the keys ``slots`` of ``src``, which this state does not hold, with their state records and timers.

        How key shards rescale (see ``WindowState.absorb``). A key's pending
        timer is its record's ``timer`` (the heap's other entries for it are
        stale), so each moved key with one gets a heap entry at its new slot.

        Raises
        ------
        ValueError
            A key of ``slots`` is already held here.
        """
        slots = np.asarray(slots, np.int64)
        if not slots.size:
            return
        new = self._absorb_entries(src, slots, np.zeros(slots.size, np.int64))
        self.values[new] = src.values[slots]
        if not self.timers:
            return
        self.reserve(0)  # (first grows with the table)
        self.first[new] = src.first[slots]
        self.aux[1] = max(self.aux[1], src.aux[1])  # every shard counts every row
        times = src.values["timer"][slots]
        armed = times != _NO_TIMER
        count, extra = int(self.aux[0]), int(armed.sum())
        self.reserve(extra)  # room in the heap (and none needed in the table: the keys are in)
        self.heap_times[count:count + extra] = times[armed]
        self.heap_slots[count:count + extra] = new[armed]
        self.aux[0] = count + extra
        self._compact()  # sorted by (time, first arrival): a valid heap again

    def arrays(self) -> list[np.ndarray]:
        """The arrays in the order the generated step takes them."""
        t = self.table
        out = [t.buckets, t.keys, t.meta, t.free, self.aux, self.values, self.heap_times, self.heap_slots, self.first]
        for k in self.key_tables:
            out += [k.buckets, k.keys, k.meta, k.free]
        return out

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name (for checkpoints; see :meth:`load_snapshot`).

        The state records are stored one array per field (``values.<field>``);
        only the live part of the timer heap is kept.
        """
        out: dict[str, np.ndarray] = {}
        put_tables(out, self.table, self.key_tables)
        out["aux"] = self.aux.copy()
        for name in self.values.dtype.names:
            out[f"values.{name}"] = np.array(self.values[name][: self.table.high_water], copy=True)
        count = int(self.aux[0])
        out["heap_times"] = self.heap_times[:count].copy()
        out["heap_slots"] = self.heap_slots[:count].copy()
        out["first"] = self.first[: self.table.high_water if self.timers else 0].copy()
        return out

    def load_snapshot(self, arrays) -> None:
        """Replace this (fresh) state by :meth:`snapshot` output, validating all of it first.

        Raises
        ------
        ValueError
            When names, dtypes or lengths do not fit this kernel's state; the
            state is then unchanged.
        """
        table, key_tables = take_tables(arrays, len(self.key_tables))
        if "first" not in arrays and isinstance(arrays.get("aux"), np.ndarray) and arrays["aux"].size == 1:
            # a checkpoint from before keys kept their first arrival: slot order was first-arrival order
            arrays = {**arrays, "aux": np.array([arrays["aux"][0], table.high_water], np.int64),
                      "first": np.arange(table.high_water if self.timers else 0, dtype=np.int64)}
        check_names(arrays, self.snapshot())
        cap = table.slot_capacity
        aux = check_like("aux", arrays["aux"], self.aux, self.aux.size)
        count = int(aux[0])
        if count < 0 or (count and not self.timers):
            raise ValueError(f"aux holds {count} timer entries" + ("" if self.timers else " but the kernel has no timers"))
        times = check_like("heap_times", arrays["heap_times"], self.heap_times, count)
        slots = check_like("heap_slots", arrays["heap_slots"], self.heap_slots, count)
        if count and (slots.min() < 0 or slots.max() >= table.high_water):
            raise ValueError("heap_slots point outside the key table")
        values = _records(np.empty(cap, self.values.dtype))
        for name in self.values.dtype.names:
            values[name] = take_slots(arrays, f"values.{name}", self.values[name], table, self.init[name])
        if self.timers:
            first = take_slots(arrays, "first", self.first, table, -1)
            if (first[: table.high_water] < 0).any() or aux[1] < 0:
                raise ValueError("first holds a negative arrival number")
        else:
            first = check_like("first", arrays["first"], self.first, 0)
        size = max(count, 1) if self.timers else 0
        self.heap_times, self.heap_slots = np.empty(size, np.int64), np.empty(size, np.int64)
        self.heap_times[:count], self.heap_slots[:count] = times, slots
        self.table, self.aux, self.values, self.key_tables, self.first = table, aux, values, key_tables, first

    @staticmethod
    def argument_names(node_id: int, bound) -> list[str]:
        """Parameter names of :meth:`arrays` in a generated step."""
        names = [f"st{node_id}_{s}" for s in ("buckets", "keys", "meta", "free", "aux", "values", "htimes",
                                               "hslots", "first")]
        for level in range(len(bound.spec.keys) - 1):
            names += [f"st{node_id}_k{level}_{s}" for s in ("buckets", "keys", "meta", "free")]
        return names
