"""Which DAGs key shards can run, and how: each source's key columns and each sink's merge.

:func:`shard_plan` is the planning half of :mod:`.shards`: it walks the DAG
once, when an executor with ``parallelism > 1`` is made, and either returns a
:class:`ShardPlan` or says in one sentence why the DAG runs in one executor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..kernels.changelog import MEAN as _MEAN, SUM as _SUM
from ..ops.group import GroupSpec
from ..ops.joins import JoinSpec
from ..ops.keyed import KeyedSpec
from ..ops.ranked import RankedSpec
from ..ops.windows import WindowSpec
from .steps import ancestors, boundary_nodes, plan_nodes, two_phase as _two_phase, two_phase_reason

__all__ = ["KEY_GROUPS", "UPDATING", "ShardPlan", "resolve_parallelism", "shard_plan"]

#: Keys hash into this many key groups; each shard owns some of them (ranges at first). At most 256: a row's
#: group is kept in a byte.
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
        Per stage root (a source, or a join whose rows feed stateful
        operators): the key columns whose hash picks a row's key group.
    merge : dict of str to tuple
        Per sink, and per boundary node (a join, keyed kernel, window or
        changelog whose rows feed stateful operators: they leave their stage
        as a batch, merged as a sink's): ``("rows",)`` when its rows are input rows passed on (merged by
        their position in the batch), ``("window", end, key, rank)`` for a
        window or TopN's results, maybe through stateless operators: the sink's
        names of the columns they are merged by, window end, then key (None for
        composite keys: the shard), then rank (None but for a TopN);
        ``("arrivals",)`` for a join's pairs (by the position of the row whose
        arrival emitted them), ``("changes",)`` for a changelog (shard by
        shard) and ``("one",)`` for the rows of a stage of operators without a
        key, which shard 0 runs alone (as they come).
    split : frozenset of str
        Stage roots (sources) whose rows are dealt to the shards by their
        place in the batch, not by key: their stage's stateful operators are
        windows without a key that run in two phases (their shards' results
        are combined when they fire).
    combined : frozenset of str
        Those windows (boundary nodes): their merged rows are combined, a
        row per window, before the next stage reads them.
    """

    keys: dict
    merge: dict
    split: frozenset = frozenset()
    combined: frozenset = frozenset()


