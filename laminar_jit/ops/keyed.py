"""Keyed kernels: a scalar function per row with that key's mutable state, plus event-time timers.

``lj.KeyedKernel(fn, key="sensor", state={"mean": np.float64, "n": np.int64},
output={"z": pa.float64()})`` calls ``fn(state, col, ...)`` for every row
*inside compiled code*: ``state`` is the row's key's record in an
engine-owned numpy structured array (mutations stick), the other parameters
name columns, and the return value is the row's output (a tuple for several
outputs). Output rows are the key column(s), the event-time column, then the
outputs.

With ``on_timer=``, the state record gains an int64 field ``timer``: setting
it to an event time arms that key's timer (setting it again moves it;
``lj.NO_TIMER`` disarms it). When the node's watermark reaches the time —
checked before every row, so firing does not depend on batch boundaries —
``on_timer(state, timestamp)`` runs and its outputs become a row with that
key and ``timestamp`` as event time. Timers live in a binary heap in numpy
arrays ordered by time, then by the key's first arrival (the same order
in key shards and after a restore). ``on_timer`` may re-arm the timer to a
later time; one call fires at most as many timers as were pending plus one
per input row (the rest fire in the next call), which bounds what nodes
downstream must reserve; re-arming during ``finish()`` is ignored.

Rows with a null in a column ``fn`` reads are skipped (no call, no output);
rows with a null key share the null key's state, as in SQL ``GROUP BY``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

import numba
import numpy as np
import pyarrow as pa

from .._jit import JIT_DISABLED
from ..errors import KernelError, SchemaError
from .base import Bound, Operator, kept_field, kernel_column, state_fields
from .kernel import Kernel, _first_line
from .windows import _key_tuple, check_key_columns


@dataclass(frozen=True)
class KeyedSpec:
    """A keyed kernel node's settings, bound to its input (the state layout is the operator's own)."""

    keys: tuple[str, ...]
    #: The input's event-time column: timers and output rows are in its time.
    event_time: str
    #: Columns each call (and each fired timer) returns.
    n_outputs: int

__all__ = ["NO_TIMER", "KeyedKernel", "KeyedSpec"]

#: ``state.timer`` value of a key without a pending timer.
NO_TIMER = np.iinfo(np.int64).min


class KeyedKernel(Operator):
    """A per-row Numba function with per-key state and optional event-time timers.

    Parameters
    ----------
    fn : callable
        ``fn(state, a, b, ...)``: ``state`` is the key's mutable state record
        (fields of ``state`` as attributes), ``a, b, ...`` name input columns.
        Returns one value per output (a tuple when there are several).
    key : str or list of str
        Key column(s): integer, boolean, temporal or string.
    state : mapping of str to dtype or (dtype, initial value)
        State fields of one key; numeric, initial value 0 unless given.
    output : mapping of str to pyarrow.DataType
        Output columns (numeric or boolean) in order.
    on_timer : callable, optional
        ``on_timer(state, timestamp)`` → outputs, called when the key's timer
        (``state.timer``) is reached by the watermark.
    columns : mapping of str to str, optional
        Parameter name → column name, for parameters that do not match
        their column's name (reusable kernels).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> import laminar_jit as lj
    >>> def zscore(st, value):
    ...     st.n += 1
    ...     d = value - st.mean
    ...     st.mean += d / st.n
    ...     st.m2 += d * (value - st.mean)
    ...     sd = np.sqrt(st.m2 / (st.n - 1)) if st.n > 1 else 0.0
    ...     return (value - st.mean) / sd if sd > 0 else 0.0
    >>> op = lj.KeyedKernel(zscore, key="sensor", output={"z": pa.float64()},
    ...                     state={"n": np.int64, "mean": np.float64, "m2": np.float64})
    """

    kind = "stateful"

    def __init__(self, fn, key, state: Mapping, output: Mapping, on_timer=None, columns: Mapping | None = None):
        self.keys = _key_tuple(key)
        self.columns = dict(columns or {})
        if not self.keys:
            raise ValueError("KeyedKernel needs key='column' (or a list of columns)")
        self.kernel = Kernel(fn)
        if not self.kernel.params:
            raise KernelError(f"keyed kernel {self.kernel.name}: the first parameter must take the state record")
        self.on_timer = Kernel(on_timer, name=f"{self.kernel.name}.on_timer") if on_timer is not None else None
        if self.on_timer is not None and len(self.on_timer.params) != 2:
            raise KernelError(f"keyed kernel {self.kernel.name}: on_timer must take (state, timestamp)")
        # with on_timer, "timer" is the engine's field holding the key's timer
        fields = state_fields("KeyedKernel", state, reserved=("timer",) if self.on_timer is not None else ())
        if self.on_timer is not None:
            fields.append(("timer", np.dtype(np.int64), int(NO_TIMER)))
        self.state_fields = tuple(fields)
        self.state_dtype = np.dtype([(n, d) for n, d, _ in fields])
        self.outputs = tuple((str(n), t) for n, t in dict(output).items())
        if not self.outputs:
            raise ValueError("KeyedKernel: output needs at least one column, e.g. output={'z': pa.float64()}")
        for name, t in self.outputs:
            if not isinstance(t, pa.DataType) or not (pa.types.is_boolean(t) or pa.types.is_integer(t)
                                                      or pa.types.is_floating(t)):
                raise ValueError(f"KeyedKernel: output {name!r} must be a boolean, integer or floating "
                                 f"pyarrow type, got {t!r}")

    # -- binding ----------------------------------------------------------------
    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        if event_time is None or input_schema.get_field_index(event_time) < 0:
            raise SchemaError(
                f"operator {node!r}: keyed kernels run in event time; declare the source with "
                "event_time='ts' (and keep that column through Projects/Maps upstream)")
        check_key_columns(node, input_schema, self.keys)
        unknown = set(self.columns) - set(self.kernel.params[1:])
        if unknown:
            raise SchemaError(f"operator {node!r}: columns= maps {sorted(unknown)}, which are not parameters of "
                              f"kernel {self.kernel.name}{self.kernel.params}")
        params = tuple(self.columns.get(p, p) for p in self.kernel.params[1:])
        dtypes = tuple(kernel_column(node, input_schema, p, f"kernel {self.kernel.name} parameter") for p in params)
        et_type = input_schema.field(event_time).type
        reserved = {event_time, *self.keys}
        for name, _ in self.outputs:
            if name in reserved:
                raise SchemaError(f"operator {node!r}: output {name!r} clashes with the key/event-time column")
        self._check(node, self.kernel, [numba.from_dtype(d) for d in dtypes])
        if self.on_timer is not None:
            self._check(node, self.on_timer, [numba.int64])
        fields = [kept_field(input_schema.field(k)) for k in self.keys] + [pa.field(event_time, et_type)]
        fields += [pa.field(n, t) for n, t in self.outputs]
        spec = KeyedSpec(self.keys, event_time, len(self.outputs))
        return Bound(node, self, input_schema, pa.schema(fields), tuple(params), dtypes, spec=spec,
                     output_event_time=event_time)

    def _check(self, node: str, k: Kernel, arg_types: list) -> None:
        """Compile ``k`` for (state record, *arg_types) and check it returns the declared outputs."""
        if JIT_DISABLED:
            return
        args = (numba.from_dtype(self.state_dtype), *arg_types)
        try:
            k.dispatcher.compile(args)
            ret = k.dispatcher.overloads[tuple(args)].signature.return_type
        except Exception as exc:  # Numba raises several error types
            raise KernelError(f"operator {node!r}: keyed kernel {k.name} does not compile for "
                              f"(state, {', '.join(map(str, arg_types))}): {_first_line(exc)}") from None
        rets = list(ret.types) if isinstance(ret, numba.types.BaseTuple) else [ret]
        want = len(self.outputs)
        if len(rets) != want or (want > 1) != isinstance(ret, numba.types.BaseTuple) or not all(
                isinstance(r, (numba.types.Number, numba.types.Boolean)) for r in rets):
            raise KernelError(f"operator {node!r}: keyed kernel {k.name} returns {ret}; it must return "
                              f"{'a number' if want == 1 else f'a tuple of {want} numbers'} "
                              f"({', '.join(n for n, _ in self.outputs)})")

    def new_state(self, bound: Bound, capacity: int = 1024):
        """The engine-owned state of a node running this operator."""
        from ..state.keyed import KeyedState

        return KeyedState(bound, capacity)

    # -- identity -----------------------------------------------------------------
    def fingerprint(self) -> str | None:
        parts = [self.kernel.fingerprint(), self.on_timer.fingerprint() if self.on_timer else "none"]
        if None in parts:
            return None
        spec = repr([self.keys, sorted(self.columns.items()), [(n, str(d), i) for n, d, i in self.state_fields],
                     [(n, str(t)) for n, t in self.outputs], parts])
        return "KeyedKernel:" + hashlib.sha256(spec.encode()).hexdigest()

    def label(self) -> str:
        timer = ", on_timer" if self.on_timer else ""
        return f"KeyedKernel({self.kernel.name}, key={list(self.keys)}{timer})"
