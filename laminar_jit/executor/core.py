"""The generator core: what every operator's plan generator builds on.

A plan is generated per source (see :mod:`.plan`): :func:`.codegen.generate`
walks the nodes the source reaches and asks each operator family's generator
(registered here with :func:`register`) for the code of its node. They share:

* :class:`Gen`, the plan being written (functions, step body, arguments,
  kernels, settings, sinks);
* :class:`Binding` and :class:`Col`, a node's output: a selection vector over
  a column space and a reference per column (see :mod:`.codegen`);
* expression helpers (the code of a column's value at a row, and of its
  null test), watermark helpers, and the key helpers of keyed state.

Settings (window sizes, lateness, delays, ...) are never written into the
text: :meth:`Gen.setting` reads them from the step's ``settings`` array, so
DAGs that differ only in settings share one compiled plan.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from .._types import arrow_to_numpy_dtype
from ..errors import SchemaError

__all__ = [
    "ALL_ROWS", "DICTIONARY_BYTES", "EMITTED", "SHARD_ROWS", "SOURCE_WMS", "MAX_EXPR_CALLS", "METRIC_SLOTS",
    "NULL_KEY", "ROW_WATERMARK", "Binding", "Col", "Gen", "MetricsLayout", "SinkColumn", "SinkLayout", "all_empty",
    "call_args", "concat", "dtype_name", "emitted_key_cols", "fn_signature", "generator_for", "indent",
    "kernel_module_stamp", "KERNELS_DIR", "link_arrivals", "OWN_STAMP_MODULES", "key_code", "key_columns",
    "key_decoder", "key_table_names", "leaf_names", "literal", "np_dtype", "propagate_watermark", "register",
    "row_loop", "row_ok", "size_of", "string_origin", "value_code", "watermark_bounds",
]

#: Global counters kept after the per-node (rows_in, rows_out, late_events) triples.
METRIC_SLOTS = ("events_processed", "events_routed", "multicast_publishes", "nodes_skipped", "late_events")


#: An expression with more kernel calls than this is materialized into arrays.
MAX_EXPR_CALLS = 8


#: The prefix of a pseudo source argument: ``%column`` is the ``(offsets, data)`` of ``column``'s string
#: dictionary (see :meth:`Gen.dictionary_store`).
DICTIONARY_BYTES = "%"
#: The source's own selection (all rows). Nodes reading it run dense loops over
#: ``range(n)``; the array is built only if something needs it as an array.
ALL_ROWS = "sel_src"
#: A key shard's source rows: a step argument (the positions in the batch of its keys' rows).
SHARD_ROWS = "shard_rows"
#: A key shard's source watermarks: a step argument, the watermark before each row of the piece and after
#: its last (worked out once per batch for every shard: ``kernels.watermarks.batch_watermarks``).
SOURCE_WMS = "source_wms"


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
    #: A key shard's join or keyed-kernel output: per emitted row, the position in the step's rows of the row whose
    #: arrival emitted it (the shards' output is merged by it).
    arrivals: str | None = None
    #: With ``arrivals``: per emitted row, its order among rows of one arrival position, most significant first
    #: (a keyed kernel's timers by their time, before the row itself; a join's settled rows by event time, then
    #: arrival); empty when each position emits in one shard only.
    arrival_ties: tuple = ()


#: ``Binding.origin`` of rows a stateful operator emitted (no source rows behind them).
EMITTED = "EMITTED"


class SinkColumn(NamedTuple):
    """Where one output column of a sink comes from in the step's result.

    ``kind`` is ``"take"`` (a non-numeric source column gathered by Arrow:
    ``pos`` indexes :attr:`SinkLayout.take_columns`), ``"src"`` (a source
    column ``column`` the step gathered at ``pos``, unless the selection is the
    identity or the batch small: then the boundary takes it from the batch),
    ``"der"`` (an array the step computed: values at ``pos``, validity at
    ``pos + 1``) or ``"code"`` (dictionary codes at ``pos``, decoded with the
    string dictionary ``dictionary``, a (source, column) key).
    """

    kind: str
    pos: int
    column: str | None = None
    dictionary: tuple | None = None


@dataclass
class SinkLayout:
    """How to turn one sink's slice of the step's result into a RecordBatch."""

    sink: str
    node_id: int
    schema: pa.Schema
    #: Non-numeric source columns gathered with Arrow ``take`` at the boundary.
    take_columns: list[str]
    #: Per output column, where it comes from (see :class:`SinkColumn`).
    columns: list[SinkColumn]
    #: Position of this sink's ``rows`` in the flat result tuple (``ident`` follows).
    offset: int
    #: A key shard's sink of join or keyed-kernel output: its ``rows`` are the positions of the rows whose arrival emitted them.
    arrivals: bool = False
    #: With ``arrivals``: positions in the flat result of the rows' order among one arrival position's
    #: (:attr:`Binding.arrival_ties`, each values then an empty validity).
    ties: tuple = ()

    @functools.cached_property
    def by_name(self) -> dict[str, tuple[pa.Field, SinkColumn]]:
        """Each output column's field and :class:`SinkColumn`, by name."""
        return {f.name: (f, col) for f, col in zip(self.schema, self.columns)}


