"""State of a window operator: a key table over (key, window start) plus aggregate fields."""

from __future__ import annotations

import numpy as np

from .keytable import (KeyedEntries, KeyTable, check_like, check_names, put_table, remap_codes,
                       put_tables, take_slots, take_table, take_tables)
from .ties import TieRows

__all__ = ["WindowState"]


_WM_MAX = np.iinfo(np.int64).max
_WM_MIN = np.iinfo(np.int64).min


class WindowState(KeyedEntries):
    """Per-node window state, owned by the executor, passed to the compiled step.

    Session windows key the table by ``(key, session serial number)`` instead
    and add per-slot bounds plus a per-key list of open sessions. Sliding
    windows key it by ``(key, pane start)`` and add a list per open pane
    (``pnext`` per slot; a small table of pane starts with each list's head
    and length), which a fire walks for the panes of the windows it emits.
    A fire sorts a pane's list by key the first time it uses it (and again
    only if entries joined it since), then merges a window's panes in key
    order.

    Open windows live in a :class:`KeyTable` keyed by ``(key, window_start)``;
    each aggregate keeps its blueprint's fields as per-slot arrays. Firing a
    window deletes its slots, and slots are reused, so memory is bounded by
    live keys × open windows, not by history.

    Parameters
    ----------
    bound : Bound
        The window operator bound to its input schema.
    capacity : int
        Initial number of (key, window) slots.
    """

    def __init__(self, bound, capacity: int = 1024):
        spec = bound.spec  # a WindowSpec
        self.session = spec.session
        #: Sliding windows (``slide < size``) key the table by ``(key, pane start)`` and thread
        #: each pane's entries on a list, so a fire visits only the panes of the due windows.
        self.sliding = spec.sliding
        #: Windows one entry can fall in (the fan-out of a pane when windows fire).
        self.windows_per_entry = spec.windows_per_entry
        #: Rows an open entry emits when it fires: one per window, up to n for a TopN, and none for a
        #: Dedup (it passes input rows on and emits nothing of its own).
        self.rows_per_entry = spec.rows_per_entry
        self.table = KeyTable(width=2, capacity=capacity)
        # Composite keys (a, b, c): (a, b) -> id1, (id1, c) -> id2, ... one table per level.
        # They map key combinations ever seen, like a dictionary, and are not pruned.
        self.key_tables = [KeyTable(width=2, capacity=capacity) for _ in spec.keys[1:]]
        # aux: arrival sequence counter, smallest and largest open pane start,
        # next sliding window start to emit (int64 minimum: not yet known)
        self.aux = np.array([0, _WM_MAX, _WM_MIN, _WM_MIN], np.int64)
        self.fields: list[tuple[str, np.ndarray, object]] = []
        if self.session:
            # Sessions: the table is keyed by (key, serial number) and each slot
            # keeps its bounds and the next session of the same key; a second
            # table maps a key to the head of its list of open sessions.
            self.aux[3] = 0  # next serial number
            for name, init in (("start", 0), ("end", 0), ("next", -1)):
                self.fields.append((name, np.full(self.table.slot_capacity, init, np.int64), init))
            self.heads = KeyTable(width=1, capacity=capacity)
            self.head = np.full(self.heads.slot_capacity, -1, np.int64)
        dtypes = dict(zip(bound.reads, bound.read_dtypes))
        for j, (name, agg) in enumerate(spec.aggs):
            in_dtype = dtypes.get(agg.column, np.dtype(np.int64))
            for field, rule, init in agg.blueprint.fields:
                dtype = rule(in_dtype)
                self.fields.append((f"a{j}_{field}", np.full(self.table.slot_capacity, init, dtype), init))
        if spec.kind == "topn":
            # TopN: per (key, window) slot, how many rows it keeps, their arrival numbers and,
            # per input column, values and validity of up to n rows
            cap, n = self.table.slot_capacity, spec.topn
            self.fields.append(("t_count", np.zeros(cap, np.int64), 0))
            self.fields.append(("t_seq", np.zeros((cap, n), np.int64), 0))
            for j, (_, dtype) in enumerate(spec.payload):
                self.fields.append((f"t_c{j}", np.zeros((cap, n), np.int64 if dtype is None else dtype), 0))
                self.fields.append((f"t_v{j}", np.zeros((cap, n), np.bool_), False))
        #: TopN(ties=True): the rows beyond a slot's n that tie its n-th best value (None otherwise).
        self.ties = TieRows([dtype for _, dtype in spec.payload], self.table.slot_capacity) \
            if spec.kind == "topn" and spec.ties else None
        self.topn = spec.topn
        #: A TopN's ranking: its ``by`` column's place among the kept columns, whether larger is better, and
        #: the number of kept columns.
        self.ranking = ([name for name, _ in spec.payload].index(spec.by), spec.descending, len(spec.payload)) \
            if spec.kind == "topn" else None
        #: ``count_distinct`` aggregates' value sets: (aggregate index, a table keyed by (slot, value),
        #: the next entry of each entry's slot list); see :mod:`laminar_jit.kernels.distinct`.
        self.sets = [(j, KeyTable(width=2, capacity=capacity), np.full(capacity, -1, np.int64))
                     for j, (_, agg) in enumerate(spec.aggs) if agg.blueprint.sets]
        if self.sliding:
            # per (key, pane) entry: the next entry of the same pane; per open pane (a width-1
            # table by pane start): the head of its list of entries, their number, and their
            # number when the list was last sorted by key (equal: the list is in key order)
            self.fields.append(("pnext", np.full(self.table.slot_capacity, -1, np.int64), -1))
            self.panes = KeyTable(width=1, capacity=16)
            self.pane_arrays = [("phead", np.full(self.panes.slot_capacity, -1, np.int64), -1),
                                ("pcount", np.zeros(self.panes.slot_capacity, np.int64), 0),
                                ("psorted", np.zeros(self.panes.slot_capacity, np.int64), 0)]

    def __len__(self) -> int:
        """Open (key, window) entries."""
        return len(self.table)

    def max_emit(self, rows: int) -> int:
        """Rows one call can emit (each open entry fires at most once; ``rows`` matters only for tie rows).

        A TopN keeping ties also emits its tie rows: those held now and at
        most one per row the call offers it.
        """
        ties = len(self.ties) + rows if self.ties is not None else 0
        return len(self.table) * self.rows_per_entry * self.windows_per_entry + ties

    def max_emit_opening(self, new_entries: int) -> int:
        """Rows one call that may open ``new_entries`` entries (from as many rows) can emit (key shards)."""
        ties = len(self.ties) + new_entries if self.ties is not None else 0
        return (len(self.table) + new_entries) * self.rows_per_entry * self.windows_per_entry + ties

    def reserve(self, extra: int) -> None:
        """Guarantee room for ``extra`` new entries before a compiled call."""
        for table in self.key_tables:
            if table.headroom < extra:
                table.reserve(extra)
        if self.session and self.heads.headroom < extra:
            self.heads.reserve(extra)
            self.head = self.heads.grow_slots(self.head, -1)
        if self.sliding and self.panes.headroom < extra:
            self.panes.reserve(extra)
            self.pane_arrays = [(name, self.panes.grow_slots(arr, init), init) for name, arr, init in self.pane_arrays]
        if self.ties is not None:
            self.ties.reserve(extra)  # a row adds at most one tie row
        self.sets = [(j, t, nxt) if t.headroom >= extra else (j, t, _grown(t, extra, nxt))
                     for j, t, nxt in self.sets]  # a row adds at most one value to each set
        if self.table.headroom >= extra:
            return
        self.table.reserve(extra)
        self.fields = [(name, self.table.grow_slots(arr, init), init) for name, arr, init in self.fields]
        if self.ties is not None:
            self.ties.grow_slots(self.table)

    def arrays(self) -> list[np.ndarray]:
        """The arrays in the order the generated step takes them."""
        t = self.table
        out = [t.buckets, t.keys, t.meta, t.free, self.aux]
        if self.session:
            h = self.heads
            out += [arr for _, arr, _ in self.fields[:3]] + [h.buckets, h.keys, h.meta, h.free, self.head]
            out += [arr for _, arr, _ in self.fields[3:]]
        else:
            out += [arr for _, arr, _ in self.fields]
        if self.ties is not None:
            out += self.ties.arrays()
        if self.sliding:
            p = self.panes
            out += [p.buckets, p.keys, p.meta, p.free] + [arr for _, arr, _ in self.pane_arrays]
        for _, t, nxt in self.sets:
            out += [t.buckets, t.keys, t.meta, t.free, nxt]
        for k in self.key_tables:  # last: generated code finds them at the end
            out += [k.buckets, k.keys, k.meta, k.free]
        return out

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of every state array by name (for checkpoints; see :meth:`load_snapshot`)."""
        out: dict[str, np.ndarray] = {}
        put_tables(out, self.table, self.key_tables)
        out["aux"] = self.aux.copy()
        for name, arr, _ in self.fields:
            out[f"field.{name}"] = arr[: self.table.high_water].copy()
        if self.ties is not None:
            self.ties.snapshot(out)
        if self.session:
            put_table(out, "heads", self.heads)
            out["head"] = self.head[: self.heads.high_water].copy()
        if self.sliding:
            put_table(out, "panes", self.panes)
            for name, arr, _ in self.pane_arrays:
                out[name] = arr[: self.panes.high_water].copy()
        for j, t, nxt in self.sets:
            put_table(out, f"set{j}", t)
            out[f"set{j}.next"] = nxt[: t.high_water].copy()
        return out

    def load_snapshot(self, arrays) -> None:
        """Replace this (fresh) state by :meth:`snapshot` output, validating all of it first.

        Raises
        ------
        ValueError
            When names, dtypes or lengths do not fit this operator's state;
            the state is then unchanged.
        """
        check_names(arrays, self.snapshot())
        table, key_tables = take_tables(arrays, len(self.key_tables))
        aux = check_like("aux", arrays["aux"], self.aux, self.aux.size)
        fields = [(name, take_slots(arrays, f"field.{name}", arr, table, init), init) for name, arr, init in self.fields]
        if self.ties is not None:
            count = next(arr for name, arr, _ in fields if name == "t_count")
            ties = self.ties.load(arrays, table, count, self.topn)
        if self.session:
            heads = take_table(arrays, "heads")
            self.head = take_slots(arrays, "head", self.head, heads, -1)
            self.heads = heads
        if self.sliding:
            panes = take_table(arrays, "panes")
            pane_arrays = [(name, take_slots(arrays, name, arr, panes, init), init) for name, arr, init in self.pane_arrays]
            self.panes, self.pane_arrays = panes, pane_arrays
        sets = []
        for j, _, nxt in self.sets:
            t = take_table(arrays, f"set{j}")
            sets.append((j, t, take_slots(arrays, f"set{j}.next", nxt, t, -1)))
        self.table, self.aux, self.fields, self.key_tables, self.sets = table, aux, fields, key_tables, sets
        if self.ties is not None:
            self.ties = ties

    # ------------------------------------------------------------ rescaling
    def recode(self, key_maps: list, value_maps: dict) -> None:
        """Rewrite every string code this state holds through old -> new code maps (see ``recode_keys``).

        ``key_maps`` per key column; ``value_maps`` by place: ``("agg", None, j)``
        (aggregate ``j``'s value, or its distinct values) and ``("payload", None, j)``
        (a TopN's kept column ``j``, tie rows too).
        """
        self.recode_keys(key_maps)
        if self.session and not self.key_tables and key_maps and key_maps[0] is not None:
            remap_codes(self.heads.keys[:, 0], key_maps[0])  # each key's list of open sessions
        fields = {name: arr for name, arr, _ in self.fields}
        for (kind, _, j), m in value_maps.items():
            if kind == "agg":
                if f"a{j}_v" in fields:  # min, max, first, last
                    remap_codes(fields[f"a{j}_v"], m)
                for i, table, _ in self.sets:  # count_distinct: the (entry, value) table
                    if i == j:
                        remap_codes(table.keys[:, 1], m)
            else:
                remap_codes(fields[f"t_c{j}"], m)
                if self.ties is not None:
                    remap_codes(self.ties.rows[3 + 2 * j], m)

    def absorb(self, src: "WindowState", slots) -> None:
        """Copy the entries ``slots`` of ``src``, whose keys this state does not hold, into this state.

        How key shards rescale: a checkpoint of ``N`` shards absorbs every
        shard's entries into one fresh state, and a restore onto ``M`` shards
        gives each shard the entries of its key groups. Entries keep their
        aggregates, TopN rows (and tie rows), session bounds and lists; sliding windows'
        pane lists are relinked and marked unsorted (a fire sorts them by key
        before use). The registers take the later of both states' progress
        (arrival and session numbers, the next sliding window to emit) and
        bounds covering both states' open entries.

        Parameters
        ----------
        src : WindowState
            A state of the same operator.
        slots : array_like of int
            Live slots of ``src.table``, of keys absent from this state.

        Raises
        ------
        ValueError
            A key of ``slots`` is already held here.
        """
        slots = np.asarray(slots, np.int64)
        n = slots.size
        aux, src_aux = self.aux, src.aux
        aux[0] = max(aux[0], src_aux[0])
        aux[3] = max(aux[3], src_aux[3])
        if n == 0:
            return
        old_keys = src.table.keys[slots, 0]
        starts = src.table.keys[slots, 1]
        new = self._absorb_entries(src, slots, starts)
        remap = np.full(src.table.slot_capacity, -1, np.int64)
        remap[slots] = new
        for (name, arr, _), (_, src_arr, _) in zip(self.fields, src.fields):
            if name == "next":  # a session's next session of the same key
                arr[new] = _follow(remap, src_arr[slots])
            elif name != "pnext":
                arr[new] = src_arr[slots]
        if self.ties is not None:  # a TopN's tie rows of the moved entries
            self.ties.absorb(src.ties, remap)
        if self.sets:
            self._absorb_sets(src, remap, new)
        if self.session:  # each key's list of open sessions starts at its head
            held = src.heads.live_slots().astype(np.int64)
            head_keys = src.heads.keys[held, 0]
            moved = np.isin(head_keys, old_keys)
            held, head_keys = held[moved], head_keys[moved]
            ids = self._compose(src.key_columns(head_keys)) if self.key_tables else head_keys
            self.head[self.heads.upsert_many(ids).astype(np.int64)] = _follow(remap, src.head[held])
        if self.sliding:
            self._link_panes(new, starts)
        else:
            aux[1] = min(aux[1], src_aux[1])
            aux[2] = max(aux[2], src_aux[2])

    def combine(self, src: "WindowState", kinds: tuple[str, ...]) -> None:
        """Add the entries of ``src`` (another shard's of a window without a key, run in two phases) to this state.

        An entry of a (key, window or pane) this state holds too combines
        with it as pane merging does: counts and sums add, a minimum or
        maximum keeps the better value (NaN above every number); the others
        are copied in (:meth:`absorb`).

        Parameters
        ----------
        src : WindowState
            A state of the same operator.
        kinds : tuple of str
            Each aggregate's kind: ``"count"``, ``"sum"``, ``"min"`` or ``"max"``.
        """
        slots = src.table.live_slots().astype(np.int64)
        here = np.array([self.table.find(int(k0), int(k1)) for k0, k1 in src.table.keys[slots]], np.int64)
        held = here >= 0
        d, s = here[held], slots[held]  # (one entry per window or pane: a few per key, and these have one key)
        fields = {name: arr for name, arr, _ in self.fields}
        theirs = {name: arr for name, arr, _ in src.fields}
        if self.ranking is not None:  # a TopN: each window keeps the best of both states' rows
            self._combine_topn(src, d, s)
        for j, kind in enumerate(kinds):
            n, their_n = fields[f"a{j}_n"], theirs[f"a{j}_n"]
            if kind in ("min", "max"):
                v = fields[f"a{j}_v"]
                new, cur = theirs[f"a{j}_v"][s], v[d]
                better = ((new < cur) | ((cur != cur) & (new == new)) if kind == "min"
                          else (new > cur) | ((new != new) & (cur == cur)))
                take = (their_n[s] > 0) & ((n[d] == 0) | better)
                v[d[take]] = new[take]
            elif kind == "sum":
                fields[f"a{j}_acc"][d] += theirs[f"a{j}_acc"][s]
            elif kind != "count":
                raise ValueError(f"aggregate kind {kind!r} does not combine from two states")
            n[d] += their_n[s]
        self.absorb(src, slots[~held])

    def _combine_topn(self, src: "WindowState", here: np.ndarray, there: np.ndarray) -> None:
        """Keep in each entry ``here[i]`` the best rows of its own and of ``src``'s entry ``there[i]``.

        The best ``n`` by ``by``, then arrival number (the shards of a TopN in
        two phases number rows by their place in the input), and with ties
        every other row equal to the n-th best value: what one executor keeps
        after seeing both states' rows in the order of their numbers.
        """
        fields = {name: arr for name, arr, _ in self.fields}
        theirs = {name: arr for name, arr, _ in src.fields}
        by, descending, width = self.ranking
        ties_kept = []  # (slot, rows of the pool) of this state's entries that keep tie rows
        for d, s in zip(here.tolist(), there.tolist()):
            rows = self._topn_rows(fields, d) + src._topn_rows(theirs, s)
            rows.sort(key=lambda r: (-r[1][by].item() if descending else r[1][by].item(), r[0]))
            kept, rest = rows[:self.topn], rows[self.topn:]
            fields["t_count"][d] = len(kept)
            for c, (q, values, valid) in enumerate(kept):
                fields["t_seq"][d, c] = q
                for j in range(width):
                    fields[f"t_c{j}"][d, c] = values[j]
                    fields[f"t_v{j}"][d, c] = valid[j]
            if self.ties is not None and len(kept) == self.topn:
                ties_kept.append((d, [r for r in rest if r[1][by] == kept[-1][1][by]]))
        if self.ties is not None:  # the pool again: the other entries' tie rows, then the combined entries'
            old, combined = self.ties, {d for d, _ in ties_kept}
            live = old.live_rows()
            live = live[~np.isin(old.rows[0][live], np.fromiter(combined, np.int64, len(combined)))]
            self.ties = TieRows(old.dtypes, self.table.slot_capacity)
            self.ties._append(old.rows[0][live], old.rows[2][live], [col[live] for col in old.rows[3:]])
            add = [(d, r) for d, rs in ties_kept for r in rs]
            if add:
                cols = []
                for j in range(width):
                    cols += [np.array([r[1][j] for _, r in add], old.dtypes[j]),
                             np.array([r[2][j] for _, r in add], np.bool_)]
                self.ties._append(np.array([d for d, _ in add], np.int64),
                                  np.array([r[0] for _, r in add], np.int64), cols)

    def _topn_rows(self, fields: dict, slot: int) -> list:
        """``(arrival, values, validity)`` of every row a TopN entry keeps: its best ``n`` and its tie rows."""
        width = self.ranking[2]
        rows = [(int(fields["t_seq"][slot, c]), [fields[f"t_c{j}"][slot, c] for j in range(width)],
                 [bool(fields[f"t_v{j}"][slot, c]) for j in range(width)]) for c in range(fields["t_count"][slot])]
        if self.ties is not None:
            pool, t = self.ties.rows, int(self.ties.head[slot])
            while t >= 0:
                rows.append((int(pool[2][t]), [pool[3 + 2 * j][t] for j in range(width)],
                             [bool(pool[4 + 2 * j][t]) for j in range(width)]))
                t = int(pool[1][t])
        return rows

    def _absorb_sets(self, src: "WindowState", remap: np.ndarray, new: np.ndarray) -> None:
        """Copy the distinct values of the moved entries (``remap``: src slot -> slot here) into this state's sets."""
        heads = {name: arr for name, arr, _ in self.fields}
        for (j, t, _), (_, src_t, _) in zip(self.sets, src.sets):
            h = heads[f"a{j}_h"]
            h[new] = -1  # (the field copy brought the source's entry numbers)
            held = src_t.live_slots().astype(np.int64)
            slot = remap[src_t.keys[held, 0]]
            moved = slot >= 0
            slot, values = slot[moved], src_t.keys[held[moved], 1]
            if slot.size == 0:
                continue
            entries = t.upsert_many(slot, values).astype(np.int64)  # (grows the table as needed)
            nxt = t.grow_slots(next(nn for i, _, nn in self.sets if i == j), -1)
            self.sets = [(i, tt, nxt if i == j else nn) for i, tt, nn in self.sets]
            order = np.argsort(slot, kind="stable")
            slot, entries = slot[order], entries[order]
            last = np.ones(slot.size, np.bool_)
            last[:-1] = slot[:-1] != slot[1:]
            follow = np.roll(entries, -1)
            follow[last] = -1  # each slot's list: its entries in order, ending at -1
            nxt[entries] = follow
            first = np.ones(slot.size, np.bool_)
            first[1:] = slot[1:] != slot[:-1]
            h[slot[first]] = entries[first]

    def _link_panes(self, entries: np.ndarray, starts: np.ndarray) -> None:
        """Put new ``entries`` (of panes ``starts``) at the head of their panes' lists; reset the pane bounds."""
        arrays = {name: arr for name, arr, _ in self.pane_arrays}
        phead, pcount, psorted = arrays["phead"], arrays["pcount"], arrays["psorted"]
        pnext = next(arr for name, arr, _ in self.fields if name == "pnext")
        pane = self.panes.upsert_many(starts).astype(np.int64)
        order = np.argsort(pane, kind="stable")
        pane, entries = pane[order], entries[order]
        first = np.ones(pane.size, np.bool_)
        first[1:] = pane[1:] != pane[:-1]
        last = np.roll(first, -1)
        follow = np.roll(entries, -1)
        follow[last] = phead[pane[last]]  # a pane's new entries lead to its old list
        pnext[entries] = follow
        phead[pane[first]] = entries[first]
        pcount += np.bincount(pane, minlength=pcount.size)[: pcount.size]
        psorted[pane] = 0  # relinked: sorted by key again when a fire first uses it
        open_panes = self.panes.live_slots()
        open_panes = open_panes[pcount[open_panes] > 0]
        pane_starts = self.panes.keys[open_panes, 0]
        self.aux[1] = pane_starts.min() if pane_starts.size else _WM_MAX
        self.aux[2] = pane_starts.max() if pane_starts.size else _WM_MIN

    @staticmethod
    def aggregate_names(node_id: int, j: int, agg) -> list[str]:
        """Parameter names of aggregate ``j``'s field arrays (its blueprint's fields, in order)."""
        return [f"st{node_id}_a{j}_{field}" for field, _, _ in agg.blueprint.fields]

    @staticmethod
    def set_names(node_id: int, j: int) -> list[str]:
        """Parameter names of aggregate ``j``'s distinct-value set (table arrays, then the next-entry links)."""
        return [f"st{node_id}_a{j}_d{s}" for s in ("buckets", "keys", "meta", "free", "next")]

    @staticmethod
    def argument_names(node_id: int, bound) -> list[str]:
        """Parameter names of :meth:`arrays` in a generated step."""
        names = [f"st{node_id}_{s}" for s in ("buckets", "keys", "meta", "free", "aux")]
        spec = bound.spec
        if spec.session:
            names += [f"st{node_id}_{s}" for s in ("start", "end", "next", "kbuckets", "kkeys", "kmeta", "kfree",
                                                   "head")]
        for j, (_, agg) in enumerate(spec.aggs):
            names += WindowState.aggregate_names(node_id, j, agg)
        if spec.kind == "topn":
            names += [f"st{node_id}_t_count", f"st{node_id}_t_seq"]
            names += [f"st{node_id}_t_{kind}{j}" for j in range(len(spec.payload)) for kind in "cv"]
            if spec.ties:
                names += TieRows.argument_names(node_id, len(spec.payload))
        if spec.sliding:
            names.append(f"st{node_id}_pnext")
            names += [f"st{node_id}_p{s}" for s in ("buckets", "keys", "meta", "free", "head", "count", "sorted")]
        for j, (_, agg) in enumerate(spec.aggs):
            if agg.blueprint.sets:
                names += WindowState.set_names(node_id, j)
        for level in range(len(spec.keys) - 1):
            names += [f"st{node_id}_k{level}_{s}" for s in ("buckets", "keys", "meta", "free")]
        return names


def _grown(table: KeyTable, extra: int, nxt: np.ndarray) -> np.ndarray:
    """Reserve ``extra`` inserts in a distinct-value set; its next-entry links grown with it."""
    table.reserve(extra)
    return table.grow_slots(nxt, -1)


def _follow(remap: np.ndarray, links: np.ndarray) -> np.ndarray:
    """Slot links (-1: none) translated through ``remap`` (old slot -> new slot)."""
    return np.where(links >= 0, remap[np.maximum(links, 0)], -1)
