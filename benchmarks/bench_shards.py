"""Key shards: the tumbling, sliding, session, Dedup and TopN benchmarks at ``parallelism`` 1 and 2.

The same DAGs and 65,536-row batches as ``bench_windows`` and
``bench_ranking``; ``parallelism=1`` is the unsharded executor, so the ratio
of the two timings in one run is the speed-up. ``track_cpu_seconds`` is the
process CPU time of one run: compare it across parallelism to see what
sharding costs in total work, whatever the machine's neighbours do.
"""

from __future__ import annotations

import time

import laminar_jit as lj

from . import bench_ranking, bench_windows, common

DAGS = {
    "tumbling": lambda: bench_windows.tumbling_dag("auction"),
    "sliding": bench_windows.sliding_dag,
    "session": bench_windows.session_dag,
    "dedup": bench_ranking.dedup_dag,
    "topn": bench_ranking.topn_dag,
}


class Sharded:
    """One DAG over the standard events at ``parallelism`` 1 and 2."""

    params = (list(DAGS), [1, 2])
    param_names = ["dag", "parallelism"]
    timeout = 300

    def setup(self, dag, parallelism):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = DAGS[dag]()
        self._run(parallelism)  # compile / load the plan (and its shard driver)

    def _run(self, parallelism):
        ex = lj.DagExecutor(self.dag, parallelism=parallelism)
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
