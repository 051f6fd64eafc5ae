"""Kernels of slot-keyed window state against plain-Python references.

``due_slots`` (which entries a watermark made due), ``sliding_due`` (the
planned rows of due sliding windows, and the panes it frees),
``unlink_sessions``, ``topn_rows`` and the tie-row kernels of ``TopN(ties=True)`` run here on tables built directly with the hash-table
kernels, so a wrong order, a missed entry or a leaked slot fails here before
it shows as a wrong window in the operator tests.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laminar_jit.kernels.hashtable import ht_find, ht_find_or_insert
from laminar_jit.kernels.ranking import TIE_TAKEN, topn_rows, topn_tie_free, topn_tie_offer, topn_tie_rows
from laminar_jit.kernels.sessions import unlink_sessions
from laminar_jit.kernels.sliding import NULL_KEY, sliding_due
from laminar_jit.kernels.slots import due_slots
from laminar_jit.state import KeyTable
from laminar_jit.state.ties import TieRows

WM_MIN = np.iinfo(np.int64).min
WM_MAX = np.iinfo(np.int64).max
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _insert(table: KeyTable, k0: int, k1: int) -> int:
    table.reserve(1)
    return int(ht_find_or_insert(table.buckets, table.keys, table.meta, table.free, np.int64(k0), np.int64(k1)))


def _live(table: KeyTable) -> dict[tuple[int, int], int]:
    out = {}
    for s in range(int(table.meta[1])):
        k = (int(table.keys[s, 0]), int(table.keys[s, 1]))
        if ht_find(table.buckets, table.keys, table.meta, np.int64(k[0]), np.int64(k[1])) == s:
            out[k] = s
    return out


@SETTINGS
@given(entries=st.lists(st.tuples(st.sampled_from([0, 1, 7, -3, WM_MIN]), st.integers(-50, 50)), unique=True,
                        max_size=60),
       offset=st.integers(0, 20), wm=st.integers(-80, 80), stale_low=st.booleans())
def test_due_slots_matches_reference(entries, offset, wm, stale_low):
    table = KeyTable(width=2, capacity=4)
    for key, start in entries:
        _insert(table, key, start)
    aux = np.array([0, min((s for _, s in entries), default=WM_MAX), 0, 0], np.int64)
    if stale_low and entries:
        aux[1] = WM_MAX  # "nothing open": the scan is skipped
    fired, order, kept = due_slots(table.buckets, table.keys, table.meta, aux, table.keys[:, 1], np.int64(offset),
                                   np.int64(wm))
    live = _live(table)
    if stale_low and entries:
        assert fired.size == 0 and kept.size == 0
        return
    due = sorted((start, key) for (key, start) in live if start + offset <= wm)
    assert [(int(table.keys[fired[o], 1]), int(table.keys[fired[o], 0])) for o in order] == due
    assert sorted(fired.tolist() + kept.tolist()) == sorted(live.values()) if due else True
    stay = [start for (key, start) in live if start + offset > wm]
    if due:
        assert aux[1] == (min(stay) if stay else WM_MAX)


class Panes:
    """A sliding window's state built by hand: (key, pane) entries on per-pane lists."""

    def __init__(self):
        self.table = KeyTable(width=2, capacity=4)
        self.panes = KeyTable(width=1, capacity=4)
        self.pnext = np.full(1024, -1, np.int64)
        self.phead = np.full(1024, -1, np.int64)
        self.pcount = np.zeros(1024, np.int64)
        self.psorted = np.zeros(1024, np.int64)
        self.aux = np.array([0, WM_MAX, WM_MIN, WM_MIN], np.int64)
        self.pane_of = np.zeros(1024, np.int64)  # a freed slot's key is reset: its pane is kept here

    def add(self, key: int, pane: int) -> int:
        live = int(self.table.meta[0])
        s = _insert(self.table, key, pane)
        if self.table.meta[0] == live:  # not a new entry: already on its pane's list
            return s
        self.pane_of[s] = pane
        q = _insert(self.panes, pane, 0)
        self.pnext[s] = self.phead[q]
        self.phead[q] = s
        self.pcount[q] += 1
        self.aux[1] = min(self.aux[1], pane)
        self.aux[2] = max(self.aux[2], pane)
        return s

    def fire(self, wm, size, slide, offset, lateness):
        t = self.table
        return sliding_due(np.int64(wm), np.int64(size), np.int64(slide), np.int64(offset), np.int64(lateness),
                           t.buckets, t.keys, t.meta, t.free, self.aux, self.pnext, self.panes.buckets,
                           self.panes.keys, self.panes.meta, self.panes.free, self.phead, self.pcount, self.psorted)


@SETTINGS
@given(data=st.data(), slide_panes=st.integers(1, 3), size_slides=st.integers(2, 4), offset=st.integers(0, 2),
       key_spread=st.sampled_from([3, 10**6]), fires=st.lists(st.integers(-20, 60), min_size=1, max_size=4))
