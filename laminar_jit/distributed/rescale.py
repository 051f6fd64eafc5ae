"""Checkpoints moved between one process and partitions: states split by key, or merged.

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
* a source that deals parts round robin (:meth:`Source.part_rows`) is
  read as shards again, worker ``i`` from where the checkpoint's position
  falls in shard ``i``; any other source worker 0 reads on whole
  (``whole_sources``), and a source an earlier run read as ``P`` shards is
  continued shard by shard (by worker ``i``, or by worker 0 when the
  number of partitions differs).

:func:`merge_job` goes the other way, a job's checkpoint as one executor's:
each partition's string dictionaries are merged into one per column (their
values, in order, partition after partition) and every code its states hold
is rewritten through an old -> new map before the states merge as key
shards' do (``absorb``). Where codes are is what the code generator
recorded: each key column's dictionary, and each kept or aggregated string
column's (``Gen.key_dictionaries``, ``Gen.value_dictionaries``). A source
the workers read as shards is continued shard by shard from the readers'
positions (``<source>@shard<i>/<n>`` entries next to the source's total).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..checkpoint import Checkpoint
from ..checkpoint.capture import check_same_dag, load_state
from ..dag.builder import node_fingerprints
from ..errors import CheckpointError
from ..executor.boundary import _to_arrow
from ..executor.codegen import generate
from ..executor.core import MetricsLayout
from ..executor.keyhash import mix_column
from ..executor.steps import boundary_nodes
from ..io.shards import SHARD_POSITION, shard_positions, split_position
from ..kernels.partitioning import HASH_SEED
from ..ops.joins import JoinOperator
from ..state.dictionary import StringDictionary
from ..state.joins import JoinState
from .actors import part_dir, reader_dir
from .plan import COLUMNS_NODE, SplitPlan, split_dag

__all__ = ["merge_job", "partition_checkpoint"]

_WM_MIN = int(np.iinfo(np.int64).min)
_NULL_KEY = _WM_MIN  # a null key column's value in state
_COLUMNS_SUFFIX = COLUMNS_NODE.format("")


def partition_checkpoint(dag, cp: Checkpoint, partitions: int,
                         sources: dict | None = None) -> tuple[list[Checkpoint], list[Checkpoint], list[str]]:
    """Split one executor's checkpoint of ``dag`` into a ``partitions``-way job's.

    Parameters
    ----------
    dag : StreamingDag
        The DAG ``cp`` was taken from.
    cp : Checkpoint
        One executor's checkpoint (``lj.run`` without ``partitions=``, at any ``parallelism``).
    partitions : int
    sources : dict of str to Source, optional
        The run's sources: one that deals parts (:meth:`Source.part_rows`)
        is continued by every worker from its shard's position.

    Returns
    -------
    readers, parts : list of Checkpoint
        Per worker: its reader part's checkpoint (worker 0's holds the
        source positions) and its partition part's.
    whole_sources : list of str
        The sources worker 0 reads whole from here on (the others are read
        as ``partitions`` shards).

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
    # a source read as this many shards before: worker i continues shard i; any other: worker 0 reads it all
    sharded = {name: shards for name in dag.sources
               if (shards := shard_positions(cp.positions, name)) is not None and len(shards) == partitions}
    for name, source in (sources or {}).items():  # read whole so far: each shard's part of the rows read
        if name in cp.positions and shard_positions(cp.positions, name) is None and partitions > 1:
            shards = split_position(source, int(cp.positions[name]), partitions)
            if shards is not None:
                sharded[name] = shards
    whole = sorted(name for name in dag.sources if name in cp.positions and name not in sharded)
    first = {name: cp.positions[name] for name in whole}
    first.update({key: at for key, at in cp.positions.items()
                  if "@shard" in key and key.split("@shard", 1)[0] in whole})  # (their shards', if any)
    readers = [_sub_checkpoint(plan, plan.reader, cp, {}, first=i == 0, sinks=plan.reader_sinks,
                               positions={**(first if i == 0 else {name: 0 for name in whole}),
                                          **{name: shards[i] for name, shards in sharded.items()}})
               for i in range(partitions)]
    parts = [_sub_checkpoint(plan, plan.partition, cp, states[p], first=p == 0, sinks=plan.partition_sinks,
                             positions={})
             for p in range(partitions)]
    return readers, parts, whole


# ----------------------------------------------------------------------------- states

