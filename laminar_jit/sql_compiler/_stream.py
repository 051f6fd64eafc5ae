"""What the planner carries between operators: a stream of rows, and the terms of a condition."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

__all__ = ["Stream", "conjuncts"]


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
