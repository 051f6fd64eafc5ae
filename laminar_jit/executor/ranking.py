"""Code generation for the ranking operators built on the window key table: ``Dedup`` and ``TopN``.

Both key a :class:`~laminar_jit.state.WindowState` table by (key, tumbling
interval) like a tumbling window. A Dedup keeps the row that creates a slot
and only frees slots when the watermark passes them; a TopN keeps the best
``n`` rows of every column per slot and emits them ranked when the window
closes. A ``TopN(ties=True)`` also keeps the rows tying a slot's n-th best
in a pool of tie rows: kernels in :mod:`laminar_jit.kernels.ranking` decide
where a row goes and rank a fired slot's rows; the generated code only
copies the columns.
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import SchemaError
from ..kernels.ranking import TIE_TAKEN
from ..ops.dedup import Dedup
from ..ops.ranked import RankedSpec
from ..ops.topn import TopN
from ..state.windows import WindowState
from .core import (
    EMITTED,
    ROW_WATERMARK,
    Binding,
    Col,
    indent,
    key_code,
    key_columns,
    propagate_watermark,
    register,
    row_loop,
    row_ok,
    size_of,
    value_code,
    watermark_bounds,
)
from .ranked import generate_ranked
from .slots import cached_slot, due_entries, slot_cache
from .steps import two_phase

__all__ = ["generate_ranking"]


@register(Dedup, TopN)
def generate_ranking(gen, node, b: Binding) -> tuple[Binding, Binding]:
    """Emit a Dedup or TopN node; returns the bindings of its output rows and of its late rows."""
    if isinstance(node.bound.spec, RankedSpec):  # unbounded: TopN(window=None), Dedup(keep="last")
        return generate_ranked(gen, node, b)
    return (_dedup if isinstance(node.op, Dedup) else _topn)(gen, node, b)


def _prelude(gen, node, b: Binding, cols: list):
    """What both update functions share: state names, the rows' key and event time, the leaves they read."""
    spec = node.bound.spec
    state_names = WindowState.argument_names(node.id, node.bound)
    gen.state_args += state_names
    gen.stateful_ids.append(node.id)
    ts_col = b.cols[spec.event_time]
    key_cols = key_columns(gen, node, b, spec.keys)
    leaves, names, dense, loop = row_loop(gen, b, [ts_col, *key_cols, *cols])
    key_expr = key_code(gen, b, names, key_cols, state_names)
    params = ", ".join((["n"] if dense else ["sel"]) + [p for leaf in leaves for p in names[leaf]]
                       + ["rwm", "rw_scalar", "rw_cap", "rw_floor", "settings"] + state_names + ["late_out"])
    return state_names, ts_col, key_cols, leaves, names, dense, loop, key_expr, params


