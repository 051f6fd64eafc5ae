"""Tie rows of a ``TopN(ties=True)``: per (key, window) slot, the rows beyond its ``n`` that equal its n-th best.

The kernels that use them, their layout and their invariant are in
:mod:`laminar_jit.kernels.ranking`. This class owns the arrays and does
what kernels must not: growth, snapshots, validation and moving rows
between states (key shards).
"""

from __future__ import annotations

import numpy as np

from ..kernels.ranking import TIE_HIGH_WATER, TIE_LIVE

__all__ = ["TieRows"]


class TieRows:
    """A pool of TopN tie rows shared by all slots of a window state, linked per slot.

    Rows are taken from a free list, then from the high-water mark; a
    slot's rows are freed together (when a better row makes them rank below
    ``n``, or when the slot fires). The pool grows by doubling, in
    :meth:`reserve`, before a compiled call: one row per input row is enough
    (a row adds at most one tie row).

    Parameters
    ----------
    dtypes : sequence of numpy.dtype or None
        The kept columns' dtypes (None: a string column's int64 codes).
    slot_capacity : int
        The window key table's slot capacity (``head`` is per slot).
    capacity : int
        Initial number of pool rows.
    """

    def __init__(self, dtypes, slot_capacity: int, capacity: int = 16):
        self.dtypes = [np.dtype(np.int64 if d is None else d) for d in dtypes]
        #: Per slot: its first tie row, or -1.
        self.head = np.full(slot_capacity, -1, np.int64)
        #: Free-list head, high water, live rows, the row the last offer took (``TIE_FREE`` ... ``TIE_TAKEN``).
        self.pool = np.array([-1, 0, 0, -1], np.int64)
        #: Per pool row: slot (-1: free), next row of the slot, arrival number, then values and validity per column.
        self.rows = self._empty(capacity)

    def _empty(self, capacity: int) -> list[np.ndarray]:
        rows = [np.full(capacity, -1, np.int64), np.full(capacity, -1, np.int64), np.zeros(capacity, np.int64)]
        for dtype in self.dtypes:
            rows += [np.zeros(capacity, dtype), np.zeros(capacity, np.bool_)]
        return rows

    def __len__(self) -> int:
        """Tie rows held."""
        return int(self.pool[TIE_LIVE])

    @property
    def capacity(self) -> int:
        """Pool rows allocated."""
        return int(self.rows[0].size)

    @property
    def high_water(self) -> int:
        """Pool rows ever handed out; rows live in ``[0, high_water)``."""
        return int(self.pool[TIE_HIGH_WATER])

    # -- growth ----------------------------------------------------------------
    def reserve(self, extra: int) -> None:
        """Guarantee that ``extra`` rows can be taken (free list and never used rows) before the next call."""
        self._grow(len(self) + int(extra))

    def _grow(self, needed: int) -> None:
        """Make the pool at least ``needed`` rows, doubling (rows beyond the high water are copied as unused)."""
        if needed <= self.capacity:
            return
        cap = max(self.capacity, 1)
        while cap < needed:
            cap *= 2
        grown, hw = self._empty(cap), self.high_water
        for new, old in zip(grown, self.rows):
            new[:hw] = old[:hw]
        self.rows = grown

    def grow_slots(self, table) -> None:
        """Extend ``head`` to the key table's slot capacity (after it grew)."""
        self.head = table.grow_slots(self.head, -1)

    # -- the compiled step's view -----------------------------------------------
    def arrays(self) -> list[np.ndarray]:
        """The arrays in the order the generated step takes them (see :meth:`argument_names`)."""
        return [self.head, self.pool, *self.rows]

    @staticmethod
    def argument_names(node_id: int, n_columns: int) -> list[str]:
        """Parameter names of :meth:`arrays` in a generated step."""
        names = [f"st{node_id}_tie_{s}" for s in ("head", "pool", "slot", "next", "seq")]
        return names + [f"st{node_id}_tie_{kind}{j}" for j in range(n_columns) for kind in "cv"]

    def live_rows(self) -> np.ndarray:
        """Pool rows in use, ascending."""
        return np.flatnonzero(self.rows[0][: self.high_water] >= 0)

    # -- checkpoints and rescaling ----------------------------------------------
    def snapshot(self, out: dict[str, np.ndarray]) -> None:
        """Add the live rows to ``out`` (``tie.slot``, ``tie.seq``, ``tie.c<j>``, ``tie.v<j>``), compacted."""
        live = self.live_rows()
        out["tie.slot"] = self.rows[0][live]
        out["tie.seq"] = self.rows[2][live]
        for j in range(len(self.dtypes)):
            out[f"tie.c{j}"] = self.rows[3 + 2 * j][live]
            out[f"tie.v{j}"] = self.rows[4 + 2 * j][live]

    def load(self, arrays, table, count: np.ndarray, n: int) -> "TieRows":
        """A new pool holding the rows :meth:`snapshot` stored, for the restored key ``table`` (validated).

        ``count`` is the restored rows-kept per slot: a slot has tie rows only
        when its ``n`` places are taken.

        Raises
        ------
        ValueError
            When arrays have the wrong dtype or length, or rows name slots
            that are not live and full.
        """
        names = ["tie.slot", "tie.seq"] + [f"tie.{kind}{j}" for j in range(len(self.dtypes)) for kind in "cv"]
        want = [np.dtype(np.int64)] * 2 + [d for dtype in self.dtypes for d in (dtype, np.dtype(np.bool_))]
        parts = []
        for name, dtype in zip(names, want):
            arr = arrays[name]
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1 \
                    or arr.size != np.asarray(arrays["tie.slot"]).size:
                found = f"{arr.dtype}{list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise ValueError(f"{name} is {found}, expected a 1-d {dtype} array as long as tie.slot")
            parts.append(np.array(arr, copy=True))
        slots = parts[0]
        if slots.size:
            live = np.zeros(table.high_water, np.bool_)
            live[table.live_slots()] = True
            inside = (slots >= 0) & (slots < table.high_water)
            if not inside.all() or not live[slots].all() or (count[slots] != n).any():
                raise ValueError("tie.slot names slots that are not open or do not keep n rows")
        out = TieRows(self.dtypes, table.slot_capacity)
        out._append(slots, parts[1], parts[2:])
        return out

    def absorb(self, src: "TieRows", remap: np.ndarray) -> None:
        """Copy ``src``'s rows of the slots ``remap`` maps (old slot -> slot here, -1: not moved)."""
        live = src.live_rows()
        slots = remap[src.rows[0][live]]
        moved = slots >= 0
        take = live[moved]
        self._append(slots[moved], src.rows[2][take], [col[take] for col in src.rows[3:]])

    def _append(self, slots: np.ndarray, seq: np.ndarray, cols: list[np.ndarray]) -> None:
        """Add rows of ``slots`` above the high water and link them at the head of their slots' lists."""
        k, hw = slots.size, self.high_water
        if k == 0:
            return
        self._grow(hw + k)
        rows = np.arange(hw, hw + k, dtype=np.int64)
        self.rows[0][rows] = slots
        self.rows[2][rows] = seq
        for arr, col in zip(self.rows[3:], cols):
            arr[rows] = col
        order = np.argsort(slots, kind="stable")
        slots, rows = slots[order], rows[order]
        first = np.ones(k, np.bool_)
        first[1:] = slots[1:] != slots[:-1]
        last = np.roll(first, -1)
        follow = np.roll(rows, -1)
        follow[last] = self.head[slots[last]]  # a slot's new rows lead to its old ones
        self.rows[1][rows] = follow
        self.head[slots[first]] = rows[first]
        self.pool[TIE_HIGH_WATER] += k
        self.pool[TIE_LIVE] += k
