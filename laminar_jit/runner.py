"""``lj.run``: drive sources through a DAG into sinks, with checkpoints and recovery.

One loop reads a batch from each source in turn (round robin), pushes it
through the :class:`DagExecutor`, and hands the sinks their outputs. Every
``checkpoint_every`` batches or ``checkpoint_interval`` seconds it takes a
checkpoint in the order that makes output exactly-once:

1. outputs produced so far go to the sinks (they close the current epoch);
2. every sink pre-commits the epoch (durable, not yet visible);
3. the checkpoint, holding each source's position, is saved atomically;
4. every sink commits the epoch (visible).

A crash before 3 replays the epoch from the previous checkpoint and the sinks
discard what they had staged; a crash after 3 resumes from this checkpoint
and the sinks finish the commit. A write that fails in any of these steps (a
full disk, say) stops the run with a ``CheckpointError`` in the same state as
such a crash. A source whose data turns out damaged stops the run with a
``DataError`` after a final checkpoint of everything read before it.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _fs
from .checkpoint.store import CheckpointStore
from .dag.builder import DagBuilder
from .dag.graph import StreamingDag
from .errors import CheckpointError, DataError, KernelError, UnknownNodeError
from .executor import DagExecutor, Metrics
from .executor.shards import resolve_parallelism
from .io.sinks import Sink
from .io.adapt import as_source
from .io.shards import resume_shards

__all__ = ["RunStats", "run"]

#: Outputs are handed to sinks at least this often (rows read), besides checkpoints.
_DRAIN_ROWS = 1 << 20
#: Default checkpoint interval (seconds) when a checkpoint directory is given.
DEFAULT_INTERVAL = 10.0
_WM_MAX = np.iinfo(np.int64).max


@dataclass
class RunStats:
    """What a call of :func:`run` did.

    Attributes
    ----------
    events : int
        Rows read from the sources in this call.
    batches : int
        Batches read in this call.
    elapsed : float
        Seconds of this call (executor construction included).
    checkpoints : int
        Checkpoints saved in this call.
    epoch : int
        Epoch of the last completed checkpoint (0: none).
    resumed_from : int or None
        Epoch of the checkpoint this call resumed from.
    finished : bool
        The input was exhausted and the executor finished (all windows emitted). A run
        whose unbounded source (a change stream) stopped does not finish: its windows
        stay open and running again with the same ``checkpoint_dir`` continues it.
    interrupted : bool
        Stopped by Ctrl-C (SIGINT) after taking a final checkpoint.
    rows_out : dict of str to int
        Rows delivered per sink in this call.
    positions : dict of str to int
        Rows consumed per source (over all calls of a resumed run).
    metrics : Metrics or None
        The executor's counters (restored ones included); None for a
        partitioned run (each partition has its own).
    restarts : int
        Partitioned runs: times the workers were restored after one died.
    recovered_from : list of int
        Partitioned runs: per restart, the epoch of the checkpoint the
        workers were restored from (0: started over).
    partition_seconds : list of float
        Partitioned runs: seconds each partition spent processing rows (the
        partitions' share of ``elapsed``, for judging balance and scaling).
    read_seconds : list of float
        Partitioned runs: seconds each worker spent reading its shards,
        running the stateless operators and routing rows (the exchange).
    startup_seconds : float
        Partitioned runs: seconds spent starting workers (process start,
        imports, plan loading, restores) — part of ``elapsed``.
    compile_seconds : float
        Single-process runs: seconds of ``elapsed`` spent compiling the plans
        (or loading them from the on-disk cache).
    shards : int
        Single-process runs: key shards the executor ran (1 with
        ``parallelism=1``, or when the DAG cannot be sharded: see
        :attr:`DagExecutor.shards_note <laminar_jit.DagExecutor.shards_note>`).
    """

    events: int = 0
    batches: int = 0
    elapsed: float = 0.0
    checkpoints: int = 0
    epoch: int = 0
    resumed_from: int | None = None
    finished: bool = False
    interrupted: bool = False
    rows_out: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)
    metrics: Metrics | None = None
    restarts: int = 0
    recovered_from: list = field(default_factory=list)
    partition_seconds: list = field(default_factory=list)
    read_seconds: list = field(default_factory=list)
    startup_seconds: float = 0.0
    compile_seconds: float = 0.0
    shards: int = 1

    @property
    def events_per_second(self) -> float:
        """``events / elapsed``."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    def __str__(self) -> str:
        state = "finished" if self.finished else "interrupted" if self.interrupted else "stopped"
        resumed = f", resumed from checkpoint {self.resumed_from}" if self.resumed_from else ""
        batches = f"{self.batches:,} batch" + ("" if self.batches == 1 else "es")
        checkpoints = f"{self.checkpoints} checkpoint" + ("" if self.checkpoints == 1 else "s")
        compiled = f" (compiling {self.compile_seconds:.2f} s of it)" if self.compile_seconds >= 0.01 else ""
        shards = f" in {self.shards} key shards" if self.shards > 1 else ""
        return (f"{state}: {self.events:,} events in {batches}{shards}, {self.elapsed:.2f} s{compiled} "
                f"({self.events_per_second / 1e6:.2f} M events/s), {checkpoints}{resumed}; "
                f"rows out: {self.rows_out}")


def run(dag, sources: dict, sinks: dict, checkpoint_dir=None, checkpoint_every: int | None = None,
        checkpoint_interval: float | None = None, keep: int = 3, progress: bool = True,
        parallelism: int | str = 1, partitions: int | None = None, cluster: str | None = None,
        address: str | None = None, max_restarts: int = 3, two_phase: bool = False) -> RunStats:
    """Run ``dag`` over ``sources`` into ``sinks`` until the sources are exhausted.

    With a ``checkpoint_dir`` the run is restartable and its exactly-once
    sinks (:class:`~laminar_jit.io.ParquetSink`) hold every output row
    exactly once across crashes: called again with the same directory (after
    a crash, a kill or Ctrl-C) it resumes from the latest checkpoint, seeking
    every source to its saved position. A run that already finished returns
    at once.

    Parameters
    ----------
    dag : StreamingDag or DagBuilder
    sources : dict of str to source
        One entry per source node: a :class:`~laminar_jit.io.Source`, a
        ``pa.Table``, a list of record batches, a Parquet/Arrow file path, or
        any object exporting ``__arrow_c_stream__`` (see
        :func:`~laminar_jit.io.as_source`).
    sinks : dict of str to Sink
        One entry per sink of the DAG.
    checkpoint_dir : str or os.PathLike, optional
        Directory of this run's checkpoints (``chk-<epoch>/``; a partitioned
        run's: ``job-<epoch>/``). Without it nothing is checkpointed and sinks
        commit when the run ends. The newest checkpoint here is continued
        whatever wrote it: a one-process run's by a partitioned run (its
        keyed state split by partition), a partitioned run's by a run in one
        process or at another number of partitions (the partitions' states
        merged, string codes rewritten to merged dictionaries).
    checkpoint_every : int, optional
        Take a checkpoint every this many batches.
    checkpoint_interval : float, optional
        Take a checkpoint every this many seconds (default 10 when a
        ``checkpoint_dir`` is given and ``checkpoint_every`` is not).
    keep : int, default 3
        Completed checkpoints kept; older ones are deleted.
    progress : bool, default True
        Show a progress bar with events/s (tqdm); single-process runs only.
    parallelism : int or "auto", default 1
        Key shards of the executor: threads of this process, each owning the
        state of the keys of its key groups (see
        :class:`~laminar_jit.DagExecutor`); ``"auto"`` uses the cores the
        process may use. Output, late rows and checkpoints are those of
        ``parallelism=1``, so a run may resume at another parallelism. In a
        partitioned run: the key shards of each partition.
    two_phase : bool, default False
        With ``parallelism > 1``, run windows (and windowed TopNs) without a
        key in every shard, their results combined as they fire (see
        :class:`~laminar_jit.DagExecutor`); single-process runs only.
    partitions : int, optional
        Run on ``partitions`` Ray actors, each owning the state of one key
        range, fed by as many readers of source shards
        (:meth:`Source.split <laminar_jit.io.Source.split>`). Stateless
        operators next to the sources run in the readers; rows cross to the
        partitions hash-partitioned by the key of the first stateful
        operator. Output is the same multiset as a single-process run's
        when no row is late. ``checkpoint_every`` then counts batches per
        reader. Needs the ``ray`` extra.
    cluster : {"ray"}, optional
        The cluster runtime of a partitioned run (the only one is Ray; the
        default when ``partitions`` or ``address`` is given).
    address : str, optional
        Address of a running Ray cluster (``"host:6379"``, ``"ray://host:10001"``
        or ``"auto"``); None starts a local Ray unless one is already
        initialized in this process.
    max_restarts : int, default 3
        Partitioned runs: how often to restore all actors from the last
        complete checkpoint after one dies before giving up.

    Returns
    -------
    RunStats

    Raises
    ------
    UnknownNodeError
        A key of ``sources``/``sinks`` is not a source/sink of the DAG.
    ValueError
        A source or sink of the DAG has no entry, or the options conflict.
    CheckpointError
        The latest checkpoint is damaged or was taken from another DAG, or
        another run is using ``checkpoint_dir`` (one run per directory, held
        by a lock the OS releases if the process dies); or a checkpoint or a
        sink's files could not be written (a full disk, no permission, an I/O
        error). Then the previous checkpoint is intact and no sink shows rows
        it did not commit: calling ``run`` again with the same
        ``checkpoint_dir`` once the cause is fixed loses and repeats nothing.
    DataError
        A source's data is damaged (a truncated or corrupt Parquet, IPC or
        CSV file). The message names the source, the file and the row
        reached; with a ``checkpoint_dir`` every row before that row was
        processed and committed with a final checkpoint, so a run called
        again once the file is repaired continues at that row.
    PartitioningError
        With ``partitions > 1``: a stateful operator is not keyed by the
        columns its input is partitioned by.
    ClusterError
        The Ray cluster cannot be reached, or actors died more than
        ``max_restarts`` times.

    Notes
    -----
    Sources are read one batch at a time in turn. A source that runs out
    gets an infinite watermark (as a finished bounded source in Flink), so
    joins and fan-ins stop waiting for it. Ctrl-C stops after the current
    batch, takes a final checkpoint, and returns with ``interrupted=True``
    (a second Ctrl-C aborts at once).
    """
    t0 = time.perf_counter()
    if isinstance(dag, DagBuilder):
        dag = dag.build()
    if not isinstance(dag, StreamingDag):
        raise TypeError(f"run: dag must be a StreamingDag (DagBuilder.build()), got {type(dag).__name__}")
    sources = _match("source", dict(sources), dag.sources)
    sinks = _match("sink", dict(sinks), dag.sinks)
    sources = {name: as_source(s) for name, s in sources.items()}
    for name, s in sinks.items():
        if not isinstance(s, Sink):
            raise TypeError(f"run: sink {name!r} is a {type(s).__name__}, expected a laminar_jit.io Sink "
                            "(MemorySink(), ParquetSink(dir), CallbackSink(fn))")
    if checkpoint_every is not None and checkpoint_interval is not None:
        raise ValueError("run: give checkpoint_every (batches) or checkpoint_interval (seconds), not both")
    if checkpoint_dir is None and (checkpoint_every is not None or checkpoint_interval is not None):
        raise ValueError("run: checkpoint_every/checkpoint_interval need a checkpoint_dir to write to")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every <= 0):
        raise ValueError(f"run: checkpoint_every must be a positive number of batches, got {checkpoint_every!r}")
    if checkpoint_interval is not None and not checkpoint_interval > 0:
        raise ValueError(f"run: checkpoint_interval must be positive seconds, got {checkpoint_interval!r}")
    if not isinstance(keep, int) or keep < 1:
        raise ValueError(f"run: keep must be a positive number of checkpoints, got {keep!r}")
    if checkpoint_dir is not None and checkpoint_every is None and checkpoint_interval is None:
        checkpoint_interval = DEFAULT_INTERVAL

    try:
        resolve_parallelism(parallelism)  # before any work
    except ValueError as exc:
        raise ValueError(f"run: {exc}") from None
    if partitions is not None or cluster is not None or address is not None:
        if two_phase:
            raise ValueError("run: two_phase=True runs windows without a key in the key shards of one process; "
                             "a partitioned run deals rows to partitions by key, so drop two_phase or partitions")
        return _run_partitioned(dag, sources, sinks, checkpoint_dir, checkpoint_every, checkpoint_interval, keep,
                                partitions, parallelism, cluster, address, max_restarts, t0)
    ex = DagExecutor(dag, parallelism=parallelism, two_phase=two_phase)
    store = CheckpointStore(Path(checkpoint_dir), keep) if checkpoint_dir is not None else None
    try:
        return _run(ex, dag, sources, sinks, store, checkpoint_every, checkpoint_interval, progress, t0)
    finally:
        if store is not None:
            store.close()


