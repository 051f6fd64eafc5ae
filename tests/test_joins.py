"""Two-input joins against independent references.

Interval and window joins are checked against DuckDB (``BETWEEN`` joins of
every type), as-of joins against a brute-force numpy search (and DuckDB's
``ASOF JOIN`` for the backward case), on out-of-order data with a hot key,
null keys, a string column and random batch splits interleaved at random
between the two inputs. Each variant is its own one-join DAG: a join's bounds,
type and direction are run-time parameters of its state, so variants with the
same output columns share one compiled plan.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import laminar_jit as lj
from laminar_jit.executor.handoff import StepRows

from conftest import split_table
from helpers import ASOF, DELAY, LEFT, RIGHT, interleaved, join_dag, join_sources, make_side

HOWS = ("inner", "left", "right", "full", "semi", "anti")
SQL_JOIN = {"inner": "JOIN", "left": "LEFT JOIN", "right": "RIGHT JOIN", "full": "FULL JOIN",
            "semi": "SEMI JOIN", "anti": "ANTI JOIN"}


def run(dag, feed, sinks):
    ex = lj.DagExecutor(dag)
    for source, batch in feed:
        ex.process_batch(source, batch)
    ex.finish()
    return ex, {s: ex.take_sink_outputs(s) for s in sinks}


def same_rows(got: pa.Table, want: pa.Table) -> None:
    a = pl.from_arrow(got)
    b = pl.from_arrow(want)
    assert a.columns == b.columns, (a.columns, b.columns)
    a, b = a.sort(a.columns, nulls_last=True), b.sort(b.columns, nulls_last=True)
    assert a.height == b.height, (a.height, b.height)
    assert a.equals(b), (a, b)


class Family:
    """Several one-join DAGs run over the same input: ``run(feed)`` gives each one's executor and output."""

    def __init__(self, dags: dict):
        self.dags = dags

    def run(self, feed):
        out = {}
        for name, dag in self.dags.items():
            ex, got = run(dag, feed, ["out"])
            out[name] = (ex, got["out"])
        return out


@pytest.fixture(scope="module")
def interval_dags():
    dags = {how: join_dag(lj.IntervalJoin("k", "k", lower=-20, upper=35, how=how)) for how in HOWS}
    dags["win"] = join_dag(lj.WindowJoin(100, "k", "k"))
    return Family(dags)


def _interval_reference(left, right):
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    out = {}
    for how in HOWS:
        cols = "l.*" if how in ("semi", "anti") else "l.*, r.ts AS ts_right, r.k AS k_right, r.b"
        out[f"{how}_out"] = con.sql(f"SELECT {cols} FROM l {SQL_JOIN[how]} r ON l.k = r.k "
                                    "AND r.ts BETWEEN l.ts - 20 AND l.ts + 35").to_arrow_table()
    # floor division (DuckDB's // truncates toward zero, and times here go below 0)
    out["win_out"] = con.sql("SELECT l.*, r.ts AS ts_right, r.k AS k_right, r.b, "
                             "CAST(floor(l.ts / 100) * 100 AS BIGINT) AS window_start, "
                             "CAST(floor(l.ts / 100) * 100 + 100 AS BIGINT) AS window_end FROM l JOIN r "
                             "ON l.k = r.k AND floor(l.ts / 100) = floor(r.ts / 100)").to_arrow_table()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_interval_and_window_joins_match_duckdb(interval_dags, seed):
    left, right = make_side(1500, seed, LEFT), make_side(1200, seed + 100, RIGHT)
    got = interval_dags.run(interleaved(left, right, seed))
    want = _interval_reference(left, right)
    for name, (ex, out) in got.items():
        assert ex.metrics.late_events == 0
        same_rows(out, want[f"{name}_out"])
        assert len(ex.state.operator_states[ex.dag.node("j").id]) == 0  # everything was freed once the inputs ended


def _pairs_in_order(feed, match):
    """(left id, right id) in the documented order: per arriving row, its partners newest first.

    A plain-Python reference: every earlier row of the other side with the same
    (non-null) key that ``match(left_ts, right_ts)`` accepts, ordered by event
    time, then arrival, descending. Ids are the ``a``/``b`` columns.
    """
    seen = {"L": [], "R": []}
    out, seq = [], 0
    for source, batch in feed:
        cols = batch.to_pydict()
        for ts, k, v in zip(cols["ts"], cols["k"], cols["a" if source == "L" else "b"]):
            seq += 1
            if k is None:
                continue
            other = "R" if source == "L" else "L"
            partners = [(t, q, w) for t, kk, q, w in seen[other]
                        if kk == k and (match(ts, t) if source == "L" else match(t, ts))]
            partners.sort(reverse=True)
            out += [(v, w) if source == "L" else (w, v) for _, _, w in partners]
            seen[source].append((ts, k, seq, v))
    return out


@pytest.mark.parametrize("seed", [3, 4])
def test_pairs_come_newest_partner_first_in_arrival_order(interval_dags, seed):
    """Row for row (not as sets): each arriving row's partners by event time, then arrival, newest
    first, whatever the disorder, the hot key's size and the batch cuts (README, "Order of output rows")."""
    sides = []
    for schema, n in ((LEFT, 1200), (RIGHT, 1000)):
        side = make_side(n, seed + 10 * n, schema)
        ids = pa.array(np.arange(n, dtype=np.float64))  # payload = row id, to name the pairs
        side = side.set_column(2, schema.field(2), ids)
        sides.append(side)
    feed = interleaved(*sides, seed)
    got = interval_dags.run(feed)
    for name, match in (("inner", lambda tl, tr: tl - 20 <= tr <= tl + 35),
                        ("win", lambda tl, tr: tl // 100 == tr // 100)):
        out = got[name][1]
        pairs = list(zip(out["a"].to_pylist(), out["b"].to_pylist()))
        want = _pairs_in_order(feed, match)
        assert len(want) > 300 and pairs == want


def test_join_output_shared_by_two_sinks_and_a_filter():
    # sinks take a join's own output arrays without copying them: two sinks and a
    # filter reading the same arrays must each still see the join's rows, batch after batch
    dag = (join_sources(lj.DagBuilder())
           .operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35))
           .connect("L", "j", port="left").connect("R", "j", port="right")
           .operator("over_100", lj.Filter(lambda a, b: a + b > 100.0)).connect("j", "over_100")
           .sink_for("j", "all").sink_for("j", "again").sink_for("over_100", "big").build())
    left, right = make_side(1500, 11, LEFT), make_side(1200, 12, RIGHT)
    _, got = run(dag, interleaved(left, right, 11), ["all", "again", "big"])
    want = _interval_reference(left, right)["inner_out"]
    same_rows(got["all"], want)
    same_rows(got["again"], want)
    same_rows(got["big"], want.filter(pc.greater(pc.add(want["a"], want["b"]), 100.0)))


