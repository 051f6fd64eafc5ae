"""What the planner carries between operators: a stream of rows, and the terms of a condition."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import pyarrow as pa
from sqlglot import exp

from ..errors import SqlError

__all__ = ["Stream", "conjuncts", "did_you_mean", "unique_name"]


@dataclass
class Stream:
    """Where a SELECT is while it is planned: the node whose rows it reads, and their schema."""

    node: str
    schema: pa.Schema
    at_source: bool  # rows straight from a source (or through filters): ArrowMap may read them
    event_time: str | None = None
    changelog: bool = False
    #: Columns that are the event time plus a constant (ms): the event time itself, and a window's
    #: ``window_end`` (its start + size), under whatever names a projection gave them.
    times: dict = field(default_factory=dict)
    #: Event times are multiples of this (ms): the rows of a window of that slide (None: any time).
    grain: int | None = None
    #: How far behind the watermark its rows may come (ms): a window's results come ``size`` after their
    #: event time (its start), so windows and joins reading them allow that lateness; None: no bound.
    delay: int | None = 0
    #: Its event time is processing time: the wall clock when a batch reached its source (``PROCTIME()``).
    proctime: bool = False

    def lateness(self, what: str) -> int:
        """The allowed lateness an operator reading this stream needs (``what`` names it in the error)."""
        if self.delay is None:
            raise SqlError(f"SQL: {what} over the rows of a regular join or a session window is not supported "
                           "yet: they come arbitrarily far behind the watermark", construct=what)
        return self.delay

    def time_offset(self, column: str) -> int | None:
        """``column`` - event time in ms when that is a constant, else None."""
        if column == self.event_time:
            return 0
        return self.times.get(column)


def conjuncts(node):
    """The terms of ``a AND b AND ...``."""
    if isinstance(node, exp.Paren):
        return conjuncts(node.this)
    if isinstance(node, exp.And):
        return [*conjuncts(node.this), *conjuncts(node.expression)]
    return [node]


def did_you_mean(name: str, options) -> str:
    """`` — did you mean 'x'?`` for the closest of ``options`` to a mistyped ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    if not close:
        close = [o for o in options if o.lower() == name.lower()]
    return f" — did you mean {close[0]!r}?" if close else ""


def unique_name(name: str, taken) -> str:
    """``name``, or as Flink names a repeated output column, ``name0``, ``name1``, ... (``B.dateTime, A.dateTime``)."""
    k, unique = 0, name
    while unique in taken:
        unique, k = f"{name}{k}", k + 1
    return unique
