"""Hash of a record batch's key columns, per row (what picks a row's partition or key shard).

Numeric, boolean and temporal key columns are read as int64 values, string
columns as their offset and data buffers (no per-row Python), and hashed by
the kernels of :mod:`laminar_jit.kernels.partitioning`: the hash depends only
on the key's value, so both sides of a join agree.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..kernels.partitioning import HASH_SEED, hash_bytes, int64_key_groups, mix_gather, mix_int64

__all__ = ["key_groups", "key_hash", "mix_column"]


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


def mix_column(acc: np.ndarray, arr: pa.Array) -> None:
    """Fold one key column's value hashes into ``acc`` (see the kernels' module for the rules)."""
    t = arr.type
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        arr = arr.cast(pa.large_string() if pa.types.is_string_view(t) else pa.large_binary())
        t = arr.type
    if pa.types.is_dictionary(t):
        dictionary = arr.dictionary
        if not _is_text(dictionary.type):  # integer dictionaries: hash the decoded values
            mix_column(acc, arr.dictionary_decode())
            return
        indices = pc.fill_null(arr.indices, 0).to_numpy()
        mix_gather(acc, _text_hash(dictionary), indices, _valid(arr))
        return
    if _is_text(t):
        mix_gather(acc, _text_hash(arr), np.arange(len(arr)), _NO_NULLS)
        return
    mix_int64(acc, *_integers(arr))


def _integers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """An integer, boolean or temporal column as the integers its values hash as, and its validity."""
    t = arr.type
    if pa.types.is_boolean(t):
        arr = arr.cast(pa.int8())
    elif pa.types.is_temporal(t):
        arr = arr.view(pa.int64() if t.bit_width == 64 else pa.int32())
    if arr.null_count:
        return pc.fill_null(arr, 0).to_numpy(), _valid(arr)
    return arr.to_numpy(zero_copy_only=False), _NO_NULLS


def key_hash(batch: pa.RecordBatch, keys: tuple[str, ...]) -> np.ndarray:
    """uint64 hash per row of ``batch`` over the ``keys`` columns (in order)."""
    acc = np.full(batch.num_rows, HASH_SEED, np.uint64)
    for k in keys:
        mix_column(acc, batch.column(k))
    return acc


def key_groups(batch: pa.RecordBatch, keys: tuple[str, ...], bits: int) -> np.ndarray:
    """The top ``bits`` (at most 8) of :func:`key_hash` per row, as uint8: each row's key group.

    One integer key column (the usual shard key) is hashed straight into
    groups; other keys through the row hash.
    """
    if len(keys) == 1:
        arr = batch.column(keys[0])
        t = arr.type
        if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_temporal(t):
            return int64_key_groups(*_integers(arr), np.uint64(64 - bits))
    return (key_hash(batch, keys) >> np.uint64(64 - bits)).astype(np.uint8)
