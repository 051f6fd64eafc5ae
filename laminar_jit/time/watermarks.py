"""Watermark generators, declared per source.

A source's watermark is the largest event time seen so far minus a delay.
The compiled step advances it row by row (``kernels/watermarks.py``), so
whether a row is late does not depend on batching; it never goes back.
"""

from __future__ import annotations

import datetime as _dt

__all__ = ["Ascending", "BoundedOutOfOrderness", "ProcessingTime", "WatermarkStrategy"]

#: Watermark before any event (int64 minimum): nothing is late yet.
WATERMARK_MIN = -(2**63)


class WatermarkStrategy:
    """Base class: a source watermark is the largest event time seen minus :attr:`delay`.

    The compiled step applies it row by row (``kernels/watermarks.py``).
    """

    delay: int | _dt.timedelta = 0

    def fingerprint(self) -> str:
        return f"{type(self).__name__}:{self.delay!r}"


class BoundedOutOfOrderness(WatermarkStrategy):
    """Watermark = largest event time seen − ``max_delay``.

    Parameters
    ----------
    max_delay : int or datetime.timedelta
        How far behind the largest event time an event may still arrive, in the
        event-time column's units (or a timedelta for timestamp columns).
    """

    def __init__(self, max_delay: int | _dt.timedelta):
        if isinstance(max_delay, _dt.timedelta):
            if max_delay < _dt.timedelta(0):
                raise ValueError("max_delay must be >= 0")
        elif int(max_delay) < 0:
            raise ValueError(f"max_delay must be >= 0, got {max_delay}")
        self.delay = max_delay

    def __repr__(self) -> str:
        return f"BoundedOutOfOrderness(max_delay={self.delay!r})"


class Ascending(WatermarkStrategy):
    """Event time never decreases: watermark = largest event time seen."""

    delay = 0

    def __repr__(self) -> str:
        return "Ascending()"


class ProcessingTime(WatermarkStrategy):
    """Processing time: the engine stamps each row with the wall clock when its batch arrives.

    Declare the source with ``event_time=`` naming a column the input does not
    have (e.g. ``"p_time"``); the engine adds it to the source's schema as
    ``timestamp[ms]`` and fills it, per batch, with the time the batch reached
    :meth:`~laminar_jit.DagExecutor.process_batch` (UTC). The watermark is
    that time: windows over it are Flink's processing-time windows (``PROCTIME()``),
    and a window fires when a later batch arrives after its end, or at
    ``finish()``. Results depend on when rows arrive, so a replay after a
    restore may put rows into other windows than the first run did.

    Examples
    --------
    >>> import laminar_jit as lj, pyarrow as pa
    >>> b = lj.DagBuilder().source("bids", pa.schema([("bidder", pa.int64())]), event_time="p_time",
    ...                            watermark=lj.ProcessingTime())
    """

    delay = 0
    #: The engine fills the event-time column with the wall clock.
    processing_time = True

    def __repr__(self) -> str:
        return "ProcessingTime()"


_UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def to_units(value, event_time_type) -> int:
    """Express a size/delay in the event-time column's units.

    Integers are taken as already in column units; a ``datetime.timedelta``
    needs a timestamp column and is converted to its unit.
    """
    if isinstance(value, _dt.timedelta):
        import pyarrow as pa

        if not pa.types.is_timestamp(event_time_type):
            raise ValueError(
                f"a timedelta ({value}) needs a timestamp event-time column; the column is "
                f"{event_time_type} — give the value as an integer in the column's units"
            )
        ns = (value.days * 86_400 + value.seconds) * 1_000_000_000 + value.microseconds * 1_000
        return ns // _UNIT_NS[event_time_type.unit]
    return int(value)
