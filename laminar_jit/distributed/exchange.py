"""The exchange: cut a record batch into one batch per partition by key hash.

Rows are hashed by :func:`laminar_jit.executor.keyhash.key_hash` and the
rows of each partition are gathered with one Arrow ``take``. Rows keep their
arrival order within a partition, so order-sensitive operators (``first``/``last``, Dedup,
TopN ties) see the sequence of their keys' rows a single process would, as long as
each source is read by one reader; rows from readers of several shards of one
source meet in the order they arrive.
"""

from __future__ import annotations

import pyarrow as pa

from ..executor.keyhash import key_hash
from ..kernels.partitioning import split_by_partition

__all__ = ["Outbox", "key_hash", "partition_batch"]


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
