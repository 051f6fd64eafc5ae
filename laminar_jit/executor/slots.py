"""Generated code shared by slot-keyed state: windows, sessions, Dedup and TopN.

Their state is a hash table of (key, window) or (key, session) slots with
aggregate fields per slot (see :class:`laminar_jit.state.windows.WindowState`).
These helpers write the parts of their functions that are the same for all:
collecting the entries the watermark made due, and the aggregates'
finalizers, resets and merges (from each aggregate's :class:`Blueprint`); and
the cache of recent keys' slots that row loops of keyed state look keys up
through (windows, TopN, keyed kernels, group aggregates), and the lookahead
that fetches the slots of keys the cache will miss (keyed kernels).
"""

from __future__ import annotations

import numpy as np

from .._types import arrow_to_numpy_dtype
from ..kernels.hashtable import CACHE_SIZE
from .core import dtype_name, literal

__all__ = ["AHEAD_KEYS", "LOOKAHEAD", "cached_slot", "due_entries", "finalizers", "merge_into_scratch", "reset_lines",
           "slot_cache", "slot_lookahead"]

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


#: Rows ahead of a row loop at which a key that misses the cache of recent slots has its table bucket asked for
#: (its slot's entries half as far ahead, once the bucket has come).
LOOKAHEAD = 32
#: Live keys from which a table is taken to have outgrown the processor's caches, so that a row loop looks its
#: keys up ahead (below, the misses of the cache of recent slots are cheap and the lookahead is pure cost).
AHEAD_KEYS = 1 << 16


def slot_lookahead(gen, at: str, n: str, row_of: str, key: str, table: tuple[str, str, str],
                   entries: list[str]) -> tuple[str, str]:
    """A row loop's set-up line and per-row lines (at a loop body's indent) asking the memory ahead for the
    slots of keys that will miss the cache of :func:`cached_slot` (width 1), in tables of at least
    :data:`AHEAD_KEYS` live keys: the key ``LOOKAHEAD`` rows after position ``at`` (of ``n``) has its home
    bucket fetched when the cache does not hold it, and the one ``LOOKAHEAD // 2`` rows after has its slot's
    ``keys`` row and ``entries`` (per-slot arrays) fetched from the bucket that came meanwhile.

    ``row_of`` maps a position ``q`` to its row (``"sel[q]"``, or ``"q"`` for every row), ``key`` is the
    key's expression at row ``iq``, ``table`` the table's ``(buckets, keys, meta)``. A loop that meets its keys
    over and over finds them in the cache, and the few new ones each wait on two dependent misses (the bucket,
    then the slot's key): fetched this way they overlap with the rows between (Nexmark q4's keyed kernel,
    600 K auctions, 6.7 % of its rows new to a call: 212-246 -> 170-206 ms a run). The predicted bucket is
    only a hint: a resize meanwhile makes it a wrong one, never a wrong answer.
    """
    gen.imports.update({("laminar_jit.kernels.memory", "prefetch"), ("laminar_jit.kernels.hashtable", "_home")})
    buckets, keys, meta = table
    half, ring = LOOKAHEAD // 2, 2 * LOOKAHEAD  # (a row's bucket is read ``half`` rows after it was written)
    fetch = "".join(f"\n                    prefetch({e}, sq)" for e in entries)
    setup = f"ahead = {meta}[0] >= {AHEAD_KEYS}\n    pfb = full({ring}, -1, np.int64)"
    return setup, f"""if ahead:
            q = {at} + {LOOKAHEAD}
            if q < {n}:
                iq = {row_of}
                kq = {key}
                cq = cache_line(kq, np.int64(0))
                if c_s[cq] < 0 or c_k0[cq] != kq:
                    hq = _home(kq, np.int64(0), {meta}[4] - 1)
                    pfb[q & {ring - 1}] = hq
                    prefetch({buckets}, hq)
                else:
                    pfb[q & {ring - 1}] = -1
            q = {at} + {half}
            if q < {n} and pfb[q & {ring - 1}] >= 0:
                sq = np.int64({buckets}[pfb[q & {ring - 1}]])
                if sq >= 0:
                    prefetch({keys}, 2 * sq){fetch}"""
