"""Code generation for the two-input join operators (see :mod:`laminar_jit.ops.joins`).

A join node appears in the step of every source that feeds one of its ports;
each step emits an update function per port it feeds (rows, keys and payload
columns are node-specific; interval and window joins append each row to its
key's time bucket and probe the other side's buckets its range touches), then
calls the node's watermark-driven pass — expiry for interval and window
joins, resolution for as-of joins, both shared kernels in
:mod:`laminar_jit.kernels.joins` that compile once — then
one gather that turns the collected ``(left row, right row)`` pairs (row
numbers in the two row stores, -1 for "no row") into output columns. Both
steps share the node's :class:`JoinState`.

Rows are freed only after every insert of the call (a right row superseded
in an as-of join is freed at once, but as-of pairs are only formed later,
in the resolution pass), so the pairs always point at intact rows when the
gather reads them.
"""

from __future__ import annotations

from dataclasses import replace

import re

from .._types import arrow_to_numpy_dtype
from ..errors import SchemaError
from ..ops.stateless import ArrowMap, Filter, Map, Project
from ..state.joins import (P_A, P_B, P_DIRECTION, P_EMIT_LEFT, P_KEEP_NULL, P_LATENESS, P_SEMI, P_TOLERANCE,
                           P_SHIFT, SIDE_BASE, JoinState)
from ..ops.joins import JoinOperator, JoinSpec
from .core import (
    ALL_ROWS,
    EMITTED,
    ROW_WATERMARK,
    Binding,
    Col,
    key_table_names,
    leaf_names,
    link_arrivals,
    propagate_watermark,
    register,
    row_ok,
    size_of,
    value_code,
    watermark_bounds,
)

__all__ = ["generate_join"]

_CHAIN = {"left": 0, "right": 2}
_OTHER = {"left": "right", "right": "left"}


def _names(nid: int, bound) -> dict:
    """State argument names by role."""
    names = JoinState.argument_names(nid, bound)
    roles = ("tb", "tk", "tm", "tf", "heads", "active", "aux", "params")
    out = dict(zip(roles, names))
    pos = len(roles)
    for side in ("left", "right"):
        fields = ("ts", "seq", "nxt", "prv", "slot", "flag")
        out[side] = dict(zip(fields, names[pos:pos + len(fields)]))
        pos += len(fields)
        width = 2 * len(bound.spec.port(side).payload)
        out[side]["c"] = names[pos:pos + width:2]
        out[side]["v"] = names[pos + 1:pos + width:2]
        pos += width
    out["all"] = names
    return out


def _string_origin(dag, nid: int, port: str, column: str) -> tuple[str, str]:
    """The (source, column) whose dictionary codes a string column of ``port`` carries."""
    node = dag.nodes[nid]
    ups = [u for u, p in node.inputs if p == port]
    name = column
    while True:
        if len(ups) != 1:
            break
        up = dag.nodes[ups[0]]
        if up.kind == "source":
            return up.name, name
        op = up.op
        if isinstance(op, Project):
            name = dict((new, old) for new, old in up.bound.mapping).get(name, name)
        elif name not in getattr(getattr(up.bound, "spec", None), "keys", ()) \
                and not isinstance(op, (Filter, Map, ArrowMap)):
            break  # (a window's string key keeps its source's codes)
        ups = [u for u, _ in up.inputs]
    raise SchemaError(f"operator {node.name!r}: string column {column!r} of port {port!r} must come from one source "
                      "through Filters, Maps, ArrowMaps, Projects and as a window's key to be carried by a join; drop "
                      "it with lj.Project or join on the source's rows directly")