def _split_states(dag, plan: SplitPlan, cp: Checkpoint, partitions: int, key_dicts: dict) -> list[dict]:
    """Per partition: the stateful nodes' snapshots holding the entries of the keys it owns."""
    out: list[dict] = [{} for _ in range(partitions)]
    for node in dag.nodes:
        if node.kind != "stateful":
            continue
        state = load_state(node, cp)
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


# ----------------------------------------------------------------------------- a job's checkpoint as one

def merge_job(dag, root, partitions: int, whole_sources=(), epoch: int | None = None) -> Checkpoint:
    """One executor's checkpoint of ``dag`` from the job checkpoint in directory ``root``.

    Parameters
    ----------
    dag : StreamingDag
    root : path
        A complete ``job-<epoch>`` directory (``reader-<i>/`` and ``part-<i>/``).
    partitions : int
        The job's partitions.
    whole_sources : sequence of str
        Sources worker 0 read whole (its positions are theirs); the others
        were read as ``partitions`` shards.
    epoch : int, optional
        The checkpoint's epoch.

    Returns
    -------
    Checkpoint
        States merged (string codes rewritten to merged dictionaries),
        watermarks the lowest of the workers' (a reader that finished does
        not count), counters and pending rows summed, positions per source
        (and per shard, ``SHARD_POSITION``).

    Raises
    ------
    CheckpointError
        A part is missing, damaged or from another DAG.
    """
    plan = split_dag(dag, partitions)
    readers = [Checkpoint.load(reader_dir(root, i)) for i in range(partitions)]
    parts = [Checkpoint.load(part_dir(root, i)) for i in range(partitions)]
    for cp in readers:
        check_same_dag(plan.reader, cp)
    for cp in parts:
        check_same_dag(plan.partition, cp)
    dictionaries, code_maps = _merged_dictionaries(dag, plan, parts)
    states = _merged_states(dag, plan, parts, code_maps)
    live = [cp for cp in readers if not cp.finished] or readers
    watermarks: dict[str, int] = {}
    for i in dag.execution_ids:
        n = dag.nodes[i]
        held = [cp.watermarks[n.name] for cp in live if n.name in cp.watermarks]
        held += [cp.watermarks[n.name] for cp in parts if n.name in cp.watermarks]
        watermarks[n.name] = min(held) if held else min(
            (watermarks[dag.nodes[u].name] for u, _ in n.inputs), default=_WM_MIN)
    positions: dict[str, int] = {}
    for name in dag.sources:
        if name in whole_sources:  # (worker 0 read it all, maybe as the shards of an earlier run)
            positions.update({key: int(at) for key, at in readers[0].positions.items()
                              if key == name or key.startswith(f"{name}@shard")})
            continue
        shards = [int(cp.positions.get(name, 0)) for cp in readers]
        positions[name] = sum(shards)
        positions.update({SHARD_POSITION.format(name, i, partitions): p for i, p in enumerate(shards)})
    pending = {}
    for sink in dag.sinks:
        tables = [cp.pending[sink] for cp in [*readers, *parts] if sink in cp.pending]
        if tables:
            pending[sink] = pa.concat_tables(tables)
    return Checkpoint(
        dag_fingerprint=dag.fingerprint,
        node_fingerprints=node_fingerprints(dag.nodes, dag._order_ids),
        states=states,
        dictionaries=dictionaries,
        pending=pending,
        watermarks=watermarks,
        idle=[n for n in dag.sources if all(n in cp.idle for cp in live)],
        metrics=_summed_metrics(plan, readers, parts),
        finished=all(cp.finished for cp in readers) and all(cp.finished for cp in parts),
        positions=positions,
        epoch=epoch,
    )


def _value_dictionaries(dag) -> dict:
    """Per stateful node id: where its state holds string codes besides its keys, and of which dictionary."""
    out: dict = {}
    for root in _roots(dag):
        for nid, places in generate(dag, root).value_dictionaries.items():
            out.setdefault(nid, {}).update(places)
    return out


