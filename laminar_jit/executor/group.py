"""Code generation for group aggregates (:class:`laminar_jit.GroupAggregate`).

A group aggregate becomes one compiled loop in the plan, ``group_<id>_update``,
that folds each row into its key's accumulators (the glue: which columns,
which aggregate does what) and lists the keys it touched; the library
kernel ``group_emit`` (:mod:`laminar_jit.kernels.changelog`) then turns those
keys into changelog rows, and ``group_purge`` drops keys whose TTL passed.
"""

from __future__ import annotations

from ..kernels.changelog import (
    COUNT,
    COUNT_DISTINCT,
    COUNT_ROWS,
    MAX,
    MEAN,
    MIN,
    SUM,
    rec_columns,
)
from ..ops.group import GroupAggregate
from .core import (
    EMITTED,
    ROW_WATERMARK,
    Binding,
    Col,
    Gen,
    emitted_key_cols,
    indent,
    kernel_module_stamp,
    key_code,
    key_columns,
    key_parts,
    np_dtype,
    propagate_watermark,
    register,
    row_loop,
    row_ok,
    string_origin,
    value_code,
    watermark_bounds,
)
from .slots import cached_slot, slot_cache

__all__ = ["generate_group", "link_changelog_kernels"]

_IMPORT = ("\nfrom laminar_jit.kernels.changelog import f64_bits, float_bits, group_emit, group_forget, group_purge, "
           "ms_add, ms_remove, rank_key_f64, rank_key_i64, ranked_emit, ranked_forget, ranked_insert, "
           "ranked_purge, refind_strings\nfrom laminar_jit.kernels.strings import str_less\n")


def link_changelog_kernels(gen: Gen) -> None:
    """Import :mod:`laminar_jit.kernels.changelog` into the plan (once) and stamp its source into the plan's name."""
    if _IMPORT not in gen.funcs:
        gen.funcs.append(_IMPORT)
        gen.fingerprints.append(kernel_module_stamp("changelog.py"))


def _slot_lookup(gen, b, names: dict, key_cols: list, state_names: list[str], find: str) -> list[str]:
    """Row-loop lines setting ``s``, the row's key slot (``find`` looks it up from ``k``): through the cache of
    recent keys' slots by the key columns' values (:func:`.slots.cached_slot`, skipping the composite-key table
    too) when the key has one or two columns."""
    if not 1 <= len(key_cols) <= 2:
        return [*key_code(gen, b, names, key_cols, state_names).split("\n        "), find]
    parts = key_parts(gen, b, names, key_cols)
    names_ = ["c0", "c1"][:len(parts)]
    lookup = key_code(gen, b, names, key_cols, state_names, comp=names_)
    return [*(f"{n} = {part}" for n, part in zip(names_, parts)),
            *cached_slot([*lookup.split("\n        "), find], *names_)]


