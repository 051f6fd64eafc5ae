"""Keyed-kernel benchmarks: a per-auction running z-score against Polars window expressions.

(:func:`quiet_dag`, a kernel with an event-time timer per auction, runs in
``bench_shards`` at parallelism 1 and 2.)

laminar calls the kernel once per row in compiled code with the auction's
state record, streaming 65,536-row batches; Polars computes the same running
statistics with cumulative sums ``over("auction")`` on the whole table.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

import laminar_jit as lj

from . import common


def zscore_dag() -> lj.StreamingDag:
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("z", lj.recipes.zscore(key="auction", value="price"))
            .connect(common.SOURCE, "z").sink_for("z", "out").build())


#: Event-time milliseconds without a bid after which an auction's timer fires (:func:`quiet_dag`).
QUIET_MS = 1_000


def count_until_quiet(st, ts, price):
    """Bids and their total per auction so far; (re)arms the auction's timer ``QUIET_MS`` after this bid."""
    st.n += 1
    st.total += price
    st.timer = ts + QUIET_MS
    return st.n, st.total, False


def quiet(st, t):
    """The auction went quiet: its bids and total since the last quiet spell, then start over."""
    n, total = st.n, st.total
    st.n = 0
    st.total = 0.0
    return n, total, True


def quiet_dag() -> lj.StreamingDag:
    """A keyed kernel with an event-time timer: a row per bid, and one when an auction has been quiet for 1 s."""
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("quiet", lj.KeyedKernel(count_until_quiet, key="auction",
                                              state={"n": np.int64, "total": np.float64},
                                              output={"n": pa.int64(), "total": pa.float64(), "alarm": pa.bool_()},
                                              on_timer=quiet))
            .connect(common.SOURCE, "quiet").sink_for("quiet", "out").build())


class KeyedZScore:
    """Running z-score of the price per auction (10 K zipf keys) (Polars: :class:`KeyedZScorePolars`)."""

    timeout = 300

    def setup(self):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = zscore_dag()
        common.run_dag(self.dag, self.batches[:2])

    def time_laminar(self):
        common.run_dag(self.dag, self.batches)


class KeyedZScorePolars:
    """Running mean/std of the earlier prices of each auction with cumulative sums over the auction."""

    timeout = 300

    def setup(self):
        self.df = pl.from_arrow(common.event_table(common.n_events()))

    def time_polars(self):
        n = pl.int_range(pl.len()).over("auction")
        s1 = pl.col("price").cum_sum().over("auction") - pl.col("price")
        s2 = (pl.col("price") ** 2).cum_sum().over("auction") - pl.col("price") ** 2
        mean = s1 / n
        sd = ((s2 - n * mean ** 2) / (n - 1)).sqrt()
        self.df.select("auction", "ts", z=(pl.col("price") - mean) / sd)