def _merged_dictionaries(dag, plan: SplitPlan, parts: list[Checkpoint]) -> tuple[dict, list[dict]]:
    """The whole DAG's dictionaries merged from the partitions', and per partition its old -> new code maps.

    Dictionaries one executor links (both sides of a string join key) merge as one.
    """
    groups: dict[str, str] = {}  # whole dictionary -> its link group's first
    for root in _roots(dag):
        for group in generate(dag, root).shared_dictionaries:
            names = ["/".join(key) for key in group]
            first = groups.get(names[0], names[0])
            for name in names:
                groups.setdefault(name, first)
    wanted = ["/".join(key) for key in _encoded(dag)]
    sources: dict[str, list] = {}  # group -> [(partition, its dictionary's name)]
    for p, cp in enumerate(parts):
        for key in cp.dictionaries:
            step, column = key.rsplit("/", 1)
            whole = _whole_dictionary(dag, plan, step, column)
            if whole is not None:
                sources.setdefault(groups.get(whole, whole), []).append((p, key))
    merged: dict[str, pa.Array] = {}
    maps: list[dict] = [{} for _ in parts]
    for group, held in sources.items():
        arrays = [parts[p].dictionaries[key] for p, key in held]
        value_type = arrays[0].type
        values = pc.unique(pa.concat_arrays([a.cast(value_type) for a in arrays])) if arrays else pa.array([])
        merged[group] = values
        for (p, key), a in zip(held, arrays):
            maps[p][key] = pc.index_in(a.cast(value_type), value_set=values).to_numpy(zero_copy_only=False).astype(
                np.int64)
    out = {}
    for name in wanted:
        values = merged.get(groups.get(name, name))
        if values is None:  # no partition reads it (a reader-part column): empty
            values = next(iter(merged.values()), pa.array([], pa.string()))[:0]
        out[name] = values
    return out, maps


def _merged_states(dag, plan: SplitPlan, parts: list[Checkpoint], code_maps: list[dict]) -> dict:
    """Every stateful node's entries of all partitions, their string codes those of the merged dictionaries."""
    part_dag = plan.partition
    key_dicts, value_dicts = _key_dictionaries(part_dag), _value_dictionaries(part_dag)
    states = {}
    for node in dag.nodes:
        if node.kind != "stateful":
            continue
        pnode = part_dag.node(node.name)
        joined = isinstance(node.op, JoinOperator)
        origins = key_dicts.get((pnode.id, "left") if joined else pnode.id, [])
        merged = node.op.new_state(node.bound)
        for p, cp in enumerate(parts):
            state = load_state(pnode, cp, f"partition {p}'s checkpoint")
            maps = code_maps[p]

            def code_map(origin):
                if origin is None:
                    return None
                key = "/".join(origin)
                if key not in maps:
                    raise CheckpointError(f"node {node.name!r} holds codes of the string dictionary {key!r}, which "
                                          f"partition {p}'s checkpoint lacks or the DAG cannot place")
                return maps[key]

            state.recode([code_map(o) for o in origins],
                         {place: code_map(o) for place, o in value_dicts.get(pnode.id, {}).items()})
            slots = (state.keyed_slots() if joined else state.table.live_slots()).astype(np.int64)
            merged.absorb(state, slots, **({"unkeyed": True} if joined else {}))
        states[node.name] = merged.snapshot()
    return states


def _summed_metrics(plan: SplitPlan, readers: list[Checkpoint], parts: list[Checkpoint]) -> dict:
    """The whole DAG's counters: per node the sum over the workers running it, global ones summed."""
    dag = plan.dag
    layout = MetricsLayout(len(dag.nodes))
    counters = np.zeros(layout.size, np.int64)
    exchanged = {x.node for x in plan.exchanges}
    per_node = len(MetricsLayout.PER_NODE)
    for sub, cps in ((plan.reader, readers), (plan.partition, parts)):
        sub_layout = MetricsLayout(len(sub.nodes))
        for cp in cps:
            have = np.asarray(cp.metrics.get("counters", []), np.int64)
            if have.size != sub_layout.size:
                raise CheckpointError(f"a worker's checkpoint holds {have.size} counters, expected {sub_layout.size}")
            for n in sub.nodes:
                if n.name not in dag.execution_order or (sub is plan.partition and n.name in exchanged):
                    continue
                w = dag.node(n.name)
                for k in MetricsLayout.PER_NODE:
                    counters[layout.index(k, w.id)] += have[sub_layout.index(k, n.id)]
            counters[per_node * len(dag.nodes):] += have[per_node * len(sub.nodes):]
    return {"counters": counters.tolist(), "events_in": sum(int(cp.metrics.get("events_in", 0)) for cp in readers),
            "batches": sum(int(cp.metrics.get("batches", 0)) for cp in readers)}
