"""Test data, kernels and drivers that several test files share.

A test file takes what another needs from here (or from ``conftest.py``), never from another test file.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj
from conftest import split_table

# ----------------------------------------------------------------------------- window operators
#: Events of the window, session, dedup and top-N tests.
SCHEMA = pa.schema([("ts", pa.int64()), ("auction", pa.int64()), ("price", pa.float64()), ("ch", pa.string())])
#: Window size of the window tests.
SIZE = 1_000
#: Every built-in aggregate over ``price``; DuckDB references compute the same columns.
AGGS = {"n": lj.count(), "c": lj.count("price"), "s": lj.sum("price"), "lo": lj.min("price"),
        "hi": lj.max("price"), "avg": lj.mean("price"), "f": lj.first("price"), "l": lj.last("price")}


def event_table(rng, ts: np.ndarray, zipf: float, n_keys: int, key_nulls: float, null_fraction: float) -> pa.Table:
    """Rows at times ``ts``: zipf-skewed auctions (some null), nulls and a few NaN in price, a string channel."""
    n = ts.size
    auction = np.minimum(rng.zipf(zipf, n), n_keys).astype(np.int64)
    price = np.round(rng.uniform(0, 100, n), 1)
    price[rng.random(n) < 0.01] = np.nan
    return pa.table({
        "ts": ts,
        "auction": pa.array(auction, mask=rng.random(n) < key_nulls),
        "price": pa.array(price, mask=rng.random(n) < null_fraction),
        "ch": pa.array(rng.choice(["web", "app", "api"], n)),
    }, schema=SCHEMA)


def events(n: int, seed: int, disorder: int = 300, null_fraction: float = 0.05) -> pa.Table:
    """Steady arrivals with bounded disorder (see :func:`event_table`)."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 7 + rng.integers(0, disorder + 1, n)
    return event_table(rng, ts, 1.4, 60, 0.02, null_fraction)


#: Gap of the session tests.
GAP = 60


def bursts(n: int, seed: int, disorder: int = 40, null_fraction: float = 0.05) -> pa.Table:
    """Bursty activity (pauses between bursts), zipf keys with nulls, nulls/NaN in price, disorder."""
    rng = np.random.default_rng(seed)
    steps = rng.integers(0, 12, n) + np.where(rng.random(n) < 0.03, rng.integers(50, 400, n), 0)
    ts = np.cumsum(steps).astype(np.int64) + rng.integers(0, disorder + 1, n)
    return event_table(rng, ts, 1.6, 30, 0.03, null_fraction)


def run_bids(dag, batches):
    """Feed ``batches`` to the source ``bids`` of a new executor and finish; return it and every sink's output."""
    ex = lj.DagExecutor(dag)
    for b in batches:
        ex.process_batch("bids", b)
    ex.finish()
    return ex, ex.take_all_sink_outputs()


def watermark_before(ts: np.ndarray, delay: int) -> np.ndarray:
    """Reference: the source watermark in force when each row arrives (running max − delay)."""
    wm = np.empty(ts.size, np.int64)
    wm[:1] = np.iinfo(np.int64).min
    wm[1:] = np.maximum.accumulate(ts[:-1]) - delay
    return wm


def assert_windows(got: pa.Table, want: pl.DataFrame):
    """``got`` equals ``want`` row for row; sums and means to a relative 1e-12."""
    g = pl.from_arrow(got)
    assert g.columns == want.columns
    assert g.height == want.height
    exact = [c for c in g.columns if c not in ("s", "avg")]
    assert g.select(exact).equals(want.select(exact), null_equal=True)
    for c in ("s", "avg"):
        a, b = g[c].to_numpy(), want[c].to_numpy()
        assert np.allclose(a, b, equal_nan=True, rtol=1e-12, atol=1e-9)


# ----------------------------------------------------------------------------- joins
#: The two sides of the join tests: ``L`` (``a`` and a string ``tag``) and ``R`` (``b``), keyed by ``k``.
LEFT = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("a", pa.float64()), ("tag", pa.string())])
RIGHT = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("b", pa.float64())])
DELAY = 100  # more than the data's disorder (±40), so no row is late whatever the interleaving
#: (direction, how, tolerance) of the as-of joins tested: every direction, both join types, with and
#: without a tolerance (plus the temporal join: backward, left, none).
ASOF = (("backward", "inner", None), ("backward", "left", 25), ("forward", "left", 25), ("nearest", "inner", 25),
        ("nearest", "left", None))


def make_side(n: int, seed: int, schema: pa.Schema, keys: int = 30, unique_ts: bool = False) -> pa.Table:
    """Out-of-order rows (±40 around a 7-unit grid), one hot key, 5% null keys and values."""
    rng = np.random.default_rng(seed)
    if unique_ts:  # distinct times: an as-of match is then unambiguous
        ts = np.sort(rng.choice(n * 10, n, replace=False)).astype(np.int64)
        ts = ts[np.argsort(np.arange(n) + rng.integers(0, 4, n), kind="stable")]  # a little disorder
    else:
        ts = np.arange(n, dtype=np.int64) * 7 + rng.integers(-40, 41, n)
    k = np.where(rng.random(n) < 0.3, 0, rng.integers(1, keys, n))  # key 0 is hot
    cols = {"ts": ts, "k": pa.array(k, mask=rng.random(n) < 0.05),
            schema.names[2]: pa.array(np.round(rng.uniform(0, 100, n), 3), mask=rng.random(n) < 0.05)}
    if "tag" in schema.names:
        cols["tag"] = pa.array(rng.choice(["x", "yy", "", "zzz"], n))
    return pa.table(cols, schema=schema)


