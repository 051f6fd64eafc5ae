"""Stateless plans in several threads: slices of one batch, or whole batches side by side.

A plan with no state and no boundary (filters, maps, projections, sinks) gives
the same rows whatever the batches it is fed, so independent pieces of the
input can run concurrently and their results be committed in input order:

* ``DagExecutor(dag, threads=N)`` cuts each batch of at least
  :data:`PARALLEL_MIN_ROWS` rows into ``N`` slices and runs them at once
  (:func:`run_side_by_side`);
* ``DagExecutor(dag, parallelism=N)`` on a DAG with no state hands each
  whole batch to one of ``N`` threads as it comes (:class:`InFlight`) and
  commits the results in order while the caller validates the next
  batches. A batch's step is about 0.1 ms of fixed cost plus its rows' work:
  cutting a 65,536-row batch in two paid that cost twice, and waiting for
  every thread after each group of batches left threads idle.

Each piece advances its own copy of the watermarks and idle flags from the
executor's. Watermarks are monotone in the rows seen, so the input's are the
largest of the pieces'; a source stops being idle when a piece has rows, so
its flags are the conjunction of the pieces'.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from .boundary import run_step

__all__ = ["BATCHES_PER_THREAD", "InFlight", "PARALLEL_MIN_ROWS", "SideBySide", "run_side_by_side"]

#: Batches at least this large are split across ``threads`` (stateless plans only).
PARALLEL_MIN_ROWS = 65_536
#: With ``parallelism=N`` on a stateless DAG, at most this many batches per thread are in flight.
BATCHES_PER_THREAD = 4


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(workers: int) -> ThreadPoolExecutor:
    """This process's pool of ``workers`` threads for whole batches, made once and kept.

    Executors are often short-lived (one per run); with a pool of their own,
    each executor started new threads, whose first batches paid page faults
    in a fresh ``malloc`` arena: two threads ran FilterMap in 17-48 ms with a
    pool per executor, 18-22 ms with this one.
    """
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="laminar-batches")
        return pool


class SideBySide:
    """An executor's threads for a DAG without state (see the module docstring).

    Parameters
    ----------
    executor : DagExecutor
    whole : int
        Threads whole batches run in (``parallelism``); 1: one after the other.
    """

    def __init__(self, executor, whole: int):
        self.executor = executor
        self.pool: ThreadPoolExecutor | None = None  # for slices, made when first used
        #: Whole batches in flight (None: batches run one after the other).
        self.inflight = InFlight(whole) if whole > 1 else None

    def slices(self, plan, b: pa.RecordBatch, counters) -> list[tuple]:
        """A large batch in ``threads`` slices at once: ``(plan, slice, result, rows made)`` per slice, in order
        (``rows made``: sink -> RecordBatch or None, see ``SinkBuffer.ready``)."""
        threads = self.executor.threads
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="laminar")
            weakref.finalize(self, self.pool.shutdown, wait=False)
        size = -(-b.num_rows // threads)
        pieces = [b.slice(i, size) for i in range(0, b.num_rows, size)]
        return [(plan, piece, *done) for piece, done in run_side_by_side(
            self.pool, threads, self.made_step(plan), pieces, counters, self.executor.state)]

    def made_step(self, plan):
        """``step(batch, counter_delta, time_state)`` for a thread: the step's result, and its large sink outputs
        made into Arrow there (sink -> RecordBatch or None)."""
        offsets, outputs = self.executor.dag.routing.offsets, self.executor.state.outputs

        def step(piece, delta, time_state):
            result = run_step(plan, piece, offsets, delta, time_state)
            return result, {layout.sink: outputs[layout.sink].ready(piece, result, layout) for layout in plan.sinks}

        return step

    def run(self, source: str, batches: list[pa.RecordBatch]) -> None:
        """Hand ``batches`` to the threads; take finished ones in order while too many are in flight."""
        flight = self.inflight
        if flight.running and flight.source != source:  # the other source's watermarks come first
            self.take_all()
        step = self.made_step(self.executor._plans[source])
        for b in batches:
            flight.submit(source, step, b, self.executor.state)
            while flight.full:
                self.take_one()

    def take_one(self) -> None:
        """Commit the oldest batch in flight: its counts, time and sink rows."""
        state = self.executor.state
        b, (result, made) = self.inflight.take(state)
        for layout in self.executor._plans[self.inflight.source].sinks:
            state.outputs[layout.sink].add_made(b, result, layout, made[layout.sink])

    def take_all(self) -> None:
        """Commit every batch in flight, in order."""
        while self.inflight.running:
            self.take_one()


class InFlight:
    """Whole batches of one source running in a pool of threads; their results are taken in input order.

    Parameters
    ----------
    threads : int
        Threads the batches run in: the caller's and ``threads - 1`` of a pool.
    """

    def __init__(self, threads: int):
        self.threads = threads
        self.pool = shared_pool(threads - 1)
        #: Batches in flight before the oldest is waited for.
        self.limit = BATCHES_PER_THREAD * threads
        self.running: deque = deque()  # (batch, future or finished result, counter delta, time copy)
        self.source: str | None = None
        self._handed = 0

    def submit(self, source: str, step, batch: pa.RecordBatch, state) -> None:
        """Run ``step(batch, counter_delta, (watermarks, idle))`` on a copy of ``state``'s time: one batch in
        ``threads`` in this thread, at once, the others in the pool's threads (this thread waiting on the pool
        while it has work of its own would leave a core idle)."""
        time_state = state.copy_time()
        delta = np.zeros_like(state.metrics.counters)
        self._handed += 1
        if self._handed % self.threads == 0:
            done = _Done(step(batch, delta, time_state))
        else:
            done = self.pool.submit(step, batch, delta, time_state)
        self.running.append((batch, done, delta, time_state))
        self.source = source

    @property
    def full(self) -> bool:
        return len(self.running) >= self.limit

    def take(self, state) -> tuple:
        """Wait for the oldest batch; add its counts and time to ``state``; return ``(batch, step result)``."""
        batch, future, delta, (wm, idle) = self.running.popleft()
        done = future.result()
        state.metrics.counters += delta
        state.set_time(np.maximum(state.watermarks, wm), state.idle & idle)
        return batch, done


class _Done:
    """A result at hand, read like a future's."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def run_side_by_side(pool: ThreadPoolExecutor, threads: int, step, pieces: list, counters: np.ndarray,
                     state) -> list[tuple]:
    """``step(piece, counter_delta, (watermarks, idle))`` for every piece, in ``threads`` threads: this one and
    ``threads - 1`` of ``pool``'s.

    Thread ``t`` of ``T`` (this thread is 0) runs pieces ``t, t + T, ...`` in
    order on its own copy of the executor's time, so what a thread runs
    stays in cache and each result's time copy is advanced by one thread.
    ``counters`` gain every piece's counts; the executor's time (``state``,
    an :class:`~laminar_jit.executor.state.ExecutorState`) becomes the
    pieces' latest. Returns ``(piece, result)`` in the order of ``pieces``.
    """
    threads = max(1, min(threads, len(pieces)))
    times = [state.copy_time() for _ in range(threads)]
    deltas = [np.zeros_like(counters) for _ in range(threads)]

    def work(t: int) -> list:
        return [step(piece, deltas[t], times[t]) for piece in pieces[t::threads]]

    # the calling thread works too: handing every piece to the pool made it sleep until they were done, and
    # waking a sleeping thread took longer on a VM than a slice's work (two threads were 2.5x slower than one)
    futures = [pool.submit(work, t) for t in range(1, threads)]
    error, done = None, []
    for t in range(threads):
        try:
            done.append(work(0) if t == 0 else futures[t - 1].result())
        except Exception as exc:  # noqa: BLE001 - every thread ends before one error is raised
            error = error or exc
    if error is not None:
        raise error
    counters += np.sum(deltas, axis=0)
    state.set_time(np.max([wm for wm, _ in times], axis=0), np.logical_and.reduce([idle for _, idle in times]))
    results = [None] * len(pieces)
    for t, part in enumerate(done):
        results[t::threads] = part
    return list(zip(pieces, results))
