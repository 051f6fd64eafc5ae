"""Faults a run must survive: storage that refuses writes, and input files that are cut off or damaged.

Storage faults are injected where checkpoints and sinks touch the disk — the
functions of ``laminar_jit._fs`` — or, where the machine allows it, made real
by a full tmpfs. Every test compares what a reader sees with a run that met
no fault: a lost row, a row written twice or a row of an epoch that was not
committed shows up as a difference.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import laminar_jit as lj
import laminar_jit.runner as runner_module
from laminar_jit import _fs
from conftest import make_bids

ROWS, BATCH = 40_000, 1_000


def window_dag():
    """Tumbling 1 s windows per auction; the watermark delay exceeds the data's disorder, so no row is late
    however the input is cut into batches (a resumed CSV read cuts it differently)."""
    schema = make_bids(1).schema
    b = lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(1_000))
    b.operator("w", lj.TumblingWindow(size=1_000, key="auction", aggs={"n": lj.count(), "s": lj.sum("price")}))
    return b.connect("bids", "w").sink_for("w", "out").build()


def feed(batches, finish=True) -> pa.Table:
    """The output of a fresh executor fed ``batches`` (and finished)."""
    ex = lj.DagExecutor(window_dag())
    for b in batches:
        ex.process_batch("bids", b)
    if finish:
        ex.finish()
    return ex.take_sink_outputs("out")


def sorted_rows(t: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(t)
    return df.sort(df.columns)


@pytest.fixture(scope="module")
def data():
    table = make_bids(ROWS, seed=11)
    batches = table.to_batches(max_chunksize=BATCH)
    return table, batches, feed(batches)


def committed_epochs(directory: Path) -> list[int]:
    return sorted({int(p.name[5:13]) for p in directory.glob("part-*.parquet")})


def read_directory(directory: Path) -> pa.Table:
    """What any reader sees: the directory as a dataset (``_staging`` is skipped by its leading underscore)."""
    return ds.dataset(directory, format="parquet").to_table()


# ------------------------------------------------------------------ storage faults, injected
class Fault:
    """Raise ``OSError(code)`` from ``_fs.<name>`` on calls ``when(args)`` selects, ``times`` times."""

    def __init__(self, monkeypatch, name: str, when, code: int = errno.ENOSPC, times: int = 1):
        self.real = getattr(_fs, name)
        self.when, self.code, self.left, self.hits = when, code, times, 0
        monkeypatch.setattr(_fs, name, self)

    def __call__(self, *args, **kwargs):
        if self.left and self.when(*args):
            self.left -= 1
            self.hits += 1
            raise OSError(self.code, os.strerror(self.code))
        return self.real(*args, **kwargs)


def run(batches, sink, chk, **kw):
    opts = dict(checkpoint_dir=chk, checkpoint_every=3, progress=False)
    opts.update(kw)
    return lj.run(window_dag(), {"bids": lj.io.MemorySource(batches)}, {"out": sink}, **opts)


def test_checkpoint_that_cannot_be_written_keeps_the_previous_one_and_a_rerun_loses_nothing(
        data, tmp_path, monkeypatch):
    _, batches, want = data
    chk, out = tmp_path / "chk", tmp_path / "out"
    # the disk fills up while checkpoint 5 writes its state file
    fault = Fault(monkeypatch, "write_file", lambda path, data: ".chk-00000005" in str(path))
    sink = lj.io.ParquetSink(out)
    with pytest.raises(lj.CheckpointError) as info:
        run(batches, sink, chk)
    message = str(info.value)
    assert fault.hits == 1
    assert str(chk / "chk-00000005") in message  # the path
    assert "No space left on device" in message and "free space" in message  # the cause and the fix
    assert "latest complete checkpoint is 4" in message and "call lj.run again" in message
    # nothing of checkpoint 5 is left; checkpoint 4 loads; the reader sees epochs 1..4 only
    assert sorted(p.name for p in chk.iterdir() if p.name != ".lock") == [
        "chk-00000002", "chk-00000003", "chk-00000004"]
    cp = lj.Checkpoint.load(chk / "chk-00000004")
    assert cp.epoch == 4 and cp.positions == {"bids": 12 * BATCH}
    assert committed_epochs(out) == [1, 2, 3, 4]
    ex = lj.DagExecutor(window_dag())
    for b in batches[:12]:
        ex.process_batch("bids", b)
    assert read_directory(out).equals(ex.take_sink_outputs("out"))  # exactly the rows of 12 batches
    # the disk has room again: the rerun resumes from 4 and the output is exactly the clean one
    monkeypatch.setattr(_fs, "write_file", fault.real)
    stats = run(batches, lj.io.ParquetSink(out), chk)
    assert stats.resumed_from == 4 and stats.finished
    assert sink.read().equals(want)
    assert read_directory(out).equals(want)


@pytest.mark.parametrize("step", ["manifest", "rename"])
def test_every_write_step_of_a_checkpoint_can_fail_without_harm(data, tmp_path, monkeypatch, step):
    _, batches, want = data
    chk, out = tmp_path / "chk", tmp_path / "out"
    if step == "manifest":
        Fault(monkeypatch, "write_file", lambda path, data: path.name == "manifest.json"
              and ".chk-00000003" in str(path), code=errno.EIO)
    else:
        Fault(monkeypatch, "replace", lambda src, dst: Path(dst).name == "chk-00000003", code=errno.EACCES)
    with pytest.raises(lj.CheckpointError, match="chk-00000003") as info:
        run(batches, lj.io.ParquetSink(out), chk)
    assert ("I/O error" if step == "manifest" else "Permission denied") in str(info.value)
    assert not list(chk.glob(".chk-*")) and not (chk / "chk-00000003").exists()
    assert committed_epochs(out) == [1, 2]
    monkeypatch.undo()
    stats = run(batches, lj.io.ParquetSink(out), chk)
    assert stats.resumed_from == 2
    assert read_directory(out).equals(want)


def test_a_sink_write_that_fails_leaves_no_partial_file_and_a_rerun_loses_nothing(data, tmp_path, monkeypatch):
    _, batches, want = data
    chk, out = tmp_path / "chk", tmp_path / "out"
    staged = []

    def half_written(table, path, compression):  # what a full disk leaves: the first bytes of the file
        path.write_bytes(b"PAR1" + b"\0" * 100)
        staged.append(path)

    real_write_table = pq.write_table
    calls = []

    def failing_write_table(table, where, **kw):
        calls.append(where)
        if len(calls) == 4:
            half_written(table, Path(where), None)
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real_write_table(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", failing_write_table)
    sink = lj.io.ParquetSink(out)
    with pytest.raises(lj.CheckpointError) as info:
        run(batches, sink, chk)
    message = str(info.value)
    assert "sink 'out'" in message and str(out) in message and "No space left" in message and "free space" in message
    assert staged and not staged[0].exists()  # the partial file was removed
    assert committed_epochs(out) == [1, 2, 3] and not list(out.glob("_staging/*/*.parquet"))
    monkeypatch.setattr(pq, "write_table", real_write_table)
    stats = run(batches, lj.io.ParquetSink(out), chk)
    assert stats.resumed_from == 3
    assert read_directory(out).equals(want)


def test_a_commit_that_fails_halfway_shows_none_of_its_epoch_and_the_rerun_finishes_it(data, tmp_path,
                                                                                           monkeypatch):
    _, batches, want = data
    chk, out = tmp_path / "chk", tmp_path / "out"
    # small files so that one epoch is several files; the 2nd rename of epoch 3's commit fails
    renames = []

    def second_of_epoch_3(src, dst):
        if Path(dst).parent == out and Path(dst).name.startswith("part-00000003-"):
            renames.append(dst)
            return len(renames) == 2
        return False

    fault = Fault(monkeypatch, "replace", second_of_epoch_3, code=errno.EIO)
    monkeypatch.setattr(runner_module, "_DRAIN_ROWS", 1)  # outputs go to the sink after every batch
    sink = lj.io.ParquetSink(out, rows_per_file=50)
    with pytest.raises(lj.CheckpointError, match="could not make its rows visible") as info:
        run(batches, sink, chk)
    assert fault.hits == 1 and "checkpoint 3 is saved" in str(info.value)
    assert len(list(out.glob("_staging/epoch-00000003/*.parquet"))) > 2  # several files: a real partial risk
    assert committed_epochs(out) == [1, 2]  # the renamed first file was moved back
    assert pl.read_parquet(out / "*.parquet").height == read_directory(out).num_rows
    # resuming finishes the commit; when that fails too, it is undone again and can be repeated
    renames.clear()
    Fault(monkeypatch, "replace", second_of_epoch_3, code=errno.EIO)
    with pytest.raises(lj.CheckpointError, match="could not be opened to resume from checkpoint 3"):
        run(batches, lj.io.ParquetSink(out, rows_per_file=50), chk)
    assert committed_epochs(out) == [1, 2]
    monkeypatch.undo()
    stats = run(batches, lj.io.ParquetSink(out, rows_per_file=50), chk)
    assert stats.resumed_from == 3  # the checkpoint was saved: epoch 3 is committed, not replayed
    assert read_directory(out).equals(want)


def test_a_run_without_checkpoints_says_it_starts_over(data, tmp_path, monkeypatch):
    _, batches, _ = data
    Fault(monkeypatch, "write_parquet", lambda table, path, compression: True)
    sink = lj.io.ParquetSink(tmp_path / "out")
    with pytest.raises(lj.CheckpointError, match="keeps no checkpoints, so nothing of it was committed"):
        lj.run(window_dag(), {"bids": lj.io.MemorySource(batches)}, {"out": sink}, progress=False)
    assert committed_epochs(tmp_path / "out") == []


def test_a_checkpoint_dir_that_cannot_be_created_is_named(data, tmp_path):
    _, batches, _ = data
    (tmp_path / "file").write_text("")
    with pytest.raises(lj.CheckpointError, match=r"checkpoint_dir '.*file/chk' cannot be created.*Not a directory"):
        run(batches, lj.io.MemorySink(), tmp_path / "file" / "chk")


# ------------------------------------------------------------------ storage faults, real (a full tmpfs)
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (needs root and mount rights; skipped elsewhere)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the injected faults cover this")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


class FillsDisk(lj.io.MemorySource):
    """After ``after`` batches (first read only), fill ``disk`` to the last byte."""

    def __init__(self, batches, disk: Path, after: int):
        super().__init__(batches)
        self.disk, self.after = disk, after

    def batches(self, start_row=0):
        for i, b in enumerate(super().batches(start_row)):
            if self.after is not None and i == self.after:
                self.after = None
                with open(self.disk / "filler", "wb", buffering=0) as f:
                    try:
                        while True:
                            f.write(b"\0" * 4096)
                    except OSError:
                        pass
            yield b


@pytest.mark.parametrize("full", ["checkpoint_dir", "sink"])
def test_a_really_full_disk(data, tmp_path, small_disk, full):
    _, batches, want = data
    chk = small_disk / "chk" if full == "checkpoint_dir" else tmp_path / "chk"
    out = small_disk / "out" if full == "sink" else tmp_path / "out"
    opts = dict(checkpoint_dir=chk, checkpoint_every=3, progress=False)
    source = FillsDisk(batches, small_disk, after=10)
    with pytest.raises(lj.CheckpointError) as info:
        lj.run(window_dag(), {"bids": source}, {"out": lj.io.ParquetSink(out)}, **opts)
    message = str(info.value)
    assert "No space left on device" in message and "free space" in message
    assert str(chk / "chk-00000004") in message if full == "checkpoint_dir" else str(out) in message
    assert committed_epochs(out) == [1, 2, 3]
    assert lj.Checkpoint.load(chk / "chk-00000003").positions == {"bids": 9 * BATCH}
    (small_disk / "filler").unlink()
    stats = lj.run(window_dag(), {"bids": source}, {"out": lj.io.ParquetSink(out)}, **opts)
    assert stats.resumed_from == 3 and stats.finished
    assert read_directory(out).equals(want)


# ------------------------------------------------------------------ damaged input files
def write_parquet(table, path):
    pq.write_table(table, path, row_group_size=2_500)


def write_ipc_stream(table, path):
    with pa.ipc.new_stream(path, table.schema) as w:
        for b in table.to_batches(max_chunksize=2_500):
            w.write_batch(b)


def write_csv(table, path):
    pa_csv.write_csv(table, path)


FORMATS = {
    # name: (writer, source factory)
    "parquet": (write_parquet, lambda p: lj.io.ParquetSource(p, batch_size=BATCH)),
    "ipc_stream": (write_ipc_stream, lambda p: lj.io.IpcSource(p)),
    "csv": (write_csv, lambda p: lj.io.CsvSource(p, schema=make_bids(1).schema, batch_size=BATCH,
                                                 block_size=64 * 1024)),
}


def good_prefix(source) -> list[pa.RecordBatch]:
    """The batches ``source`` yields before its read fails."""
    out = []
    with pytest.raises(lj.DataError):
        for b in source.batches():
            out.append(b)
    return out


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_a_truncated_input_file_stops_the_run_at_a_row_every_row_before_it_committed_once(data, tmp_path, fmt):
    table, _, _ = data
    writer, make = FORMATS[fmt]
    path = tmp_path / f"bids.{fmt}"
    writer(table, path)
    intact = path.read_bytes()
    want = feed(list(make(path).batches()))  # the clean output, batched as this source batches
    source = make(path)  # opened intact: a Parquet source has read the footer (row groups) already
    cut = len(intact) * 6 // 10
    if fmt == "csv":  # cut inside a row (a value short of its fields), not at its end
        cut = intact.rindex(b"\n", 0, cut) + 8
    path.write_bytes(intact[:cut])  # cut off, as by a copy that stopped or a disk that filled
    prefix = good_prefix(source)
    reached = sum(b.num_rows for b in prefix)
    assert 0 < reached < ROWS

    chk, out = tmp_path / "chk", tmp_path / "out"
    opts = dict(checkpoint_dir=chk, checkpoint_every=4, progress=False)
    with pytest.raises(lj.DataError) as info:
        lj.run(window_dag(), {"bids": source}, {"out": lj.io.ParquetSink(out)}, **opts)
    # every row before the damage was processed exactly once and is committed
    assert read_directory(out).equals(feed(prefix, finish=False))
    final = max(int(p.name[4:]) for p in chk.glob("chk-*"))
    assert lj.Checkpoint.load(chk / f"chk-{final:08d}").positions == {"bids": reached}
    message = str(info.value)
    assert str(path) in message and f"row {reached:,}" in message  # the file and the position reached
    assert "replace it with a complete copy" in message and "continues from row" in message  # the fix

    path.write_bytes(intact)  # the file is repaired; the run continues where it stopped
    stats = lj.run(window_dag(), {"bids": source}, {"out": lj.io.ParquetSink(out)}, **opts)
    assert stats.resumed_from == final and stats.events == ROWS - reached and stats.finished
    got = read_directory(out)
    assert got.num_rows == want.num_rows and sorted_rows(got).equals(sorted_rows(want))
    if fmt != "csv":  # the resumed read starts at a batch boundary of the clean read: even the order holds
        assert got.equals(want)


def test_a_damaged_input_without_checkpoints_names_the_file_and_row(data, tmp_path):
    table, _, _ = data
    path = tmp_path / "bids.arrows"
    write_ipc_stream(table, path)
    intact = path.read_bytes()
    path.write_bytes(intact[: len(intact) // 2])
    with pytest.raises(lj.DataError, match=r"IpcSource\(.*bids\.arrows.*batch \d+ .*from row [\d,]+.*"
                                           r"keeps no checkpoints") as info:
        lj.run(window_dag(), {"bids": lj.io.IpcSource(path)}, {"out": lj.io.MemorySink()}, progress=False)
    assert "stopped at row" in str(info.value)


def test_a_damaged_row_group_in_an_intact_file(data, tmp_path):
    """Not truncation: bytes inside row group 7 overwritten (bit rot); the footer is intact."""
    table, _, _ = data
    path = tmp_path / "bids.parquet"
    write_parquet(table, path)
    raw = bytearray(path.read_bytes())
    column = pq.ParquetFile(path).metadata.row_group(7).column(3)
    start = column.data_page_offset
    raw[start + 16: start + column.total_compressed_size] = b"\xff" * (column.total_compressed_size - 16)
    path.write_bytes(bytes(raw))
    with pytest.raises(lj.DataError, match=r"(?s)row group 7 \(rows 17,500 to 19,999\).*rows before row 17,500"):
        list(lj.io.ParquetSource(path).batches())


CUT_WHILE_READING = textwrap.dedent("""
    import os, sys
    import numpy as np, pyarrow as pa
    import laminar_jit as lj

    path, out, chk, fmt = sys.argv[1:]
    table = pa.table({"ts": np.arange(100_000, dtype=np.int64)})
    with (pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream)(path, table.schema) as w:
        for b in table.to_batches(max_chunksize=10_000):
            w.write_batch(b)

    class CutAfterThree(lj.io.Source):  # the file is cut (rewritten in place) while the run reads it
        def __init__(self, inner):
            self.inner, self.schema = inner, inner.schema
        def batches(self, start_row=0):
            for i, b in enumerate(self.inner.batches(start_row)):
                yield b
                if i == 2:
                    os.truncate(path, os.path.getsize(path) // 2)

    dag = (lj.DagBuilder().source("s", table.schema, event_time="ts").operator("p", lj.Project(["ts"]))
           .connect("s", "p").sink_for("p", "out").build())
    sink = lj.io.ParquetSink(out)
    try:
        lj.run(dag, {"s": CutAfterThree(lj.io.IpcSource(path))}, {"out": sink}, checkpoint_dir=chk,
               checkpoint_every=2, progress=False)
    except lj.DataError as e:
        print("DataError:", e)
    ts = sink.read().column("ts").to_numpy()
    print("committed", len(ts), "unique", len(np.unique(ts)), "max", ts.max())
""")


@pytest.mark.parametrize("fmt", ["file", "stream"])
def test_an_ipc_file_cut_while_a_run_reads_it_stops_with_a_data_error_not_a_crash(tmp_path, fmt):
    """IPC files are memory-mapped: reading pages past the end of a file that shrank would kill the process."""
    done = subprocess.run([sys.executable, "-c", CUT_WHILE_READING, str(tmp_path / "x.arrow"), str(tmp_path / "out"),
                           str(tmp_path / "chk"), fmt], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the run crashed (exit {done.returncode}): {done.stderr[-2000:]}"
    assert "DataError:" in done.stdout and "shrank from" in done.stdout and "row 30,000" in done.stdout
    assert "committed 30000 unique 30000 max 29999" in done.stdout  # three batches, each row once


@pytest.mark.parametrize("fmt", ["parquet", "ipc_file", "csv"])
def test_a_file_damaged_before_the_run_fails_when_opened(data, tmp_path, fmt):
    table, _, _ = data
    path = tmp_path / f"bids.{fmt}"
    if fmt == "parquet":
        write_parquet(table, path)
        make, match = lj.io.ParquetSource, "cannot read the file's footer"
    elif fmt == "ipc_file":
        with pa.ipc.new_file(path, table.schema) as w:
            w.write_table(table)
        make, match = lj.io.IpcSource, "starts as an Arrow IPC file but its footer"
    else:
        write_csv(table.slice(0, 100), path)
        make, match = (lambda p: lj.io.CsvSource(p, schema=table.schema)), "header and the first block"
    intact = path.read_bytes()
    cut = len(intact) // 2 if fmt != "csv" else intact.rindex(b"\n", 0, len(intact) // 2) + 8
    path.write_bytes(intact[:cut])
    with pytest.raises(lj.DataError, match=match) as info:
        make(path)
    assert str(path) in str(info.value) and "row" in str(info.value)


def test_a_partitioned_parquet_sink_is_exactly_once_across_a_crash_and_a_failed_commit(data, tmp_path, monkeypatch):
    """Hive-style partitions (auction band / window start): every epoch appears in all its partitions or none."""
    from helpers import Crashing

    _, batches, want = data
    want = want.append_column("band", pa.array([str(a % 3) for a in want["auction"].to_pylist()]))
    schema = make_bids(1).schema
    dag = (lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(1_000))
           .operator("w", lj.TumblingWindow(size=1_000, key="auction", aggs={"n": lj.count(), "s": lj.sum("price")}))
           .operator("band", lj.Map(lambda auction: auction % 3, output="band"))
           .connect("bids", "w").connect("w", "band").sink_for("band", "out").build())
    chk, out = tmp_path / "chk", tmp_path / "out"

    def sink():
        return lj.io.ParquetSink(out, partition_by=["band", "window_start"], rows_per_file=500)

    opts = dict(checkpoint_dir=chk, checkpoint_every=3, progress=False)
    source = Crashing(batches, after=17)
    with pytest.raises(RuntimeError, match="crash"):
        lj.run(dag, {"bids": source}, {"out": sink()}, **opts)
    # a commit whose second rename fails is undone: the epoch is in no partition
    renames = []
    Fault(monkeypatch, "replace", lambda src, dst: Path(dst).name.startswith("part-")
          and (renames.append(dst) or len(renames) == 2), code=errno.EIO)
    with pytest.raises(lj.CheckpointError, match="could not make its rows visible"):
        lj.run(dag, {"bids": source}, {"out": sink()}, **opts)
    monkeypatch.undo()
    epochs = {int(p.name[5:13]) for p in out.rglob("part-*.parquet") if "_staging" not in p.parts}
    assert epochs == set(range(1, max(epochs) + 1))  # whole epochs only ...
    assert int(Path(renames[1]).name[5:13]) not in epochs  # ... and none of the one whose commit failed
    lj.run(dag, {"bids": source}, {"out": sink()}, **opts)
    assert {p.parent.parent.name for p in out.rglob("part-*.parquet")} == {"band=0", "band=1", "band=2"}
    got = sink().read()
    want = want.set_column(want.schema.get_field_index("window_start"), "window_start",
                           pa.array([str(v) for v in want["window_start"].to_pylist()]))
    got = got.select(want.column_names).cast(want.schema)
    assert sorted_rows(got).equals(sorted_rows(want))
    seen = ds.dataset(out, format="parquet", partitioning="hive").to_table()  # what any Hive reader sees
    assert seen.num_rows == want.num_rows
    with pytest.raises(ValueError, match="partition_by"):
        lj.io.ParquetSink(out, mode="upsert", key="k", partition_by="band")
