"""Floors: the essential work of a query, hand-written as one compiled loop, as yardsticks for the engine.

``q4_floor`` is Nexmark q4 (average closing price per category) as a streaming
regular join must compute it on one thread, whatever the arrival order and
without knowing that auction ids are unique: chunk by chunk in arrival order,
every auction goes into an open-addressing table keyed by id (kept for good,
as in the query), every bid is buffered in a row pool linked into its id's
list until the watermark passes it, each bid probes its id's auction and each
auction probes its id's buffered bids, and a match within ``[A.date_time,
A.expires]`` raises the auction's running maximum. After each chunk, the
watermark (the lower of the two inputs' largest event time, less the delay)
releases the bids no later auction can match, in one pass over the pool. No
Arrow output, no nulls, no late rows, no changelog: what is left is the
memory traffic any engine pays for this join. It keeps one auction per id
(Nexmark's are unique), which the engine does not assume.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Hash table of 2**21 entries (600 K auctions and their ids in 10 M events: load under 0.3).
_BITS = 21
_MULT = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(64 - _BITS)
#: The date_time of an id whose auction has not arrived (no bid matches it); a free pool row's time.
_NEVER = np.iinfo(np.int64).max


@njit(inline="always")
def _entry(ids, k):
    """The entry of id ``k``, or the empty entry where it goes (linear probing)."""
    mask = ids.size - 1
    h = np.int64((np.uint64(k) * _MULT) >> _SHIFT)
    while ids[h] != k and ids[h] != -1:
        h = (h + 1) & mask
    return h


@njit(inline="always")
def _meet(h, start, expires, best, price, t):
    if start[h] <= t <= expires[h] and price > best[h]:
        best[h] = price


@njit(nogil=True)
def _chunk(a_id, a_start, a_expires, a_category, b_auction, b_price, b_time, delay,
           ids, start, expires, category, best, head, pool_auction, pool_price, pool_time, nxt, prv, regs):
    """One chunk: its auctions, then its bids; then the release of bids the watermark passed.

    ``regs``: free-list head, pool high-water mark, largest auction time, largest bid time.
    """
    for i in range(a_id.size):
        h = _entry(ids, a_id[i])
        if ids[h] == -1:
            ids[h] = a_id[i]
            head[h] = -1
        start[h], expires[h], category[h], best[h] = a_start[i], a_expires[i], a_category[i], -1
        r = head[h]
        while r != -1:  # the bids of this id that came first
            _meet(h, start, expires, best, pool_price[r], pool_time[r])
            r = nxt[r]
        regs[2] = max(regs[2], a_start[i])
    for i in range(b_auction.size):
        h = _entry(ids, b_auction[i])
        if ids[h] == -1:
            ids[h], start[h], head[h], best[h] = b_auction[i], _NEVER, -1, -1
        _meet(h, start, expires, best, b_price[i], b_time[i])
        r = regs[0]  # a pool row: the free list's, else a new one
        if r != -1:
            regs[0] = nxt[r]
        else:
            r = regs[1]
            regs[1] = r + 1
        pool_auction[r], pool_price[r], pool_time[r] = b_auction[i], b_price[i], b_time[i]
        nxt[r], prv[r] = head[h], -1
        if head[h] != -1:
            prv[head[h]] = r
        head[h] = r
        regs[3] = max(regs[3], b_time[i])
    watermark = min(regs[2], regs[3]) - delay
    for r in range(regs[1]):
        if pool_time[r] < watermark:
            if prv[r] != -1:
                nxt[prv[r]] = nxt[r]
            else:
                head[_entry(ids, pool_auction[r])] = nxt[r]
            if nxt[r] != -1:
                prv[nxt[r]] = prv[r]
            pool_time[r], nxt[r], regs[0] = _NEVER, regs[0], r


@njit(nogil=True)
def _per_category(ids, category, best, n_categories):
    total, count = np.zeros(n_categories, np.int64), np.zeros(n_categories, np.int64)
    for h in range(ids.size):
        if ids[h] != -1 and best[h] >= 0:
            total[category[h]] += best[h]
            count[category[h]] += 1
    return total, count


def _int64(batch, name: str) -> np.ndarray:
    return batch.column(name).to_numpy().view(np.int64)  # (timestamps as their int64 storage)


def q4_floor(chunks, delay: int = 100, pool_rows: int = 1 << 18, n_categories: int = 1024) -> dict:
    """Nexmark q4's answer, ``{category: average closing price}``, from ``chunks`` (``NexmarkEvents.chunks``)."""
    n = 1 << _BITS
    ids = np.full(n, -1, np.int64)
    start, expires, category, best, head = (np.empty(n, np.int64) for _ in range(5))
    pool = [np.empty(pool_rows, np.int64) for _ in range(5)]
    regs = np.array([-1, 0, -(1 << 62), -(1 << 62)], np.int64)
    for chunk in chunks:
        a, b = chunk["auction"], chunk["bid"]
        if regs[1] + b.num_rows > pool_rows:
            raise RuntimeError("q4_floor: the bid pool is full; give a larger pool_rows")
        _chunk(_int64(a, "id"), _int64(a, "date_time"), _int64(a, "expires"), _int64(a, "category"),
               _int64(b, "auction"), _int64(b, "price"), _int64(b, "date_time"), delay,
               ids, start, expires, category, best, head, *pool, regs)
    total, count = _per_category(ids, category, best, n_categories)
    return {int(c): total[c] / count[c] for c in np.flatnonzero(count)}
