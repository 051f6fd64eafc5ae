"""PostgreSQL connectors against a real private server: exactly-once sink, CDC source, crashes, bad input.

The server is started by ``pg_server.PgServer`` (initdb + pg_ctl on a free
port). When it cannot start, the tests skip, except under CI (``CI`` set),
where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import laminar_jit as lj
from laminar_jit.io.postgres import PostgresConnectionError

sys.path.insert(0, str(Path(__file__).parent))
from pg_server import PASSWORD, PgServer  # noqa: E402

# Under CI a missing driver is a failure, not a skip.
psycopg = pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")


@pytest.fixture(scope="module")
def pg():
    try:
        server = PgServer.start()
    except Exception as exc:  # noqa: BLE001 - any reason the server cannot start
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL test server could not start (CI must run these tests): {exc}")
        pytest.skip(f"PostgreSQL test server could not start: {exc}")
    yield server
    server.destroy()


def sql(pg, query, params=None):
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else None


def passthrough(schema: pa.Schema, name="in") -> lj.StreamingDag:
    return lj.DagBuilder().source(name, schema).sink_for(name, "out").build()


# ----------------------------------------------------------------------------- sink


def test_sink_creates_table_and_round_trips_types_and_nulls(pg, tmp_path):
    t = pa.table({
        "id": pa.array([1, 2, 3, 4], pa.int64()),
        "x": pa.array([1.5, None, float("inf"), -2.0]),
        "s": pa.array(["a", None, "", "h\u00e9llo, \"q\"\n"]),
        "b": pa.array([True, False, None, True]),
        "ts": pa.array([0, 1_000_000, None, 1_700_000_000_123_456], pa.timestamp("us", tz="UTC")),
        "naive": pa.array([5, None, 7, 8], pa.timestamp("ms")),
        "d": pa.array([0, 19_000, None, 1], pa.date32()),
        "i8": pa.array([1, -2, 3, None], pa.int8()),
        "f32": pa.array([0.5, 1.25, None, 3.0], pa.float32()),
        "dict": pa.array(["u", "v", "u", None]).dictionary_encode(),
    })
    sink = lj.io.PostgresSink(pg.dsn, "types_rt")
    stats = lj.run(passthrough(t.schema), {"in": t}, {"out": sink}, progress=False)
    assert stats.finished
    types = dict(sql(pg, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'types_rt'"))
    assert types == {"id": "bigint", "x": "double precision", "s": "text", "b": "boolean",
                     "ts": "timestamp with time zone", "naive": "timestamp without time zone", "d": "date",
                     "i8": "smallint", "f32": "real", "dict": "text"}
    rows = sql(pg, "SELECT id, x, s, b, extract(epoch FROM ts)::numeric * 1000000, naive, d, i8, f32, dict "
                   "FROM types_rt ORDER BY id")
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert [r[1] for r in rows] == [1.5, None, float("inf"), -2.0]
    assert [r[2] for r in rows] == ["a", None, "", "h\u00e9llo, \"q\"\n"]  # NULL and '' stay distinct
    assert [r[3] for r in rows] == [True, False, None, True]
    assert [None if r[4] is None else int(r[4]) for r in rows] == [0, 1_000_000, None, 1_700_000_000_123_456]
    assert [r[5] for r in rows][1] is None and str(rows[3][5]) == "1970-01-01 00:00:00.008000"
    assert [str(r[6]) for r in rows] == ["1970-01-01", "2022-01-08", "None", "1970-01-02"]
    assert [r[7] for r in rows] == [1, -2, 3, None]
    assert [r[8] for r in rows] == [0.5, 1.25, None, 3.0]
    assert [r[9] for r in rows] == ["u", "v", "u", None]


def test_binary_encoding_matches_postgres_on_random_data(pg):
    rng = np.random.default_rng(7)
    n = 5_000
    words = np.array(["", "a", "bb", "\u00fcml\u00e4ut", "x" * 300, "comma,quote\"tab\t"])
    t = pa.table({
        "k": np.arange(n, dtype=np.int64),
        "a": pa.array(rng.integers(-2**31, 2**31 - 1, n).astype(np.int32), mask=rng.random(n) < 0.1),
        "f": pa.array(rng.normal(size=n), mask=rng.random(n) < 0.1),
        "w": pa.array(words[rng.integers(0, len(words), n)], mask=rng.random(n) < 0.1),
    })
    sink = lj.io.PostgresSink(pg.dsn, "random_rt")
    lj.run(passthrough(t.schema), {"in": t}, {"out": sink}, progress=False)
    rows = sql(pg, "SELECT k, a, f, w FROM random_rt ORDER BY k")
    assert [r[1] for r in rows] == t.column("a").to_pylist()
    assert [r[2] for r in rows] == t.column("f").to_pylist()
    assert [r[3] for r in rows] == t.column("w").to_pylist()


def test_sink_encodes_many_chunks_slices_and_string_layouts_exactly(pg, monkeypatch):
    """Record batches of uneven sizes (small ones concatenated, large ones cut into several COPY chunks),
    sliced arrays, 32- and 64-bit string offsets, string views and bytes all arrive as PostgreSQL reads them."""
    from laminar_jit.io.postgres import sink as sink_module

    monkeypatch.setattr(sink_module, "_RUN_ROWS", 300)
    monkeypatch.setattr(sink_module, "_CHUNK", 4_000)
    rng = np.random.default_rng(11)
    n = 3_000
    words = np.array(["", "a", "\u00fcml\u00e4ut", "x" * 1_000, "tab\tnl\n"])
    pick = words[rng.integers(0, len(words), n + 5)]
    t = pa.table({
        "k": np.arange(n, dtype=np.int64),
        "s": pa.array(pick[:n], mask=rng.random(n) < 0.2),
        "ls": pa.array(pick[5:], pa.large_string()),
        "sv": pa.array(pick[:n], pa.string_view(), mask=rng.random(n) < 0.2),
        "b": pa.array([bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 6, n)]),
        "f": pa.array(rng.normal(size=n).astype(np.float32), mask=rng.random(n) < 0.5),
        "ok": pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.3),
        "h": pa.array(rng.integers(-2**15, 2**15, n).astype(np.int16)),
    })
    sizes = [1, 2, 250, 7, 1_200, 3, 537]
    cuts = np.cumsum([0] + sizes + [n - sum(sizes)])
    chunked = pa.concat_tables([t.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])])
    assert chunked.column("s").num_chunks == len(sizes) + 1
    sink = lj.io.PostgresSink(pg.dsn, "layouts")
    sink.open(t.schema, None)
    sink.write(chunked.slice(1), 1)  # every array starts at an offset
    sink.write(chunked.slice(0, 1), 1)
    sink.pre_commit(1)
    sink.close()
    rows = sql(pg, "SELECT k, s, ls, sv, b, f, ok, h FROM layouts ORDER BY k")
    assert [r[0] for r in rows] == list(range(n))
    for i, name in enumerate(["s", "ls", "sv"], start=1):
        assert [r[i] for r in rows] == t.column(name).to_pylist(), name
    assert [bytes(r[4]) for r in rows] == t.column("b").to_pylist()
    as_real = lambda values: [None if v is None else np.float32(v) for v in values]  # noqa: E731
    assert as_real(r[5] for r in rows) == as_real(t.column("f").to_pylist())
    assert [r[6] for r in rows] == t.column("ok").to_pylist()
    assert [r[7] for r in rows] == t.column("h").to_pylist()


def test_upsert_replaces_rows_by_key_last_one_wins(pg, tmp_path):
    t = pa.table({"id": [1, 2, 1, 3, 2], "v": ["a", "b", "c", "d", "e"]})
    sink = lj.io.PostgresSink(pg.dsn, "ups", mode="upsert", key="id")
    batches = t.to_batches(max_chunksize=2)
    lj.run(passthrough(t.schema), {"in": batches}, {"out": sink}, progress=False, checkpoint_dir=tmp_path / "c",
           checkpoint_every=1)
    assert sql(pg, "SELECT id, v FROM ups ORDER BY id") == [(1, "c"), (2, "e"), (3, "d")]
    again = pa.table({"id": [3, 4], "v": ["z", "new"]})
    lj.run(passthrough(t.schema), {"in": again}, {"out": lj.io.PostgresSink(pg.dsn, "ups", mode="upsert", key="id")},
           progress=False)
    assert sql(pg, "SELECT id, v FROM ups ORDER BY id") == [(1, "c"), (2, "e"), (3, "z"), (4, "new")]


def test_upsert_applies_a_changelog_deletes_included_exactly_once(pg, tmp_path):
    """-D deletes the key's row, -U is skipped, +I/+U upsert; the table has no op column; across epochs."""
    from laminar_jit.changelog import RowKind

    I, UB, UA, D = RowKind.INSERT, RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER, RowKind.DELETE
    rows = [(1, "a", I), (2, "b", I), (1, "a", UB), (1, "c", UA), (2, "b", D), (3, "d", I),  # epoch-sized batches
            (4, "e", I), (3, "d", UB), (3, "f", UA), (4, "e", D), (4, "g", I),
            (1, "c", D), (2, "h", I), (5, "i", I), (5, "i", D)]
    t = pa.table({"id": [r[0] for r in rows], "v": [r[1] for r in rows], "op": pa.array([int(r[2]) for r in rows],
                                                                                     pa.int8())})
    assert lj.changelog.is_changelog(t.schema)
    want = sorted(zip(*lj.apply_changelog(t).select(["id", "v"]).to_pydict().values()))
    assert want == [(2, "h"), (3, "f"), (4, "g")]
    for size in (1, 4, len(rows)):  # every change in its own epoch, a few per epoch, all in one
        sql(pg, "DROP TABLE IF EXISTS ups_log")
        lj.run(passthrough(t.schema), {"in": t.to_batches(max_chunksize=size)},
               {"out": lj.io.PostgresSink(pg.dsn, "ups_log", mode="upsert", key="id")}, progress=False,
               checkpoint_dir=tmp_path / f"c{size}", checkpoint_every=1)
        assert sql(pg, "SELECT id, v FROM ups_log ORDER BY id") == want, size
        assert [c for (c,) in sql(pg, "SELECT column_name FROM information_schema.columns WHERE table_name = "
                                      "'ups_log' ORDER BY ordinal_position")] == ["id", "v"]
    # append mode writes the changes, op included
    sql(pg, "DROP TABLE IF EXISTS log_append")
    lj.run(passthrough(t.schema), {"in": t}, {"out": lj.io.PostgresSink(pg.dsn, "log_append")}, progress=False)
    assert sql(pg, "SELECT count(*), sum(op) FROM log_append") == [(len(rows), sum(int(r[2]) for r in rows))]


