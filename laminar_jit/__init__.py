"""laminar_jit — an embedded, vectorized stream-processing engine.

Events arrive as Apache Arrow record batches; operators are Numba kernels
over numpy views of the columns; a finalized DAG runs through one compiled
step per source.
"""

from ._progress import show_compile_progress
from .checkpoint import Checkpoint
from .dag import DagBuilder, RoutingTable, StreamingDag
from .errors import (
    CheckpointError,
    ClusterError,
    CycleError,
    DagError,
    DataError,
    DisconnectedNodeError,
    DuplicateNodeError,
    EmptyDagError,
    FanOutError,
    KernelError,
    LaminarError,
    PartitioningError,
    PortError,
    SchemaError,
    SqlError,
    UnknownNodeError,
)
from .executor import DagExecutor, Metrics
from .ops import ArrowMap, Filter, Kernel, Map, Project, kernel
from .changelog import RowKind, apply_changelog
from .ops.dedup import Dedup
from .ops.group import GroupAggregate
from .ops.joins import AsofJoin, IntervalJoin, TemporalJoin, WindowJoin
from .ops.over import OverAggregate
from .ops.topn import TopN
from .ops.aggregates import (Agg, UserAggregate, count, count_distinct, first, last, max, mean, min, stddev_pop,
                             stddev_samp, sum, var_pop, var_samp)
from .ops.keyed import NO_TIMER, KeyedKernel
from .ops.windows import SessionWindow, SlidingWindow, TumblingWindow
from .time import Ascending, BoundedOutOfOrderness, ProcessingTime
from . import io, nexmark, recipes  # noqa: F401 - lj.io.ParquetSink, lj.nexmark.query, lj.recipes.zscore, ...
from .runner import RunStats, run


def sql(text, sources, udfs=None):
    """Compile Flink-style SQL into a :class:`StreamingDag` (see :func:`laminar_jit.sql_compiler.sql`)."""
    from .sql_compiler import sql as compile_sql  # sqlglot is imported on first use, not with the package

    return compile_sql(text, sources, udfs)


def explain(text, sources, udfs=None):
    """The plan :func:`sql` makes of ``text``, one line per node (see :func:`laminar_jit.sql_compiler.explain`)."""
    from .sql_compiler import explain as explain_sql

    return explain_sql(text, sources, udfs)

__version__ = "0.1.0"

__all__ = [
    "Agg",
    "ArrowMap",
    "Ascending",
    "AsofJoin",
    "IntervalJoin",
    "TemporalJoin",
    "WindowJoin",
    "SessionWindow",
    "SlidingWindow",
    "TumblingWindow",
    "UserAggregate",
    "count",
    "count_distinct",
    "first",
    "last",
    "max",
    "mean",
    "min",
    "stddev_pop",
    "stddev_samp",
    "sum",
    "var_pop",
    "var_samp",
    "BoundedOutOfOrderness",
    "Checkpoint",
    "CheckpointError",
    "ClusterError",
    "CycleError",
    "DagBuilder",
    "DagError",
    "DagExecutor",
    "DataError",
    "Dedup",
    "DisconnectedNodeError",
    "DuplicateNodeError",
    "EmptyDagError",
    "FanOutError",
    "GroupAggregate",
    "Filter",
    "Kernel",
    "KeyedKernel",
    "KernelError",
    "LaminarError",
    "PartitioningError",
    "Map",
    "Metrics",
    "NO_TIMER",
    "OverAggregate",
    "PortError",
    "ProcessingTime",
    "RunStats",
    "Project",
    "RoutingTable",
    "RowKind",
    "SchemaError",
    "SqlError",
    "explain",
    "sql",
    "StreamingDag",
    "TopN",
    "UnknownNodeError",
    "apply_changelog",
    "io",
    "nexmark",
    "kernel",
    "recipes",
    "run",
    "show_compile_progress",
]
