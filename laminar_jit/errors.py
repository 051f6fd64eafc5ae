"""Typed errors of the public contract.

Every message names the node and/or column involved, what was expected, what
was found, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ClusterError",
    "CycleError",
    "DagError",
    "DataError",
    "DisconnectedNodeError",
    "DuplicateNodeError",
    "EmptyDagError",
    "FanOutError",
    "KernelError",
    "LaminarError",
    "PartitioningError",
    "PortError",
    "SchemaError",
    "SqlError",
    "UnknownNodeError",
]


class LaminarError(Exception):
    """Base class of every error raised by laminar_jit."""


class DagError(LaminarError):
    """The DAG is invalid; raised by :meth:`DagBuilder.build` and DAG look-ups."""


class CycleError(DagError):
    """The graph has a cycle; the message lists the nodes on it."""


class UnknownNodeError(DagError):
    """A name used in ``connect``/``sink_for``/a look-up is not a node of the DAG."""


class DuplicateNodeError(DagError):
    """Two nodes (sources, operators or sinks) share a name."""


class SchemaError(DagError):
    """An operator's input schema does not fit its configuration or kernels."""


class FanOutError(DagError):
    """A node has more downstream targets than the routing limit allows."""


class EmptyDagError(DagError):
    """The DAG has no source, or nothing at all."""


class DisconnectedNodeError(DagError):
    """A node has no input (operators) or no path to a sink."""


class PortError(DagError):
    """A ``port=`` on ``connect`` does not fit the downstream operator."""


class KernelError(LaminarError):
    """A user kernel cannot be compiled, returns an unusable type, or raised while running.

    Raised at :meth:`DagBuilder.build` for kernels Numba cannot compile, and by
    the :class:`DagExecutor` call (``process_batch``, ``finish``,
    ``advance_watermark``, ``mark_idle``) during which a kernel raised. That
    call then had no effect at all, and the exception the kernel raised is
    chained as ``__cause__``.

    Attributes
    ----------
    node : str or None
        The operator whose kernel raised (None for build-time errors).
    source : str or None
        The source whose call raised.
    row : int or None
        Position of the first failing row in the batch passed to
        ``process_batch`` (over all its record batches), or None when no
        single row is to blame (e.g. a kernel on a window's result at ``finish``).
    """

    node: str | None = None
    source: str | None = None
    row: int | None = None


class DataError(LaminarError, ValueError):
    """A batch does not match its source's schema or rules; nothing was changed."""


class CheckpointError(LaminarError):
    """A checkpoint is corrupt, truncated, or belongs to another DAG, or a checkpoint or an
    exactly-once sink's epoch cannot be written (full disk, no permission); the previous
    checkpoint then stays intact."""


class PartitioningError(DagError):
    """The DAG cannot be split by key across partitions (``parallelism > 1``)."""


class ClusterError(LaminarError):
    """The cluster cannot be reached, or a partition failed more often than allowed."""


class SqlError(LaminarError, ValueError):
    """SQL that :func:`laminar_jit.sql` cannot read or does not support.

    Attributes
    ----------
    line, column : int or None
        Where in the SQL text (1-based), when known.
    construct : str or None
        The construct at fault, e.g. ``"SESSION"`` or the text sqlglot stopped at.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 construct: str | None = None):
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(message + where)
        self.line, self.column, self.construct = line, column, construct