def test_interval_join_with_an_empty_side(interval_dags):
    left = make_side(500, 7, LEFT)
    right = make_side(0, 8, RIGHT)
    got = interval_dags.run([("L", b) for b in split_table(left, [100, 100, 250])])
    want = _interval_reference(left, right)
    for name, (_, out) in got.items():
        same_rows(out, want[f"{name}_out"])
    assert got["inner"][1].num_rows == 0 and got["anti"][1].num_rows == left.num_rows


def test_interval_join_frees_rows_as_the_watermark_passes(interval_dags):
    dag = interval_dags.dags["inner"]
    ex = lj.DagExecutor(dag)
    node = dag.node("j").id
    for i in range(20):
        ts = np.arange(1000) + i * 1000
        ex.process_batch("L", {"ts": ts, "k": ts % 50, "a": np.ones(1000), "tag": ["x"] * 1000})
        ex.process_batch("R", {"ts": ts, "k": ts % 50, "b": np.ones(1000)})
    # buffered rows: those within upper/lower + delay of the watermark, not the 20,000 seen
    state = ex.state.operator_states[node]
    assert len(state) < 2 * (DELAY + 35 + 1000)
    # and the row store follows them: freed rows are compacted away, not kept (or reused) for good
    assert state.row_capacity < 8 * 1024
    assert ex.metrics.late_events == 0



