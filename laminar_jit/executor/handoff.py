"""A boundary node's rows handed from one compiled step to the next as numpy arrays.

A join (or keyed kernel, or window of another key) that feeds a stateful
operator ends its step: its rows become the next step's input batch (see
:func:`~laminar_jit.executor.steps.boundary_nodes`). The step that emitted the
rows already gathered their numeric columns into numpy arrays, and the next
step reads numeric columns as numpy arrays, so :class:`StepRows` passes those
arrays on as they are. A column becomes Arrow only when something asks for it:
a string column the next step encodes, a sink that gathers source columns, an
``ArrowMap``, an operator that works between steps.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .boundary import NO_NULLS, SinkBuffer, gathered_column, readonly

__all__ = ["StepRows"]


class StepRows:
    """The rows one step emitted at a boundary node, for the next step.

    Reads like the part of a ``pa.RecordBatch`` that steps and sinks use
    (:attr:`num_rows`, :attr:`schema`, :meth:`column`); :meth:`view` gives a
    numeric column as the arrays the emitting step computed, without Arrow.

    Parameters
    ----------
    layout : SinkLayout
        Where the boundary node's columns are in ``result``.
    dictionaries : dict
        The executor's string dictionaries, to decode columns held as codes.
    batch : pa.RecordBatch
        The batch the emitting step ran on (its source columns are gathered from it).
    result : tuple
        The emitting step's result.
    """

    __slots__ = ("layout", "dictionaries", "batch", "result", "num_rows", "_columns", "_batch")

    def __init__(self, layout, dictionaries, batch: pa.RecordBatch, result: tuple):
        self.layout = layout
        self.dictionaries = dictionaries
        self.batch = batch
        self.result = result
        self.num_rows = len(result[layout.offset])
        self._columns: dict[str, pa.Array] = {}
        self._batch: pa.RecordBatch | None = None

    @property
    def schema(self) -> pa.Schema:
        """The boundary node's output schema."""
        return self.layout.schema

    def view(self, name: str, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
        """Column ``name`` as read-only ``dtype`` values and validity (empty: no nulls), straight from the
        emitting step's arrays; None when the step did not compute it as numbers (strings, source columns)."""
        _, col = self.layout.by_name[name]
        if not self._computed(col):
            return None
        values, valid = self.result[col.pos], self.result[col.pos + 1]
        if values.dtype != dtype:  # e.g. an int32 column held as int64 in the join's state
            values = values.astype(dtype)
        if valid.size and valid.all():
            valid = NO_NULLS
        return readonly(values), readonly(valid)

    def column(self, name: str) -> pa.Array:
        """Column ``name`` as an Arrow array (made once, on first use)."""
        if self._batch is not None:
            return self._batch.column(name)
        got = self._columns.get(name)
        if got is None:
            got = self._columns[name] = gathered_column(self.dictionaries, self.batch, self.result, self.layout,
                                                         *self.layout.by_name[name])
        return got

    def arrow(self) -> pa.RecordBatch:
        """All the rows as one RecordBatch (made once, on first use)."""
        if self._batch is None:
            if len(self._columns) == len(self.schema):
                self._batch = pa.RecordBatch.from_arrays([self._columns[f.name] for f in self.schema],
                                                         schema=self.schema)
            else:
                self._batch = SinkBuffer(self.layout, self.dictionaries).materialize(self.batch, self.result)
        return self._batch

    def _computed(self, col) -> bool:
        """Whether the emitting step computed column ``col``'s values (a derived column, or a source column it
        gathered: not when its rows are the batch's own or a small batch's, which the boundary takes from it)."""
        return col.kind == "der" or (col.kind == "src" and not self.result[self.layout.offset + 1]
                                     and len(self.result[col.pos]) == self.num_rows)
