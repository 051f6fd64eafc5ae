"""``GroupAggregate``: a non-windowed ``GROUP BY`` whose results update (a changelog).

Semantics (Flink's group aggregate with mini-batches, where the design is
silent):

* the node keeps one result per key: the aggregates over every row of the
  key so far, nulls ignored (SQL rules); rows with a null key form one group;
* its output is a **changelog** (see :mod:`laminar_jit.changelog`): key
  column(s), the aggregates in the order given, then ``op`` (int8 RowKind).
  At the end of each call it emits, per key the call touched (keys in the
  order of their state slots, which is where their state lies in memory;
  a key's ``-U`` comes right before its ``+U``): ``+I`` the new result of a key with
  none; ``-U`` the old and ``+U`` the new result when it changed; nothing
  when it did not change; ``-D`` the old result when a changelog input
  retracted every row of the key;
* which intermediate results appear depends on how rows are grouped into
  calls; the result the changelog describes after any call does not: it is
  the aggregate over the rows consumed so far;
* an input that is itself a changelog is consumed with retractions: ``+I``/
  ``+U`` rows are added, ``-U``/``-D`` rows taken away (``min``/``max`` then
  keep each key's distinct values, as Flink does); a null ``op`` counts as
  ``+I``; a retraction for a key with no rows is ignored.

With ``state_ttl``, a key's state is dropped once the node's watermark passes
its latest event time plus the TTL (an *idle-state* TTL, as Flink's
``table.exec.state.ttl``, but measured in event time so that results are
reproducible). A dropped key's last result is not retracted; a later row of
the key starts it again with ``+I``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Mapping

import numpy as np
import pyarrow as pa

from ..changelog import OP_COLUMN, is_changelog
from ..errors import SchemaError
from .aggregates import Agg
from .base import Bound, Operator, kept_field, kernel_column, string_type
from .windows import _key_tuple, _units, check_key_columns

__all__ = ["GroupAggregate", "GroupSpec"]

#: The aggregates a group aggregate can update, and their kind codes (:mod:`laminar_jit.kernels.changelog`).
_KINDS = {"count": 1, "sum": 2, "mean": 3, "min": 4, "max": 5, "count_distinct": 6}


class GroupSpec:
    """A group aggregate's settings bound to its input (read by its generator and state)."""

    def __init__(self, keys, aggs, kinds, floats, columns, out_types, retract, event_time, ttl, in_floats=(),
                 strings=()):
        self.keys = keys
        #: (output name, Agg) pairs.
        self.aggs = aggs
        #: Per aggregate: kind code, whether its value is kept as float64, the column it reads (or None).
        self.kinds = kinds
        self.floats = floats
        self.columns = columns
        #: Per aggregate: its output Arrow type.
        self.out_types = out_types
        #: The input is a changelog: rows can be retracted (min/max keep value lists).
        self.retract = retract
        self.event_time = event_time
        #: Idle-state TTL in event-time units, 0 for none.
        self.ttl = ttl
        #: Per aggregate: whether the column it reads is floating point.
        self.in_floats = in_floats or (False,) * len(kinds)
        #: The string columns aggregated (as codes of their dictionaries).
        self.strings = frozenset(strings)

    @property
    def listed(self) -> int:
        """Aggregates that keep each key's distinct values: min/max over a changelog (to find the next
        value after a retraction) and every count_distinct."""
        return sum(k == 6 or (self.retract and k in (4, 5)) for k in self.kinds)


