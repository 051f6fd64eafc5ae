"""The ``laminar-jit`` command line.

Every argument is checked before any work starts, and a mistake — a bad
number, an output path whose directory does not exist, a job that raises one
of the library's typed errors — ends with one line on standard error and exit
status 2 (arguments) or 1 (the job), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from decimal import Decimal, InvalidOperation

PROG = "laminar-jit"


# ----------------------------------------------------------------------------- argument types

def _whole_number(text: str) -> int:
    """``10_000``, ``10,000``, ``1e6`` and ``2.5e6`` are whole numbers; ``1.5`` and ``1e-3`` are not."""
    cleaned = text.strip().replace("_", "").replace(",", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 1000000 or 1e6, got {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _parallelism(text: str):
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number or auto, got {text!r}") from None


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or a positive number, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _query_name(text: str) -> str:
    from laminar_jit.nexmark.queries import QUERIES

    if text != "all" and text not in QUERIES:
        raise argparse.ArgumentTypeError(f"unknown query {text!r}; choose one of {', '.join(QUERIES)} or all")
    return text


def _query_list(text: str) -> list[str]:
    from laminar_jit.nexmark.queries import QUERIES

    if text in ("all", ""):
        return list(QUERIES) if text == "all" else []
    if text == "none":
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in QUERIES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown query {unknown[0]!r}; choose from {', '.join(QUERIES)}, "
                                         "all or none")
    return names


def output_file_problem(path: str) -> str | None:
    """Why ``path`` cannot be written as a new file, or None when it can (checked before any work)."""
    if os.path.isdir(path):
        return f"{path!r} is a directory; give a file name such as {os.path.join(path, 'result.parquet')!r}"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"directory {os.path.dirname(path) or parent!r} does not exist; create it first (mkdir -p)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"directory {os.path.dirname(path) or parent!r} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path!r} exists and is not writable"
    return None


def directory_problem(path: str) -> str | None:
    """Why ``path`` cannot serve as a (possibly new) directory, or None when it can."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path!r} exists and is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"directory {path!r} is not writable"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # makedirs creates the missing levels
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create directory {path!r}: {parent!r} is not a writable directory"
    return None


# ----------------------------------------------------------------------------- output helpers

def _plural(n: int, word: str, plural: str | None = None) -> str:
    """``"1 batch"``, ``"2 batches"``, with ``n`` written with thousands separators."""
    return f"{n:,} {word if n == 1 else (plural or word + ('es' if word.endswith(('s', 'x', 'ch', 'sh')) else 's'))}"


