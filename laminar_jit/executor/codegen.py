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

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from .._types import arrow_to_numpy_dtype, is_kernel_type
from ..errors import SchemaError
from ..ops.stateless import ArrowMap, Filter, Map, Project

__all__ = ["METRIC_SLOTS", "Binding", "Col", "Gen", "SinkLayout", "generate"]

#: Global counters kept after the per-node (rows_in, rows_out, late_events) triples.
METRIC_SLOTS = ("events_processed", "events_routed", "multicast_publishes", "nodes_skipped", "late_events")

#: An expression with more kernel calls than this is materialized into arrays.
MAX_EXPR_CALLS = 8

#: The source's own selection (all rows). Nodes reading it run dense loops over
#: ``range(n)``; the array is built only if something needs it as an array.
ALL_ROWS = "sel_src"

_NUMPY_NAMES = {"bool": "np.bool_"}


@dataclass(frozen=True)
class Col:
    """A column reference inside a binding (see the module docstring)."""

    kind: str  # "src" | "der" | "expr"
    name: str
    arrow_type: pa.DataType
    vals: str | None = None  # der
    valid: str | None = None  # der
    kernel: str | None = None  # expr: global name of the kernel
    args: tuple = ()  # expr: argument Cols
    index: int | None = None  # expr: element of a tuple result
    cast: str | None = None  # expr: numpy scalar type to cast the result to
    dictionary: tuple | None = None  # der: int64 codes of this (source, column) string dictionary

    def calls(self) -> int:
        return 0 if self.kind != "expr" else 1 + sum(a.calls() for a in self.args)


@dataclass(frozen=True)
class Binding:
    """A node's output: selection ``sel`` over a column space with ``n`` rows.

    ``wm_array``/``wm_scalar`` give the watermark in force when each row
    arrived: a per-row array indexed like the space (source rows, whose
    watermark advances row by row), or one value for all rows.
    """

    origin: str | None  # None: the source batch's own rows; EMITTED; else int32 rows into it
    n: str
    cols: dict
    sel: str
    wm_array: str | None = None
    wm_scalar: str = "WM_MIN"
    #: Rows a stateful operator emitted into arrays of its own: the identity
    #: selection's name, then the arrays allocated for exactly those rows this
    #: step. A sink reading only such arrays at that selection takes them as they are.
    owned: tuple = ()


#: ``Binding.origin`` of rows a stateful operator emitted (no source rows behind them).
EMITTED = "EMITTED"


@dataclass
class SinkLayout:
    """How to turn one sink's slice of the step's result into a RecordBatch."""

    sink: str
    node_id: int
    schema: pa.Schema
    #: Non-numeric source columns gathered with Arrow ``take`` at the boundary.
    take_columns: list[str]
    #: Per output column: ("take", index into take_columns), ("der", tuple
    #: position of values, validity) or ("src", tuple position, source column)
    #: — a source column gathered in the step unless the selection is the
    #: identity or the batch is small (then the boundary uses Arrow).
    columns: list[tuple]
    #: Position of this sink's ``rows`` in the flat result tuple (``ident`` follows).
    offset: int


@dataclass
class Gen:
    """Accumulates the generated functions and step body for one source."""

    dag: object
    source: str
    body: list[str] = field(default_factory=list)
    funcs: list[str] = field(default_factory=list)
    kernels: dict[str, object] = field(default_factory=dict)
    fingerprints: list[str] = field(default_factory=list)
    src_args: dict[str, tuple[str, str]] = field(default_factory=dict)
    kernel_reads: set = field(default_factory=set)
    returns: list[str] = field(default_factory=list)
    sinks: list[SinkLayout] = field(default_factory=list)
    #: Parameters of stateful nodes' state arrays, and those nodes' ids, in step order.
    state_args: list[str] = field(default_factory=list)
    stateful_ids: list[int] = field(default_factory=list)
    #: Source string columns passed to the step as dictionary codes.
    encoded: set = field(default_factory=set)
    #: Groups of (source, column) string dictionaries that must be one dictionary (join keys).
    shared_dictionaries: list = field(default_factory=list)
    #: Step arguments computed from the batch by an ArrowMap: name -> (node, source columns, output index, type).
    arrow_args: dict = field(default_factory=dict)
    #: The step's input is a boundary join's output (it then takes ``wm_rows``, the watermark of its rows).
    derived: bool = False
    #: Layouts of boundary joins' rows, returned like sinks' and run through the joins' own steps.
    boundaries: list = field(default_factory=list)
    #: Per join node: its late rows per port (bindings over the port's input), for late sinks.
    join_late: dict = field(default_factory=dict)
    #: Per sliding window node: the source column its event time is, or None when computed.
    sliding_times: dict = field(default_factory=dict)
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def emit(self, line: str, indent: int = 1) -> None:
        self.body.append("    " * indent + line)

    def use_kernel(self, global_name: str, op) -> None:
        self.kernels[global_name] = op.kernel.dispatcher
        # Numba's cached code records the module of every inlined function and
        # imports it on load, so equal bytecode from another module is another plan.
        fn = op.kernel.fn
        self.fingerprints.append(f"{global_name}={op.fingerprint()}@{fn.__module__}.{fn.__qualname__}")

    def src_arrays(self, column: str, kernel_read: bool = True) -> tuple[str, str]:
        if column not in self.src_args:
            i = len(self.src_args)
            self.src_args[column] = (f"c{i}", f"c{i}_valid")
        if kernel_read:
            self.kernel_reads.add(column)
        return self.src_args[column]

    def leaves(self, b: Binding, col: Col, out: list, kernel_read: bool = True) -> list:
        """Append the (values, validity) arrays an expression reads, without repeats."""
        if col.kind == "expr":
            for a in col.args:
                self.leaves(b, a, out, kernel_read)
            return out
        if col.kind == "src":
            assert b.origin is None, "kernel columns of gathered spaces are always derived"
            leaf = self.src_arrays(col.name, kernel_read)
        else:
            leaf = (col.vals, col.valid)
        if leaf not in out:
            out.append(leaf)
        return out


