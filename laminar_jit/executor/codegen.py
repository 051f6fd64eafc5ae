"""Code generation for one source's step: bindings, expressions and node loops.

The step walks the nodes reachable from a source in execution order. Each
node's output is a :class:`Binding`: a selection vector (int32 row indices)
over a *column space*, and for every column a reference:

* ``src`` — a column of the source batch (read-only numpy view, or for
  strings/nested types a column gathered by Arrow at the sink);
* ``der`` — an array the step materialized (values + validity mask);
* ``expr`` — a **lazy** Map output: the Map's kernel applied to other
  columns. Maps emit no loop of their own; their kernels are inlined where the
  value is consumed — in a Filter's predicate, in a sink's gather, in a
  fan-in's materialization. A Filter → Map → Map → sink chain is therefore
  one branch-free filter pass plus one fused gather-and-compute pass, instead
  of a pass and a full-size array per Map. (Materializing every Map was the
  first design; it wrote and re-read a batch-sized array per Map and was ~2x
  slower on filter+map.) Expressions that grow past ``MAX_EXPR_CALLS`` kernel
  calls are materialized to keep recomputation bounded.

Null model (see :mod:`laminar_jit.ops.stateless`): a row whose expression
leaves include a null is never passed to a kernel; predicates on it are false
and values computed from it are null. Empty validity arrays mean "no nulls",
and every loop has a no-null fast path chosen once per call.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from .._types import arrow_to_numpy_dtype, is_kernel_type
from ..errors import SchemaError
from ..ops.stateless import ArrowMap, Filter, Map, Project
from .core import (
    ALL_ROWS,
    SHARD_ROWS,
    SOURCE_WMS,
    EMITTED,
    MAX_EXPR_CALLS,
    Binding,
    Col,
    Gen,
    SinkColumn,
    SinkLayout,
    all_empty,
    call_args,
    concat,
    fn_signature,
    generator_for,
    leaf_names,
    np_dtype,
    propagate_watermark,
    register,
    row_ok,
    size_of,
    value_code,
)

from . import group, joins, keyed, ranking, windows  # noqa: F401  (each registers its operators' generator)
from .steps import _feeds_stateful, ancestors, boundary_nodes, plan_nodes

__all__ = ["ancestors", "boundary_nodes", "generate", "plan_nodes"]


# ----------------------------------------------------------------------------- the walk

def generate(dag, source: str, sharded: bool = False) -> Gen:
    """Generate the step of ``source`` (a source, or a boundary node): node functions plus the step body.

    ``sharded`` generates a key shard's step: it reads the rows ``shard_rows``
    of the batch (an argument), and works out the source's watermarks on all of them.
    """
    reach = plan_nodes(dag, source, sharded)
    gen = Gen(dag, source, reach=set(reach), sharded=sharded)
    boundaries = boundary_nodes(dag, sharded)
    root = dag.node(source).id
    gen.derived = dag.nodes[root].kind != "source"
    out: dict[int, Binding] = {}

    late: dict[int, Binding] = {}
    for nid in reach:
        node = dag.nodes[nid]
        if node.kind == "source":
            b = _source(gen, node)
            gen.count_in(nid, size_of(b.sel), processed=False, skipped=False)
            out[nid] = b
            _route(gen, nid, b.sel)
            continue
        if nid == root:  # a boundary node's rows, materialized by the step that produced them
            gen.emit(f"wm_before_{nid} = wm_rows")
            out[nid] = Binding(None, "n", {f.name: Col("src", f.name, f.type) for f in node.schema},
                               SHARD_ROWS if gen.sharded else ALL_ROWS, wm_scalar=f"wm_before_{nid}")
            continue

        if getattr(node.op, "ports", None) is not None:  # a two-input operator (a join)
            gen.emit(f"# --- node {nid} (join)")
            bports = {}
            for port in node.op.ports:
                port_ups = [out[u] for u, p in node.inputs if p == port and u in out]
                if port_ups:
                    bports[port] = _fan_in(gen, node, port_ups)
            gen.count_in(nid, " + ".join(size_of(pb.sel) for pb in bports.values()), skipped=False)
            joined, _ = generator_for(node.op)(gen, node, bports)
            for port, late_rows in gen.join_late.pop(nid, {}).items():
                late[(nid, f"late_{port}")] = late_rows
            _route(gen, nid, joined.sel)
            if nid in boundaries:  # its rows leave this step as a batch (see boundary_nodes)
                _sink(gen, node, joined)
                gen.boundaries.append(gen.sinks.pop())
            else:
                out[nid] = joined
            continue
        ups = [late[(u, port)] if (port or "").startswith("late") else out[u] for u, port in node.inputs
               if (late.get((u, port)) if (port or "").startswith("late") else out.get(u)) is not None]
        if not ups:  # a join's late sink of a port this step does not feed
            continue
        gen.emit(f"# --- node {nid} ({node.kind})")
        b = _fan_in(gen, node, ups)
        if node.kind == "sink":
            gen.emit(f"{gen.metric('rows_in', nid)} += {size_of(b.sel)}")
            gen.emit(f"{gen.metric('rows_out', nid)} += {size_of(b.sel)}")
            _sink(gen, node, b)
            continue
        between = getattr(node.op, "between_steps", False)
        gen.count_in(nid, size_of(b.sel), skipped=not between)
        if between:
            _leave_step(gen, node, b)
            continue
        nb, late_rows = generator_for(node.op)(gen, node, b)
        if late_rows is not None:
            late[(nid, "late")] = late_rows
        _route(gen, nid, nb.sel)
        if nid in boundaries:  # its rows leave this step as a batch (see boundary_nodes)
            if nb.wm_array is not None and _feeds_stateful(dag, nid):
                raise SchemaError(
                    f"operator {node.name!r} ({node.op.label()}) feeds an ArrowMap that reads a column it computes "
                    "from source rows, and a stateful operator follows: source rows carry the watermark of their "
                    "own arrival, which a batch passed between steps does not keep. Write the ArrowMap's input "
                    "with ArrowMaps (which read source columns), or the ArrowMap as a Map kernel")
            _sink(gen, node, nb)
            gen.boundaries.append(gen.sinks.pop())
        else:
            out[nid] = nb
    return gen


def _leave_step(gen: Gen, node, b: Binding) -> None:
    """An operator that runs between steps: its input rows leave the step as a batch, with the watermark
    each row arrived under (a column, when the rows have their own: source rows)."""
    from ..state.over import WATERMARK_COLUMN

    propagate_watermark(gen, node)
    schema = node.bound.input_schema
    if b.wm_array is not None:
        flag = f"no_nulls_wm_{node.id}"
        gen.emit(f"{flag} = empty(0, np.bool_)")
        b = replace(b, cols={**b.cols, WATERMARK_COLUMN: Col("der", WATERMARK_COLUMN, pa.int64(), b.wm_array, flag)})
        schema = schema.append(pa.field(WATERMARK_COLUMN, pa.int64()))
    _sink(gen, node, b, schema)
    gen.boundaries.append(gen.sinks.pop())


def _source(gen: Gen, node) -> Binding:
    """The source's binding; with a watermark strategy, its per-row watermarks."""
    nid = node.id
    spec = node.op
    b = Binding(None, "n", {f.name: Col("src", f.name, f.type) for f in node.schema},
                SHARD_ROWS if gen.sharded else ALL_ROWS)
    gen.emit(f"wm_before_{nid} = wm[{nid}]")
    gen.emit("if n > 0:")
    gen.emit(f"idle[{nid}] = False", 2)
    if spec.watermark is None:
        return replace(b, wm_scalar=f"wm_before_{nid}")
    from ..time.watermarks import to_units

    delay = to_units(spec.watermark.delay, node.schema.field(spec.event_time).type)
    ts, _ = gen.src_arrays(spec.event_time)
    delay_setting = gen.setting(delay)  # (kept by key shards too: their helpers read the settings one executor's do)
    if gen.sharded:  # worked out once for all the shards (the same delay, from the same watermark)
        gen.emit(f"wm_rows_{nid} = {SOURCE_WMS}[:n]")
        gen.emit(f"wm_after = {SOURCE_WMS}[n]")
    else:
        gen.emit(f"wm_rows_{nid}, wm_after = running_watermark({ts}, n, wm[{nid}], {delay_setting})")
    gen.emit(f"if wm_after > wm[{nid}]:")
    gen.emit(f"wm[{nid}] = wm_after", 2)
    return replace(b, wm_array=f"wm_rows_{nid}", wm_scalar=f"wm_before_{nid}")


