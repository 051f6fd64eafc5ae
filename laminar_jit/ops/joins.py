"""Two-input event-time joins: ``IntervalJoin``, ``WindowJoin``, ``AsofJoin`` and ``TemporalJoin``.

A join node has the ports ``"left"`` and ``"right"``
(``.connect("trades", "j", port="left")``); each port takes a union of
upstreams of one schema, and both must carry an event-time column of the
same type. Shared semantics (Flink's, where the contract is silent):

* Output columns are the left columns, then the right columns; a right
  column whose name is taken gets the suffix ``_right``. Semi and anti joins
  output the left columns only; a window join appends ``window_start`` and
  ``window_end``.
* Keys are integer, boolean, temporal or string columns (the same kind on
  both sides; string keys of the two sides share one dictionary). A null key
  never matches, as in SQL: such a row only appears in outer and anti results.
* The join's watermark is the least watermark of its non-idle inputs. A row
  whose event time is below it minus ``allowed_lateness`` (for a window
  join: whose window has closed) is **late**: it is dropped and counted in
  ``metrics.late_events``, or with ``late="side_output"`` routed unchanged
  to the sink of its port in ``late_sink={"left": ..., "right": ...}``. Buffered rows are freed once the watermark
  guarantees no later row can match them, and rows waiting for a decision
  (unmatched outer rows, as-of probes) are emitted at that moment.
* The output's event time is the left event-time column (outer joins that
  can emit rows without a left side have none), and the node's watermark is
  held back to the oldest left row it may still emit, so windows and
  sessions downstream see no late rows.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np

import pyarrow as pa

from .._types import arrow_to_numpy_dtype
from ..errors import SchemaError
from ..time.watermarks import to_units
from .base import Bound, Operator, kept_field, string_type
from .windows import _key_tuple

__all__ = ["AsofJoin", "IntervalJoin", "JoinOperator", "JoinPort", "JoinSpec", "TemporalJoin", "WindowJoin"]

_HOWS = ("inner", "left", "right", "full", "semi", "anti")
#: Names the join state's layout (rows in per-key time buckets since this one).
_STATE_LAYOUT = "buckets-1"


@dataclass(frozen=True)
class JoinPort:
    """One input port of a join node, bound to its schema."""

    event_time: str
    keys: tuple[str, ...]
    #: Every column its rows carry into the join's row store: (name, numpy dtype; None for a string).
    payload: tuple[tuple[str, np.dtype | None], ...]
    #: The port's input schema (also the schema of its late rows' side output).
    schema: pa.Schema


@dataclass(frozen=True)
class JoinSpec:
    """A join node's settings, bound to its two inputs: times are in event-time units.

    The plan generator and the join state read the join's kind, geometry and
    ports here, and only here.
    """

    #: "interval", "window" or "asof" (a temporal join is an as-of join).
    kind: str
    #: "inner", "left", "right", "full", "semi" or "anti".
    how: str
    event_time_type: pa.DataType
    left: JoinPort
    right: JoinPort
    #: The ports whose columns the output carries, in order (semi and anti joins: the left one).
    out_sides: tuple[str, ...]
    #: How far behind the watermark a row may arrive and still join (``allowed_lateness``).
    lateness: int = 0
    #: Interval join: ``lower <= right.ts - left.ts <= upper``.
    lower: int = 0
    upper: int = 0
    #: Window join: tumbling windows of ``size`` shifted by ``offset``.
    size: int = 0
    offset: int = 0
    #: As-of join: "backward", "forward" or "nearest", and the largest distance matched (None: any).
    direction: str = "backward"
    tolerance: int | None = None

    def port(self, name: str) -> JoinPort:
        """The :class:`JoinPort` named ``"left"`` or ``"right"``."""
        return self.left if name == "left" else self.right


def _signed_units(node: str, what: str, value, et_type) -> int:
    try:
        return to_units(value, et_type)
    except ValueError as exc:
        raise SchemaError(f"operator {node!r}: {what}: {exc}") from None


class JoinOperator(Operator):
    """Configuration and schema binding shared by the join operators."""

    kind = "stateful"
    ports = ("left", "right")
    #: ``how`` values the operator accepts.
    hows: tuple[str, ...] = ("inner",)

    def __init__(self, left_key, right_key, how: str = "inner", allowed_lateness: int | _dt.timedelta = 0,
                 late: str = "drop", late_sink: Mapping[str, str] | None = None):
        self.left_keys, self.right_keys = _key_tuple(left_key), _key_tuple(right_key)
        if not self.left_keys or len(self.left_keys) != len(self.right_keys):
            raise ValueError(f"{type(self).__name__}: left and right keys must name the same number (>= 1) of "
                             f"columns, got {list(self.left_keys)} and {list(self.right_keys)}")
        if how not in self.hows:
            raise ValueError(f"{type(self).__name__}: how must be one of {', '.join(map(repr, self.hows))}, "
                             f"got {how!r}")
        self.how = how
        self.allowed_lateness = allowed_lateness
        name = type(self).__name__
        if late not in ("drop", "side_output"):
            raise ValueError(f"{name}: late must be 'drop' or 'side_output', got {late!r}")
        if late == "drop" and late_sink:
            raise ValueError(f"{name}: late_sink is only used with late='side_output'")
        if late == "side_output":
            if not isinstance(late_sink, Mapping) or not late_sink or set(late_sink) - set(self.ports) \
                    or not all(isinstance(v, str) and v for v in late_sink.values()):
                raise ValueError(f"{name}: late='side_output' needs late_sink={{'left': '<sink>', 'right': "
                                 f"'<sink>'}} (one or both ports; the two sides' rows differ in schema), "
                                 f"got {late_sink!r}")
        self.late, self.late_sink = late, dict(late_sink or {})

    def late_outputs(self) -> list[tuple[str, str]]:
        return [(sink, f"late_{port}") for port, sink in self.late_sink.items()]

    def new_state(self, bound: Bound, capacity: int = 1024):
        """The engine-owned state of a node running this operator."""
        from ..state.joins import JoinState

        return JoinState(bound, capacity)

    # -- binding ---------------------------------------------------------------
    def bind(self, node: str, input_schema, event_time=None) -> Bound:
        schemas, times = dict(input_schema), dict(event_time or {})
        et_types = {}
        for port in self.ports:
            et = times.get(port)
            if et is None or schemas[port].get_field_index(et) < 0:
                raise SchemaError(f"operator {node!r}: port {port!r} has no event-time column; declare its source "
                                  "with event_time='ts' (and keep that column through Projects/Maps upstream)")
            et_types[port] = schemas[port].field(et).type
        if et_types["left"] != et_types["right"]:
            raise SchemaError(f"operator {node!r}: the event-time columns of the two ports differ "
                              f"({et_types['left']} vs {et_types['right']}); cast one side so both use one type")
        et_type = et_types["left"]
        for lk, rk in zip(self.left_keys, self.right_keys):
            types = [self._key_type(node, schemas[p], k, p) for p, k in (("left", lk), ("right", rk))]
            # a dictionary of strings and plain strings compare as codes of one shared dictionary
            if types[0] != types[1] and not (pa.types.is_integer(types[0]) and pa.types.is_integer(types[1])) \
                    and not (string_type(types[0]) and string_type(types[0]) == string_type(types[1])):
                raise SchemaError(f"operator {node!r}: key {lk!r} (left) is {types[0]} but {rk!r} (right) is "
                                  f"{types[1]}; cast one side so the keys compare")
        ports = {}
        for port, keys in (("left", self.left_keys), ("right", self.right_keys)):
            payload = []
            for f in schemas[port]:
                dtype = arrow_to_numpy_dtype(f.type)
                if dtype is None and string_type(f.type) is None:
                    raise SchemaError(f"operator {node!r}: column {f.name!r} of port {port!r} is {f.type}; joins "
                                      "carry numeric, boolean, temporal and string columns — drop it upstream "
                                      "with lj.Project")
                payload.append((f.name, dtype))
            ports[port] = JoinPort(times[port], keys, tuple(payload), schemas[port])
        fields, names = [], []
        nullable = {"left": self.how in ("right", "full"), "right": self.how in ("left", "full")}
        sides = ("left",) if self.how in ("semi", "anti") else ("left", "right")
        for port in sides:
            for f in schemas[port]:
                name = f.name
                while name in names:
                    name += "_right"
                names.append(name)
                # every column is kept in the row store: dictionary strings come back as plain ones
                fields.append(pa.field(name, kept_field(f).type, nullable=f.nullable or nullable[port]))
        spec = JoinSpec(how=self.how, event_time_type=et_type, left=ports["left"], right=ports["right"],
                        out_sides=sides,
                        lateness=self._units(node, "allowed_lateness", self.allowed_lateness, et_type, 0),
                        **self._geometry(node, et_type))
        fields += self._extra_fields(node, et_type, names)
        return Bound(node, self, None, pa.schema(fields), spec=spec,
                     output_event_time=times["left"] if self.how not in ("right", "full") else None)

    @staticmethod
    def _key_type(node: str, schema: pa.Schema, key: str, port: str) -> pa.DataType:
        idx = schema.get_field_index(key)
        if idx < 0:
            raise SchemaError(f"operator {node!r}: key column {key!r} is not in port {port!r}'s input; available "
                              f"columns: {', '.join(schema.names)}")
        t = schema.field(idx).type
        dtype = arrow_to_numpy_dtype(t)
        if (dtype is None and string_type(t) is None) or (dtype is not None and dtype.kind == "f"):
            raise SchemaError(f"operator {node!r}: key column {key!r} of port {port!r} is {t}; join keys must be "
                              "integer, boolean, temporal or string columns — bucket or cast floats upstream")
        return t

    @staticmethod
    def _units(node: str, what: str, value, et_type, minimum=None) -> int:
        out = _signed_units(node, what, value, et_type)
        if minimum is not None and out < minimum:
            raise SchemaError(f"operator {node!r}: {what} must be >= {minimum}, got {value}")
        return out

    def _geometry(self, node: str, et_type) -> dict:
        """The join's kind and geometry: keyword arguments of :class:`JoinSpec`."""
        raise NotImplementedError

    def _extra_fields(self, node: str, et_type, names: list[str]) -> list[pa.Field]:
        return []

    # -- identity --------------------------------------------------------------
    def _fingerprint_parts(self) -> list[str]:
        # the layout of the state: a checkpoint of another layout is refused as "changed"
        return [type(self).__name__, _STATE_LAYOUT, repr(self.left_keys), repr(self.right_keys), self.how,
                repr(self.allowed_lateness), self.late, repr(sorted(self.late_sink.items()))]

    def fingerprint(self) -> str | None:
        return type(self).__name__ + ":" + hashlib.sha256(repr(self._fingerprint_parts()).encode()).hexdigest()