def test_sliding_due_plans_every_window_of_reference(data, slide_panes, size_slides, offset, key_spread, fires):
    pane = 5
    slide = slide_panes * pane
    size = slide * size_slides
    offset = offset * pane
    state = Panes()
    keys = st.one_of(st.integers(0, 6).map(lambda k: k * key_spread), st.just(NULL_KEY))
    # each key contributes a distinct number of rows (1 + k) to the state's fields, kept here by slot
    contents: dict[tuple[int, int], int] = {}
    value = np.zeros(1024, np.int64)
    next_start = None
    for wm in sorted(fires):
        for key, p in data.draw(st.lists(st.tuples(keys, st.integers(0, 12)), max_size=25)):
            pane_start = p * pane + offset
            if next_start is not None and ((pane_start - offset) // slide) * slide + offset < next_start:
                continue  # only windows already emitted hold it: the operator drops such a row as late
            s = state.add(key, pane_start)
            value[s] += 1
            contents[(key, pane_start)] = contents.get((key, pane_start), 0) + 1
        win_start, key, seg_lo, seg_hi, cell, row_lo, row_cell, width, slots, gone = state.fire(
            wm * pane, size, slide, offset, 0)
        scratch = np.zeros(width, np.int64)
        sums = np.zeros(win_start.size, np.int64)
        for w in range(seg_lo.size):
            panes = {}
            for p in range(seg_lo[w], seg_hi[w]):
                scratch[cell[p]] += value[slots[p]]
                panes.setdefault(int(cell[p]), []).append(int(state.pane_of[slots[p]]))
            assert all(v == sorted(v) and len(set(v)) == len(v) for v in panes.values())  # pane order
            rows = range(row_lo[w], row_lo[w + 1])
            assert sorted(panes) == sorted(int(row_cell[o]) for o in rows)  # a row per key of the window
            for o in rows:
                sums[o] = scratch[row_cell[o]]
                scratch[row_cell[o]] = 0
        assert row_lo[-1] == win_start.size and not scratch.any()
        cells = {}  # distinct keys have distinct cells, ordered as the keys
        for k, c in zip(key.tolist(), row_cell.tolist()):
            assert cells.setdefault(k, c) == c
        assert sorted(cells.values()) == [cells[k] for k in sorted(cells)] and len(set(cells.values())) == len(cells)
        got = {(int(w), int(k)): int(n) for w, k, n in zip(win_start, key, sums)}
        order = [(int(w), int(k)) for w, k in zip(win_start, key)]
        assert order == sorted(order)
        # reference: every window due now that holds an entry, and was not emitted before
        due_last = ((wm * pane - size - offset) // slide) * slide + offset
        want = {}
        for (k, ps), n in contents.items():
            first = ((ps - size - offset) // slide + 1) * slide + offset
            for ws in range(first, ps + 1, slide):
                if ws <= due_last and (next_start is None or ws >= next_start):
                    want[(ws, k)] = want.get((ws, k), 0) + n
        assert got == want
        # panes all of whose windows are emitted are freed, with their entries
        for s in gone:
            value[s] = 0
        contents = {(k, ps): n for (k, ps), n in contents.items()
                    if ((ps - offset) // slide) * slide + offset > min(due_last, state_top(contents, offset, slide))}
        assert set(_live(state.table)) == set(contents)
        next_start = max(next_start if next_start is not None else WM_MIN, due_last + slide)


def state_top(contents, offset, slide):
    """Start of the last window holding the newest open pane (what a fire can reach)."""
    if not contents:
        return WM_MAX
    top = max(ps for _, ps in contents)
    return ((top - offset) // slide) * slide + offset


@SETTINGS
@given(sessions=st.lists(st.integers(0, 4), min_size=1, max_size=30), data=st.data())
def test_unlink_sessions_keeps_the_other_sessions_listed(sessions, data):
    table = KeyTable(width=2, capacity=4)
    heads = KeyTable(width=1, capacity=4)
    head = np.full(1024, -1, np.int64)
    snext = np.full(1024, -1, np.int64)
    by_key: dict[int, list[int]] = {}
    for serial, key in enumerate(sessions):
        s = _insert(table, key, serial)
        ks = _insert(heads, key, 0)
        snext[s] = head[ks]
        head[ks] = s
        by_key.setdefault(key, []).insert(0, s)
    everything = [s for slots in by_key.values() for s in slots]
    fired = np.array(data.draw(st.lists(st.sampled_from(everything), unique=True)), np.int32)
    unlink_sessions(fired, table.keys, heads.buckets, heads.keys, heads.meta, heads.free, head, snext)
    for key, slots in by_key.items():
        left = [s for s in slots if s not in set(fired.tolist())]
        ks = ht_find(heads.buckets, heads.keys, heads.meta, np.int64(key), np.int64(0))
        if not left:
            assert ks < 0  # a key with no open session leaves the table of keys
            continue
        listed, cur = [], head[ks]
        while cur >= 0:
            listed.append(int(cur))
            cur = snext[cur]
        assert listed == left
    assert all(snext[s] == -1 for s in fired)


@SETTINGS
@given(slots=st.lists(st.lists(st.tuples(st.sampled_from([1.0, 2.0, -0.5, 7.0]), st.integers(0, 99)),
                               max_size=4, unique_by=lambda r: r[1]), max_size=6),
       descending=st.booleans(), data=st.data())
def test_topn_rows_ranks_by_value_then_arrival(slots, descending, data):
    n = 4
    count = np.array([len(rows) for rows in slots], np.int64)
    by = np.zeros((len(slots), n), np.float64)
    seq = np.zeros((len(slots), n), np.int64)
    for s, rows in enumerate(slots):
        for c, (v, q) in enumerate(rows):
            by[s, c], seq[s, c] = v, q
    fired = np.array(data.draw(st.permutations(range(len(slots)))), np.int32)
    order = np.array(data.draw(st.permutations(range(len(slots)))), np.int64)
    row_slot, row_col, rank = topn_rows(fired, order, count, by, seq, descending)
    want = []
    for o in order:
        s = int(fired[o])
        ranked = sorted(range(count[s]), key=lambda c: (-by[s, c] if descending else by[s, c], seq[s, c]))
        want += [(s, c, r + 1) for r, c in enumerate(ranked)]
    assert list(zip(row_slot.tolist(), row_col.tolist(), rank.tolist())) == want


def _rank_reference(rows, n, descending):
    """SQL ``rank() <= n`` of ``(value, arrival)`` rows, in (rank, arrival) order: (arrival, value, rank)."""
    better = (lambda a, b: a > b) if descending else (lambda a, b: a < b)
    ranked = [(1 + sum(better(w, v) for w, _ in rows), q, v) for v, q in rows]
    return [(q, v, r) for r, q, v in sorted(ranked) if r <= n]


@SETTINGS
@given(n=st.integers(1, 4), rounds=st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), max_size=40),
                                             min_size=1, max_size=3),
       descending=st.booleans(), data=st.data())
def test_topn_tie_kernels_keep_every_row_ranked_at_most_n(n, rounds, descending, data):
    # three slots take rows (small values: many ties) round after round; after each round some slots fire
    # (their rows are ranked and freed) and take new rows in the next, reusing freed tie rows
    slots = 3
    count = np.zeros(slots, np.int64)
    by = np.zeros((slots, n), np.float64)
    seq = np.zeros((slots, n), np.int64)
    ties = TieRows([np.float64], slots, capacity=1)
    head, pool, tie_slot, tie_next, tie_seq, tie_val, _ = ties.arrays()
    offered = {s: [] for s in range(slots)}
    q = 0
    for offers in rounds:
        ties.reserve(len(offers))  # one tie row per offered row at most (it grows by doubling)
        head, pool, tie_slot, tie_next, tie_seq, tie_val, _ = ties.arrays()
        for s, v in offers:
            offered[s].append((float(v), q))
            c = topn_tie_offer(np.int64(s), float(v), np.int64(q), count, by, seq, descending,
                               head, pool, tie_slot, tie_next, tie_seq)
            o = pool[TIE_TAKEN]
            if o >= 0:
                if c < 0:
                    tie_val[o] = v
                    q += 1
                    continue
                tie_val[o] = by[s, c]  # the replaced kept row becomes a tie row
            elif c < 0:
                q += 1
                continue
            seq[s, c], by[s, c] = q, v
            q += 1
        held = {s: _rank_reference(offered[s], n, descending) for s in range(slots)}
        assert len(ties) == sum(max(len(rows) - n, 0) for rows in held.values())  # no stale tie rows
        fired = np.array(data.draw(st.lists(st.sampled_from(range(slots)), unique=True)), np.int32)
        order = np.argsort(fired).astype(np.int64)
        row_slot, row_col, rank = topn_tie_rows(fired, order, count, by, seq, descending, head, tie_next, tie_seq)
        got, want = [], []
        for s, c, r in zip(row_slot.tolist(), row_col.tolist(), rank.tolist()):
            got.append((s, *((seq[s, c], by[s, c]) if c >= 0 else (tie_seq[-1 - c], tie_val[-1 - c])), r))
        for s in sorted(fired.tolist()):
            want += [(s, *row) for row in held[s]]
            offered[s] = []
        assert got == want
        topn_tie_free(fired, head, pool, tie_slot, tie_next)
        count[fired] = 0
        assert (head[fired] == -1).all()
        assert len(ties) == int((tie_slot[: ties.high_water] >= 0).sum())
        assert set(tie_slot[tie_slot >= 0].tolist()) <= set(range(slots)) - set(fired.tolist())
