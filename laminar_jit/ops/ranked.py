"""Unbounded ranked rows: ``TopN(..., window=None)`` and ``Dedup(..., keep="last")``, emitted as changelogs.

Both keep, per key, the best ``n`` rows seen so far (a Dedup keeping the last
row is a top-1 by event time in which ties go to the later row) and, at the
end of each call, emit what changed since the rows were last emitted, rank
by rank: ``+I`` for a rank that was empty, ``-U`` the old and ``+U`` the new
row of a rank whose row changed. The output is a changelog (see
:mod:`laminar_jit.changelog`) whose applied result after any call is the
top ``n`` rows per key of the input so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .._types import arrow_to_numpy_dtype
from ..changelog import OP_COLUMN
from ..errors import SchemaError
from .base import Bound, kept_field, kernel_column, string_type
from .windows import _units, check_key_columns

__all__ = ["RankedSpec", "bind_ranked"]


@dataclass(frozen=True)
class RankedSpec:
    """An unbounded TopN's or last-row Dedup's settings bound to its input."""

    keys: tuple[str, ...]
    #: Rows kept per key.
    n: int
    #: The column ranked by, and its numpy dtype.
    by: str
    by_dtype: object
    #: True: larger ``by`` ranks first.
    descending: bool
    #: Ties go to the later row (Dedup keeping the last row) rather than the earlier.
    later_wins: bool
    #: Whether the output has a ``rank`` column.
    with_rank: bool
    #: (name, numpy dtype or None for strings) of every input column, kept per row.
    payload: tuple = ()
    #: The input's event-time column, and the idle-state TTL in its units (0: none).
    event_time: str | None = None
    ttl: int = 0
    #: The second ORDER BY column (or None), its numpy dtype and direction.
    then_by: str | None = None
    then_by_dtype: object = None
    then_descending: bool = True


def bind_ranked(node: str, op, input_schema: pa.Schema, event_time: str | None, *, n: int, by: str | None,
                descending: bool, later_wins: bool, with_rank: bool, what: str, state_ttl=None,
                then_by: str | None = None, then_descending: bool = True) -> Bound:
    """The Bound of an unbounded TopN (``by`` a column) or last-row Dedup (``by`` None: the event time)."""
    check_key_columns(node, input_schema, op.keys)
    has_time = event_time is not None and input_schema.get_field_index(event_time) >= 0
    ttl = 0
    if state_ttl is not None:
        if not has_time:
            raise SchemaError(f"operator {node!r}: state_ttl is measured in event time, and the input has no "
                              "event-time column; declare the source with event_time='ts', or drop state_ttl")
        ttl = _units(node, "state_ttl", state_ttl, input_schema.field(event_time).type, positive=True)
    if by is None:
        if event_time is None or input_schema.get_field_index(event_time) < 0:
            raise SchemaError(f"operator {node!r}: {what} keeps the row with the latest event time; declare the "
                              "source with event_time='ts' (and keep that column through Projects/Maps upstream)")
        by = event_time
    by_dtype = kernel_column(node, input_schema, by, f"{what} by column")
    then_dtype = None if then_by is None else kernel_column(node, input_schema, then_by, f"{what} second by column")
    payload = []
    reserved = ("rank", OP_COLUMN) if with_rank else (OP_COLUMN,)
    for f in input_schema:
        if f.name in reserved:
            raise SchemaError(f"operator {node!r}: input column {f.name!r} clashes with a {what} output column; "
                              "rename it upstream with lj.Project")
        dtype = arrow_to_numpy_dtype(f.type)
        if dtype is None and string_type(f.type) is None:
            raise SchemaError(f"operator {node!r}: column {f.name!r} is {f.type}; {what} keeps numeric, boolean, "
                              "temporal and string columns — drop it upstream with lj.Project")
        payload.append((f.name, dtype))
    if len(payload) > 63:
        raise SchemaError(f"operator {node!r}: {what} keeps at most 63 columns, its input has {len(payload)}; "
                          "drop some upstream with lj.Project")
    fields = ([pa.field("rank", pa.int64())] if with_rank else []) + list(map(kept_field, input_schema))
    fields.append(pa.field(OP_COLUMN, pa.int8(), nullable=False))
    spec = RankedSpec(op.keys, int(n), by, by_dtype, bool(descending), bool(later_wins), bool(with_rank),
                      tuple(payload), event_time if has_time else None, ttl, then_by, then_dtype,
                      bool(then_descending))
    reads, dtypes = ((by,), (by_dtype,)) if then_by is None else ((by, then_by), (by_dtype, then_dtype))
    return Bound(node, op, input_schema, pa.schema(fields), reads, dtypes,
                 spec=spec, output_event_time=event_time)