def test_existing_table_mismatches_raise_data_error_naming_the_column(pg):
    sql(pg, "CREATE TABLE shaped (id bigint PRIMARY KEY, v text, must int NOT NULL)")
    schema = pa.schema([("id", pa.int64()), ("v", pa.float64())])
    with pytest.raises(lj.DataError, match=r"column 'v' is text in PostgreSQL, the output has double"):
        lj.io.PostgresSink(pg.dsn, "shaped").open(schema, None)
    with pytest.raises(lj.DataError, match=r"no column 'extra'"):
        lj.io.PostgresSink(pg.dsn, "shaped").open(pa.schema([("id", pa.int64()), ("extra", pa.int64())]), None)
    with pytest.raises(lj.DataError, match=r"NOT NULL column\(s\) \['must'\]"):
        lj.io.PostgresSink(pg.dsn, "shaped").open(pa.schema([("id", pa.int64())]), None)
    sql(pg, "CREATE TABLE nokey (id bigint, v text)")
    with pytest.raises(lj.DataError, match=r"unique index on exactly \['id'\]"):
        lj.io.PostgresSink(pg.dsn, "nokey", mode="upsert", key="id").open(
            pa.schema([("id", pa.int64()), ("v", pa.string())]), None)
    sql(pg, "CREATE TABLE small_ints (x smallint)")
    sink = lj.io.PostgresSink(pg.dsn, "small_ints")
    sink.open(pa.schema([("x", pa.int64())]), None)
    try:
        with pytest.raises(lj.DataError, match=r"column 'x' \(int64\) does not fit"):
            sink.write(pa.table({"x": pa.array([1, 70_000], pa.int64())}), 1)
    finally:
        sink.close()


