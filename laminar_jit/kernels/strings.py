"""Strings kept as codes of a :class:`~laminar_jit.state.dictionary.StringDictionary`, compared by their bytes.

A dictionary stores its values as one byte buffer and int64 offsets (the ``large_string`` layout); codes
follow first appearance, so they say nothing of order. Comparing two codes' bytes orders them as their
UTF-8 bytes do, which is the order of their code points (SQL's binary collation, DuckDB's default).
"""

from __future__ import annotations

from .._jit import njit

__all__ = ["str_less"]


@njit
def str_less(offsets, data, a, b):
    """Whether the value of code ``a`` sorts before the value of code ``b`` (byte by byte, then shorter first).

    Parameters
    ----------
    offsets : numpy.ndarray
        int64: value ``c`` is ``data[offsets[c]:offsets[c + 1]]``.
    data : numpy.ndarray
        uint8 bytes of every value.
    a, b : int
        Codes (not null).
    """
    a0 = offsets[a]
    b0 = offsets[b]
    la = offsets[a + 1] - a0
    lb = offsets[b + 1] - b0
    m = la if la < lb else lb
    for i in range(m):
        ca = data[a0 + i]
        cb = data[b0 + i]
        if ca != cb:
            return ca < cb
    return la < lb
