"""``OverAggregate``: every row with an aggregate over its key's rows up to it in event time (SQL's OVER).

Semantics (Flink's event-time OVER aggregation, where the design is silent):

* rows wait until the watermark passes their event time, then leave in
  event-time order (ties in arrival order), each with its aggregates over
  the *frame* of its key (``PARTITION BY``) that ends at the row:
  ``frame="range"`` — the rows at most ``preceding`` time units before it
  (every earlier row when ``preceding`` is None), and its *peers*, the
  rows of the same key and time (all peers get the same result);
  ``frame="rows"`` — the ``preceding`` rows before it (every one when
  None) and the row itself, in (time, arrival) order;
* a row whose event time is below the watermark when it arrives is late:
  it is dropped and counted in ``late_events`` (its frame has been
  emitted already);
* aggregates follow SQL's null rules: ``count()`` counts rows,
  ``count(c)`` non-null values, ``sum``/``min``/``max``/``mean`` skip
  nulls and are null over no values; integer sums stay int64, means are
  float64;
* the output is append-only: the input row's columns, then the
  aggregates.

The operator runs between compiled steps: its input rows leave the step as
an Arrow batch, it folds the ready ones with :func:`~laminar_jit.kernels.over.over_fold`,
and the rows it emits run through a step of their own (see
:func:`~laminar_jit.executor.steps.boundary_nodes`). Its state: the
waiting rows, and per key the running sums and counts, and for a bounded
frame the rows in it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pyarrow as pa

from ..errors import SchemaError
from .aggregates import Agg
from .base import Bound, Operator, kernel_column, string_type
from .windows import _key_tuple, _units, check_key_columns

__all__ = ["OverAggregate", "OverSpec"]

#: Aggregates an OVER frame computes, and their kind codes (:mod:`laminar_jit.kernels.changelog`).
_KINDS = {"count": 1, "sum": 2, "mean": 3, "min": 4, "max": 5}


@dataclass(frozen=True)
class OverSpec:
    """An OVER aggregate's settings bound to its input (read by its state)."""

    keys: tuple[str, ...]
    event_time: str
    #: (output name, Agg) pairs.
    aggs: tuple
    #: Per aggregate: kind code (0 for ``count()``), whether its column is floating point, its column or None.
    kinds: tuple[int, ...]
    floats: tuple[bool, ...]
    columns: tuple
    #: The frame: by rows (else by time), and how far back (None: unbounded), in rows or event-time units.
    by_rows: bool
    preceding: int | None
    #: String key columns and the type their values come back as (kept as codes of a dictionary).
    strings: tuple = ()


