"""Compiled execution of a finalized DAG."""

from .executor import DagExecutor
from .metrics import Metrics
from .state import ExecutorState

__all__ = ["DagExecutor", "ExecutorState", "Metrics"]
