"""Joins in SQL: interval, regular, ASOF and temporal joins, and ``[NOT] EXISTS`` / ``IN`` as semi and anti joins."""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from ..errors import SchemaError, SqlError
from ..ops import Project
from ..ops.joins import AsofJoin, IntervalJoin, TemporalJoin, WindowJoin
from ._stream import Stream, conjuncts, did_you_mean
from ._text import interval_ms

__all__ = ["JoinPlanning", "subquery_test"]

#: The bound of a join without a time condition: every pair matches (state is kept for good, as in any engine).
_FOREVER_MS = 365 * 1000 * 86_400_000
#: The columns a window join appends.
_WINDOW_BOUNDS = ("window_start", "window_end")


class JoinPlanning:
    """The join planning of :class:`~laminar_jit.sql_compiler._plan.Planner` (a mixin: it uses the planner's
    sources, filters, projections and node names)."""

    def _join(self, query: exp.Select) -> Stream:
        """``FROM a JOIN b ON a.k = b.k [AND b.ts BETWEEN a.ts - INTERVAL .. AND a.ts + INTERVAL ..]``: an interval
        join, or without the time condition a regular join (every pair, whenever its second row arrives). Each
        side carries only the columns the query reads; ``WHERE`` conjuncts on one side filter it first."""
        joins = query.args["joins"]
        if len(joins) != 1 or query.args.get("group") or any(query.find_all(exp.AggFunc)):
            raise SqlError("SQL: one JOIN of two tables, without GROUP BY, is supported so far", construct="JOIN")
        join = joins[0]
        how = {"": "inner", "LEFT": "left", "RIGHT": "right", "FULL": "full"}.get((join.side or "").upper())
        if how is None or (join.kind or "").upper() not in ("", "INNER", "OUTER") or join.args.get("using") \
                or join.args.get("on") is None:
            raise SqlError(f"SQL: {join.sql()[:60]}: an [INNER | LEFT | RIGHT | FULL] JOIN ... ON is supported",
                           construct="JOIN")
        source = query.args.get("from_") or query.args.get("from")
        sides = [source.this, join.this]
        aliases = [t.alias_or_name for t in sides]
        windows = [self._windowed_side(t) for t in sides]  # (SELECT * FROM TABLE(TUMBLE(...))) L: a window join
        tables = [w[0] if w is not None else t for t, w in zip(sides, windows)]
        if not all(isinstance(t, exp.Table) and isinstance(t.this, exp.Identifier) for t in tables):
            raise SqlError("SQL: a JOIN of two tables, or of two tumbling windows (SELECT * FROM TABLE(TUMBLE(...))), "
                           "is supported so far", construct="JOIN")
        windowed = windows[0] is not None and windows[1] is not None
        if (windows[0] is None) != (windows[1] is None) or (windowed and windows[0][1] != windows[1][1]):
            raise SqlError("SQL: a window join joins two TUMBLE windows of one size", construct="JOIN")
        if aliases[0] == aliases[1]:
            raise SqlError(f"SQL: give the two sides of the join different names (FROM {aliases[0]} AS a JOIN "
                           f"{aliases[1]} AS b)", construct="JOIN")
        schemas, wms = [], []
        for t in tables:
            if t.name in self.views:  # a view: its planned rows, their event time
                schema, event_time = self._source(t.name, t).schema, self._source(t.name, t).event_time
            elif t.name in self.schemas:
                schema, event_time = self.schemas[t.name], (self.watermarks.get(t.name) or (None,))[0]
            else:
                raise SchemaError(f"SQL: unknown table {t.name!r}; sources are {sorted(self.schemas)}"
                                  f"{did_you_mean(t.name, [*self.schemas, *self.views])}")
            if windowed:  # the window's bounds, as the window join appends them
                ts_type = schema.field(event_time).type if event_time in schema.names else pa.int64()
                for bound in _WINDOW_BOUNDS:
                    schema = schema.append(pa.field(bound, ts_type))
            schemas.append(schema)
            wms.append((event_time, 0) if event_time is not None else None)
        side_of = _Sides(aliases, schemas)
        asof = (join.args.get("method") or "").upper() == "ASOF"
        version = join.this.args.get("version")
        keys, bounds, direction = [], None, None
        for c in conjuncts(join.args["on"]):
            pair = side_of.key_pair(c)
            if pair is not None:
                keys.append(pair)
            elif isinstance(c, exp.Between) and not asof and version is None:
                if bounds is not None:
                    raise SqlError("SQL: one time condition per join", construct=c.sql())
                bounds = side_of.time_bounds(c, wms)
            elif asof and isinstance(c, (exp.GTE, exp.LTE, exp.GT, exp.LT)) and direction is None:
                direction = side_of.asof_direction(c, wms)
            else:
                raise SqlError(f"SQL: JOIN ... ON {c.sql()}: equality of keys and one time condition ('b.ts BETWEEN "
                               "a.ts - INTERVAL ... AND a.ts + INTERVAL ...'; ASOF: 'a.ts >= b.ts') are supported",
                               construct=c.sql())
        if windowed:
            if sorted(k for k in keys if k[0] in _WINDOW_BOUNDS) != [(b, b) for b in sorted(_WINDOW_BOUNDS)]:
                raise SqlError("SQL: a window join matches L.window_start = R.window_start AND L.window_end = "
                               "R.window_end", construct="ON")
            if how != "inner":
                raise SqlError("SQL: window joins are INNER so far", construct="JOIN")
            keys = [k for k in keys if k[0] not in _WINDOW_BOUNDS]
        if not keys:
            raise SqlError("SQL: a join needs equal key columns (ON a.k = b.k [AND ...])", construct="ON")
        left_key = [k[0] for k in keys] if len(keys) > 1 else keys[0][0]
        right_key = [k[1] for k in keys] if len(keys) > 1 else keys[0][1]
        if asof and direction is None:
            raise SqlError("SQL: an ASOF JOIN needs its time condition, e.g. a.ts >= b.ts", construct="ASOF")
        if (asof or version is not None) and how not in ("inner", "left"):
            raise SqlError("SQL: ASOF and temporal joins are INNER or LEFT", construct="JOIN")
        if version is not None:
            at = version.expression
            if not (isinstance(at, exp.Column) and side_of.resolve(at) == (0, (wms[0] or ("",))[0])):
                raise SqlError(f"SQL: FOR SYSTEM_TIME AS OF {at.sql()}: use the left table's event time",
                               construct="FOR SYSTEM_TIME AS OF")
        # columns each side must carry: what the query reads, and its event time
        read = [set(), set()]
        inside = {id(c) for side, w in zip(sides, windows) if w is not None for c in side.find_all(exp.Column)}
        for column in query.find_all(exp.Column):
            if id(column) in inside:  # (a window subquery's own columns)
                continue
            side, name = side_of.resolve(column)
            read[side].add(name)
        streams = []
        where = query.args.get("where")
        pushed, after = [[], []], []
        for c in conjuncts(where.this) if where is not None else []:
            sides = {side_of.resolve(col)[0] for col in c.find_all(exp.Column)}
            (pushed[sides.pop()] if len(sides) == 1 and how == "inner" else after).append(c)
        for j, t in enumerate(tables):
            wm = wms[j]
            if wm is None:
                raise SqlError(f"SQL: a joined table needs an event time: CREATE TABLE {t.name} (..., WATERMARK FOR "
                               "ts AS ts - INTERVAL '5' SECOND)", construct="JOIN")
            stream = self._source(t.name, t)
            if windowed and windows[j][2] is not None:  # the window subquery's own WHERE
                stream = self._filter(stream, windows[j][2], "WHERE")
            for c in pushed[j]:
                stream = self._filter(stream, _unqualified(c.copy()), "WHERE")
            columns = [n for n in stream.schema.names if (n in read[j] and n not in _WINDOW_BOUNDS) or n == wm[0]]
            streams.append(self._add(stream, Project(columns), "side"))
        name = self._name("join")
        same_names = all(a == b for a, b in keys)
        if windowed:
            op = WindowJoin(windows[0][1], left_key, right_key)
        elif version is not None or (asof and direction == "backward" and not same_names):
            op = TemporalJoin(left_key, right_key, how=how)
        elif asof:
            if not same_names:
                raise SqlError("SQL: a forward ASOF JOIN matches keys of one name on both sides", construct="ASOF")
            op = AsofJoin(left_key, direction=direction, how=how)
        else:
            lower, upper = bounds if bounds is not None else (-_FOREVER_MS, _FOREVER_MS)
            op = IntervalJoin(left_key, right_key, lower=lower, upper=upper, how=how)
        self.builder.operator(name, op)
        self.builder.connect(streams[0].node, name, port="left").connect(streams[1].node, name, port="right")
        bound = op.bind(name, {"left": streams[0].schema, "right": streams[1].schema},
                        {"left": streams[0].event_time, "right": streams[1].event_time})
        stream = Stream(name, bound.output_schema, False, streams[0].event_time)
        names = side_of.output_names(streams[0].schema, streams[1].schema, stream.schema)
        if windowed:  # both sides' window bounds are the window join's
            names.update({(side, b): b for side in (0, 1) for b in _WINDOW_BOUNDS})
        for c in after:
            stream = self._filter(stream, _renamed(c.copy(), side_of, names), "WHERE")
        return self._project(query, stream, rename=lambda node: _renamed(node.copy(), side_of, names))

    def _windowed_side(self, t) -> tuple | None:
        """``(table, size, where)`` of a join side written ``(SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts),
        size)) [WHERE ...]) AS L``; None for any other side."""
        inner = t.this if isinstance(t, exp.Subquery) else None
        if not isinstance(inner, exp.Select) or inner.args.get("joins") or inner.args.get("group"):
            return None
        if len(inner.expressions) != 1 or not isinstance(inner.expressions[0], exp.Star):
            raise SqlError("SQL: a window join side is (SELECT * FROM TABLE(TUMBLE(...)))", construct=t.sql()[:60])
        source = inner.args.get("from_") or inner.args.get("from")
        call = source.this.this if source is not None and isinstance(source.this, exp.Table) else None
        if isinstance(call, exp.Anonymous) and call.name.upper() == "TABLE" and len(call.expressions) == 1:
            call = call.expressions[0]
        if not (isinstance(call, exp.Anonymous) and call.name.upper() == "TUMBLE" and len(call.expressions) == 3
                and isinstance(call.expressions[0], exp.Column)):
            raise SqlError("SQL: a window join side is (SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size)))",
                           construct=t.sql()[:60])
        table = exp.Table(this=exp.to_identifier(call.expressions[0].name))
        ts = call.expressions[1].this if isinstance(call.expressions[1], exp.Paren) else call.expressions[1]
        wm = self.watermarks.get(table.name)
        if wm is None or not isinstance(ts, exp.Column) or ts.name != wm[0]:
            raise SqlError(f"SQL: TUMBLE over {table.name}.{ts.sql()}: declare it as the table's event time "
                           "(WATERMARK FOR ...)", construct="TUMBLE")
        where = inner.args.get("where")
        return table, interval_ms(call.expressions[2]), (where.this if where is not None else None)

    def _semi(self, stream: Stream, query: exp.Select, sub: exp.Select, anti: bool, outer_key) -> Stream:
        """``[NOT] EXISTS (SELECT ... FROM b WHERE b.k = a.k [AND b.ts BETWEEN ...] [AND ...])`` or ``a.k IN
        (SELECT b.k FROM b ...)``: a semi (anti) join, each row of ``a`` passed on at its first match (when the
        watermark shows it never matched)."""
        source = sub.args.get("from_") or sub.args.get("from")
        inner = source.this if source is not None else None
        if not isinstance(inner, exp.Table) or sub.args.get("joins") or sub.args.get("group"):
            raise SqlError("SQL: EXISTS and IN read one table in their subquery", construct=sub.sql()[:60])
        outer = (query.args.get("from_") or query.args.get("from")).this
        aliases = [outer.alias_or_name, inner.alias_or_name]
        if aliases[0] == aliases[1]:
            raise SqlError(f"SQL: name the subquery's table apart from the outer one ({inner.name} AS b)",
                           construct=inner.sql())
        if inner.name in self.views:
            raise SqlError(f"SQL: EXISTS over view {inner.name!r} is not supported yet", construct=inner.name)
        if inner.name not in self.schemas:
            raise SchemaError(f"SQL: unknown table {inner.name!r}; sources are {sorted(self.schemas)}"
                              f"{did_you_mean(inner.name, self.schemas)}")
        sides = _Sides(aliases, [stream.schema, self.schemas[inner.name]])
        keys, bounds, own = [], None, []
        where = sub.args.get("where")
        for c in conjuncts(where.this) if where is not None else []:
            pair = sides.key_pair(c)
            if pair is not None:
                keys.append(pair)
            elif isinstance(c, exp.Between) and any(col.table == aliases[0] for col in c.find_all(exp.Column)):
                bounds = sides.time_bounds(c, [self.watermarks.get(outer.name), self.watermarks.get(inner.name)])
            elif all(sides.resolve(col)[0] == 1 for col in c.find_all(exp.Column)):
                own.append(c)
            else:
                raise SqlError(f"SQL: {c.sql()}: in EXISTS, compare keys (b.k = a.k), times (b.ts BETWEEN ...) or "
                               "the subquery's own columns", construct=c.sql())
        if outer_key is not None:  # a.k IN (SELECT b.k FROM b ...)
            selected = sub.expressions
            if len(selected) != 1 or not isinstance(selected[0], exp.Column):
                raise SqlError("SQL: IN (SELECT <one column> FROM ...)", construct=sub.sql()[:60])
            for side, column in ((0, outer_key), (1, selected[0])):  # (each belongs to its side by definition)
                if sides.schemas[side].get_field_index(column.name) < 0:
                    raise SchemaError(f"SQL: unknown column {column.sql()!r} in {aliases[side]}")
            keys.append((outer_key.name, selected[0].name))
        if len(keys) != 1:
            raise SqlError("SQL: EXISTS and IN match on exactly one key column", construct=sub.sql()[:60])
        wm = self.watermarks.get(inner.name)
        if wm is None or stream.event_time is None:
            raise SqlError(f"SQL: EXISTS and IN join two tables with event times: declare WATERMARK FOR ... on "
                           f"{outer.name} and {inner.name}", construct="EXISTS")
        right = self._source(inner.name, inner)
        for c in own:
            right = self._filter(right, _unqualified(c.copy()), "WHERE")
        right = self._add(right, Project([keys[0][1], wm[0]] if keys[0][1] != wm[0] else [wm[0]]), "side")
        lower, upper = bounds if bounds is not None else (-_FOREVER_MS, _FOREVER_MS)
        name = self._name("anti" if anti else "semi")
        op = IntervalJoin(keys[0][0], keys[0][1], lower=lower, upper=upper, how="anti" if anti else "semi")
        self.builder.operator(name, op)
        self.builder.connect(stream.node, name, port="left").connect(right.node, name, port="right")
        bound = op.bind(name, {"left": stream.schema, "right": right.schema},
                        {"left": stream.event_time, "right": right.event_time})
        return Stream(name, bound.output_schema, False, stream.event_time)








