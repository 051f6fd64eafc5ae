"""Shared test data (random event tables with disorder, skew and nulls, batch splitting), the ``slow``
marker's list and a line per finished test file."""

from __future__ import annotations

import time as _time
from collections import Counter as _Counter

import numpy as np
import pyarrow as pa
import pytest

BIDS = pa.schema([
    ("ts", pa.int64()),
    ("auction", pa.int64()),
    ("bidder", pa.int64()),
    ("price", pa.float64()),
    ("channel", pa.string()),
])


def make_bids(n: int, seed: int = 0, null_fraction: float = 0.05) -> pa.Table:
    """Bids with out-of-order timestamps, zipf-skewed auctions, nulls in price/bidder, a string column."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 10 + rng.integers(-500, 500, n)
    auction = np.minimum(rng.zipf(1.3, n), 1000).astype(np.int64)
    bidder = rng.integers(0, 10_000, n)
    price = np.round(rng.uniform(0, 200, n), 2)
    price_mask = rng.random(n) < null_fraction
    bidder_mask = rng.random(n) < null_fraction
    channel = pa.array(rng.choice(["web", "app", "api", ""], n))
    return pa.table({
        "ts": ts,
        "auction": auction,
        "bidder": pa.array(bidder, mask=bidder_mask),
        "price": pa.array(price, mask=price_mask),
        "channel": channel,
    }, schema=BIDS)


def split_table(table: pa.Table, cuts) -> list[pa.RecordBatch]:
    """Record batches of ``table`` cut at the sorted positions ``cuts`` (empty batches allowed)."""
    bounds = [0] + sorted(min(max(c, 0), table.num_rows) for c in cuts) + [table.num_rows]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        piece = table.slice(lo, hi - lo).combine_chunks()
        batches = piece.to_batches()
        out.append(batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema))
    return out


def checkpointed_run(dag, batches, at: int, path, source: str = "bids", sink: str = "out") -> pa.Table:
    """``sink``'s output when a run is checkpointed to ``path`` after ``at`` batches and a fresh executor,
    restored from the saved checkpoint, processes the rest and finishes."""
    import laminar_jit as lj

    ex = lj.DagExecutor(dag)
    for b in batches[:at]:
        ex.process_batch(source, b)
    first = ex.take_sink_outputs(sink)
    ex.checkpoint().save(path)
    again = lj.DagExecutor(dag)
    again.restore(lj.Checkpoint.load(path))
    for b in batches[at:]:
        again.process_batch(source, b)
    again.finish()
    return pa.concat_tables([first, again.take_sink_outputs(sink)])


# ----------------------------------------------------------------------------- the fast loop and per-file progress

#: Test files (or ``file::test`` prefixes) marked ``slow``: ``python -m pytest -m "not slow"`` leaves them out,
#: plain ``python -m pytest`` (CI) runs them. Each takes tens of seconds or more when the plan cache is cold.
SLOW = {
    "tests/test_notebooks.py": "executes every notebook in a Jupyter kernel",
    "tests/test_distributed.py": "starts Ray clusters and workers",
    "tests/test_asv.py": "runs every benchmark once",
    "tests/test_faults.py": "kills and restarts runs at random moments",
    "tests/test_readme.py::test_readme_python_blocks_run_in_order": "runs the README (10 M Nexmark events)",
    "tests/test_nexmark.py::test_query_matches_duckdb": "compiles every Nexmark query's plans (80-120 s each "
                                                       "for q3, q4, q8 cold)",
    "tests/test_runner.py::test_sigkill_at_random_moments_then_restart_gives_exactly_the_clean_output":
        "kills a run at random moments, many times",
}


def _slow_reason(nodeid: str) -> str | None:
    return next((why for prefix, why in SLOW.items()
                 if nodeid == prefix or nodeid.startswith((prefix + "::", prefix + "["))), None)


def _is_controller(config) -> bool:
    return not hasattr(config, "workerinput")  # an xdist worker has it


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _slow_reason(item.nodeid):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session):
    if _is_controller(session.config) and session.items:  # without xdist, collection happens here
        _progress(session.config).expect(item.nodeid for item in session.items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    progress = _progress(node.config)
    if not progress.total:  # every worker collects every test; count them once
        progress.expect(ids)


def pytest_runtest_logreport(report):
    progress = _FILE_PROGRESS.get("current")
    if progress is not None:
        progress.record(report)


_FILE_PROGRESS: dict = {}


def _progress(config) -> "_FileProgress":
    if "current" not in _FILE_PROGRESS:
        _FILE_PROGRESS["current"] = _FileProgress(config)
    return _FILE_PROGRESS["current"]


class _FileProgress:
    """One line per finished test file: ``tests/test_x.py: 12 passed in 34.5 s`` (test time, not wall time)."""

    def __init__(self, config):
        self.config = config
        self.total: _Counter = _Counter()
        self.done: _Counter = _Counter()
        self.outcomes: dict[str, _Counter] = {}
        self.seconds: _Counter = _Counter()
        self.t0 = _time.monotonic()

    def expect(self, nodeids) -> None:
        self.total = _Counter(nodeid.split("::")[0] for nodeid in nodeids)

    def record(self, report) -> None:
        path = report.nodeid.split("::")[0]
        if path not in self.total:
            return
        self.seconds[path] += report.duration
        outcomes = self.outcomes.setdefault(path, _Counter())
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcomes["error" if report.when == "setup" and report.failed else report.outcome] += 1
            self.done[path] += 1
        elif report.when == "teardown" and report.failed:
            outcomes["error"] += 1
        if report.when == "teardown" and self.done[path] == self.total[path]:
            self._write(path)

    def _write(self, path: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes[path].items()))
        files_done = sum(1 for p in self.total if self.done[p] == self.total[p])
        reporter.ensure_newline()
        reporter.write_line(f"[{files_done}/{len(self.total)} files, {_time.monotonic() - self.t0:.0f} s] "
                            f"{path}: {summary} in {self.seconds[path]:.1f} s")

# PostgreSQL connectors (tests/test_postgres.py): the crash tests restart jobs several times.
SLOW["tests/test_postgres.py::test_sink_sigkill_at_random_moments_counts_every_row_exactly_once"] = (
    "kills and restarts a job writing to PostgreSQL")
SLOW["tests/test_postgres.py::test_cdc_changes_exactly_once_across_sigkill_and_restore"] = (
    "kills and restarts a CDC job while a writer changes the table")
