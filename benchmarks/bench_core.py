"""Core engine benchmarks: throughput against peers, DAG shapes, fixed cost, cold start.

Conventions (see STYLE.md, "Benchmarks are asv"):

* ``setup`` builds every input (from the cached builders in :mod:`.common`)
  and warms the JIT by running the DAG once; timed methods only process.
* Each timed laminar call runs a fresh ``DagExecutor`` (or drains its sinks),
  so sink buffers never grow across asv's repeats.
* Peers (Polars, DuckDB) run the same query on the same Arrow data in the
  same benchmark run, so the ratios survive a noisy machine.
"""

from __future__ import annotations

import functools
import time

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

import laminar_jit as lj
from laminar_jit.state import StringDictionary

from . import common

# ----------------------------------------------------------------------------- filter + map vs peers

_FILTER_MAP_SQL = "SELECT *, price * 0.908 AS price_eur FROM events WHERE price > 100.0"


class FilterMap:
    """``filter(price > 100)`` + ``map(price * 0.908 → price_eur)`` over the standard table.

    5M events (``common.n_events()``), fed to laminar as 65,536-row batches.
    The same query in Polars and DuckDB is :class:`FilterMapPeers`, measured in
    the same asv run on the same table, so ``time_laminar`` / ``time_polars``
    is the ratio to report. The peers live in their own class because asv runs
    each class's methods after that class's ``setup``: DuckDB hands freed
    memory back to the kernel (``malloc_trim``) when used, which made every
    laminar run in the same process pay ~24,000 page faults (~3x its time).

    Every engine runs with its default parallelism (Polars and DuckDB use all
    cores; ``DagExecutor`` one thread), and laminar also at ``parallelism=2``.
    """

    batch_size = 65_536
    timeout = 300  # setup builds a 5M-row table; the first run on a machine also compiles

    def setup(self):
        n = common.n_events()
        self.batches = common.event_batches(n, self.batch_size)
        self.dag = common.filter_map_dag()
        common.warm_up(self.dag, common.event_table(n))

    def time_laminar(self):
        common.run_dag(self.dag, self.batches)

    def time_laminar_parallelism_2(self):
        """``parallelism=2``: a DAG without state runs whole batches in two threads, side by side."""
        common.run_dag(self.dag, self.batches, parallelism=2)

    def peakmem_laminar(self):
        # asv reports the process's peak RSS, setup included (the 160 MB input
        # table among it): compare runs of this benchmark with each other.
        common.run_dag(self.dag, self.batches)


class FilterMapPeers:
    """The :class:`FilterMap` query in Polars (lazy) and DuckDB, on the same Arrow table."""

    timeout = 300

    def setup(self):
        self.table = common.event_table(common.n_events())
        self.frame = pl.from_arrow(self.table)
        self.con = duckdb.connect()
        self.con.register("events", self.table)
        # first-call costs (thread pools, planning caches) are paid here, on a tiny input
        head = self.table.slice(0, 1_024)
        _polars_filter_map(pl.from_arrow(head))
        self.con.sql(_FILTER_MAP_SQL.replace("FROM events", "FROM (SELECT * FROM events LIMIT 1024)")).to_arrow_table()

    def teardown(self):
        self.con.close()

    def time_polars(self):
        _polars_filter_map(self.frame)

    def time_duckdb(self):
        # .arrow() returns a lazy RecordBatchReader in DuckDB >= 1.4; materialize.
        self.con.sql(_FILTER_MAP_SQL).to_arrow_table()


def _polars_filter_map(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.lazy()
        .filter(pl.col("price") > 100.0)
        .with_columns((pl.col("price") * 0.908).alias("price_eur"))
        .collect()
    )


# ----------------------------------------------------------------------------- string interning

@functools.lru_cache(maxsize=2)
def _text_batches(n: int, kind: str) -> tuple:
    """``n`` strings of 40-95 random letters, 65,536 a batch: all distinct, or (``repeats``) 4,096 of them
    over and over (the dictionary's repeat path)."""
    rng = np.random.default_rng(common.SEED)
    m = n if kind == "distinct" else 4_096
    lengths = rng.integers(40, 96, m)
    offsets = np.zeros(m + 1, np.int64)
    offsets[1:] = np.cumsum(lengths)
    data = rng.integers(ord("a"), ord("z") + 1, int(offsets[-1]), dtype=np.uint8)
    words = pa.LargeStringArray.from_buffers(m, pa.py_buffer(offsets), pa.py_buffer(data))
    if kind == "repeats":
        words = words.take(pa.array(rng.integers(0, m, n)))
    return tuple(words.slice(i, 65_536) for i in range(0, n, 65_536))


