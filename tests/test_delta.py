"""Delta Lake: DeltaSink is exactly-once across crashes (SIGKILL) and replays; DeltaSource reads versions in order."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import laminar_jit as lj
from conftest import make_bids
from helpers import kill_at_random_moments

deltalake = pytest.importorskip("deltalake") if not os.environ.get("CI") else __import__("deltalake")

JOB = textwrap.dedent('''
    """A checkpointed job: bids from Parquet, per-channel tumbling windows into a partitioned Delta table,
    the bids themselves into a second one."""
    import os
    import laminar_jit as lj
    from laminar_jit.io import DeltaSink, ParquetSource

    def build():
        src = ParquetSource(os.environ["JOB_INPUT"], batch_size=500)
        out = os.environ["JOB_OUTPUT"]
        dag = (lj.DagBuilder().source("bids", src.schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
               .operator("tumble", lj.TumblingWindow(size=2_000, key="channel",
                                                     aggs={"n": lj.count(), "s": lj.sum("price")}))
               .operator("cheap", lj.Filter(lambda price: price < 50.0))
               .connect("bids", "tumble").connect("bids", "cheap")
               .sink_for("tumble", "windows").sink_for("cheap", "cheap_bids").build())
        return dag, {"bids": src}, {"windows": DeltaSink(out + "/windows", partition_by="channel"),
                                    "cheap_bids": DeltaSink(out + "/cheap_bids")}
''')


def _rows(table: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(table)
    return df.sort(df.columns)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("delta_job")
    (root / "job.py").write_text(JOB)
    pq.write_table(make_bids(60_000, seed=7), root / "bids.parquet", row_group_size=10_000)
    proc = _spawn(root, root / "clean", checkpoints=False)
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    want = {name: pl.read_delta(str(root / "clean" / name)) for name in ("windows", "cheap_bids")}
    assert want["windows"].height > 50 and want["cheap_bids"].height > 10_000
    return root, want


def _spawn(root: Path, out: Path, checkpoints: bool = True) -> subprocess.Popen:
    env = {**os.environ, "JOB_INPUT": str(root / "bids.parquet"), "JOB_OUTPUT": str(out)}
    cmd = [sys.executable, "-m", "laminar_jit.cli", "run", str(root / "job.py") + ":build", "--no-progress"]
    if checkpoints:
        cmd += ["--checkpoint-dir", str(out / "chk"), "--checkpoint-every", "2"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_random_moments_then_restart_commits_every_row_exactly_once(job, tmp_path):
    root, want = job
    rng = np.random.default_rng(7)

    def whole_epochs_only():
        """What readers see between crashes is always whole epochs: a prefix of the clean output."""
        if deltalake.DeltaTable.is_deltatable(str(tmp_path / "cheap_bids")):
            seen = pl.read_delta(str(tmp_path / "cheap_bids"))
            assert seen.height <= want["cheap_bids"].height
            assert seen.join(want["cheap_bids"], on=seen.columns, how="anti", nulls_equal=True).height == 0

    kills = kill_at_random_moments(lambda: _spawn(root, tmp_path), tmp_path / "chk", rng, attempts=5,
                                   epochs=(1, 5), after_kill=whole_epochs_only)
    proc = _spawn(root, tmp_path)
    _, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr
    assert kills >= 3, "the run ended before the test could kill it mid-way"
    for name in want:
        got = pl.read_delta(str(tmp_path / name))
        assert got.height == want[name].height, name
        assert got.sort(got.columns).equals(want[name].sort(got.columns)), name
    assert not list((tmp_path / "cheap_bids" / "_laminar_staging").glob("*/epoch-*"))  # nothing left staged
    assert deltalake.DeltaTable(str(tmp_path / "windows")).metadata().partition_columns == ["channel"]


def _sink(path, **kw) -> lj.io.DeltaSink:
    sink = lj.io.DeltaSink(path, **kw)
    return sink


SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.float64()), ("s", pa.string())])


def _table(lo: int, hi: int) -> pa.Table:
    k = np.arange(lo, hi)
    return pa.table({"k": k, "v": k * 0.5, "s": pa.array(np.where(k % 3 == 0, "a", "b"))}, schema=SCHEMA)


def test_a_replayed_epoch_commits_nothing_twice_and_unclaimed_epochs_vanish(tmp_path):
    path = tmp_path / "t"
    sink = _sink(path, partition_by="s")
    sink.open(SCHEMA, 0)
    for epoch in (1, 2):
        sink.write(_table(epoch * 100, epoch * 100 + 50), epoch)
        sink.pre_commit(epoch)
        sink.commit(epoch)
    # Epoch 3 is staged (pre-committed) and its checkpoint written, then the process dies before commit;
    # epoch 4 is staged but its checkpoint never made it.
    sink.write(_table(300, 350), 3)
    sink.pre_commit(3)
    manifest3 = (path / "_laminar_staging" / "laminar_jit" / "epoch-00000003.json").read_text()
    sink.write(_table(400, 450), 4)
    sink.pre_commit(4)
    assert sink.read().num_rows == 100  # staged epochs are invisible
    again = _sink(path)
    again.open(SCHEMA, 3)  # restored from checkpoint 3: commits 3, discards 4
    assert sorted(again.read()["k"].to_pylist()) == sorted([*range(100, 150), *range(200, 250), *range(300, 350)])
    # A crash after the Delta commit but before the manifest was removed: replaying commits nothing twice.
    (path / "_laminar_staging" / "laminar_jit" / "epoch-00000003.json").write_text(manifest3)
    third = _sink(path)
    third.open(SCHEMA, 3)
    assert third.read().num_rows == 150
    assert deltalake.DeltaTable(str(path)).transaction_version("laminar_jit") == 3
    assert not any(p.name.startswith("part-laminar_jit-00000004") for p in path.rglob("*.parquet"))


def test_refuses_a_table_of_another_run_or_another_shape(tmp_path):
    path = tmp_path / "t"
    sink = _sink(path)
    sink.open(SCHEMA, 0)
    sink.write(_table(0, 10), 1)
    sink.pre_commit(1)
    sink.commit(1)
    with pytest.raises(lj.DataError, match="already records epochs up to 1 of app id 'laminar_jit'"):
        _sink(path).open(SCHEMA, 0)
    other = _sink(path, app_id="second_job")  # another app id appends beside it
    other.open(SCHEMA, 0)
    other.write(_table(10, 20), 1)
    other.pre_commit(1)
    other.commit(1)
    assert other.read().num_rows == 20
    with pytest.raises(lj.DataError, match="has columns"):
        _sink(path, app_id="x").open(pa.schema([("k", pa.int64())]), 0)
    with pytest.raises(ValueError, match="mode"):
        lj.io.DeltaSink(path, mode="upsert")


def test_overwrite_replaces_the_table_with_the_first_epoch(tmp_path):
    path = tmp_path / "t"
    deltalake.write_deltalake(str(path), _table(0, 30))
    sink = _sink(path, mode="overwrite")
    sink.open(SCHEMA, None)
    sink.write(_table(100, 105), 1)
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(_table(200, 202), 2)
    sink.pre_commit(2)
    sink.commit(2)
    assert sorted(sink.read()["k"].to_pylist()) == [100, 101, 102, 103, 104, 200, 201]


def test_source_reads_versions_in_order_resumes_by_position_and_skips_compaction(tmp_path):
    path = str(tmp_path / "src")
    parts = [_table(0, 1_000), _table(1_000, 1_500), _table(1_500, 4_000)]
    for t in parts:
        deltalake.write_deltalake(path, t, mode="append", partition_by=["s"])
    deltalake.DeltaTable(path).optimize.compact()  # rewrites files without changing data
    source = lj.io.DeltaSource(path, batch_size=700)
    assert source.total_rows == 4_000
    whole = pa.Table.from_batches(list(source.batches()))
    assert whole.schema == SCHEMA
    assert _rows(whole).equals(_rows(pa.concat_tables(parts)))
    # Version order: every row of version 1 comes before version 2's.
    assert set(whole.slice(0, 1_000)["k"].to_pylist()) == set(range(1_000))
    tail = pa.Table.from_batches(list(source.batches(1_234)))
    assert tail.equals(whole.slice(1_234))
    assert lj.io.DeltaSource(path, starting_version=1).total_rows == 3_000  # version 0 created the table

    # Through lj.run, checkpointed and resumed, into another Delta table.
    dag = (lj.DagBuilder().source("t", SCHEMA).operator("big", lj.Filter(lambda v: v > 100.0))
           .connect("t", "big").sink_for("big", "out").build())
    out = tmp_path / "out"
    stats = lj.run(dag, sources={"t": source}, sinks={"out": lj.io.DeltaSink(out)},
                   checkpoint_dir=tmp_path / "chk", checkpoint_every=2, progress=False)
    assert stats.finished and stats.checkpoints >= 3
    assert sorted(pl.read_delta(str(out))["k"].to_list()) == list(range(201, 4_000))

    deltalake.DeltaTable(path).delete("k < 10")
    with pytest.raises(lj.DataError, match="removes data"):
        lj.io.DeltaSource(path)
    with pytest.raises(lj.DataError, match="not a Delta table"):
        lj.io.DeltaSource(tmp_path / "nothing")
    shutil.rmtree(tmp_path / "src" / "_delta_log", ignore_errors=True)
