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

``q8_floor`` is Nexmark q8 (people who opened an auction in the tumbling 10 s
window they joined) the same way: chunk by chunk in arrival order, each
window's keys live in a table of their own (a ring of as many tables as
windows can be open at once, one cleared when the watermark closes its
window, as a window join's state must be released), an entry per id holding
the window's persons of that id and whether it has sold yet; a person probes
its entry, a seller's first auction of the window (the query's ``DISTINCT``)
probes the persons already there. Names are gathered once, at the end, from
the chunks' own name columns: no string is copied into a dictionary.

``interval_floor`` is the interval join of ``bench_joins.Interval`` (rows of
two streams with equal keys and event times within ``[lower, upper]`` of each
other) the same way, whatever the arrival order: batch by batch as the engine
gets them, each key has an entry in an open-addressing table with its newest
row of each side; each side's rows are a ring in arrival order, each row
linked to its key's row before. A row walks the other side's rows of its key
newest first, stopping where they are older than its range by more than the
watermark's delay (no row is later than that behind the rows before it; a
late row is dropped), then becomes its key's newest row. After each batch,
the oldest rows no future row can match (older than the watermark less the
bound) leave the ring: no pass over live rows, no unlinking, every write
sequential. The pairs' six values are written as they are found and become
the result table at the end. Of three designs tried this is the fastest: a
row pool with a free list and doubly linked lists (17.6-18.0 M rows/s), the
ring with ``%`` instead of a mask (14.5-14.9 M), the ring (21.3-21.5 M).