def _cell(value) -> str:
    """A result value written for reading: floats rounded to 4 decimals without float noise."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    return str(value)


def _format(table) -> str:
    cols = table.column_names
    rows = [[_cell(v) for v in r.values()] for r in table.to_pylist()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join([line] + body)


# ----------------------------------------------------------------------------- commands

def _demo(args: argparse.Namespace) -> int:
    import laminar_jit as lj
    from laminar_jit._progress import compiling
    from laminar_jit.demo import demo_dag, generate_bids

    print(f"generating {args.events:,} bids …", flush=True)
    t0 = time.perf_counter()
    table = generate_bids(args.events, seed=args.seed)
    batches = table.to_batches(max_chunksize=args.batch_size)
    print(f"generated in {time.perf_counter() - t0:.2f} s", flush=True)

    with compiling("compiling the demo's plan (first run; cached on disk afterwards)") as took:
        dag = demo_dag()
        ex = lj.DagExecutor(dag)
        ex.process_batch("bids", batches[0].slice(0, 1))  # what the first batch compiles lazily
        ex.take_all_sink_outputs()
    t_compile = took["seconds"]

    ex = lj.DagExecutor(dag)
    t0 = time.perf_counter()
    for batch in batches:
        ex.process_batch("bids", batch)
    ex.finish()
    outputs = ex.take_all_sink_outputs()
    elapsed = time.perf_counter() - t0

    print("\nDAG:", " → ".join(dag.execution_order))
    for sink, out in outputs.items():
        print(f"\n{sink}: {_plural(out.num_rows, 'row')}; first {min(args.rows, out.num_rows)}:")
        print(_format(out.slice(0, args.rows)))
    m = ex.metrics
    print(f"\nevents: {m.events_in:,} in {_plural(m.batches, 'batch')} of ≤{args.batch_size:,} rows")
    print(f"processing: {m.events_in / elapsed / 1e6:,.1f} M events/s ({elapsed * 1e3:,.1f} ms, compile excluded)")
    print(f"compile (or load from the on-disk cache) + first batch: {t_compile:.2f} s")
    print(f"metrics: {m}")
    return 0


def _nexmark(args: argparse.Namespace) -> int:
    from laminar_jit import nexmark
    from laminar_jit._progress import compiling
    from laminar_jit.nexmark.queries import QUERIES

    names = list(QUERIES) if args.query == "all" else [args.query]
    # The generator's kernel is compiled (or loaded from the disk cache) on a tiny run first, so the
    # reported generation rate is the generator's, not its first compile's.
    with compiling("compiling the event generator (first run; cached on disk afterwards)") as took:
        nexmark.generate(1, seed=args.seed, max_delay=args.max_delay, chunk_size=args.batch_size)
    t_gen_compile = took["seconds"]
    t0 = time.perf_counter()
    events = nexmark.generate(args.events, seed=args.seed, max_delay=args.max_delay, chunk_size=args.batch_size)
    t_gen = time.perf_counter() - t0
    print(f"generated {events!r} in {t_gen:.2f} s ({args.events / t_gen / 1e6:,.1f} M events/s; "
          f"generator compile {t_gen_compile:.2f} s), batches of ≤{args.batch_size:,} events", flush=True)
    header = f"{'query':<6} {'result rows':>12} {'M events/s':>11} {'ms':>9} {'compile s':>10}"
    runs = []
    for i, name in enumerate(names):
        if len(names) > 1:
            print(f"[{i + 1}/{len(names)}] {name}", flush=True)
        r = nexmark.run(name, events, max_delay=args.max_delay)
        runs.append(r)
        if len(names) == 1:
            print(f"\n{name}: {_plural(r.result.num_rows, 'result row')}; first {min(args.rows, r.result.num_rows)}:")
            print(_format(r.result.slice(0, args.rows)))
    print(f"\n{header}")
    for r in runs:
        print(f"{r.name:<6} {r.result.num_rows:>12,} {r.events_per_second / 1e6:>11,.1f} {r.seconds * 1e3:>9,.1f} "
              f"{r.compile_seconds:>10.2f}")
    print("events/s counts all generated events (persons, auctions and bids), as Nexmark does; "
          "compile = build + compile or load from the disk cache + the first chunk, excluded from events/s")
    if args.out is not None:
        import pyarrow.parquet as pq

        pq.write_table(runs[0].result, args.out)
        print(f"wrote {_plural(runs[0].result.num_rows, 'row')} to {args.out}")
    return 0


def _load_target(target: str):
    """Import ``module:function`` (or ``path/to/file.py:function``) and call it."""
    import importlib
    import importlib.util

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise _UsageError(f"target {target!r} is not MODULE:FUNCTION (e.g. 'pipelines.bids:build' or "
                          "'jobs/bids.py:build')")
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise _UsageError(f"no file {module_name!r}")
            spec = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
            module = importlib.util.module_from_spec(spec)
            # Registered by name, so Numba can find the module of the job's kernels again when a later
            # process loads the plan from the disk cache (otherwise it recompiles the plan, with a warning).
            sys.modules.setdefault(spec.name, module)
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise _UsageError(f"cannot import {module_name!r}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise _UsageError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise _UsageError(f"{target!r} is a {type(fn).__name__}, not a function")
    job = fn()
    if isinstance(job, dict):
        job = tuple(job.get(k) for k in ("dag", "sources", "sinks"))
    if not (isinstance(job, tuple) and len(job) == 3 and isinstance(job[1], dict) and isinstance(job[2], dict)):
        raise _UsageError(f"{target}() must return (dag, sources, sinks) or a dict with those keys, "
                          f"sources and sinks being dicts by node name; it returned {type(job).__name__}")
    return job


def _run(args: argparse.Namespace) -> int:
    import laminar_jit as lj

    dag, sources, sinks = _load_target(args.target)
    cluster = {} if args.partitions is None and args.address is None else {
        "partitions": args.partitions or 1, "address": args.address}
    stats = lj.run(dag, sources=sources, sinks=sinks, checkpoint_dir=args.checkpoint_dir,
                   checkpoint_every=args.checkpoint_every, checkpoint_interval=args.checkpoint_interval,
                   keep=args.keep, progress=not args.no_progress, parallelism=args.parallelism, **cluster)
    print(stats)
    return 130 if stats.interrupted else 0


def _named(text: str) -> tuple[str, str]:
    """``name=path`` of ``--source`` and ``--sink``."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH (e.g. bids=bids.parquet), got {text!r}")
    return name, path


