"""What it costs that a raising kernel can be taken back (see ``laminar_jit/executor/faults.py``).

The same map -> 10 s tumbling window over the standard events, once with a
kernel that cannot raise and once with the same kernel plus a ``raise`` for
bad data (which never fires here). The second DAG runs under the fault
guard: every call logs its batch, and the window state is copied whenever
the logged rows outgrow it. The ratio of the two is the guard's price; DAGs
without a raising kernel do not pay it. ``keys_1m`` has about 1 M open keys,
so its state copies are the largest the standard data makes.
"""

from __future__ import annotations

import laminar_jit as lj

from . import common

SIZE_MS = 10_000


def fee(price, bidder, auction):
    return price * 1.01


def checked_fee(price, bidder, auction):
    if price < 0:
        raise ValueError("negative price")
    return price * 1.01


def fee_dag(kernel, keys: str) -> lj.StreamingDag:
    key = "auction" if keys == "auction" else "wide"
    b = (lj.DagBuilder()
         .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                 watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
         .operator("fee", lj.Map(kernel, output="with_fee")))
    if key == "wide":
        b = b.operator("widen", lj.Map(lambda bidder, auction: bidder * 10 + auction % 10, output="wide"))
        b = b.connect("fee", "widen")
    return (b.operator("per_key", lj.TumblingWindow(size=SIZE_MS, key=key,
                                                    aggs={"n": lj.count(), "total": lj.sum("with_fee")}))
            .connect(common.SOURCE, "fee").connect("widen" if key == "wide" else "fee", "per_key")
            .sink_for("per_key", "out").build())


class GuardedTumbling:
    """Map + tumbling window, with a kernel that cannot raise (``plain``) and one that can (``raising``)."""

    params = (["plain", "raising"], ["auction", "keys_1m"])
    param_names = ["kernel", "keys"]
    timeout = 300

    def setup(self, kernel, keys):
        self.batches = common.event_batches(common.n_events(), 65_536)
        self.dag = fee_dag(fee if kernel == "plain" else checked_fee, keys)
        common.run_dag(self.dag, self.batches[:2])  # compile / load the plan

    def time_laminar(self, kernel, keys):
        ex = lj.DagExecutor(self.dag)
        for batch in self.batches:
            ex.process_batch(common.SOURCE, batch)
        ex.finish()
        ex.take_sink_outputs("out")
