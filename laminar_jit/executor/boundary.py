"""The two boundaries of the compiled step: Arrow in, Arrow out.

Source boundary: accept anything Arrow-shaped, check it against the source
schema (missing columns, unsafe casts, nulls where none are allowed, nulls in
the event-time column) and expose numeric columns as read-only zero-copy numpy
views plus validity masks. Nothing here mutates executor state, so a rejected
batch changes nothing.

Sink boundary: gather source columns with one Arrow ``take`` (identity
selections are passed through without a copy) and wrap derived numpy arrays
as Arrow arrays.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..changelog import OP_COLUMN, is_changelog
from ..errors import DataError
from ..time.watermarks import WATERMARK_MIN
from .core import DICTIONARY_BYTES

__all__ = ["EAGER_ROWS", "NO_NULLS", "SinkBuffer", "call_step", "column_view", "conform", "as_batch", "dictionary_columns",
           "gathered_column", "readonly", "run_step", "to_batches"]

#: Empty validity mask meaning "this column has no nulls".
NO_NULLS = np.empty(0, dtype=np.bool_)
NO_NULLS.setflags(write=False)

#: Batches with at least this many rows have their sink outputs gathered by the
#: compiled step and materialized at once; smaller ones are coalesced.
EAGER_ROWS = 1024

_EMPTY: dict[np.dtype, np.ndarray] = {}


def empty_view(dtype: np.dtype) -> np.ndarray:
    """A shared read-only empty array of ``dtype`` (placeholder for unneeded columns)."""
    arr = _EMPTY.get(dtype)
    if arr is None:
        arr = _EMPTY[dtype] = np.empty(0, dtype)
        arr.setflags(write=False)
    return arr


def readonly(a: np.ndarray) -> np.ndarray:
    """``a`` if it is read-only, else a read-only view of it (no copy).

    Plans are compiled for read-only column arrays and Numba types a writable
    array differently: passing one would compile the whole step a second time.
    """
    if not a.flags.writeable:
        return a
    a = a.view()
    a.setflags(write=False)
    return a


def to_batches(source: str, data) -> list[pa.RecordBatch]:
    """Turn a batch-like object into record batches (no validation yet).

    Accepts ``pa.RecordBatch``, ``pa.Table``, objects exposing
    ``__arrow_c_array__`` or ``__arrow_c_stream__`` (Polars, DuckDB, pandas via
    Arrow) and mappings of column name to array.

    Raises
    ------
    TypeError
        For objects that are not batches at all.
    DataError
        For a mapping whose columns cannot form a batch.
    """
    if isinstance(data, pa.RecordBatch):
        return [data]
    if isinstance(data, pa.Table):
        batches = data.to_batches()
        # (an empty batch built from arrays: from_pylist cannot build string_view dictionaries)
        return batches if batches else [pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in data.schema],
                                                                   schema=data.schema)]
    if hasattr(data, "__arrow_c_array__"):
        return [pa.record_batch(data)]
    if hasattr(data, "__arrow_c_stream__"):
        return to_batches(source, pa.table(data))
    if isinstance(data, Mapping):
        try:
            return [pa.RecordBatch.from_pydict({str(k): _as_array(v) for k, v in data.items()})]
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as exc:
            raise DataError(f"source {source!r}: the mapping of arrays does not form a batch: {exc}") from exc
    raise TypeError(
        f"source {source!r}: expected a pyarrow RecordBatch/Table, an object with __arrow_c_stream__ "
        f"(Polars, DuckDB) or a mapping of column name to array, got {type(data).__name__}"
    )


def _as_array(values):
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    return pa.array(np.asarray(values) if not isinstance(values, list) else values)


def dictionary_columns(spec) -> list[int]:
    """Positions of a source's dictionary-encoded columns (a batch's dictionary may hold nulls)."""
    return [i for i, f in enumerate(spec.schema) if pa.types.is_dictionary(f.type)]


def null_checked_columns(spec) -> list[tuple[int, str]]:
    """Columns of a source that must not hold nulls: the event time and non-nullable fields."""
    return [(i, "event-time column" if f.name == spec.event_time else "non-nullable column")
            for i, f in enumerate(spec.schema) if not f.nullable or f.name == spec.event_time]


def conform(source: str, spec, batch: pa.RecordBatch, checked: list[tuple[int, str]],
            dictionaries: list[int]) -> pa.RecordBatch:
    """Check ``batch`` against the source spec and return it in schema order and types.

    Extra columns are dropped; numeric columns of another numeric type are cast
    when the cast is safe for every value. ``checked`` comes from
    :func:`null_checked_columns`, ``dictionaries`` (the schema's dictionary
    columns) from :func:`dictionary_columns`: both once per source.
    """
    schema: pa.Schema = spec.schema
    if getattr(spec.watermark, "processing_time", False):  # the wall clock, stamped on arrival
        now = pa.array(np.full(batch.num_rows, time.time_ns() // 1_000_000, np.int64), pa.int64())
        at = batch.schema.get_field_index(spec.event_time)
        batch = (batch.set_column(at, spec.event_time, now.cast(pa.timestamp("ms"))) if at >= 0 else
                 batch.append_column(spec.event_time, now.cast(pa.timestamp("ms"))))
    if batch.schema.equals(schema):
        out = batch
    else:
        names = batch.schema.names
        arrays = []
        for f in schema:
            if names.count(f.name) > 1:
                raise DataError(f"source {source!r}: column {f.name!r} appears {names.count(f.name)} times in the batch")
            idx = batch.schema.get_field_index(f.name)
            if idx < 0:
                raise DataError(
                    f"source {source!r}: column {f.name!r} ({f.type}) is missing; the batch has "
                    f"{', '.join(names) or 'no columns'} — add it or remove it from the source schema"
                )
            arrays.append(_cast(source, f, batch.column(idx)))
        out = pa.RecordBatch.from_arrays(arrays, schema=schema)
    for i in dictionaries:
        if out.column(i).dictionary.null_count:
            out = out.set_column(i, schema.field(i), _without_null_entries(out.column(i)))
    for i, what in checked:
        nulls = out.column(i).null_count
        if nulls:
            raise DataError(
                f"source {source!r}: {what} {schema.field(i).name!r} has {nulls} null(s); "
                "drop or fill them before the batch reaches the engine (e.g. pyarrow.compute.fill_null)"
            )
    if is_changelog(schema) and out.num_rows:
        lo, hi = pc.min_max(out.column(OP_COLUMN)).values()
        if (lo.is_valid and lo.as_py() < 0) or (hi.is_valid and hi.as_py() > 3):
            bad = lo.as_py() if lo.as_py() < 0 else hi.as_py()
            raise DataError(f"source {source!r}: column {OP_COLUMN!r} holds {bad}, which is no RowKind; a "
                            "changelog's op is 0 (+I), 1 (-U), 2 (+U) or 3 (-D) — fix the codes, or rename the "
                            "column if the stream is not a changelog")
    return out


def _family(t: pa.DataType) -> str | None:
    """Types that hold the same values in another layout (casts between them are lossless)."""
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "numeric"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return "list"
    return None


def _cast(source: str, f: pa.Field, col: pa.Array) -> pa.Array:
    if col.type == f.type:
        return col
    family = _family(col.type)
    if family is None or family != _family(f.type):
        raise DataError(
            f"source {source!r}: column {f.name!r} is {col.type}, expected {f.type} — cast it with "
            "pyarrow.compute.cast or declare it as such in the source schema"
        )
    try:
        if pa.types.is_dictionary(col.type) and not pa.types.is_dictionary(f.type):
            # A dictionary-encoded batch (a Polars Categorical/Enum; each batch may bring a
            # dictionary of its own) for a plain column: cast the batch's dictionary once,
            # then gather it by the indices (Arrow has no direct cast from string_view
            # dictionaries, and this casts each distinct value once, not each row).
            return col.dictionary.cast(f.type, safe=True).take(col.indices)
        return col.cast(f.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataError(
            f"source {source!r}: column {f.name!r} is {col.type} and cannot be cast safely to {f.type} "
            f"({exc}) — fix the values or declare {col.type} in the source schema"
        ) from exc


def _without_null_entries(col: pa.DictionaryArray) -> pa.DictionaryArray:
    """``col`` with the null entries of its dictionary dropped and the rows using them made null.

    Arrow cannot concatenate dictionary arrays whose dictionaries hold nulls
    (the executor concatenates small batches, sinks concatenate outputs); a
    null entry and a null index mean the same. Vectorized: the new position of
    each entry is a running count of the valid entries.
    """
    valid = col.dictionary.is_valid().to_numpy(zero_copy_only=False)
    position = np.cumsum(valid) - 1
    entry_valid = pa.array(valid).take(col.indices)
    indices = pa.array(position, pa.int64()).take(col.indices)
    indices = pc.if_else(entry_valid, indices, None).cast(col.type.index_type)
    return pa.DictionaryArray.from_arrays(indices, col.dictionary.drop_null(), ordered=col.type.ordered)


def column_view(col: pa.Array, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Read-only numpy values and validity of a kernel-readable Arrow array.

    Values under nulls are whatever the buffer holds; kernels never see them.
    Booleans are unpacked (a copy); every other type is a zero-copy view.
    """
    n = len(col)
    if not col.null_count and dtype != np.bool_ and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return col.to_numpy(zero_copy_only=True), NO_NULLS  # the common case: one cheap call
    if col.null_count:
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        valid.setflags(write=False)
    else:
        valid = NO_NULLS
    if dtype == np.bool_:
        if col.null_count:
            col = col.fill_null(False)
        values = col.to_numpy(zero_copy_only=False)
    else:
        buf = col.buffers()[1]
        if buf is None or n == 0:
            values = np.empty(0, dtype=dtype)
        else:
            values = np.frombuffer(buf, dtype=dtype, count=col.offset + n)[col.offset:]
    if values.flags.writeable:
        values.setflags(write=False)
    return values, valid


