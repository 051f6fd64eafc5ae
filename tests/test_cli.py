"""The command line: arguments checked before any work, one line per mistake, readable output."""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys

import pytest

import laminar_jit as lj
from laminar_jit import cli
from laminar_jit._progress import compiling


def _cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "laminar_jit.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ----------------------------------------------------------------------------- arguments

def test_version():
    done = _cli("--version", timeout=120)
    assert done.returncode == 0
    assert done.stdout.strip() == f"laminar-jit {lj.__version__}"


@pytest.mark.parametrize("text, value", [("1e6", 1_000_000), ("2.5e6", 2_500_000), ("10_000_000", 10_000_000),
                                         ("1,000", 1_000), ("7", 7)])
def test_event_counts_accept_integral_notations(text, value):
    assert cli.build_parser().parse_args(["nexmark", "--events", text]).events == value
    assert cli.build_parser().parse_args(["demo", "--events", text]).events == value


@pytest.mark.parametrize("text", ["1.5", "1e-3", "lots", "inf", "nan", "0", "-5", ""])
def test_event_counts_reject_the_rest(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli._positive_int(text)


BAD_ARGUMENTS = [
    (["nexmark", "--query", "q99"], "unknown query 'q99'"),
    (["nexmark", "--events", "1.5"], "whole number"),
    (["nexmark", "--batch-size", "0"], "positive"),
    (["nexmark", "--max-delay", "-1"], "zero or a positive"),
    (["nexmark", "--seed", "-3"], "zero or a positive"),
    (["nexmark", "--query", "all", "--out", "x.parquet"], "--out needs one query"),
    (["nexmark", "--out", "/missing/dir/out.parquet"], "does not exist"),
    (["demo", "--events", "-5"], "positive"),
    (["demo", "--rows", "many"], "whole number"),
    (["demo", "--bogus"], "unrecognized arguments"),
    (["run", "job.py:build", "--checkpoint-interval", "0"], "positive number of seconds"),
    (["run", "job.py:build", "--checkpoint-every", "3", "--checkpoint-interval", "2"], "not allowed with"),
    (["run", "job.py:build", "--parallelism", "0"], "positive whole number or auto"),
    (["run", "job.py:build", "--parallelism", "all"], "or auto, got 'all'"),
    (["run", "job.py:build", "--partitions", "0"], "positive"),
    (["warmup", "--queries", "q5,q99"], "unknown query 'q99'"),
    ([], "required"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=[" ".join(a) or "nothing" for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_one_line_and_exit_2_before_any_work(argv, message, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse's own checks
        status = e.code
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""  # nothing was generated, compiled or run
    assert message in _one_error_line(captured.err)


def test_out_to_a_missing_directory_fails_at_once_without_a_traceback(tmp_path):
    # Default --events (10 M): had the query run first, stdout would show the generated events.
    done = _cli("nexmark", "--out", str(tmp_path / "missing" / "out.parquet"), timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    line = _one_error_line(done.stderr)
    assert "--out" in line and "missing" in line and "does not exist" in line


def test_out_to_a_directory_is_refused(tmp_path):
    assert "is a directory" in cli.output_file_problem(str(tmp_path))
    assert cli.output_file_problem(str(tmp_path / "result.parquet")) is None


def test_checkpoint_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "chk").write_text("")
    assert cli.main(["run", "job.py:build", "--checkpoint-dir", str(tmp_path / "chk")]) == 2
    assert "not a directory" in _one_error_line(capsys.readouterr().err)


def test_help_shows_defaults(capsys):
    for command, expected in [("demo", ["(default: 5,000,000)", "(default: 65,536)", "(default: 42)", "(default: 5)"]),
                              ("nexmark", ["(default: q5)", "(default: 10,000,000)", "(default: 0)",
                                           "(default: 100)"])]:
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for piece in expected:
            assert piece in text, (command, piece)
        assert "(default: None)" not in text


# ----------------------------------------------------------------------------- errors of the job

BROKEN_JOBS = {
    "empty_dag": ("import laminar_jit as lj\ndef build():\n    return lj.DagBuilder().build(), {}, {}\n",
                  1, "EmptyDagError"),
    "bad_kernel": ("import pyarrow as pa, laminar_jit as lj\n"
                   "def build():\n"
                   "    s = pa.schema([('price', pa.float64())])\n"
                   "    dag = (lj.DagBuilder().source('s', s).operator('f', lj.Filter(lambda price: price * 2))\n"
                   "           .connect('s', 'f').sink_for('f', 'out').build())\n"
                   "    return dag, {}, {}\n", 1, "KernelError"),
    "missing_file": ("import laminar_jit as lj\n"
                     "def build():\n"
                     "    return None, {'s': lj.io.ParquetSource('no/such/file.parquet')}, {}\n", 1, "no such file"),
    "os_error": ("def build():\n    open('no_such_settings.toml')\n", 1, "No such file or directory"),
    "not_a_job": ("def build():\n    return 3\n", 2, "must return (dag, sources, sinks)"),
}


@pytest.mark.parametrize("name", list(BROKEN_JOBS))
def test_library_errors_of_a_job_are_one_line(name, tmp_path):
    source, status, message = BROKEN_JOBS[name]
    (tmp_path / "job.py").write_text(source)
    done = _cli("run", "job.py:build", "--no-progress", cwd=tmp_path)
    assert done.returncode == status, done.stderr
    assert message in _one_error_line(done.stderr)


# ----------------------------------------------------------------------------- output

def test_plural_and_cells():
    assert cli._plural(1, "batch") == "1 batch"
    assert cli._plural(2, "batch") == "2 batches"
    assert cli._plural(1_000, "row") == "1,000 rows"
    assert cli._cell(122.39840000000001) == "122.3984"
    assert cli._cell(3.0) == "3"
    assert cli._cell(-0.00001) == "0"
    assert cli._cell(7) == "7"


def test_demo_output_is_readable(capsys):
    assert cli.main(["demo", "--events", "1e4", "--rows", "3"]) == 0
    out = capsys.readouterr().out
    assert "in 1 batch of" in out  # 10,000 rows fit one batch of 65,536
    assert not re.search(r"\d\.\d{5,}", out.split("\nmetrics:")[0]), out  # no float noise in the results
    assert "compile excluded" in out and "compile (or load from the on-disk cache)" in out


def test_nexmark_reports_generator_compile_separately(capsys):
    assert cli.main(["nexmark", "--query", "q0", "--events", "2e4", "--batch-size", "8192", "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"M events/s; generator compile \d+\.\d\d s\)", out), out


def test_warmup_compiles_a_job(tmp_path, capsys):
    (tmp_path / "job.py").write_text(
        "import pyarrow as pa, laminar_jit as lj\n"
        "def build():\n"
        "    s = pa.schema([('ts', pa.int64()), ('price', pa.float64())])\n"
        "    dag = (lj.DagBuilder().source('s', s).operator('f', lj.Filter(lambda price: price > 17.0))\n"
        "           .connect('s', 'f').sink_for('f', 'out').build())\n"
        "    return dag, {}, {}\n")
    assert cli.main(["warmup", "--no-demo", "--queries", "none", str(tmp_path / "job.py") + ":build"]) == 0
    out = capsys.readouterr().out
    assert "warm-up done" in out
    assert cli.main(["warmup", "--no-demo", "--queries", "none", str(tmp_path / "nothere.py") + ":build"]) == 2


# ----------------------------------------------------------------------------- compile progress

def test_compiling_logs_and_shows_a_line_when_asked(caplog, capsys):
    caplog.set_level(logging.INFO, logger="laminar_jit")
    import time

    with compiling("compiling something slow", indicator=True) as took:
        time.sleep(0.8)
    assert took["seconds"] >= 0.8
    err = capsys.readouterr().err
    assert re.search(r"compiling something slow … \d+\.\d s", err), err
    messages = [r.getMessage() for r in caplog.records if r.name == "laminar_jit"]
    assert messages[0] == "compiling something slow …" and "done in" in messages[1]


def test_compiling_is_silent_when_switched_off_or_quick(capsys):
    previous = lj.show_compile_progress(False)
    try:
        import time

        with compiling("compiling switched off"):
            time.sleep(0.7)
    finally:
        lj.show_compile_progress(previous)
    with compiling("compiling quickly", indicator=True):
        pass
    assert capsys.readouterr().err == ""


def _dag_of_its_own():
    import pyarrow as pa

    schema = pa.schema([("ts", pa.int64()), ("reading", pa.float64())])
    return (lj.DagBuilder().source("sensor", schema)
            .operator("hot", lj.Filter(lambda reading: reading > 41.5))
            .connect("sensor", "hot").sink_for("hot", "out").build())


def test_executor_says_what_it_compiles(caplog):
    caplog.set_level(logging.INFO, logger="laminar_jit")
    lj.DagExecutor(_dag_of_its_own())
    messages = " ".join(r.getMessage() for r in caplog.records if r.name == "laminar_jit")
    # the first executor of this DAG in this process compiles it, or loads it from the disk cache
    assert re.search(r"(compiling|loading) plan for source 'sensor'.*done in \d+\.\d\d s", messages), messages


def test_a_sharded_executor_compiles_only_its_shards_steps(caplog):
    import pyarrow as pa

    caplog.set_level(logging.INFO, logger="laminar_jit")
    schema = pa.schema([("ts", pa.int64()), ("sensor", pa.int64()), ("reading", pa.float64())])
    dag = (lj.DagBuilder().source("sensor", schema, event_time="ts")
           .operator("hot", lj.Filter(lambda reading: reading > 43.25)).connect("sensor", "hot")
           .operator("w", lj.TumblingWindow(1_000, key="sensor", aggs={"n": lj.count()})).connect("hot", "w")
           .sink_for("w", "out").build())
    ex = lj.DagExecutor(dag, parallelism=2)
    assert ex.shards == 2, ex.shards_note
    messages = " ".join(r.getMessage() for r in caplog.records if r.name == "laminar_jit")
    assert re.search(r"(compiling|loading) key-shard plan for source 'sensor'", messages), messages
    # the unsharded step, which the shards never run, is not compiled
    assert not re.search(r"(compiling|loading) plan for source", messages), messages
    assert ex.compile_seconds > 0
    ex.process_batch("sensor", {"ts": [0, 10, 1_500], "sensor": [1, 2, 1], "reading": [50.0, 44.0, 10.0]})
    ex.finish()
    assert sorted(ex.take_sink_outputs("out").column("n").to_pylist()) == [1, 1]


def test_sql_runs_over_files_prints_writes_and_explains(tmp_path, capsys):
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 20_000
    bids = pa.table({"ts": np.arange(n, dtype=np.int64) * 10 + rng.integers(0, 50, n),
                     "auction": rng.integers(0, 20, n), "price": rng.random(n) * 100})
    pq.write_table(bids, tmp_path / "bids.parquet")
    query = tmp_path / "q.sql"
    query.write_text("CREATE TABLE bids (WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);\n"
                     "SELECT window_start, auction, COUNT(*) AS n, MAX(price) AS top FROM TABLE(TUMBLE(TABLE bids, "
                     "DESCRIPTOR(ts), INTERVAL '10' SECOND)) WHERE price > 50 GROUP BY window_start, window_end, auction")
    source = ["--source", f"bids={tmp_path / 'bids.parquet'}", "--no-progress"]
    assert cli.main(["sql", str(query), *source, "--sink", f"out={tmp_path / 'out'}"]) == 0
    got = lj.io.ParquetSink(tmp_path / "out").read().sort_by([("window_start", "ascending"), ("auction", "ascending")])
    want = duckdb.sql("SELECT ts // 10000 * 10000 AS window_start, auction, count(*) AS n, max(price) AS top "
                      "FROM bids WHERE price > 50 GROUP BY ALL ORDER BY ALL").to_arrow_table()
    assert got.to_pylist() == want.to_pylist()
    capsys.readouterr()
    assert cli.main(["sql", str(query), *source, "--rows", "2"]) == 0
    assert f"out: {want.num_rows:,} rows; first 2:" in capsys.readouterr().out
    assert cli.main(["sql", str(query), *source, "--explain"]) == 0
    assert "TumblingWindow(10000, key=['auction']" in capsys.readouterr().out
    assert cli.main(["sql", "SELECT ts, price * 2 AS p FROM bids WHERE price > 99", *source, "--watch"]) == 0
    assert "      p" in capsys.readouterr().out
    names = pa.table({"id": pa.array(range(0, 20, 2), pa.int64()), "label": [f"a{i}" for i in range(0, 20, 2)]})
    pq.write_table(names, tmp_path / "names.parquet")
    lookup = ("SELECT b.ts, n.label FROM (SELECT *, PROCTIME() AS pt FROM bids) b JOIN names FOR SYSTEM_TIME AS OF "
              "b.pt AS n ON b.auction = n.id")
    assert cli.main(["sql", lookup, *source, "--table", f"names={tmp_path / 'names.parquet'}",
                     "--sink", f"out={tmp_path / 'looked'}"]) == 0
    got = lj.io.ParquetSink(tmp_path / "looked").read()
    assert got.num_rows == pa.compute.sum(pa.compute.equal(pa.compute.bit_wise_and(bids["auction"], 1), 0)).as_py()
    assert set(got.column("label").to_pylist()) == set(names.column("label").to_pylist())


@pytest.mark.parametrize("argv, status, message", [
    (["sql", "SELECT ts FROM bids", "--source", "bids=/nonexistent.parquet"], 2, "no such file"),
    (["sql", "SELECT ts FROM bids", "--source", "bids"], 2, "expected NAME=PATH"),
    (["sql", "nothere.sql"], 2, "no file 'nothere.sql'"),
    (["sql", "SELECT ts FROM bids"], 1, "unknown table 'bids'"),
    (["sql", "SELECT ts FROM bids WHERE (", "--source", "BIDS"], 1, "SqlError: cannot parse the SQL"),
    (["sql", "SELECT ts FROM bids", "--source", "BIDS", "--sink", "nope=/tmp"], 2, "the SQL writes ['out']"),
    (["sql", "SELECT ts FROM bids", "--source", "BIDS", "--table", "t=/nonexistent.parquet"], 2, "no such file"),
])
def test_sql_mistakes_are_one_line(argv, status, message, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"ts": [1, 2], "price": [1.0, 2.0]}), tmp_path / "b.parquet")
    argv = [a.replace("BIDS", f"bids={tmp_path / 'b.parquet'}") for a in argv]
    try:
        got = cli.main(argv)
    except SystemExit as e:  # argparse's own checks
        got = e.code
    assert got == status
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
