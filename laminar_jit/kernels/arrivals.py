"""Where in a batch a key shard's timer became due: the position its output is merged at.

One executor fires a keyed kernel's timer just before the first row whose
watermark reaches the timer's time. A key shard sees only the rows of its
own keys, so it fires the timer at its next row, which may come later; it
labels the output with the position one executor would have fired it at,
worked out from the batch's per-row watermarks (every shard has them all).
"""

from __future__ import annotations

from .._jit import njit

__all__ = ["first_reaching"]


@njit
def first_reaching(rwm, rw_scalar, rw_cap, rw_floor, t, n):
    """First row position whose watermark reaches ``t``; ``n`` when none does.

    A row's watermark is as the plan's loops compute it: ``rwm[i]`` (or
    ``rw_scalar`` when ``rwm`` is empty), lowered to ``rw_cap`` and then
    raised to ``rw_floor``. ``rwm`` never decreases, so the position is a
    binary search.

    Parameters
    ----------
    rwm : int64[n] or int64[0]
        The source watermark in force before each row of the batch.
    rw_scalar, rw_cap, rw_floor, t : int64
    n : int64
        Rows in the batch.
    """
    if rw_floor >= t:
        return 0
    if rw_cap < t:
        return n
    if rwm.size == 0:
        return 0 if rw_scalar >= t else n
    lo = 0
    hi = rwm.size
    while lo < hi:
        mid = (lo + hi) >> 1
        if rwm[mid] >= t:
            hi = mid
        else:
            lo = mid + 1
    return lo
