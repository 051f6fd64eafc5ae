"""``Dedup``: the first row per key per event-time interval, emitted as it arrives."""

from __future__ import annotations

import datetime as _dt

import pyarrow as pa

from ..errors import SchemaError
from .base import Bound
from .ranked import RankedSpec, bind_ranked
from .windows import WindowOperator, WindowSpec, _key_tuple, _units, check_key_columns

__all__ = ["Dedup"]


class Dedup(WindowOperator):
    """Keep the first row of each key in each event-time interval (or the latest row of each key, updating).

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

    With ``keep="last"`` (and no ``within``) it keeps the latest row of each
    key, by event time, ties going to the later arrival, and its output is a
    changelog (see :mod:`laminar_jit.changelog`): at the end of each call,
    per key whose latest row changed, ``+I`` the first row, or ``-U`` the
    previous and ``+U`` the new one. Columns: the input's, then ``op``. The
    applied result equals ``QUALIFY row_number() OVER (PARTITION BY key ORDER
    BY ts DESC, arrival DESC) = 1`` over the rows so far. No row is late.

    Parameters
    ----------
    key : str or list of str
        Key column(s): integer, boolean, temporal or string.
    within : int or datetime.timedelta, optional
        Interval length in event-time units (a timedelta for timestamp
        columns); needed with ``keep="first"``, not given with ``keep="last"``.
    allowed_lateness : int or datetime.timedelta, default 0
        How long after its end an interval is still remembered.
    late : {"drop", "side_output"}
        What happens to late rows.
    late_sink : str, optional
        Sink receiving late rows (unchanged) with ``late="side_output"``.
    offset : int or datetime.timedelta, default 0
        Shift of the interval grid from the epoch.
    keep : {"first", "last"}, default "first"
        The first row per key and interval (append-only), or the latest row
        per key (a changelog, unbounded).
    state_ttl : int or datetime.timedelta, optional
        With ``keep="last"``: forget a key once the watermark passes its
        latest event time plus this (as :class:`GroupAggregate`).

    Examples
    --------
    >>> import laminar_jit as lj
    >>> first_bid = lj.Dedup(key=["auction", "bidder"], within=60_000)  # one bid per bidder per minute
    >>> latest_bid = lj.Dedup(key=["bidder", "auction"], keep="last")   # retracts the bidder's previous bid
    """

    #: No aggregates: the window machinery only tracks which (key, interval) were seen.
    needs_aggs = False

    def __init__(self, key, within=None, allowed_lateness: int | _dt.timedelta = 0, late: str = "drop",
                 late_sink: str | None = None, offset: int | _dt.timedelta = 0, keep: str = "first",
                 state_ttl: int | _dt.timedelta | None = None):
        if not _key_tuple(key):
            raise ValueError("Dedup needs key= (the column(s) whose repeats are dropped), e.g. key='auction'")
        if keep not in ("first", "last"):
            raise ValueError(f"Dedup: keep must be 'first' or 'last', got {keep!r}")
        if keep == "first" and within is None:
            raise ValueError("Dedup(keep='first') needs within= (the interval a key's first row is kept for), "
                             "e.g. within=60_000; keep='last' keeps each key's latest row with no interval")
        if keep == "last" and (within is not None or allowed_lateness or late != "drop" or offset):
            raise ValueError("Dedup(keep='last') keeps each key's latest row for good: within, allowed_lateness, "
                             "late and offset do not apply; leave them out")
        if state_ttl is not None and keep != "last":
            raise ValueError("Dedup: state_ttl bounds the state of keep='last'; keep='first' forgets each "
                             "interval when the watermark passes it")
        self.keep = keep
        self.state_ttl = state_ttl
        super().__init__(key, None, allowed_lateness, late, late_sink)
        self.within = within
        self.offset = offset

    @property
    def emits_changelog(self) -> bool:
        """``keep="last"`` updates its result: its output is a changelog."""
        return self.keep == "last"

    def new_state(self, bound: Bound, capacity: int = 1024):
        if isinstance(bound.spec, RankedSpec):
            from ..state.ranked import RankedState

            return RankedState(bound, capacity)
        return super().new_state(bound, capacity)

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        if self.keep == "last":
            return bind_ranked(node, self, input_schema, event_time, n=1, by=None, descending=True,
                               later_wins=True, with_rank=False, what="Dedup(keep='last')",
                               state_ttl=self.state_ttl)
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
        return Bound(node, self, input_schema, input_schema, (), (), spec=spec,
                     output_event_time=event_time)

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [repr(self.within), repr(self.offset), self.keep,
                                               repr(self.state_ttl)]

    def label(self) -> str:
        if self.keep == "last":
            return f"Dedup(key={list(self.keys)}, keep='last')"
        return f"Dedup(key={list(self.keys)}, within={self.within})"