@register(JoinOperator)
def generate_join(gen, node, bports: dict[str, Binding]) -> tuple[Binding, None]:
    """Emit a join node fed by the ports in ``bports``; returns the binding of its output rows.

    (Its late rows, per port, are left in ``gen.join_late``.)
    """
    nid = node.id
    x = node.bound.spec
    n = _names(nid, node.bound)
    gen.state_args += n["all"]
    gen.stateful_ids.append(nid)
    aux, prm = n["aux"], n["params"]

    watermark_bounds(gen, node)
    gen.emit(f"pl_{nid} = empty(64, np.int64)")
    gen.emit(f"pr_{nid} = empty(64, np.int64)")
    if gen.sharded:  # (where each pair's arriving row is: the shards' output is merged by it)
        gen.emit(f"po_{nid} = empty(64, np.int64)")
    # int64 zeros, not literals: Numba compiles a helper called with a literal 0 once for Literal[int](0) and
    # again for int64 once the loop's own values reach it (a join's probe loop twice, every time).
    gen.emit(f"np_{nid} = np.int64(0)")
    for port in ("left", "right"):
        if port in bports:
            _update(gen, node, port, bports[port], n)
    propagate_watermark(gen, node, into=f"{aux}[1]")  # the join's input watermark
    gen.emit(f"W_{nid} = {_horizon(f'{aux}[1]', f'{prm}[{P_LATENESS}]')}")
    table = f"{n['tb']}, {n['tk']}, {n['tm']}, {n['tf']}, {n['heads']}"
    pairs = f"pl_{nid}, pr_{nid}, np_{nid}"
    if x.kind == "asof":
        lf, rt = n["left"], n["right"]
        if gen.sharded:
            gen.emit(f"settled_0_{nid} = np_{nid}")
        gen.emit(f"{pairs} = asof_fire(W_{nid}, {prm}[{P_DIRECTION}], {prm}[{P_TOLERANCE}], "
                 f"{prm}[{P_EMIT_LEFT}] != 0, {table}, {n['active']}, {aux}, np.int64({SIDE_BASE['left']}), np.int64({SIDE_BASE['right']}), "
                 f"{lf['ts']}, {lf['seq']}, {lf['nxt']}, {lf['prv']}, {lf['slot']}, {lf['flag']}, "
                 f"{rt['ts']}, {rt['nxt']}, {rt['prv']}, {rt['flag']}, {pairs})")
        if gen.sharded:
            gen.emit(f"settled_1_{nid} = np_{nid}")  # (its results are all left rows the watermark settled)
    else:
        for j, port in enumerate(("left", "right")):
            sd = n[port]
            if gen.sharded:
                gen.emit(f"settled_{j}_{nid} = np_{nid}")
            emits = f"{prm}[{P_EMIT_LEFT + j}] != 0"
            if x.kind == "window":
                kind, a, b = "np.int64(1)", f"{prm}[{P_A}]", f"{prm}[{P_B}]"
            else:  # a left row expires after t + upper, a right row after t - lower
                kind, a, b = "np.int64(0)", (f"{prm}[{P_B}]" if port == "left" else f"-{prm}[{P_A}]"), "np.int64(0)"
            gen.emit(f"{pairs} = expire_buckets(W_{nid}, {kind}, {a}, {b}, {emits}, np.int64({j}), {table}, {aux}, "
                     f"np.int64({SIDE_BASE[port]}), {sd['ts']}, {sd['seq']}, {sd['slot']}, {sd['flag']}, {sd['nxt']}, "
                     f"{pairs})")
    if gen.sharded:
        # a key shard's settled rows come after the step's pairs, each side's by (event time, arrival): their
        # position is past the batch (left n, right n + 1), their ties the row's time and arrival number
        link_arrivals(gen)
        lf, rt = n["left"], n["right"]
        gen.emit(f"po_{nid}, pt_{nid}, ps_{nid} = settled_labels(po_{nid}, settled_0_{nid}, settled_1_{nid}, np_{nid}, "
                 f"n, pl_{nid}, pr_{nid}, {lf['ts']}, {lf['seq']}, {rt['ts']}, {rt['seq']})")
    # output watermark: held back to the oldest left row the join may still emit, and to the rows it emitted now
    lmin = f"{aux}[{SIDE_BASE['left'] + 4}]"
    gen.emit(f"w = W_{nid} if W_{nid} < {lmin} else {lmin}")
    gen.emit(f"emin = emitted_min(pl_{nid}, np_{nid}, {n['left']['ts']})")
    gen.emit("if emin < w:")
    gen.emit("w = emin", 2)
    gen.emit(f"if active and w > wm[{nid}]:")
    gen.emit(f"wm[{nid}] = w", 2)
    gen.emit(f"idle[{nid}] = not active")
    return _gather(gen, node, n), None


