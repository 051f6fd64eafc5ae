"""Two-phase windows without a key: the shards' results of one window combined into its one row.

(A TopN without a key: the shards' best rows of a window ranked again, :func:`combine_topn`.)

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

__all__ = ["combine_partials", "combine_topn"]


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
    starts = _window_runs(rows, pieces)
    if starts.size == n:  # one row per window already
        return rows, pieces
    kinds = {name: agg.kind for name, agg in spec.aggs}
    columns = [_combined(col, kinds.get(field.name), starts) for field, col in zip(rows.schema, rows.columns)]
    return (pa.RecordBatch.from_arrays(columns, schema=rows.schema),
            np.searchsorted(starts, pieces, side="left").astype(np.int64))


def combine_topn(rows: pa.RecordBatch, spec, pieces: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """A TopN's rows of each window ranked over all shards: the shards' best rows of a window end combined.

    Each shard ranked its share of a window's rows and emitted its best
    ``n`` (and, with ``ties``, every row equal to its n-th best value), each
    with its arrival number (its place in the input, as every shard numbers
    rows) in the ``rank`` column. A row among the best ``n`` of all rows is
    among the best of its shard's, so ranking the shards' rows of a window
    again by ``by`` then arrival and keeping the best ``n`` (with ``ties``:
    every row with fewer than ``n`` strictly better, SQL ``rank() <= n``)
    gives one executor's rows, ranks and order (rank, then arrival).

    Parameters
    ----------
    rows : pyarrow.RecordBatch
        The TopN's merged rows: by piece, then window end, then shard.
    spec : WindowSpec
        The TopN's settings (``by``, ``topn``, ``ties``, ``descending``).
    pieces : numpy.ndarray
        int64, where each piece's rows start in ``rows`` (and their end):
        rows of one window end are ranked within a piece only.

    Returns
    -------
    combined : pyarrow.RecordBatch
    pieces : numpy.ndarray
        Where each piece's rows start in ``combined``.
    """
    n = rows.num_rows
    if n == 0:
        return rows, pieces
    starts = _window_runs(rows, pieces)
    run = np.repeat(np.arange(starts.size), np.diff(np.append(starts, n)))
    by = _numbers(rows.column(spec.by))  # (rows whose ``by`` is null or NaN are never ranked: none here)
    arrival = rows.column("rank").to_numpy()
    better = np.unique(by, return_inverse=True)[1].reshape(-1)  # the value's place among the values
    if spec.descending:
        better = -better
    order = np.lexsort((arrival, better, run))  # runs keep their places: only rows within a run move
    place = np.arange(n, dtype=np.int64)
    if spec.ties:  # 1 + the rows strictly better: where the run's rows of this value begin
        first = np.ones(n, np.bool_)
        first[1:] = (better[order][1:] != better[order][:-1]) | (run[1:] != run[:-1])
        rank = np.maximum.accumulate(np.where(first, place, 0)) - starts[run] + 1
    else:
        rank = place - starts[run] + 1
    keep = rank <= spec.topn
    kept = order[keep]
    out = rows.take(pa.array(kept))
    out = out.set_column(out.schema.get_field_index("rank"), out.schema.field("rank"),
                         pa.array(rank[keep], out.schema.field("rank").type))
    before = np.concatenate([[0], np.cumsum(keep)])
    return out, before[pieces].astype(np.int64)


def _window_runs(rows: pa.RecordBatch, pieces: np.ndarray) -> np.ndarray:
    """Where each run of rows of one window end starts (a run never crosses a piece's start), from 0."""
    n = rows.num_rows
    end = rows.column("window_end").cast(pa.int64()).to_numpy()
    starts = np.union1d(np.flatnonzero(end[1:] != end[:-1]) + 1, pieces[(pieces > 0) & (pieces < n)])
    return np.concatenate([[0], starts]).astype(np.int64)


def _number_type(t: pa.DataType) -> pa.DataType:
    """The numeric type a column's values are kept as: booleans as int8, times as the integers they are stored
    as (date32 and time32 in 32 bits), numbers as themselves."""
    if pa.types.is_boolean(t):
        return pa.int8()
    if pa.types.is_temporal(t):
        return pa.int32() if t.bit_width == 32 else pa.int64()
    return t


def _numbers(col: pa.Array) -> np.ndarray:
    """A numeric, boolean or temporal column's values as numbers that order as they do (nulls: zero)."""
    numbers = _number_type(col.type)
    return (col.cast(numbers) if numbers != col.type else col).fill_null(0).to_numpy()


def _combined(col: pa.Array, kind: str | None, starts: np.ndarray) -> pa.Array:
    """Column ``col`` reduced over the runs of rows beginning at ``starts``: by aggregate ``kind``, else its first
    value (the window's bounds, the same in every row of a run)."""
    if kind is None:
        return col.take(pa.array(starts))
    t = col.type
    numbers = _number_type(t)
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
