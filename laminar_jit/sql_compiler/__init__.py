"""Streaming SQL: Flink-style SQL compiled to the same DAG the Python API builds.

``lj.sql(text, sources={...})`` parses ``text`` with sqlglot and plans each
``SELECT`` as operators — filters and computed columns as kernels, window
table functions as windows, ``GROUP BY`` as a window aggregate or an
updating :class:`~laminar_jit.GroupAggregate` — into one
:class:`~laminar_jit.StreamingDag`, which runs exactly as a hand-built one.
"""

from __future__ import annotations

import re

from sqlglot import exp

from ..dag import StreamingDag
from ..errors import SqlError
from ._lookup import proctime_tables
from ._plan import Planner
from ._text import parse

__all__ = ["explain", "sql"]


def sql(text: str, sources: dict, udfs: dict | None = None) -> StreamingDag:
    """Compile Flink-style SQL into a :class:`~laminar_jit.StreamingDag`.

    Parameters
    ----------
    text : str
        One or more statements separated by ``;``:

        * ``CREATE TABLE t (..., WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)``
          declares the event time of source ``t`` (its columns come from
          ``sources``); a ``CREATE TABLE`` of a sink, ``WITH (...)`` connector
          options included, is read and ignored (the sink's columns are the
          query's);
        * ``CREATE FUNCTION f AS '...'`` names a kernel passed in ``udfs``;
        * ``CREATE VIEW v AS SELECT ...`` names a query that later ones read
          like a table (planned once, shared);
        * ``SELECT ...`` writes its rows to sink ``"out"``; ``INSERT INTO s
          SELECT ...`` to sink ``s`` (several make one DAG with several sinks).

        A ``SELECT`` reads a table, a view, a subquery, one window table
        function over a table — ``TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts),
        INTERVAL '10' SECOND))``, ``HOP(TABLE t, DESCRIPTOR(ts), slide,
        size)``, ``CUMULATE(TABLE t, DESCRIPTOR(ts), step, size)``,
        ``SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap)`` — or
        a join of these (interval, regular, window — inner or outer —, ASOF,
        temporal, lookup, semi and anti; several tables two at a time), with ``WHERE``,
        computed columns, ``GROUP BY
        window_start, window_end[, keys]`` (a window aggregate), Flink's
        ``GROUP BY k, TUMBLE(ts, size)`` or ``GROUP BY keys`` (an updating
        result, with ``op``; no ``GROUP BY``: one updating row), ``HAVING``,
        and ``COUNT``, ``COUNT(DISTINCT)``, ``SUM``, ``AVG``, ``MIN``, ``MAX``
        (each with ``FILTER (WHERE ...)``; ``COUNT``, ``COUNT(DISTINCT)``,
        ``MIN`` and ``MAX`` also of strings, ordered by their bytes), ``VAR_POP``,
        ``VAR_SAMP``, ``STDDEV_POP`` and ``STDDEV_SAMP`` (in an updating ``GROUP
        BY`` over ``SUM(x * x)``, ``SUM(x)`` and ``COUNT(x)``, as Flink's planner
        writes them), in window aggregates also ``FIRST_VALUE`` and
        ``LAST_VALUE`` (by event time), and
        ``APPROX_COUNT_DISTINCT`` (exact). ``TUMBLE`` and ``HOP`` take an optional offset.
        ``SELECT DISTINCT`` groups by its columns; ``WITH a AS (...)`` names
        a query for its statement alone; ``q1 UNION ALL q2`` merges two
        queries of the same columns.
    sources : dict
        Table name -> ``pyarrow.Schema`` or a source (anything with ``.schema``).
        A ``pyarrow.Table`` is also a bounded table for lookup joins: ``FROM
        (SELECT *, PROCTIME() AS pt FROM s) x JOIN t FOR SYSTEM_TIME AS OF x.pt
        ON <expression of x> = t.key`` finds each row's key in ``t`` (whose
        keys must be unique). A source read by a ``SELECT`` that calls
        ``PROCTIME()`` runs on processing time (``lj.ProcessingTime()``).
    udfs : dict, optional
        Function name -> kernel (a Numba-compilable scalar function), callable
        by name in expressions, or -> :class:`~laminar_jit.UserAggregate`,
        callable by name as an aggregate (``rms(price)``).

    Returns
    -------
    StreamingDag
        Sources named as the tables, sinks ``"out"`` or as ``INSERT INTO`` names.

    Raises
    ------
    SqlError
        Text that does not parse or a construct that is not supported, with
        its line and column where known.
    SchemaError
        An unknown table or column.

    Examples
    --------
    >>> import pyarrow as pa, laminar_jit as lj
    >>> bids = pa.schema([("ts", pa.int64()), ("auction", pa.int64()), ("price", pa.float64())])
    >>> dag = lj.sql(\"\"\"
    ...     CREATE TABLE bids (WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
    ...     SELECT window_start, auction, COUNT(*) AS n, MAX(price) AS top
    ...     FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND))
    ...     WHERE price > 10 GROUP BY window_start, window_end, auction\"\"\", sources={"bids": bids})
    >>> dag.sinks
    ['out']
    """
    statements, watermarks, sessions = parse(text)
    try:
        return _plan(statements, watermarks, sessions, sources, udfs)
    except SqlError as e:
        if e.line is not None or not e.construct:
            raise
        place = _locate(text, e.construct)
        if place is None:
            raise
        raise SqlError(str(e), *place, construct=e.construct) from None