class IntervalJoin(JoinOperator):
    """Join rows with equal keys whose event times satisfy ``lower <= right.ts - left.ts <= upper``.

    Matches are emitted as soon as the second row of a pair arrives. Each
    buffered row is kept until the watermark passes the end of the interval
    it can still match in (a left row until ``left.ts + upper``, a right row
    until ``right.ts - lower``, plus ``allowed_lateness``); an outer row that
    never matched is emitted then, with nulls on the other side. ``semi``
    emits each left row once, at its first match; ``anti`` emits the left
    rows that never matched, when their interval closes.

    Equivalent SQL over the rows that are not late::

        SELECT * FROM l JOIN r ON l.key = r.key
          AND r.ts BETWEEN l.ts + lower AND l.ts + upper

    Parameters
    ----------
    left_key, right_key : str or list of str
        Key column(s) of each side (integer, boolean, temporal or string).
    lower, upper : int or datetime.timedelta
        Bounds of ``right.ts - left.ts``, inclusive, in event-time units;
        either may be negative, ``lower <= upper``.
    how : {"inner", "left", "right", "full", "semi", "anti"}, default "inner"
        Which rows besides matches appear; semi and anti output the left columns.
    allowed_lateness : int or datetime.timedelta, default 0
        How far behind the watermark a row may be and still join.
    late : {"drop", "side_output"}, default "drop"
        What happens to late rows: dropped and counted, or sent to a sink.
    late_sink : mapping of str to str, optional
        With ``late="side_output"``: the sink of each port's late rows,
        e.g. ``{"left": "late_trades", "right": "late_quotes"}`` (one or both).

    Examples
    --------
    >>> import laminar_jit as lj
    >>> clicks_after_views = lj.IntervalJoin("user", "user", lower=0, upper=60_000)
    """

    hows = _HOWS

    def __init__(self, left_key, right_key, lower, upper, how: str = "inner",
                 allowed_lateness: int | _dt.timedelta = 0, late: str = "drop", late_sink=None):
        super().__init__(left_key, right_key, how, allowed_lateness, late, late_sink)
        self.lower, self.upper = lower, upper

    def _geometry(self, node: str, et_type) -> dict:
        lower = self._units(node, "lower", self.lower, et_type)
        upper = self._units(node, "upper", self.upper, et_type)
        if lower > upper:
            raise SchemaError(f"operator {node!r}: lower ({self.lower}) must not exceed upper ({self.upper})")
        return {"kind": "interval", "lower": lower, "upper": upper}

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [repr(self.lower), repr(self.upper)]

    def label(self) -> str:
        return f"IntervalJoin({list(self.left_keys)}={list(self.right_keys)}, [{self.lower}, {self.upper}], {self.how})"


