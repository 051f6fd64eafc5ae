"""State of a group aggregate: a key table, per-key accumulators and emitted results.

The array layout is described in :mod:`laminar_jit.kernels.changelog`.
"""

from __future__ import annotations

import numpy as np

from ..kernels.changelog import COUNT_DISTINCT, MAX, MIN, rec_columns
from .keytable import (KeyedEntries, KeyTable, check_like, check_names, put_table, remap_codes,
                       put_tables, take_slots, take_table, take_tables)

__all__ = ["GroupState"]

_WM_MIN = np.iinfo(np.int64).min
#: Per-slot arrays (layout in :mod:`laminar_jit.kernels.changelog`): name -> dtype.
_SLOTS = {"rec": np.int64, "frec": np.float64, "odd": np.int64, "mhead": np.int64}


class GroupState(KeyedEntries):
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

    # -- rescaling ---------------------------------------------------------------
    def recode(self, key_maps: list, value_maps: dict) -> None:
        """Rewrite the string codes of the keys and of aggregates of strings (``("agg", None, a)``): a min's or
        max's value and the value last emitted, and the distinct values kept for min/max and count_distinct."""
        self.recode_keys(key_maps)
        ival, _, _, _, oi, _, _ = rec_columns(self.n_aggs)
        held = self.values.live_slots().astype(np.int64)
        agg_of = self.values.keys[held, 0] % max(self.n_aggs, 1)
        for (_, _, a), m in value_maps.items():
            if self.kinds[a] in (MIN, MAX):
                remap_codes(self.rec[:, ival + a], m)
                remap_codes(self.rec[:, oi + a], m)
            if self.kinds[a] in (MIN, MAX, COUNT_DISTINCT) and held.size:
                rows = held[agg_of == a]
                values = self.values.keys[rows, 1]
                remap_codes(values, m)
                self.values.keys[rows, 1] = values

    def absorb(self, src: "GroupState", slots) -> None:
        """Copy the keys ``slots`` of ``src``, which this state does not hold, into this state.

        How key shards rescale (see ``WindowState.absorb``): each key keeps
        its accumulators, its last emitted result and, for ``min``/``max`` over
        a changelog and ``count_distinct``, its distinct values with their
        multiplicities (relinked under the key's new slot). The call counter
        takes the later of both states' (every shard runs every call, so they
        agree) and the next TTL purge the earlier.

        Parameters
        ----------
        src : GroupState
            A state of the same operator.
        slots : array_like of int
            Live slots of ``src.table``, of keys absent from this state.

        Raises
        ------
        ValueError
            A key of ``slots`` is already held here.
        """
        slots = np.asarray(slots, np.int64)
        self.aux[0] = max(self.aux[0], src.aux[0])
        self.aux[1] = min(self.aux[1], src.aux[1])
        n = slots.size
        if n == 0:
            return
        new = self._absorb_entries(src, slots, np.zeros(n, np.int64))
        for name in _SLOTS:
            if self._shape[name][1] and name != "mhead":
                getattr(self, name)[new] = getattr(src, name)[slots]
        if self.listed:
            self._absorb_values(src, slots, new)

    def _absorb_values(self, src: "GroupState", slots: np.ndarray, new: np.ndarray) -> None:
        """Copy the distinct values of the moved keys (``src``'s ``slots`` are ``new`` here) and relink their lists."""
        a_n = self.n_aggs
        remap = np.full(src.table.slot_capacity, -1, np.int64)
        remap[slots] = new
        held = src.values.live_slots().astype(np.int64)
        owner, agg = np.divmod(src.values.keys[held, 0], a_n)
        slot = remap[owner]
        moved = slot >= 0
        held, slot, agg = held[moved], slot[moved], agg[moved]
        self.mhead[new] = -1
        if held.size == 0:
            return
        if self.values.headroom < held.size:
            self.values.reserve(held.size)
            self.mlist = self.values.grow_slots(self.mlist, 0)
        lists = slot * a_n + agg
        entries = self.values.upsert_many(lists, src.values.keys[held, 1]).astype(np.int64)
        order = np.argsort(lists, kind="stable")
        lists, entries = lists[order], entries[order]
        first = np.ones(entries.size, np.bool_)
        first[1:] = lists[1:] != lists[:-1]
        last = np.roll(first, -1)
        self.mlist[entries, 0] = src.mlist[held[order], 0]  # the value's multiplicity
        nxt, prv = np.roll(entries, -1), np.roll(entries, 1)
        nxt[last], prv[first] = -1, -1
        self.mlist[entries, 1], self.mlist[entries, 2] = nxt, prv
        self.mhead[lists[first] // a_n, lists[first] % a_n] = entries[first]

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
