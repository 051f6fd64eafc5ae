"""A one-process checkpoint as a partitioned job's: each partition gets the keys it owns.

:func:`partition_checkpoint` takes what :func:`laminar_jit.run` saved (one
executor's :class:`~laminar_jit.Checkpoint` of the whole DAG, with source
positions) and returns, per partition of a run with ``partitions=P``, the
checkpoint of its reader part and of its partition part (see
:mod:`.plan`), as the workers of :mod:`.actors` restore them:

* every keyed state entry goes to the partition its key hashes to, as the
  exchange deals rows (:func:`~.exchange.partition_batch`): the entry's key
  columns are rebuilt as Arrow arrays (strings decoded by the checkpoint's
  dictionaries) and hashed like rows; a join's rows without a key (which
  never match) go to partition 0;
* every partition keeps the whole string dictionaries its keys and rows are
  codes of (under the names of its own steps), so codes stay valid;
* watermarks are the checkpoint's (a node the whole DAG lacks, such as an
  exchange's projection or sink, takes its input's); counters and pending
  sink rows go to worker 0, so the job's totals are the checkpoint's;
* the reader of worker 0 continues every source from the checkpoint's
  position, reading it whole (``whole_sources``): positions count the rows
  of the source, not of a shard, so the other readers read nothing of it.

Only this direction is built: a partitioned job's checkpoint holds one
string dictionary per partition, and the codes inside its states would have
to be rewritten to merge them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..checkpoint import Checkpoint
from ..checkpoint.capture import check_same_dag
from ..dag.builder import node_fingerprints
from ..errors import CheckpointError
from ..executor.boundary import _to_arrow
from ..executor.codegen import generate
from ..executor.core import MetricsLayout
from ..executor.keyhash import mix_column
from ..executor.steps import boundary_nodes
from ..kernels.partitioning import HASH_SEED
from ..ops.joins import JoinOperator
from ..state.dictionary import StringDictionary
from ..state.joins import JoinState
from .plan import COLUMNS_NODE, SplitPlan, split_dag

__all__ = ["partition_checkpoint"]

_WM_MIN = int(np.iinfo(np.int64).min)
_NULL_KEY = _WM_MIN  # a null key column's value in state
_COLUMNS_SUFFIX = COLUMNS_NODE.format("")


def partition_checkpoint(dag, cp: Checkpoint, partitions: int) -> tuple[list[Checkpoint], list[Checkpoint], list[str]]:
    """Split one executor's checkpoint of ``dag`` into a ``partitions``-way job's.

    Parameters
    ----------
    dag : StreamingDag
        The DAG ``cp`` was taken from.
    cp : Checkpoint
        One executor's checkpoint (``lj.run`` without ``partitions=``, at any ``parallelism``).
    partitions : int

    Returns
    -------
    readers, parts : list of Checkpoint
        Per worker: its reader part's checkpoint (worker 0's holds the
        source positions) and its partition part's.
    whole_sources : list of str
        The sources worker 0 reads whole from here on.

    Raises
    ------
    CheckpointError
        ``cp`` comes from another DAG, or a state or dictionary cannot be
        placed (the message names the node or column).
    """
    check_same_dag(dag, cp)
    plan = split_dag(dag, partitions)
    whole_keys = _key_dictionaries(dag)
    states = _split_states(dag, plan, cp, partitions, whole_keys)
    readers = [_sub_checkpoint(plan, plan.reader, cp, {}, first=i == 0, sinks=plan.reader_sinks,
                               positions=cp.positions if i == 0 else {name: 0 for name in cp.positions})
               for i in range(partitions)]
    parts = [_sub_checkpoint(plan, plan.partition, cp, states[p], first=p == 0, sinks=plan.partition_sinks,
                             positions={})
             for p in range(partitions)]
    return readers, parts, sorted(cp.positions)


# ----------------------------------------------------------------------------- states

def _split_states(dag, plan: SplitPlan, cp: Checkpoint, partitions: int, key_dicts: dict) -> list[dict]:
    """Per partition: the stateful nodes' snapshots holding the entries of the keys it owns."""
    out: list[dict] = [{} for _ in range(partitions)]
    for node in dag.nodes:
        if node.kind != "stateful":
            continue
        state = node.op.new_state(node.bound)
        try:
            state.load_snapshot(cp.states[node.name])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint does not fit node {node.name!r}: {e}") from e
        if not hasattr(state, "absorb"):
            raise CheckpointError(f"node {node.name!r} ({node.op.label()}): its state cannot be split by key, so "
                                  "a checkpoint holding it resumes only in one process (without partitions=)")
        joined = isinstance(state, JoinState)
        slots = (state.keyed_slots() if joined else state.table.live_slots()).astype(np.int64)
        if partitions == 1:
            owner = np.zeros(slots.size, np.int64)
        else:
            owner = _owners(dag, node, state, slots, plan.node_keys[node.name], key_dicts, cp, partitions)
        pnode = plan.partition.node(node.name)
        for p in range(partitions):
            part = pnode.op.new_state(pnode.bound)
            extra = {"unkeyed": p == 0} if joined else {}  # rows without a key never match: any partition
            part.absorb(state, slots[owner == p], **extra)
            out[p][node.name] = part.snapshot()
    return out


