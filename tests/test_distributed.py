"""Partitioned runs on a local Ray: same output as one process, recovery from a killed actor.

Every query is checked against a single-process run over the same events
(itself checked against DuckDB elsewhere), as a multiset: partitions emit
in their own order. The events are out of order within the watermark delay
(no row is late, which the single-process run confirms), with skewed and
null keys, split into random batches including empty and one-row ones.
Aggregates are integers so sums do not depend on addition order.
"""

from __future__ import annotations

import json
import numpy as np
import pyarrow as pa
import pytest
import ray

import laminar_jit as lj
from helpers import Crashing, latest_epoch
from laminar_jit.distributed import coordinator
from laminar_jit.distributed.rescale import partition_checkpoint

DELAY = 200


def _start_ray():
    """A fresh two-CPU local Ray for this module.

    Another test module in the same pytest worker (the asv smoke test runs the
    scale-out benchmark) may have left a connection open; start from a clean one.
    """
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=512 << 20)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    _start_ray()
    yield
    ray.shutdown()


def _events(n, seed, keys=400, step=3):
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * step + rng.integers(0, DELAY, n)
    k = (rng.zipf(1.4, n) % keys).astype(np.int64)
    return pa.table({"ts": ts, "k": pa.array(k, mask=rng.random(n) < 0.02),
                     "v": rng.integers(-50, 1_000, n)})


def _split_evenly(table, seed):
    """Random batch boundaries (empty and 1-row batches included) covering every row exactly once."""
    rng = np.random.default_rng(seed)
    n = table.num_rows
    cuts = np.sort(np.concatenate([rng.integers(0, n, 40), [7, 7, 8, 0, n]]))  # 7..8: a one-row batch, 7,7: empty
    return [table.slice(a, b - a).combine_chunks().to_batches()[0] if b > a
            else pa.RecordBatch.from_pylist([], schema=table.schema)
            for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [n]]))]


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([(c, "ascending") for c in t.column_names])


def _same_multiset(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows
    assert _sorted(a).equals(_sorted(b))


def _single(dag, sources):
    out = {s: lj.io.MemorySink() for s in dag.sinks}
    stats = lj.run(dag, sources, out, progress=False)
    assert stats.metrics.late_events == 0
    return {s: sink.table() for s, sink in out.items()}


def _parallel(dag, sources, partitions=2, **kw):
    out = {s: lj.io.MemorySink() for s in dag.sinks}
    stats = lj.run(dag, sources, out, partitions=partitions, **kw)
    assert stats.finished
    return {s: sink.table() for s, sink in out.items()}, stats


def _schema():
    return pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.int64())])


