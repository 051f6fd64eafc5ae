"""State of a two-input join: a key table shared by both sides and one row store per side."""

from __future__ import annotations

import numpy as np

from ..kernels.joins import compact_heads, compact_links, compact_rows, live_rows
from .keytable import (KeyedEntries, KeyTable, check_like, check_names, put_tables, remap_codes, take_slots,
                       take_tables)

__all__ = ["JoinState", "join_params"]

_WM_MAX = np.iinfo(np.int64).max
_WM_MIN = np.iinfo(np.int64).min
#: ``aux``: arrival counter, input watermark, then per side (left at 2, right at 7)
#: high water (rows appended so far), the first row that may be live (every row before it is free; the
#: expiry pass of interval and window joins starts there), live rows, least expiry time, least event time.
_AUX = 12
SIDE_BASE = {"left": 2, "right": 7}
#: Positions in ``JoinState.params``, the operator's configuration as run-time values (so joins
#: that differ only in bounds, lateness, join type or direction share one compiled plan):
#: lower/size, upper/offset, allowed lateness, keep null-key rows (left, right), emit unmatched
#: rows (left, right), as-of direction, tolerance (-1: none), semi join, log2 of the time
#: bucket width (interval joins).
P_A, P_B, P_LATENESS, P_KEEP_NULL, _, P_EMIT_LEFT, P_EMIT_RIGHT, P_DIRECTION, P_TOLERANCE, P_SEMI, P_SHIFT = range(11)
_P = 11
#: An interval join's time buckets are at least this many times as wide as its bounds (and a
#: power of two, so a row's bucket is a shift of its time). A probe looks at the rows of at most
#: two buckets; a narrow bucket holds few rows, so nearly every row then creates and later frees
#: a slot of its own. Measured on the interval and skewed-join benchmarks (±1 s and ±10 ms,
#: 10 K keys, 0-30 % of rows on one key): 16 ran 2.2x faster than 1 on sparse keys and no
#: slower on the hot key; 256 was slower again on the hot key.
BUCKET_SPANS = 16
#: A side that has freed no row since it last grew, and would hold at least this many rows, grows to
#: four times its rows instead of twice (see :meth:`JoinState.reserve`). Its arrays' capacity costs
#: address space, not memory: rows past the high water are not written until appended. Nexmark q20
#: (every bid kept, its strings in dictionaries that grow fourfold too) ran 4.0-4.7 s on average against
#: 2.5-3.2 s this way, most of the difference the kernel's time clearing the pages a doubling's copies touch.
WIDE_GROWTH_ROWS = 1 << 20
_DIRECTIONS = ("backward", "forward", "nearest")


def join_params(spec) -> np.ndarray:
    """``JoinState.params`` of a bound join operator (its :class:`~laminar_jit.ops.joins.JoinSpec`)."""
    how = spec.how
    p = np.zeros(_P, np.int64)
    if spec.kind == "window":
        p[P_A], p[P_B] = spec.size, spec.offset
    elif spec.kind == "interval":
        p[P_A], p[P_B] = spec.lower, spec.upper
        # a row's partners lie in a range as wide as the bounds, so in at most two buckets
        p[P_SHIFT] = min((BUCKET_SPANS * (int(spec.upper) - int(spec.lower) + 1) - 1).bit_length(), 62)
    p[P_LATENESS] = spec.lateness
    emit_left = how in ("left", "full", "anti")
    emit_right = how in ("right", "full")
    # rows that can come out unmatched are kept even with a null key (they never match)
    p[P_KEEP_NULL], p[P_KEEP_NULL + 1] = emit_left, emit_right
    p[P_EMIT_LEFT], p[P_EMIT_RIGHT] = emit_left, emit_right
    if spec.kind == "asof":
        p[P_DIRECTION] = _DIRECTIONS.index(spec.direction)
        p[P_TOLERANCE] = -1 if spec.tolerance is None else spec.tolerance
    p[P_SEMI] = how == "semi"
    return p


#: Per-row arrays of a side before its payload: (name, dtype, fill).
_ROW_FIELDS = (("ts", np.int64, 0), ("seq", np.int64, 0), ("nxt", np.int64, -1), ("prv", np.int64, -1),
               ("slot", np.int64, -1), ("flag", np.uint8, 0))