def _add_function(gen, n: dict, text: str) -> list[str]:
    """Add a generated function whose state parameters are ``@STATE@``: only the state arrays it uses.

    Every argument costs Numba typing and lowering time, and a join's state
    has dozens of arrays of which each function touches a few.
    """
    words = set(re.findall(r"\w+", text))
    used = [a for a in n["all"] if a in words]
    gen.funcs.append(text.replace("@STATE@", ", ".join(used)))
    return used


def _horizon(wm: str, lateness: str) -> str:
    """``wm - lateness`` without wrapping at the int64 minimum (and +inf staying +inf)."""
    return f"({wm} if ({wm} == WM_MAX or {wm} < WM_MIN + {lateness}) else {wm} - {lateness})"


def _late_test(x: JoinSpec) -> str:
    if x.kind == "window":
        return "ws + size <= W"
    return "t < W"


def _expiry(x: JoinSpec, side: str, t: str) -> str:
    """Event time after which (strictly) a buffered row of ``side`` is useless, given its time ``t``."""
    if x.kind == "window":
        return "ws + size - 1"
    if x.kind == "interval":
        return f"{t} + upper" if side == "left" else f"{t} - lower"
    raise AssertionError("as-of joins resolve rows instead of expiring them")


def _locals(x: JoinSpec, n: dict, port: str) -> str:
    """The operator's run-time parameters (``JoinState.params``) as locals of an update function."""
    prm = n["params"]
    a, b = ("size", "offset") if x.kind == "window" else ("lower", "upper")
    lines = [f"{a} = {prm}[{P_A}]", f"{b} = {prm}[{P_B}]", f"lateness = {prm}[{P_LATENESS}]",
             f"keep_null = {prm}[{P_KEEP_NULL + (port == 'right')}] != 0", f"semi = {prm}[{P_SEMI}] != 0"]
    if x.kind == "interval":
        lines.append(f"shift = {prm}[{P_SHIFT}]")
    if x.kind == "asof":
        lines += [f"direction = {prm}[{P_DIRECTION}]", f"tol = {prm}[{P_TOLERANCE}]"]
    return "\n    ".join(lines)


