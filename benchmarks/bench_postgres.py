"""PostgreSQL connectors against a private server started here (the same way the tests start theirs).

``SinkCopy`` loads the standard event table (four numeric columns) into an
unindexed table: ``lj_sink`` through :class:`~laminar_jit.io.PostgresSink`
(binary encoding from Arrow, ``COPY``, prepared and committed as one epoch),
``psycopg_copy`` the same bytes, encoded beforehand, through psycopg's
``COPY`` alone — the ceiling the server and the driver allow, measured in the
same run; the ``_2conn`` variants split the rows over two connections
(``PostgresSink(connections=2)``: two prepared transactions; psycopg: two
threads, each committing its half). ``SinkRun`` is :func:`laminar_jit.run` of the Filter/Map DAG into
the sink without checkpoints and with one per second. ``CdcChanges`` reads
changes committed after the slot was created (one ``INSERT`` of many rows, then
an ``UPDATE`` of half of them: -U/+U pairs) streamed over the replication
protocol through :class:`~laminar_jit.io.PostgresCdcSource`; ``CdcSnapshot``
the initial snapshot.

The server (``initdb`` + ``pg_ctl``, see ``tests/pg_server.py``) is started once
per process and stopped at exit. Without PostgreSQL binaries the benchmarks
are skipped (asv's ``NotImplementedError``), except under CI, where they fail.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import laminar_jit as lj
from laminar_jit.io.postgres import _binary

from . import common

_SERVER = {}


def _server():
    """The private server of this process (started on first use)."""
    if "server" not in _SERVER:
        path = Path(__file__).resolve().parents[1] / "tests" / "pg_server.py"
        spec = importlib.util.spec_from_file_location("lj_pg_server", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            server = module.PgServer.start()
        except Exception as exc:  # noqa: BLE001 - no binaries, no permission, ...
            if os.environ.get("CI"):
                raise
            raise NotImplementedError(f"no PostgreSQL server for the benchmark: {exc}") from exc
        _SERVER["server"] = server
        atexit.register(server.destroy)
    return _SERVER["server"]


def _sql(query: str, params=None):
    import psycopg

    with psycopg.connect(_server().dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def sink_rows() -> int:
    """Rows loaded per sink benchmark: 1,000,000 (20,000 with ``LAMINAR_BENCH_SMALL=1``)."""
    return 20_000 if common.small() else 1_000_000


def cdc_rows() -> int:
    """Rows inserted (then half of them updated) per CDC benchmark: 200,000 (1,000 small)."""
    return 1_000 if common.small() else 200_000


_COLUMNS = "ts bigint, auction bigint, bidder bigint, price double precision"


class SinkCopy:
    """Bulk load of the event table into an unindexed table: the sink vs psycopg ``COPY`` of ready bytes."""

    params = ["lj_sink", "lj_sink_2conn", "psycopg_copy", "psycopg_copy_2conn"]
    param_names = ["writer"]
    timeout = 600
    number = 1
    repeat = 5
    warmup_time = 0

    def setup(self, writer):
        self.dsn = _server().dsn
        self.table = common.event_table(sink_rows())
        n = self.table.num_rows
        self.data = _ready_bytes(self.table)
        self.halves = [_ready_bytes(self.table.slice(0, n // 2)), _ready_bytes(self.table.slice(n // 2))]
        self.calls = 0
        _sql(f"DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy ({_COLUMNS})")

    def teardown(self, writer):
        _sql("DROP TABLE IF EXISTS bench_copy")
        for (gid,) in _sql("SELECT gid FROM pg_prepared_xacts"):
            _sql(f"ROLLBACK PREPARED '{gid}'")

    def _load(self, writer):
        self.calls += 1
        if writer.startswith("lj_sink"):
            sink = lj.io.PostgresSink(self.dsn, "bench_copy", connections=2 if writer.endswith("2conn") else 1)
            sink.open(self.table.schema, 0)  # a checkpointed run's sink: the epoch is prepared, then committed
            sink.write(self.table, 1)
            sink.pre_commit(1)
            sink.commit(1)
            sink.close()
        elif writer == "psycopg_copy":
            _copy_ready(self.dsn, self.data)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda data: _copy_ready(self.dsn, data), self.halves))

    def time_load(self, writer):
        self._load(writer)

    def track_rows_per_second(self, writer):
        start = time.perf_counter()
        self._load(writer)
        return self.table.num_rows / (time.perf_counter() - start)

    track_rows_per_second.unit = "rows/s"


def _ready_bytes(table) -> bytes:
    """The table's binary ``COPY`` data (header to trailer), encoded beforehand."""
    columns = [("int8", table.column(c).combine_chunks()) for c in ("ts", "auction", "bidder")]
    return _binary.encode(columns + [("float8", table.column("price").combine_chunks())], table.num_rows)


