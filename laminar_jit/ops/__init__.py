"""Python-facing operators: configuration, schema binding, and their kernels."""

from .base import Bound, Operator
from .kernel import Kernel, kernel
from .stateless import ArrowMap, Filter, Map, Project

__all__ = ["ArrowMap", "Bound", "Filter", "Kernel", "Map", "Operator", "Project", "kernel"]
