"""Generated code of sliding windows: panes on per-pane lists, merged when a window fires.

A sliding window of size ``size`` and slide ``slide`` keeps one entry per
(key, pane), panes being ``gcd(size, slide)`` long. The update loop puts a
new entry on its pane's list (:func:`sliding_link`); the fire is
:func:`laminar_jit.kernels.sliding.sliding_due`, which plans the due windows'
rows and frees spent panes, and the aggregate glue :func:`sliding_fire`
writes around it.
"""

from __future__ import annotations

from .core import indent, literal
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
                    pslot = ht_find_or_insert({n['pbuckets']}, {n['pkeys']}, {n['pmeta']}, {n['pfree']}, ws, np.int64(0))
                {n['pnext']}[s] = {n['phead']}[pslot]
                {n['phead']}[pslot] = s
                {n['pcount']}[pslot] += 1"""


def sliding_fire(gen, node, aggs, fields_by_agg, state_names, stores=()):
    """Emit due sliding windows: the aggregate glue around :func:`~laminar_jit.kernels.sliding.sliding_due`.

    The kernel plans the due windows (which entries each merges into which scratch cell,
    which rows it emits from which cells, in order) and frees the panes no window needs any
    more. The code written here holds only what depends on the aggregates: it copies the
    planned entries' fields once (contiguous copies are read in sequence, and every pane
    serves ``size / slide`` windows), merges each window's copies into their cells, finalizes
    its rows and resets the cells, then resets the freed slots' fields.
    """
    nid = node.id
    n = sliding_names(nid)
    copies, scratch, resets = [], [], []
    for j, ((_, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        for field, _, init in agg.blueprint.fields:
            array = fnames["f_" + field]
            copies.append((f"c{j}_{field} = empty(total, {array}.dtype)", f"c{j}_{field}[p] = {array}[s]"))
            scratch.append(f"t{j}_{field} = full(width, {literal(init)}, {array}.dtype)")
            resets.append(f"t{j}_{field}[u] = {literal(init)}")
    scratch_fields = [{f"f_{field}": f"t{j}_{field}" for field, _, _ in agg.blueprint.fields}
                      for j, (_, agg) in enumerate(aggs)]
    allocs, final, rets = finalizers(node, aggs, scratch_fields, slot_expr="u")
    # count_distinct: the panes' sets are united per window in a scratch set keyed by (window, cell),
    # sized for every value the due windows merge
    sets, pane_fields = [], []
    for j, ((_, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        if agg.blueprint.sets:
            fnames = {**fnames, **{f"s_{r}": f"ds{j}_{r}" for r in ("buckets", "keys", "meta", "free")},
                      "cell": "w * width + u"}
            sets.append(f"""m{j} = 0
for w in range(seg_lo.size):
    for p in range(seg_lo[w], seg_hi[w]):
        m{j} += c{j}_n[p]
ds{j}_buckets, ds{j}_keys, ds{j}_meta, ds{j}_free = scratch_set(m{j})""")
        pane_fields.append(fnames)
    merges = merge_into_scratch(aggs, pane_fields, dst="u", src="p")
    args = ", ".join(state_names[:5] + [n[name] for name in ("pnext", "pbuckets", "pkeys", "pmeta", "pfree",
                                                              "phead", "pcount", "psorted")])
    gen.funcs.append(f'''
@njit
def window_{nid}_fire(wm_now, settings, {", ".join([*state_names, *stores])}):
    """Sliding window node {nid}: merge the planned entries of the due windows; reset the freed slots."""
{gen.setting_lines[nid]}
    win_start, key, seg_lo, seg_hi, cell, row_lo, row_cell, width, slots, gone = sliding_due(
        wm_now, size, slide, offset, lateness, {args})
    cnt = win_start.size
    total = slots.size
{indent(chr(10).join(alloc for alloc, _ in copies), 4)}
    for p in range(total):
        s = slots[p]
{indent(chr(10).join(copy for _, copy in copies), 8)}
{indent(chr(10).join(scratch + sets), 4)}
{indent(allocs, 4)}
    for w in range(seg_lo.size):
        for p in range(seg_lo[w], seg_hi[w]):  # the window's copies into their keys' cells
            u = cell[p]
{indent(chr(10).join(merges), 12)}
        for o in range(row_lo[w], row_lo[w + 1]):  # its rows out; the cells back to initial values
            u = row_cell[o]
{indent(chr(10).join(final), 12)}
{indent(chr(10).join(resets), 12)}
    for g in range(gone.size):
        s = gone[g]
{indent(chr(10).join(reset_lines(aggs, fields_by_agg)), 8)}
    win_end = shifted(win_start, size)
    key_valid = keys_valid(key)
    return win_start, win_end, key, key_valid, {rets}
''')