def test_wrong_dsn_credentials_and_table_name_the_problem_without_the_password(pg):
    schema = pa.schema([("id", pa.int64())])
    bad_pw = pg.dsn_with(password="not-the-password-xyz")
    with pytest.raises(PostgresConnectionError) as err:
        lj.io.PostgresSink(bad_pw, "t").open(schema, None)
    assert "password authentication failed" in str(err.value)
    assert "not-the-password-xyz" not in str(err.value) and PASSWORD not in str(err.value)
    assert isinstance(err.value, ConnectionError)
    closed = pg.dsn_with(port=1)
    with pytest.raises(PostgresConnectionError, match="cannot connect to PostgreSQL at") as err:
        lj.io.PostgresCdcSource(closed, "t")
    assert PASSWORD not in str(err.value)
    with pytest.raises(PostgresConnectionError, match='database "nope" does not exist'):
        lj.io.PostgresSink(pg.dsn_with(dbname="nope"), "t").open(schema, None)
    with pytest.raises(lj.DataError, match=r"no table 'public.missing_table'") as err:
        lj.io.PostgresCdcSource(pg.dsn, "missing_table")
    assert PASSWORD not in str(err.value)


def test_prepared_epochs_are_committed_or_rolled_back_on_restore(pg):
    schema = pa.schema([("id", pa.int64())])
    sink = lj.io.PostgresSink(pg.dsn, "two_phase")
    sink.open(schema, 0)
    sink.write(pa.table({"id": [1, 2]}), 1)
    sink.pre_commit(1)
    sink.commit(1)
    sink.write(pa.table({"id": [3]}), 2)
    sink.pre_commit(2)  # prepared; the checkpoint of epoch 2 was saved, then a crash before commit
    sink._conn.close()
    sink._conn = None
    other = lj.io.PostgresSink(pg.dsn, "two_phase", txn_prefix="another-run")
    other.open(schema, 0)
    other.write(pa.table({"id": [100]}), 1)
    other.pre_commit(1)  # another run's prepared transaction must not be touched
    assert sql(pg, "SELECT sum(id) FROM two_phase") == [(3,)]
    assert sorted(g for (g,) in sql(pg, "SELECT gid FROM pg_prepared_xacts")) == [
        "another-run:1", "lj:public.two_phase:2"]

    again = lj.io.PostgresSink(pg.dsn, "two_phase")
    again.open(schema, 2)  # resumes from checkpoint 2: epoch 2 is committed
    assert sql(pg, "SELECT sum(id) FROM two_phase") == [(6,)]
    again.write(pa.table({"id": [4]}), 3)
    again.pre_commit(3)
    again.close()  # crash before checkpoint 3 was saved
    third = lj.io.PostgresSink(pg.dsn, "two_phase")
    third.open(schema, 2)  # epoch 3 is rolled back, it will be replayed
    third.close()
    assert sql(pg, "SELECT sum(id) FROM two_phase") == [(6,)]
    assert [g for (g,) in sql(pg, "SELECT gid FROM pg_prepared_xacts")] == ["another-run:1"]
    other.commit(1)
    other.close()
    assert sql(pg, "SELECT sum(id) FROM two_phase") == [(106,)]


