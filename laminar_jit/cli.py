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


def _format(table) -> str:
    cols = table.column_names
    rows = [[str(v) for v in r.values()] for r in table.to_pylist()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    line = "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join([line] + body)


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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``laminar-jit`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