def _update(gen, node, port: str, b: Binding, n: dict) -> None:
    """Emit ``join_<id>_<port>``: insert the port's rows and (eager joins) emit their matches."""
    nid = node.id
    x = node.bound.spec
    spec = x.port(port)
    side = n[port]
    base = SIDE_BASE[port]
    kind = x.kind
    payload_cols = [b.cols[name] for name, _ in spec.payload]
    for j, ((name, dtype), col) in enumerate(zip(spec.payload, payload_cols)):
        if dtype is None and col.kind == "src":
            if b.origin is not None:
                raise SchemaError(f"operator {node.name!r}: string column {name!r} of port {port!r} must come "
                                  "straight from a source (not through a fan-in) to be carried by a join")
            gen.encoded.add(col.name)
        elif dtype is None and col.dictionary is None:
            raise SchemaError(f"operator {node.name!r}: string column {name!r} has no dictionary to keep it by")
        if dtype is None:
            gen.value_dictionaries.setdefault(nid, {})[("payload", port, j)] = \
                (gen.source, col.name) if col.kind == "src" else col.dictionary
    if gen.sharded and b.origin is not None:
        raise ValueError(f"operator {node.name!r}: key shards merge a join's output by where its rows arrived, "
                         f"and the rows of port {port!r} come through a fan-in")
    ts_col = b.cols[spec.event_time]
    key_cols = [b.cols[k] for k in spec.keys]
    gen.key_dictionaries[(nid, port)] = [(gen.source, kc.name) if arrow_to_numpy_dtype(kc.arrow_type) is None
                                         else None for kc in key_cols]
    for j, (kname, kc) in enumerate(zip(spec.keys, key_cols)):
        if arrow_to_numpy_dtype(kc.arrow_type) is None:  # string, large_string or a dictionary of them
            # string keys compare as codes of one dictionary shared by both sides' columns
            if kc.kind != "src" or b.origin is not None:
                raise SchemaError(f"operator {node.name!r}: string key {kname!r} of port {port!r} must come "
                                  "straight from a source column")
            gen.encoded.add(kc.name)
            pair = [_string_origin(gen.dag, nid, p, x.port(p).keys[j]) for p in ("left", "right")]
            if pair not in gen.shared_dictionaries:
                gen.shared_dictionaries.append(pair)
    leaves: list = []
    for c in [ts_col, *key_cols, *payload_cols]:
        gen.leaves(b, c, leaves)
    names = leaf_names(leaves)
    dense = b.sel == ALL_ROWS
    # A row can add at most one pair per buffered row of the other side (plus itself, for semi
    # joins): the loop stops before a row that might not fit, and the step grows the buffers.
    other_live = f"{n['aux']}[{SIDE_BASE[_OTHER[port]] + 2}] + 1"
    # (the arrival counter is stored before an early return: the call that resumes reads it back)
    room = (f"if n_out + {other_live} > out_l.size:\n            {n['aux']}[0] = seq\n"
            "            return n_late, n_out, p")
    if dense:
        loop = f"for i in range(start, n):\n        p = i\n        {room}"
    else:
        loop = f"for j in range(start, sel.size):\n        i = sel[j]\n        p = j\n        {room}"
    prefetching = kind != "asof" and len(key_cols) == 1  # (composite keys go through their level tables first)
    if prefetching:
        loop += _prefetch(gen, x, port, n, "iq = q" if dense else "iq = sel[q]", "n" if dense else "sel.size",
                          value_code(key_cols[0], gen, b, names, "iq"), value_code(ts_col, gen, b, names, "iq"))
    params = ", ".join(["start"] + (["n"] if dense else ["sel"]) + [p for leaf in leaves for p in names[leaf]]
                       + ["rwm", "rw_scalar", "rw_cap", "rw_floor", "@STATE@", "late_out", "n_late", "out_l", "out_r",
                          *(["out_p"] if gen.sharded else []), "n_out"])

    # key: null if any key column is null (never matches); composite keys through the level tables
    key_lines, null_parts = [], []
    for kc in key_cols:
        null_parts.append(f"not ({row_ok(names, gen.leaves(b, kc, []), 'i')})")
    key_lines.append(f"nullk = {' or '.join(null_parts)}")
    key_lines.append("k = np.int64(0)")
    key_lines.append("if not nullk:")
    key_lines.append(f"    k = np.int64({value_code(key_cols[0], gen, b, names, 'i')})")
    level_tables = key_table_names(n["all"], len(key_cols))
    for level, kc in enumerate(key_cols[1:]):
        kt = ", ".join(level_tables[level])
        key_lines.append(f"    k = ht_find_or_insert({kt}, k, np.int64({value_code(kc, gen, b, names, 'i')}))")
    key_code = "\n        ".join(key_lines)

    stores = []
    for j, col in enumerate(payload_cols):
        ok = row_ok(names, gen.leaves(b, col, []), "i")
        stores.append(f"        if {ok}:\n            {side['c'][j]}[r] = {value_code(col, gen, b, names, 'i')}\n"
                      f"            {side['v'][j]}[r] = True\n        else:\n            {side['v'][j]}[r] = False")
    table = f"{n['tb']}, {n['tk']}, {n['tm']}, {n['tf']}"
    heads = n["heads"]
    h_self, h_other = _CHAIN[port], _CHAIN[_OTHER[port]]

    if kind == "asof":
        body = _asof_insert(x, port, n, table, heads, chr(10).join(stores), gen.sharded)
    else:
        bucket = "ws" if kind == "window" else "bn"
        # rows that can end up unmatched in the output are kept even with a null key (in no bucket)
        body = f'''
        {"bn = t >> shift" if kind == "interval" else ""}
        if nullk:
            if not keep_null:
                continue
            s = np.int64(-1)
        else:
            s = ht_find_or_insert({table}, k, {bucket})
        r = row_alloc({aux(n)}, {base})
        {side['ts']}[r] = t
        {_arrival(side, gen.sharded)}
        {side['slot']}[r] = s
        {side['flag']}[r] = 1
        exp = {_expiry(x, port, 't')}
        if exp < {aux(n)}[{base + 3}]:
            {aux(n)}[{base + 3}] = exp
        if t < {aux(n)}[{base + 4}]:
            {aux(n)}[{base + 4}] = t
{chr(10).join(stores)}
        if s < 0:
            continue
        {side['nxt']}[r] = {heads}[s, {h_self}]
        {heads}[s, {h_self}] = r
        {heads}[s, {h_self + 1}] += 1  # the list's length - 1
{_probe(x, port, n, heads, h_other, gen.sharded)}'''
    window = "ws = ((t - offset) // size) * size + offset\n        " if kind == "window" else ""
    used = _add_function(gen, n, f'''
@njit
def join_{nid}_{port}({params}):
    """Join node {nid}, port {port!r}: buffer rows from ``start`` on, {"emit their matches" if kind != "asof" else "queue left rows"}; record late rows.

    Returns the late count, the pair count and where it stopped (the row count when done).
    """
    seq = {aux(n)}[0]
    {_locals(x, n, port)}
    {f"pf = empty({PREFETCH_ROWS}, np.int64)" if prefetching else ""}
    {loop}
        t = {value_code(ts_col, gen, b, names, "i")}
        {ROW_WATERMARK}
        W = {_horizon("rw", "lateness")}
        {window}if {_late_test(x)}:
            late_out[n_late] = i
            n_late += 1
            continue
        {key_code}
{body}
    {aux(n)}[0] = seq
    return n_late, n_out, {"n" if dense else "sel.size"}
''')
    rwm = b.wm_array or "empty(0, np.int64)"
    gen.emit(f"late_{nid}_{port} = empty({size_of(b.sel)}, np.int32)")
    args = ", ".join([f"at_{nid}"] + ([b.n] if dense else [b.sel]) + [p for leaf in leaves for p in leaf]
                     + [rwm, b.wm_scalar, f"cap_{nid}", f"{n['aux']}[1]"] + used
                     + [f"late_{nid}_{port}", f"n_late_{nid}", f"pl_{nid}", f"pr_{nid}",
                        *([f"po_{nid}"] if gen.sharded else []), f"np_{nid}"])
    gen.emit(f"at_{nid} = np.int64(0)")
    gen.emit(f"n_late_{nid} = np.int64(0)")
    gen.emit("while True:")
    gen.emit(f"n_late_{nid}, np_{nid}, at_{nid} = join_{nid}_{port}({args})", 2)
    gen.emit(f"if at_{nid} >= {size_of(b.sel)}:", 2)
    gen.emit("break", 3)
    gen.emit(f"pl_{nid}, pr_{nid} = reserve_pairs(pl_{nid}, pr_{nid}, np_{nid}, {other_live})", 2)
    if gen.sharded:
        gen.emit(f"po_{nid} = reserve_positions(po_{nid}, np_{nid}, {other_live})", 2)
        gen.emit(f"{n['aux']}[0] += {b.n}")  # past the batch's arrival numbers (``_arrival``)
    gen.emit(f"{gen.metric('late_events')} += n_late_{nid}")
    gen.emit(f"{gen.metric('late_events', nid)} += n_late_{nid}")
    gen.emit(f"late_sel_{nid}_{port} = late_{nid}_{port}[:n_late_{nid}]")
    gen.join_late.setdefault(nid, {})[port] = replace(b, sel=f"late_sel_{nid}_{port}")


