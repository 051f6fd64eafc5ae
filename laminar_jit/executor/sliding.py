"""Generated code of sliding windows: panes on per-pane lists, merged when a window fires.

A sliding window of size ``size`` and slide ``slide`` keeps one entry per
(key, pane), panes being ``gcd(size, slide)`` long; :func:`sliding_fire`
merges the panes of every due window (see its docstring).
"""

from __future__ import annotations

from .core import NULL_KEY, indent, literal
from .slots import finalizers, merge_into_scratch, reset_lines

__all__ = ["sliding_fire", "sliding_link", "sliding_names"]

def sliding_names(nid: int) -> dict:
    """Generated names of the arrays only sliding windows keep (see :class:`WindowState`)."""
    return {name: f"st{nid}_{name}" for name in ("pnext", "pbuckets", "pkeys", "pmeta", "pfree", "phead", "pcount",
                                                      "psorted")}


def sliding_link(nid: int, meta: str) -> str:
    """Update-loop code putting a new (key, pane) entry ``s`` on its pane's list.

    ``live`` is the table's entry count before the probe that returned ``s``;
    rows mostly arrive in time order, so the pane of the previous new entry is
    usually this one's and its slot in the pane table is reused.
    """
    n = sliding_names(nid)
    return f"""if {meta}[0] != live:  # a new (key, pane) entry
                if pslot < 0 or ws != pane_ws:
                    pane_ws = ws
                    pslot = ht_find_or_insert({n['pbuckets']}, {n['pkeys']}, {n['pmeta']}, {n['pfree']}, ws, 0)
                {n['pnext']}[s] = {n['phead']}[pslot]
                {n['phead']}[pslot] = s
                {n['pcount']}[pslot] += 1"""