class WindowJoin(JoinOperator):
    """Join rows with equal keys that fall in the same tumbling event-time window.

    Windows are epoch-aligned ``[start, start + size)`` shifted by
    ``offset``, as for :class:`TumblingWindow`. A pair is emitted when its
    second row arrives; a window's rows are freed when the watermark reaches
    its end plus ``allowed_lateness``, and a row arriving after that is late.
    The output is the left columns, the right columns, then ``window_start``
    and ``window_end``.

    Equivalent SQL over the rows that are not late::

        SELECT * FROM l JOIN r ON l.key = r.key AND l.ts // size = r.ts // size

    Parameters
    ----------
    size : int or datetime.timedelta
        Window length in event-time units.
    left_key, right_key : str or list of str
        Key column(s) of each side.
    allowed_lateness, offset : int or datetime.timedelta, default 0
        As for :class:`TumblingWindow`.
    late, late_sink
        As for :class:`IntervalJoin`.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> new_sellers = lj.WindowJoin(10_000, left_key="id", right_key="seller")  # Nexmark q8
    """

    def __init__(self, size, left_key, right_key, allowed_lateness: int | _dt.timedelta = 0,
                 offset: int | _dt.timedelta = 0, late: str = "drop", late_sink=None):
        super().__init__(left_key, right_key, "inner", allowed_lateness, late, late_sink)
        self.size, self.offset = size, offset

    def _geometry(self, node: str, et_type) -> dict:
        size = self._units(node, "size", self.size, et_type, 1)
        return {"kind": "window", "size": size, "offset": self._units(node, "offset", self.offset, et_type) % size}

    def _extra_fields(self, node: str, et_type, names: list[str]) -> list[pa.Field]:
        for name in ("window_start", "window_end"):
            if name in names:
                raise SchemaError(f"operator {node!r}: input column {name!r} clashes with a WindowJoin output "
                                  "column; rename it upstream with lj.Project")
        t = pa.timestamp(et_type.unit, et_type.tz) if pa.types.is_timestamp(et_type) else pa.int64()
        return [pa.field("window_start", t), pa.field("window_end", t)]

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [repr(self.size), repr(self.offset)]

    def label(self) -> str:
        return f"WindowJoin({self.size}, {list(self.left_keys)}={list(self.right_keys)})"


