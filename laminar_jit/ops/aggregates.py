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

``count_distinct`` keeps each slot's distinct values in a set of the window
state (:mod:`~laminar_jit.kernels.distinct`; ``{d_buckets}`` ... ``{d_next}``
its arrays, ``{x_bits}`` the row value as an int64, ``{s_buckets}`` ... and
``{cell}`` a sliding fire's scratch set and cell).

Strings: ``count``/``count_distinct``/``first``/``last`` of a string column work on its dictionary
codes with the templates above; ``min``/``max`` use :data:`STRING_BLUEPRINTS`, which
compare two codes by their values' bytes (``{d_off}``/``{d_data}``: the
dictionary's offsets and bytes, as :func:`~laminar_jit.kernels.strings.str_less`
reads them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import KernelError
from .base import state_fields

__all__ = ["BLUEPRINTS", "STRING_BLUEPRINTS", "STRING_KINDS", "Agg", "Blueprint", "UserAggregate",
           "count", "count_distinct", "first", "last", "max", "mean", "min", "stddev_pop", "stddev_samp", "sum",
           "var_pop", "var_samp"]


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
    #: Code run when a slot is freed, before its fields are reset (``{slot}``: the slot).
    release: str = ""
    #: A sliding window's merge of a pane into a window's scratch cell, where it differs from ``merge``.
    pane_merge: str = ""
    #: The aggregate keeps a set of distinct values per slot (see :mod:`laminar_jit.kernels.distinct`).
    sets: bool = False


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

def _extreme(better: str, rule) -> Blueprint:
    """A minimum or maximum: ``better`` tells whether the value ``@new@`` replaces the kept ``@cur@``."""
    def test(new: str, cur: str) -> str:
        return better.replace("@new@", new).replace("@cur@", cur)
    return Blueprint(
        fields=(("v", rule, 0), ("n", _I64, 0)),
        update=f"if {{f_n}}[s] == 0 or {test('x', '{f_v}[s]')}:\n    {{f_v}}[s] = x\n{{f_n}}[s] += 1",
        merge=f"if {{f_n}}[a] > 0 and ({{f_n}}[d] == 0 or {test('{f_v}[a]', '{f_v}[d]')}):\n"
              "    {f_v}[d] = {f_v}[a]\n{f_n}[d] += {f_n}[a]",
        value="{f_v}[s]", valid="{f_n}[s] > 0", result=rule,
    )


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
    # NaN sorts above every number (DuckDB): a NaN minimum yields to any number
    "min": _extreme("@new@ < @cur@ or (@cur@ != @cur@ and @new@ == @new@)", _same),
    "max": _extreme("@new@ > @cur@ or (@new@ != @new@ and @cur@ == @cur@)", _same),
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
    # variances and standard deviations: count, mean and sum of squared deviations (Welford's update,
    # Chan's merge of two slots), in float64
    **{kind: Blueprint(
        fields=(("n", _I64, 0), ("m", _F64, 0.0), ("q", _F64, 0.0)),
        update="{f_n}[s] += 1\nd_ = x - {f_m}[s]\n{f_m}[s] += d_ / {f_n}[s]\n{f_q}[s] += d_ * (x - {f_m}[s])",
        merge="if {f_n}[a] > 0:\n"
              "    n_ = {f_n}[d] + {f_n}[a]\n    d_ = {f_m}[a] - {f_m}[d]\n"
              "    {f_q}[d] += {f_q}[a] + d_ * d_ * ({f_n}[d] * {f_n}[a] / n_)\n"
              "    {f_m}[d] += d_ * ({f_n}[a] / n_)\n    {f_n}[d] = n_",
        value=value, valid=f"{{f_n}}[s] > {ddof}", result=_F64,
    ) for kind, value, ddof in (
        ("var_pop", "{f_q}[s] / {f_n}[s] if {f_n}[s] > 0 else 0.0", 0),
        ("var_samp", "{f_q}[s] / ({f_n}[s] - 1) if {f_n}[s] > 1 else 0.0", 1),
        ("stddev_pop", "np.sqrt({f_q}[s] / {f_n}[s]) if {f_n}[s] > 0 else 0.0", 0),
        ("stddev_samp", "np.sqrt({f_q}[s] / ({f_n}[s] - 1)) if {f_n}[s] > 1 else 0.0", 1))},
    # a set of distinct values per slot: its list head (entry) and size
    "count_distinct": Blueprint(
        fields=(("h", _I64, -1), ("n", _I64, 0)),
        update="if distinct_add({d_buckets}, {d_keys}, {d_meta}, {d_free}, {d_next}, {f_h}, s, {x_bits}):\n"
               "    {f_n}[s] += 1",
        merge="{f_n}[d] += distinct_move({d_buckets}, {d_keys}, {d_meta}, {d_free}, {d_next}, {f_h}, a, d)",
        pane_merge="{f_n}[d] += distinct_union({s_buckets}, {s_keys}, {s_meta}, {s_free}, {cell}, {d_keys}, "
                   "{d_next}, {f_h}[a])",
        release="distinct_clear({d_buckets}, {d_keys}, {d_meta}, {d_free}, {d_next}, {f_h}, {slot})",
        value="{f_n}[s]", valid="True", result=_I64, sets=True,
    ),
}


