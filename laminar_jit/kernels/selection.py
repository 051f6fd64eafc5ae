"""Selection-vector kernels used by compiled plans.

A selection vector is an int32 array of row indices into a column space (a
source batch's columns plus the columns operators derive). Filters shrink it,
multicast shares it, fan-in appends, and sinks gather through it.

Validity masks are boolean arrays; an **empty** mask means "no nulls", so
columns without nulls cost nothing.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["NULL_KEY", "bits_set", "concat", "gather", "identity", "is_identity", "keys_valid", "negated", "nonzero",
           "scatter", "shifted", "valid_or_ones"]

#: The int64 a null key is held as: the key of the group of null keys (sorts first).
NULL_KEY = np.iinfo(np.int64).min


@njit
def identity(n):
    """The selection of all ``n`` rows: ``0, 1, …, n-1`` as int32."""
    out = np.empty(n, np.int32)
    for i in range(n):
        out[i] = i
    return out


@njit
def is_identity(rows, n):
    """True when ``rows`` selects every one of ``n`` rows in order."""
    if rows.size != n:
        return False
    for i in range(n):
        if rows[i] != i:
            return False
    return True


@njit
def gather(values, sel):
    """``values[sel]`` as an explicit loop (compiles faster than fancy indexing, same speed)."""
    out = np.empty(sel.size, values.dtype)
    for j in range(sel.size):
        out[j] = values[sel[j]]
    return out


@njit
def concat(a, b):
    """Concatenate two 1-d arrays of one dtype (fan-in appends selections)."""
    out = np.empty(a.size + b.size, a.dtype)
    # Element loops, not ``out[:k] = a``: Numba compiles an array-to-slice
    # assignment with a shape-mismatch error whose message formatting costs
    # about 5 s of a cold first compile (measured on numba 0.68); a loop has
    # no such path and runs as fast.
    for i in range(a.size):
        out[i] = a[i]
    for i in range(b.size):
        out[a.size + i] = b[i]
    return out


@njit
def valid_or_ones(valid, size):
    """``valid``, or an all-true mask of ``size`` when it is empty ("no nulls")."""
    if valid.size == 0:
        return np.ones(size, np.bool_)
    return valid


@njit
def scatter(compact, sel, n):
    """An array of length ``n`` holding ``compact[j]`` at row ``sel[j]`` (empty stays empty)."""
    if compact.size == 0:
        return compact
    out = np.empty(n, compact.dtype)
    for j in range(sel.size):
        out[sel[j]] = compact[j]
    return out


@njit
def keys_valid(keys):
    """Which of the int64 ``keys`` are not the null key (the int64 minimum).

    A loop in a cached kernel: written in a plan as an array expression
    (``keys != WM_MIN``), Numba compiles a ufunc-like loop for it anew in
    every plan (some 30 ms of compile time each).
    """
    out = np.empty(keys.size, np.bool_)
    for i in range(keys.size):
        out[i] = keys[i] != NULL_KEY
    return out


@njit
def negated(flags):
    """``~flags`` for a bool array, as a cached kernel (see :func:`keys_valid`)."""
    out = np.empty(flags.size, np.bool_)
    for i in range(flags.size):
        out[i] = not flags[i]
    return out


@njit
def bits_set(words, bit):
    """Whether bit ``bit`` of each int64 of ``words`` is set (see :func:`keys_valid`)."""
    out = np.empty(words.size, np.bool_)
    for i in range(words.size):
        out[i] = (words[i] >> bit) & 1 == 1
    return out


@njit
def shifted(values, by):
    """``values + by`` for an int64 array and a scalar (see :func:`keys_valid`)."""
    out = np.empty(values.size, np.int64)
    for i in range(values.size):
        out[i] = values[i] + by
    return out


@njit
def nonzero(values):
    """``values != 0`` for an int64 array (see :func:`keys_valid`)."""
    out = np.empty(values.size, np.bool_)
    for i in range(values.size):
        out[i] = values[i] != 0
    return out