@dataclass(frozen=True)
class MetricsLayout:
    """Where each counter is in the ``metrics`` array the step updates in place.

    ``rows_in``, ``rows_out``, ``late_events`` of node ``i`` come first (``3 * i + k``),
    then the global counters of :data:`METRIC_SLOTS`. :class:`.metrics.Metrics`
    reads the array through the same layout.
    """

    n_nodes: int
    PER_NODE = ("rows_in", "rows_out", "late_events")

    @property
    def size(self) -> int:
        return len(self.PER_NODE) * self.n_nodes + len(METRIC_SLOTS)

    def index(self, name: str, node: int | None = None) -> int:
        """Position of counter ``name``: of node id ``node``, or a global one when ``node`` is None."""
        if node is None:
            return len(self.PER_NODE) * self.n_nodes + METRIC_SLOTS.index(name)
        return len(self.PER_NODE) * node + self.PER_NODE.index(name)


@dataclass
class Gen:
    """Accumulates the generated functions and step body for one source."""

    dag: object
    source: str
    #: Ids of the nodes this step runs (a node's other inputs are fed by other sources' steps).
    reach: set = field(default_factory=set)
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
    #: Per keyed node id (a join: per ``(id, port)``): the (source, column) dictionary each key column holds
    #: codes of, None for a column that is not a string (what moving state between partitions decodes).
    key_dictionaries: dict = field(default_factory=dict)
    #: Per stateful node id: where its state holds other string codes, ``("payload", port, j)`` (kept column
    #: ``j`` of a join port or a TopN) or ``("agg", None, j)`` (aggregate ``j``), and the (source, column)
    #: dictionary they are codes of (what merging partitions' states rewrites).
    value_dictionaries: dict = field(default_factory=dict)
    #: Step arguments computed from the batch by an ArrowMap: name -> (node, source columns, output index, type).
    arrow_args: dict = field(default_factory=dict)
    #: The step's input is a boundary node's output (it then takes ``wm_rows``, the watermark of its rows).
    derived: bool = False
    #: Layouts of boundary nodes' rows, returned like sinks' and run through those nodes' own steps.
    boundaries: list = field(default_factory=list)
    #: Per join node: its late rows per port (bindings over the port's input), for late sinks.
    join_late: dict = field(default_factory=dict)
    #: Per sliding window node: the source column its event time is, or None when computed.
    sliding_times: dict = field(default_factory=dict)
    #: Operator settings (window sizes, lateness, delays, ...) the step reads from its
    #: ``settings`` argument: the text never holds them, so DAGs that differ only in
    #: settings share one compiled plan.
    settings: list = field(default_factory=list)
    #: Per node id: the generated lines binding its settings to local names.
    setting_lines: dict = field(default_factory=dict)
    #: A key shard's step: its source rows are the selection ``SHARD_ROWS`` (a step
    #: argument) of the batch, not every row (see :mod:`.shards`).
    sharded: bool = False
    #: ``(module, name)`` of library functions the generated functions call beyond the plan header's.
    imports: set = field(default_factory=set)
    counter: int = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def emit(self, line: str, indent: int = 1) -> None:
        self.body.append("    " * indent + line)

    def emit_rows(self, nid: int, count: str, no_nulls: bool = True) -> None:
        """Bind a node's emitted rows: ``m_<nid>`` (``count``), ``sel_<nid>`` (all), ``no_nulls_<nid>``."""
        self.emit(f"m_{nid} = {count}")
        self.emit(f"sel_{nid} = identity(m_{nid})")
        if no_nulls:
            self.emit(f"no_nulls_{nid} = empty(0, np.bool_)")

    def metric(self, name: str, node: int | None = None) -> str:
        """The step's expression of counter ``name`` (of node id ``node``, or global); see :class:`MetricsLayout`."""
        return f"metrics[{MetricsLayout(len(self.dag.nodes)).index(name, node)}]"

    def slot(self, name: str | None, node: int | None = None) -> str:
        """Counter ``name``'s position as an int64 argument of a kernel (``None``: -1, a counter the call skips)."""
        k = -1 if name is None else MetricsLayout(len(self.dag.nodes)).index(name, node)
        return f"np.int64({k})"

    def count_in(self, nid: int, rows: str, processed: bool = True, skipped: bool = True) -> None:
        """Count ``rows`` arriving at node ``nid`` (and in ``events_processed``; ``nodes_skipped`` if none)."""
        self.emit(f"count_in(metrics, {rows}, {self.slot('rows_in', nid)}, "
                  f"{self.slot('events_processed' if processed else None)}, "
                  f"{self.slot('nodes_skipped' if skipped else None)})")

    def setting(self, value: int) -> str:
        """The step's expression reading ``value`` at run time (``settings[k]``)."""
        self.settings.append(int(value))
        return f"settings[{len(self.settings) - 1}]"

    def bind_settings(self, nid: int, values: dict) -> str:
        """Lines (4 spaces deep) binding node ``nid``'s settings to local names in a node function.

        The node function takes the step's ``settings`` array; the first call
        for a node registers its values, later calls return the same lines.
        """
        if nid not in self.setting_lines:
            self.setting_lines[nid] = "\n".join(f"    {name} = {self.setting(v)}" for name, v in values.items())
        return self.setting_lines[nid]

    def use_kernel(self, global_name: str, op) -> None:
        self.kernels[global_name] = op.kernel.dispatcher
        # Numba's cached code records the module of every inlined function and
        # imports it on load, so equal bytecode from another module is another plan.
        fn = op.kernel.fn
        self.fingerprints.append(f"{global_name}={op.fingerprint()}@{fn.__module__}.{fn.__qualname__}:inline")

    def src_arrays(self, column: str, kernel_read: bool = True) -> tuple[str, str]:
        if column not in self.src_args:
            i = len(self.src_args)
            self.src_args[column] = (f"c{i}", f"c{i}_valid")
        if kernel_read:
            self.kernel_reads.add(column)
        return self.src_args[column]

    def dictionary_store(self, column: str) -> tuple[str, str]:
        """Step arguments ``(offsets, data)`` of the string dictionary of source column ``column`` (encoded),
        as :meth:`~laminar_jit.state.dictionary.StringDictionary.store` gives them: compiled code compares
        its codes by their bytes. (A pseudo source argument ``%column``, passed after the column's codes.)"""
        self.encoded.add(column)
        self.src_arrays(column)
        name = DICTIONARY_BYTES + column
        if name not in self.src_args:
            i = len(self.src_args)
            self.src_args[name] = (f"d{i}_offsets", f"d{i}_data")
        return self.src_args[name]

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


