"""``DagBuilder``: a fluent description of a streaming DAG, validated at ``build()``."""

from __future__ import annotations

import datetime
import heapq

import pyarrow as pa

from ..changelog import OP_COLUMN, is_changelog
from ..errors import (
    CycleError,
    DagError,
    DisconnectedNodeError,
    DuplicateNodeError,
    EmptyDagError,
    FanOutError,
    PortError,
    SchemaError,
    UnknownNodeError,
)
from ..ops.base import Operator
from ..time.watermarks import WatermarkStrategy
from .graph import Node, SourceSpec, StreamingDag, fingerprint_parts
from .routing import MAX_FAN_OUT, RoutingTable

__all__ = ["DagBuilder"]


class DagBuilder:
    """Describe a DAG of sources, operators and sinks; :meth:`build` validates it.

    Every method returns the builder, so calls chain. Nothing is checked until
    :meth:`build`, which reports the first problem as a :class:`DagError`
    subclass naming the node(s) involved.

    Parameters
    ----------
    max_fan_out : int, optional
        Most targets one node may route to (default
        :data:`laminar_jit.dag.routing.MAX_FAN_OUT`).

    Examples
    --------
    >>> import pyarrow as pa, laminar_jit as lj
    >>> schema = pa.schema([("ts", pa.int64()), ("price", pa.float64())])
    >>> dag = (lj.DagBuilder()
    ...        .source("bids", schema, event_time="ts")
    ...        .operator("expensive", lj.Filter(lambda price: price > 100.0))
    ...        .connect("bids", "expensive")
    ...        .sink_for("expensive", "out")
    ...        .build())
    >>> dag.execution_order
    ['bids', 'expensive', 'out']
    """

    def __init__(self, max_fan_out: int = MAX_FAN_OUT):
        self.max_fan_out = int(max_fan_out)
        self._decls: list[tuple[str, str, object]] = []  # (name, kind, payload)
        self._edges: list[tuple[str, str, str | None]] = []
        self._sinks: list[tuple[str, str]] = []

    # ------------------------------------------------------------------ description
    def source(self, name: str, schema: pa.Schema, event_time: str | None = None,
               watermark: WatermarkStrategy | None = None, idle_timeout: float | None = None) -> "DagBuilder":
        """Declare a source.

        Parameters
        ----------
        name : str
        schema : pyarrow.Schema
            Columns every batch must provide (extra columns are ignored; numeric
            columns are cast safely when their type differs).
        event_time : str, optional
            Column holding event time (int64 or an Arrow timestamp); must not be null.
        watermark : WatermarkStrategy, optional
            e.g. ``lj.BoundedOutOfOrderness(max_delay=5_000)``; needs ``event_time``.
            With ``lj.ProcessingTime()``, ``event_time`` names a column the
            engine adds (``timestamp[ms]``, the wall clock when a batch arrives).
        idle_timeout : float, optional
            Seconds (processing time) without input after which the source is
            treated as idle, so it stops holding back downstream watermarks.
        """
        if not isinstance(schema, pa.Schema):
            raise TypeError(f"source {name!r}: schema must be a pyarrow.Schema, got {type(schema).__name__}")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"source {name!r}: idle_timeout must be positive seconds, got {idle_timeout}")
        if getattr(watermark, "processing_time", False) and event_time is not None:
            if schema.get_field_index(event_time) >= 0:
                raise SchemaError(f"source {name!r}: with lj.ProcessingTime() the engine adds the column "
                                  f"{event_time!r} (the wall clock); the schema already has one — name another "
                                  "column in event_time=")
            schema = schema.append(pa.field(event_time, pa.timestamp("ms"), nullable=False))
        self._decls.append((name, "source", SourceSpec(schema, event_time, watermark, idle_timeout)))
        return self

    def operator(self, name: str, op: Operator) -> "DagBuilder":
        """Add an operator node (``lj.Filter``, ``lj.Map``, ``lj.Project``, windows, …)."""
        if not isinstance(op, Operator):
            raise TypeError(f"operator {name!r}: expected an lj operator such as lj.Filter(...), "
                            f"got {type(op).__name__}")
        self._decls.append((name, op.kind, op))
        return self

    def connect(self, upstream: str, downstream: str, port: str | None = None) -> "DagBuilder":
        """Route ``upstream``'s output to ``downstream`` (``port`` for two-input operators)."""
        self._edges.append((upstream, downstream, port))
        return self

    def sink_for(self, node: str, sink_name: str) -> "DagBuilder":
        """Collect ``node``'s output under ``sink_name`` (a sink node)."""
        self._sinks.append((node, sink_name))
        return self

    # ------------------------------------------------------------------ validation
    def build(self) -> StreamingDag:
        """Validate and freeze the DAG.

        Raises
        ------
        EmptyDagError, DuplicateNodeError, UnknownNodeError, PortError,
        FanOutError, CycleError, DisconnectedNodeError, SchemaError, KernelError
        """
        if not self._decls:
            raise EmptyDagError("the DAG is empty; add a source with .source(name, schema) and an operator")
        nodes: list[Node] = []
        by_name: dict[str, Node] = {}

        def add(name, kind, payload):
            if not isinstance(name, str) or not name:
                raise DagError(f"node names must be non-empty strings, got {name!r}")
            if name in by_name:
                raise DuplicateNodeError(
                    f"node name {name!r} is used twice ({by_name[name].kind} and {kind}); "
                    "every source, operator and sink needs its own name"
                )
            node = Node(len(nodes), name, kind, payload)
            nodes.append(node)
            by_name[name] = node

        for name, kind, payload in self._decls:
            add(name, kind, payload)
        if not any(n.kind == "source" for n in nodes):
            raise EmptyDagError("the DAG has no source; declare one with .source(name, schema)")
        for upstream, sink_name in self._sinks:
            add(sink_name, "sink", None)
        late_sinks = [(name, sink, port) for name, kind, payload in self._decls
                      for sink, port in (payload.late_outputs() if hasattr(payload, "late_outputs") else ())]
        for _, sink_name, _ in late_sinks:
            add(sink_name, "sink", None)

        def look(name, role):
            if name not in by_name:
                raise UnknownNodeError(
                    f"{role} names unknown node {name!r}; known nodes: {', '.join(by_name)}"
                )
            return by_name[name]

        edges: list[tuple[int, int]] = []
        for up, down, port in self._edges:
            u, d = look(up, f"connect({up!r}, {down!r})"), look(down, f"connect({up!r}, {down!r})")
            if d.kind == "source":
                raise DagError(f"connect({up!r}, {down!r}): {down!r} is a source and takes no input")
            if u.kind == "sink" or d.kind == "sink":
                raise DagError(f"connect({up!r}, {down!r}): sinks are attached with .sink_for(node, sink_name)")
            self._check_port(u, d, port)
            if (u.id, port) in d.inputs:  # one node into both ports of a join (a self-join) is fine
                raise DagError(f"connect({up!r}, {down!r}{'' if port is None else f', port={port!r}'}) is given twice")
            edges.append((u.id, d.id))
            d.inputs.append((u.id, port))
        for upstream, sink_name in self._sinks:
            u = look(upstream, f"sink_for({upstream!r}, {sink_name!r})")
            if u.kind == "sink":
                raise DagError(f"sink_for({upstream!r}, {sink_name!r}): {upstream!r} is itself a sink")
            s = by_name[sink_name]
            edges.append((u.id, s.id))
            s.inputs.append((u.id, None))
        for upstream, sink_name, port in late_sinks:  # side outputs of late rows
            u, s = by_name[upstream], by_name[sink_name]
            edges.append((u.id, s.id))
            s.inputs.append((u.id, port))

        routing = RoutingTable(len(nodes), edges)
        for n in nodes:
            if routing.degree(n.id) > self.max_fan_out:
                raise FanOutError(
                    f"node {n.name!r} routes to {routing.degree(n.id)} targets, more than the limit of "
                    f"{self.max_fan_out}; add an intermediate operator or raise DagBuilder(max_fan_out=...)"
                )
        order = _topological_order(nodes, routing)
        _check_connected(nodes, routing)
        for i in order:
            _check_changelog_input(nodes[i], nodes)
            _propagate_schema(nodes[i], nodes)
            _propagate_changelog(nodes[i], nodes)
        fingerprint = _fingerprint(nodes, order)
        return StreamingDag(nodes, routing, order, fingerprint)

    @staticmethod
    def _check_port(u: Node, d: Node, port: str | None) -> None:
        ports = getattr(d.op, "ports", None)
        if ports is None and port is not None:
            raise PortError(
                f"connect({u.name!r}, {d.name!r}, port={port!r}): {d.name!r} has a single input; "
                "drop port= (several upstreams of one schema form a union)"
            )
        if ports is not None and port not in ports:
            raise PortError(
                f"connect({u.name!r}, {d.name!r}, port={port!r}): {d.name!r} has ports "
                f"{', '.join(map(repr, ports))}; pass one of them"
            )


