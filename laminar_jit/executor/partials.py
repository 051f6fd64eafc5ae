"""Two-phase windows without a key: the shards' results of one window combined into its one row.

Key shards run a tumbling or sliding window without a key in every shard,
each over its share of the batch's rows (:func:`.steps.two_phase`). When a
window fires, every shard that saw rows of it emits a row of partial
results; merged, those rows come by window end, shard after shard
(``("window", "window_end", None, None)``), and :func:`combine_partials`
folds each run of rows of one window end into one row, as one executor would
have emitted it. Counts and sums add; a minimum or maximum keeps the better
value, NaN sorting above every number as the aggregates do; a result is
null only when every shard's is.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["combine_partials"]


def combine_partials(rows: pa.RecordBatch, spec, pieces: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """One row per window of ``rows``: the shards' partial results of each window end combined.

    Parameters
    ----------
    rows : pyarrow.RecordBatch
        A window's merged results: by piece, then window end, then shard.
    spec : WindowSpec
        The window's settings (its aggregates' output names and kinds).
    pieces : numpy.ndarray
        int64, where each piece's rows start in ``rows`` (and their end):
        rows of one window end are combined within a piece only.

    Returns
    -------
    combined : pyarrow.RecordBatch
    pieces : numpy.ndarray
        Where each piece's rows start in ``combined``.
    """
    n = rows.num_rows
    if n < 2:
        return rows, pieces
    end = rows.column("window_end").cast(pa.int64()).to_numpy()
    starts = np.union1d(np.flatnonzero(end[1:] != end[:-1]) + 1, pieces[(pieces > 0) & (pieces < n)])
    starts = np.concatenate([[0], starts]).astype(np.int64)
    if starts.size == n:  # one row per window already
        return rows, pieces
    kinds = {name: agg.kind for name, agg in spec.aggs}
    columns = [_combined(col, kinds.get(field.name), starts) for field, col in zip(rows.schema, rows.columns)]
    return (pa.RecordBatch.from_arrays(columns, schema=rows.schema),
            np.searchsorted(starts, pieces, side="left").astype(np.int64))


def _combined(col: pa.Array, kind: str | None, starts: np.ndarray) -> pa.Array:
    """Column ``col`` reduced over the runs of rows beginning at ``starts``: by aggregate ``kind``, else its first
    value (the window's bounds, the same in every row of a run)."""
    if kind is None:
        return col.take(pa.array(starts))
    t = col.type
    # (booleans as int8, times as the integers they are stored as: date32 and time32 in 32 bits)
    numbers = (pa.int8() if pa.types.is_boolean(t) else (pa.int32() if t.bit_width == 32 else pa.int64())
               if pa.types.is_temporal(t) else t)
    values = col.cast(numbers) if numbers != t else col
    data = np.frombuffer(values.buffers()[1], numbers.to_pandas_dtype(), len(values),
                         values.offset * np.dtype(numbers.to_pandas_dtype()).itemsize)
    if values.null_count:
        valid = values.is_valid().to_numpy(zero_copy_only=False)
        any_valid = np.logical_or.reduceat(valid, starts)
    else:
        valid = any_valid = None
    if kind in ("count", "sum"):
        out = np.add.reduceat(data if valid is None else np.where(valid, data, 0), starts)
    elif pa.types.is_floating(numbers):  # NaN is above every number: min skips it, max keeps it
        fill = np.nan if kind == "min" else -np.inf
        out = (np.fmin if kind == "min" else np.maximum).reduceat(data if valid is None else np.where(valid, data, fill),
                                                                  starts)
    else:
        info = np.iinfo(data.dtype)
        fill = info.max if kind == "min" else info.min
        out = (np.minimum if kind == "min" else np.maximum).reduceat(
            data if valid is None else np.where(valid, data, fill), starts)
    out = pa.array(out, type=numbers, mask=None if any_valid is None or any_valid.all() else ~any_valid)
    return out.cast(t) if numbers != t else out