class AsofJoin(JoinOperator):
    """Join each left row with the right row of the same key nearest in event time.

    ``direction="backward"`` picks the last right row at or before the left
    row's time (trades with the prevailing quote), ``"forward"`` the first at
    or after it, ``"nearest"`` the closer of the two (the earlier one on a
    tie). Among right rows with equal times the one that arrived last wins. A
    match farther than ``tolerance`` does not count. A left row is emitted
    once the watermark guarantees that no later right row can change its
    match; ``how="left"`` also emits left rows without a match (nulls on the
    right). Right rows are freed as soon as a newer row of their key
    supersedes them for every left row still to come.

    Equivalent SQL (backward, inner) over the rows that are not late::

        SELECT * FROM l ASOF JOIN r ON l.by = r.by AND l.ts >= r.ts

    Parameters
    ----------
    by : str or list of str
        Key column(s), named the same on both sides (integer, boolean, temporal or string).
    direction : {"backward", "forward", "nearest"}, default "backward"
    tolerance : int or datetime.timedelta, optional
        Largest ``|right.ts - left.ts|`` of a match.
    how : {"inner", "left"}, default "inner"
    allowed_lateness : int or datetime.timedelta, default 0
        How far behind the watermark a row may be and still join.
    late : {"drop", "side_output"}, default "drop"
        What happens to late rows: dropped and counted, or sent to a sink.
    late_sink : mapping of str to str, optional
        With ``late="side_output"``: the sink of each port's late rows,
        e.g. ``{"left": "late_trades", "right": "late_quotes"}`` (one or both).

    Examples
    --------
    >>> import laminar_jit as lj
    >>> with_quote = lj.AsofJoin("symbol", direction="backward", tolerance=1_000)
    """

    hows = ("inner", "left")
    directions = ("backward", "forward", "nearest")

    def __init__(self, by, direction: str = "backward", tolerance=None, how: str = "inner",
                 allowed_lateness: int | _dt.timedelta = 0, late: str = "drop", late_sink=None):
        super().__init__(by, by, how, allowed_lateness, late, late_sink)
        if direction not in self.directions:
            raise ValueError(f"AsofJoin: direction must be one of {', '.join(map(repr, self.directions))}, "
                             f"got {direction!r}")
        self.direction, self.tolerance = direction, tolerance

    def _geometry(self, node: str, et_type) -> dict:
        tol = None if self.tolerance is None else self._units(node, "tolerance", self.tolerance, et_type, 0)
        return {"kind": "asof", "direction": self.direction, "tolerance": tol}

    def _fingerprint_parts(self) -> list[str]:
        return super()._fingerprint_parts() + [self.direction, repr(self.tolerance)]

    def label(self) -> str:
        return f"AsofJoin({list(self.left_keys)}, {self.direction}, {self.how})"


