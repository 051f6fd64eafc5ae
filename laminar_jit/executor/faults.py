"""Kernels that raise: which ones can, and how a raising batch is taken back.

Numba lets a kernel ``raise`` (``if a < 0: raise ValueError(...)``). The
compiled step updates state in place row by row, so by the time a kernel
raises, the rows before it have already been folded into windows, tables
and watermarks. The contract is stronger: the call that passed the batch
raises :class:`~laminar_jit.KernelError` and the batch has no effect at all.

How that is kept, at no cost to DAGs whose kernels cannot raise:

* :func:`raising_kernels` reads the bytecode of every user kernel (and of the
  kernels and functions it calls) for a ``raise`` or ``assert``. A DAG with
  none runs unguarded, exactly as before.
* A DAG with such a kernel runs every operation (``process_batch``,
  ``finish``, ``advance_watermark``, ``mark_idle``) under a :class:`FaultGuard`:
  a copy of the operators' state taken now and then, and a log of the steps
  run since (the batches, which Arrow keeps immutable, and the watermarks
  and idle flags each started from). When a step raises, the state is put
  back to the copy and the logged steps are run again with their outputs
  thrown away (they were delivered the first time), which rebuilds the state
  exactly as it stood before the failing call; string dictionaries, which
  only grow, are cut back to their length before it. The failing call's rows
  are then bisected (prefixes of the batch, each run from that state) to
  name the first row that raises.
* The copy is renewed once the logged rows outgrow the state
  (``rows >= max(MIN_LOG_ROWS, state bytes / BYTES_PER_LOGGED_ROW)``), so the
  copying costs a bounded share of the work and the log retains input of
  about the state's size.

Undo logs of touched slots were rejected: every stateful kernel would have to
write one on its hot path, and a raising kernel is the rare case.
"""

from __future__ import annotations

import dis
import types

import numpy as np
import pyarrow as pa

from ..errors import KernelError
from ..ops.stateless import ArrowMap
from .steps import ancestors, boundary_nodes

__all__ = ["FaultGuard", "kernel_may_raise", "raising_kernels"]

#: The copy of the state is renewed after at least this many logged rows ...
MIN_LOG_ROWS = 262_144
#: ... and at least one row per this many bytes of state, so copying costs
#: about as much as moving the rows through the step once more at most.
BYTES_PER_LOGGED_ROW = 16


