"""A SELECT statement as operators of a DAG: filter, computed columns, window or group aggregate, projection."""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from ..dag import DagBuilder
from ..errors import SchemaError, SqlError
from ..ops import ArrowMap, Filter, Map, Project
from ..ops import aggregates as A
from ..ops.dedup import Dedup
from ..ops.group import GroupAggregate
from ..ops.over import OverAggregate
from ..ops.topn import TopN
from ..ops.windows import SessionWindow, SlidingWindow, TumblingWindow
from ..time import BoundedOutOfOrderness, ProcessingTime
from ._expr import Compiled, _define, arrow_type, compile_expr, predicate
from ._compose import NOT_STREAMING, ComposePlanning, distinct_as_group_by, reduce_variances
from ._joins import JoinPlanning, subquery_test
from ._lookup import PROCTIME_COLUMN, LookupPlanning, is_proctime
from ._over import OVER_FUNCTIONS, OverPlanning
from ._windows import WindowPlanning, window_offset
from ._stream import Stream, conjuncts, did_you_mean, unique_name
from ._text import SESSION_FUNCTION, WINDOW_FUNCTIONS

__all__ = ["Planner"]

_WINDOW_COLUMNS = ("window_start", "window_end")


class Planner(ComposePlanning, JoinPlanning, LookupPlanning, OverPlanning, WindowPlanning):
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
    proctime : set of str
        Sources that run on processing time (read by a ``SELECT`` that calls ``PROCTIME()``).
    """

    def __init__(self, sources: dict, watermarks: dict, udfs: dict, sessions: list | None = None,
                 proctime: set | None = None):
        self.builder = DagBuilder()
        self.proctime = set(proctime or ())
        #: Bounded tables (a ``pyarrow.Table`` in ``sources``), which lookup joins read whole.
        self.tables = {name: s for name, s in sources.items() if isinstance(s, pa.Table)}
        self.schemas = {name: getattr(s, "schema", s) for name, s in sources.items()}
        for name, schema in self.schemas.items():
            if not isinstance(schema, pa.Schema):
                raise TypeError(f"lj.sql: sources[{name!r}] must be a pyarrow.Schema or have .schema, "
                                f"got {type(schema).__name__}")
        self.watermarks, self.udfs = watermarks, udfs
        self.sessions = list(sessions or [])  # PARTITION BY keys of each SESSION call, in text order
        self.views: dict[str, exp.Expression] = {}
        self.planned: dict[str, Stream | None] = {}
        self.added: set[str] = set()
        self.serial = 0

    # -- sources ---------------------------------------------------------------------------------
    def _source(self, table: str, node: exp.Expression) -> Stream:
        if table in self.views and not (self.planned.get(table, 0) is None and table in self.schemas):
            # planned once, its last operator read by every query that names it; a view named as a source
            # reads that source (CREATE VIEW bid AS SELECT ..., date_time AS `dateTime` FROM bid)
            if table not in self.planned:
                self.planned[table] = None  # (a view that reads itself)
                self.planned[table] = self.plan(self.views[table], keep_time=True)
            if self.planned[table] is None:
                raise SqlError(f"SQL: view {table!r} reads itself", construct=table)
            return self.planned[table]
        if table not in self.schemas:
            raise SchemaError(f"SQL: unknown table {table!r} in {node.sql()!r}; sources are {sorted(self.schemas)}"
                              f"{did_you_mean(table, [*self.schemas, *self.views])} "
                              "(pass it in sources=)")
        schema = self.schemas[table]
        if table in self.proctime:  # the wall clock when a batch arrives, in a column the engine adds
            if table not in self.added:
                self.builder.source(table, schema, event_time=PROCTIME_COLUMN, watermark=ProcessingTime())
                self.added.add(table)
            schema = schema.append(pa.field(PROCTIME_COLUMN, pa.timestamp("ms"), nullable=False))
            return Stream(table, schema, at_source=True, event_time=PROCTIME_COLUMN, proctime=True)
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
        return Stream(table, schema, at_source=True, event_time=wm[0] if wm else None)

    def _name(self, what: str) -> str:
        self.serial += 1
        return f"sql{self.serial}_{what}"

    def _add(self, stream: Stream, op, what: str, at_source: bool | None = None) -> Stream:
        """``op`` reading ``stream``: the stream of its rows (bound here to learn its columns)."""
        name = self._name(what)
        self.builder.operator(name, op).connect(stream.node, name)
        schema = op.bind(name, stream.schema, stream.event_time).output_schema
        event_time = "window_start" if isinstance(op, (TumblingWindow, SlidingWindow, SessionWindow)) \
            else stream.event_time
        times, grain, delay = {}, None, stream.delay
        if isinstance(op, SessionWindow):
            delay = None
        elif isinstance(op, (TumblingWindow, SlidingWindow)):  # results leave size + lateness after their start
            delay = op.size + op.allowed_lateness if isinstance(op.size, int) else None
        if isinstance(op, (TumblingWindow, SlidingWindow)) and isinstance(op.size, int):
            times = {"window_end": op.size}  # window_end is window_start + size
            times.update({k: o for k, o in stream.times.items() if k in op.keys})  # (keys at an offset too)
            grain = op.size if isinstance(op, TumblingWindow) else op.slide
        elif isinstance(op, (Filter, Map, ArrowMap, OverAggregate)):
            times, grain = {c: o for c, o in stream.times.items() if c in schema.names}, stream.grain
        if isinstance(op, Project):  # the event time under its new name (a view's `dateTime` for `date_time`)
            event_time = next((new for new, old in op.mapping if old == event_time), None)
            times = {new: stream.times[old] for new, old in op.mapping if old in stream.times}
            grain = stream.grain
        event_time = event_time if event_time in schema.names else None
        return Stream(name, schema, stream.at_source if at_source is None else at_source, event_time,
                      stream.changelog or bool(getattr(op, "emits_changelog", False)),
                      times if event_time is not None else {}, grain if event_time is not None else None, delay,
                      stream.proctime)

    # -- statements ------------------------------------------------------------------------------
    def select(self, query: exp.Select, sink: str) -> None:
        """Plan ``query`` and write its rows to sink ``sink``."""
        self.builder.sink_for(self.plan(query).node, sink)

    def view(self, name: str, query: exp.Expression) -> None:
        """Remember ``CREATE VIEW name AS query``: planned where a query first reads it, shared by the others.

        A view may take the name of a source: it then hides the source from the statements after it, and
        reads the source itself (a view that renames a source's columns)."""
        if name in self.views:
            raise SqlError(f"SQL: CREATE VIEW {name}: the name is taken by another view", construct=name)
        self.views[name] = query

    def plan(self, query: exp.Select, keep_time: bool = False) -> Stream:
        """The operators of ``query``; the stream of its rows.

        With ``keep_time`` (a subquery in FROM or a join side), a select list that leaves out the event time
        still carries it, as a column ``_sql_time`` the outer query does not see: the outer query's windows
        and joins need it."""
        if query.args.get("with_") is not None:
            return self._with(query, keep_time)
        if isinstance(query, exp.SetOperation):
            return self._union(query, keep_time)
        if not isinstance(query, exp.Select):
            raise SqlError(f"SQL: expected a SELECT, got {query.key.upper()}", construct=query.sql()[:60])
        if query.args.get("distinct") is not None:
            query = distinct_as_group_by(query)
        for clause, why in NOT_STREAMING.items():
            if query.args.get(clause):
                raise SqlError(f"SQL: {clause.upper()}: {why}", construct=clause.upper())
        window = None
        if query.args.get("joins"):
            stream, query = self._join(query)  # (its WHERE done)
        else:
            ranked = self._ranked(query)
            if ranked is not None:
                return ranked
            stream, window = self._from(query)
        where = query.args.get("where")
        if where is not None:
            terms = conjuncts(where.this)
            semis = [t for t in terms if subquery_test(t) is not None]
            for term in terms:
                if term not in semis:
                    stream = self._filter(stream, term, "WHERE")
            if semis:  # the joins carry only the columns the query names (a string column must not pass two)
                named = {c.name for c in query.find_all(exp.Column)} | {stream.event_time}
                columns = [n for n in stream.schema.names if n in named]
                if len(columns) < len(stream.schema.names):
                    stream = self._add(stream, Project(columns), "columns")
            for term in semis:
                stream = self._semi(stream, query, *subquery_test(term))
        over = next((w for item in query.expressions for w in item.find_all(exp.Window)), None)
        if over is not None:  # (Top-N and dedup, ROW_NUMBER() in a subquery, are planned by _ranked above)
            if query.args.get("group") is not None or window is not None:
                raise SqlError("SQL: OVER aggregates read a table's rows, not groups or windows; aggregate in a "
                               "subquery first", construct=over.sql()[:60])
            query, stream = self._over(query, stream)
        group = query.args.get("group")
        if group is not None and window is None:
            query, window = self._group_window(query, stream)
            group = query.args.get("group")
        aggregates = [a for item in query.expressions for a in self._aggregates(item)]
        if group is not None or aggregates or window is not None:
            if window is not None and group is None:
                raise SqlError("SQL: a window table function needs GROUP BY window_start, window_end[, keys]",
                               construct=window[0])
            stream = self._aggregate(query, stream, window, group.expressions if group else [], keep_time)
        elif query.args.get("having") is not None:
            raise SqlError("SQL: HAVING needs GROUP BY or an aggregate", construct="HAVING")
        else:
            stream = self._project(query, stream, keep_time=keep_time)
        return stream

    def _from(self, query: exp.Select):
        source = query.args.get("from_") or query.args.get("from")
        if source is None:
            raise SqlError("SQL: SELECT without FROM is not supported", construct="SELECT")
        table = source.this
        if isinstance(table, exp.Subquery):  # FROM (SELECT ...) [AS] q: planned as an unnamed view
            return self.plan(table.this, keep_time=True), None
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

    def _ranked(self, query: exp.Select) -> Stream | None:
        """Top-N and deduplication, Flink's pattern: ``SELECT ... FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY
        k ORDER BY x) AS rownum FROM t) WHERE rownum <= N`` (``= 1``: one row per key); ``None`` for any other
        query. Over a window table function: ``TopN`` per window; over a table: an updating ``TopN``, or
        ``Dedup(keep="last")`` for the latest row by event time."""
        source = query.args.get("from_") or query.args.get("from")
        inner = source.this.this if source is not None and isinstance(source.this, exp.Subquery) else None
        windows = [item for item in (inner.expressions if isinstance(inner, exp.Select) else [])
                   if isinstance(item, exp.Alias) and isinstance(item.this, exp.Window)
                   and not isinstance(item.this.this, OVER_FUNCTIONS)]  # (agg(x) OVER: an OverAggregate)
        if not windows:
            return None
        over = windows[0].this
        rownum = windows[0].alias
        ties = isinstance(over.this, exp.Rank)  # RANK(): every row tied with the N-th too (window Top-N)
        if not isinstance(over.this, (exp.RowNumber, exp.Rank)) or len(windows) > 1:
            raise SqlError("SQL: Top-N is written SELECT *, ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) AS "
                           "rownum FROM ...; other OVER windows are not supported yet", construct=over.sql()[:60])
        own_where = inner.args.get("where")
        if own_where is not None and any(c.name == rownum and not c.table for c in own_where.find_all(exp.Column)):
            raise SqlError(f"SQL: WHERE {own_where.this.sql()} reads {rownum}, the ROW_NUMBER() of its own SELECT: "
                           "SQL evaluates WHERE before the select list, so no engine can; filter in an outer "
                           f"query: SELECT * FROM (SELECT *, ROW_NUMBER() OVER (...) AS {rownum} FROM ...) "
                           f"WHERE {rownum} <= N", construct=rownum)
        n = _row_limit(query.args.get("where"), rownum)
        for clause in ("group", "having", "joins", "order", "limit"):
            if query.args.get(clause) or (clause in ("order", "limit") and inner.args.get(clause)):
                raise SqlError(f"SQL: Top-N with {clause.upper()} is not supported yet", construct=clause.upper())
        partition = list(over.args.get("partition_by") or [])
        order = [(o.this, bool(o.args.get("desc"))) for o in (over.args.get("order").expressions
                                                                if over.args.get("order") else [])]
        if not order:
            raise SqlError("SQL: Top-N needs ORDER BY", construct="ORDER BY")
        descending = [desc for _, desc in order]
        if all(isinstance(item, exp.Star) or item is windows[0] for item in inner.expressions) \
                and not inner.args.get("joins") and not inner.args.get("group"):
            stream, window = self._from(inner)  # SELECT *, ROW_NUMBER() ... FROM a table or a window
            if inner.args.get("where") is not None:
                stream = self._filter(stream, inner.args["where"].this, "WHERE")
            if not all(isinstance(c, exp.Column) for c in [*partition, *(col for col, _ in order)]):
                raise SqlError("SQL: Top-N over SELECT * partitions and orders by columns", construct="OVER")
            keys = [c.name for c in partition]
            by = [col.name for col, _ in order]
        else:  # the subquery's rows (a join, named columns, ...), the ranking columns among them
            stream, ranking = self._ranked_rows(inner, windows[0], [*partition, *(col for col, _ in order)])
            window, keys, by = None, ranking[:len(partition)], ranking[len(partition):]
        key = None if not keys else keys[0] if len(keys) == 1 else keys
        if not any(isinstance(item, exp.Star) for item in query.expressions):  # keep only what is read
            wanted = {c.name for item in query.expressions for c in item.find_all(exp.Column)}
            wanted |= set(keys) | set(by) | {stream.event_time}
            columns = [n for n in stream.schema.names if n in wanted]
            if len(columns) < len(stream.schema.names):
                stream = self._add(stream, Project(columns), "columns")
        if window is not None:
            if window[0] != "TUMBLE" or window_offset(window) or not {"window_start", "window_end"} <= set(keys) \
                    or len(by) != 1:
                raise SqlError("SQL: a window Top-N is over TUMBLE (no offset), partitioned by window_start, "
                               "window_end[, keys] and ordered by one column", construct="ROW_NUMBER")
            rest = [k for k in keys if k not in ("window_start", "window_end")]
            op = TopN(n, by=by[0], key=(rest[0] if len(rest) == 1 else rest) or None, window=window[1][0],
                      allowed_lateness=stream.lateness("a window Top-N"),
                      descending=descending[0], ties=ties)
        elif ties:
            raise SqlError("SQL: RANK() ranks rows of a window (over TUMBLE); over a table, Top-N ranks by "
                           "ROW_NUMBER(), as Flink's does", construct="RANK")
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
                out.update({c: c for c in stream.schema.names if c not in ("rank", "op") and not c.startswith("_sql_")})
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

    def _ranked_rows(self, inner: exp.Select, rank: exp.Alias, ranking: list) -> tuple[Stream, list[str]]:
        """The rows of a Top-N's subquery without its ``ROW_NUMBER()``, and the columns holding its ``PARTITION
        BY`` and ``ORDER BY`` expressions (selected ones by their names, others as hidden columns)."""
        plain = inner.copy()
        items = [item for item in plain.expressions if not (isinstance(item, exp.Alias) and item.alias == rank.alias)]
        named = {(item.this if isinstance(item, exp.Alias) else item).sql(): item.alias_or_name for item in items
                 if not isinstance(item, exp.Star) and not (isinstance(item, exp.Column)
                                                            and isinstance(item.this, exp.Star))}
        stars = {item.table for item in items if isinstance(item, exp.Column) and isinstance(item.this, exp.Star)}
        everything = any(isinstance(item, exp.Star) for item in items)
        columns = []
        for j, e in enumerate(ranking):
            if e.sql() in named:
                columns.append(named[e.sql()])
            elif isinstance(e, exp.Column) and (everything or (e.table and e.table in stars)):
                columns.append(e.name)
            else:
                items.append(e.copy().as_(f"_sql_rk{j}"))
                columns.append(f"_sql_rk{j}")
        plain.set("expressions", items)
        return self.plan(plain, keep_time=True), columns

    # -- pieces ----------------------------------------------------------------------------------
    def _compile(self, node, stream: Stream, where: str) -> Compiled:
        return compile_expr(node, stream.schema, self.udfs, where)

    def _computed(self, stream: Stream, node, name: str, where: str) -> Stream:
        """``stream`` with column ``name`` = ``node`` (a Map kernel, or an ArrowMap)."""
        c = self._compile(node, stream, where)
        if c.arrow:
            op = ArrowMap(c.fn, output={name: arrow_type(c, stream.schema)})
            return self._add(stream, op, "arrow")
        return self._add(stream, Map(c.fn, output=name), "map")

    def _filter(self, stream: Stream, node, where: str) -> Stream:
        if isinstance(node, exp.And):  # conjuncts one by one: kernels where they can be, Arrow where not
            return self._filter(self._filter(stream, node.this, where), node.expression, where)
        if isinstance(node, exp.Paren):
            return self._filter(stream, node.this, where)
        c = self._compile(node, stream, where)
        if not c.arrow:
            return self._add(stream, Filter(c.fn), where.lower())
        name = f"_sql_pred{self.serial}"
        stream = self._add(stream, ArrowMap(c.fn, output={name: pa.bool_()}), "predicate")
        kept = self._add(stream, Filter(predicate(name)), where.lower())
        return self._add(kept, Project([n for n in kept.schema.names if n != name]), "drop")

    def _project(self, query: exp.Select, stream: Stream, rename=None, keep_time: bool = False) -> Stream:
        """The select list: columns renamed, expressions computed (``rename`` maps a join's qualified columns)."""
        out: dict[str, str] = {}
        for j, item in enumerate(query.expressions):
            node = item.this if isinstance(item, exp.Alias) else item
            if isinstance(node, exp.Star):
                out.update({n: n for n in stream.schema.names if not n.startswith("_sql_")})
                continue
            name = unique_name(item.alias_or_name if isinstance(item, (exp.Alias, exp.Column)) else f"EXPR${j}", out)
            if rename is not None:
                node = rename(node)
            if is_proctime(node):  # the processing time its source stamped
                if not stream.proctime or stream.event_time is None:
                    raise SqlError("SQL: PROCTIME() is a table's processing time: call it in a SELECT that reads "
                                   "the table (or a view of it) directly", construct="PROCTIME()")
                node = exp.column(stream.event_time)
            if isinstance(node, exp.Column):
                if stream.schema.get_field_index(node.name) < 0:
                    raise SchemaError(f"SQL SELECT: unknown column {node.name!r}; the input has {stream.schema.names}"
                                      f"{did_you_mean(node.name, stream.schema.names)}")
                out[name] = node.name
                continue
            temp = f"_sql_c{j}"
            stream = self._computed(stream, node, temp, "SELECT")
            out[name] = temp
        return self._select(stream, out, keep_time)

    def _select(self, stream: Stream, out: dict, keep_time: bool) -> Stream:
        """The Project ending a SELECT (``op`` kept on a changelog; the event time kept with ``keep_time``)."""
        if keep_time and stream.event_time is not None and stream.event_time not in out.values():
            out["_sql_time"] = stream.event_time
        if stream.changelog:
            out["op"] = "op"
        return self._add(stream, Project(out), "select")

    def _aggregate(self, query: exp.Select, stream: Stream, window, group, keep_time: bool = False) -> Stream:
        keys = []
        names: dict[str, str] = {}  # the SQL text of an aggregate or a grouped expression -> its output column
        for j, g in enumerate(group):
            if isinstance(g, exp.Column):
                keys.append(g.name)
                continue
            key = f"_sql_g{j}"  # GROUP BY an expression: computed, then grouped by like a column
            stream = self._computed(stream, g, key, "GROUP BY")
            keys.append(key)
            names[g.sql()] = key
        window_keys = [k for k in keys if k in _WINDOW_COLUMNS]
        if window is not None and sorted(window_keys) != sorted(_WINDOW_COLUMNS):
            raise SqlError("SQL: a window aggregate groups by window_start and window_end (and keys)",
                           construct="GROUP BY")
        keys = [k for k in keys if k not in _WINDOW_COLUMNS]
        regrouped = None
        if window is None and stream.grain is not None and stream.event_time in keys and not stream.changelog:
            # GROUP BY the event time of a window's rows (times at multiples of its slide): a tumbling window of
            # that slide holds one such time each, so the groups are windows again, appended as they close
            regrouped = stream.event_time
            keys = [k for k in keys if k != regrouped]
            window = ("TUMBLE", [stream.grain], [])
        if window is None and not keys:  # a global aggregate (no GROUP BY): one updating row, under a constant key
            stream = self._add(stream, Map(_constant_key(stream), output="_sql_all"), "map")
            keys = ["_sql_all"]
        for k in keys:
            if stream.schema.get_field_index(k) < 0:
                raise SchemaError(f"SQL GROUP BY: unknown column {k!r}; the input has {stream.schema.names}"
                                  f"{did_you_mean(k, stream.schema.names)}")
        if window is None:  # (sums retract; a window keeps Welford's state)
            query = reduce_variances(query.copy())
        aggs: dict[str, object] = {}
        having = query.args.get("having")
        for item in [*query.expressions, *([having.this] if having is not None else [])]:
            for agg in self._aggregates(item):
                text = agg.sql()
                if text in names:
                    continue
                name = item.alias if isinstance(item, exp.Alias) and item.this is agg else f"_sql_agg{len(names)}"
                stream, spec = self._agg(agg, stream, window is None)
                aggs[name] = spec
                names[text] = name
        if not aggs:  # GROUP BY without an aggregate (SELECT DISTINCT): one row per group (and window)
            aggs["_sql_n"] = A.count()
        key = keys if len(keys) != 1 else keys[0]
        if window is None:
            op = GroupAggregate(key, aggs)
        elif window[0] == "TUMBLE":
            op = TumblingWindow(size=window[1][0], key=key or None, aggs=aggs, offset=window_offset(window),
                                allowed_lateness=stream.lateness("a window"))
        elif window[0] == "SESSION":  # Flink's sessions: windows that touch merge
            if sorted(window[2]) != sorted(keys):
                raise SqlError(f"SQL: SESSION(... PARTITION BY {window[2]}) must be grouped by exactly those keys, "
                               f"got GROUP BY {keys}", construct="SESSION")
            op = SessionWindow(gap=window[1][0], key=key or None, aggs=aggs, touching=True,
                               allowed_lateness=stream.lateness("a session window"))
        elif window[0] == "CUMULATE":
            stream, op = self._cumulate(stream, window[1], keys, aggs)
        else:
            slide, size = window[1]
            op = SlidingWindow(size=size, slide=slide, key=key or None, aggs=aggs, offset=window_offset(window),
                               allowed_lateness=stream.lateness("a window"))
        stream = self._add(stream, op, "group" if window is None else window[0].lower(), at_source=False)
        if window is not None and window[0] == "CUMULATE":
            stream = self._cumulated(stream, window[1][1])
        if having is not None:
            stream = self._filter(stream, _over_aggregates(having.this.copy(), names), "HAVING")
        out: dict[str, str] = {}
        for j, item in enumerate(query.expressions):
            node = item.this if isinstance(item, exp.Alias) else item
            name = item.alias_or_name if isinstance(item, (exp.Alias, exp.Column)) else f"EXPR${j}"
            if node.sql() in names:  # an aggregate (built in or the user's), or a grouped expression
                out[name] = names[node.sql()]
            elif isinstance(node, exp.Column) and node.name == regrouped:
                out[name] = "window_start"
            elif isinstance(node, exp.Column):
                if node.name not in keys and node.name not in _WINDOW_COLUMNS:
                    raise SqlError(f"SQL SELECT {node.name}: a column that is neither grouped nor aggregated",
                                   construct=node.name)
                out[name] = node.name
            else:  # an expression over keys and aggregates: a kernel on the aggregate's rows
                temp = f"_sql_c{j}"
                stream = self._computed(stream, _over_aggregates(node.copy(), names), temp, "SELECT")
                out[name] = temp
        return self._select(stream, out, keep_time)

    def _aggregates(self, node: exp.Expression) -> list[exp.Expression]:
        """The aggregate calls in ``node``: built-in ones, and user aggregates called by their ``udfs`` name."""
        users = {name.lower() for name, fn in self.udfs.items() if isinstance(fn, A.UserAggregate)}
        found = []

        def visit(n):
            if isinstance(n, exp.AggFunc) or (isinstance(n, exp.Anonymous) and n.name.lower() in users) or \
                    (isinstance(n, exp.Filter) and isinstance(n.this, exp.AggFunc)):  # agg(x) FILTER (WHERE c)
                found.append(n)
                return
            for child in n.iter_expressions():
                visit(child)

        visit(node)
        return found

    def _agg(self, agg: exp.AggFunc, stream: Stream, updating: bool):
        if isinstance(agg, exp.Filter):  # agg(x) FILTER (WHERE c) is agg(CASE WHEN c THEN x END): nulls are skipped
            inner, cond = agg.this.copy(), agg.expression.this
            distinct = isinstance(inner.this, exp.Distinct)
            arg = inner.this.expressions[0] if distinct else inner.this
            arg = exp.Literal.number(1) if arg is None or isinstance(arg, exp.Star) else arg
            case = exp.Case(ifs=[exp.If(this=cond.copy(), true=arg.copy())])
            inner.set("this", exp.Distinct(expressions=[case]) if distinct else case)
            agg = inner
        if isinstance(agg, exp.Anonymous):  # a user aggregate: lj.UserAggregate called with one column
            fn = next(f for name, f in self.udfs.items() if name.lower() == agg.name.lower())
            if len(agg.expressions) != 1:
                raise SqlError(f"SQL: {agg.sql()}: a user aggregate takes one argument", construct=agg.name)
            arg = agg.expressions[0]
            if not isinstance(arg, exp.Column):
                name = f"_sql_arg{self.serial}"
                stream = self._computed(stream, arg, name, "aggregate argument")
                arg = exp.column(name)
            return stream, fn(arg.name)
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
            raise SchemaError(f"SQL {agg.sql()}: unknown column {arg.name!r}; the input has {stream.schema.names}"
                              f"{did_you_mean(arg.name, stream.schema.names)}")
        if distinct:
            if not isinstance(agg, exp.Count):
                raise SqlError(f"SQL: {agg.sql()}: DISTINCT is supported in COUNT only", construct="DISTINCT")
            return stream, A.count_distinct(arg.name)
        fns = {exp.Count: A.count, exp.Sum: A.sum, exp.Avg: A.mean, exp.Min: A.min, exp.Max: A.max,
               exp.VariancePop: A.var_pop, exp.Variance: A.var_samp, exp.StddevPop: A.stddev_pop,
               exp.StddevSamp: A.stddev_samp, exp.Stddev: A.stddev_samp,
               # the exact count is within any approximation's bounds
               exp.ApproxDistinct: A.count_distinct,
               # by event time (ties: arrival), so the result does not depend on how rows were batched
               exp.FirstValue: A.first, exp.LastValue: A.last}
        fn = fns.get(type(agg))
        if fn is None:
            raise SqlError(f"SQL: the aggregate {agg.sql()} is not supported yet (COUNT, SUM, AVG, MIN, MAX, "
                           "VAR_POP, VAR_SAMP, STDDEV_POP, STDDEV_SAMP, FIRST_VALUE, LAST_VALUE are)",
                           construct=type(agg).__name__.upper())
        if updating and fn in (A.first, A.last):
            raise SqlError(f"SQL: {agg.sql()} is computed in window aggregates only (an updating GROUP BY takes "
                           "COUNT, COUNT(DISTINCT), SUM, AVG, MIN, MAX and the variances); group by a window table "
                           "function", construct=agg.sql())
        return stream, fn(arg.name)


def _constant_key(stream: Stream):
    """A kernel giving 0 for every row (it reads one numeric column: a kernel reads at least one)."""
    readable = [f.name for f in stream.schema if f.name.isidentifier() and (
        pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_temporal(f.type))]
    if not readable:
        raise SqlError("SQL: an aggregate without GROUP BY needs a numeric or time column in its input",
                       construct="SELECT")
    column = stream.event_time if stream.event_time in readable else readable[0]
    return _define(f"def sql_all({column}):\n    return np.int64(0)\n", "sql_all", {}, kernel=True)


def _over_aggregates(node: exp.Expression, names: dict[str, str]) -> exp.Expression:
    """``node`` with each aggregate (a call whose SQL text ``names`` holds) replaced by the column that holds it."""
    for agg in [n for n in node.walk() if isinstance(n, (exp.AggFunc, exp.Anonymous, exp.Filter))
                and n.sql() in names]:
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