def _sql_text(query: str) -> str:
    """The SQL of ``laminar-jit sql``: a file's text, or the argument itself when it is SQL."""
    if os.path.isfile(query):
        with open(query, encoding="utf-8") as fh:
            return fh.read()
    if any(ch.isspace() for ch in query.strip()):
        return query
    raise _UsageError(f"no file {query!r} (give a .sql file, or the SQL text in quotes)")


def _read_table(name: str, path: str):
    """The whole of a bounded table ``--table NAME=PATH`` (Parquet, else an Arrow IPC file)."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path) if path.endswith(".parquet") else feather.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise _UsageError(f"--table {name}={path}: cannot read it as a Parquet or Arrow file ({_one_line(e)})") \
            from None


def _sql(args: argparse.Namespace) -> int:
    """Compile SQL with ``lj.sql`` and run it over files; print, watch or write the results."""
    import laminar_jit as lj

    text = _sql_text(args.query)
    sources = {}
    for name, path in args.source:
        try:
            sources[name] = lj.io.as_source(path)
        except TypeError as e:
            raise _UsageError(f"--source {name}={path}: {_one_line(e)}") from None
    tables = {name: _read_table(name, path) for name, path in args.table}
    if args.explain:
        print(lj.explain(text, {**sources, **tables}))
        return 0
    dag = lj.sql(text, {**sources, **tables})
    missing = [n for n in dag.sources if n not in sources]
    if missing:
        raise _UsageError(f"the SQL reads {missing}: give each as --source NAME=PATH")
    written = dict(args.sink)
    unknown = [n for n in written if n not in dag.sinks]
    if unknown:
        raise _UsageError(f"--sink {unknown[0]}: the SQL writes {dag.sinks}, not {unknown[0]!r}")
    sinks, kept = {}, {}
    for name in dag.sinks:
        if name in written:
            sinks[name] = lj.io.ParquetSink(written[name])
        elif args.watch:
            sinks[name] = lj.io.CallbackSink(lambda table, name=name: print(f"{name}:\n{_format(table)}", flush=True))
        else:
            sinks[name] = kept[name] = lj.io.MemorySink()
    stats = lj.run(dag, sources=sources, sinks=sinks, checkpoint_dir=args.checkpoint_dir,
                   checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    for name, sink in kept.items():
        out = sink.table()
        print(f"\n{name}: {_plural(out.num_rows, 'row')}; first {min(args.rows, out.num_rows)}:")
        print(_format(out.slice(0, args.rows)))
    for name, path in written.items():
        print(f"{name}: written to {path}")
    print(stats)
    return 130 if stats.interrupted else 0


def _warmup(args: argparse.Namespace) -> int:
    """Compile the library's own plans and kernels (and those of job files) into the disk cache."""
    import laminar_jit as lj
    from laminar_jit import nexmark
    from laminar_jit._progress import _indicator_wanted, compiling
    from laminar_jit.demo import demo_dag, generate_bids
    from laminar_jit.executor.plan import cache_dir

    t_all = time.perf_counter()
    steps = []
    if not args.no_demo:
        steps.append(("demo", None))
    steps += [(f"Nexmark {q}", q) for q in args.queries]
    steps += [(job, "job") for job in args.jobs]
    events = None
    for i, (label, what) in enumerate(steps):
        with compiling(f"[{i + 1}/{len(steps)}] {label}") as took:
            if what is None:
                ex = lj.DagExecutor(demo_dag())
                ex.process_batch("bids", generate_bids(10_000))
                ex.finish()
            elif what == "job":
                dag, _, _ = _load_target(label)
                lj.DagExecutor(dag)  # compiles every source's plan into the cache
            else:
                if events is None:
                    events = nexmark.generate(20_000, chunk_size=4_096)
                nexmark.run(what, events)
        if not _indicator_wanted():  # the indicator already left "… 12.3 s" on its line
            print(f"[{i + 1}/{len(steps)}] {label}: {took['seconds']:.1f} s", flush=True)

    print(f"warm-up done in {time.perf_counter() - t_all:.1f} s; compiled code is cached in {cache_dir()} "
          "(and Numba's cache beside the package, or $NUMBA_CACHE_DIR)")
    return 0


# ----------------------------------------------------------------------------- parser