def _copy_ready(dsn: str, data: bytes) -> None:
    """psycopg's ``COPY`` of ready bytes in 4 MiB writes, then a commit: the driver's and server's ceiling."""
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy("COPY bench_copy (ts, auction, bidder, price) FROM STDIN (FORMAT binary)") as copy:
            view = memoryview(data)
            for start in range(0, len(data), 1 << 22):
                copy.write(view[start:start + (1 << 22)])
        conn.commit()


class SinkRun:
    """``lj.run`` of events → Filter → Map into the sink, without checkpoints and with one per second."""

    params = ["none", "every_second"]
    param_names = ["checkpoints"]
    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self, checkpoints):
        self.dsn = _server().dsn
        self.batches = common.event_batches(2 * sink_rows(), 65_536)
        self.dag = common.filter_map_dag()
        common.warm_up(self.dag)
        self.tmp = Path(tempfile.mkdtemp(prefix="laminar-bench-pg-"))
        self.runs = 0
        _sql("DROP TABLE IF EXISTS bench_run")

    def teardown(self, checkpoints):
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
        _sql("DROP TABLE IF EXISTS bench_run")

    def _run(self, checkpoints):
        self.runs += 1
        options = {} if checkpoints == "none" else {"checkpoint_dir": self.tmp / f"run{self.runs}",
                                                      "checkpoint_interval": 1.0}
        return lj.run(self.dag, {common.SOURCE: lj.io.MemorySource(list(self.batches))},
                      {"out": lj.io.PostgresSink(self.dsn, "bench_run", txn_prefix=f"bench-{self.runs}")},
                      progress=False, **options)

    def time_run(self, checkpoints):
        self._run(checkpoints)

    def track_events_per_second(self, checkpoints):
        return self._run(checkpoints).events_per_second

    track_events_per_second.unit = "events/s"


class CdcChanges:
    """Changes committed after the slot was created, streamed through the CDC source (inserts, then -U/+U pairs).

    Each sample streams the same changes from the slot's start: without a checkpoint nothing is confirmed,
    so the slot keeps them.
    """

    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self):
        self.dsn = _server().dsn
        lj.io.PostgresCdcSource.drop(self.dsn, "bench_cdc")
        _sql("DROP TABLE IF EXISTS bench_cdc_t; CREATE TABLE bench_cdc_t "
             "(id bigint PRIMARY KEY, version int, note text, price double precision)")
        self.source = lj.io.PostgresCdcSource(self.dsn, "bench_cdc_t", slot="bench_cdc", idle_timeout=0.0,
                                              poll_interval=0.01)
        assert not list(self.source.batches(0))  # creates the slot; the snapshot is empty
        (lsn,), = _sql("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'bench_cdc'")
        self.start = self.source.position_at(lsn)
        n = cdc_rows()
        _sql(f"INSERT INTO bench_cdc_t SELECT g, 0, 'row ' || g, g * 0.5 FROM generate_series(1, {n}) g")
        _sql("UPDATE bench_cdc_t SET version = 1 WHERE id % 2 = 0")
        self.expected = n + n // 2 * 2

    def teardown(self):
        lj.io.PostgresCdcSource.drop(self.dsn, "bench_cdc")
        _sql("DROP TABLE IF EXISTS bench_cdc_t")

    def _read(self) -> int:
        rows = 0
        self.source.idle_timeout = 30.0  # a safety net: the stream is closed once every change arrived
        for batch in self.source.batches(self.start):
            rows += batch.num_rows
            if rows >= self.expected:
                break
        assert rows == self.expected, (rows, self.expected)
        return rows

    def time_changes(self):
        self._read()

    def track_rows_per_second(self):
        start = time.perf_counter()
        rows = self._read()
        return rows / (time.perf_counter() - start)

    track_rows_per_second.unit = "rows/s"


class CdcSnapshot:
    """The initial snapshot of a table (slot creation with an exported snapshot, ``COPY`` of the table in it)."""

    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self):
        self.dsn = _server().dsn
        n = cdc_rows()
        _sql("DROP TABLE IF EXISTS bench_snap_t; CREATE TABLE bench_snap_t "
             "(id bigint PRIMARY KEY, version int, note text, price double precision); "
             f"INSERT INTO bench_snap_t SELECT g, 0, 'row ' || g, g * 0.5 FROM generate_series(1, {n}) g")
        lj.io.PostgresCdcSource.drop(self.dsn, "bench_snap")
        self.rows = n

    def teardown(self):
        lj.io.PostgresCdcSource.drop(self.dsn, "bench_snap")
        _sql("DROP TABLE IF EXISTS bench_snap_t")

    def _read(self) -> int:
        lj.io.PostgresCdcSource.drop(self.dsn, "bench_snap")
        source = lj.io.PostgresCdcSource(self.dsn, "bench_snap_t", slot="bench_snap", idle_timeout=0.0)
        rows = sum(b.num_rows for b in source.batches(0))
        assert rows == self.rows
        return rows

    def time_snapshot(self):
        self._read()

    def track_rows_per_second(self):
        start = time.perf_counter()
        rows = self._read()
        return rows / (time.perf_counter() - start)

    track_rows_per_second.unit = "rows/s"