#: ``min``/``max`` of a string column: the values are dictionary codes, compared by their bytes.
STRING_BLUEPRINTS: dict[str, Blueprint] = {
    "min": _extreme("(@new@ != @cur@ and str_less({d_off}, {d_data}, @new@, @cur@))", _I64),
    "max": _extreme("(@new@ != @cur@ and str_less({d_off}, {d_data}, @cur@, @new@))", _I64),
}

#: Window aggregates a string column takes (its values are dictionary codes in the state).
STRING_KINDS = ("count", "count_distinct", "min", "max", "first", "last")


class Agg:
    """One aggregate: a kind applied to a column.

    Build with :func:`count`, :func:`sum`, :func:`min`, :func:`max`,
    :func:`mean`, :func:`first`, :func:`last`, :func:`count_distinct`, or by
    calling a :class:`UserAggregate`.
    """

    def __init__(self, kind: str, column: str | None = None, user: "UserAggregate | None" = None):
        if user is None and kind not in BLUEPRINTS:
            raise ValueError(f"unknown aggregate {kind!r}; known: {', '.join(BLUEPRINTS)}")
        if kind != "count" and column is None:
            raise TypeError(f"lj.{kind}() needs a column name, e.g. lj.{kind}('price')")
        self.kind = kind
        self.column = column
        self.user = user
        #: The window code templates.
        self.blueprint = user.blueprint if user is not None else BLUEPRINTS.get(kind)

    def over_strings(self) -> "Agg":
        """This aggregate over a string column's dictionary codes (``min``/``max`` compare their bytes)."""
        out = Agg(self.kind, self.column)
        out.blueprint = STRING_BLUEPRINTS.get(self.kind, self.blueprint)
        return out

    def fingerprint(self) -> str | None:
        """Identity for plan caching; None when a user aggregate's code cannot be hashed."""
        if self.user is None:
            return repr(self)
        return None if self.user.fingerprint is None else f"{self.user.fingerprint}({self.column!r})"

    def __repr__(self) -> str:
        if self.user is not None:
            return f"{self.kind}({self.column!r})"
        return f"lj.{self.kind}({self.column!r})" if self.column else f"lj.{self.kind}()"

    def __eq__(self, other) -> bool:
        return isinstance(other, Agg) and (self.kind, self.column, self.user) == (other.kind, other.column, other.user)

    def __hash__(self) -> int:
        return hash((self.kind, self.column))


