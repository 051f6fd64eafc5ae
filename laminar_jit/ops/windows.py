"""Event-time windows: ``TumblingWindow``, ``SlidingWindow`` (pane-based) and ``SessionWindow``.

Semantics (Flink's, where the design is silent):

* windows are epoch-aligned half-open intervals ``[start, end)`` shifted by
  ``offset``; a row belongs to the window containing its event time;
* a window is emitted **once**, when the node's watermark reaches
  ``end + allowed_lateness``; output rows are ``window_start``,
  ``window_end``, the key column(s), then the aggregates in the order given,
  and the rows of one emission are ordered by ``window_end`` then key;
* a row whose window has already been emitted is **late**: it never changes
  an emitted result; it is dropped and counted (``metrics.late_events``), or
  with ``late="side_output"`` routed unchanged to the sink ``late_sink``;
* the watermark a row is judged against is the one in force when it arrives
  — the source watermark advances row by row (a running maximum), so whether
  a row is late does not depend on how the input was split into batches.

Keys are any integer, boolean, temporal or string column (strings, also
dictionary-encoded ones such as Polars categoricals, are encoded into codes
at the source boundary and come back as plain strings); rows
with a null key form their own group, as in SQL ``GROUP BY``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pyarrow as pa

from .._types import arrow_to_numpy_dtype, numpy_to_arrow_type
from ..errors import SchemaError
from ..time.watermarks import to_units
from .aggregates import STRING_KINDS, Agg
from .base import Bound, Operator, kept_field, kernel_column, string_type

__all__ = ["SessionWindow", "SlidingWindow", "TumblingWindow", "WindowOperator", "WindowSpec"]


@dataclass(frozen=True)
class WindowSpec:
    """A window-family node's settings, bound to its input: times are in event-time units.

    The family is every operator whose state is (key, window) slots: tumbling,
    sliding and session windows, Dedup (an interval per key) and TopN (the
    best ``topn`` rows per key and window). The plan generator, the state
    and the batch cutting read the window's geometry here, and only here.
    """

    #: "tumbling", "sliding", "session", "dedup" or "topn".
    kind: str
    event_time: str
    event_time_type: pa.DataType
    keys: tuple[str, ...]
    #: How long after its end a window waits before it is emitted (``allowed_lateness``).
    lateness: int
    late: str = "drop"
    late_sink: str | None = None
    #: (output name, Agg) pairs.
    aggs: tuple = ()
    size: int = 0
    slide: int = 0
    #: Sliding windows aggregate rows into panes of ``gcd(size, slide)``.
    pane: int = 0
    offset: int = 0
    gap: int = 0
    #: Sessions: rows exactly ``gap`` apart share a session (Flink's touching windows merge).
    touching: bool = False
    #: TopN: how many rows per (key, window), ranked by ``by`` (``by_dtype``), and the kept columns.
    topn: int = 0
    by: str | None = None
    by_dtype: object = None
    descending: bool = False
    payload: tuple = ()
    #: TopN: also keep the rows that tie the n-th best (SQL ``rank() <= n``): a tie-row store in the state.
    ties: bool = False

    @property
    def session(self) -> bool:
        return self.kind == "session"

    @property
    def sliding(self) -> bool:
        """Windows that overlap (``slide < size``): entries are (key, pane) and fires merge panes."""
        return self.kind == "sliding" and self.slide != self.size

    @property
    def aggregating(self) -> bool:
        """Whether the output holds only keys, window bounds and aggregates (not the rows read)."""
        return self.kind in ("tumbling", "sliding", "session")

    @property
    def windows_per_entry(self) -> int:
        """Windows one open entry can fall in (the fan-out of a pane when windows fire)."""
        return -(-self.size // self.slide) if self.sliding else 1

    @property
    def rows_per_entry(self) -> int:
        """Rows an open entry emits when it fires: one per window, up to ``topn``, none for a Dedup."""
        return {"dedup": 0, "topn": self.topn}.get(self.kind, 1)

    def settings(self) -> dict[str, int]:
        """The values generated code reads at run time, by the local names it uses."""
        if self.session:
            return {"gap": self.gap, "lateness": self.lateness, "touch": int(self.touching)}
        out = {"size": self.size, "offset": self.offset, "lateness": self.lateness}
        if self.kind in ("tumbling", "sliding"):
            out.update(slide=self.slide or self.size, pane=self.pane or self.size)
        # (TopN's n is a shape of its state, slots x n, and stays compiled in; so does ``ties``, which adds
        # the tie-row store to the state and its arguments to the generated functions)
        return out

    def due_grid(self) -> tuple[int, int, int] | None:
        """``(slide, phase, lateness)`` of sliding windows: one becomes due when the watermark
        reaches ``phase + k * slide`` (None for the others, whose entries fire by their own bound)."""
        if not self.sliding:
            return None
        return self.slide, (self.offset + self.size + self.lateness) % self.slide, self.lateness


def _units(node: str, what: str, value, et_type, positive=True) -> int:
    try:
        out = to_units(value, et_type)
    except ValueError as exc:
        raise SchemaError(f"operator {node!r}: {what}: {exc}") from None
    if positive and out <= 0 or out < 0:
        raise SchemaError(f"operator {node!r}: {what} must be {'positive' if positive else '>= 0'}, got {value}")
    return out


def check_key_columns(node: str, schema: pa.Schema, keys) -> None:
    """Key columns must exist and be integer, boolean, temporal or string columns."""
    for k in keys:
        idx = schema.get_field_index(k)
        if idx < 0:
            raise SchemaError(f"operator {node!r}: key column {k!r} is not in its input; "
                              f"available columns: {', '.join(schema.names)}")
        t = schema.field(idx).type
        if arrow_to_numpy_dtype(t) is None and string_type(t) is None:
            raise SchemaError(f"operator {node!r}: key column {k!r} is {t}; keys must be integer, boolean, "
                              "temporal or string columns (string, large_string or a dictionary of them) — "
                              "cast it upstream or declare it as pa.string() in the source schema")
        if arrow_to_numpy_dtype(t) is not None and arrow_to_numpy_dtype(t).kind == "f":
            raise SchemaError(f"operator {node!r}: key column {k!r} is {t}; floating-point keys are not "
                              "allowed (cast or bucket them first)")


def _window_start(schema: pa.Schema) -> str | None:
    """The event-time column of a window's results: ``window_start`` (None if the output has none)."""
    return "window_start" if "window_start" in schema.names else None