def _run_partitioned(dag, sources, sinks, checkpoint_dir, every, interval, keep, partitions, parallelism, cluster,
                     address, max_restarts, t0) -> RunStats:
    if cluster not in (None, "ray"):
        raise ValueError(f"run: cluster must be 'ray' (the only cluster runtime), got {cluster!r}")
    partitions = 1 if partitions is None else partitions
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"run: partitions must be a positive int, got {partitions!r}")
    if not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"run: max_restarts must be an int >= 0, got {max_restarts!r}")
    from .distributed.coordinator import run_partitioned

    stats = RunStats(rows_out={name: 0 for name in sinks})
    lock = CheckpointStore(Path(checkpoint_dir), keep) if checkpoint_dir is not None else None
    try:
        run_partitioned(dag, sources, sinks, stats, partitions, parallelism, address, checkpoint_dir, every,
                        interval, keep, max_restarts)
    finally:
        if lock is not None:
            lock.close()
        stats.elapsed = time.perf_counter() - t0
    return stats


def _run(ex, dag, sources, sinks, store, checkpoint_every, checkpoint_interval, progress, t0) -> RunStats:
    stats = RunStats(rows_out={name: 0 for name in sinks}, compile_seconds=ex.compile_seconds, shards=ex.shards)
    positions = {name: 0 for name in sources}
    cp = store.latest() if store is not None else None
    if store is not None:
        cp = _newer_job(store, dag, cp)
    if cp is not None:
        ex.restore(cp)
        positions.update({k: v for k, v in cp.positions.items() if k in positions})
        stats.resumed_from = stats.epoch = cp.epoch
        sources = {name: resume_shards(src, name, cp.positions, dag.node(name).op.event_time)
                   for name, src in sources.items()}
    restored_epoch = None if store is None else stats.epoch
    for name, sink in sinks.items():
        try:
            sink.open(dag.schema_of(name), restored_epoch)
        except OSError as e:  # e.g. finishing a commit a crash interrupted, on a full disk
            _close(sinks)
            resuming = f" to resume from checkpoint {restored_epoch}" if restored_epoch else ""
            raise CheckpointError(f"lj.run: sink {name!r} ({sink!r}) could not be opened{resuming}: "
                                  f"{_fs.explain_os_error(e)}. Fix the cause and call lj.run again: opening can be "
                                  "repeated, nothing is lost or written twice") from e
    stats.metrics = ex.metrics
    stats.positions = positions
    if cp is not None and cp.finished:
        stats.finished = True
        _close(sinks)
        stats.elapsed = time.perf_counter() - t0
        return stats

    loop = _Loop(ex, sources, sinks, positions, stats, store, checkpoint_every, checkpoint_interval)
    try:
        with _StopOnSigint() as stop, _progress(progress, sources, positions) as bar:
            loop.run(stop, bar)
    finally:
        _close(sinks)
        stats.elapsed = time.perf_counter() - t0
    stats.metrics = ex.metrics
    return stats