def _route(gen: Gen, nid: int, sel: str) -> None:
    # The step follows the routing table: per-edge counts come from ``offsets``.
    gen.emit(f"count_out(metrics, offsets, np.int64({nid}), {size_of(sel)}, {gen.slot('rows_out', nid)}, "
             f"{gen.slot('events_routed')}, {gen.slot('multicast_publishes')})")


# ----------------------------------------------------------------------------- operators

@register(Filter, Map, ArrowMap, Project)
def generate_stateless(gen: Gen, node, b: Binding) -> tuple[Binding, None]:
    """A stateless node: its output binding (a Map's columns stay lazy, see the module docstring)."""
    op = node.op
    if isinstance(op, Filter):
        nb = _filter(gen, node, b)
    elif isinstance(op, Map):
        nb = _map(gen, node, b)
    elif isinstance(op, ArrowMap):
        nb = _arrow_map(gen, node, b)
    else:
        nb = replace(b, cols={new: b.cols[old] for new, old in node.bound.mapping})
    propagate_watermark(gen, node)
    return nb, None


def _filter(gen: Gen, node, b: Binding) -> Binding:
    nid = node.id
    k = f"kernel_{nid}"
    gen.use_kernel(k, node.op)
    cols = [b.cols[c] for c in node.bound.reads]
    leaves = []
    for c in cols:
        gen.leaves(b, c, leaves)
    names = leaf_names(leaves)
    dense = b.sel == ALL_ROWS
    call = f"{k}({', '.join(value_code(c, gen, b, names, 'i') for c in cols)})"
    loop = "for i in range(n):" if dense else "for j in range(sel.size):\n            i = sel[j]"
    gen.funcs.append(f'''
@njit
def node_{nid}({fn_signature(leaves, names, dense)}):
    """Filter node {nid}: keep rows where the predicate is true (null inputs: false)."""
    out = empty({"n" if dense else "sel.size"}, np.int32)
    count = 0
    if {all_empty(names, leaves)}:
        # branch-free: always write, advance only on a match (a random predicate
        # mispredicts a branch half the time; this is ~4x faster)
        {loop}
            out[count] = i
            count += 1 if {call} else 0
    else:
        {loop}
            if {row_ok(names, leaves, "i")} and {call}:
                out[count] = i
                count += 1
    return out[:count]
''')
    sel = f"sel_{nid}"
    gen.emit(f"if {size_of(b.sel)} > 0:")
    gen.emit(f"{sel} = node_{nid}({call_args(b.sel, leaves, dense, b.n)})", 2)
    gen.emit("else:")
    gen.emit(f"{sel} = empty(0, np.int32)", 2)
    return replace(b, sel=sel)


