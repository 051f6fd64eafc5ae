"""Nexmark: every query of :mod:`laminar_jit.nexmark` against DuckDB (and Polars for q0-q2).

The events are ``lj.nexmark.generate``'s: 10 M events (200 K persons, 600 K
auctions, 9.2 M bids; 20,000 with ``LAMINAR_BENCH_SMALL=1``), out of order by
up to 100 ms, generated once per process in ``setup`` and cached. laminar
reads them the way ``lj.nexmark.run`` feeds them: chunk by chunk of 65,536
consecutive events, each chunk one batch per stream the query reads, through
a fresh executor, then ``finish()``. The plans are compiled (or loaded from
the disk cache) in ``setup``, so timed runs never compile.

* ``NexmarkQuery``: ``time_laminar`` is one full run of a query (``time_new_executor``: the
  fresh executor it starts with);
  ``track_events_per_second`` counts all generated events (the three streams,
  as Nexmark does) over the best of three runs; ``track_result_rows`` is the
  result's row count, which ``NexmarkDuckDB.track_result_rows`` must equal (a
  correctness canary; the values are compared in ``tests/test_nexmark.py``).
  An updating query (q4, q9, q15-q19: a changelog) emits more rows than its
  SQL, whose answer is the state its changes describe in the end.
* ``NexmarkDuckDB``: the query's ``lj.nexmark.SQL`` on a connection with the
  whole tables registered in ``setup`` (``lj.nexmark.duckdb_connection``).
  q0-q2 return rows in arrival order, as laminar does (DuckDB preserves
  insertion order; no sort).
* ``NexmarkPolars``: q0 (projection), q1 (map) and q2 (filter) as Polars
  lazy queries over the concatenated bid table (converted in ``setup``).
* ``NexmarkMemory``: peak RSS of one run of a stateful query (q3: a join of
  unbounded state; q4: an interval join bounded on the bid side into keyed state; q5: sliding
  counts then top-1; q8: a window join), next to the peak of ``setup`` alone
  (the generated events and the compiled plan).
* ``NexmarkFloor``: q3's, q4's and q8's essential work, each as one compiled loop on one
  thread (``benchmarks/floors.py``; their answers checked against DuckDB's in ``setup``).
* ``NexmarkGenerator``: generating 1 M events.
* ``timeraw_nexmark_cold_start``: a new process imports laminar_jit,
  generates a first chunk, builds q5, loads its plans and gets a result.

The ratios to read are ``NexmarkDuckDB.time_duckdb`` (or
``NexmarkPolars.time_polars``) over ``NexmarkQuery.time_laminar`` for the
same query. Each engine has its own class (see ``bench_core.FilterMap``:
DuckDB's heap trimming would tax laminar's allocations in a shared process)
and runs with its default parallelism.
"""

from __future__ import annotations

import functools
import time
from decimal import Decimal

import polars as pl

import laminar_jit as lj

from . import common, floors

#: The generator's out-of-orderness bound (ms), and the queries' watermark delay.
MAX_DELAY = 100


def n_events() -> int:
    """Nexmark events per run: 10,000,000 (20,000 with ``LAMINAR_BENCH_SMALL=1``)."""
    return 20_000 if common.small() else 10_000_000


def chunk_size() -> int:
    """Events per chunk: 65,536 (4,096 with ``LAMINAR_BENCH_SMALL=1``, so the smoke test feeds several)."""
    return 4_096 if common.small() else 65_536


def n_generate() -> int:
    """Events of ``NexmarkGenerator``: 1,000,000 (20,000 with ``LAMINAR_BENCH_SMALL=1``)."""
    return 20_000 if common.small() else 1_000_000


def nexmark_events() -> lj.nexmark.NexmarkEvents:
    """The generated events of every benchmark here (seed 0, memoized per size)."""
    return _events(n_events(), chunk_size())


@functools.lru_cache(maxsize=4)
def _events(n: int, chunk: int) -> lj.nexmark.NexmarkEvents:
    return lj.nexmark.generate(n, seed=0, max_delay=MAX_DELAY, chunk_size=chunk)


def feed(dag: lj.StreamingDag, chunks):
    """``chunks`` through a fresh executor, stream by stream as ``lj.nexmark.run`` does; returns its (first) sink."""
    streams = lj.nexmark.streams_of(dag)
    ex = lj.DagExecutor(dag)
    for chunk in chunks:
        for s in streams:
            ex.process_batch(s, chunk[s])
    ex.finish()
    return ex.take_sink_outputs(dag.sinks[0])