def shard_plan(dag, two_phase: bool = False) -> ShardPlan | str:
    """A :class:`ShardPlan` for ``dag``, or the reason it runs in one executor.

    ``two_phase``: windows without a key over a source's rows may run in
    every shard, their results combined (:func:`.steps.two_phase`).

    The DAG is cut into stages as one executor's steps are: one per source,
    and one per join whose rows feed stateful operators (a boundary node,
    whose step reads the join's rows as a batch); key shards also end a stage
    at a keyed kernel whose rows feed stateful operators, at an updating
    operator whose changelog feeds a GroupAggregate, and at a window whose
    results feed an operator of another key. Each stage's rows are dealt to
    the shards by key columns every stateful operator of the stage shares, so
    those rows are exchanged between the shards by the key of the operators
    they feed.
    """
    nodes = dag.nodes
    combines = (lambda n: _two_phase(dag, n)) if two_phase else (lambda n: False)
    stateful = [n for n in nodes if n.kind == "stateful"]
    if not stateful:
        return "the DAG has no keyed state to shard (threads=N splits large batches of stateless DAGs)"
    boundaries = boundary_nodes(dag, sharded=True)
    exchanges = boundaries - boundary_nodes(dag)  # (a keyed kernel's, a changelog's, a window's to another key)
    for nid in sorted(boundaries - exchanges):
        if getattr(nodes[nid].op, "ports", None) is None:
            return (f"the rows of operator {nodes[nid].name!r} leave the compiled step as a batch (for an ArrowMap "
                    "or an OverAggregate) and run through a step of their own, which key shards do not run yet")
    upstream = {n.id: ancestors(dag, n.id) for n in nodes}
    # stage roots: the sources, then the boundary joins in execution order; each stage's node ids
    roots = [*dag.sources, *(nodes[nid].name for nid in dag.execution_ids if nid in boundaries)]
    stages = {root: set(plan_nodes(dag, root, sharded=True)) - (_own_outputs(dag, dag.node(root).id)
                                                                 if dag.node(root).kind != "source" else set())
              for root in roots}
    for n in stateful:
        spec = n.bound.spec
        if not isinstance(spec, (JoinSpec, WindowSpec, KeyedSpec, *UPDATING)):
            return (f"operator {n.name!r} ({n.op.label()}) is not a window, join, Dedup, TopN, GroupAggregate or "
                    "keyed kernel")
        if not (spec.left.keys if isinstance(spec, JoinSpec) else spec.keys) and not any(
                n.id in stages[nodes[x].name] for x in exchanges) and not combines(n):
            why = two_phase_reason(dag, n) if isinstance(spec, WindowSpec) else "it is not a window"
            return f"operator {n.name!r} ({n.op.label()}) has no key" + (
                f" and cannot run in two phases: {why}" if why else
                " (two_phase=True runs it in every shard, its results combined)")
        if isinstance(spec, UPDATING):
            for fed in (m for m in stateful if n.id in upstream[m.id]):
                reason = _order_free(fed)
                if reason:
                    return (f"the changelog of {n.name!r} ({n.op.label()}) feeds operator {fed.name!r}, which "
                            f"{reason}; key shards deal a changelog's changes out again in another order than one "
                            "executor's (keys interleave by shard)")
    # per stage root, per stateful operator of its stage: the columns that operator groups the root's rows by,
    # and those of them a stateless operator on the way renames or computes (rows cannot be cut by those at the
    # root; a stateful operator on the way keeps the key columns: windows and joins emit them)
    keys, split = {}, set()
    for root in roots:
        rid = dag.node(root).id
        fed = {}
        for n in stateful:
            if n.id not in stages[root]:
                continue
            grouping = source_grouping(dag, n, rid, upstream)
            if grouping is None:
                return f"{_what(dag, root)} reaches both inputs of join {n.name!r}"
            fed[n.id] = grouping
        if not fed:
            keys[root] = ()
            continue
        if not all(by for by, _ in fed.values()):  # operators without a key: their stage runs in shard 0
            if any(by for by, _ in fed.values()):
                return f"the stateful operators of {_what(dag, root)} group by a key and by none"
            keys[root] = ()
            if all(combines(nodes[nid]) for nid in fed):  # or in every shard, in two phases
                split.add(root)
            continue
        first = next(iter(fed.values()))[0]
        common = [k for k in first if all(k in by for by, _ in fed.values())]
        if not common:
            return f"the stateful operators of {_what(dag, root)} share no key column"
        kept = [k for k in common if not any(k in changed for _, changed in fed.values())]
        if not kept:
            nid, (_, changed) = next((nid, g) for nid, g in fed.items() if set(common) & set(g[1]))
            column = next(k for k in common if k in changed)
            return (f"operator {changed[column]!r} renames or computes a key column of {nodes[nid].name!r} "
                    f"({column!r}), so the rows of {_what(dag, root)} cannot be cut by it")
        keys[root] = tuple(kept)
    for n in stateful:  # every root of one operator must cut its rows by the same key columns, in order
        seen = set()
        for root in roots:
            if n.id in stages[root]:
                by, _ = source_grouping(dag, n, dag.node(root).id, upstream)
                seen.add(tuple(by.index(k) for k in keys[root]))
        if len(seen) > 1:
            return f"the sources of operator {n.name!r} share no key column to shard by"
    # a join's or keyed kernel's rows, exchanged between stages (a window's results: as a sink reading them)
    # (a TopN without a key in two phases: its shards' rows carry arrival numbers where the rank goes, so they
    # merge by window end, shard after shard, and are ranked again as they are combined)
    merge = {nodes[nid].name: ("window", "window_end", None, None) if _two_phase(dag, nodes[nid])
             else _boundary_merge(nodes[nid].bound.spec) for nid in boundaries}
    for t in nodes:
        if t.kind != "sink":
            continue
        how = {("one",) if not keys[root] and dag.node(root).kind != "source"  # a stage run by shard 0 alone
               else _sink_merge(dag, t, dag.node(root).id, stages[root], upstream)
               for root in roots if t.id in stages[root]}
        reason = next((h for h in how if isinstance(h, str)), None)
        if reason is not None:
            return reason
        if len(how) > 1:
            return f"sink {t.name!r} receives rows of more than one stage, which are merged in different orders"
        merge[t.name], = how
    combined = frozenset(nodes[nid].name for nid in boundaries if combines(nodes[nid]))
    return ShardPlan(keys, merge, frozenset(split), combined)


