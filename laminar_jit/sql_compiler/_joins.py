"""Joins in SQL: interval, regular, ASOF and temporal joins, and ``[NOT] EXISTS`` / ``IN`` as semi and anti joins."""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from ..errors import SchemaError, SqlError
from ..ops import ArrowMap, Project
from ..ops.joins import AsofJoin, IntervalJoin, TemporalJoin, WindowJoin
from ._expr import _define
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

    def _join(self, query: exp.Select) -> tuple[Stream, exp.Select]:
        """``FROM a JOIN b ON a.k = b.k [AND <time conditions>]`` (or ``FROM a, b WHERE ...``): the joined
        stream, and ``query`` rewritten over the join's columns (its FROM, JOIN and WHERE done) for the
        planner to group, aggregate or project.

        Sides are tables, views or subqueries. Conditions comparing the two sides' event times (``b.ts BETWEEN
        a.ts - INTERVAL .. AND a.ts + INTERVAL ..``, ``>=``, ``<``, ``=``, also through a window's
        ``window_end``) bound an interval join; without one every pair matches (a regular join). ``WHERE``
        conjuncts of one side filter it first; others filter the joined rows. Each side carries only the
        columns the query reads."""
        joins = query.args["joins"]
        if len(joins) > 1:
            return self._join(self._first_join_nested(query))
        join = joins[0]
        how = {"": "inner", "LEFT": "left", "RIGHT": "right", "FULL": "full"}.get((join.side or "").upper())
        asof = (join.args.get("method") or "").upper() == "ASOF"
        comma = join.args.get("on") is None and not join.args.get("using") and how == "inner" and not asof \
            and (join.kind or "").upper() in ("", "CROSS")
        if how is None or (join.kind or "").upper() not in ("", "INNER", "OUTER", "CROSS") or join.args.get("using") \
                or (join.args.get("on") is None and not comma):
            raise SqlError(f"SQL: {join.sql()[:60]}: an [INNER | LEFT | RIGHT | FULL] JOIN ... ON (or FROM a, b "
                           "WHERE ...) is supported", construct="JOIN")
        source = query.args.get("from_") or query.args.get("from")
        sides = [source.this, join.this]
        aliases = [t.alias_or_name for t in sides]
        windows = [self._windowed_side(t) for t in sides]  # (SELECT * FROM TABLE(TUMBLE(...))) L: a window join
        windowed = windows[0] is not None and windows[1] is not None
        if (windows[0] is None) != (windows[1] is None) or (windowed and windows[0][1] != windows[1][1]):
            raise SqlError("SQL: a window join joins two TUMBLE windows of one size", construct="JOIN")
        if aliases[0] == aliases[1]:
            raise SqlError(f"SQL: give the two sides of the join different names (FROM {aliases[0]} AS a JOIN "
                           f"{aliases[1]} AS b)", construct="JOIN")
        bases, schemas = [], []
        for t, w in zip(sides, windows):
            table = w[0] if w is not None else t
            if bases and t.args.get("version") is not None and bases[0].proctime:  # a lookup of a bounded table
                if not (isinstance(t, exp.Table) and t.name in self.tables):
                    raise SqlError(f"SQL: FOR SYSTEM_TIME AS OF {aliases[0]}'s processing time looks up a bounded "
                                   f"table: pass {t.name!r} in sources as a pyarrow.Table", construct="FOR SYSTEM_TIME AS OF")
                return self._lookup_join(query, join, how, bases[0], aliases, t.name)
            if isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier):
                stream = self._source(table.name, table)  # a source, or a view's planned rows
            elif isinstance(table, exp.Subquery):
                stream = self._subquery(table)
            else:
                raise SqlError(f"SQL: JOIN {table.sql()[:60]}: a side is a table, a view or (SELECT ...)",
                               construct="JOIN")
            schema = stream.schema
            if windowed:  # the window's bounds, as the window join appends them
                ts_type = schema.field(stream.event_time).type if stream.event_time else pa.int64()
                for bound in _WINDOW_BOUNDS:
                    schema = schema.append(pa.field(bound, ts_type))
            bases.append(stream)
            schemas.append(schema)
        side_of = _Sides(aliases, schemas)
        for j, stream in enumerate(bases):
            if stream.event_time is None:
                raise SqlError(f"SQL: a joined table needs an event time, and {aliases[j]} has none: CREATE TABLE "
                               "t (..., WATERMARK FOR ts AS ts - INTERVAL '5' SECOND), and keep ts in a subquery",
                               construct="JOIN")
        version = join.this.args.get("version")
        where = query.args.get("where")
        on_terms = _split_between(conjuncts(join.args["on"])) if join.args.get("on") is not None else []
        where_terms = _split_between(conjuncts(where.this)) if where is not None else []
        keys, direction, time_pairs = [], None, []
        bounds = _Bounds()
        pushed, after = [[], []], []
        for c, in_on in [*((c, True) for c in on_terms), *((c, False) for c in where_terms)]:
            if not in_on and how != "inner":  # WHERE of an outer join: on the joined rows
                after.append(c)
                continue
            pair = side_of.key_pair(c)
            if pair is not None and not (windowed and pair[0] in _WINDOW_BOUNDS) \
                    and bases[0].time_offset(pair[0]) is not None and bases[1].time_offset(pair[1]) is not None:
                bounds.add(side_of, bases, exp.EQ(this=c.this, expression=c.expression))
                time_pairs.append(pair)
            elif pair is not None:
                keys.append(pair)
            elif asof and isinstance(c, (exp.GTE, exp.LTE, exp.GT, exp.LT)) and direction is None and in_on:
                direction = side_of.asof_direction(c, [(b.event_time, 0) for b in bases])
            elif not asof and version is None and not windowed and bounds.add(side_of, bases, c):
                pass
            elif len({side_of.resolve(col)[0] for col in c.find_all(exp.Column)}) == 1 and how == "inner":
                pushed[side_of.resolve(next(c.find_all(exp.Column)))[0]].append(c)
            elif how == "inner":
                after.append(c)
            else:
                raise SqlError(f"SQL: JOIN ... ON {c.sql()}: an outer join matches on equal keys and time bounds "
                               "('b.ts BETWEEN a.ts - INTERVAL ... AND a.ts + INTERVAL ...'; ASOF: 'a.ts >= b.ts')",
                               construct=c.sql())
        if windowed:
            if sorted(k for k in keys if k[0] in _WINDOW_BOUNDS) != [(b, b) for b in sorted(_WINDOW_BOUNDS)]:
                raise SqlError("SQL: a window join matches L.window_start = R.window_start AND L.window_end = "
                               "R.window_end", construct="ON")
            keys = [k for k in keys if k[0] not in _WINDOW_BOUNDS]
            if how != "inner":  # an outer window join: an interval join of rows in one window, on the key and
                keys.append(("window_start", "window_start"))  # each side's window_start (null when unmatched)
                bounds.lower, bounds.upper = 1 - windows[0][1], windows[0][1] - 1
        if not keys:  # equal times only (two windows' rows by window): the times are the key too
            keys = [pair for pair in time_pairs]
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
            if not (isinstance(at, exp.Column) and side_of.resolve(at) == (0, bases[0].event_time)):
                raise SqlError(f"SQL: FOR SYSTEM_TIME AS OF {at.sql()}: use the left table's event time",
                               construct="FOR SYSTEM_TIME AS OF")
        # columns each side must carry: what the query reads (not inside a side's own subquery), its event time
        read = [set(), set()]
        inside = {id(c) for side in sides if isinstance(side, exp.Subquery) for c in side.find_all(exp.Column)}
        for column in query.find_all(exp.Column):
            if id(column) in inside or isinstance(column.this, exp.Star):
                continue
            side, name = side_of.resolve(column)
            read[side].add(name)
        stars = [side_of.star(column) for column in query.find_all(exp.Column)
                 if id(column) not in inside and isinstance(column.this, exp.Star)]
        for side in stars:  # A.*: every column of A
            read[side] |= set(schemas[side].names)
        streams = []
        for j, stream in enumerate(bases):
            if windowed and windows[j][2] is not None:  # the window subquery's own WHERE
                stream = self._filter(stream, windows[j][2], "WHERE")
            for c in pushed[j]:
                stream = self._filter(stream, _unqualified(c.copy()), "WHERE")
            outer_window = windowed and how != "inner"
            if outer_window:
                stream = self._window_bounds(stream, windows[j][1])
            columns = [n for n in stream.schema.names if (n in read[j] and (outer_window or n not in _WINDOW_BOUNDS))
                       or n == stream.event_time or (outer_window and n == "window_start")]
            streams.append(self._add(stream, Project(columns), "side"))
        name = self._name("join")
        same_names = all(a == b for a, b in keys)
        if windowed and how == "inner":
            op = WindowJoin(windows[0][1], left_key, right_key)
        elif version is not None or (asof and direction == "backward" and not same_names):
            op = TemporalJoin(left_key, right_key, how=how)
        elif asof:
            if not same_names:
                raise SqlError("SQL: a forward ASOF JOIN matches keys of one name on both sides", construct="ASOF")
            op = AsofJoin(left_key, direction=direction, how=how)
        else:
            lateness = max(streams[0].lateness("a join"), streams[1].lateness("a join"))
            op = IntervalJoin(left_key, right_key, lower=bounds.lower, upper=bounds.upper, how=how,
                              allowed_lateness=lateness)
        self.builder.operator(name, op)
        self.builder.connect(streams[0].node, name, port="left").connect(streams[1].node, name, port="right")
        bound = op.bind(name, {"left": streams[0].schema, "right": streams[1].schema},
                        {"left": streams[0].event_time, "right": streams[1].event_time})
        delay = None  # a pair leaves when its later row comes: at most `upper` after the left row, plus its delay
        if isinstance(op, IntervalJoin) and bounds.upper < _FOREVER_MS and None not in (streams[0].delay,
                                                                                         streams[1].delay):
            delay = max(streams[0].delay, max(bounds.upper, 0) + streams[1].delay) + op_lateness(op)
        elif not isinstance(op, IntervalJoin):
            delay = streams[0].delay
        stream = Stream(name, bound.output_schema, False, streams[0].event_time,
                        times={c: o for c, o in streams[0].times.items() if c in bound.output_schema.names},
                        delay=delay, proctime=streams[0].proctime)
        names = side_of.output_names(streams[0].schema, streams[1].schema, stream.schema)
        if windowed and how == "inner":  # both sides' window bounds are the window join's
            names.update({(side, b): b for side in (0, 1) for b in _WINDOW_BOUNDS})
        for c in after:
            stream = self._filter(stream, _renamed(c.copy(), side_of, names), "WHERE")
        rest = query.copy()
        for clause in ("joins", "where"):
            rest.set(clause, None)
        rest.set("from_" if "from_" in rest.args else "from", None)
        expressions = []
        for item in rest.expressions:  # A.*: A's columns under their names in the join's output
            if isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                side = side_of.star(item)
                expressions += [exp.column(n, table=aliases[side]).as_(n) for n in streams[side].schema.names
                                if (side, n) in names and not n.startswith("_sql_")]
            elif isinstance(item, exp.Column):  # keeps its name (B.dateTime is dateTime, not dateTime_right)
                expressions.append(item.as_(item.name))
            else:
                expressions.append(item)
        rest.set("expressions", expressions)
        for column in list(rest.find_all(exp.Column)):
            if not isinstance(column.this, exp.Star):
                column.replace(exp.column(names[side_of.resolve(column)]))
        return stream, rest

    def _window_bounds(self, stream: Stream, size: int) -> Stream:
        """``stream`` with its rows' tumbling ``window_start`` and ``window_end`` (a kernel of the event time)."""
        ts = stream.event_time
        if not stream.at_source:
            raise SqlError("SQL: an outer window join joins tables' rows (filtered or projected), not the results "
                           "of another operator", construct="JOIN")
        src = f"def sql_window({ts}):\n    return _window_bounds({ts}, {size})\n"
        kind = stream.schema.field(ts).type
        return self._add(stream, ArrowMap(_define(src, "sql_window", {}), output={"window_start": kind,
                                                                                  "window_end": kind}), "window")

    def _subquery(self, node: exp.Subquery) -> Stream:
        """A join side's subquery, planned once (a nested join's first pair is looked at before it is joined)."""
        planned = getattr(self, "_planned_sides", None)
        if planned is None:
            planned = self._planned_sides = {}
        if id(node) not in planned:
            planned[id(node)] = (node, self.plan(node.this, keep_time=True))
        return planned[id(node)][1]

    def _first_join_nested(self, query: exp.Select) -> exp.Select:
        """``FROM a JOIN b ON .. JOIN c ON ..`` as ``FROM (SELECT <a's and b's columns> FROM a JOIN b ON ..) ab
        JOIN c ON ..``: joins of several tables, two at a time (left-deep, as written)."""
        source = query.args.get("from_") or query.args.get("from")
        first, joins = source.this, query.args["joins"]
        pair = [first, joins[0].this]
        aliases = [t.alias_or_name for t in pair]
        schemas = [(self._subquery(t) if isinstance(t, exp.Subquery) else self._source(t.name, t)).schema
                   for t in pair]
        if any(isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star))
               for item in query.expressions):
            raise SqlError("SQL: a join of more than two tables lists the columns it selects (no *)", construct="*")
        inner_ok = all((j.side or "") == "" for j in joins)
        where = query.args.get("where")
        terms = conjuncts(where.this) if where is not None else []

        def owner(column: exp.Column) -> int | None:
            if column.table:
                return aliases.index(column.table) if column.table in aliases else None
            found = [j for j in (0, 1) if schemas[j].get_field_index(column.name) >= 0]
            return found[0] if len(found) == 1 else None

        def first_pair_only(node) -> bool:
            return all(owner(c) is not None for c in node.find_all(exp.Column))

        moved = [c for c in terms if inner_ok and first_pair_only(c)]
        nested = f"_sql_join{self.serial}"
        names: dict[tuple[int, str], str] = {}
        done = {id(c) for node in [*moved, joins[0]] for c in node.find_all(exp.Column)}  # (inside the pair)
        for column in [c for c in query.find_all(exp.Column) if not isinstance(c.this, exp.Star)]:
            side = owner(column)
            if side is not None and id(column) not in done:
                names[(side, column.name)] = f"{aliases[side]}__{column.name}"
        inner = exp.select(*[exp.column(col, table=aliases[side]).as_(name) for (side, col), name in names.items()])
        inner = inner.from_(first.copy()).join(joins[0].copy())
        if moved:
            inner = inner.where(exp.and_(*[c.copy() for c in moved]))
        outer = query.copy()
        rest = [c.copy() for c in terms if c not in moved]
        outer.set("where", exp.Where(this=exp.and_(*rest)) if rest else None)
        outer.set("joins", [j.copy() for j in joins[1:]])
        outer.set("from_" if "from_" in outer.args else "from", None)
        expressions = [item.as_(item.name) if isinstance(item, exp.Column) else item for item in outer.expressions]
        outer.set("expressions", expressions)
        for column in list(outer.find_all(exp.Column)):
            side = owner(column)
            if side is not None and (side, column.name) in names:
                column.replace(exp.column(names[(side, column.name)], table=nested))
        outer.set("from_" if "from_" in query.args else "from",
                  exp.From(this=exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(nested)))))
        return outer

    def _windowed_side(self, t) -> tuple | None:
        """``(table, size, where)`` of a join side written ``(SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts),
        size)) [WHERE ...]) AS L``; None for any other side."""
        inner = t.this if isinstance(t, exp.Subquery) else None
        if not isinstance(inner, exp.Select) or inner.args.get("joins") or inner.args.get("group"):
            return None
        source = inner.args.get("from_") or inner.args.get("from")
        call = source.this.this if source is not None and isinstance(source.this, exp.Table) else None
        if isinstance(call, exp.Anonymous) and call.name.upper() == "TABLE" and len(call.expressions) == 1:
            call = call.expressions[0]
        if not (isinstance(call, exp.Anonymous) and call.name.upper() in ("TUMBLE", "HOP", "CUMULATE")):
            return None  # any other subquery: planned as a side of its own
        if len(inner.expressions) != 1 or not isinstance(inner.expressions[0], exp.Star):
            raise SqlError("SQL: a window join side is (SELECT * FROM TABLE(TUMBLE(...)))", construct=t.sql()[:60])
        if not (isinstance(call, exp.Anonymous) and call.name.upper() == "TUMBLE" and len(call.expressions) == 3
                and isinstance(call.expressions[0], exp.Column)):
            raise SqlError("SQL: a window join side is (SELECT * FROM TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size)))",
                           construct=t.sql()[:60])
        table = exp.Table(this=exp.to_identifier(call.expressions[0].name))
        ts = call.expressions[1].this if isinstance(call.expressions[1], exp.Paren) else call.expressions[1]
        event_time = self._source(table.name, table).event_time  # (a source's, or a view's)
        if event_time is None or not isinstance(ts, exp.Column) or ts.name != event_time:
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
        if aliases[0] == aliases[1] and outer_key is not None:  # k IN (SELECT k FROM t ...) over t itself: the
            sub = sub.copy()  # subquery's columns are its own (a name resolves in the innermost query first)
            for column in sub.find_all(exp.Column):
                column.set("table", None)
            aliases[1] = f"_sql_{aliases[1]}_in"
            inner = inner.copy()
            inner.set("alias", exp.TableAlias(this=exp.to_identifier(aliases[1])))
            for column in sub.find_all(exp.Column):
                column.set("table", exp.to_identifier(aliases[1]))
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
        return Stream(name, bound.output_schema, False, stream.event_time, proctime=stream.proctime)








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


