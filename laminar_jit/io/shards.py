"""A source a partitioned run read as shards, continued shard by shard (by a run of another layout).

A partitioned run's readers each read one shard of every source
(:meth:`Source.split <laminar_jit.io.Source.split>`), so where they stopped
is a position per shard, not a prefix of the source. A run that takes the
job's checkpoint over in one process (or at another number of partitions)
reads the rest of each shard: :class:`ShardsRest`. Checkpoints keep the
shards' positions as ``"<source>@shard<i>/<n>"`` entries next to the
source's total.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .sources import Source

__all__ = ["SHARD_POSITION", "ShardsRest", "resume_shards", "shard_positions", "split_position"]


#: Checkpoint position key of shard ``i`` of ``n`` of a source read as shards (next to the source's total).
SHARD_POSITION = "{}@shard{}/{}"


def shard_positions(positions: dict, source: str) -> list[int] | None:
    """The positions of ``source``'s shards in a checkpoint's ``positions``, or None when it was read whole."""
    prefix = f"{source}@shard"
    n = next((int(key.rsplit("/", 1)[1]) for key in positions if key.startswith(prefix)), None)
    if n is None:
        return None
    return [int(positions[SHARD_POSITION.format(source, i, n)]) for i in range(n)]


def split_position(source: Source, position: int, shards: int) -> list[int] | None:
    """Each shard's position (of ``source.split(shards)``) where the whole source is at ``position``, or None.

    The shards deal the source's parts round robin, in order, so the rows
    before ``position`` are, in every shard, the rows before some point:
    shard ``i`` has read the parts ``i, i + shards, ...`` that end before
    ``position`` and the part that holds it up to it. None when the source
    deals no parts (:meth:`Source.part_rows`).
    """
    rows = source.part_rows()
    if rows is None:
        return None
    ends = np.cumsum(np.asarray(rows, np.int64))
    read = np.clip(position - (ends - np.asarray(rows, np.int64)), 0, rows)  # of each part
    return [int(read[i::shards].sum()) for i in range(shards)]


def resume_shards(source: Source, name: str, positions: dict, event_time: str | None) -> Source:
    """``source`` itself, or, when ``positions`` hold its shards' (a partitioned run read it), a :class:`ShardsRest`."""
    shards = shard_positions(positions, name)
    return source if shards is None else ShardsRest(source, shards, event_time)


class ShardsRest(Source):
    """The rest of a source that a partitioned run read as ``len(positions)`` shards (``Source.split``).

    Shard ``i`` continues from ``positions[i]``. Each batch comes from the
    shard furthest behind in event time (the least of the largest event
    times of the shards' last batches; shards not read yet first), so the
    shards' rows meet about as the partitioned run's readers, whose
    watermark was the least of theirs, read them. Positions stay row totals
    for the run (``position_after`` adds the batch's rows); the shards' own
    positions are :meth:`shard_positions`, which the runner saves in every
    checkpoint next to the total.

    Parameters
    ----------
    source : Source
    positions : list of int
    event_time : str or None
        The source's event-time column.
    """

    def __init__(self, source: Source, positions: list[int], event_time: str | None) -> None:
        self.schema = source.schema
        self.source = source
        self.shards = source.split(len(positions))
        self.at = [int(p) for p in positions]
        self.event_time = event_time
        self._taken = -1

    def describe(self) -> str:
        return f"{self.source.describe()} continued as {len(self.shards)} shards"

    @property
    def total_rows(self) -> int | None:
        """The source's rows (the run's positions are totals over its shards)."""
        return self.source.total_rows

    def batches(self, start_row: int = 0) -> Iterator[pa.RecordBatch]:
        """The shards' remaining batches, the shard furthest behind in event time first (``start_row``: unused)."""
        iters = [iter(shard.batches(at)) for shard, at in zip(self.shards, self.at)]
        latest = [np.iinfo(np.int64).min] * len(iters)
        live = list(range(len(iters)))
        while live:
            i = min(live, key=latest.__getitem__)
            batch = next(iters[i], None)
            if batch is None:
                live.remove(i)
                continue
            if self.event_time is not None and batch.num_rows:
                latest[i] = max(latest[i], int(pc.max(batch.column(self.event_time).cast(pa.int64())).as_py()))
            self._taken = i
            yield batch

    def position_after(self, position: int, batch: pa.RecordBatch) -> int:
        """The run's total grows by the batch's rows; the shard that gave it moves on."""
        i = self._taken
        self.at[i] = self.shards[i].position_after(self.at[i], batch)
        return position + batch.num_rows

    def shard_positions(self, name: str) -> dict[str, int]:
        """``SHARD_POSITION`` entries of this source (called ``name`` in the DAG): where each shard is."""
        return {SHARD_POSITION.format(name, i, len(self.at)): at for i, at in enumerate(self.at)}

    def checkpoint_committed(self, position: int) -> None:
        for shard, at in zip(self.shards, self.at):
            shard.checkpoint_committed(at)
