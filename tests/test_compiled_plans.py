"""The plan compiler: generated steps, memoization, Numba's on-disk cache, and a no-JIT run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from numba import float64 as f64

import laminar_jit as lj
from laminar_jit.executor.plan import compile_plan

TESTS = Path(__file__).parent

SCRIPT = textwrap.dedent("""
    import json, numpy as np, pyarrow as pa, laminar_jit as lj

    def positive(x):
        return x > 0

    def square(x):
        return x * x

    schema = pa.schema([("x", pa.float64())])
    dag = (lj.DagBuilder().source("s", schema)
           .operator("f", lj.Filter(positive)).operator("m", lj.Map(square, output="y"))
           .connect("s", "f").connect("f", "m").sink_for("m", "out").build())
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", {"x": np.array([-1.0, 2.0, 3.0])})
    step = ex.plan("s").step
    print(json.dumps({"y": ex.take_sink_outputs("out").column("y").to_pylist(),
                      "hits": len(step.stats.cache_hits), "misses": len(step.stats.cache_misses)}))
""")


def _run(cache_dir, extra_env=None):
    env = dict(os.environ, LAMINAR_JIT_CACHE_DIR=str(cache_dir), **(extra_env or {}))
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_step_from_disk_cache(tmp_path):
    first = _run(tmp_path)
    second = _run(tmp_path)
    assert first["y"] == second["y"] == [4.0, 9.0]
    assert first["misses"] >= 1 and first["hits"] == 0
    assert second["hits"] >= 1 and second["misses"] == 0
    plans = list((tmp_path / "plans").glob("p_*.py"))
    assert len(plans) == 1
    text = plans[0].read_text()
    assert "def step(" in text and "offsets" in text


def _tiny(name_suffix="", threshold=0.0):
    schema = pa.schema([("x", pa.float64())])
    return (lj.DagBuilder().source("s" + name_suffix, schema)
            .operator("f" + name_suffix, lj.Filter(lambda x: x > threshold))
            .connect("s" + name_suffix, "f" + name_suffix)
            .sink_for("f" + name_suffix, "out" + name_suffix).build())


def test_processes_starting_one_dag_together_compile_its_plan_once(tmp_path):
    # the partitions of a run start together: one compiles, the others wait and load its machine code
    env = dict(os.environ, LAMINAR_JIT_CACHE_DIR=str(tmp_path), LAMINAR_JIT_PROGRESS="0")
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(3)]
    import json

    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["y"] == [4.0, 9.0] for r in results)
    assert sorted(r["misses"] > 0 for r in results) == [False, False, True]
    assert all(r["hits"] >= 1 for r in results if r["misses"] == 0)
    assert len(list((tmp_path / "plans").glob("p_*.lock"))) == 1


def test_structurally_identical_dags_share_one_step():
    a, b = _tiny(), _tiny("_renamed")
    assert compile_plan(a, "s").step is compile_plan(b, "s_renamed").step
    # a different constant in the kernel is a different plan
    assert compile_plan(_tiny(threshold=1.0), "s").step is not compile_plan(a, "s").step


def test_a_second_executor_of_a_dag_reuses_its_plans_without_generating_them(monkeypatch):
    import laminar_jit.executor.plan as plan_module

    dag = _tiny()
    first = lj.DagExecutor(dag)
    first.process_batch("s", {"x": np.array([-1.0, 2.0])})

    def generate_again(*args):
        raise AssertionError("the plan of a DAG already run was generated again")

    monkeypatch.setattr(plan_module, "_compile_plan", generate_again)
    second = lj.DagExecutor(dag)  # (the memo is per DAG object: another DAG would be generated)
    assert second.compile_seconds == 0.0
    assert second.plan("s") is not first.plan("s") and second.plan("s").step is first.plan("s").step
    second.process_batch("s", {"x": np.array([-1.0, 2.0])})
    assert second.take_sink_outputs("out").equals(first.take_sink_outputs("out"))
    with pytest.raises(AssertionError, match="generated again"):
        lj.DagExecutor(_tiny())


def over(x):
    # ``f64`` is a Numba type object: Numba compiles the call, the fingerprint cannot hash it
    return f64(x) > 1.0


def test_unhashable_kernel_global_is_compiled_without_disk_cache():
    schema = pa.schema([("x", pa.float64())])
    dag = (lj.DagBuilder().source("s", schema).operator("f", lj.Filter(over)).connect("s", "f")
           .sink_for("f", "out").build())
    assert dag.fingerprint is None
    plan = compile_plan(dag, "s")
    assert not plan.cacheable
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", {"x": np.array([0.5, 2.0])})
    assert ex.take_sink_outputs("out").column("x").to_pylist() == [2.0]


def test_kernel_of_a_module_no_process_can_import_is_compiled_without_disk_cache():
    # code run with ``exec`` under a made-up module name (as a notebook tool or a docs test may):
    # a cached plan naming it could not be loaded by the next process, so none is written
    namespace = {"__name__": "<made up>"}
    exec("def big(x):\n    return x > 1.0\n", namespace)
    schema = pa.schema([("x", pa.float64())])
    dag = (lj.DagBuilder().source("s", schema).operator("f", lj.Filter(namespace["big"])).connect("s", "f")
           .sink_for("f", "out").build())
    assert dag.fingerprint is None
    assert not compile_plan(dag, "s").cacheable
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", {"x": np.array([0.5, 2.0])})
    assert ex.take_sink_outputs("out").column("x").to_pylist() == [2.0]


def test_executor_suite_without_jit():
    """Run the executor tests with NUMBA_DISABLE_JIT=1 so kernel bodies run as Python (coverage)."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "test_executor.py")],
        capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