def _prepared(query: str):
    """The events and ``query``'s DAG, its plans compiled (or loaded) by a run over the first chunk."""
    events = nexmark_events()
    dag = lj.nexmark.query(query, MAX_DELAY)
    feed(dag, events.chunks[:1])
    return events, dag


# ----------------------------------------------------------------------------- laminar

class NexmarkQuery:
    """One run of each Nexmark query over the generated events (DuckDB: :class:`NexmarkDuckDB`)."""

    params = list(lj.nexmark.QUERIES)
    param_names = ["query"]
    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    #: Runs in ``track_events_per_second``; the best one counts.
    track_repeats = 3

    def setup(self, query):
        self.events, self.dag = _prepared(query)

    def time_laminar(self, query):
        feed(self.dag, self.events.chunks)

    def track_events_per_second(self, query):
        """All generated events over the wall time of a run (best of :attr:`track_repeats`, ``perf_counter``).

        Derived from the same work as ``time_laminar``, in the unit Nexmark
        reports (events of the three streams, also those the query does not
        read); ``time_laminar`` stays the sampled measurement.
        """
        best = float("inf")
        for _ in range(self.track_repeats):
            start = time.perf_counter()
            feed(self.dag, self.events.chunks)
            best = min(best, time.perf_counter() - start)
        return self.events.events / best

    track_events_per_second.unit = "events/s"

    def track_result_rows(self, query):
        """Rows of the result; equals ``NexmarkDuckDB.track_result_rows`` (a correctness canary).

        Except for an updating query (the changelogs of q4, q9 and q15-q19):
        there DuckDB has the final result only.
        """
        return feed(self.dag, self.events.chunks).num_rows

    track_result_rows.unit = "rows"

    def time_new_executor(self, query):
        """``DagExecutor(dag)`` of a DAG already run in this process (part of every ``time_laminar``).

        Its plans come from the per-DAG memo: no generating, rendering or loading.
        """
        lj.DagExecutor(self.dag)


# ----------------------------------------------------------------------------- DuckDB

class NexmarkDuckDB:
    """Each query's ``lj.nexmark.SQL`` in DuckDB over the whole in-memory tables.

    A query without SQL is skipped (``setup`` raises ``NotImplementedError``,
    asv's way to skip a parameter).
    """

    params = list(lj.nexmark.QUERIES)
    param_names = ["query"]
    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self, query):
        if query not in lj.nexmark.SQL:
            raise NotImplementedError(f"no DuckDB SQL for {query}")
        self.sql = lj.nexmark.SQL[query]
        self.con = lj.nexmark.duckdb_connection(nexmark_events())
        # first-call costs (thread pool, catalog) are paid here, on a cheap scan of every table
        for table in ("person", "auction", "bid"):
            self.con.sql(f"SELECT count(*) FROM {table}").fetchall()

    def teardown(self, query):
        self.con.close()

    def time_duckdb(self, query):
        self.con.sql(self.sql).to_arrow_table()

    def track_result_rows(self, query):
        """DuckDB's row count, to compare with ``NexmarkQuery.track_result_rows``."""
        return self.con.sql(f"SELECT count(*) FROM ({self.sql})").fetchall()[0][0]

    track_result_rows.unit = "rows"


# ----------------------------------------------------------------------------- Polars

def _polars_q0(bids: pl.DataFrame) -> pl.DataFrame:
    return bids.lazy().select("auction", "bidder", "price", "date_time", "extra").collect()


def _polars_q1(bids: pl.DataFrame) -> pl.DataFrame:
    return (bids.lazy()
            .select("auction", "bidder", (pl.col("price").cast(pl.Decimal(19, 0)) * pl.lit(Decimal("0.908"),
                    pl.Decimal(3, 3))).cast(pl.Decimal(23, 3)).alias("price"), "date_time", "extra")
            .collect())


def _polars_q2(bids: pl.DataFrame) -> pl.DataFrame:
    return bids.lazy().filter(pl.col("auction") % 123 == 0).select("auction", "price").collect()


#: The queries Polars answers with plain expressions over the bid table.
POLARS = {"q0": _polars_q0, "q1": _polars_q1, "q2": _polars_q2}


class NexmarkPolars:
    """q0 (projection), q1 (map) and q2 (filter) as Polars lazy queries over the whole bid table."""

    params = [q for q in POLARS if q in lj.nexmark.QUERIES]
    param_names = ["query"]
    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self, query):
        self.bids = pl.from_arrow(nexmark_events().table("bid"))
        self.run = POLARS[query]
        self.run(self.bids.head(1_024))  # first-call costs (thread pool) on a tiny input

    def time_polars(self, query):
        self.run(self.bids)

    def track_result_rows(self, query):
        """Polars' row count, to compare with ``NexmarkQuery.track_result_rows``."""
        return self.run(self.bids).height

    track_result_rows.unit = "rows"


