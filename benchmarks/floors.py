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

``q3_floor`` is Nexmark q3 (category-10 auctions of sellers in OR, ID or CA) the
same way: chunk by chunk in arrival order, each chunk's persons are filtered
by state with Arrow (as the engine's ``ArrowMap`` does) and the kept ones are
retained as they are, their strings never copied into a dictionary; a
compiled loop puts each kept person into a table keyed by id and probes the
category-10 auctions already kept under that id, and keeps each category-10
auction in its seller's list and probes the seller's person; both sides are
kept for good, as in the query. The matches are gathered into the result
table (name, city, state, auction id) once, at the end. Besides the compiled
loop it pays Python and Arrow per chunk, as any engine fed these chunks does.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

#: Hash table of 2**21 entries (600 K auctions and their ids in 10 M events: load under 0.3).
_BITS = 21
_MULT = np.uint64(0x9E3779B97F4A7C15)
#: An entry is the top 24 bits of a multiplicative hash, cut to the table's size.
_SHIFT = np.uint64(64 - 24)
#: The date_time of an id whose auction has not arrived (no bid matches it); a free pool row's time.
_NEVER = np.iinfo(np.int64).max


@njit(inline="always")
def _entry(ids, k):
    """The entry of id ``k``, or the empty entry where it goes (linear probing)."""
    mask = ids.size - 1  # (a power of two, at most 2**24)
    h = np.int64((np.uint64(k) * _MULT) >> _SHIFT) & mask
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


#: q3's states.
_Q3_STATES = pa.array(["OR", "ID", "CA"])


@njit(nogil=True)
def _q3_chunk(p_id, p_first, a_id, a_seller, a_category, ids, person, head, nxt, a_ids, regs, out_p, out_a):
    """One chunk's kept persons (rows ``p_first``, ... of all kept persons), then its auctions; matches go to
    ``out_p`` (kept person row) and ``out_a`` (auction id). ``regs``: auctions kept, matches. Returns False
    when the auction or match arrays are full."""
    for i in range(p_id.size):
        h = _entry(ids, p_id[i])
        if ids[h] == -1:
            ids[h], head[h] = p_id[i], -1
        person[h] = p_first + i
        r = head[h]
        while r != -1:  # the category-10 auctions of this seller that came first
            if regs[1] == out_p.size:
                return False
            out_p[regs[1]], out_a[regs[1]] = p_first + i, a_ids[r]
            regs[1] += 1
            r = nxt[r]
    for i in range(a_id.size):
        if a_category[i] != 10:
            continue
        if regs[0] == a_ids.size or regs[1] == out_p.size:
            return False
        h = _entry(ids, a_seller[i])
        if ids[h] == -1:
            ids[h], person[h], head[h] = a_seller[i], -1, -1
        r = regs[0]
        regs[0] = r + 1
        a_ids[r], nxt[r], head[h] = a_id[i], head[h], r
        if person[h] != -1:
            out_p[regs[1]], out_a[regs[1]] = person[h], a_id[i]
            regs[1] += 1
    return True


def q3_floor(chunks, max_rows: int = 1 << 20, table_bits: int = 19) -> pa.Table:
    """Nexmark q3's result (``name``, ``city``, ``state``, ``id``) from ``chunks`` (``NexmarkEvents.chunks``).

    The id table has ``2**table_bits`` entries (kept persons and the sellers of category-10 auctions: about
    140 K in 10 M events, load under 0.3 at the default).
    """
    n = 1 << table_bits
    ids = np.full(n, -1, np.int64)
    person, head = np.empty(n, np.int64), np.empty(n, np.int64)
    nxt, a_ids = np.empty(max_rows, np.int64), np.empty(max_rows, np.int64)
    out_p, out_a = np.empty(max_rows, np.int64), np.empty(max_rows, np.int64)
    regs = np.zeros(2, np.int64)
    kept, n_kept = [], 0
    for chunk in chunks:
        p, a = chunk["person"], chunk["auction"]
        p = p.select(["id", "name", "city", "state"]).filter(pc.is_in(p.column("state"), value_set=_Q3_STATES))
        kept.append(p.select(["name", "city", "state"]))
        if not _q3_chunk(_int64(p, "id"), n_kept, _int64(a, "id"), _int64(a, "seller"), _int64(a, "category"),
                         ids, person, head, nxt, a_ids, regs, out_p, out_a):
            raise RuntimeError("q3_floor: out of rows; give a larger max_rows")
        n_kept += p.num_rows
    people = pa.Table.from_batches(kept).combine_chunks()
    m = int(regs[1])
    return people.take(pa.array(out_p[:m])).append_column("id", pa.array(out_a[:m]))
