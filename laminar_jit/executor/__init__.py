"""Compiled execution of a finalized DAG."""

from .executor import DagExecutor
from .metrics import Metrics

__all__ = ["DagExecutor", "Metrics"]