def interleaved(left: pa.Table, right: pa.Table, seed: int):
    """(source, batch) pairs: each side cut at random points (empty and 1-row batches included), mixed at random."""
    rng = np.random.default_rng(seed)
    parts = []
    for name, table in (("L", left), ("R", right)):
        cuts = list(rng.integers(0, table.num_rows + 1, 12)) + [3, 3, 4]
        parts.append([(name, b) for b in split_table(table, cuts)])
    out, (a, b) = [], parts
    while a or b:
        take_a = bool(a) and (not b or rng.random() < 0.5)
        out.append((a if take_a else b).pop(0))
    return out


def join_sources(builder):
    """``builder`` with the sources ``L`` and ``R`` (bounded disorder of :data:`DELAY`)."""
    return (builder
            .source("L", LEFT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=DELAY))
            .source("R", RIGHT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=DELAY)))


def join_dag(op):
    """``L`` and ``R`` into one join ``j`` and the sink ``out``."""
    return (join_sources(lj.DagBuilder()).operator("j", op)
            .connect("L", "j", port="left").connect("R", "j", port="right").sink_for("j", "out").build())


# ----------------------------------------------------------------------------- keyed kernels
def arm_quiet_timer(st, ts, temp):
    """Keyed kernel: count and sum per key, and (re)arm a timer 200 event-time units ahead."""
    st.n += 1
    st.total += temp
    st.timer = ts + 200  # (re)arm: fires once the key has been quiet for 200 event-time units
    return st.n, st.total, False


def on_quiet(st, t):
    """Timer of :func:`arm_quiet_timer`: emit the key's count and sum with the alarm set, and start over."""
    n, total = st.n, st.total
    st.n = 0
    st.total = 0.0
    return n, total, True


# ----------------------------------------------------------------------------- crashed runs
class Crashing(lj.io.MemorySource):
    """Raises after ``after`` batches the first time it is read: a crash mid-run."""

    def __init__(self, batches, after: int):
        super().__init__(batches)
        self.after = after

    def batches(self, start_row=0):
        for i, b in enumerate(super().batches(start_row)):
            if self.after is not None and i == self.after:
                self.after = None
                raise RuntimeError("crash")
            yield b


def latest_epoch(chk: Path) -> int:
    """Epoch of the newest checkpoint (``chk-NNNNNNNN``) in the directory ``chk``; 0 when there is none."""
    names = [p.name for p in chk.iterdir() if p.name.startswith("chk-")] if chk.is_dir() else []
    return max((int(n[4:]) for n in names), default=0)


def kill_at_random_moments(spawn: Callable[[], subprocess.Popen], chk: Path, rng, attempts: int,
                           epochs: tuple[int, int] = (1, 5), jitter: float = 0.02,
                           first_anywhere: float | None = None, after_kill: Callable[[], None] | None = None) -> int:
    """Start a checkpointed run ``attempts`` times and SIGKILL each at a random moment.

    Each attempt waits until the run has written ``rng.integers(*epochs)``
    more checkpoints to ``chk`` (or has ended), sleeps up to ``jitter``
    seconds and kills it; ``after_kill()`` runs after each kill. With
    ``first_anywhere``, the first attempt is killed after up to that many
    seconds instead, start-up included. It stops when a run ends on its own.

    Returns
    -------
    int
        Kills of runs that had made progress (a ``first_anywhere`` kill not counted).
    """
    kills = 0
    for attempt in range(attempts):
        proc = spawn()
        if attempt == 0 and first_anywhere is not None:
            time.sleep(rng.uniform(0.0, first_anywhere))
        else:
            target = latest_epoch(chk) + int(rng.integers(*epochs))
            while proc.poll() is None and latest_epoch(chk) < target:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, jitter))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += not (attempt == 0 and first_anywhere is not None)
        if after_kill is not None:
            after_kill()
    return kills


# --- SQL tests (test_sql, test_sql_corpus) ---

def bids(n: int, seed: int) -> pa.Table:
    """Events with nulls in auction and price, a string channel; NaN replaced (DuckDB orders NaN above every
    number, kernels compare it as IEEE does)."""
    t = events(n, seed)
    price = pc.if_else(pc.is_nan(t.column("price")), 0.5, t.column("price"))
    return t.set_column(t.schema.get_field_index("price"), "price", price)


def duck(query: str, table: pa.Table) -> pa.Table:
    con = duckdb.connect()
    con.register("bids", table)
    return con.sql(query).to_arrow_table()


def assert_rows(got: pa.Table, want: pa.Table) -> None:
    """Same rows in any order; floats to 1e-9 relative; nulls equal."""
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows, (got.num_rows, want.num_rows)
    got, want = _decoded(got), _decoded(want)
    # exact columns first: floats that differ in their last bit (sums in another order) must not reorder rows
    floats = {f.name for f in got.schema if pa.types.is_floating(f.type)}
    keys = [(c, "ascending") for c in sorted(got.column_names, key=lambda c: c in floats)]
    got, want = got.sort_by(keys), want.sort_by(keys)
    for name in got.column_names:
        g, w = got.column(name).to_pylist(), want.column(name).to_pylist()
        for a, b in zip(g, w):
            if isinstance(a, float) and isinstance(b, float):
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), name
            else:
                assert a == b, (name, a, b)


def _decoded(t: pa.Table) -> pa.Table:
    """Dictionary columns as their values (Arrow does not sort dictionaries)."""
    return t.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                             for f in t.schema]))