class SinkBuffer:
    """Rows a sink received, turned into Arrow lazily for small batches.

    Large outputs of large batches are materialized at once (one Arrow
    ``take`` for non-numeric columns, numpy arrays wrapped without copies).
    Small outputs (a filter that keeps few rows, the windows one fire emits)
    are only *recorded* — the batch, the selected rows and the compiled step's
    arrays — and coalesced into one RecordBatch when enough rows are pending or
    the sink is drained: the fixed cost of building Arrow objects is paid per
    thousands of rows, not per batch.
    """

    #: Pending small outputs are coalesced once they hold this many rows.
    PENDING_ROWS = 65536

    def __init__(self, layout, dictionaries=None):
        #: The layout of the first plan that feeds the sink; a sink fed from several
        #: sources (or join steps) gets each step's own layout with its results.
        self.layout = layout
        #: (source, column) -> StringDictionary, to decode key columns emitted as codes.
        self.dictionaries = dictionaries or {}
        self.batches: list[pa.RecordBatch] = []
        self._pending: list[tuple[pa.RecordBatch, tuple, object]] = []
        self._pending_rows = 0
        self._recipes: dict[int, tuple] = {}  # id(layout) -> (layout, source columns, per-column recipe)

    def add(self, batch: pa.RecordBatch, result: tuple, layout=None) -> None:
        """Record this sink's share of one step ``result`` computed on ``batch``.

        ``layout`` says where the sink's arrays are in ``result`` (the step's
        plan's layout of this sink); by default the buffer's own.
        """
        layout = layout or self.layout
        rows = result[layout.offset]
        if rows.size == 0:
            return
        if batch.num_rows >= EAGER_ROWS and rows.size >= EAGER_ROWS:
            self.flush()  # keep arrival order
            self.batches.append(self._materialize_gathered(batch, result, layout))
            return
        self._pending.append((batch, result, layout))
        self._pending_rows += rows.size
        if self._pending_rows >= self.PENDING_ROWS:
            self.flush()

    def ready(self, batch: pa.RecordBatch, result: tuple, layout) -> pa.RecordBatch | None:
        """The rows :meth:`add` would turn into Arrow at once (a large output of a large batch), or None.

        Changes nothing here, so threads running steps side by side can each
        build their outputs; the caller then :meth:`append` s them in order.
        """
        rows = result[layout.offset]
        if batch.num_rows >= EAGER_ROWS and rows.size >= EAGER_ROWS:
            return self._materialize_gathered(batch, result, layout)
        return None

    def add_made(self, batch: pa.RecordBatch, result: tuple, layout, made: pa.RecordBatch | None) -> None:
        """:meth:`add` of a step's result whose rows a thread may have made into Arrow already (``made``, from
        :meth:`ready`; None: not made)."""
        if made is not None:
            self.append(made)
        else:
            self.add(batch, result, layout)

    def append(self, batch: pa.RecordBatch) -> None:
        """Add rows already made into a RecordBatch of the sink's schema (after what is pending)."""
        self.flush()
        self.batches.append(batch)

    def flush(self) -> None:
        """Coalesce pending small outputs into RecordBatches (one per run of outputs of one plan)."""
        pending, self._pending, self._pending_rows = self._pending, [], 0
        start = 0
        for i in range(1, len(pending) + 1):
            if i == len(pending) or pending[i][2] is not pending[start][2]:
                layout = pending[start][2]
                self.batches.append(self._materialize([(b, r) for b, r, _ in pending[start:i]], layout))
                start = i

    def drain(self) -> pa.Table:
        """Everything received so far as one table; empties the buffer."""
        self.flush()
        out, self.batches = self.batches, []
        return pa.Table.from_batches(out, schema=self.layout.schema)

    def materialize(self, batch: pa.RecordBatch, result: tuple, skip=()) -> pa.RecordBatch:
        """This layout's rows of one step ``result`` as a RecordBatch, at once (possibly empty).

        For the rows of a boundary node (see :func:`~laminar_jit.executor.steps.boundary_nodes`): a join's,
        whose columns the step always gathers, or source rows, whose numeric columns a small batch's step
        leaves to Arrow. Columns named in ``skip`` are all nulls (the next step reads them otherwise).
        """
        return self._materialize_gathered(batch, result, self.layout, skip)

    def _materialize_gathered(self, batch: pa.RecordBatch, r: tuple, layout, skip=()) -> pa.RecordBatch:
        # one large batch: the compiled step gathered every numeric column
        off = layout.offset
        identity = r[off + 1]
        taken = None
        if layout.take_columns or any(col.kind == "src" for col in layout.columns):
            batch = as_batch(batch)
        if layout.take_columns:
            base = batch.select(layout.take_columns)
            taken = base if identity else base.take(pa.array(r[off]))
        arrays = [pa.nulls(len(r[off]), f.type) if f.name in skip else
                  gathered_column(self.dictionaries, batch, r, layout, f, col, taken)
                  for f, col in zip(layout.schema, layout.columns)]
        return pa.RecordBatch.from_arrays(arrays, schema=self.layout.schema)

    def _materialize(self, parts: list[tuple[pa.RecordBatch, tuple]], layout) -> pa.RecordBatch:
        # many small batches: source columns with one Arrow take over all of
        # them, derived columns by concatenating the step's arrays
        off = layout.offset
        src, recipe, tail = self._recipe(layout)
        taken = None
        if src and not layout.take_columns and all(_gathered(r, layout) for _, r in parts):
            # every step gathered the source columns (large batches, a few rows kept: a selective filter):
            # their arrays, as the derived columns, instead of an Arrow take per batch (Nexmark q2: 3 of 21 ms)
            src, tail = [], None
            recipe = [("der", col.pos, f.type, _numeric_dtype(f.type)) if kind == "col" else (kind, pos, t, target)
                      for f, col, (kind, pos, t, target) in zip(layout.schema, layout.columns, recipe)]
        if src:  # a batch that holds exactly these columns needs no select
            batches = [as_batch(b) for b, _ in parts]
            taken = _take_rows([(b if b.schema.names == src else b.select(src), r[off], r[off + 1])
                                for b, (_, r) in zip(batches, parts)])
        derived = {}
        for j, (kind, pos, arrow_type, target) in enumerate(recipe):
            if kind == "col":
                continue
            if len(parts) == 1:
                values, valid = parts[0][1][pos], parts[0][1][pos + 1]
            else:
                values, valid = _concat([r[pos] for _, r in parts], [r[pos + 1] for _, r in parts])
            if kind == "code":
                derived[j] = self.dictionaries[arrow_type].decode(values, _or_none(valid))
            else:
                derived[j] = _to_arrow(values, valid, arrow_type, target)
        schema = self.layout.schema
        if tail is not None and taken is not None:
            # the taken columns lead in order: append the others (cheaper than
            # rebuilding the batch, which costs ~1 µs per column for tiny outputs)
            out = taken
            for j in range(tail, len(recipe)):
                out = out.append_column(schema.field(j), derived[j])
            if out.schema.equals(schema):
                return out
        cols = taken.columns if taken is not None else []
        return pa.RecordBatch.from_arrays([cols[pos] if kind == "col" else derived[j]
                                           for j, (kind, pos, _, _) in enumerate(recipe)], schema=schema)

    def _recipe(self, layout) -> tuple[list[str], list[tuple], int | None]:
        """How :meth:`_materialize` builds ``layout``'s columns, worked out once per layout.

        Returns the source columns to take; per output column
        ``("col", index into them, None, None)``, ``("code", position, dictionary key, None)``
        or ``("der", position, Arrow type, numpy dtype of a numeric type or None)``;
        and, when the taken columns come first and in order, how many they are.
        """
        found = self._recipes.get(id(layout))
        if found is not None and found[0] is layout:
            return found[1:]
        src = list(layout.take_columns) + [c.column for c in layout.columns if c.kind == "src"]
        recipe = []
        for f, col in zip(layout.schema, layout.columns):
            if col.kind in ("take", "src"):
                recipe.append(("col", col.pos if col.kind == "take" else src.index(col.column), None, None))
            elif col.kind == "code":
                recipe.append(("code", col.pos, col.dictionary, None))
            else:
                recipe.append(("der", col.pos, f.type, _numeric_dtype(f.type)))
        lead = [pos for kind, pos, _, _ in recipe[:len(src)] if kind == "col"]
        tail = len(src) if lead == list(range(len(src))) and all(
            kind != "col" for kind, _, _, _ in recipe[len(src):]) else None
        self._recipes[id(layout)] = (layout, src, recipe, tail)
        return src, recipe, tail


