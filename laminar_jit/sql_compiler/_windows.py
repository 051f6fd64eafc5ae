"""Windows in SQL: the window table functions (``TUMBLE``, ``HOP``, ``CUMULATE``, ``SESSION``) and Flink's group
window functions (``GROUP BY k, TUMBLE(ts, size)``)."""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from ..errors import SqlError
from ..ops import Filter, Map
from ..ops.windows import SlidingWindow
from ._expr import _define
from ._stream import Stream
from ._text import SESSION_FUNCTION, SUPPORTED_WINDOWS, interval_ms

__all__ = ["WindowPlanning", "window_offset"]


class WindowPlanning:
    """The window planning of :class:`~laminar_jit.sql_compiler._plan.Planner` (a mixin: it uses the planner's
    sources and operators)."""

    def _group_window(self, query: exp.Select, stream: Stream):
        """Flink's group window functions, ``GROUP BY k, TUMBLE(ts, size)`` (``HOP(ts, slide, size)``,
        ``SESSION(ts, gap)``) with ``TUMBLE_START(...)`` / ``_END`` in the select list, rewritten as the window
        table function's ``GROUP BY k, window_start, window_end``: ``(query, window)``; ``window`` is None
        without one."""
        calls = [g for g in query.args["group"].expressions if isinstance(g, exp.Anonymous)
                 and g.name.upper() in ("TUMBLE", "HOP", SESSION_FUNCTION)]
        if not calls:
            return query, None
        if len(calls) > 1:
            raise SqlError("SQL: one group window function per GROUP BY", construct=calls[1].sql())
        call = calls[0]
        kind = "SESSION" if call.name.upper() == SESSION_FUNCTION else call.name.upper()
        ts, *sizes = call.expressions
        if len(sizes) != (2 if kind == "HOP" else 1) or not isinstance(ts, exp.Column) \
                or ts.name != stream.event_time:
            raise SqlError(f"SQL: GROUP BY {kind}(ts, {'slide, size' if kind == 'HOP' else 'size'}) over the "
                           f"event time ({stream.event_time}), got {call.sql()}", construct=kind)
        query = query.copy()
        group = query.args["group"]
        keys = [g for g in group.expressions if g.sql() != call.sql()]
        group.set("expressions", [*keys, exp.column("window_start"), exp.column("window_end")])
        prefix = "SESSION" if kind == "SESSION" else kind
        for node in list(query.find_all(exp.Anonymous)):
            name = node.name.upper()
            if name in (f"{prefix}_START", f"{prefix}_END"):
                node.replace(exp.column("window_start" if name.endswith("START") else "window_end"))
        partition = [k.name for k in keys if isinstance(k, exp.Column)] if kind == "SESSION" else []
        return query, (kind, [interval_ms(a) for a in sizes], partition)

    def _window_source(self, call: exp.Anonymous):
        kind = "SESSION" if call.name.upper() == SESSION_FUNCTION else call.name.upper()
        if kind not in SUPPORTED_WINDOWS:
            raise SqlError(f"SQL: the {kind} window table function is not supported", construct=kind)
        args = call.expressions
        partition = self.sessions.pop(0) if kind == "SESSION" and self.sessions else []
        want = 4 if kind in ("HOP", "CUMULATE") else 3
        offset = kind in ("TUMBLE", "HOP") and len(args) == want + 1  # Flink's optional offset of the windows
        if len(args) != want + offset or not isinstance(args[0], exp.Column):
            shape = {"TUMBLE": "TABLE t, DESCRIPTOR(ts), size[, offset]",
                     "HOP": "TABLE t, DESCRIPTOR(ts), slide, size[, offset]",
                     "CUMULATE": "TABLE t, DESCRIPTOR(ts), step, size",
                     "SESSION": "TABLE t [PARTITION BY k], DESCRIPTOR(ts), gap"}[kind]
            raise SqlError(f"SQL: {kind}({shape}) expected, got {call.sql()}", construct=kind)
        stream = self._source(args[0].name, call)
        ts = args[1].this if isinstance(args[1], exp.Paren) else args[1]
        if not isinstance(ts, exp.Column) or stream.event_time != ts.name:
            raise SqlError(f"SQL: {kind} over {args[0].name}.{ts.sql()}: declare it as the table's event time "
                           f"(CREATE TABLE {args[0].name} (..., WATERMARK FOR {ts.sql()} AS {ts.sql()} - "
                           "INTERVAL '5' SECOND))", construct=kind)
        sizes = [interval_ms(a) for a in args[2:want]]
        return stream, (kind, sizes, partition, interval_ms(args[want]) if offset else 0)

    def _cumulate(self, stream: Stream, sizes: list, keys: list, aggs: dict):
        """``CUMULATE(TABLE t, DESCRIPTOR(ts), step, size)``: windows ``[s, s + step)``, ``[s, s + 2 step)``, ...,
        ``[s, s + size)`` for each ``s`` a multiple of ``size``. Planned as a sliding window of ``size`` by ``step``
        keyed also by ``s`` (``_sql_period``): its window ending at ``e`` holds, for period ``s``, the rows of
        ``[max(e - size, s), e)``, which is the cumulating window ``[s, e)`` when ``e <= s + size``
        (:meth:`_cumulated` keeps those). A row of a window's first step is in every window of its period, as in
        Flink; each period's panes are kept until its last window closes."""
        step, size = sizes
        if step <= 0 or size % step != 0:
            raise SqlError(f"SQL: CUMULATE(..., step, size): size ({size} ms) must be a multiple of step ({step} ms)",
                           construct="CUMULATE")
        ts = stream.event_time
        period = _define(f"def sql_period({ts}):\n    return {ts} // {size}\n", "sql_period", {}, kernel=True)
        stream = self._add(stream, Map(period, output="_sql_period"), "period")
        return stream, SlidingWindow(size=size, slide=step, key=[*keys, "_sql_period"], aggs=aggs,
                                     allowed_lateness=stream.lateness("a window"))

    def _cumulated(self, stream: Stream, size: int) -> Stream:
        """The cumulating windows of :meth:`_cumulate`'s sliding windows: those ending in their period, with the
        period's start as ``window_start``."""
        inside = _define(f"def sql_in_period(_sql_period, window_end):\n    return _sql_period == (window_end - 1) // "
                         f"{size}\n", "sql_in_period", {}, kernel=True)
        stream = self._add(stream, Filter(inside), "cumulated")
        start = _define(f"def sql_start(_sql_period):\n    return _sql_period * {size}\n", "sql_start", {},
                        kernel=True)
        stream = self._add(stream, Map(start, output={"window_start": stream.schema.field("window_start").type}),
                           "start")
        return replace(stream, times={}, grain=None)  # (window_end - window_start grows by step)


def window_offset(window: tuple) -> int:
    """The offset (ms) of a window table function's windows (``TUMBLE(..., size, offset)``); 0 by default."""
    return window[3] if len(window) > 3 else 0