class TemporalJoin(AsofJoin):
    """Join each left row with the version of its right-side row valid at the left row's event time.

    The right input is a changelog keyed by ``right_key``: each row is a new
    version of its key, valid from its event time until the next version.
    A left row joins the latest version at or before its own time (an as-of
    join, backward, on differently named keys), once the watermark has passed
    it; ``how="left"`` keeps left rows that have no version yet. Only the
    versions that can still be current for a coming left row are kept.

    Parameters
    ----------
    left_key, right_key : str or list of str
        Key column(s) of each side.
    how : {"inner", "left"}, default "inner"
    allowed_lateness : int or datetime.timedelta, default 0
    late : {"drop", "side_output"}, default "drop"
        What happens to late rows: dropped and counted, or sent to a sink.
    late_sink : mapping of str to str, optional
        With ``late="side_output"``: the sink of each port's late rows,
        e.g. ``{"left": "late_trades", "right": "late_quotes"}`` (one or both).

    Examples
    --------
    >>> import laminar_jit as lj
    >>> with_seller = lj.TemporalJoin(left_key="seller", right_key="id")  # auctions with persons (Nexmark q3)
    """

    def __init__(self, left_key, right_key, how: str = "inner", allowed_lateness: int | _dt.timedelta = 0,
                 late: str = "drop", late_sink=None):
        JoinOperator.__init__(self, left_key, right_key, how, allowed_lateness, late, late_sink)
        self.direction, self.tolerance = "backward", None

    def label(self) -> str:
        return f"TemporalJoin({list(self.left_keys)}={list(self.right_keys)}, {self.how})"