def row_loop(gen: Gen, b: Binding, cols: list) -> tuple[list, dict, bool, str]:
    """What an update function over a binding's rows reads: the leaves of ``cols`` (None skipped), their
    parameter names, whether the rows are every row (``n``) or a selection (``sel``), and the loop's head
    (binding the row ``i``)."""
    leaves: list = []
    for c in cols:
        if c is not None:
            gen.leaves(b, c, leaves)
    dense = b.sel == ALL_ROWS
    loop = "for i in range(n):" if dense else "for j in range(sel.size):\n        i = sel[j]"
    return leaves, leaf_names(leaves), dense, loop


def leaf_names(leaves: list) -> dict:
    return {leaf: (f"v{i}", f"m{i}") for i, leaf in enumerate(leaves)}


def _leaf_of(gen: Gen, col: Col) -> tuple[str, str]:
    return gen.src_args[col.name] if col.kind == "src" else (col.vals, col.valid)


def value_code(col: Col, gen: Gen, b: Binding, names: dict, row: str) -> str:
    if col.kind != "expr":
        return f"{names[_leaf_of(gen, col)][0]}[{row}]"
    call = f"{col.kernel}({', '.join(value_code(a, gen, b, names, row) for a in col.args)})"
    if col.index is not None:
        call = f"{call}[{col.index}]"
    return f"{col.cast}({call})" if col.cast else call