def _sink_merge(dag, t, rid: int, stage: set, upstream: dict) -> tuple | str:
    """How the shards' rows of sink ``t`` merge in the stage of root ``rid`` (see :class:`ShardPlan`), or why
    they cannot."""
    nodes = dag.nodes
    (u, port), = t.inputs
    chain = []  # stateless operators with one input between the sink and what feeds them
    while nodes[u].kind == "stateless" and len(nodes[u].inputs) == 1:
        chain.append(nodes[u])
        (u, port), = nodes[u].inputs
    up = nodes[u]
    spec = up.bound.spec if up.kind == "stateful" and u != rid else None  # (a stage's root join: its rows)
    if isinstance(spec, UPDATING):  # a changelog: each key's changes come from the shard owning it
        return ("changes",)
    if isinstance(spec, (JoinSpec, KeyedSpec)) and port is None:  # where the row that emitted each arrived
        return ("arrivals",)
    if spec is not None and port is None and spec.kind != "dedup":
        order = list(_window_merge(spec)[1:])
        for node in reversed(chain):  # the names the ordering columns have at the sink
            order = [None if name is None else _renamed(node, name) or "" for name in order]
        if "" in order:
            return (f"sink {t.name!r} does not receive the window_end, key or rank column of {up.name!r} "
                    "(its results are merged by them)")
        return ("window", *order)
    late = {u} if spec is not None and port is not None else set()  # a window's late rows are input rows
    if any(nodes[a].kind == "stateful" and getattr(nodes[a].bound.spec, "kind", None) != "dedup"
           for a in (upstream[t.id] & stage) - late):
        return (f"sink {t.name!r} reads a window's results through {nodes[u].name!r} (a Dedup or an operator "
                "with more than one input), whose rows the shards cannot put back in one executor's order")
    if _paths(dag, rid, t.id) > 1:
        return f"sink {t.name!r} receives some input rows along more than one path"
    return ("rows",)


def _boundary_merge(spec) -> tuple:
    """How the shards' rows of a boundary node merge: a window's results by window end, key and rank, a
    changelog's shard by shard, a join's or keyed kernel's by where the row that emitted them arrived."""
    if isinstance(spec, WindowSpec):
        return _window_merge(spec)
    return ("changes",) if isinstance(spec, UPDATING) else ("arrivals",)


def _order_free(node) -> str:
    """Why GroupAggregate ``node`` (the only operator the builder lets take a changelog) would not take the
    changes of one call in any order to the same state and changes (empty when it would).

    It folds each row into its key's counts, integer sums, value lists and distinct values, which any order
    of one call's rows leaves the same (a retraction always follows the insert it takes back, in an earlier
    call), and emits once per call; a float sum (rounding follows the order) or an idle-state TTL (a row may
    forget the rows of its call before it) would show the order.
    """
    spec = node.bound.spec
    if spec.ttl:
        return "forgets idle keys (state_ttl)"
    floats = [name for (name, _), kind, is_float in zip(spec.aggs, spec.kinds, spec.floats)
              if is_float and kind in (_SUM, _MEAN)]
    if floats:
        return f"sums floats ({floats[0]!r}: rounding follows the order of the rows)"
    return ""


def _window_merge(spec) -> tuple:
    """``("window", end, key, rank)``: the columns a window's or TopN's results merge by (see :class:`ShardPlan`)."""
    return ("window", "window_end", spec.keys[0] if len(spec.keys) == 1 else None,
            "rank" if spec.kind == "topn" else None)


def _own_outputs(dag, rid: int) -> set:
    """A boundary node and its late sinks: the step before computes them (its late rows are that step's)."""
    return {rid} | {t.id for t in dag.nodes if t.inputs and all(u == rid and (p or "").startswith("late")
                                                                for u, p in t.inputs)}


def _what(dag, root: str) -> str:
    """How a stage root is named in a reason: a source, or a join or keyed kernel whose rows feed stateful
    operators."""
    node = dag.node(root)
    return f"source {root!r}" if node.kind == "source" else f"the rows of {root!r} ({node.op.label()})"


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