# ----------------------------------------------------------------------------- expressions

def _params(leaves: list) -> dict:
    return {leaf: (f"v{i}", f"m{i}") for i, leaf in enumerate(leaves)}


def _leaf_of(gen: Gen, col: Col) -> tuple[str, str]:
    return gen.src_args[col.name] if col.kind == "src" else (col.vals, col.valid)


def _value(col: Col, gen: Gen, b: Binding, names: dict, row: str) -> str:
    if col.kind != "expr":
        return f"{names[_leaf_of(gen, col)][0]}[{row}]"
    call = f"{col.kernel}({', '.join(_value(a, gen, b, names, row) for a in col.args)})"
    if col.index is not None:
        call = f"{call}[{col.index}]"
    return f"{col.cast}({call})" if col.cast else call


def _all_empty(names: dict, leaves) -> str:
    return " and ".join(f"{names[leaf][1]}.size == 0" for leaf in leaves) or "True"


def _row_ok(names: dict, leaves, row: str) -> str:
    return " and ".join(f"({names[leaf][1]}.size == 0 or {names[leaf][1]}[{row}])" for leaf in leaves) or "True"


def _call_args(b_sel: str, leaves: list, dense: bool, n: str) -> str:
    head = [n] if dense else [b_sel]
    return ", ".join(head + [x for leaf in leaves for x in leaf])


def _signature(leaves: list, names: dict, dense: bool) -> str:
    head = ["n"] if dense else ["sel"]
    return ", ".join(head + [x for leaf in leaves for x in names[leaf]])


def np_dtype(arrow_type: pa.DataType) -> str:
    dtype = arrow_to_numpy_dtype(arrow_type)
    name = "int64" if dtype is None else dtype.name  # strings travel as int64 dictionary codes
    return _NUMPY_NAMES.get(name, f"np.{name}")


def size_of(sel: str) -> str:
    return "n" if sel == ALL_ROWS else f"{sel}.size"


# ----------------------------------------------------------------------------- the walk

def boundary_joins(dag) -> set[int]:
    """Joins whose output reaches a stateful operator.

    A join emits any number of rows per call, and stateful operators size
    their state before a call from the rows that can reach them. So the rows
    of such a join are materialized as a batch at the end of the step that
    produced them, and run through a step of their own whose input is the
    join (the join is that step's "source").
    """
    found = set()
    for node in dag.nodes:
        if getattr(node.op, "ports", None) is None:
            continue
        stack, seen = [int(t) for t in dag.routing.targets_of(node.id)], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if dag.nodes[t].kind == "stateful":
                found.add(node.id)
                break
            stack += [int(x) for x in dag.routing.targets_of(t)]
    return found


def plan_nodes(dag, root: str) -> list[int]:
    """Ids one step runs, in execution order: reachable from ``root`` (a source or
    a boundary join) without passing through another boundary join (those are
    included, and their late sinks: their output leaves the step)."""
    start = dag.node(root).id
    stops = boundary_joins(dag) - {start}
    seen, stack = {start}, [start]
    while stack:
        u = stack.pop()
        for t in dag.routing.targets_of(u):
            t = int(t)
            if u in stops and not any(v == u and (p or "").startswith("late") for v, p in dag.nodes[t].inputs):
                continue  # past a boundary join only its late sinks (its late rows are this step's)
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return [i for i in dag.execution_ids if i in seen]