def all_empty(names: dict, leaves) -> str:
    return " and ".join(f"{names[leaf][1]}.size == 0" for leaf in leaves) or "True"


def row_ok(names: dict, leaves, row: str) -> str:
    return " and ".join(f"({names[leaf][1]}.size == 0 or {names[leaf][1]}[{row}])" for leaf in leaves) or "True"


def call_args(b_sel: str, leaves: list, dense: bool, n: str) -> str:
    head = [n] if dense else [b_sel]
    return ", ".join(head + [x for leaf in leaves for x in leaf])


def fn_signature(leaves: list, names: dict, dense: bool) -> str:
    head = ["n"] if dense else ["sel"]
    return ", ".join(head + [x for leaf in leaves for x in names[leaf]])


def np_dtype(arrow_type: pa.DataType) -> str:
    dtype = arrow_to_numpy_dtype(arrow_type)
    name = "int64" if dtype is None else dtype.name  # strings travel as int64 dictionary codes
    return _NUMPY_NAMES.get(name, f"np.{name}")


def size_of(sel: str) -> str:
    return "n" if sel == ALL_ROWS else f"{sel}.size"


def propagate_watermark(gen: Gen, node, into: str | None = None) -> None:
    """A node's watermark: the minimum over its non-idle inputs; it never goes back.

    It goes to ``wm[node]`` and the node's idle flag, or only to ``into`` (a
    join keeps its input watermark in its state and holds its output back);
    the step's ``active`` then says whether any input is active. The work is
    a kernel call (``kernels/counters.py``), not generated lines.
    """
    inputs = f"({''.join(f'np.int64({u}), ' for u, _ in node.inputs)})"
    if into is None:
        gen.emit(f"active = propagate_watermark(wm, idle, {inputs}, np.int64({node.id}))")
        return
    gen.emit(f"w, active = inputs_watermark(wm, idle, {inputs})")
    gen.emit(f"if active and w > {into}:")
    gen.emit(f"{into} = w", 2)


def concat(parts: list[str]) -> str:
    expr = parts[0]
    for p in parts[1:]:
        expr = f"concat({expr}, {p})"
    return expr


NULL_KEY = "WM_MIN"  # int64 minimum: the group of null keys


#: Generated lines (in a row loop, 8 spaces deep) setting ``rw``: the watermark in force when
#: row ``i`` arrived, clamped between the node's watermark so far and the least watermark of
#: its inputs this source does not feed (see :func:`watermark_bounds`).
ROW_WATERMARK = """rw = rwm[i] if rwm.size else rw_scalar
        if rw > rw_cap:  # inputs from other sources hold the node's watermark back
            rw = rw_cap
        if rw < rw_floor:
            rw = rw_floor"""


def literal(value) -> str:
    """Python source of an initial state value (``inf``/``nan`` spelled through numpy)."""
    if isinstance(value, float) and not np.isfinite(value):
        return "np.nan" if np.isnan(value) else ("np.inf" if value > 0 else "-np.inf")
    return repr(value)


def dtype_name(dtype) -> str:
    name = np.dtype(dtype).name
    return "np.bool_" if name == "bool" else f"np.{name}"


def indent(code: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in code.splitlines())


