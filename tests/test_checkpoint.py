"""Checkpoints: restore-then-continue equals an uninterrupted run; damaged or foreign checkpoints are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import laminar_jit as lj
from conftest import make_bids, split_table
from helpers import arm_quiet_timer, on_quiet


def full_dag(size: int = 1_000):
    """Every kind of state at once: string and composite keys, tumbling, sliding, sessions, keyed timers, late side output."""
    schema = make_bids(1).schema
    b = lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
    b.operator("tumble", lj.TumblingWindow(size=size, key="channel", aggs={"n": lj.count(), "s": lj.sum("price"),
                                                                            "last": lj.last("bidder")},
                                           late="side_output", late_sink="late"))
    b.operator("slide", lj.SlidingWindow(size=3_000, slide=1_000, key=["auction", "channel"],
                                         aggs={"n": lj.count(), "hi": lj.max("price")}))
    b.operator("sess", lj.SessionWindow(gap=60, key="auction", aggs={"n": lj.count(), "lo": lj.min("price")}))
    b.operator("quiet", lj.KeyedKernel(arm_quiet_timer, key="channel",
                                       state={"n": np.int64, "total": np.float64},
                                       output={"n": pa.int64(), "total": pa.float64(), "alarm": pa.bool_()},
                                       on_timer=on_quiet, columns={"temp": "price"}))
    b.operator("z", lj.recipes.zscore("auction", "price"))
    for op in ("tumble", "slide", "sess", "quiet", "z"):
        b.connect("bids", op).sink_for(op, "out_" + op)
    return b.build()


def run_through(ex, batches, finish=False):
    for b in batches:
        ex.process_batch("bids", b)
    if finish:
        ex.finish()
    return ex.take_all_sink_outputs()


def same_rows(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for sink in a:
        assert a[sink].schema == b[sink].schema, sink
        assert pl.from_arrow(a[sink]).equals(pl.from_arrow(b[sink])), sink  # in order; NaN equals NaN


def concat(*outputs: dict) -> dict:
    return {k: pa.concat_tables([o[k] for o in outputs]) for k in outputs[0]}


@pytest.fixture(scope="module")
def dag():
    return full_dag()


@pytest.mark.parametrize("seed", range(4))
def test_restore_then_continue_equals_uninterrupted(dag, tmp_path, seed):
    rng = np.random.default_rng(seed)
    table = make_bids(6_000, seed=seed)
    cuts = sorted(set(rng.integers(0, table.num_rows, 12).tolist()) | {17, 17, 18})  # empty and 1-row batches
    batches = split_table(table, cuts)
    whole = lj.DagExecutor(dag)
    want = run_through(whole, batches, finish=True)

    at = int(rng.integers(0, len(batches) + 1))
    ex = lj.DagExecutor(dag)
    before = run_through(ex, batches[:at])
    ex.checkpoint().save(tmp_path / "cp")
    run_through(ex, batches[at:])  # the original keeps going; the checkpoint is a copy

    restored = lj.DagExecutor(dag)
    restored.restore(lj.Checkpoint.load(tmp_path / "cp"))
    after = run_through(restored, batches[at:], finish=True)
    same_rows(concat(before, after), want)
    assert restored.metrics.as_dict() == whole.metrics.as_dict()  # counters are checkpointed too
    assert restored.metrics.per_node == whole.metrics.per_node


def test_checkpoint_chain_and_untaken_outputs(dag, tmp_path):
    """Several restore cycles in a row; outputs not taken before a checkpoint come back after restore."""
    table = make_bids(5_000, seed=9)
    batches = split_table(table, [1_000, 2_000, 3_000, 4_000])
    want = run_through(lj.DagExecutor(dag), batches, finish=True)
    ex = lj.DagExecutor(dag)
    for i, b in enumerate(batches):
        ex.process_batch("bids", b)
        ex.checkpoint().save(tmp_path / f"cp{i}")
        ex = lj.DagExecutor(dag)
        ex.restore(lj.Checkpoint.load(tmp_path / f"cp{i}"))
    ex.finish()
    same_rows(ex.take_all_sink_outputs(), want)


def test_checkpoint_in_memory_is_a_copy_and_restores_finished_state(dag):
    table = make_bids(2_000, seed=3)
    ex = lj.DagExecutor(dag)
    ex.process_batch("bids", table)
    cp = ex.checkpoint()
    keys = {node: arrays["table.keys"].copy() for node, arrays in cp.states.items()}
    ex.process_batch("bids", make_bids(2_000, seed=4))
    assert all(np.array_equal(cp.states[n]["table.keys"], k) for n, k in keys.items())
    ex.finish()
    done = ex.checkpoint()
    assert done.finished
    again = lj.DagExecutor(dag)
    again.restore(done)
    with pytest.raises(lj.DataError, match="finished"):
        again.process_batch("bids", table)


def test_manifest_and_files(dag, tmp_path):
    ex = lj.DagExecutor(dag)
    ex.process_batch("bids", make_bids(3_000, seed=1))
    cp = ex.checkpoint()
    cp.positions, cp.epoch = {"bids": 3_000}, 7
    cp.save(tmp_path / "cp")
    manifest = json.loads((tmp_path / "cp" / "manifest.json").read_text())
    assert manifest["format_version"] == lj.checkpoint.FORMAT_VERSION
    assert manifest["dag_fingerprint"] == dag.fingerprint
    kinds = sorted(e["kind"] for e in manifest["files"].values())
    assert kinds.count("state") == 5 and kinds.count("dictionary") == 1
    for name, entry in manifest["files"].items():  # every file is a readable Arrow IPC file
        assert pa.ipc.open_file(str(tmp_path / "cp" / name)).num_record_batches == 1
    back = lj.Checkpoint.load(tmp_path / "cp")
    assert (back.epoch, back.positions) == (7, {"bids": 3_000})
    assert back.dictionaries["bids/channel"].to_pylist() == cp.dictionaries["bids/channel"].to_pylist()
    for node, arrays in cp.states.items():
        assert back.states[node].keys() == arrays.keys()
        for name, arr in arrays.items():
            assert back.states[node][name].dtype == arr.dtype and np.array_equal(back.states[node][name], arr)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.fixture()
def saved(dag, tmp_path):
    ex = lj.DagExecutor(dag)
    ex.process_batch("bids", make_bids(3_000, seed=2))
    return ex.checkpoint().save(tmp_path / "cp")


def _state_file(path):
    manifest = json.loads((path / "manifest.json").read_text())
    return next(path / n for n, e in manifest["files"].items() if e["kind"] == "state")


def test_corrupted_file_is_refused(saved):
    f = _state_file(saved)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(lj.CheckpointError, match=r"state-\d+\.arrow fails its SHA-256 check"):
        lj.Checkpoint.load(saved)


def test_truncated_file_is_refused(saved):
    f = _state_file(saved)
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(lj.CheckpointError, match="truncated"):
        lj.Checkpoint.load(saved)


def test_missing_file_and_missing_or_bad_manifest_are_refused(saved, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    _state_file(copy).unlink()
    with pytest.raises(lj.CheckpointError, match="missing"):
        lj.Checkpoint.load(copy)
    (saved / "manifest.json").write_text((saved / "manifest.json").read_text()[:200])
    with pytest.raises(lj.CheckpointError, match="not valid JSON"):
        lj.Checkpoint.load(saved)
    (saved / "manifest.json").unlink()
    with pytest.raises(lj.CheckpointError, match="no manifest.json"):
        lj.Checkpoint.load(saved)


def test_unknown_format_version_is_refused(saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["format_version"] = 99
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(lj.CheckpointError, match="format version 99"):
        lj.Checkpoint.load(saved)


def test_existing_target_is_never_overwritten(saved, dag):
    with pytest.raises(lj.CheckpointError, match="already exists"):
        lj.DagExecutor(dag).checkpoint().save(saved)


def tumble_dag(size: int):
    """One tumbling window; with size=1_000 the same plan as test_runner.window_dag (compiled once per run)."""
    schema = make_bids(1).schema
    b = lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(400))
    b.operator("tumble", lj.TumblingWindow(size=size, key="auction", aggs={"n": lj.count(), "s": lj.sum("price")}))
    return b.connect("bids", "tumble").sink_for("tumble", "out").build()


def test_other_dag_is_refused_and_executor_unchanged(saved, tmp_path):
    # A second variant of full_dag() would compile a plan as large as full_dag's own (over a
    # minute cold); a one-window DAG whose window size changed makes the same point.
    table = make_bids(4_000, seed=5)
    first = lj.DagExecutor(tumble_dag(1_000))
    first.process_batch("bids", make_bids(3_000, seed=2))
    theirs = first.checkpoint().save(tmp_path / "theirs")
    other = tumble_dag(2_000)  # the tumbling window changed
    ex = lj.DagExecutor(other)
    ex.process_batch("bids", table.slice(0, 2_000))
    with pytest.raises(lj.CheckpointError, match=r"different DAG — nodes changed .*\['tumble'\]"):
        ex.restore(lj.Checkpoint.load(theirs))
    ex.process_batch("bids", table.slice(2_000))
    ex.finish()
    want = run_through(lj.DagExecutor(other), [table], finish=True)
    same_rows(ex.take_all_sink_outputs(), want)

    schema = make_bids(1).schema
    small = (lj.DagBuilder().source("bids", schema).operator("f", lj.Filter(lambda price: price > 1))
             .connect("bids", "f").sink_for("f", "out").build())
    with pytest.raises(lj.CheckpointError, match=r"not in the checkpoint: \['f', 'out'\]"):
        lj.DagExecutor(small).restore(lj.Checkpoint.load(saved))
    with pytest.raises(TypeError, match="Checkpoint.load"):
        lj.DagExecutor(small).restore(str(saved))


def test_state_that_does_not_fit_is_refused_and_executor_unchanged(saved, dag):
    table = make_bids(4_000, seed=5)
    halves = [table.slice(0, 2_000), table.slice(2_000)]
    ex = lj.DagExecutor(dag)  # every kind of state; each refused restore below must leave it as it was
    ex.process_batch("bids", halves[0])
    cp = lj.Checkpoint.load(saved)
    cp.states["sess"]["field.a0_n"] = cp.states["sess"]["field.a0_n"].astype(np.float32)
    with pytest.raises(lj.CheckpointError, match=r"node 'sess'.*field.a0_n is float32"):
        ex.restore(cp)
    cp = lj.Checkpoint.load(saved)
    cp.states["tumble"]["table.meta"][0] += 1  # live count disagrees with the buckets
    with pytest.raises(lj.CheckpointError, match=r"node 'tumble'.*inconsistent|node 'tumble'.*buckets"):
        ex.restore(cp)
    cp = lj.Checkpoint.load(saved)
    del cp.states["quiet"]["heap_times"]
    with pytest.raises(lj.CheckpointError, match=r"node 'quiet'.*missing \['heap_times'\]"):
        ex.restore(cp)
    ex.process_batch("bids", halves[1])
    ex.finish()
    same_rows(ex.take_all_sink_outputs(), run_through(lj.DagExecutor(dag), halves, finish=True))