class UserAggregate:
    """An aggregate defined by three Numba-compilable functions over a tuple of state fields.

    The state of one group is a tuple with one value per field of ``state``
    (in order). ``update(state, x)`` folds in one non-null value ``x`` and
    returns the new state tuple; ``merge(a, b)`` combines two non-empty
    states (panes of a sliding window, sessions joined by a row) and returns
    the combined tuple; ``finalize(state)`` returns the result. The engine
    applies the SQL null rules around them: null inputs are never passed to
    ``update``, and a group without a non-null value is null without calling
    ``finalize``. The functions are inlined into the compiled window loops,
    exactly like the built-in aggregates, which share this blueprint
    machinery.

    Parameters
    ----------
    name : str
        Display name (used in errors and ``repr``).
    state : mapping of str to dtype or (dtype, initial value)
        State fields; the initial value defaults to 0.
    update, merge, finalize : callable
        Plain Python functions (or ``@numba.njit`` dispatchers) as above.
    result : numpy dtype, default float64
        Type of the value ``finalize`` returns.

    Examples
    --------
    >>> import numpy as np
    >>> import laminar_jit as lj
    >>> rms = lj.UserAggregate(
    ...     "rms", state={"ss": np.float64, "n": np.int64},
    ...     update=lambda st, x: (st[0] + x * x, st[1] + 1),
    ...     merge=lambda a, b: (a[0] + b[0], a[1] + b[1]),
    ...     finalize=lambda st: np.sqrt(st[0] / st[1]))
    >>> agg = rms("price")  # use in aggs={"rms": rms("price")}
    """

    def __init__(self, name: str, state, update, merge, finalize, result=np.float64):
        from .kernel import Kernel, fingerprint_function

        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"UserAggregate: name must be an identifier, got {name!r}")
        self.name = name
        # "_n" is the engine's own count of non-null inputs (the null rule)
        self.fields = state_fields(f"UserAggregate {name!r}", state, reserved=("_n",))
        self.result = np.dtype(result)
        if self.result.kind not in "biuf":
            raise ValueError(f"UserAggregate {name!r}: result must be a numeric dtype, got {self.result}")
        self.kernels = {role: Kernel(fn, name=f"{name}.{role}")
                        for role, fn in (("update", update), ("merge", merge), ("finalize", finalize))}
        parts = [fingerprint_function(k.fn) for k in self.kernels.values()]
        self.fingerprint = None if None in parts else "udaf:" + hashlib.sha256(
            repr([name, [(f, str(d), i) for f, d, i in self.fields], str(self.result), parts]).encode()).hexdigest()
        tag = (self.fingerprint or f"anon{id(self):x}").replace("udaf:", "")[:16]
        self.global_names = {role: f"udaf_{name}_{tag}_{role}" for role in self.kernels}
        self.blueprint = self._blueprint()

    def _blueprint(self) -> Blueprint:
        names = [f for f, _, _ in self.fields]
        g = self.global_names

        def tup(slot):
            return "(" + "".join(f"{{f_{f}}}[{slot}], " for f in names) + ")"

        def targets(slot):
            return ", ".join(f"{{f_{f}}}[{slot}]" for f in names) + ("," if len(names) == 1 else "")

        copy = "\n".join(f"        {{f_{f}}}[d] = {{f_{f}}}[a]" for f in names)
        return Blueprint(
            fields=tuple((f, (lambda d: lambda _dtype: d)(d), i) for f, d, i in self.fields)
            + (("_n", _I64, 0),),
            update=f"{targets('s')} = {g['update']}({tup('s')}, x)\n{{f__n}}[s] += 1",
            merge=(f"if {{f__n}}[a] > 0:\n    if {{f__n}}[d] == 0:\n{copy}\n    else:\n"
                   f"        {targets('d')} = {g['merge']}({tup('d')}, {tup('a')})\n    {{f__n}}[d] += {{f__n}}[a]"),
            value=f"{g['finalize']}({tup('s')}) if {{f__n}}[s] > 0 else np.{self.result.name}(0)",
            valid="{f__n}[s] > 0",
            result=lambda _dtype: self.result,
        )

    def check(self, node: str, column: str, dtype) -> None:
        """Compile the functions for this column's dtype; raise KernelError naming the node on failure."""
        from .._jit import JIT_DISABLED
        from .kernel import _first_line

        if JIT_DISABLED:
            return
        import numba

        state_t = numba.types.Tuple([numba.from_dtype(d) for _, d, _ in self.fields])
        where = f"operator {node!r}: aggregate {self.name}({column!r})"
        for role, args in (("update", (state_t, numba.from_dtype(np.dtype(dtype)))), ("merge", (state_t, state_t)),
                           ("finalize", (state_t,))):
            disp = self.kernels[role].dispatcher
            try:
                disp.compile(args)
                ret = disp.overloads[tuple(args)].signature.return_type
            except Exception as exc:  # numba raises many error types
                raise KernelError(f"{where}: {role} does not compile for {args}: {_first_line(exc)}") from None
            if role == "finalize":
                ok = isinstance(ret, (numba.types.Number, numba.types.Boolean))
                want = "a number"
            else:
                ok = isinstance(ret, numba.types.BaseTuple) and len(ret) == len(self.fields)
                want = f"a tuple of {len(self.fields)} values (one per state field)"
            if not ok:
                raise KernelError(f"{where}: {role} returns {ret}; it must return {want}")

    def __call__(self, column: str) -> Agg:
        """This aggregate applied to ``column``."""
        return Agg(self.name, column, user=self)

    def __repr__(self) -> str:
        return f"UserAggregate({self.name!r}, state={[f for f, _, _ in self.fields]})"


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


