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
    """A user kernel cannot be compiled by Numba or returns an unusable type."""


class DataError(LaminarError, ValueError):
    """A batch does not match its source's schema or rules; nothing was changed."""


class CheckpointError(LaminarError):
    """A checkpoint is corrupt, truncated, or belongs to another DAG."""


class PartitioningError(DagError):
    """The DAG cannot be split by key across partitions (``parallelism > 1``)."""


class ClusterError(LaminarError):
    """The cluster cannot be reached, or a partition failed more often than allowed."""
