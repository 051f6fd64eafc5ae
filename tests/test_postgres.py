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


SINK_JOB = textwrap.dedent('''
    import os
    import laminar_jit as lj

    def keep(flag):
        return flag != 3

    def double(value):
        return value * 2

    def build():
        src = lj.io.ParquetSource(os.environ["JOB_INPUT"], batch_size=2_000)
        dag = (lj.DagBuilder().source("rows", src.schema)
               .operator("keep", lj.Filter(keep)).operator("double", lj.Map(double, output="twice"))
               .connect("rows", "keep").connect("keep", "double").sink_for("double", "out").build())
        return dag, {"rows": src}, {"out": lj.io.PostgresSink(os.environ["JOB_DSN"], "crash_out")}
''')


def _spawn(job: Path, env: dict, chk: Path, every: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "laminar_jit.cli", "run", f"{job}:build", "--checkpoint-dir", str(chk),
           "--checkpoint-every", str(every), "--no-progress"]
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _epoch(chk: Path) -> int:
    return max((int(p.name[4:]) for p in chk.glob("chk-*")), default=0) if chk.is_dir() else 0


def test_sink_sigkill_at_random_moments_counts_every_row_exactly_once(pg, tmp_path):
    n = 200_000
    flag = np.arange(n) % 7
    pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64), "flag": flag, "value": np.arange(n) * 1.0}),
                   tmp_path / "in.parquet", row_group_size=10_000)
    (tmp_path / "job.py").write_text(SINK_JOB)
    env = {"JOB_INPUT": str(tmp_path / "in.parquet"), "JOB_DSN": pg.dsn}
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
        pg, "SELECT count(*), count(DISTINCT id), sum(id), sum(twice) FROM crash_out")[0]
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
    got = out.table()
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


def test_cdc_changes_exactly_once_across_sigkill_and_restore(pg, tmp_path):
    make_cdc_table(pg, "cdc_k", 3_000)
    (tmp_path / "job.py").write_text(CDC_JOB)
    env = {"JOB_DSN": pg.dsn, "JOB_OUTPUT": str(tmp_path / "out"), "JOB_IDLE": "30"}
    chk = tmp_path / "chk"
    writer = Writer(pg.dsn, "cdc_k", np.arange(3_000), rounds=150, seed=2, pause=0.02)
    rng = np.random.default_rng(3)
    kills = 0
    for attempt in range(4):
        proc = _spawn(tmp_path / "job.py", env, chk, every=1)
        target = _epoch(chk) + int(rng.integers(1, 4))
        while proc.poll() is None and _epoch(chk) < target:
            time.sleep(0.002)
        if attempt == 0:
            writer.start()
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    writer.join()
    assert writer.error is None and kills >= 3
    proc = _spawn(tmp_path / "job.py", {**env, "JOB_IDLE": "2"}, chk, every=1)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    got = lj.io.ParquetSink(tmp_path / "out").read()
    final = dict(sql(pg, "SELECT id, version FROM cdc_k"))
    check_changelog(got, final)
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_k_slot")


def test_cdc_server_restart_mid_stream_reconnects_and_loses_nothing(pg):
    make_cdc_table(pg, "cdc_r", 500)
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_r", slot="cdc_r_slot", batch_size=200, idle_timeout=2.0,
                                  poll_interval=0.05)
    it = src.batches(0)
    rows = [next(it)]
    writer = Writer(pg.dsn, "cdc_r", np.arange(500), rounds=10, seed=4)
    writer.run()  # synchronously, before the restart
    pg.restart("immediate")  # like a crash of the server: every connection drops
    rows += list(it)
    rows_after = list(src.batches(sum(b.num_rows for b in rows)))
    assert rows_after == []  # nothing new yet
    got = pa.Table.from_batches(rows)
    check_changelog(got, dict(sql(pg, "SELECT id, version FROM cdc_r")))
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_r_slot")


def test_cdc_resume_position_checks(pg):
    make_cdc_table(pg, "cdc_p", 10)
    src = lj.io.PostgresCdcSource(pg.dsn, "cdc_p", slot="cdc_p_slot", idle_timeout=0.2, poll_interval=0.05)
    assert sum(b.num_rows for b in src.batches(0)) == 10
    with pytest.raises(lj.CheckpointError, match="change log has 10 rows"):
        list(src.batches(11))
    src.checkpoint_committed(6)
    with pytest.raises(lj.CheckpointError, match="trimmed up to row 6"):
        list(src.batches(3))
    assert sum(b.num_rows for b in src.batches(6)) == 4
    assert src.lsn_at(7) is not None
    with pytest.raises(lj.DataError, match="streams table 'public.cdc_p'"):
        make_cdc_table(pg, "cdc_other", 1)
        list(lj.io.PostgresCdcSource(pg.dsn, "cdc_other", slot="cdc_p_slot", idle_timeout=0.1).batches(0))
    lj.io.PostgresCdcSource.drop(pg.dsn, "cdc_p_slot")