def _newer_job(store, dag, cp):
    """A partitioned run's checkpoint here newer than ``cp``, as one executor's (saved as ``chk-<epoch>``), or ``cp``.

    Its partitions' states merge into one (see :func:`laminar_jit.distributed.rescale.merge_job`); the
    sources its workers read as shards continue shard by shard.
    """
    from .distributed.coordinator import complete_job_epochs, job_as_one

    jobs = complete_job_epochs(store.root)
    if not jobs or jobs[-1] <= (cp.epoch if cp is not None else -1):
        return cp
    merged = job_as_one(store.root, dag, jobs[-1])
    store.save(merged)
    return merged


class _Loop:
    def __init__(self, ex, sources, sinks, positions, stats, store, every, interval):
        self.ex, self.sources, self.sinks, self.positions = ex, sources, sinks, positions
        self.stats, self.store, self.every, self.interval = stats, store, every, interval
        self.epoch = stats.epoch + 1  # the epoch rows go to now

    def run(self, stop, bar) -> None:
        ex = self.ex
        iterators = {name: iter(src.batches(self.positions[name])) for name, src in self.sources.items()}
        since_batches, since_rows, last = 0, 0, time.monotonic()
        paused = False  # an unbounded source stopped: end resumably, as a stop with a checkpoint does
        while iterators and not stop.requested and not paused:
            for name in list(iterators):
                try:
                    batch = next(iterators[name], None)
                except DataError as e:  # a damaged file: keep what was read before it, then stop
                    self.stop_on_bad_input(name, e)
                if batch is None:
                    del iterators[name]
                    if self.sources[name].unbounded:
                        paused = True
                        break
                    if iterators:  # a finished source must not hold back the others' windows
                        ex.advance_watermark(name, _WM_MAX)
                    continue
                try:
                    ex.process_batch(name, batch)
                except KernelError as exc:
                    exc.add_note(self._stopped_note(name))
                    raise
                n = batch.num_rows
                self.positions[name] = self.sources[name].position_after(self.positions[name], batch)
                self.stats.events += n
                self.stats.batches += 1
                since_batches += 1
                since_rows += n
                bar.update(n)
                if since_rows >= _DRAIN_ROWS:
                    self.drain()
                    since_rows = 0
                if self.store is not None and (
                        (self.every is not None and since_batches >= self.every)
                        or (self.interval is not None and time.monotonic() - last >= self.interval)):
                    self.checkpoint()
                    bar.set_postfix(checkpoint=self.stats.epoch, refresh=False)
                    since_batches, since_rows, last = 0, 0, time.monotonic()
                if stop.requested:
                    break
        if stop.requested:
            self.stats.interrupted = True
        elif not paused:
            ex.finish()
            self.stats.finished = True
        if self.store is not None:
            self.checkpoint()
        else:
            self.drain()
            self.pre_commit(self.epoch)
            self.commit(self.epoch, saved=False)

    def _stopped_note(self, source: str) -> str:
        """What a run stopped by a raising kernel keeps, and how to go on."""
        where = f"lj.run stopped at source {source!r} after {self.positions[source]:,} of its rows"
        if self.store is None:
            return (f"{where}. Without a checkpoint_dir nothing was committed to the sinks; fix the data or the "
                    "kernel and run again")
        last = f"checkpoint epoch {self.stats.epoch}" if self.stats.epoch else "no checkpoint yet (it starts over)"
        return (f"{where}. The last checkpoint is intact ({last}); rows after it were not committed. Fix the data "
                "(or the kernel, which changes the DAG and needs a new checkpoint_dir) and run again with the same "
                "checkpoint_dir: it resumes from there and every row reaches the sinks exactly once")

    def drain(self) -> None:
        for name, sink in self.sinks.items():
            table = self.ex.take_sink_outputs(name)
            if table.num_rows:
                try:
                    sink.write(table, self.epoch)
                except OSError as e:
                    raise self.storage_error(f"sink {name!r} ({sink!r}) could not write rows of epoch "
                                             f"{self.epoch}", e) from e
                self.stats.rows_out[name] += table.num_rows

    def checkpoint(self) -> None:
        epoch = self.epoch
        self.drain()
        self.pre_commit(epoch)
        cp = self.ex.checkpoint()
        cp.positions, cp.epoch = dict(self.positions), epoch
        for name, source in self.sources.items():  # a source continued as shards: where each shard is
            cp.positions.update(getattr(source, "shard_positions", lambda _: {})(name))
        try:
            self.store.save(cp)
        except CheckpointError as e:
            raise self.storage_error(f"checkpoint {epoch} could not be saved", e) from e
        self.commit(epoch, saved=True)
        for name, source in self.sources.items():  # e.g. a CDC source may now forget what precedes it
            source.checkpoint_committed(cp.positions[name])
        self.stats.epoch, self.stats.checkpoints = epoch, self.stats.checkpoints + 1
        self.epoch = epoch + 1

    def pre_commit(self, epoch: int) -> None:
        for name, sink in self.sinks.items():
            try:
                sink.pre_commit(epoch)
            except OSError as e:
                raise self.storage_error(f"sink {name!r} ({sink!r}) could not stage the rows of epoch {epoch}",
                                         e) from e

    def commit(self, epoch: int, saved: bool) -> None:
        for name, sink in self.sinks.items():
            try:
                sink.commit(epoch)
            except OSError as e:
                saved_note = f"checkpoint {epoch} is saved, but " if saved else ""
                raise self.storage_error(f"{saved_note}sink {name!r} ({sink!r}) could not make its rows visible "
                                         "(they stay staged, none of them visible)", e) from e

    def storage_error(self, what: str, cause: Exception) -> CheckpointError:
        """A :class:`CheckpointError` for a write that failed: what failed, why, what is intact, how to go on."""
        detail = str(cause) if isinstance(cause, CheckpointError) else _fs.explain_os_error(cause)
        if self.store is None:
            return CheckpointError(
                f"lj.run: {what}: {detail}. This run keeps no checkpoints, so nothing of it was committed; "
                "fix the cause and run it again from the start")
        epochs = self.store.epochs()
        intact = (f"the latest complete checkpoint is {epochs[-1]} "
                  f"({str(self.store.root / f'chk-{epochs[-1]:08d}')!r})" if epochs
                  else "no checkpoint was completed yet")
        return CheckpointError(
            f"lj.run: {what}: {detail}. Nothing was lost: {intact}. Fix the cause, then call lj.run again with "
            f"checkpoint_dir={str(self.store.root)!r}: it resumes from that checkpoint, replays the rows read "
            "since, and exactly-once sinks (ParquetSink) drop or finish what they had staged, so no row is "
            "lost or written twice")

    def stop_on_bad_input(self, name: str, error: DataError):
        """Checkpoint everything read before a source's damaged data, then raise a :class:`DataError`.

        Sources raise :class:`DataError` only between batches, so ``positions[name]`` is the first row
        not read: a rerun from this checkpoint, once the data is repaired, continues exactly there.
        """
        at = self.positions[name]
        if self.store is None:
            raise DataError(f"lj.run: source {name!r} stopped at row {at:,}: {error} — this run keeps no "
                            "checkpoints, so nothing was committed; repair the data and run it again") from error
        try:
            self.checkpoint()
        except CheckpointError as e:
            raise DataError(f"lj.run: source {name!r} stopped at row {at:,}: {error} — and the checkpoint of "
                            f"the rows before it failed too: {e}") from error
        raise DataError(
            f"lj.run: source {name!r} stopped at row {at:,}: {error} — every row before it was processed once "
            f"and committed with checkpoint {self.stats.epoch} "
            f"({str(self.store.root / f'chk-{self.stats.epoch:08d}')!r}). Repair or replace the data, then call "
            f"lj.run again with checkpoint_dir={str(self.store.root)!r}: it continues from row {at:,}") from error


def _match(kind: str, given: dict, expected: list[str]) -> dict:
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise UnknownNodeError(f"run: {kind}s {unknown} are not {kind}s of this DAG; its {kind}s are {expected}")
    missing = [name for name in expected if name not in given]
    if missing:
        example = "lj.io.MemorySink()" if kind == "sink" else "a table, file path or lj.io source"
        raise ValueError(f"run: no {kind} given for {missing}; pass {kind}s={{{missing[0]!r}: {example}, ...}} "
                         f"for every {kind} of the DAG")
    return {name: given[name] for name in expected}


def _close(sinks: dict) -> None:
    for sink in sinks.values():
        sink.close()


class _StopOnSigint:
    """Turn the first Ctrl-C into a stop request checked between batches; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool, sources: dict, positions: dict):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    totals = [s.total_rows for s in sources.values()]
    total = sum(totals) if None not in totals else None
    return tqdm(total=total, initial=sum(positions.values()), unit="ev", unit_scale=True, desc="laminar-jit run",
                dynamic_ncols=True)
