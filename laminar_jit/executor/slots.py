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
    allocs = "\n".join(f"r{j} = empty(cnt, {dtype_name(t)})\nrv{j} = empty(cnt, np.bool_)"
                       for j, t in enumerate(out_types))
    rets = ", ".join(f"r{j}, rv{j}" for j in range(len(aggs)))
    return allocs, final, rets


def reset_lines(aggs, fields_by_agg, slot_expr: str = "s") -> list[str]:
    """Code freeing slot ``slot_expr``'s aggregates: each blueprint's release, then its fields' initial values."""
    out = []
    for (_, agg), fnames in zip(aggs, fields_by_agg):
        if agg.blueprint.release:
            out.append(agg.blueprint.release.format(**fnames, slot=slot_expr))
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
        tokens.update((k, v) for k, v in fnames.items() if not k.startswith("f_"))  # e.g. a dictionary's arrays
        code = (agg.blueprint.pane_merge or agg.blueprint.merge).format(**tokens)
        for field, _, _ in agg.blueprint.fields:
            source = f"{fnames['f_' + field]}[s]" if src is None else f"c{j}_{field}[{src}]"
            code = code.replace(f"@{field}@[d]", f"t{j}_{field}[{dst}]").replace(f"@{field}@[a]", source)
        lines.append(code)
    return lines


def due_entries(state_names: list[str], bound: str, offset: str, ordered: bool = True) -> str:
    """Fire-function code collecting the due entries (see :func:`laminar_jit.kernels.slots.due_slots`).

    Sets ``fired`` (their slots, ``cnt`` of them), ``order`` (into ``fired``, by (bound, key);
    empty when not ``ordered``) and ``kept`` (``n_kept`` slots that stay). ``bound`` is generated
    code for the int64 array of each slot's bound (a window start ``keys[:, 1]``, a session end);
    ``offset`` is generated code such as ``size + lateness``.
    """
    buckets, keys, meta, aux = state_names[0], state_names[1], state_names[2], state_names[4]
    unordered = "" if ordered else ", False"
    return f"""    fired, order, kept = due_slots({buckets}, {keys}, {meta}, {aux}, {bound}, {offset}, wm_now{unordered})
    cnt = fired.size
    n_kept = kept.size"""