@register(GroupAggregate)
def generate_group(gen: Gen, node, b: Binding) -> tuple[Binding, None]:
    """Emit a group aggregate: the per-row fold into its keys' accumulators, then its changes."""
    from ..state.group import GroupState

    nid = node.id
    spec = node.bound.spec
    n_aggs = len(spec.kinds)
    names_ = GroupState.argument_names(nid, len(spec.keys))
    gen.state_args += names_
    gen.stateful_ids.append(nid)
    kinds, floats, aux, tb, tk, tm, tf, rec, frec, odd, mhead, mb, mk, mm, mf, mlist = names_[:16]
    ival0, _, mark, last, _, flags, _ = rec_columns(n_aggs)
    link_changelog_kernels(gen)

    ttl = spec.ttl > 0
    ts_col = b.cols[spec.event_time] if ttl else None
    op_col = b.cols["op"] if spec.retract else None
    key_cols = key_columns(gen, node, b, spec.keys)
    agg_cols = [b.cols[c] if c is not None else None for c in spec.columns]
    # string columns: the source column whose dictionary their codes belong to, and for min/max that
    # dictionary's (offsets, data) step arguments (to compare codes by their bytes)
    origins, stores = {}, {}
    for j, (kind, c, col) in enumerate(zip(spec.kinds, spec.columns, agg_cols)):
        if c in spec.strings:
            origin = origins[c] = string_origin(gen, node, b, col, c)
            gen.value_dictionaries.setdefault(node.id, {})[("agg", None, j)] = (gen.source, origin)
            if kind in (MIN, MAX) and origin not in stores:
                stores[origin] = gen.dictionary_store(origin)
    leaves, names, dense, loop = row_loop(gen, b, [ts_col, op_col, *key_cols, *agg_cols])

    lines = []
    if ttl:
        lines += [f"t = {value_code(ts_col, gen, b, names, 'i')}", *ROW_WATERMARK.split("\n        ")]
    lines += _slot_lookup(gen, b, names, key_cols, names_, f"s = ht_find_or_insert({tb}, {tk}, {tm}, {tf}, k, np.int64(0))")
    lines += [f"if {rec}[s, {mark}] != stamp:",
              f"    {rec}[s, {mark}] = stamp",
              "    dirty[nd] = s",
              "    nd += 1"]
    state = f"{rec}, {frec}, {odd}, {mb}, {mk}, {mm}, {mf}, {mlist}, {mhead}"
    if ttl:  # an expired key starts afresh (its state may not have been purged yet)
        lines += [f"if rw != WM_MIN and {rec}[s, {n_aggs}] != 0 and {rec}[s, {last}] <= rw - ttl:",
                  f"    group_forget({state}, s)"]
    if spec.retract:
        ok = row_ok(names, gen.leaves(b, op_col, []), "i")
        lines += [f"o = {value_code(op_col, gen, b, names, 'i')} if {ok} else 0",
                  "sign = np.int64(1) if o == 0 or o == 2 else np.int64(-1)",
                  f"if sign < 0 and {rec}[s, {n_aggs}] <= 0:",
                  "    continue  # a retraction for a key without rows: ignored"]
    else:
        lines.append("sign = np.int64(1)")
    lines.append(f"{rec}[s, {n_aggs}] += sign")
    if ttl:
        lines += [f"if t > {rec}[s, {last}]:", f"    {rec}[s, {last}] = t"]
    for a, (kind, is_float, col) in enumerate(zip(spec.kinds, spec.floats, agg_cols)):
        if kind == COUNT_ROWS:
            continue
        ok = row_ok(names, gen.leaves(b, col, []), "i")
        x = value_code(col, gen, b, names, "i")
        lines.append(f"if {ok}:")
        if kind == COUNT_DISTINCT:  # the key's distinct values, counted as they come and go
            ms = f"{mb}, {mk}, {mm}, {mf}, {mlist}, {mhead}, s, np.int64({a}), np.int64({n_aggs})"
            bits = f"f64_bits(np.float64({x}) if {x} != 0 else 0.0) if {x} == {x} else f64_bits(np.nan)" \
                if spec.in_floats[a] else f"np.int64({x})"  # (-0.0 is 0.0; every NaN is one value)
            lines += [f"    bits = {bits}",
                      "    if sign > 0:", f"        added = ms_add({ms}, bits)",
                      "        if added:", f"            {rec}[s, {a}] += 1",
                      "    else:", f"        gone = ms_remove({ms}, bits)",
                      "        if gone:", f"            {rec}[s, {a}] -= 1"]
            continue
        lines.append(f"    x = np.float64({x})" if is_float else f"    x = np.int64({x})")
        acc = f"{frec}[s, {a}]" if is_float else f"{rec}[s, {ival0 + a}]"
        cnt = f"{rec}[s, {a}]"
        stale = f"{rec}[s, {flags}] & {1 << (32 + a)}"
        if kind == COUNT:
            lines.append(f"    {cnt} += sign")
        elif kind in (SUM, MEAN) and is_float and spec.retract:  # NaN and inf counted apart: retractable
            lines += [f"    {cnt} += sign",
                      "    if x != x:", f"        {odd}[s, {3 * a}] += sign",
                      "    elif x == np.inf:", f"        {odd}[s, {3 * a + 1}] += sign",
                      "    elif x == -np.inf:", f"        {odd}[s, {3 * a + 2}] += sign",
                      "    else:", f"        {acc} += sign * x"]
        elif kind in (SUM, MEAN):
            lines += [f"    {cnt} += sign", f"    {acc} += sign * x"]
        else:
            better = _better("x", acc, kind == MAX, is_float)
            if spec.columns[a] in origins:  # a string's code: compared by its bytes
                offsets, data = stores[origins[spec.columns[a]]]
                better = f"x != {acc} and " + (f"str_less({offsets}, {data}, {acc}, x)" if kind == MAX else
                                                 f"str_less({offsets}, {data}, x, {acc})")
            if not spec.retract:
                lines += [f"    if {cnt} == 0 or {better}:", f"        {acc} = x",
                          f"    {cnt} += 1"]
                continue
            bits = "f64_bits(x)" if is_float else "x"
            cur_bits = f"f64_bits({acc})" if is_float else acc
            lines += [f"    bits = {bits}",
                      "    if sign > 0:",
                      f"        ms_add({mb}, {mk}, {mm}, {mf}, {mlist}, {mhead}, s, np.int64({a}), np.int64({n_aggs}), bits)",
                      f"        if {cnt} <= 0:",
                      f"            {acc} = x",
                      f"            {rec}[s, {flags}] &= {~(1 << (32 + a))}",
                      f"        elif not ({stale}) and ({better}):",
                      f"            {acc} = x",
                      "    else:",
                      f"        gone = ms_remove({mb}, {mk}, {mm}, {mf}, {mlist}, {mhead}, s, np.int64({a}), np.int64({n_aggs}), bits)",
                      f"        if gone and bits == {cur_bits}:",
                      f"            {rec}[s, {flags}] |= {1 << (32 + a)}",
                      f"    {cnt} += sign"]
    store_args = [a for pair in stores.values() for a in pair]
    params = ", ".join((["n"] if dense else ["sel"]) + [p for leaf in leaves for p in names[leaf]]
                       + ["rwm", "rw_scalar", "rw_cap", "rw_floor", "ttl"] + names_ + store_args)
    gen.funcs.append(f'''
@njit
def group_{nid}_update({params}):
    """Group aggregate node {nid}: fold each row into its key's accumulators; the keys touched, in order."""
    {aux}[0] += 1
    stamp = {aux}[0]
    dirty = empty({"n" if dense else "sel.size"}, np.int64)
    nd = 0{chr(10) + slot_cache(len(key_cols)) if 1 <= len(key_cols) <= 2 else ""}
    {loop}
{indent(chr(10).join(lines), 8)}
    return dirty[:nd]
''')

    rwm = b.wm_array or "empty(0, np.int64)"
    watermark_bounds(gen, node)
    ttl_value = gen.setting(spec.ttl)
    args = ", ".join(([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"wm_before_{nid}", ttl_value] + names_ + store_args)
    gen.emit(f"dirty_{nid} = group_{nid}_update({args})")
    for a, (kind, c) in enumerate(zip(spec.kinds, spec.columns)):
        if spec.retract and kind in (MIN, MAX) and c in origins:  # a retracted min/max of strings, by bytes
            offsets, data = stores[origins[c]]
            gen.emit(f"refind_strings(dirty_{nid}, np.int64({a}), np.int64({ival0 + a}), np.int64({flags}), "
                     f"np.bool_({kind == MAX}), {offsets}, {data}, {rec}, {mk}, {mlist}, {mhead})")
    table = f"{tb}, {tk}, {tm}, {tf}, {state}"
    gen.emit(f"gk_{nid}, gop_{nid}, gi_{nid}, gf_{nid}, gn_{nid} = group_emit(dirty_{nid}, {kinds}, {floats}, "
             f"{table})")
    propagate_watermark(gen, node)
    if ttl:
        gen.emit(f"if wm[{nid}] != WM_MIN and wm[{nid}] >= {aux}[1]:")
        gen.emit(f"group_purge(wm[{nid}], {ttl_value}, {table})", 2)
        gen.emit(f"{aux}[1] = wm[{nid}] + {ttl_value}", 2)
    gen.emit_rows(nid, f"gk_{nid}.size")
    gen.emit(f"gkv_{nid} = keys_valid(gk_{nid})")
    cols = emitted_key_cols(gen, node, spec.keys, key_cols, names_, f"gk_{nid}", f"gkv_{nid}")
    owned = [f"sel_{nid}", f"gk_{nid}", f"gop_{nid}", f"gkv_{nid}", f"no_nulls_{nid}"]
    for a, ((name, _), kind, is_float, out_type) in enumerate(zip(spec.aggs, spec.kinds, spec.floats,
                                                                   spec.out_types)):
        vals = f"ga{a}_{nid}"
        raw = f"{'gf' if is_float else 'gi'}_{nid}[{a}]"
        dtype = np_dtype(out_type)
        gen.emit(f"{vals} = {raw}" if dtype in ("np.int64", "np.float64") else f"{vals} = {raw}.astype({dtype})")
        if kind in (COUNT_ROWS, COUNT, COUNT_DISTINCT):
            valid = f"no_nulls_{nid}"
        else:
            valid = f"gv{a}_{nid}"
            gen.emit(f"{valid} = negated(gn_{nid}[{a}])")
            owned.append(valid)
        owned.append(vals)
        column = spec.columns[a]
        text = column in spec.strings and kind in (MIN, MAX)  # codes of the column's dictionary
        cols[name] = Col("der", name, out_type, vals, valid,
                         dictionary=(gen.source, origins[column]) if text else None)
    cols["op"] = Col("der", "op", node.schema.field("op").type, f"gop_{nid}", f"no_nulls_{nid}")
    return Binding(EMITTED, f"m_{nid}", cols, f"sel_{nid}", None, f"wm_before_{nid}", tuple(owned)), None


def _better(x: str, cur: str, is_max: bool, is_float: bool) -> str:
    """Whether ``x`` replaces ``cur`` as minimum (maximum); for floats NaN sorts above every number."""
    if not is_float:
        return f"{x} > {cur}" if is_max else f"{x} < {cur}"
    if is_max:
        return f"{x} > {cur} or ({x} != {x} and {cur} == {cur})"
    return f"{x} < {cur} or ({cur} != {cur} and {x} == {x})"