def _owners(dag, node, state, slots: np.ndarray, by: tuple, key_dicts: dict, cp: Checkpoint,
            partitions: int) -> np.ndarray:
    """The partition of each entry ``slots``: its ``by`` key columns hashed as the exchange hashes rows."""
    joined = isinstance(node.op, JoinOperator)
    spec = node.bound.spec
    keys = tuple(spec.port("left").keys) if joined else tuple(spec.keys)
    origins = key_dicts.get((node.id, "left") if joined else node.id)
    if origins is None:
        raise CheckpointError(f"node {node.name!r}: no step of the DAG reads its keys")
    schema = _input_schema(dag, node)
    columns = state.key_columns(state.table.keys[slots, 0])
    acc = np.full(slots.size, HASH_SEED, np.uint64)
    for name in by:
        j = keys.index(name)
        values = columns[j]
        valid = values != _NULL_KEY
        if origins[j] is not None:
            key = "/".join(origins[j])
            if key not in cp.dictionaries:
                raise CheckpointError(f"checkpoint has no string dictionary {key!r} for key {name!r} of node "
                                      f"{node.name!r}")
            arr = StringDictionary.from_snapshot(cp.dictionaries[key]).decode(np.where(valid, values, 0), valid)
        else:
            arr = _to_arrow(values, valid, schema.field(name).type)
        mix_column(acc, arr)
    return ((((acc >> np.uint64(32)) * np.uint64(partitions)) >> np.uint64(32))).astype(np.int64)


def _input_schema(dag, node) -> pa.Schema:
    """The schema of a node's input (a join's left input)."""
    ups = [u for u, port in node.inputs if port in (None, "left")]
    return dag.nodes[ups[0]].schema


# ----------------------------------------------------------------------------- what the steps encode

def _roots(dag) -> list[str]:
    """Names of the nodes each step starts at: the sources and the boundary nodes (see the executor)."""
    return list(dag.sources) + [dag.nodes[i].name for i in sorted(boundary_nodes(dag), key=dag.execution_ids.index)]


def _key_dictionaries(dag) -> dict:
    """Per keyed node (a join: per ``(id, port)``): each key column's ``(step, column)`` dictionary or None."""
    out: dict = {}
    for root in _roots(dag):
        out.update(generate(dag, root).key_dictionaries)
    return out


def _encoded(dag) -> list[tuple[str, str]]:
    """The ``(step, column)`` string dictionaries an executor of ``dag`` keeps (as the executor makes them)."""
    out = []
    for root in _roots(dag):
        gen = generate(dag, root)
        out += [(root, name) for name in gen.src_args if name in gen.encoded]
    return out


