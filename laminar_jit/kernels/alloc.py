"""Array allocation for generated plans, compiled once and cached on disk.

Numba compiles its own ``np.empty``, ``np.full`` and ``np.zeros`` anew in every
process, for every (shape, dtype) that newly compiled code allocates: about
0.1–0.2 s each on two cores, paid again by every new plan. Plans allocate
through these functions instead, so a new plan links machine code loaded from
the cache. They compile exactly as the numpy calls they wrap, and allocation is
never inside a per-row loop, so the extra call costs nothing measurable.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["empty", "full", "zeros"]


@njit
def empty(shape, dtype):
    """``np.empty(shape, dtype)``."""
    return np.empty(shape, dtype)


@njit
def full(shape, value, dtype):
    """``np.full(shape, value, dtype)``."""
    return np.full(shape, value, dtype)


@njit
def zeros(shape, dtype):
    """``np.zeros(shape, dtype)``."""
    return np.zeros(shape, dtype)