#: Rows whose table entries and first partners a join update asks the memory for before it handles them.
PREFETCH_ROWS = 16


def _prefetch(gen, x: JoinSpec, port: str, n: dict, row: str, end: str, key: str, t: str) -> str:
    """Lines at the top of a join update's row loop that, every :data:`PREFETCH_ROWS` rows, request what the
    next rows will read: their buckets of the key table, then the slots those hold (key and list heads),
    then the first row of the other side's list.

    A key table and row store outgrow the caches (a regular join keeps every
    row), and each row's lookups are a chain of dependent loads: asked for a
    block at a time, the misses overlap instead of queueing (as
    :func:`~laminar_jit.kernels.interning.intern_bytes` does for strings).
    Only hints: what a row then does is unchanged.
    """
    gen.imports.update({("laminar_jit.kernels.memory", "prefetch"), ("laminar_jit.kernels.hashtable", "_home")})
    other = n[_OTHER[port]]
    heads, tb, tk, tm = n["heads"], n["tb"], n["tk"], n["tm"]
    bucket = "tq >> shift" if x.kind == "interval" else "((tq - offset) // size) * size + offset"
    return f'''
        if (p - start) % {PREFETCH_ROWS} == 0:
            qe = min({end}, p + {PREFETCH_ROWS})
            for q in range(p, qe):
                {row}
                tq = {t}
                hq = _home(np.int64({key}), {bucket}, {tm}[4] - 1)
                pf[q - p] = hq
                prefetch({tb}, hq)
            for q in range(p, qe):
                sq = {tb}[pf[q - p]]
                pf[q - p] = sq
                if sq >= 0:
                    prefetch({tk}, 2 * sq)
                    prefetch({heads}, 4 * sq)
            for q in range(p, qe):
                if pf[q - p] >= 0:
                    oq = {heads}[pf[q - p], {_CHAIN[_OTHER[port]]}]
                    if oq >= 0:
                        prefetch({other['ts']}, oq)
                        prefetch({other['nxt']}, oq)'''


