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

import pyarrow as pa

from ..ops.base import string_type
from ..ops.windows import WindowOperator
from ..state.windows import WindowState
from .core import (
    EMITTED,
    NULL_KEY,
    ROW_WATERMARK,
    Binding,
    Col,
    Gen,
    emitted_key_cols,
    indent,
    kernel_module_stamp,
    key_code,
    key_columns,
    propagate_watermark,
    register,
    row_loop,
    row_ok,
    size_of,
    string_origin,
    value_code,
    watermark_bounds,
)
from .sessions import session_fire, session_update
from .sliding import sliding_fire, sliding_link
from .slots import cached_slot, due_entries, finalizers, reset_lines, slot_cache

__all__ = ["generate_window"]

_STR_LESS = "\nfrom laminar_jit.kernels.strings import str_less\n"
_DISTINCT = ("\nfrom laminar_jit.kernels.distinct import distinct_add, distinct_bits, distinct_clear, distinct_move, "
             "distinct_union, scratch_set\n")


@register(WindowOperator)
def generate_window(gen: Gen, node, b: Binding) -> tuple[Binding, Binding]:
    """Emit the update/fire functions and step code of a window node.

    Returns the binding of the emitted windows and the binding of late rows.
    """
    nid = node.id
    spec = node.bound.spec
    aggs = spec.aggs
    session = spec.session
    state_names = WindowState.argument_names(nid, node.bound)
    gen.state_args += state_names
    gen.stateful_ids.append(nid)
    fields_by_agg = []
    for j, (_, agg) in enumerate(aggs):
        if agg.user is not None:  # the user aggregate's functions, called from the templates
            for role, k in agg.user.kernels.items():
                global_name = agg.user.global_names[role]
                gen.kernels[global_name] = k.dispatcher
                gen.fingerprints.append(f"{global_name}={agg.fingerprint()}@{k.fn.__module__}.{k.fn.__qualname__}")
        fields_by_agg.append({f"f_{field}": name for (field, _, _), name in
                              zip(agg.blueprint.fields, WindowState.aggregate_names(nid, j, agg))})

    ts_col = b.cols[spec.event_time]
    key_cols = key_columns(gen, node, b, spec.keys)
    agg_cols = [b.cols[a.column] if a.column else None for _, a in aggs]
    stores, dictionaries = _string_aggregates(gen, node, b, aggs, agg_cols, fields_by_agg)
    _value_sets(gen, nid, aggs, agg_cols, fields_by_agg)

    leaves, names, dense, loop = row_loop(gen, b, [ts_col, *key_cols, *agg_cols])

    # --- update -------------------------------------------------------------
    key_expr = key_code(gen, b, names, key_cols, state_names)
    agg_code = []
    for (name, agg), col, fnames in zip(aggs, agg_cols, fields_by_agg):
        update = agg.blueprint.update.format(**fnames)
        if col is None:
            agg_code.append(indent(update, 8))
            continue
        ok = row_ok(names, gen.leaves(b, col, []), "i")
        agg_code.append(f"        if {ok}:\n            x = {value_code(col, gen, b, names, 'i')}\n"
                        + indent(update, 12))
    params = ", ".join((["n"] if dense else ["sel"]) + [p for leaf in leaves for p in names[leaf]]
                       + ["rwm", "rw_scalar", "rw_cap", "rw_floor", "settings"] + state_names + ["late_out"] + stores)
    # The window's geometry is read from the step's settings at run time (see Gen.bind_settings):
    # below, ``size``, ``slide``, ... are the generated code's local names, not values.
    if session:
        gen.bind_settings(nid, spec.settings())
        session_update(gen, nid, params, loop, value_code(ts_col, gen, b, names, "i"), key_expr, agg_code,
                        aggs, fields_by_agg, state_names)
        session_fire(gen, node, aggs, fields_by_agg, state_names)
        return _step_code(gen, node, b, dense, leaves, state_names, key_cols, aggs, stores, dictionaries)
    sliding = spec.sliding
    gen.bind_settings(nid, spec.settings())
    if sliding:
        gen.sliding_times[nid] = ts_col.name if ts_col.kind == "src" else None
    live = f"live = {state_names[2]}[0]" if sliding else ""
    # (the link's lines after its first are written for the 12 spaces of an else branch of the row loop)
    link = [line[12:] if j else line for j, line in enumerate(sliding_link(nid, state_names[2]).split("\n"))] \
        if sliding else []
    find = f"s = ht_find_or_insert({', '.join(state_names[:4])}, k, ws)"
    gen.funcs.append(f'''
@njit
def window_{nid}_update({params}):
    """Window node {nid}: fold rows into (key, window) slots; record late rows."""
{gen.setting_lines[nid]}
    n_late = 0
    seq = {state_names[4]}[0]  # kept in registers in the loop, written back at the end
    low = {state_names[4]}[1]
    high = {state_names[4]}[2]
    # slots of recent (key, pane)s (no slot is freed during the loop)
{slot_cache()}
    {"pslot = np.int64(-1)" if sliding else ""}
    {"pane_ws = np.int64(0)" if sliding else ""}
    # the pane (and last window) of the previous row: rows mostly share it, and then
    # need no division (the settings are run-time values, not constants to fold)
    pane_lo = np.int64(1)
    pane_hi = np.int64(0)
    {"last_lo = np.int64(1)" if sliding else ""}
    {"last_hi = np.int64(0)" if sliding else ""}
    {loop}
        t = {value_code(ts_col, gen, b, names, "i")}
        if t >= pane_lo and t < pane_hi:
            ws = pane_lo
        else:
            ws = ((t - offset) // pane) * pane + offset  # the row's pane (= window when tumbling)
            pane_lo = ws
            pane_hi = ws + pane
        {indent(_last_window(), 8).lstrip() if sliding else "last = ws"}
        {ROW_WATERMARK}
        if last + size + lateness <= rw:  # every window holding the row was emitted
            late_out[n_late] = i
            n_late += 1
            continue
        {key_expr}
        {indent(chr(10).join(cached_slot([live, find, *link], "k", "ws")), 8).lstrip()}
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
    if sliding:
        sliding_fire(gen, node, aggs, fields_by_agg, state_names, stores)
    else:
        _tumbling_fire(gen, node, aggs, fields_by_agg, state_names)

    # --- the step -----------------------------------------------------------
    return _step_code(gen, node, b, dense, leaves, state_names, key_cols, aggs, stores, dictionaries)


def _string_aggregates(gen, node, b, aggs, agg_cols, fields_by_agg) -> tuple[list[str], dict]:
    """The aggregates of string columns: their codes are step arguments, and min/max compare them by bytes.

    Returns the dictionaries' ``(offsets, data)`` step arguments the update (and a sliding
    window's fire, which merges panes) take, and per aggregate name the (source, column)
    whose dictionary its codes belong to. ``fields_by_agg`` gains ``d_off``/``d_data``.
    """
    stores, dictionaries = [], {}
    for j, ((name, agg), col, fnames) in enumerate(zip(aggs, agg_cols, fields_by_agg)):
        if col is None or agg.user is not None or string_type(col.arrow_type) is None:
            continue
        origin = string_origin(gen, node, b, col, agg.column)
        if agg.kind != "count":
            gen.value_dictionaries.setdefault(node.id, {})[("agg", None, j)] = (gen.source, origin)
        if agg.kind in ("min", "max"):
            if _STR_LESS not in gen.funcs:
                gen.funcs.append(_STR_LESS)
            fnames["d_off"], fnames["d_data"] = gen.dictionary_store(origin)
            stores += [a for a in (fnames["d_off"], fnames["d_data"]) if a not in stores]
        if agg.kind not in ("count", "count_distinct"):
            dictionaries[name] = (gen.source, origin)
    return stores, dictionaries


def _value_sets(gen, nid, aggs, agg_cols, fields_by_agg) -> None:
    """``count_distinct``: its value set's arrays and how a row's value becomes an int64, in ``fields_by_agg``."""
    for j, ((_, agg), col, fnames) in enumerate(zip(aggs, agg_cols, fields_by_agg)):
        if not agg.blueprint.sets:
            continue
        if _DISTINCT not in gen.funcs:
            gen.funcs.append(_DISTINCT)  # (its kernels inline changelog's f64_bits)
            gen.fingerprints += [kernel_module_stamp("distinct.py"), kernel_module_stamp("changelog.py")]
        for role, name in zip(("buckets", "keys", "meta", "free", "next"), WindowState.set_names(nid, j)):
            fnames[f"d_{role}"] = name
        floating = pa.types.is_floating(col.arrow_type)
        fnames["x_bits"] = "distinct_bits(x)" if floating else "np.int64(x)"


def _last_window() -> str:
    """Update-loop code setting ``last``, the start of the last sliding window holding ``t``."""
    return """if t >= last_lo and t < last_hi:
    last = last_lo
else:
    last = ((t - offset) // slide) * slide + offset
    last_lo = last
    last_hi = last + slide"""


def _tumbling_fire(gen, node, aggs, fields_by_agg, state_names):
    nid = node.id
    allocs, final, rets = finalizers(node, aggs, fields_by_agg)
    resets = reset_lines(aggs, fields_by_agg)
    gen.funcs.append(f'''
@njit
def window_{nid}_fire(wm_now, settings, {", ".join(state_names)}):
    """Window node {nid}: emit windows with end + lateness <= watermark, ordered by end, key."""
{gen.setting_lines[nid]}
{due_entries(state_names, state_names[1] + "[:, 1]", "size + lateness")}
    win_start = empty(cnt, np.int64)
    win_end = empty(cnt, np.int64)
    key = empty(cnt, np.int64)
    key_valid = empty(cnt, np.bool_)
{indent(allocs, 4)}
    for o in range(cnt):
        s = fired[order[o]]
        win_start[o] = {state_names[1]}[s, 1]
        win_end[o] = win_start[o] + size
        key[o] = {state_names[1]}[s, 0]
        key_valid[o] = key[o] != {NULL_KEY}
{chr(10).join(indent(f, 8) for f in final)}
    for o in range(cnt):
        s = fired[o]
{chr(10).join(indent(r, 8) for r in resets)}
    ht_delete_many({", ".join(state_names[:4])}, fired[:cnt], kept[:n_kept])
    return win_start, win_end, key, key_valid, {rets}
''')


def _step_code(gen, node, b, dense, leaves, state_names, key_cols, aggs, stores, dictionaries):
    nid = node.id
    spec = node.bound.spec
    rwm = b.wm_array or "empty(0, np.int64)"
    late = f"late_{nid}"
    watermark_bounds(gen, node)
    gen.emit(f"{late} = empty({size_of(b.sel)}, np.int32)")
    args = ", ".join(([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"wm_before_{nid}", "settings"] + state_names + [late]
                     + stores)
    gen.emit(f"n_late = window_{nid}_update({args})")
    gen.emit(f"{gen.metric('late_events')} += n_late")
    gen.emit(f"{gen.metric('late_events', nid)} += n_late")
    gen.emit(f"late_sel_{nid} = {late}[:n_late]")
    propagate_watermark(gen, node)
    outs = ["ws", "we", "key", "key_valid"] + [p for j in range(len(aggs)) for p in (f"r{j}", f"rv{j}")]
    outs = [f"{o}_{nid}" for o in outs]
    fire_args = state_names + (stores if spec.sliding else [])  # (a sliding window merges panes when it fires)
    gen.emit(f"{', '.join(outs)} = window_{nid}_fire(wm[{nid}], settings, {', '.join(fire_args)})")
    gen.emit_rows(nid, f"ws_{nid}.size")

    schema = node.schema
    cols = {
        "window_start": Col("der", "window_start", schema.field("window_start").type, f"ws_{nid}", f"no_nulls_{nid}"),
        "window_end": Col("der", "window_end", schema.field("window_end").type, f"we_{nid}", f"no_nulls_{nid}"),
    }
    cols.update(emitted_key_cols(gen, node, spec.keys, key_cols, state_names, f"key_{nid}", f"key_valid_{nid}"))
    for j, (name, _) in enumerate(aggs):
        cols[name] = Col("der", name, schema.field(name).type, f"r{j}_{nid}", f"rv{j}_{nid}",
                         dictionary=dictionaries.get(name))
    owned = (f"sel_{nid}", *outs, f"no_nulls_{nid}")
    emitted = Binding(EMITTED, f"m_{nid}", cols, f"sel_{nid}", None, f"wm_before_{nid}", owned)
    return emitted, replace(b, sel=f"late_sel_{nid}")