def sliding_fire(gen, node, aggs, fields_by_agg, state_names):
    """Emit due sliding windows: merge the key-sorted lists of each window's panes.

    Only the panes of due windows are visited (no scan of all open entries).
    Their entries are copied once per fire into arrays local to it (keys and
    aggregate fields, pane after pane): every pane serves size / slide
    windows, and contiguous copies are read in sequence where the lists would
    jump between slots for each window. Then, when the copied keys span a
    narrow range (dictionary codes, dense ids), a window accumulates by key
    offset and is read out in key order by one scan of the range it touched;
    otherwise a pane's list is sorted by key when a fire first uses it (and
    again if entries joined it since) and a window is a merge of its panes'
    sorted runs. Either way the output is ordered by (window start, key)
    without a sort, and a key's panes are merged in pane order, as a
    row-at-a-time evaluation would.
    """
    nid = node.id
    buckets, keys, meta, free, aux = state_names[:5]
    n = sliding_names(nid)
    scratch_alloc, scratch_init, compact_alloc, compact_copy = [], [], [], []
    for j, ((_, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        for field, _, init in agg.blueprint.fields:
            scratch_alloc.append(f"    t{j}_{field} = np.full(width, {literal(init)}, {fnames['f_' + field]}.dtype) "
                                 f"if dense else np.empty(cap, {fnames['f_' + field]}.dtype)")
            scratch_init.append(f"t{j}_{field}[o] = {literal(init)}")
            compact_alloc.append(f"    c{j}_{field} = np.empty(total, {fnames['f_' + field]}.dtype)")
            compact_copy.append(f"c{j}_{field}[p] = {fnames['f_' + field]}[s]")
    scratch_fields = [{f"f_{field}": f"t{j}_{field}" for field, _, _ in agg.blueprint.fields}
                      for j, (_, agg) in enumerate(aggs)]
    allocs, final, rets = finalizers(node, aggs, scratch_fields, slot_expr="o")
    allocs = allocs.replace("(cnt,", "(cap,")

    def windows(body: str) -> str:
        # every window in [start, last] holding an open pane: panes pst[lo:hi]
        return f"""    lo = 0
    hi = 0
    ws = start
    if c > 0:
        w = ((pst[0] - size - offset) // slide + 1) * slide + offset
        if w > ws:
            ws = w
    while c > 0 and ws <= last:
        while hi < c and pst[hi] < ws + size:
            hi += 1
        while lo < hi and pst[lo] < ws:
            lo += 1
        if lo < hi:
{body}
            ws += slide
        elif hi >= c:
            break
        else:  # no open pane in this window: jump to the first window holding the next one
            w = ((pst[hi] - size - offset) // slide + 1) * slide + offset
            ws = w if w > ws else ws + slide"""

    merges = "\n".join(indent(x, 24) for x in merge_into_scratch(aggs, fields_by_agg, dst="o", src="p"))
    dense_merges = "\n".join(indent(x, 16) for x in merge_into_scratch(aggs, fields_by_agg, dst="r", src="p"))
    copies = "\n".join(indent(x, 12) for x in compact_copy)
    inits = "\n".join(indent(x, 16) for x in scratch_init)
    dense_resets = "\n".join(indent(x.replace("[o]", "[r]"), 16) for x in scratch_init)
    finals = "\n".join(indent(x, 16) for x in final)
    dense_finals = "\n".join(indent(x, 16) for x in finalizers(node, aggs, scratch_fields, slot_expr="r")[1])
    resets = "\n".join(indent(x, 20) for x in reset_lines(aggs, fields_by_agg))
    gen.funcs.append(f'''
@njit
def window_{nid}_fire(wm_now, settings, {", ".join(state_names)}):
    """Sliding window node {nid}: emit due windows by merging the panes they span."""
{gen.setting_lines[nid]}
    start = 1
    last = 0
    due = WM_MIN  # start of the last window the watermark has made due, data or not
    if wm_now != WM_MIN:
        due = ((wm_now - size - lateness - offset) // slide) * slide + offset
    if {aux}[1] != WM_MAX:
        first = (({aux}[1] - size - offset) // slide + 1) * slide + offset
        start = first if ({aux}[3] == WM_MIN or {aux}[3] < first) else {aux}[3]
        last = due
        top = (({aux}[2] - offset) // slide) * slide + offset
        if top < last:
            last = top
    do_fire = start <= last
    # the open panes by start (few: the span of open windows over the pane length)
    m = {n['pmeta']}[0] if do_fire else 0
    pst = np.empty(m, np.int64)
    psl = np.empty(m, np.int64)
    c = 0
    if do_fire:
        for q in range({n['pmeta']}[1]):  # live panes hold entries; freed ones are reset to none
            if {n['pcount']}[q] > 0:
                pst[c] = {n['pkeys']}[q, 0]
                psl[c] = q
                c += 1
    po = np.argsort(pst)
    pst = pst[po]
    psl = psl[po]
    cap = 0  # output rows are at most the entries of each due window's panes
    most_panes = 0  # the most panes one window spans
    n_win = 0
    used_lo = c  # the due windows use the panes pst[used_lo:used_hi]
    used_hi = 0
{windows(f"""            for pi in range(lo, hi):
                cap += {n['pcount']}[psl[pi]]
            n_win += 1
            if hi - lo > most_panes:
                most_panes = hi - lo
            if lo < used_lo:
                used_lo = lo
            if hi > used_hi:
                used_hi = hi""")}
    # the used panes' entries copied pane after pane, pane pi to [at[pi], at[pi + 1])
    at = np.zeros(c + 1, np.int64)
    for pi in range(used_lo, used_hi):
        at[pi + 1] = at[pi] + {n['pcount']}[psl[pi]]
    for pi in range(used_hi, c):
        at[pi + 1] = at[pi]
    total = at[c]
    ckey = np.empty(total, np.int64)
{chr(10).join(compact_alloc)}
    kmin = WM_MAX
    kmax = WM_MIN
    for pi in range(used_lo, used_hi):
        s = {n['phead']}[psl[pi]]
        for p in range(at[pi], at[pi + 1]):
            kv = {keys}[s, 0]
            ckey[p] = kv
            if kv != {NULL_KEY}:  # the null group's key, kept apart (slot 0) by the dense path
                if kv < kmin:
                    kmin = kv
                if kv > kmax:
                    kmax = kv
{copies}
            s = {n['pnext']}[s]
    # Dense keys (codes, small ids) span a range not much wider than a window's entries:
    # then a window accumulates into arrays indexed by key - kmin + 1 (0: the null group,
    # whose key sorts first) and is read out in key order by a scan of that range, with no
    # sort and no merge. Otherwise each pane is sorted by key (once: the order is kept on
    # its list) and the windows merge the runs.
    span = np.uint64(kmax) - np.uint64(kmin) if kmin <= kmax else np.uint64(0)
    dense = total > 0 and span < np.uint64(8 * (cap // max(n_win, 1)) + 64)
    width = np.int64(span) + 2 if dense else 0
    if not dense:
        for pi in range(used_lo, used_hi):
            q = psl[pi]
            if {n['psorted']}[q] != {n['pcount']}[q]:
                sort_list({n['phead']}, {n['pnext']}, {keys}, q, {n['pcount']}[q])
                {n['psorted']}[q] = {n['pcount']}[q]
                s = {n['phead']}[q]
                for p in range(at[pi], at[pi + 1]):
                    ckey[p] = {keys}[s, 0]
{indent(copies, 8)}
                    s = {n['pnext']}[s]
    win_start = np.empty(cap, np.int64)
    key = np.empty(cap, np.int64)
    # per pane of the window: its next entry's position (end[pi]: done) and that entry's key
    cur = np.empty(most_panes, np.int64)
    end = np.empty(most_panes, np.int64)
    ck = np.empty(most_panes, np.int64)
    # dense: the last window that touched each key, the keys a window emits, and
    # accumulators that are back at their initial values whenever a window starts
    stamp = np.full(width, -1, np.int64)
    rows = np.empty(width, np.int64)
{chr(10).join(scratch_alloc)}
{indent(allocs, 4)}
    cnt = 0
    wid = 0
    if dense:
{indent(windows(f"""            r_lo = width
            r_hi = np.int64(-1)
            for p in range(at[lo], at[hi]):  # the window's panes, in pane order (branch-free but the merges)
                kv = ckey[p]
                r = kv - kmin + 1 if kv != {NULL_KEY} else np.int64(0)
                stamp[r] = wid
                r_lo = min(r_lo, r)
                r_hi = max(r_hi, r)
{dense_merges}
            m = 0
            for r in range(r_lo, r_hi + 1):  # the window's keys in order, without a branch per key
                rows[m] = r
                m += stamp[r] == wid
            for mi in range(m):
                r = rows[mi]
                o = cnt
                cnt += 1
                win_start[o] = ws
                key[o] = kmin + r - 1 if r > 0 else {NULL_KEY}
{dense_finals}
{dense_resets}
            wid += 1"""), 4)}
    else:
{indent(windows(f"""            w0 = cnt
            npn = hi - lo
            for pi in range(npn):
                p = at[lo + pi]
                cur[pi] = p
                end[pi] = at[lo + pi + 1]
                if p < end[pi]:
                    ck[pi] = ckey[p]
            while True:  # the least key at the head of any pane, merged over the panes in order
                found = False
                kv = np.int64(0)
                for pi in range(npn):
                    if cur[pi] < end[pi] and (not found or ck[pi] < kv):
                        kv = ck[pi]
                        found = True
                if not found:
                    break
                o = cnt
                cnt += 1
                win_start[o] = ws
                key[o] = kv
{inits}
                for pi in range(npn):
                    p = cur[pi]
                    if p < end[pi] and ck[pi] == kv:
{merges}
                        p += 1
                        cur[pi] = p
                        if p < end[pi]:
                            ck[pi] = ckey[p]
            for o in range(w0, cnt):
{finals}"""), 4)}
    # exact-size copies: the output outlives this call, the buffers were sized for the worst case
    win_start = win_start[:cnt].copy()
    key = key[:cnt].copy()
    win_end = win_start + size
    key_valid = key != {NULL_KEY}
    {", ".join(f"r{j}, rv{j}" for j in range(len(aggs)))} = {", ".join(f"r{j}[:cnt].copy(), rv{j}[:cnt].copy()" for j in range(len(aggs)))}
    if do_fire:  # free the panes all of whose windows are now emitted, with their entries
        low = WM_MAX
        high = WM_MIN
        n_gone = 0
        for pi in range(c):
            if ((pst[pi] - offset) // slide) * slide + offset <= last:
                n_gone += {n['pcount']}[psl[pi]]
        gone = np.empty(n_gone, np.int32)
        # the entries that stay, listed only when they are fewer (see ht_delete_many)
        kept = np.empty({meta}[0] - n_gone if 2 * n_gone > {meta}[0] else 0, np.int32)
        n_kept = 0
        g = 0
        for pi in range(c):
            ps = pst[pi]
            q = psl[pi]
            if ((ps - offset) // slide) * slide + offset <= last:
                s = {n['phead']}[q]
                while s >= 0:
                    nxt = {n['pnext']}[s]
{resets}
                    {n['pnext']}[s] = -1
                    gone[g] = s
                    g += 1
                    s = nxt
                {n['phead']}[q] = -1
                {n['pcount']}[q] = 0
                {n['psorted']}[q] = 0
                ht_delete({n['pbuckets']}, {n['pkeys']}, {n['pmeta']}, {n['pfree']}, q)
            else:
                if kept.size:
                    s = {n['phead']}[q]
                    while s >= 0 and n_kept < kept.size:
                        kept[n_kept] = s
                        n_kept += 1
                        s = {n['pnext']}[s]
                if ps < low:
                    low = ps
                if ps > high:
                    high = ps
        ht_delete_many({buckets}, {keys}, {meta}, {free}, gone[:g], kept[:n_kept])
        {aux}[1] = low
        {aux}[2] = high
    # windows up to ``due`` are closed even if they were empty: rows arriving
    # later never open them again
    if due != WM_MIN and due <= WM_MAX - slide and due + slide > {aux}[3]:
        {aux}[3] = due + slide
    return win_start, win_end, key, key_valid, {rets}
''')
