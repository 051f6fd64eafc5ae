"""Queries made of queries: ``WITH`` (named subqueries), ``UNION ALL``, ``SELECT DISTINCT`` as a ``GROUP BY``,
and the variances of an updating ``GROUP BY`` as expressions over sums."""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from ..errors import SchemaError, SqlError
from ..ops import Project
from ._stream import Stream

__all__ = ["ComposePlanning", "NOT_STREAMING", "distinct_as_group_by", "reduce_variances"]

#: Clauses a streaming SELECT cannot have, and what to write instead.
NOT_STREAMING = {
    "order": "an unbounded stream has no last row to sort after; rank rows with ROW_NUMBER() OVER (PARTITION BY "
             "... ORDER BY ...) AS rownum ... WHERE rownum <= N (a Top-N), or sort the sink's table",
    "limit": "an unbounded stream has no end to count to; keep the best rows per key with a Top-N "
             "(ROW_NUMBER() ... <= N)",
    "qualify": "QUALIFY is not supported; filter the row number in an outer query (WHERE rownum <= N)",
}


#: Variance aggregates: (divided by n - 1, square root).
_VARIANCES = {exp.VariancePop: (False, False), exp.Variance: (True, False), exp.StddevPop: (False, True),
              exp.StddevSamp: (True, True), exp.Stddev: (True, True)}


def reduce_variances(node: exp.Expression) -> exp.Expression:
    """``node`` with each variance or standard deviation written over ``SUM(x * x)``, ``SUM(x)`` and ``COUNT(x)``.

    The reduction Flink's planner applies (Calcite's ``AggregateReduceFunctionsRule``):
    ``VAR_POP(x) = (SUM(x * x) - SUM(x) * SUM(x) / COUNT(x)) / COUNT(x)``, ``VAR_SAMP``
    divides by ``COUNT(x) - 1`` (null for one value), ``STDDEV_*`` is its square root.
    Sums retract as rows are retracted, so an updating ``GROUP BY`` keeps them
    (a window aggregate keeps Welford's running mean and square distance
    instead, which loses no precision when values lie far from zero).
    A ``FILTER (WHERE c)`` goes to each of the three.
    """
    def rewrite(n):
        cond, call = (n.expression, n.this) if isinstance(n, exp.Filter) else (None, n)
        if type(call) not in _VARIANCES or call.this is None or isinstance(call.this, exp.Distinct):
            return n  # (VAR_POP(DISTINCT x) is refused where aggregates are planned)
        sample, root = _VARIANCES[type(call)]

        def agg(cls, arg):
            a = cls(this=arg)
            return exp.Filter(this=a, expression=cond.copy()) if cond is not None else a

        x = exp.cast(call.this.copy(), exp.DataType.build("DOUBLE"))
        n_ = agg(exp.Count, x.copy())
        spread = exp.Sub(this=agg(exp.Sum, exp.Mul(this=x.copy(), expression=x.copy())),
                         expression=exp.Div(this=exp.Mul(this=agg(exp.Sum, x.copy()), expression=agg(exp.Sum, x.copy())),
                                            expression=n_.copy()))
        below = exp.Nullif(this=exp.Sub(this=n_.copy(), expression=exp.Literal.number(1)),
                           expression=exp.Literal.number(0)) if sample else n_.copy()
        variance = exp.Div(this=exp.Paren(this=spread), expression=below)
        if root:  # (a spread rounded below zero is zero)
            return exp.Sqrt(this=exp.Greatest(this=variance, expressions=[exp.Literal.number(0)]))
        return exp.Paren(this=variance)

    return node.transform(rewrite)


