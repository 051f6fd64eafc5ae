"""Byte strings to dense codes: the kernels of :class:`~laminar_jit.state.StringDictionary`.

A dictionary keeps its strings in one table of :mod:`.hashtable` (width 2,
no deletes, so slots are handed out 0, 1, 2, … and a slot *is* a code),
keyed by a 128-bit fingerprint of the bytes, and the bytes themselves in an
append-only store (``store_offsets``/``store_data``).

Interning mostly-distinct strings (ids, urls, free text) is bound by memory
latency, not arithmetic: each new string probes a random bucket of a table
that outgrows the caches, and a repeat then reads its slot's key and bytes.
:func:`intern_bytes` therefore works in blocks of :data:`BLOCK` strings:
it fingerprints a block and asks the memory for each string's bucket, then
for the slots those buckets hold, and only then probes (the probe itself is
the ordinary one, in input order, so codes follow first appearance exactly).
On 9.2 M distinct 40–96-byte strings this took 141–180 ns a string against
365–590 ns probing one string at a time.

Repeated strings (symbols, device ids, names, log levels) are the opposite
case: few values, each seen again and again, so the table and the bytes stay
in the caches and the cost is the per-row work. :func:`intern_rows` hashes
each row with one cheap stream (:func:`quick_hash`), looks in a small
direct-mapped cache of recent codes and confirms a hit by comparing bytes
(eight at a time); only a miss fingerprints the string and probes the table.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing
from .hashtable import _GOLDEN, _MUL1, _MUL2, _S31, _finalize, _grow_if_full, _home, _take_slot, mix64
from .memory import load_u64, prefetch, store_u64

__all__ = ["BLOCK", "fingerprint_bytes", "intern_bytes", "intern_rows", "quick_hash"]

#: Strings fingerprinted, and their buckets and slots requested from memory, before any is probed.
BLOCK = 16

# Two streams over 8-byte words, each a multiply-xorshift with its own seed and multiplier (splitmix64's).
_SEED0 = np.uint64(0xCBF29CE484222325)
_SEED1 = np.uint64(0x84222325CBF29CE4)
_S29 = np.uint64(29)
_S8 = np.uint64(8)


@njit_borrowing
def _tail(data, p, n):
    """The last ``n`` (1-7) bytes of a string from ``p`` as a little-endian uint64, zero-padded."""
    w = np.uint64(0)
    for i in range(n):
        w |= np.uint64(data[p + i]) << (_S8 * np.uint64(i))
    return w


@njit_borrowing
def _last_word(data, p, n):
    """:func:`_tail` as one load and a mask, where the buffer has 8 bytes from ``p``."""
    if p + 8 <= data.size:
        return load_u64(data, p) & ((np.uint64(1) << (_S8 * np.uint64(n))) - np.uint64(1))
    return _tail(data, p, n)


@njit_borrowing
def fingerprint_bytes(data, start, stop):
    """Two independent 64-bit hashes of ``data[start:stop]`` (uint8), as int64 (a width-2 key).

    Eight bytes a step (one unaligned load; the last word zero-padded, the
    length mixed in at the end), each stream a multiply and xorshift per
    word, then the splitmix64 output function. A dictionary
    rebuilds its table from its values when a snapshot loads, so the function
    may change between versions.
    """
    h0 = _SEED0
    h1 = _SEED1
    p = start
    while p + 8 <= stop:
        w = load_u64(data, p)
        h0 = (h0 ^ w) * _MUL1
        h0 ^= h0 >> _S29
        h1 = (h1 ^ w) * _MUL2
        h1 ^= h1 >> _S31
        p += 8
    if p < stop:
        w = _last_word(data, p, stop - p)
        h0 = (h0 ^ w) * _MUL1
        h0 ^= h0 >> _S29
        h1 = (h1 ^ w) * _MUL2
        h1 ^= h1 >> _S31
    n = np.uint64(stop - start)
    return np.int64(_finalize(h0 ^ n)), np.int64(_finalize(h1 + n * _GOLDEN))


@njit_borrowing
def _equal_bytes(data, start, stop, store_data, store_start, store_stop):
    """Whether two byte strings are equal, compared eight bytes at a time."""
    n = stop - start
    if n != store_stop - store_start:
        return False
    p = 0
    while p + 8 <= n:
        if load_u64(data, start + p) != load_u64(store_data, store_start + p):
            return False
        p += 8
    if p < n:
        return _last_word(data, start + p, n - p) == _last_word(store_data, store_start + p, n - p)
    return True


@njit_borrowing
def _append_bytes(data, start, stop, store_data, at):
    """Copy ``data[start:stop]`` to ``store_data[at:]``, eight bytes at a time.

    A slice assignment per new string took a reference to each slice (two
    atomic operations each) and went through the broadcasting checks.
    """
    n = stop - start
    p = 0
    while p + 8 <= n:
        store_u64(store_data, at + p, load_u64(data, start + p))
        p += 8
    while p < n:
        store_data[at + p] = data[start + p]
        p += 1


@njit
def intern_bytes(buckets, keys, meta, free, offsets, data, store_offsets, store_data, out_codes):
    """Give each byte string a dense code, appending the strings not seen before.

    The strings are ``data[offsets[i]:offsets[i + 1]]``; ``buckets``,
    ``keys``, ``meta`` and ``free`` are the dictionary's table (see the module
    docstring), and the bytes of code ``c`` are
    ``store_data[store_offsets[c]:store_offsets[c + 1]]``. A hit is confirmed
    by comparing bytes, and on a fingerprint collision the second hash is
    re-mixed and the probe continues, so codes are exact whatever the hash
    quality. Strings are probed in input order (a repeat gets the code of its
    first appearance), a block at a time after prefetching what the block's
    probes will read. The caller guarantees ``len(offsets) - 1`` free slots,
    ``store_offsets`` of length ``slot_cap + 1`` and room in ``store_data``
    for every byte of the input (and a bucket array at least twice the
    strings it will then hold: the active buckets double within it as
    strings are added, so a probe always meets an empty bucket). Returns the number of new
    strings, or -1 when no slot was free (the caller did not reserve).
    """
    added = 0
    m = offsets.size - 1
    slot_cap = keys.shape[0]
    fp0 = np.empty(BLOCK, np.int64)
    fp1 = np.empty(BLOCK, np.int64)
    for first in range(0, m, BLOCK):
        last = min(m, first + BLOCK)
        mask = meta[4] - 1  # (inserts may double the active buckets)
        for i in range(first, last):  # fingerprints, and a request for each home bucket
            k0, k1 = fingerprint_bytes(data, offsets[i], offsets[i + 1])
            fp0[i - first] = k0
            fp1[i - first] = k1
            prefetch(buckets, _home(k0, k1, mask))
        for i in range(first, last):  # the slots those buckets hold: their keys and store offsets
            s = buckets[_home(fp0[i - first], fp1[i - first], mask)]
            if s >= 0:
                prefetch(keys, 2 * np.int64(s))
                prefetch(store_offsets, np.int64(s))
        for i in range(first, last):
            start = offsets[i]
            stop = offsets[i + 1]
            k0 = fp0[i - first]
            k1 = fp1[i - first]
            code = np.int64(-1)
            while code < 0:
                # ht_upsert's probe, written out: as a call per string (Numba does not inline it:
                # it takes four arrays) it cost a third of the time of short repeated strings
                mask = meta[4] - 1
                b = _home(k0, k1, mask)
                slot = np.int64(-1)
                inserted = False
                while True:
                    s = buckets[b]
                    if s == -1:
                        slot = _take_slot(meta, free, slot_cap)
                        if slot >= 0:
                            keys[slot, 0] = k0
                            keys[slot, 1] = k1
                            buckets[b] = slot
                            meta[0] += 1
                            _grow_if_full(buckets, keys, meta, free)
                            inserted = True
                        break
                    if keys[s, 0] == k0 and keys[s, 1] == k1:
                        slot = np.int64(s)
                        break
                    b = (b + 1) & mask
                if slot < 0:
                    return -1
                if inserted:
                    end = store_offsets[slot]
                    _append_bytes(data, start, stop, store_data, end)
                    store_offsets[slot + 1] = end + (stop - start)
                    added += 1
                    code = slot
                elif _equal_bytes(data, start, stop, store_data, store_offsets[slot], store_offsets[slot + 1]):
                    code = slot
                else:
                    k1 = np.int64(mix64(k1))
            out_codes[i] = code
    return added


@njit_borrowing
def quick_hash(data, start, stop, shift):
    """A hash of ``data[start:stop]`` in ``64 - shift`` bits (``shift`` 1-64), for :func:`intern_rows`'
    cache: a multiply per eight bytes and the top bits of the product (a cache slot is a hint: a hit is
    confirmed by comparing bytes, so it need not be strong, only cheap)."""
    h = np.uint64(stop - start) * _GOLDEN
    p = start
    while p + 8 <= stop:
        h = (h ^ load_u64(data, p)) * _MUL1
        p += 8
    if p < stop:
        h = (h ^ _last_word(data, p, stop - p)) * _MUL1
    return np.int64((h >> np.uint64(shift - 1)) >> np.uint64(1))  # (two shifts: 64 bits is one too many for one)


@njit
def intern_rows(at, offsets, data, valid, cache, buckets, keys, meta, free, store_offsets, store_data, out_codes):
    """:func:`intern_bytes` for strings that repeat: each row's code, from row ``at`` on, through a cache.

    ``cache`` (a power of two long) maps :func:`quick_hash` of a string to the
    code last seen with that hash, or -1; a hit is confirmed by comparing bytes
    with the store, and a miss fingerprints the string and probes the table
    as :func:`intern_bytes` does (appending a new string), then takes the
    cache slot. Rows where ``valid`` (empty: every row) is False get code
    -1. Rows are taken in order, so codes follow first appearance. The call
    stops before a new string that finds no free slot, half the bucket array used,
    or too few bytes left in ``store_data``, so the caller reserves as it
    goes. Returns the row it stopped at (``len(offsets) - 1`` when done), the
    new strings and the cache misses.
    """
    m = offsets.size - 1
    shift = 64  # 64 - log2 of the cache's length (a power of two)
    c = cache.size
    while c > 1:
        c >>= 1
        shift -= 1
    slot_cap = keys.shape[0]
    added = 0
    misses = 0
    for i in range(at, m):
        if valid.size and not valid[i]:
            out_codes[i] = -1
            continue
        start = offsets[i]
        stop = offsets[i + 1]
        h = quick_hash(data, start, stop, shift)
        c = cache[h]
        if c >= 0 and _equal_bytes(data, start, stop, store_data, store_offsets[c], store_offsets[c + 1]):
            out_codes[i] = c
            continue
        misses += 1
        k0, k1 = fingerprint_bytes(data, start, stop)
        code = np.int64(-1)
        while code < 0:
            mask = meta[4] - 1  # (inserts may double the active buckets)
            b = _home(k0, k1, mask)
            while True:
                s = buckets[b]
                if s == -1 or (keys[s, 0] == k0 and keys[s, 1] == k1):
                    break
                b = (b + 1) & mask
            if s == -1:  # a new string: only with room for it (a dictionary's table never frees a slot)
                slot = meta[1]
                if (slot >= slot_cap or 2 * (meta[0] + 1) > buckets.size
                        or store_offsets[slot] + (stop - start) > store_data.size):
                    return i, added, misses
                slot = _take_slot(meta, free, slot_cap)
                keys[slot, 0] = k0
                keys[slot, 1] = k1
                buckets[b] = slot
                meta[0] += 1
                _grow_if_full(buckets, keys, meta, free)
                end = store_offsets[slot]
                _append_bytes(data, start, stop, store_data, end)
                store_offsets[slot + 1] = end + (stop - start)
                added += 1
                code = slot
            elif _equal_bytes(data, start, stop, store_data, store_offsets[s], store_offsets[s + 1]):
                code = np.int64(s)
            else:
                k1 = np.int64(mix64(k1))
        cache[h] = code
        out_codes[i] = code
    return m, added, misses
