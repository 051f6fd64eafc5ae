"""Soak: a long checkpointed ``lj.run`` whose memory must stay flat and whose output must not change.

The workload is Nexmark's q5 and q8 in one DAG over the three generated
streams (:func:`laminar_jit.nexmark.sources`, generated lazily chunk by
chunk, so the input costs no memory):

* q5 shape — bids counted per auction in 10 s windows sliding by 2 s, then
  the top auction of each window (sink ``"hot"``);
* q8 shape — people joined with the distinct sellers of the same 10 s
  tumbling window (sink ``"new_sellers"``).

:func:`soak` runs it twice: once with a checkpoint every
``checkpoint_interval`` seconds into :class:`~laminar_jit.io.ParquetSink`
directories, sampling the resident set size (RSS) as rows are read, and once
without any checkpoint. It reports the memory curve and whether the two
outputs are identical. ``tests/test_soak.py`` runs it on a few million events;
run it by hand on hundreds of millions::

    python -m benchmarks.soak 200_000_000          # events; prints the curve and a verdict

Memory is the process's RSS from ``/proc/self/statm`` (Linux), sampled on the
thread that runs the loop every ``sample_rows`` rows read, so each sample
sits between two batches.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import laminar_jit as lj
from laminar_jit.nexmark.generator import SCHEMAS

__all__ = ["SoakResult", "rss_bytes", "soak", "soak_dag"]

_S = dt.timedelta(seconds=1)
#: Watermark delay (ms); the generator is told the same bound, so no event is late.
MAX_DELAY_MS = 100


def soak_dag() -> lj.StreamingDag:
    """q5 (sliding-window counts, top-1 per window) and q8 (a windowed join) in one DAG.

    Returns
    -------
    StreamingDag
        Sources ``"person"``, ``"auction"``, ``"bid"``; sinks ``"hot"`` (q5)
        and ``"new_sellers"`` (q8).
    """
    b = lj.DagBuilder()
    for s in ("person", "auction", "bid"):
        b.source(s, SCHEMAS[s], event_time="date_time",
                 watermark=lj.BoundedOutOfOrderness(dt.timedelta(milliseconds=MAX_DELAY_MS)))
    return (b
            # q5: hot items
            .operator("counts", lj.SlidingWindow(size=10 * _S, slide=2 * _S, key="auction",
                                                 aggs={"num": lj.count()}))
            .operator("renamed", lj.Project({"starttime": "window_start", "endtime": "window_end",
                                             "auction": "auction", "num": "num"}))
            .operator("hottest", lj.TopN(1, by="num", window=2 * _S, allowed_lateness=10 * _S))
            .operator("q5", lj.Project(["auction", "num", "starttime", "endtime"]))
            .connect("bid", "counts").connect("counts", "renamed").connect("renamed", "hottest")
            .connect("hottest", "q5").sink_for("q5", "hot")
            # q8: new users who opened an auction in the window they joined
            .operator("people", lj.Project(["id", "name", "date_time"]))
            .operator("sellers", lj.Dedup(key="seller", within=10 * _S))
            .operator("seller_times", lj.Project(["seller", "date_time"]))
            .operator("joined", lj.WindowJoin(10 * _S, left_key="id", right_key="seller"))
            .operator("q8", lj.Project({"id": "id", "name": "name", "starttime": "window_start"}))
            .connect("person", "people").connect("auction", "sellers").connect("sellers", "seller_times")
            .connect("people", "joined", port="left").connect("seller_times", "joined", port="right")
            .connect("joined", "q8").sink_for("q8", "new_sellers")
            .build())


def rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Sampled(lj.io.Source):
    """A source counting the rows of the whole run (``rows_read``, shared by the run's sources) and, when
    ``every`` is set, recording ``(rows read, RSS)`` in ``curve`` every ``every`` of its own rows."""

    def __init__(self, inner: lj.io.Source, every: int, curve: list, rows_read: list):
        self.inner, self.every, self.curve, self.rows_read = inner, every, curve, rows_read
        self.schema = inner.schema

    @property
    def total_rows(self):
        return self.inner.total_rows

    def describe(self) -> str:
        return self.inner.describe()

    def batches(self, start_row: int = 0):
        return self._iter(start_row)

    def _iter(self, start_row):
        since = 0
        for batch in self.inner.batches(start_row):
            yield batch
            # the batch was processed by the time the next one is asked for
            self.rows_read[0] += batch.num_rows
            since += batch.num_rows
            if self.every is not None and since >= self.every:
                since = 0
                self.curve.append((self.rows_read[0], rss_bytes()))


@dataclass
class SoakResult:
    """What :func:`soak` measured.

    Attributes
    ----------
    events : int
        Events over the three streams.
    seconds_checkpointed, seconds_plain : float
        Wall time of the checkpointed run and of the run without checkpoints.
    checkpoints : int
        Checkpoints the checkpointed run saved.
    curve : list of (int, int)
        ``(events read, RSS bytes)`` samples of the checkpointed run.
    rows : dict of str to int
        Output rows per sink.
    identical : bool
        Whether both sinks' outputs are equal (same rows, same order) in the two runs.
    """

    events: int
    seconds_checkpointed: float
    seconds_plain: float
    checkpoints: int
    curve: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)
    identical: bool = False

    def growth(self, after: float = 0.2) -> float:
        """Relative RSS growth from the first sample at ``after`` of the events to the last sample.

        ``(rss_end - rss_at_mark) / rss_at_mark``; e.g. 0.03 for 3 %.
        """
        mark = next(rss for n, rss in self.curve if n >= after * self.events)
        return (self.curve[-1][1] - mark) / mark

    def table(self, points: int = 11) -> str:
        """The curve at about ``points`` evenly spaced marks, as text."""
        lines = ["events read    RSS MiB"]
        for k in range(points):
            target = k * self.events / (points - 1)
            n, rss = min(self.curve, key=lambda s: abs(s[0] - target))
            lines.append(f"{n:>12,}  {rss / 2**20:9.1f}")
        return "\n".join(lines)


def soak(events: int, workdir=None, checkpoint_interval: float | None = 1.0, checkpoint_every: int | None = None,
         sample_rows: int = 1 << 20, chunk_size: int = 65_536, plain: bool = True) -> SoakResult:
    """Run :func:`soak_dag` over ``events`` Nexmark events, checkpointed and (``plain``) not.

    Parameters
    ----------
    events : int
        Events over the three streams.
    workdir : str or os.PathLike, optional
        Where checkpoints and Parquet output go (a temporary directory,
        removed afterwards, when omitted).
    checkpoint_interval : float or None, default 1.0
        Seconds between checkpoints of the checkpointed run.
    checkpoint_every : int, optional
        Batches between checkpoints instead (``checkpoint_interval`` is then
        ignored): a checkpoint count that does not depend on the machine's speed.
    sample_rows : int, default 2**20
        Rows of the bid stream between two RSS samples.
    chunk_size : int, default 65_536
        Events per generated chunk (one batch per stream).
    plain : bool, default True
        Also run without checkpoints and compare the outputs.

    Returns
    -------
    SoakResult
    """
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="lj-soak-") if own else workdir)
    try:
        dag = soak_dag()
        curve, rows_read = [], [0]

        def sources(sampled: bool):
            srcs = lj.nexmark.sources(events, seed=7, max_delay=MAX_DELAY_MS, chunk_size=chunk_size)
            if sampled:  # the bid stream is 92 % of events: sampling it spaces samples evenly
                srcs = {name: _Sampled(src, sample_rows if name == "bid" else None, curve, rows_read)
                        for name, src in srcs.items()}
            return srcs

        # warm the compiled plans so the first samples measure the steady state, not compilation
        lj.run(dag, sources=lj.nexmark.sources(200_000, seed=7, max_delay=MAX_DELAY_MS, chunk_size=chunk_size),
               sinks={"hot": lj.io.MemorySink(), "new_sellers": lj.io.MemorySink()}, progress=False)
        checkpointed = {name: lj.io.ParquetSink(root / "checkpointed" / name) for name in dag.sinks}
        t0 = time.perf_counter()
        every = {"checkpoint_every": checkpoint_every} if checkpoint_every else {
            "checkpoint_interval": checkpoint_interval}
        stats = lj.run(dag, sources=sources(True), sinks=checkpointed, checkpoint_dir=root / "chk", progress=False,
                       **every)
        seconds_checkpointed = time.perf_counter() - t0
        curve.append((events, rss_bytes()))
        result = SoakResult(events, seconds_checkpointed, 0.0, stats.checkpoints, curve,
                            {name: s.read().num_rows for name, s in checkpointed.items()})
        if plain:
            reference = {name: lj.io.ParquetSink(root / "plain" / name) for name in dag.sinks}
            t0 = time.perf_counter()
            lj.run(dag, sources=sources(False), sinks=reference, progress=False)
            result.seconds_plain = time.perf_counter() - t0
            result.identical = all(checkpointed[n].read().equals(reference[n].read()) for n in dag.sinks)
        return result
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    """``python -m benchmarks.soak EVENTS [JSON_OUT]``: run :func:`soak`, print the curve and a verdict."""
    argv = sys.argv[1:] if argv is None else argv
    events = int(argv[0].replace("_", "")) if argv else 200_000_000
    r = soak(events)
    print(r.table(21))
    verdict = {"events": r.events, "checkpoints": r.checkpoints,
               "seconds_checkpointed": round(r.seconds_checkpointed, 1), "seconds_plain": round(r.seconds_plain, 1),
               "rows": r.rows, "identical": r.identical, "growth_from_20pct": round(r.growth(0.2), 4)}
    print(json.dumps(verdict, indent=1))
    if len(argv) > 1:
        Path(argv[1]).write_text(json.dumps({**asdict(r), **verdict}))
    return 0 if r.identical and r.growth(0.2) <= 0.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
