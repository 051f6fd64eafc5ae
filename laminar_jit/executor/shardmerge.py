"""Key shards' output rows merged into one executor's order.

Each shard's step emits its rows in the engine's order; :func:`plan_merge`
works out, for one sink or boundary node, where every shard's rows go in one
executor's order (the destinations, :mod:`~laminar_jit.kernels.merging`) and
returns a :class:`Merge`, whose jobs copy them there (:func:`run_placements`:
in the shards' threads when the merge is large).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..kernels.merging import merge_cuts, merge_positions, merge_shards, merge_span, place, take_range

__all__ = ["Merge", "PARALLEL_PLACE_ROWS", "PART_COPY_SHARDS", "place_all", "plan_merge", "run_placements"]

#: Merged outputs of a batch with at least this many rows are merged and copied into place by the shards'
#: threads: a merge is cut into a part per thread and each thread works out its part's destinations (and
#: copies the part's rows, up to PART_COPY_SHARDS shards); below this, the calling thread does it all.
PARALLEL_PLACE_ROWS = 65_536
#: Up to this many shards, the thread that works out a part of a merge also copies the part's rows of every
#: shard (shards x shards copy calls per column); more shards copy their own rows after every part is done.
PART_COPY_SHARDS = 8
_INT64_MIN = np.iinfo(np.int64).min


def plan_merge(how: tuple, layout, b: pa.RecordBatch, results: list[tuple], columns: dict):
    """Where each shard's rows of one sink go in the merged output (one executor's order), or None (no rows).

    ``how`` is the sink's entry of :attr:`.shardplan.ShardPlan.merge`, ``results`` the shards' step results,
    ``columns`` the batch's column arrays by name (the rows a sink passes on are taken from them).
    """
    off = layout.offset
    if not any(result[off].size for result in results):
        return None
    offsets = np.zeros(len(results) + 1, np.int64)
    offsets[1:] = np.cumsum([result[off].size for result in results])
    bounds = np.stack([r[off + 1] for r in results]) + offsets[:-1, None]
    if how[0] == "rows":  # input rows passed on: by their position in the batch
        rows, dest = merge_positions(np.concatenate([result[off] for result in results]), b.num_rows)
    elif how[0] == "one":  # a stage without a key after an exchange: shard 0's rows, the others have none
        rows = np.concatenate([result[off] for result in results]).astype(np.int64, copy=False)
        dest = np.arange(rows.size, dtype=np.int64)
    elif how[0] == "changes":  # a changelog: piece by piece, each shard's changes in its own order
        same = np.zeros(offsets[-1], np.int64)
        dest = merge_shards(same, same, _NO_ROWS, bounds, False, False)
        rows = None
    elif how[0] == "arrivals":  # a join's pairs: by where the row that emitted them arrived
        arrived = np.concatenate([result[off] for result in results])
        # rows of one position: a keyed kernel's timers by time, a join's settled rows by time and arrival
        ties = [np.concatenate([result[pos] for result in results]) for pos in layout.ties]
        middle, minor = (ties + [arrived, _NO_ROWS])[:2]
        return _sorted_merge(layout, results, (arrived, middle, minor, bounds, len(ties) > 0, len(ties) > 1),
                             offsets, columns)
    else:
        order = [_window_order(layout, result, how, s) for s, result in enumerate(results)]
        major, middle, minor = (np.concatenate(k) for k in zip(*order))
        return _sorted_merge(layout, results, (major, middle, minor, bounds, True, how[3] is not None),
                             offsets, columns)
    return Merge(layout, results, dest, offsets, rows, columns, len(results))


def _sorted_merge(layout, results: list, by: tuple, offsets: np.ndarray, columns: dict):
    """A merge of the shards' sorted rows (:func:`~laminar_jit.kernels.merging.merge_shards`'s arguments
    ``by``). A merge of many rows is cut into a part per thread (:data:`PARALLEL_PLACE_ROWS`), each of
    whose rows' destinations a thread works out before the shards' threads copy their rows there."""
    total, k = int(offsets[-1]), len(results)
    if total < PARALLEL_PLACE_ROWS:
        return Merge(layout, results, merge_shards(*by), offsets, None, columns, k)
    cuts = merge_cuts(*by, k)
    dest = np.empty(total, np.int64)
    first = [[(merge_span, dest, *by, cuts[t], cuts[t + 1])] for t in range(k)]
    if k > PART_COPY_SHARDS:  # the copies wait for every part: each shard's thread copies its rows
        return Merge(layout, results, dest, offsets, None, columns, k, first=first)
    # each part's thread goes on to copy the part's rows of every shard (no second hand-over)
    spans = [[(s, int(cuts[t, s] - offsets[s]), int(cuts[t + 1, s] - offsets[s])) for s in range(k)]
             for t in range(k)]
    return Merge(layout, results, dest, offsets, None, columns, k, first=first, spans=spans)


def _window_order(layout, result, how, shard: int) -> tuple:
    """Sort keys of one window sink's rows: window end, key (the shard for composite keys), rank."""
    by_name = {f.name: col for f, col in zip(layout.schema, layout.columns)}
    m = result[layout.offset].size

    def raw(name):
        col = by_name[name]
        values, valid = result[col.pos], result[col.pos + 1]
        values = np.ascontiguousarray(values.astype(np.int64, copy=False))
        return np.where(valid, values, _INT64_MIN) if valid.size and not valid.all() else values

    _, end, key, rank = how
    return (raw(end), raw(key) if key is not None else np.full(m, shard, np.int64),
            raw(rank) if rank is not None else _NO_ROWS)


