"""Key shards (``DagExecutor(dag, parallelism=N)``): the same rows, in the same order, as one executor.

The reference is the unsharded executor, itself checked against DuckDB in the
window, session, dedup and top-N tests. Inputs are out of order, with null
and zipf-skewed keys, string keys, late rows, and random batch splits that
include empty and one-row batches; the runs also punctuate, mark sources idle
and interleave two sources of one window.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import laminar_jit as lj
from conftest import split_table
from helpers import AGGS, GAP, SCHEMA, SIZE, bursts, events
from laminar_jit.executor.shards import shard_plan
from laminar_jit.kernels.merging import merge_positions, merge_shards


def _source(b, name="bids", delay=50):
    return b.source(name, SCHEMA, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=delay))


def _tumbling_two_sources():
    """Two sources into one tumbling window by auction (late rows to a side output), plus a filtered pass-through."""
    b = _source(_source(lj.DagBuilder()), "more")
    return (b.operator("cheap", lj.Filter(lambda price: price < 50.0)).connect("bids", "cheap")
            .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs=AGGS, allowed_lateness=20,
                                             late="side_output", late_sink="late"))
            .connect("cheap", "w").connect("more", "w")
            .sink_for("w", "out").sink_for("cheap", "passed").build())


def _sliding_by_string():
    """A sliding window by a string key, its results renamed and filtered before the sink."""
    return (_source(lj.DagBuilder())
            .operator("w", lj.SlidingWindow(SIZE, SIZE // 4, key="ch", aggs={"n": lj.count(), "s": lj.sum("price")}))
            .operator("busy", lj.Filter(lambda n: n > 2))
            .operator("named", lj.Project({"channel": "ch", "closes": "window_end", "n": "n", "s": "s"}))
            .connect("bids", "w").connect("w", "busy").connect("busy", "named").sink_for("named", "out").build())


def _sessions():
    """Sessions per auction behind a projection that keeps the key column."""
    return (_source(lj.DagBuilder(), delay=30)
            .operator("cols", lj.Project(["ts", "price", "auction"]))
            .operator("w", lj.SessionWindow(GAP, key="auction", aggs={"n": lj.count(), "hi": lj.max("price"),
                                                                        "f": lj.first("price")}))
            .connect("bids", "cols").connect("cols", "w").sink_for("w", "out").build())


def _dedup_and_topn():
    return (_source(lj.DagBuilder())
            .operator("d", lj.Dedup(key="auction", within=SIZE, late="side_output", late_sink="late"))
            .operator("t", lj.TopN(2, by="price", key="auction", window=SIZE))
            .connect("bids", "d").connect("bids", "t").sink_for("d", "first").sink_for("t", "top").build())


def _chained():
    """Windows of windows: per-auction counts of short windows, summed per auction over long ones."""
    return (_source(lj.DagBuilder())
            .operator("short", lj.TumblingWindow(SIZE // 4, key="auction", aggs={"n": lj.count(), "hi": lj.max("price")}))
            .operator("long", lj.TumblingWindow(SIZE, key="auction", allowed_lateness=SIZE,
                                                aggs={"windows": lj.count(), "n": lj.sum("n"), "hi": lj.max("hi")}))
            .connect("bids", "short").connect("short", "long").sink_for("short", "quarters").sink_for("long", "out")
            .build())


DAGS = {"tumbling": _tumbling_two_sources, "sliding": _sliding_by_string, "session": _sessions,
        "dedup+topn": _dedup_and_topn, "chained": _chained}
_BUILT: dict = {}


def _dag(name):
    if name not in _BUILT:
        _BUILT[name] = DAGS[name]()
    return _BUILT[name]


def _drive(dag, parallelism, steps):
    """Run ``steps`` ((source, batch) or ("advance", ts) / ("idle", source)); every sink's output and metrics."""
    ex = lj.DagExecutor(dag, parallelism=parallelism)
    assert ex.shards == parallelism, ex.shards_note
    _feed(ex, steps)
    ex.finish()
    outputs = ex.take_all_sink_outputs()
    m = ex.metrics
    return outputs, (m.events_processed, m.late_events, m.per_node), ex