def _key_tuple(key) -> tuple[str, ...]:
    if key is None:
        return ()
    return (key,) if isinstance(key, str) else tuple(key)


class WindowOperator(Operator):
    """Shared configuration and schema binding of the window operators."""

    kind = "stateful"
    needs_aggs = True

    def __init__(self, key=None, aggs: Mapping[str, Agg] | None = None,
                 allowed_lateness: int | _dt.timedelta = 0, late: str = "drop", late_sink: str | None = None):
        self.keys = _key_tuple(key)
        self.aggs = dict(aggs or {})
        if not self.aggs and self.needs_aggs:
            raise ValueError("a window needs at least one aggregate, e.g. aggs={'n': lj.count()}")
        for name, agg in self.aggs.items():
            if not isinstance(agg, Agg):
                raise TypeError(f"aggregate {name!r}: expected lj.count()/lj.sum(col)/…, got {agg!r}")
        if late not in ("drop", "side_output"):
            raise ValueError(f"late must be 'drop' or 'side_output', got {late!r}")
        if late == "side_output" and not late_sink:
            raise ValueError("late='side_output' needs late_sink='<sink name>'")
        if late == "drop" and late_sink:
            raise ValueError("late_sink is only used with late='side_output'")
        self.allowed_lateness = allowed_lateness
        self.late = late
        self.late_sink = late_sink

    # -- binding ---------------------------------------------------------------
    def _bind_common(self, node: str, schema: pa.Schema, event_time: str | None) -> dict:
        if event_time is None or schema.get_field_index(event_time) < 0:
            raise SchemaError(
                f"operator {node!r}: windows need an event-time column; declare the source with "
                "event_time='ts' (and keep that column through Projects/Maps upstream)"
            )
        et_type = schema.field(event_time).type
        check_key_columns(node, schema, self.keys)
        reads, dtypes, out_fields, aggs = [], [], [], []
        bound_time = pa.timestamp(et_type.unit, et_type.tz) if pa.types.is_timestamp(et_type) else pa.int64()
        out_fields += [pa.field("window_start", bound_time), pa.field("window_end", bound_time)]
        for k in self.keys:
            out_fields.append(kept_field(schema.field(k)))  # dictionary keys come back as their values
        for name, agg in self.aggs.items():
            if name in ("window_start", "window_end") or name in self.keys:
                raise SchemaError(f"operator {node!r}: aggregate name {name!r} clashes with an output column")
            if agg.column is None:
                out_fields.append(pa.field(name, pa.int64()))
                aggs.append((name, agg))
                continue
            if schema.get_field_index(agg.column) >= 0 and agg.user is None \
                    and string_type(schema.field(agg.column).type) is not None:
                if agg.kind not in STRING_KINDS:
                    raise SchemaError(f"operator {node!r}: aggregate {name!r} ({agg!r}) of the string column "
                                      f"{agg.column!r}: a window takes {', '.join(STRING_KINDS)} of strings")
                # the state keeps the column's dictionary codes (min/max compare their bytes)
                reads.append(agg.column)
                dtypes.append(np.dtype(np.int64))
                counted = agg.kind in ("count", "count_distinct")
                out_type = pa.int64() if counted else string_type(schema.field(agg.column).type)
                out_fields.append(pa.field(name, out_type))
                aggs.append((name, agg.over_strings()))
                continue
            aggs.append((name, agg))
            dtype = kernel_column(node, schema, agg.column, f"aggregate {name!r} column")
            if agg.user is not None:
                agg.user.check(node, agg.column, dtype)
            reads.append(agg.column)
            dtypes.append(dtype)
            result = agg.blueprint.result(dtype)
            in_type = schema.field(agg.column).type
            out_type = in_type if result == dtype and agg.user is None and agg.kind in ("min", "max", "first", "last") \
                else numpy_to_arrow_type(result)
            out_fields.append(pa.field(name, out_type))
        return {
            "event_time": event_time,
            "event_time_type": et_type,
            "lateness": _units(node, "allowed_lateness", self.allowed_lateness, et_type, positive=False),
            "out_schema": pa.schema(out_fields),
            "reads": tuple(reads),
            "dtypes": tuple(dtypes),
            "aggs": tuple(aggs),
        }

    def new_state(self, bound: Bound, capacity: int = 1024):
        """The engine-owned state of a node running this operator."""
        from ..state.windows import WindowState

        return WindowState(bound, capacity)

    def _bound(self, node: str, input_schema: pa.Schema, info: dict, kind: str, **geometry) -> Bound:
        """The Bound of a window: schema facts from :meth:`_bind_common` plus its geometry (in units)."""
        spec = WindowSpec(kind, info["event_time"], info["event_time_type"], self.keys, info["lateness"], self.late,
                          self.late_sink, info["aggs"], **geometry)
        # a window's results carry its start as event time, so a window of aligned windows puts each
        # result in the window that contains it
        return Bound(node, self, input_schema, info["out_schema"], info["reads"], info["dtypes"], spec=spec,
                     output_event_time=_window_start(info["out_schema"]))

    def _fingerprint_parts(self) -> list[str]:
        return [type(self).__name__, repr(self.keys), repr([(n, a.fingerprint()) for n, a in self.aggs.items()]),
                repr(self.allowed_lateness), self.late, str(self.late_sink)]

    def fingerprint(self) -> str | None:
        if any(a.fingerprint() is None for a in self.aggs.values()):
            return None  # a user aggregate whose code cannot be hashed: the plan is not cached on disk
        return type(self).__name__ + ":" + hashlib.sha256(repr(self._fingerprint_parts()).encode()).hexdigest()


