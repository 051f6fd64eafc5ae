"""Where steps begin and end: the nodes whose rows leave a step as a batch, and the nodes each step runs.

One executor runs one compiled step per source, and a step of its own for each
*boundary node* (:func:`boundary_nodes`); key shards add the boundaries of
their exchanges (``sharded=True``). :func:`plan_nodes` lists what one step
runs; the code generator, the plan compiler, the shard planner and the fault
checks all ask here.
"""

from __future__ import annotations

import pyarrow as pa

from .._types import is_kernel_type
from ..ops.group import GroupSpec
from ..ops.keyed import KeyedSpec
from ..ops.ranked import RankedSpec
from ..ops.stateless import ArrowMap
from ..ops.windows import WindowSpec

__all__ = ["COMBINED_AGGREGATES", "ancestors", "boundary_nodes", "plan_nodes", "two_phase", "two_phase_reason"]

#: Aggregates whose per-shard results combine into one executor's exactly: counts add, integer sums add,
#: minima and maxima compare (a float sum is left out: its rounding follows the order of the rows).
COMBINED_AGGREGATES = ("count", "sum", "min", "max")


def boundary_nodes(dag, sharded: bool = False) -> set[int]:
    """Nodes whose rows leave the step that computes them as a batch, and run through a step of their own.

    Three kinds:

    * joins whose output reaches a stateful operator. A join emits any number
      of rows per call, and stateful operators size their state before a call
      from the rows that can reach them;
    * the input of an :class:`~laminar_jit.ArrowMap` that reads rows the
      engine computed (a window's or aggregate's results, a Map's output, a
      join's or a union's rows). An ArrowMap runs on whole Arrow columns, so
      those rows are materialized first, and its columns are computed from
      that batch before the next step runs;
    * operators that run between steps (``between_steps``: an
      :class:`~laminar_jit.OverAggregate`): the step materializes their
      input rows, each with its watermark, and the executor hands the batch
      to the operator's state; what it emits is the next step's input.

    The next step's input is the boundary node (it is that step's "source").

    ``sharded`` adds the boundaries of key shards' plans: keyed kernels and
    updating operators (a changelog's) whose rows reach a stateful operator,
    and windows (or windowed TopNs)
    whose results reach one not grouped by all of the window's key columns
    (another key, or none). Their rows leave the step as a join's do, so the
    shards can deal them out again by the key of the operators they feed (an
    exchange). They carry the node's watermark from before the step (or
    piece), in the step and in the next alike. So does a window without a key
    that key shards may run in two phases (:func:`two_phase`): its shards'
    partial results are combined between the two steps.
    """
    found = {node.id for node in dag.nodes if getattr(node.op, "between_steps", False)
             or (getattr(node.op, "ports", None) is not None
                 or sharded and isinstance(getattr(node.bound, "spec", None), (KeyedSpec, GroupSpec, RankedSpec)))
             and _feeds_stateful(dag, node.id)}
    if sharded:
        found |= {node.id for node in dag.nodes if _rekeyed(dag, node) or two_phase(dag, node)}
    for nid in dag.execution_ids:  # (upstream first: an ArrowMap may read the rows of a boundary before it)
        node = dag.nodes[nid]
        if isinstance(node.op, ArrowMap) and not _reads_batch_columns(dag, node, found):
            (u, _), = node.inputs
            found.add(u)
    return found


def two_phase(dag, node) -> bool:
    """Whether key shards run stateful ``node`` in two phases (see :func:`two_phase_reason`)."""
    return node.kind == "stateful" and isinstance(getattr(node.bound, "spec", None), WindowSpec) \
        and not node.bound.spec.keys and two_phase_reason(dag, node) == ""


