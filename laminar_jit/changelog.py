"""Updating results: changelog streams and applying them.

A stream is a **changelog** when its rows carry an ``op`` column of type
int8 holding Flink's ``RowKind``: ``+I`` insert (0), ``-U`` the row before an
update (1), ``+U`` the row after it (2), ``-D`` delete (3). Every other
stream is append-only: each row, once emitted, is final.

Changelogs come from sources whose schema has such a column (e.g.
``lj.io.PostgresCdcSource``) and from updating operators
(:class:`~laminar_jit.GroupAggregate`). Filters, maps and projections pass
the ``op`` column through unchanged; an operator that can only take
append-only rows (windows, joins, Dedup, TopN, keyed kernels) rejects a
changelog input at ``build()``.

A changelog is read as a multiset of rows: ``+I``/``+U`` add a row, ``-U``/
``-D`` take one equal row away. :func:`apply_changelog` does that and gives
the current result.
"""

from __future__ import annotations

import enum

import numpy as np
import pyarrow as pa

__all__ = ["OP_COLUMN", "RowKind", "apply_changelog", "is_changelog"]

#: The column that makes a stream a changelog (int8 :class:`RowKind` codes).
OP_COLUMN = "op"


class RowKind(enum.IntEnum):
    """What a changelog row does, as the int8 code of the ``op`` column (Flink's ``RowKind``)."""

    INSERT = 0
    UPDATE_BEFORE = 1
    UPDATE_AFTER = 2
    DELETE = 3

    @property
    def short(self) -> str:
        """Flink's short name: ``+I``, ``-U``, ``+U`` or ``-D``."""
        return ("+I", "-U", "+U", "-D")[self]


def is_changelog(schema: pa.Schema) -> bool:
    """Whether rows of ``schema`` form a changelog: they have an int8 ``op`` column."""
    i = schema.get_field_index(OP_COLUMN)
    return i >= 0 and schema.field(i).type == pa.int8()


def apply_changelog(changes: pa.Table | pa.RecordBatch) -> pa.Table:
    """The result a changelog describes: its rows applied in order, without the ``op`` column.

    ``+I`` and ``+U`` rows add a row; ``-U`` and ``-D`` rows take away one row
    equal to them in every column. A row that was added ``k`` more times than
    taken away appears ``k`` times. Rows come in the order of their last
    addition. A retraction of a row that is not there is ignored.

    Parameters
    ----------
    changes : pyarrow.Table or pyarrow.RecordBatch
        Rows with an int8 ``op`` column (:class:`RowKind`). A table without
        one is append-only and comes back unchanged.

    Returns
    -------
    pyarrow.Table

    Examples
    --------
    >>> import pyarrow as pa
    >>> import laminar_jit as lj
    >>> log = pa.table({"k": [1, 1, 1], "n": [1, 1, 2], "op": pa.array([0, 1, 2], pa.int8())})
    >>> lj.apply_changelog(log).to_pylist()
    [{'k': 1, 'n': 2}]
    """
    table = changes if isinstance(changes, pa.Table) else pa.Table.from_batches([changes])
    if not is_changelog(table.schema):
        return table
    ops = table.column(OP_COLUMN).to_numpy(zero_copy_only=False)
    if ops.size and (ops.min() < 0 or ops.max() > 3):
        bad = int(ops[(ops < 0) | (ops > 3)][0])
        raise ValueError(f"apply_changelog: op {bad} is not a RowKind code (0 +I, 1 -U, 2 +U, 3 -D)")
    data = table.drop_columns([OP_COLUMN])
    if not data.num_columns:
        raise ValueError("apply_changelog: a changelog needs columns besides 'op'")
    names = data.column_names
    # rows equal in every column are one group (nulls equal nulls, as in GROUP BY)
    sign = np.where((ops == RowKind.INSERT) | (ops == RowKind.UPDATE_AFTER), 1, -1)
    groups = data.append_column("__sign", pa.array(sign, pa.int64()))
    groups = groups.append_column("__pos", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    summary = groups.group_by(names, use_threads=False).aggregate([("__sign", "list"), ("__pos", "list")])
    # a retraction only takes away a row that is there: replay each group's signs in order
    signs = summary.column("__sign_list").combine_chunks()
    positions = summary.column("__pos_list").combine_chunks()
    counts, last = _net_rows(signs.offsets.to_numpy(), signs.values.to_numpy(), positions.values.to_numpy())
    keep = np.flatnonzero(counts > 0)
    keep = keep[np.argsort(last[keep], kind="stable")]
    rows = np.repeat(keep, counts[keep])
    return summary.select(names).take(pa.array(rows, pa.int64()))


def _net_rows(offsets: np.ndarray, signs: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group: rows left after its changes in order (never below 0), and its last addition's position."""
    from .kernels.changelog import net_rows

    counts = np.zeros(offsets.size - 1, np.int64)
    last = np.full(offsets.size - 1, -1, np.int64)
    net_rows(offsets.astype(np.int64), signs.astype(np.int64), positions.astype(np.int64), counts, last)
    return counts, last