def _topological_order(nodes: list[Node], routing: RoutingTable) -> list[int]:
    indeg = [0] * len(nodes)
    for t in routing.targets:
        indeg[int(t)] += 1
    ready = [n.id for n in nodes if indeg[n.id] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for t in routing.targets_of(i):
            t = int(t)
            indeg[t] -= 1
            if indeg[t] == 0:
                heapq.heappush(ready, t)
    if len(order) != len(nodes):
        cycle = _find_cycle(nodes, routing, {i for i in range(len(nodes)) if indeg[i] > 0})
        raise CycleError(
            "the DAG has a cycle: " + " -> ".join(nodes[i].name for i in cycle)
            + "; remove one of these connections"
        )
    return order


def _find_cycle(nodes, routing, candidates) -> list[int]:
    color = {}
    path: list[int] = []

    def visit(i):
        color[i] = 1
        path.append(i)
        for t in routing.targets_of(i):
            t = int(t)
            if t not in candidates:
                continue
            if color.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in color:
                found = visit(t)
                if found:
                    return found
        path.pop()
        color[i] = 2
        return None

    for start in sorted(candidates):
        if start not in color:
            found = visit(start)
            if found:
                return found
    return sorted(candidates)  # pragma: no cover - Kahn left nodes, so a cycle exists


def _check_connected(nodes: list[Node], routing: RoutingTable) -> None:
    for n in nodes:
        if n.kind != "source" and not n.inputs:
            raise DisconnectedNodeError(
                f"operator {n.name!r} has no input; connect an upstream with .connect(upstream, {n.name!r})"
            )
    # every node must lead to a sink, otherwise its work is lost
    reaches_sink = {n.id for n in nodes if n.kind == "sink"}
    changed = True
    while changed:
        changed = False
        for n in nodes:
            if n.id not in reaches_sink and any(int(t) in reaches_sink for t in routing.targets_of(n.id)):
                reaches_sink.add(n.id)
                changed = True
    for n in nodes:
        if n.id not in reaches_sink:
            raise DisconnectedNodeError(
                f"{'source' if n.kind == 'source' else 'operator'} {n.name!r} leads to no sink, so its "
                f"output would be lost; connect it downstream or add .sink_for({n.name!r}, 'out')"
            )


def _propagate_schema(node: Node, nodes: list[Node]) -> None:
    if node.kind == "source":
        spec: SourceSpec = node.op
        _check_source(node.name, spec)
        node.schema = spec.schema
        node.event_time = spec.event_time
        return
    if node.kind == "sink" and (node.inputs[0][1] or "").startswith("late"):
        upstream, port = nodes[node.inputs[0][0]], node.inputs[0][1]
        if port == "late":
            node.schema = upstream.bound.input_schema  # late rows leave unchanged
            node.event_time = _input_event_time(node, nodes)
        else:  # a join's late rows of one port ("late_left"): that port's rows, unchanged
            side = upstream.bound.spec.port(port[len("late_"):])
            node.schema, node.event_time = side.schema, side.event_time
        return
    ports = getattr(node.op, "ports", None)
    if ports is not None:
        # two-input operators: each port is its own union; bind gets {port: schema}
        per_port, times = {}, {}
        for port in ports:
            inputs = [(u, p) for u, p in node.inputs if p == port]
            if not inputs:
                raise DisconnectedNodeError(
                    f"operator {node.name!r}: port {port!r} has no input; connect one with "
                    f".connect(upstream, {node.name!r}, port={port!r})"
                )
            per_port[port] = _union_schema(node, nodes, inputs)
            names = {nodes[u].event_time for u, _ in inputs}
            times[port] = names.pop() if len(names) == 1 else None
        node.bound = node.op.bind(node.name, per_port, event_time=times)
        node.schema = node.bound.output_schema
        node.event_time = node.bound.output_event_time
        return
    input_schema = _union_schema(node, nodes, node.inputs)
    event_time = _input_event_time(node, nodes)
    if node.kind == "sink":
        node.schema = input_schema
        node.event_time = event_time
        return
    node.bound = node.op.bind(node.name, input_schema, event_time=event_time)
    node.schema = node.bound.output_schema
    node.event_time = _output_event_time(node, event_time)


def _changelog_origin(node: Node, nodes: list[Node]) -> str | None:
    """The node whose changelog reaches ``node``'s input, or None when its input is append-only."""
    origins = [nodes[u].changelog_from for u, port in node.inputs if not (port or "").startswith("late")]
    return next((o for o in origins if o is not None), None)


def _check_changelog_input(node: Node, nodes: list[Node]) -> None:
    """Reject a changelog fed to an operator that takes only append-only rows (before it binds)."""
    if node.kind not in ("stateless", "stateful"):
        return
    origin = _changelog_origin(node, nodes)
    if origin is not None and node.kind == "stateful" and not getattr(node.op, "takes_changelog", False):
        raise SchemaError(
            f"operator {node.name!r} ({node.op.label()}) takes append-only rows, but its input is the changelog "
            f"(updating rows with an {OP_COLUMN!r} column) that {origin!r} emits; windows, joins, Dedup, TopN and "
            f"keyed kernels need rows that are final — aggregate the changelog with lj.GroupAggregate, or, if "
            f"every row of {origin!r} is an insert, drop or rename its {OP_COLUMN!r} column")


def _propagate_changelog(node: Node, nodes: list[Node]) -> None:
    """Mark a node whose output is a changelog (see :mod:`laminar_jit.changelog`)."""
    if node.kind == "source":
        node.changelog_from = node.name if is_changelog(node.schema) else None
        return
    origin = _changelog_origin(node, nodes)
    if node.kind != "sink" and getattr(node.op, "emits_changelog", False):
        node.changelog_from = node.name
    elif origin is not None and node.kind != "sink" and not is_changelog(node.schema):
        raise SchemaError(
            f"operator {node.name!r} ({node.op.label()}) drops or changes the {OP_COLUMN!r} column of the "
            f"changelog that {origin!r} emits, so its updates could no longer be applied; keep {OP_COLUMN!r} "
            "(an int8 RowKind) in its output")
    else:
        node.changelog_from = origin


def _input_event_time(node: Node, nodes: list[Node]) -> str | None:
    names = {nodes[u].event_time for u, _ in node.inputs}
    return names.pop() if len(names) == 1 else None


def _output_event_time(node: Node, event_time: str | None) -> str | None:
    """Where the event time lives in a node's output (None once it is dropped or overwritten)."""
    if node.kind == "stateful":
        return node.bound.output_event_time
    mapping = node.bound.mapping
    if mapping is not None:
        return next((new for new, old in mapping if old == event_time), None)
    if event_time in {name for name, _ in node.bound.writes}:
        return None
    return event_time


def _union_schema(node: Node, nodes: list[Node], inputs) -> pa.Schema:
    first = nodes[inputs[0][0]]
    for u, _ in inputs[1:]:
        other = nodes[u]
        if not other.schema.equals(first.schema):
            diff = _schema_difference(first.schema, other.schema)
            raise SchemaError(
                f"{'sink' if node.kind == 'sink' else 'operator'} {node.name!r} takes a union of its upstreams, which must share one schema: "
                f"{first.name!r} and {other.name!r} differ ({diff}); add a Project or Map to align them"
            )
    return first.schema


def _schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    if a.names != b.names:
        return f"columns {a.names} vs {b.names}"
    for fa, fb in zip(a, b):
        if fa.type != fb.type:
            return f"column {fa.name!r} is {fa.type} vs {fb.type}"
    return "field metadata/nullability"


def _check_source(name: str, spec: SourceSpec) -> None:
    if len(set(spec.schema.names)) != len(spec.schema.names):
        raise SchemaError(f"source {name!r}: schema has repeated column names {spec.schema.names}")
    if spec.event_time is not None:
        idx = spec.schema.get_field_index(spec.event_time)
        if idx < 0:
            raise SchemaError(
                f"source {name!r}: event_time column {spec.event_time!r} is not in the schema "
                f"({', '.join(spec.schema.names)})"
            )
        t = spec.schema.field(idx).type
        if not (pa.types.is_int64(t) or pa.types.is_timestamp(t)):
            raise SchemaError(
                f"source {name!r}: event_time column {spec.event_time!r} is {t}, expected int64 or a "
                "timestamp — cast it in the source schema"
            )
    if spec.watermark is not None:
        if spec.event_time is None:
            raise SchemaError(f"source {name!r}: a watermark needs event_time= naming the event-time column")
        if not isinstance(spec.watermark, WatermarkStrategy):
            raise SchemaError(
                f"source {name!r}: watermark must be e.g. lj.BoundedOutOfOrderness(max_delay=...), "
                f"got {type(spec.watermark).__name__}"
            )
        if isinstance(spec.watermark.delay, datetime.timedelta) and not pa.types.is_timestamp(t):
            raise SchemaError(
                f"source {name!r}: watermark delay {spec.watermark.delay} is a timedelta but event_time "
                f"column {spec.event_time!r} is {t}; give the delay as an integer in the column's units"
            )


def node_fingerprints(nodes: list[Node], order: list[int]) -> dict[str, str | None]:
    """Per node (in execution order): a digest of its kind, configuration, code and inputs.

    ``None`` for an operator whose kernels cannot be fingerprinted (e.g. a
    closure over an unhashable object); the DAG then has no fingerprint.
    """
    out: dict[str, str | None] = {}
    for i in order:
        n = nodes[i]
        if n.kind == "source":
            spec = n.op
            wm = spec.watermark.fingerprint() if spec.watermark is not None else "none"
            part = f"source:{n.name}:{spec.schema.to_string(show_schema_metadata=False)}:{spec.event_time}:{wm}"
        elif n.kind == "sink":
            part = f"sink:{n.name}"
        else:
            fp = n.op.fingerprint()
            part = None if fp is None else f"{n.kind}:{n.name}:{fp}"
        inputs = "in:" + ",".join(f"{u}/{p}" for u, p in n.inputs)
        out[n.name] = None if part is None else fingerprint_parts([part, inputs])
    return out


def _fingerprint(nodes: list[Node], order: list[int]) -> str | None:
    parts = node_fingerprints(nodes, order)
    return None if None in parts.values() else fingerprint_parts(list(parts.values()))
