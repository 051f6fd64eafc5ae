"""State of an unbounded TopN or last-row Dedup: per key, its best rows now and as last emitted.

The layout is described in :mod:`laminar_jit.kernels.changelog` (ranked rows).
"""

from __future__ import annotations

import numpy as np

from ..kernels.changelog import R_CNT, R_CUR, R_ECNT
from .keytable import KeyedEntries, KeyTable, check_like, check_names, put_tables, remap_codes, take_tables

__all__ = ["RankedState"]

class RankedState(KeyedEntries):
    """Per-node state of an unbounded :class:`~laminar_jit.TopN` or ``Dedup(keep="last")``.

    Parameters
    ----------
    bound : Bound
        The operator bound to its input schema.
    capacity : int
        Initial number of key slots.
    """

    def __init__(self, bound, capacity: int = 1024):
        spec = bound.spec
        self.n = spec.n
        width = len(spec.payload) + 1  # every column, then the validity bitmask
        self.cols = R_CUR + 2 * width  # (layout: kernels/changelog.py, ranked rows)
        self.table = KeyTable(width=2, capacity=capacity)
        self.key_tables = [KeyTable(width=2, capacity=capacity) for _ in spec.keys[1:]]
        self.rows = np.zeros((self.table.slot_capacity * self.n, self.cols), np.int64)
        # calls so far (the marks), rows so far (arrival numbers), the watermark of the next TTL purge
        self.aux = np.zeros(3, np.int64)

    def __len__(self) -> int:
        """Keys with state."""
        return len(self.table)

    def max_emit(self, rows: int) -> int:
        """Rows one call given ``rows`` input rows can emit: a retraction and an update per rank changed."""
        return 2 * rows * self.n

    def reserve(self, extra: int) -> None:
        """Guarantee room for ``extra`` new keys before a compiled call."""
        for table in self.key_tables:
            if table.headroom < extra:
                table.reserve(extra)
        if self.table.headroom < extra:
            self.table.reserve(extra)
            want = self.table.slot_capacity * self.n
            if self.rows.shape[0] < want:
                grown = np.zeros((want, self.cols), np.int64)
                grown[: self.rows.shape[0]] = self.rows
                self.rows = grown

    def arrays(self) -> list[np.ndarray]:
        """The arrays in the order the generated step takes them (see :meth:`argument_names`)."""
        t = self.table
        out = [self.aux, t.buckets, t.keys, t.meta, t.free, self.rows]
        for k in self.key_tables:
            out += [k.buckets, k.keys, k.meta, k.free]
        return out

    @staticmethod
    def argument_names(node_id: int, n_keys: int) -> list[str]:
        """Parameter names of :meth:`arrays` in a generated step."""
        names = [f"st{node_id}_{s}" for s in ("aux", "tb", "tk", "tm", "tf", "rows")]
        for level in range(n_keys - 1):
            names += [f"st{node_id}_k{level}_{s}" for s in ("buckets", "keys", "meta", "free")]
        return names

    # -- rescaling ---------------------------------------------------------------
    def recode(self, key_maps: list, value_maps: dict) -> None:
        """Rewrite the string codes of the keys and of the kept rows' columns (current and last emitted)."""
        self.recode_keys(key_maps)
        width = (self.cols - R_CUR) // 2
        for (_, _, j), m in value_maps.items():
            remap_codes(self.rows[:, R_CUR + j], m)
            remap_codes(self.rows[:, R_CUR + width + j], m)

    def absorb(self, src: "RankedState", slots) -> None:
        """Copy the keys ``slots`` of ``src``, which this state does not hold, into this state.

        How key shards rescale (see ``WindowState.absorb``): each key keeps
        its rows and the rows it last emitted. The call and arrival counters
        take the later of both states' (so rows arriving later still rank as
        later) and the next TTL purge the earlier.

        Parameters
        ----------
        src : RankedState
            A state of the same operator.
        slots : array_like of int
            Live slots of ``src.table``, of keys absent from this state.

        Raises
        ------
        ValueError
            A key of ``slots`` is already held here.
        """
        slots = np.asarray(slots, np.int64)
        self.aux[:2] = np.maximum(self.aux[:2], src.aux[:2])
        self.aux[2] = min(self.aux[2], src.aux[2])
        n = slots.size
        if n == 0:
            return
        new = self._absorb_entries(src, slots, np.zeros(n, np.int64))
        rank = np.arange(self.n, dtype=np.int64)
        self.rows[(new[:, None] * self.n + rank).ravel()] = src.rows[(slots[:, None] * self.n + rank).ravel()]

    # -- checkpoints ------------------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name (for checkpoints; see :meth:`load_snapshot`)."""
        out: dict[str, np.ndarray] = {}
        put_tables(out, self.table, self.key_tables)
        out["rows"] = self.rows[: self.table.high_water * self.n].copy()
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
        hw = table.high_water
        rows = np.zeros((table.slot_capacity * self.n, self.cols), np.int64)
        rows[: hw * self.n] = check_like("rows", arrays["rows"], rows, hw * self.n)
        for name, col in (("held", R_CNT), ("emitted", R_ECNT)):
            counts = rows[: hw * self.n: self.n, col]
            if counts.size and (counts.min() < 0 or counts.max() > self.n):
                raise ValueError(f"rows hold {name} row counts outside [0, {self.n}]")
        aux = check_like("aux", arrays["aux"], self.aux, self.aux.size)
        self.table, self.aux, self.key_tables, self.rows = table, aux, key_tables, rows