def kernel_may_raise(fn, _seen: set | None = None) -> bool:
    """Whether ``fn`` (a Python function, Numba dispatcher or Kernel) contains a ``raise`` or ``assert``.

    Functions it reaches through its globals and closure (other kernels,
    helper functions) are read too. Library functions (numpy, math) are
    taken as not raising: with ``error_model="numpy"`` they return inf/NaN.
    """
    seen = set() if _seen is None else _seen
    fn = getattr(fn, "fn", fn)            # Kernel
    fn = getattr(fn, "py_func", fn)       # Numba dispatcher
    code = getattr(fn, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    names = set()
    for c in _code_objects(code):
        for ins in dis.get_instructions(c):
            if ins.opname in ("RAISE_VARARGS", "RERAISE"):
                return True
        names.update(c.co_names)
    scope = dict(getattr(fn, "__globals__", {}))
    for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            scope[var] = cell.cell_contents
        except ValueError:  # empty cell
            pass
    referenced = [scope[n] for n in names | set(code.co_freevars) if n in scope]
    return any(kernel_may_raise(obj, seen) for obj in referenced if _is_user_callable(obj))


def _code_objects(code):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _is_user_callable(obj) -> bool:
    obj = getattr(obj, "fn", obj)
    obj = getattr(obj, "py_func", obj)
    if not isinstance(obj, types.FunctionType):
        return False
    module = getattr(obj, "__module__", "") or ""
    return not module.split(".")[0] in ("numpy", "numba", "math")


def _op_kernels(value, depth: int = 0):
    """Every :class:`~laminar_jit.ops.kernel.Kernel` held by an operator (attributes, dicts, lists, aggregates)."""
    from ..ops.kernel import Kernel

    if isinstance(value, Kernel):
        yield value
    elif depth < 6:
        if isinstance(value, dict):
            items = value.values()
        elif isinstance(value, (list, tuple)):
            items = value
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("laminar_jit.ops"):
            items = vars(value).values()
        else:
            return
        for item in items:
            yield from _op_kernels(item, depth + 1)


def raising_kernels(dag) -> dict[str, list[str]]:
    """Operator name -> names of its kernels that may raise, for the operators of ``dag`` that have any.

    An ArrowMap after a boundary node counts: its function runs between two steps of one call.
    """
    out = {}
    boundaries = boundary_nodes(dag)
    for node in dag.nodes:
        names = [k.name for k in _op_kernels(node.op) if kernel_may_raise(k)]
        if isinstance(node.op, ArrowMap) and ancestors(dag, node.id) & boundaries:
            # computed from rows a step emitted, after that step changed state: a function that raises
            # must take the whole call back like a raising kernel
            names.append(getattr(node.op.fn, "__name__", "fn"))
        if names:
            out[node.name] = sorted(set(names))
    return out


class FaultGuard:
    """Keeps a :class:`~laminar_jit.DagExecutor` able to take back any one call.

    The executor calls :meth:`record` before each compiled run,
    :meth:`commit` after a call succeeded and :meth:`rollback` when one
    raised; see the module docstring for the scheme.

    Parameters
    ----------
    state : ExecutorState
        The executor's state, copied and put back in place.
    dag : StreamingDag
        The executor's DAG (to make fresh operator states).
    execute : callable
        ``execute(source, batches)`` runs the compiled steps of ``source``
        over ``batches``, updating ``state``'s operator states, watermarks,
        idle flags and dictionaries (not its outputs or metrics).
    raising : dict of str to list of str
        :func:`raising_kernels` of ``dag``.
    operators : object, optional
        Where the operator states live when not in ``state``: an object with
        ``snapshot()`` (a copy of them) and ``load(copy)`` (put one back),
        as the executor's key shards have. Default: ``state``'s own.
    """

    def __init__(self, state, dag, execute, raising: dict[str, list[str]], operators=None):
        self.state = state
        self.dag = dag
        self.execute = execute
        self.raising = raising
        self.operators = operators
        self.snapshot = None      # (state arrays, watermarks, idle flags, dictionary lengths) at the log's start
        self.snapshot_bytes = 0
        self.log: list[tuple] = []  # (source, batches, watermarks, idle) of committed runs
        self.log_rows = 0
        self.pending: list[tuple] = []
        self.replaying = False

    # -- the executor's calls ------------------------------------------------
    def reset(self) -> None:
        """The executor's state was replaced (a restore): start over from it."""
        self.snapshot, self.log, self.log_rows, self.pending = None, [], 0, []

    def begin(self) -> tuple:
        """Start a call: take a copy if due; return what :meth:`rollback` needs."""
        if self.snapshot is None or self.log_rows >= max(MIN_LOG_ROWS, self.snapshot_bytes // BYTES_PER_LOGGED_ROW):
            self._take_snapshot()
        self.pending = []
        st = self.state
        return (*st.copy_time(), st.dictionary_lengths(), st.finished)

    def record(self, source: str, batches: list) -> None:
        """A compiled run of ``source`` over ``batches`` is about to start."""
        if not self.replaying:
            self.pending.append((source, batches, *self.state.copy_time()))

    def commit(self) -> None:
        """The call succeeded: its runs join the log."""
        self.log += self.pending
        self.log_rows += sum(b.num_rows for _, batches, _, _ in self.pending for b in batches)
        self.pending = []

    def rollback(self, before: tuple) -> None:
        """The call raised: rebuild the state as it was at :meth:`begin`."""
        wm, idle, lengths, finished = before
        st = self.state
        self._load_snapshot()
        self.replaying = True
        try:
            for source, batches, run_wm, run_idle in self.log:
                st.set_time(run_wm, run_idle)
                self.execute(source, batches)  # outputs and counters are dropped
        finally:
            self.replaying = False
        st.set_time(wm, idle)
        st.truncate_dictionaries(lengths)
        st.finished = finished
        self.pending = []
        self._take_snapshot()  # the bisection below and later calls start from here

    def first_failing_row(self, source: str, batch) -> tuple[int | None, BaseException | None]:
        """Bisect prefixes of ``batch`` (run from the state of :meth:`begin`) for the first row that raises.

        Returns the row and the exception of the shortest failing prefix, or
        ``(None, None)`` when no prefix fails on its own (the failure needs
        the whole call, e.g. a watermark it advances at the end).
        """
        lo, hi, error = 0, batch.num_rows, None  # prefix lo passes (0 rows: checked below), hi fails
        self.replaying = True
        try:
            if self._fails(source, batch.slice(0, 0)) is not None:
                return None, None
            error = self._fails(source, batch)
            if error is None:
                return None, None
            while hi - lo > 1:
                mid = (lo + hi) // 2
                e = self._fails(source, batch.slice(0, mid))
                if e is None:
                    lo = mid
                else:
                    hi, error = mid, e
        finally:
            self.replaying = False
            self._load_snapshot()
        return hi - 1, error

    def _fails(self, source, batch):
        self._load_snapshot()
        try:
            self.execute(source, [batch])
        except Exception as e:  # the user's kernel, on some prefix
            return e
        return None

    # -- the copy ----------------------------------------------------------
    def _take_snapshot(self) -> None:
        st = self.state
        states = st.snapshot_operators() if self.operators is None else self.operators.snapshot()
        self.snapshot = (states, *st.copy_time(), st.dictionary_lengths())
        self.snapshot_bytes = _nbytes(states)
        self.log, self.log_rows = [], 0

    def _load_snapshot(self) -> None:
        states, wm, idle, lengths = self.snapshot
        st = self.state
        if self.operators is None:
            st.load_operators(self.dag, states)  # copies: the snapshot stays reusable
        else:
            self.operators.load(states)
        st.set_time(wm, idle)
        st.truncate_dictionaries(lengths)


def _nbytes(obj) -> int:
    """Bytes of the numpy arrays in ``obj`` (nested dicts, lists and tuples)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        obj = list(obj.values())
    return sum(_nbytes(x) for x in obj) if isinstance(obj, (list, tuple)) else 0


def kernel_error(dag, source: str | None, what: str, row: int | None, cause: BaseException, raising: dict,
                 batch=None) -> KernelError:
    """The :class:`KernelError` for ``cause``, naming the operator, source and row.

    Parameters
    ----------
    dag : StreamingDag
        The executor's DAG.
    source : str or None
        The source of the failed call (None for ``finish()``).
    what : str
        The call, for the message (``"batch"``, ``"finish()"``, ...).
    row : int or None
        The first row of ``batch`` that raises, if one does on its own.
    cause : BaseException
        What the kernel raised.
    raising : dict of str to list of str
        :func:`raising_kernels` of ``dag``.
    batch : pyarrow.RecordBatch, optional
        The rows of the failed call.
    """
    node, kernel = _culprit(dag, source, raising, batch, row)
    if row is not None:
        where = f"source {source!r}, row {row} of the batch passed to process_batch({source!r}, ...)"
    else:
        where = (f"source {source!r}, " if source else "") + f"no single row: {what}"
    msg = (f"operator {node!r}{f' (kernel {kernel})' if kernel else ''} raised {type(cause).__name__}: {cause} — "
           f"{where}. The call was rejected and had no effect; every call accepted before it keeps its "
           "effect. Fix the data or the kernel and call again")
    err = KernelError(msg)
    err.node, err.source, err.row = node, source, row
    return err


def _culprit(dag, source: str | None, raising: dict, batch, row):
    """(operator, kernel) that raised: the only candidate of this source's plans, else the one a row check finds."""
    reachable = _downstream_names(dag, source) if source else {n.name for n in dag.nodes}
    candidates = [name for name in raising if name in reachable]
    if len(candidates) == 1:
        return candidates[0], ", ".join(raising[candidates[0]])
    if batch is not None and row is not None:
        # Maps and filters that read the source's columns: call the kernel on the row.
        values = {c: _scalar(batch.column(c), row) for c in batch.schema.names}
        for name in candidates:
            kernel = getattr(dag.node(name).op, "kernel", None)
            if kernel is None or not all(p in values and values[p] is not None for p in kernel.params):
                continue
            try:
                kernel(*(values[p] for p in kernel.params))
            except Exception:
                return name, kernel.name
    if not candidates:
        return "?", None
    return " or ".join(candidates), None


def _downstream_names(dag, source: str) -> set[str]:
    """Names of ``source`` and the nodes downstream of it (the nodes its steps can run)."""
    offsets, targets = dag.routing.offsets, dag.routing.targets
    seen, todo = set(), [dag.node(source).id]
    while todo:
        nid = todo.pop()
        if nid not in seen:
            seen.add(nid)
            todo.extend(int(t) for t in targets[offsets[nid]:offsets[nid + 1]])
    return {dag.nodes[nid].name for nid in seen}


def _scalar(column, row: int):
    """The value a kernel sees for ``column[row]`` (temporal types as their integer storage), or None."""
    t = column.type
    if pa.types.is_temporal(t):
        column = column.cast(pa.int64())
    elif not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        return None
    return column[row].as_py()