def gathered_column(dictionaries, batch, r: tuple, layout, f: pa.Field, col, taken=None) -> pa.Array:
    """Output column ``f`` (whose source is ``col``, a :class:`~.core.SinkColumn`) of ``layout``'s rows in the
    step result ``r`` computed on ``batch``, as Arrow.

    ``taken``: the layout's ``take_columns`` already taken for these rows (else this column is taken alone).
    """
    rows, identity = r[layout.offset], r[layout.offset + 1]
    if col.kind == "take":
        if taken is not None:
            return taken.column(col.pos)
        source = batch.column(layout.take_columns[col.pos])
        return source if identity else source.take(pa.array(rows))
    if col.kind == "src" and identity:
        return batch.column(col.column)
    if col.kind == "src" and not _step_gathered(r, layout, col):  # a small batch's: the step left it to Arrow
        return batch.column(col.column).take(pa.array(rows))
    if col.kind == "code":
        return dictionaries[col.dictionary].decode(r[col.pos], _or_none(r[col.pos + 1]))
    return _to_arrow(r[col.pos], r[col.pos + 1], f.type)


def as_batch(b) -> pa.RecordBatch:
    """``b`` as a RecordBatch: a step's input is one, or the rows of a boundary node the step before handed on
    as numpy arrays (:class:`~laminar_jit.executor.handoff.StepRows`), made into Arrow here."""
    return b if isinstance(b, pa.RecordBatch) else b.arrow()


