"""Keyed-kernel benchmarks: a per-auction running z-score against Polars window expressions.

laminar calls the kernel once per row in compiled code with the auction's
state record, streaming 65,536-row batches; Polars computes the same running
statistics with cumulative sums ``over("auction")`` on the whole table.
"""

from __future__ import annotations

import polars as pl

import laminar_jit as lj

from . import common


def zscore_dag() -> lj.StreamingDag:
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("z", lj.recipes.zscore(key="auction", value="price"))
            .connect(common.SOURCE, "z").sink_for("z", "out").build())


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