def _whole_dictionary(dag, plan: SplitPlan, step: str, column: str) -> str | None:
    """The whole DAG's dictionary (``"step/column"``) of a part's ``(step, column)`` dictionary.

    A part's step starts at a source of the whole DAG, an exchange stream (a node of the whole DAG, or its
    ``@columns`` projection) or a boundary node. From there the column is followed up through stateless
    operators (and their renames) to a step of the whole DAG.
    """
    roots = set(_roots(dag))
    name = step[: -len(_COLUMNS_SUFFIX)] if step.endswith(_COLUMNS_SUFFIX) else step
    node = dag.node(name)
    while node.name not in roots:
        if node.kind != "stateless" or len(node.inputs) != 1:
            return None
        mapping = node.bound.mapping
        if mapping is not None:
            column = dict(mapping).get(column)
            if column is None:
                return None
        node = dag.nodes[node.inputs[0][0]]
    return f"{node.name}/{column}"


# ----------------------------------------------------------------------------- one part's checkpoint

def _sub_checkpoint(plan: SplitPlan, sub, cp: Checkpoint, states: dict, first: bool, sinks: tuple,
                    positions: dict) -> Checkpoint:
    """A part's checkpoint: ``states``, the whole dictionaries it reads, watermarks, and (``first``) counters."""
    dag = plan.dag
    dictionaries = {}
    for step, column in _encoded(sub):
        key = _whole_dictionary(dag, plan, step, column)
        if key is None or key not in cp.dictionaries:
            raise CheckpointError(f"the string column {column!r} read by step {step!r} of a partition has no "
                                  f"dictionary in the checkpoint (looked for {key!r}); resume it without partitions=")
        dictionaries[f"{step}/{column}"] = cp.dictionaries[key]
    watermarks: dict[str, int] = {}
    for i in sub.execution_ids:
        n = sub.nodes[i]
        whole = _whole_name(plan, n.name)
        if whole is not None and whole in cp.watermarks:
            watermarks[n.name] = cp.watermarks[whole]
        else:  # an exchange's projection or sink: its input's
            watermarks[n.name] = min((watermarks[sub.nodes[u].name] for u, _ in n.inputs), default=_WM_MIN)
    return Checkpoint(
        dag_fingerprint=sub.fingerprint,
        node_fingerprints=node_fingerprints(sub.nodes, sub._order_ids),
        states=states,
        dictionaries=dictionaries,
        pending={s: t for s, t in cp.pending.items() if s in sinks} if first else {},
        watermarks=watermarks,
        idle=[n.name for n in sub.nodes if n.kind == "source" and n.name in cp.idle],
        metrics=_metrics(plan, sub, cp, first),
        finished=cp.finished,
        positions=positions,
        epoch=cp.epoch,
    )


def _whole_name(plan: SplitPlan, name: str) -> str | None:
    """The whole DAG's node a part's node stands for (an exchange's projection: the node it projects)."""
    if name.endswith(_COLUMNS_SUFFIX):
        name = name[: -len(_COLUMNS_SUFFIX)]
    return name if name in plan.dag.execution_order else None  # (not an exchange's sink)


def _metrics(plan: SplitPlan, sub, cp: Checkpoint, first: bool) -> dict:
    """Counters of a part: the whole's of the nodes it runs (worker 0), nothing elsewhere.

    The partition part's exchange sources stand for reader-part nodes, whose counters worker 0's reader
    holds; the global counters and the rows in go to worker 0's reader.
    """
    dag = plan.dag
    whole_layout, layout = MetricsLayout(len(dag.nodes)), MetricsLayout(len(sub.nodes))
    whole = np.asarray(cp.metrics.get("counters", []), np.int64)
    counters = np.zeros(layout.size, np.int64)
    reader = sub is plan.reader
    if first and whole.size == whole_layout.size:
        exchanged = {x.node for x in plan.exchanges}
        names = set(dag.execution_order)
        for n in sub.nodes:
            if n.name not in names or (n.name in exchanged and not reader):  # (a node only the part has)
                continue
            w = dag.node(n.name)
            for k in MetricsLayout.PER_NODE:
                counters[layout.index(k, n.id)] = whole[whole_layout.index(k, w.id)]
        if reader:
            tail = len(MetricsLayout.PER_NODE) * len(dag.nodes)
            counters[len(MetricsLayout.PER_NODE) * len(sub.nodes):] = whole[tail:]
    own = first and reader
    return {"counters": counters.tolist(), "events_in": int(cp.metrics.get("events_in", 0)) if own else 0,
            "batches": int(cp.metrics.get("batches", 0)) if own else 0}
