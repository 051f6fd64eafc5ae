"""The finalized, immutable DAG."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ..errors import UnknownNodeError
from ..ops.base import Bound, Operator
from .routing import RoutingTable

__all__ = ["Node", "SourceSpec", "StreamingDag"]


@dataclass(frozen=True)
class SourceSpec:
    """Configuration of a source node."""

    schema: pa.Schema
    event_time: str | None = None
    watermark: object | None = None
    idle_timeout: float | None = None


@dataclass
class Node:
    """One node of a :class:`StreamingDag`.

    Attributes
    ----------
    id : int
        Dense id (insertion order); index into the routing arrays.
    name : str
    kind : str
        ``"source"``, ``"stateless"``, ``"stateful"`` or ``"sink"``.
    op : Operator or SourceSpec or None
    inputs : list of (int, str or None)
        Upstream node ids with the port they connect to.
    schema : pyarrow.Schema
        Output schema (for a sink: the schema it receives).
    bound : Bound or None
        The operator bound to its input schema (operators only).
    """

    id: int
    name: str
    kind: str
    op: Operator | SourceSpec | None
    inputs: list = field(default_factory=list)
    schema: pa.Schema | None = None
    bound: Bound | None = None
    #: Name of the event-time column of this node's output, if it has one.
    event_time: str | None = None
    #: The node whose output made this node's output a changelog (rows with an ``op``
    #: column of RowKind codes, see :mod:`laminar_jit.changelog`); None for append-only output.
    changelog_from: str | None = None


class StreamingDag:
    """A validated DAG ready for :class:`~laminar_jit.DagExecutor`.

    Built by :meth:`DagBuilder.build`; immutable afterwards.

    Attributes
    ----------
    nodes : list of Node
        In id order.
    execution_order : list of str
        Topological order (Kahn's algorithm, ties broken by node id).
    sources, sinks : list of str
    routing : RoutingTable
    fingerprint : str or None
        Hash of the structure, schemas and kernels; None when a kernel closes
        over a value that cannot be hashed (then compiled plans are not cached
        on disk).
    """

    def __init__(self, nodes: list[Node], routing: RoutingTable, order: list[int], fingerprint: str | None):
        self.nodes = nodes
        self.routing = routing
        self._order_ids = order
        self._by_name = {n.name: n for n in nodes}
        self.fingerprint = fingerprint

    # ------------------------------------------------------------------ look-ups
    def node(self, name_or_id: str | int) -> Node:
        """The node with this name or id; :class:`UnknownNodeError` otherwise."""
        if isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, (bool, np.bool_)):
            if 0 <= name_or_id < len(self.nodes):
                return self.nodes[int(name_or_id)]
        elif name_or_id in self._by_name:
            return self._by_name[name_or_id]
        raise UnknownNodeError(
            f"no node {name_or_id!r} in this DAG; nodes: {', '.join(self._by_name)}"
        )

    @property
    def execution_order(self) -> list[str]:
        return [self.nodes[i].name for i in self._order_ids]

    @property
    def sources(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind == "source"]

    @property
    def sinks(self) -> list[str]:
        return [n.name for n in self.nodes if n.kind == "sink"]

    def schema_of(self, name: str) -> pa.Schema:
        """Output schema of a node (for a sink, the schema of the rows it receives)."""
        return self.node(name).schema

    def targets_of(self, name: str) -> list[str]:
        """Names of the nodes ``name`` routes to."""
        return [self.nodes[t].name for t in self.routing.targets_of(self.node(name).id)]

    def upstreams_of(self, name: str) -> list[str]:
        return [self.nodes[u].name for u, _ in self.node(name).inputs]

    def is_multicast(self, name: str | int) -> bool:
        """True when the node routes to more than one target."""
        return self.routing.is_multicast(self.node(name).id)

    def is_terminal(self, name: str | int) -> bool:
        """True when the node routes nowhere (sinks)."""
        return self.routing.is_terminal(self.node(name).id)

    @property
    def execution_ids(self) -> list[int]:
        """Node ids in execution order."""
        return list(self._order_ids)

    def reachable_from(self, source: str) -> list[int]:
        """Ids reachable from ``source`` (itself included), in execution order."""
        start = self.node(source).id
        seen = {start}
        stack = [start]
        while stack:
            for t in self.routing.targets_of(stack.pop()):
                t = int(t)
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return [i for i in self._order_ids if i in seen]

    # ------------------------------------------------------------------ pictures
    def to_dot(self) -> str:
        """Graphviz DOT text of the DAG (render with ``graphviz.Source(dag.to_dot())``)."""
        shapes = {"source": "invhouse", "stateless": "box", "stateful": "box3d", "sink": "house"}
        lines = ["digraph laminar {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=11];']
        for n in self.nodes:
            name = _dot_escape(n.name)
            label = name if n.kind in ("source", "sink") else f"{name}\\n{_dot_escape(n.op.label())}"
            lines.append(f'  n{n.id} [label="{label}", shape={shapes[n.kind]}];')
        for n in self.nodes:
            for u, port in n.inputs:
                attr = f' [label="{_dot_escape(port)}"]' if port else ""
                lines.append(f"  n{u} -> n{n.id}{attr};")
        lines.append("}")
        return "\n".join(lines)

    def _repr_mimebundle_(self, include=None, exclude=None):
        # Notebooks: an SVG when the graphviz package and binary are present, else the DOT text.
        try:
            import graphviz

            return {"image/svg+xml": graphviz.Source(self.to_dot()).pipe(format="svg").decode()}
        except Exception:
            return {"text/plain": repr(self) + "\n" + self.to_dot()}

    def __repr__(self) -> str:
        return (f"StreamingDag(sources={self.sources}, sinks={self.sinks}, "
                f"order={self.execution_order})")


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def fingerprint_parts(parts: list[str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\x00")
    return h.hexdigest()
