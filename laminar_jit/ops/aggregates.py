"""Aggregates for windows: one blueprint table serves every aggregate.

Each aggregate is described by a :class:`Blueprint` — its per-slot state
fields with their initial values, and code templates for ``update`` (fold
one row into a slot), ``merge`` (fold slot ``a`` into slot ``d``, used to
combine panes of sliding windows) and ``finalize`` (value and validity of a
slot) — the chunk/combine/finalize split that flox uses, so the window
operators contain no per-aggregate code paths: the plan compiler stitches the
templates of the requested aggregates into one compiled loop.

Null rules (SQL): null inputs are skipped (the compiled loop never calls
``update`` for them); an aggregate over no non-null value is null, except
``count`` which is 0. Accumulators are widened deliberately: sums of integers
(and booleans) are int64, of unsigned integers uint64, means are float64.
NaN is a value: ``sum``/``mean`` propagate it; ``min``/``max`` order NaN above
every number, as DuckDB does.

Template placeholders: ``{f_<field>}`` is the state array of a field, ``s``
the slot, ``x`` the row's value, ``t`` its event time, ``q`` its arrival
sequence number, ``a``/``d`` the source/destination slots of a merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BLUEPRINTS", "Agg", "Blueprint", "count", "first", "last", "max", "mean", "min", "sum"]


@dataclass(frozen=True)
class Blueprint:
    """Code templates of one aggregate kind (see the module docstring)."""

    #: (field, dtype rule, initial value); the rule maps the input dtype to the field dtype.
    fields: tuple
    update: str
    merge: str
    value: str
    valid: str
    #: Output dtype as a function of the input dtype.
    result: object
    needs_column: bool = True


def _same(dtype):
    return np.dtype(dtype)


def _widen(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float64)
    if dtype.kind == "u":
        return np.dtype(np.uint64)
    return np.dtype(np.int64)


_I64 = lambda _dtype: np.dtype(np.int64)  # noqa: E731
_F64 = lambda _dtype: np.dtype(np.float64)  # noqa: E731

BLUEPRINTS: dict[str, Blueprint] = {
    "count": Blueprint(
        fields=(("n", _I64, 0),),
        update="{f_n}[s] += 1",
        merge="{f_n}[d] += {f_n}[a]",
        value="{f_n}[s]", valid="True", result=_I64,
    ),
    "sum": Blueprint(
        fields=(("acc", _widen, 0), ("n", _I64, 0)),
        update="{f_acc}[s] += x\n{f_n}[s] += 1",
        merge="{f_acc}[d] += {f_acc}[a]\n{f_n}[d] += {f_n}[a]",
        value="{f_acc}[s]", valid="{f_n}[s] > 0", result=_widen,
    ),
    "mean": Blueprint(
        fields=(("acc", _F64, 0), ("n", _I64, 0)),
        update="{f_acc}[s] += x\n{f_n}[s] += 1",
        merge="{f_acc}[d] += {f_acc}[a]\n{f_n}[d] += {f_n}[a]",
        value="{f_acc}[s] / {f_n}[s] if {f_n}[s] > 0 else 0.0", valid="{f_n}[s] > 0", result=_F64,
    ),
    "min": Blueprint(
        fields=(("v", _same, 0), ("n", _I64, 0)),
        # NaN sorts above every number (DuckDB): a NaN minimum yields to any number
        update="if {f_n}[s] == 0 or x < {f_v}[s] or ({f_v}[s] != {f_v}[s] and x == x):\n    {f_v}[s] = x\n"
               "{f_n}[s] += 1",
        merge="if {f_n}[a] > 0 and ({f_n}[d] == 0 or {f_v}[a] < {f_v}[d] or "
              "({f_v}[d] != {f_v}[d] and {f_v}[a] == {f_v}[a])):\n    {f_v}[d] = {f_v}[a]\n{f_n}[d] += {f_n}[a]",
        value="{f_v}[s]", valid="{f_n}[s] > 0", result=_same,
    ),
    "max": Blueprint(
        fields=(("v", _same, 0), ("n", _I64, 0)),
        update="if {f_n}[s] == 0 or x > {f_v}[s] or (x != x and {f_v}[s] == {f_v}[s]):\n    {f_v}[s] = x\n"
               "{f_n}[s] += 1",
        merge="if {f_n}[a] > 0 and ({f_n}[d] == 0 or {f_v}[a] > {f_v}[d] or "
              "({f_v}[a] != {f_v}[a] and {f_v}[d] == {f_v}[d])):\n    {f_v}[d] = {f_v}[a]\n{f_n}[d] += {f_n}[a]",
        value="{f_v}[s]", valid="{f_n}[s] > 0", result=_same,
    ),
    # first/last by event time; ties broken by arrival (earlier arrival is "first")
    "first": Blueprint(
        fields=(("v", _same, 0), ("t", _I64, 0), ("q", _I64, 0), ("n", _I64, 0)),
        update="if {f_n}[s] == 0 or t < {f_t}[s] or (t == {f_t}[s] and q < {f_q}[s]):\n"
               "    {f_v}[s] = x\n    {f_t}[s] = t\n    {f_q}[s] = q\n{f_n}[s] += 1",
        merge="if {f_n}[a] > 0 and ({f_n}[d] == 0 or {f_t}[a] < {f_t}[d] or "
              "({f_t}[a] == {f_t}[d] and {f_q}[a] < {f_q}[d])):\n"
              "    {f_v}[d] = {f_v}[a]\n    {f_t}[d] = {f_t}[a]\n    {f_q}[d] = {f_q}[a]\n{f_n}[d] += {f_n}[a]",
        value="{f_v}[s]", valid="{f_n}[s] > 0", result=_same,
    ),
    "last": Blueprint(
        fields=(("v", _same, 0), ("t", _I64, 0), ("q", _I64, 0), ("n", _I64, 0)),
        update="if {f_n}[s] == 0 or t > {f_t}[s] or (t == {f_t}[s] and q > {f_q}[s]):\n"
               "    {f_v}[s] = x\n    {f_t}[s] = t\n    {f_q}[s] = q\n{f_n}[s] += 1",
        merge="if {f_n}[a] > 0 and ({f_n}[d] == 0 or {f_t}[a] > {f_t}[d] or "
              "({f_t}[a] == {f_t}[d] and {f_q}[a] > {f_q}[d])):\n"
              "    {f_v}[d] = {f_v}[a]\n    {f_t}[d] = {f_t}[a]\n    {f_q}[d] = {f_q}[a]\n{f_n}[d] += {f_n}[a]",
        value="{f_v}[s]", valid="{f_n}[s] > 0", result=_same,
    ),
}


class Agg:
    """One aggregate of a window: a blueprint kind applied to a column.

    Build with :func:`count`, :func:`sum`, :func:`min`, :func:`max`,
    :func:`mean`, :func:`first` or :func:`last`.
    """

    def __init__(self, kind: str, column: str | None = None):
        if kind not in BLUEPRINTS:
            raise ValueError(f"unknown aggregate {kind!r}; known: {', '.join(BLUEPRINTS)}")
        if kind != "count" and column is None:
            raise TypeError(f"lj.{kind}() needs a column name, e.g. lj.{kind}('price')")
        self.kind = kind
        self.column = column
        self.blueprint = BLUEPRINTS[kind]

    def __repr__(self) -> str:
        return f"lj.{self.kind}({self.column!r})" if self.column else f"lj.{self.kind}()"

    def __eq__(self, other) -> bool:
        return isinstance(other, Agg) and (self.kind, self.column) == (other.kind, other.column)

    def __hash__(self) -> int:
        return hash((self.kind, self.column))


def count(column: str | None = None) -> Agg:
    """Number of rows (``count()``) or of non-null values of ``column``; never null."""
    return Agg("count", column)


def sum(column: str) -> Agg:  # noqa: A001 - mirrors SQL
    """Sum of non-null values (int64 for integers, float64 for floats); null if none."""
    return Agg("sum", column)


def min(column: str) -> Agg:  # noqa: A001
    """Smallest non-null value (NaN sorts above numbers); null if none."""
    return Agg("min", column)


def max(column: str) -> Agg:  # noqa: A001
    """Largest non-null value (NaN sorts above numbers); null if none."""
    return Agg("max", column)


def mean(column: str) -> Agg:
    """Arithmetic mean of non-null values, in float64; null if none."""
    return Agg("mean", column)


def first(column: str) -> Agg:
    """Value of the non-null row with the smallest event time (ties: earliest arrival)."""
    return Agg("first", column)


def last(column: str) -> Agg:
    """Value of the non-null row with the largest event time (ties: latest arrival)."""
    return Agg("last", column)
