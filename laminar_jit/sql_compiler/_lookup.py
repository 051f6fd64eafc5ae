"""Processing time and lookup joins in SQL: ``PROCTIME()``, and ``JOIN t FOR SYSTEM_TIME AS OF a.p_time`` where
``t`` is a bounded table (a ``pyarrow.Table`` in ``sources``) looked up by key, row by row, as Flink's lookup join."""

from __future__ import annotations

import inspect

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from ..errors import SchemaError, SqlError
from ..ops import ArrowMap, Filter
from ._expr import _Arrow, _define, predicate, referenced
from ._joins import _unqualified
from ._stream import Stream, conjuncts, did_you_mean, unique_name

__all__ = ["LookupPlanning", "PROCTIME_COLUMN", "is_proctime", "proctime_tables"]

#: The column a processing-time source gets: the wall clock when its batch arrived (``lj.ProcessingTime()``).
PROCTIME_COLUMN = "_sql_proctime"


def is_proctime(node) -> bool:
    """Whether ``node`` is the call ``PROCTIME()``."""
    return isinstance(node, exp.Anonymous) and node.name.upper() == "PROCTIME"


def proctime_tables(statements) -> set[str]:
    """The sources that run on processing time: those a ``SELECT`` calling ``PROCTIME()`` reads, through views.

    A source has one clock: read with ``PROCTIME()``, its rows are stamped with the wall clock as they arrive,
    and its ``WATERMARK`` (event time) is not used in that DAG."""
    views = {}
    for s in statements:
        if isinstance(s, exp.Create) and s.kind == "VIEW":
            target = s.this
            views[target.this.name if isinstance(target, exp.Schema) else target.name] = s.expression
    found: set[str] = set()

    def reads(select: exp.Select) -> list[str]:
        source = select.args.get("from_") or select.args.get("from")
        tables = [source.this] if source is not None else []
        return [t.name for t in tables if isinstance(t, exp.Table) and isinstance(t.this, exp.Identifier)]

    def resolve(name: str, seen: set) -> None:
        if name in views and name not in seen:  # (a view may read the source it is named as)
            seen.add(name)
            for table in reads(views[name]):
                resolve(table, seen)
        else:
            found.add(name)

    for s in statements:
        for select in s.find_all(exp.Select):
            if any(is_proctime(item.this if isinstance(item, exp.Alias) else item) for item in select.expressions):
                for table in reads(select):
                    resolve(table, set())
    return found


class _Lookup:
    """The function of a lookup join's ``ArrowMap``: each row's key (an Arrow expression of its columns) found
    in the table's unique keys; the table's columns at that row (strings as a dictionary over the table's
    values, nothing copied), and with ``inner`` whether it was found."""

    def __init__(self, key_fn, params, keys: pa.Array, columns: list[pa.Array], inner: bool):
        self.key_fn, self.keys, self.columns, self.inner = key_fn, keys, columns, inner
        self.__signature__ = inspect.Signature(
            [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params])
        self.__name__ = "lookup"

    def __call__(self, *arrays):
        key = self.key_fn(*arrays)
        if isinstance(key, pa.ChunkedArray):
            key = key.combine_chunks()
        if pa.types.is_dictionary(key.type):  # each distinct value once
            at = pc.index_in(key.dictionary.cast(self.keys.type), value_set=self.keys, skip_nulls=True)
            at = at.take(key.indices)
        else:
            at = pc.index_in(key.cast(self.keys.type), value_set=self.keys, skip_nulls=True)
        out = [pa.DictionaryArray.from_arrays(at, c) if pa.types.is_string(c.type) or pa.types.is_large_string(
            c.type) else c.take(at) for c in self.columns]
        return (*out, pc.is_valid(at)) if self.inner else tuple(out)


def _key_type(left: pa.DataType, right: pa.DataType) -> pa.DataType | None:
    """The type both sides of a lookup key are compared in, or None when they do not compare."""
    left = left.value_type if pa.types.is_dictionary(left) else left
    if left == right:
        return left
    if pa.types.is_integer(left) and pa.types.is_integer(right):
        return pa.int64()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in (left, right)):
        return pa.float64()
    if all(pa.types.is_string(t) or pa.types.is_large_string(t) for t in (left, right)):
        return pa.large_string()
    return None