def watermark_bounds(gen, node) -> None:
    """``wm_before_<id>`` (the node's watermark so far) and ``cap_<id>``, the least
    watermark of its inputs this source does not feed: a row's own running
    watermark is clamped between the two."""
    nid = node.id
    gen.emit(f"wm_before_{nid} = wm[{nid}]")
    gen.emit(f"cap_{nid} = WM_MAX")
    for u, _ in node.inputs:
        if u not in gen.reach:
            gen.emit(f"if not idle[{u}] and wm[{u}] < cap_{nid}:")
            gen.emit(f"cap_{nid} = wm[{u}]", 2)


def key_columns(gen, node, b: Binding, keys: tuple) -> list:
    """The key columns of a keyed node; string keys are read as source dictionary codes."""
    key_cols = [b.cols[k] for k in keys]
    origins = []
    for k, kc in zip(keys, key_cols):
        if kc.kind == "src" and arrow_to_numpy_dtype(kc.arrow_type) is None:
            if b.origin is not None:
                raise SchemaError(f"operator {node.name!r}: string key {k!r} must come from a source column")
            gen.encoded.add(kc.name)
            origins.append((gen.source, kc.name))
        else:  # a number, or already codes of a dictionary (a keyed node's output)
            origins.append(kc.dictionary if kc.kind == "der" else None)
    gen.key_dictionaries[node.id] = origins
    return key_cols


def string_origin(gen, node, b: Binding, col: Col, column: str) -> str:
    """The source column of this step whose dictionary the string column ``col`` (``column``) holds codes of.

    A source column's own codes (it is then encoded at the boundary), or the codes an operator
    upstream in this step emits (an aggregate of strings: ``col.dictionary``). Anything else has
    no dictionary a node of this step can read (a fan-in of two sources, a boundary node's rows):
    ``SchemaError`` naming the node and column.
    """
    if col.kind == "src" and b.origin is None:
        gen.encoded.add(col.name)
        return col.name
    if col.kind == "der" and col.dictionary is not None and col.dictionary[0] == gen.source:
        return col.dictionary[1]
    raise SchemaError(f"operator {node.name!r}: the string column {column!r} it aggregates must come from one "
                      "source column (through Filters, Maps, ArrowMaps, Projects and aggregates)")


def key_parts(gen, b: Binding, names: dict, key_cols: list, row: str = "i") -> list[str]:
    """Expressions of the int64 value of each key column at row ``row`` (dictionary code for strings; null -> the
    null group)."""
    return [f"np.int64({value_code(kc, gen, b, names, row)}) if {row_ok(names, gen.leaves(b, kc, []), row)} "
            f"else {NULL_KEY}" for kc in key_cols]


def key_code(gen, b: Binding, names: dict, key_cols: list, state_names: list[str], comp=None) -> str:
    """Statements setting ``k``, the row's int64 key: one int64 per key column (:func:`key_parts`, or ``comp``),
    composite keys chained through per-level (id, next code) -> id tables, the last state arguments."""
    comp = key_parts(gen, b, names, key_cols) if comp is None else comp
    key_lines = [f"k = {comp[0]}" if comp else "k = np.int64(0)"]
    level_tables = key_table_names(state_names, len(key_cols))
    for level, expr in enumerate(comp[1:]):
        kt = level_tables[level]
        key_lines.append(f"k = ht_find_or_insert({', '.join(kt)}, k, {expr})")
    return "\n        ".join(key_lines)


def emitted_key_cols(gen, node, keys: tuple, key_cols: list, state_names: list[str], key: str,
                     key_valid: str) -> dict:
    """Output Cols of the key column(s) from emitted int64 keys (decoding composite ids)."""
    nid = node.id
    key_arrays = [(key, key_valid)]
    if len(key_cols) > 1:
        key_decoder(gen, nid, state_names, len(key_cols))
        key_arrays = [(f"kc{c}_{nid}", f"kcv{c}_{nid}") for c in range(len(key_cols))]
        tables = key_table_names(state_names, len(key_cols))
        gen.emit(f"{', '.join(v for pair in key_arrays for v in pair)} = "
                 f"window_{nid}_keys({key}, {', '.join(v for t in tables for v in t)})")
    cols = {}
    for (k, kc), (vals, valid) in zip(zip(keys, key_cols), key_arrays):
        if kc.kind == "src":
            dictionary = (gen.source, kc.name) if kc.name in gen.encoded else None
        else:  # already codes of a source dictionary (the output of another keyed node)
            dictionary = kc.dictionary
        cols[k] = Col("der", k, node.schema.field(k).type, vals, valid, dictionary=dictionary)
    return cols


