"""The two kinds of Ray actor of a partitioned run: readers and partitions.

Both are plain classes (wrapped with ``ray.remote`` by the coordinator), so
they can be read and tested without a cluster.

A :class:`Reader` owns one shard of every source and a
:class:`~laminar_jit.DagExecutor` of the DAG's reader part. Per source batch
it runs the reader part, cuts each exchange stream by key hash
(:func:`~.exchange.partition_batch`) and sends every partition its rows
together with the reader's watermark of each stream. At most
``max_inflight`` sends per partition are unacknowledged, so a slow partition
slows its readers down instead of filling memory (backpressure).

A :class:`Partition` owns a ``DagExecutor`` of the partition part. Its
watermark of an exchange stream is the minimum over every reader's; a reader
that has finished counts as +∞, so an empty or exhausted shard does not hold
the job back. Checkpoint barriers are *aligned*: once a reader's barrier has
arrived, that reader's later sends wait in a queue until the barrier has
arrived from every reader; then the partition drains its outputs (the
epoch's rows), saves its checkpoint and replays the queue.

Calls from one reader to one partition run in the order they were sent
(Ray's ordering for a synchronous actor and one submitter), which is what
makes a barrier separate exactly the rows before it from those after it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint
from ..executor import DagExecutor
from .exchange import partition_batch
from .plan import split_dag

__all__ = ["Partition", "Reader", "part_dir", "reader_dir"]

_WM_MIN = np.iinfo(np.int64).min
_WM_MAX = np.iinfo(np.int64).max


def reader_dir(root, index: int) -> Path:
    """Checkpoint directory of reader ``index`` inside one job checkpoint."""
    return Path(root) / f"reader-{index:04d}"


def part_dir(root, index: int) -> Path:
    """Checkpoint directory of partition ``index`` inside one job checkpoint."""
    return Path(root) / f"part-{index:04d}"


class Reader:
    """Reads one shard of every source, runs the reader part and ships rows to partitions.

    Parameters
    ----------
    index : int
        This reader's number (0-based), also its sender id at the partitions.
    dag : StreamingDag
    parallelism : int
    sources : dict of str to Source
        This reader's shard of each source.
    partitions : list of ray.actor.ActorHandle
    restore : str, optional
        Job checkpoint directory to resume from.
    max_inflight : int
        Unacknowledged sends allowed per partition.
    """

    def __init__(self, index, dag, parallelism, sources, partitions, restore=None, max_inflight=4):
        import ray

        self._ray = ray
        self.index = index
        self.plan = split_dag(dag, parallelism)
        self.ex = DagExecutor(self.plan.reader)
        self.sources = sources
        self.partitions = partitions
        self.max_inflight = max_inflight
        self.positions = {name: 0 for name in sources}
        if restore is not None:
            cp = Checkpoint.load(reader_dir(restore, index))
            self.ex.restore(cp)
            self.positions.update({k: v for k, v in cp.positions.items() if k in self.positions})
        self.done = False
        self._iters = None
        self._inflight = [[] for _ in partitions]
        self._sent_wm = [None] * len(partitions)  # last watermarks sent to each partition
        self._outputs: list = []  # (sink, table) of the reader part's own sinks, this epoch
        self.busy = 0.0

    def step(self, max_batches: int) -> tuple[bool, int, int]:
        """Read up to ``max_batches`` batches (one per source in turn) and ship them.

        Returns ``(done, rows read, batches read)``; ``done`` once every shard
        is exhausted, after the partitions have been told so.
        """
        t0 = time.perf_counter()
        if self._iters is None:
            self._iters = {name: iter(src.batches(self.positions[name])) for name, src in self.sources.items()}
        rows = batches = 0
        while self._iters and batches < max_batches:
            for name in list(self._iters):
                batch = next(self._iters[name], None)
                if batch is None:
                    del self._iters[name]
                    if self._iters:  # as in lj.run: a finished source must not hold back the others
                        self.ex.advance_watermark(name, _WM_MAX)
                    continue
                self.ex.process_batch(name, batch)
                self.positions[name] += batch.num_rows
                rows += batch.num_rows
                batches += 1
                self._ship(final=False)
        if not self._iters and not self.done:
            self.ex.finish()
            self._ship(final=True)
            self.done = True
        self.busy += time.perf_counter() - t0
        return self.done, rows, batches

    def _ship(self, final: bool) -> None:
        plan, ex = self.plan, self.ex
        for sink in plan.reader_sinks:
            table = ex.take_sink_outputs(sink)
            if table.num_rows:
                self._outputs.append((sink, table))
        parts = [[] for _ in self.partitions]
        for x in plan.exchanges:
            table = ex.take_sink_outputs(x.sink)
            for batch in table.to_batches():
                for p, piece in enumerate(partition_batch(batch, x.keys, len(self.partitions))):
                    if piece is not None:
                        parts[p].append((x.node, piece))
        wms = {x.node: int(ex.watermark(x.node)) for x in plan.exchanges}
        for p, handle in enumerate(self.partitions):
            if parts[p] or final or wms != self._sent_wm[p]:
                self._send(p, handle.push.remote(self.index, parts[p], wms, final))
                self._sent_wm[p] = wms

    def _send(self, p: int, ref) -> None:
        """Track an unacknowledged send; wait for the oldest when too many are out."""
        pending = self._inflight[p]
        pending.append(ref)
        if len(pending) > self.max_inflight:
            self._ray.get(pending[: len(pending) - self.max_inflight])  # raises if the partition died
            del pending[: len(pending) - self.max_inflight]

    def barrier(self, epoch: int, root: str | None) -> list:
        """Checkpoint barrier: snapshot this reader, pass the barrier to every partition.

        Returns this epoch's rows of the reader part's own sinks once every
        partition has taken the barrier in (so the coordinator may collect
        the partitions' snapshots next).
        """
        self._ship(final=False)
        if root is not None:
            cp = self.ex.checkpoint()
            cp.positions, cp.epoch = dict(self.positions), epoch
            cp.save(reader_dir(root, self.index))
        acks = [h.barrier.remote(epoch, self.index, root) for h in self.partitions]
        self._ray.get([ref for pending in self._inflight for ref in pending] + acks)
        for pending in self._inflight:
            pending.clear()
        out, self._outputs = self._outputs, []
        return out

    def stats(self) -> dict:
        """Seconds spent in :meth:`step` and rows read per source."""
        return {"busy": self.busy, "positions": dict(self.positions)}


class Partition:
    """Owns one key range: a :class:`DagExecutor` of the DAG's partition part.

    Parameters
    ----------
    index : int
    dag : StreamingDag
    parallelism : int
    readers : int
        Number of readers (senders) whose watermarks and barriers it waits for.
    restore : str, optional
        Job checkpoint directory to resume from.
    """

    def __init__(self, index, dag, parallelism, readers, restore=None):
        self.index = index
        self.plan = split_dag(dag, parallelism)
        self.ex = DagExecutor(self.plan.partition)
        if restore is not None:
            self.ex.restore(Checkpoint.load(part_dir(restore, index)))
        self.readers = readers
        streams = [x.node for x in self.plan.exchanges]
        # a restored partition waits for every reader to report its watermark again
        self.wm = {s: np.full(readers, _WM_MIN, np.int64) for s in streams}
        self.current = {s: int(self.ex.watermark(s)) for s in streams}
        self.finished_readers: set[int] = set()
        self.aligned: set[int] = set()
        self.queue: list = []
        self.outputs: dict = {}
        self.busy = 0.0

    def push(self, sender: int, items: list, wms: dict, final: bool) -> None:
        """Rows and watermarks from one reader (queued while that reader is aligned on a barrier)."""
        if sender in self.aligned:
            self.queue.append(("push", sender, items, wms, final))
            return
        t0 = time.perf_counter()
        ex = self.ex
        for stream, batch in items:
            ex.process_batch(stream, batch)
        for stream, wm in wms.items():
            self.wm[stream][sender] = _WM_MAX if final else wm
        if final:
            self.finished_readers.add(sender)
        if len(self.finished_readers) == self.readers:
            ex.finish()
        else:
            for stream, per_sender in self.wm.items():
                low = int(per_sender.min())
                if low > self.current[stream]:
                    ex.advance_watermark(stream, low)
                    self.current[stream] = low
        self.busy += time.perf_counter() - t0

    def barrier(self, epoch: int, sender: int, root: str | None) -> None:
        """One reader's barrier; the last one of an epoch triggers the snapshot."""
        if sender in self.aligned:
            self.queue.append(("barrier", epoch, sender, root))
            return
        self.aligned.add(sender)
        if len(self.aligned) < self.readers:
            return
        self.outputs[epoch] = self.ex.take_all_sink_outputs()
        if root is not None:
            cp = self.ex.checkpoint()
            cp.epoch = epoch
            cp.save(part_dir(root, self.index))
        self.aligned.clear()
        queue, self.queue = self.queue, []
        for call in queue:
            if call[0] == "push":
                self.push(*call[1:])
            else:
                self.barrier(*call[1:])

    def collect(self, epoch: int) -> dict:
        """This partition's output rows of ``epoch`` (after its snapshot), per sink."""
        return self.outputs.pop(epoch)

    def stats(self) -> dict:
        """Seconds spent processing pushes, and the executor's counters."""
        m = self.ex.metrics
        return {"busy": self.busy, "events_in": m.events_in, "late_events": m.late_events}
