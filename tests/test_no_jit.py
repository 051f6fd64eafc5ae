"""Generated steps run as plain Python (``NUMBA_DISABLE_JIT=1``) against plain-Python references.

A subprocess with the JIT disabled builds each DAG below, feeds it the same
seeded events (batches of 0, 1, small and large sizes, two sources
interleaved) and writes each sink's output to an Arrow file. Nothing is
compiled there: the generated step, its node functions and the kernels they
call run as Python, so a generator that writes code Numba would accept but
that computes the wrong thing — or code that only works compiled — fails
here, and coverage sees the generated functions' bodies. This process then
compares every output with a reference computed row by row from the input.

The disorder of the events is below the watermark delay and the two join
inputs advance together, so no row is late and the references need no
watermark logic (the subprocess reports ``late_events``, checked to be 0).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

import laminar_jit as lj

EVENTS = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("x", pa.float64()), ("tag", pa.string())])
RIGHT = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("y", pa.float64())])
N = 2_000
#: Where each source's batches are cut: an empty batch, one row, small batches (queued) and large ones.
CUTS = [0, 0, 1, 100, 700, 1_300, 1_301, 1_600]
DELAY, SIZE, SLIDE, GAP, LOWER, UPPER, TOLERANCE = 10, 100, 25, 5, -20, 20, 50


def inputs() -> dict[str, pa.Table]:
    """Seeded events: disorder under the delay, nulls in the key and value, NaN values, a string tag."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=N)
    x[rng.random(N) < 0.02] = np.nan
    events = pa.table({
        "ts": np.arange(N, dtype=np.int64) * 3 + rng.integers(0, 5, N),
        "k": pa.array(rng.integers(0, 7, N), mask=rng.random(N) < 0.03),
        "x": pa.array(x, mask=rng.random(N) < 0.1),
        "tag": rng.choice(["web", "app", "api"], N),
    }, schema=EVENTS)
    right = pa.table({
        "ts": np.sort(rng.integers(0, 3 * N, N)).astype(np.int64),
        "k": pa.array(rng.integers(0, 7, N), mask=rng.random(N) < 0.03),
        "y": rng.normal(size=N),
    }, schema=RIGHT)
    return {"s": events, "r": right}


def positive(x):
    return x > 0.0


def double(x):
    return x * 2.0


def small(x):
    return x < 1.0


def running_total(st, x):
    st.total += x
    return st.total