def _unqualified(node: exp.Expression) -> exp.Expression:
    for column in list(node.find_all(exp.Column)):
        column.set("table", None)
    return node


def _renamed(node: exp.Expression, sides: "_Sides", names: dict) -> exp.Expression:
    """``node`` with each (qualified) column replaced by the join output's column name."""
    for column in list(node.find_all(exp.Column)):
        replacement = exp.column(names[sides.resolve(column)])
        if column is node:
            return replacement
        column.replace(replacement)
    return node


class _Sides:
    """Which side of a join a column belongs to, and what it is called in the join's output."""

    def __init__(self, aliases: list[str], schemas: list[pa.Schema]):
        self.aliases, self.schemas = aliases, schemas

    def resolve(self, column: exp.Column) -> tuple[int, str]:
        if column.table:
            if column.table not in self.aliases:
                raise SchemaError(f"SQL: {column.sql()}: no table {column.table!r} in the join ({self.aliases})")
            side = self.aliases.index(column.table)
            if self.schemas[side].get_field_index(column.name) < 0:
                raise SchemaError(f"SQL: unknown column {column.sql()!r}; {column.table} has "
                                  f"{self.schemas[side].names}{did_you_mean(column.name, self.schemas[side].names)}")
            return side, column.name
        found = [j for j in (0, 1) if self.schemas[j].get_field_index(column.name) >= 0]
        if len(found) != 1:
            names = [*self.schemas[0].names, *self.schemas[1].names]
            raise SchemaError(f"SQL: column {column.name!r} is " + ("in both tables: qualify it (a." + column.name +
                              ")" if found else f"in neither table ({self.aliases}){did_you_mean(column.name, names)}"))
        return found[0], column.name

    def key_pair(self, c) -> tuple[str, str] | None:
        """``(left key, right key)`` of an equality between a column of each side, else None."""
        if isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column):
            a, b = self.resolve(c.this), self.resolve(c.expression)
            if {a[0], b[0]} == {0, 1}:
                return (a[1], b[1]) if a[0] == 0 else (b[1], a[1])
        return None

    def time_bounds(self, c: exp.Between, wms) -> tuple[int, int]:
        """``(lower, upper)`` of ``right.ts - left.ts`` from ``x.ts BETWEEN y.ts - INTERVAL .. AND y.ts + INTERVAL ..``."""
        def offset(node):  # y.ts [+|- INTERVAL]: (column, ms)
            if isinstance(node, exp.Column):
                return node, 0
            if isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.this, exp.Column):
                ms = interval_ms(node.expression)
                return node.this, ms if isinstance(node, exp.Add) else -ms
            raise SqlError(f"SQL: {node.sql()}: expected <table>.<time> [+|-] INTERVAL '<n>' <unit>",
                           construct=node.sql())

        x = c.this
        (lo_col, lo), (hi_col, hi) = offset(c.args["low"]), offset(c.args["high"])
        if not isinstance(x, exp.Column):
            raise SqlError(f"SQL: {c.sql()}: the time condition compares two event-time columns", construct=c.sql())
        sx, sy = self.resolve(x), self.resolve(lo_col)
        if self.resolve(hi_col) != sy or sx[0] == sy[0]:
            raise SqlError(f"SQL: {c.sql()}: compare one side's event time with the other's", construct=c.sql())
        for side, name in (sx, sy):
            if wms[side] is None or wms[side][0] != name:
                raise SqlError(f"SQL: {c.sql()}: {self.aliases[side]}.{name} is not the table's event time "
                               "(WATERMARK FOR ...)", construct=c.sql())
        # x in [y + lo, y + hi]: with x on the right, right - left in [lo, hi]; on the left, in [-hi, -lo]
        return (lo, hi) if sx[0] == 1 else (-hi, -lo)

    def asof_direction(self, c, wms) -> str:
        """``"backward"`` for ``a.ts >= b.ts`` (the right row at or before the left one), ``"forward"`` for ``<=``."""
        a, b = c.this, c.expression
        if not (isinstance(a, exp.Column) and isinstance(b, exp.Column)):
            raise SqlError(f"SQL: ASOF ... {c.sql()}: compare the two event-time columns", construct=c.sql())
        (sa, na), (sb, nb) = self.resolve(a), self.resolve(b)
        if sa == sb or any(wms[side] is None or wms[side][0] != name for side, name in ((sa, na), (sb, nb))):
            raise SqlError(f"SQL: ASOF ... {c.sql()}: compare the two tables' event times", construct=c.sql())
        if isinstance(c, (exp.GT, exp.LT)):
            raise SqlError(f"SQL: ASOF ... {c.sql()}: use >= or <= (a match may have the same time)", construct=c.sql())
        left_ge = isinstance(c, exp.GTE) == (sa == 0)
        return "backward" if left_ge else "forward"

    def output_names(self, left: pa.Schema, right: pa.Schema, joined: pa.Schema) -> dict:
        """``(side, column) -> name in the join's output`` (a right column whose name is taken gets ``_right``)."""
        names = {(0, n): n for n in left.names}
        for n in right.names:
            names[(1, n)] = n if n not in left.names else f"{n}_right"
        missing = [v for v in names.values() if v not in joined.names]
        if missing:
            raise SqlError(f"SQL: join output columns {missing} not found in {joined.names}", construct="JOIN")
        return names


def subquery_test(term):
    """``(subquery, anti, outer key)`` of ``[NOT] EXISTS (...)`` or ``k IN (SELECT ...)``; None for other terms."""
    anti = isinstance(term, exp.Not)
    node = term.this if anti else term
    if isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Exists):
        return node.this, anti, None
    if isinstance(node, exp.In) and node.args.get("query") is not None:
        if anti:
            raise SqlError("SQL: NOT IN (subquery) is not supported (a NULL in the subquery makes it match no row); "
                           "write NOT EXISTS (SELECT ... WHERE b.k = a.k)", construct="NOT IN")
        query = node.args["query"]
        return (query.this if isinstance(query, exp.Subquery) else query), False, node.this
    return None