class ComposePlanning:
    """The :class:`~laminar_jit.sql_compiler._plan.Planner`'s planning of WITH and UNION ALL."""

    def _with(self, query: exp.Expression, keep_time: bool) -> Stream:
        """``WITH a AS (...), b AS (...) SELECT ...``: each named query a view seen by this query alone."""
        with_ = query.args["with_"]
        if with_.args.get("recursive"):
            raise SqlError("SQL: WITH RECURSIVE has no streaming meaning here (a view cannot read its own rows)",
                           construct="RECURSIVE")
        query = query.copy()
        query.set("with_", None)
        hidden = {}
        for cte in with_.expressions:  # (a later one may read an earlier one, or shadow a view or source)
            name = cte.alias
            if name not in hidden:
                hidden[name] = (self.views.get(name), self.planned.pop(name, _MISSING))
            self.views[name] = cte.this
        try:
            return self.plan(query, keep_time)
        finally:
            for name, (view, planned) in hidden.items():
                self.views.pop(name)
                self.planned.pop(name, None)
                if view is not None:
                    self.views[name] = view
                if planned is not _MISSING:
                    self.planned[name] = planned

    def _union(self, query: exp.Union, keep_time: bool) -> Stream:
        """``a UNION ALL b``: both queries' rows into one stream (a projection fed by both)."""
        if not isinstance(query, exp.Union):
            what = query.key.upper()
            raise SqlError(f"SQL: {what} compares every row of two unbounded streams, which needs them all kept; "
                           "write [NOT] EXISTS (SELECT ... WHERE ... AND a time bound), a semi or anti join",
                           construct=what)
        if query.args.get("distinct"):
            raise SqlError("SQL: UNION (without ALL) drops duplicates of an unbounded stream, which needs every row "
                           "kept; write UNION ALL, or GROUP BY the columns for one row per value", construct="UNION")
        for clause in ("order", "limit"):
            if query.args.get(clause):
                raise SqlError(f"SQL: {clause.upper()}: {NOT_STREAMING[clause]}", construct=clause.upper())
        left, right = self.plan(query.this, keep_time), self.plan(query.expression, keep_time)
        if [f.name for f in left.schema] != [f.name for f in right.schema] or \
                [f.type for f in left.schema] != [f.type for f in right.schema]:
            raise SchemaError("SQL UNION ALL: both queries must give the same columns, in order, of the same "
                              f"types: {_columns(left.schema)} and {_columns(right.schema)}")
        if left.event_time != right.event_time or left.changelog != right.changelog:
            raise SqlError("SQL UNION ALL: both queries must have the same event time column and both be "
                           "append-only (or both updating)", construct="UNION")
        name = self._name("union")
        self.builder.operator(name, Project(list(left.schema.names)))
        self.builder.connect(left.node, name).connect(right.node, name)
        delay = None if left.delay is None or right.delay is None else max(left.delay, right.delay)
        times = {c: o for c, o in left.times.items() if right.times.get(c) == o}
        grain = left.grain if left.grain == right.grain else None
        return Stream(name, left.schema, False, left.event_time, left.changelog, times, grain, delay,
                      left.proctime and right.proctime)


_MISSING = object()


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name} {f.type}" for f in schema)


def distinct_as_group_by(query: exp.Select) -> exp.Select:
    """``SELECT DISTINCT a, b ...`` as ``SELECT a, b ... GROUP BY a, b`` (one row per value: a window's
    rows per window, else an updating result)."""
    if query.args["distinct"].args.get("on") is not None:
        raise SqlError("SQL: SELECT DISTINCT ON is not supported; keep one row per key with ROW_NUMBER() ... = 1",
                       construct="DISTINCT ON")
    if query.args.get("group") is not None or any(isinstance(n, exp.AggFunc) for item in query.expressions
                                                   for n in item.walk()):
        raise SqlError("SQL: SELECT DISTINCT with GROUP BY or aggregates is not supported yet; GROUP BY the "
                       "columns", construct="DISTINCT")
    query = query.copy()
    query.set("distinct", None)
    keys = []
    for item in query.expressions:
        if isinstance(item, exp.Star):
            raise SqlError("SQL: SELECT DISTINCT * is not supported; name the columns", construct="DISTINCT")
        keys.append((item.this if isinstance(item, exp.Alias) else item).copy())
    query.set("group", exp.Group(expressions=keys))
    return query
