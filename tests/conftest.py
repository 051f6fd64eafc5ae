"""Shared test data: random event tables with disorder, skew and nulls, and batch splitting."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

BIDS = pa.schema([
    ("ts", pa.int64()),
    ("auction", pa.int64()),
    ("bidder", pa.int64()),
    ("price", pa.float64()),
    ("channel", pa.string()),
])


def make_bids(n: int, seed: int = 0, null_fraction: float = 0.05) -> pa.Table:
    """Bids with out-of-order timestamps, zipf-skewed auctions, nulls in price/bidder, a string column."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 10 + rng.integers(-500, 500, n)
    auction = np.minimum(rng.zipf(1.3, n), 1000).astype(np.int64)
    bidder = rng.integers(0, 10_000, n)
    price = np.round(rng.uniform(0, 200, n), 2)
    price_mask = rng.random(n) < null_fraction
    bidder_mask = rng.random(n) < null_fraction
    channel = pa.array(rng.choice(["web", "app", "api", ""], n))
    return pa.table({
        "ts": ts,
        "auction": auction,
        "bidder": pa.array(bidder, mask=bidder_mask),
        "price": pa.array(price, mask=price_mask),
        "channel": channel,
    }, schema=BIDS)


def split_table(table: pa.Table, cuts) -> list[pa.RecordBatch]:
    """Record batches of ``table`` cut at the sorted positions ``cuts`` (empty batches allowed)."""
    bounds = [0] + sorted(min(max(c, 0), table.num_rows) for c in cuts) + [table.num_rows]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        piece = table.slice(lo, hi - lo).combine_chunks()
        batches = piece.to_batches()
        out.append(batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema))
    return out


def checkpointed_run(dag, batches, at: int, path, source: str = "bids", sink: str = "out") -> pa.Table:
    """``sink``'s output when a run is checkpointed to ``path`` after ``at`` batches and a fresh executor,
    restored from the saved checkpoint, processes the rest and finishes."""
    import laminar_jit as lj

    ex = lj.DagExecutor(dag)
    for b in batches[:at]:
        ex.process_batch(source, b)
    first = ex.take_sink_outputs(sink)
    ex.checkpoint().save(path)
    again = lj.DagExecutor(dag)
    again.restore(lj.Checkpoint.load(path))
    for b in batches[at:]:
        again.process_batch(source, b)
    again.finish()
    return pa.concat_tables([first, again.take_sink_outputs(sink)])
