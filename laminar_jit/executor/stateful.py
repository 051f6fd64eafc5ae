"""Code generation for stateful operators (event-time windows).

A window node becomes two compiled functions in the plan:

* ``window_<id>_update`` folds the node's input rows into the aggregate
  fields of their (key, window) slot, after checking each row against the
  watermark in force when it arrived: a row whose window was already emitted
  is late and is only recorded (for the side output / metrics);
* ``window_<id>_fire`` emits, once the node's watermark reaches
  ``end + allowed_lateness``, every such window, ordered by window end then
  key, and frees its slots.

Between the two the step advances the node's watermark (minimum over its
non-idle inputs). The emitted rows start a new column space.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .._types import arrow_to_numpy_dtype
from ..errors import SchemaError
from ..kernels.hashtable import CACHE_SIZE
from ..state.windows import WindowState
from .codegen import (
    ALL_ROWS,
    EMITTED,
    Binding,
    Col,
    Gen,
    _params,
    _propagate_watermark,
    _row_ok,
    _value,
    size_of,
)

__all__ = ["generate_window"]

_NULL_KEY = "WM_MIN"  # int64 minimum: the group of null keys


#: Generated lines (in a row loop, 8 spaces deep) setting ``rw``: the watermark in force when
#: row ``i`` arrived, clamped between the node's watermark so far and the least watermark of
#: its inputs this source does not feed (see :func:`_watermark_bounds`).
ROW_WATERMARK = """rw = rwm[i] if rwm.size else rw_scalar
        if rw > rw_cap:  # inputs from other sources hold the node's watermark back
            rw = rw_cap
        if rw < rw_floor:
            rw = rw_floor"""


def _literal(value) -> str:
    """Python source of an initial state value (``inf``/``nan`` spelled through numpy)."""
    if isinstance(value, float) and not np.isfinite(value):
        return "np.nan" if np.isnan(value) else ("np.inf" if value > 0 else "-np.inf")
    return repr(value)


def _dtype_name(dtype) -> str:
    name = np.dtype(dtype).name
    return "np.bool_" if name == "bool" else f"np.{name}"


def _indent(code: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in code.splitlines())


def generate_window(gen: Gen, node, b: Binding, slot: dict, reach_set: set) -> tuple[Binding, Binding]:
    """Emit the update/fire functions and step code of a window node.

    Returns the binding of the emitted windows and the binding of late rows.
    """
    nid = node.id
    x = node.bound.extra
    lateness = x["lateness"]
    aggs = x["aggs"]
    session = "gap" in x
    state_names = WindowState.argument_names(nid, node.bound)
    gen.state_args += state_names
    gen.stateful_ids.append(nid)
    fields_by_agg = []
    pos = 13 if session else 5
    for _, agg in aggs:
        if agg.user is not None:  # the user aggregate's functions, called from the templates
            for role, k in agg.user.kernels.items():
                global_name = agg.user.global_names[role]
                gen.kernels[global_name] = k.dispatcher
                gen.fingerprints.append(f"{global_name}={agg.fingerprint()}@{k.fn.__module__}.{k.fn.__qualname__}")
        names = {}
        for field, _, _ in agg.blueprint.fields:
            names[f"f_{field}"] = state_names[pos]
            pos += 1
        fields_by_agg.append(names)

    ts_col = b.cols[x["event_time"]]
    key_cols = _key_columns(gen, node, b)
    agg_cols = [b.cols[a.column] if a.column else None for _, a in aggs]

    leaves: list = []
    for c in [ts_col, *key_cols, *[c for c in agg_cols if c is not None]]:
        gen.leaves(b, c, leaves)
    names = _params(leaves)
    dense = b.sel == ALL_ROWS
    loop = "for i in range(n):" if dense else "for j in range(sel.size):\n        i = sel[j]"

    # --- update -------------------------------------------------------------
    key_expr = _key_code(gen, b, names, key_cols, state_names)
    agg_code = []
    for (name, agg), col, fnames in zip(aggs, agg_cols, fields_by_agg):
        update = agg.blueprint.update.format(**fnames)
        if col is None:
            agg_code.append(_indent(update, 8))
            continue
        ok = _row_ok(names, gen.leaves(b, col, []), "i")
        agg_code.append(f"        if {ok}:\n            x = {_value(col, gen, b, names, 'i')}\n"
                        + _indent(update, 12))
    params = ", ".join((["n"] if dense else ["sel"]) + [p for leaf in leaves for p in names[leaf]]
                       + ["rwm", "rw_scalar", "rw_cap", "rw_floor"] + state_names + ["late_out"])
    if session:
        _session_update(gen, nid, params, loop, _value(ts_col, gen, b, names, "i"), key_expr, agg_code,
                        aggs, fields_by_agg, state_names, x["gap"], lateness)
        _session_fire(gen, node, aggs, fields_by_agg, state_names, lateness)
        return _step_code(gen, node, b, slot, reach_set, dense, leaves, state_names, key_cols, aggs)
    size, offset = x["size"], x["offset"]
    slide = x.get("slide", size)
    pane = x.get("pane", size)
    sliding = slide != size
    if sliding:
        gen.sliding_times[nid] = ts_col.name if ts_col.kind == "src" else None
    live = f"live = {state_names[2]}[0]" if sliding else ""
    link = _sliding_link(nid, state_names[2]) if sliding else ""
    gen.funcs.append(f'''
@njit
def window_{nid}_update({params}):
    """Window node {nid}: fold rows into (key, window) slots; record late rows."""
    n_late = 0
    seq = {state_names[4]}[0]  # kept in registers in the loop, written back at the end
    low = {state_names[4]}[1]
    high = {state_names[4]}[2]
    # slots of recent (key, pane)s, direct-mapped: no slot is freed during the
    # loop, so a hit is current and skips the hash probe
    c_k = np.empty({CACHE_SIZE}, np.int64)
    c_ws = np.empty({CACHE_SIZE}, np.int64)
    c_s = np.full({CACHE_SIZE}, -1, np.int64)
    {"pslot = np.int64(-1)" if sliding else ""}
    {"pane_ws = np.int64(0)" if sliding else ""}
    {loop}
        t = {_value(ts_col, gen, b, names, "i")}
        ws = ((t - {offset}) // {pane}) * {pane} + {offset}  # the row's pane (= window when tumbling)
        last = ((t - {offset}) // {slide}) * {slide} + {offset}  # start of the last window holding t
        {ROW_WATERMARK}
        if last + {size + lateness} <= rw:  # every window holding the row was emitted
            late_out[n_late] = i
            n_late += 1
            continue
        {key_expr}
        cl = cache_line(k, ws)
        if c_s[cl] >= 0 and c_k[cl] == k and c_ws[cl] == ws:
            s = c_s[cl]
        else:
            {live}
            s = ht_find_or_insert({state_names[0]}, {state_names[1]}, {state_names[2]}, {state_names[3]}, k, ws)
            {link}
            c_k[cl] = k
            c_ws[cl] = ws
            c_s[cl] = s
        if ws < low:
            low = ws
        if ws > high:
            high = ws
        q = seq
        seq += 1
{chr(10).join(agg_code)}
    {state_names[4]}[0] = seq
    {state_names[4]}[1] = low
    {state_names[4]}[2] = high
    return n_late
''')

    # --- fire ---------------------------------------------------------------
    if slide != size:
        _sliding_fire(gen, node, aggs, fields_by_agg, state_names, size, slide, pane, offset, lateness)
    else:
        _tumbling_fire(gen, node, aggs, fields_by_agg, state_names, size, lateness)

    # --- the step -----------------------------------------------------------
    return _step_code(gen, node, b, slot, reach_set, dense, leaves, state_names, key_cols, aggs)


def _key_columns(gen, node, b: Binding) -> list:
    """The key columns of a keyed node; string keys are read as source dictionary codes."""
    key_cols = [b.cols[k] for k in node.bound.extra["keys"]]
    for k, kc in zip(node.bound.extra["keys"], key_cols):
        if kc.kind == "src" and arrow_to_numpy_dtype(kc.arrow_type) is None:
            if b.origin is not None:
                raise SchemaError(f"operator {node.name!r}: string key {k!r} must come from a source column")
            gen.encoded.add(kc.name)
    return key_cols


def _key_code(gen, b: Binding, names: dict, key_cols: list, state_names: list[str]) -> str:
    """Statements setting ``k``, the row's int64 key.

    One int64 per key column (dictionary code for strings; null -> the null
    group); composite keys are chained through per-level (id, next code) -> id
    tables, the last state arguments.
    """
    comp = []
    for kc in key_cols:
        key_leaves = gen.leaves(b, kc, [])
        comp.append(f"np.int64({_value(kc, gen, b, names, 'i')}) if {_row_ok(names, key_leaves, 'i')} "
                    f"else {_NULL_KEY}")
    key_lines = [f"k = {comp[0]}" if comp else "k = np.int64(0)"]
    level_tables = _key_table_names(state_names, len(key_cols))
    for level, expr in enumerate(comp[1:]):
        kt = level_tables[level]
        key_lines.append(f"k = ht_find_or_insert({', '.join(kt)}, k, {expr})")
    return "\n        ".join(key_lines)


def _emitted_key_cols(gen, node, key_cols: list, state_names: list[str], key: str, key_valid: str) -> dict:
    """Output Cols of the key column(s) from emitted int64 keys (decoding composite ids)."""
    nid = node.id
    keys = node.bound.extra["keys"]
    key_arrays = [(key, key_valid)]
    if len(key_cols) > 1:
        _key_decoder(gen, nid, state_names, len(key_cols))
        key_arrays = [(f"kc{c}_{nid}", f"kcv{c}_{nid}") for c in range(len(key_cols))]
        tables = _key_table_names(state_names, len(key_cols))
        gen.emit(f"{', '.join(v for pair in key_arrays for v in pair)} = "
                 f"window_{nid}_keys({key}, {', '.join(v for t in tables for v in t)})")
    cols = {}
    for (k, kc), (vals, valid) in zip(zip(keys, key_cols), key_arrays):
        if kc.kind == "src":
            dictionary = (gen.source, kc.name) if kc.name in gen.encoded else None
        else:  # already codes of a source dictionary (the output of another keyed node)
            dictionary = kc.dictionary
        cols[k] = Col("der", k, node.schema.field(k).type, vals, valid, dictionary=dictionary)
    return cols


def _key_table_names(state_names: list[str], n_keys: int) -> list[list[str]]:
    """State arguments of the composite-key tables (the last ``4 * (n_keys - 1)`` names)."""
    levels = max(0, n_keys - 1)
    tail = state_names[len(state_names) - 4 * levels:] if levels else []
    return [tail[4 * i: 4 * i + 4] for i in range(levels)]


def _key_decoder(gen, nid: int, state_names: list[str], n_keys: int) -> None:
    """Emit ``window_<id>_keys``: composite key ids back to their column codes."""
    tables = _key_table_names(state_names, n_keys)
    lines = [f"\n@njit\ndef window_{nid}_keys(ids, {', '.join(x for t in tables for x in t)}):",
             '    """Decode composite key ids into one int64 array (and validity) per key column."""',
             "    m = ids.size"]
    for c in range(n_keys):
        lines.append(f"    c{c} = np.empty(m, np.int64)")
    lines.append("    for o in range(m):")
    lines.append("        k = ids[o]")
    for level in range(n_keys - 2, -1, -1):
        keys = tables[level][1]
        lines.append(f"        c{level + 1}[o] = {keys}[k, 1]")
        lines.append(f"        k = {keys}[k, 0]")
    lines.append("        c0[o] = k")
    rets = ", ".join(f"c{c}, c{c} != {_NULL_KEY}" for c in range(n_keys))
    lines.append(f"    return {rets}")
    gen.funcs.append("\n".join(lines) + "\n")


def _finalizers(node, aggs, fields_by_agg, slot_expr: str = "s"):
    out_types, final = [], []
    for j, ((name, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        field = node.schema.field(name)
        storage = arrow_to_numpy_dtype(field.type) if arrow_to_numpy_dtype(field.type) is not None else np.int64
        out_types.append(storage)
        value = agg.blueprint.value.format(**fnames).replace("[s]", f"[{slot_expr}]")
        valid = agg.blueprint.valid.format(**fnames).replace("[s]", f"[{slot_expr}]")
        final.append(f"r{j}[o] = {value}\nrv{j}[o] = {valid}")
    allocs = "\n".join(f"r{j} = np.empty(cnt, {_dtype_name(t)})\nrv{j} = np.empty(cnt, np.bool_)"
                       for j, t in enumerate(out_types))
    rets = ", ".join(f"r{j}, rv{j}" for j in range(len(aggs)))
    return allocs, final, rets


def _resets(aggs, fields_by_agg, slot_expr: str = "s") -> list[str]:
    out = []
    for (_, agg), fnames in zip(aggs, fields_by_agg):
        for field, _, init in agg.blueprint.fields:
            out.append(f"{fnames['f_' + field]}[{slot_expr}] = {_literal(init)}")
    return out


def _tumbling_fire(gen, node, aggs, fields_by_agg, state_names, size, lateness):
    nid = node.id
    out_types = []
    final = []
    for j, ((name, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        field = node.schema.field(name)
        storage = arrow_to_numpy_dtype(field.type) if arrow_to_numpy_dtype(field.type) is not None else np.int64
        out_types.append(storage)
        value = agg.blueprint.value.format(**fnames)
        valid = agg.blueprint.valid.format(**fnames)
        final.append(f"        r{j}[o] = {value}\n        rv{j}[o] = {valid}")
    resets = []
    for (_, agg), fnames in zip(aggs, fields_by_agg):
        for field, _, init in agg.blueprint.fields:
            resets.append(f"        {fnames['f_' + field]}[s] = {_literal(init)}")
    allocs = "\n".join(f"    r{j} = np.empty(cnt, {_dtype_name(t)})\n    rv{j} = np.empty(cnt, np.bool_)"
                       for j, t in enumerate(out_types))
    rets = ", ".join(f"r{j}, rv{j}" for j in range(len(aggs)))
    gen.funcs.append(f'''
@njit
def window_{nid}_fire(wm_now, {", ".join(state_names)}):
    """Window node {nid}: emit windows with end + lateness <= watermark, ordered by end, key."""
{_due_entries(state_names, "{keys}[{s}, 1]", size + lateness)}
    win_start = np.empty(cnt, np.int64)
    win_end = np.empty(cnt, np.int64)
    key = np.empty(cnt, np.int64)
    key_valid = np.empty(cnt, np.bool_)
{allocs}
    for o in range(cnt):
        s = fired[order[o]]
        win_start[o] = {state_names[1]}[s, 1]
        win_end[o] = win_start[o] + {size}
        key[o] = {state_names[1]}[s, 0]
        key_valid[o] = key[o] != {_NULL_KEY}
{chr(10).join(final)}
    for o in range(cnt):
        s = fired[o]
{chr(10).join(resets)}
    ht_delete_many({", ".join(state_names[:4])}, fired[:cnt], kept[:n_kept])
    return win_start, win_end, key, key_valid, {rets}
''')



def _due_entries(state_names: list[str], bound: str, offset: int) -> str:
    """Fire-function code collecting the due entries into ``fired[:cnt]``, in (bound, key) order as ``order``.

    The other live entries are collected in ``kept[:n_kept]`` (for
    :func:`ht_delete_many`) when a fire is due.

    An entry is due when ``bound + offset <= wm_now``; ``bound`` is a template
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


