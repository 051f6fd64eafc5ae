"""Smoke test of the asv suite: every benchmark runs once, on tiny inputs.

Benchmarks only run when someone runs asv, so without this test they rot
silently (flox keeps the same ``tests/test_asv.py``). Each class benchmark is
run like asv would — a fresh instance, ``setup(*params)``, the method,
``teardown`` — for every parameter combination, with
``LAMINAR_BENCH_SMALL=1`` so the data builders in ``benchmarks/common.py``
return tiny tables. ``timeraw_*`` scripts run in a new interpreter from an
empty directory, as asv runs them. Nothing here asserts on speed: timings
live in asv.

Cold (empty Numba cache) the first run compiles each benchmark DAG's plan,
a few seconds apiece; warm, the whole module takes well under a minute.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import numbers
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK_DIR = ROOT / "benchmarks"
# asv imports the benchmark directory as a package named after it; do the same.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Prefixes of benchmarks asv runs in-process (asv_runner.benchmarks.*.name_regex).
IN_PROCESS = ("time_", "track_", "peakmem_", "mem_")
RAW = "timeraw_"
SMALL_ENV = "LAMINAR_BENCH_SMALL"

# common.py reads LAMINAR_BENCH_SMALL when a builder is called, not at import,
# so importing the modules during collection is safe; the autouse fixture
# below sets the variable before any setup runs.
MODULES = [importlib.import_module(f"benchmarks.{p.stem}") for p in sorted(BENCHMARK_DIR.glob("bench_*.py"))]


@pytest.fixture(autouse=True)
def small_sizes(monkeypatch):
    monkeypatch.setenv(SMALL_ENV, "1")


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_running():
    """Shut down the local Ray the scale-out benchmarks start (asv gets a process per benchmark; we don't)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


# ----------------------------------------------------------------------------- discovery

def _short(module) -> str:
    return module.__name__.rpartition(".")[2]


def _param_combinations(obj) -> list[tuple]:
    """asv's ``params``: a list (one parameter) or a list of lists (their product)."""
    params = getattr(obj, "params", None)
    if params is None:
        return [()]
    params = list(params)
    if params and not isinstance(params[0], (list, tuple)):
        params = [params]
    return list(itertools.product(*params))


def _benchmark_classes(module):
    for name, cls in vars(module).items():
        if inspect.isclass(cls) and cls.__module__ == module.__name__ and not name.startswith("_"):
            yield name, cls


def _functions(module, prefixes):
    for name, fn in vars(module).items():
        if inspect.isfunction(fn) and name.startswith(prefixes) and fn.__module__ == module.__name__:
            yield name, fn


def _discover():
    """(name, cls or None, function, params) for every in-process benchmark and parameter set."""
    cases, raw = [], []
    for module in MODULES:
        for cls_name, cls in _benchmark_classes(module):
            for meth_name, _ in inspect.getmembers(cls, inspect.isfunction):
                if meth_name.startswith(IN_PROCESS):
                    for params in _param_combinations(cls):
                        cases.append((f"{_short(module)}.{cls_name}.{meth_name}", cls, meth_name, params))
                elif meth_name.startswith(RAW):
                    for params in _param_combinations(cls):
                        raw.append((f"{_short(module)}.{cls_name}.{meth_name}", cls, meth_name, params))
        for fn_name, fn in _functions(module, IN_PROCESS):
            for params in _param_combinations(fn):
                cases.append((f"{_short(module)}.{fn_name}", None, fn, params))
        for fn_name, fn in _functions(module, (RAW,)):
            for params in _param_combinations(fn):
                raw.append((f"{_short(module)}.{fn_name}", None, fn, params))
    return cases, raw


CASES, RAW_CASES = _discover()


def _case_id(case) -> str:
    name, _, _, params = case
    return name + (f"({', '.join(map(str, params))})" if params else "")


# ----------------------------------------------------------------------------- running

_SETUP_CACHE: dict[type, object] = {}


def _run(cls, method, params: tuple):
    """Run one benchmark like asv: setup, the call, teardown; return its result.

    ``cls`` is the benchmark class (``method`` a method name) or None (``method``
    a module-level function whose ``setup``/``teardown`` are attributes).
    """
    if cls is not None:
        if hasattr(cls, "setup_cache"):
            if cls not in _SETUP_CACHE:
                _SETUP_CACHE[cls] = cls().setup_cache()
            params = (_SETUP_CACHE[cls], *params)
        instance = cls()
        setup, teardown = getattr(instance, "setup", None), getattr(instance, "teardown", None)
        call = getattr(instance, method)
    else:
        setup, teardown, call = getattr(method, "setup", None), getattr(method, "teardown", None), method
    if setup is not None:
        try:
            setup(*params)
        except NotImplementedError:  # asv's way to skip a parameter combination
            pytest.skip("setup raised NotImplementedError (asv skips this combination)")
    try:
        return call(*params)
    finally:
        if teardown is not None:
            teardown(*params)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_benchmark_runs(case):
    name, cls, method, params = case
    result = _run(cls, method, params)
    if name.rpartition(".")[2].startswith("track_"):
        assert isinstance(result, numbers.Real) and math.isfinite(result) and result > 0, (
            f"{name}{params} returned {result!r}; track_ benchmarks must return a positive number"
        )


@pytest.mark.parametrize("case", RAW_CASES, ids=[_case_id(c) for c in RAW_CASES])
def test_timeraw_runs(case, tmp_path):
    name, cls, method, params = case
    # Compile (or load) every benchmark plan first: the cold-start script must
    # not share a cached plan whose kernels live in the benchmarks package (see
    # bench_core.COLD_START_CODE), and it only would once those plans exist.
    from benchmarks import common
    for shape in common.SHAPES:
        common.warm_up(common.shape_dag(shape))
    common.warm_up(common.filter_map_dag())

    code = getattr(cls(), method)(*params) if cls is not None else method(*params)
    setup = ""
    if isinstance(code, tuple):  # asv allows (stmt, setup)
        code, setup = code
    assert isinstance(code, str) and code.strip(), f"{name} must return Python source"
    # An empty working directory: like asv, the child cannot import the repo's
    # benchmarks package, only what is installed.
    proc = subprocess.run(
        [sys.executable, "-c", setup + "\n" + code],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stderr}"


# ----------------------------------------------------------------------------- the harness itself

EXPECTED = {
    "bench_core.FilterMap.time_laminar",
    "bench_core.FilterMapPeers.time_polars",
    "bench_core.FilterMapPeers.time_duckdb",
    "bench_windows.Tumbling.time_laminar",
    "bench_windows.TumblingDuckDB.time_duckdb",
    "bench_windows.Sliding.time_laminar",
    "bench_windows.SlidingDuckDB.time_duckdb",
    "bench_core.FilterMap.peakmem_laminar",
    "bench_core.Shapes.time_process",
    "bench_core.Shapes.track_events_per_second",
    "bench_core.FixedCost.time_one_row_batch",
    "bench_core.timeraw_cold_start",
    "bench_core.timeraw_import",
}


def test_discovery_finds_the_suite():
    found = {c[0] for c in CASES + RAW_CASES}
    assert EXPECTED <= found, f"benchmarks not discovered: {sorted(EXPECTED - found)}"
    shapes = [c for c in CASES if c[0] == "bench_core.Shapes.time_process"]
    assert len(shapes) == 5 * 4, "every (shape, batch_size) combination is exercised"


def test_discovery_matches_asv():
    """What this test runs is exactly what asv would run (asv's own discovery)."""
    from asv_runner.discovery import disc_benchmarks

    asv_names = {b.name for b in disc_benchmarks(str(BENCHMARK_DIR))}
    ours = {c[0] for c in CASES + RAW_CASES}
    assert asv_names == ours


def test_a_broken_benchmark_fails():
    class Broken:
        params = [1, 2]

        def setup(self, n):
            self.n = n

        def time_it(self, n):
            raise ZeroDivisionError("the benchmark is broken")

    with pytest.raises(ZeroDivisionError):
        _run(Broken, "time_it", (2,))


def test_small_sizes_apply():
    from benchmarks import common

    assert common.small() and common.n_events() <= 100_000
    assert common.event_table().num_rows == common.n_events()


def test_window_benchmarks_agree_with_duckdb():
    """The window benchmarks emit exactly DuckDB's groups (row counts; values are tested elsewhere)."""
    from benchmarks import bench_windows

    for keys in ("auction", "keys_1m"):
        lam, duck = bench_windows.Tumbling(), bench_windows.TumblingDuckDB()
        lam.setup(keys)
        duck.setup(keys)
        try:
            assert lam.track_windows_emitted(keys) == duck.con.sql(duck.sql).to_arrow_table().num_rows
        finally:
            duck.teardown(keys)
    lam, duck = bench_windows.Sliding(), bench_windows.SlidingDuckDB()
    lam.setup()
    duck.setup()
    try:
        assert lam.track_windows_emitted() == duck.con.sql(bench_windows._SLIDING_SQL).to_arrow_table().num_rows
    finally:
        duck.teardown()


def test_group_benchmark_agrees_with_duckdb():
    """The GroupAggregate benchmark's changelog, applied, is DuckDB's GROUP BY (counts exactly, sums to rounding)."""
    import laminar_jit as lj
    from benchmarks import bench_changelog
    from benchmarks.bench_windows import stream

    for keys in ("auction", "keys_1m", "distinct"):
        lam, duck = bench_changelog.GroupAggregate(), bench_changelog.GroupDuckDB()
        lam.setup(keys)
        duck.setup(keys)
        try:
            got = lj.apply_changelog(stream(lam.dag, lam.batches))
            want = duck.con.sql(duck.sql).to_arrow_table()
        finally:
            duck.teardown(keys)
        key = want.column_names[0]
        got, want = got.sort_by(key), want.sort_by(key)
        assert got.column(key).to_pylist() == want.column(key).to_pylist()
        assert got.column("n").to_pylist() == want.column("n").to_pylist()
        if keys == "distinct":
            assert got.column("bidders").to_pylist() == want.column("bidders").to_pylist()
            continue
        np.testing.assert_allclose(got.column("total").to_numpy(), want.column("total").to_numpy(), rtol=1e-9)
        assert got.column("top").to_pylist() == want.column("top").to_pylist()
    for lam, query in ((bench_changelog.UnboundedTopN(), "topn"), (bench_changelog.DedupLast(), "dedup_last")):
        duck = bench_changelog.RankedDuckDB()
        lam.setup()
        duck.setup(query)
        try:
            assert lj.apply_changelog(lam._run()).num_rows == duck.con.sql(duck.sql).to_arrow_table().num_rows
        finally:
            duck.teardown(query)


def test_filter_map_peers_compute_the_same_result():
    """The three engines of FilterMap answer the same query (same rows and price_eur)."""
    import polars as pl
    from polars.testing import assert_frame_equal

    from benchmarks import bench_core, common

    bench, peers = bench_core.FilterMap(), bench_core.FilterMapPeers()
    bench.setup()
    peers.setup()
    try:
        laminar = common.run_dag(bench.dag, bench.batches)["out"]
        results = [
            pl.from_arrow(laminar),
            bench_core._polars_filter_map(peers.frame),
            pl.from_arrow(peers.con.sql(bench_core._FILTER_MAP_SQL).to_arrow_table()),
        ]
    finally:
        peers.teardown()
    keys = ["ts", "auction", "bidder", "price"]
    expected = results[1].sort(keys)
    assert expected.height > 0 and expected.columns == keys + ["price_eur"]
    for got in (results[0], results[2]):
        assert_frame_equal(got.sort(keys), expected)


def test_perf_map_names_the_compiled_steps_and_kernels(tmp_path):
    """``benchmarks.perf_map`` (a profiling aid) names a loaded plan's step and a library kernel at their
    addresses, each address once and in order."""
    from benchmarks import bench_core, common
    from benchmarks.perf_map import write_perf_map

    bench = bench_core.FilterMap()
    bench.setup()
    common.run_dag(bench.dag, bench.batches[:1])
    path = tmp_path / "perf.map"
    count = write_perf_map(str(path))
    rows = [line.split(" ", 2) for line in path.read_text().splitlines()]
    assert count == len(rows) > 0
    starts = [int(start, 16) for start, _, _ in rows]
    assert starts == sorted(set(starts)) and all(int(size, 16) > 0 for _, size, _ in rows)
    names = [name for *_, name in rows]
    assert any("laminar_jit_plans" in n and "step" in n for n in names)
    assert any("laminar_jit7kernels" in n for n in names)
