"""The driver of a partitioned run: actors, rounds, aligned checkpoints, recovery.

The coordinator starts ``partitions`` workers (each reads one shard of
every source and owns one key range, :mod:`.actors`), then drives rounds:
every unfinished worker reads up to ``batches_per_step`` batches and routes
their rows; the sends of a round must be acknowledged before the round after
next starts. A checkpoint of epoch ``e`` goes:

1. each worker, between two rounds, saves its shard positions and reader
   state and passes barrier ``e`` to every partition behind the rows it sent
   before;
2. each partition, once barrier ``e`` has arrived from every reader, saves
   its state and keeps the epoch's output rows for the coordinator;
3. the coordinator writes the rows to the sinks, pre-commits them, writes
   the job manifest ``job.json`` (which makes ``job-<e>/`` complete) and then
   commits the sinks.

If a worker dies, every worker is replaced and restored from the last
complete checkpoint (or started afresh when there is none); the rows of the
unfinished epoch were never handed to a sink, so the output is the same as
without the failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from .._fs import fsync_dir
from ..checkpoint.store import CheckpointStore, chk_epochs
from ..errors import CheckpointError, ClusterError
from ..io.sources import EmptySource
from .actors import Worker, part_dir, reader_dir
from .plan import split_dag
from .rescale import merge_job, partition_checkpoint

__all__ = ["complete_job_epochs", "job_as_one", "read_job_manifest", "run_partitioned"]

_CHECKPOINT = re.compile(r"^job-(\d{8})$")
_JOB = "job.json"
_JOB_FORMAT = "laminar_jit.job"
_JOB_VERSION = 1
#: Test hook: called as ``hook(driver, steps)`` after each worker step (the failure tests kill a worker here).
_round_hook = None
#: How many steps a worker may run ahead of the slowest unfinished one.
_SLACK = 1


def run_partitioned(dag, sources: dict, sinks: dict, stats, partitions: int, parallelism=1, address=None,
                    checkpoint_dir=None, checkpoint_every=None, checkpoint_interval=None, keep=3,
                    max_restarts: int = 3, batches_per_step: int = 4):
    """Run ``dag`` partitioned by key on Ray; see :func:`laminar_jit.run` (``partitions=``)."""
    plan = split_dag(dag, partitions)  # PartitioningError before any cluster work
    # workers have other working directories: they get the checkpoint directory as an absolute path
    store = _JobStore(Path(checkpoint_dir).absolute(), keep, dag, partitions) if checkpoint_dir is not None else None
    if store is not None:
        store.adopt_single(sources)  # a newer checkpoint of a run in one process becomes this job's
    ray = _connect(address)
    try:
        latest = store.latest() if store is not None else None
        # sources a one-process checkpoint continues from its position are read whole by worker 0
        whole = set(latest[1].get("whole_sources", ())) if latest else set()
        shards = {name: [src] + [EmptySource(src.schema) for _ in range(partitions - 1)] if name in whole
                  else src.split(partitions) for name, src in sources.items()}
        stats.resumed_from = stats.epoch = latest[0] if latest else None
        stats.epoch = stats.epoch or 0
        for name, sink in sinks.items():
            sink.open(dag.schema_of(name), None if checkpoint_dir is None else stats.epoch)
        start_rows = sum(latest[1]["positions"].values()) if latest else 0
        if latest is not None and latest[1]["finished"]:
            stats.finished = True
            return stats
        driver = _Driver(ray, dag, plan, shards, sinks, stats, store, partitions, parallelism, batches_per_step,
                         checkpoint_every, checkpoint_interval, durable=checkpoint_dir is not None,
                         start_rows=start_rows)
        driver.whole_sources = sorted(whole)
        restarts = 0
        while True:
            try:
                driver.start(store.latest() if store is not None else None)
                driver.drive()
                break
            except Exception as exc:  # noqa: BLE001 - sorted below: actor deaths recover, the rest is raised
                cause = _root_cause(ray, exc)
                driver.stop()
                if not _recoverable(ray, cause):
                    raise cause from None
                restarts += 1
                stats.restarts = restarts
                stats.recovered_from.append(stats.epoch)
                if restarts > max_restarts:
                    raise ClusterError(f"a partitioned run lost an actor {restarts} times (max_restarts="
                                       f"{max_restarts}); last failure: {cause}") from cause
        driver.stop()
        return stats
    finally:
        for sink in sinks.values():
            sink.close()


class _Driver:
    def __init__(self, ray, dag, plan, shards, sinks, stats, store, partitions, parallelism, batches_per_step,
                 every, interval, durable, start_rows):
        self.parallelism = parallelism  # key shards of each partition's executor
        self.ray, self.dag, self.plan, self.shards, self.sinks = ray, dag, plan, shards, sinks
        self.stats, self.store, self.n, self.k = stats, store, partitions, batches_per_step
        self.every, self.interval, self.durable, self.start_rows = every, interval, durable, start_rows
        self.workers: list = []
        self._dag_ref = None
        self.whole_sources: list = []  # sources worker 0 reads whole (see _JobStore.adopt_single)

    def start(self, latest) -> None:
        """New workers, restored from ``latest`` = (epoch, manifest) or fresh."""
        ray = self.ray
        if self._dag_ref is None:
            self._dag_ref = ray.put(self.dag)
        restore = None if latest is None else str(self.store.path(latest[0]))
        self.epoch = (latest[0] if latest else 0) + 1
        # rows read in this call: what the restored checkpoint had read beyond this call's start
        self.stats.events = (sum(latest[1]["positions"].values()) if latest else 0) - self.start_rows
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        threads = float(self.parallelism) if isinstance(self.parallelism, int) else 1.0
        remote = ray.remote(num_cpus=min(threads, cpus / self.n), max_restarts=0, max_task_retries=0,
                            scheduling_strategy="SPREAD")(Worker)
        self.workers = [remote.remote(i, self._dag_ref, self.n, {name: s[i] for name, s in self.shards.items()},
                                      self.parallelism)
                        for i in range(self.n)]
        t0 = time.perf_counter()
        ray.get([w.open.remote(self.workers, restore) for w in self.workers])  # plans loaded, state restored
        self.stats.startup_seconds += time.perf_counter() - t0

    def stop(self) -> None:
        for actor in self.workers:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers = []

    def drive(self) -> None:
        """Keep every worker reading; bound how far workers drift apart and how much is unacknowledged.

        A worker starts its next step as soon as its previous one returns,
        unless it is ``_SLACK`` steps ahead of the slowest unfinished worker
        (its rows would wait in the other partitions, whose watermarks the
        slow worker holds back). The sends of a worker's step must be
        acknowledged before the step after next starts (backpressure). At a
        checkpoint every worker finishes its step first.
        """
        ray, stats = self.ray, self.stats
        active = set(range(self.n))
        steps = [0] * self.n
        acks: list = [[] for _ in range(self.n)]  # per worker: ack refs of its last steps
        inflight: dict = {}
        base, last = list(steps), time.monotonic()  # steps and time at the last checkpoint
        while active or inflight:
            since = self.k * min((steps[j] - base[j] for j in active), default=0)  # batches per reader
            checkpoint = (active and self.durable and (
                (self.every is not None and since >= self.every)
                or (self.interval is not None and time.monotonic() - last >= self.interval)))
            if not checkpoint:
                floor = min((steps[i] for i in active), default=0)
                for i in sorted(active - set(inflight.values())):
                    if steps[i] - floor < _SLACK:
                        while len(acks[i]) >= 2:
                            ray.get(acks[i].pop(0))
                        inflight[self.workers[i].step.remote(self.k)] = i
            if not inflight:
                ray.get([ref for refs in acks for r in refs for ref in r])
                acks = [[] for _ in range(self.n)]
                self.checkpoint(finished=False)
                base, last = list(steps), time.monotonic()
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1)
            i = inflight.pop(ready[0])
            done, rows, batches, refs = ray.get(ready[0])
            steps[i] += 1
            acks[i].append(refs)
            stats.events += rows
            stats.batches += batches
            if done:
                active.discard(i)
            if _round_hook is not None:
                _round_hook(self, sum(steps))
        ray.get([ref for refs in acks for r in refs for ref in r])
        self.checkpoint(finished=True)
        stats.finished = True
        busy = ray.get([w.stats.remote() for w in self.workers])
        stats.partition_seconds = [b["partition"] for b in busy]
        stats.read_seconds = [b["read"] for b in busy]

    def checkpoint(self, finished: bool) -> None:
        ray, epoch = self.ray, self.epoch
        root = self.store.path(epoch) if self.durable else None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
        acks = ray.get([w.barrier.remote(epoch, None if root is None else str(root)) for w in self.workers])
        ray.get([ref for refs in acks for ref in refs])  # every barrier has reached every partition
        collected = ray.get([w.collect.remote(epoch) for w in self.workers])
        for name, sink in self.sinks.items():
            tables = [t for reader_rows, _, _ in collected for s, t in reader_rows if s == name]
            tables += [rows[name] for _, rows, _ in collected if name in rows and rows[name].num_rows]
            for table in tables:
                sink.write(table, epoch)
                self.stats.rows_out[name] += table.num_rows
        for sink in self.sinks.values():
            sink.pre_commit(epoch)
        totals: dict = {}
        for _, _, positions in collected:
            for name, n in positions.items():
                totals[name] = totals.get(name, 0) + n
        if root is not None:
            self.store.complete(epoch, {"positions": totals, "finished": finished,
                                        "whole_sources": self.whole_sources})
        for sink in self.sinks.values():
            sink.commit(epoch)
        self.stats.positions = totals
        self.stats.epoch = epoch
        self.stats.checkpoints += root is not None
        self.epoch = epoch + 1


class _JobStore:
    """``job-<epoch>/`` checkpoints: per-reader and per-partition directories, then ``job.json``."""

    def __init__(self, root: Path, keep: int, dag, partitions: int):
        self.root, self.keep, self.dag, self.partitions = root, keep, dag, partitions
        root.mkdir(parents=True, exist_ok=True)

    def path(self, epoch: int) -> Path:
        return self.root / f"job-{epoch:08d}"

    def latest(self):
        """(epoch, manifest) of the newest complete checkpoint, or None; incomplete ones are removed."""
        self._finish_rescale()
        epochs = sorted((int(m.group(1)) for p in self.root.iterdir() if (m := _CHECKPOINT.match(p.name))),
                        reverse=True)
        for epoch in epochs:
            job = self.path(epoch) / _JOB
            if not job.exists():
                shutil.rmtree(self.path(epoch), ignore_errors=True)  # a checkpoint cut short
                continue
            manifest = read_job_manifest(self.path(epoch), self.dag)
            if len(manifest["partitions"]) != self.partitions:
                manifest = self._rescale(epoch)
            return epoch, manifest
        return None

    def _finish_rescale(self) -> None:
        """Settle a rescale a crash interrupted: the old checkpoint back if the new one did not take its name."""
        for old in self.root.glob(".job-*.old"):
            path = self.root / old.name[1:-len(".old")]
            if path.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, path)
        for fresh in self.root.glob(".job-*.rescaled"):
            shutil.rmtree(fresh, ignore_errors=True)

    def _rescale(self, epoch: int) -> dict:
        """Rewrite ``job-<epoch>`` (of another number of partitions) for this run's partitions.

        Its partitions' states merge into one executor's (:func:`.rescale.merge_job`) and split again by
        key (:func:`.rescale.partition_checkpoint`). The new checkpoint is written beside the old one and
        takes its name only when complete.
        """
        path = self.path(epoch)
        readers, parts, whole = partition_checkpoint(self.dag, job_as_one(self.root, self.dag, epoch),
                                                     self.partitions)
        fresh, old = self.root / f".job-{epoch:08d}.rescaled", self.root / f".job-{epoch:08d}.old"
        shutil.rmtree(fresh, ignore_errors=True)
        for i, (reader, part) in enumerate(zip(readers, parts)):
            reader.save(reader_dir(fresh, i))
            part.save(part_dir(fresh, i))
        manifest = read_job_manifest(path, self.dag)
        self._write_manifest(fresh, epoch, {"positions": manifest["positions"], "finished": manifest["finished"],
                                            "whole_sources": whole})
        os.replace(path, old)
        os.replace(fresh, path)
        shutil.rmtree(old, ignore_errors=True)
        fsync_dir(self.root)
        return read_job_manifest(path, self.dag)

    def adopt_single(self, sources: dict) -> None:
        """Make the newest checkpoint of a one-process run here (``chk-<epoch>``) this job's, if it is newer.

        Each partition's reader and partition part get their share of it
        (:func:`.rescale.partition_checkpoint`) as ``job-<epoch>``, so the
        job continues where that run stopped: each of ``sources`` that deals
        parts round robin is read by every worker from its shard's position,
        the others by worker 0 (``whole_sources`` in the manifest).
        """
        singles, jobs = chk_epochs(self.root), self._epochs()
        if not singles or (jobs and jobs[-1] >= singles[-1]):
            return
        single = CheckpointStore.read_latest(self.root)
        readers, parts, whole = partition_checkpoint(self.dag, single, self.partitions, sources)
        path = self.path(single.epoch)
        shutil.rmtree(path, ignore_errors=True)
        for i, (reader, part) in enumerate(zip(readers, parts)):
            reader.save(reader_dir(path, i))
            part.save(part_dir(path, i))
        totals = {name: int(single.positions[name]) for name in self.dag.sources if name in single.positions}
        self.complete(single.epoch, {"positions": totals, "finished": single.finished, "whole_sources": whole})

    def _epochs(self) -> list[int]:
        """Epochs of the complete job checkpoints here, oldest first."""
        return complete_job_epochs(self.root)

    def complete(self, epoch: int, facts: dict) -> None:
        """Write the job manifest, which marks ``job-<epoch>`` complete, then prune old checkpoints."""
        self._write_manifest(self.path(epoch), epoch, facts)
        for old in self._epochs()[:-self.keep]:
            shutil.rmtree(self.path(old), ignore_errors=True)

    def _write_manifest(self, path: Path, epoch: int, facts: dict) -> None:
        manifest = {"format": _JOB_FORMAT, "version": _JOB_VERSION, "epoch": epoch,
                    "dag_fingerprint": self.dag.fingerprint,
                    "readers": [f"reader-{i:04d}" for i in range(self.partitions)],
                    "partitions": [f"part-{i:04d}" for i in range(self.partitions)], **facts}
        tmp = path / (_JOB + ".tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path / _JOB)
        fsync_dir(path)


def read_job_manifest(path, dag) -> dict:
    """The manifest (``job.json``) of the complete job checkpoint ``path`` of ``dag``.

    Raises
    ------
    CheckpointError
        It is unreadable, of another format or version, or of another DAG.
    """
    job = Path(path) / _JOB
    try:
        manifest = json.loads(job.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"job checkpoint {job} is unreadable ({exc}); delete the directory "
                              "to start over from the previous checkpoint") from exc
    if manifest.get("format") != _JOB_FORMAT or manifest.get("version") != _JOB_VERSION:
        raise CheckpointError(f"{job} is not a laminar_jit job manifest of version {_JOB_VERSION}")
    if manifest["dag_fingerprint"] != dag.fingerprint:
        raise CheckpointError(f"{job} was written by a different DAG; use a new checkpoint directory "
                              "for a changed job")
    return manifest


def job_as_one(root, dag, epoch: int):
    """The job checkpoint ``job-<epoch>`` under ``root`` as one executor's (see :func:`.rescale.merge_job`)."""
    path = Path(root) / f"job-{epoch:08d}"
    manifest = read_job_manifest(path, dag)
    cp = merge_job(dag, path, len(manifest["partitions"]), manifest.get("whole_sources", ()), epoch)
    if manifest.get("finished"):
        cp.finished = True
    return cp