class OverAggregate(Operator):
    """Each row with aggregates over the rows of its key up to it, in event-time order (SQL's ``OVER``).

    Parameters
    ----------
    aggs : mapping of str to Agg
        Output column name → aggregate: ``lj.count()``, ``lj.count(col)``,
        ``lj.sum``, ``lj.mean``, ``lj.min``, ``lj.max`` of numeric columns.
    key : str or list of str, optional
        Key column(s) (``PARTITION BY``; at most two); without a key, one frame of all rows.
    frame : {"range", "rows"}
        ``"range"``: the rows whose event time is at most ``preceding``
        before the row's, and its peers (rows of the same time);
        ``"rows"``: the row and the ``preceding`` rows before it.
    preceding : int, datetime.timedelta or None
        How far the frame reaches back: a number of rows, or a length of
        event time; None for every earlier row (``UNBOUNDED PRECEDING``).

    Examples
    --------
    A moving average of each auction's last 10 prices and the row's own:

    >>> import laminar_jit as lj
    >>> moving = lj.OverAggregate({"avg10": lj.mean("price")}, key="auction", frame="rows", preceding=10)
    """

    kind = "stateful"
    #: It runs on Arrow batches between compiled steps (see :func:`~laminar_jit.executor.steps.boundary_nodes`).
    between_steps = True

    def __init__(self, aggs: Mapping[str, Agg], key=None, frame: str = "range",
                 preceding: int | _dt.timedelta | None = None):
        self.keys = _key_tuple(key)
        self.aggs = dict(aggs or {})
        if not self.aggs:
            raise ValueError("OverAggregate needs at least one aggregate, e.g. {'n': lj.count()}")
        for name, agg in self.aggs.items():
            if not isinstance(agg, Agg) or agg.user is not None or agg.kind not in _KINDS:
                raise TypeError(f"OverAggregate: aggregate {name!r} must be lj.count(), lj.count(col), lj.sum, "
                                f"lj.mean, lj.min or lj.max, got {agg!r}")
        if frame not in ("range", "rows"):
            raise ValueError(f"OverAggregate: frame must be 'range' or 'rows', got {frame!r}")
        if frame == "rows" and preceding is not None and (not isinstance(preceding, (int, np.integer))
                                                          or isinstance(preceding, bool) or preceding < 0):
            raise ValueError(f"OverAggregate: frame='rows' counts rows: preceding must be an int >= 0, "
                             f"got {preceding!r}")
        if len(self.keys) > 2:
            raise ValueError(f"OverAggregate: at most two key columns, got {list(self.keys)}")
        self.frame = frame
        self.preceding = preceding

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        if event_time is None or input_schema.get_field_index(event_time) < 0:
            raise SchemaError(f"operator {node!r}: an OVER aggregate orders rows by event time; declare the source "
                              "with event_time='ts' (and keep that column through Projects/Maps upstream)")
        check_key_columns(node, input_schema, self.keys)
        kinds, floats, columns, fields, reads, dtypes = [], [], [], [], [], []
        for name, agg in self.aggs.items():
            if input_schema.get_field_index(name) >= 0:
                raise SchemaError(f"operator {node!r}: aggregate name {name!r} clashes with an input column; "
                                  "name it otherwise")
            if agg.column is None:
                kinds.append(0)
                floats.append(False)
                columns.append(None)
                fields.append(pa.field(name, pa.int64()))
                continue
            if input_schema.get_field_index(agg.column) >= 0 \
                    and string_type(input_schema.field(agg.column).type) is not None:
                raise SchemaError(f"operator {node!r}: aggregate {name!r} ({agg!r}) reads the string column "
                                  f"{agg.column!r}; an OVER aggregate takes numeric columns")
            dtype = kernel_column(node, input_schema, agg.column, f"aggregate {name!r} column")
            is_float = dtype.kind == "f"
            kinds.append(_KINDS[agg.kind])
            floats.append(is_float)
            columns.append(agg.column)
            reads.append(agg.column)
            dtypes.append(dtype)
            in_type = input_schema.field(agg.column).type
            if agg.kind == "count":
                out = pa.int64()
            elif agg.kind == "mean":
                out = pa.float64()
            elif agg.kind == "sum":
                out = pa.float64() if is_float else pa.int64()
            else:
                out = in_type
            fields.append(pa.field(name, out))
        preceding = None
        if self.preceding is not None:
            preceding = int(self.preceding) if self.frame == "rows" else _units(
                node, "preceding", self.preceding, input_schema.field(event_time).type, positive=False)
        spec = OverSpec(self.keys, event_time, tuple(self.aggs.items()), tuple(kinds), tuple(floats),
                        tuple(columns), self.frame == "rows", preceding,
                        tuple((k, string_type(input_schema.field(k).type)) for k in self.keys
                              if string_type(input_schema.field(k).type) is not None))
        schema = pa.schema([*input_schema, *fields])
        return Bound(node, self, input_schema, schema, tuple(reads), tuple(dtypes), spec=spec,
                     output_event_time=event_time)

    def new_state(self, bound: Bound, capacity: int = 1024):
        """The engine-owned state of a node running this operator."""
        from ..state.over import OverState

        return OverState(bound, capacity)

    def fingerprint(self) -> str | None:
        parts = [repr(self.keys), repr([(n, a.fingerprint()) for n, a in self.aggs.items()]), self.frame,
                 repr(self.preceding)]
        return "OverAggregate:" + hashlib.sha256(repr(parts).encode()).hexdigest()

    def label(self) -> str:
        back = "UNBOUNDED" if self.preceding is None else str(self.preceding)
        return f"OverAggregate({self.frame.upper()} {back} PRECEDING, key={list(self.keys)}, {', '.join(self.aggs)})"

