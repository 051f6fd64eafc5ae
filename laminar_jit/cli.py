"""The ``laminar-jit`` command line."""

from __future__ import annotations

import argparse
import sys
import time


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _demo(args: argparse.Namespace) -> int:
    import laminar_jit as lj
    from laminar_jit.demo import demo_dag, generate_bids

    print(f"generating {args.events:,} bids …", flush=True)
    table = generate_bids(args.events, seed=args.seed)
    batches = table.to_batches(max_chunksize=args.batch_size)

    t0 = time.perf_counter()
    dag = demo_dag()
    ex = lj.DagExecutor(dag)
    ex.process_batch("bids", batches[0].slice(0, 1))  # compile (or load from the on-disk cache)
    ex.take_all_sink_outputs()
    t_compile = time.perf_counter() - t0

    ex = lj.DagExecutor(dag)
    t0 = time.perf_counter()
    for batch in batches:
        ex.process_batch("bids", batch)
    ex.finish()
    outputs = ex.take_all_sink_outputs()
    elapsed = time.perf_counter() - t0

    print("\nDAG:", " → ".join(dag.execution_order))
    for sink, out in outputs.items():
        print(f"\n{sink}: {out.num_rows:,} rows; first {min(args.rows, out.num_rows)}:")
        print(_format(out.slice(0, args.rows)))
    m = ex.metrics
    print(f"\nevents: {m.events_in:,} in {m.batches:,} batches of ≤{args.batch_size:,}")
    print(f"throughput: {m.events_in / elapsed / 1e6:,.1f} M events/s ({elapsed * 1e3:,.1f} ms)")
    print(f"compile (or load from the on-disk cache) + first batch: {t_compile:.2f} s")
    print(f"metrics: {m}")
    return 0