class GroupAggregate(Operator):
    """Aggregates per key over all rows so far, emitted as an updating result (a changelog).

    Parameters
    ----------
    key : str or list of str
        Key column(s): integer, boolean, temporal or string.
    aggs : mapping of str to Agg
        Output name → ``lj.count()``, ``lj.count(c)``, ``lj.sum(c)``,
        ``lj.mean(c)``, ``lj.min(c)``, ``lj.max(c)`` or ``lj.count_distinct(c)``
        (the aggregates that can be updated and retracted). Sums of integers
        are int64, means float64, counts int64, min/max keep the column's type.
        A string column may be counted, counted distinct, or its least or
        greatest value kept (in byte order, SQL's binary collation; min/max of
        strings over an append-only input).
        ``count(c)`` and ``count_distinct(c)`` skip nulls, so SQL's
        ``FILTER (WHERE p)`` is a column that is null where ``p`` fails.
    state_ttl : int or datetime.timedelta, optional
        Drop a key's state once the node's watermark passes the key's latest
        event time plus this (event-time units; a timedelta for timestamp
        columns). Needs an event-time column. Default: keep every key.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> per_seller = lj.GroupAggregate(key="seller", aggs={"n": lj.count(), "avg": lj.mean("price")})
    """

    kind = "stateful"
    #: It consumes changelogs as well as append-only streams (``build()`` checks this).
    takes_changelog = True
    emits_changelog = True

    def __init__(self, key, aggs: Mapping[str, Agg], state_ttl: int | _dt.timedelta | None = None):
        self.keys = _key_tuple(key)
        if not self.keys:
            raise ValueError("GroupAggregate needs key= (the GROUP BY column(s)), e.g. key='seller'")
        self.aggs = dict(aggs or {})
        if not self.aggs:
            raise ValueError("GroupAggregate needs at least one aggregate, e.g. aggs={'n': lj.count()}")
        if len(self.aggs) > 31:
            raise ValueError(f"GroupAggregate takes at most 31 aggregates, got {len(self.aggs)}; split them "
                             "over two nodes")
        for name, agg in self.aggs.items():
            if not isinstance(agg, Agg):
                raise TypeError(f"aggregate {name!r}: expected lj.count()/lj.sum(col)/…, got {agg!r}")
            if agg.user is not None or agg.kind not in _KINDS:
                raise ValueError(f"aggregate {name!r}: GroupAggregate updates count, sum, mean, min, max and "
                                 "count_distinct; "
                                 f"{agg!r} cannot be updated or retracted — use a window for it")
        if state_ttl is not None and isinstance(state_ttl, bool):
            raise TypeError("state_ttl must be an int or a datetime.timedelta")
        self.state_ttl = state_ttl

    # -- binding ---------------------------------------------------------------
    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        check_key_columns(node, input_schema, self.keys)
        retract = is_changelog(input_schema)
        ttl = 0
        if self.state_ttl is not None:
            if event_time is None or input_schema.get_field_index(event_time) < 0:
                raise SchemaError(f"operator {node!r}: state_ttl is measured in event time, and the input has "
                                  "no event-time column; declare the source with event_time='ts' (and keep it "
                                  "through Projects/Maps upstream), or drop state_ttl")
            ttl = _units(node, "state_ttl", self.state_ttl, input_schema.field(event_time).type, positive=True)
        fields = [kept_field(input_schema.field(k)) for k in self.keys]
        reads, dtypes, kinds, floats, columns, out_types, in_floats = [], [], [], [], [], [], []
        strings = []
        for name, agg in self.aggs.items():
            if name in self.keys or name == OP_COLUMN:
                raise SchemaError(f"operator {node!r}: aggregate name {name!r} clashes with an output column "
                                  f"(the key or {OP_COLUMN!r}); rename the aggregate")
            if agg.column is None:
                kinds.append(0)
                floats.append(False)
                in_floats.append(False)
                columns.append(None)
                out_types.append(pa.int64())
                continue
            text = string_type(input_schema.field(agg.column).type) \
                if input_schema.get_field_index(agg.column) >= 0 else None
            if text is not None:  # strings: int64 codes of the column's dictionary, compared by their bytes
                if agg.kind not in ("count", "count_distinct", "min", "max"):
                    raise SchemaError(f"operator {node!r}: aggregate {name!r} reads the string column "
                                      f"{agg.column!r}; of strings GroupAggregate counts, counts distinct values "
                                      "and keeps the least or greatest (count, count_distinct, min, max)")
                kinds.append(_KINDS[agg.kind])
                floats.append(False)
                in_floats.append(False)
                columns.append(agg.column)
                out_types.append(text if agg.kind in ("min", "max") else pa.int64())
                strings.append(agg.column)
                reads.append(agg.column)
                dtypes.append(np.dtype(np.int64))
                continue
            dtype = kernel_column(node, input_schema, agg.column, f"aggregate {name!r} column")
            in_type = input_schema.field(agg.column).type
            if dtype == np.uint64 and agg.kind in ("sum", "min", "max"):
                raise SchemaError(f"operator {node!r}: aggregate {name!r} reads {agg.column!r} of type uint64; "
                                  "GroupAggregate keeps integers as int64 — cast the column to int64 upstream")
            if agg.kind in ("sum", "mean") and dtype.kind not in "biuf":
                raise SchemaError(f"operator {node!r}: aggregate {name!r} sums {agg.column!r} of type {in_type}; "
                                  "sum and mean need a numeric column")
            is_float = agg.kind == "mean" or (dtype.kind == "f" and agg.kind not in ("count", "count_distinct"))
            if agg.kind in ("count", "count_distinct"):
                out = pa.int64()
            elif agg.kind == "mean" or (agg.kind == "sum" and dtype.kind == "f"):
                out = pa.float64()
            elif agg.kind == "sum":
                out = pa.int64()
            else:
                out = in_type
            kinds.append(_KINDS[agg.kind])
            floats.append(is_float)
            in_floats.append(dtype.kind == "f")
            columns.append(agg.column)
            out_types.append(out)
            reads.append(agg.column)
            dtypes.append(dtype)
        fields += [pa.field(name, t) for name, t in zip(self.aggs, out_types)]
        fields.append(pa.field(OP_COLUMN, pa.int8(), nullable=False))
        spec = GroupSpec(self.keys, tuple(self.aggs.items()), tuple(kinds), tuple(floats), tuple(columns),
                         tuple(out_types), retract, event_time, ttl, tuple(in_floats), tuple(strings))
        return Bound(node, self, input_schema, pa.schema(fields), tuple(reads), tuple(dtypes), spec=spec)

    def new_state(self, bound: Bound, capacity: int = 1024):
        """The engine-owned state of a node running this operator."""
        from ..state.group import GroupState

        return GroupState(bound, capacity)

    # -- identity ----------------------------------------------------------------
    def fingerprint(self) -> str | None:
        spec = repr([self.keys, [(n, a.fingerprint()) for n, a in self.aggs.items()], repr(self.state_ttl)])
        return "GroupAggregate:" + hashlib.sha256(spec.encode()).hexdigest()

    def label(self) -> str:
        return f"GroupAggregate(key={list(self.keys)}, {', '.join(self.aggs)})"