def aux(n: dict) -> str:
    return n["aux"]


def _pair(port: str, mine: str, theirs: str, sharded: bool) -> str:
    """Append a pair; the update loop reserved room for it (see :func:`_update`).

    A key shard's step also notes the position of the arriving row ``i`` that emitted it.
    """
    left, right = (mine, theirs) if port == "left" else (theirs, mine)
    return f"out_l[n_out] = {left}; out_r[n_out] = {right}; {'out_p[n_out] = i; ' if sharded else ''}n_out += 1"


def _probe(x: JoinSpec, port: str, n: dict, heads: str, h_other: str, sharded: bool) -> str:
    """Emit the matches of row ``r`` among the other side's rows in the buckets its range touches.

    Interval joins look up the (at most two) buckets of ``[lo, hi]`` and test
    each row's time; ``lo`` starts no earlier than the other side's oldest live
    row (``aux``), so bounds far wider than the rows' span (a regular join's)
    look up one bucket, not an empty one before it. Window joins take the
    whole bucket of the row's window.
    The pairs are then ordered newest partner first (README, "Order of output
    rows").
    """
    other = n[_OTHER[port]]
    side = n[port]
    how = x.how
    oflag, onxt = other["flag"], other["nxt"]
    table = f"{n['tb']}, {n['tk']}, {n['tm']}"
    if x.kind == "interval":
        lo, hi = ("t + lower", "t + upper") if port == "left" else ("t - upper", "t - lower")
        least = f"{n['aux']}[{SIDE_BASE[_OTHER[port]] + 4}]"  # the other side's oldest live row
        head = (f"        lo = {lo}\n        hi = {hi}\n"
                f"        if lo < {least}:  # buckets before the other side's oldest row hold none of its rows\n"
                f"            lo = {least}\n"
                f"        bq = hi >> shift\n        blo = lo >> shift\n"
                f"        while bq >= blo and not done:\n"
                f"            if bq == bn:  # the row's own bucket: its slot is known\n"
                f"                ob = s\n"
                f"            else:\n"
                f"                ob = ht_find({table}, k, bq)\n"
                f"            bq -= 1\n")
        test = f"{other['ts']}[o] >= lo and {other['ts']}[o] <= hi"
    else:  # window join: the whole list of the (key, window) slot matches
        head = ("        for _once in range(1):\n"
                "            ob = s  # the row's own (key, window) slot\n")
        test = "True"
    if how in ("semi", "anti") and port == "left":  # semi emits the left row at its first match, anti only marks it
        act = (f"                    if {side['flag']}[r] == 1:\n"
               f"                        {side['flag']}[r] = 2\n"
               f"                        if semi:\n"
               f"                            {_pair(port, 'r', 'np.int64(-1)', sharded)}\n"
               "                    done = True\n"
               "                    break")
    elif how in ("semi", "anti"):
        act = (f"                    if {oflag}[o] == 1:\n"
               f"                        {oflag}[o] = 2\n"
               f"                        if semi:\n"
               f"                            {_pair('left', 'o', 'np.int64(-1)', sharded)}")
    elif how == "inner":  # (only outer joins read whether a row was matched: their expiry emits the others)
        act = f"                    {_pair(port, 'r', 'o', sharded)}"
    else:
        act = (f"                    {_pair(port, 'r', 'o', sharded)}\n"
               f"                    {side['flag']}[r] = 2\n"
               f"                    {oflag}[o] = 2")
    # the partner of a pair is its left row when the probing row is a right one
    partner_left = port == "right"
    return (f"        first = n_out\n        done = False\n{head}"
            f"            if ob < 0:\n                continue\n"
            f"            o = {heads}[ob, {h_other}]\n"
            f"            while o != -1:\n"
            f"                if {test}:\n{act}\n"
            f"                o = {onxt}[o]\n"
            f"        if n_out - first > 1:\n"
            f"            order_partners(out_l, out_r, first, n_out, np.bool_({partner_left}), "
            f"{other['ts']}, {other['seq']})")