def test_parallel_connections_prepare_one_transaction_each_and_recover_them_as_one_epoch(pg, monkeypatch):
    from laminar_jit.io.postgres import sink as sink_module

    monkeypatch.setattr(sink_module, "_PART_ROWS", 10)  # split writes of a few rows too
    schema = pa.schema([("id", pa.int64()), ("s", pa.string())])

    def rows(lo, hi):
        ids = np.arange(lo, hi, dtype=np.int64)
        return pa.table({"id": ids, "s": pa.array([f"r{i}" for i in ids])})

    def gids():
        return sorted(g for (g,) in sql(pg, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'lj:public.par:%'"))

    sink = lj.io.PostgresSink(pg.dsn, "par", connections=3)
    assert "connections=3" in repr(sink)
    sink.open(schema, 0)
    sink.write(rows(0, 100), 1)
    sink.write(rows(100, 105), 1)  # too few rows to split: the main connection only
    sink.pre_commit(1)
    assert gids() == ["lj:public.par:1", "lj:public.par:1.1", "lj:public.par:1.2"]
    assert sql(pg, "SELECT count(*) FROM par") == [(0,)]  # prepared: invisible
    sink.commit(1)
    assert gids() == [] and sql(pg, "SELECT count(*), sum(id) FROM par") == [(105, 5460)]
    sink.write(rows(1_000, 1_090), 2)
    sink.pre_commit(2)
    sink.close()  # checkpoint 2 saved, then a crash before the commit
    assert len(gids()) == 3

    again = lj.io.PostgresSink(pg.dsn, "par", connections=2)  # resuming with fewer connections is fine
    again.open(schema, 2)  # every part of epoch 2 is committed
    assert gids() == [] and sql(pg, "SELECT count(*) FROM par") == [(195,)]
    again.write(rows(2_000, 2_100), 3)
    again.pre_commit(3)
    sql(pg, "COMMIT PREPARED 'lj:public.par:3'")  # the commit of epoch 3 got one part through, then a crash
    again.close()
    assert gids() == ["lj:public.par:3.1"]
    third = lj.io.PostgresSink(pg.dsn, "par", connections=2)
    third.open(schema, 3)  # checkpoint 3 was saved: its other part is committed too
    assert gids() == [] and sql(pg, "SELECT count(*) FROM par") == [(295,)]
    third.write(rows(3_000, 3_100), 4)
    third.pre_commit(4)
    third.close()  # crash before checkpoint 4 was saved
    fourth = lj.io.PostgresSink(pg.dsn, "par")
    fourth.open(schema, 3)  # every part of epoch 4 is rolled back, it will be replayed
    fourth.close()
    assert gids() == []
    ids = [r[0] for r in sql(pg, "SELECT id FROM par ORDER BY id")]
    assert ids == [*range(105), *range(1_000, 1_090), *range(2_000, 2_100)]
    assert sql(pg, "SELECT count(*) FROM par WHERE s <> 'r' || id") == [(0,)]


def test_parallel_connections_need_append_mode_and_enough_prepared_transactions(pg):
    with pytest.raises(ValueError, match=r"mode='upsert' writes through one connection"):
        lj.io.PostgresSink(pg.dsn, "t", mode="upsert", key="id", connections=2)
    for bad in (0, 17, 1.5, True):
        with pytest.raises(ValueError, match=r"connections must be an int from 1 to 16"):
            lj.io.PostgresSink(pg.dsn, "t", connections=bad)
    with pytest.raises(lj.CheckpointError, match=r"max_prepared_transactions = 16, and exactly-once needs 17"):
        sink = lj.io.PostgresSink(pg.dsn, "t", connections=16)
        sink.connections = 17  # more than the server allows
        sink.open(pa.schema([("id", pa.int64())]), 0)
    # without checkpoints each connection commits its own transaction at the end
    t = pa.table({"id": np.arange(200_000, dtype=np.int64)})
    lj.run(passthrough(t.schema), {"in": t.to_batches(max_chunksize=50_000)},
           {"out": lj.io.PostgresSink(pg.dsn, "par_nochk", connections=2)}, progress=False)
    assert sql(pg, "SELECT count(*), count(DISTINCT id), sum(id) FROM par_nochk") == [
        (200_000, 200_000, int(np.arange(200_000).sum()))]


SINK_JOB = textwrap.dedent('''
    import os
    import laminar_jit as lj

    def keep(flag):
        return flag != 3

    def double(value):
        return value * 2

    def build():
        from laminar_jit.io.postgres import sink as pg_sink

        pg_sink._PART_ROWS = int(os.environ.get("JOB_PART_ROWS", pg_sink._PART_ROWS))
        src = lj.io.ParquetSource(os.environ["JOB_INPUT"], batch_size=2_000)
        dag = (lj.DagBuilder().source("rows", src.schema)
               .operator("keep", lj.Filter(keep)).operator("double", lj.Map(double, output="twice"))
               .connect("rows", "keep").connect("keep", "double").sink_for("double", "out").build())
        sink = lj.io.PostgresSink(os.environ["JOB_DSN"], os.environ["JOB_TABLE"],
                                  connections=int(os.environ["JOB_CONNECTIONS"]))
        return dag, {"rows": src}, {"out": sink}
''')


def _spawn(job: Path, env: dict, chk: Path, every: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "laminar_jit.cli", "run", f"{job}:build", "--checkpoint-dir", str(chk),
           "--checkpoint-every", str(every), "--no-progress"]
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _epoch(chk: Path) -> int:
    return max((int(p.name[4:]) for p in chk.glob("chk-*")), default=0) if chk.is_dir() else 0


@pytest.mark.parametrize("connections", [1, 3], ids=["one_connection", "three_connections"])
def test_sink_sigkill_at_random_moments_counts_every_row_exactly_once(pg, tmp_path, connections):
    n = 200_000
    flag = np.arange(n) % 7
    pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64), "flag": flag, "value": np.arange(n) * 1.0}),
                   tmp_path / "in.parquet", row_group_size=10_000)
    (tmp_path / "job.py").write_text(SINK_JOB)
    table = f"crash_out_{connections}"
    # with three connections every epoch's rows (about 3,400) are split three ways
    env = {"JOB_INPUT": str(tmp_path / "in.parquet"), "JOB_DSN": pg.dsn, "JOB_TABLE": table,
           "JOB_CONNECTIONS": str(connections), "JOB_PART_ROWS": "500"}
    chk = tmp_path / "chk"
    rng = np.random.default_rng(25)
    kills = 0
    for attempt in range(5):
        proc = _spawn(tmp_path / "job.py", env, chk)
        target = _epoch(chk) + int(rng.integers(2, 8))
        while proc.poll() is None and _epoch(chk) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    proc = _spawn(tmp_path / "job.py", env, chk)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert kills >= 3, "the run ended before the test could kill it"
    want = np.arange(n)[flag != 3]
    count, distinct, total, twice = sql(
        pg, f"SELECT count(*), count(DISTINCT id), sum(id), sum(twice) FROM {table}")[0]
    assert (count, distinct, int(total), twice) == (len(want), len(want), int(want.sum()), float(want.sum() * 2))
    assert sql(pg, "SELECT count(*) FROM pg_prepared_xacts") == [(0,)]


def test_sink_connection_lost_mid_run_raises_clearly_and_a_rerun_loses_nothing(pg, tmp_path):
    t = pa.table({"id": np.arange(10_000, dtype=np.int64)})
    batches = t.to_batches(max_chunksize=1_000)
    restarted = []

    def restart_once(table):
        if not restarted and table.column("id")[0].as_py() >= 4_000:
            restarted.append(True)
            pg.restart("fast")

    dag = lj.DagBuilder().source("in", t.schema).sink_for("in", "out").sink_for("in", "probe").build()
    sink = lj.io.PostgresSink(pg.dsn, "dropped")
    with pytest.raises(lj.CheckpointError, match=r"connection to .* lost while") as err:
        lj.run(dag, {"in": batches}, {"out": sink, "probe": lj.io.CallbackSink(restart_once)}, progress=False,
               checkpoint_dir=tmp_path / "c", checkpoint_every=1)
    assert PASSWORD not in str(err.value)
    assert isinstance(err.value.__cause__, PostgresConnectionError)
    committed = sql(pg, "SELECT count(*) FROM dropped")[0][0]
    assert 0 < committed < 10_000
    lj.run(dag, {"in": batches}, {"out": lj.io.PostgresSink(pg.dsn, "dropped"), "probe": lj.io.MemorySink()},
           progress=False, checkpoint_dir=tmp_path / "c", checkpoint_every=1)
    assert sql(pg, "SELECT count(*), count(DISTINCT id) FROM dropped") == [(10_000, 10_000)]


