"""The demo workload: generated auction bids and a multi-operator DAG over them.

Used by ``laminar-jit demo``, the quickstart notebook and the README.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .dag import DagBuilder, StreamingDag
from .ops import Filter, Map, Project
from .time import BoundedOutOfOrderness

__all__ = ["BIDS_SCHEMA", "demo_dag", "generate_bids"]

#: Schema of the generated bids.
BIDS_SCHEMA = pa.schema([
    ("ts", pa.int64()),  # event time, milliseconds
    ("auction", pa.int64()),
    ("bidder", pa.int64()),
    ("price", pa.float64()),
    ("channel", pa.string()),
])

_CHANNELS = pa.array(["web", "app", "api", "partner"])


def generate_bids(n: int, seed: int = 42, events_per_ms: int = 10, max_disorder_ms: int = 500) -> pa.Table:
    """``n`` synthetic bids: ~``events_per_ms`` per millisecond, bounded disorder, skewed auctions.

    Parameters
    ----------
    n : int
        Number of events.
    seed : int
        Random seed; the same seed gives the same table.
    events_per_ms : int
        Event rate in event time.
    max_disorder_ms : int
        Event times are shuffled by up to this much (bounded out-of-orderness).

    Returns
    -------
    pyarrow.Table
        With :data:`BIDS_SCHEMA`.
    """
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) // events_per_ms
    if max_disorder_ms:
        ts = ts + rng.integers(0, max_disorder_ms, n)
    auction = (rng.pareto(1.2, n) * 10).astype(np.int64) % 10_000
    bidder = rng.integers(0, 100_000, n)
    price = np.round(rng.lognormal(4.0, 1.0, n), 2)
    channel = _CHANNELS.take(pa.array(rng.integers(0, len(_CHANNELS), n)))
    return pa.table([ts, auction, bidder, price, channel], schema=BIDS_SCHEMA)


# Kernels of the demo, at module level so their compiled plan is cached on disk.

def is_expensive(price):
    return price > 100.0


def to_eur(price):
    return price * 0.908


def is_mobile_whale(bidder, price):
    return bidder % 7 == 0 and price > 300.0


def fee(price):
    return price * 0.015 + 0.30


def demo_dag() -> StreamingDag:
    """Filter → Map chain plus a multicast branch and a union, over :data:`BIDS_SCHEMA`.

    ::

        bids ─┬─▶ expensive ─┬─▶ eur ─▶ out_eur ─▶ [eur_sink]
              │              └─▶ expensive_cols ─┐
              └─▶ whales ─▶ whale_fee ─▶ whale_cols ─┴─▶ flagged ─▶ [flagged_sink]
    """
    return (
        DagBuilder()
        .source("bids", BIDS_SCHEMA, event_time="ts", watermark=BoundedOutOfOrderness(max_delay=500))
        .operator("expensive", Filter(is_expensive))
        .operator("eur", Map(to_eur, output="price_eur"))
        .operator("out_eur", Project(["ts", "auction", "price", "price_eur", "channel"]))
        .operator("whales", Filter(is_mobile_whale))
        .operator("whale_fee", Map(fee, output="fee"))
        .operator("whale_cols", Project(["ts", "auction", "bidder", "price"]))
        .operator("expensive_cols", Project(["ts", "auction", "bidder", "price"]))
        .operator("flagged", Filter(lambda price: price > 500.0))
        .connect("bids", "expensive").connect("expensive", "eur").connect("eur", "out_eur")
        .connect("bids", "whales").connect("whales", "whale_fee").connect("whale_fee", "whale_cols")
        .connect("expensive", "expensive_cols")
        .connect("expensive_cols", "flagged").connect("whale_cols", "flagged")
        .sink_for("out_eur", "eur_sink")
        .sink_for("flagged", "flagged_sink")
        .build()
    )