def _same(got: pa.Table, want: pa.Table) -> bool:
    """Equal schemas and rows in the same order (NaN equals NaN, unlike ``pa.Table.equals``)."""
    return got.schema.equals(want.schema) and pl.from_arrow(got).equals(pl.from_arrow(want), null_equal=True)


def _steps(dag, table, seed):
    rng = np.random.default_rng(seed)
    cuts = list(rng.integers(0, table.num_rows + 1, 14)) + [5, 5, 6]
    batches = split_table(table, cuts)
    sources = list(dag.sources)
    steps = []
    for b in batches:
        steps.append((sources[rng.integers(len(sources))], b))
        if rng.random() < 0.1:
            steps.append(("advance", int(b.column("ts").to_numpy().min()) if b.num_rows else 0))
        if len(sources) > 1 and rng.random() < 0.1:
            steps.append(("idle", sources[rng.integers(len(sources))]))
    return steps


@pytest.mark.parametrize("name", list(DAGS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]), bursty=st.booleans())
def test_sharded_runs_equal_one_executor_row_for_row(name, seed, shards, bursty):
    dag = _dag(name)
    table = (bursts if bursty else events)(1500, seed)
    steps = _steps(dag, table, seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, _ = _drive(dag, shards, steps)
    assert got.keys() == want.keys()
    for sink in want:
        assert _same(got[sink], want[sink]), sink
    assert got_metrics[0] == want_metrics[0]
    assert got_metrics[1] == want_metrics[1]
    for node, counts in want_metrics[2].items():
        assert got_metrics[2][node] == counts, node


@st.composite
def _random_dags(draw):
    """A random shardable DAG: a window-family operator by a random key, maybe behind and before stateless ones."""
    kind = draw(st.sampled_from(["tumbling", "sliding", "session", "topn", "dedup"]))
    key = draw(st.sampled_from([["auction"], ["ch"], ["ch", "auction"]]))
    pre = draw(st.sampled_from([None, "filter", "project"]))
    post = draw(st.booleans())
    b = _source(lj.DagBuilder(), delay=draw(st.sampled_from([0, 50])))
    up = "bids"
    if pre is not None:
        b.operator("pre", lj.Filter(lambda price: price > 10.0) if pre == "filter"
                   else lj.Project(["ts", "ch", "price", "auction"])).connect(up, "pre")
        up = "pre"
    aggs = {"n": lj.count(), "s": lj.sum("price")}
    op = {"tumbling": lambda: lj.TumblingWindow(SIZE, key=key, aggs=aggs),
          "sliding": lambda: lj.SlidingWindow(SIZE, SIZE // 2, key=key, aggs=aggs),
          "session": lambda: lj.SessionWindow(GAP, key=key, aggs=aggs),
          "topn": lambda: lj.TopN(2, by="price", key=key, window=SIZE),
          "dedup": lambda: lj.Dedup(key=key, within=SIZE)}[kind]()
    b.operator("op", op).connect(up, "op")
    last = "op"
    if post:
        b.operator("post", lj.Filter(lambda price: price < 90.0) if kind in ("dedup", "topn")
                   else lj.Filter(lambda n: n > 1)).connect("op", "post")
        last = "post"
    return b.sink_for(last, "out").build(), len(key) > 1


@settings(max_examples=4, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(built=_random_dags(), seed=st.integers(0, 2**16), shards=st.sampled_from([2, 3]))
def test_random_shardable_dags_equal_one_executor(built, seed, shards):
    # derandomized: the same few DAGs every run, so their plans come from the disk cache after the first
    dag, composite = built
    steps = _steps(dag, bursts(1200, seed), seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, _ = _drive(dag, shards, steps)
    if composite:  # rows of one window end come in shard order with composite keys
        assert _sorted(got["out"]).equals(_sorted(want["out"]), null_equal=True)
    else:
        assert _same(got["out"], want["out"])
    assert got_metrics == want_metrics


def test_a_shard_without_rows_still_emits_what_the_watermark_made_due():
    # one key: every row goes to one shard; the other shards see only the watermark
    dag = _dag("session")
    table = bursts(400, 3)
    table = table.set_column(1, "auction", pa.array(np.full(table.num_rows, 7, np.int64)))
    steps = _steps(dag, table, 3)
    want, _, _ = _drive(dag, 1, steps)
    got, _, ex = _drive(dag, 3, steps)
    assert _same(got["out"], want["out"])
    assert ex.watermark("w") == np.iinfo(np.int64).max


def test_watermarks_and_late_rows_are_decided_on_the_whole_batch():
    # rows late only against the watermark of *other* keys' rows earlier in the same batch
    dag = _dag("tumbling")
    ts = np.array([0, 10_000, 500, 10_001, 600], np.int64)
    batch = pa.table({"ts": ts, "auction": pa.array([1, 2, 3, 4, 5], pa.int64()),
                      "price": [1.0, 2.0, 3.0, 4.0, 5.0], "ch": ["a"] * 5}, schema=SCHEMA)
    steps = [("idle", "more"), ("bids", batch.to_batches()[0])]
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, _ = _drive(dag, 2, steps)
    assert want["late"].num_rows == 2
    assert _same(got["late"], want["late"]) and _same(got["out"], want["out"])
    assert got_metrics[1] == want_metrics[1] == 2


def test_what_cannot_be_sharded_runs_as_one_executor_and_says_why(caplog):
    b = _source(lj.DagBuilder())
    keyless = b.operator("w", lj.TumblingWindow(SIZE, aggs={"n": lj.count()})).connect("bids", "w") \
        .sink_for("w", "out").build()
    assert "has no key" in shard_plan(keyless)
    ex = lj.DagExecutor(keyless, parallelism=2)
    assert ex.shards == 1 and "has no key" in ex.shards_note
    assert any("parallelism=2 has no effect" in r.getMessage() and "has no key" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")
    ex.process_batch("bids", events(50, 1).to_batches()[0])
    ex.finish()
    assert ex.take_sink_outputs("out").num_rows > 0

    rekeyed = (_source(lj.DagBuilder())
               .operator("m", lj.Map(lambda auction: auction % 3, output="auction")).connect("bids", "m")
               .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("m", "w")
               .sink_for("w", "out").build())
    assert "computes a key column" in shard_plan(rekeyed)
    renamed = (_source(lj.DagBuilder())
               .operator("p", lj.Project({"ts": "ts", "auction": "ch"})).connect("bids", "p")
               .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("p", "w")
               .sink_for("w", "out").build())
    assert "renames or computes a key column" in shard_plan(renamed)

    chained = (_source(lj.DagBuilder())
               .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("bids", "w")
               .operator("d", lj.Dedup(key="auction", within=SIZE)).connect("w", "d")
               .sink_for("d", "out").build())
    assert "through 'd' (a Dedup" in shard_plan(chained)

    two_keys = (_source(lj.DagBuilder())
                .operator("a", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("bids", "a")
                .operator("c", lj.TumblingWindow(SIZE, key="ch", aggs={"n": lj.count()})).connect("bids", "c")
                .sink_for("a", "x").sink_for("c", "y").build())
    assert "share no key column" in shard_plan(two_keys)

    unordered = (_source(lj.DagBuilder())
                 .operator("w", lj.TumblingWindow(SIZE, key="auction", aggs={"n": lj.count()})).connect("bids", "w")
                 .operator("p", lj.Project(["auction", "n"])).connect("w", "p").sink_for("p", "out").build())
    assert "does not receive the window_end" in shard_plan(unordered)

    stateless = (_source(lj.DagBuilder()).operator("f", lj.Filter(lambda price: price > 1.0))
                 .connect("bids", "f").sink_for("f", "out").build())
    assert "no keyed state" in shard_plan(stateless)


def test_parallelism_is_a_positive_int_or_auto():
    dag = _dag("session")
    with pytest.raises(ValueError, match="parallelism"):
        lj.DagExecutor(dag, parallelism=0)
    with pytest.raises(ValueError, match="parallelism"):
        lj.DagExecutor(dag, parallelism="many")
    from laminar_jit.executor.shards import resolve_parallelism
    import os

    assert resolve_parallelism("auto") == len(os.sched_getaffinity(0))
    assert resolve_parallelism(None) == 1


def _composite():
    """Composite keys (a string and a nullable int), ordered differently by two operators."""
    return (_source(lj.DagBuilder(), delay=30)
            .operator("w", lj.TumblingWindow(SIZE, key=["ch", "auction"], aggs={"n": lj.count(), "s": lj.sum("price")}))
            .operator("se", lj.SessionWindow(GAP, key=["auction", "ch"], aggs={"n": lj.count(), "hi": lj.max("price")}))
            .connect("bids", "w").connect("bids", "se").sink_for("w", "out").sink_for("se", "sessions").build())


def _sorted(t: pa.Table) -> pl.DataFrame:
    return pl.from_arrow(t).sort(t.column_names, nulls_last=True)


@pytest.mark.parametrize("name", [*DAGS, "composite"])
@pytest.mark.parametrize("before, after", [(2, 1), (2, 3), (1, 2), (3, 2)])
def test_a_checkpoint_restores_at_any_parallelism(name, before, after, tmp_path):
    # a checkpoint saves the shards' states merged, as one executor's; a restore splits them by key group
    if name == "composite":
        _BUILT.setdefault(name, _composite())
    dag = _dag(name)
    seed = 7 * before + after
    steps = _steps(dag, bursts(1500, seed), seed)
    want, want_metrics, _ = _drive(dag, 1, steps)
    half = len(steps) // 2
    first = lj.DagExecutor(dag, parallelism=before)
    _feed(first, steps[:half])
    path = tmp_path / "cp"
    first.checkpoint().save(path)
    restored = lj.DagExecutor(dag, parallelism=after)
    assert restored.shards == after, restored.shards_note
    restored.restore(lj.Checkpoint.load(path))
    for ex in (first, restored):  # the checkpointed executor carries on unaffected
        _feed(ex, steps[half:])
        ex.finish()
        got = ex.take_all_sink_outputs()
        for sink in want:
            if name == "composite":  # rows of one window end come in shard order with composite keys
                assert _sorted(got[sink]).equals(_sorted(want[sink]), null_equal=True), sink
            else:
                assert _same(got[sink], want[sink]), sink
        m = ex.metrics
        assert (m.events_processed, m.late_events, m.per_node) == want_metrics


def test_key_groups_move_between_shards_to_even_out_skewed_keys():
    # zipf keys: ranges of key groups give one shard ~70 % of the rows; the shards are rebalanced by load
    dag = _dag("session")
    steps = [("bids", b) for b in bursts(30_000, 1).to_batches(max_chunksize=3_000)]
    want, want_metrics, _ = _drive(dag, 1, steps)
    got, got_metrics, ex = _drive(dag, 2, steps)
    assert _same(got["out"], want["out"]) and got_metrics == want_metrics
    shards = ex._shards
    ranges = np.arange(len(shards.group_shard)) * 2 // len(shards.group_shard)
    share = np.bincount(shards.group_shard, weights=shards.group_rows, minlength=2) / shards.group_rows.sum()
    assert np.bincount(ranges, weights=shards.group_rows).max() / shards.group_rows.sum() > 0.6
    assert share.max() < 0.52, share


def _feed(ex, steps):
    for what, arg in steps:
        if what == "advance":
            ex.advance_watermark("bids", arg)
        elif what == "idle":
            ex.mark_idle(arg)
        else:
            ex.process_batch(what, arg)


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int32(), pa.uint32(), pa.uint64(), pa.bool_(),
                                        pa.timestamp("ms"), pa.date32(), pa.duration("us")], ids=str)
def test_state_key_values_hash_to_their_rows_key_group(arrow_type):
    # a restore finds each entry's key group from the int64 the state keeps; it must be its rows' group
    from laminar_jit.executor.keyhash import mix_column
    from laminar_jit.executor.boundary import _to_arrow
    from laminar_jit.kernels.partitioning import HASH_SEED

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 2**63 - 1, 500, dtype=np.int64).astype(np.uint64) * np.uint64(2)  # high bit set too
    if pa.types.is_boolean(arrow_type):
        arr = pa.array(rng.random(500) < 0.5, mask=rng.random(500) < 0.1)
    else:
        width = np.dtype(arrow_type.to_pandas_dtype()).itemsize if not pa.types.is_temporal(arrow_type) \
            else arrow_type.bit_width // 8
        storage = {1: np.int8, 4: np.int32, 8: np.int64}[width]
        if arrow_type in (pa.uint32(), pa.uint64()):
            storage = np.uint32 if width == 4 else np.uint64
        values = raw.astype(storage)
        arr = pa.array(values, mask=rng.random(500) < 0.1).cast(arrow_type) if not pa.types.is_temporal(arrow_type) \
            else pa.array(values, mask=rng.random(500) < 0.1).view(arrow_type)
    rows = np.full(500, HASH_SEED, np.uint64)
    mix_column(rows, arr)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    storage_type = pa.int8() if pa.types.is_boolean(arrow_type) else (
        pa.int64() if not pa.types.is_temporal(arrow_type) or arrow_type.bit_width == 64 else pa.int32())
    as_state = arr.cast(storage_type) if pa.types.is_boolean(arrow_type) else (
        arr.view(storage_type) if pa.types.is_temporal(arrow_type) else arr)
    kept = as_state.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)  # what np.int64(value) keeps
    entries = np.full(500, HASH_SEED, np.uint64)
    mix_column(entries, _to_arrow(kept, valid, arrow_type))
    assert (entries == rows).all()


def test_a_bad_checkpoint_leaves_every_shard_unchanged():
    dag = _dag("session")
    steps = _steps(dag, bursts(600, 5), 5)
    want, _, _ = _drive(dag, 2, steps)
    ex = lj.DagExecutor(dag, parallelism=2)
    _feed(ex, steps[:5])
    other = lj.DagExecutor(_dag("sliding")).checkpoint()
    with pytest.raises(lj.CheckpointError, match="different DAG"):
        ex.restore(other)
    _feed(ex, steps[5:])
    ex.finish()
    got = ex.take_all_sink_outputs()
    assert _same(got["out"], want["out"])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), shards=st.integers(1, 4), pieces=st.integers(1, 3), ranked=st.booleans())
