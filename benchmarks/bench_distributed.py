"""Partitioned runs on a local Ray: scaling with ``partitions`` and the cost of the exchange.

The workload is the 10 s tumbling window per auction of ``bench_windows``
(count, sum, max) over 20 M events read from one Parquet file of 65,536-row
row groups, which ``ParquetSource.split`` deals round robin to the workers.

* ``Partitioned.track_events_per_second``: events over the run's wall time
  after the workers started (``RunStats.elapsed - startup_seconds``), for
  ``partitions`` 1 and 2 — the scaling ratio is p2 / p1 from one asv run.
  ``time_run`` is the whole call, worker start-up included.
* ``SingleProcess.time_run``: ``lj.run`` in this process, no Ray, on the same
  file: the single-process per-event cost.
* ``DuckDBParquet.time_query``: the same aggregation as one DuckDB ``GROUP BY``
  reading the same file (all its threads): the yardstick.
* ``Exchange.time_route``: what crossing the exchange costs for 65,536-row
  batches — key hash, counting sort, Arrow ``take`` of each partition's
  rows, and shipping the other partition's half to another process through
  Ray's object store in the workers' ``Outbox`` messages (acknowledged) —
  for the columns the job ships (those its window reads: ``bidder`` stays
  in the reader). Its time per event over ``SingleProcess``'s is the
  exchange's share of the single-process cost.

Ray starts once per process (``num_cpus=2``); asv runs each benchmark in its
own process, so start-up is in ``setup``, never timed.
"""

from __future__ import annotations

import time

import duckdb
import pyarrow.parquet as pq

import laminar_jit as lj
from laminar_jit.distributed.exchange import Outbox, partition_batch
from laminar_jit.distributed.plan import split_dag

from . import common
from .bench_windows import SIZE_MS, tumbling_dag

_ROW_GROUP = 65_536


def _events() -> int:
    return 40_000 if common.small() else 20_000_000


def parquet_path() -> str:
    """The events as a Parquet file (written once per size into the benchmark cache)."""
    n = _events()
    path = common.cache_dir() / f"events-{n}.parquet"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        pq.write_table(common.event_table(n), tmp, row_group_size=_ROW_GROUP)
        tmp.replace(path)
    return str(path)


def _ray():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=1 << 30)
    return ray


def _run(dag, path, partitions=None):
    out = lj.io.MemorySink()
    kw = {} if partitions is None else {"partitions": partitions}
    stats = lj.run(dag, {common.SOURCE: lj.io.ParquetSource(path)}, {"out": out}, progress=False, **kw)
    return stats, out


class Partitioned:
    """The tumbling-window job on ``partitions`` Ray workers (see the module docstring)."""

    params = [1, 2]
    param_names = ["partitions"]
    timeout = 900
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self, partitions):
        self.path = parquet_path()
        self.dag = tumbling_dag("auction")
        _ray()
        _run(self.dag, self.path, partitions)  # plans compiled into the on-disk cache

    def time_run(self, partitions):
        _run(self.dag, self.path, partitions)

    def track_events_per_second(self, partitions):
        """Events per second of the run after worker start-up (best of 2)."""
        best = 0.0
        for _ in range(2):
            stats, _ = _run(self.dag, self.path, partitions)
            best = max(best, stats.events / (stats.elapsed - stats.startup_seconds))
        return best

    track_events_per_second.unit = "events/s"

    def track_windows_emitted(self, partitions):
        """Rows emitted; equals ``SingleProcess.track_windows_emitted`` (a correctness canary)."""
        return _run(self.dag, self.path, partitions)[1].num_rows

    track_windows_emitted.unit = "rows"


class SingleProcess:
    """The same job with ``lj.run`` in this process (no Ray)."""

    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self):
        self.path = parquet_path()
        self.dag = tumbling_dag("auction")
        _run(self.dag, self.path)

    def time_run(self):
        _run(self.dag, self.path)

    def track_events_per_second(self):
        """Events per second of the whole run (best of 2)."""
        best = 0.0
        for _ in range(2):
            stats, _ = _run(self.dag, self.path)
            best = max(best, stats.events / stats.elapsed)
        return best

    track_events_per_second.unit = "events/s"

    def track_windows_emitted(self):
        return _run(self.dag, self.path)[1].num_rows

    track_windows_emitted.unit = "rows"


class DuckDBParquet:
    """The tumbling aggregation in DuckDB, reading the same Parquet file."""

    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self):
        self.path = parquet_path()
        self.con = duckdb.connect()
        self.sql = (f"SELECT ts // {SIZE_MS} * {SIZE_MS} AS window_start, auction, count(*) AS n, "
                    f"sum(price) AS total, max(price) AS top FROM read_parquet('{self.path}') GROUP BY ALL")

    def teardown(self):
        self.con.close()

    def time_query(self):
        self.con.sql(self.sql).to_arrow_table()

    def track_windows_emitted(self):
        return self.con.sql(self.sql).to_arrow_table().num_rows

    track_windows_emitted.unit = "rows"


class Exchange:
    """Hash-partition every 65,536-row batch in two and ship one half to another process."""

    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self):
        ray = _ray()
        # the columns a two-partition run of the job ships: those its window reads
        (x,) = split_dag(tumbling_dag("auction"), 2).exchanges
        self.batches = pq.read_table(parquet_path(), columns=x.schema.names).to_batches(max_chunksize=_ROW_GROUP)
        class Receiver:  # the far side of the exchange: takes the rows and drops them
            def push(self, sender, items, wms, final):
                return sum(b.num_rows for _, b in items)

        self.receiver = ray.remote(num_cpus=0)(Receiver).remote()
        self.ray = ray
        self._route(self.batches[:2])

    def _route(self, batches):
        """What a worker does with each batch of a two-partition run, minus its own half's processing."""
        outbox, refs = Outbox(2), []

        def send():
            refs.append(self.receiver.push.remote(0, outbox.take(1), {}, False))
            if len(refs) > 2:
                self.ray.get(refs.pop(0))

        for batch in batches:
            local, remote = partition_batch(batch, ("auction",), 2)
            if outbox.add(1, common.SOURCE, remote):
                send()
        if outbox.items[1]:
            send()
        return sum(self.ray.get(refs))

    def time_route(self):
        self._route(self.batches)

    def track_seconds_per_million_events(self):
        """Exchange seconds per 1 M events (best of 3); divide by SingleProcess's for the share."""
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            self._route(self.batches)
            best = min(best, time.perf_counter() - start)
        return best / (len(self.batches) * _ROW_GROUP / 1e6)

    track_seconds_per_million_events.unit = "s"
