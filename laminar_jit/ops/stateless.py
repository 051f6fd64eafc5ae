"""Stateless operators: ``Filter``, ``Map`` and ``Project``.

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

__all__ = ["Filter", "Map", "Project"]


def _bind_kernel(node: str, op_name: str, k: Kernel, schema: pa.Schema):
    reads = k.params
    dtypes = tuple(kernel_column(node, schema, c, "kernel parameter") for c in reads)
    result = k.infer_return(dtypes, f"operator {node!r} ({op_name})")
    return reads, dtypes, result


class Filter(Operator):
    """Keep the rows for which a kernel returns true.

    Parameters
    ----------
    fn : callable or Kernel
        Scalar predicate whose parameters name columns, e.g.
        ``lambda price: price > 100.0``. Rows with a null input are dropped.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> op = lj.Filter(lambda price: price > 100.0)
    """

    def __init__(self, fn: Callable | Kernel):
        self.kernel = as_kernel(fn)

    def bind(self, node: str, input_schema: pa.Schema, event_time: str | None = None) -> Bound:
        reads, dtypes, result = _bind_kernel(node, "Filter", self.kernel, input_schema)
        if isinstance(result, tuple) or result.kind not in "biuf":
            raise KernelError(
                f"operator {node!r} (Filter): predicate {self.kernel.name} returns {result}, "
                "expected a boolean (or a number, nonzero meaning true)"
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
        if isinstance(output, str):
            self.outputs: tuple[tuple[str, pa.DataType | None], ...] = ((output, None),)
        elif isinstance(output, Mapping):
            self.outputs = tuple((str(k), v) for k, v in output.items())
        else:
            self.outputs = tuple((str(k), None) for k in output)
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
        fields = list(input_schema)
        for name, arrow_type in writes:
            idx = input_schema.get_field_index(name)
            if idx >= 0:
                fields[idx] = pa.field(name, arrow_type)
            else:
                fields.append(pa.field(name, arrow_type))
        return Bound(node, self, input_schema, pa.schema(fields), reads, dtypes, tuple(writes),
                     {"returns": tuple(results)})

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
        return Bound(node, self, input_schema, pa.schema(fields), extra={"mapping": self.mapping})

    def fingerprint(self) -> str | None:
        return "Project:" + hashlib.sha256(repr(self.mapping).encode()).hexdigest()

    def label(self) -> str:
        return "Project(" + ", ".join(n if n == o else f"{n}={o}" for n, o in self.mapping) + ")"
