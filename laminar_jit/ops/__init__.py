"""Python-facing operators: configuration, schema binding, and their kernels."""

from .base import Bound, Operator
from .kernel import Kernel, kernel
from .stateless import Filter, Map, Project

__all__ = ["Bound", "Filter", "Kernel", "Map", "Operator", "Project", "kernel"]