def two_phase_reason(dag, node) -> str:
    """Why key shards cannot run window ``node`` (one without a key) in two phases; empty when they can.

    Two phases (Flink's local-global aggregation): every shard aggregates
    its share of each batch's rows (dealt by position, not by key) into
    windows of its own, and when a window fires, the shards' results are
    combined into the window's one row before anything downstream sees it.
    That gives one executor's results when the window is tumbling or
    sliding, its aggregates are counts, integer sums, minima or maxima
    (:data:`COMBINED_AGGREGATES`), and its rows come from sources through
    stateless operators only (so every shard sees every row's watermark).
    A windowed TopN combines too: each shard keeps its share's best rows of
    a window (a row among the best of all is among the best of its share),
    numbered by their place in the input, and the shards' rows of a window
    are ranked again as it fires (:func:`.partials.combine_topn`).
    """
    spec = node.bound.spec
    if spec.kind not in ("tumbling", "sliding", "topn"):
        return f"it is a {spec.kind} without a key"
    schema = node.bound.input_schema
    for name, agg in spec.aggs:
        if agg.kind not in COMBINED_AGGREGATES or getattr(agg, "user", None) is not None:
            return f"its aggregate {name!r} ({agg!r}) does not combine from per-shard results"
        t = schema.field(agg.column).type if agg.column is not None else None
        if t is not None and agg.kind != "count" and not (
                pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t)
                or (agg.kind != "sum" and pa.types.is_floating(t))):
            return (f"its aggregate {name!r} ({agg!r}) is over a {t} column"
                    + (" (a float sum's rounding follows the order of the rows)" if pa.types.is_floating(t) else ""))
    if any(dag.nodes[a].kind != "source" and dag.nodes[a].kind != "stateless" for a in ancestors(dag, node.id)):
        return "its rows come from another stateful operator"
    return ""


def _rekeyed(dag, node) -> bool:
    """Whether ``node`` is a window (or windowed TopN) whose results reach, through stateless operators, a
    stateful operator other than a join that does not group by every key column of the window."""
    spec = getattr(node.bound, "spec", None)
    if node.kind != "stateful" or not isinstance(spec, WindowSpec) or spec.kind == "dedup":
        return False
    stack, seen = [node.id], set()
    while stack:
        u = stack.pop()
        for t in map(int, dag.routing.targets_of(u)):
            target = dag.nodes[t]
            if t in seen or any(v == u and (p or "").startswith("late") for v, p in target.inputs):
                continue
            seen.add(t)
            if target.kind == "stateless":
                stack.append(t)
            elif target.kind == "stateful" and getattr(target.op, "ports", None) is None \
                    and not set(spec.keys) <= set(target.bound.spec.keys):
                return True
    return False


def _feeds_stateful(dag, nid: int) -> bool:
    """Whether a stateful operator is downstream of node ``nid``."""
    stack, seen = [int(t) for t in dag.routing.targets_of(nid)], set()
    while stack:
        t = stack.pop()
        if t not in seen:
            seen.add(t)
            if dag.nodes[t].kind == "stateful":
                return True
            stack += [int(x) for x in dag.routing.targets_of(t)]
    return False


def _reads_batch_columns(dag, node, roots: set) -> bool:
    """Whether every column ArrowMap ``node`` reads is a column of the batch a step takes: of a source or a
    boundary node in ``roots``, through Filters, Projects and operators that do not write it."""
    for column in node.bound.reads:
        (u, _), = node.inputs
        while u not in roots and dag.nodes[u].kind == "stateless" and len(dag.nodes[u].inputs) == 1:
            up = dag.nodes[u]
            written = dict(up.bound.writes).get(column)
            if written is not None:  # an ArrowMap's string is a column of the batch as well
                if isinstance(up.op, ArrowMap) and not is_kernel_type(written) \
                        and _reads_batch_columns(dag, up, roots):
                    break
                return False
            if up.bound.mapping is not None:
                column = dict(up.bound.mapping).get(column)
                if column is None:
                    return False
            (u, _), = up.inputs
        else:
            if u not in roots and dag.nodes[u].kind != "source":
                return False
    return True


def plan_nodes(dag, root: str, sharded: bool = False) -> list[int]:
    """Ids one step runs, in execution order: reachable from ``root`` (a source or
    a boundary node) without passing through another boundary node (those are
    included, and their late sinks: their output leaves the step); ``sharded``:
    a key shard's step (see :func:`boundary_nodes`)."""
    start = dag.node(root).id
    stops = boundary_nodes(dag, sharded) - {start}
    seen, stack = {start}, [start]
    while stack:
        u = stack.pop()
        for t in dag.routing.targets_of(u):
            t = int(t)
            if u in stops and not any(v == u and (p or "").startswith("late") for v, p in dag.nodes[t].inputs):
                continue  # past a boundary node only its late sinks (its late rows are this step's)
            if t not in seen:
                seen.add(t)
                stack.append(t)
    return [i for i in dag.execution_ids if i in seen]


def ancestors(dag, nid: int) -> set[int]:
    """Ids of the nodes upstream of node ``nid`` (every node with a path to it)."""
    seen, stack = set(), [nid]
    while stack:
        for u, _ in dag.nodes[stack.pop()].inputs:
            if u not in seen:
                seen.add(u)
                stack.append(u)
    return seen
