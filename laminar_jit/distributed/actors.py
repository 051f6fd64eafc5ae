"""The Ray actor of a partitioned run: one worker per partition.

Worker ``i`` is a plain class (wrapped with ``ray.remote`` by the
coordinator) with two halves:

* a **reader** of shard ``i`` of every source, with a
  :class:`~laminar_jit.DagExecutor` of the DAG's reader part (the stateless
  operators next to the sources). Per source batch it runs the reader part,
  cuts each exchange stream by key hash
  (:func:`~.exchange.partition_batch`), keeps its own partition's rows and
  queues the others' in an :class:`~.exchange.Outbox`, sent per partition
  in messages of about 8 MiB or at the end of each step, together with the
  reader's watermark of each stream after them;
* a **partition** owning key range ``i``: a ``DagExecutor`` of the
  partition part. Its watermark of an exchange stream is the minimum over
  every reader's; a reader that has finished counts as +∞, so an empty or
  exhausted shard does not hold the job back.

Rows a worker keeps go straight into its own partition (no copy, no
serialization), so with ``partitions=1`` nothing crosses a process and with
``N`` partitions ``(N-1)/N`` of the rows do.

No worker ever waits for another — sends are fire-and-forget and return
their acknowledgement refs to the coordinator, which waits for them one
round later (that is the backpressure) — so workers cannot deadlock on each
other. Calls from one worker to another run in the order they were sent
(Ray's ordering for a synchronous actor and one submitter): a checkpoint
barrier therefore separates exactly the rows a reader sent before it from
those after. Barriers are *aligned*: once a reader's barrier has reached a
partition, that reader's later rows wait in a queue until every reader's
barrier has arrived; then the partition hands over the epoch's output rows,
saves its checkpoint and replays the queue.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint
from ..executor import DagExecutor
from ..io.shards import resume_shards
from .exchange import Outbox, partition_batch
from .plan import split_dag

__all__ = ["Worker", "part_dir", "reader_dir"]

_WM_MIN = np.iinfo(np.int64).min
_WM_MAX = np.iinfo(np.int64).max


def reader_dir(root, index: int) -> Path:
    """Checkpoint directory of reader ``index`` inside one job checkpoint."""
    return Path(root) / f"reader-{index:04d}"


def part_dir(root, index: int) -> Path:
    """Checkpoint directory of partition ``index`` inside one job checkpoint."""
    return Path(root) / f"part-{index:04d}"


class Worker:
    """Reader of one source shard and owner of one key range (see the module docstring).

    Parameters
    ----------
    index : int
        This worker's number (0-based): its shard, its key range and its
        sender id.
    dag : StreamingDag
    partitions : int
    sources : dict of str to Source
        This worker's shard of each source.
    parallelism : int or "auto", default 1
        Key shards (threads) of the partition's executor.
    """

    def __init__(self, index, dag, partitions, sources, parallelism=1):
        self.index, self.n = index, partitions
        self.plan = split_dag(dag, partitions)
        self.reader = DagExecutor(self.plan.reader)
        self.part = DagExecutor(self.plan.partition, parallelism=parallelism)
        self.sources = sources
        self.positions = {name: 0 for name in sources}
        self.peers: list = []
        self.done = False
        self._iters = None
        self.outbox = Outbox(partitions)
        self._wm = None  # the reader part's watermark per exchange stream after the last batch
        self._sent_wm = [None] * partitions  # watermarks last sent to each partition
        self._refs: list = []  # acknowledgements of sends since the coordinator last asked
        self._outputs: list = []  # (sink, table) of the reader part's own sinks, this epoch
        streams = [x.node for x in self.plan.exchanges]
        self.wm = {s: np.full(partitions, _WM_MIN, np.int64) for s in streams}
        self.current = {s: _WM_MIN for s in streams}
        self.finished_readers: set[int] = set()
        self.aligned: set[int] = set()
        self.queue: list = []
        self.outputs: dict = {}
        self.read_seconds = self.part_seconds = 0.0

    def open(self, peers: list, restore: str | None = None) -> None:
        """Meet the other workers (handles in index order) and restore from a job checkpoint, if any.

        Separate from construction so that a damaged checkpoint surfaces as
        :class:`~laminar_jit.errors.CheckpointError`, not as a dead actor.
        """
        self.peers = peers
        if restore is None:
            return
        cp = Checkpoint.load(reader_dir(restore, self.index))
        self.reader.restore(cp)
        self.positions.update({k: v for k, v in cp.positions.items() if k in self.positions})
        # a source an earlier run read as other shards: continued shard by shard (worker 0 reads it all)
        self.sources = {name: resume_shards(src, name, cp.positions, self.plan.dag.node(name).op.event_time)
                        for name, src in self.sources.items()}
        self.part.restore(Checkpoint.load(part_dir(restore, self.index)))
        # a restored partition waits for every reader to report its watermark again
        self.current = {s: int(self.part.watermark(s)) for s in self.current}

    # ------------------------------------------------------------------ reader half
    def step(self, max_batches: int) -> tuple[bool, int, int, list]:
        """Read up to ``max_batches`` batches (one per source in turn) and route their rows.

        Returns ``(done, rows read, batches read, acknowledgement refs of the
        sends)``; ``done`` once every shard is exhausted, after every
        partition has been told so.
        """
        if self._iters is None:  # a reader restored after it had finished reads nothing more
            self._iters = {} if self.reader.state.finished else {
                name: iter(src.batches(self.positions[name])) for name, src in self.sources.items()}
        rows = batches = 0
        while self._iters and batches < max_batches:
            for name in list(self._iters):
                t0 = time.perf_counter()
                batch = next(self._iters[name], None)
                if batch is None:
                    del self._iters[name]
                    if self._iters:  # as in lj.run: a finished source must not hold back the others
                        self.reader.advance_watermark(name, _WM_MAX)
                    continue
                self.reader.process_batch(name, batch)
                self.positions[name] = self.sources[name].position_after(self.positions[name], batch)
                rows += batch.num_rows
                batches += 1
                self.read_seconds += time.perf_counter() - t0
                self._route(final=False)
        if not self._iters and not self.done:
            self.reader.finish()
            self._route(final=True)
            self.done = True
        elif self._wm is not None:
            self._send_all()
        if not rows:  # nothing read: emit what the readers' watermarks made due without waiting for rows
            t0 = time.perf_counter()
            self._apply_watermarks()
            self.part_seconds += time.perf_counter() - t0
        refs, self._refs = self._refs, []
        return self.done, rows, batches, refs

    def _route(self, final: bool) -> None:
        """Hand the reader part's output on: own key range now, other partitions through the outbox."""
        t0 = time.perf_counter()
        plan, ex = self.plan, self.reader
        for sink in plan.reader_sinks:
            table = ex.take_sink_outputs(sink)
            if table.num_rows:
                self._outputs.append((sink, table))
        local, full = [], set()
        for x in plan.exchanges:
            for batch in ex.take_sink_outputs(x.sink).to_batches():
                for p, piece in enumerate(partition_batch(batch, x.keys, self.n)):
                    if piece is None:
                        continue
                    if p == self.index:
                        local.append((x.node, piece))
                    elif self.outbox.add(p, x.node, piece):
                        full.add(p)
        self._wm = {x.node: int(ex.watermark(x.node)) for x in plan.exchanges}
        self.read_seconds += time.perf_counter() - t0
        if local or final or self._wm != self._sent_wm[self.index]:
            self.push(self.index, local, self._wm, final)
            self._sent_wm[self.index] = self._wm
        for p in full:
            self._send(p, False)
        if final:
            self._send_all(final=True)

    def _send(self, p: int, final: bool) -> None:
        """Send partition ``p`` its queued rows with the watermarks after them."""
        self._refs.append(self.peers[p].push.remote(self.index, self.outbox.take(p), self._wm, final))
        self._sent_wm[p] = self._wm

    def _send_all(self, final: bool = False) -> None:
        """Send every other partition its queued rows, or the watermarks alone if they moved."""
        for p in range(self.n):
            if p != self.index and (self.outbox.items[p] or final or self._wm != self._sent_wm[p]):
                self._send(p, final)

    def barrier(self, epoch: int, root: str | None) -> list:
        """Checkpoint barrier: snapshot the reader half, pass the barrier to every partition.

        Returns the acknowledgement refs of the barriers sent to the other
        workers; once they are all in, every partition has its snapshot of
        ``epoch`` (collect it with :meth:`collect`).
        """
        if self._wm is not None:
            self._send_all()  # rows before the barrier travel before it
        if root is not None:
            cp = self.reader.checkpoint()
            cp.positions, cp.epoch = dict(self.positions), epoch
            for name, source in self.sources.items():  # a source continued as shards: where each shard is
                cp.positions.update(getattr(source, "shard_positions", lambda _: {})(name))
            cp.save(reader_dir(root, self.index))
        self.take_barrier(epoch, self.index, root)
        refs = self._refs + [h.take_barrier.remote(epoch, self.index, root)
                             for p, h in enumerate(self.peers) if p != self.index]
        self._refs = []
        return refs

    # ------------------------------------------------------------------ partition half
    def push(self, sender: int, items: list, wms: dict, final: bool) -> None:
        """Rows and watermarks from one reader (queued while that reader is aligned on a barrier).

        A stream's new watermark (the minimum over readers) is folded into
        its next batch instead of costing a step of its own; a send without
        rows, a reader finishing and the end of every :meth:`step` apply it
        at once.
        """
        if sender in self.aligned:
            self.queue.append(("push", sender, items, wms, final))
            return
        t0 = time.perf_counter()
        ex = self.part
        for stream, batch in items:
            low = int(self.wm[stream].min())
            if low > self.current[stream]:
                ex._raise_watermark(stream, low)
                self.current[stream] = low
            ex.process_batch(stream, batch)
        for stream, wm in wms.items():
            self.wm[stream][sender] = _WM_MAX if final else wm
        if final:
            self.finished_readers.add(sender)
        if len(self.finished_readers) == self.n:
            ex.finish()
        elif final or not items:
            self._apply_watermarks()
        self.part_seconds += time.perf_counter() - t0

    def _apply_watermarks(self) -> None:
        """Punctuate every stream whose minimum over readers rose: emit what that made due."""
        if self.part.state.finished:
            return
        for stream, per_sender in self.wm.items():
            low = int(per_sender.min())
            if low > self.current[stream]:
                self.part.advance_watermark(stream, low)
                self.current[stream] = low

    def take_barrier(self, epoch: int, sender: int, root: str | None) -> None:
        """One reader's barrier; the last one of an epoch triggers the partition's snapshot."""
        if sender in self.aligned:
            self.queue.append(("barrier", epoch, sender, root))
            return
        self.aligned.add(sender)
        if len(self.aligned) < self.n:
            return
        self.outputs[epoch] = self.part.take_all_sink_outputs()
        if root is not None:
            cp = self.part.checkpoint()
            cp.epoch = epoch
            cp.save(part_dir(root, self.index))
        self.aligned.clear()
        queue, self.queue = self.queue, []
        for call in queue:
            if call[0] == "push":
                self.push(*call[1:])
            else:
                self.take_barrier(*call[1:])

    def collect(self, epoch: int) -> tuple[list, dict, dict]:
        """Output rows of ``epoch`` after its snapshot: the reader half's, the partition's, and positions."""
        reader_rows, self._outputs = self._outputs, []
        return reader_rows, self.outputs.pop(epoch), dict(self.positions)

    def stats(self) -> dict:
        """Seconds spent reading and routing, seconds spent in the partition, and its counters."""
        m = self.part.metrics
        return {"read": self.read_seconds, "partition": self.part_seconds, "events_in": m.events_in,
                "late_events": m.late_events}
