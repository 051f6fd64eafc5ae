"""A SELECT statement as operators of a DAG: filter, computed columns, window or group aggregate, projection."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from ..dag import DagBuilder
from ..errors import SchemaError, SqlError
from ..ops import ArrowMap, Filter, Map, Project
from ..ops import aggregates as A
from ..ops.dedup import Dedup
from ..ops.group import GroupAggregate
from ..ops.joins import IntervalJoin
from ..ops.topn import TopN
from ..ops.windows import SessionWindow, SlidingWindow, TumblingWindow
from ..time import BoundedOutOfOrderness
from ._expr import Compiled, arrow_type, compile_expr
from ._text import SESSION_FUNCTION, SUPPORTED_WINDOWS, WINDOW_FUNCTIONS, interval_ms

__all__ = ["Planner"]

_WINDOW_COLUMNS = ("window_start", "window_end")


@dataclass
class _Stream:
    """Where a SELECT is while it is planned: the node whose rows it reads, and their schema."""

    node: str
    schema: pa.Schema
    at_source: bool  # rows straight from a source (or through filters): ArrowMap may read them
    event_time: str | None = None
    changelog: bool = False


class Planner:
    """Adds the operators of SELECT statements to one :class:`DagBuilder`.

    Parameters
    ----------
    sources : dict
        Table name -> ``pyarrow.Schema`` (or an object with ``.schema``).
    watermarks : dict
        Table name -> ``(event-time column, delay in ms)`` from ``CREATE TABLE ... WATERMARK``.
    udfs : dict
        Function name -> kernel callable from SQL.
    sessions : list of list of str
        The ``PARTITION BY`` columns of each ``SESSION`` window table function, in text order.
    """

    def __init__(self, sources: dict, watermarks: dict, udfs: dict, sessions: list | None = None):
        self.builder = DagBuilder()
        self.schemas = {name: getattr(s, "schema", s) for name, s in sources.items()}
        for name, schema in self.schemas.items():
            if not isinstance(schema, pa.Schema):
                raise TypeError(f"lj.sql: sources[{name!r}] must be a pyarrow.Schema or have .schema, "
                                f"got {type(schema).__name__}")
        self.watermarks, self.udfs = watermarks, udfs
        self.sessions = list(sessions or [])  # PARTITION BY keys of each SESSION call, in text order
        self.added: set[str] = set()
        self.serial = 0

    # -- sources ---------------------------------------------------------------------------------
    def _source(self, table: str, node: exp.Expression) -> _Stream:
        if table not in self.schemas:
            raise SchemaError(f"SQL: unknown table {table!r} in {node.sql()!r}; sources are {sorted(self.schemas)} "
                              "(pass it in sources=)")
        schema = self.schemas[table]
        if table not in self.added:
            wm = self.watermarks.get(table)
            if wm is None:
                self.builder.source(table, schema)
            else:
                column, delay = wm
                if schema.get_field_index(column) < 0:
                    raise SchemaError(f"SQL: WATERMARK FOR {column}: table {table!r} has no column {column!r} "
                                      f"(it has {schema.names})")
                self.builder.source(table, schema, event_time=column, watermark=BoundedOutOfOrderness(delay))
            self.added.add(table)
        wm = self.watermarks.get(table)
        return _Stream(table, schema, at_source=True, event_time=wm[0] if wm else None)

    def _name(self, what: str) -> str:
        self.serial += 1
        return f"sql{self.serial}_{what}"

    def _add(self, stream: _Stream, op, what: str, at_source: bool | None = None) -> _Stream:
        """``op`` reading ``stream``: the stream of its rows (bound here to learn its columns)."""
        name = self._name(what)
        self.builder.operator(name, op).connect(stream.node, name)
        schema = op.bind(name, stream.schema, stream.event_time).output_schema
        event_time = "window_start" if isinstance(op, (TumblingWindow, SlidingWindow, SessionWindow)) \
            else stream.event_time
        return _Stream(name, schema, stream.at_source if at_source is None else at_source,
                       event_time if event_time in schema.names else None,
                       stream.changelog or bool(getattr(op, "emits_changelog", False)))

    # -- statements ------------------------------------------------------------------------------
    def select(self, query: exp.Select, sink: str) -> None:
        """Plan ``query`` and write its rows to sink ``sink``."""
        if not isinstance(query, exp.Select):
            raise SqlError(f"SQL: expected a SELECT, got {query.key.upper()}", construct=query.sql()[:60])
        for unsupported in ("order", "limit", "distinct", "qualify", "with"):
            if query.args.get(unsupported):
                raise SqlError(f"SQL: {unsupported.upper()} is not supported yet", construct=unsupported.upper())
        if query.args.get("joins"):
            stream = self._join(query)
            self.builder.sink_for(stream.node, sink)
            return
        ranked = self._ranked(query)
        if ranked is not None:
            self.builder.sink_for(ranked.node, sink)
            return
        stream, window = self._from(query)
        where = query.args.get("where")
        if where is not None:
            terms = _conjuncts(where.this)
            semis = [t for t in terms if _subquery_test(t) is not None]
            for term in terms:
                if term not in semis:
                    stream = self._filter(stream, term, "WHERE")
            for term in semis:
                stream = self._semi(stream, query, *_subquery_test(term))
        group = query.args.get("group")
        aggregates = [a for item in query.expressions for a in item.find_all(exp.AggFunc)]
        if group is not None or aggregates or window is not None:
            if window is not None and group is None:
                raise SqlError("SQL: a window table function needs GROUP BY window_start, window_end[, keys]",
                               construct=window[0])
            stream = self._aggregate(query, stream, window, group.expressions if group else [])
        elif query.args.get("having") is not None:
            raise SqlError("SQL: HAVING needs GROUP BY or an aggregate", construct="HAVING")
        else:
            stream = self._project(query, stream)
        self.builder.sink_for(stream.node, sink)

    def _from(self, query: exp.Select):
        source = query.args.get("from_") or query.args.get("from")
        if source is None:
            raise SqlError("SQL: SELECT without FROM is not supported", construct="SELECT")
        table = source.this
        if not isinstance(table, exp.Table):
            raise SqlError(f"SQL: FROM {table.sql()} is not supported yet (a table or a window table function)",
                           construct=table.sql())
        call = table.this
        if isinstance(call, exp.Anonymous) and call.name.upper() == "TABLE" and len(call.expressions) == 1:
            call = call.expressions[0]
        if isinstance(call, exp.Anonymous) and call.name.upper() in (*WINDOW_FUNCTIONS, SESSION_FUNCTION):
            return self._window_source(call)
        if isinstance(call, exp.Identifier):
            return self._source(call.name, table), None
        raise SqlError(f"SQL: FROM {table.sql()} is not supported yet", construct=table.sql())

    def _join(self, query: exp.Select) -> _Stream:
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
        tables = [source.this, join.this]
        if not all(isinstance(t, exp.Table) and isinstance(t.this, exp.Identifier) for t in tables):
            raise SqlError("SQL: a JOIN of two tables (not subqueries) is supported so far", construct="JOIN")
        aliases = [t.alias_or_name for t in tables]
        if aliases[0] == aliases[1]:
            raise SqlError(f"SQL: give the two sides of the join different names (FROM {aliases[0]} AS a JOIN "
                           f"{aliases[1]} AS b)", construct="JOIN")
        schemas = []
        for t in tables:
            if t.name not in self.schemas:
                raise SchemaError(f"SQL: unknown table {t.name!r}; sources are {sorted(self.schemas)}")
            schemas.append(self.schemas[t.name])
        side_of = _Sides(aliases, schemas)
        on = [c for c in _conjuncts(join.args["on"])]
        keys, bounds = [], None
        for c in on:
            pair = side_of.key_pair(c)
            if pair is not None:
                keys.append(pair)
            elif isinstance(c, exp.Between):
                if bounds is not None:
                    raise SqlError("SQL: one time condition per join", construct=c.sql())
                bounds = side_of.time_bounds(c, [self.watermarks.get(t.name) for t in tables])
            else:
                raise SqlError(f"SQL: JOIN ... ON {c.sql()}: equality of keys and one 'b.ts BETWEEN a.ts - INTERVAL "
                               "... AND a.ts + INTERVAL ...' are supported", construct=c.sql())
        if len(keys) != 1:
            raise SqlError("SQL: a join on exactly one key column per side is supported so far", construct="ON")
        # columns each side must carry: what the query reads, and its event time
        read = [set(), set()]
        for column in query.find_all(exp.Column):
            side, name = side_of.resolve(column)
            read[side].add(name)
        streams = []
        where = query.args.get("where")
        pushed, after = [[], []], []
        for c in _conjuncts(where.this) if where is not None else []:
            sides = {side_of.resolve(col)[0] for col in c.find_all(exp.Column)}
            (pushed[sides.pop()] if len(sides) == 1 and how == "inner" else after).append(c)
        for j, t in enumerate(tables):
            wm = self.watermarks.get(t.name)
            if wm is None:
                raise SqlError(f"SQL: a joined table needs an event time: CREATE TABLE {t.name} (..., WATERMARK FOR "
                               "ts AS ts - INTERVAL '5' SECOND)", construct="JOIN")
            stream = self._source(t.name, t)
            for c in pushed[j]:
                stream = self._filter(stream, _unqualified(c.copy()), "WHERE")
            columns = [n for n in stream.schema.names if n in read[j] or n == wm[0]]
            streams.append(self._add(stream, Project(columns), "side"))
        lower, upper = bounds if bounds is not None else (-_FOREVER_MS, _FOREVER_MS)
        name = self._name("join")
        op = IntervalJoin(keys[0][0], keys[0][1], lower=lower, upper=upper, how=how)
        self.builder.operator(name, op)
        self.builder.connect(streams[0].node, name, port="left").connect(streams[1].node, name, port="right")
        bound = op.bind(name, {"left": streams[0].schema, "right": streams[1].schema},
                        {"left": streams[0].event_time, "right": streams[1].event_time})
        stream = _Stream(name, bound.output_schema, False, streams[0].event_time)
        names = side_of.output_names(streams[0].schema, streams[1].schema, stream.schema)
        for c in after:
            stream = self._filter(stream, _renamed(c.copy(), side_of, names), "WHERE")
        out: dict[str, str] = {}
        for j, item in enumerate(query.expressions):
            node = item.this if isinstance(item, exp.Alias) else item
            if isinstance(node, exp.Star):
                out.update({n: n for n in stream.schema.names})
                continue
            label = item.alias_or_name if isinstance(item, (exp.Alias, exp.Column)) else f"EXPR${j}"
            node = _renamed(node.copy(), side_of, names)
            if isinstance(node, exp.Column):
                out[label] = node.name
                continue
            temp = f"_sql_c{j}"
            stream = self._computed(stream, node, temp, "SELECT")
            out[label] = temp
        return self._add(stream, Project(out), "select")

    def _semi(self, stream: _Stream, query: exp.Select, sub: exp.Select, anti: bool, outer_key) -> _Stream:
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
        if inner.name not in self.schemas:
            raise SchemaError(f"SQL: unknown table {inner.name!r}; sources are {sorted(self.schemas)}")
        sides = _Sides(aliases, [stream.schema, self.schemas[inner.name]])
        keys, bounds, own = [], None, []
        where = sub.args.get("where")
        for c in _conjuncts(where.this) if where is not None else []:
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
        return _Stream(name, bound.output_schema, False, stream.event_time)

    def _ranked(self, query: exp.Select) -> _Stream | None:
        """Top-N and deduplication, Flink's pattern: ``SELECT ... FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY
        k ORDER BY x) AS rownum FROM t) WHERE rownum <= N`` (``= 1``: one row per key); ``None`` for any other
        query. Over a window table function: ``TopN`` per window; over a table: an updating ``TopN``, or
        ``Dedup(keep="last")`` for the latest row by event time."""
        source = query.args.get("from_") or query.args.get("from")
        inner = source.this.this if source is not None and isinstance(source.this, exp.Subquery) else None
        windows = [item for item in (inner.expressions if isinstance(inner, exp.Select) else [])
                   if isinstance(item, exp.Alias) and isinstance(item.this, exp.Window)]
        if not windows:
            return None
        over = windows[0].this
        rownum = windows[0].alias
        if not isinstance(over.this, exp.RowNumber) or len(windows) > 1 or any(
                not isinstance(item, (exp.Star, exp.Alias)) or (isinstance(item, exp.Alias) and item is not windows[0])
                for item in inner.expressions):
            raise SqlError("SQL: Top-N is written SELECT *, ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) AS "
                           "rownum FROM ...; other OVER windows are not supported yet", construct=over.sql()[:60])
        n = _row_limit(query.args.get("where"), rownum)
        for clause in ("group", "having", "joins", "order", "limit"):
            if query.args.get(clause) or inner.args.get(clause):
                raise SqlError(f"SQL: Top-N with {clause.upper()} is not supported yet", construct=clause.upper())
        stream, window = self._from(inner)
        if inner.args.get("where") is not None:
            stream = self._filter(stream, inner.args["where"].this, "WHERE")
        keys = [c.name for c in over.args.get("partition_by") or [] if isinstance(c, exp.Column)]
        if len(keys) != len(over.args.get("partition_by") or []):
            raise SqlError("SQL: PARTITION BY columns only", construct="PARTITION BY")
        order = [(o.this, bool(o.args.get("desc"))) for o in (over.args.get("order").expressions
                                                                if over.args.get("order") else [])]
        if not order or not all(isinstance(col, exp.Column) for col, _ in order):
            raise SqlError("SQL: Top-N needs ORDER BY columns", construct="ORDER BY")
        by = [col.name for col, _ in order]
        descending = [desc for _, desc in order]
        key = None if not keys else keys[0] if len(keys) == 1 else keys
        if window is not None:
            if window[0] != "TUMBLE" or not {"window_start", "window_end"} <= set(keys) or len(by) != 1:
                raise SqlError("SQL: a window Top-N is over TUMBLE, partitioned by window_start, window_end[, keys] "
                               "and ordered by one column", construct="ROW_NUMBER")
            rest = [k for k in keys if k not in ("window_start", "window_end")]
            op = TopN(n, by=by[0], key=(rest[0] if len(rest) == 1 else rest) or None, window=window[1][0],
                      descending=descending[0])
        elif n == 1 and by == [stream.event_time] and descending == [True]:
            op = Dedup(key=key, keep="last") if key is not None else None
        else:
            op = None
        if op is None and window is None:
            if len(by) > 2:
                raise SqlError("SQL: Top-N orders by one or two columns", construct="ORDER BY")
            op = TopN(n, by=by if len(by) == 2 else by[0], key=key, window=None,
                      descending=descending if len(by) == 2 else descending[0])
        stream = self._add(stream, op, "topn" if isinstance(op, TopN) else "dedup", at_source=False)
        out: dict[str, str] = {}
        for item in query.expressions:
            if isinstance(item, exp.Star):
                out.update({c: c for c in stream.schema.names if c not in ("rank", "op")})
                if "rank" in stream.schema.names:
                    out[rownum] = "rank"
            elif isinstance(item, (exp.Column, exp.Alias)) and isinstance(getattr(item, "this", None), (exp.Column,
                                                                                                          exp.Identifier)):
                column = item.this.name if isinstance(item, exp.Alias) else item.name
                column = "rank" if column == rownum else column
                if stream.schema.get_field_index(column) < 0:
                    raise SqlError(f"SQL: {column!r} is not a column of the Top-N (it has {stream.schema.names}; "
                                   "a dedup has no row number)", construct=column)
                out[item.alias_or_name] = column
            else:
                raise SqlError(f"SQL: after a Top-N only columns can be selected, got {item.sql()}",
                               construct=item.sql())
        if stream.changelog:
            out["op"] = "op"
        return self._add(stream, Project(out), "select")

    def _window_source(self, call: exp.Anonymous):
        kind = "SESSION" if call.name.upper() == SESSION_FUNCTION else call.name.upper()
        if kind not in SUPPORTED_WINDOWS:
            raise SqlError(f"SQL: the {kind} window table function is not supported yet (TUMBLE and HOP are)",
                           construct=kind)
        args = call.expressions
        partition = self.sessions.pop(0) if kind == "SESSION" and self.sessions else []
        want = 4 if kind == "HOP" else 3
        if len(args) != want or not isinstance(args[0], exp.Column):
            shape = {"TUMBLE": "TABLE t, DESCRIPTOR(ts), size", "HOP": "TABLE t, DESCRIPTOR(ts), slide, size",
                     "SESSION": "TABLE t [PARTITION BY k], DESCRIPTOR(ts), gap"}[kind]
            raise SqlError(f"SQL: {kind}({shape}) expected, got {call.sql()}", construct=kind)
        stream = self._source(args[0].name, call)
        ts = args[1].this if isinstance(args[1], exp.Paren) else args[1]
        wm = self.watermarks.get(args[0].name)
        if not isinstance(ts, exp.Column) or wm is None or wm[0] != ts.name:
            raise SqlError(f"SQL: {kind} over {args[0].name}.{ts.sql()}: declare it as the table's event time "
                           f"(CREATE TABLE {args[0].name} (..., WATERMARK FOR {ts.sql()} AS {ts.sql()} - "
                           "INTERVAL '5' SECOND))", construct=kind)
        sizes = [interval_ms(a) for a in args[2:]]
        return stream, (kind, sizes, partition)

    # -- pieces ----------------------------------------------------------------------------------
    def _compile(self, node, stream: _Stream, where: str) -> Compiled:
        return compile_expr(node, stream.schema, self.udfs, where, arrow_allowed=stream.at_source)

    def _computed(self, stream: _Stream, node, name: str, where: str) -> _Stream:
        """``stream`` with column ``name`` = ``node`` (a Map kernel, or an ArrowMap on source rows)."""
        c = self._compile(node, stream, where)
        if c.arrow:
            op = ArrowMap(c.fn, output={name: arrow_type(c, stream.schema)})
            return self._add(stream, op, "arrow")
        return self._add(stream, Map(c.fn, output=name), "map")

    def _filter(self, stream: _Stream, node, where: str) -> _Stream:
        if isinstance(node, exp.And):  # conjuncts one by one: kernels where they can be, Arrow where not
            return self._filter(self._filter(stream, node.this, where), node.expression, where)
        if isinstance(node, exp.Paren):
            return self._filter(stream, node.this, where)
        c = self._compile(node, stream, where)
        if not c.arrow:
            return self._add(stream, Filter(c.fn), where.lower())
        name = f"_sql_pred{self.serial}"
        stream = self._add(stream, ArrowMap(c.fn, output={name: pa.bool_()}), "predicate")
        kept = self._add(stream, Filter(_predicate(name)), where.lower())
        return self._add(kept, Project([n for n in kept.schema.names if n != name]), "drop")

    def _project(self, query: exp.Select, stream: _Stream) -> _Stream:
        out: dict[str, str] = {}
        for j, item in enumerate(query.expressions):
            node = item.this if isinstance(item, exp.Alias) else item
            if isinstance(node, exp.Star):
                out.update({n: n for n in stream.schema.names})
                continue
            name = item.alias_or_name if isinstance(item, (exp.Alias, exp.Column)) else f"EXPR${j}"
            if isinstance(node, exp.Column):
                if stream.schema.get_field_index(node.name) < 0:
                    raise SchemaError(f"SQL SELECT: unknown column {node.name!r}; the input has {stream.schema.names}")
                out[name] = node.name
                continue
            temp = f"_sql_c{j}"
            stream = self._computed(stream, node, temp, "SELECT")
            out[name] = temp
        if stream.changelog:
            out["op"] = "op"
        return self._add(stream, Project(out), "select")

    def _aggregate(self, query: exp.Select, stream: _Stream, window, group) -> _Stream:
        keys = []
        for g in group:
            if not isinstance(g, exp.Column):
                raise SqlError(f"SQL GROUP BY {g.sql()}: only columns are supported yet", construct=g.sql())
            keys.append(g.name)
        window_keys = [k for k in keys if k in _WINDOW_COLUMNS]
        if window is not None and sorted(window_keys) != sorted(_WINDOW_COLUMNS):
            raise SqlError("SQL: a window aggregate groups by window_start and window_end (and keys)",
                           construct="GROUP BY")
        keys = [k for k in keys if k not in _WINDOW_COLUMNS]
        for k in keys:
            if stream.schema.get_field_index(k) < 0:
                raise SchemaError(f"SQL GROUP BY: unknown column {k!r}; the input has {stream.schema.names}")
        aggs: dict[str, object] = {}
        names: dict[str, str] = {}  # the SQL text of an aggregate -> its output column
        having = query.args.get("having")
        for item in [*query.expressions, *([having.this] if having is not None else [])]:
            for agg in item.find_all(exp.AggFunc):
                text = agg.sql()
                if text in names:
                    continue
                name = item.alias if isinstance(item, exp.Alias) and item.this is agg else f"_sql_agg{len(names)}"
                stream, spec = self._agg(agg, stream, window is None)
                aggs[name] = spec
                names[text] = name
        key = keys if len(keys) != 1 else keys[0]
        if window is None:
            op = GroupAggregate(key, aggs)
        elif window[0] == "TUMBLE":
            op = TumblingWindow(size=window[1][0], key=key or None, aggs=aggs)
        elif window[0] == "SESSION":  # Flink's sessions: windows that touch merge
            if sorted(window[2]) != sorted(keys):
                raise SqlError(f"SQL: SESSION(... PARTITION BY {window[2]}) must be grouped by exactly those keys, "
                               f"got GROUP BY {keys}", construct="SESSION")
            op = SessionWindow(gap=window[1][0], key=key or None, aggs=aggs, touching=True)
        else:
            slide, size = window[1]
            op = SlidingWindow(size=size, slide=slide, key=key or None, aggs=aggs)
        stream = self._add(stream, op, "group" if window is None else window[0].lower(), at_source=False)
        if having is not None:
            stream = self._filter(stream, _over_aggregates(having.this.copy(), names), "HAVING")
        out: dict[str, str] = {}
        for j, item in enumerate(query.expressions):
            node = item.this if isinstance(item, exp.Alias) else item
            name = item.alias_or_name if isinstance(item, (exp.Alias, exp.Column)) else f"EXPR${j}"
            if isinstance(node, exp.Column):
                if node.name not in keys and node.name not in _WINDOW_COLUMNS:
                    raise SqlError(f"SQL SELECT {node.name}: a column that is neither grouped nor aggregated",
                                   construct=node.name)
                out[name] = node.name
            elif isinstance(node, exp.AggFunc):
                out[name] = names[node.sql()]
            else:  # an expression over keys and aggregates: a kernel on the aggregate's rows
                temp = f"_sql_c{j}"
                stream = self._computed(stream, _over_aggregates(node.copy(), names), temp, "SELECT")
                out[name] = temp
        if stream.changelog:
            out["op"] = "op"
        return self._add(stream, Project(out), "select")

    def _agg(self, agg: exp.AggFunc, stream: _Stream, updating: bool):
        distinct = isinstance(agg.this, exp.Distinct)
        arg = agg.this.expressions[0] if distinct else agg.this
        if isinstance(agg, exp.Count) and (arg is None or isinstance(arg, exp.Star)):
            return stream, A.count()
        if arg is None:
            raise SqlError(f"SQL: {agg.sql()} needs an argument", construct=agg.sql())
        if not isinstance(arg, exp.Column):  # an expression: computed first, then aggregated
            name = f"_sql_arg{self.serial}"
            stream = self._computed(stream, arg, name, "aggregate argument")
            arg = exp.column(name)
        if stream.schema.get_field_index(arg.name) < 0:
            raise SchemaError(f"SQL {agg.sql()}: unknown column {arg.name!r}; the input has {stream.schema.names}")
        if distinct:
            if not isinstance(agg, exp.Count):
                raise SqlError(f"SQL: {agg.sql()}: DISTINCT is supported in COUNT only", construct="DISTINCT")
            if not updating:
                raise SqlError("SQL: COUNT(DISTINCT ...) is supported in a non-windowed GROUP BY only",
                               construct="COUNT(DISTINCT")
            return stream, A.count_distinct(arg.name)
        fns = {exp.Count: A.count, exp.Sum: A.sum, exp.Avg: A.mean, exp.Min: A.min, exp.Max: A.max}
        fn = fns.get(type(agg))
        if fn is None:
            raise SqlError(f"SQL: the aggregate {agg.sql()} is not supported yet (COUNT, SUM, AVG, MIN, MAX are)",
                           construct=type(agg).__name__.upper())
        return stream, fn(arg.name)


def _predicate(column: str):
    """A filter kernel reading the boolean column ``column``."""
    src = f"def sql_keep({column}):\n    return {column}\n"
    from ._expr import _define

    return _define(src, "sql_keep", {})


def _over_aggregates(node: exp.Expression, names: dict[str, str]) -> exp.Expression:
    """``node`` with each aggregate replaced by the column that holds it."""
    for agg in list(node.find_all(exp.AggFunc)):
        if agg is node:
            return exp.column(names[agg.sql()])
        agg.replace(exp.column(names[agg.sql()]))
    return node


def _row_limit(where, rownum: str) -> int:
    """N of ``WHERE rownum <= N`` (``< N + 1``, ``= 1``)."""
    node = where.this if where is not None else None
    if isinstance(node, (exp.LTE, exp.LT, exp.EQ)) and isinstance(node.this, exp.Column) \
            and node.this.name == rownum and isinstance(node.expression, exp.Literal) and not node.expression.is_string:
        n = int(node.expression.this) - (1 if isinstance(node, exp.LT) else 0)
        if isinstance(node, exp.EQ) and n != 1:
            raise SqlError(f"SQL: {rownum} = {n}: only {rownum} = 1 (one row per key) is supported",
                           construct=node.sql())
        if n >= 1:
            return n
    raise SqlError(f"SQL: a Top-N keeps rows WHERE {rownum} <= N (or {rownum} = 1)", construct=rownum)


#: The bound of a join without a time condition: every pair matches (state is kept for good, as in any engine).
_FOREVER_MS = 365 * 1000 * 86_400_000


def _conjuncts(node):
    """The terms of ``a AND b AND ...``."""
    if isinstance(node, exp.Paren):
        return _conjuncts(node.this)
    if isinstance(node, exp.And):
        return [*_conjuncts(node.this), *_conjuncts(node.expression)]
    return [node]


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
                raise SchemaError(f"SQL: unknown column {column.sql()!r}; {column.table} has {self.schemas[side].names}")
            return side, column.name
        found = [j for j in (0, 1) if self.schemas[j].get_field_index(column.name) >= 0]
        if len(found) != 1:
            raise SchemaError(f"SQL: column {column.name!r} is " + ("in both tables: qualify it (a." + column.name +
                              ")" if found else f"in neither table ({self.aliases})"))
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
        from ._text import interval_ms

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

    def output_names(self, left: pa.Schema, right: pa.Schema, joined: pa.Schema) -> dict:
        """``(side, column) -> name in the join's output`` (a right column whose name is taken gets ``_right``)."""
        names = {(0, n): n for n in left.names}
        for n in right.names:
            names[(1, n)] = n if n not in left.names else f"{n}_right"
        missing = [v for v in names.values() if v not in joined.names]
        if missing:
            raise SqlError(f"SQL: join output columns {missing} not found in {joined.names}", construct="JOIN")
        return names


def _subquery_test(term):
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
