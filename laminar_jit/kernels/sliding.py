"""Sliding windows on panes: which entries make up each due window, and in what order.

A sliding window of size ``size`` and slide ``slide`` keeps one entry per
(key, pane) in a hash table, panes being ``gcd(size, slide)`` long; each pane
has a list of its entries (``phead``/``pnext``, ``pcount`` long) in a small
table of panes keyed by the pane's start (``pkeys[:, 0]``).

:func:`sliding_due` does all of a fire but the aggregates: it plans every due
window's rows, each a (window start, key) and the entries to merge into it,
and frees the panes all of whose windows are now emitted. The plan's generated
fire function then copies the planned entries' aggregate fields, merges them
row by row and resets the freed slots' fields: the only code that depends on
which aggregates a window computes.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from .hashtable import ht_delete, ht_delete_many
from .selection import NULL_KEY
from .sorting import argsort_pairs, sort_list

__all__ = ["sliding_due"]

WM_MIN = np.iinfo(np.int64).min
WM_MAX = np.iinfo(np.int64).max


@njit(inline="always")
def _first_window(pane_start, size, slide, offset):
    """Start of the first window holding a pane that starts at ``pane_start``."""
    return ((pane_start - size - offset) // slide + 1) * slide + offset


@njit
def _windows(pst, c, start, last, size, slide, offset, out_lo, out_hi, out_ws):
    """Every window in ``[start, last]`` holding an open pane, as panes ``pst[lo:hi]``.

    Writes the windows' starts and pane ranges to ``out_*`` and returns how many.
    """
    n = 0
    lo = 0
    hi = 0
    ws = start
    if c > 0:
        w = _first_window(pst[0], size, slide, offset)
        if w > ws:
            ws = w
    while c > 0 and ws <= last:
        while hi < c and pst[hi] < ws + size:
            hi += 1
        while lo < hi and pst[lo] < ws:
            lo += 1
        if lo < hi:
            if n == out_ws.size:  # cannot happen: see the bound in sliding_due
                return -1
            out_lo[n] = lo
            out_hi[n] = hi
            out_ws[n] = ws
            n += 1
            ws += slide
        elif hi >= c:
            break
        else:  # no open pane in this window: jump to the first window holding the next one
            w = _first_window(pst[hi], size, slide, offset)
            ws = w if w > ws else ws + slide
    return n


@njit
def sliding_due(wm_now, size, slide, offset, lateness, buckets, keys, meta, free, aux,
                pnext, pbuckets, pkeys, pmeta, pfree, phead, pcount, psorted):
    """Plan the windows the watermark made due, and free the panes no window needs any more.

    A caller's fire, for each due window ``w`` in order: merges the aggregate fields of
    ``slots[p]`` for ``p`` in ``seg_lo[w]:seg_hi[w]`` into scratch cell ``cell[p]``; then
    emits rows ``row_lo[w]:row_lo[w + 1]``, row ``o`` being ``(win_start[o], key[o])`` with
    the aggregates of cell ``row_cell[o]``, and resets those cells.

    Parameters
    ----------
    wm_now : int
        The node's watermark: windows with ``end + lateness <= wm_now`` are due.
    size, slide, offset, lateness : int
        The window's geometry (event-time units).
    buckets, keys, meta, free : numpy.ndarray
        The (key, pane) entry table (see :mod:`.hashtable`).
    aux : numpy.ndarray
        int64 registers: ``[1]``/``[2]`` least/greatest open pane start
        (``WM_MAX``/``WM_MIN``: none), ``[3]`` the next window start to emit.
    pnext, pbuckets, pkeys, pmeta, pfree, phead, pcount, psorted : numpy.ndarray
        The panes' lists and their table (``psorted``: entries of the pane
        when its list was last sorted by key).

    Returns
    -------
    win_start, key : numpy.ndarray
        int64 per output row, ordered by (window start, key); ``NULL_KEY``
        (the int64 minimum) is the null group and sorts first.
    seg_lo, seg_hi : numpy.ndarray
        int64 per due window: it merges the entries at positions ``seg_lo[w]:seg_hi[w]``
        of ``slots``, which hold its panes' entries pane after pane (so a key's entries
        come in pane order).
    cell : numpy.ndarray
        int64 per position: the scratch cell (``0 <= cell < width``) its key accumulates in.
        Distinct keys have distinct cells, ordered as the keys.
    row_lo : numpy.ndarray
        int64[windows + 1]: window ``w`` emits the rows ``row_lo[w]:row_lo[w + 1]``.
    row_cell : numpy.ndarray
        int64 per output row: the cell it is read from. A caller merges a window's entries
        into their cells, reads its rows out, and puts those cells back to initial values.
    width : int
        Scratch cells needed.
    slots : numpy.ndarray
        int64 slot of each planned entry, pane after pane: the caller copies
        their aggregate fields once and merges the copies (contiguous copies
        are read in sequence where the lists would jump between slots, and
        every pane serves ``size / slide`` windows).
    gone : numpy.ndarray
        int32 slots freed: the caller resets their aggregate fields. Their
        fields are untouched until then, so ``slots`` may name them.

    Notes
    -----
    Only the panes of due windows are visited (no scan of all open entries).
    When the copied keys span a narrow range (dictionary codes, dense ids), a
    window's entries are bucketed by key offset and read out in key order by
    one scan of the range it touched; otherwise a pane's list is sorted by key
    when a fire first uses it (and again if entries joined it since) and a
    window is a merge of its panes' sorted runs. Either way the rows come out
    ordered without a sort, and a key's panes are merged in pane order, as a
    row-at-a-time evaluation would.
    """
    start = np.int64(1)
    last = np.int64(0)
    due = WM_MIN  # start of the last window the watermark has made due, data or not
    if wm_now != WM_MIN:
        due = ((wm_now - size - lateness - offset) // slide) * slide + offset
    if aux[1] != WM_MAX:
        first = _first_window(aux[1], size, slide, offset)
        start = first if (aux[3] == WM_MIN or aux[3] < first) else aux[3]
        last = due
        top = ((aux[2] - offset) // slide) * slide + offset
        if top < last:
            last = top
    do_fire = start <= last
    # the open panes by start (few: the span of open windows over the pane length)
    m = pmeta[0] if do_fire else 0
    pst = np.empty(m, np.int64)
    psl = np.empty(m, np.int64)
    c = np.int64(0)  # int64, not a literal 0, as _windows is called with it (one compile, not two)
    if do_fire:
        for q in range(pmeta[1]):  # live panes hold entries; freed ones are reset to none
            if pcount[q] > 0:
                pst[c] = pkeys[q, 0]
                psl[c] = q
                c += 1
    po = np.argsort(pst[:c])
    pst = pst[:c][po]
    psl = psl[:c][po]

    # the due windows holding an open pane: each pane is in at most ceil(size / slide) windows
    n_cap = c * (size // slide + 1) if do_fire else 0
    w_lo = np.empty(n_cap, np.int64)
    w_hi = np.empty(n_cap, np.int64)
    w_ws = np.empty(n_cap, np.int64)
    n_win = _windows(pst, c, start, last, size, slide, offset, w_lo, w_hi, w_ws) if c > 0 else 0
    if n_win < 0:
        raise AssertionError("sliding window: more due windows than the open panes allow")
    cap = 0  # planned merges: the entries of each due window's panes
    used_lo = c  # the due windows use the panes pst[used_lo:used_hi]
    used_hi = 0
    for w in range(n_win):
        for pi in range(w_lo[w], w_hi[w]):
            cap += pcount[psl[pi]]
        used_lo = min(used_lo, w_lo[w])
        used_hi = max(used_hi, w_hi[w])

    # the used panes' entries, pane pi at [at[pi], at[pi + 1])
    at = np.zeros(c + 1, np.int64)
    for pi in range(used_lo, used_hi):
        at[pi + 1] = at[pi] + pcount[psl[pi]]
    for pi in range(used_hi, c):
        at[pi + 1] = at[pi]
    total = at[c]
    ckey = np.empty(total, np.int64)
    slots = np.empty(total, np.int64)
    kmin = WM_MAX
    kmax = WM_MIN
    for pi in range(used_lo, used_hi):
        s = phead[psl[pi]]
        for p in range(at[pi], at[pi + 1]):
            kv = keys[s, 0]
            ckey[p] = kv
            slots[p] = s
            if kv != NULL_KEY:  # the null group's key, kept apart (offset 0) by the dense path
                kmin = min(kmin, kv)
                kmax = max(kmax, kv)
            s = pnext[s]
    # Every copy gets the index of its key among the fire's keys in order (0: the null group,
    # which sorts first): an output row accumulates in that cell of the caller's scratch.
    # Dense keys (codes, small ids) span a range not much wider than a window's entries: the
    # index is then the key's offset from kmin, and a window's keys are read out in order by
    # a scan of the range its panes span. Otherwise the index is the key's rank, each pane is
    # sorted by key (once: the order is kept on its list) and a window's keys in order come
    # from merging its panes' sorted runs.
    span = np.uint64(kmax) - np.uint64(kmin) if kmin <= kmax else np.uint64(0)
    dense = total > 0 and span < np.uint64(8 * (cap // max(n_win, 1)) + 64)
    cell = np.empty(total, np.int64)
    width = 0
    if dense:
        width = np.int64(span) + 2
        for p in range(total):
            kv = ckey[p]
            cell[p] = kv - kmin + 1 if kv != NULL_KEY else np.int64(0)
    else:
        for pi in range(used_lo, used_hi):
            q = psl[pi]
            if psorted[q] != pcount[q]:
                sort_list(phead, pnext, keys, q, pcount[q])
                psorted[q] = pcount[q]
                s = phead[q]
                for p in range(at[pi], at[pi + 1]):
                    ckey[p] = keys[s, 0]
                    slots[p] = s
                    s = pnext[s]
        by_key = argsort_pairs(ckey, np.zeros(total, np.int64))  # radix: no n log n per fire
        for j in range(total):
            if j > 0 and ckey[by_key[j]] != ckey[by_key[j - 1]]:
                width += 1
            cell[by_key[j]] = width
        width += 1 if total > 0 else 0

    win_start = np.empty(cap, np.int64)
    key = np.empty(cap, np.int64)
    row_cell = np.empty(cap, np.int64)
    row_lo = np.zeros(n_win + 1, np.int64)  # window w emits rows row_lo[w]:row_lo[w + 1]
    cnt = 0
    if dense:
        # Consecutive windows share most panes: keep, per cell, how many panes of the current
        # window hold it, adding the panes a window gains and removing those it loses (each
        # pane once), and read a window's keys in order from the cells its panes span.
        held = np.zeros(width, np.int64)
        pmin = np.empty(c, np.int64)
        pmax = np.empty(c, np.int64)
        for pi in range(used_lo, used_hi):
            pmin[pi] = width
            pmax[pi] = -1
            for p in range(at[pi], at[pi + 1]):
                pmin[pi] = min(pmin[pi], cell[p])
                pmax[pi] = max(pmax[pi], cell[p])
        cur_lo = w_lo[0] if n_win > 0 else 0
        cur_hi = cur_lo
        for w in range(n_win):
            for pi in range(cur_hi, w_hi[w]):
                for p in range(at[pi], at[pi + 1]):
                    held[cell[p]] += 1
            cur_hi = max(cur_hi, w_hi[w])
            for pi in range(cur_lo, w_lo[w]):
                for p in range(at[pi], at[pi + 1]):
                    held[cell[p]] -= 1
            cur_lo = max(cur_lo, w_lo[w])
            r_lo = width
            r_hi = np.int64(-1)
            for pi in range(w_lo[w], w_hi[w]):
                r_lo = min(r_lo, pmin[pi])
                r_hi = max(r_hi, pmax[pi])
            for r in range(r_lo, r_hi + 1):  # the window's keys in order
                if held[r] > 0:
                    win_start[cnt] = w_ws[w]
                    key[cnt] = kmin + r - 1 if r > 0 else NULL_KEY
                    row_cell[cnt] = r
                    cnt += 1
            row_lo[w + 1] = cnt
    else:
        most = 0
        for w in range(n_win):
            most = max(most, w_hi[w] - w_lo[w])
        cur = np.empty(most, np.int64)  # per pane of the window: its next copy ...
        end = np.empty(most, np.int64)  # ... its end ...
        ck = np.empty(most, np.int64)   # ... and that copy's key
        for w in range(n_win):
            npn = w_hi[w] - w_lo[w]
            for pi in range(npn):
                cur[pi] = at[w_lo[w] + pi]
                end[pi] = at[w_lo[w] + pi + 1]
                if cur[pi] < end[pi]:
                    ck[pi] = ckey[cur[pi]]
            while True:  # the least key at the head of any pane, merged over the panes in order
                found = False
                kv = np.int64(0)
                at_pi = 0
                for pi in range(npn):
                    if cur[pi] < end[pi] and (not found or ck[pi] < kv):
                        kv = ck[pi]
                        at_pi = pi
                        found = True
                if not found:
                    break
                win_start[cnt] = w_ws[w]
                key[cnt] = kv
                row_cell[cnt] = cell[cur[at_pi]]
                cnt += 1
                for pi in range(npn):
                    p = cur[pi]
                    if p < end[pi] and ck[pi] == kv:
                        p += 1
                        cur[pi] = p
                        if p < end[pi]:
                            ck[pi] = ckey[p]
            row_lo[w + 1] = cnt

    gone = _retire(do_fire, last, due, slide, offset, pst, psl, buckets, keys, meta, free, aux,
                   pnext, pbuckets, pkeys, pmeta, pfree, phead, pcount, psorted)
    seg_lo = np.empty(n_win, np.int64)
    seg_hi = np.empty(n_win, np.int64)
    for w in range(n_win):
        seg_lo[w] = at[w_lo[w]]
        seg_hi[w] = at[w_hi[w]]
    # exact sizes: the output outlives this call, the buffers were sized for the worst case
    return (win_start[:cnt].copy(), key[:cnt].copy(), seg_lo, seg_hi, cell, row_lo, row_cell[:cnt].copy(),
            width, slots, gone)


@njit
def _retire(do_fire, last, due, slide, offset, pst, psl, buckets, keys, meta, free, aux,
            pnext, pbuckets, pkeys, pmeta, pfree, phead, pcount, psorted):
    """Free the panes all of whose windows start at or before ``last``, with their entries.

    Returns the freed entry slots. Advances ``aux[3]`` past ``due``: windows up to it
    are closed even if they were empty, as rows arriving later never open them again.
    """
    c = pst.size
    gone = np.empty(0, np.int32)
    if do_fire:
        low = WM_MAX
        high = WM_MIN
        n_gone = 0
        for pi in range(c):
            if ((pst[pi] - offset) // slide) * slide + offset <= last:
                n_gone += pcount[psl[pi]]
        gone = np.empty(n_gone, np.int32)
        # the entries that stay, listed only when they are fewer (see ht_delete_many)
        kept = np.empty(meta[0] - n_gone if 2 * n_gone > meta[0] else 0, np.int32)
        n_kept = 0
        g = 0
        for pi in range(c):
            ps = pst[pi]
            q = psl[pi]
            if ((ps - offset) // slide) * slide + offset <= last:
                s = phead[q]
                while s >= 0:
                    nxt = pnext[s]
                    pnext[s] = -1
                    gone[g] = s
                    g += 1
                    s = nxt
                phead[q] = -1
                pcount[q] = 0
                psorted[q] = 0
                ht_delete(pbuckets, pkeys, pmeta, pfree, q)
            else:
                if kept.size:
                    s = phead[q]
                    while s >= 0 and n_kept < kept.size:
                        kept[n_kept] = s
                        n_kept += 1
                        s = pnext[s]
                low = min(low, ps)
                high = max(high, ps)
        ht_delete_many(buckets, keys, meta, free, gone[:g], kept[:n_kept])
        aux[1] = low
        aux[2] = high
        gone = gone[:g]
    if due != WM_MIN and due <= WM_MAX - slide and due + slide > aux[3]:
        aux[3] = due + slide
    return gone
