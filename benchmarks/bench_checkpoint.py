"""Checkpoint cost: overhead on a checkpointed run, and save/restore of a ~1 M-entry window state.

``RunCheckpointed`` runs the tumbling-window workload of ``bench_windows``
(10 s windows per auction) through :func:`laminar_jit.run` from a
:class:`~laminar_jit.io.MemorySource` into a :class:`~laminar_jit.io.MemorySink`,
once without checkpoints and once with one checkpoint per second (saved to
disk with fsync, plus the final one). The 5 M-event table is replayed four
times, each lap later in event time, so a run lasts several seconds and holds
several checkpoints. The overhead is the ratio of the two times.

``WindowState1M`` holds ~1 M open (key, window) entries: a day-long tumbling
window over the ~1 M keys of ``bench_windows.wide_key``, fed the whole table
and not finished.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import laminar_jit as lj

from . import common
from .bench_windows import tumbling_dag, wide_key

DAY_MS = 86_400_000


def big_state_dag() -> lj.StreamingDag:
    """A day-long tumbling window per ~1 M keys: every key stays open until the end."""
    aggs = {"n": lj.count(), "total": lj.sum("price"), "top": lj.max("price")}
    return (lj.DagBuilder()
            .source(common.SOURCE, common.EVENT_SCHEMA, event_time="ts",
                    watermark=lj.BoundedOutOfOrderness(common.MAX_DISORDER_MS))
            .operator("wide", lj.Map(wide_key, output="key"))
            .operator("per_key", lj.TumblingWindow(size=DAY_MS, key="key", aggs=aggs))
            .connect(common.SOURCE, "wide").connect("wide", "per_key").sink_for("per_key", "out").build())


def laps(batches, n: int) -> list[pa.RecordBatch]:
    """``batches`` replayed ``n`` times, each lap shifted later by the table's time span (one long stream)."""
    ts = [b.column("ts") for b in batches]
    span = pc.max(pa.chunked_array(ts)).as_py() - pc.min(pa.chunked_array(ts)).as_py() + common.MAX_DISORDER_MS
    out = []
    for lap in range(n):
        for b, t in zip(batches, ts):
            out.append(b.set_column(b.schema.get_field_index("ts"), "ts", pc.add(t, lap * span)) if lap else b)
    return out


class RunCheckpointed:
    """``lj.run`` over the tumbling workload (4 laps: 20 M events), without and with a checkpoint per second."""

    params = ["none", "every_second"]
    param_names = ["checkpoints"]
    timeout = 600
    number = 1
    repeat = 3
    warmup_time = 0

    def setup(self, checkpoints):
        batches = common.event_batches(common.n_events(), 65_536)
        self.batches = laps(batches, 4)
        self.dag = tumbling_dag("auction")
        common.run_dag(self.dag, batches[:2])  # compile / load the plan
        self.tmp = Path(tempfile.mkdtemp(prefix="laminar-bench-"))
        self.runs = 0

    def teardown(self, checkpoints):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _run(self, checkpoints):
        self.runs += 1
        options = {} if checkpoints == "none" else {"checkpoint_dir": self.tmp / f"run{self.runs}",
                                                      "checkpoint_interval": 1.0}
        return lj.run(self.dag, {common.SOURCE: lj.io.MemorySource(self.batches)}, {"out": lj.io.MemorySink()},
                      progress=False, **options)

    def time_run(self, checkpoints):
        self._run(checkpoints)


class WindowState1M:
    """Capture, save and restore a window state of ~1 M open (key, window) entries."""

    timeout = 600
    number = 1
    repeat = 5
    warmup_time = 0

    def setup(self):
        self.dag = big_state_dag()
        ex = lj.DagExecutor(self.dag)
        for batch in common.event_batches(common.n_events(), 65_536):
            ex.process_batch(common.SOURCE, batch)
        self.ex = ex
        self.tmp = Path(tempfile.mkdtemp(prefix="laminar-bench-"))
        self.saved = ex.checkpoint().save(self.tmp / "saved")
        self.saves = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_capture(self):
        self.ex.checkpoint()

    def time_save(self):
        self.saves += 1
        self.ex.checkpoint().save(self.tmp / f"save{self.saves}")

    def time_restore(self):
        lj.DagExecutor(self.dag).restore(lj.Checkpoint.load(self.saved))

    def track_open_entries(self):
        return len(self.ex.state.operator_states[self.dag.node("per_key").id])

    track_open_entries.unit = "entries"

    def track_checkpoint_megabytes(self):
        return sum(p.stat().st_size for p in self.saved.iterdir()) / 1e6

    track_checkpoint_megabytes.unit = "MB"


class TumblingCheckpoint:
    """One checkpoint (capture + save with fsync) of the tumbling workload's state halfway through the input.

    At one checkpoint per second, this time is the fraction of each second
    the run spends checkpointing (the executor is single-threaded).
    """

    timeout = 300
    number = 1
    repeat = 10
    warmup_time = 0

    def setup(self):
        batches = common.event_batches(common.n_events(), 65_536)
        self.ex = lj.DagExecutor(tumbling_dag("auction"))
        for batch in batches[: max(1, len(batches) // 2)]:
            self.ex.process_batch(common.SOURCE, batch)
        self.ex.take_all_sink_outputs()  # as lj.run does before every checkpoint
        self.tmp = Path(tempfile.mkdtemp(prefix="laminar-bench-"))
        self.saves = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def time_checkpoint_save(self):
        self.saves += 1
        self.ex.checkpoint().save(self.tmp / f"save{self.saves}")