def _step_code(gen, node, b, slot, reach_set, dense, leaves, state_names, key_cols, aggs):
    nid = node.id
    rwm = b.wm_array or "np.empty(0, np.int64)"
    late = f"late_{nid}"
    _watermark_bounds(gen, node, reach_set)
    gen.emit(f"{late} = np.empty({size_of(b.sel)}, np.int32)")
    args = ", ".join(([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"wm_before_{nid}"] + state_names + [late])
    gen.emit(f"n_late = window_{nid}_update({args})")
    gen.emit(f"metrics[{slot['late_events']}] += n_late")
    gen.emit(f"metrics[{3 * nid + 2}] += n_late")
    gen.emit(f"late_sel_{nid} = {late}[:n_late]")
    _propagate_watermark(gen, node)
    outs = ["ws", "we", "key", "key_valid"] + [p for j in range(len(aggs)) for p in (f"r{j}", f"rv{j}")]
    outs = [f"{o}_{nid}" for o in outs]
    gen.emit(f"{', '.join(outs)} = window_{nid}_fire(wm[{nid}], {', '.join(state_names)})")
    gen.emit(f"m_{nid} = ws_{nid}.size")
    gen.emit(f"sel_{nid} = identity(m_{nid})")
    gen.emit(f"no_nulls_{nid} = np.empty(0, np.bool_)")

    schema = node.schema
    cols = {
        "window_start": Col("der", "window_start", schema.field("window_start").type, f"ws_{nid}", f"no_nulls_{nid}"),
        "window_end": Col("der", "window_end", schema.field("window_end").type, f"we_{nid}", f"no_nulls_{nid}"),
    }
    cols.update(_emitted_key_cols(gen, node, key_cols, state_names, f"key_{nid}", f"key_valid_{nid}"))
    for j, (name, _) in enumerate(aggs):
        cols[name] = Col("der", name, schema.field(name).type, f"r{j}_{nid}", f"rv{j}_{nid}")
    owned = (f"sel_{nid}", *outs, f"no_nulls_{nid}")
    emitted = Binding(EMITTED, f"m_{nid}", cols, f"sel_{nid}", None, f"wm_before_{nid}", owned)
    return emitted, replace(b, sel=f"late_sel_{nid}")


def _watermark_bounds(gen, node, reach_set) -> None:
    """``wm_before_<id>`` (the node's watermark so far) and ``cap_<id>``, the least
    watermark of its inputs this source does not feed: a row's own running
    watermark is clamped between the two."""
    nid = node.id
    gen.emit(f"wm_before_{nid} = wm[{nid}]")
    gen.emit(f"cap_{nid} = WM_MAX")
    for u, _ in node.inputs:
        if u not in reach_set:
            gen.emit(f"if not idle[{u}] and wm[{u}] < cap_{nid}:")
            gen.emit(f"cap_{nid} = wm[{u}]", 2)


def _merge_into_scratch(aggs, fields_by_agg, dst: str = "0", src: str | None = None) -> list[str]:
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


def _sliding_names(nid: int) -> dict:
    """Generated names of the arrays only sliding windows keep (see :class:`WindowState`)."""
    return {name: f"st{nid}_{name}" for name in ("pnext", "pbuckets", "pkeys", "pmeta", "pfree", "phead", "pcount",
                                                      "psorted")}


def _sliding_link(nid: int, meta: str) -> str:
    """Update-loop code putting a new (key, pane) entry ``s`` on its pane's list.

    ``live`` is the table's entry count before the probe that returned ``s``;
    rows mostly arrive in time order, so the pane of the previous new entry is
    usually this one's and its slot in the pane table is reused.
    """
    n = _sliding_names(nid)
    return f"""if {meta}[0] != live:  # a new (key, pane) entry
                if pslot < 0 or ws != pane_ws:
                    pane_ws = ws
                    pslot = ht_find_or_insert({n['pbuckets']}, {n['pkeys']}, {n['pmeta']}, {n['pfree']}, ws, 0)
                {n['pnext']}[s] = {n['phead']}[pslot]
                {n['phead']}[pslot] = s
                {n['pcount']}[pslot] += 1"""


def _sliding_fire(gen, node, aggs, fields_by_agg, state_names, size, slide, pane, offset, lateness):
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
    n = _sliding_names(nid)
    scratch_alloc, scratch_init, compact_alloc, compact_copy = [], [], [], []
    for j, ((_, agg), fnames) in enumerate(zip(aggs, fields_by_agg)):
        for field, _, init in agg.blueprint.fields:
            scratch_alloc.append(f"    t{j}_{field} = np.full(width, {_literal(init)}, {fnames['f_' + field]}.dtype) "
                                 f"if dense else np.empty(cap, {fnames['f_' + field]}.dtype)")
            scratch_init.append(f"t{j}_{field}[o] = {_literal(init)}")
            compact_alloc.append(f"    c{j}_{field} = np.empty(total, {fnames['f_' + field]}.dtype)")
            compact_copy.append(f"c{j}_{field}[p] = {fnames['f_' + field]}[s]")
    scratch_fields = [{f"f_{field}": f"t{j}_{field}" for field, _, _ in agg.blueprint.fields}
                      for j, (_, agg) in enumerate(aggs)]
    allocs, final, rets = _finalizers(node, aggs, scratch_fields, slot_expr="o")
    allocs = allocs.replace("(cnt,", "(cap,")

    def windows(body: str) -> str:
        # every window in [start, last] holding an open pane: panes pst[lo:hi]
        return f"""    lo = 0
    hi = 0
    ws = start
    if c > 0:
        w = ((pst[0] - {size} - {offset}) // {slide} + 1) * {slide} + {offset}
        if w > ws:
            ws = w
    while c > 0 and ws <= last:
        while hi < c and pst[hi] < ws + {size}:
            hi += 1
        while lo < hi and pst[lo] < ws:
            lo += 1
        if lo < hi:
{body}
            ws += {slide}
        elif hi >= c:
            break
        else:  # no open pane in this window: jump to the first window holding the next one
            w = ((pst[hi] - {size} - {offset}) // {slide} + 1) * {slide} + {offset}
            ws = w if w > ws else ws + {slide}"""

    merges = "\n".join(_indent(x, 24) for x in _merge_into_scratch(aggs, fields_by_agg, dst="o", src="p"))
    dense_merges = "\n".join(_indent(x, 16) for x in _merge_into_scratch(aggs, fields_by_agg, dst="r", src="p"))
    copies = "\n".join(_indent(x, 12) for x in compact_copy)
    inits = "\n".join(_indent(x, 16) for x in scratch_init)
    dense_resets = "\n".join(_indent(x.replace("[o]", "[r]"), 16) for x in scratch_init)
    finals = "\n".join(_indent(x, 16) for x in final)
    dense_finals = "\n".join(_indent(x, 16) for x in _finalizers(node, aggs, scratch_fields, slot_expr="r")[1])
    resets = "\n".join(_indent(x, 20) for x in _resets(aggs, fields_by_agg))
    gen.funcs.append(f'''
@njit
def window_{nid}_fire(wm_now, {", ".join(state_names)}):
    """Sliding window node {nid}: emit due windows (size {size}, slide {slide}) by merging panes of {pane}."""
    start = 1
    last = 0
    due = WM_MIN  # start of the last window the watermark has made due, data or not
    if wm_now != WM_MIN:
        due = ((wm_now - {size + lateness} - {offset}) // {slide}) * {slide} + {offset}
    if {aux}[1] != WM_MAX:
        first = (({aux}[1] - {size} - {offset}) // {slide} + 1) * {slide} + {offset}
        start = first if ({aux}[3] == WM_MIN or {aux}[3] < first) else {aux}[3]
        last = due
        top = (({aux}[2] - {offset}) // {slide}) * {slide} + {offset}
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
            if kv != {_NULL_KEY}:  # the null group's key, kept apart (slot 0) by the dense path
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
{_indent(copies, 8)}
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
{_indent(allocs, 4)}
    cnt = 0
    wid = 0
    if dense:
{_indent(windows(f"""            r_lo = width
            r_hi = np.int64(-1)
            for p in range(at[lo], at[hi]):  # the window's panes, in pane order (branch-free but the merges)
                kv = ckey[p]
                r = kv - kmin + 1 if kv != {_NULL_KEY} else np.int64(0)
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
                key[o] = kmin + r - 1 if r > 0 else {_NULL_KEY}
{dense_finals}
{dense_resets}
            wid += 1"""), 4)}
    else:
{_indent(windows(f"""            w0 = cnt
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
    win_end = win_start + {size}
    key_valid = key != {_NULL_KEY}
    {", ".join(f"r{j}, rv{j}" for j in range(len(aggs)))} = {", ".join(f"r{j}[:cnt].copy(), rv{j}[:cnt].copy()" for j in range(len(aggs)))}
    if do_fire:  # free the panes all of whose windows are now emitted, with their entries
        low = WM_MAX
        high = WM_MIN
        n_gone = 0
        for pi in range(c):
            if ((pst[pi] - {offset}) // {slide}) * {slide} + {offset} <= last:
                n_gone += {n['pcount']}[psl[pi]]
        gone = np.empty(n_gone, np.int32)
        # the entries that stay, listed only when they are fewer (see ht_delete_many)
        kept = np.empty({meta}[0] - n_gone if 2 * n_gone > {meta}[0] else 0, np.int32)
        n_kept = 0
        g = 0
        for pi in range(c):
            ps = pst[pi]
            q = psl[pi]
            if ((ps - {offset}) // {slide}) * {slide} + {offset} <= last:
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
    if due != WM_MIN and due <= WM_MAX - {slide} and due + {slide} > {aux}[3]:
        {aux}[3] = due + {slide}
    return win_start, win_end, key, key_valid, {rets}
''')


def _session_update(gen, nid, params, loop, ts_expr, key_expr, agg_code, aggs, fields_by_agg, state_names,
                    gap, lateness):
    """Fold rows into per-key sessions, extending and merging the open ones a row touches."""
    buckets, keys, meta, free, aux, sstart, send, snext, kb, kk, km, kf, head = state_names[:13]
    merges, resets = [], []
    for (_, agg), fnames in zip(aggs, fields_by_agg):
        merges.append(agg.blueprint.merge.format(**fnames))
        resets += [f"{fnames['f_' + field]}[a] = {_literal(init)}" for field, _, init in agg.blueprint.fields]
    merge_code = "\n".join(_indent(m, 24) for m in merges + resets)
    gen.funcs.append(f'''
@njit
def window_{nid}_update({params}):
    """Session window node {nid} (gap {gap}): fold rows into sessions; record late rows."""
    n_late = 0
    seq = {aux}[0]
    low = {aux}[1]  # lower bound of the open sessions' ends
    serial = {aux}[3]
    {loop}
        t = {ts_expr}
        {ROW_WATERMARK}
        {key_expr}
        ks = ht_find({kb}, {kk}, k, np.int64(0))
        hit = np.int64(-1)
        if ks >= 0:
            # every open session the row is closer than the gap to joins it
            prev = np.int64(-1)
            cur = {head}[ks]
            while cur >= 0:
                nxt = {snext}[cur]
                if {send}[cur] + {lateness} > rw and {sstart}[cur] - {gap} < t and t < {send}[cur]:
                    if hit < 0:
                        hit = cur
                        prev = cur
                    else:  # the row bridges two sessions: fold ``cur`` into ``hit``
                        d = hit
                        a = cur
{merge_code}
                        if {sstart}[a] < {sstart}[d]:
                            {sstart}[d] = {sstart}[a]
                        if {send}[a] > {send}[d]:
                            {send}[d] = {send}[a]
                        if prev < 0:
                            {head}[ks] = nxt
                        else:
                            {snext}[prev] = nxt
                        {snext}[a] = -1
                        ht_delete({buckets}, {keys}, {meta}, {free}, a)
                else:
                    prev = cur
                cur = nxt
        if hit < 0:
            if t + {gap + lateness} <= rw:  # its own session would already have been emitted
                late_out[n_late] = i
                n_late += 1
                continue
            if ks < 0:
                ks = ht_find_or_insert({kb}, {kk}, {km}, {kf}, k, np.int64(0))
            hit = ht_find_or_insert({buckets}, {keys}, {meta}, {free}, k, serial)
            serial += 1
            {sstart}[hit] = t
            {send}[hit] = t + {gap}
            {snext}[hit] = {head}[ks]
            {head}[ks] = hit
        else:
            if t < {sstart}[hit]:
                {sstart}[hit] = t
            if t + {gap} > {send}[hit]:
                {send}[hit] = t + {gap}
        if {send}[hit] < low:
            low = {send}[hit]
        s = hit
        q = seq
        seq += 1
{chr(10).join(agg_code)}
    {aux}[0] = seq
    {aux}[1] = low
    {aux}[3] = serial
    return n_late
''')


def _session_fire(gen, node, aggs, fields_by_agg, state_names, lateness):
    """Emit sessions whose end + lateness the watermark reached, ordered by end then key."""
    nid = node.id
    buckets, keys, meta, free, aux, sstart, send, snext, kb, kk, km, kf, head = state_names[:13]
    allocs, final, rets = _finalizers(node, aggs, fields_by_agg)
    resets = _resets(aggs, fields_by_agg)
    gen.funcs.append(f'''
@njit
def window_{nid}_fire(wm_now, {", ".join(state_names)}):
    """Session window node {nid}: emit due sessions and free their slots."""
{_due_entries(state_names, send + "[{s}]", lateness)}
    win_start = np.empty(cnt, np.int64)
    win_end = np.empty(cnt, np.int64)
    key = np.empty(cnt, np.int64)
    key_valid = np.empty(cnt, np.bool_)
{_indent(allocs, 4)}
    for o in range(cnt):
        s = fired[order[o]]
        win_start[o] = {sstart}[s]
        win_end[o] = {send}[s]
        key[o] = {keys}[s, 0]
        key_valid[o] = key[o] != {_NULL_KEY}
{chr(10).join(_indent(f, 8) for f in final)}
    for o in range(cnt):
        s = fired[o]
        ks = ht_find({kb}, {kk}, {keys}[s, 0], np.int64(0))
        prev = np.int64(-1)
        cur = {head}[ks]
        while cur != s:
            prev = cur
            cur = {snext}[cur]
        if prev < 0:
            {head}[ks] = {snext}[s]
        else:
            {snext}[prev] = {snext}[s]
        {snext}[s] = -1
        if {head}[ks] < 0:
            ht_delete({kb}, {kk}, {km}, {kf}, ks)
{chr(10).join(_indent(r, 8) for r in resets)}
    ht_delete_many({buckets}, {keys}, {meta}, {free}, fired[:cnt], kept[:n_kept])
    return win_start, win_end, key, key_valid, {rets}
''')