def key_table_names(state_names: list[str], n_keys: int) -> list[list[str]]:
    """State arguments of the composite-key tables (the last ``4 * (n_keys - 1)`` names)."""
    levels = max(0, n_keys - 1)
    tail = state_names[len(state_names) - 4 * levels:] if levels else []
    return [tail[4 * i: 4 * i + 4] for i in range(levels)]


def key_decoder(gen, nid: int, state_names: list[str], n_keys: int) -> None:
    """Emit ``window_<id>_keys``: composite key ids back to their column codes."""
    tables = key_table_names(state_names, n_keys)
    lines = [f"\n@njit\ndef window_{nid}_keys(ids, {', '.join(x for t in tables for x in t)}):",
             '    """Decode composite key ids into one int64 array (and validity) per key column."""',
             "    m = ids.size"]
    for c in range(n_keys):
        lines.append(f"    c{c} = empty(m, np.int64)")
    lines.append("    for o in range(m):")
    lines.append("        k = ids[o]")
    for level in range(n_keys - 2, -1, -1):
        keys = tables[level][1]
        lines.append(f"        c{level + 1}[o] = {keys}[k, 1]")
        lines.append(f"        k = {keys}[k, 0]")
    lines.append("        c0[o] = k")
    rets = ", ".join(f"c{c}, keys_valid(c{c})" for c in range(n_keys))
    lines.append(f"    return {rets}")
    gen.funcs.append("\n".join(lines) + "\n")


KERNELS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "kernels")

#: Kernel modules that only the plans of some operators import. Their sources are
#: stamped into those plans' digests alone (:func:`kernel_module_stamp`, added to
#: ``Gen.fingerprints`` by the operator's generator), so editing one recompiles
#: just the plans that link it (``interning.py``: none, only string dictionaries call it).
OWN_STAMP_MODULES = frozenset({"arrivals.py", "changelog.py", "distinct.py", "interning.py"})


_ARRIVALS = "\nfrom laminar_jit.kernels.arrivals import first_reaching, settled_labels\n"


def link_arrivals(gen: Gen) -> None:
    """Import :mod:`laminar_jit.kernels.arrivals` into a key shard's plan (once), its source stamped into the plan's name."""
    if _ARRIVALS not in gen.funcs:
        gen.funcs.append(_ARRIVALS)
        gen.fingerprints.append(kernel_module_stamp("arrivals.py"))


def kernel_module_stamp(name: str) -> str:
    """``"kernels/<name>=<hash of its source>"`` for the fingerprints of a plan that imports it."""
    with open(os.path.join(KERNELS_DIR, name), "rb") as fh:
        return f"kernels/{name}={hashlib.sha256(fh.read()).hexdigest()}"


# ----------------------------------------------------------------------------- the registry

_GENERATORS: dict[type, Callable] = {}


def register(*op_types: type) -> Callable:
    """Register the decorated function as the plan generator of nodes whose operator is one of ``op_types``.

    A generator is called as ``fn(gen, node, b)``: ``b`` is the node's input
    binding (for a two-input operator, a dict of bindings by port). It writes
    its functions and step code into ``gen`` (``gen.reach``: the nodes this
    step runs; ``gen.metric``: the counters) and returns ``(output, late)``:
    the binding of the node's output rows and of its late rows (or None).
    """
    def decorate(fn: Callable) -> Callable:
        for op_type in op_types:
            _GENERATORS[op_type] = fn
        return fn
    return decorate


def generator_for(op) -> Callable:
    """The generator registered for ``op``'s class (or its nearest registered base class)."""
    for cls in type(op).__mro__:
        if cls in _GENERATORS:
            return _GENERATORS[cls]
    raise TypeError(f"no plan generator is registered for {type(op).__name__}")