``interval_bucket_floor`` is the same join with the rows of each side listed
per key *and time bucket* (a table of keys per bucket, in a ring of tables
each cleared when a later bucket takes it), so that a probe reads only the
rows of its key in the (at most two) buckets its range touches, however far
one side runs ahead or however hot a key is, as the engine's interval join
does (README, "Interval and window joins keep each side's rows in per-key
time buckets"). ``interval_floor`` walks every newer row of the key
instead: cheap here (the inputs are a batch apart), but a probe's cost grows
with how far the other side runs ahead.
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


@njit(_nrt=False)
def _window_entry(w, k, open_window, keys, head, sold):
    """The ring slot of window ``w`` (opened if free) and the entry of id ``k`` in its table (added if new);
    ``(-1, -1)`` when another window holds the slot. Without reference counting: a call per row (inlined,
    its array views cost an atomic increment and decrement each: the floor took 89 ms instead of 23)."""
    s = w % open_window.size
    if open_window[s] != w:
        if open_window[s] != -1:
            return -1, -1
        open_window[s] = w
    h = _entry(keys[s], k)
    if keys[s, h] == -1:
        keys[s, h], head[s, h], sold[s, h] = k, -1, False
    return s, h


@njit(nogil=True)
def _q8_chunk(p_id, p_time, p_first, a_seller, a_time, size, regs, keys, head, sold, open_window, nxt,
              out_p, out_id, out_w):
    """One chunk's persons (rows ``p_first``, ... of all persons), then its auctions; then the windows its
    watermark closed are cleared. ``keys``, ``head``, ``sold``: a table per ring slot (window ``w`` in slot
    ``w % slots``, ``open_window`` its window or -1). ``regs``: matches, largest person time, largest auction
    time, watermark delay. Returns 1 when the match arrays are full, 2 when a window finds its slot taken."""
    closed = (min(regs[1], regs[2]) - regs[3]) // size  # windows before this one are closed
    for i in range(p_id.size):
        w = p_time[i] // size
        regs[1] = max(regs[1], p_time[i])
        if w < closed:
            continue  # late
        s, h = _window_entry(w, p_id[i], open_window, keys, head, sold)
        if s < 0:
            return 2
        nxt[p_first + i], head[s, h] = head[s, h], p_first + i
        if sold[s, h]:
            if regs[0] == out_p.size:
                return 1
            out_p[regs[0]], out_id[regs[0]], out_w[regs[0]] = p_first + i, p_id[i], w
            regs[0] += 1
    for i in range(a_seller.size):
        w = a_time[i] // size
        regs[2] = max(regs[2], a_time[i])
        if w < closed:
            continue
        s, h = _window_entry(w, a_seller[i], open_window, keys, head, sold)
        if s < 0:
            return 2
        if sold[s, h]:
            continue  # not the seller's first auction of the window
        sold[s, h] = True
        r = head[s, h]
        while r != -1:  # the persons of this id and window that came first
            if regs[0] == out_p.size:
                return 1
            out_p[regs[0]], out_id[regs[0]], out_w[regs[0]] = r, a_seller[i], w
            regs[0] += 1
            r = nxt[r]
    closed = (min(regs[1], regs[2]) - regs[3]) // size
    for s in range(open_window.size):
        if open_window[s] != -1 and open_window[s] < closed:
            keys[s, :] = -1
            open_window[s] = -1
    return 0


def q8_floor(chunks, delay: int = 100, size: int = 10_000, slots: int = 4, table_bits: int = 16,
             max_rows: int = 1 << 20) -> pa.Table:
    """Nexmark q8's result (``id``, ``name``, ``starttime``) from ``chunks`` (``NexmarkEvents.chunks``).

    Each of the ``slots`` window tables has ``2**table_bits`` entries (the ids of one 10 s window: about 8 K
    in these events, load under 0.15 at the default). Rows of a window the watermark (the lower of the two
    inputs' largest event time, less ``delay``) closed before their chunk are late and dropped.
    """
    keys = np.full((slots, 1 << table_bits), -1, np.int64)
    head = np.empty((slots, 1 << table_bits), np.int64)
    sold = np.zeros((slots, 1 << table_bits), np.bool_)
    open_window = np.full(slots, -1, np.int64)
    nxt = np.empty(max_rows, np.int64)
    out_p, out_id, out_w = (np.empty(max_rows, np.int64) for _ in range(3))
    regs = np.array([0, -(1 << 62), -(1 << 62), delay], np.int64)
    names, n_persons = [], 0
    for chunk in chunks:
        p, a = chunk["person"], chunk["auction"]
        if n_persons + p.num_rows > max_rows:
            raise RuntimeError("q8_floor: out of rows; give a larger max_rows")
        names.append(p.column("name"))
        status = _q8_chunk(_int64(p, "id"), _int64(p, "date_time"), n_persons, _int64(a, "seller"),
                           _int64(a, "date_time"), size, regs, keys, head, sold, open_window, nxt, out_p, out_id,
                           out_w)
        if status:
            raise RuntimeError("q8_floor: " + ("out of rows; give a larger max_rows" if status == 1 else
                                               "more windows open than slots; give more slots"))
        n_persons += p.num_rows
    m = int(regs[0])
    name = pa.chunked_array(names).take(pa.array(out_p[:m]))
    return pa.table({"id": out_id[:m], "name": name, "starttime": out_w[:m] * size})



@njit(inline="always")
def _emit_pair(out, regs, side, t, value, other_t, other_value, key):
    """Write a pair's six values (left ts, key, a, right ts, key, b) as ``out``'s next column; False when full."""
    m = regs[0]
    if m == out.shape[1]:
        return False
    if side == 0:
        out[0, m], out[2, m], out[3, m], out[5, m] = t, value, other_t, other_value
    else:
        out[0, m], out[2, m], out[3, m], out[5, m] = other_t, other_value, t, value
    out[1, m] = out[4, m] = key
    regs[0] = m + 1
    return True


def _pairs_table(out, regs) -> pa.Table:
    """The pairs written so far as the engine's columns for ``bench_joins.Interval``."""
    m = int(regs[0])
    names, types = ["ts", "k", "a", "ts_right", "k_right", "b"], [np.int64, np.int64, None] * 2
    return pa.table({name: out[j, :m].astype(t) if t else out[j, :m] for j, (name, t) in enumerate(zip(names, types))})


@njit(inline="always")
def _drop_dead_rows(lo, hi, regs, ring_ts):
    """After a batch: each side's oldest rows that no future row can match leave its ring (``regs`` as in
    :func:`_interval_batch`; the watermark is the lower of the two sides' largest time less the delay)."""
    mask = ring_ts.shape[1] - 1
    watermark = min(regs[3], regs[4]) - regs[5]
    for s in range(2):  # a left row is dead once no right row can reach it, and the other way round
        dead = watermark - (hi if s == 0 else -lo)
        j = regs[6 + s]
        while j < regs[1 + s] and ring_ts[s, j & mask] < dead:
            j += 1
        regs[6 + s] = j


@njit(nogil=True)
def _interval_batch(side, ts, k, v, lo, hi, regs, keys, heads, ring_ts, ring_v, ring_nxt, out):
    """One batch of ``side`` (0: left, 1: right): each row probes the other side's rows of its key, newest
    first, then becomes its key's newest row of its side; then the side's oldest rows that no future row
    can match are dropped. ``lo``, ``hi``: a right row matches a left row when ``lo <= right.ts - left.ts
    <= hi``. Each side's rows are a ring (``ring_ts``, ``ring_v``, ``ring_nxt[side]``: time,
    value, the number of its key's row before) in arrival order, numbered from the first row
    ever; row ``j`` is at ``j % ring size``, and rows below ``regs[6 + side]`` are gone. ``regs``: pairs, the
    next row number of each side, largest left and right time, watermark delay, first live row of each
    side. ``out``: six rows of pair values (left ts, key, a, right ts, key, b). Returns 1 when a ring or
    ``out`` is full."""
    mask = ring_ts.shape[1] - 1  # (a power of two)
    d_lo, d_hi = (lo, hi) if side == 0 else (-hi, -lo)  # the other side's times, relative to this row's
    other, delay = 1 - side, regs[5]
    for i in range(ts.size):
        if ts[i] < regs[3 + side] - delay:
            continue  # late: behind its side's watermark
        h = _entry(keys, k[i])
        if keys[h] == -1:
            keys[h], heads[h, 0], heads[h, 1] = k[i], -1, -1
        j = heads[h, other]
        while j >= regs[6 + other]:  # a row was at most ``delay`` behind the rows before it, so the walk
            x = j & mask  # stops at the first row that far before the range
            dt = ring_ts[other, x] - ts[i]
            if dt < d_lo - delay:
                break
            if d_lo <= dt <= d_hi and not _emit_pair(out, regs, side, ts[i], v[i], ring_ts[other, x],
                                                     ring_v[other, x], k[i]):
                return 1
            j = ring_nxt[other, x]
        j = regs[1 + side]
        if j - regs[6 + side] > mask:
            return 1
        x = j & mask
        ring_ts[side, x], ring_v[side, x], ring_nxt[side, x] = ts[i], v[i], heads[h, side]
        heads[h, side] = j
        regs[1 + side] = j + 1
        regs[3 + side] = max(regs[3 + side], ts[i])
    _drop_dead_rows(lo, hi, regs, ring_ts)
    return 0


def interval_floor(feed, lower: int, upper: int, delay: int = 100, ring_rows: int = 1 << 20,
                   table_bits: int = 15, max_pairs: int = 1 << 22) -> pa.Table:
    """The interval join of ``feed`` (``(side, batch)`` pairs, side ``"left"`` or ``"right"``, each batch with
    ``ts``, ``k`` and one float value column) on equal ``k`` and ``lower <= right.ts - left.ts <= upper``:
    a table of ``ts, k, a, ts_right, k_right, b`` (the engine's column names for ``bench_joins.Interval``).

    The watermark is the lower of the two sides' largest time less ``delay``. Each side keeps up to
    ``ring_rows`` rows from its oldest live one; the key table has ``2**table_bits`` entries.
    """
    keys = np.full(1 << table_bits, -1, np.int64)
    heads = np.empty((1 << table_bits, 2), np.int64)
    ring_ts, ring_v, ring_nxt = (np.empty((2, ring_rows), t) for t in (np.int64, np.float64, np.int64))
    out = np.empty((6, max_pairs), np.float64)  # (times and keys are exact below 2**53)
    regs = np.array([0, 0, 0, -(1 << 62), -(1 << 62), delay, 0, 0], np.int64)
    for side, batch in feed:
        if _interval_batch(0 if side == "left" else 1, _int64(batch, "ts"), _int64(batch, "k"),
                           batch.column(2).to_numpy(), lower, upper, regs, keys, heads, ring_ts, ring_v, ring_nxt,
                           out):
            raise RuntimeError("interval_floor: a ring or the pairs are full; give larger ring_rows, max_pairs")
    return _pairs_table(out, regs)


@njit(inline="always")
def _bucket_entry(tkeys, r, k):
    """The entry of key ``k`` in table ``r``, or the empty entry where it goes (:func:`_entry` in a row of
    ``tkeys``, without a view of the row: a view per probe costs reference counting)."""
    mask = tkeys.shape[1] - 1
    h = np.int64((np.uint64(k) * _MULT) >> _SHIFT) & mask
    while tkeys[r, h] != k and tkeys[r, h] != -1:
        h = (h + 1) & mask
    return h


@njit(nogil=True)
def _bucket_batch(side, ts, k, v, lo, hi, shift, regs, tkeys, tbucket, theads, ring_ts, ring_v, ring_nxt, out):
    """:func:`_interval_batch` with each side's rows listed per key *and time bucket* (``t >> shift``, at least
    the range wide, so a probe looks at two buckets at most): bucket ``b`` has table ``b % R`` of
    ``tkeys``/``theads`` (``tbucket[r]``: the bucket it holds), whose entry per key holds the newest row of
    each side in that bucket, each row linked to the one before it in the same list. A probe walks the rows
    of its key in the buckets its range touches and nothing else, however far ahead the other side runs; a
    table is cleared in one pass when a later bucket takes it, once nothing can reach its bucket any more.
    Returns 1 when a ring or ``out`` is full, 2 when a bucket would take a table still in use."""
    mask = ring_ts.shape[1] - 1
    tables = tbucket.size
    d_lo, d_hi = (lo, hi) if side == 0 else (-hi, -lo)
    other, delay = 1 - side, regs[5]
    for i in range(ts.size):
        t = ts[i]
        if t < regs[3 + side] - delay:
            continue  # late: behind its side's watermark
        key = k[i]
        b = (t + d_hi) >> shift
        while b >= (t + d_lo) >> shift:  # the other side's rows of this key in the buckets of the range
            r = b % tables
            if tbucket[r] == b:
                h = _bucket_entry(tkeys, r, key)
                if tkeys[r, h] == key:
                    j = theads[r, h, other]
                    while j >= regs[6 + other]:  # (rows before the first live one are gone)
                        x = j & mask
                        dt = ring_ts[other, x] - t
                        if d_lo <= dt <= d_hi and not _emit_pair(out, regs, side, t, v[i], ring_ts[other, x],
                                                                 ring_v[other, x], key):
                            return 1
                        j = ring_nxt[other, x]
            b -= 1
        b = t >> shift
        r = b % tables
        if tbucket[r] != b:  # a new bucket takes the table of one nothing can reach any more
            # (a row that is not late is at least the lower side's largest time less the delay, and reaches back
            # at most the wider bound)
            if tbucket[r] >= 0 and ((tbucket[r] + 1) << shift) + max(hi, -lo) > min(regs[3], regs[4]) - delay:
                return 2
            for e in range(tkeys.shape[1]):
                tkeys[r, e] = -1
            tbucket[r] = b
        h = _bucket_entry(tkeys, r, key)
        if tkeys[r, h] != key:
            tkeys[r, h], theads[r, h, 0], theads[r, h, 1] = key, -1, -1
        j = regs[1 + side]
        if j - regs[6 + side] > mask:
            return 1
        x = j & mask
        ring_ts[side, x], ring_v[side, x], ring_nxt[side, x] = t, v[i], theads[r, h, side]
        theads[r, h, side] = j
        regs[1 + side] = j + 1
        regs[3 + side] = max(regs[3 + side], t)
    _drop_dead_rows(lo, hi, regs, ring_ts)
    return 0


def interval_bucket_floor(feed, lower: int, upper: int, delay: int = 100, ring_rows: int = 1 << 20,
                          spans: int = 16, tables: int = 8, table_bits: int = 15, max_pairs: int = 1 << 22) -> pa.Table:
    """:func:`interval_floor` with rows listed per key and time bucket (:func:`_bucket_batch`): the floor of a
    join whose probes stay bounded when one side runs far ahead of the other or a key is hot.

    Buckets are the smallest power of two of milliseconds at least ``spans`` ranges wide (the engine's
    ``BUCKET_SPANS``); ``tables`` of them can be in use at once (the live rows' span over the bucket width,
    plus two), each with ``2**table_bits`` entries. The defaults were the fastest for ``bench_joins.Interval``
    (1 / 2 / 4 / 8 / 16 / 32 spans: 9.8 / 11.5 / 15.4 / 17.3 / 18.8 / 13.9 M input rows/s, one sitting).
    """
    shift = (spans * (upper - lower)).bit_length()  # 2**shift > spans * (upper - lower)
    tkeys = np.full((tables, 1 << table_bits), -1, np.int64)
    tbucket = np.full(tables, -1, np.int64)
    theads = np.empty((tables, 1 << table_bits, 2), np.int64)
    ring_ts, ring_v, ring_nxt = (np.empty((2, ring_rows), t) for t in (np.int64, np.float64, np.int64))
    out = np.empty((6, max_pairs), np.float64)
    regs = np.array([0, 0, 0, -(1 << 62), -(1 << 62), delay, 0, 0], np.int64)
    for side, batch in feed:
        status = _bucket_batch(0 if side == "left" else 1, _int64(batch, "ts"), _int64(batch, "k"),
                               batch.column(2).to_numpy(), lower, upper, shift, regs, tkeys, tbucket, theads,
                               ring_ts, ring_v, ring_nxt, out)
        if status:
            raise RuntimeError("interval_bucket_floor: " + ("a ring or the pairs are full; give larger ring_rows, "
                               "max_pairs" if status == 1 else "more buckets in use than tables; give more tables"))
    return _pairs_table(out, regs)