def _map(gen: Gen, node, b: Binding) -> Binding:
    nid = node.id
    k = f"kernel_{nid}"
    gen.use_kernel(k, node.op)
    args = tuple(b.cols[c] for c in node.bound.reads)
    writes = node.bound.writes
    returns = node.bound.returns
    cols = dict(b.cols)
    for j, ((name, arrow_type), got) in enumerate(zip(writes, returns)):
        want = arrow_to_numpy_dtype(arrow_type)
        cast = None if np.dtype(got) == want else np_dtype(arrow_type)
        cols[name] = Col("expr", name, arrow_type, kernel=k, args=args,
                         index=j if len(writes) > 1 else None, cast=cast)
    nb = replace(b, cols={f.name: cols[f.name] for f in node.schema})
    if any(nb.cols[name].calls() > MAX_EXPR_CALLS for name, _ in writes):
        nb = _materialize_cols(gen, nb, [name for name, _ in writes], f"node_{nid}")
    return nb


def _arrow_map(gen: Gen, node, b: Binding) -> Binding:
    """ArrowMap outputs are computed from the source batch before the step and passed in."""
    sources = []
    for c in node.bound.reads:
        col = b.cols[c]
        if b.origin is not None or col.kind != "src":
            raise SchemaError(
                f"operator {node.name!r} (ArrowMap) reads {c!r}, which the engine computes (a Map output, or "
                "rows of a window, join or union); an ArrowMap reads source columns, directly or through "
                "Filter and Project — move it up, next to the source"
            )
        sources.append(col.name)
    cols = dict(b.cols)
    for j, (name, arrow_type) in enumerate(node.bound.writes):
        arg = f"@{node.id}.{j}"
        gen.arrow_args[arg] = (node.id, tuple(sources), j, arrow_type)
        if arrow_to_numpy_dtype(arrow_type) is None:  # a string: a column of the batch, as a source's strings
            cols[name] = Col("src", arg, arrow_type)
            continue
        vals, valid = gen.src_arrays(arg)
        cols[name] = Col("der", name, arrow_type, vals=vals, valid=valid)
    return replace(b, cols={f.name: cols[f.name] for f in node.schema})


