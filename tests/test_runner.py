"""``lj.run``: sources into sinks with checkpoints; crashes (SIGKILL), Ctrl-C and restarts lose or repeat nothing."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import laminar_jit as lj
from conftest import make_bids
from helpers import Crashing, kill_at_random_moments, latest_epoch

JOB = textwrap.dedent('''
    """A checkpointed job: bids from Parquet, per-channel tumbling windows and sessions, into Parquet."""
    import os
    import laminar_jit as lj
    from laminar_jit.io import ParquetSink, ParquetSource

    def dag():
        schema = ParquetSource(os.environ["JOB_INPUT"]).schema
        b = lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
        key = os.environ.get("JOB_TUMBLE_KEY", "channel")  # auction: both windows by one key, so they shard
        b.operator("tumble", lj.TumblingWindow(size=2_000, key=key, aggs={"n": lj.count(), "s": lj.sum("price")}))
        b.operator("sess", lj.SessionWindow(gap=40, key="auction", aggs={"n": lj.count(), "hi": lj.max("price")}))
        return b.connect("bids", "tumble").connect("bids", "sess").sink_for("tumble", "windows") \\
            .sink_for("sess", "sessions").build()

    def build():
        out = os.environ["JOB_OUTPUT"]
        return (dag(), {"bids": ParquetSource(os.environ["JOB_INPUT"], batch_size=500)},
                {"windows": ParquetSink(out + "/windows"), "sessions": ParquetSink(out + "/sessions")})
''')


def same(a: pa.Table, b: pa.Table) -> bool:
    return a.schema == b.schema and pl.from_arrow(a).equals(pl.from_arrow(b))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The job file, its input, and the output of an uninterrupted run (which also warms the plan cache)."""
    root = tmp_path_factory.mktemp("job")
    (root / "job.py").write_text(JOB)
    pq.write_table(make_bids(150_000, seed=11), root / "bids.parquet", row_group_size=20_000)
    env = {**os.environ, "JOB_INPUT": str(root / "bids.parquet"), "JOB_OUTPUT": str(root / "clean")}
    spec = importlib.util.spec_from_file_location("crash_job", root / "job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.environ.update({k: env[k] for k in ("JOB_INPUT", "JOB_OUTPUT")})
    dag, sources, sinks = module.build()
    stats = lj.run(dag, sources, sinks, progress=False)
    assert stats.finished and stats.checkpoints == 0
    want = {name: sink.read() for name, sink in sinks.items()}
    assert want["windows"].num_rows > 100 and want["sessions"].num_rows > 1_000
    return root, want


def _spawn(root: Path, out: Path, *extra, key: str = "channel") -> subprocess.Popen:
    env = {**os.environ, "JOB_INPUT": str(root / "bids.parquet"), "JOB_OUTPUT": str(out), "JOB_TUMBLE_KEY": key}
    cmd = [sys.executable, "-m", "laminar_jit.cli", "run", str(root / "job.py") + ":build",
           "--checkpoint-dir", str(out / "chk"), "--checkpoint-every", "2", "--no-progress", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed(out: Path) -> dict:
    return {name: lj.io.ParquetSink(out / name).read() for name in ("windows", "sessions")}


def test_sigkill_at_random_moments_then_restart_gives_exactly_the_clean_output(job, tmp_path):
    root, want = job
    rng = np.random.default_rng(2024)
    # The first run is killed anywhere, start-up included; the others after a few more checkpoints.
    kills_after_progress = kill_at_random_moments(lambda: _spawn(root, tmp_path), tmp_path / "chk", rng,
                                                  attempts=6, epochs=(1, 6), first_anywhere=1.5)
    proc = _spawn(root, tmp_path)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert "finished" in stdout
    assert kills_after_progress >= 3, "the run ended before the test could kill it mid-way"
    got = _committed(tmp_path)
    for name in want:
        assert same(got[name], want[name]), name
    assert not list((tmp_path / "windows").glob("_staging/*"))  # nothing left staged
    # Running a finished job again does nothing and changes nothing.
    proc = _spawn(root, tmp_path)
    stdout, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "0 events" in stdout
    assert same(_committed(tmp_path)["windows"], want["windows"])


def test_key_shards_killed_at_random_moments_resume_at_any_parallelism(job, tmp_path):
    # both windows keyed by auction: the executor runs key shards; each attempt has another parallelism
    root, _ = job
    os.environ["JOB_TUMBLE_KEY"] = "auction"
    try:
        spec = importlib.util.spec_from_file_location("crash_job_keyed", root / "job.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dag = module.dag()
    finally:
        del os.environ["JOB_TUMBLE_KEY"]
    sources = {"bids": lj.io.ParquetSource(root / "bids.parquet", batch_size=500)}
    clean = {name: lj.io.MemorySink() for name in ("windows", "sessions")}
    lj.run(dag, sources, clean, progress=False)
    assert lj.DagExecutor(dag, parallelism=2).shards == 2  # and its plans are in the disk cache now
    rounds = iter([2, 3, 1, 2, 3, 1, 2])
    spawn = lambda: _spawn(root, tmp_path, "--parallelism", str(next(rounds)), key="auction")  # noqa: E731
    kills = kill_at_random_moments(spawn, tmp_path / "chk", np.random.default_rng(77), attempts=5, epochs=(2, 9))
    proc = _spawn(root, tmp_path, "--parallelism", "2", key="auction")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    assert kills >= 3, "the run ended before the test could kill it mid-way"
    got = _committed(tmp_path)
    for name, sink in clean.items():
        assert same(got[name], sink.table()), name


def test_ctrl_c_checkpoints_and_exits_cleanly_then_resumes(job, tmp_path):
    root, want = job
    proc = _spawn(root, tmp_path)
    while proc.poll() is None and latest_epoch(tmp_path / "chk") < 3:
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=600)
    if proc.returncode == 0:
        pytest.skip("the run finished before Ctrl-C arrived")
    assert proc.returncode == 130, stderr
    assert "interrupted" in stdout
    cp = lj.Checkpoint.load(tmp_path / "chk" / f"chk-{latest_epoch(tmp_path / 'chk'):08d}")
    assert not cp.finished and 0 < cp.positions["bids"] < 150_000
    proc = _spawn(root, tmp_path)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    got = _committed(tmp_path)
    for name in want:
        assert same(got[name], want[name]), name


# ------------------------------------------------------------------ in-process runs
def window_dag():
    schema = make_bids(1).schema
    b = lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
    b.operator("w", lj.TumblingWindow(size=1_000, key="auction", aggs={"n": lj.count(), "s": lj.sum("price")}))
    return b.connect("bids", "w").sink_for("w", "out").build()


@pytest.fixture(scope="module")
def reference():
    table = make_bids(40_000, seed=4)
    batches = table.to_batches(max_chunksize=1_000)
    ex = lj.DagExecutor(window_dag())
    for b in batches:
        ex.process_batch("bids", b)
    ex.finish()
    return batches, ex.take_sink_outputs("out")


def test_memory_and_callback_sinks_after_a_crash(reference, tmp_path):
    batches, want = reference
    memory, seen = lj.io.MemorySink(), []
    source = Crashing(batches, after=23)
    sinks = {"out": memory}
    with pytest.raises(RuntimeError, match="crash"):
        lj.run(window_dag(), {"bids": source}, sinks, checkpoint_dir=tmp_path / "chk", checkpoint_every=5,
               progress=False)
    stats = lj.run(window_dag(), {"bids": source}, sinks, checkpoint_dir=tmp_path / "chk", checkpoint_every=5,
                   progress=False)
    assert stats.resumed_from == 4 and stats.finished and stats.events == 40_000 - 20 * 1_000
    assert same(memory.table(), want)  # the replayed epoch was dropped, not doubled

    source = Crashing(batches, after=23)
    callback = {"out": lj.io.CallbackSink(seen.append)}
    with pytest.raises(RuntimeError):
        lj.run(window_dag(), {"bids": source}, callback, checkpoint_dir=tmp_path / "chk2", checkpoint_every=5,
               progress=False)
    lj.run(window_dag(), {"bids": source}, callback, checkpoint_dir=tmp_path / "chk2", checkpoint_every=5,
           progress=False)
    got = pl.from_arrow(pa.concat_tables(seen))
    assert got.height >= want.num_rows  # at-least-once: everything, some rows twice
    assert got.unique().sort(got.columns).equals(pl.from_arrow(want).unique().sort(got.columns))


def test_a_run_with_key_shards_resumes_at_another_parallelism(reference, tmp_path):
    batches, want = reference
    memory = lj.io.MemorySink()
    source = Crashing(batches, after=23)
    opts = dict(checkpoint_dir=tmp_path / "chk", checkpoint_every=5, progress=False)
    with pytest.raises(RuntimeError, match="crash"):
        lj.run(window_dag(), {"bids": source}, {"out": memory}, parallelism=2, **opts)
    stats = lj.run(window_dag(), {"bids": source}, {"out": memory}, parallelism=3, **opts)
    assert stats.resumed_from == 4 and stats.finished and stats.shards == 3 and "in 3 key shards" in str(stats)
    assert same(memory.table(), want)
    with pytest.raises(ValueError, match="run: parallelism"):
        lj.run(window_dag(), {"bids": batches}, {"out": lj.io.MemorySink()}, parallelism=0)


def test_damaged_latest_checkpoint_stops_the_run_and_deleting_it_rolls_back(reference, tmp_path):
    batches, want = reference
    sink = lj.io.ParquetSink(tmp_path / "out")
    source = Crashing(batches, after=33)
    opts = dict(checkpoint_dir=tmp_path / "chk", checkpoint_every=3, keep=2, progress=False)
    with pytest.raises(RuntimeError):
        lj.run(window_dag(), {"bids": source}, {"out": sink}, **opts)
    latest = tmp_path / "chk" / "chk-00000011"
    assert sorted(p.name for p in (tmp_path / "chk").glob("chk-*")) == ["chk-00000010", "chk-00000011"]
    (latest / "manifest.json").write_text("{")
    with pytest.raises(lj.CheckpointError, match="delete .*chk-00000011"):
        lj.run(window_dag(), {"bids": source}, {"out": sink}, **opts)
    import shutil
    shutil.rmtree(latest)
    stats = lj.run(window_dag(), {"bids": source}, {"out": sink}, **opts)
    assert stats.resumed_from == 10
    assert same(sink.read(), want)  # epoch 11's committed file was rolled back, then written again


def test_two_sources_round_robin_and_a_finished_source_stops_holding_back(tmp_path):
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64())])
    a = pa.table({"ts": np.arange(0, 2_000, 2), "k": np.zeros(1_000, np.int64)}, schema=schema)
    b = pa.table({"ts": np.arange(0, 50_000, 5), "k": np.ones(10_000, np.int64)}, schema=schema)
    dag = (lj.DagBuilder()
           .source("a", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .source("b", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(0))
           .operator("w", lj.TumblingWindow(size=1_000, key="k", aggs={"n": lj.count()}))
           .connect("a", "w").connect("b", "w").sink_for("w", "out").build())
    arrivals, memory = [], lj.io.MemorySink()
    sinks = {"out": lj.io.CallbackSink(lambda t: (arrivals.append(t.num_rows), memory.write(t, 0)))}
    stats = lj.run(dag, {"a": a.to_batches(max_chunksize=100), "b": lj.io.MemorySource(b.to_batches(max_chunksize=100))},
                   sinks, checkpoint_dir=tmp_path, checkpoint_every=1, progress=False)
    assert stats.batches == 110 and stats.finished
    got = pl.from_arrow(memory.table()).sort("window_start", "k")
    want = (pl.from_arrow(pa.concat_tables([a, b])).group_by((pl.col("ts") // 1_000 * 1_000).alias("window_start"), "k")
            .agg(pl.len().cast(pl.Int64).alias("n")).sort("window_start", "k"))
    assert got.select("window_start", "k", "n").equals(want)
    # Once "a" ran out, b's windows were emitted as b advanced, not all at the end.
    assert len(arrivals) > 40


def test_run_argument_errors(tmp_path):
    dag = window_dag()
    table = make_bids(10)
    with pytest.raises(lj.UnknownNodeError, match="'asks'"):
        lj.run(dag, {"bids": table, "asks": table}, {"out": lj.io.MemorySink()})
    with pytest.raises(ValueError, match=r"no sink given for \['out'\]"):
        lj.run(dag, {"bids": table}, {})
    with pytest.raises(TypeError, match="expected a laminar_jit.io Sink"):
        lj.run(dag, {"bids": table}, {"out": []})
    with pytest.raises(ValueError, match="not both"):
        lj.run(dag, {"bids": table}, {"out": lj.io.MemorySink()}, checkpoint_dir=tmp_path, checkpoint_every=1,
               checkpoint_interval=1.0)
    with pytest.raises(ValueError, match="need a checkpoint_dir"):
        lj.run(dag, {"bids": table}, {"out": lj.io.MemorySink()}, checkpoint_every=1)
    (tmp_path / "out").mkdir()
    pq.write_table(table, tmp_path / "out" / "part-00000001-00000.parquet")
    with pytest.raises(lj.DataError, match="already holds 1 committed part file"):
        lj.run(dag, {"bids": table}, {"out": lj.io.ParquetSink(tmp_path / "out")}, progress=False)


def test_one_run_per_checkpoint_dir(tmp_path):
    import fcntl

    (tmp_path / "chk").mkdir()
    with open(tmp_path / "chk" / ".lock", "a+") as held:  # another run holds the directory
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(lj.CheckpointError, match="in use by another run"):
            lj.run(window_dag(), {"bids": make_bids(10)}, {"out": lj.io.MemorySink()},
                   checkpoint_dir=tmp_path / "chk", progress=False)
    stats = lj.run(window_dag(), {"bids": make_bids(10)}, {"out": lj.io.MemorySink()},
                   checkpoint_dir=tmp_path / "chk", progress=False)  # released: runs, and releases it again
    assert stats.finished
    lj.run(window_dag(), {"bids": make_bids(10)}, {"out": lj.io.MemorySink()}, checkpoint_dir=tmp_path / "chk",
           progress=False)


def test_cli_run_reports_bad_targets(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "laminar_jit.cli", "run", *args], capture_output=True,
                              text=True, cwd=tmp_path)
    (tmp_path / "jobs.py").write_text("value = 3\ndef wrong():\n    return 3\n")
    for target, message in [("jobs", "not MODULE:FUNCTION"), ("nosuch_module_xyz:build", "cannot import"),
                            ("jobs:missing", "has no attribute 'missing'"), ("jobs:value", "not a function"),
                            ("jobs:wrong", "must return (dag, sources, sinks)"), ("nofile.py:f", "no file")]:
        result = cli(target)
        assert result.returncode != 0 and message in result.stderr, (target, result.stderr)
