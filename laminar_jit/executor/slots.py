"""Generated code shared by slot-keyed state: windows, sessions, Dedup and TopN.

Their state is a hash table of (key, window) or (key, session) slots with
aggregate fields per slot (see :class:`laminar_jit.state.windows.WindowState`).
These helpers write the parts of their functions that are the same for all:
collecting the entries the watermark made due, and the aggregates'
finalizers, resets and merges (from each aggregate's :class:`Blueprint`); and
the cache of recent keys' slots that row loops of keyed state look keys up
through (windows, TopN, keyed kernels, group aggregates).
"""

from __future__ import annotations

import numpy as np

from .._types import arrow_to_numpy_dtype
from ..kernels.hashtable import CACHE_SIZE
from .core import dtype_name, literal

__all__ = ["cached_slot", "due_entries", "finalizers", "merge_into_scratch", "reset_lines", "slot_cache"]

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


def slot_cache(width: int = 2) -> str:
    """Allocations (at a function's indent) of a row loop's cache of recent keys' slots: :data:`CACHE_SIZE`
    direct-mapped lines of ``width`` key parts and a slot (see :func:`cached_slot`)."""
    keys = "".join(f"    c_k{j} = empty({CACHE_SIZE}, np.int64)\n" for j in range(width))
    return f"{keys}    c_s = full({CACHE_SIZE}, -1, np.int64)"


def cached_slot(find: list[str], k0: str, k1: str | None = None) -> list[str]:
    """Row-loop lines setting ``s``, the slot of key ``(k0, k1)`` (``k1`` None: a key of one part, as
    :func:`slot_cache` with ``width=1``), through the cache; ``find`` are the lines that look it up otherwise.

    A hit is current only while no slot of the table is freed during the loop: the callers' loops insert
    only (windows, TopN, keyed kernels and group aggregates free slots in passes of their own). A hit skips
    the probe and its dependent loads: with keys repeating within a call, as skewed keys do (Nexmark q4's
    bids on few open auctions: its keyed step 1.39 -> 1.15 ms a call; q17's group update 458 -> 256 ms).
    """
    parts = [k0] if k1 is None else [k0, k1]
    same = " and ".join(f"c_k{j}[cl] == {k}" for j, k in enumerate(parts))
    return [f"cl = cache_line({k0}, {k1 if k1 is not None else 'np.int64(0)'})",
            f"if c_s[cl] >= 0 and {same}:",
            "    s = c_s[cl]",
            "else:",
            *(f"    {line}" for line in find if line),
            *(f"    c_k{j}[cl] = {k}" for j, k in enumerate(parts)),
            "    c_s[cl] = s"]