# ----------------------------------------------------------------------------- gathering

def _gather_function(gen: Gen, fname: str, b: Binding, cols: list[Col], src_skippable: bool) -> list[str]:
    """Emit ``fname(sel, skip_src, leaves…)`` computing every column of ``cols`` at ``sel``.

    One fused loop writes all outputs (values and, where inputs can be null,
    validity). Returns the flat list of output names (values, validity per column).
    """
    per_col = []
    leaves: list = []
    for c in cols:
        own = gen.leaves(b, c, [], kernel_read=not (c.kind == "src" and src_skippable))
        for leaf in own:
            if leaf not in leaves:
                leaves.append(leaf)
        per_col.append(own)
    names = leaf_names(leaves)
    lines = [f"\n@njit\ndef {fname}(sel, skip_src, {', '.join(x for leaf in leaves for x in names[leaf])}):",
             f'    """Gather {len(cols)} column(s) at ``sel`` (computing lazy Map outputs)."""',
             "    m = sel.size"]
    outs = []
    for j, (c, own) in enumerate(zip(cols, per_col)):
        skip = "skip_src" if (c.kind == "src" and src_skippable) else "False"
        has_nulls = " or ".join(f"{names[leaf][1]}.size > 0" for leaf in own) or "False"
        lines.append(f"    o{j} = empty(0 if {skip} else m, {np_dtype(c.arrow_type)})")
        lines.append(f"    q{j} = empty(m if ({has_nulls}) and not {skip} else 0, np.bool_)")
        outs += [f"o{j}", f"q{j}"]
    fast_all, fast_derived, slow = [], [], []
    for j, (c, own) in enumerate(zip(cols, per_col)):
        value = value_code(c, gen, b, names, "i")
        fast_all.append(f"                o{j}[t] = {value}")
        if not (c.kind == "src" and src_skippable):
            fast_derived.append(f"                o{j}[t] = {value}")
        ok = row_ok(names, own, "i")
        slow.append(f"            if o{j}.size:\n"
                    f"                ok = {ok}\n"
                    f"                o{j}[t] = {value} if ok else 0\n"
                    f"                if q{j}.size:\n"
                    f"                    q{j}[t] = ok")
    # The no-null fast path comes in two versions so that the choice of
    # gathering source columns is made once, not per row and column.
    lines.append(f"    if {all_empty(names, leaves)}:")
    lines.append("        if not skip_src:")
    lines.append("            for t in range(m):\n                i = sel[t]")
    lines += fast_all
    lines.append("        else:")
    lines.append("            for t in range(m):\n                i = sel[t]")
    lines += fast_derived or ["                pass"]
    lines.append("    else:")
    lines.append("        for t in range(m):\n            i = sel[t]")
    lines += slow
    lines.append(f"    return ({', '.join(outs)},)")
    gen.funcs.append("\n".join(lines) + "\n")
    return leaves


