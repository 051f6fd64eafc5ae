"""Stateless operators: ``Filter``, ``Map``, ``Project`` and ``ArrowMap``.

Null model (the one rule for every stateless kernel, applied by the compiled
loop around the user function, never by the function itself):

* a row whose kernel inputs include a null is **not** passed to the kernel;
* a predicate on a null input is false: :class:`Filter` drops the row;
* a map of a null input is null: :class:`Map` marks every output of that row
  null (validity is carried as a boolean mask and restored at the sink);
* NaN is a value, not a null: it reaches the kernel like any float.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from .._types import arrow_to_numpy_dtype, numpy_to_arrow_type
from ..errors import KernelError, SchemaError
from .base import Bound, Operator, kernel_column
from .kernel import Kernel, as_kernel

__all__ = ["ArrowMap", "Filter", "Map", "Project"]


def _bind_kernel(node: str, op_name: str, k: Kernel, schema: pa.Schema):
    reads = k.params
    dtypes = tuple(kernel_column(node, schema, c, "kernel parameter") for c in reads)
    result = k.infer_return(dtypes, f"operator {node!r} ({op_name})")
    return reads, dtypes, result


def _with_columns(schema: pa.Schema, writes) -> pa.Schema:
    """``schema`` with each ``(name, type)`` of ``writes`` replacing its column in place, or appended."""
    fields = list(schema)
    for name, arrow_type in writes:
        idx = schema.get_field_index(name)
        if idx >= 0:
            fields[idx] = pa.field(name, arrow_type)
        else:
            fields.append(pa.field(name, arrow_type))
    return pa.schema(fields)


def _output_spec(output) -> tuple:
    """``output=`` of Map and ArrowMap as ``((name, declared type or None), ...)``."""
    if isinstance(output, str):
        return ((output, None),)
    if isinstance(output, Mapping):
        return tuple((str(k), v) for k, v in output.items())
    return tuple((str(k), None) for k in output)


class Filter(Operator):
    """Keep the rows for which a kernel returns true.

    Parameters
    ----------
    fn : callable or Kernel
        Scalar predicate whose parameters name columns, e.g.
        ``lambda price: price > 100.0``; it must return a boolean (a number is
        rejected at ``build()`` with :class:`~laminar_jit.KernelError`). Rows
        with a null input are dropped.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> op = lj.Filter(lambda price: price > 100.0)
    """

    def __init__(self, fn: Callable | Kernel):
        self.kernel = as_kernel(fn)

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        reads, dtypes, result = _bind_kernel(node, "Filter", self.kernel, input_schema)
        # Only booleans: a number used as truthiness (``lambda price: price * 2``) is almost always a
        # predicate missing its comparison, and silently keeping every nonzero row hides it.
        if isinstance(result, tuple) or result.kind != "b":
            got = "a tuple" if isinstance(result, tuple) else str(result)
            raise KernelError(
                f"operator {node!r} (Filter): predicate {self.kernel.name} returns {got}, expected a boolean "
                f"— compare the value (e.g. `lambda {', '.join(reads) or 'x'}: ... > 0`) or, to keep nonzero "
                "values, write `!= 0`"
            )
        return Bound(node, self, input_schema, input_schema, reads, dtypes)

    def fingerprint(self) -> str | None:
        fp = self.kernel.fingerprint()
        return None if fp is None else f"Filter:{fp}"

    def label(self) -> str:
        return f"Filter({self.kernel.name})"


class Map(Operator):
    """Compute new columns (or replace existing ones) with a kernel.

    Parameters
    ----------
    fn : callable or Kernel
        Scalar function whose parameters name columns. Returns one value, or a
        tuple of values when several outputs are declared.
    output : str, sequence of str, or mapping of str to pyarrow.DataType
        Output column name(s). With a mapping, each value is the Arrow type of
        that output (the kernel's result is cast to it, same-kind casts only);
        otherwise the type is inferred from the kernel. A name that already
        exists replaces that column in place; new names are appended.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> import pyarrow as pa
    >>> eur = lj.Map(lambda price: price * 0.908, output="price_eur")
    >>> both = lj.Map(lambda p, q: (p * q, p > 0), output={"notional": pa.float64(), "pos": pa.bool_()})
    """

    def __init__(self, fn: Callable | Kernel, output: str | Sequence[str] | Mapping[str, pa.DataType]):
        self.kernel = as_kernel(fn)
        self.outputs: tuple[tuple[str, pa.DataType | None], ...] = _output_spec(output)
        if not self.outputs:
            raise ValueError("Map needs at least one output column name")
        for name, t in self.outputs:
            if t is not None and not isinstance(t, pa.DataType):
                raise TypeError(
                    f"Map output {name!r}: type must be a pyarrow DataType such as pa.float64(), got {t!r}"
                )
        names = [n for n, _ in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"Map output names repeat: {names}")

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        reads, dtypes, result = _bind_kernel(node, "Map", self.kernel, input_schema)
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(self.outputs) or (len(self.outputs) > 1) != isinstance(result, tuple):
            raise KernelError(
                f"operator {node!r} (Map): kernel {self.kernel.name} returns {len(results)} value(s) "
                f"but {len(self.outputs)} output column(s) were declared "
                f"({', '.join(n for n, _ in self.outputs)}) — return a tuple with one value per output"
            )
        writes = []
        for (name, declared), got in zip(self.outputs, results):
            if declared is None:
                writes.append((name, numpy_to_arrow_type(got)))
                continue
            want = arrow_to_numpy_dtype(declared)
            numeric = pa.types.is_boolean(declared) or pa.types.is_integer(declared) or pa.types.is_floating(declared)
            if want is None or not numeric:
                raise SchemaError(
                    f"operator {node!r} (Map): output {name!r} declared as {declared}; "
                    "kernel outputs must be boolean, integer or floating types"
                )
            if not np.can_cast(got, want, casting="same_kind"):
                raise KernelError(
                    f"operator {node!r} (Map): output {name!r} declared {declared} but kernel "
                    f"{self.kernel.name} returns {got} — declare a {numpy_to_arrow_type(got)} output "
                    "or convert inside the kernel"
                )
            writes.append((name, declared))
        return Bound(node, self, input_schema, _with_columns(input_schema, writes), reads, dtypes, tuple(writes),
                     returns=tuple(results))

    def fingerprint(self) -> str | None:
        fp = self.kernel.fingerprint()
        if fp is None:
            return None
        return "Map:" + fp + ":" + repr([(n, str(t)) for n, t in self.outputs])

    def label(self) -> str:
        return f"Map({self.kernel.name} → {', '.join(n for n, _ in self.outputs)})"


class Project(Operator):
    """Select, reorder and rename columns without touching data.

    Parameters
    ----------
    columns : sequence of str or mapping of str to str
        Output columns in order; a mapping is ``{new_name: existing_name}``.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> keep = lj.Project(["ts", "price"])
    >>> renamed = lj.Project({"t": "ts", "px": "price"})
    """

    def __init__(self, columns: Sequence[str] | Mapping[str, str]):
        if isinstance(columns, str):
            columns = [columns]
        if isinstance(columns, Mapping):
            self.mapping = tuple((str(k), str(v)) for k, v in columns.items())
        else:
            self.mapping = tuple((str(c), str(c)) for c in columns)
        if not self.mapping:
            raise ValueError("Project needs at least one column")
        names = [n for n, _ in self.mapping]
        if len(set(names)) != len(names):
            raise ValueError(f"Project output names repeat: {names}")

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        fields = []
        for new, old in self.mapping:
            idx = input_schema.get_field_index(old)
            if idx < 0:
                raise SchemaError(
                    f"operator {node!r} (Project): column {old!r} is not in its input; "
                    f"available columns: {', '.join(input_schema.names)}"
                )
            f = input_schema.field(idx)
            fields.append(pa.field(new, f.type, f.nullable, f.metadata))
        return Bound(node, self, input_schema, pa.schema(fields), mapping=tuple(self.mapping))

    def fingerprint(self) -> str | None:
        return "Project:" + hashlib.sha256(repr(self.mapping).encode()).hexdigest()

    def label(self) -> str:
        return "Project(" + ", ".join(n if n == o else f"{n}={o}" for n, o in self.mapping) + ")"


class ArrowMap(Operator):
    """Compute numeric columns from any columns with a vectorized Arrow function.

    Kernels read numbers; strings (and other Arrow types) reach them through
    an ``ArrowMap``: ``fn`` is called once per batch with whole
    :class:`pyarrow.Array` arguments — use :mod:`pyarrow.compute` — and
    returns one array (a tuple for several outputs). Kernels read outputs
    that are boolean, integer, floating or temporal; nulls in them are nulls
    for the kernels downstream. An output of another type travels like a
    source's column of that type: a string column (``string``,
    ``large_string`` or a dictionary of them, e.g. ``pc.utf8_lower(name)``)
    to sinks, as a key, or kept by an operator; any other type (a decimal,
    a list, …) to sinks.

    Over columns of its source (directly or through ``Filter`` and
    ``Project``) the function runs on the source batch before the compiled
    step. Over rows the engine computes — a window's or aggregate's results,
    a join's or a union's rows, a ``Map``'s output — those rows leave the step
    as a batch, the function runs on it, and a step of its own runs the rest
    of the DAG from there (such a DAG runs as one key shard). Source rows
    that went through a ``Map`` or a union cannot leave the step that way
    when a stateful operator follows (they would lose the watermark of each
    row's arrival): ``SchemaError`` says so. The function should be row-wise (each result row
    depends on that row only), so the output does not depend on how the input
    was batched.

    Parameters
    ----------
    fn : callable
        Function whose parameters name columns, e.g.
        ``lambda state: pc.is_in(state, value_set=pa.array(["OR", "ID"]))``.
    output : str, sequence of str, or mapping of str to pyarrow.DataType
        Output column name(s); with a mapping, the type each result is cast to.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> import pyarrow as pa, pyarrow.compute as pc
    >>> west = lj.ArrowMap(lambda state: pc.is_in(state, value_set=pa.array(["OR", "ID", "CA"])), output="west")
    >>> then = lj.Filter(lambda west: west)
    """

    def __init__(self, fn: Callable, output: str | Sequence[str] | Mapping[str, pa.DataType]):
        if not callable(fn):
            raise TypeError(f"ArrowMap: fn must be a function of columns, got {type(fn).__name__}")
        import inspect

        self.fn = fn
        self.params = tuple(inspect.signature(fn).parameters)
        if not self.params:
            raise ValueError("ArrowMap: fn needs at least one parameter (a column name)")
        self.outputs = _output_spec(output)
        names = [n for n, _ in self.outputs]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"ArrowMap needs distinct output names, got {names}")

    def evaluate(self, node: str, arrays: list) -> list:
        """Call ``fn`` on ``arrays`` and return one array per output, cast to the output types.

        Raises :class:`~laminar_jit.KernelError` naming ``node`` when the function
        raises, and :class:`~laminar_jit.DataError` when it returns something else than declared.
        """
        from ..errors import DataError

        n = len(arrays[0]) if arrays else 0
        try:
            result = self.fn(*arrays)
        except Exception as exc:  # the user's function: report it with the node
            from ..errors import KernelError

            err = KernelError(f"operator {node!r} (ArrowMap): {getattr(self.fn, '__name__', 'fn')} raised "
                              f"{type(exc).__name__}: {exc} — it runs on whole columns, so no single row is "
                              "named; the batch was rejected before any state changed. Fix the function or the "
                              "data and pass the batch again")
            err.node, err.source, err.row = node, None, None
            raise err from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(self.outputs):
            raise DataError(f"operator {node!r} (ArrowMap): returned {len(results)} value(s) for "
                            f"{len(self.outputs)} output(s) {[o for o, _ in self.outputs]}")
        out = []
        for (name, declared), r in zip(self.outputs, results):
            if isinstance(r, pa.ChunkedArray):
                r = r.combine_chunks()
            if not isinstance(r, pa.Array) or len(r) != n:
                raise DataError(f"operator {node!r} (ArrowMap): output {name!r} must be a pyarrow Array of "
                                f"{n} rows (one per input row), got {type(r).__name__}"
                                + (f" of {len(r)}" if hasattr(r, "__len__") else ""))
            if declared is not None and r.type != declared:
                try:
                    r = r.cast(declared)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise DataError(f"operator {node!r} (ArrowMap): output {name!r} is {r.type} and does "
                                    f"not cast to the declared {declared}: {exc}") from exc
            out.append(r)
        return out

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        for c in self.params:
            if input_schema.get_field_index(c) < 0:
                raise SchemaError(f"operator {node!r} (ArrowMap): parameter {c!r} is not a column of its input; "
                                  f"available columns: {', '.join(input_schema.names)}")
        from ..errors import DataError

        empty = [pa.array([], input_schema.field(c).type) for c in self.params]
        try:
            results = self.evaluate(node, empty)
        except (DataError, KernelError) as exc:
            raise KernelError(f"{exc} — on empty input of the column types, at build time") from None
        writes = [(name, r.type) for (name, _), r in zip(self.outputs, results)]
        return Bound(node, self, input_schema, _with_columns(input_schema, writes), self.params, (), tuple(writes))

    def fingerprint(self) -> str | None:
        # the function runs before the compiled step: compiled code depends only on the output types
        return "ArrowMap:" + repr(self.params) + repr(self.outputs)

    def label(self) -> str:
        return f"ArrowMap({getattr(self.fn, '__name__', 'fn')} → {', '.join(n for n, _ in self.outputs)})"
