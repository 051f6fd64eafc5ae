"""Seeded, cached data and DAG builders shared by the asv benchmarks.

Everything here is deterministic (one seed) and memoized with
:func:`functools.lru_cache`, so a benchmark's ``setup`` pays for building a
table or a DAG once per process and the timed methods only ever see ready
objects (numpy's rule: data preparation never in the timed method).

Sizes are read from the environment *when a builder is called*, not at
import: ``LAMINAR_BENCH_SMALL=1`` switches to tiny inputs so the pytest smoke
test (``tests/test_asv.py``) can run every benchmark in seconds. Caches are
keyed by size, so flipping the variable in one process is safe.

Kernels are module-level functions on purpose. A DAG's fingerprint hashes its
kernels' bytecode, and the fingerprint names the generated plan file that
Numba's ``cache=True`` serves to the next process. A lambda built inside a
factory would hash the same today, but a closure over a fresh object would
not, and then every asv process would recompile every plan.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

import laminar_jit as lj

__all__ = [
    "EVENT_SCHEMA",
    "cache_dir",
    "SHAPES",
    "SOURCE",
    "event_batches",
    "event_table",
    "events_for_batch_size",
    "filter_map_dag",
    "n_events",
    "run_dag",
    "shape_dag",
    "small",
    "warm_up",
]

#: Environment variable that selects tiny sizes (``"1"``) for the smoke test.
SMALL_ENV = "LAMINAR_BENCH_SMALL"

SEED = 20_240_601
#: Name of the one source every benchmark DAG reads.
SOURCE = "events"

N_AUCTIONS = 10_000
N_BIDDERS = 100_000
#: Zipf exponent of the auction popularity (1.1: the hottest key gets ~10% of events).
AUCTION_SKEW = 1.1
#: Events are 1 ms apart and arrive up to this many ms late (bounded disorder).
MAX_DISORDER_MS = 2_000
#: Event time of the first event: 2024-01-01T00:00:00Z in epoch milliseconds.
T0_MS = 1_704_067_200_000

EVENT_SCHEMA = pa.schema([
    ("ts", pa.int64()),
    ("auction", pa.int64()),
    ("bidder", pa.int64()),
    ("price", pa.float64()),
])


# ----------------------------------------------------------------------------- sizes

def small() -> bool:
    """True when ``LAMINAR_BENCH_SMALL=1`` asks for smoke-test sizes."""
    return os.environ.get(SMALL_ENV, "") == "1"


def n_events() -> int:
    """Events in the standard table: 5,000,000 (20,000 with ``LAMINAR_BENCH_SMALL=1``)."""
    return 20_000 if small() else 5_000_000


#: Tiny batches cost a Python call each, so they get fewer events: a run of
#: ``Shapes`` stays within a few seconds at every batch size.
_EVENTS_FOR_TINY_BATCHES = {1: 20_000, 64: 200_000}
_EVENTS_FOR_TINY_BATCHES_SMALL = {1: 500, 64: 5_000}


def events_for_batch_size(batch_size: int) -> int:
    """Number of events a benchmark at ``batch_size`` rows per batch pushes through."""
    table = _EVENTS_FOR_TINY_BATCHES_SMALL if small() else _EVENTS_FOR_TINY_BATCHES
    return table.get(batch_size, n_events())


# ----------------------------------------------------------------------------- data

def cache_dir() -> Path:
    """Directory for benchmark data files: ``$LAMINAR_BENCH_DATA``, else ``bench/`` in the engine's cache
    (``$LAMINAR_JIT_CACHE_DIR`` or ``~/.cache/laminar_jit``)."""
    engine = os.environ.get("LAMINAR_JIT_CACHE_DIR", Path.home() / ".cache" / "laminar_jit")
    path = Path(os.environ.get("LAMINAR_BENCH_DATA", Path(engine) / "bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def event_table(n: int | None = None) -> pa.Table:
    """The standard event table (one chunk, schema :data:`EVENT_SCHEMA`).

    Columns: ``ts`` int64 epoch ms, 1 ms apart with up to
    :data:`MAX_DISORDER_MS` of disorder; ``auction`` int64, Zipf-skewed over
    :data:`N_AUCTIONS` keys (hot keys scattered over the id range, so hashing
    sees no accidental order); ``bidder`` int64 uniform over
    :data:`N_BIDDERS`; ``price`` float64 uniform in [0, 200).

    Parameters
    ----------
    n : int, optional
        Number of events; :func:`n_events` by default.
    """
    return _event_table(n_events() if n is None else int(n))


@functools.lru_cache(maxsize=8)
def _event_table(n: int) -> pa.Table:
    rng = np.random.default_rng(SEED)
    ts = T0_MS + np.arange(n, dtype=np.int64) - rng.integers(0, MAX_DISORDER_MS, n, dtype=np.int64)
    popularity = 1.0 / np.arange(1, N_AUCTIONS + 1, dtype=np.float64) ** AUCTION_SKEW
    rank = rng.choice(N_AUCTIONS, size=n, p=popularity / popularity.sum())
    auction = rng.permutation(N_AUCTIONS).astype(np.int64)[rank]
    bidder = rng.integers(0, N_BIDDERS, n, dtype=np.int64)
    price = rng.uniform(0.0, 200.0, n)
    return pa.Table.from_arrays([ts, auction, bidder, price], schema=EVENT_SCHEMA)


@functools.lru_cache(maxsize=16)
def event_batches(n: int, batch_size: int) -> tuple[pa.RecordBatch, ...]:
    """:func:`event_table` of ``n`` events split into record batches of ``batch_size`` rows.

    The batches are zero-copy slices of the table.
    """
    return tuple(event_table(n).to_batches(max_chunksize=int(batch_size)))


# ----------------------------------------------------------------------------- kernels
# Parameters name the columns they read (see laminar_jit.ops.kernel).

def expensive(price):
    return price > 100.0


def cheap(price):
    return price < 20.0


def positive_price(price):
    return price > 1.0


def even_bidder(bidder):
    return bidder % 2 == 0


def even_auction(auction):
    return auction % 2 == 0


def to_eur(price):
    return price * 0.908


def with_fee(price):
    return price * 1.05


def double_eur(price_eur):
    return price_eur * 2.0


def value_over_100(value):
    return value > 100.0


def high_eur(price_eur):
    return price_eur > 120.0


def low_eur(price_eur):
    return price_eur <= 120.0


def score_high(price_eur):
    return price_eur * 2.0


def score_low(price_eur):
    return price_eur + 10.0


def auction_bucket(auction):
    return auction % 16


def low_bucket(bucket):
    return bucket < 8


def margin(score, price):
    return score - price


def x_over_20(x):
    return x > 20.0


def x_plus_one(x):
    return x + 1.0


def half_y(y):
    return y * 0.5


def z_over_10(z):
    return z > 10.0


def z_minus_price(z, price):
    return z - price


# ----------------------------------------------------------------------------- DAGs

def _with_source() -> lj.DagBuilder:
    return lj.DagBuilder().source(
        SOURCE, EVENT_SCHEMA, event_time="ts",
        watermark=lj.BoundedOutOfOrderness(max_delay=MAX_DISORDER_MS),
    )


def _chain(builder: lj.DagBuilder, upstream: str, ops: list[tuple[str, object]]) -> str:
    """Add ``ops`` as a chain after ``upstream``; returns the last node's name."""
    for name, op in ops:
        builder.operator(name, op).connect(upstream, name)
        upstream = name
    return upstream


