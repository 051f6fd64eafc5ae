"""``DagExecutor``: runs a finalized DAG batch by batch through compiled steps."""

from __future__ import annotations

import logging
import time
import weakref

import numpy as np
import pyarrow as pa

from .._memory import tune_allocator
from ..checkpoint.capture import capture as capture_checkpoint, restore as restore_checkpoint
from ..errors import DataError, KernelError, UnknownNodeError
from ..kernels.watermarks import due_cuts
from ..time.watermarks import to_units
from .core import MetricsLayout
from .boundary import SinkBuffer, as_batch, column_view, conform, dictionary_columns, null_checked_columns, run_step, to_batches
from .faults import FaultGuard, kernel_error, raising_kernels
from .handoff import StepRows, codes_passed_on, new_dictionaries
from .metrics import Metrics
from .plan import WINDOW_PIECE_ROWS, SourcePlan, boundary_nodes, compile_plan
from .shards import KeyShards, resolve_parallelism, shard_plan
from .sidebyside import PARALLEL_MIN_ROWS, SideBySide
from .state import ExecutorState

__all__ = ["DagExecutor"]

log = logging.getLogger("laminar_jit")


class DagExecutor:
    """Execute a :class:`~laminar_jit.StreamingDag`.

    Construction compiles one step function per source (served from Numba's
    on-disk cache when a previous process compiled the same plan).

    Parameters
    ----------
    dag : StreamingDag
        The result of :meth:`DagBuilder.build`.
    parallelism : int or "auto", default 1
        Key shards: the executor keeps this many copies of the DAG's state,
        each owning the keys that hash into its key groups, and runs them in
        threads (the compiled steps release the GIL); each source's plan is
        then compiled a second time as a key shard's plan (cached on disk like
        every plan). ``"auto"``: the cores this process may use. Outputs, late
        rows, watermarks and metric row counts are those of one executor (an
        updating operator's changelog: each key's changes in one executor's
        order, keys interleaved by shard), and
        checkpoints are one executor's (they restore at any parallelism). Key
        groups move between shards to even out skewed keys. A DAG that cannot
        be sharded yet runs as one; :attr:`shards` and :attr:`shards_note` say
        so. A DAG without state (filters, maps, projections) whose kernels
        cannot raise runs whole batches in ``N`` threads instead, one in ``N``
        in the calling thread, the others handed to a pool, and takes their
        results in input order; reading outputs, metrics or watermarks waits
        for the batches in flight.
    two_phase : bool, default False
        With ``parallelism > 1``: run a tumbling or sliding window (or a
        windowed TopN) without a key, fed from sources through stateless
        operators, in every shard (Flink's local-global aggregation): each
        shard aggregates its share of every batch (rows dealt by their place)
        and the shards' results of a window are combined into its one row (a
        TopN's best rows: ranked again) as it fires, before anything
        downstream reads it. Aggregates must be counts, integer sums, minima
        or maxima (a float sum's rounding would follow the shards). Off by
        default: on the 2-vCPU machine it was measured on, two shards took
        1.7-2.9x as long as one executor on a window of four such aggregates
        (the exchange costs about 0.6 ms per 65,536-row batch, more than that
        window's step) and about as long with a heavy kernel before the
        window; without it, such a DAG runs in one executor (:attr:`shards_note`).
    threads : int, optional
        Threads a large batch may be split across when every node it reaches is
        stateless (the compiled steps release the GIL); the calling thread runs
        the first slice, a pool the others. Default 1: on the 2-vCPU machine
        this was measured on, two threads were still slower than one on a
        filter + map (31–38 ms against 19–27 ms for 5 M rows in 65,536-row
        batches, 40–49 ms of CPU): a slice's step takes about 0.1 ms, less
        than handing it to another thread and back. Output does not depend on it; the
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

    def __init__(self, dag, threads: int | None = None, parallelism: int | str = 1, two_phase: bool = False):
        tune_allocator()
        self.dag = dag
        self.parallelism = resolve_parallelism(parallelism)
        self.threads = max(1, int(threads or 1))
        self._plans = {name: compile_plan(dag, name) for name in dag.sources}
        # Boundary nodes' rows (joins feeding stateful nodes, inputs of ArrowMaps) run through a step of their own.
        self._derived = {dag.nodes[nid].name: compile_plan(dag, dag.nodes[nid].name)
                         for nid in sorted(boundary_nodes(dag), key=dag.execution_ids.index)}
        all_plans = [*self._plans.values(), *self._derived.values()]
        self._specs = {name: dag.node(name).op for name in dag.sources}
        self._checked = {name: (null_checked_columns(spec), dictionary_columns(spec)) for name, spec in self._specs.items()}
        # String join keys: both sides' columns are encoded by one dictionary, so codes compare; a boundary
        # node's string columns reach the next step as codes of the dictionary of the columns they came from.
        links = [group for plan in all_plans for group in plan.shared_dictionaries] + codes_passed_on(dag, all_plans)
        self._state = ExecutorState.new(
            dag,
            # String dictionaries of encoded columns.
            dictionaries=new_dictionaries(dag, all_plans, links),
            dictionary_links=links,
            outputs={layout.sink: SinkBuffer(layout) for plan in all_plans for layout in plan.sinks})
        self._state.last_input = {name: time.monotonic() for name in dag.sources}
        # Kernels that can raise make every call take-back-able (see faults.py); others cost nothing.
        self._raising = raising_kernels(dag)
        self._guard = FaultGuard(self._state, dag, _weakly(self._execute), self._raising) if self._raising else None
        self._shards: KeyShards | None = None
        #: Why a DAG run with ``parallelism > 1`` runs as one shard (None when it is sharded or parallelism is 1).
        self.shards_note: str | None = None
        #: Threads for a DAG without state: slices of large batches (``threads``), whole batches (``parallelism``).
        whole = self.parallelism > 1 and not self._state.operator_states and not self._derived and not self._raising
        # (helpers hold the executor weakly: without reference cycles its state goes as soon as the executor does)
        self._side = SideBySide(weakref.proxy(self), self.parallelism if whole else 1)
        if whole:
            self.shards_note = (f"the DAG has no keyed state to shard: {self.parallelism} threads run whole batches "
                                "side by side")
        elif self.parallelism > 1:
            plan = shard_plan(dag, two_phase=two_phase)
            if isinstance(plan, str):
                self.shards_note = plan
                log.warning("parallelism=%d has no effect: %s; the DAG runs in one executor", self.parallelism, plan)
            else:
                try:
                    self._shards = KeyShards(weakref.proxy(self), plan, self.parallelism)
                except ValueError as exc:
                    self.shards_note = str(exc)
                    log.warning("parallelism=%d has no effect: %s; the DAG runs in one executor", self.parallelism,
                                exc)
                else:  # operator states live in the shards
                    self._state.operator_states = {}
                    weakref.finalize(self, self._shards.pool.shutdown, wait=False)
                    if self._raising:  # a raising kernel takes back every shard's part of the call
                        shards = self._shards
                        self._guard = FaultGuard(self._state, dag, lambda source, batches: shards.run(
                            source, batches, commit=False), self._raising, operators=shards)
        if self._shards is None:  # compiled now rather than at the first batch (key shards run their own)
            for plan in all_plans:
                plan.load()

    def plan(self, source: str) -> SourcePlan:
        """The compiled plan this executor runs for ``source`` (a key shard's plan when it shards), for inspection.

        Returns
        -------
        SourcePlan
            Its ``step`` is the compiled Numba dispatcher (``step.stats.cache_hits`` and ``cache_misses``
            say whether it came from the disk cache); ``compile_seconds``, what building it cost this process.

        Raises
        ------
        UnknownNodeError
            When the DAG has no source ``source``.
        """
        if source not in self._plans:
            raise UnknownNodeError(f"no source {source!r}; this DAG's sources are {', '.join(self._plans)}")
        return self._plans[source] if self._shards is None else self._shards.plans.get(source, self._plans[source])

    @property
    def key_shards(self) -> KeyShards | None:
        """The executor's :class:`KeyShards` (None when it runs as one executor, see :attr:`shards`).

        For inspection: ``key_shards.shards`` holds each shard's :class:`ExecutorState`,
        ``key_shards.group_shard`` the shard owning each of the 256 key groups and
        ``key_shards.group_rows`` the rows seen per key group (one in eight counted).
        """
        return self._shards

    @property
    def shards(self) -> int:
        """Key shards this executor runs: ``parallelism``, or 1 when the DAG cannot be sharded (see :attr:`shards_note`)."""
        return 1 if self._shards is None else self._shards.n

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
        if self._state.finished:
            raise DataError(f"source {source!r}: the executor has finished (finish() was called); "
                            "create a new DagExecutor to process more input")
        spec = self._specs[source]
        checked, dictionaries = self._checked[source]
        batches = [conform(source, spec, b, checked, dictionaries) for b in to_batches(source, batch)]
        if plan.arrow_maps:
            batches = [plan.with_arrow_maps(b) for b in batches]
        rows = batches[0].num_rows if len(batches) == 1 else sum(b.num_rows for b in batches)
        self._guarded(self._apply, source, batches, rows, source=source, what="batch", batches=batches)
        self._state.metrics.events_in += rows
        self._state.metrics.batches += len(batches)

    def _apply(self, source: str, batches: list, rows: int) -> None:
        st = self._state
        now = time.monotonic()
        st.last_input[source] = now
        for other, other_spec in self._specs.items():
            timeout = other_spec.idle_timeout
            if other != source and timeout is not None and now - st.last_input[other] > timeout \
                    and not st.idle[self.dag.node(other).id]:
                self._flush()
                st.idle[self.dag.node(other).id] = True  # takes effect in the next compiled step

        if rows < COALESCE_ROWS and len(batches) == 1 and self._guard is None:
            # Small batches are validated now and queued; the compiled step runs
            # once over many of them (see COALESCE_ROWS). Outputs, metrics and
            # watermarks flush the queue before they are read, so nothing can
            # observe the delay. DAGs with kernels that can raise do not queue:
            # a raising row must fail the call that passed it.
            if st.queued and st.queued_source != source:
                self._flush_queue()
            st.queued.append(batches[0])
            st.queued_source = source
            st.queued_rows += rows
            if st.queued_rows >= COALESCE_FLUSH_ROWS:
                self._flush_queue()
        else:
            self._flush_queue()
            self._run(source, batches)

    def _guarded(self, fn, *args, source: str, what: str, batches=None) -> None:
        """Call ``fn(*args)``; if a kernel raises, take the whole call back and raise :class:`KernelError`."""
        if self._state.broken is not None:
            raise KernelError(self._state.broken)
        guard = self._guard
        if guard is None:
            try:
                return fn(*args)
            except (KernelError, DataError):
                raise
            except Exception as exc:  # a kernel that was not expected to raise: state is partly updated
                self._state.broken = (
                    f"a compiled step raised {type(exc).__name__}: {exc} (source {source!r}, {what}) though "
                    "no kernel of this DAG has a raise statement, so the executor could not take the "
                    "call back and its state is partly updated. Restore the last checkpoint (restore(), "
                    "here or in a new DagExecutor)")
                raise KernelError(self._state.broken) from exc
        before = guard.begin()
        try:
            fn(*args)
        except (KernelError, DataError):
            guard.rollback(before)
            raise
        except Exception as exc:  # a user kernel raised inside a compiled step
            guard.rollback(before)
            row, first, batch = None, None, None
            if batches and sum(b.num_rows for b in batches):
                batch = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
                row, first = guard.first_failing_row(source, batch)
            raise kernel_error(self.dag, source, what, row, first or exc, self._raising, batch) from (first or exc)
        guard.commit()

    def _flush(self) -> None:
        """Run what waits: the queued small batches, and the batches running side by side (their results)."""
        self._flush_queue()
        flight = self._side.inflight
        if flight is not None and flight.running:
            self._guarded(self._side.take_all, source=flight.source, what="batches run side by side")

    def _flush_queue(self) -> None:
        """Run the queued small batches through the step as one batch."""
        if not self._state.queued:
            return
        source, queue = self._state.take_queued()
        self._guarded(self._run, source, [queue[0] if len(queue) == 1 else pa.concat_batches(queue)],
                      source=source, what="queued batches")

    def _run(self, source: str, batches: list[pa.RecordBatch]) -> None:
        """Run validated batches; commit counters and outputs only if all succeed."""
        if self._side.inflight is not None:
            return self._side.run(source, batches)
        if self._guard is not None:
            self._guard.record(source, batches)
        if self._shards is not None:
            return self._shards.run(source, batches)
        counters, produced = self._execute(source, batches)
        self._state.metrics.counters = counters
        outputs = self._state.outputs
        for ran, b, result, *ready in produced:  # (rows threads built side by side: ready)
            for layout in ran.sinks:
                outputs[layout.sink].add_made(b, result, layout, ready[0][layout.sink] if ready else None)

    def _execute(self, source: str, batches: list[pa.RecordBatch]) -> tuple:
        """Run the compiled steps of ``source`` over ``batches``, updating state, watermarks and idle flags.

        Returns the updated metric counters (a copy) and the step results, which :meth:`_run` commits.
        """
        plan = self._plans[source]
        counters = self._state.metrics.counters.copy()
        produced: list[tuple] = []  # (plan, batch, step result)
        operator_states = self._state.operator_states
        states = [operator_states[nid] for nid in plan.stateful_ids] if plan.stateful_ids else []
        if plan.due_grids or plan.window_pieces:
            batches = [b.slice(lo, hi - lo) if hi - lo < b.num_rows else b for b in batches
                       for cuts in [self._cuts(source, plan, b)] for lo, hi in zip(cuts[:-1], cuts[1:])]
        for b in batches:
            if self.threads > 1 and plan.parallel_safe and b.num_rows >= PARALLEL_MIN_ROWS:
                produced += self._side.slices(plan, b, counters)
            else:
                self._run_with_boundaries(plan, b, states, counters, produced)
        return counters, produced

    def _cuts(self, source: str, plan, b: pa.RecordBatch, piece_rows: int = WINDOW_PIECE_ROWS) -> list[int]:
        """Where the steps of ``plan`` cut ``b``: ``[0, ..., b.num_rows]`` (see :meth:`_cut_at_due_windows`),
        in pieces of at most ``piece_rows``."""
        if plan.due_grids:
            return self._cut_at_due_windows(source, plan, b, piece_rows)
        if plan.window_pieces:
            return [*range(0, b.num_rows, piece_rows), b.num_rows] if b.num_rows else [0, 0]
        return [0, b.num_rows]

    def _run_with_boundaries(self, plan, b: pa.RecordBatch, states, counters, produced: list,
                             wm_rows: int | None = None) -> None:
        """Run ``plan``'s step on ``b``, then the rows of its boundary nodes through their own steps.

        A boundary node's rows carry its watermark from before the step that
        emitted them (``wm_rows``), as they would inside one step. Their numeric
        columns reach the next step as the numpy arrays this step computed
        (:class:`StepRows`); the columns the next step's ArrowMaps compute are
        added to them first (in Arrow).
        """
        st = self._state
        offsets = self.dag.routing.offsets
        before = [int(st.watermarks[layout.node_id]) for layout in plan.boundaries] if plan.boundaries else ()
        result = run_step(plan, b, offsets, counters, (st.watermarks, st.idle), states, st.dictionaries, wm_rows)
        produced.append((plan, b, result))
        for layout, wm_rows in zip(plan.boundaries, before):
            joined = StepRows(layout, st.dictionaries, b, result)  # numeric columns stay numpy arrays
            node = self.dag.nodes[layout.node_id]
            if getattr(node.op, "between_steps", False):  # its input rows: it emits the rows its step takes
                joined = self._between_steps(node, joined.arrow(), wm_rows, counters)
            derived = self._derived[layout.sink]
            if derived.arrow_maps:
                joined = derived.with_arrow_maps(as_batch(joined))
            self._run_with_boundaries(derived, joined, [st.operator_states[nid] for nid in derived.stateful_ids],
                                      counters, produced, wm_rows)

    def _between_steps(self, node, rows: pa.RecordBatch, wm_rows: int, counters) -> pa.RecordBatch:
        """Run an operator that works between steps on its input ``rows``; its output as one batch."""
        st = self._state
        out, late = st.operator_states[node.id].process(rows, wm_rows, int(st.watermarks[node.id]))
        layout = MetricsLayout(len(self.dag.nodes))
        counters[layout.index("late_events")] += late
        counters[layout.index("late_events", node.id)] += late
        counters[layout.index("rows_out", node.id)] += out.num_rows
        out = out.combine_chunks()
        return out.to_batches()[0] if out.num_rows else pa.RecordBatch.from_pylist([], schema=out.schema)

    @property
    def compile_seconds(self) -> float:
        """Seconds this executor's construction spent compiling its plans or loading them from the disk cache.

        Near zero when the plans were already in this process's memo.
        """
        shards = self._shards.plans.values() if self._shards is not None else ()
        return sum(p.compile_seconds for p in [*self._plans.values(), *self._derived.values(), *shards])

    @property
    def metrics(self) -> Metrics:
        """Counters of this executor (see :class:`Metrics`)."""
        self._flush()
        return self._state.metrics

    @property
    def state(self) -> ExecutorState:
        """Everything this executor changes as it runs: operator states, dictionaries, watermarks, outputs, ...

        The live object, not a copy (see :class:`ExecutorState`); take a copy
        with :meth:`checkpoint`. Small batches may still wait in its
        ``queued`` list: :attr:`metrics`, :meth:`watermark`,
        :meth:`take_sink_outputs` and :meth:`checkpoint` run them first.
        """
        return self._state

    def _cut_at_due_windows(self, source: str, plan, b: pa.RecordBatch, piece_rows: int) -> list[int]:
        """Split ``b`` where its running watermark makes a sliding window due and a later row may fall in it.

        Rows are folded into panes shared by several windows; a window that
        became due *before* a row arrived must not see it. Cutting the batch at
        those points lets each compiled call fire due windows before the next
        rows, exactly as row-at-a-time processing would, so the output still
        does not depend on how the input was batched. No cut is needed where
        every later row of the batch is past the end of each window made due
        (the usual case when the watermark's delay covers the disorder), but
        pieces are kept to ``piece_rows``.
        """
        spec = self._specs[source]
        if spec.watermark is None or b.num_rows < 2:
            return [0, b.num_rows]
        ts, _ = column_view(b.column(spec.event_time), np.dtype(np.int64))
        delay = to_units(spec.watermark.delay, spec.schema.field(spec.event_time).type)
        grids = np.array([(slide, phase, lateness, column == spec.event_time)
                          for slide, phase, lateness, column in plan.due_grids], np.int64).reshape(-1, 4)
        starts = due_cuts(ts, int(self._state.watermarks[self.dag.node(source).id]), delay, grids, piece_rows)
        return [0, *starts.tolist(), b.num_rows]

    def finish(self) -> None:
        """End of input: advance every watermark to +∞ and flush what is pending.

        Every open window is emitted. After ``finish`` the executor accepts no
        more input; sink outputs stay available through :meth:`take_sink_outputs`.
        """
        if self._state.finished:
            return
        self._flush()
        self._guarded(self._finish, source=None, what="finish()")

    def _finish(self) -> None:
        st = self._state
        for source in self._plans:
            st.watermarks[self.dag.node(source).id] = np.iinfo(np.int64).max
            st.idle[self.dag.node(source).id] = False
        for source in self._plans:
            self._tick(source)
        st.finished = True

    # ------------------------------------------------------------------ time
    def watermark(self, source: str) -> int:
        """Current watermark of a node (usually a source) in event-time units.

        Before any event it is the int64 minimum; after :meth:`finish`, the
        int64 maximum. A source's watermark is the largest event time seen
        minus its strategy's delay, or what :meth:`advance_watermark` set.
        """
        node = self.dag.node(source)
        self._flush()
        return int(self._state.watermarks[node.id])

    def advance_watermark(self, source: str, timestamp: int) -> None:
        """Explicit punctuation: raise ``source``'s watermark to ``timestamp`` (never lowers it).

        Windows whose end (plus lateness) the new watermark passes are emitted now.
        """
        self._check_source(source)
        self._flush()
        self._guarded(self._advance, source, int(timestamp), source=source, what="advance_watermark()")

    def _advance(self, source: str, timestamp: int) -> None:
        st, nid = self._state, self.dag.node(source).id
        st.watermarks[nid] = max(int(st.watermarks[nid]), timestamp)
        st.idle[nid] = False
        self._tick(source)

    def _raise_watermark(self, source: str, timestamp: int) -> None:
        """Raise ``source``'s watermark without running a step.

        The next batch (or :meth:`advance_watermark`) of ``source`` runs with
        it and emits whatever it made due — the same as punctuating first,
        minus one step. The partitioned runner uses it to fold the watermark
        that arrives with a batch into the following batch.
        """
        self._check_source(source)
        self._flush()
        st, nid = self._state, self.dag.node(source).id
        st.watermarks[nid] = max(int(st.watermarks[nid]), int(timestamp))
        st.idle[nid] = False

    def mark_idle(self, source: str) -> None:
        """Declare ``source`` idle: it no longer holds back the watermark of fan-ins and joins.

        The source becomes active again with its next non-empty batch. Sources
        declared with ``idle_timeout=`` are marked idle automatically after that
        many seconds (processing time) without input.
        """
        self._check_source(source)
        self._flush()
        self._guarded(self._mark_idle, source, source=source, what="mark_idle()")

    def _mark_idle(self, source: str) -> None:
        self._state.idle[self.dag.node(source).id] = True
        for other in self._plans:
            self._tick(other)

    def _tick(self, source: str) -> None:
        """Run ``source``'s step on no rows: propagate watermarks, fire due windows."""
        empty = pa.RecordBatch.from_pylist([], schema=self._specs[source].schema)
        for name, (*_, arrow_type) in self._plans[source].arrow_maps.items():
            empty = empty.append_column(name, pa.array([], arrow_type))
        self._run(source, [empty])

    def _check_source(self, source: str) -> None:
        if source not in self._plans:
            raise UnknownNodeError(f"no source {source!r}; this DAG's sources are {', '.join(self._plans)}")
        if self._state.finished:
            raise DataError(f"source {source!r}: the executor has finished (finish() was called)")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self):
        """Snapshot all state between two batches, as a :class:`~laminar_jit.Checkpoint`.

        It holds copies of every operator's state arrays (hash tables, open
        windows and panes, sessions, keyed records, timers), the string
        dictionaries, watermarks, idle flags, metrics and sink outputs not yet
        taken; the executor continues unaffected. Write it with
        :meth:`Checkpoint.save`.

        A checkpoint does not depend on ``parallelism``: key shards' states
        are saved merged, as one executor's, so it restores onto an executor
        of any parallelism (each shard takes the keys of its key groups).
        """
        self._flush()
        merged = None if self._shards is None else self._shards.merged_states()
        return capture_checkpoint(self.dag, self._state, merged)

    def restore(self, checkpoint) -> None:
        """Continue from ``checkpoint``: replace all of this executor's state by it.

        The executor must run the DAG the checkpoint was taken from, at any
        ``parallelism``. Fed the input that followed the checkpoint, it then
        produces exactly what the checkpointed executor would have. Sink outputs not taken at the
        checkpoint are available again; anything this executor held before is
        discarded.

        Raises
        ------
        CheckpointError
            The checkpoint comes from a different DAG (the message lists the
            nodes that differ) or its state does not fit; nothing changes then.
        """
        st = self._state
        restore_checkpoint(self.dag, st, checkpoint)  # clears the queue and the broken flag
        if self._shards is not None:  # the restored states are one executor's: split by key group
            self._shards.distribute(st.operator_states, st.watermarks, st.idle)
            st.operator_states = {}
        if self._guard is not None:
            self._guard.reset()

    # ------------------------------------------------------------------ output
    def take_sink_outputs(self, sink: str) -> pa.Table:
        """Everything ``sink`` received since the last call, as one table (drained).

        Returns an empty table with the sink's schema when nothing arrived.
        """
        outputs = self._state.outputs
        if sink not in outputs:
            raise UnknownNodeError(f"no sink {sink!r}; this DAG's sinks are {', '.join(outputs)}")
        self._flush()
        return outputs[sink].drain()

    def take_all_sink_outputs(self) -> dict[str, pa.Table]:
        """:meth:`take_sink_outputs` for every sink, by sink name."""
        return {sink: self.take_sink_outputs(sink) for sink in list(self._state.outputs)}

    def __repr__(self) -> str:
        return f"DagExecutor(sources={list(self._plans)}, sinks={list(self._state.outputs)}, {self.metrics!r})"


#: Batches smaller than this are queued and run through the step together:
#: a compiled call and its Arrow boundary cost ~50 µs whatever the batch size.
COALESCE_ROWS = 256
#: The queue runs once it holds this many rows (or anything reads results).
COALESCE_FLUSH_ROWS = 4096


def _weakly(method):
    """Bound ``method`` as a function that does not keep its object alive (an executor's helpers call back into
    it; a strong reference would make a cycle, and the executor's state would wait for the garbage collector)."""
    ref = weakref.WeakMethod(method)
    return lambda *args, **kw: ref()(*args, **kw)
