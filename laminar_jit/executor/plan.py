"""The plan compiler: one generated, cached ``@njit`` step function per source.

For a source ``S`` the compiler walks the nodes reachable from ``S`` in the
DAG's execution order and writes Python source for:

* small ``@njit`` functions for the nodes (see :mod:`.codegen`): filter
  loops over a selection vector, fused gather-and-compute loops at sinks and
  fan-ins where lazy Map outputs are evaluated, with the null model of
  :mod:`laminar_jit.ops.stateless` applied outside the user's kernels;
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
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import threading
import warnings
import weakref
from dataclasses import dataclass, replace
from functools import partial

import numba
import numpy as np
import pyarrow as pa

from .._jit import JIT_DISABLED, compiling_glue
from .._progress import compiling
from .._types import arrow_to_numpy_dtype
from ..errors import DataError, KernelError
from ..kernels import asof as _asof, joins as _joins
from ..ops.windows import WindowSpec
from .boundary import readonly
from .codegen import generate
from .steps import ancestors, boundary_nodes, plan_nodes
from .core import ALL_ROWS, DICTIONARY_BYTES, KERNELS_DIR, OWN_STAMP_MODULES, SHARD_ROWS, SOURCE_WMS, Gen, SinkLayout
from .inlining import inline_calls
from .pieces import PieceLayout, ShardStep
from .plancache import cache_dir, compile_lock, write_and_import
from .shared import SCHEME as SHARED_SCHEME, load_shared, split_shared

__all__ = ["WINDOW_PIECE_ROWS", "SinkLayout", "SourcePlan", "boundary_nodes", "cache_dir", "compile_plan"]

#: Batches feeding window operators run in pieces of at most this many rows
#: (key shards: this many per shard). Firing between pieces keeps the open
#: entries, and the table room reserved for a call's new ones, small enough to
#: stay in cache. Since hash tables probe only their active buckets (not the
#: room reserved), fewer, longer pieces pay: CPU of one executor over 5 M
#: events in 262,144-row batches, pieces of 16,384 / 65,536 / 131,072 /
#: 262,144 rows: Dedup 136 / 105 / 106 / 134 ms, 10 s tumbling windows over
#: 10 K keys 128 / 109 / 109 / 118 ms, over ~1 M keys 288 / 271 / 315 / 417 ms,
#: a 10 s / 2 s sliding window 248 / 229 / 232 / 263 ms.
WINDOW_PIECE_ROWS = 65_536

_STEP_MEMO: dict[str, object] = {}
_MEMO_LOCK = threading.Lock()


@dataclass
class SourcePlan:
    """The compiled step of one source and how to read its result.

    The step is compiled (or loaded from the disk cache) by :meth:`load`, or when :attr:`step`
    is first read: a key-sharded executor reads the layouts of the unsharded plans but runs
    only its shards' steps, so it never compiles theirs.
    """

    source: str
    #: Compiles the step: returns (step, seconds spent, whether it is disk-cached).
    loader: object
    #: Source columns passed to the step, (name, numpy dtype, read by a kernel,
    #: dictionary-encoded), in order. Columns only sinks need may be passed
    #: empty for small batches; encoded string columns are passed as int64 codes.
    #: A name ``%column`` stands for the ``(offsets, data)`` of that column's string
    #: dictionary, passed after the column (compiled code compares strings by them).
    args: list[tuple[str, np.dtype, bool, bool]]
    sinks: list[SinkLayout]
    #: The generated source (for inspection: ``print(plan.text)``).
    text: str
    #: Whether Numba caches the step on disk (False for unhashable kernels).
    cacheable: bool = False
    #: True when every node the source reaches is stateless, so a batch may be
    #: split into slices processed independently (and concurrently).
    parallel_safe: bool = False
    #: Stateful nodes whose state arrays follow ``wm, idle`` in the step's arguments.
    stateful_ids: list = None
    #: Most copies of one source row that can reach a node (paths through
    #: multicasts that re-join); bounds the new keys a batch can create.
    max_paths: int = 1
    #: (slide, phase, lateness, event-time source column or None) of sliding
    #: windows the source feeds: a window becomes due when the watermark
    #: reaches ``phase + k * slide``. A batch is cut where its running
    #: watermark crosses one and a later row may fall in the window made due,
    #: so no window becomes due mid-call (see ``DagExecutor._cut_at_due_windows``).
    due_grids: list = None
    #: True when the source feeds a window-family node: batches then run in
    #: pieces of at most :data:`WINDOW_PIECE_ROWS`.
    window_pieces: bool = False
    #: For each stateful node, the stateful nodes upstream of it (their open
    #: entries bound how many rows they can emit into it in one call).
    upstream_stateful: dict = None
    #: Groups of (source, column) whose string dictionaries must be one object
    #: (the two sides of a string join key).
    shared_dictionaries: list = None
    #: Encoded string columns whose codes only joins keep for their output (see
    #: :func:`carried_strings`): their dictionaries are made ``carried``.
    carried_strings: frozenset = frozenset()
    #: Step arguments an ArrowMap computes from the batch: name -> (node name, op, source columns,
    #: output index, Arrow type).
    arrow_maps: dict = None
    #: Layouts of boundary nodes' rows in the step's result; each is run through that node's plan.
    boundaries: list = None
    #: True for a boundary node's plan: its step takes ``wm_rows`` after the state arrays.
    derived: bool = False
    #: ``args`` with how to view each column, filled by the executor from the first batch
    #: (the batches of one plan always have the same schema).
    arg_recipe: tuple = None
    #: Parameter names of the step, in order.
    step_args: list = None
    #: A key shard's plan: ``step`` is a :class:`~.pieces.ShardStep` running the compiled step piece by piece.
    sharded: bool = False
    #: Arrays of the step's result before, in a key shard's :class:`~.pieces.ShardStep`'s, each boundary node's watermark
    #: before and after every piece (two arrays per entry of ``boundaries``).
    n_returns: int = 0
    #: Values of the settings the step reads at run time (see ``Gen.setting``), as int64.
    settings: np.ndarray = None
    #: Seconds this process spent compiling the step (or loading it from the disk cache);
    #: 0.0 when it came from the in-process memo, or before it is loaded.
    compile_seconds: float = 0.0
    _step: object = None

    @property
    def step(self):
        """The compiled step (a key shard's: its :class:`~.pieces.ShardStep`), compiled on first use."""
        return self.load()._step

    def load(self) -> SourcePlan:
        """Compile the step now, if it is not yet (or load it from the disk cache); this plan."""
        if self._step is None:
            self._step, seconds, self.cacheable = self.loader()
            self.compile_seconds += seconds
        return self

    def with_arrow_maps(self, b: pa.RecordBatch) -> pa.RecordBatch:
        """``b`` plus the columns ArrowMaps compute from it (named like the step's arguments).

        Computed while the batch is validated, so a function that fails rejects
        the batch before any state changes.
        """
        computed = {}
        for name, (node, op, columns, j, arrow_type) in self.arrow_maps.items():
            if node not in computed:
                try:
                    computed[node] = op.evaluate(node, [b.column(c) for c in columns])
                except KernelError as exc:
                    exc.source = self.source
                    raise
            col = computed[node][j]
            if col.type != arrow_type:
                try:
                    col = col.cast(arrow_type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataError(f"operator {node!r} (ArrowMap): output {op.outputs[j][0]!r} was {arrow_type} "
                                    f"when the DAG was built and is {col.type} for this batch: {exc}") from exc
            b = b.append_column(name, col)
        return b


def _kernels_stamp() -> str:
    """Hash of the package's kernel sources: a cached step has them compiled in.

    Numba's cache checks only the generated file, so a new version of a kernel
    the step calls (or inlines) must change the plan's name.
    """
    h = hashlib.sha256()
    for name in sorted(os.listdir(KERNELS_DIR)):
        if name.endswith(".py") and name not in OWN_STAMP_MODULES:
            with open(os.path.join(KERNELS_DIR, name), "rb") as fh:
                h.update(name.encode() + fh.read())
    return h.hexdigest()


_KERNELS_STAMP = _kernels_stamp()


#: Plans of each finalized DAG in this process, by (source, sharded): a new executor of a DAG
#: already run reuses them without generating and rendering the text again.
_PLAN_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compile_plan(dag, source: str, sharded: bool = False) -> SourcePlan:
    """The plan of ``source``: its step's text and layouts (or the in-process memo's).

    The step itself is compiled, or loaded from the on-disk cache, by :meth:`SourcePlan.load`
    or when :attr:`SourcePlan.step` is first read. ``sharded``: the plan of a key shard, whose
    ``step`` is ``step(rows, cuts, ...)``: the shard's rows ``rows`` (positions in the batch)
    of each piece ``cuts[p]:cuts[p + 1]`` of a batch through the compiled step (see
    :class:`.pieces.ShardStep` and :mod:`.shards`).
    """
    with _MEMO_LOCK:
        plan = _PLAN_MEMO.get(dag, {}).get((source, sharded))
    if plan is not None:
        return replace(plan, compile_seconds=0.0, arg_recipe=None)
    plan = _compile_plan(dag, source, sharded)
    if plan.cacheable:
        with _MEMO_LOCK:
            _PLAN_MEMO.setdefault(dag, {})[(source, sharded)] = plan
    return plan


def _compile_plan(dag, source: str, sharded: bool) -> SourcePlan:
    gen = generate(dag, source, sharded)
    cacheable = dag.fingerprint is not None and not JIT_DISABLED
    text = _render(gen, source, cacheable)
    schema = dag.node(source).schema
    def dtype(name):
        if name.startswith(DICTIONARY_BYTES):  # a string dictionary's bytes (see Gen.dictionary_store)
            return np.dtype(np.uint8)
        if name in gen.encoded:
            return np.dtype(np.int64)
        arrow_type = gen.arrow_args[name][3] if name in gen.arrow_args else schema.field(name).type
        return arrow_to_numpy_dtype(arrow_type)

    args = [(name, dtype(name), name in gen.kernel_reads or name in gen.encoded, name in gen.encoded)
            for name in gen.src_args]
    digest = hashlib.sha256("|".join([text, numba.__version__, _KERNELS_STAMP, SHARED_SCHEME,
                                      *gen.fingerprints]).encode()).hexdigest()[:32]
    # (the loader holds what compiling needs, not ``gen``: a memoized plan must not keep its DAG alive)
    loader = partial(_load_step, source, _piece_layout(gen) if sharded else None, text, digest,
                     _signature(gen, dag, source, args), cacheable, gen.kernels,
                     [f for f in gen.fingerprints if f.startswith("kernels/")])
    parallel_safe = not gen.stateful_ids and not gen.boundaries  # (slices run no boundary steps)
    grids = []
    for nid in gen.stateful_ids if not gen.derived else ():  # a derived plan's rows share one watermark
        spec = dag.nodes[nid].bound.spec
        grid = spec.due_grid() if isinstance(spec, WindowSpec) else None
        if grid is not None:
            grids.append((*grid, gen.sliding_times[nid]))
    # rows of boundary nodes leave the step, so they never reach a stateful node in it
    reach = set(plan_nodes(dag, source, sharded)) - boundary_nodes(dag, sharded)
    upstream = {nid: [u for u in gen.stateful_ids if u != nid and u in ancestors(dag, nid) and u in reach]
                for nid in gen.stateful_ids}
    return SourcePlan(source, loader, args, gen.sinks, text, cacheable=cacheable, parallel_safe=parallel_safe,
                      stateful_ids=list(gen.stateful_ids), max_paths=_max_paths(dag, source),
                      due_grids=sorted(set(grids)), upstream_stateful=upstream,
                      window_pieces=not gen.derived and any(isinstance(dag.nodes[nid].bound.spec, WindowSpec)
                                                            for nid in gen.stateful_ids),
                      shared_dictionaries=gen.shared_dictionaries, carried_strings=carried_strings(gen, dag),
                      arrow_maps={name: (dag.nodes[nid].name, dag.nodes[nid].op, cols, j, t)
                                  for name, (nid, cols, j, t) in gen.arrow_args.items()},
                      boundaries=gen.boundaries, derived=gen.derived,
                      step_args=_step_args(gen), sharded=sharded, n_returns=len(gen.returns),
                      settings=readonly(np.array(gen.settings, np.int64)))


def carried_strings(gen: Gen, dag) -> frozenset:
    """The encoded string columns of ``gen``'s step whose codes nothing compares: joins and rankings (TopN,
    ``Dedup(keep="last")``) keep them for their output, and no key, join key, aggregate or kernel of the step
    reads them.

    Their dictionaries may give a repeated value a new code
    (:class:`~laminar_jit.state.dictionary.StringDictionary` ``carried``): a join's or ranking's rows keep
    codes only to decode them. A column whose codes the next step reads shares one dictionary with it, which
    is carried only if the next step's use is too (see ``DagExecutor``).
    """
    carried, compared = set(), set()
    for places in gen.value_dictionaries.values():
        for (what, _, _), origin in places.items():
            if origin is not None and origin[0] == gen.source:
                (carried if what == "payload" else compared).add(origin[1])
    for origins in gen.key_dictionaries.values():
        compared.update(o[1] for o in origins if o is not None and o[0] == gen.source)
    for group in gen.shared_dictionaries:
        compared.update(column for source, column in group if source == gen.source)
    compared.update(name[len(DICTIONARY_BYTES):] for name in gen.src_args if name.startswith(DICTIONARY_BYTES))
    return frozenset((carried & gen.encoded) - compared)


# ----------------------------------------------------------------------------- loading

def _load_step(source: str, pieces: PieceLayout | None, text: str, digest: str, signature: tuple, cacheable: bool,
               kernels: dict, kernel_fingerprints: list) -> tuple:
    """The plan's step (from the in-process memo, the disk cache, or compiled); seconds spent; whether cached.
    ``pieces``: a key shard's plan, whose step is called through a :class:`.pieces.ShardStep`."""
    with _MEMO_LOCK:
        step = _STEP_MEMO.get(digest) if cacheable else None
        if step is not None:
            return step, 0.0, cacheable
        with compile_lock(digest, source, cacheable):
            cached = cacheable and os.path.exists(os.path.join(cache_dir(), "plans", f"p_{digest}.py"))
            which = f"{'key-shard ' if pieces else ''}plan for source {source!r}"
            what = (f"loading {which} from the disk cache" if cached else
                    f"compiling {which}" + (" (first run; cached afterwards)" if cacheable else ""))
            # helpers no user kernel reaches are compiled once for every plan that writes them
            # (parsed only here: a memoized step skips it, so a new executor of a known DAG is cheap)
            shared = split_shared(text, kernels, [numba.__version__, _KERNELS_STAMP], kernel_fingerprints) \
                if cacheable else (text, [])
            with compiling(what) as took:
                step, cacheable = _load(kernels, text, shared, digest, cacheable, signature)
            if pieces is not None:
                step = ShardStep(step, pieces)
        if cacheable:
            _STEP_MEMO[digest] = step
    return step, took["seconds"], cacheable


_HEADER = '''"""Generated by the laminar_jit plan compiler for source node {source_id}. Do not edit."""
import numpy as np

from laminar_jit._jit import {decorator} as jit

# the step's helpers are called only from the step: no Python or C entry points to build
njit = jit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
from laminar_jit.kernels.alloc import empty, full, zeros
from laminar_jit.kernels.selection import bits_set, concat, gather, identity, is_identity, keys_valid, negated, nonzero, scatter, shifted, valid_or_ones
from laminar_jit.kernels.watermarks import running_watermark, source_watermark
from laminar_jit.kernels.counters import count_in, count_out, inputs_watermark, propagate_watermark
from laminar_jit.kernels.hashtable import cache_line, ht_delete, ht_delete_many, ht_find, ht_find_or_insert
from laminar_jit.kernels.sorting import argsort_pairs, sort_list
from laminar_jit.kernels.timers import heap_pop, heap_push
from laminar_jit.kernels.slots import due_slots
from laminar_jit.kernels.sliding import sliding_due
from laminar_jit.kernels.sessions import unlink_sessions
from laminar_jit.kernels.ranking import topn_rows
from laminar_jit.kernels.joins import chain_insert, emitted_min, expire_buckets, order_partners, reserve_pairs, reserve_positions, row_alloc
from laminar_jit.kernels.asof import asof_fire, asof_prune

WM_MIN = -9223372036854775808
WM_MAX = 9223372036854775807
'''


#: Per-row kernels whose statement-level calls plans write out in place (see :mod:`.inlining`): the join
#: chains' (Numba-inlined kernels, which count references on every array argument). The per-row kernels
#: compiled without reference counting (``njit_borrowing``: hash table probes, inserts and deletes, the
#: changelog's value counts and ranked inserts, TopN's tie rows) are called like any kernel: LLVM inlines
#: such a plain call, and Numba compiles one call at each site instead of the kernel's whole body (a group
#: aggregate of Nexmark q16's many distinct counts: 943 lines and 12.9 s to compile written out, 1.2 s called).
_INLINED = {"row_alloc": _joins.row_alloc, "chain_insert": _joins.chain_insert, "asof_prune": _asof.asof_prune}


def _step_args(gen: Gen) -> list[str]:
    args = ["n"]
    for vals, valid in gen.src_args.values():
        args += [vals, valid]
    shard = [SHARD_ROWS, SOURCE_WMS] if gen.sharded else []
    return args + ["offsets", "settings", "metrics", "wm", "idle"] + shard + gen.state_args + \
        (["wm_rows"] if gen.derived else [])


def _render(gen: Gen, source: str, cacheable: bool) -> str:
    args = _step_args(gen)
    parts = [_HEADER.format(source_id=gen.dag.node(source).id,
                            decorator="njit" if cacheable else "njit_nocache")]
    parts += gen.funcs
    parts.append(f"\n@jit(no_cfunc_wrapper=True)\ndef step({', '.join(args)}):")
    parts.append('    """Process one batch of the source through every node it reaches."""')
    if any(ALL_ROWS in line for line in gen.body + gen.returns):
        parts.append(f"    {ALL_ROWS} = identity(n)")
    parts += gen.body
    parts.append("    return (" + ", ".join(gen.returns) + ",)\n")
    text, imports = inline_calls(_unread_row_watermarks("\n".join(parts)), _INLINED)
    imports |= gen.imports
    extra = "".join(f"from {module} import {name}\n" for module, name in sorted(imports))
    head, sep, rest = text.partition("\nWM_MIN = ")
    return head + extra + sep + rest



def _piece_layout(gen: Gen) -> PieceLayout:
    """Where a key shard's step has its column arguments and its results (see :class:`.pieces.ShardStep`)."""
    whole = {name for column, pair in gen.src_args.items() if column.startswith(DICTIONARY_BYTES) for name in pair}
    columns = [name for pair in gen.src_args.values() for name in pair]
    rows, values = [], []
    for layout in [*gen.sinks, *gen.boundaries]:  # (a join's rows that feed stateful operators: as a sink's)
        rows.append(layout.offset)
        values += [col.pos for col in layout.columns if col.kind != "take"] + list(layout.ties)
    assert sorted([*rows, *(k + 1 for k in rows), *values, *(k + 1 for k in values)]) == list(range(len(gen.returns))), \
        "a key shard's step returns only its sinks' rows"
    return PieceLayout(len(columns), frozenset(i for i, name in enumerate(columns) if name in whole), tuple(rows),
                       tuple(values), tuple(layout.node_id for layout in gen.boundaries), len(gen.returns))


def _unread_row_watermarks(text: str) -> str:
    """Compute only the batch's final watermark for sources whose per-row watermarks nothing reads."""
    for name in re.findall(r"^ +(wm_rows_\d+), wm_after = running_watermark\(", text, flags=re.M):
        if len(re.findall(rf"\b{name}\b", text)) == 1:
            text = text.replace(f"{name}, wm_after = running_watermark(", "wm_after = source_watermark(")
    return text


def _max_paths(dag, source: str) -> int:
    paths, root = {}, dag.node(source).id
    for nid in plan_nodes(dag, source):
        node = dag.nodes[nid]
        paths[nid] = 1 if nid == root else sum(paths.get(u, 0) for u, _ in node.inputs)
    return max(paths.values())


def _signature(gen: Gen, dag, source: str, args) -> tuple:
    """Numba argument types of the step, as the executor calls it (read-only column views)."""
    ro = lambda dtype: numba.types.Array(numba.from_dtype(dtype), 1, "C", readonly=True)  # noqa: E731
    int64s = numba.types.Array(numba.types.int64, 1, "C")
    sig = [numba.types.int64]
    for name, dtype, _, _ in args:
        if name.startswith(DICTIONARY_BYTES):  # a string dictionary's (offsets, data)
            sig += [ro(np.dtype(np.int64)), ro(np.dtype(np.uint8))]
        else:
            sig += [ro(np.dtype(dtype)), ro(np.dtype(np.bool_))]
    sig += [ro(np.dtype(np.int32)), ro(np.dtype(np.int64)), int64s, int64s, numba.types.Array(numba.types.bool_, 1, "C")]
    if gen.sharded:  # (shard_rows, source_wms)
        sig += [numba.types.Array(numba.types.int32, 1, "C"), int64s]
    for nid in gen.stateful_ids:
        node = dag.nodes[nid]
        sig += [numba.typeof(a) for a in node.op.new_state(node.bound, capacity=1).arrays()]
    if gen.derived:
        sig.append(numba.types.int64)
    return tuple(sig)


def _load(kernels: dict, text: str, shared: tuple, digest: str, cacheable: bool, signature: tuple):
    """Write the plan to the plan cache (once, atomically), import it, and compile the step.

    ``shared`` is ``text`` split by :func:`.shared.split_shared`: the plan's own text and
    the helpers it shares with other plans. Compiling eagerly (for the argument types
    the executor passes) puts the cost in ``DagExecutor(...)`` rather than the first
    batch, and lets a cache entry that cannot be loaded fall back to a fresh, uncached
    compile of the whole ``text``.
    """
    try:
        own, helpers = shared
        functions, disk = load_shared(helpers, lambda t, name: write_and_import(t, name, cacheable, {}))
        step, cacheable = _import(kernels, own, digest, cacheable and disk, functions)
        if not JIT_DISABLED:
            with compiling_glue():
                step.compile(signature)
        return step, cacheable
    except (ImportError, OSError, EOFError, AttributeError, ValueError, pickle.UnpicklingError) as exc:
        # an unloadable cache entry: truncated, corrupted, or referring to a module that is gone
        if not cacheable:
            raise
        warnings.warn(f"laminar_jit: compiled plan p_{digest} could not be loaded from the cache ({exc}); "
                      "compiling it again without the disk cache", RuntimeWarning, stacklevel=3)
        step, _ = _import(kernels, text.replace("import njit as jit", "import njit_nocache as jit"),
                          digest + "_nocache", False, {})
        if not JIT_DISABLED:
            with compiling_glue():
                step.compile(signature)
        return step, False


def _import(kernels: dict, text: str, digest: str, cacheable: bool, shared: dict):
    """Write ``text`` to the plan cache (once, atomically) and import it as a module.

    Returns the module's ``step`` and whether it is
    disk-cached (False when the cache directory is not writable and a private temporary file
    was used). ``shared`` are the helpers moved out of ``text``, bound like the user's kernels.
    """
    module, cacheable = write_and_import(text, f"p_{digest}", cacheable, {**kernels, **shared})
    return module.step, cacheable