class _UsageError(Exception):
    """A mistake in what the user asked for, found after parsing (exit status 2)."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show every meaningful default, written for reading (``5,000,000``), never ``(default: None)``."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("(default" in text or default is None or default is False or default == argparse.SUPPRESS
                or not action.option_strings or isinstance(default, list)):
            return text
        shown = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line: ``laminar-jit nexmark: error: … (see --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("laminar-jit")
    except Exception:  # pragma: no cover - not installed as a distribution
        from laminar_jit import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``laminar-jit`` argument parser (subcommands ``demo``, ``nexmark``, ``run``, ``sql``, ``warmup``)."""
    parser = _Parser(
        prog=PROG,
        description="Embedded stream processing: Arrow batches through a compiled DAG of Numba kernels.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="run a multi-operator DAG over generated bids and report events/s",
                          description="Run the demo DAG (filter, map, multicast, union) over generated bids.",
                          formatter_class=_Formatter)
    demo.add_argument("--events", type=_positive_int, default=5_000_000, help="number of bids (1e6 works)")
    demo.add_argument("--batch-size", type=_positive_int, default=65_536, help="rows per batch")
    demo.add_argument("--rows", type=_positive_int, default=5, help="result rows to print per sink")
    demo.add_argument("--seed", type=_non_negative_int, default=42, help="random seed of the generator")
    demo.set_defaults(func=_demo)

    nx = sub.add_parser("nexmark", help="run Nexmark queries over generated events and report events/s",
                        description="Generate Nexmark events in memory, then run a query (or all) over them "
                                    "and report result rows, events/s and compile time.",
                        formatter_class=_Formatter)
    nx.add_argument("--query", type=_query_name, default="q5",
                    help="q0, q1, q2, q3, q4, q5, q7, q8, q11, q18, q19, q21, q22 or all")
    nx.add_argument("--events", type=_positive_int, default=10_000_000,
                    help="events over the three streams (1e7 works)")
    nx.add_argument("--batch-size", type=_positive_int, default=65_536,
                    help="events per generated chunk; each chunk is one batch per stream")
    nx.add_argument("--max-delay", type=_non_negative_int, default=100, help="out-of-orderness bound in ms")
    nx.add_argument("--seed", type=_non_negative_int, default=0, help="random seed of the generator")
    nx.add_argument("--rows", type=_positive_int, default=5, help="result rows to print (one query)")
    nx.add_argument("--out", default=None, metavar="FILE.parquet",
                    help="write the result to this Parquet file (one query; its directory must exist)")
    nx.set_defaults(func=_nexmark)

    run = sub.add_parser("run", help="run a job: MODULE:FUNCTION returning (dag, sources, sinks)",
                         description="Run a DAG from its sources into its sinks, with checkpoints and recovery. "
                                     "Run it again with the same --checkpoint-dir to resume after a crash.",
                         formatter_class=_Formatter)
    run.add_argument("target", help="MODULE:FUNCTION or path/to/file.py:FUNCTION; the function returns "
                                    "(dag, sources, sinks) or a dict with those keys")
    run.add_argument("--checkpoint-dir", default=None, help="directory of checkpoints (enables exactly-once resume)")
    every = run.add_mutually_exclusive_group()
    every.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="BATCHES",
                       help="checkpoint every this many batches")
    every.add_argument("--checkpoint-interval", type=_positive_seconds, default=None, metavar="SECONDS",
                       help="checkpoint every this many seconds (default: 10 with --checkpoint-dir)")
    run.add_argument("--keep", type=_positive_int, default=3, help="checkpoints kept")
    run.add_argument("--no-progress", action="store_true", help="no progress bar and no compile indicator")
    run.add_argument("--parallelism", type=_parallelism, default=1, metavar="N",
                     help="key shards: threads of this process (or of each Ray worker), or auto for every core "
                          "(default: 1)")
    run.add_argument("--partitions", type=_positive_int, default=None, metavar="P",
                     help="run partitioned by key on P Ray workers (needs the ray extra)")
    run.add_argument("--address", default=None,
                     help="address of a running Ray cluster (host:6379 or auto; default: a local Ray)")
    run.set_defaults(func=_run)

    q = sub.add_parser("sql", help="run Flink-style SQL over Parquet or Arrow files (lj.sql)",
                       description="Compile SQL with lj.sql and run it over files: results are printed, shown as "
                                   "they are emitted (--watch) or written to Parquet directories (--sink).")
    q.add_argument("query", help="a .sql file, or the SQL text in quotes")
    q.add_argument("--source", type=_named, action="append", default=[], metavar="NAME=PATH",
                   help="a table the SQL reads: a .parquet or .arrow file (repeat for several)")
    q.add_argument("--table", type=_named, action="append", default=[], metavar="NAME=PATH",
                   help="a bounded table read whole for lookup joins (JOIN NAME FOR SYSTEM_TIME AS OF "
                        "a.p_time): a .parquet or .arrow file")
    q.add_argument("--sink", type=_named, action="append", default=[], metavar="NAME=DIR",
                   help="write sink NAME ('out' for a SELECT) to a Parquet directory, exactly once")
    q.add_argument("--checkpoint-dir", default=None, help="directory of checkpoints (enables exactly-once resume)")
    q.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="BATCHES",
                   help="checkpoint after every BATCHES batches")
    q.add_argument("--watch", action="store_true", help="print result rows as they are emitted")
    q.add_argument("--explain", action="store_true", help="print the plan and stop")
    q.add_argument("--rows", type=_positive_int, default=10, help="result rows to print per sink")
    q.add_argument("--no-progress", action="store_true", help="no progress bar and no compile indicator")
    q.set_defaults(func=_sql)

    warm = sub.add_parser("warmup", help="compile the library's plans and kernels (and a job's) into the disk cache",
                          description="Pay the first compile once: compile the demo's plan, the Nexmark "
                                      "generator and the plans of the Nexmark queries chosen (q5, what "
                                      "`laminar-jit nexmark` runs, by default), and with JOB arguments the plans "
                                      "of those jobs, into the on-disk cache, so later runs load machine code "
                                      "instead of compiling.",
                          formatter_class=_Formatter)
    warm.add_argument("jobs", nargs="*", metavar="JOB",
                      help="MODULE:FUNCTION or path/to/file.py:FUNCTION returning (dag, sources, sinks); "
                           "its DAG's plans are compiled (its sources are not read)")
    warm.add_argument("--queries", type=_query_list, default="q5",
                      help="Nexmark queries to compile: comma-separated names, all (minutes: the join "
                           "queries q3, q4 and q8 compile for one to three minutes each) or none")
    warm.add_argument("--no-demo", action="store_true", help="skip the demo DAG")
    warm.set_defaults(func=_warmup)
    return parser