# ----------------------------------------------------------------------------- CDC


class Writer(threading.Thread):
    """Concurrent changes: per key, inserts with version 0, updates version+1, some deletes at the end."""

    def __init__(self, dsn, table, keys, rounds, seed, pause=0.0):
        super().__init__(daemon=True)
        self.dsn, self.table, self.keys, self.rounds, self.pause = dsn, table, keys, rounds, pause
        self.rng = np.random.default_rng(seed)
        self.error = None

    def run(self):
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                for _ in range(self.rounds):
                    ids = self.rng.choice(self.keys, size=20, replace=False).tolist()
                    with conn.transaction():
                        conn.execute(f"UPDATE {self.table} SET version = version + 1 WHERE id = ANY(%s)", (ids,))
                        conn.execute(f"INSERT INTO {self.table} SELECT g, 0, 'w' FROM unnest(%s::bigint[]) g "
                                     "ON CONFLICT DO NOTHING", ([i + 100_000 for i in ids],))
                    time.sleep(self.pause)
                conn.execute(f"DELETE FROM {self.table} WHERE id % 5 = 0")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def check_changelog(out: pa.Table, final: dict[int, int]):
    """Every key's changes appear once, in order: +I (the snapshot's version, or 0 for a new key), then
    -U/+U pairs with versions counting up by one, then -D if the key was deleted; the last version is the
    table's."""
    ids = out.column("id").to_numpy()
    ops = out.column("op").to_numpy()
    versions = out.column("version").to_pylist()
    order = np.argsort(ids, kind="stable")
    by_key: dict[int, list] = {}
    for i in order.tolist():  # test-side check only
        by_key.setdefault(int(ids[i]), []).append((int(ops[i]), versions[i]))
    deleted = {k for k, ch in by_key.items() if ch[-1][0] == 3}
    assert set(by_key) == set(final) | deleted and not set(final) & deleted
    for key, changes in by_key.items():
        op, first = changes[0]
        assert op == 0 and (first == 0 or key < 100_000), (key, changes[:3])
        body = changes[1:-1] if key in deleted else changes[1:]
        assert [op for op, _ in body] == [1, 2] * (len(body) // 2), (key, changes)
        after = [v for op, v in body if op == 2]
        assert after == list(range(first + 1, first + 1 + len(after))), (key, changes)
        if key in final:
            assert (after or [first])[-1] == final[key], (key, final[key], changes)


def make_cdc_table(pg, table, n):
    sql(pg, f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, version int, note text);"
            f"INSERT INTO {table} SELECT g, 0, 'snap' FROM generate_series(0, {n - 1}) g")


def test_cdc_snapshot_and_concurrent_changes_arrive_exactly_once_in_order(pg):
    make_cdc_table(pg, "cdc_a", 2_000)
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_a", slot="cdc_a_slot", batch_size=700, idle_timeout=1.5,
                                  poll_interval=0.05)
    assert src.schema.names == ["id", "version", "note", "op", "commit_ts"]
    writer = Writer(pg.dsn, "cdc_a", np.arange(2_000), rounds=60, seed=1, pause=0.01)
    out = lj.io.MemorySink()
    writer.start()  # changes commit while the slot is created, the snapshot is read and the stream runs
    lj.run(passthrough(src.schema, "cdc"), {"cdc": src}, {"out": out}, progress=False)
    writer.join()
    assert writer.error is None
    final = dict(sql(pg, "SELECT id, version FROM cdc_a"))
    got = out.changelog()  # the raw changes (table() would apply them)
    assert (got.column("op").to_numpy() == 0).sum() >= 2_000
    check_changelog(got, final)
    ts = got.column("commit_ts").to_numpy()
    snapshot = got.column("commit_ts").to_numpy()[:2_000]
    assert (snapshot == snapshot[0]).all() and snapshot[0] <= ts[2_000:].min()
    # commit order: timestamps rise, up to the small inversions commit timestamps may have between transactions
    assert (np.diff(ts) >= -50).all() and abs(ts[-1] / 1000 - time.time()) < 600
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_a_slot")
    assert sql(pg, "SELECT count(*) FROM pg_replication_slots") == [(0,)]


CDC_JOB = textwrap.dedent('''
    import os
    import laminar_jit as lj

    def build():
        src = lj.io.PostgresCdcSource(os.environ["JOB_DSN"], "cdc_k", slot="cdc_k_slot", batch_size=300,
                                      idle_timeout=float(os.environ["JOB_IDLE"]), poll_interval=0.05)
        dag = lj.DagBuilder().source("cdc", src.schema).sink_for("cdc", "out").build()
        return dag, {"cdc": src}, {"out": lj.io.ParquetSink(os.environ["JOB_OUTPUT"])}
''')


def _manifest_position(chk: Path, name: str = "cdc") -> int:
    """The source position in the latest checkpoint of ``chk`` (0 without one)."""
    import json

    latest = sorted(chk.glob("chk-*")) if chk.is_dir() else []
    for path in reversed(latest):
        manifest = path / "manifest.json"
        if manifest.exists():
            return int(json.loads(manifest.read_text())["positions"][name])
    return 0


def _confirmed(pg, slot) -> int:
    from laminar_jit.io.postgres.cdc import lsn_to_int

    return lsn_to_int(sql(pg, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                          (slot,))[0][0])