def tumbling_dag():
    return (lj.DagBuilder()
            .source("s", _schema(), event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
            .operator("f", lj.Filter(lambda v: v > 0))
            .operator("m", lj.Map(lambda v: v * 3, output="v3"))
            .operator("w", lj.TumblingWindow(1_000, key="k", aggs={
                "n": lj.count(), "s": lj.sum("v3"), "lo": lj.min("v"), "hi": lj.max("v")}))
            .connect("s", "f").connect("f", "m").connect("m", "w")
            .sink_for("w", "out").sink_for("f", "kept")
            .build())


def test_tumbling_window_partitioned_equals_one_process():
    t = _events(60_000, 1)
    dag = tumbling_dag()
    ref = _single(dag, {"s": _split_evenly(t, 2)})
    assert ref["out"].num_rows > 1_000
    # 1 worker: the asv smoke test runs it; (2, 2): two partitions of two key shards each
    for partitions, parallelism in ((2, 1), (3, 1), (2, 2)):
        got, stats = _parallel(dag, {"s": _split_evenly(t, 3)}, partitions=partitions, parallelism=parallelism)
        _same_multiset(got["out"], ref["out"])
        _same_multiset(got["kept"], ref["kept"])  # a sink of the stateless prefix, filled by the readers
        assert stats.events == t.num_rows and stats.rows_out["out"] == ref["out"].num_rows
        assert len(stats.partition_seconds) == partitions


def test_session_window_partitioned_equals_one_process():
    t = _events(40_000, 4, keys=2_000, step=5)
    # a column no operator reads stays in the readers (the exchange ships ts, k and v)
    t = t.append_column("tag", pa.array(np.arange(t.num_rows) % 7).cast(pa.string()))
    dag = (lj.DagBuilder()
           .source("s", t.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
           .operator("w", lj.SessionWindow(gap=300, key="k", aggs={"n": lj.count(), "s": lj.sum("v"),
                                                                   "hi": lj.max("v")}))
           .connect("s", "w").sink_for("w", "out").build())
    ref = _single(dag, {"s": _split_evenly(t, 5)})
    got, _ = _parallel(dag, {"s": _split_evenly(t, 6)})
    _same_multiset(got["out"], ref["out"])


def test_interval_join_partitioned_equals_one_process():
    left = _events(20_000, 7, keys=300)
    right = _events(20_000, 8, keys=300).rename_columns(["ts", "id", "x"])
    right = right.set_column(1, "id", right.column("id").cast(pa.int32()))  # other key type, same hash
    dag = (lj.DagBuilder()
           .source("l", left.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
           .source("r", right.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
           .operator("j", lj.IntervalJoin("k", "id", lower=-20, upper=30, how="left"))
           .connect("l", "j", port="left").connect("r", "j", port="right")
           .sink_for("j", "out").build())
    sources = {"l": _split_evenly(left, 9), "r": _split_evenly(right, 10)}
    ref = _single(dag, sources)
    assert ref["out"].num_rows > left.num_rows  # matches and unmatched left rows
    got, _ = _parallel(dag, sources)
    _same_multiset(got["out"], ref["out"])


def test_nexmark_generator_shards_feed_a_partitioned_query():
    dag = lj.nexmark.query("q11")  # sessions per bidder
    events = lj.nexmark.generate(300_000, seed=2, chunk_size=20_000)
    ref = _single(dag, {s: events.table(s) for s in dag.sources})
    got, _ = _parallel(dag, {s: src for s, src in lj.nexmark.sources(300_000, seed=2, chunk_size=20_000).items()
                             if s in dag.sources})
    _same_multiset(got["out"], ref["out"])


def test_killed_partition_recovers_from_the_last_checkpoint_with_identical_output(tmp_path, monkeypatch):
    t = _events(80_000, 11)
    dag = tumbling_dag()
    batches = t.to_batches(max_chunksize=1_000)
    ref = _single(dag, {"s": batches})
    kills = []

    def kill_once(driver, steps):
        if driver.stats.checkpoints >= 2 and not kills:  # mid-epoch, after two checkpoints
            kills.append(driver.stats.epoch)
            ray.kill(driver.workers[1], no_restart=True)

    monkeypatch.setattr(coordinator, "_round_hook", kill_once)
    out_dir = tmp_path / "out"
    sinks = {"out": lj.io.ParquetSink(out_dir), "kept": lj.io.MemorySink()}
    stats = lj.run(dag, {"s": batches}, sinks, partitions=2, checkpoint_dir=tmp_path / "chk",
                   checkpoint_every=8)
    assert kills and stats.restarts == 1 and stats.finished
    assert stats.recovered_from == kills and kills[0] >= 2  # restored from the last complete checkpoint
    assert stats.events == t.num_rows and stats.checkpoints >= 3
    _same_multiset(lj.io.ParquetSink(out_dir).read(), ref["out"])
    _same_multiset(sinks["kept"].table(), ref["kept"])
    manifests = sorted((tmp_path / "chk").glob("job-*/job.json"))
    assert manifests and all((m.parent / "part-0001" / "manifest.json").exists() for m in manifests)

    # a finished job called again returns at once; another number of partitions cannot resume its state
    monkeypatch.setattr(coordinator, "_round_hook", None)
    again = lj.run(dag, {"s": batches}, {"out": lj.io.ParquetSink(out_dir), "kept": lj.io.MemorySink()},
                   partitions=2, checkpoint_dir=tmp_path / "chk")
    assert again.finished and again.events == 0
    _same_multiset(lj.io.ParquetSink(out_dir).read(), ref["out"])
    # another number of partitions takes the job's checkpoint over (its state split again by key)
    again = lj.run(dag, {"s": batches}, {"out": lj.io.MemorySink(), "kept": lj.io.MemorySink()},
                   partitions=3, checkpoint_dir=tmp_path / "chk")
    assert again.finished and again.events == 0
    assert (sorted((tmp_path / "chk").glob("job-*"))[-1] / "part-0002" / "manifest.json").exists()

    # a damaged partition checkpoint stops the resumed run with the engine's error, not a retry loop
    *earlier, last = sorted((tmp_path / "chk").glob("job-*"))
    (last / "job.json").unlink()  # back to an unfinished checkpoint
    state = next((earlier[-1] / "part-0000").glob("state-*.arrow"))
    state.write_bytes(state.read_bytes()[:-7])
    with pytest.raises(lj.CheckpointError, match="state-"):
        lj.run(dag, {"s": batches}, {"out": lj.io.MemorySink(), "kept": lj.io.MemorySink()},
               partitions=2, checkpoint_dir=tmp_path / "chk")


def _moving_dag():
    """String keys and string payloads in every kind of state a job moves: a window (a count of distinct
    strings, a least string), a Dedup (a composite key), a windowed TopN (its kept rows), an interval join
    (its buffered rows), a session, an updating GROUP BY (a greatest string, distinct strings) and an
    unbounded TopN (its rows, as kept and as last emitted)."""
    syms = pa.schema([("ts", pa.int64()), ("sym", pa.string()), ("v", pa.int64()), ("tag", pa.string())])
    quotes = pa.schema([("ts", pa.int64()), ("id", pa.string()), ("x", pa.int64()), ("venue", pa.large_string())])
    return (lj.DagBuilder()
            .source("s", syms, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
            .source("q", quotes, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
            .operator("f", lj.Filter(lambda v: v > 0))
            .operator("named", lj.Project({"ts": "ts", "symbol": "sym", "v": "v", "tag": "tag"}))
            .operator("w", lj.TumblingWindow(1_000, key="symbol", aggs={"n": lj.count(), "s": lj.sum("v"),
                                                                        "tags": lj.count_distinct("tag"),
                                                                        "lo": lj.min("tag")}))
            .operator("g", lj.GroupAggregate(key="symbol", aggs={"n": lj.count(), "hi": lj.max("tag"),
                                                                 "tags": lj.count_distinct("tag")}))
            .operator("best", lj.TopN(1, by="v", key="symbol", window=None))
            .operator("first", lj.Dedup(key=["symbol", "v"], within=2_000))
            .operator("top", lj.TopN(2, by="v", key="symbol", window=1_000))
            .operator("j", lj.IntervalJoin("sym", "id", lower=-30, upper=30))
            .operator("sess", lj.SessionWindow(gap=200, key="id", aggs={"n": lj.count(), "hi": lj.max("x")}))
            .connect("s", "f").connect("f", "named").connect("named", "w").connect("named", "first")
            .connect("named", "top").connect("named", "g").connect("named", "best")
            .connect("s", "j", port="left").connect("q", "j", port="right")
            .connect("q", "sess")
            .sink_for("w", "windows").sink_for("first", "firsts").sink_for("top", "tops").sink_for("j", "pairs")
            .sink_for("sess", "sessions").sink_for("f", "kept").sink_for("g", "groups").sink_for("best", "bests")
            .build())


def _moving_events(n, seed):
    """Events whose results do not depend on how readers interleave: unique values (no TopN ties), and rows
    repeated a few rows later (a Dedup of (symbol, value) keeps one of two equal rows, whichever comes first)."""
    rng = np.random.default_rng(seed)
    names = np.array([f"sym{i}" for i in range(120)])
    ts = np.arange(n, dtype=np.int64) * 3 + rng.integers(0, DELAY // 2, n)
    s = pa.table({"ts": ts, "sym": pa.array(names[rng.zipf(1.4, n) % 120], mask=rng.random(n) < 0.02),
                  "v": rng.permutation(n).astype(np.int64), "tag": names[rng.integers(0, 9, n)]})
    again = np.flatnonzero(rng.random(n) < 0.1)
    place = np.concatenate([np.arange(n), again + rng.integers(1, 10, again.size)]).astype(np.float64)
    place[n:] += 0.5  # a repeat comes after the rows before its place
    s = pa.concat_tables([s, s.take(again)]).take(np.argsort(place, kind="stable"))
    q = pa.table({"ts": ts, "id": names[rng.integers(0, 120, n)], "x": rng.integers(0, 500, n),
                  "venue": pa.array(names[rng.integers(0, 4, n)], pa.large_string())})
    return s, q


def test_a_run_in_one_process_moves_to_partitions_with_its_state(tmp_path):
    dag = _moving_dag()
    s, q = _moving_events(30_000, 21)
    s_batches, q_batches = s.to_batches(max_chunksize=700), q.to_batches(max_chunksize=700)
    ref = _single(dag, {"s": s_batches, "q": q_batches})
    assert all(ref[name].num_rows > 100 for name in dag.sinks), {k: v.num_rows for k, v in ref.items()}
    sinks = {name: lj.io.MemorySink() for name in dag.sinks}
    opts = dict(checkpoint_dir=tmp_path / "chk", checkpoint_every=5)
    # one process checkpoints, then crashes mid-run with its windows, rows and sessions open
    with pytest.raises(RuntimeError, match="crash"):
        lj.run(dag, {"s": Crashing(s_batches, after=23), "q": q_batches}, sinks, progress=False, **opts)
    epoch = latest_epoch(tmp_path / "chk")
    read = sum(lj.Checkpoint.load(tmp_path / "chk" / f"chk-{epoch:08d}").positions.values())
    assert epoch >= 3 and 0 < read < s.num_rows + q.num_rows
    stats = lj.run(dag, {"s": s_batches, "q": q_batches}, sinks, partitions=2, keep=10, **opts)
    assert stats.resumed_from == epoch and stats.finished and stats.events == s.num_rows + q.num_rows - read
    for name in dag.sinks:
        _same_multiset(sinks[name].table(), ref[name])
    jobs = sorted(p.parent.name for p in (tmp_path / "chk").glob("job-*/job.json"))
    assert jobs[0] == f"job-{epoch:08d}" and len(jobs) > 1  # the adopted checkpoint, then the job's own
    # the sources deal their batches to the shards: each worker goes on from its shard's part of what was read
    adopted = tmp_path / "chk" / jobs[0]
    assert json.loads((adopted / "job.json").read_text())["whole_sources"] == []
    shard_rows = [lj.Checkpoint.load(adopted / f"reader-{i:04d}").positions["s"] for i in range(2)]
    assert sum(shard_rows) == lj.Checkpoint.load(tmp_path / "chk" / f"chk-{epoch:08d}").positions["s"]
    assert min(shard_rows) > 0



def test_a_partitioned_job_rescales_moves_to_one_process_and_back_with_its_state(tmp_path, monkeypatch):
    dag = _moving_dag()
    s, q = _moving_events(30_000, 22)
    s_batches, q_batches = s.to_batches(max_chunksize=700), q.to_batches(max_chunksize=700)
    sources = {"s": s_batches, "q": q_batches}
    ref = _single(dag, sources)
    sinks = {name: _StoppingSink() if name == "windows" else lj.io.MemorySink() for name in dag.sinks}
    opts = dict(checkpoint_dir=tmp_path / "chk", checkpoint_every=4, keep=100)
    epochs = []

    def stop(driver, steps):  # the driver goes away mid-run, after two more checkpoints
        if driver.stats.checkpoints >= 2:
            epochs.append(driver.stats.epoch)
            raise RuntimeError("driver stopped")

    monkeypatch.setattr(coordinator, "_round_hook", stop)
    with pytest.raises(RuntimeError, match="driver stopped"):
        lj.run(dag, sources, sinks, partitions=2, **opts)
    # three partitions take the two's checkpoint over: worker 0 continues both shards of each source
    with pytest.raises(RuntimeError, match="driver stopped"):
        lj.run(dag, sources, sinks, partitions=3, **opts)
    monkeypatch.setattr(coordinator, "_round_hook", None)
    first, second = epochs
    assert second > first
    for epoch in epochs:  # both runs stopped with rows of both sources left to read
        read = lj.Checkpoint.load(tmp_path / "chk" / f"job-{epoch:08d}" / "reader-0000").positions
        assert 0 < read["s"] < s.num_rows // 2 and 0 < read["q"] < q.num_rows // 2, read
    readers = sorted(p.name for p in (tmp_path / "chk" / f"job-{first:08d}").glob("reader-*"))
    assert readers == ["reader-0000", "reader-0001", "reader-0002"]  # rewritten for three
    # one process continues the three's checkpoint, every shard where worker 0 had read it, and stops
    sinks["windows"].stop_at = second + 2
    with pytest.raises(RuntimeError, match="sink stopped"):
        lj.run(dag, sources, sinks, progress=False, **opts)
    merged = lj.Checkpoint.load(tmp_path / "chk" / f"chk-{second:08d}")
    assert merged.positions["s"] == merged.positions["s@shard0/2"] + merged.positions["s@shard1/2"] > 0
    third = latest_epoch(tmp_path / "chk")
    assert third == second + 1
    # two partitions finish it: worker i continues shard i where the one process left it
    stats = lj.run(dag, sources, sinks, partitions=2, **opts)
    assert stats.resumed_from == third and stats.finished
    for name in dag.sinks:
        _same_multiset(sinks[name].table(), ref[name])
    read = lj.Checkpoint.load(tmp_path / "chk" / f"chk-{third:08d}").positions
    assert 0 < read["s"] < s.num_rows and stats.events == s.num_rows + q.num_rows - read["s"] - read["q"]


class _StoppingSink(lj.io.MemorySink):
    """A memory sink that raises (once) when asked to stage epoch ``stop_at``: a run stopped mid-way."""

    stop_at = None

    def pre_commit(self, epoch):
        if self.stop_at is not None and epoch >= self.stop_at:
            self.stop_at = None
            raise RuntimeError("sink stopped")
        super().pre_commit(epoch)


def test_a_checkpoint_that_cannot_move_to_partitions_says_why():
    dag = (lj.DagBuilder()
           .source("s", _schema(), event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
           .operator("running", lj.OverAggregate({"s": lj.sum("v")}, key="k"))
           .connect("s", "running").sink_for("running", "out").build())
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", _events(2_000, 3))
    cp = ex.checkpoint()
    with pytest.raises(lj.CheckpointError, match="'running'.*cannot be split by key"):
        partition_checkpoint(dag, cp, 2)
    with pytest.raises(lj.CheckpointError, match="different DAG"):
        partition_checkpoint(tumbling_dag(), cp, 2)


def test_a_rescale_cut_short_keeps_the_checkpoint_it_was_rewriting(tmp_path):
    store = coordinator._JobStore(tmp_path, 3, tumbling_dag(), 2)
    (tmp_path / ".job-00000003.old").mkdir()  # renamed aside, the new one not in its place yet
    (tmp_path / ".job-00000003.old" / "job.json").write_text("old")
    (tmp_path / ".job-00000003.rescaled").mkdir()
    (tmp_path / ".job-00000002.old").mkdir()  # the new one in place, the old one not removed yet
    (tmp_path / "job-00000002").mkdir()
    store._finish_rescale()
    assert (tmp_path / "job-00000003" / "job.json").read_text() == "old"
    assert (tmp_path / "job-00000002").is_dir() and not list(tmp_path.glob(".job-*"))


def test_an_actor_dying_every_time_gives_up_with_a_cluster_error(monkeypatch):
    dag = tumbling_dag()
    batches = _events(20_000, 3).to_batches(max_chunksize=500)
    monkeypatch.setattr(coordinator, "_round_hook", lambda driver, rounds: ray.kill(driver.workers[0]))
    with pytest.raises(lj.ClusterError, match="max_restarts=1"):
        lj.run(dag, {"s": batches}, {"out": lj.io.MemorySink(), "kept": lj.io.MemorySink()},
               partitions=2, max_restarts=1)


def test_bad_input_inside_an_actor_surfaces_as_the_engine_error():
    dag = tumbling_dag()
    bad = pa.table({"ts": [1, None, 3], "k": [1, 2, 3], "v": [1, 2, 3]})  # null event time
    with pytest.raises(lj.DataError, match="ts"):
        lj.run(dag, {"s": bad}, {"out": lj.io.MemorySink(), "kept": lj.io.MemorySink()}, partitions=2)


def test_unpartitionable_dag_and_bad_arguments():
    unkeyed = (lj.DagBuilder().source("s", _schema(), event_time="ts", watermark=lj.Ascending())
               .operator("w", lj.TumblingWindow(10, aggs={"n": lj.count()})).connect("s", "w")
               .sink_for("w", "out").build())
    with pytest.raises(lj.PartitioningError, match="no key"):
        lj.run(unkeyed, {"s": _events(10, 0)}, {"out": lj.io.MemorySink()}, partitions=2)
    with pytest.raises(ValueError, match="partitions"):
        lj.run(unkeyed, {"s": _events(10, 0)}, {"out": lj.io.MemorySink()}, partitions=0)
    with pytest.raises(ValueError, match="parallelism"):
        lj.run(unkeyed, {"s": _events(10, 0)}, {"out": lj.io.MemorySink()}, partitions=2, parallelism=0)
    with pytest.raises(ValueError, match="cluster"):
        lj.run(unkeyed, {"s": _events(10, 0)}, {"out": lj.io.MemorySink()}, partitions=2, cluster="spark")


def test_bad_cluster_address_gives_a_clear_error():
    dag = tumbling_dag()
    sinks = {"out": lj.io.MemorySink(), "kept": lj.io.MemorySink()}
    ray.shutdown()  # a run only dials out when this process is not already connected
    try:
        with pytest.raises(lj.ClusterError, match="no Ray cluster answers at '127.0.0.1:9'.*ray start --head"):
            lj.run(dag, {"s": _events(10, 0)}, sinks, partitions=2, address="127.0.0.1:9")
        with pytest.raises(lj.ClusterError, match="not host:port"):
            lj.run(dag, {"s": _events(10, 0)}, sinks, partitions=2, address="nowhere")
    finally:
        _start_ray()


JOB = '''
import pyarrow as pa
import laminar_jit as lj

def build():
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.int64())])
    dag = (lj.DagBuilder()
           .source("s", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(200))
           .operator("w", lj.TumblingWindow(1_000, key="k", aggs={"n": lj.count(), "s": lj.sum("v")}))
           .connect("s", "w").sink_for("w", "out").build())
    return dag, {"s": "events.parquet"}, {"out": lj.io.ParquetSink("out")}
'''


def test_cli_runs_a_job_on_an_existing_cluster_by_address_and_names_a_bad_one(tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    t = _events(30_000, 21)
    pq.write_table(t, tmp_path / "events.parquet", row_group_size=4_000)
    (tmp_path / "job.py").write_text(JOB)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "laminar_jit.cli", "run", "job.py:build", "--no-progress",
                               *args], capture_output=True, text=True, cwd=tmp_path, timeout=600)

    bad = cli("--partitions", "2", "--address", "127.0.0.1:9")
    assert bad.returncode == 1 and "ClusterError" in bad.stderr and "127.0.0.1:9" in bad.stderr
    # this test process's Ray is an existing cluster to the CLI's driver
    ok = cli("--partitions", "2", "--checkpoint-dir", "chk", "--address", ray.get_runtime_context().gcs_address)
    assert ok.returncode == 0, ok.stderr
    dag, _, _ = (lambda ns: (exec(JOB, ns), ns["build"]())[1])({})
    ref = _single(dag, {"s": t})
    _same_multiset(lj.io.ParquetSink(tmp_path / "out").read(), ref["out"])
