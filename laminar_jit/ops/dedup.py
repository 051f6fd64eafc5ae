"""``Dedup``: the first row per key per event-time interval, emitted as it arrives."""

from __future__ import annotations

import datetime as _dt

import pyarrow as pa

from ..errors import SchemaError
from .base import Bound
from .windows import WindowOperator, WindowSpec, _key_tuple, _units, check_key_columns

__all__ = ["Dedup"]


class Dedup(WindowOperator):
    """Keep the first row of each key in each event-time interval; drop the repeats.

    Intervals are epoch-aligned ``[k * within, (k + 1) * within)`` (shifted
    by ``offset``), like tumbling windows. The first row of a (key, interval)
    — first in arrival order — passes through unchanged at once; later rows
    of the same key and interval are dropped. A (key, interval) is remembered
    until the node's watermark passes the interval's end plus
    ``allowed_lateness``; a row arriving after that is late (its interval is
    forgotten, so it could no longer be told apart from a repeat): it is
    dropped and counted, or routed to ``late_sink``. Rows with a null key form
    one group, as in SQL ``PARTITION BY``. The output has the input's schema
    and event time.

    Equivalent SQL over the rows that are not late:
    ``QUALIFY row_number() OVER (PARTITION BY key, ts // within ORDER BY arrival) = 1``.

    Parameters
    ----------
    key : str or list of str
        Key column(s): integer, boolean, temporal or string.
    within : int or datetime.timedelta
        Interval length in event-time units (a timedelta for timestamp columns).
    allowed_lateness : int or datetime.timedelta, default 0
        How long after its end an interval is still remembered.
    late : {"drop", "side_output"}
        What happens to late rows.
    late_sink : str, optional
        Sink receiving late rows (unchanged) with ``late="side_output"``.
    offset : int or datetime.timedelta, default 0
        Shift of the interval grid from the epoch.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> first_bid = lj.Dedup(key=["auction", "bidder"], within=60_000)  # one bid per bidder per minute
    """

    #: No aggregates: the window machinery only tracks which (key, interval) were seen.
    needs_aggs = False

    def __init__(self, key, within, allowed_lateness: int | _dt.timedelta = 0, late: str = "drop",
                 late_sink: str | None = None, offset: int | _dt.timedelta = 0):
        if not _key_tuple(key):
            raise ValueError("Dedup needs key= (the column(s) whose repeats are dropped), e.g. key='auction'")
        super().__init__(key, None, allowed_lateness, late, late_sink)
        self.within = within
        self.offset = offset

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        if event_time is None or input_schema.get_field_index(event_time) < 0:
            raise SchemaError(f"operator {node!r}: Dedup needs an event-time column; declare the source with "
                              "event_time='ts' (and keep that column through Projects/Maps upstream)")
        check_key_columns(node, input_schema, self.keys)
        et_type = input_schema.field(event_time).type
        size = _units(node, "within", self.within, et_type)
        spec = WindowSpec("dedup", event_time, et_type, self.keys,
                          _units(node, "allowed_lateness", self.allowed_lateness, et_type, positive=False),
                          self.late, self.late_sink, size=size,
                          offset=_units(node, "offset", self.offset, et_type, positive=False) % size)
        # its output rows are input rows: the event time stays where it was
        return Bound(node, self, input_schema, input_schema, (), (), extra={"output_event_time": event_time},
                     spec=spec)

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [repr(self.within), repr(self.offset)]

    def label(self) -> str:
        return f"Dedup(key={list(self.keys)}, within={self.within})"
