"""Code generation for keyed kernels (:class:`laminar_jit.KeyedKernel`).

A keyed kernel becomes one compiled loop in the plan, ``keyed_<id>_update``:
each row calls the user's scalar function with its key's state record (a row
of engine-owned numpy arrays) and the row's columns, and the key's event-time
timers fire in (time, first arrival of the key) order as the watermark passes them.
"""

from __future__ import annotations

from .._types import arrow_to_numpy_dtype
from ..ops.keyed import KeyedKernel
from .core import (
    EMITTED,
    ROW_WATERMARK,
    Binding,
    Col,
    Gen,
    dtype_name,
    emitted_key_cols,
    indent,
    key_code,
    key_columns,
    key_parts,
    link_arrivals,
    propagate_watermark,
    register,
    row_loop,
    row_ok,
    value_code,
    watermark_bounds,
)
from .slots import cached_slot, slot_cache, slot_lookahead

__all__ = ["generate_keyed"]

@register(KeyedKernel)
def generate_keyed(gen: Gen, node, b: Binding) -> tuple[Binding, None]:
    """Emit the compiled loop of a keyed kernel: per-row calls with the key's state record,
    and its timers fired in (time, first arrival of the key) order as the watermark passes them — before each
    row whose watermark reaches them, and at the end of the batch."""
    from ..state.keyed import KeyedState

    nid = node.id
    spec = node.bound.spec
    op = node.op
    state_names = KeyedState.argument_names(nid, node.bound)
    gen.state_args += state_names
    gen.stateful_ids.append(nid)
    buckets, keys, meta, free, aux, values, htimes, hslots, first = state_names[:9]
    fn = f"keyed_{nid}_fn"
    gen.kernels[fn] = op.kernel.dispatcher
    origin = f"{op.kernel.fn.__module__}.{op.kernel.fn.__qualname__}"
    gen.fingerprints.append(f"{fn}={op.fingerprint()}@{origin}")
    timers = op.on_timer is not None
    if timers:
        gen.kernels[f"keyed_{nid}_timer"] = op.on_timer.dispatcher
        gen.fingerprints.append(f"keyed_{nid}_timer@{op.on_timer.fn.__module__}.{op.on_timer.fn.__qualname__}")

    ts_col = b.cols[spec.event_time]
    key_cols = key_columns(gen, node, b, spec.keys)
    arg_cols = [b.cols[c] for c in node.bound.reads]
    leaves, names, dense, loop = row_loop(gen, b, [ts_col, *key_cols, *arg_cols])
    arg_leaves: list = []
    for c in arg_cols:
        gen.leaves(b, c, arg_leaves)
    key_expr = key_code(gen, b, names, key_cols, state_names)
    # keys of one column, read as they are, are looked up ahead of the row that needs them (a composite key's
    # levels insert, a computed key would be computed twice)
    ahead_setup = ahead = ""
    if len(key_cols) == 1 and key_cols[0].kind != "expr":
        ahead_setup, ahead = slot_lookahead(gen, "i" if dense else "j", "n" if dense else "sel.size",
                                            "q" if dense else "sel[q]", key_parts(gen, b, names, key_cols, row="iq")[0],
                                            (buckets, keys, meta), [values, first] if timers else [values])
        ahead_setup, ahead = "\n    " + ahead_setup, "\n        " + ahead
    n_out = spec.n_outputs
    out_names = [name for name, _ in op.outputs]
    out_dtypes = [dtype_name(arrow_to_numpy_dtype(node.schema.field(name).type)) for name in out_names]
    arrays = ["okey", "ots"] + [f"o{j}" for j in range(n_out)]
    # A key shard's output notes where each row's input row arrived: the shards merge by it. A timer's output
    # notes the first row of the batch whose watermark reaches the timer (one executor fires it just before that
    # row; the shard, holding only its keys' rows, may fire it later) and, as tie-breaks, the timer's time (rows
    # tie after timers: WM_MAX) and its key's first arrival number. Labels never decrease within a shard's output
    # (``lp``, ``lt``, ``lf``: the last ones).
    ties = gen.sharded and timers
    if gen.sharded:
        if b.origin is not None:
            raise ValueError(f"operator {node.name!r}: key shards merge a keyed kernel's output by where its rows "
                             "arrived, and its rows come through a fan-in")
        arrays.append("opos")
        if ties:
            arrays += ["otie", "ofirst"]
            link_arrivals(gen)

    def store(result: str, indent: int) -> str:
        pad = " " * indent
        if n_out == 1:
            return f"{pad}o0[m] = {result}"
        return "\n".join(f"{pad}o{j}[m] = {result}[{j}]" for j in range(n_out))

    def fire(bound: str, spaces: int) -> str:
        body = f'''while hc > 0 and {htimes}[0] <= {bound} and fired < fire_cap:
    tt = {htimes}[0]
    st = {hslots}[0]
    hc = heap_pop({htimes}, {hslots}, hc, {first})
    if {values}[st].timer == tt:  # else a stale entry: the key's timer moved
        {values}[st].timer = WM_MIN
        rt = keyed_{nid}_timer({values}[st], tt)
        okey[m] = {keys}[st, 0]
        ots[m] = tt
{store("rt", 8)}{label_timer if ties else ""}
        m += 1
        fired += 1
        nt = {values}[st].timer
        if nt > tt and {bound} != WM_MAX:
            hc = heap_push({htimes}, {hslots}, hc, nt, st, {first})
        else:  # re-armed at or before its firing time, or after the end of input: dropped
            {values}[st].timer = WM_MIN'''
        return indent(body, spaces)

    label_timer = f"""
        p = first_reaching(rwm, rw_scalar, rw_cap, rw_floor, tt, n_rows)
        f = {first}[st]
        if p > lp or (p == lp and tt > lt):  # else a firing the cap put off: it keeps the last label
            lp = p
            lt = tt
            lf = f
        elif p == lp and tt == lt and f > lf:
            lf = f
        opos[m] = lp
        otie[m] = lt
        ofirst[m] = lf"""
    label_row = "\n        opos[m] = i" + ("\n        otie[m] = WM_MAX\n        ofirst[m] = 0\n        lp = i\n"
                                          "        lt = WM_MAX\n        lf = np.int64(0)" if ties else "")
    ok = row_ok(names, arg_leaves, "i")
    call = f"{fn}({', '.join([f'{values}[s]'] + [value_code(c, gen, b, names, 'i') for c in arg_cols])})"
    params = ", ".join((["n"] if dense else ["sel"]) + [p for leaf in leaves for p in names[leaf]]
                       + ["rwm", "rw_scalar", "rw_cap", "rw_floor", "wm_end"] + (["n_rows"] if timers else [])
                       + state_names)
    allocs = "\n".join(f"    {a} = empty(size, {t})" for a, t in
                       zip(arrays, ["np.int64", "np.int64"] + out_dtypes + ["np.int64"] * 3))

    arm_after = (f"after = {values}[s].timer\n        if after != before and after != WM_MIN:\n"
                 f"            hc = heap_push({htimes}, {hslots}, hc, after, s, {first})") if timers else ""
    # a new key's first arrival number: the rows of earlier calls, plus its row's position
    arm_before = (f"if {first}[s] < 0:\n            {first}[s] = {aux}[1] + i\n        before = {values}[s].timer"
                  if timers else "")
    # The output arrays have room for every row the loop can write, so they are never grown inside it: an
    # array variable that may be reassigned in a loop costs an NRT_incref/NRT_decref pair per row, whether
    # the branch is taken or not (45 ns a row; the z-score kernel spent three quarters of its time so).
    # Room never written is never touched.
    gen.funcs.append(f'''
@njit
def keyed_{nid}_update({params}):
    """Keyed kernel node {nid}: call the kernel per row with its key's state; fire due timers."""
    hc = {aux}[0]
    # Firings per call are capped at the heap entries it can see (those present
    # plus one push per row), which bounds what downstream state must reserve;
    # timers re-armed by on_timer beyond that fire in the next call.
    fire_cap = hc + {"n" if dense else "sel.size"}
    fired = 0
    size = {"n" if dense else "sel.size"} + fire_cap + 16  # a row per input row and per firing: never grown
{allocs}
    # slots of recent keys (no key is deleted during the loop)
{slot_cache(1)}{ahead_setup}
    m = 0{chr(10) + "    lp = np.int64(0)" + chr(10) + "    lt = WM_MIN" + chr(10) + "    lf = np.int64(0)" if ties else ""}
    {loop}{ahead}
        t = {value_code(ts_col, gen, b, names, "i")}
        {ROW_WATERMARK}
{fire("rw", 8) if timers else ""}
        if not ({ok}):
            continue
        {key_expr}
        {indent(chr(10).join(cached_slot([f"s = ht_find_or_insert({buckets}, {keys}, {meta}, {free}, k, np.int64(0))"], "k")), 8).lstrip()}
        {arm_before}
        r = {call}
        okey[m] = k
        ots[m] = t
{store("r", 8)}{label_row if gen.sharded else ""}
        m += 1
        {arm_after}
{fire("wm_end", 4) if timers else ""}
    {aux}[0] = hc{chr(10) + "    " + aux + "[1] += n_rows" if timers else ""}
    return {", ".join(f"{a}[:m]" for a in arrays)}
''')

    rwm = b.wm_array or "empty(0, np.int64)"
    watermark_bounds(gen, node)
    propagate_watermark(gen, node)
    outs = [f"{a}_{nid}" for a in arrays]
    args = ", ".join(([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"wm_before_{nid}", f"wm[{nid}]"] + ([b.n] if timers else [])
                     + state_names)
    gen.emit(f"{', '.join(outs)} = keyed_{nid}_update({args})")
    gen.emit_rows(nid, f"ots_{nid}.size")
    gen.emit(f"okey_valid_{nid} = keys_valid(okey_{nid})")
    cols = emitted_key_cols(gen, node, spec.keys, key_cols, state_names, f"okey_{nid}", f"okey_valid_{nid}")
    et = spec.event_time
    cols[et] = Col("der", et, node.schema.field(et).type, f"ots_{nid}", f"no_nulls_{nid}")
    for j, name in enumerate(out_names):
        cols[name] = Col("der", name, node.schema.field(name).type, f"o{j}_{nid}", f"no_nulls_{nid}")
    owned = (f"sel_{nid}", *outs, f"okey_valid_{nid}", f"no_nulls_{nid}")
    return Binding(EMITTED, f"m_{nid}", cols, f"sel_{nid}", None, f"wm_before_{nid}", owned,
                   arrivals=f"opos_{nid}" if gen.sharded else None,
                   arrival_ties=(f"otie_{nid}", f"ofirst_{nid}") if ties else ()), None
