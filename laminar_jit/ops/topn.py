"""``TopN``: the n best rows per key per tumbling event-time window, ranked."""

from __future__ import annotations

import datetime as _dt

import numpy as np
import pyarrow as pa

from .._types import arrow_to_numpy_dtype
from ..errors import SchemaError
from .base import Bound, kept_field, kernel_column, string_type
from .ranked import RankedSpec, bind_ranked
from .windows import WindowOperator, WindowSpec, _units, check_key_columns

__all__ = ["TopN"]


class TopN(WindowOperator):
    """Keep the ``n`` rows with the largest (or smallest) ``by`` per key per tumbling window.

    Rows are assigned to epoch-aligned windows of length ``window`` like
    :class:`TumblingWindow`. Each (key, window) keeps its best ``n`` rows so
    far (a row ties with an earlier one lose: ranking is by ``by``, then
    arrival). When the watermark reaches the window's end plus
    ``allowed_lateness`` the window emits its rows, best first: columns
    ``window_start``, ``window_end``, ``rank`` (1 = best), then every input
    column unchanged (dictionary-encoded strings come back as plain strings of
    the dictionary's value type); emissions are ordered by window end, then
    key, then rank, then arrival. Rows whose ``by`` is null or NaN are never
    ranked. Late rows are dropped and counted, or routed to ``late_sink``.

    With ``ties=True`` a window also keeps and emits every further row equal
    in ``by`` to its n-th best row, however many there are (SQL ``RANK``):
    ``rank`` is then 1 + the number of rows strictly better, so equal rows
    share a rank (e.g. Nexmark q7, every bid at the window's highest price).

    Equivalent SQL over the rows that are not late:
    ``QUALIFY row_number() OVER (PARTITION BY key, window ORDER BY by DESC, arrival) <= n``,
    or with ``ties=True``
    ``QUALIFY rank() OVER (PARTITION BY key, window ORDER BY by DESC) <= n``
    (``ASC`` for ``descending=False``).

    With ``window=None`` the ranking is over every row so far (unbounded) and
    the output is a changelog (see :mod:`laminar_jit.changelog`): at the end
    of each call, per key and rank whose row changed, ``+I`` for a rank that
    was empty, or ``-U`` the old and ``+U`` the new row of the rank. Columns:
    ``rank``, every input column, ``op``. The applied result equals
    ``QUALIFY row_number() OVER (PARTITION BY key ORDER BY by DESC, arrival) <= n``
    over the rows so far.

    Parameters
    ----------
    n : int
        Rows kept per key and window (at most 1,024).
    by : str, or a list of two str with ``window=None``
        Numeric, boolean or temporal column to rank by; with ``window=None``
        also ``[by, then_by]``: rows equal in ``by`` are ranked by ``then_by``
        (SQL ``ORDER BY by DESC, then_by ASC`` with ``descending=[True, False]``),
        then by arrival.
    key : str or list of str, optional
        Key column(s); without a key, the top ``n`` of each window.
    window : int or datetime.timedelta or None
        Window length in event-time units (a timedelta for timestamp
        columns); None ranks over every row so far and emits a changelog.
        Required: there is no default.
    descending : bool, default True
        True keeps the largest values, False the smallest; a list of two
        with two ``by`` columns.
    ties : bool, default False
        Keep every row tied with the n-th best too, ranked by SQL ``RANK``
        instead of ``ROW_NUMBER``; the rows a window holds are then not
        bounded by ``n``. Only for a windowed TopN: with ``window=None`` it
        raises ValueError.
    allowed_lateness, late, late_sink, offset
        As for :class:`TumblingWindow`.
    state_ttl : int or datetime.timedelta, optional
        With ``window=None``: forget a key once the watermark passes its
        latest event time plus this (as :class:`GroupAggregate`).

    Examples
    --------
    >>> import laminar_jit as lj
    >>> top3 = lj.TopN(3, by="price", key="auction", window=60_000)  # three highest bids per auction per minute
    >>> best3 = lj.TopN(3, by="price", key="auction", window=None)   # ... so far, updated as bids come
    >>> highest = lj.TopN(1, by="price", window=10_000, ties=True)    # every bid at each window's highest price
    """

    needs_aggs = False
    #: Largest ``n``: every (key, window) keeps ``n`` rows of every column.
    MAX_N = 1024

    def __init__(self, n: int, by: str, key=None, window=..., descending: bool = True,
                 allowed_lateness: int | _dt.timedelta = 0, late: str = "drop", late_sink: str | None = None,
                 offset: int | _dt.timedelta = 0, state_ttl: int | _dt.timedelta | None = None,
                 ties: bool = False):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 1 <= n <= self.MAX_N:
            raise ValueError(f"TopN: n must be an int in [1, {self.MAX_N}], got {n!r}")
        then_by, then_descending = None, True
        if isinstance(by, (list, tuple)) and window is None and len(by) == 2 and all(isinstance(c, str) for c in by):
            by, then_by = by  # ORDER BY by, then_by
            orders = tuple(descending) if isinstance(descending, (list, tuple)) else (descending, descending)
            if len(orders) != 2:
                raise ValueError(f"TopN: descending needs one bool per column of by={[by, then_by]}, got {descending!r}")
            descending, then_descending = orders
        if not isinstance(by, str):
            raise TypeError(f"TopN: by must name one column (or, with window=None, two: ORDER BY by[0], by[1]), "
                            f"got {by!r}")
        if isinstance(descending, (list, tuple)):
            raise TypeError("TopN: descending is one bool for one by column")
        if window is ...:
            raise ValueError("TopN needs window= (the tumbling window length, e.g. window=60_000), or "
                             "window=None for a top-n over every row so far, updated as rows come (a changelog)")
        if state_ttl is not None and window is not None:
            raise ValueError("TopN: state_ttl bounds the state of window=None; a windowed TopN frees each window "
                             "when it closes")
        if not isinstance(ties, (bool, np.bool_)):
            raise TypeError(f"TopN: ties must be True or False, got {ties!r}")
        if ties and window is None:
            raise ValueError("TopN: ties=True is only available for a windowed TopN (window=<length>); "
                             "TopN(window=None) ranks by row number")
        self.state_ttl = state_ttl
        self.ties = bool(ties)
        if window is None and (allowed_lateness or late != "drop" or offset):
            raise ValueError("TopN(window=None) ranks every row so far: allowed_lateness, late and offset do not "
                             "apply; leave them out")
        super().__init__(key, None, allowed_lateness, late, late_sink)
        self.n, self.by, self.window, self.descending, self.offset = int(n), by, window, bool(descending), offset
        #: With window=None: the second ORDER BY column (ties in ``by`` go by it), and its direction.
        self.then_by, self.then_descending = then_by, bool(then_descending)

    @property
    def emits_changelog(self) -> bool:
        """Without a window the ranking updates: the output is a changelog."""
        return self.window is None

    def new_state(self, bound: Bound, capacity: int = 1024):
        if isinstance(bound.spec, RankedSpec):
            from ..state.ranked import RankedState

            return RankedState(bound, capacity)
        return super().new_state(bound, capacity)

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        if self.window is None:
            return bind_ranked(node, self, input_schema, event_time, n=self.n, by=self.by, then_by=self.then_by,
                               then_descending=self.then_descending,
                               descending=self.descending, later_wins=False, with_rank=True, what="TopN",
                               state_ttl=self.state_ttl)
        if event_time is None or input_schema.get_field_index(event_time) < 0:
            raise SchemaError(f"operator {node!r}: TopN needs an event-time column; declare the source with "
                              "event_time='ts' (and keep that column through Projects/Maps upstream)")
        check_key_columns(node, input_schema, self.keys)
        by_dtype = kernel_column(node, input_schema, self.by, "TopN by column")
        payload = []
        for f in input_schema:
            if f.name in ("window_start", "window_end", "rank"):
                raise SchemaError(f"operator {node!r}: input column {f.name!r} clashes with a TopN output column; "
                                  "rename it upstream with lj.Project")
            dtype = arrow_to_numpy_dtype(f.type)
            if dtype is None and string_type(f.type) is None:
                raise SchemaError(f"operator {node!r}: column {f.name!r} is {f.type}; TopN keeps numeric, boolean, "
                                  "temporal and string columns — drop it upstream with lj.Project")
            payload.append((f.name, dtype))
        et_type = input_schema.field(event_time).type
        size = _units(node, "window", self.window, et_type)
        bound_time = pa.timestamp(et_type.unit, et_type.tz) if pa.types.is_timestamp(et_type) else pa.int64()
        out_schema = pa.schema([pa.field("window_start", bound_time), pa.field("window_end", bound_time),
                                pa.field("rank", pa.int64()), *map(kept_field, input_schema)])
        spec = WindowSpec("topn", event_time, et_type, self.keys,
                          _units(node, "allowed_lateness", self.allowed_lateness, et_type, positive=False),
                          self.late, self.late_sink, size=size,
                          offset=_units(node, "offset", self.offset, et_type, positive=False) % size,
                          topn=self.n, by=self.by, by_dtype=by_dtype, descending=self.descending,
                          payload=tuple(payload), ties=self.ties)
        return Bound(node, self, input_schema, out_schema, (self.by,), (by_dtype,), spec=spec,
                     output_event_time="window_start")

    def _fingerprint_parts(self) -> list[str]:
        parts = super()._fingerprint_parts() + [repr(self.n), self.by, repr(self.window), repr(self.descending),
                                                repr(self.offset), repr(self.state_ttl)]
        if self.then_by is not None:
            parts += [f"then_by={self.then_by!r}", repr(self.then_descending)]
        return parts + ["ties=True"] if self.ties else parts  # (unchanged without ties: existing checkpoints fit)

    def label(self) -> str:
        order = "largest" if self.descending else "smallest"
        ties = " with ties" if self.ties else ""
        return f"TopN({self.n}{ties} {order} {self.by}, key={list(self.keys)}, window={self.window})"