def _check_arguments(args: argparse.Namespace) -> str | None:
    """Problems argparse's types cannot see (paths, combinations), before any work."""
    if args.command == "nexmark" and args.out is not None:
        if args.query == "all":
            return "--out needs one query, not --query all"
        problem = output_file_problem(args.out)
        if problem:
            return f"--out: {problem}"
    if args.command == "sql":
        for flag, pairs in (("--source", args.source), ("--table", args.table)):
            for name, path in pairs:
                if not os.path.isfile(path):
                    return f"{flag} {name}={path}: no such file"
        for name, path in args.sink:
            problem = directory_problem(path)
            if problem:
                return f"--sink {name}={path}: {problem}"
    if args.command in ("run", "sql") and args.checkpoint_dir is not None:
        problem = directory_problem(args.checkpoint_dir)
        if problem:
            return f"--checkpoint-dir: {problem}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``laminar-jit`` command; returns the exit status.

    A mistake in the arguments exits with status 2, an error of the job
    (``lj.DagError``, ``KernelError``, ``DataError``, ``CheckpointError``, an
    ``OSError`` such as a missing input file) with status 1; both print one
    line on standard error, never a traceback. Ctrl-C exits with 130.
    """
    parser = build_parser()
    if isinstance(argv, str):
        argv = argv.split()
    args = parser.parse_args(argv)
    sub = f"{PROG} {args.command}"
    problem = _check_arguments(args)
    if problem:
        print(f"{sub}: error: {problem}", file=sys.stderr)
        return 2
    from laminar_jit._progress import show_compile_progress
    from laminar_jit.errors import LaminarError

    quiet = (getattr(args, "no_progress", False)
             or os.environ.get("LAMINAR_JIT_PROGRESS", "").strip().lower() in ("0", "false", "no", "off"))
    previous = show_compile_progress(not quiet)  # say what a compile is doing, on a terminal or not
    try:
        return args.func(args)
    except _UsageError as e:
        print(f"{sub}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except LaminarError as e:
        print(f"{sub}: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:
        what = e.strerror or _one_line(e)
        print(f"{sub}: error: {what}{f': {e.filename!r}' if e.filename else ''}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:
        if args.command not in ("run", "sql"):  # a bug of the library, not a user mistake: keep the traceback
            raise
        print(f"{sub}: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)  # the job's own mistake
        return 1
    except KeyboardInterrupt:
        print(f"\n{sub}: interrupted", file=sys.stderr)
        return 130
    finally:
        show_compile_progress(previous)


def _one_line(error: BaseException) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