class TumblingWindow(WindowOperator):
    """Fixed-size, non-overlapping event-time windows, per key.

    Parameters
    ----------
    size : int or datetime.timedelta
        Window length in event-time units (a timedelta for timestamp columns).
    key : str or list of str, optional
        Key column(s); without a key, one group per window.
    aggs : mapping of str to Agg
        Output column name → aggregate, e.g. ``{"n": lj.count(), "hi": lj.max("price")}``.
    allowed_lateness : int or datetime.timedelta
        How long after its end a window waits before it is emitted.
    late : {"drop", "side_output"}
        What happens to late rows.
    late_sink : str, optional
        Sink receiving late rows (unchanged) with ``late="side_output"``.
    offset : int or datetime.timedelta
        Shift of the window grid from the epoch.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> w = lj.TumblingWindow(size=60_000, key="auction", aggs={"n": lj.count(), "max": lj.max("price")})
    """

    def __init__(self, size, key=None, aggs=None, allowed_lateness=0, late="drop", late_sink=None, offset=0):
        super().__init__(key, aggs, allowed_lateness, late, late_sink)
        self.size = size
        self.offset = offset

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        info = self._bind_common(node, input_schema, event_time)
        et_type = info["event_time_type"]
        size = _units(node, "size", self.size, et_type)
        offset = _units(node, "offset", self.offset, et_type, positive=False) % size
        return self._bound(node, input_schema, info, "tumbling", size=size, offset=offset)

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [repr(self.size), repr(self.offset)]

    def label(self) -> str:
        return f"TumblingWindow({self.size}, key={list(self.keys)}, {', '.join(self.aggs)})"