class JoinState(KeyedEntries):
    """Buffered rows of both inputs of a join node, owned by the executor.

    A :class:`KeyTable` maps ``(key, bucket)`` to a slot: the bucket is the
    window start for window joins, the event time shifted right by
    ``params[P_SHIFT]`` for interval joins, 0 for as-of joins.
    ``heads[slot]`` holds each side's rows of that slot (see
    :mod:`laminar_jit.kernels.joins`). Each side stores, per buffered row, its
    event time, arrival number, links, slot, a flag (0 free, 1 live, 2 live
    and matched; inner joins, which never ask, leave matched rows at 1) and every payload column (values and validity). Rows are
    freed when the watermark makes them useless and their slots when both
    sides hold none, so memory follows the rows the join still needs, not the
    history.

    Parameters
    ----------
    bound : Bound
        The join operator bound to its two input schemas.
    capacity : int
        Initial rows per side (and keys).
    """

    def __init__(self, bound, capacity: int = 1024):
        self.spec = bound.spec
        self.table = KeyTable(width=2, capacity=capacity)
        self.heads = np.full((self.table.slot_capacity, 4), -1, np.int64)
        # slots with buffered left rows waiting for a decision (as-of joins), and their count in aux
        self.active = np.zeros(self.table.slot_capacity + 1, np.int64)
        self.params = join_params(bound.spec)
        self.aux = np.zeros(_AUX, np.int64)
        self.aux[1] = _WM_MIN
        for base in SIDE_BASE.values():
            self.aux[base + 3] = _WM_MAX
            self.aux[base + 4] = _WM_MAX
        self.rows: dict[str, list[tuple[str, np.ndarray, object]]] = {}
        for side in ("left", "right"):
            fields = [(name, np.full(capacity, fill, dtype), fill) for name, dtype, fill in _ROW_FIELDS]
            for j, (_, dtype) in enumerate(self.spec.port(side).payload):
                fields.append((f"c{j}", np.zeros(capacity, np.int64 if dtype is None else dtype), 0))
                fields.append((f"v{j}", np.zeros(capacity, np.bool_), False))
            self.rows[side] = fields
        self.key_tables = [KeyTable(width=2, capacity=capacity) for _ in self.spec.left.keys[1:]]

    def __len__(self) -> int:
        """Buffered rows on both sides."""
        return int(self.aux[SIDE_BASE["left"] + 2] + self.aux[SIDE_BASE["right"] + 2])

    def max_emit(self, rows: int) -> int:
        """Join output reaches stateful nodes only through a step of its own (see ``boundary_nodes``): nothing to reserve."""
        return 0

    @property
    def row_capacity(self) -> int:
        """Rows the larger side's arrays hold (live rows, freed rows not compacted yet and room)."""
        return max(self._row_capacity(side) for side in SIDE_BASE)

    def _row_capacity(self, side: str) -> int:
        return int(self.rows[side][0][1].size)

    def reserve(self, extra: int) -> None:
        """Guarantee room for ``extra`` new rows on each side, and as many new keys, before a compiled call.

        A call appends its rows after a side's high water. When they would not
        fit, the side's live rows are moved to the front first (in order, so
        the rows of a list keep their relative places), and the arrays double
        unless that left at least half of them free and room for the call: a
        compaction moves at most about two rows per row appended since the
        one before, in sequence. A side that freed no row since its last
        compaction grows fourfold once it holds :data:`WIDE_GROWTH_ROWS`.
        """
        for table in self.key_tables:
            if table.headroom < extra:
                table.reserve(extra)
        if self.table.headroom < extra:
            self.table.reserve(extra)
            self.heads = self.table.grow_slots(self.heads, -1)
            active = np.zeros(self.table.slot_capacity + 1, np.int64)
            active[: self.active.size] = self.active
            self.active = active
        for side, base in SIDE_BASE.items():
            cap = self._row_capacity(side)
            if cap - int(self.aux[base]) >= extra:
                continue
            kept_all = int(self.aux[base]) == int(self.aux[base + 2])  # no row freed since the last compaction
            self._compact_rows(side)
            live = int(self.aux[base + 2])
            if cap - live < max(extra, cap // 2):
                # a side that keeps every row (a regular join's) grows by more once large: each growth
                # copies its rows into memory the kernel first has to clear
                wide = kept_all and live + extra >= WIDE_GROWTH_ROWS
                self._grow_rows(side, (4 if wide else 2) * (live + extra))

    def _compact_rows(self, side: str) -> None:
        """Move the live rows of ``side`` to the front of its arrays, in order, and relink them."""
        base = SIDE_BASE[side]
        hw = int(self.aux[base])
        if hw == int(self.aux[base + 2]):
            return
        fields = {name: arr for name, arr, _ in self.rows[side]}
        lo = int(self.aux[base + 1])  # every row before it is free
        keep, new = live_rows(fields["flag"], lo, hw)
        for name, arr in fields.items():
            if name in ("nxt", "prv"):  # (a link points at a live row or is -1)
                compact_links(arr, keep, new, lo)
            else:
                compact_rows(arr, keep)
        # the lists' first rows (and an as-of join's last rows; an interval or window join's list length stays)
        h = 0 if side == "left" else 2
        for c in (h, h + 1) if self.spec.kind == "asof" else (h,):
            compact_heads(self.heads, c, keep, fields["slot"])
        self.aux[base] = keep.size
        self.aux[base + 1] = 0

    def arrays(self) -> list[np.ndarray]:
        """The arrays in the order the generated step takes them (see :meth:`argument_names`)."""
        t = self.table
        out = [t.buckets, t.keys, t.meta, t.free, self.heads, self.active, self.aux, self.params]
        for side in ("left", "right"):
            out += [arr for _, arr, _ in self.rows[side]]
        for k in self.key_tables:
            out += [k.buckets, k.keys, k.meta, k.free]
        return out

    @staticmethod
    def argument_names(node_id: int, bound) -> list[str]:
        """Parameter names of :meth:`arrays` in a generated step."""
        names = [f"st{node_id}_{s}" for s in ("buckets", "keys", "meta", "free", "heads", "active", "aux", "params")]
        for side in ("left", "right"):
            p = f"st{node_id}_{side[0]}"
            names += [f"{p}_{name}" for name, _, _ in _ROW_FIELDS]
            names += [f"{p}_{kind}{j}" for j in range(len(bound.spec.port(side).payload)) for kind in "cv"]
        for level in range(len(bound.spec.left.keys) - 1):
            names += [f"st{node_id}_k{level}_{s}" for s in ("buckets", "keys", "meta", "free")]
        return names

    # -- rescaling ---------------------------------------------------------------
    def recode(self, key_maps: list, value_maps: dict) -> None:
        """Rewrite the string codes of the keys and of the rows' kept columns (``("payload", side, j)``)."""
        self.recode_keys(key_maps)
        for (_, side, j), m in value_maps.items():
            arrays = dict((name, arr) for name, arr, _ in self.rows[side])
            remap_codes(arrays[f"c{j}"], m)

    def absorb(self, src: "JoinState", slots, unkeyed: bool = False) -> None:
        """Copy the entries ``slots`` of ``src`` (a key and time bucket each), whose keys this state does not hold.

        How key shards rescale (see ``WindowState.absorb``): each entry keeps
        both sides' rows (times, arrival numbers, matched flags, payload),
        relinked newest first under the entry's new slot as they were. The
        arrival counter and input watermark take the later of both states',
        the least expiry and event times the earlier. An as-of join's lists
        are relinked oldest first, and its queue of keys with waiting left
        rows rebuilt.

        Parameters
        ----------
        src : JoinState
            A state of the same operator.
        slots : array_like of int
            Live slots of ``src.table``, of keys absent from this state.
        unkeyed : bool, default False
            Also copy ``src``'s rows without a key (a null key: kept by outer
            and anti joins until the watermark settles them, in no list; a
            left as-of join's, queued under a slot of their own, join the
            queue here).

        Raises
        ------
        ValueError
            A key of ``slots`` is already held here.
        """
        slots = np.asarray(slots, np.int64)
        aux, src_aux = self.aux, src.aux
        aux[:2] = np.maximum(aux[:2], src_aux[:2])
        for base in SIDE_BASE.values():
            aux[base + 3:base + 5] = np.minimum(aux[base + 3:base + 5], src_aux[base + 3:base + 5])
        if unkeyed:
            self._absorb_unkeyed(src)
            if self.spec.kind == "asof":
                self._absorb_null_queue(src)
                self._rebuild_active()
        n = slots.size
        if n == 0:
            return
        new = self._absorb_entries(src, slots, src.table.keys[slots, 1])
        remap = np.full(src.table.slot_capacity, -1, np.int64)
        remap[slots] = new
        # interval and window joins: each side's list newest first (heads: first row, list length - 1);
        # as-of joins: oldest first by (time, arrival), linked both ways (heads: first and last row)
        asof = self.spec.kind == "asof"
        self.heads[new] = -1 if asof else src.heads[slots]  # (the lists' lengths kept; heads set below)
        for side, base in SIDE_BASE.items():
            head = 0 if side == "left" else 2
            self.heads[new, head] = -1
            fields = {name: arr for name, arr, _ in src.rows[side]}
            rows = np.flatnonzero(fields["flag"][: src_aux[base]] != 0)
            slot = fields["slot"][rows]
            slot = np.where(slot >= 0, remap[np.maximum(slot, 0)], -1)
            rows, slot = rows[slot >= 0], slot[slot >= 0]
            k = rows.size
            if k == 0:
                continue
            if asof:
                order = np.lexsort((fields["seq"][rows], fields["ts"][rows], slot))
            else:
                order = np.lexsort((-fields["seq"][rows], slot))
            rows, slot = rows[order], slot[order]
            dst = self._append_rows(side, fields, rows)
            first = np.ones(k, np.bool_)
            first[1:] = slot[1:] != slot[:-1]
            last = np.roll(first, -1)
            nxt = np.roll(dst, -1)
            nxt[last] = -1
            store = {name: arr for name, arr, _ in self.rows[side]}
            store["slot"][dst] = slot
            store["nxt"][dst] = nxt
            self.heads[slot[first], head] = dst[first]
            if asof:
                prv = np.roll(dst, 1)
                prv[first] = -1
                store["prv"][dst] = prv
                self.heads[slot[last], head + 1] = dst[last]
        if asof:
            self._rebuild_active()

    def _rebuild_active(self) -> None:
        """An as-of join's queue of keys with queued left rows, which the resolution pass walks."""
        live = self.table.live_slots().astype(np.int64)
        queued = live[self.heads[live, 0] != -1]
        self.active[0] = queued.size
        self.active[1:queued.size + 1] = queued

    def null_slot(self) -> int:
        """The slot under which a left as-of join queues its left rows without a key (-1: none, or another kind).

        Its key is no key value (``(int64 min, 1)``: keys sit in bucket 0),
        single or composite, so key shards keep it apart from the keyed slots
        (:meth:`keyed_slots`) and move its rows with ``absorb(unkeyed=True)``.
        """
        return self.table.find(_WM_MIN, 1) if self.spec.kind == "asof" else -1

    def keyed_slots(self) -> np.ndarray:
        """Live slots of keys: all but :meth:`null_slot`."""
        live = self.table.live_slots()
        null = self.null_slot()
        return live[live != null] if null >= 0 else live

    def _absorb_null_queue(self, src: "JoinState") -> None:
        """Add ``src``'s queued left rows without a key to this state's own queue of them, oldest first."""
        null = src.null_slot()
        if null < 0:
            return
        base = SIDE_BASE["left"]
        fields = {name: arr for name, arr, _ in src.rows["left"]}
        live = int(src.aux[base])
        rows = np.flatnonzero((fields["flag"][:live] != 0) & (fields["slot"][:live] == null))
        if rows.size == 0:
            return
        here = self.null_slot()
        if here < 0:
            self.reserve(1)
            here = int(self.table.upsert_many(np.array([_WM_MIN], np.int64), np.array([1], np.int64))[0])
            self.heads[here] = -1
        self._append_rows("left", fields, rows)
        store = {name: arr for name, arr, _ in self.rows["left"]}
        live = int(self.aux[base])
        store["slot"][live - rows.size:live] = here
        queue = np.flatnonzero((store["flag"][:live] != 0) & (store["slot"][:live] == here))
        queue = queue[np.lexsort((store["seq"][queue], store["ts"][queue]))]  # by (time, arrival), linked both ways
        nxt, prv = np.roll(queue, -1), np.roll(queue, 1)
        nxt[-1], prv[0] = -1, -1
        store["nxt"][queue], store["prv"][queue] = nxt, prv
        self.heads[here, 0], self.heads[here, 1] = queue[0], queue[-1]

    def _absorb_unkeyed(self, src: "JoinState") -> None:
        """Copy ``src``'s live rows without a key (slot -1), on both sides, as rows of no list here."""
        for side, base in SIDE_BASE.items():
            fields = {name: arr for name, arr, _ in src.rows[side]}
            live = int(src.aux[base])
            rows = np.flatnonzero((fields["flag"][:live] != 0) & (fields["slot"][:live] < 0))
            self._append_rows(side, fields, rows)

    def _append_rows(self, side: str, fields: dict, rows: np.ndarray) -> np.ndarray:
        """Copy rows ``rows`` of another state's ``side`` (its row arrays ``fields``) after this side's rows,
        in no list (links -1, slots as they were); returns their row numbers here."""
        base = SIDE_BASE[side]
        start, k = int(self.aux[base]), rows.size
        self._grow_rows(side, start + k)
        dst = np.arange(start, start + k, dtype=np.int64)
        for name, arr, _ in self.rows[side]:
            if name in ("nxt", "prv"):
                arr[dst] = -1
            else:
                arr[dst] = fields[name][rows]
        self.aux[base] += k
        self.aux[base + 2] += k
        return dst

    def _grow_rows(self, side: str, capacity: int) -> None:
        """Make the row arrays of ``side`` hold at least ``capacity`` rows.

        Only the rows below the high water are copied; the rest is left
        unwritten (an append writes every field of its row, and nothing reads
        a row past the high water), so the memory of rows not yet appended is
        not touched: a store that keeps every row (a regular join of
        unbounded streams) pays for the rows it holds, not for its capacity.
        """
        if self._row_capacity(side) >= capacity:
            return
        size = max(16, self._row_capacity(side))
        while size < capacity:
            size *= 2
        hw = int(self.aux[SIDE_BASE[side]])
        grown = []
        for name, arr, fill in self.rows[side]:
            out = np.empty(size, arr.dtype)
            out[:hw] = arr[:hw]
            grown.append((name, out, fill))
        self.rows[side] = grown

    # -- checkpoints -----------------------------------------------------------
    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name, rows only up to each side's high-water mark."""
        out: dict[str, np.ndarray] = {}
        put_tables(out, self.table, self.key_tables)
        out["heads"] = self.heads[: self.table.high_water].copy()
        out["active"] = self.active.copy()[: self.table.high_water + 1]
        out["aux"] = self.aux.copy()
        for side, base in SIDE_BASE.items():
            hw = int(self.aux[base])
            for name, arr, _ in self.rows[side]:
                out[f"{side}.{name}"] = arr[:hw].copy()
        return out

    def load_snapshot(self, arrays) -> None:
        """Replace this (fresh) state by :meth:`snapshot` output, validating all of it first.

        Raises
        ------
        ValueError
            When names, dtypes or lengths do not fit this operator's state;
            the state is then unchanged.
        """
        # checkpoints written while freed rows were reused hold each side's stack of them (and its size in
        # aux[base + 1]): no longer needed
        arrays = {name: arr for name, arr in arrays.items() if name not in ("left.free", "right.free")}
        check_names(arrays, self.snapshot())
        table, key_tables = take_tables(arrays, len(self.key_tables))
        heads = take_slots(arrays, "heads", self.heads, table, -1)
        active = np.zeros(table.slot_capacity + 1, np.int64)
        got = check_like("active", arrays["active"], self.active, table.high_water + 1)
        active[: got.size] = got
        aux = check_like("aux", arrays["aux"], self.aux, _AUX).copy()
        rows = {}
        for side, base in SIDE_BASE.items():
            hw, first, live = int(aux[base]), int(aux[base + 1]), int(aux[base + 2])
            if min(hw, first, live) < 0 or first + live > hw:
                raise ValueError(f"{side} rows: counters {aux[base:base + 3].tolist()} are inconsistent")
            cap = max(16, hw)
            fields = []
            for name, arr, fill in self.rows[side]:
                got = check_like(f"{side}.{name}", arrays[f"{side}.{name}"], arr, hw)
                out = np.full(cap, fill, arr.dtype)
                out[: got.size] = got
                fields.append((name, out, fill))
            flag = dict((name, out) for name, out, _ in fields)["flag"]
            if np.count_nonzero(flag[:hw]) != live:
                raise ValueError(f"{side} rows: {np.count_nonzero(flag[:hw])} are flagged live, the counters say "
                                 f"{live}")
            if np.count_nonzero(flag[:first]):  # (an old checkpoint's count of freed rows)
                aux[base + 1] = 0
            rows[side] = fields
        self.table, self.heads, self.active, self.aux, self.rows, self.key_tables = (
            table, heads, active, aux, rows, key_tables)