@functools.lru_cache(maxsize=None)
def filter_map_dag() -> lj.StreamingDag:
    """events → Filter(price > 100) → Map(price * 0.908 → price_eur) → sink ``out``."""
    b = _with_source()
    last = _chain(b, SOURCE, [
        ("expensive", lj.Filter(expensive)),
        ("eur", lj.Map(to_eur, output="price_eur")),
    ])
    return b.sink_for(last, "out").build()


def linear_3() -> lj.StreamingDag:
    """events → Filter(price > 100) → Map(→ price_eur) → Map(price_eur * 2 → x) → sink ``out``.

    Five nodes; also the DAG of ``FixedCost`` and ``timeraw_cold_start``.
    """
    b = _with_source()
    last = _chain(b, SOURCE, [
        ("expensive", lj.Filter(expensive)),
        ("eur", lj.Map(to_eur, output="price_eur")),
        ("double", lj.Map(double_eur, output="x")),
    ])
    return b.sink_for(last, "out").build()


def fan_out_3() -> lj.StreamingDag:
    """events multicast to three different Filters, each with its own sink."""
    b = _with_source()
    for name, fn in [("expensive", expensive), ("cheap", cheap), ("even_bidder", even_bidder)]:
        b.operator(name, lj.Filter(fn)).connect(SOURCE, name).sink_for(name, f"out_{name}")
    return b.build()