class StringInterning:
    """A string column's batches into a fresh :class:`~laminar_jit.state.StringDictionary` (what a source
    boundary does to a string column kept in state: join and TopN payloads, keys), 2 M strings of 40-95
    bytes; the yardsticks hash the same strings: pyarrow's ``dictionary_encode`` per batch (no dictionary
    kept between batches) and Polars' cast to ``Categorical`` (one string cache for the whole column)."""

    params = ["distinct", "repeats"]
    param_names = ["strings"]
    timeout = 300

    def setup(self, kind):
        self.batches = _text_batches(2_000_000 if not common.small() else 20_000, kind)
        self.series = pl.Series(pa.chunked_array(self.batches))
        StringDictionary().encode(self.batches[0].slice(0, 10))  # compile / load the kernel
        # a carried dictionary of every batch, and a batch's worth of its codes at random (a join's output rows)
        self.carried = StringDictionary(carried=True)
        codes = np.concatenate([self.carried.encode(batch)[0] for batch in self.batches])
        self.wanted = np.random.default_rng(common.SEED).choice(codes, min(65_536, codes.size))
        self.carried.decode(self.wanted[:10])
        self.values = self.carried.values()  # every code's value, as one array

    def time_laminar(self, kind):
        dictionary = StringDictionary()
        for batch in self.batches:
            dictionary.encode(batch)

    def time_laminar_carried(self, kind):
        """A carried dictionary (a column only a join keeps for its output): distinct strings are appended
        without a lookup after the first batch; repeated ones are looked up as by ``time_laminar``."""
        dictionary = StringDictionary(carried=True)
        for batch in self.batches:
            dictionary.encode(batch)

    def time_laminar_carried_decode(self, kind):
        """65,536 rows of a carried dictionary at random, decoded (the strings of a join's output rows); the
        yardstick is ``time_pyarrow_take``."""
        self.carried.decode(self.wanted)

    def time_pyarrow(self, kind):
        for batch in self.batches:
            batch.dictionary_encode()

    def time_pyarrow_take(self, kind):
        """The same codes' values taken by Arrow from one array of them all."""
        self.values.take(pa.array(self.wanted))

    def time_polars(self, kind):
        self.series.cast(pl.Categorical)


# ----------------------------------------------------------------------------- DAG shapes x batch size

class Shapes:
    """Throughput of each DAG shape (``common.SHAPES``) at several batch sizes.

    Batches of 1 and 64 rows cost a Python call each, so they push fewer
    events (``common.events_for_batch_size``: 20,000 and 200,000) to keep a
    run within a few seconds; larger batches push the full 5M-event table.
    Compare ``track_events_per_second`` across batch sizes, not ``time_process``.
    """

    params = (list(common.SHAPES), [1, 64, 4_096, 65_536])
    param_names = ["shape", "batch_size"]
    timeout = 300

    #: Passes over the input in ``track_events_per_second``; the best one counts.
    track_repeats = 3

    def setup(self, shape, batch_size):
        self.n = common.events_for_batch_size(batch_size)
        self.batches = common.event_batches(self.n, batch_size)
        self.dag = common.shape_dag(shape)
        common.warm_up(self.dag, common.event_table(self.n))

    def time_process(self, shape, batch_size):
        common.run_dag(self.dag, self.batches)

    def track_events_per_second(self, shape, batch_size):
        """Events per second of ``time_process``'s work: a derived number.

        asv's ``track_*`` records whatever the method returns, so this times
        its own loop (best of :attr:`track_repeats` passes, ``perf_counter``)
        and divides the event count by it. It exists so shapes and batch sizes
        that push different event counts compare on one axis; ``time_process``
        stays the primary, statistically sampled measurement.
        """
        best = float("inf")
        for _ in range(self.track_repeats):
            start = time.perf_counter()
            common.run_dag(self.dag, self.batches)
            best = min(best, time.perf_counter() - start)
        return self.n / best

    track_events_per_second.unit = "events/s"