def test_cdc_changes_exactly_once_across_sigkill_and_restore(pg, tmp_path):
    """Kills land while changes stream (the snapshot is read first: a kill inside it cannot resume, see
    test_cdc_resume_position_checks); the slot is confirmed only up to committed checkpoints."""
    make_cdc_table(pg, "cdc_k", 3_000)
    (tmp_path / "job.py").write_text(CDC_JOB)
    env = {"JOB_DSN": pg.dsn, "JOB_OUTPUT": str(tmp_path / "out"), "JOB_IDLE": "30"}
    chk = tmp_path / "chk"
    writer = Writer(pg.dsn, "cdc_k", np.arange(3_000), rounds=150, seed=2, pause=0.02)
    rng = np.random.default_rng(3)
    kills = 0
    for attempt in range(4):
        proc = _spawn(tmp_path / "job.py", env, chk, every=1)
        if attempt == 0:  # wait for the end of the snapshot (10 batches of 300 rows, a checkpoint each)
            while proc.poll() is None and _manifest_position(chk) < 2**40:
                time.sleep(0.002)
            writer.start()
        target = _epoch(chk) + int(rng.integers(1, 4))
        while proc.poll() is None and _epoch(chk) < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        # nothing after the last committed checkpoint is confirmed: the slot still holds it
        assert _confirmed(pg, "cdc_k_slot") <= _manifest_position(chk) >> 40
    writer.join()
    assert writer.error is None and kills >= 3
    proc = _spawn(tmp_path / "job.py", {**env, "JOB_IDLE": "2"}, chk, every=1)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    got = lj.io.ParquetSink(tmp_path / "out").read()
    final = dict(sql(pg, "SELECT id, version FROM cdc_k"))
    check_changelog(got, final)
    assert _confirmed(pg, "cdc_k_slot") == _manifest_position(chk) >> 40  # the last checkpoint confirmed it
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_k_slot")


def _with_rows(batches):
    """The non-empty batches of a CDC stream (an idle stream yields an empty one about once a second)."""
    try:
        for batch in batches:
            if batch.num_rows:
                yield batch
    finally:
        batches.close()


def _read_to(src, it, position, until):
    """Consume ``it`` (batches of ``src`` from ``position``) while ``until(position)``; returns batches, position."""
    got = []
    while until(position):
        batch = next(it)
        position = src.position_after(position, batch)
        got.append(batch)
    return got, position


def test_cdc_server_restart_mid_stream_reconnects_and_loses_nothing(pg):
    make_cdc_table(pg, "cdc_r", 500)
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_r", slot="cdc_r_slot", batch_size=200, idle_timeout=2.0,
                                  poll_interval=0.05)
    it = _with_rows(src.batches(0))
    rows, position = _read_to(src, it, 0, lambda p: p < 2**40)  # the snapshot
    assert sum(b.num_rows for b in rows) == 500
    writer = Writer(pg.dsn, "cdc_r", np.arange(500), rounds=10, seed=4)
    writer.run()  # synchronously, before the restart
    consistent = position >> 40
    more, position = _read_to(src, it, position, lambda p: p >> 40 == consistent)  # one batch of changes
    rows += more
    pg.restart("immediate")  # like a crash of the server: every connection drops
    rest = list(it)  # reconnects and goes on after the last batch yielded
    assert rest
    got = pa.Table.from_batches(rows + rest)
    check_changelog(got, dict(sql(pg, "SELECT id, version FROM cdc_r")))
    for batch in rest:
        position = src.position_after(position, batch)
    assert list(_with_rows(src.batches(position))) == []  # nothing new
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_r_slot")


def test_cdc_server_down_longer_than_reconnect_timeout_raises_clearly(pg):
    make_cdc_table(pg, "cdc_d", 5)
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_d", slot="cdc_d_slot", idle_timeout=30, poll_interval=0.05,
                                  reconnect_timeout=1.0)
    it = _with_rows(src.batches(0))
    position = src.position_after(0, next(it))
    sql(pg, "UPDATE cdc_d SET version = 1 WHERE id = 1")
    position = src.position_after(position, next(it))
    pg.stop("immediate")
    try:
        with pytest.raises(PostgresConnectionError, match=r"lost at LSN [0-9A-F]+/[0-9A-F]+ .* not back within 1 s") \
                as err:
            next(it)
        assert PASSWORD not in str(err.value) and "the slot keeps every change" in str(err.value)
    finally:
        pg.start_again()
    sql(pg, "UPDATE cdc_d SET version = 2 WHERE id = 1")
    again = lj.io.PostgresCdcSource(pg.dsn, "cdc_d", slot="cdc_d_slot", idle_timeout=1.0, poll_interval=0.05)
    got = pa.Table.from_batches(list(again.batches(position)))  # the run resumed from its position
    assert got.column("op").to_pylist() == [1, 2] and got.column("version").to_pylist() == [None, 2]
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_d_slot")


def test_cdc_resume_position_checks(pg):
    make_cdc_table(pg, "cdc_p", 10)
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_p", slot="cdc_p_slot", batch_size=4, idle_timeout=0.3,
                                  poll_interval=0.05)
    positions, position = [], 0
    for batch in src.batches(0):
        position = src.position_after(position, batch)
        positions.append(position)
    assert positions[:2] == [4, 8] and positions[2] >= 2**40  # the last snapshot batch ends at the slot's LSN
    consistent = positions[2]
    assert src.lsn_at(consistent) == sql(pg, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                                             "WHERE slot_name = 'cdc_p_slot'")[0][0]
    assert src.lsn_at(4) is None and src.position_at(src.lsn_at(consistent)) == consistent
    # a run stopped inside the snapshot cannot resume: the exported snapshot is gone
    with pytest.raises(lj.CheckpointError, match=r"cannot resume at row 4 of the initial snapshot.*"
                                                 r"PostgresCdcSource.drop\(dsn, 'cdc_p_slot'\)"):
        list(src.batches(4))
    # changes: one transaction of 3 rows (+I, -U, +U) read in batches of 2 splits it; a resume inside it
    # skips exactly the rows consumed
    with psycopg.connect(pg.dsn) as conn:
        conn.execute("INSERT INTO cdc_p VALUES (100, 0, 'w')")
        conn.execute("UPDATE cdc_p SET version = 7 WHERE id = 3")
    src2 = lj.io.PostgresCdcSource(pg.dsn, "cdc_p", slot="cdc_p_slot", batch_size=2, idle_timeout=0.5,
                                   poll_interval=0.05)
    it = _with_rows(src2.batches(consistent))
    first = next(it)
    inside = src2.position_after(consistent, first)
    k = inside % 2**40
    assert k in (1, 2) and first.column("op").to_pylist() == [0, 1, 2][:k]
    it.close()
    assert _confirmed(pg, "cdc_p_slot") == consistent >> 40  # nothing confirmed without a checkpoint
    rest = pa.Table.from_batches(list(src2.batches(inside)))
    assert rest.column("op").to_pylist() == [0, 1, 2][k:] and rest.column("version").to_pylist()[-1] == 7
    src2.checkpoint_committed(inside)  # no stream open: confirmed with SQL, up to the transaction
    assert _confirmed(pg, "cdc_p_slot") == inside >> 40 > consistent >> 40
    again = pa.Table.from_batches(list(src2.batches(inside)))  # the slot still holds that transaction
    assert again.column("op").to_pylist() == [0, 1, 2][k:]
    # the slot dropped since the checkpoint: the changes since are lost
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_p_slot")
    with pytest.raises(lj.CheckpointError, match="no longer exists"):
        list(src2.batches(inside))
    # a slot of another plugin is not taken over
    sql(pg, "SELECT pg_create_logical_replication_slot('cdc_p_other', 'test_decoding')")
    with pytest.raises(lj.DataError, match="exists for plugin 'test_decoding'"):
        list(lj.io.PostgresCdcSource(pg.dsn, "cdc_p", slot="cdc_p_other", idle_timeout=0.1).batches(0))
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_p_other")