def op_lateness(op) -> int:
    """An interval join's allowed lateness in ms (0 when it allows none)."""
    return int(op.allowed_lateness or 0)


def _split_between(terms: list) -> list:
    """``x BETWEEN lo AND hi`` as ``x >= lo`` and ``x <= hi`` (each may bound a join's time, or not)."""
    out = []
    for c in terms:
        if isinstance(c, exp.Between) and isinstance(c.this, exp.Column):
            out += [exp.GTE(this=c.this.copy(), expression=c.args["low"].copy()),
                    exp.LTE(this=c.this.copy(), expression=c.args["high"].copy())]
        else:
            out.append(c)
    return out


def _time_term(node) -> tuple[exp.Column, int] | None:
    """``(column, ms)`` of ``column [+|- INTERVAL ...]``; None for anything else."""
    if isinstance(node, exp.Column):
        return node, 0
    if isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.this, exp.Column) \
            and isinstance(node.expression, exp.Interval):
        ms = interval_ms(node.expression)
        return node.this, ms if isinstance(node, exp.Add) else -ms
    return None


_FLIPPED = {">=": "<=", ">": "<", "<=": ">=", "<": ">", "=": "="}


class _Bounds:
    """The interval of ``right.ts - left.ts`` that a join's time conditions allow (every pair without one)."""

    def __init__(self):
        self.lower, self.upper = -_FOREVER_MS, _FOREVER_MS

    def add(self, sides: "_Sides", streams: list[Stream], c) -> bool:
        """Narrow the interval by ``c`` when it compares the two sides' times (``a.ts >= b.ts - INTERVAL ..``,
        also through columns at a fixed offset from the event time, such as a window's end); else False."""
        op = {exp.GTE: ">=", exp.GT: ">", exp.LTE: "<=", exp.LT: "<", exp.EQ: "="}.get(type(c))
        a, b = _time_term(c.this), _time_term(c.expression)
        if op is None or a is None or b is None:
            return False
        (sa, na), (sb, nb) = sides.resolve(a[0]), sides.resolve(b[0])
        oa, ob = streams[sa].time_offset(na), streams[sb].time_offset(nb)
        if sa == sb or oa is None or ob is None:
            return False
        # ts_a + oa + ca <op> ts_b + ob + cb, so ts_a - ts_b <op> v; right - left is that or its negation
        v = ob + b[1] - oa - a[1]
        if sa == 0:
            op, v = _FLIPPED[op], -v
        if op in (">=", ">", "="):
            self.lower = max(self.lower, v + (op == ">"))
        if op in ("<=", "<", "="):
            self.upper = min(self.upper, v - (op == "<"))
        if self.lower > self.upper:
            raise SqlError(f"SQL: JOIN ... {c.sql()}: the time conditions leave no pair that can match",
                           construct=c.sql())
        return True


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

    def star(self, column: exp.Column) -> int:
        """The side of ``a.*``."""
        if column.table not in self.aliases:
            raise SchemaError(f"SQL: {column.sql()}: no table {column.table!r} in the join ({self.aliases})")
        return self.aliases.index(column.table)

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
