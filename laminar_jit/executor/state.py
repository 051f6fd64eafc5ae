"""``ExecutorState``: everything a :class:`~laminar_jit.DagExecutor` changes as it runs, in one object.

The executor's compiled plans, routing and sink layouts are fixed at
construction; what moves is held here: operator states, string
dictionaries, watermarks, idle flags, metric counters, sink outputs not yet
taken, batches queued for the next step, and the finished and broken flags.
Checkpoints (:mod:`laminar_jit.checkpoint.capture`) and the fault guard
(:mod:`laminar_jit.executor.faults`) read and replace the executor's state
through this object alone, so neither needs the executor itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..time.watermarks import WATERMARK_MIN
from .metrics import Metrics

if TYPE_CHECKING:
    from ..state.dictionary import StringDictionary
    from .boundary import SinkBuffer

__all__ = ["ExecutorState", "linked_to"]

#: (source, column) of a string key column encoded by a dictionary.
DictionaryKey = tuple[str, str]


@dataclass(eq=False)
class ExecutorState:
    """The mutable state of a :class:`~laminar_jit.DagExecutor` (``ex.state``).

    The executor keeps its data here and updates it in place; a
    :class:`~laminar_jit.Checkpoint` is a copy of it
    (:meth:`DagExecutor.checkpoint`), and :meth:`DagExecutor.restore` puts one
    back into it. Reading it is safe at any time between calls. Small
    batches may still wait in :attr:`queued` for the next compiled step:
    :attr:`DagExecutor.metrics`, :meth:`DagExecutor.watermark`,
    :meth:`DagExecutor.take_sink_outputs` and :meth:`DagExecutor.checkpoint`
    run them first, reading this object does not. Writing to it directly
    bypasses every check the executor makes; restore a checkpoint instead.

    Attributes
    ----------
    operator_states : dict of int to state
        Per stateful node id (``dag.node(name).id``): its state object
        (:class:`~laminar_jit.state.WindowState`,
        :class:`~laminar_jit.state.KeyedState`, a join's or ranking's state),
        whose numpy arrays the compiled steps update in place. Empty for an
        executor with key shards (``parallelism > 1``): each shard keeps the
        states of its keys, and :meth:`DagExecutor.checkpoint` merges them.
    dictionaries : dict of (str, str) to StringDictionary
        Per ``(source, column)`` string key column: the dictionary that
        encodes it as int64 codes. Sink buffers hold this same mapping, so it
        is updated in place, never replaced.
    dictionary_links : list of sequence of (str, str)
        Groups of ``(source, column)`` that share one dictionary, so codes
        compare and pass from step to step: both sides of a string join key,
        and a boundary node's string column with the column its next step
        reads (see :func:`~laminar_jit.executor.handoff.codes_passed_on`).
        Groups that share a key share one dictionary.
    watermarks : numpy.ndarray
        int64 per node id: its event-time watermark (``WATERMARK_MIN``
        before any event, the int64 maximum after ``finish()``).
    idle : numpy.ndarray
        bool per node id: whether the source is marked idle.
    metrics : Metrics
        The executor's counters.
    outputs : dict of str to SinkBuffer
        Per sink: rows received and not taken yet.
    queued : list of pyarrow.RecordBatch
        Small validated batches of :attr:`queued_source` waiting to run
        through its step as one.
    queued_rows : int
        Rows in :attr:`queued`.
    queued_source : str or None
        The source the queued batches belong to.
    last_input : dict of str to float
        Per source: ``time.monotonic()`` of its last batch (for
        ``idle_timeout``).
    finished : bool
        Whether ``finish()`` was called.
    broken : str or None
        Why the executor refuses further calls (a step raised where nothing
        could be taken back), or None. Cleared by a restore.
    """

    operator_states: dict[int, Any]
    dictionaries: dict[DictionaryKey, StringDictionary]
    dictionary_links: list
    watermarks: np.ndarray
    idle: np.ndarray
    metrics: Metrics
    outputs: dict[str, SinkBuffer]
    queued: list[pa.RecordBatch] = field(default_factory=list)
    queued_rows: int = 0
    queued_source: str | None = None
    last_input: dict[str, float] = field(default_factory=dict)
    finished: bool = False
    broken: str | None = None

    @classmethod
    def new(cls, dag, dictionaries: dict | None = None, dictionary_links: list | None = None,
            outputs: dict | None = None) -> ExecutorState:
        """The state of ``dag`` before any input.

        A new state object per stateful node, every watermark at ``WATERMARK_MIN``, no source
        idle, zero counters; ``dictionaries``, ``dictionary_links`` and ``outputs`` as given
        (empty by default: a key shard's state shares its executor's dictionaries and has no sinks).
        """
        return cls(operator_states={n.id: n.op.new_state(n.bound) for n in dag.nodes if n.kind == "stateful"},
                   dictionaries={} if dictionaries is None else dictionaries,
                   dictionary_links=dictionary_links or [],
                   watermarks=np.full(len(dag.nodes), WATERMARK_MIN, np.int64),
                   idle=np.zeros(len(dag.nodes), np.bool_),
                   metrics=Metrics([n.name for n in dag.nodes]),
                   outputs={} if outputs is None else outputs)

    def __post_init__(self) -> None:
        # Shared dictionaries are linked, and sink buffers decode through this mapping, from the start.
        self.link_dictionaries()
        for buffer in self.outputs.values():
            buffer.dictionaries = self.dictionaries

    # ------------------------------------------------------------------ queue
    def take_queued(self) -> tuple[str | None, list[pa.RecordBatch]]:
        """Empty the queue; return its source and batches (``(None, [])`` when empty)."""
        source, queued = self.queued_source, self.queued
        self.queued, self.queued_rows, self.queued_source = [], 0, None
        return source, queued

    # ------------------------------------------------------------ dictionaries
    def link_dictionaries(self) -> None:
        """Make every ``(source, column)`` of :attr:`dictionary_links` use the dictionary of its groups' first."""
        dicts = self.dictionaries
        for key, first in self.linked_dictionaries().items():
            dicts[key] = dicts[first]

    def linked_dictionaries(self) -> dict[DictionaryKey, DictionaryKey]:
        """Per ``(source, column)`` that :attr:`dictionary_links` link to another: the one whose dictionary it uses."""
        return linked_to(self.dictionaries, self.dictionary_links)

    def replace_dictionaries(self, dictionaries: dict[DictionaryKey, StringDictionary]) -> None:
        """Install ``dictionaries`` (one per key of :attr:`dictionaries`) in place, then re-link shared ones."""
        self.dictionaries.clear()
        self.dictionaries.update(dictionaries)  # sink buffers hold this same mapping
        self.link_dictionaries()

    def dictionary_lengths(self) -> dict[DictionaryKey, int]:
        """Values held per dictionary: what :meth:`truncate_dictionaries` cuts back to."""
        return {key: len(d) for key, d in self.dictionaries.items()}

    def truncate_dictionaries(self, lengths: dict[DictionaryKey, int]) -> None:
        """Forget the values each dictionary took since it had ``lengths[key]`` (dictionaries only grow)."""
        for key, d in self.dictionaries.items():
            d.truncate(lengths[key])

    # ---------------------------------------------------------------- time
    def copy_time(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of :attr:`watermarks` and :attr:`idle`."""
        return self.watermarks.copy(), self.idle.copy()

    def set_time(self, watermarks: np.ndarray, idle: np.ndarray) -> None:
        """Overwrite :attr:`watermarks` and :attr:`idle` in place."""
        self.watermarks[:] = watermarks
        self.idle[:] = idle

    # ------------------------------------------------------- operator states
    def snapshot_operators(self) -> dict[int, dict[str, np.ndarray]]:
        """Per stateful node id: copies of its state arrays by name (``state.snapshot()``)."""
        return {nid: state.snapshot() for nid, state in self.operator_states.items()}

    def load_operators(self, dag, arrays: dict[int, dict[str, np.ndarray]]) -> None:
        """Replace every operator state by a fresh one loaded from ``arrays`` (as :meth:`snapshot_operators` gives).

        The arrays are copied, so ``arrays`` stays reusable.

        Raises
        ------
        KeyError
            ``arrays`` lacks a stateful node; nothing changes then.
        ValueError
            The arrays do not fit a node's state; nothing changes then.
        """
        fresh = {}
        for nid in self.operator_states:
            node = dag.node(nid)
            fresh[nid] = node.op.new_state(node.bound)
            fresh[nid].load_snapshot(arrays[nid])  # copies
        self.operator_states = fresh


def linked_to(keys, links: list) -> dict[DictionaryKey, DictionaryKey]:
    """Per key of ``keys`` that a group of ``links`` (lists of keys) links to another: the key whose dictionary
    it uses. Groups that share a key are one set with one dictionary, so a chain of links (a join's string
    column read by the next step as a join key) ends in one place."""
    parent: dict = {}

    def root(key):
        while parent.get(key, key) != key:
            key = parent[key]
        return key

    for group in links:
        members = [tuple(k) for k in group if tuple(k) in keys]
        for member in members[1:]:
            a, b = root(members[0]), root(member)
            if a != b:
                parent[b] = a
    return {key: root(key) for key in parent}
