"""Watermark generators, declared per source.

A source's watermark is the largest event time seen so far minus a delay.
The compiled step advances it row by row (``kernels/watermarks.py``), so
whether a row is late does not depend on batching; it never goes back.
"""

from __future__ import annotations

import datetime as _dt

__all__ = ["Ascending", "BoundedOutOfOrderness", "WatermarkStrategy"]

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