class SlidingWindow(WindowOperator):
    """Overlapping event-time windows of length ``size`` starting every ``slide``.

    Rows are aggregated once, into panes of ``gcd(size, slide)``; a window is
    the merge of its panes when it fires, so per-row work does not grow with
    ``size / slide``. A row is late only when every window holding it was
    already emitted; otherwise it still counts in the windows that are open.

    Parameters
    ----------
    size, slide : int or datetime.timedelta
        Window length and the distance between window starts (``slide <= size``).
    key, aggs, allowed_lateness, late, late_sink, offset
        As for :class:`TumblingWindow`.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> w = lj.SlidingWindow(size=10_000, slide=2_000, key="auction", aggs={"n": lj.count()})
    """

    def __init__(self, size, slide, key=None, aggs=None, allowed_lateness=0, late="drop", late_sink=None,
                 offset=0):
        super().__init__(key, aggs, allowed_lateness, late, late_sink)
        self.size = size
        self.slide = slide
        self.offset = offset

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        info = self._bind_common(node, input_schema, event_time)
        et_type = info["event_time_type"]
        size = _units(node, "size", self.size, et_type)
        slide = _units(node, "slide", self.slide, et_type)
        if slide > size:
            raise SchemaError(f"operator {node!r}: slide {self.slide} is longer than size {self.size}; "
                              "use a TumblingWindow or a smaller slide")
        offset = _units(node, "offset", self.offset, et_type, positive=False) % slide
        return self._bound(node, input_schema, info, "sliding", size=size, slide=slide, pane=math.gcd(size, slide),
                           offset=offset)

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [repr(self.size), repr(self.slide), repr(self.offset)]

    def label(self) -> str:
        return f"SlidingWindow({self.size}/{self.slide}, key={list(self.keys)}, {', '.join(self.aggs)})"


class SessionWindow(WindowOperator):
    """Per-key sessions: rows closer than ``gap`` (strictly) in event time share a session.

    With ``touching=True``, rows exactly ``gap`` apart share one too: Flink's
    ``SESSION`` windows, which merge windows ``[t, t + gap)`` that touch
    (``TimeWindow.intersects``: ``start <= other.end and end >= other.start``).
    The default (False) keeps the gap exclusive, as the DESIGN says.

    A session spans ``[first event time, last event time + gap)`` and is
    emitted once the node's watermark reaches its end plus
    ``allowed_lateness``. An out-of-order row may extend a session backwards,
    or fall between two open sessions and merge them (their aggregates are
    combined with the blueprints' merge step). A session the watermark has
    closed takes no more rows: a row that only fits a closed session starts a
    new one, or is late when its own session ``[t, t + gap)`` would already be
    due — so emitted sessions never change.

    Parameters
    ----------
    gap : int or datetime.timedelta
        Inactivity that ends a session (event-time units; a timedelta for timestamp columns).
    key, aggs, allowed_lateness, late, late_sink
        As for :class:`TumblingWindow`.
    touching : bool, default False
        Rows exactly ``gap`` apart share a session (Flink's convention).

    Examples
    --------
    >>> import laminar_jit as lj
    >>> w = lj.SessionWindow(gap=30_000, key="user", aggs={"clicks": lj.count(), "spent": lj.sum("price")})
    """

    def __init__(self, gap, key=None, aggs=None, allowed_lateness=0, late="drop", late_sink=None,
                 touching: bool = False):
        super().__init__(key, aggs, allowed_lateness, late, late_sink)
        self.gap = gap
        self.touching = bool(touching)

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        info = self._bind_common(node, input_schema, event_time)
        return self._bound(node, input_schema, info, "session",
                           gap=_units(node, "gap", self.gap, info["event_time_type"]), touching=self.touching)

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [repr(self.gap), repr(self.touching)]

    def label(self) -> str:
        return f"SessionWindow(gap={self.gap}, key={list(self.keys)}, {', '.join(self.aggs)})"
