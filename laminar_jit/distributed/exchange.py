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

from ..kernels.partitioning import HASH_SEED, hash_bytes, mix_gather, mix_int64, split_by_partition

__all__ = ["Outbox", "key_hash", "partition_batch"]


_NO_NULLS = np.zeros(0, np.bool_)


def _valid(arr: pa.Array) -> np.ndarray:
    """Validity as bools, or an empty array when there are no nulls (the kernels' convention)."""
    if arr.null_count == 0:
        return _NO_NULLS
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) \
        or pa.types.is_large_binary(t)


def _text_hash(arr: pa.Array) -> np.ndarray:
    """uint64 hash of each string of a (large) string/binary array, from its buffers."""
    width = np.int64 if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type) else np.int32
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, width, len(arr) + 1, arr.offset * np.dtype(width).itemsize)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None and data_buf.size else np.zeros(1, np.uint8)
    return hash_bytes(offsets, data, _valid(arr))


def _mix_column(acc: np.ndarray, arr: pa.Array) -> None:
    """Fold one key column's value hashes into ``acc`` (see the kernels' module for the rules)."""
    t = arr.type
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        arr = arr.cast(pa.large_string() if pa.types.is_string_view(t) else pa.large_binary())
        t = arr.type
    if pa.types.is_dictionary(t):
        dictionary = arr.dictionary
        if not _is_text(dictionary.type):  # integer dictionaries: hash the decoded values
            _mix_column(acc, arr.dictionary_decode())
            return
        indices = pc.fill_null(arr.indices, 0).to_numpy()
        mix_gather(acc, _text_hash(dictionary), indices, _valid(arr))
        return
    if _is_text(t):
        mix_gather(acc, _text_hash(arr), np.arange(len(arr)), _NO_NULLS)
        return
    if pa.types.is_boolean(t):
        arr = arr.cast(pa.int8())
    elif pa.types.is_temporal(t):
        arr = arr.view(pa.int64() if t.bit_width == 64 else pa.int32())
    if arr.null_count:
        values = pc.fill_null(arr, 0).to_numpy()
    else:
        values = arr.to_numpy(zero_copy_only=False)
    mix_int64(acc, values, _valid(arr))


def key_hash(batch: pa.RecordBatch, keys: tuple[str, ...]) -> np.ndarray:
    """uint64 hash per row of ``batch`` over the ``keys`` columns (in order)."""
    acc = np.full(batch.num_rows, HASH_SEED, np.uint64)
    for k in keys:
        _mix_column(acc, batch.column(k))
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
            out.append(batch.take(order[lo:hi]))
    return out


class Outbox:
    """Rows waiting to travel to each partition, sent in few large messages.

    A message through Ray's object store costs milliseconds whatever its
    size (an object is created, sealed and mapped by the receiver), so a
    reader collects each partition's pieces and sends them once they reach
    ``flush_bytes`` or at the end of a step. The watermark sent with them is
    the reader's watermark after the last of their rows.

    Parameters
    ----------
    partitions : int
    flush_bytes : int, default 8 MiB
    """

    def __init__(self, partitions: int, flush_bytes: int = 8 << 20):
        self.flush_bytes = flush_bytes
        self.items: list[list] = [[] for _ in range(partitions)]
        self.nbytes = [0] * partitions

    def add(self, p: int, stream: str, batch: pa.RecordBatch) -> bool:
        """Queue a piece for partition ``p``; True when its queue should be sent now."""
        self.items[p].append((stream, batch))
        self.nbytes[p] += batch.nbytes
        return self.nbytes[p] >= self.flush_bytes

    def take(self, p: int) -> list:
        """The queued ``(stream, batch)`` pieces of partition ``p`` (the queue is emptied)."""
        items, self.items[p], self.nbytes[p] = self.items[p], [], 0
        return items