def _dedup(gen, node, b):
    """A Dedup node: pass the first row of each (key, interval) on; forget intervals the watermark passed.

    It is a tumbling window without aggregates whose "emission" is the row
    that creates its (key, interval) slot; the fire step only frees slots.
    Returns the bindings of the kept rows and of the late rows (both
    selections over the input).
    """
    nid = node.id
    # the interval's geometry is read at run time (see Gen.bind_settings): names, not values
    gen.bind_settings(nid, node.bound.spec.settings())
    state_names, ts_col, _, leaves, names, dense, loop, key_expr, params = _prelude(gen, node, b, [])
    ts_expr = value_code(ts_col, gen, b, names, "i")
    table = ", ".join(state_names[:4])
    meta, aux = state_names[2], state_names[4]
    gen.funcs.append(f'''
@njit
def dedup_{nid}_update({params}, keep_out):
    """Dedup node {nid}: keep rows that open a (key, interval) slot; record late rows."""
{gen.setting_lines[nid]}
    n_late = 0
    n_keep = 0
    low = {aux}[1]
    high = {aux}[2]
    seen = False  # the previous row's (key, interval) is in the table: a repeat is a duplicate
    win_lo = np.int64(1)  # the previous row's interval [win_lo, win_hi)
    win_hi = np.int64(0)
    prev_k = np.int64(0)
    prev_ws = np.int64(0)
    {loop}
{_row_window(ts_expr, "the interval was already forgotten")}
        {key_expr}
        if seen and k == prev_k and ws == prev_ws:
            continue
        seen, prev_k, prev_ws = True, k, ws
        live = {meta}[0]
        ht_find_or_insert({table}, k, ws)
        if {meta}[0] != live:  # a new slot: the first row of its (key, interval)
            keep_out[n_keep] = i
            n_keep += 1
            if ws < low:
                low = ws
            if ws > high:
                high = ws
    {aux}[1] = low
    {aux}[2] = high
    return n_late, n_keep


@njit
def dedup_{nid}_forget(wm_now, settings, {", ".join(state_names)}):
    """Dedup node {nid}: free the slots of intervals with end + lateness <= watermark."""
{gen.setting_lines[nid]}
{due_entries(state_names, state_names[1] + "[:, 1]", "size + lateness", ordered=False)}
    ht_delete_many({table}, fired[:cnt], kept[:n_kept])
    return cnt
''')
    rwm = b.wm_array or "empty(0, np.int64)"
    watermark_bounds(gen, node)
    gen.emit(f"late_{nid} = empty({size_of(b.sel)}, np.int32)")
    gen.emit(f"keep_{nid} = empty({size_of(b.sel)}, np.int32)")
    args = ", ".join(([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"wm_before_{nid}", "settings"] + state_names
                     + [f"late_{nid}", f"keep_{nid}"])
    gen.emit(f"n_late_{nid}, n_keep_{nid} = dedup_{nid}_update({args})")
    gen.emit(f"{gen.metric('late_events')} += n_late_{nid}")
    gen.emit(f"{gen.metric('late_events', nid)} += n_late_{nid}")
    gen.emit(f"keep_sel_{nid} = keep_{nid}[:n_keep_{nid}]")
    gen.emit(f"late_sel_{nid} = late_{nid}[:n_late_{nid}]")
    propagate_watermark(gen, node)
    gen.emit(f"dedup_{nid}_forget(wm[{nid}], settings, {', '.join(state_names)})")
    return replace(b, sel=f"keep_sel_{nid}"), replace(b, sel=f"late_sel_{nid}")


def _topn(gen, node, b):
    """A TopN node: per (key, window) slot keep the best n rows of every column; emit them ranked when due.

    Returns the bindings of the emitted rows and of the late rows.
    """
    nid = node.id
    spec = node.bound.spec
    gen.bind_settings(nid, spec.settings())
    payload = spec.payload
    cols = [b.cols[name] for name, _ in payload]
    for (name, dtype), col in zip(payload, cols):
        if dtype is None and col.kind == "src":
            if b.origin is not None:
                raise SchemaError(f"operator {node.name!r}: string column {name!r} must come straight from a "
                                  "source (not through a fan-in) to be kept by TopN")
            gen.encoded.add(col.name)  # (a renamed or ArrowMap-computed column: its batch name)
        elif dtype is None and col.dictionary is None:
            raise SchemaError(f"operator {node.name!r}: string column {name!r} has no dictionary to keep it by")
    by = next(j for j, (name, _) in enumerate(payload) if name == spec.by)
    # a key shard's share of a TopN without a key (two phases): rows are numbered by their place in the
    # input, as every shard sees it, and a fire emits each row's number in place of its rank: the shards'
    # rows of a window are ranked again when they are combined (partials.combine_topn)
    partial = gen.sharded and two_phase(gen.dag, node)
    state_names, ts_col, _, leaves, names, dense, loop, key_expr, params = _prelude(gen, node, b, cols)
    table = ", ".join(state_names[:4])
    keys_arr, aux = state_names[1], state_names[4]
    fields = state_names[5:5 + 2 + 2 * len(payload)]
    count, seq = fields[0], fields[1]
    vals, valids = fields[2::2], fields[3::2]
    if spec.ties:  # the tie rows' pool follows the kept rows (state/ties.py)
        pool = state_names[5 + len(fields):5 + len(fields) + 5 + 2 * len(payload)]
        tie_head, tie_pool, tie_slot, tie_next, tie_seq = pool[:5]
        tie_vals, tie_valids = pool[5::2], pool[6::2]

    by_ok = row_ok(names, gen.leaves(b, cols[by], []), "i")
    better = ">" if spec.descending else "<"   # a beats b: a.by {better} b.by, or equal and earlier
    worse = "<" if spec.descending else ">"

    def stores(values, valid, at, indent="        "):
        """Lines storing the row's columns at ``values[j][at]`` and ``valid[j][at]``."""
        lines = []
        for j, col in enumerate(cols):
            ok = row_ok(names, gen.leaves(b, col, []), "i")
            lines.append(f"{indent}if {ok}:\n{indent}    {values[j]}[{at}] = {value_code(col, gen, b, names, 'i')}\n"
                         f"{indent}    {valid[j]}[{at}] = True\n{indent}else:\n{indent}    {valid[j]}[{at}] = False")
        return "\n".join(lines)

    by_vals = vals[by]
    if spec.ties:
        moves = "\n".join(f"            {tie_vals[j]}[o] = {vals[j]}[s, c]\n            {tie_valids[j]}[o] = {valids[j]}[s, c]"
                          for j in range(len(payload)))
        place = f"""c = topn_tie_offer(s, xb, q, {count}, {by_vals}, {seq}, np.bool_({spec.descending}), {tie_head}, {tie_pool}, {tie_slot}, {tie_next}, {tie_seq})
        o = {tie_pool}[{TIE_TAKEN}]
        if o >= 0:
            if c < 0:  # it ties the n-th best value: a tie row
{stores(tie_vals, tie_valids, "o", " " * 16)}
                continue
            # it replaces a kept row that still ties the n-th best value: that one becomes a tie row
{moves}
        elif c < 0:
            continue"""
    else:
        place = f"""m = {count}[s]
        if m < top:
            c = m
            {count}[s] = m + 1
        else:  # replace the worst kept row if this one beats it (ties go to the earlier row)
            c = 0
            for d in range(1, top):
                if {by_vals}[s, d] {worse} {by_vals}[s, c] or ({by_vals}[s, d] == {by_vals}[s, c] and {seq}[s, d] > {seq}[s, c]):
                    c = d
            if not (xb {better} {by_vals}[s, c]):
                continue"""
    top = "" if spec.ties else f"\n    top = {spec.topn}  # a shape of the state (slots x top), compiled in: the replace scan unrolls"
    imports = "\nfrom laminar_jit.kernels.ranking import topn_tie_free, topn_tie_offer, topn_tie_rows\n" if spec.ties else ""
    gen.funcs.append(f'''{imports}
@njit
def topn_{nid}_update({params}):
    """TopN node {nid}: offer each row to its (key, window) slot's best ``top``; record late rows."""
{gen.setting_lines[nid]}{top}
    n_late = 0
    seq = {aux}[0]
    low = {aux}[1]
    high = {aux}[2]
    # slots of recent (key, window)s (no slot is freed in the loop; bench_ranking.TopN's update 145 -> 137 ms)
{slot_cache()}
    win_lo = np.int64(1)  # the previous row's window [win_lo, win_hi)
    win_hi = np.int64(0)
    {loop}
{_row_window(value_code(ts_col, gen, b, names, "i"), "the window was already emitted")}
        if not ({by_ok}):
            continue
        xb = {value_code(cols[by], gen, b, names, "i")}
        if xb != xb:  # NaN never ranks
            continue
        {key_expr}
        {indent(chr(10).join(cached_slot([f"s = ht_find_or_insert({table}, k, ws)"], "k", "ws")), 8).lstrip()}
        if ws < low:
            low = ws
        if ws > high:
            high = ws
        {"q = seq + i" if partial else "q = seq" + chr(10) + "        seq += 1"}
        {place}
        {seq}[s, c] = q
{stores(vals, valids, "s, c")}
    {aux}[0] = seq
    {aux}[1] = low
    {aux}[2] = high
    return n_late
''')
    outs = ", ".join(f"r{j}, rv{j}" for j in range(len(payload)))
    allocs = "\n".join(f"    r{j} = empty(total, {vals[j]}.dtype)\n    rv{j} = empty(total, np.bool_)"
                       for j in range(len(payload)))

    def copies(values, valid, at, indent="        "):
        """Lines copying output row ``w``'s columns from ``values[j][at]`` and ``valid[j][at]``."""
        return "\n".join(f"{indent}r{j}[w] = {values[j]}[{at}]\n{indent}rv{j}[w] = {valid[j]}[{at}]"
                         for j in range(len(payload)))

    rows = f"topn_rows(fired, order, {count}, {by_vals}, {seq}, np.bool_({spec.descending}))"
    copy = copies(vals, valids, "s, c")
    arrival = ""
    if partial:  # (a negative column is a tie row)
        arrival = (f"        rank[w] = {seq}[s, c] if c >= 0 else {tie_seq}[-1 - c]\n" if spec.ties
                   else f"        rank[w] = {seq}[s, c]\n")
    free = ""
    if spec.ties:  # a negative column is a tie row
        rows = (f"topn_tie_rows(fired, order, {count}, {by_vals}, {seq}, np.bool_({spec.descending}), {tie_head}, {tie_next}, "
                f"{tie_seq})")
        copy = (f"        if c >= 0:\n{copies(vals, valids, 's, c', ' ' * 12)}\n        else:\n            t = -1 - c\n"
                f"{copies(tie_vals, tie_valids, 't', ' ' * 12)}")
        free = f"\n    topn_tie_free(fired, {tie_head}, {tie_pool}, {tie_slot}, {tie_next})"
    gen.funcs.append(f'''
@njit
def topn_{nid}_fire(wm_now, settings, {", ".join(state_names)}):
    """TopN node {nid}: emit due windows' rows ranked, ordered by window end, key, rank; free the slots."""
{gen.setting_lines[nid]}
{due_entries(state_names, state_names[1] + "[:, 1]", "size + lateness")}
    row_slot, row_col, rank = {rows}
    total = row_slot.size
    win_start = empty(total, np.int64)
    win_end = empty(total, np.int64)
{allocs}
    for w in range(total):
        s = row_slot[w]
        c = row_col[w]
        win_start[w] = {keys_arr}[s, 1]
        win_end[w] = win_start[w] + size
{arrival}{copy}
    for o in range(cnt):
        {count}[fired[o]] = 0{free}
    ht_delete_many({table}, fired[:cnt], kept[:n_kept])
    return win_start, win_end, rank, {outs}
''')
    rwm = b.wm_array or "empty(0, np.int64)"
    watermark_bounds(gen, node)
    gen.emit(f"late_{nid} = empty({size_of(b.sel)}, np.int32)")
    args = ", ".join(([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"wm_before_{nid}", "settings"] + state_names + [f"late_{nid}"])
    gen.emit(f"n_late_{nid} = topn_{nid}_update({args})")
    if partial:
        gen.emit(f"{aux}[0] += {b.n}")  # past the piece's numbers
    gen.emit(f"{gen.metric('late_events')} += n_late_{nid}")
    gen.emit(f"{gen.metric('late_events', nid)} += n_late_{nid}")
    gen.emit(f"late_sel_{nid} = late_{nid}[:n_late_{nid}]")
    propagate_watermark(gen, node)
    out_vars = [f"ws_{nid}", f"we_{nid}", f"rank_{nid}"] + [f"{p}{j}_{nid}" for j in range(len(payload))
                                                            for p in ("r", "rv")]
    gen.emit(f"{', '.join(out_vars)} = topn_{nid}_fire(wm[{nid}], settings, {', '.join(state_names)})")
    gen.emit_rows(nid, f"ws_{nid}.size")
    schema = node.schema
    out = {name: Col("der", name, schema.field(name).type, f"{var}_{nid}", f"no_nulls_{nid}")
           for name, var in (("window_start", "ws"), ("window_end", "we"), ("rank", "rank"))}
    for j, ((name, dtype), col) in enumerate(zip(payload, cols)):
        dictionary = None
        if dtype is None:
            dictionary = (gen.source, col.name) if col.kind == "src" else col.dictionary
            gen.value_dictionaries.setdefault(nid, {})[("payload", None, j)] = dictionary
        out[name] = Col("der", name, schema.field(name).type, f"r{j}_{nid}", f"rv{j}_{nid}", dictionary=dictionary)
    owned = (f"sel_{nid}", *out_vars, f"no_nulls_{nid}")
    emitted = Binding(EMITTED, f"m_{nid}", out, f"sel_{nid}", None, f"wm_before_{nid}", owned)
    return emitted, replace(b, sel=f"late_sel_{nid}")


def _row_window(ts_expr: str, late: str) -> str:
    """Loop-body lines: the row's event time ``t``, its window start ``ws`` (the previous row's window
    reused without a division) and its watermark ``rw``; a row whose window ``late`` is recorded late."""
    return f"""        t = {ts_expr}
        if t >= win_lo and t < win_hi:  # the previous row's window: no division
            ws = win_lo
        else:
            ws = ((t - offset) // size) * size + offset
            win_lo = ws
            win_hi = ws + size
        {ROW_WATERMARK}
        if ws + size + lateness <= rw:  # {late}
            late_out[n_late] = i
            n_late += 1
            continue"""