def test_cdc_confirms_the_slot_only_when_a_checkpoint_commits(pg, tmp_path):
    make_cdc_table(pg, "cdc_c", 100)
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_c", slot="cdc_c_slot", batch_size=3, idle_timeout=5,
                                  poll_interval=0.05, confirm_interval=0)
    it = _with_rows(src.batches(0))
    _, position = _read_to(src, it, 0, lambda p: p < 2**40)
    consistent = position >> 40
    sql(pg, "UPDATE cdc_c SET version = version + 1 WHERE id < 5")  # one transaction of 10 rows
    # read into the transaction (batch_size 3): usually one batch of 3 rows, fewer when the server has not
    # sent the whole transaction yet (a busy machine); the stream yields what it has
    batches, position = _read_to(src, it, position, lambda p: p % 2**40 == 0)
    first = pa.Table.from_batches(batches, schema=src.schema)
    k = position % 2**40
    assert 1 <= k <= 3 and first.column("op").to_pylist() == ([1, 2] * 5)[:k]
    time.sleep(0.3)
    assert _confirmed(pg, "cdc_c_slot") == consistent  # read, but no checkpoint holds it yet
    src.checkpoint_committed(position)  # the stream confirms it when next read from
    rest = []
    while sum(b.num_rows for b in rest) < 10 - k:
        batch = next(it)  # the stream is reopened; the transaction is re-sent and its first k rows skipped
        position = src.position_after(position, batch)
        rest.append(batch)
    assert _confirmed(pg, "cdc_c_slot") == position >> 40
    assert pa.Table.from_batches(rest).column("op").to_pylist() == ([1, 2] * 5)[k:]
    ids = first.column("id").to_pylist() + [i for b in rest for i in b.column("id").to_pylist()]
    assert ids == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    it.close()
    # a checkpointed run: every checkpoint confirms its position, the last one the end
    out = lj.io.MemorySink()
    again = lj.io.PostgresCdcSource(pg.dsn, "cdc_c", slot="cdc_c_slot", batch_size=50, idle_timeout=0.5,
                                    poll_interval=0.05)
    chk = tmp_path / "chk"
    stats = lj.run(passthrough(again.schema, "cdc"), {"cdc": again}, {"out": out}, checkpoint_dir=chk,
                   progress=False)
    assert stats.positions["cdc"] >= position and _confirmed(pg, "cdc_c_slot") == stats.positions["cdc"] >> 40
    # the stream stopped (idle), it did not end: the run is resumable and the next one continues it
    assert not stats.finished and str(stats).startswith("stopped")
    sql(pg, "INSERT INTO cdc_c VALUES (1000, 0, 'late')")
    more = lj.io.MemorySink()
    again = lj.io.PostgresCdcSource(pg.dsn, "cdc_c", slot="cdc_c_slot", batch_size=50, idle_timeout=0.5,
                                    poll_interval=0.05)
    lj.run(passthrough(again.schema, "cdc"), {"cdc": again}, {"out": more}, checkpoint_dir=chk, progress=False)
    assert more.table().column("id").to_pylist() == [1000]
    # an idle stream yields empty batches, so a checkpoint commits what it gave without a next change
    sql(pg, "INSERT INTO cdc_c VALUES (1001, 0, 'idle')")
    idle = lj.io.PostgresCdcSource(pg.dsn, "cdc_c", slot="cdc_c_slot", batch_size=50, idle_timeout=3.5,
                                   poll_interval=0.05)
    seen = []
    stats = lj.run(passthrough(idle.schema, "cdc"), {"cdc": idle},
                   {"out": lj.io.CallbackSink(lambda t: seen.append((time.monotonic(), t.num_rows)))},
                   checkpoint_dir=chk, checkpoint_interval=0.2, progress=False)
    assert sum(n for _, n in seen) == 1 and stats.checkpoints >= 3
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_c_slot")


