"""What the planner carries between operators: a stream of rows, and the terms of a condition."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

__all__ = ["Stream", "conjuncts", "did_you_mean"]


@dataclass
class Stream:
    """Where a SELECT is while it is planned: the node whose rows it reads, and their schema."""

    node: str
    schema: pa.Schema
    at_source: bool  # rows straight from a source (or through filters): ArrowMap may read them
    event_time: str | None = None
    changelog: bool = False


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