class Merge:
    """One sink's merged output of a batch: arrays to fill, and what each shard's thread copies where."""

    def __init__(self, layout, results: list, dest: np.ndarray, offsets: np.ndarray, rows, columns: dict,
                 shards: int, first: list | None = None, spans: list | None = None):
        self.layout = layout
        self.rows = rows  # rows passed on: their positions in the batch, in output order
        m = self.size = dest.size
        self.arrays: dict[int, tuple] = {}  # layout column index -> (values, validity or empty)
        #: Per thread: what it runs before any thread copies rows (working out a part of ``dest``), or None;
        #: with ``spans`` (per thread, the (shard, lo, hi) rows it copies), the thread's own copies follow it.
        self.first = None if spans else first
        jobs = [list(first[t]) if spans else [] for t in range(shards)]
        if spans is None:  # every shard's thread copies its rows
            spans = [[(s, 0, int(offsets[s + 1] - offsets[s]))] for s in range(shards)]
        dests = [dest[offsets[s]:offsets[s + 1]] for s in range(shards)]
        chunks = np.arange(shards + 1, dtype=np.int64) * m // shards  # rows taken from the batch: a range per thread
        for j, col in enumerate(layout.columns):
            if col.kind in ("der", "code"):
                values = np.empty(m, results[0][col.pos].dtype)
                # validity only where a shard has a null (aggregates carry it even when every row is valid;
                # the sink drops an all-valid one anyway): a tumbling window's sum and max, 40 % of the copies
                masked = any(r[col.pos + 1].size and not r[col.pos + 1].all() for r in results)
                valid = np.empty(m, np.bool_) if masked else _NO_NULLS
                self.arrays[j] = (values, valid)
                for t, span in enumerate(spans):
                    for s, lo, hi in span:
                        if hi > lo:
                            jobs[t].append((place, values, dests[s][lo:hi], results[s][col.pos][lo:hi]))
                            if masked:
                                v = results[s][col.pos + 1]
                                jobs[t].append((place, valid, dests[s][lo:hi],
                                                v[lo:hi] if v.size else np.ones(hi - lo, np.bool_)))
            elif col.kind == "src" and col.column in columns:
                src_values, src_valid = columns[col.column]
                values = np.empty(m, src_values.dtype)
                valid = np.empty(m, np.bool_) if src_valid.size else _NO_NULLS
                self.arrays[j] = (values, valid)
                for s in range(shards):
                    jobs[s].append((take_range, values, src_values, rows, chunks[s], chunks[s + 1]))
                    if src_valid.size:
                        jobs[s].append((take_range, valid, src_valid, rows, chunks[s], chunks[s + 1]))
        self.jobs = list(enumerate(jobs))

    def result(self) -> tuple:
        """The merged rows as a step's result in this sink's layout (after the shards placed them).

        The rows' positions in the batch (rows passed on) or their count, then
        each placed column's values and validity at the layout's positions; a
        source column the step does not receive gets no array, so the sink
        takes it from the batch by Arrow (:class:`~laminar_jit.executor.boundary.SinkBuffer`).
        """
        layout = self.layout
        rows = self.rows if self.rows is not None else np.arange(self.size, dtype=np.int64)
        width = max([layout.offset + 2] + [c.pos + 2 for c in layout.columns if c.kind != "take"])
        out = [_NO_ROWS] * width
        out[layout.offset], out[layout.offset + 1] = rows, False
        for j, col in enumerate(layout.columns):
            if j in self.arrays:
                out[col.pos], out[col.pos + 1] = self.arrays[j]
            elif col.kind == "src":
                out[col.pos], out[col.pos + 1] = _NO_ROWS, _NO_NULLS
        return tuple(out)


def run_placements(merges: list, shards: int, in_parallel=None) -> None:
    """Copy the rows of ``merges`` into place: with ``in_parallel`` (``KeyShards._in_parallel``) in the shards'
    threads when they are many (:data:`PARALLEL_PLACE_ROWS`), else in this thread.

    A merge of many shards is cut into parts: every thread works out a part's destinations, then the copies
    (of fewer shards, a part's thread copies the part's rows right after: in its jobs).
    """
    if not merges:
        return
    first = [[m.first[t] for m in merges if m.first and t < len(m.first)] for t in range(shards)]
    jobs = [[] for _ in range(shards)]
    for merge in merges:
        for s, job in merge.jobs:
            jobs[s].append(job)
    parallel = in_parallel is not None and sum(merge.size for merge in merges) >= PARALLEL_PLACE_ROWS
    for phase in ([first] if any(first) else []) + [jobs]:
        if parallel:
            in_parallel(place_all, phase)
        else:  # waking the shards' threads costs more than copying a few rows here
            for job in phase:
                place_all(job)


def place_all(jobs: list) -> None:
    """One thread's copies of rows into merged sinks' columns (see :class:`Merge`)."""
    for part in jobs:
        for fn, *args in part:
            fn(*args)


_NO_NULLS = np.zeros(0, np.bool_)
_NO_ROWS = np.zeros(0, np.int64)
