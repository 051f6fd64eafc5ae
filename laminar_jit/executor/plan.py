"""The plan compiler: one generated, cached ``@njit`` step function per source.

For a source ``S`` the compiler walks the nodes reachable from ``S`` in the
DAG's execution order and writes Python source for:

* one small ``@njit`` function per operator node — the loop around the user's
  kernel over the node's input selection vector, with the null model of
  :mod:`laminar_jit.ops.stateless` applied outside the kernel;
* one ``@njit`` step that calls them in topological order and wires each
  node's output selection to its targets as the :class:`RoutingTable` says:
  a multicast hands the *same* selection array to every target (no copies),
  fan-in concatenates selections, and the per-edge counts are read from the
  routing ``offsets`` at run time for the metrics.

The topological loop is unrolled at plan time rather than interpreted at run
time: each node's kernel is a different function, and a straight-line step
lets LLVM inline kernels and keep selections in registers — a run-time switch
over node ids was the alternative and buys nothing for a fixed DAG.

The source is written to a file named by its hash (plus the kernels' bytecode
fingerprints) in the plan cache directory, so Numba's ``cache=True`` serves
the next process. The generated text names nodes by id only (never by name),
so structurally identical DAGs with the same kernels share one compiled step,
in-process (memoized by the text's digest) and on disk.

Column spaces. A binding maps each column name to either a *source* column
(read straight from the batch, materialized at sinks by Arrow ``take``) or a
*derived* array (values + validity, length of the space). Fan-in of
upstreams whose bindings differ (e.g. two Maps writing the same name) builds a
new space by gathering every kernel-readable column; ride-along columns keep
pointing at the source batch through an ``origin`` row map.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa

from .._jit import JIT_DISABLED
from .._types import arrow_to_numpy_dtype, is_kernel_type
from ..errors import SchemaError
from ..ops.stateless import Filter, Map, Project
from .boundary import EAGER_ROWS

__all__ = ["METRIC_SLOTS", "SinkLayout", "SourcePlan", "cache_dir", "compile_plan"]

#: Global counters kept after the per-node (rows_in, rows_out) pairs.
METRIC_SLOTS = ("events_processed", "events_routed", "multicast_publishes", "nodes_skipped")

_STEP_MEMO: dict[str, object] = {}
_MEMO_LOCK = threading.Lock()
_NUMPY_NAMES = {"bool": "np.bool_"}


def cache_dir() -> str:
    """Directory of generated plans (and, beside them, Numba's cache).

    ``LAMINAR_JIT_CACHE_DIR`` overrides; otherwise ``$XDG_CACHE_HOME/laminar_jit``
    or ``~/.cache/laminar_jit``.
    """
    env = os.environ.get("LAMINAR_JIT_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "laminar_jit")


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
    #: — a source column gathered in the step unless the selection is the identity.
    columns: list[tuple]
    #: Position of this sink's ``rows`` in the flat result tuple (``ident`` follows).
    offset: int


@dataclass
class SourcePlan:
    """The compiled step of one source and how to read its result."""

    source: str
    step: object
    #: Source columns passed to the step, (name, numpy dtype, read by a kernel),
    #: in order. Columns only sinks need may be passed empty for small batches.
    args: list[tuple[str, np.dtype, bool]]
    sinks: list[SinkLayout]
    #: The generated source (for inspection: ``print(plan.text)``).
    text: str
    #: Whether Numba caches the step on disk (False for unhashable kernels).
    cacheable: bool = False
    #: True when every node the source reaches is stateless, so a batch may be
    #: split into slices processed independently (and concurrently).
    parallel_safe: bool = False


@dataclass(frozen=True)
class _Col:
    kind: str  # "src" | "der"
    name: str  # source column name (src) or output name (der)
    arrow_type: pa.DataType
    vals: str | None = None
    valid: str | None = None


@dataclass
class _Binding:
    origin: str | None  # None: the source batch's own rows
    n: str
    cols: dict[str, _Col]
    sel: str


@dataclass
class _Gen:
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
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def use_kernel(self, global_name: str, op) -> None:
        self.kernels[global_name] = op.kernel.dispatcher
        # Numba's cached code records the module of every inlined function and
        # imports it on load, so equal bytecode from another module is another plan.
        fn = op.kernel.fn
        self.fingerprints.append(f"{global_name}={op.fingerprint()}@{fn.__module__}.{fn.__qualname__}")

    def emit(self, line: str, indent: int = 1) -> None:
        self.body.append("    " * indent + line)

    def src_arrays(self, column: str) -> tuple[str, str]:
        if column not in self.src_args:
            i = len(self.src_args)
            self.src_args[column] = (f"c{i}", f"c{i}_valid")
        return self.src_args[column]

    def arrays(self, b: _Binding, column: str) -> tuple[str, str]:
        ref = b.cols[column]
        if ref.kind == "src":
            assert b.origin is None, "kernel columns of gathered spaces are always derived"
            self.kernel_reads.add(ref.name)
            return self.src_arrays(ref.name)
        return ref.vals, ref.valid


def compile_plan(dag, source: str) -> SourcePlan:
    """Compile the step of ``source`` (or reuse it from the in-process memo / on-disk cache)."""
    gen = _generate(dag, source)
    cacheable = dag.fingerprint is not None and not JIT_DISABLED
    text = _render(gen, source, cacheable)
    schema = dag.node(source).schema
    args = [(name, arrow_to_numpy_dtype(schema.field(name).type), name in gen.kernel_reads)
            for name in gen.src_args]
    digest = hashlib.sha256("|".join([text, numba.__version__, *gen.fingerprints]).encode()).hexdigest()[:32]
    signature = _signature(gen, dag, source, args)
    with _MEMO_LOCK:
        step = _STEP_MEMO.get(digest) if cacheable else None
        if step is None:
            step, cacheable = _load(gen, text, digest, cacheable, signature)
            if cacheable:
                _STEP_MEMO[digest] = step
    parallel_safe = all(dag.nodes[i].kind != "stateful" for i in dag.reachable_from(source))
    return SourcePlan(source, step, args, gen.sinks, text, cacheable=cacheable, parallel_safe=parallel_safe)


# ----------------------------------------------------------------------------- generation

def _generate(dag, source: str) -> _Gen:
    gen = _Gen(dag, source)
    reach = dag.reachable_from(source)
    reach_set = set(reach)
    out: dict[int, _Binding] = {}
    g = 2 * len(dag.nodes)  # first global metric slot
    slot = {name: g + i for i, name in enumerate(METRIC_SLOTS)}

    for nid in reach:
        node = dag.nodes[nid]
        if node.kind == "source":
            schema = node.schema
            b = _Binding(None, "n", {f.name: _Col("src", f.name, f.type) for f in schema}, _ALL_ROWS)
            gen.emit(f"metrics[{2 * nid}] += n")
            out[nid] = b
            _route(gen, nid, b.sel, slot)
            continue

        ups = [out[u] for u, _ in node.inputs if u in reach_set]
        b = _fan_in(gen, node, ups)
        gen.emit(f"# --- node {nid} ({node.kind})")
        gen.emit(f"metrics[{2 * nid}] += {_size(b.sel)}")
        if node.kind == "sink":
            gen.emit(f"metrics[{2 * nid + 1}] += {_size(b.sel)}")
            _sink(gen, node, b)
            continue
        gen.emit(f"metrics[{slot['events_processed']}] += {_size(b.sel)}")
        op = node.op
        if isinstance(op, Filter):
            nb = _filter(gen, node, b, slot)
        elif isinstance(op, Map):
            nb = _map(gen, node, b, slot)
        elif isinstance(op, Project):
            nb = _Binding(b.origin, b.n, {new: b.cols[old] for new, old in node.bound.extra["mapping"]}, b.sel)
        else:  # pragma: no cover - every operator type has a branch above
            raise TypeError(f"operator {node.name!r}: no plan generator for {type(op).__name__}")
        out[nid] = nb
        _route(gen, nid, nb.sel, slot)
    return gen


#: The source's own selection (all rows). Nodes that read it run "dense" loops
#: over ``range(n)`` and never materialize it; it is built only if something
#: else (a sink, a fan-in) needs it as an array.
_ALL_ROWS = "sel_src"


def _size(sel: str) -> str:
    return "n" if sel == _ALL_ROWS else f"{sel}.size"


def _route(gen: _Gen, nid: int, sel: str, slot) -> None:
    gen.emit(f"metrics[{2 * nid + 1}] += {_size(sel)}")
    gen.emit(f"deg = offsets[{nid + 1}] - offsets[{nid}]")
    gen.emit(f"metrics[{slot['events_routed']}] += {_size(sel)} * deg")
    gen.emit(f"if deg > 1 and {_size(sel)} > 0:")
    gen.emit(f"metrics[{slot['multicast_publishes']}] += 1", 2)


def _concat(parts: list[str]) -> str:
    expr = parts[0]
    for p in parts[1:]:
        expr = f"concat({expr}, {p})"
    return expr


def _same_binding(a: _Binding, b: _Binding) -> bool:
    return a.origin == b.origin and a.n == b.n and a.cols == b.cols


def _fan_in(gen: _Gen, node, ups: list[_Binding]) -> _Binding:
    if len(ups) == 1:
        return ups[0]
    if all(_same_binding(ups[0], u) for u in ups[1:]):
        sel = gen.fresh("sel_union")
        gen.emit(f"{sel} = {_concat([u.sel for u in ups])}")
        return _Binding(ups[0].origin, ups[0].n, ups[0].cols, sel)
    # The upstreams bind some column to different arrays: gather into a new space.
    n, origin, sel = gen.fresh("n_space"), gen.fresh("origin"), gen.fresh("sel_space")
    rows = []
    for u in ups:
        rows.append(f"gather({u.origin}, {u.sel})" if u.origin else u.sel)
    gen.emit(f"{origin} = {_concat(rows)}")
    gen.emit(f"{n} = {origin}.size")
    cols: dict[str, _Col] = {}
    for name, first in ups[0].cols.items():
        refs = [u.cols[name] for u in ups]
        if not is_kernel_type(first.arrow_type):
            if any(r != first for r in refs):
                raise SchemaError(
                    f"{node.kind} {node.name!r}: column {name!r} ({first.arrow_type}) comes from different "
                    "source columns on different upstreams; non-numeric columns cannot be merged — "
                    "Project them to the same source column on every branch"
                )
            cols[name] = first
            continue
        vals, valid = gen.fresh("v"), gen.fresh("m")
        parts_v, parts_m, any_m = [], [], []
        for u, r in zip(ups, refs):
            v, m = gen.arrays(u, name)
            parts_v.append(f"gather({v}, {u.sel})")
            parts_m.append(f"ones_or_gather({m}, {u.sel})")
            any_m.append(f"{m}.size > 0")
        gen.emit(f"{vals} = {_concat(parts_v)}")
        gen.emit(f"if {' or '.join(any_m)}:")
        gen.emit(f"{valid} = {_concat(parts_m)}", 2)
        gen.emit("else:")
        gen.emit(f"{valid} = np.empty(0, np.bool_)", 2)
        cols[name] = _Col("der", name, first.arrow_type, vals, valid)
    gen.emit(f"{sel} = identity({n})")
    return _Binding(origin, n, cols, sel)


def _kernel_args(gen: _Gen, node, b: _Binding) -> tuple[list[str], list[str]]:
    vals, valids = [], []
    for col in node.bound.reads:
        v, m = gen.arrays(b, col)
        vals.append(v)
        valids.append(m)
    return vals, valids


def _null_checks(params_m: list[str], row: str) -> tuple[str, str]:
    no_nulls = " and ".join(f"{m}.size == 0" for m in params_m) or "True"
    row_ok = " and ".join(f"({m}.size == 0 or {m}[{row}])" for m in params_m) or "True"
    return no_nulls, row_ok


def _loop(dense: bool) -> tuple[str, str, str]:
    """(parameters, loop header, row expression) of a node loop, dense or over ``sel``."""
    if dense:
        return "n", "for i in range(n):", ""
    return "sel", "for j in range(sel.size):", "\n            i = sel[j]"


def _filter(gen: _Gen, node, b: _Binding, slot) -> _Binding:
    nid = node.id
    k = f"kernel_{nid}"
    gen.use_kernel(k, node.op)
    vals, valids = _kernel_args(gen, node, b)
    pv = [f"v{i}" for i in range(len(vals))]
    pm = [f"m{i}" for i in range(len(vals))]
    no_nulls, row_ok = _null_checks(pm, "i")
    call = f"{k}({', '.join(f'{v}[i]' for v in pv)})"
    dense = b.sel == _ALL_ROWS
    head, loop, row = _loop(dense)
    params = ", ".join([head] + [x for pair in zip(pv, pm) for x in pair])
    gen.funcs.append(f'''
@njit
def node_{nid}({params}):
    """Filter node {nid}: keep rows where the kernel is true (null inputs: false)."""
    out = np.empty({"n" if dense else "sel.size"}, np.int32)
    count = 0
    if {no_nulls}:
        # branch-free: always write, advance only on a match (a random predicate
        # mispredicts a branch half the time; this is ~4x faster)
        {loop}{row}
            out[count] = i
            count += 1 if {call} else 0
    else:
        {loop}{row}
            if {row_ok} and {call}:
                out[count] = i
                count += 1
    return out[:count]
''')
    sel = f"sel_{nid}"
    args = ", ".join([b.n if dense else b.sel] + [x for pair in zip(vals, valids) for x in pair])
    gen.emit(f"if {_size(b.sel)} > 0:")
    gen.emit(f"{sel} = node_{nid}({args})", 2)
    gen.emit("else:")
    gen.emit(f"{sel} = np.empty(0, np.int32)", 2)
    gen.emit(f"metrics[{slot['nodes_skipped']}] += 1", 2)
    return _Binding(b.origin, b.n, b.cols, sel)


def _np_dtype(arrow_type: pa.DataType) -> str:
    name = arrow_to_numpy_dtype(arrow_type).name
    return _NUMPY_NAMES.get(name, f"np.{name}")


def _map(gen: _Gen, node, b: _Binding, slot) -> _Binding:
    nid = node.id
    k = f"kernel_{nid}"
    gen.use_kernel(k, node.op)
    vals, valids = _kernel_args(gen, node, b)
    pv = [f"v{i}" for i in range(len(vals))]
    pm = [f"m{i}" for i in range(len(vals))]
    no_nulls, row_ok = _null_checks(pm, "i")
    writes = node.bound.writes
    call = f"{k}({', '.join(f'{v}[i]' for v in pv)})"
    alloc = "\n".join(f"    o{j} = np.empty(n, {_np_dtype(t)})" for j, (_, t) in enumerate(writes))
    if len(writes) == 1:
        store = "o0[i] = r"
        zero = "o0[i] = 0"
    else:
        store = "; ".join(f"o{j}[i] = r[{j}]" for j in range(len(writes)))
        zero = "; ".join(f"o{j}[i] = 0" for j in range(len(writes)))
    outs = ", ".join(f"o{j}" for j in range(len(writes)))
    dense = b.sel == _ALL_ROWS
    head, loop, row = _loop(dense)
    params = ", ".join(["n"] + ([] if dense else ["sel"]) + [x for pair in zip(pv, pm) for x in pair])
    gen.funcs.append(f'''
@njit
def node_{nid}({params}):
    """Map node {nid}: {len(writes)} output(s) of the kernel (null inputs: null outputs)."""
{alloc}
    if {no_nulls}:
        valid = np.empty(0, np.bool_)
        {loop}{row}
            r = {call}
            {store}
    else:
        valid = np.zeros(n, np.bool_)
        {loop}{row}
            if {row_ok}:
                r = {call}
                {store}
                valid[i] = True
            else:
                {zero}
    return ({outs}, valid)
''')
    names = [gen.fresh(f"d{nid}_") for _ in writes]
    valid = gen.fresh(f"d{nid}_valid")
    args = ", ".join([b.n] + ([] if dense else [b.sel]) + [x for pair in zip(vals, valids) for x in pair])
    gen.emit(f"if {_size(b.sel)} > 0:")
    gen.emit(f"{', '.join(names)}, {valid} = node_{nid}({args})", 2)
    gen.emit("else:")
    for name, (_, t) in zip(names, writes):
        gen.emit(f"{name} = np.empty(0, {_np_dtype(t)})", 2)
    gen.emit(f"{valid} = np.empty(0, np.bool_)", 2)
    gen.emit(f"metrics[{slot['nodes_skipped']}] += 1", 2)
    cols = dict(b.cols)
    for name, (col, t) in zip(names, writes):
        cols[col] = _Col("der", col, t, name, valid)
    ordered = {f.name: cols[f.name] for f in node.schema}
    return _Binding(b.origin, b.n, ordered, b.sel)


def _sink(gen: _Gen, node, b: _Binding) -> None:
    # For large batches kernel-readable columns are gathered here, in compiled
    # code (Arrow's take is ~3x slower per element); identity selections skip
    # the gather and the sink boundary hands the batch's own columns on. Small
    # batches (n < EAGER_ROWS) skip it too: the sink boundary coalesces many of
    # them and gathers with one Arrow take. Non-numeric columns are always
    # gathered by Arrow at the boundary.
    rows, ident = gen.fresh("rows"), gen.fresh("ident")
    gen.emit(f"{rows} = gather({b.origin}, {b.sel})" if b.origin else f"{rows} = {b.sel}")
    gen.emit(f"{ident} = is_identity({rows}, n)")
    offset = len(gen.returns)
    gen.returns += [rows, ident]
    take, columns, gathers = [], [], []
    for f in node.schema:
        ref = b.cols[f.name]
        if ref.kind == "src" and not is_kernel_type(ref.arrow_type):
            if ref.name not in take:
                take.append(ref.name)
            columns.append(("take", take.index(ref.name)))
            continue
        vals, valid = gen.fresh("out"), gen.fresh("out_valid")
        if ref.kind == "src":
            src_vals, src_valid = gen.src_arrays(ref.name)
            columns.append(("src", len(gen.returns), ref.name))
            gathers.append((vals, valid, src_vals, src_valid, _np_dtype(ref.arrow_type)))
        else:
            columns.append(("der", len(gen.returns)))
            gen.emit(f"{vals} = gather({ref.vals}, {b.sel})")
            gen.emit(f"{valid} = take_valid({ref.valid}, {b.sel})")
        gen.returns += [vals, valid]
    if gathers:
        gen.emit(f"if {ident} or n < {EAGER_ROWS}:")
        for vals, valid, _, _, dtype in gathers:
            gen.emit(f"{vals} = np.empty(0, {dtype})", 2)
            gen.emit(f"{valid} = np.empty(0, np.bool_)", 2)
        gen.emit("else:")
        for vals, valid, src_vals, src_valid, _ in gathers:
            gen.emit(f"{vals} = gather({src_vals}, {b.sel})", 2)
            gen.emit(f"{valid} = take_valid({src_valid}, {b.sel})", 2)
    gen.sinks.append(SinkLayout(node.name, node.id, node.schema, take, columns, offset))


# ----------------------------------------------------------------------------- loading

_HEADER = '''"""Generated by the laminar_jit plan compiler for source node {source_id}. Do not edit."""
import numpy as np

from laminar_jit._jit import {decorator} as njit
from laminar_jit.kernels.selection import concat, gather, identity, is_identity, ones_or_gather, take_valid
'''


def _render(gen: _Gen, source: str, cacheable: bool) -> str:
    args = ["n"]
    for vals, valid in gen.src_args.values():
        args += [vals, valid]
    args += ["offsets", "metrics"]
    parts = [_HEADER.format(source_id=gen.dag.node(source).id,
                            decorator="njit" if cacheable else "njit_nocache")]
    parts += gen.funcs
    parts.append(f"\n@njit\ndef step({', '.join(args)}):")
    parts.append('    """Process one batch of the source through every node it reaches."""')
    if any(_ALL_ROWS in line for line in gen.body + gen.returns):
        parts.append(f"    {_ALL_ROWS} = identity(n)")
    parts += gen.body
    parts.append("    return (" + ", ".join(gen.returns) + ",)\n")
    return "\n".join(parts)


def _signature(gen: _Gen, dag, source: str, args) -> tuple:
    """Numba argument types of the step, as the executor calls it (read-only column views)."""
    readonly = lambda dtype: numba.types.Array(numba.from_dtype(dtype), 1, "C", readonly=True)  # noqa: E731
    sig = [numba.types.int64]
    for _, dtype, _ in args:
        sig += [readonly(np.dtype(dtype)), readonly(np.dtype(np.bool_))]
    sig += [readonly(np.dtype(np.int32)), numba.types.Array(numba.types.int64, 1, "C")]
    return tuple(sig)


def _load(gen: _Gen, text: str, digest: str, cacheable: bool, signature: tuple):
    """Write ``text`` to the plan cache (once, atomically), import it, and compile the step.

    Compiling eagerly (for the argument types the executor passes) puts the
    cost in ``DagExecutor(...)`` rather than the first batch, and lets a cache
    entry that cannot be loaded fall back to a fresh, uncached compile.
    """
    try:
        step, cacheable = _import(gen, text, digest, cacheable)
        if not JIT_DISABLED:
            step.compile(signature)
        return step, cacheable
    except (ImportError, OSError, EOFError, AttributeError, ValueError) as exc:  # unloadable cache entry
        if not cacheable:
            raise
        warnings.warn(f"laminar_jit: compiled plan p_{digest} could not be loaded from the cache ({exc}); "
                      "compiling it again without the disk cache", RuntimeWarning, stacklevel=3)
        step, _ = _import(gen, text.replace("import njit as njit", "import njit_nocache as njit"),
                          digest + "_nocache", False)
        if not JIT_DISABLED:
            step.compile(signature)
        return step, False


def _import(gen: _Gen, text: str, digest: str, cacheable: bool):
    """Write ``text`` to the plan cache (once, atomically) and import it as a module.

    Returns the module's step and whether it is disk-cached (False when the
    cache directory is not writable and a private temporary file was used).
    """
    module_name = f"laminar_jit_plans.p_{digest}"
    directory = os.path.join(cache_dir(), "plans")
    path = os.path.join(directory, f"p_{digest}.py")
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(path):
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)  # atomic: a concurrent process never sees half a file
    except OSError:
        # Read-only cache location: a private temporary file, compiled without disk caching.
        directory = tempfile.mkdtemp(prefix="laminar_jit_plan_")
        path = os.path.join(directory, f"p_{digest}.py")
        with open(path, "w") as fh:
            fh.write(text.replace("import njit as njit", "import njit_nocache as njit"))
        cacheable = False
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(gen.kernels)
    # Numba rebuilds cached functions' environments by importing their module by name.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.step, cacheable