def generate(dag, source: str) -> Gen:
    """Generate the step of ``source`` (a source, or a boundary join): node functions plus the step body."""
    gen = Gen(dag, source)
    reach = plan_nodes(dag, source)
    reach_set = set(reach)
    boundaries = boundary_joins(dag)
    root = dag.node(source).id
    gen.derived = dag.nodes[root].kind != "source"
    out: dict[int, Binding] = {}
    g = 3 * len(dag.nodes)  # first global metric slot
    slot = {name: g + i for i, name in enumerate(METRIC_SLOTS)}

    late: dict[int, Binding] = {}
    for nid in reach:
        node = dag.nodes[nid]
        if node.kind == "source":
            b = _source(gen, node)
            gen.emit(f"metrics[{3 * nid}] += n")
            out[nid] = b
            _route(gen, nid, b.sel, slot)
            continue
        if nid == root:  # a boundary join's rows, materialized by the step that produced them
            gen.emit(f"wm_before_{nid} = wm_rows")
            out[nid] = Binding(None, "n", {f.name: Col("src", f.name, f.type) for f in node.schema}, ALL_ROWS,
                               wm_scalar=f"wm_before_{nid}")
            continue

        if getattr(node.op, "ports", None) is not None:  # a two-input operator (a join)
            from .joins import generate_join

            gen.emit(f"# --- node {nid} (join)")
            bports = {}
            for port in node.op.ports:
                port_ups = [out[u] for u, p in node.inputs if p == port and u in out]
                if port_ups:
                    bports[port] = _fan_in(gen, node, port_ups)
            rows_in = " + ".join(size_of(pb.sel) for pb in bports.values())
            gen.emit(f"metrics[{3 * nid}] += {rows_in}")
            gen.emit(f"metrics[{slot['events_processed']}] += {rows_in}")
            joined = generate_join(gen, node, bports, slot, reach_set)
            for port, late_rows in gen.join_late.pop(nid, {}).items():
                late[(nid, f"late_{port}")] = late_rows
            _route(gen, nid, joined.sel, slot)
            if nid in boundaries:  # its rows leave this step as a batch (see boundary_joins)
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
        gen.emit(f"metrics[{3 * nid}] += {size_of(b.sel)}")
        if node.kind == "sink":
            gen.emit(f"metrics[{3 * nid + 1}] += {size_of(b.sel)}")
            _sink(gen, node, b)
            continue
        gen.emit(f"metrics[{slot['events_processed']}] += {size_of(b.sel)}")
        gen.emit(f"if {size_of(b.sel)} == 0:")
        gen.emit(f"metrics[{slot['nodes_skipped']}] += 1", 2)
        op = node.op
        if node.kind == "stateful":
            from ..ops.dedup import Dedup
            from ..ops.keyed import KeyedKernel
            from ..ops.topn import TopN
            from .ranking import generate_ranking
            from .keyed import generate_keyed
            from .stateful import generate_window

            if isinstance(op, KeyedKernel):
                nb = generate_keyed(gen, node, b, slot, reach_set)
            elif isinstance(op, (Dedup, TopN)):
                nb, late[(nid, "late")] = generate_ranking(gen, node, b, slot, reach_set)
            else:
                nb, late[(nid, "late")] = generate_window(gen, node, b, slot, reach_set)
        elif isinstance(op, Filter):
            nb = _filter(gen, node, b)
            _propagate_watermark(gen, node)
        elif isinstance(op, Map):
            nb = _map(gen, node, b)
            _propagate_watermark(gen, node)
        elif isinstance(op, ArrowMap):
            nb = _arrow_map(gen, node, b)
            _propagate_watermark(gen, node)
        elif isinstance(op, Project):
            nb = replace(b, cols={new: b.cols[old] for new, old in node.bound.extra["mapping"]})
            _propagate_watermark(gen, node)
        else:  # pragma: no cover - every operator type has a branch above
            raise TypeError(f"operator {node.name!r}: no plan generator for {type(op).__name__}")
        out[nid] = nb
        _route(gen, nid, nb.sel, slot)
    return gen


