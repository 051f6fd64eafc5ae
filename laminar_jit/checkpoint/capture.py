"""Taking a :class:`Checkpoint` from an executor and putting one back.

Both work on the executor's :class:`~laminar_jit.executor.state.ExecutorState`
(``ex.state``) and its DAG, never on the executor itself, so this package does
not import the executor (the executor imports it).
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from ..dag.builder import node_fingerprints
from ..errors import CheckpointError
from ..state.dictionary import StringDictionary
from .snapshot import Checkpoint

__all__ = ["capture", "check_same_dag", "load_state", "restore"]


def capture(dag, state, operator_states: dict | None = None) -> Checkpoint:
    """Snapshot every piece of an executor's state as a :class:`Checkpoint`.

    Parameters
    ----------
    dag : StreamingDag
        The DAG the executor runs.
    state : ExecutorState
        The executor's state (``ex.state``), its queue already run (an empty
        ``state.queued``). Sink buffers are coalesced; nothing else changes.
    operator_states : dict of int to state, optional
        The operator states to save instead of ``state.operator_states`` (a
        sharded executor's shards merged into one executor's states).

    Returns
    -------
    Checkpoint
        Copies of the operator states, dictionaries, watermarks, idle flags,
        metrics, finished flag and the sink outputs not yet taken.
    """
    pending = {}
    for sink, buffer in state.outputs.items():
        buffer.flush()
        if buffer.batches:
            pending[sink] = pa.Table.from_batches(buffer.batches, schema=buffer.layout.schema)
    m = state.metrics
    return Checkpoint(
        dag_fingerprint=dag.fingerprint,
        node_fingerprints=node_fingerprints(dag.nodes, dag._order_ids),
        states={dag.node(nid).name: s.snapshot()
                for nid, s in (state.operator_states if operator_states is None else operator_states).items()},
        dictionaries={f"{source}/{column}": d.snapshot() for (source, column), d in state.dictionaries.items()},
        pending=pending,
        watermarks={n.name: int(state.watermarks[n.id]) for n in dag.nodes},
        idle=[n.name for n in dag.nodes if state.idle[n.id]],
        metrics={"counters": m.counters.tolist(), "events_in": m.events_in, "batches": m.batches},
        finished=state.finished,
    )


def restore(dag, state, cp: Checkpoint) -> None:
    """Replace all of an executor's state by ``cp``; validate everything before changing anything.

    Parameters
    ----------
    dag : StreamingDag
        The DAG the executor runs; it must be the one ``cp`` was taken from.
    state : ExecutorState
        The executor's state (``ex.state``), updated in place: queued batches
        and sink outputs are dropped for those of ``cp``, and the broken flag
        is cleared.
    cp : Checkpoint

    Raises
    ------
    TypeError
        ``cp`` is not a :class:`Checkpoint`.
    CheckpointError
        ``cp`` comes from a different DAG or does not fit it; ``state`` is unchanged then.
    """
    if not isinstance(cp, Checkpoint):
        raise TypeError(f"restore() takes a laminar_jit.Checkpoint, got {type(cp).__name__}; "
                        "read one from disk with lj.Checkpoint.load(path)")
    check_same_dag(dag, cp)
    operator_states = {node.id: load_state(node, cp) for node in dag.nodes if node.kind == "stateful"}
    dicts = {}
    for (source, column), current in state.dictionaries.items():
        key = f"{source}/{column}"
        if key not in cp.dictionaries:
            raise CheckpointError(f"checkpoint has no string dictionary for column {column!r} of source "
                                  f"{source!r}; restore onto the DAG the checkpoint was taken from")
        try:
            dicts[(source, column)] = StringDictionary.from_snapshot(cp.dictionaries[key], current.value_type,
                                                                     current.carried)
        except (ValueError, TypeError, pa.ArrowException) as e:
            raise CheckpointError(f"string dictionary of {key!r} in the checkpoint is invalid: {e}") from e
    for key, first in state.linked_dictionaries().items():
        # linked columns share one dictionary: a checkpoint that holds two different ones for them was taken
        # by an executor that did not share it, and the codes in its states would not read the same here
        mine, theirs = cp.dictionaries[f"{key[0]}/{key[1]}"], cp.dictionaries[f"{first[0]}/{first[1]}"]
        if mine is not theirs and not mine.equals(theirs):
            raise CheckpointError(f"checkpoint holds different string dictionaries for columns {key!r} and "
                                  f"{first!r}, which this executor shares (it passes codes of one to the other or "
                                  "compares them); the checkpoint was written by another laminar_jit version: "
                                  "restore it with that version")
    missing = sorted(n.name for n in dag.nodes if n.name not in cp.watermarks)
    if missing:
        raise CheckpointError(f"checkpoint has no watermark for nodes {missing}")
    counters = np.asarray(cp.metrics.get("counters", []), dtype=np.int64)
    if counters.shape != state.metrics.counters.shape:
        raise CheckpointError(f"checkpoint holds {counters.size} metric counters, this executor "
                              f"{state.metrics.counters.size}; it was written by another laminar_jit version")
    for sink, table in cp.pending.items():
        if sink not in state.outputs:
            raise CheckpointError(f"checkpoint holds pending rows of sink {sink!r}, which this DAG lacks")
        expected = state.outputs[sink].layout.schema
        if not table.schema.equals(expected):
            raise CheckpointError(f"pending rows of sink {sink!r} have schema {table.schema}, expected {expected}")
    unknown_idle = sorted(set(cp.idle) - {n.name for n in dag.nodes})
    if unknown_idle:
        raise CheckpointError(f"checkpoint marks unknown nodes idle: {unknown_idle}")

    # Everything is valid: install it.
    state.take_queued()
    state.operator_states = operator_states
    state.replace_dictionaries(dicts)  # in place, re-linking those shared by both sides of string join keys
    for n in dag.nodes:
        state.watermarks[n.id] = cp.watermarks[n.name]
        state.idle[n.id] = n.name in cp.idle
    state.metrics.counters = counters.copy()
    state.metrics.events_in = int(cp.metrics.get("events_in", 0))
    state.metrics.batches = int(cp.metrics.get("batches", 0))
    for sink, buffer in state.outputs.items():
        buffer.drain()
        if sink in cp.pending:
            buffer.batches = cp.pending[sink].combine_chunks().to_batches()
    state.finished = cp.finished
    now = time.monotonic()
    state.last_input = {name: now for name in state.last_input}
    state.broken = None  # the state is whole again


def load_state(node, cp: Checkpoint, whose: str = "checkpoint"):
    """A fresh state of stateful ``node`` holding what ``cp`` saved of it.

    Raises
    ------
    CheckpointError
        ``cp`` holds no state of the node, or one that does not fit it (``whose``
        names the checkpoint in the message).
    """
    fresh = node.op.new_state(node.bound)
    try:
        fresh.load_snapshot(cp.states[node.name])
    except (KeyError, ValueError) as e:
        detail = "no state saved for it" if isinstance(e, KeyError) else str(e)
        raise CheckpointError(f"{whose} does not fit node {node.name!r}: {detail}; restore onto the DAG "
                              "the checkpoint was taken from") from e
    return fresh


def check_same_dag(dag, cp: Checkpoint) -> None:
    """Raise :class:`CheckpointError` naming the nodes that differ when ``cp`` was not taken from ``dag``."""
    current = node_fingerprints(dag.nodes, dag._order_ids)
    saved = cp.node_fingerprints
    new = [n for n in current if n not in saved]
    gone = [n for n in saved if n not in current]
    changed = [n for n in current if n in saved and None not in (current[n], saved[n]) and current[n] != saved[n]]
    if new or gone or changed:
        parts = []
        if changed:
            parts.append(f"changed (kind, configuration, kernel code or inputs): {changed}")
        if new:
            parts.append(f"not in the checkpoint: {new}")
        if gone:
            parts.append(f"in the checkpoint but not in this DAG: {gone}")
        raise CheckpointError("the checkpoint was taken from a different DAG — nodes " + "; ".join(parts)
                              + ". Restore onto the DAG it was taken from, or start without the checkpoint")
