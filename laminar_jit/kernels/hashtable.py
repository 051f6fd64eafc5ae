"""Open-addressing hash table kernels: int64 keys of width 1 or 2 → dense int32 slots.

Keyed operators (windows, joins, keyed kernels) keep one row of state per key
in plain per-slot numpy arrays; this table maps a key to its *slot*, the row
index into those arrays. All state is numpy arrays owned by the caller
(:class:`laminar_jit.state.KeyTable` manages growth and snapshots):

``buckets`` int32[cap]
    ``-1`` is an empty bucket, anything else a slot. Only the first
    ``meta[4]`` buckets (a power of two, the *active* buckets) are probed;
    the rest are empty room to grow into (see "Sizes" below).
``keys`` int64[slot_cap, 2]
    The key of each slot. Width-1 tables use column 0 and keep 0 in column 1,
    so one hash function (:func:`hash2`) serves both widths and
    :func:`ht_resize` needs no width. A freed slot's key is reset to (0, 0),
    which lets a scan by slot skip the probe for every other key.
``meta`` int64[5]
    ``[n_live, high_water, n_free, width, n_buckets]``: live keys, slots ever
    handed out, depth of the free stack, key width (1 or 2), active buckets.
``free`` int32[slot_cap]
    A stack of freed slots (``free[:n_free]``); inserts pop it before taking
    ``high_water``, so memory stays bounded by the number of *live* keys when
    keys come and go (windows close, sessions expire).

Collisions are resolved by linear probing; deletion shifts the rest of the
probe run backwards, so there are no tombstones and probe runs never
lengthen with churn. (Tombstones were rejected: with rotating keys they fill
the table and force periodic rebuilds.)

Sizes. Kernels never allocate. The caller guarantees room first
(``KeyTable.reserve``: a free slot per insert, and ``cap`` at least twice
the live keys plus the inserts to come). That bound is for the worst case
(every row of a call a new key), and a table probed over all of it was
mostly empty: 700 live sessions in 131,072 buckets, so every probe missed
the caches. The kernels therefore probe only the active buckets, which
start at :data:`MIN_BUCKETS` and double in place (:func:`ht_resize`) when
an insert takes them over a quarter full (so probes stay as short as in a
table sized for the worst case, which was rarely half full): they are at
most eight times the most keys the table has held, whatever was reserved,
and at most the whole array, whose load :meth:`KeyTable.reserve` keeps
under one half. They do not shrink when
keys go (a fire of sessions or windows deletes most of a table, and the
next rows insert as many again: resizing both ways cost more than it
saved). As a guard against a caller that did not reserve, an insert that
finds no room returns slot ``-1`` instead of writing out of bounds, and
every probe loop is bounded by the active buckets.

:mod:`.interning` builds a byte-string dictionary on the same table: the
key is a 128-bit fingerprint of the bytes and the slot is the string's code.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, njit_borrowing
from .memory import prefetch

__all__ = [
    "CACHE_SIZE",
    "MIN_BUCKETS",
    "cache_line",
    "hash2",
    "ht_delete",
    "ht_delete_many",
    "ht_find",
    "ht_find_or_insert",
    "ht_insert_at",
    "ht_lookup_many",
    "ht_resize",
    "ht_upsert",
    "mix64",
]

# splitmix64 constants (Steele, Lea, Flood 2014). Hash arithmetic is done in
# uint64 so that it wraps; mixing int64 and uint64 would make Numba go through
# float64.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)


@njit(inline="always")
def _finalize(z):
    """The splitmix64 output function on a uint64 (a bijection with full avalanche)."""
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit(inline="always")
def mix64(x):
    """Hash one int64 to a well-mixed uint64 (splitmix64: add the golden gamma, finalize)."""
    return _finalize(np.uint64(np.int64(x)) + _GOLDEN)


@njit(inline="always")
def hash2(k0, k1):
    """Hash a key of width 2 (a width-1 key is ``(k0, 0)``) to a uint64.

    Two multiplies by odd constants, xor-shift, multiply, xor-shift: about a
    third of splitmix64's dependent work (which cost ~10 ns a row in window
    loops), with enough mixing in the low bits, which pick the bucket, for
    the structured keys tables see (small integers, aligned window starts,
    dictionary codes).
    """
    h = (np.uint64(np.int64(k0)) * _GOLDEN) ^ (np.uint64(np.int64(k1)) * _MUL2)
    h ^= h >> _S32
    h *= _GOLDEN
    return h ^ (h >> _S32)


#: Entries of the direct-mapped lookup caches keyed loops keep in front of a
#: table (see :func:`cache_line`).
CACHE_SIZE = 1 << 12
_CACHE_SHIFT = np.uint64(64 - 12)


@njit(inline="always")
def cache_line(k0, k1):
    """The entry of key ``(k0, k1)`` in a :data:`CACHE_SIZE`-entry direct-mapped lookup cache.

    Row loops keep the slots of recent keys in such a cache while no slot can
    be freed (within one update call); a hit skips the probe and its two
    dependent loads. Two independent multiplies and the top bits: cheaper
    than :func:`hash2`, and a cache tolerates the odd collision.
    """
    h = np.uint64(np.int64(k0)) * _GOLDEN + np.uint64(np.int64(k1)) * _MUL2
    return np.int64(h >> _CACHE_SHIFT)


@njit(inline="always")
def _home(k0, k1, mask):
    """The bucket where the probe for ``(k0, k1)`` starts."""
    return np.int64(hash2(k0, k1) & np.uint64(mask))


#: Active buckets of a new table.
MIN_BUCKETS = 8

#: Keys :func:`ht_resize` places after prefetching their home buckets.
_RESIZE_BLOCK = 16


# ``forceinline``: the probes (ht_find, ht_find_or_insert and its insert) always go into the row loops that call
# them, and the resize never does (once an insert could resize, LLVM stopped inlining the probe into a window's
# row loop at all: a call per row). A flag left unset is inherited from the caller being compiled, so it is set
# on each of them.
@njit_borrowing(forceinline=False)
def ht_resize(buckets, keys, meta, free, n_buckets):
    """Re-place every live key in the first ``n_buckets`` buckets (a power of two, at most ``buckets.size``).

    Slots and keys stay where they are; only the bucket layout changes, in
    place: the buckets the table used or will use are emptied (so buckets
    past the active ones stay empty), then the live slots are inserted again
    in slot order, which reads ``keys`` in sequence, a block at a time after
    prefetching the block's home buckets (a table that outgrew the caches
    otherwise waits on a miss per key). A slot below ``high_water`` is live
    unless its key is (0, 0), which freed slots hold; the one live key (0, 0),
    if any, is found by a probe first. Returns False, changing nothing, when
    ``n_buckets`` is not a power of two that fits in ``buckets`` and holds
    the live keys at most half full.
    """
    n_live = meta[0]
    if n_buckets <= 0 or n_buckets & (n_buckets - 1) or n_buckets > buckets.size or 2 * n_live > n_buckets:
        return False
    zero = ht_find(buckets, keys, meta, np.int64(0), np.int64(0))
    buckets[:max(meta[4], n_buckets)] = -1
    meta[4] = n_buckets
    mask = n_buckets - 1
    high_water = meta[1]
    for first in range(0, high_water, _RESIZE_BLOCK):
        last = min(high_water, first + _RESIZE_BLOCK)
        for s in range(first, last):
            if keys[s, 0] != 0 or keys[s, 1] != 0 or s == zero:
                prefetch(buckets, _home(keys[s, 0], keys[s, 1], mask))
        for s in range(first, last):
            if keys[s, 0] != 0 or keys[s, 1] != 0 or s == zero:
                i = _home(keys[s, 0], keys[s, 1], mask)
                while buckets[i] != -1:
                    i = (i + 1) & mask
                buckets[i] = s
    return True


@njit_borrowing(forceinline=False)
def _grow_if_full(buckets, keys, meta, free):
    """Double the active buckets after an insert took them over a quarter full (when ``buckets`` has the room)."""
    if 4 * meta[0] > meta[4] and 2 * meta[4] <= buckets.size:
        ht_resize(buckets, keys, meta, free, 2 * meta[4])


@njit_borrowing(forceinline=True)
def ht_find(buckets, keys, meta, k0, k1):
    """The slot of key ``(k0, k1)``, or -1 when it is absent."""
    mask = meta[4] - 1
    i = _home(k0, k1, mask)
    slot = np.int64(-1)
    for _ in range(meta[4]):
        s = buckets[i]
        if s == -1:
            break
        if keys[s, 0] == k0 and keys[s, 1] == k1:
            slot = np.int64(s)
            break
        i = (i + 1) & mask
    return slot


@njit_borrowing
def _take_slot(meta, free, slot_cap):
    """Pop the free stack, else hand out ``high_water``; -1 when every slot is in use."""
    slot = np.int64(-1)
    n_free = meta[2]
    if n_free > 0:
        meta[2] = n_free - 1
        slot = np.int64(free[n_free - 1])
    elif meta[1] < slot_cap:
        slot = meta[1]
        meta[1] = slot + 1
    return slot


@njit_borrowing(forceinline=True)
def ht_insert_at(buckets, keys, meta, free, bucket, k0, k1):
    """Insert ``(k0, k1)`` into the empty ``bucket`` a probe stopped at; its slot, or -1 if none is free.

    The insert half of :func:`ht_find_or_insert`. Not rare: a tumbling window
    over many keys inserts for about a third of its rows, so plans write it out
    as well (a call cost ~17 ms of 100 in the 5 M-row window benchmark).
    """
    slot = _take_slot(meta, free, keys.shape[0])
    if slot >= 0:
        keys[slot, 0] = k0
        keys[slot, 1] = k1
        buckets[bucket] = slot
        meta[0] += 1
        if 4 * meta[0] > meta[4]:
            _grow_if_full(buckets, keys, meta, free)
    return slot


# Compiled without reference counting (njit_borrowing): a plain call with it
# counted a reference per array and call (~110 ns/row in a windowing loop
# against ~25 ns inlined in Numba's IR, which still counted them). Plans write
# the hot probes out in their own source anyway (laminar_jit.executor.inlining).
@njit_borrowing
def ht_upsert(buckets, keys, meta, free, k0, k1):
    """Find key ``(k0, k1)`` or insert it; returns ``(slot, inserted)``.

    Width-1 tables must be given ``k1 = 0``. Returns ``(-1, False)`` only when
    the caller broke the capacity contract (no free slot or no empty bucket).
    """
    mask = meta[4] - 1
    i = _home(k0, k1, mask)
    for _ in range(meta[4]):
        s = buckets[i]
        if s == -1:
            slot = ht_insert_at(buckets, keys, meta, free, i, k0, k1)
            return slot, slot >= 0
        if keys[s, 0] == k0 and keys[s, 1] == k1:
            return np.int64(s), False
        i = (i + 1) & mask
    return np.int64(-1), False


@njit_borrowing(forceinline=True)
def ht_find_or_insert(buckets, keys, meta, free, k0, k1):
    """The slot of key ``(k0, k1)``, inserting it when absent; -1 if no slot is free.

    The hot path of every keyed loop, so it is :func:`ht_upsert` without the
    ``inserted`` flag and without a probe bound: the active buckets are at
    most half full after every insert (see the module docstring), so a probe
    always meets an empty one.
    Plans write its body out in their row loops (see
    :mod:`laminar_jit.executor.inlining`), hence the single exit.
    """
    mask = meta[4] - 1
    i = _home(k0, k1, mask)
    slot = np.int64(-1)
    while True:
        s = buckets[i]
        if s == -1:
            break
        if keys[s, 0] == k0 and keys[s, 1] == k1:
            slot = np.int64(s)
            break
        i = (i + 1) & mask
    if slot < 0:
        slot = ht_insert_at(buckets, keys, meta, free, i, k0, k1)
    return slot


@njit_borrowing
def ht_delete(buckets, keys, meta, free, slot):
    """Remove the key held by ``slot`` and push the slot on the free stack.

    The rest of the probe run is shifted back over the hole (an entry moves
    when the hole lies cyclically between its home bucket and its position),
    so lookups never need tombstones. Returns False, changing nothing, when
    ``slot`` is not live (out of range or already deleted).
    """
    mask = meta[4] - 1
    found = False
    hole = np.int64(0)
    if slot >= 0 and slot < meta[1]:
        hole = _home(keys[slot, 0], keys[slot, 1], mask)
        for _ in range(meta[4]):
            s = buckets[hole]
            if s == -1:
                break
            if s == slot:
                found = True
                break
            hole = (hole + 1) & mask
    if found:
        j = hole
        for _ in range(meta[4]):
            j = (j + 1) & mask
            s = buckets[j]
            if s == -1:
                break
            home = _home(keys[s, 0], keys[s, 1], mask)
            # Distance from home to j is at least the distance from the hole to j:
            # the hole is on the entry's probe path, so the entry may fill it.
            if ((j - home) & mask) >= ((j - hole) & mask):
                buckets[hole] = s
                hole = j
        buckets[hole] = -1
        keys[slot, 0] = 0
        keys[slot, 1] = 0
        free[meta[2]] = slot
        meta[2] += 1
        meta[0] -= 1
    return found


@njit
def ht_delete_many(buckets, keys, meta, free, slots, kept):
    """Delete the live ``slots`` (pushed on the free stack in order); ``kept`` are all the other live slots.

    A fire deletes whole windows at once, often most of the table: then
    clearing the buckets and re-inserting the ``kept`` entries costs less than
    one backward-shift :func:`ht_delete` per slot (each rehashes the run after
    its hole). With fewer deletions than survivors the deletes are done one by
    one. Either way the table ends with the same keys in the same slots.
    """
    if slots.size <= kept.size or slots.size + kept.size != meta[0]:  # (the latter: not all live given)
        for j in range(slots.size):
            ht_delete(buckets, keys, meta, free, slots[j])
        return
    buckets[:meta[4]] = -1
    mask = meta[4] - 1
    for j in range(kept.size):
        s = kept[j]
        i = _home(keys[s, 0], keys[s, 1], mask)
        while buckets[i] != -1:
            i = (i + 1) & mask
        buckets[i] = s
    for j in range(slots.size):
        s = slots[j]
        keys[s, 0] = 0
        keys[s, 1] = 0
        free[meta[2]] = s
        meta[2] += 1
    meta[0] -= slots.size


@njit
def ht_lookup_many(buckets, keys, meta, free, k0_array, k1_array, sel, out_slots):
    """Upsert the keys of the rows ``sel``; ``out_slots[j]`` gets the slot of row ``sel[j]``.

    ``k1_array`` is read only by width-2 tables (width 1 may pass an empty
    array). Returns the number of keys inserted; -1 when room ran out (the
    caller did not reserve), in which case ``out_slots[j:]`` is set to -1 from
    the first row that did not fit.
    """
    # The probe of ht_upsert is written out here on purpose: a call per row
    # made this loop 3-4x slower (52 ms instead of 15 ms for 1M rows over
    # 10k keys); the insert (ht_insert_at) is always inlined.
    width = meta[3]
    inserted_count = 0
    for j in range(sel.size):
        row = sel[j]
        k0 = k0_array[row]
        k1 = k1_array[row] if width == 2 else np.int64(0)
        mask = meta[4] - 1
        i = _home(k0, k1, mask)
        slot = np.int64(-1)
        for _ in range(meta[4]):
            s = buckets[i]
            if s == -1:
                slot = ht_insert_at(buckets, keys, meta, free, i, k0, k1)
                if slot >= 0:
                    inserted_count += 1
                break
            if keys[s, 0] == k0 and keys[s, 1] == k1:
                slot = np.int64(s)
                break
            i = (i + 1) & mask
        if slot < 0:
            out_slots[j:sel.size] = -1
            return -1
        out_slots[j] = slot
    return inserted_count