def _arrival(side: dict, sharded: bool) -> str:
    """A buffered row's arrival number: the next of the node's counter, or (a key shard's plan) the call's first
    number plus the row's position in the batch, so every shard numbers rows as one executor orders them (the
    step then moves the counter past the batch: :func:`_update`)."""
    if sharded:
        return f"{side['seq']}[r] = seq + i"
    return f"{side['seq']}[r] = seq\n        seq += 1"


def _asof_insert(x: JoinSpec, port: str, n: dict, table: str, heads: str, stores: str, sharded: bool) -> str:
    """Insert body of an as-of join: left rows queue in their key's chain, right rows join theirs (pruned)."""
    side = n[port]
    base = SIDE_BASE[port]
    row_args = f"{side['ts']}, {side['seq']}, {side['nxt']}, {side['prv']}"
    head = f'''
        if nullk:  # a left row without key only ever comes out unmatched: queue it under its own slot
            if not keep_null:
                continue
            s = ht_find_or_insert({table}, np.int64(WM_MIN), np.int64(1))
        else:
            s = ht_find_or_insert({table}, k, np.int64(0))
        r = row_alloc({n['aux']}, {base})
        {side['ts']}[r] = t
        {_arrival(side, sharded)}
        {side['slot']}[r] = s
        {side['flag']}[r] = 1'''
    if port == "left":
        return f'''{head}
        if t < {n['aux']}[{base + 4}]:
            {n['aux']}[{base + 4}] = t
{stores}
        if {heads}[s, 0] == -1:  # the key gets queued rows: remember it for the resolution pass
            na = {n['active']}[0] + 1
            {n['active']}[na] = s
            {n['active']}[0] = na
        chain_insert({heads}, 0, s, {row_args}, r)'''
    return f'''{head}
{stores}
        chain_insert({heads}, 2, s, {row_args}, r)
        h = W  # the oldest left row still to come or queued bounds what this key must keep
        q = {heads}[s, 0]
        if q != -1 and {n['left']['ts']}[q] < h:
            h = {n['left']['ts']}[q]
        asof_prune(direction, tol, s, h, {table}, {heads}, {n['aux']}, {base}, {side['ts']}, {side['nxt']}, {side['prv']}, {side['flag']})'''