def _materialize_cols(gen: Gen, b: Binding, names: list[str], fname_prefix: str) -> Binding:
    """Turn lazy columns ``names`` of ``b`` into arrays of the space (length ``b.n``)."""
    fname = gen.fresh(f"{fname_prefix}_materialize")
    cols = [b.cols[c] for c in names]
    sel = b.sel  # the source's all-rows selection is materialized on demand by the renderer
    leaves = _gather_function(gen, fname, b, cols, src_skippable=False)
    outs = [gen.fresh("mat") for _ in range(2 * len(cols))]
    gen.emit(f"{', '.join(outs)}, = {fname}({sel}, False, {', '.join(x for leaf in leaves for x in leaf)})")
    new = dict(b.cols)
    for j, c in enumerate(cols):
        v, m = gen.fresh("d"), gen.fresh("d_valid")
        # scatter the compact values back to row positions of the space
        gen.emit(f"{v} = scatter({outs[2 * j]}, {sel}, {b.n})")
        gen.emit(f"{m} = scatter({outs[2 * j + 1]}, {sel}, {b.n})")
        new[c.name] = Col("der", c.name, c.arrow_type, v, m)
    return replace(b, cols=new)


def _same_binding(a: Binding, b: Binding) -> bool:
    return a.origin == b.origin and a.n == b.n and a.cols == b.cols


def _fan_in(gen: Gen, node, ups: list[Binding]) -> Binding:
    if len(ups) == 1:
        return ups[0]
    if all(_same_binding(ups[0], u) for u in ups[1:]):
        sel = gen.fresh("sel_union")
        gen.emit(f"{sel} = {concat([u.sel for u in ups])}")
        return replace(ups[0], sel=sel)
    # The upstreams bind some column differently: build a new space by
    # materializing every kernel-readable column of each branch and appending.
    if any(u.origin == EMITTED for u in ups) or len({(u.wm_array, u.wm_scalar) for u in ups}) > 1:
        raise SchemaError(
            f"{node.kind} {node.name!r}: a union of window results with other rows that bind columns "
            "differently is not supported yet; Project the branches to identical columns first"
        )
    n, origin, sel = gen.fresh("n_space"), gen.fresh("origin"), gen.fresh("sel_space")
    gen.emit(f"{origin} = {concat([f'gather({u.origin}, {u.sel})' if u.origin else u.sel for u in ups])}")
    gen.emit(f"{n} = {origin}.size")
    names = [c for c, ref in ups[0].cols.items() if is_kernel_type(ref.arrow_type)]
    for c, first in ups[0].cols.items():
        if c not in names and any(u.cols[c] != first for u in ups):
            raise SchemaError(
                f"{node.kind} {node.name!r}: column {c!r} ({first.arrow_type}) comes from different "
                "source columns on different upstreams; non-numeric columns cannot be merged — "
                "Project them to the same source column on every branch"
            )
    per_branch = []
    for u in ups:
        fname = gen.fresh(f"node_{node.id}_branch")
        leaves = _gather_function(gen, fname, u, [u.cols[c] for c in names], src_skippable=False)
        outs = [gen.fresh("br") for _ in range(2 * len(names))]
        gen.emit(f"{', '.join(outs)}, = {fname}({u.sel}, False, {', '.join(x for leaf in leaves for x in leaf)})")
        per_branch.append(outs)
    cols = dict(ups[0].cols)
    for j, c in enumerate(names):
        v, m = gen.fresh("v"), gen.fresh("m")
        gen.emit(f"{v} = {concat([outs[2 * j] for outs in per_branch])}")
        parts_m = [f"valid_or_ones({outs[2 * j + 1]}, {outs[2 * j]}.size)" for outs in per_branch]
        any_m = " or ".join(f"{outs[2 * j + 1]}.size > 0" for outs in per_branch)
        gen.emit(f"if {any_m}:")
        gen.emit(f"{m} = {concat(parts_m)}", 2)
        gen.emit("else:")
        gen.emit(f"{m} = empty(0, np.bool_)", 2)
        cols[c] = Col("der", c, ups[0].cols[c].arrow_type, v, m)
    gen.emit(f"{sel} = identity({n})")
    wm_array = None
    if ups[0].wm_array:
        wm_array = gen.fresh("wm_rows")
        gen.emit(f"{wm_array} = gather({ups[0].wm_array}, {origin})")
    return Binding(origin, n, cols, sel, wm_array, ups[0].wm_scalar)


