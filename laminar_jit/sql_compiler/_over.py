"""OVER aggregates: ``agg(x) OVER (PARTITION BY k ORDER BY ts ROWS|RANGE BETWEEN ... PRECEDING AND CURRENT ROW)``."""

from __future__ import annotations

import datetime as _dt

import pyarrow as pa
from sqlglot import exp

from ..errors import SchemaError, SqlError
from ..ops import aggregates as A
from ..ops.over import OverAggregate
from ._stream import Stream, did_you_mean
from ._text import interval_ms

__all__ = ["OVER_FUNCTIONS", "OverPlanning"]

_FUNCTIONS = {exp.Count: A.count, exp.Sum: A.sum, exp.Avg: A.mean, exp.Min: A.min, exp.Max: A.max}
#: The aggregates an OVER window computes (other window functions: ROW_NUMBER() and RANK() for Top-N).
OVER_FUNCTIONS = tuple(_FUNCTIONS)
_FORM = ("agg(x) OVER (PARTITION BY k ORDER BY <event time> [ROWS BETWEEN n PRECEDING | RANGE BETWEEN "
         "INTERVAL 't' unit PRECEDING | ... UNBOUNDED PRECEDING] AND CURRENT ROW)")


class OverPlanning:
    """The :class:`~laminar_jit.sql_compiler._plan.Planner`'s planning of OVER aggregates."""

    def _over(self, query: exp.Select, stream: Stream) -> tuple[exp.Select, Stream]:
        """An :class:`~laminar_jit.OverAggregate` for the OVER aggregates of ``query``'s select list; ``query``
        is returned with each replaced by the column that holds it."""
        query = query.copy()
        windows = [w for item in query.expressions for w in item.find_all(exp.Window)]
        settings, aggs, names = None, {}, {}
        for w in windows:
            if w.args.get("alias") is not None:  # (OVER w)
                raise SqlError(f"SQL: {w.sql()}: a named window (WINDOW w AS ...) is not supported yet; write "
                               f"the window in the OVER clause: {_FORM}", construct=w.sql()[:60])
            frame = self._frame(w, stream)
            if settings is not None and frame != settings:
                raise SqlError("SQL: the OVER aggregates of one SELECT share one window (as in Flink): the same "
                               "PARTITION BY, ORDER BY and frame", construct=w.sql()[:60])
            settings = frame
            text = w.sql()
            if text not in names:
                names[text] = f"_sql_over{len(names)}"
                aggs[names[text]] = self._over_function(w, stream)
            w.replace(exp.column(names[text]))
        keys, by_rows, preceding = settings
        if preceding is not None and not by_rows and pa.types.is_timestamp(stream.schema.field(stream.event_time).type):
            preceding = _dt.timedelta(milliseconds=preceding)
        op = OverAggregate(aggs, key=list(keys) or None, frame="rows" if by_rows else "range", preceding=preceding)
        return query, self._add(stream, op, "over", at_source=False)

    def _over_function(self, w: exp.Window, stream: Stream):
        agg = w.this
        if type(agg) not in _FUNCTIONS or isinstance(agg.this, exp.Distinct):
            raise SqlError(f"SQL: {agg.sql()} OVER (...): an OVER aggregate is COUNT, SUM, AVG, MIN or MAX "
                           "(Top-N and deduplication: ROW_NUMBER() in a subquery, filtered in the outer query)",
                           construct=agg.sql())
        arg = agg.this
        if isinstance(agg, exp.Count) and (arg is None or isinstance(arg, exp.Star)):
            return A.count()
        if not isinstance(arg, exp.Column):
            raise SqlError(f"SQL: {agg.sql()} OVER (...) aggregates a column; compute {arg.sql()} in a subquery",
                           construct=agg.sql())
        return _FUNCTIONS[type(agg)](_known(stream, arg.name, agg.sql()))

    def _frame(self, w: exp.Window, stream: Stream) -> tuple:
        """``(keys, by rows, preceding)`` of an OVER window (``preceding`` None: unbounded)."""
        keys = []
        for p in w.args.get("partition_by") or []:
            if not isinstance(p, exp.Column):
                raise SqlError(f"SQL: PARTITION BY {p.sql()}: partition by columns (compute others in a subquery)",
                               construct=p.sql())
            keys.append(_known(stream, p.name, "PARTITION BY"))
        order = w.args.get("order")
        terms = order.expressions if order is not None else []
        if len(terms) != 1 or not isinstance(terms[0].this, exp.Column) or terms[0].args.get("desc") \
                or terms[0].this.name != stream.event_time:
            raise SqlError(f"SQL: {w.sql()}: an OVER aggregate orders rows by their event time, ascending "
                           f"(ORDER BY {stream.event_time}); rows come in that order only as the watermark "
                           "passes them", construct=(order.sql() if order is not None else w.sql())[:60])
        spec = w.args.get("spec")
        if spec is None:  # SQL's default frame with ORDER BY: every earlier row and the row's peers
            return tuple(keys), False, None
        by_rows = spec.args.get("kind", "").upper() == "ROWS"
        end = spec.args.get("end")
        if str(end).upper() != "CURRENT ROW" or str(spec.args.get("start_side") or "").upper() != "PRECEDING":
            raise SqlError(f"SQL: {spec.sql()}: an OVER frame ends at the CURRENT ROW and starts PRECEDING it "
                           "(a later end would wait for rows that have not come)", construct=spec.sql())
        start = spec.args.get("start")
        if str(start).upper() == "UNBOUNDED":
            return tuple(keys), by_rows, None
        if by_rows:
            if not (isinstance(start, exp.Literal) and not start.is_string and start.this.isdigit()):
                raise SqlError(f"SQL: {spec.sql()}: ROWS BETWEEN n PRECEDING takes a whole number n",
                               construct=spec.sql())
            return tuple(keys), True, int(start.this)
        if isinstance(start, exp.Interval):
            return tuple(keys), False, interval_ms(start)
        if isinstance(start, exp.Literal) and not start.is_string and start.this.isdigit():
            return tuple(keys), False, int(start.this)  # (in the event time's units: milliseconds)
        raise SqlError(f"SQL: {spec.sql()}: RANGE BETWEEN INTERVAL 't' unit PRECEDING (or a number of "
                       "milliseconds)", construct=spec.sql())


def _known(stream: Stream, name: str, where: str) -> str:
    """``name``, a column of ``stream`` (else a SchemaError with a did-you-mean)."""
    if stream.schema.get_field_index(name) < 0:
        raise SchemaError(f"SQL {where}: unknown column {name!r}; the input has {stream.schema.names}"
                          f"{did_you_mean(name, stream.schema.names)}")
    return name
