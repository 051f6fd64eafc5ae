"""Hash-partitioning kernels: which partition owns each row's key.

A row's partition is a 64-bit hash of its key columns modulo the number of
partitions. The hash depends only on the key's *value* — integers of every
width, booleans and temporal columns hash as their int64 value, strings as
their UTF-8 bytes (plain, large or dictionary-encoded alike) — so the two
sides of a join land on the same partition even when their key columns have
different Arrow types. Nulls hash to one fixed value, so a null key forms one
group on one partition.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["hash_bytes", "int64_key_groups", "mix_gather", "mix_int64", "rows_of_shard", "split_by_partition",
           "split_by_shard"]

#: Seed of the row hash before the first key column.
HASH_SEED = np.uint64(0x9E3779B97F4A7C15)
#: What a null contributes to the hash (any fixed value works: nulls only need to agree).
NULL_HASH = np.uint64(0x5BD1E9955BD1E995)


@njit
def _mix(z):
    """splitmix64 finalizer: every input bit reaches every output bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit
def mix_int64(acc, values, valid):
    """Fold one integer key column into the row hashes (in place).

    ``valid`` is the column's validity as bools, or empty when it has no nulls.
    """
    has_nulls = valid.shape[0] > 0
    for i in range(acc.shape[0]):
        h = NULL_HASH if has_nulls and not valid[i] else _mix(np.uint64(values[i]))
        acc[i] = _mix(acc[i] * np.uint64(31) + h)


@njit
def mix_gather(acc, value_hash, indices, valid):
    """Fold a dictionary-encoded column in: ``value_hash[indices[i]]`` (nulls as in :func:`mix_int64`)."""
    has_nulls = valid.shape[0] > 0
    for i in range(acc.shape[0]):
        h = NULL_HASH if has_nulls and not valid[i] else value_hash[indices[i]]
        acc[i] = _mix(acc[i] * np.uint64(31) + h)


@njit
def hash_bytes(offsets, data, valid):
    """Hash of each string ``data[offsets[i]:offsets[i + 1]]`` (FNV-1a, then mixed); nulls as above."""
    n = offsets.shape[0] - 1
    has_nulls = valid.shape[0] > 0
    out = np.empty(n, np.uint64)
    for i in range(n):
        if has_nulls and not valid[i]:
            out[i] = NULL_HASH
            continue
        h = np.uint64(0xCBF29CE484222325)
        for j in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(data[j])) * np.uint64(0x100000001B3)
        out[i] = _mix(h ^ np.uint64(offsets[i + 1] - offsets[i]))
    return out


@njit
def split_by_partition(row_hash, partitions):
    """Stable counting sort of rows by partition.

    A row's partition is ``((row_hash >> 32) * partitions) >> 32``: the high
    half of the hash scaled to ``[0, partitions)`` with a multiply instead of
    a 64-bit division (the hash is already mixed, so its high bits are as
    uniform as its remainder).

    Returns
    -------
    order : int64[n]
        Row indices grouped by partition, arrival order kept within each.
    bounds : int64[partitions + 1]
        Partition ``p`` owns ``order[bounds[p]:bounds[p + 1]]``.
    """
    return split_by_shard(row_hash, partitions, np.arange(partitions), partitions)


@njit
def split_by_shard(row_hash, groups, group_shard, shards):
    """Stable counting sort of rows by the shard that owns their key group.

    A row's key group is the high half of its hash scaled to ``[0, groups)``
    (as in :func:`split_by_partition`); ``group_shard[g]`` is the shard owning
    group ``g``.

    Returns
    -------
    order : int64[n]
        Row indices grouped by shard, arrival order kept within each.
    bounds : int64[shards + 1]
        Shard ``s`` owns ``order[bounds[s]:bounds[s + 1]]``.
    """
    n = row_hash.shape[0]
    shard = np.empty(n, np.int32)
    bounds = np.zeros(shards + 1, np.int64)
    g = np.uint64(groups)
    for i in range(n):
        s = group_shard[np.int64(((row_hash[i] >> np.uint64(32)) * g) >> np.uint64(32))]
        shard[i] = s
        bounds[s + 1] += 1
    for s in range(shards):
        bounds[s + 1] += bounds[s]
    fill = bounds[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        s = shard[i]
        order[fill[s]] = i
        fill[s] += 1
    return order, bounds


@njit
def int64_key_groups(values, valid, shift):
    """The key group of each row of one integer key column: its row hash (as :func:`mix_int64` folds it into
    a fresh hash) shifted right by ``shift``, one byte a row.

    For key shards, which need only each row's group (at most 256): one pass
    over the column, where the row hash would be written and read back.
    """
    has_nulls = valid.shape[0] > 0
    out = np.empty(values.shape[0], np.uint8)
    for i in range(values.shape[0]):
        h = NULL_HASH if has_nulls and not valid[i] else _mix(np.uint64(values[i]))
        out[i] = _mix(HASH_SEED * np.uint64(31) + h) >> shift
    return out


@njit
def rows_of_shard(row_group, group_shard, shard):
    """Positions of the rows (ascending, int32: a step's selection) whose key group, ``row_group`` (one byte a
    row), ``shard`` owns."""
    n = row_group.shape[0]
    out = np.empty(n, np.int32)
    m = 0
    for i in range(n):  # branch-free: always write, advance on a match
        out[m] = i
        m += 1 if group_shard[row_group[i]] == shard else 0
    return out[:m]
