"""Code generation for unbounded ranked rows: ``TopN(..., window=None)`` and ``Dedup(..., keep="last")``.

The generated loop (glue) reads each row's key and rank key, lets the kernel
``ranked_insert`` find its place among the key's best rows, and writes the
row's columns into the int64 row store; ``ranked_emit`` then lists what
changed per rank, and the glue turns its int64 columns back into typed ones.
"""

from __future__ import annotations

from ..errors import SchemaError
from ..kernels.changelog import R_CUR, R_LAST, R_MARK
from ..state.ranked import RankedState
from .core import (
    EMITTED,
    ROW_WATERMARK,
    Binding,
    Col,
    Gen,
    indent,
    key_code,
    key_columns,
    np_dtype,
    propagate_watermark,
    row_loop,
    row_ok,
    value_code,
    watermark_bounds,
)
from .group import link_changelog_kernels

__all__ = ["generate_ranked"]


def generate_ranked(gen: Gen, node, b: Binding) -> tuple[Binding, None]:
    """Emit an unbounded TopN or last-row Dedup: each row offered to its key's best rows, then the changes."""
    nid = node.id
    spec = node.bound.spec
    names_ = RankedState.argument_names(nid, len(spec.keys))
    gen.state_args += names_
    gen.stateful_ids.append(nid)
    aux, tb, tk, tm, tf, rows = names_[:6]
    link_changelog_kernels(gen)

    cols = [b.cols[name] for name, _ in spec.payload]
    for (name, dtype), col in zip(spec.payload, cols):
        if dtype is None and col.kind == "src":
            if b.origin is not None:
                raise SchemaError(f"operator {node.name!r}: string column {name!r} must come straight from a "
                                  "source (not through a fan-in) to be kept")
            gen.encoded.add(col.name)  # (a renamed or ArrowMap-computed column: its batch name)
        elif dtype is None and col.dictionary is None:
            raise SchemaError(f"operator {node.name!r}: string column {name!r} has no dictionary to keep it by")
    key_cols = key_columns(gen, node, b, spec.keys)
    by_col = b.cols[spec.by]
    ttl = spec.ttl > 0
    ts_col = b.cols[spec.event_time] if ttl else None
    leaves, names, dense, loop = row_loop(gen, b, [*key_cols, *cols] + ([ts_col] if ttl else []))

    is_float = spec.by_dtype.kind == "f"
    lines = [f"if not ({row_ok(names, gen.leaves(b, by_col, []), 'i')}):", "    continue  # a null never ranks",
             f"x = {value_code(by_col, gen, b, names, 'i')}"]
    if is_float:
        lines += ["if x != x:", "    continue  # nor does NaN"]
    lines.append(f"rkey = {'rank_key_f64' if is_float else 'rank_key_i64'}(x, {spec.descending})")
    if spec.then_by is None:
        lines.append("rkey2 = np.int64(0)")
    else:  # the second ORDER BY column: NaN is the largest number and null sorts last, as in DuckDB
        then_col = b.cols[spec.then_by]
        fn = "rank_key_f64" if spec.then_by_dtype.kind == "f" else "rank_key_i64"
        lines += [f"rkey2 = {fn}({value_code(then_col, gen, b, names, 'i')}, {spec.then_descending}) "
                  f"if ({row_ok(names, gen.leaves(b, then_col, []), 'i')}) else np.int64(-9223372036854775808)"]
    lines += key_code(gen, b, names, key_cols, names_).split("\n        ")
    lines.append(f"s = ht_find_or_insert({tb}, {tk}, {tm}, {tf}, k, np.int64(0))")
    if ttl:  # a key idle for longer than the TTL starts afresh; the latest event time offered is kept
        first = f"{rows}[s * {spec.n}, "
        lines += [f"t = {value_code(ts_col, gen, b, names, 'i')}",
                  *ROW_WATERMARK.split("\n        "),
                  f"if rw != WM_MIN and {first}{R_MARK}] != 0 and {first}{R_LAST}] <= rw - ttl:",
                  f"    ranked_forget({rows}, s, np.int64({spec.n}))",
                  f"if {first}{R_MARK}] == 0 or t > {first}{R_LAST}]:",
                  f"    {first}{R_LAST}] = t"]
    lines += ["q = seq",
              "seq += 1",
              f"pos = ranked_insert({rows}, s, np.int64({spec.n}), rkey, rkey2, q, np.bool_({spec.later_wins}))",
              "if pos < 0:",
              "    continue",
              f"row = s * {spec.n} + pos",
              "valid = np.int64(0)"]
    for j, ((_, dtype), col) in enumerate(zip(spec.payload, cols)):
        v = value_code(col, gen, b, names, "i")
        stored = f"float_bits({v})" if dtype is not None and dtype.kind == "f" else f"np.int64({v})"
        lines += [f"if {row_ok(names, gen.leaves(b, col, []), 'i')}:",
                  f"    {rows}[row, {R_CUR + j}] = {stored}",
                  f"    valid |= np.int64({1 << j})",
                  "else:",
                  f"    {rows}[row, {R_CUR + j}] = 0"]
    lines += [f"{rows}[row, {R_CUR + len(cols)}] = valid",
              f"if {rows}[s * {spec.n}, {R_MARK}] != stamp:",
              f"    {rows}[s * {spec.n}, {R_MARK}] = stamp",
              "    dirty[nd] = s",
              "    nd += 1"]
    params = ", ".join((["n"] if dense else ["sel"]) + [p for leaf in leaves for p in names[leaf]]
                       + ["rwm", "rw_scalar", "rw_cap", "rw_floor", "ttl"] + names_)
    gen.funcs.append(f'''
@njit
def ranked_{nid}_update({params}):
    """Ranked rows node {nid}: offer each row to its key's best {spec.n}; the keys whose rows changed, in order."""
    {aux}[0] += 1
    stamp = {aux}[0]
    seq = {aux}[1]
    dirty = empty({"n" if dense else "sel.size"}, np.int64)
    nd = 0
    {loop}
{indent(chr(10).join(lines), 8)}
    {aux}[1] = seq
    return dirty[:nd]
''')

    watermark_bounds(gen, node)
    ttl_value = gen.setting(spec.ttl)
    rwm = b.wm_array or "empty(0, np.int64)"
    args = ", ".join(([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"wm_before_{nid}", ttl_value] + names_)
    gen.emit(f"dirty_{nid} = ranked_{nid}_update({args})")
    gen.emit(f"rank_{nid}, rop_{nid}, rcols_{nid} = ranked_emit(dirty_{nid}, {tm}[1], np.int64({spec.n}), {rows})")
    propagate_watermark(gen, node)
    if ttl:
        gen.emit(f"if wm[{nid}] != WM_MIN and wm[{nid}] >= {aux}[2]:")
        gen.emit(f"ranked_purge(wm[{nid}], {ttl_value}, np.int64({spec.n}), {rows}, {tb}, {tk}, {tm}, {tf})", 2)
        gen.emit(f"{aux}[2] = wm[{nid}] + {ttl_value}", 2)
    gen.emit_rows(nid, f"rank_{nid}.size")
    schema = node.schema
    out = {}
    owned = [f"sel_{nid}", f"rop_{nid}", f"no_nulls_{nid}"]
    if spec.with_rank:
        out["rank"] = Col("der", "rank", schema.field("rank").type, f"rank_{nid}", f"no_nulls_{nid}")
        owned.append(f"rank_{nid}")
    for j, ((name, dtype), col) in enumerate(zip(spec.payload, cols)):
        raw, vals, valid = f"rcols_{nid}[{j}]", f"rc{j}_{nid}", f"rv{j}_{nid}"
        want = np_dtype(schema.field(name).type)
        if dtype is not None and dtype.kind == "f":
            read = f"{raw}.view(np.float64)" + ("" if want == "np.float64" else f".astype({want})")
        elif want == "np.bool_":
            read = f"nonzero({raw})"
        else:
            read = raw if want == "np.int64" else f"{raw}.astype({want})"
        gen.emit(f"{vals} = {read}")
        gen.emit(f"{valid} = bits_set(rcols_{nid}[{len(cols)}], np.int64({j}))")
        dictionary = None
        if dtype is None:
            dictionary = (gen.source, col.name) if col.kind == "src" else col.dictionary
            gen.value_dictionaries.setdefault(nid, {})[("payload", None, j)] = dictionary
        out[name] = Col("der", name, schema.field(name).type, vals, valid, dictionary=dictionary)
        owned += [vals, valid]
    out["op"] = Col("der", "op", schema.field("op").type, f"rop_{nid}", f"no_nulls_{nid}")
    return Binding(EMITTED, f"m_{nid}", out, f"sel_{nid}", None, f"wm_before_{nid}", tuple(owned)), None