def _gather(gen, node, n: dict) -> Binding:
    """Emit the gather of the output columns from the collected pairs; the node's output binding."""
    nid = node.id
    x = node.bound.spec
    schema = node.schema
    outs, lines, cols = [], [], []
    fields = iter(schema)
    for port in x.out_sides:
        side = n[port]
        pairs = "pl" if port == "left" else "pr"
        for j, (name, dtype) in enumerate(x.port(port).payload):
            field = next(fields)
            o, q = f"o{len(cols)}", f"q{len(cols)}"
            lines.append(f"    {o} = empty(m, {side['c'][j]}.dtype)\n    {q} = empty(m, np.bool_)\n"
                         f"    for e in range(m):\n        i = {pairs}[e]\n"
                         f"        if i >= 0:\n            {o}[e] = {side['c'][j]}[i]\n            {q}[e] = {side['v'][j]}[i]\n"
                         f"        else:\n            {o}[e] = 0\n            {q}[e] = False")
            outs += [o, q]
            cols.append((field, port, name, dtype))
    if x.kind == "window":
        prm = n["params"]  # the window's size and offset are run-time parameters, as in the updates
        lines.append(f"    size = {prm}[{P_A}]\n    offset = {prm}[{P_B}]\n"
                     f"    ws = empty(m, np.int64)\n    we = empty(m, np.int64)\n"
                     f"    for e in range(m):\n        t = {n['left']['ts']}[pl[e]]\n"
                     f"        ws[e] = ((t - offset) // size) * size + offset\n        we[e] = ws[e] + size")
        outs += ["ws", "we"]
    used = _add_function(gen, n, f'''
@njit
def join_{nid}_gather(pl, pr, m, @STATE@):
    """Join node {nid}: output columns of the pairs (row numbers into the two row stores, -1: none)."""
{chr(10).join(lines)}
    return ({", ".join(outs)},)
''')
    out_vars = [f"{v}_{nid}" for v in outs]
    gen.emit(f"{', '.join(out_vars)}, = join_{nid}_gather(pl_{nid}, pr_{nid}, np_{nid}, {', '.join(used)})")
    gen.emit_rows(nid, f"np_{nid}", no_nulls=False)
    out = {}
    for c, (field, port, name, dtype) in enumerate(cols):
        dictionary = None
        if dtype is None:
            dictionary = _string_origin(gen.dag, nid, port, name)
        out[field.name] = Col("der", field.name, field.type, f"o{c}_{nid}", f"q{c}_{nid}", dictionary=dictionary)
    if x.kind == "window":
        gen.emit(f"no_nulls_{nid} = empty(0, np.bool_)")
        for name, var in (("window_start", "ws"), ("window_end", "we")):
            out[name] = Col("der", name, schema.field(name).type, f"{var}_{nid}", f"no_nulls_{nid}")
    owned = (f"sel_{nid}", *out_vars) + ((f"no_nulls_{nid}",) if x.kind == "window" else ())
    return Binding(EMITTED, f"m_{nid}", out, f"sel_{nid}", None, f"wm_before_{nid}", owned,
                   arrivals=f"po_{nid}" if gen.sharded else None,
                   arrival_ties=(f"pt_{nid}", f"ps_{nid}") if gen.sharded else ())
