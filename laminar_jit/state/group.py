"""State of a group aggregate: a key table, per-key accumulators and emitted results.

The array layout is described in :mod:`laminar_jit.kernels.changelog`.
"""

from __future__ import annotations

import numpy as np

from ..kernels.changelog import rec_columns
from .keytable import KeyTable, check_like, check_names, put_table, put_tables, take_slots, take_table, take_tables

__all__ = ["GroupState"]

_WM_MIN = np.iinfo(np.int64).min
#: Per-slot arrays (layout in :mod:`laminar_jit.kernels.changelog`): name -> dtype.
_SLOTS = {"rec": np.int64, "frec": np.float64, "odd": np.int64, "mhead": np.int64}


class GroupState:
    """Per-node state of a :class:`~laminar_jit.GroupAggregate`, passed to the compiled step.

    Parameters
    ----------
    bound : Bound
        The group aggregate bound to its input schema.
    capacity : int
        Initial number of key slots.
    """

    def __init__(self, bound, capacity: int = 1024):
        spec = bound.spec
        self.n_aggs = len(spec.kinds)
        self.kinds = np.array(spec.kinds, np.int64)
        self.floats = np.array(spec.floats, np.bool_)
        #: Aggregates that keep value lists (each row may add one entry per such aggregate).
        self.listed = spec.listed
        self.table = KeyTable(width=2, capacity=capacity)
        self.key_tables = [KeyTable(width=2, capacity=capacity) for _ in spec.keys[1:]]
        _, _, _, self._last, _, _, width = rec_columns(self.n_aggs)
        #: Per slot array: its columns, and whether it has a row per slot (odd and mhead only when used).
        self._shape = {"rec": (width, True), "frec": (2 * self.n_aggs, True),
                       "odd": (3 * self.n_aggs, spec.retract and any(
                           f and k in (2, 3) for f, k in zip(spec.floats, spec.kinds))),
                       "mhead": (self.n_aggs, bool(self.listed))}
        cap = self.table.slot_capacity
        for name in _SLOTS:
            setattr(self, name, self._fresh(name, cap))
        self.values = KeyTable(width=2, capacity=capacity if self.listed else 0)
        self.mlist = np.zeros((self.values.slot_capacity, 3), np.int64)
        self.aux = np.zeros(2, np.int64)  # calls so far (the marks), the watermark of the next purge

    def _fresh(self, name: str, rows: int) -> np.ndarray:
        """``rows`` empty slots of array ``name`` (none when the node does not use it)."""
        width, used = self._shape[name]
        out = np.full((rows if used else 0, width), -1 if name == "mhead" else 0, _SLOTS[name])
        if name == "rec":
            out[:, self._last] = _WM_MIN
        return out

    def __len__(self) -> int:
        """Keys with state."""
        return len(self.table)

    def max_emit(self, rows: int) -> int:
        """Rows one call given ``rows`` input rows can emit: a retraction and an update per key."""
        return 2 * rows

    def reserve(self, extra: int) -> None:
        """Guarantee room for ``extra`` new keys (and min/max values) before a compiled call."""
        for table in self.key_tables:
            if table.headroom < extra:
                table.reserve(extra)
        if self.table.headroom < extra:
            self.table.reserve(extra)
            cap = self.table.slot_capacity
            for name in _SLOTS:
                old = getattr(self, name)
                if self._shape[name][1] and old.shape[0] < cap:
                    grown = self._fresh(name, cap)
                    grown[: old.shape[0]] = old
                    setattr(self, name, grown)
        want = extra * self.listed
        if want and self.values.headroom < want:
            self.values.reserve(want)
            self.mlist = self.values.grow_slots(self.mlist, 0)

    def arrays(self) -> list[np.ndarray]:
        """The arrays in the order the generated step takes them (see :meth:`argument_names`)."""
        t, v = self.table, self.values
        out = [self.kinds, self.floats, self.aux, t.buckets, t.keys, t.meta, t.free]
        out += [getattr(self, name) for name in _SLOTS]
        out += [v.buckets, v.keys, v.meta, v.free, self.mlist]
        for k in self.key_tables:
            out += [k.buckets, k.keys, k.meta, k.free]
        return out

    @staticmethod
    def argument_names(node_id: int, n_keys: int) -> list[str]:
        """Parameter names of :meth:`arrays` in a generated step."""
        names = ["kinds", "floats", "aux", "tb", "tk", "tm", "tf", *_SLOTS, "mb", "mk", "mm", "mf", "mlist"]
        names = [f"st{node_id}_{s}" for s in names]
        for level in range(n_keys - 1):
            names += [f"st{node_id}_k{level}_{s}" for s in ("buckets", "keys", "meta", "free")]
        return names

    # -- checkpoints ------------------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name (for checkpoints; see :meth:`load_snapshot`)."""
        out: dict[str, np.ndarray] = {}
        put_tables(out, self.table, self.key_tables)
        hw = self.table.high_water
        for name in _SLOTS:
            out[name] = getattr(self, name)[:hw if self._shape[name][1] else 0].copy()
        put_table(out, "values", self.values)
        out["mlist"] = self.mlist[: self.values.high_water].copy()
        out["aux"] = self.aux.copy()
        return out

    def load_snapshot(self, arrays) -> None:
        """Replace this (fresh) state by :meth:`snapshot` output, validating all of it first.

        Raises
        ------
        ValueError
            When names, dtypes or lengths do not fit this operator's state; the
            state is then unchanged.
        """
        check_names(arrays, self.snapshot())
        table, key_tables = take_tables(arrays, len(self.key_tables))
        slots = {}
        for name in _SLOTS:
            template = self._fresh(name, table.slot_capacity)
            rows = table.high_water if self._shape[name][1] else 0
            template[:rows] = check_like(name, arrays[name], template, rows)
            slots[name] = template
        values = take_table(arrays, "values")
        mlist = take_slots(arrays, "mlist", self.mlist, values, 0)
        aux = check_like("aux", arrays["aux"], self.aux, self.aux.size)
        hw = table.high_water
        heads = slots["mhead"][:hw]
        if heads.size and (heads.max() >= values.high_water or heads.min() < -1):
            raise ValueError("mhead points outside the min/max value table")
        self.table, self.values, self.mlist, self.aux, self.key_tables = table, values, mlist, aux, key_tables
        for name, arr in slots.items():
            setattr(self, name, arr)