class LookupPlanning:
    """The lookup joins of :class:`~laminar_jit.sql_compiler._plan.Planner` (a mixin)."""

    def _lookup_join(self, query: exp.Select, join: exp.Join, how: str, left: Stream, aliases: list[str],
                     name: str) -> tuple[Stream, exp.Select]:
        """``FROM a JOIN t FOR SYSTEM_TIME AS OF a.p_time ON f(a.x) = t.k``: an ``ArrowMap`` holding ``t`` adds
        the columns of ``t`` the query reads (and, for an inner join, a filter keeps the rows found); ``query``
        is returned rewritten over the joined columns, as :meth:`_join` does."""
        table = self.tables[name]
        if how not in ("inner", "left"):
            raise SqlError("SQL: a lookup join (FOR SYSTEM_TIME AS OF) is INNER or LEFT", construct="JOIN")
        if not left.at_source:
            raise SqlError("SQL: a lookup join looks up a table's rows (filtered or projected), not the results of "
                           "another operator", construct="FOR SYSTEM_TIME AS OF")
        la, ra = aliases

        def side(column: exp.Column) -> int:
            qualifier = column.table
            if qualifier == ra or (not qualifier and column.name in table.column_names
                                   and column.name not in left.schema.names):
                if column.name not in table.column_names:
                    raise SchemaError(f"SQL: table {name!r} has no column {column.name!r} (it has "
                                      f"{table.column_names}){did_you_mean(column.name, table.column_names)}")
                return 1
            if qualifier in (la, "") or qualifier is None:
                if left.schema.get_field_index(column.name) < 0:
                    raise SchemaError(f"SQL: {la} has no column {column.name!r} (it has {left.schema.names})"
                                      f"{did_you_mean(column.name, left.schema.names)}")
                return 0
            raise SchemaError(f"SQL: unknown table {qualifier!r} in {column.sql()!r}; the join reads {la} and {ra}")

        def sides(node) -> set[int]:
            return {side(c) for c in node.find_all(exp.Column)}

        key, table_filters = None, []
        for c in conjuncts(join.args["on"]):
            if sides(c) == {1}:
                table_filters.append(c)
                continue
            if isinstance(c, exp.EQ) and key is None:
                a, b = c.this, c.expression
                if isinstance(b, exp.Column) and sides(b) == {1} and sides(a) == {0}:
                    key = (a, b.name)
                    continue
                if isinstance(a, exp.Column) and sides(a) == {1} and sides(b) == {0}:
                    key = (b, a.name)
                    continue
            raise SqlError(f"SQL: lookup join ON {c.sql()}: a lookup matches one expression of {la}'s columns to a "
                           f"column of {ra} (ON mod({la}.x, 100) = {ra}.k), and may filter {ra}'s rows",
                           construct=c.sql())
        if key is None:
            raise SqlError(f"SQL: a lookup join needs ON <expression of {la}> = {ra}.<column>", construct="ON")
        for c in table_filters:  # the table's own conditions: its rows that may match, chosen once
            arrow = _Arrow(table.schema, self.udfs)
            body = arrow.text(_unqualified(c.copy()))
            params = referenced(c)
            keep = _define(f"def sql_rows({', '.join(params)}):\n    return {body}\n", "sql_rows", {}, arrow.called)
            table = table.filter(pc.fill_null(keep(*(table[p].combine_chunks() for p in params)), False))
        expr, key_column = key
        keys = table[key_column].combine_chunks()
        table = table.filter(pc.is_valid(keys))  # a null key matches nothing
        keys = table[key_column].combine_chunks()
        if pc.count_distinct(keys).as_py() != len(keys):
            raise SqlError(f"SQL: lookup table {name!r}: column {key_column!r} has repeated values; a lookup joins each "
                           "row with at most one row of the table (make the key unique)", construct=ra)
        expr = _unqualified(expr.copy())
        params = referenced(expr)
        arrow = _Arrow(left.schema, self.udfs)
        key_fn = _define(f"def sql_key({', '.join(params)}):\n    return {arrow.text(expr)}\n", "sql_key", {},
                         arrow.called)
        probe = key_fn(*(pa.array([], left.schema.field(p).type) for p in params))
        common = _key_type(probe.type, keys.type)
        if common is None:
            raise SqlError(f"SQL: lookup join ON {expr.sql()} = {ra}.{key_column}: {probe.type} does not compare with "
                           f"{keys.type}", construct="ON")
        keys = keys.cast(common)
        # the table's columns the query reads, named as the query names them
        read, stars = [], False
        for column in query.find_all(exp.Column):
            if isinstance(column.this, exp.Star):
                stars = stars or column.table == ra
            elif column.find_ancestor(exp.Join) is None and side(column) == 1 and column.name not in read:
                read.append(column.name)
        if stars or any(isinstance(e, exp.Star) for e in query.expressions):
            read += [c for c in table.column_names if c not in read]
        taken = set(left.schema.names)
        names = {}
        for c in read:
            names[c] = unique_name(c, taken)
            taken.add(names[c])
        output = {names[c]: table.schema.field(c).type for c in read}
        output = {n: (pa.dictionary(pa.int32(), t) if pa.types.is_string(t) or pa.types.is_large_string(t) else t)
                  for n, t in output.items()}
        found = f"_sql_found{self.serial}"
        if how == "inner":
            output[found] = pa.bool_()
        fn = _Lookup(key_fn, params, keys, [table[c].combine_chunks() for c in read], how == "inner")
        stream = self._add(left, ArrowMap(fn, output=output), "lookup")
        if how == "inner":
            stream = self._add(stream, Filter(predicate(found)), "found")
        rest = query.copy()
        rest.set("joins", None)
        rest.set("from_" if "from_" in rest.args else "from", None)
        expressions = []
        for item in rest.expressions:
            if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
                owner = 1 if isinstance(item, exp.Column) and item.table == ra else 0
                if isinstance(item, exp.Star) or owner == 0:
                    expressions += [exp.column(n) for n in left.schema.names if not n.startswith("_sql_")]
                if isinstance(item, exp.Star) or owner == 1:
                    expressions += [exp.column(names[c]).as_(c) for c in table.column_names]
            elif isinstance(item, exp.Column):
                expressions.append(item.as_(item.name))
            else:
                expressions.append(item)
        rest.set("expressions", expressions)
        for column in list(rest.find_all(exp.Column)):
            if not isinstance(column.this, exp.Star) and column.table:
                column.replace(exp.column(names[column.name] if side(column) == 1 else column.name))
        return stream, rest
