"""The operator protocol shared by every node type.

An operator object is configuration only. At :meth:`DagBuilder.build` each
node *binds* its operator to the node's input schema; the resulting
:class:`Bound` records the columns the kernels read, their dtypes and the
output schema. Binding is where schema errors surface, with the node and the
column named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .._types import arrow_to_numpy_dtype
from ..errors import SchemaError

__all__ = ["Bound", "Operator", "kept_field", "kernel_column", "state_fields", "string_type"]


@dataclass(frozen=True)
class Bound:
    """An operator bound to one node's input schema."""

    node: str
    op: "Operator"
    input_schema: pa.Schema
    output_schema: pa.Schema
    #: Columns the kernel reads, in parameter order.
    reads: tuple[str, ...] = ()
    #: numpy dtypes of ``reads`` as kernels see them.
    read_dtypes: tuple[np.dtype, ...] = ()
    #: Columns the operator creates or replaces: (name, arrow type).
    writes: tuple[tuple[str, pa.DataType], ...] = ()
    #: The operator family's typed settings, bound to the input (e.g. :class:`~laminar_jit.ops.windows.WindowSpec`).
    spec: object = None
    #: A stateful operator's output event-time column (None: its output has none).
    output_event_time: str | None = None
    #: A Project's ``(output name, input name)`` pairs; None for every other operator.
    mapping: tuple[tuple[str, str], ...] | None = None
    #: A Map kernel's numpy result dtypes, one per written column.
    returns: tuple[np.dtype, ...] = ()


class Operator:
    """Base class of all operators.

    Subclasses set :attr:`kind` (``"stateless"`` or ``"stateful"``) and
    implement :meth:`bind`, :meth:`fingerprint` and :meth:`label`.
    """

    kind = "stateless"
    #: Named input ports; ``None`` means one input that takes a union of upstreams.
    ports: tuple[str, ...] | None = None

    def late_outputs(self) -> list[tuple[str, str]]:
        """``(sink name, port)`` of each side output of late rows (port ``"late"``; a join's ``"late_left"`` etc.)."""
        sink = getattr(self, "late_sink", None)
        return [(sink, "late")] if isinstance(sink, str) and sink else []

    def bind(self, node: str, input_schema, event_time: str | None = None) -> Bound:  # pragma: no cover
        """Check the configuration against the input and derive the output schema.

        ``input_schema`` is a ``pa.Schema``, or for operators with :attr:`ports`
        a dict of port name to schema; ``event_time`` names the input's
        event-time column, when it has one.
        """
        raise NotImplementedError

    def fingerprint(self) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def label(self) -> str:
        return type(self).__name__


def kernel_column(node: str, schema: pa.Schema, column: str, role: str) -> np.dtype:
    """Dtype of ``column`` as kernels see it, or a :class:`SchemaError` naming the problem."""
    idx = schema.get_field_index(column)
    if idx < 0:
        raise SchemaError(
            f"operator {node!r}: {role} {column!r} is not a column of its input; "
            f"available columns: {', '.join(schema.names)} — rename the parameter or "
            "add the column upstream"
        )
    arrow_type = schema.field(idx).type
    dtype = arrow_to_numpy_dtype(arrow_type)
    if dtype is None:
        raise SchemaError(
            f"operator {node!r}: {role} {column!r} is {arrow_type}, expected a numeric, boolean "
            "or temporal column that kernels can read — strings ride along untouched; "
            "dictionary-encode or cast them upstream to use them in a kernel"
        )
    return dtype


def string_type(arrow_type: pa.DataType) -> pa.DataType | None:
    """The type a string column comes back as from operator state, or None when it is no string column.

    Keyed operators and joins keep strings as int64 codes of a
    :class:`~laminar_jit.state.dictionary.StringDictionary` filled at the
    source boundary, and decode them when they emit rows. ``string`` and
    ``large_string`` come back as themselves; a dictionary of them (Arrow
    ``dictionary<int32, string>``, the schema of a Polars ``Categorical`` or
    ``Enum``) as its value type: codes already are a dictionary, so the
    batch's own dictionary is not rebuilt on output.
    """
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return arrow_type
    return None


def kept_field(f: pa.Field) -> pa.Field:
    """``f`` as an operator that keeps the column in its state emits it (see :func:`string_type`)."""
    decoded = string_type(f.type)
    return f.with_type(decoded) if decoded is not None and decoded != f.type else f


def state_fields(owner: str, state, reserved=()) -> list[tuple[str, np.dtype, object]]:
    """``(name, dtype, initial value)`` of user state fields given as ``{name: dtype | (dtype, init)}``.

    Names must be identifiers outside ``reserved``; dtypes numeric or boolean;
    the initial value defaults to 0. Raises ValueError naming ``owner``.
    """
    fields = []
    for name, spec in dict(state or {}).items():
        if not isinstance(name, str) or not name.isidentifier() or name in reserved:
            raise ValueError(f"{owner}: state field names must be identifiers other than "
                             f"{sorted(reserved)}, got {name!r}")
        dtype, init = spec if isinstance(spec, tuple) else (spec, 0)
        dtype = np.dtype(dtype)
        if dtype.kind not in "biuf":
            raise ValueError(f"{owner}: state field {name!r} must be numeric or boolean, got {dtype}")
        fields.append((name, dtype, dtype.type(init).item()))
    if not fields:
        raise ValueError(f"{owner}: state needs at least one field, e.g. state={{'n': np.int64}}")
    return fields
