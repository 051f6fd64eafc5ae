"""Sorting kernels: a stable LSD radix argsort of (major, minor) int64 pairs.

Window fires order their output by (window end, key). Two comparison argsorts
cost O(n log n) each and dominated the fire of a busy window; the keys and
bounds involved span few bits (dictionary codes, aligned window starts), so a
least-significant-digit radix sort over just the bits that vary takes a
handful of O(n) passes instead.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["argsort_pairs"]

_DIGIT_BITS = 11
_SIGN = np.uint64(1) << np.uint64(63)


@njit
def _ordered(values):
    """``values`` as uint64 in the same order (sign bit flipped) minus their minimum, and the span's bits."""
    n = values.size
    u = np.empty(n, np.uint64)
    lo = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(n):
        v = np.uint64(values[i]) ^ _SIGN
        u[i] = v
        if v < lo:
            lo = v
    hi = np.uint64(0)
    for i in range(n):
        u[i] -= lo
        if u[i] > hi:
            hi = u[i]
    bits = 0
    while hi > 0:
        hi >>= np.uint64(1)
        bits += 1
    return u, bits


@njit
def _radix_pass(u, order, shift, out):
    """Stable counting-sort pass of ``order`` on the digit of ``u`` at ``shift``."""
    size = 1 << _DIGIT_BITS
    mask = np.uint64(size - 1)
    count = np.zeros(size + 1, np.int64)
    sh = np.uint64(shift)
    for j in range(order.size):
        count[np.int64((u[order[j]] >> sh) & mask) + 1] += 1
    for d in range(size):
        count[d + 1] += count[d]
    for j in range(order.size):
        s = order[j]
        d = np.int64((u[s] >> sh) & mask)
        out[count[d]] = s
        count[d] += 1


@njit
def argsort_pairs(major, minor):
    """Indices ordering rows by ``(major, minor)`` ascending; stable (ties keep input order).

    Parameters
    ----------
    major, minor : int64 arrays of equal length

    Returns
    -------
    int64 array
        A permutation of ``range(len(major))``.
    """
    n = major.size
    order = np.arange(n)
    if n < 2:
        return order
    tmp = np.empty(n, np.int64)
    for values in (minor, major):
        u, bits = _ordered(values)
        shift = 0
        while shift < bits:
            _radix_pass(u, order, shift, tmp)
            order, tmp = tmp, order
            shift += _DIGIT_BITS
    return order