def count_distinct(column: str) -> Agg:
    """Number of distinct non-null values of ``column`` (SQL ``count(DISTINCT column)``); never null.

    A :class:`~laminar_jit.GroupAggregate` keeps each key's distinct values
    with their multiplicities, so retractions work; a window keeps each (key,
    window)'s distinct values in a set freed when the window fires (a sliding
    window one set per pane, united when a window fires; sessions unite
    theirs when a row joins them). Strings count distinct values. SQL's
    ``count(DISTINCT c) FILTER (WHERE p)`` is ``count_distinct`` of a column
    that is null where ``p`` does not hold (e.g. ``pc.if_else(p, c, None)`` in
    an :class:`~laminar_jit.ArrowMap`); ``count(c)`` likewise skips nulls.
    Floats count ``-0.0`` as ``0.0`` and every NaN as one value.
    """
    return Agg("count_distinct", column)


def var_pop(column: str) -> Agg:
    """Population variance of the non-null values (float64; SQL ``VAR_POP``); null if none.

    Computed by Welford's update and Chan's merge (panes, sessions), so it
    stays accurate where the sum of squares would cancel. Windows only.
    """
    return Agg("var_pop", column)


def var_samp(column: str) -> Agg:
    """Sample variance of the non-null values (float64; SQL ``VAR_SAMP``, ``VARIANCE``); null under two values.

    Windows only (see :func:`var_pop`).
    """
    return Agg("var_samp", column)


def stddev_pop(column: str) -> Agg:
    """Population standard deviation of the non-null values (SQL ``STDDEV_POP``); null if none. Windows only."""
    return Agg("stddev_pop", column)


def stddev_samp(column: str) -> Agg:
    """Sample standard deviation of the non-null values (SQL ``STDDEV_SAMP``, ``STDDEV``); null under two
    values. Windows only."""
    return Agg("stddev_samp", column)


def first(column: str) -> Agg:
    """Value of the non-null row with the smallest event time (ties: earliest arrival)."""
    return Agg("first", column)


def last(column: str) -> Agg:
    """Value of the non-null row with the largest event time (ties: latest arrival)."""
    return Agg("last", column)
