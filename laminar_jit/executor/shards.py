"""Key shards: one DAG run by ``N`` executors in threads, each owning the keys of its key groups.

``DagExecutor(dag, parallelism=N)`` keeps ``N`` shards, each the operator
state of the keys in its key groups, and a key shard's plan of each source:
the DAG's step, reading a selection of the batch's rows (``shard_rows``)
where the plain step reads all of them. Per batch it

1. works out on the *whole* batch what depends on every row: the cut points
   of the steps (window pieces, sliding windows' due points), the codes of
   string columns in the shared dictionaries (codes by first appearance at
   the source, as in one executor) and the hash of each row's key columns;
2. runs the shards concurrently (compiled code, the GIL released): each
   picks its rows (those whose key group it owns, ascending) and runs every
   piece through the step with the piece's rows as the source's rows. The
   step works out the source watermarks on the whole piece, so every shard
   sees one executor's watermarks and late-row decisions, and a shard with
   no rows still fires what the watermark made due. No column is copied;
3. merges the shards' output rows into the order one executor emits:
   rows passed on from the input by their position in the batch, window
   and TopN results by (piece, window end, key, rank).

A DAG can be sharded when every stateful operator is a window, Dedup or
TopN with a key, fed from sources only through stateless operators that do
not change its key columns, and every source partitions by key columns all
its stateful operators share. :func:`shard_plan` says why a DAG cannot; such
a DAG runs in one executor (``ex.shards == 1``, ``ex.shards_note``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..kernels.merging import merge_positions, merge_shards, place, take_range
from ..kernels.partitioning import rows_of_shard
from ..ops.windows import WindowSpec
from .boundary import _to_arrow, column_view
from .keyhash import key_hash
from .codegen import ancestors
from .plan import compile_plan

__all__ = ["KEY_GROUPS", "KeyShards", "ShardPlan", "resolve_parallelism", "shard_plan"]

#: Keys hash into this many key groups; each shard owns a range of them.
KEY_GROUPS = 256
#: Merged outputs of a batch with at least this many rows are copied into place by the shards' threads.
PARALLEL_PLACE_ROWS = 65_536
_INT64_MIN = np.iinfo(np.int64).min


def resolve_parallelism(value) -> int:
    """``parallelism=`` as a number of shards: a positive int, or ``"auto"`` (the cores this process may use)."""
    if value is None:
        return 1
    if value == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # platforms without affinity masks
            cores = os.cpu_count() or 1
        return max(1, min(cores, KEY_GROUPS))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= KEY_GROUPS:
        raise ValueError(f"parallelism must be an int from 1 to {KEY_GROUPS} (the key groups) or 'auto', "
                         f"got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ShardPlan:
    """How a DAG is sharded.

    Attributes
    ----------
    keys : dict of str to tuple of str
        Per source: the key columns whose hash picks a row's key group.
    merge : dict of str to tuple
        Per sink: ``("rows",)`` when its rows are input rows passed on (merged by
        their position in the batch), or ``("window", key column or None, has rank)``
        for a window or TopN's results (merged by window end, then key, then rank;
        composite keys by window end, then shard).
    """

    keys: dict
    merge: dict


def shard_plan(dag, raising: dict) -> ShardPlan | str:
    """A :class:`ShardPlan` for ``dag``, or the reason it runs in one executor."""
    nodes = dag.nodes
    if raising:
        return (f"operator {next(iter(raising))!r} has a kernel that can raise; a raising row must leave every "
                "shard unchanged, which sharded runs do not do yet")
    stateful = [n for n in nodes if n.kind == "stateful"]
    if not stateful:
        return "the DAG has no keyed state to shard (threads=N splits large batches of stateless DAGs)"
    upstream = {n.id: ancestors(dag, n.id) for n in nodes}
    for n in stateful:
        spec = n.bound.spec
        if not isinstance(spec, WindowSpec):
            return f"operator {n.name!r} ({n.op.label()}) is not a window, Dedup or TopN"
        if not spec.keys:
            return f"operator {n.name!r} ({n.op.label()}) has no key"
        for a in upstream[n.id]:
            up = nodes[a]
            if up.kind == "stateful":
                return f"operator {n.name!r} reads the output of another stateful operator, {up.name!r}"
            if up.kind == "stateless" and (up.bound.extra.get("mapping") is not None
                                            or any(name in spec.keys for name, _ in up.bound.writes)):
                return f"operator {up.name!r} renames or computes a key column of {n.name!r}"
    keys = {}
    for source in dag.sources:
        sid = dag.node(source).id
        fed = [n for n in stateful if sid in upstream[n.id]]
        if not fed:
            keys[source] = ()
            continue
        common = [k for k in fed[0].bound.spec.keys if all(k in n.bound.spec.keys for n in fed[1:])]
        if not common:
            return f"the stateful operators of source {source!r} share no key column"
        keys[source] = tuple(common)
    for n in stateful:  # every source of one operator must cut its rows by the same columns
        seen = {keys[nodes[a].name] for a in upstream[n.id] if nodes[a].kind == "source"}
        if len(seen) > 1:
            return f"the sources of operator {n.name!r} share no key column to shard by"
    merge = {}
    for t in nodes:
        if t.kind != "sink":
            continue
        (u, port), = t.inputs
        up = nodes[u]
        spec = up.bound.spec if up.kind == "stateful" else None
        if spec is not None and port is None and spec.kind != "dedup":
            key = spec.keys[0] if len(spec.keys) == 1 else None
            merge[t.name] = ("window", key, spec.kind == "topn")
            continue
        if any(nodes[a].kind == "stateful" and nodes[a].bound.spec.kind != "dedup" for a in upstream[t.id] - {u}) \
                or (spec is None and up.kind == "stateful"):
            return f"sink {t.name!r} reads a window's results through other operators"
        if any(_paths(dag, nodes[a].id, t.id) > 1 for a in upstream[t.id] if nodes[a].kind == "source"):
            return f"sink {t.name!r} receives some input rows along more than one path"
        merge[t.name] = ("rows",)
    return ShardPlan(keys, merge)


def _paths(dag, src: int, dst: int) -> int:
    """Number of paths from node ``src`` to node ``dst``."""
    count = {src: 1}
    for i in dag.execution_ids:
        if i != src:
            count[i] = sum(count.get(u, 0) for u, _ in dag.nodes[i].inputs)
    return count.get(dst, 0)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the plans are compiled for read-only columns)."""
    a = np.ascontiguousarray(a).view()
    a.setflags(write=False)
    return a


