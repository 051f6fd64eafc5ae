"""Generated code shared by slot-keyed state: windows, sessions, Dedup and TopN.

Their state is a hash table of (key, window) or (key, session) slots with
aggregate fields per slot (see :class:`laminar_jit.state.windows.WindowState`).
These helpers write the parts of their functions that are the same for all:
collecting the entries the watermark made due, and the aggregates'
finalizers, resets and merges (from each aggregate's :class:`Blueprint`).
"""

from __future__ import annotations

import numpy as np

from .._types import arrow_to_numpy_dtype
from .core import dtype_name, literal

__all__ = ["due_entries", "finalizers", "merge_into_scratch", "reset_lines"]

def finalizers(node, aggs, fields_by_agg, slot_expr: str = "s"):
    out_types, final = [], []
    for j, ((name, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        field = node.schema.field(name)
        storage = arrow_to_numpy_dtype(field.type) if arrow_to_numpy_dtype(field.type) is not None else np.int64
        out_types.append(storage)
        value = agg.blueprint.value.format(**fnames).replace("[s]", f"[{slot_expr}]")
        valid = agg.blueprint.valid.format(**fnames).replace("[s]", f"[{slot_expr}]")
        final.append(f"r{j}[o] = {value}\nrv{j}[o] = {valid}")
    allocs = "\n".join(f"r{j} = np.empty(cnt, {dtype_name(t)})\nrv{j} = np.empty(cnt, np.bool_)"
                       for j, t in enumerate(out_types))
    rets = ", ".join(f"r{j}, rv{j}" for j in range(len(aggs)))
    return allocs, final, rets


def reset_lines(aggs, fields_by_agg, slot_expr: str = "s") -> list[str]:
    out = []
    for (_, agg), fnames in zip(aggs, fields_by_agg):
        for field, _, init in agg.blueprint.fields:
            out.append(f"{fnames['f_' + field]}[{slot_expr}] = {literal(init)}")
    return out


def merge_into_scratch(aggs, fields_by_agg, dst: str = "0", src: str | None = None) -> list[str]:
    """Blueprint merge templates folding slot ``s`` into scratch arrays ``t<j>_<field>[dst]``.

    With ``src`` (an index expression) the source is the compacted copy
    ``c<j>_<field>[src]`` instead of the state arrays at slot ``s``.
    """
    lines = []
    for j, ((_, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        tokens = {f"f_{field}": f"@{field}@" for field, _, _ in agg.blueprint.fields}
        code = agg.blueprint.merge.format(**tokens)
        for field, _, _ in agg.blueprint.fields:
            source = f"{fnames['f_' + field]}[s]" if src is None else f"c{j}_{field}[{src}]"
            code = code.replace(f"@{field}@[d]", f"t{j}_{field}[{dst}]").replace(f"@{field}@[a]", source)
        lines.append(code)
    return lines


def due_entries(state_names: list[str], bound: str, offset: str) -> str:
    """Fire-function code collecting the due entries into ``fired[:cnt]``, in (bound, key) order as ``order``.

    The other live entries are collected in ``kept[:n_kept]`` (for
    :func:`ht_delete_many`) when a fire is due.

    An entry is due when ``bound + offset <= wm_now`` (``offset``: generated code, such as
    ``size + lateness``); ``bound`` is a template
    over ``{keys}`` and the slot ``{s}`` (a window start, a session end), and
    ``aux[1]`` keeps the least bound still open so most batches skip the scan.
    The table is scanned by slot, not by bucket, whenever it has no more slots
    than buckets: slot order is about insertion order, so the entries' state
    is then read nearly in sequence (a bucket-order scan was 20 % slower on
    the tumbling benchmark). Freed slots hold the key (0, 0), so only slots
    with that key need a probe to tell whether they are live.
    """
    buckets, keys, meta, aux = state_names[0], state_names[1], state_names[2], state_names[4]
    value = bound.format(keys=keys, s="s")
    value_fired = bound.format(keys=keys, s="fired[j]")
    return f'''    do_fire = {aux}[1] != WM_MAX and {aux}[1] + {offset} <= wm_now
    by_slot = {meta}[1] <= {buckets}.size
    scan = ({meta}[1] if by_slot else {buckets}.size) if do_fire else 0
    fired = np.empty({meta}[0] if do_fire else 0, np.int32)
    kept = np.empty({meta}[0] if do_fire else 0, np.int32)
    cnt = 0
    n_kept = 0
    low = WM_MAX
    for bkt in range(scan):
        if by_slot:
            s = np.int64(bkt)
            if {keys}[s, 0] == 0 and {keys}[s, 1] == 0:  # freed, or the live key (0, 0)
                found = ht_find({buckets}, {keys}, np.int64(0), np.int64(0))
                if found != s:
                    s = -1
        else:
            s = np.int64({buckets}[bkt])
        if s >= 0:
            v = {value}
            if v + {offset} <= wm_now:
                fired[cnt] = s
                cnt += 1
            else:
                kept[n_kept] = s
                n_kept += 1
                if v < low:
                    low = v
    if do_fire:
        {aux}[1] = low
    kk = np.empty(cnt, np.int64)
    vv = np.empty(cnt, np.int64)
    for j in range(cnt):
        kk[j] = {keys}[fired[j], 0]
        vv[j] = {value_fired}
    order = argsort_pairs(vv, kk)'''
