"""Which DAGs key shards can run, and how: each source's key columns and each sink's merge.

:func:`shard_plan` is the planning half of :mod:`.shards`: it walks the DAG
once, when an executor with ``parallelism > 1`` is made, and either returns a
:class:`ShardPlan` or says in one sentence why the DAG runs in one executor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..ops.group import GroupSpec
from ..ops.joins import JoinSpec
from ..ops.keyed import KeyedSpec
from ..ops.ranked import RankedSpec
from ..ops.windows import WindowSpec
from .codegen import ancestors, boundary_nodes

__all__ = ["KEY_GROUPS", "UPDATING", "ShardPlan", "resolve_parallelism", "shard_plan"]

#: Keys hash into this many key groups; each shard owns some of them (ranges at first).
KEY_GROUPS = 256
#: Specs of operators whose output is a changelog of their keys' results (a GroupAggregate, an unbounded
#: TopN, ``Dedup(keep="last")``): each key's changes come from the one shard owning it.
UPDATING = (GroupSpec, RankedSpec)


def resolve_parallelism(value) -> int:
    """``parallelism=`` as a number of shards: a positive int, or ``"auto"`` (the cores this process may use)."""
    if value is None:
        return 1
    if value == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # platforms without affinity masks
            cores = os.cpu_count() or 1
        return max(1, min(cores, KEY_GROUPS))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= KEY_GROUPS:
        raise ValueError(f"parallelism must be an int from 1 to {KEY_GROUPS} (the key groups) or 'auto', "
                         f"got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ShardPlan:
    """How a DAG is sharded.

    Attributes
    ----------
    keys : dict of str to tuple of str
        Per source: the key columns whose hash picks a row's key group.
    merge : dict of str to tuple
        Per sink: ``("rows",)`` when its rows are input rows passed on (merged by
        their position in the batch), ``("window", end, key, rank)`` for a
        window or TopN's results, maybe through stateless operators: the sink's
        names of the columns they are merged by, window end, then key (None for
        composite keys: the shard), then rank (None but for a TopN);
        ``("arrivals",)`` for a join's pairs (by the position of the row whose
        arrival emitted them) and ``("changes",)`` for a changelog (shard by
        shard).
    """

    keys: dict
    merge: dict


def shard_plan(dag) -> ShardPlan | str:
    """A :class:`ShardPlan` for ``dag``, or the reason it runs in one executor."""
    nodes = dag.nodes
    stateful = [n for n in nodes if n.kind == "stateful"]
    if not stateful:
        return "the DAG has no keyed state to shard (threads=N splits large batches of stateless DAGs)"
    for nid in sorted(boundary_nodes(dag)):
        if getattr(nodes[nid].op, "ports", None) is None:
            return (f"the rows of operator {nodes[nid].name!r} leave the compiled step as a batch (for an ArrowMap "
                    "or an OverAggregate) and run through a step of their own, which key shards do not run yet")
    upstream = {n.id: ancestors(dag, n.id) for n in nodes}
    joins_fed = boundary_nodes(dag)
    for n in stateful:
        spec = n.bound.spec
        if isinstance(spec, JoinSpec):
            if spec.kind == "asof" and spec.how == "left" and len(spec.left.keys) > 1:
                return (f"operator {n.name!r} ({n.op.label()}) keeps left rows with a null composite key, which "
                        "key shards cannot assign to a key group yet")
            if n.id in joins_fed:
                return (f"the rows of join {n.name!r} feed stateful operators through a step of their own, which key "
                        "shards do not run yet")
        elif not isinstance(spec, (WindowSpec, KeyedSpec, *UPDATING)):
            return (f"operator {n.name!r} ({n.op.label()}) is not a window, join, Dedup, TopN, GroupAggregate or "
                    "keyed kernel")
        if not (spec.left.keys if isinstance(spec, JoinSpec) else spec.keys):
            return f"operator {n.name!r} ({n.op.label()}) has no key"
        if isinstance(spec, (*UPDATING, KeyedSpec)):
            fed = next((m for m in stateful if n.id in upstream[m.id]), None)
            if fed is not None:
                return (f"the output of {n.name!r} ({n.op.label()}) feeds operator {fed.name!r}; key shards pass "
                        "on only windows' and Dedups' rows to other stateful operators")
    # per source, per stateful operator it reaches: the columns that operator groups the source's rows by, and
    # those of them a stateless operator on the way renames or computes (rows cannot be cut by those at the
    # source; a stateful operator on the way keeps the key columns: windows and joins emit them)
    keys = {}
    for source in dag.sources:
        sid = dag.node(source).id
        fed = {}
        for n in stateful:
            if sid not in upstream[n.id]:
                continue
            grouping = source_grouping(dag, n, sid, upstream)
            if grouping is None:
                return f"source {source!r} reaches both inputs of join {n.name!r}"
            fed[n.id] = grouping
        if not fed:
            keys[source] = ()
            continue
        first = next(iter(fed.values()))[0]
        common = [k for k in first if all(k in by for by, _ in fed.values())]
        if not common:
            return f"the stateful operators of source {source!r} share no key column"
        kept = [k for k in common if not any(k in changed for _, changed in fed.values())]
        if not kept:
            nid, (_, changed) = next((nid, g) for nid, g in fed.items() if set(common) & set(g[1]))
            column = next(k for k in common if k in changed)
            return (f"operator {changed[column]!r} renames or computes a key column of {nodes[nid].name!r} "
                    f"({column!r}), so the rows of source {source!r} cannot be cut by it")
        keys[source] = tuple(kept)
    for n in stateful:  # every source of one operator must cut its rows by the same key columns, in order
        seen = set()
        for a in upstream[n.id]:
            if nodes[a].kind == "source":
                by, _ = source_grouping(dag, n, a, upstream)
                seen.add(tuple(by.index(k) for k in keys[nodes[a].name]))
        if len(seen) > 1:
            return f"the sources of operator {n.name!r} share no key column to shard by"
    merge = {}
    for t in nodes:
        if t.kind != "sink":
            continue
        (u, port), = t.inputs
        chain = []  # stateless operators with one input between the sink and what feeds them
        while nodes[u].kind == "stateless" and len(nodes[u].inputs) == 1:
            chain.append(nodes[u])
            (u, port), = nodes[u].inputs
        up = nodes[u]
        spec = up.bound.spec if up.kind == "stateful" else None
        if isinstance(spec, UPDATING):  # a changelog: each key's changes come from the shard owning it
            merge[t.name] = ("changes",)
            continue
        if isinstance(spec, (JoinSpec, KeyedSpec)) and port is None:  # where the row that emitted each arrived
            merge[t.name] = ("arrivals",)
            continue
        if spec is not None and port is None and spec.kind != "dedup":
            order = ["window_end", spec.keys[0] if len(spec.keys) == 1 else None, "rank" if spec.kind == "topn" else None]
            for node in reversed(chain):  # the names the ordering columns have at the sink
                order = [None if name is None else _renamed(node, name) or "" for name in order]
            if "" in order:
                return (f"sink {t.name!r} does not receive the window_end, key or rank column of {up.name!r} "
                        "(its results are merged by them)")
            merge[t.name] = ("window", *order)
            continue
        late = {u} if spec is not None and port is not None else set()  # a window's late rows are input rows
        if any(nodes[a].kind == "stateful" and getattr(nodes[a].bound.spec, "kind", None) != "dedup"
               for a in upstream[t.id] - late):
            return (f"sink {t.name!r} reads a window's results through {nodes[u].name!r} (a Dedup or an operator "
                    "with more than one input), whose rows the shards cannot put back in one executor's order")
        if any(_paths(dag, nodes[a].id, t.id) > 1 for a in upstream[t.id] if nodes[a].kind == "source"):
            return f"sink {t.name!r} receives some input rows along more than one path"
        merge[t.name] = ("rows",)
    return ShardPlan(keys, merge)


def source_grouping(dag, n, source_id: int, upstream: dict) -> tuple | None:
    """``(keys, changed)``: the key columns stateful node ``n`` groups the rows of a source by (a join: those of
    the input the source reaches; None when it reaches both), and which of them a stateless operator between
    them renames or computes (column -> that operator's name)."""
    nodes = dag.nodes
    spec = n.bound.spec
    on_path = {a for a in upstream[n.id] if source_id in upstream[a] or a == source_id}
    if isinstance(spec, JoinSpec):
        ports = {port for u, port in n.inputs if u == source_id or source_id in upstream[u]}
        if len(ports) != 1:
            return None
        (port,) = ports
        keys = tuple(spec.port(port).keys)
        (u,) = [u for u, p in n.inputs if p == port]
        on_path &= upstream[u] | {u}
    else:
        keys = tuple(spec.keys)
    changed = {}  # key column -> the operator that renames or computes it
    for a in sorted(on_path):
        up = nodes[a]
        if up.kind == "stateless":
            for name in [new for new, old in up.bound.mapping or () if new in keys and old != new] + \
                    [name for name, _ in up.bound.writes if name in keys]:
                changed.setdefault(name, up.name)
    return keys, changed


def _renamed(node, name: str) -> str | None:
    """What column ``name`` of a stateless node's input is called in its output (None: dropped or overwritten)."""
    mapping = node.bound.mapping
    if mapping is not None:
        return next((new for new, old in mapping if old == name), None)
    return None if any(written == name for written, _ in node.bound.writes) else name


def _paths(dag, src: int, dst: int) -> int:
    """Number of paths from node ``src`` to node ``dst``."""
    count = {src: 1}
    for i in dag.execution_ids:
        if i != src:
            count[i] = sum(count.get(u, 0) for u, _ in dag.nodes[i].inputs)
    return count.get(dst, 0)
