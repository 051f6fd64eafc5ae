"""Taking a :class:`Checkpoint` from an executor and putting one back."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from ..dag.builder import node_fingerprints
from ..errors import CheckpointError
from ..state.dictionary import StringDictionary
from .snapshot import Checkpoint

__all__ = ["capture", "restore"]


def capture(ex) -> Checkpoint:
    """Snapshot every piece of ``ex``'s state (the executor has flushed its queue)."""
    dag = ex.dag
    pending = {}
    for sink, buffer in ex._outputs.items():
        buffer.flush()
        if buffer.batches:
            pending[sink] = pa.Table.from_batches(buffer.batches, schema=buffer.layout.schema)
    m = ex._metrics
    return Checkpoint(
        dag_fingerprint=dag.fingerprint,
        node_fingerprints=node_fingerprints(dag.nodes, dag._order_ids),
        states={dag.node(nid).name: state.snapshot() for nid, state in ex._states.items()},
        dictionaries={f"{source}/{column}": d.snapshot() for (source, column), d in ex._dicts.items()},
        pending=pending,
        watermarks={n.name: int(ex._wm[n.id]) for n in dag.nodes},
        idle=[n.name for n in dag.nodes if ex._idle[n.id]],
        metrics={"counters": ex._metrics.counters.tolist(), "events_in": m.events_in, "batches": m.batches},
        finished=ex._finished,
    )


def restore(ex, cp: Checkpoint) -> None:
    """Replace all of ``ex``'s state by ``cp``; validate everything before changing anything."""
    if not isinstance(cp, Checkpoint):
        raise TypeError(f"restore() takes a laminar_jit.Checkpoint, got {type(cp).__name__}; "
                        "read one from disk with lj.Checkpoint.load(path)")
    dag = ex.dag
    _check_same_dag(dag, cp)
    states = {}
    for nid in ex._states:
        node = dag.node(nid)
        state = node.op.new_state(node.bound)
        try:
            state.load_snapshot(cp.states[node.name])
        except (KeyError, ValueError) as e:
            detail = "no state saved for it" if isinstance(e, KeyError) else str(e)
            raise CheckpointError(f"checkpoint does not fit node {node.name!r}: {detail}; restore onto the DAG "
                                  "the checkpoint was taken from") from e
        states[nid] = state
    dicts = {}
    for (source, column), current in ex._dicts.items():
        key = f"{source}/{column}"
        if key not in cp.dictionaries:
            raise CheckpointError(f"checkpoint has no string dictionary for column {column!r} of source "
                                  f"{source!r}; restore onto the DAG the checkpoint was taken from")
        try:
            dicts[(source, column)] = StringDictionary.from_snapshot(cp.dictionaries[key], current.value_type)
        except (ValueError, TypeError, pa.ArrowException) as e:
            raise CheckpointError(f"string dictionary of {key!r} in the checkpoint is invalid: {e}") from e
    missing = sorted(n.name for n in dag.nodes if n.name not in cp.watermarks)
    if missing:
        raise CheckpointError(f"checkpoint has no watermark for nodes {missing}")
    counters = np.asarray(cp.metrics.get("counters", []), dtype=np.int64)
    if counters.shape != ex._metrics.counters.shape:
        raise CheckpointError(f"checkpoint holds {counters.size} metric counters, this executor "
                              f"{ex._metrics.counters.size}; it was written by another laminar_jit version")
    for sink, table in cp.pending.items():
        if sink not in ex._outputs:
            raise CheckpointError(f"checkpoint holds pending rows of sink {sink!r}, which this DAG lacks")
        expected = ex._outputs[sink].layout.schema
        if not table.schema.equals(expected):
            raise CheckpointError(f"pending rows of sink {sink!r} have schema {table.schema}, expected {expected}")
    unknown_idle = sorted(set(cp.idle) - {n.name for n in dag.nodes})
    if unknown_idle:
        raise CheckpointError(f"checkpoint marks unknown nodes idle: {unknown_idle}")

    # Everything is valid: install it.
    ex._queue, ex._queue_rows, ex._queue_source = [], 0, None
    ex._states = states
    ex._dicts.clear()
    ex._dicts.update(dicts)  # sink buffers hold this same mapping
    from ..executor.executor import link_dictionaries

    link_dictionaries(ex._dicts, ex._dict_links)  # shared by both sides of string join keys
    for n in dag.nodes:
        ex._wm[n.id] = cp.watermarks[n.name]
        ex._idle[n.id] = n.name in cp.idle
    ex._metrics.counters = counters.copy()
    ex._metrics.events_in = int(cp.metrics.get("events_in", 0))
    ex._metrics.batches = int(cp.metrics.get("batches", 0))
    for sink, buffer in ex._outputs.items():
        buffer.drain()
        if sink in cp.pending:
            buffer.batches = cp.pending[sink].combine_chunks().to_batches()
    ex._finished = cp.finished
    now = time.monotonic()
    ex._last_input = {name: now for name in ex._last_input}


def _check_same_dag(dag, cp: Checkpoint) -> None:
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