def _locate(text: str, construct: str) -> tuple[int, int] | None:
    """Line and column (1-based) where ``construct`` first appears in ``text`` (case and spacing aside), else
    where its leading word does; None when neither does. Planning errors name a construct, not a place."""
    words = construct.split()
    probes = [r"\s+".join(map(re.escape, words))] if words else []
    lead = re.match(r"[A-Za-z_]+", construct.strip())
    if lead:
        probes.append(rf"\b{re.escape(lead.group())}\b")
    for probe in probes:
        m = re.search(probe, text, flags=re.IGNORECASE)
        if m:
            line_start = text.rfind("\n", 0, m.start()) + 1
            return text.count("\n", 0, m.start()) + 1, m.start() - line_start + 1
    return None


def _plan(statements, watermarks, sessions, sources, udfs) -> StreamingDag:
    planner = Planner(sources, watermarks, dict(udfs or {}), sessions, proctime_tables(statements))
    for statement in statements:
        if isinstance(statement, exp.Create) and statement.kind == "VIEW":
            target = statement.this
            planner.view(target.this.name if isinstance(target, exp.Schema) else target.name, statement.expression)
            continue
        if isinstance(statement, exp.Create) and statement.kind == "FUNCTION":
            name = statement.this.name  # Flink's CREATE FUNCTION f AS 'class': the kernel comes from udfs=
            if name not in planner.udfs:
                raise SqlError(f"SQL: CREATE FUNCTION {name}: pass its kernel as lj.sql(..., udfs={{{name!r}: "
                               "kernel}) (a class name cannot be loaded)", construct=f"CREATE FUNCTION {name}")
            continue
        if isinstance(statement, exp.Create):  # a source's event time, or a sink's columns (connector options ignored)
            if statement.kind != "TABLE":
                raise SqlError(f"SQL: CREATE {statement.kind} is not supported yet", construct=f"CREATE {statement.kind}")
            continue
        if isinstance(statement, exp.Insert):
            target = statement.this
            name = target.this.name if isinstance(target, exp.Schema) else target.name
            planner.select(statement.expression, name)
        elif isinstance(statement, (exp.Select, exp.SetOperation)):
            planner.select(statement, "out")
        else:
            raise SqlError(f"SQL: {statement.key.upper()} statements are not supported", construct=statement.key.upper())
    return planner.builder.build()


def explain(text: str, sources: dict, udfs: dict | None = None) -> str:
    """The plan :func:`sql` makes of ``text``: each operator, what it reads, keys, windows and watermarks.

    Parameters
    ----------
    text, sources, udfs
        As for :func:`sql`.

    Returns
    -------
    str
        One line per node in execution order (``dag.to_dot()`` draws the same).
    """
    dag = sql(text, sources, udfs)
    lines = []
    for name in dag.execution_order:
        node = dag.node(name)
        inputs = ", ".join(dag.node(u).name for u, _ in node.inputs)
        if node.kind == "source":
            what = f"source {list(node.schema.names)}"
            if node.op.event_time:
                what += f", event time {node.op.event_time}, watermark {node.op.watermark!r}"
        elif node.kind == "sink":
            what = "sink"
        else:
            what = node.op.label()
        lines.append(f"{name}: {what}" + (f"  <- {inputs}" if inputs else ""))
    return "\n".join(lines)