class NexmarkFloor:
    """q3's, q4's and q8's essential work on one thread (:func:`benchmarks.floors.q3_floor`,
    :func:`~benchmarks.floors.q4_floor`, :func:`~benchmarks.floors.q8_floor`): the yardsticks between the
    engine's queries (``NexmarkQuery``) and DuckDB's (``NexmarkDuckDB``). ``setup`` checks their answers
    against DuckDB's."""

    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self):
        self.chunks = nexmark_events().chunks
        got = floors.q4_floor(self.chunks, MAX_DELAY)  # (compiles)
        con = lj.nexmark.duckdb_connection(nexmark_events())
        want = con.sql(lj.nexmark.SQL["q4"]).to_arrow_table().to_pydict()
        self._q3 = con.sql(lj.nexmark.SQL["q3"]).to_arrow_table()
        q8 = pl.from_arrow(con.sql(lj.nexmark.SQL["q8"]).to_arrow_table())
        con.close()
        want = dict(zip(want["category"], want["avg_final"]))
        assert got.keys() == want.keys() and all(abs(got[c] - want[c]) <= 1e-9 * abs(want[c]) for c in want), \
            (got, want)
        got, want = pl.from_arrow(floors.q3_floor(self.chunks)), pl.from_arrow(self._q3)
        assert got.sort(got.columns).equals(want.sort(want.columns)), (got, want)
        got = pl.from_arrow(floors.q8_floor(self.chunks))
        q8 = q8.select(got.columns).cast(dict(got.schema))
        assert got.sort(got.columns).equals(q8.sort(got.columns)), (got, q8)

    def time_q4_floor(self):
        floors.q4_floor(self.chunks, MAX_DELAY)

    def time_q3_floor(self):
        floors.q3_floor(self.chunks)

    def time_q8_floor(self):
        floors.q8_floor(self.chunks)


# ----------------------------------------------------------------------------- memory

class NexmarkMemory:
    """Peak RSS of one run of a stateful query, and of ``setup`` alone.

    asv's ``peakmem`` is the process's peak, setup included: the generated
    events (about 800 MB for 10 M events) dominate it, so
    ``peakmem_run - peakmem_setup`` is what the run itself adds (state,
    buffered results and the output table).
    """

    params = [q for q in ("q3", "q4", "q5", "q8") if q in lj.nexmark.QUERIES]
    param_names = ["query"]
    timeout = 600

    def setup(self, query):
        self.events, self.dag = _prepared(query)

    def peakmem_run(self, query):
        feed(self.dag, self.events.chunks)

    def peakmem_setup(self, query):
        pass


# ----------------------------------------------------------------------------- generator

class NexmarkGenerator:
    """``lj.nexmark.generate`` of 1 M events (persons, auctions, bids), 65,536-event chunks.

    Chunks are generated on a thread pool of ``os.cpu_count()`` threads (the
    kernel releases the GIL); the kernel is loaded in ``setup``.
    """

    timeout = 300

    def setup(self):
        lj.nexmark.generate(1_000)

    def time_generate(self):
        lj.nexmark.generate(n_generate(), seed=0, max_delay=MAX_DELAY, chunk_size=chunk_size())


# ----------------------------------------------------------------------------- cold start (new process)

# Self-contained user code: asv runs it in a new process that cannot import
# this package. q5's kernels live in laminar_jit, so its cached plan loads
# from any directory.
NEXMARK_COLD_START_CODE = """
import laminar_jit as lj

events = lj.nexmark.generate(4_096, seed=0)        # one chunk: 82 persons, 246 auctions, 3,768 bids
ex = lj.DagExecutor(lj.nexmark.query("q5"))
ex.process_batch("bid", events.chunks[0]["bid"])
ex.finish()
out = ex.take_sink_outputs("out")
assert out.num_rows > 0, out
"""


def timeraw_nexmark_cold_start():
    """A new process imports laminar_jit, generates 4,096 events, builds q5 and gets its first result.

    q5 (a sliding count per auction, then top-1 per window) is fed its first
    batch of bids and finished, so every compiled path from input to output
    runs once. The plans and the generator's kernel come from Numba's on-disk
    cache after the first run on a machine (that first sample also compiles
    them), so this is the cold start users see from the second process on.
    Compare with ``bench_core.timeraw_import`` (the import alone).
    """
    return NEXMARK_COLD_START_CODE


timeraw_nexmark_cold_start.timeout = 120