def test_unloadable_cache_entry_falls_back_to_a_fresh_compile(tmp_path):
    # A kernel whose module cannot be imported in the loading process: Numba's
    # cached code may need to import it by name (whether it does depends on
    # what the compiled environment captured); the executor must never fail.
    script = SCRIPT.replace("def positive(x):\n    return x > 0\n",
                            "def positive(x):\n    return x > 0\npositive.__module__ = 'gone_module_xyz'\n")
    env = dict(os.environ, LAMINAR_JIT_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True, text=True,
                           env=env, timeout=600) for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert '"y": [4.0, 9.0]' in done.stdout


def test_corrupted_cache_entry_falls_back_to_a_fresh_compile(tmp_path):
    """Truncated cache files (a full disk, a killed writer) are recompiled with a warning, not a crash."""
    # Numba's cache of the plan goes next to it, or under NUMBA_CACHE_DIR when that is set (as in CI)
    env = dict(os.environ, LAMINAR_JIT_CACHE_DIR=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    first = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    data = list(tmp_path.rglob("p_*.nbc"))
    assert data
    for f in data:
        f.write_bytes(f.read_bytes()[:100])
    again = subprocess.run([sys.executable, "-W", "always", "-c", SCRIPT], capture_output=True, text=True,
                           env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert '"y": [4.0, 9.0]' in again.stdout
    assert "compiling it again without the disk cache" in again.stderr


# ----------------------------------------------------------------------------- helpers shared between plans

WINDOW_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, pyarrow as pa, laminar_jit as lj

    cut, filters = float(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    schema = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("x", pa.float64())])
    keep = eval(f"lambda x: x > {cut}")  # a new kernel, so a new plan, in every run
    b = lj.DagBuilder().source("s", schema, event_time="ts")
    for i in range(filters):  # more filters: the window is another node id
        b = b.operator(f"f{i}", lj.Filter(keep)).connect(f"f{i - 1}" if i else "s", f"f{i}")
    dag = (b.operator("w", lj.TumblingWindow(size=10, key="k", aggs={"n": lj.count(), "hi": lj.max("x")}))
           .connect(f"f{filters - 1}", "w").sink_for("w", "out").build())
    ex = lj.DagExecutor(dag)
    ex.process_batch("s", {"ts": np.array([1, 2, 12, 15]), "k": np.array([1, 1, 2, 1]),
                           "x": np.array([1.0, 5.0, 3.0, 4.0])})
    ex.finish()
    step = ex.plan("s").step
    shared = [v for v in step.py_func.__globals__.values()
              if getattr(getattr(v, "py_func", None), "__module__", "").startswith("laminar_jit_plans.s_")]
    print(json.dumps({"rows": ex.take_sink_outputs("out").to_pylist(),
                      "step_misses": len(step.stats.cache_misses), "shared": len(shared),
                      "shared_hits": sum(len(f.stats.cache_hits) for f in shared),
                      "shared_misses": sum(len(f.stats.cache_misses) for f in shared)}))
""")


def test_a_new_plan_loads_the_helpers_no_kernel_reaches_from_the_cache(tmp_path):
    # a window's update and fire call no user kernel here: a DAG with a new filter compiles its filter
    # and step, and loads them as compiled for the previous DAG; a corrupted shared entry is compiled again
    env = dict(os.environ, LAMINAR_JIT_CACHE_DIR=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "numba"),
               LAMINAR_JIT_PROGRESS="0")
    import json

    def run(cut, filters=1):
        done = subprocess.run([sys.executable, "-W", "always", "-c", WINDOW_SCRIPT, str(cut), str(filters)],
                              capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    first, _ = run(0.0)
    second, _ = run(2.0)
    # the window's update loop reads source columns only, so it is shared too
    assert first["shared"] == 2 and first["shared_misses"] == 2 and first["step_misses"] == 1
    assert second["shared_misses"] == 0 and second["shared_hits"] == 2 and second["step_misses"] == 1
    assert [(r["window_start"], r["k"], r["n"], r["hi"]) for r in first["rows"]] == [(0, 1, 2, 5.0), (10, 1, 1, 4.0),
                                                                                      (10, 2, 1, 3.0)]
    assert [(r["window_start"], r["k"], r["n"]) for r in second["rows"]] == [(0, 1, 1), (10, 1, 1), (10, 2, 1)]
    shared = list((tmp_path / "plans").glob("s_*.py"))
    assert sorted("_fire(" in f.read_text() for f in shared) == [False, True]
    # the same window behind two filters is node 3, not 2: its helpers' texts leave the id out, so they are shared
    moved, _ = run(2.0, filters=2)
    assert moved["shared_misses"] == 0 and moved["shared_hits"] == 2 and moved["rows"] == second["rows"]
    assert len(list((tmp_path / "plans").glob("s_*.py"))) == 2
    for f in tmp_path.rglob("s_*.nb[ci]"):
        f.write_bytes(f.read_bytes()[:100])
    third, stderr = run(3.0)
    assert [(r["window_start"], r["k"], r["n"]) for r in third["rows"]] == [(0, 1, 1), (10, 1, 1)]
    assert "compiling it again without the disk cache" in stderr


def test_split_shared_moves_helpers_that_read_no_kernel_and_no_other_helper():
    from laminar_jit.executor.shared import split_shared

    text = textwrap.dedent('''
        import numpy as np
        from laminar_jit.kernels.alloc import empty, full
        from laminar_jit.kernels.selection import identity
        WM_MIN = -9223372036854775808


        @njit
        def node_1(n, v):
            return kernel_1(v)


        @njit
        def fire_2(cnt):
            out = empty(cnt, np.int64)
            out[:] = WM_MIN
            return out


        @njit
        def gather_3(n):
            return fire_2(n)


        @jit(no_cfunc_wrapper=True)
        def step(n, v):
            return node_1(n, v), fire_2(n), gather_3(n)
        ''')
    plan, helpers = split_shared(text, {"kernel_1"}, ["numba-version"])
    assert [h.name for h in helpers] == ["fire_2"]
    assert "def fire_2" not in plan and f"# fire_2: shared helper {helpers[0].module}.py" in plan
    for kept in ("def node_1", "def gather_3", "def step"):
        assert kept in plan
    shared = helpers[0].text
    assert "from laminar_jit.kernels.alloc import empty\n" in shared and "WM_MIN = " in shared
    assert "identity" not in shared and "full" not in shared
    # the digest covers the text and the stamps: another stamp, another module
    assert split_shared(text, {"kernel_1"}, ["other"])[1][0].module != helpers[0].module
    assert split_shared(text, {"kernel_1"}, ["numba-version"])[1][0].module == helpers[0].module


def test_a_kernel_module_stamp_enters_only_the_helpers_that_reach_it():
    # changelog.py is stamped into the plans that link it; over.py imports it, alloc.py does not
    from laminar_jit.executor.shared import kernels_reached, split_shared

    assert {"over.py", "changelog.py", "hashtable.py"} <= kernels_reached(["over"])
    assert "changelog.py" not in kernels_reached(["alloc", "joins"])
    text = textwrap.dedent('''
        import numpy as np
        from laminar_jit.kernels.alloc import empty
        from laminar_jit.kernels.over import over_update


        @njit
        def fire_2(cnt):
            return empty(cnt, np.int64)


        @njit
        def over_3(cnt):
            return over_update(cnt)
        ''')
    plain = {h.name: h.module for h in split_shared(text, set(), ["numba-version"])[1]}
    stamped = {h.name: h.module for h in split_shared(text, set(), ["numba-version"], ["kernels/changelog.py=1"])[1]}
    edited = {h.name: h.module for h in split_shared(text, set(), ["numba-version"], ["kernels/changelog.py=2"])[1]}
    assert stamped["fire_2"] == plain["fire_2"] == edited["fire_2"]
    assert len({plain["over_3"], stamped["over_3"], edited["over_3"]}) == 3


ONE_SIGNATURE = textwrap.dedent("""
    import json, sys
    import pyarrow as pa
    import laminar_jit as lj
    from helpers import SCHEMA, events

    text = ("CREATE TABLE bids (WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);\\n"
            "INSERT INTO g SELECT auction, MIN(ch) AS lo, COUNT(*) AS n FROM bids GROUP BY auction;\\n"
            "INSERT INTO j SELECT a.ts, b.ts AS bts, a.auction FROM bids a JOIN bids b ON a.auction = b.auction "
            "AND b.ts BETWEEN a.ts - INTERVAL '20' MILLISECOND AND a.ts;\\n")
    dag = lj.sql(text, sources={"bids": SCHEMA})
    table = events(3_000, seed=5)
    plain = table.slice(0, 1_000).combine_chunks().to_batches()[0]
    coded = table.slice(1_000, 1_500).combine_chunks()
    coded = coded.set_column(3, "ch", coded.column("ch").dictionary_encode()).to_batches()[0]
    no_nulls = pa.table({c: table.column(c).slice(2_500).fill_null(0) if c != "ch" else table.column(c).slice(2_500)
                         for c in table.column_names}, schema=SCHEMA).combine_chunks().to_batches()[0]
    ex = lj.DagExecutor(dag)
    for batch in (plain, plain.slice(0, 0), coded, coded.slice(0, 1), no_nulls):
        ex.process_batch("bids", batch)
    ex.finish()
    rows = {s: ex.take_sink_outputs(s).num_rows for s in ("g", "j")}
    functions = {(name, attr): f for name, module in list(sys.modules.items()) if name.startswith("laminar_jit_plans.")
                 for attr, f in vars(module).items()
                 if getattr(getattr(f, "py_func", None), "__module__", None) == name and f.signatures}
    twice = {f"{module}.{attr}": [f"argument {i}: " + " | ".join(map(str, types))
                                  for i, types in enumerate(zip(*f.signatures)) if len(set(types)) > 1]
             for (module, attr), f in functions.items() if len(f.signatures) > 1}
    print(json.dumps({"rows": rows, "steps": sum(attr == "step" for _, attr in functions), "twice": twice}))
""")


def test_every_compiled_function_of_a_plan_has_one_signature():
    """Batches with and without nulls, of plain and dictionary strings, empty and one-row ones: each function of
    the plans (the step and its helpers) is compiled for one set of argument types. A writable column passed
    where the step was compiled for a read-only one, or a literal int passed to a helper that the loop later
    passes an int64, would compile the step or the helper a second time. (A process of its own: a helper
    shared with another plan may rightly be compiled for that plan's types too.)"""
    proc = subprocess.run([sys.executable, "-c", ONE_SIGNATURE], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rows"]["g"] > 0 and out["rows"]["j"] > 0 and out["steps"] >= 1, out
    assert not out["twice"], "compiled more than once:\n" + "\n".join(
        f"{name}: {'; '.join(diff)}" for name, diff in out["twice"].items())