def _owned(b: Binding, cols: list[Col]) -> bool:
    """Whether ``cols`` are all arrays emitted this step for exactly the rows ``b.sel`` selects."""
    if not b.owned or b.sel != b.owned[0]:
        return False
    own = set(b.owned[1:])
    return all(c.kind == "der" and c.vals in own and c.valid in own for c in cols)


def _sink(gen: Gen, node, b: Binding, schema=None) -> None:
    # Numeric columns are gathered (and lazy Maps computed) in one fused
    # compiled loop. Source columns are skipped when the selection is the
    # identity (the boundary reuses the batch's own arrays) or the batch is
    # small (the boundary coalesces many and gathers with one Arrow take).
    # Non-numeric columns are always gathered by Arrow at the boundary.
    from .boundary import EAGER_ROWS

    rows, ident = gen.fresh("rows"), gen.fresh("ident")
    arrivals = gen.sharded and b.origin == EMITTED and b.arrivals is not None
    if arrivals:  # a key shard's join or keyed-kernel output: where the rows that emitted it arrived
        gen.emit(f"{rows} = gather({b.arrivals}, {b.sel})")
        gen.emit(f"{ident} = False")
    elif b.origin == EMITTED:  # rows a stateful operator emitted: nothing to take from the batch
        gen.emit(f"{rows} = {b.sel}")
        gen.emit(f"{ident} = False")
    else:
        gen.emit(f"{rows} = gather({b.origin}, {b.sel})" if b.origin else f"{rows} = {b.sel}")
        gen.emit(f"{ident} = is_identity({rows}, n)")
    offset = len(gen.returns)
    gen.returns += [rows, ident]
    take: list[str] = []
    gathered: list[Col] = []
    columns: list[tuple] = []
    first = len(gen.returns)
    schema = node.schema if schema is None else schema
    for f in schema:
        ref = b.cols[f.name]
        if ref.kind == "src" and not is_kernel_type(ref.arrow_type):
            if ref.name not in take:
                take.append(ref.name)
            columns.append(SinkColumn("take", take.index(ref.name)))
        else:
            pos = first + 2 * len(gathered)
            if ref.kind == "src":
                columns.append(SinkColumn("src", pos, column=ref.name))
            elif ref.dictionary is not None:
                columns.append(SinkColumn("code", pos, dictionary=ref.dictionary))
            else:
                columns.append(SinkColumn("der", pos))
            gathered.append(ref)
    if gathered and _owned(b, gathered):  # a stateful operator's own output arrays: no copy
        gen.returns += [a for ref in gathered for a in (ref.vals, ref.valid)]
    elif gathered:
        fname = f"sink_{node.id}"
        leaves = _gather_function(gen, fname, b, gathered, src_skippable=True)
        outs = [gen.fresh("out") for _ in range(2 * len(gathered))]
        # a key shard's source columns are taken from the batch when the shards' rows are merged
        skip = "True"
        if not gen.sharded:  # (a name, not an expression: Numba cannot type a call of 30+ arguments with an `or`)
            skip = gen.fresh("skip")
            gen.emit(f"{skip} = {ident} or n < {EAGER_ROWS}")
        gen.emit(f"{', '.join(outs)}, = {fname}({b.sel}, {skip}, {', '.join(x for leaf in leaves for x in leaf)})")
        gen.returns += outs
    ties = []
    for j, tie in enumerate(b.arrival_ties if arrivals else ()):  # the order among one position's rows
        ties.append(len(gen.returns))
        gen.emit(f"ties{j}_{node.id} = gather({tie}, {b.sel})")
        gen.emit(f"ties{j}_valid_{node.id} = empty(0, np.bool_)")
        gen.returns += [f"ties{j}_{node.id}", f"ties{j}_valid_{node.id}"]
    ties = tuple(ties)
    gen.sinks.append(SinkLayout(node.name, node.id, schema, take, columns, offset, arrivals, ties))