def diamond() -> lj.StreamingDag:
    """events → two Maps writing different columns → both Projected to one schema → union Filter → sink.

    The two branches bind ``value`` to different derived arrays, so the fan-in
    gathers a new column space (the expensive kind of fan-in).
    """
    b = _with_source()
    b.operator("eur", lj.Map(to_eur, output="price_eur")).connect(SOURCE, "eur")
    b.operator("fee", lj.Map(with_fee, output="price_fee")).connect(SOURCE, "fee")
    b.operator("eur_value", lj.Project({"ts": "ts", "auction": "auction", "value": "price_eur"}))
    b.operator("fee_value", lj.Project({"ts": "ts", "auction": "auction", "value": "price_fee"}))
    b.connect("eur", "eur_value").connect("fee", "fee_value")
    b.operator("over_100", lj.Filter(value_over_100))
    b.connect("eur_value", "over_100").connect("fee_value", "over_100")
    return b.sink_for("over_100", "out").build()


def complex_10() -> lj.StreamingDag:
    """Ten operators mixing Filter/Map/Project with one multicast and one fan-in.

    ::

        events → valid → eur ─┬→ high → high_score ─┬→ bucket → low_bucket → margin → select → out
                              └→ low  → low_score  ─┘
    """
    b = _with_source()
    eur = _chain(b, SOURCE, [
        ("valid", lj.Filter(positive_price)),
        ("eur", lj.Map(to_eur, output="price_eur")),
    ])
    high = _chain(b, eur, [("high", lj.Filter(high_eur)), ("high_score", lj.Map(score_high, output="score"))])
    low = _chain(b, eur, [("low", lj.Filter(low_eur)), ("low_score", lj.Map(score_low, output="score"))])
    b.operator("bucket", lj.Map(auction_bucket, output="bucket"))
    b.connect(high, "bucket").connect(low, "bucket")
    last = _chain(b, "bucket", [
        ("low_bucket", lj.Filter(low_bucket)),
        ("margin", lj.Map(margin, output="margin")),
        ("select", lj.Project(["ts", "auction", "bucket", "score", "margin"])),
    ])
    return b.sink_for(last, "out").build()


def deep_10() -> lj.StreamingDag:
    """Ten operators in one chain (Filters, Maps, a final Project)."""
    b = _with_source()
    last = _chain(b, SOURCE, [
        ("valid", lj.Filter(positive_price)),
        ("eur", lj.Map(to_eur, output="price_eur")),
        ("double", lj.Map(double_eur, output="x")),
        ("x_over_20", lj.Filter(x_over_20)),
        ("plus_one", lj.Map(x_plus_one, output="y")),
        ("even_auction", lj.Filter(even_auction)),
        ("half", lj.Map(half_y, output="z")),
        ("z_over_10", lj.Filter(z_over_10)),
        ("net", lj.Map(z_minus_price, output="w")),
        ("select", lj.Project(["ts", "auction", "w"])),
    ])
    return b.sink_for(last, "out").build()


_SHAPE_FACTORIES = {f.__name__: f for f in (linear_3, fan_out_3, diamond, complex_10, deep_10)}

#: DAG shapes of ``bench_core.Shapes``, in display order.
SHAPES = tuple(_SHAPE_FACTORIES)


@functools.lru_cache(maxsize=None)
def shape_dag(shape: str) -> lj.StreamingDag:
    """The built (validated) DAG of ``shape``, one of :data:`SHAPES` (memoized)."""
    return _SHAPE_FACTORIES[shape]()


# ----------------------------------------------------------------------------- running

def run_dag(dag: lj.StreamingDag, batches, parallelism: int = 1) -> dict[str, pa.Table]:
    """Push ``batches`` through a fresh executor (of ``parallelism``) and drain every sink.

    A fresh :class:`~laminar_jit.DagExecutor` per call keeps runs independent
    (no sink buffers or metrics carried over); constructing it is cheap once
    the plan is memoized, which :func:`warm_up` ensures.
    """
    ex = lj.DagExecutor(dag, parallelism=parallelism)
    for batch in batches:
        ex.process_batch(SOURCE, batch)
    return ex.take_all_sink_outputs()


def warm_up(dag: lj.StreamingDag, table: pa.Table | None = None) -> dict[str, pa.Table]:
    """Compile (or load from Numba's disk cache) ``dag``'s plan and run it once.

    Runs a 1-row batch (the coalescing sink path) and a 2,048-row batch (the
    eager path, at least ``EAGER_ROWS``) through a fresh executor, so no timed
    call pays for compilation or first-call initialisation.
    """
    table = event_table(4_096) if table is None else table
    return run_dag(dag, [_head(table, 1), _head(table, 2_048)])


def _head(table: pa.Table, rows: int) -> pa.RecordBatch:
    return table.slice(0, rows).combine_chunks().to_batches()[0]