def test_cdc_bad_credentials_permissions_and_table_are_named_without_the_password(pg):
    bad_pw = pg.dsn_with(password="not-the-password-xyz")
    with pytest.raises(PostgresConnectionError, match="password authentication failed") as err:
        lj.io.PostgresCdcSource(bad_pw, "t")
    assert "not-the-password-xyz" not in str(err.value) and PASSWORD not in str(err.value)
    make_cdc_table(pg, "cdc_perm", 3)
    sql(pg, "DROP ROLE IF EXISTS lj_norepl; CREATE ROLE lj_norepl LOGIN PASSWORD 'norepl-secret-77'; "
            "GRANT SELECT ON cdc_perm TO lj_norepl")
    src = lj.io.PostgresCdcSource(pg.dsn_with(user="lj_norepl", password="norepl-secret-77"), "cdc_perm",
                                  slot="cdc_perm_slot", idle_timeout=0.1)
    with pytest.raises(PostgresConnectionError, match="replication role.*ALTER ROLE <user> REPLICATION") as err:
        list(src.batches(0))
    assert "norepl-secret-77" not in str(err.value)
    with pytest.raises(lj.DataError, match=r"no table 'other\.cdc_perm'"):
        lj.io.PostgresCdcSource(pg.dsn, "other.cdc_perm")
    with pytest.raises(lj.DataError, match=r"column\(s\) \['op'\]"):
        sql(pg, "DROP TABLE IF EXISTS cdc_op; CREATE TABLE cdc_op (id int, op int)")
        lj.io.PostgresCdcSource(pg.dsn, "cdc_op")


def test_cdc_changes_decode_every_type_like_the_snapshot(pg):
    """Rows inserted after the slot, read from the change stream, equal the same rows read by a snapshot."""
    sql(pg, "DROP TABLE IF EXISTS cdc_types; CREATE TABLE cdc_types (id bigint PRIMARY KEY, i4 int, i2 smallint, "
            "f8 float8, f4 float4, b bool, t text, vc varchar(20), ts timestamp, tz timestamptz, d date, "
            "raw bytea, u uuid, \"Mixed Case\" text)")
    stream = lj.io.PostgresCdcSource(pg.dsn, "cdc_types", slot="cdc_types_a", idle_timeout=0.0)
    assert list(stream.batches(0)) == []  # creates the slot; the table is empty
    (lsn,), = sql(pg, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cdc_types_a'")
    sql(pg, """INSERT INTO cdc_types SELECT g, g * 1000 - 5, (g % 300)::smallint, g / 7.0 - 3, (g / 3.0)::float4,
               g % 2 = 0, 'tëxt "' || g || E'"\\n\\\\ {}] ,' || repeat('x', g % 5), 'v' || g,
               timestamp '2001-02-03 04:05:06.789' + g * interval '1 hour 1 second',
               timestamptz '1999-12-31 23:59:59.5+02' + g * interval '37 minutes', date '1970-01-01' + g * 40,
               ('\\x' || lpad(to_hex(g), 6, '0'))::bytea, md5(g::text)::uuid, 'm' || g
               FROM generate_series(1, 500) g""")
    sql(pg, "INSERT INTO cdc_types (id) VALUES (0)")  # every other column null
    stream.idle_timeout = 1.0
    changes = pa.Table.from_batches(list(stream.batches(stream.position_at(lsn))))
    snapshot_src = lj.io.PostgresCdcSource(pg.dsn, "cdc_types", slot="cdc_types_b", idle_timeout=0.0)
    snapshot = pa.Table.from_batches(list(snapshot_src.batches(0)))
    assert changes.num_rows == snapshot.num_rows == 501
    assert (changes.column("op").to_numpy() == 0).all()
    names = [n for n in snapshot.column_names if n not in ("op", "commit_ts")]
    assert changes.select(names).sort_by("id").equals(snapshot.select(names).sort_by("id"))
    # with REPLICA IDENTITY FULL, -U and -D carry the whole old row
    sql(pg, "ALTER TABLE cdc_types REPLICA IDENTITY FULL; UPDATE cdc_types SET i4 = i4 + 1 WHERE id IN (1, 2, 3);"
            "DELETE FROM cdc_types WHERE id = 4")
    again = lj.io.PostgresCdcSource(pg.dsn, "cdc_types", slot="cdc_types_a", idle_timeout=1.0)
    rows = pa.Table.from_batches(list(again.batches(stream.position_at(lsn)))).slice(501)
    assert rows.column("op").to_pylist() == [1, 2, 1, 2, 1, 2, 3]
    old = snapshot.select(names).sort_by("id").slice(1, 4)  # ids 1..4 as they were
    before = rows.filter(pa.compute.is_in(rows.column("op"), pa.array([1, 3], pa.int8()))).select(names)
    assert before.equals(old)
    after = rows.filter(pa.compute.equal(rows.column("op"), 2)).select(names)
    assert after.column("i4").to_pylist() == [v + 1 for v in old.column("i4").to_pylist()[:3]]
    assert after.drop_columns(["i4"]).equals(old.slice(0, 3).drop_columns(["i4"]))
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_types_a")
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_types_b")


def test_cdc_names_output_plugin_libraries_when_the_server_does_not_list_wal2json(pg):
    """Servers with ``output_plugin_libraries`` (15.20 on) refuse plugins not listed; the error says where to list it."""
    if not sql(pg, "SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries'"):
        pytest.skip("this server has no output_plugin_libraries setting")
    make_cdc_table(pg, "cdc_plugins", 3)
    _set_and_reload(pg, "ALTER SYSTEM SET output_plugin_libraries = 'pgoutput'", "pgoutput")
    try:
        src = lj.io.PostgresCdcSource(pg.dsn, "cdc_plugins", slot="cdc_plugins_slot", idle_timeout=0.1)
        with pytest.raises(lj.DataError, match=r"add wal2json to the server's output_plugin_libraries"):
            list(src.batches(0))
    finally:
        _set_and_reload(pg, "ALTER SYSTEM RESET output_plugin_libraries", "pgoutput, test_decoding, wal2json")
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_plugins", slot="cdc_plugins_slot", idle_timeout=0.1)
    assert sum(b.num_rows for b in src.batches(0)) == 3  # listed again: the same slot is created
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_plugins_slot")


def _set_and_reload(pg, statement: str, value: str) -> None:
    """Run an ``ALTER SYSTEM`` on ``output_plugin_libraries`` and wait until new sessions see ``value`` (a reload
    reaches them asynchronously)."""
    sql(pg, statement)
    sql(pg, "SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while sql(pg, "SHOW output_plugin_libraries")[0][0] != value:
        assert time.monotonic() < deadline, f"the server did not take output_plugin_libraries = {value!r}"
        time.sleep(0.05)