def _builder(two_sources: bool = False) -> lj.DagBuilder:
    b = lj.DagBuilder().source("s", EVENTS, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
    if two_sources:
        b = b.source("r", RIGHT, event_time="ts", watermark=lj.BoundedOutOfOrderness(DELAY))
    return b


def _one(op, name: str = "op") -> lj.StreamingDag:
    return _builder().operator(name, op).connect("s", name).sink_for(name, "out").build()


def _join(op, after=None) -> lj.StreamingDag:
    b = _builder(True).operator("j", op).connect("s", "j", port="left").connect("r", "j", port="right")
    if after is None:
        return b.sink_for("j", "out").build()
    return b.operator("w", after).connect("j", "w").sink_for("w", "out").build()


#: The cases :func:`dags` builds (named here so that collecting the tests builds no DAG: building one
#: compiles its kernels).
CASES = ("filter_map", "fan_out_fan_in", "tumbling", "sliding", "session", "dedup", "topn", "keyed", "zscore",
         "interval_join", "window_join", "asof_join", "join_then_window", "group", "group_of_groups", "topn_unbounded", "dedup_last", "topn_ties")


def dags() -> dict[str, lj.StreamingDag]:
    count = {"n": lj.count()}
    return {
        "filter_map": (_builder().operator("f", lj.Filter(positive)).operator("m", lj.Map(double, output="x2"))
                       .connect("s", "f").connect("f", "m").sink_for("m", "out").build()),
        "fan_out_fan_in": (_builder().operator("a", lj.Filter(positive)).operator("b", lj.Filter(small))
                           .operator("m", lj.Map(double, output="x")).operator("u", lj.Project(["ts", "k", "x"]))
                           .connect("s", "a").connect("s", "b").connect("b", "m").connect("a", "u")
                           .connect("m", "u").sink_for("u", "out").build()),
        "tumbling": _one(lj.TumblingWindow(SIZE, key="tag", aggs={"n": lj.count(), "c": lj.count("x"),
                                                                  "s": lj.sum("x"), "hi": lj.max("x")})),
        "sliding": _one(lj.SlidingWindow(SIZE, SLIDE, key="k", aggs=count)),
        "session": _one(lj.SessionWindow(GAP, key="k", aggs=count)),
        "dedup": _one(lj.Dedup("k", SIZE)),
        "topn": _one(lj.TopN(2, "x", key="k", window=SIZE)),
        "keyed": _one(lj.KeyedKernel(running_total, key="k", state={"total": np.float64},
                                     output={"total": pa.float64()})),
        # state fields named like numpy methods (``mean``): plain-Python kernels must still see the fields
        "zscore": _one(lj.recipes.zscore("k", "x")),
        "interval_join": _join(lj.IntervalJoin("k", "k", LOWER, UPPER)),
        "window_join": _join(lj.WindowJoin(SIZE, "k", "k")),
        "asof_join": _join(lj.AsofJoin("k", tolerance=TOLERANCE)),
        "join_then_window": _join(lj.IntervalJoin("k", "k", LOWER, UPPER), lj.TumblingWindow(SIZE, key="k",
                                                                                            aggs=count)),
        "group": _one(lj.GroupAggregate("k", aggs={"n": lj.count(), "c": lj.count("x"), "s": lj.sum("x"),
                                                   "hi": lj.max("x")})),
        # a changelog consumed with retractions (min/max keep value lists)
        "group_of_groups": (_builder().operator("g", lj.GroupAggregate("k", aggs={"n": lj.count(), "s": lj.sum("x")}))
                            .operator("h", lj.GroupAggregate("n", aggs={"keys": lj.count(), "best": lj.max("s"),
                                                                        "worst": lj.min("s"),
                                                                        "sums": lj.count_distinct("s")}))
                            .connect("s", "g").connect("g", "h").sink_for("h", "out").build()),
        "topn_unbounded": _one(lj.TopN(2, "x", key="k", window=None)),
        "dedup_last": _one(lj.Dedup("k", keep="last")),
        # SQL rank() <= 2 by a column of seven values (many ties, some null), per string key
        "topn_ties": _one(lj.TopN(2, "k", key="tag", window=SIZE, ties=True)),
    }


def run_all(directory: str) -> None:
    """Run every DAG over :func:`inputs` and write ``<case>.arrow`` and ``late.json`` to ``directory``."""
    from laminar_jit._jit import JIT_DISABLED
    from conftest import split_table

    data = inputs()
    pieces = {name: split_table(table, CUTS) for name, table in data.items()}
    late = {}
    built = dags()
    assert tuple(built) == CASES
    for case, dag in built.items():
        ex = lj.DagExecutor(dag)
        for i in range(len(CUTS) + 1):
            for source in dag.sources:
                ex.process_batch(source, pieces[source][i])
        ex.finish()
        late[case] = ex.metrics.late_events
        out = lj.apply_changelog(ex.take_sink_outputs("out"))  # (a changelog's final state)
        with ipc.new_file(os.path.join(directory, f"{case}.arrow"), out.schema) as writer:
            writer.write_table(out)
    with open(os.path.join(directory, "late.json"), "w") as fh:
        json.dump({"jit_disabled": JIT_DISABLED, "late": late}, fh)


# ----------------------------------------------------------------------------- references

def _norm(v):
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else round(v, 9)
    return v


def _rows(table: pa.Table) -> list[tuple]:
    return [tuple(_norm(v) for v in row.values()) for row in table.to_pylist()]


def _key_order(values) -> callable:
    """Order of keys as the engine holds them: null first, numbers by value, strings by first appearance."""
    first = {}
    for v in values:
        first.setdefault(v, len(first))
    return lambda v: (-1, 0) if v is None else ((0, v) if isinstance(v, int) else (0, first[v]))


def _ranked(x):
    return x is not None and not math.isnan(x)


def _max(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return math.nan if any(math.isnan(v) for v in vals) else max(vals)


def _min(values):
    vals = [v for v in values if v is not None]
    numbers = [v for v in vals if not math.isnan(v)]
    return min(numbers) if numbers else (math.nan if vals else None)  # NaN sorts above every number


def _sum(values):
    vals = [v for v in values if v is not None]
    return math.fsum(vals) if vals and not any(math.isnan(v) for v in vals) else (math.nan if vals else None)


def reference(case: str, data: dict[str, pa.Table]) -> tuple[list[tuple], bool]:
    """The expected rows of ``case`` and whether their order is part of the contract."""
    s, r = data["s"].to_pylist(), data["r"].to_pylist()
    if case == "filter_map":
        return [(e["ts"], e["k"], e["x"], e["tag"], e["x"] * 2.0) for e in s if e["x"] is not None and e["x"] > 0], True
    if case == "fan_out_fan_in":
        a = [(e["ts"], e["k"], e["x"]) for e in s if e["x"] is not None and e["x"] > 0]
        b = [(e["ts"], e["k"], e["x"] * 2.0) for e in s if e["x"] is not None and e["x"] < 1.0]
        return a + b, False
    if case in ("tumbling", "sliding", "session"):
        key = "tag" if case == "tumbling" else "k"
        order = _key_order(e[key] for e in s)
        groups = defaultdict(list)
        if case == "session":
            by_key = defaultdict(list)
            for e in s:
                by_key[e[key]].append(e)
            for k, rows in by_key.items():
                rows.sort(key=lambda e: e["ts"])
                start = 0
                for i in range(1, len(rows) + 1):
                    if i == len(rows) or rows[i]["ts"] - rows[i - 1]["ts"] >= GAP:
                        groups[(rows[start]["ts"], rows[i - 1]["ts"] + GAP, k)] = rows[start:i]
                        start = i
        else:
            size, step = SIZE, (SIZE if case == "tumbling" else SLIDE)
            for e in s:
                last = e["ts"] // step * step
                for ws in range(last, e["ts"] - size, -step):
                    groups[(ws, ws + size, e[key])].append(e)
        out = []
        for (ws, we, k), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], order(kv[0][2]))):
            row = (ws, we, k, len(rows))
            if case == "tumbling":
                xs = [e["x"] for e in rows]
                row += (sum(v is not None for v in xs), _sum(xs), _max(xs))
            out.append(row)
        return out, True
    if case == "dedup":
        seen, out = set(), []
        for e in s:
            if (e["k"], e["ts"] // SIZE) not in seen:
                seen.add((e["k"], e["ts"] // SIZE))
                out.append(tuple(e.values()))
        return out, True
    if case == "topn":
        order = _key_order(e["k"] for e in s)
        groups = defaultdict(list)
        for arrival, e in enumerate(s):
            if _ranked(e["x"]):
                groups[(e["ts"] // SIZE * SIZE, e["k"])].append((-e["x"], arrival, e))
        out = []
        for (ws, k), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], order(kv[0][1]))):
            for rank, (_, _, e) in enumerate(sorted(rows, key=lambda t: t[:2])[:2], 1):
                out.append((ws, ws + SIZE, rank, *e.values()))
        return out, True
    if case == "topn_ties":
        order = _key_order(e["tag"] for e in s)
        groups = defaultdict(list)
        for arrival, e in enumerate(s):
            if e["k"] is not None:
                groups[(e["ts"] // SIZE * SIZE, e["tag"])].append((arrival, e))
        out = []
        for (ws, _), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], order(kv[0][1]))):
            ranked = [(1 + sum(f["k"] > e["k"] for _, f in rows), arrival, e) for arrival, e in rows]
            out += [(ws, ws + SIZE, rank, *e.values()) for rank, _, e in sorted(ranked, key=lambda t: t[:2])
                    if rank <= 2]
        return out, True
    if case == "keyed":
        totals, out = defaultdict(float), []
        for e in s:
            if e["x"] is not None:
                totals[e["k"]] += e["x"]
                out.append((e["k"], e["ts"], totals[e["k"]]))
        return out, True
    if case == "zscore":  # against each key's earlier values, two-pass (not Welford)
        earlier, out = defaultdict(list), []
        for e in s:
            if e["x"] is None:
                continue
            xs = np.array(earlier[e["k"]])
            sd = xs.std(ddof=1) if xs.size >= 2 else math.nan
            out.append((e["k"], e["ts"], (e["x"] - xs.mean()) / sd if sd > 0 else math.nan))
            earlier[e["k"]].append(e["x"])
        return out, True
    if case in ("topn_unbounded", "dedup_last"):
        best = defaultdict(list)
        for arrival, e in enumerate(s):
            if case == "dedup_last":
                best[e["k"]].append(((e["ts"], arrival), e))
            elif _ranked(e["x"]):
                best[e["k"]].append(((e["x"], -arrival), e))
        out = []
        for rows in best.values():
            rows.sort(key=lambda t: t[0], reverse=True)
            if case == "dedup_last":
                out.append(tuple(rows[0][1].values()))
            else:
                out += [(rank, *e.values()) for rank, (_, e) in enumerate(rows[:2], 1)]
        return out, False
    if case in ("group", "group_of_groups"):
        groups = defaultdict(list)
        for e in s:
            groups[e["k"]].append(e["x"])
        per_key = {k: (len(xs), sum(v is not None for v in xs), _sum(xs), _max(xs)) for k, xs in groups.items()}
        if case == "group":
            return [(k, *v) for k, v in per_key.items()], False
        by_n = defaultdict(list)
        for n, _, total, _ in per_key.values():
            by_n[n].append(total)
        distinct = lambda t: len({"nan" if v != v else v + 0.0 for v in t if v is not None})  # noqa: E731
        return [(n, len(t), _max(t), _min(t), distinct(t)) for n, t in by_n.items()], False
    pairs = []
    right_by_key = defaultdict(list)
    for arrival, q in enumerate(r):
        if q["k"] is not None:
            right_by_key[q["k"]].append((arrival, q))
    for e in s:
        if e["k"] is None:
            continue
        candidates = right_by_key[e["k"]]
        if case in ("interval_join", "join_then_window"):
            pairs += [(e, q) for _, q in candidates if LOWER <= q["ts"] - e["ts"] <= UPPER]
        elif case == "window_join":
            pairs += [(e, q) for _, q in candidates if q["ts"] // SIZE == e["ts"] // SIZE]
        else:  # as-of, backward: the latest right row at or before, the last to arrive on equal times
            before = [(q["ts"], arrival, q) for arrival, q in candidates
                      if q["ts"] <= e["ts"] and e["ts"] - q["ts"] <= TOLERANCE]
            if before:
                pairs.append((e, max(before, key=lambda t: t[:2])[2]))
    if case == "join_then_window":
        counts = defaultdict(int)
        for e, _ in pairs:
            counts[(e["ts"] // SIZE * SIZE, e["k"])] += 1
        return [(ws, ws + SIZE, k, n) for (ws, k), n in sorted(counts.items(), key=lambda kv: (kv[0][0] + SIZE,
                                                                                            kv[0][1]))], True
    out = [(*e.values(), q["ts"], q["k"], q["y"]) for e, q in pairs]
    if case == "window_join":
        out = [row + (row[0] // SIZE * SIZE, row[0] // SIZE * SIZE + SIZE) for row in out]
    return out, False


# ----------------------------------------------------------------------------- the test

@pytest.fixture(scope="module")
def no_jit_outputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("no_jit")
    tests = Path(__file__).parent
    script = (f"import sys; sys.path.insert(0, {str(tests)!r}); import test_no_jit; "
              f"test_no_jit.run_all({str(directory)!r})")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", LAMINAR_JIT_CACHE_DIR=str(directory / "plans"))
    done = subprocess.run([sys.executable, "-W", "ignore::RuntimeWarning", "-c", script], capture_output=True,
                          text=True, env=env, cwd=tests.parent, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    with open(directory / "late.json") as fh:
        meta = json.load(fh)
    assert meta["jit_disabled"] is True
    return directory, meta["late"]


@pytest.mark.parametrize("case", CASES)
def test_generated_step_without_jit_matches_reference(case, no_jit_outputs):
    directory, late = no_jit_outputs
    assert late[case] == 0
    table = ipc.open_file(directory / f"{case}.arrow").read_all()
    want, ordered = reference(case, inputs())
    if case == "zscore":  # running and two-pass statistics agree to rounding, not bit for bit
        assert table.column("k").to_pylist() == [row[0] for row in want]
        assert table.column("ts").to_pylist() == [row[1] for row in want]
        z = table.column("z").to_numpy(zero_copy_only=False)
        np.testing.assert_allclose(z, np.array([row[2] for row in want], np.float64), rtol=1e-9, atol=1e-12)
        assert np.isfinite(z).sum() > 100  # (a NaN value makes its key's later scores NaN)
        return
    got = _rows(table)
    want = [tuple(_norm(v) for v in row) for row in want]
    assert want, "a case whose reference is empty checks nothing"
    if not ordered:
        got, want = sorted(got, key=repr), sorted(want, key=repr)
    assert len(got) == len(want)
    assert got == want