def test_merge_kernels_match_a_stable_sort(seed, shards, pieces, ranked):
    # each shard's rows of a piece are sorted by (major, middle, minor); the merge orders the
    # pieces one after the other and, within one, every shard's rows as a stable sort would
    rng = np.random.default_rng(seed)
    runs, bounds = [], np.zeros((shards, pieces + 1), np.int64)
    for s in range(shards):
        for p in range(pieces):
            m = int(rng.integers(0, 6))
            keys = np.stack([rng.integers(0, 3, m), rng.integers(0, 4, m), rng.integers(0, 2, m) if ranked
                             else np.zeros(m, np.int64)])
            keys = keys[:, np.lexsort(keys[::-1])]
            runs.append((p, s, keys))
            bounds[s, p + 1] = bounds[s, p] + m
    flat = np.concatenate([keys for _, _, keys in sorted(runs, key=lambda r: (r[1], r[0]))], axis=1)
    offsets = np.concatenate(([0], np.cumsum(bounds[:, -1])))
    bounds = bounds + offsets[:-1, None]
    piece = np.concatenate([np.full(bounds[s, p + 1] - bounds[s, p], p) for s in range(shards) for p in range(pieces)])
    shard = np.concatenate([np.full(bounds[s, -1] - bounds[s, 0], s) for s in range(shards)])
    middle, minor = flat[1], flat[2]
    dest = merge_shards(flat[0].copy(), middle.copy(), minor.copy(), bounds, True, ranked)
    order = np.lexsort((shard, *((minor,) if ranked else ()), middle, flat[0], piece))
    want = np.empty_like(order)
    want[order] = np.arange(order.size)
    assert dest.tolist() == want.tolist()
    # rows passed on: disjoint ascending positions per shard, merged by position
    n = 40
    owner = rng.integers(0, shards + 1, n)  # shards + 1: no shard passed the row on
    positions = np.concatenate([np.flatnonzero(owner == s) for s in range(shards)]).astype(np.int64)
    offsets = np.concatenate(([0], np.cumsum([(owner == s).sum() for s in range(shards)]))).astype(np.int64)
    rows, dest = merge_positions(positions, offsets, n)
    assert rows.tolist() == np.flatnonzero(owner < shards).tolist()
    assert rows[dest].tolist() == positions.tolist()