class KeyShards:
    """The shards of one :class:`~laminar_jit.DagExecutor` (see the module docstring).

    Parameters
    ----------
    executor : DagExecutor
        The executor the user calls; it keeps the watermarks, metrics, sink
        outputs and string dictionaries, and its shards the operator states.
    plan : ShardPlan
    shards : int
    """

    def __init__(self, executor, plan: ShardPlan, shards: int):
        from .executor import DagExecutor

        self.executor = executor
        self.plan = plan
        self.n = shards
        self.shards = [DagExecutor(executor.dag) for _ in range(shards)]
        for shard in self.shards:  # one set of dictionaries: codes are the same in every shard
            shard._state.dictionaries = executor._state.dictionaries
        #: Per source: the shards' plan (the same DAG, reading the shard's rows of each batch).
        self.plans = {source: compile_plan(executor.dag, source, sharded=True) for source in executor.dag.sources}
        for plan_ in self.plans.values():
            for layout in plan_.sinks:
                if plan.merge[layout.sink][0] == "window" and any(c.kind not in ("der", "code") for c in layout.columns):
                    raise ValueError(f"sink {layout.sink!r} takes columns of a window's input rows")
        self.group_shard = np.arange(KEY_GROUPS, dtype=np.int64) * shards // KEY_GROUPS
        self.pool = ThreadPoolExecutor(max_workers=shards - 1, thread_name_prefix="laminar-shard")
        dag = executor.dag
        self._source_ids = np.array([dag.node(s).id for s in dag.sources], np.int64)

    def run(self, source: str, batches: list[pa.RecordBatch]) -> None:
        """Run ``batches`` of ``source`` through the shards and add the merged outputs to the sinks."""
        for b in batches:
            self._run(source, b)

    def _run(self, source: str, b: pa.RecordBatch) -> None:
        ex = self.executor
        st = ex._state
        plan = self.plans[source]
        n = b.num_rows
        # what depends on the whole batch: its pieces, the string codes, each row's key group
        cuts = np.asarray(ex._cuts(source, ex._plans[source], b), np.int64)
        columns = {}
        for name, dtype, _, encoded in plan.args:
            values, valid = (st.dictionaries[(source, name)].encode(b.column(name)) if encoded
                             else column_view(b.column(name), dtype))
            columns[name] = (_readonly(values), _readonly(valid))
        keys = self.plan.keys[source]
        row_hash = key_hash(b, keys) if keys and n else None
        ids = self._source_ids
        for shard in self.shards:  # sources' watermarks and idle flags are the executor's
            shard._state.watermarks[ids] = st.watermarks[ids]
            shard._state.idle[ids] = st.idle[ids]
        feed = (plan, columns, row_hash, cuts, n)
        results = self._in_parallel(lambda s: self._work(s, feed), list(range(self.n)))
        st.metrics.counters = st.metrics.counters + sum(counters for counters, _ in results)
        first = self.shards[0]._state
        st.watermarks[:] = first.watermarks
        st.idle[:] = first.idle
        per_shard = [result for _, result in results]
        merges = [m for m in (self._plan_merge(layout, b, per_shard, columns) for layout in plan.sinks) if m]
        if merges:
            jobs = [[] for _ in range(self.n)]
            for merge in merges:
                for s, job in merge.jobs:
                    jobs[s].append(job)
            if sum(merge.size for merge in merges) >= PARALLEL_PLACE_ROWS:
                self._in_parallel(_place_all, jobs)
            else:  # waking the shards' threads costs more than copying a few rows here
                for job in jobs:
                    _place_all(job)
            for merge in merges:
                st.outputs[merge.layout.sink].append(merge.batch(b, st.dictionaries))

    def _in_parallel(self, fn, per_shard: list) -> list:
        """``fn(per_shard[s])`` for every shard, shard 0 in this thread; the first error is raised after all end."""
        futures = [self.pool.submit(fn, per_shard[s]) for s in range(1, self.n)]
        error, results = None, []
        for s in range(self.n):
            try:
                results.append(fn(per_shard[0]) if s == 0 else futures[s - 1].result())
            except Exception as exc:  # noqa: BLE001 - every shard finishes before one error is raised
                error = error or exc
        if error is not None:
            raise error
        return results

    def _work(self, s: int, feed: tuple) -> tuple:
        """Shard ``s``'s rows of the batch through its plan (runs in the shard's thread)."""
        plan, columns, row_hash, cuts, n = feed
        if row_hash is not None:
            rows = rows_of_shard(row_hash, KEY_GROUPS, self.group_shard, s)
        else:  # no keyed state behind this source: its rows go to shard 0 (the others see the watermark)
            rows = np.arange(n if s == 0 else 0, dtype=np.int64)
        st = self.shards[s]._state
        counters = np.zeros_like(self.executor._state.metrics.counters)
        state_args = []
        for nid in plan.stateful_ids:
            state = st.operator_states[nid]
            state.reserve(rows.size * plan.max_paths)
            state_args.extend(state.arrays())
        args = [array for name, *_ in plan.args for array in columns[name]]
        result = plan.step(rows, cuts, *args, self.executor.dag.routing.offsets, plan.settings, counters,
                           st.watermarks, st.idle, *state_args)
        return counters, result

    def _plan_merge(self, layout, b: pa.RecordBatch, results: list[tuple], columns: dict):
        """Where each shard's rows of one sink go in the merged output (one executor's order)."""
        how = self.plan.merge[layout.sink]
        off = layout.offset
        if not any(result[off].size for result in results):
            return None
        offsets = np.zeros(self.n + 1, np.int64)
        offsets[1:] = np.cumsum([result[off].size for result in results])
        if how[0] == "rows":  # input rows passed on: by their position in the batch
            rows, dest = merge_positions(np.concatenate([result[off] for result in results]), offsets, b.num_rows)
        else:
            order = [self._window_order(layout, result, how, s) for s, result in enumerate(results)]
            major, middle, minor = (np.concatenate(k) for k in zip(*order))
            bounds = np.stack([r[off + 1] for r in results]) + offsets[:-1, None]
            dest = merge_shards(major, middle, minor, bounds, True, how[2])
            rows = None
        return _Merge(layout, results, dest, offsets, rows, columns, self.n)

    @staticmethod
    def _window_order(layout, result, how, shard: int) -> tuple:
        """Sort keys of one window sink's rows: window end, key (the shard for composite keys), rank."""
        by_name = {f.name: col for f, col in zip(layout.schema, layout.columns)}
        m = result[layout.offset].size

        def raw(name):
            col = by_name[name]
            values, valid = result[col.pos], result[col.pos + 1]
            values = np.ascontiguousarray(values.astype(np.int64, copy=False))
            return np.where(valid, values, _INT64_MIN) if valid.size and not valid.all() else values

        _, key, ranked = how
        return (raw("window_end"), raw(key) if key is not None else np.full(m, shard, np.int64),
                raw("rank") if ranked else _NO_ROWS)


