"""Key shards: one DAG run by ``N`` executors in threads, each owning the keys of its key groups.

``DagExecutor(dag, parallelism=N)`` keeps ``N`` shards, each the operator
state of the keys in its key groups, and a key shard's plan of each source:
the DAG's step, reading a selection of the batch's rows (``shard_rows``)
where the plain step reads all of them. Per batch it

1. works out on the *whole* batch what depends on every row: the cut points
   of the steps (window pieces, sliding windows' due points), the codes of
   string columns in the shared dictionaries (codes by first appearance at
   the source, as in one executor) and each row's key group (the top byte of
   the hash of its key columns);
2. runs the shards concurrently (compiled code, the GIL released): each
   picks its rows (those whose key group it owns, ascending) and runs every
   piece through the step with the piece's rows as the source's rows. The
   step works out the source watermarks on the whole piece, so every shard
   sees one executor's watermarks and late-row decisions, and a shard with
   no rows still fires what the watermark made due. No column is copied;
3. merges the shards' output rows into the order one executor emits:
   rows passed on from the input by their position in the batch, window
   and TopN results by (piece, window end, key, rank), a join's pairs and a
   keyed kernel's rows by where the row whose arrival emitted them is in the
   batch (a keyed kernel's timer output by where one executor would have
   fired it: the first row whose watermark reaches the timer, timers of one
   position by their time, before that position's row; a join's rows the
   watermark settled after every arrival, left then right, by event time and
   arrival number, which a key shard takes from the row's place in the
   input). An updating
   operator's changes (a changelog) come piece by piece, each shard's in
   its own order: every key's changes in one executor's order, keys
   interleaved by shard. A merge of many rows is cut into a part per
   thread (:func:`~laminar_jit.kernels.merging.merge_cuts`), so the shards'
   threads work out the destinations as well as copying the rows.

A join whose rows feed stateful operators ends its stage, as in one
executor (whose next step reads them), and so do, in key shards only, a
keyed kernel whose rows do, an updating operator whose changelog feeds a
GroupAggregate (merged shard by shard: see :func:`.shardplan.shard_plan`)
and a window whose results feed an operator of
another key or none (which runs in shard 0, all of its stage's rows dealt
there; a stage cut into pieces passes each piece's rows on with the node's
watermark before and after it): its rows are merged into one batch in one
executor's order, and that batch runs through the shards as a stage of its
own, dealt out again by the key of the operators it feeds (an exchange, as
between keyed operators of a Flink job), with the join's or kernel's
watermark from before the step (which rows it emits carry in one executor's
step too).

Key groups move between shards to even out skewed keys (:meth:`KeyShards._balance`),
and a checkpoint holds one executor's states (:meth:`KeyShards.merged_states`),
which a restore deals out by key group (:meth:`KeyShards.distribute`); both
copy entries with ``WindowState.absorb``. A kernel that raises takes the call
back in every shard (the executor's fault guard, with :meth:`KeyShards.snapshot`).

A DAG can be sharded when every stateful operator has a key (or is in a
stage of operators without one after an exchange, or, with ``two_phase=True``,
is a window or TopN without a key over a source's rows: every shard aggregates its
share of each batch, dealt by place, and the shards' results of a window are
combined as it fires, :mod:`.partials`) and is a
window, Dedup, TopN, GroupAggregate, keyed kernel or join, fed from its
stage's root (a source, or a
join whose rows feed stateful operators) through stateless operators (and
maybe windows and Dedups), and every root partitions by key columns all the
stateful operators of its stage share that nothing on the way renames or
computes (a join's sources each by their side's key columns). An updating
operator's changes go to sinks, or to GroupAggregates that cannot see the
order of a call's changes (no float sum or mean, no ``state_ttl``).
:func:`shard_plan` says why a DAG cannot; such a DAG runs in one executor
(``ex.shards == 1``, ``ex.shards_note``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from ..kernels.partitioning import HASH_SEED, rows_of_shard
from ..kernels.sliding import NULL_KEY
from ..kernels.watermarks import batch_watermarks
from ..state.joins import JoinState
from ..time.watermarks import to_units
from .boundary import SinkBuffer, _to_arrow, column_view, readonly
from .handoff import StepRows
from .keyhash import key_groups, mix_column
from .steps import ancestors
from .core import DICTIONARY_BYTES, MetricsLayout
from .partials import combine_partials, combine_topn
from .plan import WINDOW_PIECE_ROWS, compile_plan
from .shardmerge import plan_merge, run_placements
from .state import ExecutorState
from .shardplan import KEY_GROUPS, ShardPlan, source_grouping, resolve_parallelism, shard_plan

__all__ = ["KEY_GROUPS", "KeyShards", "ShardPlan", "resolve_parallelism", "shard_plan"]

_GROUP_BITS = KEY_GROUPS.bit_length() - 1  # a key group: the hash's top bits (a byte: at most 256 groups)
_GROUP_SHIFT = np.uint64(64 - _GROUP_BITS)
#: The key groups' assignment to shards is looked at after this many batches, then after this factor more.
BALANCE_FIRST, BALANCE_GROWTH = 2, 4
#: Key groups are reassigned when that lowers the busiest shard's rows by more than this factor.
BALANCE_GAIN = 1.05
#: Rows of a batch counted per key group: one in this many.
LOAD_SAMPLE = 8
#: Batches of fewer rows run through the shards one after the other in the calling thread: waking a
#: sleeping thread takes about 0.1 ms on a VM, more than a few thousand rows' step (Nexmark q3's 1,300
#: persons and 3,900 auctions per chunk ran 2x slower in two threads than in one executor).
THREAD_ROWS = 16_384


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
        self.executor = executor
        self.plan = plan
        self.n = shards
        #: Per shard: its key groups' operator states, watermarks, idle flags (the executor's string dictionaries)
        self.shards = [ExecutorState.new(executor.dag, executor._state.dictionaries) for _ in range(shards)]
        #: Per stage root (a source, or a join whose rows feed stateful operators): the shards' plan (the same
        #: DAG, reading the shard's rows of each batch).
        self.plans = {root: compile_plan(executor.dag, root, sharded=True) for root in plan.keys}
        #: Per stateful node: the root of the stage whose step updates it (its key groups are hashed there).
        self.stage_of = {nid: root for root, plan_ in self.plans.items() for nid in plan_.stateful_ids}
        for root, plan_ in self.plans.items():
            if root not in executor._plans and root not in executor._derived and any(e for *_, e in plan_.args):
                raise ValueError(f"the stage after {root!r} reads its string column "
                                 f"{next(a for a, *_, e in plan_.args if e)!r} as codes of a dictionary one "
                                 "executor does not keep, so its checkpoints would not restore at parallelism 1")
            for layout in [*plan_.sinks, *plan_.boundaries]:
                if plan.merge[layout.sink][0] not in ("rows", "one") and any(
                        c.kind not in ("der", "code") for c in layout.columns):
                    raise ValueError(f"sink {layout.sink!r} takes columns of a window's input rows")
                if (plan.merge[layout.sink][0] == "arrivals") != layout.arrivals:
                    raise ValueError(f"sink {layout.sink!r}: the step does not say where its join rows arrived")
        #: Per stage root: the most rows of a piece of a batch, each shard's share of it one executor's piece (a
        #: shard's call of one piece returns the step's arrays as they are; more are appended one after another).
        self.piece_rows = {root: WINDOW_PIECE_ROWS * shards for root in self.plans}
        #: The shard owning each key group: ranges at first, then balanced by the rows seen (:meth:`_balance`).
        self.group_shard = np.arange(KEY_GROUPS, dtype=np.int64) * shards // KEY_GROUPS
        #: Rows seen per key group (one in LOAD_SAMPLE counted), and the batch count of the next balance.
        self.group_rows = np.zeros(KEY_GROUPS, np.int64)
        self._batches = 0
        self._next_balance = BALANCE_FIRST
        self.pool = ThreadPoolExecutor(max_workers=shards - 1, thread_name_prefix="laminar-shard")
        self._stateful_ids = [n.id for n in executor.dag.nodes if n.kind == "stateful"]
        self._strategies: dict[str, tuple] = {}  # per stage root: how its source's watermark is worked out
        for plan_ in self.plans.values():  # compiled now rather than at the first batch
            plan_.load()

    def run(self, source: str, batches: list[pa.RecordBatch], commit: bool = True) -> None:
        """Run ``batches`` of ``source`` through the shards and add the merged outputs to the sinks.

        With ``commit=False`` (a fault guard's replay) outputs and metric
        counters are dropped: only states, watermarks and idle flags change.
        """
        for b in batches:
            self._run(source, b, commit)

    def _run(self, source: str, b: pa.RecordBatch, commit: bool = True, wm_rows: int | None = None,
             codes: dict | None = None) -> None:
        """One batch of stage root ``source`` through the shards; then the rows of its stage's boundary nodes
        (joins or keyed kernels feeding stateful operators, windows feeding another key), merged into one batch,
        through their stages piece by piece (``wm_rows``: the watermark those rows carry, the node's from before
        the piece, as in one executor; ``codes``: string columns of ``b`` as the codes the stage encodes them to,
        which ``b`` then holds as nulls)."""
        ex = self.executor
        st = ex._state
        plan = self.plans[source]
        n = b.num_rows
        # what depends on the whole batch: its pieces (a stage after a join or keyed kernel has one), the
        # string codes, each row's key group
        cuts = np.asarray(ex._cuts(source, ex._plans[source], b, self.piece_rows[source]) if source in ex._plans
                          else [0, n], np.int64)
        columns = {}
        for name, dtype, _, encoded in plan.args:
            if name.startswith(DICTIONARY_BYTES):  # a dictionary's bytes, after its column was encoded
                columns[name] = tuple(map(readonly, st.dictionaries[(source, name[1:])].store()))
                continue
            if codes and name in codes:  # a boundary node's codes of this column's dictionary
                values, valid = codes[name]
            else:
                values, valid = (st.dictionaries[(source, name)].encode(b.column(name)) if encoded
                                 else column_view(b.column(name), dtype))
            columns[name] = (readonly(values), readonly(valid))
        keys = self.plan.keys[source]
        # each row's key group, a byte a row: every shard scans those bytes for its own rows
        row_group = key_groups(b, keys, _GROUP_BITS) if keys and n else None
        if row_group is not None:  # rows per key group, from a sample (counting every row cost 5 % of a run)
            self.group_rows += np.bincount(row_group[::LOAD_SAMPLE], minlength=KEY_GROUPS)
        elif source in self.plan.split and n:  # windows without a key, in two phases: by place in the batch
            row_group = (np.arange(n, dtype=np.int64) * KEY_GROUPS // n).astype(np.uint8)
        if wm_rows is None:  # (a join's rows belong to the batch that emitted them)
            self._batches += 1
            if self._batches >= self._next_balance:
                self._next_balance *= BALANCE_GROWTH
                self._balance()
        for shard in self.shards:  # every node's watermark and idle flag are the executor's
            shard.set_time(st.watermarks, st.idle)
        feed = (plan, columns, row_group, cuts, self._source_watermarks(source, b), n, wm_rows)
        if not keys and wm_rows is not None:  # a stage of operators without a key: shard 0 holds all of it
            results = [self._work(0, feed)]
        elif n >= THREAD_ROWS:
            results = self._in_parallel(lambda s: self._work(s, feed), list(range(self.n)))
        else:  # waking a thread costs more than a small batch's share of the work: one after the other
            results = [self._work(s, feed) for s in range(self.n)]
        # a join holds its output watermark back to the oldest row it may still emit, which each shard knows of
        # its own rows: the least over the shards is one executor's (every shard started from the executor's)
        st.watermarks[:] = np.min([shard.watermarks for shard in self.shards[:len(results)]], axis=0)
        st.idle[:] = self.shards[0].idle
        if commit:
            st.metrics.counters = st.metrics.counters + sum(counters for counters, _ in results)
        per_shard = [result for _, result in results]
        # a join's rows that feed stateful operators are merged even when outputs are dropped: they update state
        layouts = [*(plan.sinks if commit else ()), *plan.boundaries]
        merges = [m for m in (plan_merge(self.plan.merge[layout.sink], layout, b, per_shard, columns)
                              for layout in layouts) if m]
        run_placements(merges, self.n, self._in_parallel)
        merged = {merge.layout.sink: merge for merge in merges}
        for layout in plan.sinks if commit else ():  # as a step's result: small outputs are coalesced later
            if layout.sink in merged:
                st.outputs[layout.sink].add(b, merged[layout.sink].result(), layout)
        # the rows of a boundary node (a join or keyed kernel feeding stateful operators, a window feeding one
        # of another key) run through the next stage piece by piece, as one executor's next step or the rest of
        # its step would: with the node's watermark before the piece, the node's own after it
        for j, layout in enumerate(plan.boundaries):
            merge = merged.get(layout.sink)
            # string columns the next stage encodes with the dictionary they are codes of pass as codes
            passed = self._passed_codes(layout, b, merge.result()) if merge is not None else {}
            rows = (SinkBuffer(layout, st.dictionaries).materialize(b, merge.result(), skip=passed) if merge is not None
                    else pa.RecordBatch.from_arrays([pa.array([], f.type) for f in layout.schema], schema=layout.schema))
            k = plan.n_returns + 2 * j  # (a join's watermark is the least over the shards, as above)
            before, after = (np.min([r[k + x] for r in per_shard], axis=0) for x in (0, 1))
            pieces = np.sum([r[layout.offset + 1] for r in per_shard], axis=0)  # where each piece's rows start
            if layout.sink in self.plan.combined:  # a window without a key: each window's partial results in one
                made = rows.num_rows
                spec = ex.dag.node(layout.sink).bound.spec
                rows, pieces = (combine_topn if spec.kind == "topn" else combine_partials)(rows, spec, pieces)
                if commit:  # (counted by the shards as they emitted them)
                    self._uncount(layout.node_id, made - rows.num_rows)
            for p in range(before.size):
                if pieces[p + 1] == pieces[p] and p + 1 < before.size:
                    # a piece without rows only moves the watermark, and the next piece's does that further:
                    # what it would fire before the next piece's rows, those rows are late for anyway
                    continue
                st.watermarks[layout.node_id] = after[p]
                lo, hi = pieces[p], pieces[p + 1]
                self._run(layout.sink, rows.slice(lo, hi - lo), commit, int(before[p]),
                          {name: (v[lo:hi], m[lo:hi] if m.size else m) for name, (v, m) in passed.items()})

    def _passed_codes(self, layout, b, result) -> dict:
        """The string columns of a boundary node's merged rows that reach its stage as codes (see
        :func:`~.handoff.codes_passed_on`): not a key of the stage (the rows' key groups hash its strings) nor
        rows combined from partial results. By name: the codes and validity, as an encode gives them."""
        source = layout.sink
        if source in self.plan.combined or source not in self.plans:
            return {}
        rows = StepRows(layout, self.executor._state.dictionaries, b, result)
        plan = self.plans[source]
        read = {name for out in [*plan.sinks, *plan.boundaries] for name in out.take_columns}  # (by Arrow)
        read.update(col.column for out in [*plan.sinks, *plan.boundaries] for col in out.columns if col.kind == "src")
        read.update(c for _, _, cols, _, _ in (plan.arrow_maps or {}).values() for c in cols)
        out = {}
        for name, _, _, encoded in plan.args:
            if encoded and name not in self.plan.keys[source] and name in layout.by_name and name not in read:
                got = rows.codes(name, self.executor._state.dictionaries.get((source, name)))
                if got is not None:
                    out[name] = got
        return out

    def _uncount(self, nid: int, rows: int) -> None:
        """Take back ``rows`` output rows of node ``nid`` from the metrics (partial results combined away)."""
        layout = MetricsLayout(len(self.executor.dag.nodes))
        offsets = self.executor.dag.routing.offsets
        counters = self.executor._state.metrics.counters
        counters[layout.index("rows_out", nid)] -= rows
        counters[layout.index("events_routed")] -= rows * int(offsets[nid + 1] - offsets[nid])

    def _source_watermarks(self, root: str, b: pa.RecordBatch) -> np.ndarray:
        """The watermark of source ``root`` before each row of ``b`` and after its last, as one executor's step
        works it out (every shard's step reads it; empty for a stage root without a watermark strategy)."""
        if root not in self._strategies:  # (node id, event-time column, delay in its units), or () without one
            node = self.executor.dag.node(root)
            spec = node.op if node.kind == "source" else None
            self._strategies[root] = () if spec is None or spec.watermark is None else (
                node.id, spec.event_time, to_units(spec.watermark.delay, spec.schema.field(spec.event_time).type))
        if not self._strategies[root]:
            return _NO_ROWS
        nid, event_time, delay = self._strategies[root]
        ts, _ = column_view(b.column(event_time), np.dtype(np.int64))
        return batch_watermarks(ts, b.num_rows, int(self.executor._state.watermarks[nid]), delay)

    # ------------------------------------------------------------ rescaling
    def _balance(self) -> None:
        """Reassign key groups to shards by the rows seen, if that evens the shards' rows out markedly.

        Keys are skewed (zipf: one key may hold 15 % of the rows), so ranges
        of key groups can load the shards unevenly (69/31 for two shards on
        a test's keys). Groups are dealt heaviest first, each to the shard
        with the fewest rows so far (longest-processing-time first), with a
        small prior so groups without rows yet spread evenly. The shards'
        entries then move to their new owners (as a checkpoint restored onto
        the new assignment would). Output does not depend on the assignment
        (but for the order of one window end's rows under composite keys,
        which follows the shards).
        """
        weights = self.group_rows + (self.group_rows.sum() // (4 * KEY_GROUPS) + 1)
        proposal = np.empty(KEY_GROUPS, np.int64)
        totals = np.zeros(self.n, np.int64)
        for g in np.argsort(-weights, kind="stable"):
            s = int(np.argmin(totals))
            proposal[g] = s
            totals[s] += weights[g]
        current = np.bincount(self.group_shard, weights=weights, minlength=self.n).max()
        if current <= BALANCE_GAIN * totals.max():
            return
        states = self.merged_states()
        self.group_shard = proposal
        st = self.executor._state
        self.distribute(states, st.watermarks, st.idle)

    def snapshot(self) -> tuple:
        """Copies of every shard's operator states and time, and of the key groups' assignment (see :meth:`load`)."""
        return ([shard.snapshot_operators() for shard in self.shards],
                [shard.copy_time() for shard in self.shards],
                self.group_shard.copy(), self.group_rows.copy(), self._batches, self._next_balance)

    def load(self, snapshot: tuple) -> None:
        """Put the shards back as :meth:`snapshot` found them (the fault guard's take-back of a raising call)."""
        states, times, group_shard, group_rows, batches, next_balance = snapshot
        for shard, arrays, (wm, idle) in zip(self.shards, states, times):
            shard.load_operators(self.executor.dag, arrays)  # copies: the snapshot stays reusable
            shard.set_time(wm, idle)
        self.group_shard, self.group_rows = group_shard.copy(), group_rows.copy()
        self._batches, self._next_balance = batches, next_balance

    def merged_states(self) -> dict:
        """One executor's operator states holding every shard's entries (what a checkpoint saves).

        The shards are not changed: the entries are copied into fresh states.
        """
        merged = {}
        for nid in self._stateful_ids:
            node = self.executor.dag.nodes[nid]
            state = merged[nid] = node.op.new_state(node.bound)
            for shard in self.shards:
                part = shard.operator_states[nid]
                if node.name in self.plan.combined:  # a window without a key: each shard holds part of a window
                    state.combine(part, tuple(agg.kind for _, agg in node.bound.spec.aggs))
                else:
                    state.absorb(part, _keyed_slots(part), **_unkeyed(state, True))
        return merged

    def distribute(self, states: dict, watermarks: np.ndarray, idle: np.ndarray) -> None:
        """Give every shard the entries of its key groups of one executor's ``states`` (a restored checkpoint's,
        or the shards' own, :meth:`merged_states`, when key groups change owners); the shards' watermarks and
        idle flags become ``watermarks`` and ``idle``."""
        dag = self.executor.dag
        parts = [{} for _ in range(self.n)]
        for nid in self._stateful_ids:
            node, state = dag.nodes[nid], states[nid]
            slots = _keyed_slots(state).astype(np.int64)
            if self.plan.keys[self.stage_of[nid]]:
                owner = self.group_shard[self.key_groups(nid, state.key_columns(state.table.keys[slots, 0]))]
            else:  # an operator without a key runs in shard 0, where its stage's rows go
                owner = np.zeros(slots.size, np.int64)
            for s in range(self.n):
                part = parts[s][nid] = node.op.new_state(node.bound)
                # a join's rows without a key never match: which shard settles them does not change the output
                part.absorb(state, slots[owner == s], **_unkeyed(state, s == 0))
        for shard, operator_states in zip(self.shards, parts):
            shard.operator_states = operator_states
            shard.set_time(watermarks, idle)

    def key_groups(self, nid: int, key_columns: list[np.ndarray]) -> np.ndarray:
        """Key group of each entry of node ``nid`` from its key columns' int64 values (as state keeps them).

        The same group its rows hash to at the root of its stage (a source,
        or a join whose rows feed it): the shard key columns are rebuilt as
        Arrow arrays of the root's types (strings decoded by the root's
        dictionary) and hashed like the rows.
        """
        dag = self.executor.dag
        node = dag.nodes[nid]
        upstream = {n.id: ancestors(dag, n.id) for n in dag.nodes}
        source = self.stage_of[nid]
        schema = dag.schema_of(source)
        # (a join's: those of the root's input)
        keys, _ = source_grouping(dag, node, dag.node(source).id, upstream)
        acc = np.full(key_columns[0].size if key_columns else 0, HASH_SEED, np.uint64)
        for name in self.plan.keys[source]:
            values = key_columns[keys.index(name)]
            valid = values != NULL_KEY
            t = schema.field(name).type
            dictionary = self.executor._state.dictionaries.get((source, name))
            if dictionary is not None:
                mix_column(acc, dictionary.decode(np.where(valid, values, 0), valid))
            else:
                mix_column(acc, _to_arrow(values, valid, t))  # as the sinks rebuild state keys
        return (acc >> _GROUP_SHIFT).astype(np.int64)  # as key_groups gives the rows'

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
        plan, columns, row_group, cuts, wms, n, wm_rows = feed
        if row_group is not None:  # (a pass per shard in its thread: 1.35 ns a row; dealing all in one, 3.4)
            rows = rows_of_shard(row_group, self.group_shard, s)
        else:  # no keyed state behind this source: its rows go to shard 0 (the others see the watermark)
            rows = np.arange(n if s == 0 else 0, dtype=np.int32)
        st = self.shards[s]
        counters = np.zeros_like(self.executor._state.metrics.counters)
        state_args = []
        new_entries = rows.size * plan.max_paths  # at most, per operator, over all the pieces of this call
        for nid in plan.stateful_ids:
            state = st.operator_states[nid]
            # rows reaching it: copies of the shard's rows, and what operators upstream emit, each of whose
            # open entries (those there now and those the call opens) fires at most once per window
            emitted = sum(st.operator_states[u].max_emit_opening(new_entries) for u in plan.upstream_stateful[nid])
            state.reserve(new_entries + emitted)
            state_args.extend(state.arrays())
        args = [array for name, *_ in plan.args for array in columns[name]]
        if plan.derived:  # a join's rows: the join's watermark from before the step that emitted them
            state_args.append(wm_rows)
        result = plan.step(rows, cuts, wms, *args, self.executor.dag.routing.offsets, plan.settings, counters,
                           st.watermarks, st.idle, *state_args)
        return counters, result


def _unkeyed(state, take: bool) -> dict:
    """``absorb``'s keyword for a join state's rows without a key (other states have none)."""
    return {"unkeyed": take} if isinstance(state, JoinState) else {}


def _keyed_slots(state) -> np.ndarray:
    """A state's live slots of keys (not a left as-of join's slot of left rows without a key, which moves with
    ``absorb(unkeyed=True)``)."""
    return state.keyed_slots() if isinstance(state, JoinState) else state.table.live_slots()


_NO_ROWS = np.zeros(0, np.int64)