@pytest.mark.parametrize("dag_name", ["inner", "win"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_end_of_input_frees_a_side_as_the_general_pass_would(interval_dags, dag_name, side):
    # at the end of input an inner join frees a side in one pass over its rows and one over the slots; the
    # state it leaves is the one the general pass leaves when every row expires (the slots that go may take
    # other places on the free stack, so the table is compared by its keys)
    import copy

    from laminar_jit.kernels.joins import expire_buckets
    from laminar_jit.state.joins import SIDE_BASE
    from laminar_jit.state.keytable import KeyTable

    dag = interval_dags.dags[dag_name]
    ex = lj.DagExecutor(dag)
    for source, batch in interleaved(make_side(1500, 11, LEFT), make_side(1200, 12, RIGHT), 11):
        ex.process_batch(source, batch)
    state = ex.state.operator_states[dag.node("j").id]
    base, h = SIDE_BASE[side], 0 if side == "left" else 2
    assert state.aux[SIDE_BASE["left"] + 2] > 0 and state.aux[SIDE_BASE["right"] + 2] > 0  # rows on both sides
    kind, a, b = (1, state.params[0], state.params[1]) if dag_name == "win" else (
        0, state.params[1] if side == "left" else -state.params[0], 0)
    after = {}
    for W in (np.iinfo(np.int64).max, np.iinfo(np.int64).max - 1):  # the end of input; the general pass
        st = copy.deepcopy(state)
        rows = {name: arr for name, arr, _ in st.rows[side]}
        t = st.table
        expire_buckets(W, np.int64(kind), a, b, False, np.int64(h // 2), t.buckets, t.keys, t.meta, t.free,
                       st.heads, st.aux, np.int64(base), rows["ts"], rows["seq"], rows["slot"], rows["flag"],
                       rows["nxt"], np.empty(0, np.int64), np.empty(0, np.int64), 0)
        KeyTable.from_snapshot(t.snapshot())  # (raises when the table is inconsistent)
        live = t.live_slots()
        after[W] = (st.aux.copy(), rows["flag"].copy(), len(t), st.heads[:, h:h + 2].copy(),
                    {tuple(t.keys[s]): tuple(st.heads[s, 2 - h:4 - h]) for s in live})
    fast, general = after.values()
    assert np.array_equal(fast[0], general[0]) and np.array_equal(fast[1], general[1])
    assert fast[2] == general[2] and (fast[3] == -1).all() and (general[3] == -1).all()
    assert fast[4] == general[4] and len(fast[4]) > 0  # the other side's lists, by key

def test_a_side_that_keeps_every_row_grows_fourfold_once_large(monkeypatch):
    # a regular join frees nothing: past WIDE_GROWTH_ROWS its store grows to four times its rows (each growth
    # copies them into fresh memory); the pairs do not depend on it
    from laminar_jit.state import joins as state_joins

    forever = 10 ** 12
    dag = join_dag(lj.IntervalJoin("k", "k", lower=-forever, upper=forever))
    feed = []
    for i in range(6):
        ts = np.arange(1000) + i * 1000
        feed.append(("L", pa.table({"ts": ts, "k": ts % 50, "a": np.ones(1000), "tag": ["x"] * 1000}, schema=LEFT)))
        if i % 2:
            feed.append(("R", pa.table({"ts": ts[:10], "k": ts[:10] % 50, "b": np.ones(10)}, schema=RIGHT)))
    capacity = {}
    outputs = {}
    for wide in (10 ** 9, 2000):
        monkeypatch.setattr(state_joins, "WIDE_GROWTH_ROWS", wide)
        ex = lj.DagExecutor(dag)
        state = ex.state.operator_states[dag.node("j").id]
        for source, batch in feed[:3]:  # 2,000 left rows, then a third batch of 1,000 that needs room
            ex.process_batch(source, batch)
        capacity[wide] = state.row_capacity
        for source, batch in feed[3:]:
            ex.process_batch(source, batch)
        ex.finish()
        outputs[wide] = ex.take_sink_outputs("out")
    assert capacity == {10 ** 9: 4096, 2000: 8192}
    con = duckdb.connect()
    for name in ("L", "R"):
        con.register(name, pa.concat_tables([b for s, b in feed if s == name]))
    want = con.sql("SELECT l.*, r.ts AS ts_right, r.k AS k_right, r.b FROM L l JOIN R r ON l.k = r.k").to_arrow_table()
    for out in outputs.values():
        same_rows(out, want)


@pytest.mark.parametrize("keys_carry_on", [True, False])
def test_a_window_join_frees_exactly_the_rows_of_windows_its_watermark_closed(keys_carry_on):
    # rows on and next to window boundaries (times below 0 too), fed window by window; a closing window's
    # keys also hold rows of the next windows (few of the join's slots go) or not (most go): after each
    # batch the join keeps exactly the rows whose window its input watermark has not closed, every kept
    # row still meets the rows that arrive later, and the pairs are DuckDB's
    size = 100
    dag = join_dag(lj.WindowJoin(size, "k", "k"))
    ex = lj.DagExecutor(dag)
    rng = np.random.default_rng(7)
    edges = np.array([0, 1, size // 2, size - 2, size - 1])
    feed, sides = [], {"L": [], "R": []}
    for w in range(-3, 12):
        for source in ("L", "R"):
            ts = w * size + rng.choice(edges, 40)
            k = rng.integers(0, 6, 40) if keys_carry_on else rng.integers(0, 6, 40) + 6 * (w + 3)
            batch = {"ts": ts, "k": k, ("a" if source == "L" else "b"): rng.uniform(0, 1, 40)}
            if source == "L":
                batch["tag"] = ["x"] * 40
            feed.append((source, batch))
            sides[source].append(pa.table(batch, schema=LEFT if source == "L" else RIGHT))
            ex.process_batch(source, batch)
            arrays = ex.checkpoint().states["j"]
            W = int(arrays["aux"][1])  # the join's input watermark (no allowed lateness)
            open_slots = set()
            for side, fed in (("left", sides["L"]), ("right", sides["R"])):
                times = np.concatenate([t.column("ts").to_numpy() for t in fed] or [np.zeros(0, np.int64)])
                keys = np.concatenate([t.column("k").to_numpy() for t in fed] or [np.zeros(0, np.int64)])
                open_ = (times // size) * size + size - 1 >= W
                live = arrays[f"{side}.flag"] != 0
                assert np.array_equal(np.sort(arrays[f"{side}.ts"][live]), np.sort(times[open_])), (side, W)
                open_slots |= set(zip(keys[open_].tolist(), (times[open_] // size).tolist()))
            assert arrays["table.meta"][0] == len(open_slots)  # a (key, window) slot goes with its last row
    ex.finish()
    left, right = pa.concat_tables(sides["L"]), pa.concat_tables(sides["R"])
    same_rows(ex.take_sink_outputs("out"), _interval_reference(left, right)["win_out"])


def test_join_snapshots_with_a_stack_of_freed_rows_still_restore():
    # snapshots written while a join reused its freed rows hold each side's stack of them; they restore, and
    # the join continues exactly as from a snapshot of today's row store
    left, right = make_side(1_200, 31, LEFT), make_side(1_200, 32, RIGHT)
    feed = interleaved(left, right, 31)
    dag = join_dag(lj.IntervalJoin("k", "k", lower=-20, upper=35, how="full"))
    ex = lj.DagExecutor(dag)
    for source, batch in feed[: len(feed) // 2]:
        ex.process_batch(source, batch)
    first = ex.take_sink_outputs("out")
    cp = ex.checkpoint()
    arrays = cp.states["j"]
    for side, base in (("left", 2), ("right", 7)):  # the old layout: freed rows listed, counted in aux
        dead = np.flatnonzero(arrays[f"{side}.flag"] == 0)
        assert dead.size > 0
        arrays[f"{side}.free"] = dead.astype(np.int64)
        arrays["aux"][base + 1] = dead.size
    again = lj.DagExecutor(dag)
    again.restore(cp)
    for source, batch in feed[len(feed) // 2:]:
        again.process_batch(source, batch)
    again.finish()
    _, whole = run(dag, feed, ["out"])
    assert pa.concat_tables([first, again.take_sink_outputs("out")]).equals(whole["out"])
    # counters that do not add up are refused
    arrays["aux"][3] += 1
    with pytest.raises(lj.CheckpointError, match="inconsistent"):
        lj.DagExecutor(dag).restore(cp)


def test_late_rows_are_dropped_and_counted(interval_dags):
    feed = [("R", {"ts": [5_000], "k": [1], "b": [1.0]}), ("L", {"ts": [5_000], "k": [1], "a": [2.0], "tag": ["x"]}),
            # both watermarks are now 4,900: a row at 1,000 is late on either side
            ("L", {"ts": [1_000], "k": [1], "a": [3.0], "tag": ["late"]}), ("R", {"ts": [1_000], "k": [1], "b": [4.0]})]
    got = interval_dags.run(feed)
    inner = got["inner"][1]
    assert inner.column("a").to_pylist() == [2.0] and inner.column("b").to_pylist() == [1.0]
    assert all(ex.metrics.late_events == 2 for ex, _ in got.values())
    assert got["anti"][1].num_rows == 0 and got["full"][1].num_rows == 1


def test_late_rows_go_to_side_outputs_per_port():
    """With a small watermark delay many rows are late; each port's late rows reach that port's sink,
    and the join's output equals DuckDB's join of exactly the rows that were not late."""
    rng = np.random.default_rng(8)
    n = 3_000
    sides = {}
    for name, schema, col in (("L", LEFT, "a"), ("R", RIGHT, "b")):
        ts = np.arange(n, dtype=np.int64) * 5 + rng.integers(-60, 61, n)  # disorder beyond the 10 delay
        cols = {"ts": ts, "k": rng.integers(0, 20, n), col: np.arange(n, dtype=np.float64)}  # col: row id
        if name == "L":
            cols["tag"] = pa.array(rng.choice(["x", "yy"], n))
        sides[name] = pa.table(cols, schema=schema)

    def dag(late):
        extra = {"late": "side_output", "late_sink": {"left": "late_l", "right": "late_r"}} if late else {}
        return (lj.DagBuilder()
                .source("L", LEFT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=10))
                .source("R", RIGHT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=10))
                .operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35, **extra))
                .connect("L", "j", port="left").connect("R", "j", port="right").sink_for("j", "out").build())

    feed = interleaved(sides["L"], sides["R"], 5)
    ex, got = run(dag(True), feed, ["out", "late_l", "late_r"])
    _, dropped = run(dag(False), feed, ["out"])
    late_l, late_r = got["late_l"], got["late_r"]
    assert late_l.schema == LEFT and late_r.schema == RIGHT
    assert late_l.num_rows > 50 and late_r.num_rows > 50
    assert ex.metrics.late_events == late_l.num_rows + late_r.num_rows
    assert ex.metrics.node("j")["late_events"] == ex.metrics.late_events
    assert got["out"].equals(dropped["out"])  # side outputs change nothing else
    con = duckdb.connect()
    con.register("l", sides["L"].filter(pc.invert(pc.is_in(sides["L"]["a"], late_l["a"]))))
    con.register("r", sides["R"].filter(pc.invert(pc.is_in(sides["R"]["b"], late_r["b"]))))
    want = con.sql("SELECT l.*, r.ts AS ts_right, r.k AS k_right, r.b FROM l JOIN r "
                   "ON l.k = r.k AND r.ts BETWEEN l.ts - 20 AND l.ts + 35").to_arrow_table()
    same_rows(got["out"], want)
    with pytest.raises(ValueError, match="late_sink=\\{'left'"):
        lj.IntervalJoin("k", "k", 0, 1, late="side_output", late_sink="late")
    with pytest.raises(ValueError, match="only used with late='side_output'"):
        lj.IntervalJoin("k", "k", 0, 1, late_sink={"left": "x"})


def checkpointed(dag, feed, at, path):
    """Output of ``dag`` over ``feed`` when checkpointed after ``at`` batches and resumed in a fresh executor."""
    ex = lj.DagExecutor(dag)
    for source, batch in feed[:at]:
        ex.process_batch(source, batch)
    first = ex.take_sink_outputs("out")
    ex.checkpoint().save(path)
    again = lj.DagExecutor(dag)
    again.restore(lj.Checkpoint.load(path))
    for source, batch in feed[at:]:
        again.process_batch(source, batch)
    again.finish()
    return pa.concat_tables([first, again.take_sink_outputs("out")])


def test_interval_join_checkpoint_round_trip(interval_dags, tmp_path):
    left, right = make_side(800, 11, LEFT), make_side(800, 12, RIGHT)
    feed = interleaved(left, right, 11)
    for name, (_, whole) in interval_dags.run(feed).items():
        same_rows(checkpointed(interval_dags.dags[name], feed, len(feed) // 2, tmp_path / name), whole)


# ----------------------------------------------------------------------------- as-of and temporal joins

@pytest.fixture(scope="module")
def asof_dags():
    dags = {(d, h, tol): join_dag(lj.AsofJoin("k", direction=d, tolerance=tol, how=h)) for d, h, tol in ASOF}
    dags["temporal"] = join_dag(lj.TemporalJoin("k", "k", how="left"))
    return Family(dags)


def _asof_reference(left, right, direction, how, tol):
    """Brute force: for every left row, the right row of its key nearest in the given direction."""
    lt, lk = left["ts"].to_numpy(), left["k"].to_numpy(zero_copy_only=False)
    rt, rk = right["ts"].to_numpy(), right["k"].to_numpy(zero_copy_only=False)
    lk_ok, rk_ok = left["k"].is_valid().to_numpy(zero_copy_only=False), right["k"].is_valid().to_numpy(zero_copy_only=False)
    keep, match = [], []
    for i in range(left.num_rows):
        cand = np.flatnonzero(rk_ok & (rk == lk[i])) if lk_ok[i] else np.empty(0, np.int64)
        d = rt[cand] - lt[i]
        best = -1
        if direction == "backward" and (d <= 0).any():
            best = cand[d <= 0][np.argmax(d[d <= 0])]
        elif direction == "forward" and (d >= 0).any():
            best = cand[d >= 0][np.argmin(d[d >= 0])]
        elif direction == "nearest" and cand.size:
            ad = np.abs(d)
            best = cand[ad == ad.min()][np.argmin(d[ad == ad.min()])]  # the earlier one on a tie
        if best >= 0 and tol is not None and abs(rt[best] - lt[i]) > tol:
            best = -1
        if best >= 0 or how == "left":
            keep.append(i)
            match.append(best)
    match = np.array(match, np.int64)
    r = right.take(pa.array(np.maximum(match, 0))).to_pydict()
    gone = match < 0
    out = left.take(pa.array(keep, pa.int64())).to_pydict()
    for name, out_name in (("ts", "ts_right"), ("k", "k_right"), ("b", "b")):
        out[out_name] = [None if g else v for v, g in zip(r[name], gone)]
    schema = pa.schema(list(LEFT) + [pa.field("ts_right", pa.int64()), pa.field("k_right", pa.int64()),
                                     pa.field("b", pa.float64())])
    return pa.table(out, schema=schema)


@pytest.mark.parametrize("seed", [0, 1])
def test_asof_joins_match_a_brute_force_search(asof_dags, seed):
    left = make_side(1200, seed, LEFT, unique_ts=True)
    right = make_side(900, seed + 50, RIGHT, unique_ts=True)
    # the right side's times must be unique per key for "the" match to be defined; disorder within the delay
    got = asof_dags.run(interleaved(left, right, seed))
    for config, (ex, out) in got.items():
        assert ex.metrics.late_events == 0
        direction, how, tol = ("backward", "left", None) if config == "temporal" else config
        same_rows(out, _asof_reference(left, right, direction, how, tol))
    # DuckDB's ASOF JOIN agrees on the backward inner join
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    want = con.sql("SELECT l.*, r.ts AS ts_right, r.k AS k_right, r.b FROM l ASOF JOIN r "
                   "ON l.k = r.k AND l.ts >= r.ts").to_arrow_table()
    same_rows(got[("backward", "inner", None)][1], want)


def test_backward_asof_rows_out_of_order_take_the_version_at_their_own_time(asof_dags):
    # left rows at exactly a version's time, and between, arriving newest first within each run of 40 rows:
    # a row older than its key's row before it must find its version again (back along the key's versions)
    rng = np.random.default_rng(5)
    keys = 5
    rt = np.concatenate([np.arange(300) * 10 + k for k in range(keys)]).astype(np.int64)
    rk = np.concatenate([np.full(300, k) for k in range(keys)]).astype(np.int64)
    order = np.argsort(rt, kind="stable")
    right = pa.table({"ts": rt[order], "k": rk[order], "b": rng.uniform(0, 1, rt.size)}, schema=RIGHT)
    n = 2_000
    lt = np.sort(rng.choice(rt, n // 2)).astype(np.int64)  # at a version's time (of some key)
    lt = np.sort(np.concatenate([lt, rng.integers(0, 3_000, n // 2)]))  # and anywhere
    lt = np.concatenate([part[::-1] for part in np.array_split(lt, np.arange(40, n, 40))])  # newest first
    left = pa.table({"ts": lt, "k": rng.integers(0, keys, n), "a": rng.uniform(0, 1, n),
                     "tag": pa.array(["x"] * n)}, schema=LEFT)
    feed = [("R", b) for b in right.to_batches(500)] + [("L", b) for b in left.to_batches(333)]
    got = asof_dags.run(feed)
    for config in (("backward", "inner", None), ("backward", "left", 25)):
        ex, out = got[config]
        assert ex.metrics.late_events == 0
        same_rows(out, _asof_reference(left, right, *config))


def test_asof_join_keeps_only_the_versions_still_needed(asof_dags):
    dag = asof_dags.dags[("backward", "inner", None)]
    ex = lj.DagExecutor(dag)
    node = dag.node("j").id
    for i in range(30):
        ts = np.arange(1000) + i * 1000
        ex.process_batch("R", {"ts": ts, "k": ts % 10, "b": np.ones(1000)})
        ex.process_batch("L", {"ts": ts, "k": ts % 10, "a": np.ones(1000), "tag": ["q"] * 1000})
    assert len(ex.state.operator_states[node]) < 2 * (DELAY + 1000)
    out = ex.take_sink_outputs("out")
    assert out.num_rows > 25_000
    np.testing.assert_array_equal(out["ts"].to_numpy(), out["ts_right"].to_numpy())


def test_temporal_join_picks_the_version_valid_at_the_left_time(asof_dags):
    ex = lj.DagExecutor(asof_dags.dags["temporal"])
    ex.process_batch("R", {"ts": [10, 20, 30], "k": [1, 1, 1], "b": [1.0, 2.0, 3.0]})
    ex.process_batch("L", {"ts": [5, 15, 25, 35], "k": [1, 1, 1, 1], "a": [0.0] * 4, "tag": ["t"] * 4})
    ex.finish()
    out = ex.take_sink_outputs("out").sort_by("ts")
    assert out["b"].to_pylist() == [None, 1.0, 2.0, 3.0]
    assert out["tag"].to_pylist() == ["t"] * 4


def test_asof_checkpoint_round_trip(asof_dags, tmp_path):
    left = make_side(700, 3, LEFT, unique_ts=True)
    right = make_side(700, 4, RIGHT, unique_ts=True)
    feed = interleaved(left, right, 3)
    for i, (config, (_, whole)) in enumerate(asof_dags.run(feed).items()):
        same_rows(checkpointed(asof_dags.dags[config], feed, len(feed) // 3, tmp_path / str(i)), whole)


# ----------------------------------------------------------------------------- contract errors

def _builder():
    return join_sources(lj.DagBuilder())


def test_a_port_without_input_is_an_error():
    b = _builder().operator("j", lj.IntervalJoin("k", "k", 0, 10)).connect("L", "j", port="left") \
        .sink_for("j", "out").sink_for("R", "r_out")
    with pytest.raises(lj.DagError, match="port 'right' has no input"):
        b.build()


def test_port_names_are_checked():
    b = _builder().operator("j", lj.IntervalJoin("k", "k", 0, 10)).connect("L", "j", port="up") \
        .connect("R", "j", port="right").sink_for("j", "out")
    with pytest.raises(lj.PortError, match="has ports 'left', 'right'"):
        b.build()


@pytest.mark.parametrize("op, match", [
    (lambda: lj.IntervalJoin("tag", "k", 0, 10), "key 'tag' \\(left\\) is string but 'k' \\(right\\) is int64"),
    (lambda: lj.IntervalJoin("nope", "k", 0, 10), "key column 'nope' is not in port 'left'"),
    (lambda: lj.IntervalJoin("k", "k", 10, 0), "lower .* must not exceed upper"),
    (lambda: lj.IntervalJoin("a", "k", 0, 10), "key column 'a' of port 'left' is double"),
])
def test_bad_join_configuration_names_the_column(op, match):
    b = _builder().operator("j", op()).connect("L", "j", port="left").connect("R", "j", port="right") \
        .sink_for("j", "out")
    with pytest.raises(lj.SchemaError, match=match):
        b.build()


def test_bad_arguments_are_rejected_at_construction():
    with pytest.raises(ValueError, match="how must be one of"):
        lj.IntervalJoin("k", "k", 0, 1, how="outer")
    with pytest.raises(ValueError, match="direction must be one of"):
        lj.AsofJoin("k", direction="sideways")
    with pytest.raises(ValueError, match="how must be one of 'inner', 'left'"):
        lj.AsofJoin("k", how="full")
    with pytest.raises(ValueError, match="same number"):
        lj.IntervalJoin(["k", "ts"], "k", 0, 1)


def _joined_windows_dag():
    """Interval join -> Map -> tumbling window per key, plus a second join downstream of the first
    (join -> join) whose rows feed a keyed running count; the joins' rows run through steps of their own."""
    pair = lj.Map(lambda a, b: a + b, output="ab")
    return (join_sources(lj.DagBuilder())
            .operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35, late="side_output",
                                            late_sink={"left": "late_left"}))
            .operator("sum", pair)
            .operator("w", lj.TumblingWindow(200, key="k", aggs={"n": lj.count(), "ab": lj.sum("ab")}))
            # the window's rows carry window_start as event time and leave 200 later: allow that lateness
            .operator("jj", lj.IntervalJoin("k", "k", lower=0, upper=199, allowed_lateness=300))
            .operator("running", lj.KeyedKernel(_count_rows, key="k", state={"n": np.int64},
                                                output={"n": pa.int64()}))
            .connect("L", "j", port="left").connect("R", "j", port="right").connect("j", "sum")
            .connect("sum", "w").connect("w", "jj", port="left").connect("R", "jj", port="right")
            .connect("jj", "running")
            .sink_for("w", "windows").sink_for("running", "counts").sink_for("sum", "pairs")
            .build())


def _count_rows(st, ts):
    st.n += 1
    return st.n


def test_join_output_feeds_windows_joins_and_keyed_state():
    left, right = make_side(1_500, 21, LEFT), make_side(1_500, 22, RIGHT)
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    pairs = con.sql("SELECT l.*, r.ts AS ts_right, r.k AS k_right, r.b, l.a + r.b AS ab FROM l JOIN r "
                    "ON l.k = r.k AND r.ts BETWEEN l.ts - 20 AND l.ts + 35").to_arrow_table()
    windows = con.sql("""
        SELECT ts // 200 * 200 AS window_start, ts // 200 * 200 + 200 AS window_end, k, count(*) AS n,
               sum(a + b) AS ab
        FROM (SELECT l.ts, l.k, l.a, r.b FROM l JOIN r ON l.k = r.k AND r.ts BETWEEN l.ts - 20 AND l.ts + 35)
        GROUP BY ALL""").to_arrow_table()
    con.register("w", windows)
    # each window row pairs with the right rows of its key inside its window
    jj = con.sql("SELECT w.k, count(*) AS rows FROM w JOIN r ON w.k = r.k "
                 "AND r.ts BETWEEN w.window_start AND w.window_start + 199 GROUP BY w.k").to_arrow_table()
    dag = _joined_windows_dag()
    for seed in (1, 2):
        ex, out = run(dag, interleaved(left, right, seed), ["windows", "counts", "pairs", "late_left"])
        assert ex.metrics.late_events == 0
        assert out["late_left"].num_rows == 0 and out["late_left"].schema == LEFT
        same_rows(out["pairs"].drop_columns(["ab"]), pairs.drop_columns(["ab"]))
        got = pl.from_arrow(out["windows"]).sort("window_start", "k")
        want = pl.from_arrow(windows).sort("window_start", "k")
        assert got.select("window_start", "window_end", "k", "n").equals(want.select(got.columns[:4]))
        assert np.allclose(got["ab"].to_numpy(), want["ab"].to_numpy(), equal_nan=True)
        # the keyed running count ends at each key's number of join-join pairs
        final = pl.from_arrow(out["counts"]).group_by("k").agg(pl.col("n").max()).sort("k")
        assert final.height > 5 and final.rows() == sorted(tuple(r.values()) for r in jj.to_pylist())
    # a checkpoint between the joins' steps' batches restores everything they hold
    feed = interleaved(left, right, 3)
    ex = lj.DagExecutor(dag)
    for source, batch in feed[: len(feed) // 2]:
        ex.process_batch(source, batch)
    first = {s: ex.take_sink_outputs(s) for s in ("windows", "counts")}
    restored = lj.DagExecutor(dag)
    restored.restore(ex.checkpoint())
    for source, batch in feed[len(feed) // 2:]:
        restored.process_batch(source, batch)
    restored.finish()
    _, whole = run(dag, feed, ["windows", "counts"])
    for s in ("windows", "counts"):
        assert pa.concat_tables([first[s], restored.take_sink_outputs(s)]).equals(whole[s])


def test_event_time_is_required_on_both_ports():
    b = (lj.DagBuilder().source("L", LEFT, event_time="ts").source("R", RIGHT)
         .operator("j", lj.AsofJoin("k")).connect("L", "j", port="left").connect("R", "j", port="right")
         .sink_for("j", "out"))
    with pytest.raises(lj.SchemaError, match="port 'right' has no event-time column"):
        b.build()


def test_self_join_on_a_composite_key_computed_by_a_map():
    """One source into both ports (each row is a left and a right row), a two-column key, one of them a Map output."""
    dag = (lj.DagBuilder()
           .source("L", LEFT, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=DELAY))
           .operator("m", lj.Map(lambda a: np.int64(a // 25.0) if a == a else np.int64(-1), output="bucket"))
           .operator("j", lj.IntervalJoin(["k", "bucket"], ["k", "bucket"], lower=0, upper=30, how="left"))
           .connect("L", "m").connect("m", "j", port="left").connect("m", "j", port="right")
           .sink_for("j", "out").build())
    left = make_side(1500, 21, LEFT)
    _, got = run(dag, [("L", b) for b in split_table(left, [0, 1, 700, 700, 1100])], ["out"])
    con = duckdb.connect()
    con.register("t", left)
    want = con.sql("WITH m AS (SELECT *, CAST(floor(a / 25.0) AS BIGINT) AS bucket FROM t) "
                   "SELECT l.*, r.ts AS ts_right, r.k AS k_right, r.a AS a_right, r.tag AS tag_right, "
                   "r.bucket AS bucket_right FROM m l LEFT JOIN m r ON l.k = r.k AND l.bucket = r.bucket "
                   "AND r.ts BETWEEN l.ts AND l.ts + 30").to_arrow_table()
    same_rows(got["out"], want)


def test_string_keys_share_one_dictionary_across_sources_and_checkpoints(tmp_path):
    """Trades and quotes keyed by a string symbol: codes from the two sources compare, also after a restore."""
    trades = pa.schema([("ts", pa.int64()), ("sym", pa.string()), ("px", pa.float64())])
    quotes = pa.schema([("ts", pa.int64()), ("sym", pa.string()), ("bid", pa.float64())])
    wm = lj.BoundedOutOfOrderness(max_delay=DELAY)
    dag = (lj.DagBuilder().source("T", trades, event_time="ts", watermark=wm)
           .source("Q", quotes, event_time="ts", watermark=wm)
           .operator("j", lj.AsofJoin("sym")).connect("T", "j", port="left").connect("Q", "j", port="right")
           .sink_for("j", "out").build())
    rng = np.random.default_rng(5)
    syms = np.array([f"S{i}" for i in range(40)])
    t = pa.table({"ts": np.sort(rng.choice(20_000, 2_000, replace=False)), "sym": syms[rng.integers(0, 40, 2_000)],
                  "px": rng.random(2_000)}, schema=trades)
    # quotes list the symbols in another order, so the two sources meet them in different orders
    q = pa.table({"ts": np.sort(rng.choice(20_000, 2_000, replace=False)), "sym": syms[::-1][rng.integers(0, 40, 2_000)],
                  "bid": rng.random(2_000)}, schema=quotes)
    feed = [("T" if name == "L" else "Q", b) for name, b in interleaved(t, q, 5)]
    got = checkpointed(dag, feed, len(feed) // 2, tmp_path / "cp")
    con = duckdb.connect()
    con.register("t", t)
    con.register("q", q)
    want = con.sql("SELECT t.*, q.ts AS ts_right, q.sym AS sym_right, q.bid FROM t ASOF JOIN q "
                   "ON t.sym = q.sym AND t.ts >= q.ts").to_arrow_table()
    same_rows(got, want)


@pytest.mark.parametrize("m", [0, 1, 5, 32, 33, 500])
def test_order_partners_sorts_a_probe_newest_partner_first(m):
    """The kernel that orders one probe's pairs, on both of its paths (insertion sort, radix
    argsort), against Python's sort: partner event time, then arrival, descending."""
    from laminar_jit.kernels.joins import order_partners

    rng = np.random.default_rng(m)
    rows = 1_000
    ts = rng.integers(-50, 50, rows).astype(np.int64)  # ties, and times below 0
    seq = rng.permutation(rows).astype(np.int64)
    for partner_left in (True, False):
        start = 7
        partners = rng.choice(rows, m, replace=False).astype(np.int64)
        others = rng.integers(0, 99, m).astype(np.int64)
        out_l = np.full(start + m + 3, -5, np.int64)
        out_r = np.full(start + m + 3, -5, np.int64)
        mine, theirs = (out_l, out_r) if partner_left else (out_r, out_l)
        mine[start:start + m], theirs[start:start + m] = partners, others
        order_partners(out_l, out_r, start, start + m, partner_left, ts, seq)
        want = sorted(zip(partners.tolist(), others.tolist()), key=lambda p: (ts[p[0]], seq[p[0]]), reverse=True)
        assert list(zip(mine[start:start + m].tolist(), theirs[start:start + m].tolist())) == want
        assert (out_l[:start] == -5).all() and (out_l[start + m:] == -5).all()


@pytest.mark.parametrize("case", ["in order", "by arrival", "arrivals out of time order", "sparse arrivals",
                                  "repeated arrivals"])
def test_order_settled_sorts_pairs_by_time_then_arrival(case):
    """The kernel that orders a call's settled pairs, on each of its paths (already in order, placed by arrival
    number, radix argsort), against Python's sort: the row's event time, then arrival, ascending."""
    from laminar_jit.kernels.joins import order_settled

    rng = np.random.default_rng(len(case))
    rows, m = 3_000, 900
    seq = np.arange(rows, dtype=np.int64) * (10 if case == "sparse arrivals" else 1)
    if case == "repeated arrivals":  # (a key shard numbers rows by their position in a batch)
        seq //= 2
    ts = np.sort(rng.integers(-500, 500, rows)).astype(np.int64)  # in time order as they came, with ties
    if case == "arrivals out of time order":
        ts = ts + rng.integers(-40, 41, rows)
    chosen = np.sort(rng.choice(rows, m, replace=False)).astype(np.int64)
    if case != "in order":  # settled key by key: an accident of the state, not the order of arrival
        chosen = chosen[np.argsort(chosen % 17, kind="stable")]
    for side in (0, 1):
        start = 5
        out_l = np.full(start + m + 3, -5, np.int64)
        out_r = np.full(start + m + 3, -5, np.int64)
        mine, theirs = (out_l, out_r) if side == 0 else (out_r, out_l)
        mine[start:start + m], theirs[start:start + m] = chosen, chosen * 7
        order_settled(out_l, out_r, start, start + m, side, ts, seq)
        want = sorted(chosen.tolist(), key=lambda r: (ts[r], seq[r]))
        got = mine[start:start + m].tolist()
        assert [(ts[r], seq[r]) for r in got] == [(ts[r], seq[r]) for r in want]
        if case != "repeated arrivals":  # (ties of time and number may come in either order)
            assert got == want
        assert (theirs[start:start + m] == mine[start:start + m] * 7).all()
        assert (out_l[:start] == -5).all() and (out_l[start + m:] == -5).all()


def test_join_rows_reach_a_stateful_operator_as_numpy_arrays(monkeypatch):
    # int32 keys, float32, int16 and bool values, nulls: the join holds some of them wider in its state, and the
    # next step reads them at their own types without going through Arrow (every result as DuckDB's)
    rng = np.random.default_rng(7)
    left_schema = pa.schema([("ts", pa.int64()), ("k", pa.int32()), ("a", pa.float32()), ("tag", pa.string())])
    right_schema = pa.schema([("ts", pa.int64()), ("k", pa.int32()), ("b", pa.int16()), ("ok", pa.bool_())])

    def side(schema, n):
        cols = {"ts": np.arange(n, dtype=np.int64) * 7 + rng.integers(-40, 41, n),
                "k": pa.array(np.where(rng.random(n) < 0.3, 0, rng.integers(1, 20, n)).astype(np.int32),
                              mask=rng.random(n) < 0.05)}
        if "a" in schema.names:
            cols["a"] = pa.array(rng.uniform(0, 100, n).astype(np.float32), mask=rng.random(n) < 0.05)
            cols["tag"] = pa.array(rng.choice(["x", "yy", ""], n))
        else:
            cols["b"] = pa.array(rng.integers(-500, 500, n).astype(np.int16), mask=rng.random(n) < 0.05)
            cols["ok"] = pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.05)
        return pa.table(cols, schema=schema)

    left, right = side(left_schema, 2_000), side(right_schema, 2_000)
    aggs = {"n": lj.count(), "a": lj.sum("a"), "b_max": lj.max("b"), "b_min": lj.min("b"), "ok": lj.count("ok")}
    dag = (lj.DagBuilder()
           .source("L", left_schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=DELAY))
           .source("R", right_schema, event_time="ts", watermark=lj.BoundedOutOfOrderness(max_delay=DELAY))
           .operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35))
           .operator("w", lj.TumblingWindow(200, key="k", aggs=aggs))
           .connect("L", "j", port="left").connect("R", "j", port="right").connect("j", "w")
           .sink_for("w", "out").build())
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    want = pl.from_arrow(con.sql("""
        SELECT l.ts // 200 * 200 AS window_start, l.k, count(*) AS n, sum(l.a) AS a, max(r.b) AS b_max,
               min(r.b) AS b_min, count(r.ok) AS ok
        FROM l JOIN r ON l.k = r.k AND r.ts BETWEEN l.ts - 20 AND l.ts + 35 GROUP BY ALL""").to_arrow_table())
    made, viewed = [], set()
    view = StepRows.view

    def spy(self, name, dtype):
        got = view(self, name, dtype)
        assert got is not None and got[0].dtype == dtype
        viewed.add(name)
        return got

    monkeypatch.setattr(StepRows, "view", spy)
    monkeypatch.setattr(StepRows, "arrow", lambda self: made.append("batch"))
    monkeypatch.setattr(StepRows, "column", lambda self, name: made.append(name))
    for seed in (1, 2):
        _, out = run(dag, interleaved(left, right, seed), ["out"])
        got = pl.from_arrow(out["out"]).sort("window_start", "k")
        assert got.height > 100
        assert got.schema["b_max"] == pl.Int16 and got.schema["a"].is_float()
        expected = want.sort("window_start", "k")
        assert got.select("window_start", "k", "n", "b_max", "b_min", "ok").equals(
            expected.select("window_start", "k", "n", "b_max", "b_min", "ok").cast(
                {"n": pl.Int64, "b_max": pl.Int16, "b_min": pl.Int16, "ok": pl.Int64, "k": pl.Int32}))
        assert np.allclose(got["a"].to_numpy(), expected["a"].to_numpy(), rtol=1e-5, equal_nan=True)
    assert made == []  # no column of the join's rows was made into Arrow on the way to the window
    assert {"ts", "k", "a", "b", "ok"} <= viewed


# ----------------------------------------------------------------------------- strings a join only carries

NOTES = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("note", pa.string())])
TAGS = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("tag", pa.string())])
WITHIN = 1_000_000_000


def _text_side(n: int, seed: int, schema: pa.Schema, distinct: bool) -> pa.Table:
    """Out-of-order rows whose string column is mostly distinct (a fifth repeat an earlier value, some empty)
    or takes four values; 5 % null strings and keys, a hot key."""
    rng = np.random.default_rng(seed)
    if distinct:
        values = np.array([f"{schema.names[2]}-{i}-{rng.integers(1 << 40)}" for i in range(n)], dtype=object)
        again = rng.random(n) < 0.2
        values[again] = values[rng.integers(0, n, again.sum())]
        values[rng.random(n) < 0.02] = ""
    else:
        values = rng.choice(["x", "yy", "", "zzz"], n)
    return pa.table({"ts": np.arange(n, dtype=np.int64) * 7 + rng.integers(-40, 41, n),
                     "k": pa.array(np.where(rng.random(n) < 0.3, 0, rng.integers(1, 30, n)), mask=rng.random(n) < 0.05),
                     schema.names[2]: pa.array(values, pa.string(), mask=rng.random(n) < 0.05)}, schema=schema)


def _notes_and_tags(builder):
    wm = lj.BoundedOutOfOrderness(max_delay=DELAY)
    return builder.source("L", NOTES, event_time="ts", watermark=wm).source("R", TAGS, event_time="ts", watermark=wm)


@pytest.mark.parametrize("how", ["inner", "full"])
def test_strings_only_a_join_keeps_are_appended_without_lookups_and_match_duckdb(how, tmp_path):
    left, right = _text_side(3_000, 1, NOTES, True), _text_side(2_000, 2, TAGS, False)
    dag = (_notes_and_tags(lj.DagBuilder()).operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35, how=how))
           .connect("L", "j", port="left").connect("R", "j", port="right").sink_for("j", "out").build())
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    want = con.sql(f"SELECT l.*, r.ts AS ts_right, r.k AS k_right, r.tag FROM l {SQL_JOIN[how]} r ON l.k = r.k "
                   "AND r.ts BETWEEN l.ts - 20 AND l.ts + 35").to_arrow_table()
    for seed in (3, 4):
        feed = interleaved(left, right, seed)
        ex, got = run(dag, feed, ["out"])
        same_rows(got["out"], want)
        notes, tags = ex.state.dictionaries[("L", "note")], ex.state.dictionaries[("R", "tag")]
        assert notes.carried and tags.carried
        # repeated notes got codes of their own once the notes proved mostly distinct; four tags stayed four
        assert len(notes) > len(pc.unique(left["note"].drop_null()))
        assert len(tags) == 4
        same_rows(checkpointed(dag, feed, len(feed) // 2, tmp_path / f"cp{seed}"), want)


def test_a_string_a_join_keeps_is_looked_up_when_anything_compares_it():
    left, right = _text_side(3_000, 5, NOTES, True), _text_side(2_000, 6, TAGS, False)
    # the note is also a window's key (after the join: a step of its own, which encodes it again)
    after = (_notes_and_tags(lj.DagBuilder()).operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35))
             .operator("w", lj.TumblingWindow(500, key="note", aggs={"n": lj.count()}))
             .connect("L", "j", port="left").connect("R", "j", port="right").connect("j", "w")
             .sink_for("w", "out").build())
    # ... or, beside the join, a Dedup's key in the step that encodes it for the join
    beside = (_notes_and_tags(lj.DagBuilder()).operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35))
              .operator("d", lj.Dedup("note", within=WITHIN))
              .connect("L", "j", port="left").connect("R", "j", port="right").connect("L", "d")
              .sink_for("j", "out").sink_for("d", "firsts").build())
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    want = pl.from_arrow(con.sql(
        "SELECT CAST(floor(l.ts / 500) * 500 AS BIGINT) AS window_start, l.note, count(*) AS n FROM l JOIN r "
        "ON l.k = r.k AND r.ts BETWEEN l.ts - 20 AND l.ts + 35 GROUP BY ALL").to_arrow_table())
    feed = interleaved(left, right, 5)
    ex, got = run(after, feed, ["out"])
    # the window's step reads the join's codes of the note: one dictionary, which the window compares
    notes = ex.state.dictionaries[("L", "note")]
    assert ex.state.dictionaries[("j", "note")] is notes and not notes.carried
    assert len(notes) == len(pc.unique(left["note"].drop_null()))
    out = pl.from_arrow(got["out"]).select("window_start", "note", "n")
    assert out.height > 500 and out.sort(out.columns, nulls_last=True).equals(
        want.sort(want.columns, nulls_last=True).cast(out.schema))
    ex, got = run(beside, feed, ["out", "firsts"])
    assert not ex.state.dictionaries[("L", "note")].carried
    # one first row per note and interval, the null note included
    assert got["firsts"].num_rows == pl.from_arrow(left).select("note", pl.col("ts") // WITHIN).unique().height


def test_a_joins_strings_reach_the_next_step_as_its_codes(monkeypatch, tmp_path):
    """A join's string columns reach the step after it (an unbounded TopN per left row that keeps them) as the
    codes the join holds: one dictionary per column, carried (nothing compares them), no column decoded on the
    way; the rows of a run that decodes and encodes them again, also through a checkpoint, and in the end
    DuckDB's best partner per left row. A checkpoint of a run with two dictionaries where this executor shares
    one is refused and leaves the executor as it was."""
    from laminar_jit.executor import executor as executor_module
    from laminar_jit.state.dictionary import StringDictionary

    # times out of order but distinct on each side, so each left row's best partner is one row
    left, right = (side.set_column(0, "ts", pa.array(np.arange(n) * 7 + np.random.default_rng(n).integers(-3, 4, n)))
                   for side, n in ((_text_side(3_000, 7, NOTES, True), 3_000),
                                   (_text_side(2_000, 8, TAGS, False), 2_000)))
    dag = (_notes_and_tags(lj.DagBuilder()).operator("j", lj.IntervalJoin("k", "k", lower=-20, upper=35))
           .operator("top", lj.TopN(1, by=["ts_right", "k_right"], key="ts", window=None))
           .connect("L", "j", port="left").connect("R", "j", port="right").connect("j", "top")
           .sink_for("top", "out").build())
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    best = pl.from_arrow(con.sql(
        "SELECT l.ts, l.k, l.note, r.ts AS ts_right, r.k AS k_right, r.tag FROM l JOIN r ON l.k = r.k "
        "AND r.ts BETWEEN l.ts - 20 AND l.ts + 35 QUALIFY row_number() OVER (PARTITION BY l.ts "
        "ORDER BY r.ts DESC, r.k DESC) = 1").to_arrow_table())
    feeds = [interleaved(left, right, seed) for seed in (7, 8)]
    with monkeypatch.context() as m:  # the run that decodes the join's strings and encodes them again
        m.setattr(executor_module, "codes_passed_on", lambda dag, plans: [])
        before = [run(dag, feed, ["out"]) for feed in feeds]
        old = lj.DagExecutor(dag)
        for source, batch in feeds[0][:len(feeds[0]) // 2]:
            old.process_batch(source, batch)
        old_checkpoint = old.checkpoint()
    made = []
    monkeypatch.setattr(StepRows, "column", lambda self, name: made.append(name))
    for i, (feed, (old_ex, want)) in enumerate(zip(feeds, before)):
        ex, got = run(dag, feed, ["out"])
        assert got["out"].num_rows > 500 and got["out"].equals(want["out"])
        final = pl.from_arrow(lj.apply_changelog(got["out"])).drop("rank")
        assert final.sort("ts").equals(best.sort("ts").cast(final.schema)) and final["ts"].is_unique().all()
        for column, source in (("note", "L"), ("tag", "R")):
            shared = ex.state.dictionaries[("j", column)]
            assert shared is ex.state.dictionaries[(source, column)] and shared.carried
            assert old_ex.state.dictionaries[("j", column)] is not old_ex.state.dictionaries[(source, column)]
        # repeated notes got codes of their own: they were appended, not looked up
        assert len(ex.state.dictionaries[("L", "note")]) > len(pc.unique(left["note"].drop_null()))
        assert checkpointed(dag, feed, len(feed) // 3, tmp_path / f"cp{i}").equals(want["out"])
    assert made == []
    # key shards (the join's rows dealt out again by the TopN's key): each note is encoded once, at its source
    encoded = []
    encode = StringDictionary.encode
    monkeypatch.setattr(StringDictionary, "encode", lambda self, a: encoded.append((self, len(a))) or encode(self, a))
    for shards in (2, 3):
        ex = lj.DagExecutor(dag, parallelism=shards)
        encoded[:] = []
        for source, batch in feeds[0]:
            ex.process_batch(source, batch)
        ex.finish()
        assert ex.shards == shards  # (the same changes; keys interleave shard by shard)
        same_rows(ex.take_sink_outputs("out"), before[0][1]["out"])
        notes = ex.state.dictionaries[("j", "note")]
        assert sum(n for d, n in encoded if d is notes) == left.num_rows
    ex = lj.DagExecutor(dag)
    for source, batch in feeds[0][:5]:
        ex.process_batch(source, batch)
    first = ex.take_sink_outputs("out")
    with pytest.raises(lj.CheckpointError, match=r"different string dictionaries for columns \('j', 'note'\)"):
        ex.restore(old_checkpoint)
    for source, batch in feeds[0][5:]:
        ex.process_batch(source, batch)
    ex.finish()
    assert pa.concat_tables([first, ex.take_sink_outputs("out")]).equals(before[0][1]["out"])