def _concat(values: list[np.ndarray], valid: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if len(values) == 1:
        return values[0], valid[0]
    vals = np.concatenate(values)
    if all(m.size == 0 for m in valid):
        return vals, NO_NULLS
    return vals, np.concatenate([m if m.size else np.ones(v.size, np.bool_) for v, m in zip(values, valid)])


def _take_rows(parts: list[tuple[pa.RecordBatch, np.ndarray, bool]]) -> pa.RecordBatch:
    if len(parts) == 1:
        b, rows, identity = parts[0]
        return b if identity else b.take(pa.array(rows))
    if 4 * sum(rows.size for _, rows, _ in parts) < sum(b.num_rows for b, _, _ in parts):
        # a few rows of each batch (a selective filter): take from each batch and join the small
        # results, rather than copy every batch whole into one to take from it (5x faster for
        # Nexmark q2's 0.8 %)
        return pa.concat_batches([b if identity else b.take(pa.array(rows)) for b, rows, identity in parts])
    starts = np.cumsum([0] + [b.num_rows for b, _, _ in parts[:-1]])
    rows = np.concatenate([r + s for (_, r, _), s in zip(parts, starts)]).astype(np.int64)
    return pa.concat_batches([b for b, _, _ in parts]).take(pa.array(rows))


def _gathered(r: tuple, layout) -> bool:
    """Whether the step result ``r`` holds the gathered rows of every source column of ``layout``."""
    return not r[layout.offset + 1] and all(_step_gathered(r, layout, c) for c in layout.columns if c.kind == "src")


def _step_gathered(r: tuple, layout, col) -> bool:
    """Whether the step gathered source column ``col``'s rows into ``r`` (not so when the selection is the
    identity or the batch was small: those the boundary takes from the batch)."""
    return not r[layout.offset + 1] and len(r[col.pos]) == len(r[layout.offset])


def _or_none(valid: np.ndarray):
    return None if valid.size == 0 else valid


def _numeric_dtype(arrow_type: pa.DataType) -> np.dtype | None:
    """The numpy dtype of an integer, floating or boolean Arrow type; None for the others."""
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
        return np.dtype(arrow_type.to_pandas_dtype())
    return None


def _to_arrow(values: np.ndarray, valid: np.ndarray, arrow_type: pa.DataType, target=False) -> pa.Array:
    """Values (and validity, empty when all valid) as an Arrow array of ``arrow_type``.

    ``target`` is :func:`_numeric_dtype` of the type, when the caller knows it.
    """
    mask = None if valid.size == 0 or valid.all() else ~valid
    if target is False:
        target = _numeric_dtype(arrow_type)
    if target is not None:
        if values.dtype != target:  # e.g. int32 or bool keys held as int64 in state
            values = values.astype(target)
        return pa.array(values, type=arrow_type, mask=mask)
    # temporal types travel as their integer storage (32-bit ones held as int64 in state: narrowed first)
    width = np.int32 if arrow_type.bit_width == 32 else np.int64
    return pa.array(values.astype(width, copy=False), mask=mask).view(arrow_type)


# ----------------------------------------------------------------------------- Arrow in: a step's call

def _arg_recipe(plan, b: pa.RecordBatch) -> tuple:
    """Per step argument: ``plan.args``' fields, whether a null-free column is a plain numpy view, and
    the empty placeholder passed for columns only sinks read (saves ~1 µs per column of a small batch)."""
    out = []
    for name, dtype, kernel_read, encoded in plan.args:
        t = b.schema.field(name).type if not name.startswith(DICTIONARY_BYTES) else None
        plain = t is not None and dtype != np.bool_ and (pa.types.is_integer(t) or pa.types.is_floating(t))
        out.append((name, dtype, kernel_read, encoded, plain, empty_view(dtype)))
    return tuple(out)


def run_step(plan, b: pa.RecordBatch, offsets, counters, time_state=None, states=(), dicts=None,
              wm_rows: int | None = None) -> tuple:
    """Call the compiled step of ``plan`` on batch ``b``.

    ``counters``, the watermark/idle arrays and the state arrays are updated in place.
    """
    n = b.num_rows
    recipe = plan.arg_recipe
    if recipe is None:
        recipe = plan.arg_recipe = _arg_recipe(plan, b)
    handed = not isinstance(b, pa.RecordBatch)  # a boundary node's rows from the step before (StepRows)
    args = []
    for name, dtype, kernel_read, encoded, plain, empty in recipe:
        if encoded:  # (a boundary node's codes of this column's own dictionary pass as they are)
            dictionary = dicts[(plan.source, name)]
            codes = b.codes(name, dictionary) if handed else None
            args.extend(codes if codes is not None else map(readonly, dictionary.encode(b.column(name))))
        elif name.startswith(DICTIONARY_BYTES):  # a dictionary's bytes, after its column was encoded
            args.extend(map(readonly, dicts[(plan.source, name[1:])].store()))
        elif handed and (kernel_read or n >= EAGER_ROWS) and (arrays := b.view(name, dtype)) is not None:
            args += arrays  # numbers the step before computed: no Arrow in between
        elif kernel_read or n >= EAGER_ROWS:
            col = b.column(name)
            if plain and not col.null_count:  # the common case: a zero-copy view, no mask
                args += (col.to_numpy(zero_copy_only=True), NO_NULLS)
            else:
                args.extend(column_view(col, dtype))
        else:  # only sinks want it, and small batches are gathered by Arrow
            args += (empty, NO_NULLS)
    return call_step(plan, n, args, offsets, counters, time_state, states, wm_rows)


def call_step(plan, n: int, args: list, offsets, counters, time_state, states, wm_rows) -> tuple:
    """Call ``plan``'s compiled step on its arguments ``args`` (column views), after reserving room in ``states``."""
    if time_state is None:  # stateless slices in worker threads
        time_state = (np.full(len(offsets) - 1, WATERMARK_MIN, np.int64), np.zeros(len(offsets) - 1, np.bool_))
    state_args = []
    by_id = dict(zip(plan.stateful_ids, states)) if states else {}
    for nid, state in by_id.items():
        # new entries per call <= rows reaching the node: copies of source rows
        # plus what stateful nodes upstream can emit (windows: their open
        # entries; keyed kernels: their rows and capped timer firings)
        emitted = sum(by_id[u].max_emit(n * plan.max_paths) for u in plan.upstream_stateful[nid])
        state.reserve(n * plan.max_paths + emitted)
        state_args.extend(state.arrays())
    if plan.derived:
        state_args.append(wm_rows)
    return plan.step(n, *args, offsets, plan.settings, counters, *time_state, *state_args)
