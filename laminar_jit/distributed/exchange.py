"""The exchange: cut a record batch into one batch per partition by key hash.

Numeric, boolean and temporal key columns are read as int64 values, string
columns as their offset and data buffers (no per-row Python), hashed by the
kernels of :mod:`laminar_jit.kernels.partitioning`, and the rows of each
partition are gathered with one Arrow ``take``. Rows keep their arrival order
within a partition, so order-sensitive operators (``first``/``last``, Dedup,
TopN ties) see the same sequence of their keys' rows as a single process.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..kernels.partitioning import HASH_SEED, hash_bytes, hash_int64, mix_into, split_by_partition

__all__ = ["key_hash", "partition_batch"]


def _valid(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), np.bool_)
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _column_hash(arr: pa.Array) -> np.ndarray:
    """uint64 hash of each value of one key column (see the kernels' module for the rules)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        values = _column_hash(arr.dictionary)
        indices = pc.fill_null(arr.indices, 0).cast(pa.int64()).to_numpy()
        out = values[indices]
        if arr.null_count:
            out[~_valid(arr)] = _column_hash(pa.nulls(1, pa.int64()))[0]
        return out
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        arr = arr.cast(pa.large_string() if pa.types.is_string_view(t) else pa.large_binary())
        t = arr.type
    if pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        width = np.int64 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else np.int32
        _, offsets_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(offsets_buf, width, len(arr) + 1, arr.offset * np.dtype(width).itemsize)
        data = (np.frombuffer(data_buf, np.uint8) if data_buf is not None and data_buf.size
                else np.zeros(1, np.uint8))
        return hash_bytes(offsets, data, _valid(arr))
    if pa.types.is_boolean(t):
        arr = arr.cast(pa.int8())
    elif pa.types.is_temporal(t):
        arr = arr.view(pa.int64() if t.bit_width == 64 else pa.int32())
    values = pc.fill_null(arr, 0).cast(pa.int64()).to_numpy()
    return hash_int64(values, _valid(arr))


def key_hash(batch: pa.RecordBatch, keys: tuple[str, ...]) -> np.ndarray:
    """uint64 hash per row of ``batch`` over the ``keys`` columns (in order)."""
    acc = np.full(batch.num_rows, HASH_SEED, np.uint64)
    for k in keys:
        mix_into(acc, _column_hash(batch.column(k)))
    return acc


def partition_batch(batch: pa.RecordBatch, keys: tuple[str, ...], partitions: int) -> list:
    """Split ``batch`` into ``partitions`` batches by the hash of its ``keys``.

    Returns
    -------
    list of pyarrow.RecordBatch or None
        Entry ``p`` holds partition ``p``'s rows in arrival order, or None when
        it has none. With one partition (or no keys) the batch goes to
        partition 0 untouched.
    """
    if partitions == 1 or not keys:
        return [batch if batch.num_rows else None] + [None] * (partitions - 1)
    if batch.num_rows == 0:
        return [None] * partitions
    order, bounds = split_by_partition(key_hash(batch, keys), partitions)
    out = []
    for p in range(partitions):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        if lo == hi:
            out.append(None)
        elif hi - lo == batch.num_rows:
            out.append(batch)
        else:
            out.append(batch.take(pa.array(order[lo:hi])))
    return out
