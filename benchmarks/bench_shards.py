"""Key shards: the window, Dedup, TopN, updating (a changelog into a GROUP BY among them), keyed-kernel and
interval-join benchmarks and Nexmark at ``parallelism`` 1 and 2.

The same DAGs and 65,536-row batches as ``bench_windows`` and
``bench_ranking``; ``parallelism=1`` is the unsharded executor, so the ratio
of the two timings in one run is the speed-up. ``track_cpu_seconds`` is the
process CPU time of one run: compare it across parallelism to see what
sharding costs in total work, whatever the machine's neighbours do.
``ShardFloor`` (two independent executors on pre-split halves) and
``MemoryBandwidth`` say what two cores can give at all on the machine.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import laminar_jit as lj
from laminar_jit._jit import njit

from . import bench_changelog, bench_joins, bench_keyed, bench_nexmark, bench_ranking, bench_windows, common

DAGS = {
    "tumbling": lambda: bench_windows.tumbling_dag("auction"),
    # without a key: every shard aggregates its share of each batch, the shards' results combined as windows fire
    "keyless": lambda: bench_windows.tumbling_dag("none"),
    "sliding": bench_windows.sliding_dag,
    "session": bench_windows.session_dag,
    "dedup": bench_ranking.dedup_dag,
    "topn": bench_ranking.topn_dag,
    # without a key: every shard keeps the best rows of its share, ranked again as windows fire
    "topn_keyless": lambda: bench_ranking.topn_dag(None),
    # updating results (changelogs): count, sum, max per auction; each bidder's latest bid
    "group": lambda: bench_changelog.group_dag("auction"),
    "dedup_last": lambda: bench_changelog.ranked_dag(lj.Dedup(key="bidder", keep="last")),
    # a changelog into a GROUP BY of another key (exchanged between the shards): auctions per bid count
    "group_of_groups": bench_changelog.group_of_groups_dag,
    # a keyed kernel: the running z-score per auction (lj.recipes.zscore)
    "zscore": bench_keyed.zscore_dag,
    # a keyed kernel with a timer: each auction's bids until it has been quiet for 1 s
    "quiet": bench_keyed.quiet_dag,
}

#: DAGs run with ``two_phase=True``: windows without a key in every shard (DuckDB: ``TumblingDuckDB("none")``).
TWO_PHASE = {"keyless", "topn_keyless"}
#: Nexmark queries run with ``two_phase=True``: q7's TopN without a key.
TWO_PHASE_QUERIES = {"q7"}


class Sharded:
    """One DAG over the standard events at ``parallelism`` 1 and 2."""

    params = (list(DAGS), [1, 2])
    param_names = ["dag", "parallelism"]
    timeout = 300

    def setup(self, dag, parallelism):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = DAGS[dag]()
        self.two_phase = dag in TWO_PHASE
        self._run(parallelism)  # compile / load the plan (and its shard driver)

    def _run(self, parallelism):
        ex = lj.DagExecutor(self.dag, parallelism=parallelism, two_phase=getattr(self, "two_phase", False))
        assert ex.shards == parallelism, ex.shards_note
        for batch in self.batches:
            ex.process_batch(common.SOURCE, batch)
        ex.finish()
        return ex.take_all_sink_outputs()

    def time_run(self, dag, parallelism):
        self._run(parallelism)

    def track_cpu_seconds(self, dag, parallelism):
        cpu = time.process_time()
        self._run(parallelism)
        return time.process_time() - cpu

    track_cpu_seconds.unit = "seconds"


class ShardedNexmark(Sharded):
    """Nexmark q3 and q8 (joins), q4, q6 and q9 (joins whose rows feed stateful operators, dealt out again by
    their key), q5 (sliding counts per auction, the top of all in shard 0), q7 (the top bids of all, a TopN
    without a key in two phases) and q11 (sessions per bidder) over ``bench_nexmark``'s events at
    ``parallelism`` 1 and 2."""

    params = (["q3", "q8", "q4", "q6", "q9", "q5", "q7", "q11"], [1, 2])
    param_names = ["query", "parallelism"]
    timeout = 600

    def setup(self, query, parallelism):
        self.chunks = bench_nexmark.nexmark_events().chunks
        self.dag = lj.nexmark.query(query, max_delay=bench_nexmark.MAX_DELAY)
        self.streams = lj.nexmark.streams_of(self.dag)
        self.two_phase = query in TWO_PHASE_QUERIES
        self._run(parallelism)  # compile / load the plans

    def _run(self, parallelism):
        ex = lj.DagExecutor(self.dag, parallelism=parallelism, two_phase=self.two_phase)
        assert ex.shards == parallelism, ex.shards_note
        for chunk in self.chunks:
            for s in self.streams:
                ex.process_batch(s, chunk[s])
        ex.finish()
        return ex.take_sink_outputs("out")


#: ``ShardedInterval``'s joins: ``bench_joins.Interval``'s, and the same as a full outer join.
INTERVAL_JOINS = {
    "interval": bench_joins.Interval.make_op,
    "full": lambda: lj.IntervalJoin("k", "k", lower=-1_000, upper=1_000, how="full"),
}


class ShardedInterval(Sharded):
    """``bench_joins.Interval`` (2 M rows per side over 10 K keys, within ±1 s), inner and full outer, at
    ``parallelism`` 1 and 2."""

    params = (list(INTERVAL_JOINS), [1, 2])
    param_names = ["join", "parallelism"]

    def setup(self, join, parallelism):
        left, right = bench_joins.interval_tables()
        self.feed = bench_joins._feed(left, right)
        self.dag = bench_joins.join_dag(left.schema, right.schema, INTERVAL_JOINS[join]())
        self._run(parallelism)  # compile / load the plans

    def _run(self, parallelism):
        ex = lj.DagExecutor(self.dag, parallelism=parallelism)
        assert ex.shards == parallelism, ex.shards_note
        for source, batch in self.feed:
            ex.process_batch(source, batch)
        ex.finish()
        return ex.take_sink_outputs("out")


class ShardedAsof(ShardedInterval):
    """``bench_joins.Asof`` (5 M trades with the prevailing quote among 5 M, 1,000 symbols) at ``parallelism`` 1
    and 2 (DuckDB: ``bench_joins.AsofDuckDB``)."""

    params = (["asof"], [1, 2])

    def setup(self, join, parallelism):
        left, right = bench_joins.asof_tables()
        self.feed = bench_joins._feed(left, right)
        self.dag = bench_joins.join_dag(left.schema, right.schema, bench_joins.Asof.make_op())
        self._run(parallelism)  # compile / load the plans


@njit
def _scale_copy(a, out):
    """``out = a * 0.908``: a loop that does little but stream memory."""
    for i in range(a.size):
        out[i] = a[i] * 0.908


class MemoryBandwidth:
    """The machine's yardstick for parallel speed-ups: GB/s a compiled streaming loop reaches on 1 and 2 threads.

    Each thread scales its own 256 MB array into another (8 MB each in the
    smoke test). A step that streams columns (a filter, a gather, building
    output) can go no faster on ``threads`` cores than this loop does, so
    compare ``track_gigabytes_per_second`` at 2 threads with 1 before
    reading the shards' ratios: where 2 threads add no bandwidth, a
    memory-bound step cannot run faster in two shards.
    """

    params = [1, 2]
    param_names = ["threads"]
    timeout = 300

    def setup(self, threads):
        n = (1 << 20) if common.small() else (1 << 25)
        self.inputs = [np.random.default_rng(t).random(n) for t in range(threads)]
        self.outputs = [np.zeros(n) for _ in range(threads)]  # touched: no page faults in the timing
        _scale_copy(self.inputs[0][:8], self.outputs[0][:8])
        self.pool = ThreadPoolExecutor(max_workers=threads)

    def teardown(self, threads):
        self.pool.shutdown()

    def track_gigabytes_per_second(self, threads):
        best = 0.0
        for _ in range(3):
            start = time.perf_counter()
            list(self.pool.map(_scale_copy, self.inputs, self.outputs))
            seconds = time.perf_counter() - start
            best = max(best, sum(a.nbytes * 2 for a in self.inputs) / seconds / 1e9)
        return best

    track_gigabytes_per_second.unit = "GB/s"


#: ``ShardFloor``'s DAGs and the key column each is keyed by.
FLOOR_DAGS = {"tumbling": "auction", "sliding": "auction", "session": "auction", "dedup": "bidder"}


class ShardFloor:
    """What two cores give with no coordination at all: the ceiling of ``Sharded``'s speed-up on this machine.

    The standard events are split by key (even and odd ``key``) into two halves
    before timing, and two independent one-thread executors of the same DAG
    each run one half: ``mode="one_thread"`` runs them one after the other,
    ``mode="two_threads"`` side by side. Nothing is shared, hashed, merged or
    exchanged, so ``time_run`` one thread ÷ two threads is the most any
    partitioning can gain here (``Sharded``'s target is 1.7x), and
    ``track_cpu_seconds`` two threads ÷ one thread the least extra CPU time
    two cores cost for this work (the target is 1.15x). Compare with
    ``MemoryBandwidth`` measured in the same run.
    """

    params = (list(FLOOR_DAGS), ["one_thread", "two_threads"])
    param_names = ["dag", "mode"]
    timeout = 300

    def setup(self, dag, mode):
        key = FLOOR_DAGS[dag]
        self.halves = ([], [])
        for batch in common.event_batches(common.n_events(), 65_536):
            odd = np.asarray(batch.column(key)) % 2 == 1
            self.halves[0].append(batch.filter(~odd))
            self.halves[1].append(batch.filter(odd))
        self.dag = DAGS[dag]()
        self.pool = ThreadPoolExecutor(max_workers=2)
        self._half(self.halves[0][:1])  # compile / load the plan

    def teardown(self, dag, mode):
        self.pool.shutdown()

    def _half(self, batches):
        ex = lj.DagExecutor(self.dag)
        for batch in batches:
            ex.process_batch(common.SOURCE, batch)
        ex.finish()
        return ex.take_all_sink_outputs()

    def time_run(self, dag, mode):
        if mode == "one_thread":
            for half in self.halves:
                self._half(half)
        else:
            list(self.pool.map(self._half, self.halves))

    def track_cpu_seconds(self, dag, mode):
        cpu = time.process_time()
        self.time_run(dag, mode)
        return time.process_time() - cpu

    track_cpu_seconds.unit = "seconds"