# ----------------------------------------------------------------------------- fixed cost per batch

class FixedCost:
    """Cost of one 1-row batch through the 5-node ``linear_3`` DAG, Arrow in and out.

    The row passes the filter, so every node and the sink boundary do work.
    One executor is reused; draining the sink on every call keeps it empty.

    ``track_median_us`` is the cost per batch of a running stream, which the
    target is about: the median of 5,000 calls timed one by one, after 2,000
    untimed ones. ``time_one_row_batch`` is what asv makes of the same call:
    it re-runs ``setup`` before every timed call, so each is the first call
    on a new executor, right after setup filled the caches with other work.
    """

    def setup(self):
        self.dag = common.shape_dag("linear_3")
        table = common.event_table(1_000)
        passing = next(i for i, p in enumerate(table.column("price").to_pylist()) if common.expensive(p))
        self.batch = table.slice(passing, 1).combine_chunks().to_batches()[0]
        common.warm_up(self.dag, table)
        self.executor = lj.DagExecutor(self.dag)

    def time_one_row_batch(self):
        self.executor.process_batch(common.SOURCE, self.batch)
        self.executor.take_sink_outputs("out")

    def track_median_us(self):
        """Median microseconds per call of a running stream (see the class docstring)."""
        for _ in range(2_000):
            self.time_one_row_batch()
        times = np.empty(5_000)
        for i in range(times.size):
            start = time.perf_counter()
            self.time_one_row_batch()
            times[i] = time.perf_counter() - start
        return float(np.median(times)) * 1e6

    track_median_us.unit = "µs"


# ----------------------------------------------------------------------------- cold start (new process)

# The cold-start script is self-contained user code (asv runs it in a new
# process that cannot import this package). Its kernels are deliberately not
# common.py's: the plan compiler shares a compiled step between DAGs whose
# structure and kernel *bytecode* match, but Numba's cached step records the
# module that defined each kernel and imports it on load, so a script with
# common.py's kernels would load linear_3's cached step and fail with
# "ModuleNotFoundError: No module named 'benchmarks'" (an engine bug; see the
# hand-over notes). tests/test_asv.py runs this script from an empty
# directory after the other benchmarks compiled their plans, so a collision
# shows up there.
COLD_START_CODE = """
import pyarrow as pa
import laminar_jit as lj


def over_150(price):
    return price > 150.0


def to_gbp(price):
    return price * 0.79


def to_pence(price_gbp):
    return price_gbp * 100.0


schema = pa.schema([("ts", pa.int64()), ("auction", pa.int64()),
                    ("bidder", pa.int64()), ("price", pa.float64())])
dag = (
    lj.DagBuilder()
    .source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=2_000))
    .operator("over_150", lj.Filter(over_150))
    .operator("gbp", lj.Map(to_gbp, output="price_gbp"))
    .operator("pence", lj.Map(to_pence, output="pence"))
    .connect("bids", "over_150")
    .connect("over_150", "gbp")
    .connect("gbp", "pence")
    .sink_for("pence", "out")
    .build()
)
ex = lj.DagExecutor(dag)
ex.process_batch("bids", {"ts": [1_000, 1_001], "auction": [7, 8], "bidder": [1, 2], "price": [180.0, 50.0]})
out = ex.take_sink_outputs("out")
assert out.num_rows == 1 and abs(out.column("pence")[0].as_py() - 180.0 * 0.79 * 100.0) < 1e-6, out
"""


def timeraw_import():
    """``import laminar_jit`` in a new process (numpy, pyarrow, numba and the package)."""
    return "import laminar_jit"


def timeraw_cold_start():
    """A new process imports laminar_jit, builds a 5-node DAG and processes its first batch.

    Includes compiling the user kernels at ``build()`` (they are not cached on
    disk) and loading the plan. The plan itself comes from Numba's on-disk
    cache after the first run on a machine (that first sample also compiles
    it, a few seconds), so this measures the cold start users see from the
    second process on.
    """
    return COLD_START_CODE


timeraw_cold_start.timeout = 120