def _nexmark(args: argparse.Namespace) -> int:
    from laminar_jit import nexmark

    names = list(nexmark.QUERIES) if args.query == "all" else [args.query]
    if args.out is not None and len(names) > 1:
        print("laminar-jit nexmark: --out needs one query, not --query all", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    events = nexmark.generate(args.events, seed=args.seed, max_delay=args.max_delay, chunk_size=args.batch_size)
    t_gen = time.perf_counter() - t0
    print(f"generated {events!r} in {t_gen:.2f} s ({args.events / t_gen / 1e6:,.1f} M events/s), "
          f"batches of ≤{args.batch_size:,} events", flush=True)
    runs = []
    for name in names:
        r = nexmark.run(name, events, max_delay=args.max_delay)
        runs.append(r)
        if len(names) == 1:
            print(f"\n{name}: {r.result.num_rows:,} result rows; first {min(args.rows, r.result.num_rows)}:")
            print(_format(r.result.slice(0, args.rows)))
    print(f"\n{'query':<6} {'result rows':>12} {'M events/s':>11} {'ms':>9} {'compile s':>10}")
    for r in runs:
        print(f"{r.name:<6} {r.result.num_rows:>12,} {r.events_per_second / 1e6:>11,.1f} {r.seconds * 1e3:>9,.1f} "
              f"{r.compile_seconds:>10.2f}")
    print("events/s counts all generated events (persons, auctions and bids), as Nexmark does; "
          "compile = build + compile or load from the disk cache + the first chunk")
    if args.out is not None:
        import pyarrow.parquet as pq

        pq.write_table(runs[0].result, args.out)
        print(f"wrote {runs[0].result.num_rows:,} rows to {args.out}")
    return 0


def _query_name(text: str) -> str:
    from laminar_jit import nexmark

    if text != "all" and text not in nexmark.QUERIES:
        raise argparse.ArgumentTypeError(f"unknown query {text!r}; choose one of {', '.join(nexmark.QUERIES)} or all")
    return text


def _format(table) -> str:
    cols = table.column_names
    rows = [[str(v) for v in r.values()] for r in table.to_pylist()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join([line] + body)


def _load_target(target: str):
    """Import ``module:function`` (or ``path/to/file.py:function``) and call it."""
    import importlib
    import importlib.util
    import os

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"laminar-jit run: target {target!r} is not MODULE:FUNCTION "
                         "(e.g. 'pipelines.bids:build' or 'jobs/bids.py:build')")
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise SystemExit(f"laminar-jit run: no file {module_name!r}")
            spec = importlib.util.spec_from_file_location(os.path.basename(module_name)[:-3], module_name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise SystemExit(f"laminar-jit run: cannot import {module_name!r}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise SystemExit(f"laminar-jit run: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise SystemExit(f"laminar-jit run: {target!r} is a {type(fn).__name__}, not a function")
    job = fn()
    if isinstance(job, dict):
        job = tuple(job.get(k) for k in ("dag", "sources", "sinks"))
    if not (isinstance(job, tuple) and len(job) == 3 and isinstance(job[1], dict) and isinstance(job[2], dict)):
        raise SystemExit(f"laminar-jit run: {target}() must return (dag, sources, sinks) or a dict with those keys, "
                         f"sources and sinks being dicts by node name; it returned {type(job).__name__}")
    return job


def _run(args: argparse.Namespace) -> int:
    import laminar_jit as lj

    dag, sources, sinks = _load_target(args.target)
    cluster = {} if args.parallelism is None and args.address is None else {
        "parallelism": args.parallelism or 1, "address": args.address}
    try:
        stats = lj.run(dag, sources=sources, sinks=sinks, checkpoint_dir=args.checkpoint_dir,
                       checkpoint_every=args.checkpoint_every, checkpoint_interval=args.checkpoint_interval,
                       keep=args.keep, progress=not args.no_progress, **cluster)
    except (lj.LaminarError, ValueError, TypeError) as e:
        print(f"laminar-jit run: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(stats)
    return 130 if stats.interrupted else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="laminar-jit",
        description="Embedded stream processing: Arrow batches through a compiled DAG of Numba kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a multi-operator DAG over generated bids and report events/s",
                          description="Run the demo DAG (filter, map, multicast, union) over generated bids.")
    demo.add_argument("--events", type=_positive_int, default=5_000_000, help="number of bids (default 5,000,000)")
    demo.add_argument("--batch-size", type=_positive_int, default=65_536, help="rows per batch (default 65,536)")
    demo.add_argument("--rows", type=_positive_int, default=5, help="result rows to print per sink")
    demo.add_argument("--seed", type=int, default=42, help="random seed of the generator")
    demo.set_defaults(func=_demo)

    nx = sub.add_parser("nexmark", help="run Nexmark queries over generated events and report events/s",
                        description="Generate Nexmark events in memory, then run a query (or all) over them "
                                    "and report result rows, events/s and compile time.")
    nx.add_argument("--query", type=_query_name, default="q5", help="q0, q1, q2, q3, … or all (default q5)")
    nx.add_argument("--events", type=_positive_int, default=10_000_000,
                    help="events over the three streams (default 10,000,000)")
    nx.add_argument("--batch-size", type=_positive_int, default=65_536,
                    help="events per generated chunk; each chunk is one batch per stream (default 65,536)")
    nx.add_argument("--max-delay", type=int, default=100, help="out-of-orderness bound in ms (default 100)")
    nx.add_argument("--seed", type=int, default=0, help="random seed of the generator")
    nx.add_argument("--rows", type=_positive_int, default=5, help="result rows to print (one query)")
    nx.add_argument("--out", default=None, help="write the result to this Parquet file (one query)")
    nx.set_defaults(func=_nexmark)

    run = sub.add_parser("run", help="run a job: MODULE:FUNCTION returning (dag, sources, sinks)",
                         description="Run a DAG from its sources into its sinks, with checkpoints and recovery. "
                                     "Run it again with the same --checkpoint-dir to resume after a crash.")
    run.add_argument("target", help="MODULE:FUNCTION or path/to/file.py:FUNCTION; the function returns "
                                    "(dag, sources, sinks) or a dict with those keys")
    run.add_argument("--checkpoint-dir", default=None, help="directory of checkpoints (enables exactly-once resume)")
    every = run.add_mutually_exclusive_group()
    every.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="BATCHES",
                       help="checkpoint every this many batches")
    every.add_argument("--checkpoint-interval", type=float, default=None, metavar="SECONDS",
                       help="checkpoint every this many seconds (default 10 with --checkpoint-dir)")
    run.add_argument("--keep", type=_positive_int, default=3, help="checkpoints kept (default 3)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--parallelism", type=_positive_int, default=None, metavar="N",
                     help="run partitioned by key on N Ray workers (needs the ray extra)")
    run.add_argument("--address", default=None,
                     help="address of a running Ray cluster (host:6379 or auto; default: a local Ray)")
    run.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``laminar-jit`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
