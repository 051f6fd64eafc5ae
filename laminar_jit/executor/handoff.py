"""A boundary node's rows handed from one compiled step to the next as numpy arrays.

A join (or keyed kernel, or window of another key) that feeds a stateful
operator ends its step: its rows become the next step's input batch (see
:func:`~laminar_jit.executor.steps.boundary_nodes`). The step that emitted the
rows already gathered their numeric columns into numpy arrays, and the next
step reads numeric columns as numpy arrays, so :class:`StepRows` passes those
arrays on as they are. A column becomes Arrow only when something asks for it:
a string column the next step encodes, a sink that gathers source columns, an
``ArrowMap``, an operator that works between steps.

A string column the emitting step holds as dictionary codes reaches the next
step as those codes: the executor gives the column the next step reads the
emitting column's dictionary (:func:`codes_passed_on`), so nothing is decoded
and encoded again between the two (Nexmark q9's joined auctions: two string
columns of 8 M rows).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..state.dictionary import StringDictionary
from .boundary import NO_NULLS, SinkBuffer, gathered_column, readonly
from .state import linked_to

__all__ = ["StepRows", "codes_passed_on", "new_dictionaries"]


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

    def codes(self, name: str, dictionary) -> tuple[np.ndarray, np.ndarray] | None:
        """String column ``name`` as read-only codes of ``dictionary`` and validity, as
        :meth:`~laminar_jit.state.StringDictionary.encode` gives them (-1 and an empty validity where it
        has no nulls), straight from the emitting step; None unless the step holds the column as codes of
        that very dictionary."""
        _, col = self.layout.by_name[name]
        if col.kind != "code" or self.dictionaries.get(col.dictionary) is not dictionary:
            return None
        values, valid = self.result[col.pos].astype(np.int64, copy=False), self.result[col.pos + 1]
        if valid.size and not valid.all():
            return readonly(np.where(valid, values, -1)), readonly(valid)
        return readonly(values), NO_NULLS

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


def codes_passed_on(dag, plans) -> list[tuple[tuple, tuple]]:
    """Links of dictionaries (see :attr:`~laminar_jit.executor.state.ExecutorState.dictionary_links`) that
    let a boundary node's string columns reach the next step as codes: per string column a step emits as
    codes at a boundary node (:class:`~.core.SinkColumn` ``"code"``) and the node's own step encodes, the
    emitting column's dictionary and the encoded one. Not for a node that works between steps (its own
    output reaches the next step) or a column an ``ArrowMap`` of the next step computes."""
    steps = {plan.source: plan for plan in plans}
    links = []
    for plan in plans:
        for layout in plan.boundaries or ():
            after = steps.get(layout.sink)
            if after is None or getattr(dag.nodes[layout.node_id].op, "between_steps", False):
                continue
            for name, _, _, encoded in after.args:
                if encoded and name not in after.arrow_maps and name in layout.by_name:
                    col = layout.by_name[name][1]
                    if col.kind == "code" and (col.dictionary, (after.source, name)) not in links:
                        links.append((col.dictionary, (after.source, name)))
    return links


def new_dictionaries(dag, plans, links: list) -> dict:
    """An empty dictionary per encoded string column of ``plans`` (per ``(source, column)``), ``carried`` when only
    joins and rankings keep its codes (``plan.carried_strings``) and those of every column it is linked to
    (``links``: :func:`codes_passed_on` and the plans' shared join keys)."""
    columns = {(plan.source, name): plan for plan in plans for name, _, _, encoded in plan.args if encoded}
    carried = {key: key[1] in plan.carried_strings for key, plan in columns.items()}
    shared = linked_to(columns, links)
    for key, first in shared.items():  # a set of linked columns is carried if each one is
        carried[first] = carried[first] and carried[key]
    return {key: _new_dictionary(dag, plan, key[1], carried[shared.get(key, key)]) for key, plan in columns.items()}


def _new_dictionary(dag, plan, column: str, carried: bool) -> StringDictionary:
    """An empty dictionary for the encoded string ``column`` of ``plan``'s source (a categorical's value type).

    ``column`` is a source column or a string an ``ArrowMap`` computes from it (named like its argument).
    """
    computed = plan.arrow_maps.get(column)
    t = computed[4] if computed is not None else dag.node(plan.source).schema.field(column).type
    t = t.value_type if pa.types.is_dictionary(t) else t
    return StringDictionary(t, carried=carried)