class _Merge:
    """One sink's merged output of a batch: arrays to fill, and what each shard's thread copies where."""

    def __init__(self, layout, results: list, dest: np.ndarray, offsets: np.ndarray, rows, columns: dict,
                 shards: int):
        self.layout = layout
        self.rows = rows  # rows passed on: their positions in the batch, in output order
        m = self.size = dest.size
        self.arrays: dict[int, tuple] = {}  # layout column index -> (values, validity or empty)
        jobs = [[] for _ in range(shards)]
        dests = [dest[offsets[s]:offsets[s + 1]] for s in range(shards)]
        chunks = np.linspace(0, m, shards + 1).astype(np.int64)  # rows taken from the batch: a range per thread
        for j, col in enumerate(layout.columns):
            if col.kind in ("der", "code"):
                values = np.empty(m, results[0][col.pos].dtype)
                masked = any(r[col.pos + 1].size for r in results)
                valid = np.empty(m, np.bool_) if masked else _NO_NULLS
                self.arrays[j] = (values, valid)
                for s, r in enumerate(results):
                    jobs[s].append((place, values, dests[s], r[col.pos]))
                    if masked:
                        v = r[col.pos + 1]
                        jobs[s].append((place, valid, dests[s], v if v.size else np.ones(dests[s].size, np.bool_)))
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

    def batch(self, b: pa.RecordBatch, dictionaries) -> pa.RecordBatch:
        """The merged rows as a RecordBatch of the sink's schema (after the shards placed them)."""
        layout = self.layout
        taken = b.select(layout.take_columns).take(pa.array(self.rows)) if layout.take_columns else None
        out = []
        for j, (f, col) in enumerate(zip(layout.schema, layout.columns)):
            if col.kind == "take":
                out.append(taken.column(col.pos))
            elif j in self.arrays:
                values, valid = self.arrays[j]
                if col.kind == "code":
                    out.append(dictionaries[col.dictionary].decode(values, valid if valid.size else None))
                else:
                    out.append(_to_arrow(values, valid, f.type))
            else:  # a source column the step does not receive: taken from the batch
                out.append(b.column(col.column).take(pa.array(self.rows)))
        return pa.RecordBatch.from_arrays(out, schema=layout.schema)


def _place_all(jobs: list) -> None:
    """One thread's copies of rows into merged sinks' columns (see :class:`_Merge`)."""
    for part in jobs:
        for fn, *args in part:
            fn(*args)


_NO_NULLS = np.zeros(0, np.bool_)
_NO_ROWS = np.zeros(0, np.int64)
