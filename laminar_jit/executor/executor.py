"""``DagExecutor``: runs a finalized DAG batch by batch through compiled steps."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from .._memory import tune_allocator
from ..errors import DataError, UnknownNodeError
from ..time.watermarks import WATERMARK_MIN, to_units
from .boundary import EAGER_ROWS, NO_NULLS, SinkBuffer, column_view, conform, empty_view, null_checked_columns, to_batches
from .metrics import Metrics
from .plan import compile_plan

__all__ = ["DagExecutor"]


class DagExecutor:
    """Execute a :class:`~laminar_jit.StreamingDag`.

    Construction compiles one step function per source (served from Numba's
    on-disk cache when a previous process compiled the same plan).

    Parameters
    ----------
    dag : StreamingDag
        The result of :meth:`DagBuilder.build`.
    threads : int, optional
        Threads a large batch may be split across when every node it reaches is
        stateless (the compiled steps release the GIL). Default 1: on the
        2-vCPU machines this was measured on, two busy threads ran no faster than
        one, so splitting only added overhead. Output does not depend on it; the
        ``multicast_publishes`` and ``nodes_skipped`` counters count per slice.

    Examples
    --------
    >>> import pyarrow as pa, laminar_jit as lj
    >>> schema = pa.schema([("ts", pa.int64()), ("price", pa.float64())])
    >>> dag = (lj.DagBuilder().source("bids", schema)
    ...        .operator("cheap", lj.Filter(lambda price: price < 10.0))
    ...        .connect("bids", "cheap").sink_for("cheap", "out").build())
    >>> ex = lj.DagExecutor(dag)
    >>> ex.process_batch("bids", {"ts": [1, 2, 3], "price": [5.0, 50.0, 7.5]})
    >>> ex.take_sink_outputs("out").column("price").to_pylist()
    [5.0, 7.5]
    """

    def __init__(self, dag, threads: int | None = None):
        tune_allocator()
        self.dag = dag
        self.threads = max(1, int(threads or 1))
        self._pool: ThreadPoolExecutor | None = None
        self._plans = {name: compile_plan(dag, name) for name in dag.sources}
        self._outputs = {layout.sink: SinkBuffer(layout) for plan in self._plans.values() for layout in plan.sinks}
        self._metrics = Metrics([n.name for n in dag.nodes])
        self._queue: list[pa.RecordBatch] = []
        self._queue_rows = 0
        self._queue_source: str | None = None
        self._max_event_time = {name: WATERMARK_MIN for name in dag.sources}
        self._specs = {name: dag.node(name).op for name in dag.sources}
        self._null_checked = {name: null_checked_columns(spec) for name, spec in self._specs.items()}
        self._finished = False

    # ------------------------------------------------------------------ input
    def process_batch(self, source: str, batch) -> None:
        """Push one batch of ``source`` through the DAG.

        Parameters
        ----------
        source : str
            Name of a source node.
        batch : pyarrow.RecordBatch, pyarrow.Table, Arrow-exporting object, or mapping
            The rows. Extra columns are ignored; numeric columns are cast safely.

        Raises
        ------
        DataError
            Unknown source, missing column, unsafe cast, nulls in the event-time or
            a non-nullable column, or input after :meth:`finish`. State is unchanged.
        TypeError
            ``batch`` is not a batch at all.
        """
        plan = self._plans.get(source)
        if plan is None:
            raise DataError(f"unknown source {source!r}; this DAG's sources are {', '.join(self._plans)}")
        if self._finished:
            raise DataError(f"source {source!r}: the executor has finished (finish() was called); "
                            "create a new DagExecutor to process more input")
        spec = self._specs[source]
        checked = self._null_checked[source]
        batches = [conform(source, spec, b, checked) for b in to_batches(source, batch)]
        rows = sum(b.num_rows for b in batches)
        max_ts = self._max_event_time[source]
        if spec.event_time is not None:
            for b in batches:
                if b.num_rows:
                    max_ts = max(max_ts, _max_int(b.column(spec.event_time)))

        if rows < COALESCE_ROWS and len(batches) == 1:
            # Small batches are validated now and queued; the compiled step runs
            # once over many of them (see COALESCE_ROWS). Outputs, metrics and
            # watermarks flush the queue before they are read, so nothing can
            # observe the delay — except a kernel raising, which surfaces later.
            if self._queue and self._queue_source != source:
                self._flush()
            self._queue.append(batches[0])
            self._queue_source = source
            self._queue_rows += rows
            if self._queue_rows >= COALESCE_FLUSH_ROWS:
                self._flush()
        else:
            self._flush()
            self._run(source, batches)
        self._metrics.events_in += rows
        self._metrics.batches += len(batches)
        self._max_event_time[source] = max_ts

    def _flush(self) -> None:
        """Run the queued small batches through the step as one batch."""
        if not self._queue:
            return
        queue, source = self._queue, self._queue_source
        self._queue, self._queue_rows, self._queue_source = [], 0, None
        self._run(source, [queue[0] if len(queue) == 1 else pa.concat_batches(queue)])

    def _run(self, source: str, batches: list[pa.RecordBatch]) -> None:
        """Run validated batches; commit counters and outputs only if all succeed."""
        plan = self._plans[source]
        counters = self._metrics.counters.copy()
        offsets = self.dag.routing.offsets
        produced: list[tuple[pa.RecordBatch, tuple]] = []
        for b in batches:
            if self.threads > 1 and plan.parallel_safe and b.num_rows >= PARALLEL_MIN_ROWS:
                produced += self._run_parallel(plan, b, counters)
            else:
                produced.append((b, _run_step(plan, b, offsets, counters)))
        self._metrics.counters = counters
        for b, result in produced:
            for layout in plan.sinks:
                self._outputs[layout.sink].add(b, result)

    @property
    def metrics(self) -> Metrics:
        """Counters of this executor (see :class:`Metrics`)."""
        self._flush()
        return self._metrics

    def _run_parallel(self, plan, b: pa.RecordBatch, counters) -> list[tuple[pa.RecordBatch, tuple]]:
        # Stateless plans: each slice is an independent batch (outputs do not
        # depend on batch boundaries), run concurrently; results keep slice order.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="laminar")
        size = -(-b.num_rows // self.threads)
        slices = [b.slice(i, size) for i in range(0, b.num_rows, size)]
        deltas = [np.zeros_like(counters) for _ in slices]
        offsets = self.dag.routing.offsets
        futures = [self._pool.submit(_run_step, plan, s, offsets, d) for s, d in zip(slices, deltas)]
        results = [f.result() for f in futures]
        counters += np.sum(deltas, axis=0)
        return list(zip(slices, results))

    def finish(self) -> None:
        """End of input: advance every watermark to +∞ and flush what is pending.

        After ``finish`` the executor accepts no more input; sink outputs stay
        available through :meth:`take_sink_outputs`.
        """
        self._flush()
        self._finished = True

    # ------------------------------------------------------------------ time
    def watermark(self, source: str) -> int:
        """Current watermark of ``source`` in its event-time units (int64 minimum before any event).

        After :meth:`finish` every watermark is the int64 maximum.
        """
        if source not in self._max_event_time:
            raise UnknownNodeError(f"no source {source!r}; sources: {', '.join(self._max_event_time)}")
        if self._finished:
            return 2**63 - 1
        spec = self.dag.node(source).op
        if spec.watermark is None:
            return WATERMARK_MIN
        et_type = spec.schema.field(spec.event_time).type
        return spec.watermark.watermark_for(self._max_event_time[source], to_units(spec.watermark.delay, et_type))

    # ------------------------------------------------------------------ output
    def take_sink_outputs(self, sink: str) -> pa.Table:
        """Everything ``sink`` received since the last call, as one table (drained).

        Returns an empty table with the sink's schema when nothing arrived.
        """
        if sink not in self._outputs:
            raise UnknownNodeError(f"no sink {sink!r}; this DAG's sinks are {', '.join(self._outputs)}")
        self._flush()
        return self._outputs[sink].drain()

    def take_all_sink_outputs(self) -> dict[str, pa.Table]:
        """:meth:`take_sink_outputs` for every sink, by sink name."""
        return {sink: self.take_sink_outputs(sink) for sink in list(self._outputs)}

    def __repr__(self) -> str:
        return f"DagExecutor(sources={list(self._plans)}, sinks={list(self._outputs)}, {self.metrics!r})"


#: Batches at least this large are split across threads (stateless plans only).
PARALLEL_MIN_ROWS = 65_536
#: Batches smaller than this are queued and run through the step together:
#: a compiled call and its Arrow boundary cost ~50 µs whatever the batch size.
COALESCE_ROWS = 256
#: The queue runs once it holds this many rows (or anything reads results).
COALESCE_FLUSH_ROWS = 4096


def _run_step(plan, b: pa.RecordBatch, offsets, counters) -> tuple:
    """Call the compiled step of ``plan`` on batch ``b`` (updates ``counters`` in place)."""
    n = b.num_rows
    args = []
    for name, dtype, kernel_read in plan.args:
        if kernel_read or n >= EAGER_ROWS:
            args.extend(column_view(b.column(name), dtype))
        else:  # only sinks want it, and small batches are gathered by Arrow
            args += (empty_view(dtype), NO_NULLS)
    return plan.step(n, *args, offsets, counters)


def _max_int(col: pa.Array) -> int:
    # int64 or a timestamp (int64 underneath; no nulls, checked at the boundary)
    values, _ = column_view(col, np.dtype(np.int64))
    return int(values.max()) if values.size > 8 else max(values.tolist())