def _source(gen: Gen, node) -> Binding:
    """The source's binding; with a watermark strategy, its per-row watermarks."""
    nid = node.id
    spec = node.op
    b = Binding(None, "n", {f.name: Col("src", f.name, f.type) for f in node.schema}, ALL_ROWS)
    gen.emit(f"wm_before_{nid} = wm[{nid}]")
    gen.emit("if n > 0:")
    gen.emit(f"idle[{nid}] = False", 2)
    if spec.watermark is None:
        return replace(b, wm_scalar=f"wm_before_{nid}")
    from ..time.watermarks import to_units

    delay = to_units(spec.watermark.delay, node.schema.field(spec.event_time).type)
    ts, _ = gen.src_arrays(spec.event_time)
    gen.emit(f"wm_rows_{nid}, wm_after = running_watermark({ts}, n, wm[{nid}], {delay})")
    gen.emit(f"if wm_after > wm[{nid}]:")
    gen.emit(f"wm[{nid}] = wm_after", 2)
    return replace(b, wm_array=f"wm_rows_{nid}", wm_scalar=f"wm_before_{nid}")


def _propagate_watermark(gen: Gen, node, into: str | None = None) -> None:
    """A node's watermark: the minimum over its non-idle inputs; it never goes back.

    It goes to ``wm[node]`` and the node's idle flag, or only to ``into`` (a
    join keeps its input watermark in its state and holds its output back);
    the step's ``active`` then says whether any input is active.
    """
    nid = node.id
    target = into or f"wm[{nid}]"
    gen.emit("w = WM_MAX")
    gen.emit("active = False")
    for u, _ in node.inputs:
        gen.emit(f"if not idle[{u}]:")
        gen.emit("active = True", 2)
        gen.emit(f"if wm[{u}] < w:", 2)
        gen.emit(f"w = wm[{u}]", 3)
    gen.emit(f"if active and w > {target}:")
    gen.emit(f"{target} = w", 2)
    if into is None:
        gen.emit(f"idle[{nid}] = not active")


def _route(gen: Gen, nid: int, sel: str, slot) -> None:
    # The step follows the routing table: per-edge counts come from ``offsets``.
    gen.emit(f"metrics[{3 * nid + 1}] += {size_of(sel)}")
    gen.emit(f"deg = offsets[{nid + 1}] - offsets[{nid}]")
    gen.emit(f"metrics[{slot['events_routed']}] += {size_of(sel)} * deg")
    gen.emit(f"if deg > 1 and {size_of(sel)} > 0:")
    gen.emit(f"metrics[{slot['multicast_publishes']}] += 1", 2)


def _concat(parts: list[str]) -> str:
    expr = parts[0]
    for p in parts[1:]:
        expr = f"concat({expr}, {p})"
    return expr


# ----------------------------------------------------------------------------- operators

def _filter(gen: Gen, node, b: Binding) -> Binding:
    nid = node.id
    k = f"kernel_{nid}"
    gen.use_kernel(k, node.op)
    cols = [b.cols[c] for c in node.bound.reads]
    leaves = []
    for c in cols:
        gen.leaves(b, c, leaves)
    names = _params(leaves)
    dense = b.sel == ALL_ROWS
    call = f"{k}({', '.join(_value(c, gen, b, names, 'i') for c in cols)})"
    loop = "for i in range(n):" if dense else "for j in range(sel.size):\n            i = sel[j]"
    gen.funcs.append(f'''
@njit
def node_{nid}({_signature(leaves, names, dense)}):
    """Filter node {nid}: keep rows where the predicate is true (null inputs: false)."""
    out = np.empty({"n" if dense else "sel.size"}, np.int32)
    count = 0
    if {_all_empty(names, leaves)}:
        # branch-free: always write, advance only on a match (a random predicate
        # mispredicts a branch half the time; this is ~4x faster)
        {loop}
            out[count] = i
            count += 1 if {call} else 0
    else:
        {loop}
            if {_row_ok(names, leaves, "i")} and {call}:
                out[count] = i
                count += 1
    return out[:count]
''')
    sel = f"sel_{nid}"
    gen.emit(f"if {size_of(b.sel)} > 0:")
    gen.emit(f"{sel} = node_{nid}({_call_args(b.sel, leaves, dense, b.n)})", 2)
    gen.emit("else:")
    gen.emit(f"{sel} = np.empty(0, np.int32)", 2)
    return replace(b, sel=sel)