def complete_job_epochs(root) -> list[int]:
    """Epochs of the complete partitioned-job checkpoints (``job-<epoch>/job.json``) under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name)) and (p / _JOB).exists())


def _connect(address):
    """``ray`` connected to the cluster at ``address`` (a local one when None and none is running)."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError("parallel runs need Ray: pip install 'laminar-jit[ray]'") from exc
    if ray.is_initialized():
        return ray
    if address not in (None, "auto", "local"):
        _check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or ValueError here
        raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {exc}. Start one with "
                           "`ray start --head` and pass its address (host:6379), or leave address=None "
                           "for a local Ray on this machine") from exc
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear message when nothing listens at ``host:port``."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"cluster address {address!r} is not host:port (e.g. '10.0.0.5:6379' or "
                           "'ray://10.0.0.5:10001'), 'auto', or None for a local Ray")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address!r} ({exc}); start one there with "
                           "`ray start --head --port=6379`, check the host and port, or leave address=None "
                           "for a local Ray") from exc


def _root_cause(ray, exc: BaseException) -> BaseException:
    """The user's or system's error inside Ray's task-error wrappers."""
    while isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        exc = exc.cause
    return exc


def _recoverable(ray, exc: BaseException) -> bool:
    """An actor or object was lost (a crash, a kill, a node going away), not a bug or bad input."""
    x = ray.exceptions
    kinds = tuple(getattr(x, name) for name in ("RayActorError", "ActorUnavailableError", "ObjectLostError",
                                                "OwnerDiedError", "WorkerCrashedError", "NodeDiedError")
                  if hasattr(x, name))
    return isinstance(exc, kinds)