def _map(gen: Gen, node, b: Binding) -> Binding:
    nid = node.id
    k = f"kernel_{nid}"
    gen.use_kernel(k, node.op)
    args = tuple(b.cols[c] for c in node.bound.reads)
    writes = node.bound.writes
    returns = node.bound.extra["returns"]
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
    names = _params(leaves)
    lines = [f"\n@njit\ndef {fname}(sel, skip_src, {', '.join(x for leaf in leaves for x in names[leaf])}):",
             f'    """Gather {len(cols)} column(s) at ``sel`` (computing lazy Map outputs)."""',
             "    m = sel.size"]
    outs = []
    for j, (c, own) in enumerate(zip(cols, per_col)):
        skip = "skip_src" if (c.kind == "src" and src_skippable) else "False"
        has_nulls = " or ".join(f"{names[leaf][1]}.size > 0" for leaf in own) or "False"
        lines.append(f"    o{j} = np.empty(0 if {skip} else m, {np_dtype(c.arrow_type)})")
        lines.append(f"    q{j} = np.empty(m if ({has_nulls}) and not {skip} else 0, np.bool_)")
        outs += [f"o{j}", f"q{j}"]
    fast_all, fast_derived, slow = [], [], []
    for j, (c, own) in enumerate(zip(cols, per_col)):
        value = _value(c, gen, b, names, "i")
        fast_all.append(f"                o{j}[t] = {value}")
        if not (c.kind == "src" and src_skippable):
            fast_derived.append(f"                o{j}[t] = {value}")
        ok = _row_ok(names, own, "i")
        slow.append(f"            if o{j}.size:\n"
                    f"                ok = {ok}\n"
                    f"                o{j}[t] = {value} if ok else 0\n"
                    f"                if q{j}.size:\n"
                    f"                    q{j}[t] = ok")
    # The no-null fast path comes in two versions so that the choice of
    # gathering source columns is made once, not per row and column.
    lines.append(f"    if {_all_empty(names, leaves)}:")
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
        gen.emit(f"{sel} = {_concat([u.sel for u in ups])}")
        return replace(ups[0], sel=sel)
    # The upstreams bind some column differently: build a new space by
    # materializing every kernel-readable column of each branch and appending.
    if any(u.origin == EMITTED for u in ups) or len({(u.wm_array, u.wm_scalar) for u in ups}) > 1:
        raise SchemaError(
            f"{node.kind} {node.name!r}: a union of window results with other rows that bind columns "
            "differently is not supported yet; Project the branches to identical columns first"
        )
    n, origin, sel = gen.fresh("n_space"), gen.fresh("origin"), gen.fresh("sel_space")
    gen.emit(f"{origin} = {_concat([f'gather({u.origin}, {u.sel})' if u.origin else u.sel for u in ups])}")
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
        gen.emit(f"{v} = {_concat([outs[2 * j] for outs in per_branch])}")
        parts_m = [f"valid_or_ones({outs[2 * j + 1]}, {outs[2 * j]}.size)" for outs in per_branch]
        any_m = " or ".join(f"{outs[2 * j + 1]}.size > 0" for outs in per_branch)
        gen.emit(f"if {any_m}:")
        gen.emit(f"{m} = {_concat(parts_m)}", 2)
        gen.emit("else:")
        gen.emit(f"{m} = np.empty(0, np.bool_)", 2)
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


def _sink(gen: Gen, node, b: Binding) -> None:
    # Numeric columns are gathered (and lazy Maps computed) in one fused
    # compiled loop. Source columns are skipped when the selection is the
    # identity (the boundary reuses the batch's own arrays) or the batch is
    # small (the boundary coalesces many and gathers with one Arrow take).
    # Non-numeric columns are always gathered by Arrow at the boundary.
    from .boundary import EAGER_ROWS

    rows, ident = gen.fresh("rows"), gen.fresh("ident")
    if b.origin == EMITTED:  # rows a stateful operator emitted: nothing to take from the batch
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
    for f in node.schema:
        ref = b.cols[f.name]
        if ref.kind == "src" and not is_kernel_type(ref.arrow_type):
            if ref.name not in take:
                take.append(ref.name)
            columns.append(("take", take.index(ref.name)))
        else:
            pos = first + 2 * len(gathered)
            if ref.kind == "src":
                columns.append(("src", pos, ref.name))
            elif ref.dictionary is not None:
                columns.append(("code", pos, ref.dictionary))
            else:
                columns.append(("der", pos))
            gathered.append(ref)
    if gathered and _owned(b, gathered):  # a stateful operator's own output arrays: no copy
        gen.returns += [a for ref in gathered for a in (ref.vals, ref.valid)]
    elif gathered:
        fname = f"sink_{node.id}"
        leaves = _gather_function(gen, fname, b, gathered, src_skippable=True)
        outs = [gen.fresh("out") for _ in range(2 * len(gathered))]
        skip = f"{ident} or n < {EAGER_ROWS}"
        gen.emit(f"{', '.join(outs)}, = {fname}({b.sel}, {skip}, {', '.join(x for leaf in leaves for x in leaf)})")
        gen.returns += outs
    gen.sinks.append(SinkLayout(node.name, node.id, node.schema, take, columns, offset))
