"""Keyed state: hash-table kernels and ``KeyTable`` against a dict reference, ``StringDictionary``.

The hash-table reference models slot assignment exactly (a LIFO free stack,
then ``high_water``), so a test fails on a wrong slot, not only on a wrong
key. Every state change is followed by a structural check of the table
(linear-probing runs unbroken, counters consistent), which is what
backward-shift deletion has to preserve.

These tests also run with ``NUMBA_DISABLE_JIT=1`` (kernels as plain Python):
the hash arithmetic then wraps numpy uint64 scalars, which warns on overflow,
hence the warning filter below. Nothing here asserts on speed.
"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laminar_jit._jit import njit
from laminar_jit.kernels import hashtable as ht
from laminar_jit.kernels import interning, memory
from laminar_jit.kernels.memory import load_u64, store_u64
from laminar_jit.kernels.changelog import slot_order
from laminar_jit.kernels.sorting import argsort_pairs, sorted_values
from laminar_jit.kernels.timers import heap_pop, heap_push
from laminar_jit.state import KeyTable, StringDictionary
from laminar_jit.state import dictionary as dictionary_module
from laminar_jit.state.dictionary import CHECK_EVERY

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max
SPECIAL = [0, -1, 1, I64_MIN, I64_MAX, I64_MIN + 1, I64_MAX - 1, 2**32, -(2**32)]
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------------------
# references and structural checks
# --------------------------------------------------------------------------------------

class RefTable:
    """Plain-Python model: key → slot, freed slots reused last-in first-out."""

    def __init__(self):
        self.slots: dict[tuple[int, int], int] = {}
        self.free: list[int] = []
        self.high_water = 0

    def upsert(self, key):
        if key in self.slots:
            return self.slots[key]
        if self.free:
            slot = self.free.pop()
        else:
            slot = self.high_water
            self.high_water += 1
        self.slots[key] = slot
        return slot

    def delete(self, key):
        self.free.append(self.slots.pop(key))


def splitmix64_finalizer(x: int) -> int:
    """Reference splitmix64 in Python integers (Steele et al.), for :func:`ht.mix64`."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def home(table: KeyTable, slot: int) -> int:
    return int(ht.hash2(table.keys[slot, 0], table.keys[slot, 1])) & (table.bucket_capacity - 1)


def check_structure(table: KeyTable):
    n_live, high_water, n_free, width, active = (int(v) for v in table.meta)
    assert width == table.width
    assert active == table.bucket_capacity <= table.bucket_room
    assert np.all(table.buckets[active:] == -1), "a bucket past the active ones is in use"
    assert n_live + n_free == high_water <= table.slot_capacity
    assert table.free.size == table.keys.shape[0] == table.slot_capacity
    cap = table.bucket_capacity
    assert cap & (cap - 1) == 0
    assert n_live <= cap // 2, "load factor above 0.5"
    occupied = np.flatnonzero(table.buckets >= 0)
    slots = table.buckets[occupied]
    assert len(occupied) == n_live == len(table)
    assert len(set(slots.tolist())) == n_live
    assert np.all((table.buckets == -1) | ((table.buckets >= 0) & (table.buckets < high_water)))
    freed = table.free[:n_free].tolist()
    assert len(set(freed)) == n_free and not set(freed) & set(slots.tolist())
    for b in occupied.tolist():
        s = int(table.buckets[b])
        h = home(table, s)
        # Linear probing: every bucket from the home to the entry is occupied.
        run = (b - h) & (cap - 1)
        assert all(table.buckets[(h + d) & (cap - 1)] >= 0 for d in range(run)), (s, h, b)
        assert ht.ht_find(table.buckets, table.keys, table.meta, table.keys[s, 0], table.keys[s, 1]) == s
    if width == 1:
        assert np.all(table.keys[slots, 1] == 0)
    assert np.array_equal(table.live_slots(), np.sort(slots))


def check_against(table: KeyTable, ref: RefTable):
    check_structure(table)
    assert len(table) == len(ref.slots)
    assert table.high_water == ref.high_water
    assert table.free[: int(table.meta[2])].tolist() == ref.free
    for (k0, k1), slot in ref.slots.items():
        assert table.find(k0, k1) == slot
        assert (table.keys[slot, 0], table.keys[slot, 1]) == (k0, k1)


def keys_with_home(bucket_capacity: int, wanted_homes, count: int) -> list[int]:
    """Width-1 keys whose probe starts in one of ``wanted_homes`` (forced collisions)."""
    out = []
    k = 0
    while len(out) < count:
        if int(ht.hash2(np.int64(k), np.int64(0))) & (bucket_capacity - 1) in wanted_homes:
            out.append(k)
        k += 1
    return out


# --------------------------------------------------------------------------------------
# hashing
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", SPECIAL + [12345, -98765])
def test_mix64_is_splitmix64(x):
    assert int(ht.mix64(np.int64(x))) == splitmix64_finalizer(x & ((1 << 64) - 1))


@pytest.mark.parametrize("column", [0, 1])
def test_hash2_spreads_sequential_keys_over_low_bits(column):
    # Sequential ids in either key column must not cluster in the low bits
    # that pick the bucket (chi-square is about `buckets` for a uniform hash).
    n, buckets = 32_000, 256
    counts = np.zeros(buckets, np.int64)
    for k in range(n):
        key = (np.int64(k), np.int64(7)) if column == 0 else (np.int64(7), np.int64(k))
        counts[int(ht.hash2(*key)) & (buckets - 1)] += 1
    expected = n / buckets
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 2 * buckets, chi2
    assert ht.hash2(np.int64(1), np.int64(2)) != ht.hash2(np.int64(2), np.int64(1))


# --------------------------------------------------------------------------------------
# KeyTable / kernels against the reference
# --------------------------------------------------------------------------------------

key_values = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-8, 8),                                   # skew: a few hot keys
    st.integers(I64_MIN, I64_MAX),
)


@st.composite
def operations(draw):
    width = draw(st.sampled_from([1, 2]))
    key = st.tuples(key_values, key_values if width == 2 else st.just(0))
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("upsert_many"), st.lists(key, max_size=40)),
        st.tuples(st.just("upsert_one"), key),
        st.tuples(st.just("delete"), st.integers(0, 10**6)),
        st.tuples(st.just("delete_many"), st.integers(1, 30)),
        st.tuples(st.just("reserve"), st.integers(0, 100)),
    ), max_size=40))
    capacity = draw(st.sampled_from([0, 1, 3, 16]))
    return width, capacity, ops


@SETTINGS
@given(operations())
def test_keytable_matches_dict_reference(case):
    width, capacity, ops = case
    table, ref = KeyTable(width=width, capacity=capacity), RefTable()
    rng = np.random.default_rng(len(ops))
    for op, arg in ops:
        if op == "upsert_many":
            k0 = np.array([k[0] for k in arg], np.int64)
            k1 = np.array([k[1] for k in arg], np.int64) if width == 2 else None
            slots = table.upsert_many(k0, k1)
            assert slots.dtype == np.int32
            assert slots.tolist() == [ref.upsert(k) for k in arg]
        elif op == "upsert_one":
            table.reserve(1)
            slot, inserted = ht.ht_upsert(table.buckets, table.keys, table.meta, table.free,
                                          np.int64(arg[0]), np.int64(arg[1]))
            assert bool(inserted) == (arg not in ref.slots)
            assert slot == ref.upsert(arg)
            again = ht.ht_find_or_insert(table.buckets, table.keys, table.meta, table.free,
                                         np.int64(arg[0]), np.int64(arg[1]))
            assert again == slot
        elif op == "delete" and ref.slots:
            key = sorted(ref.slots)[arg % len(ref.slots)]
            table.delete(ref.slots[key])
            ref.delete(key)
            assert table.find(*key) == -1
        elif op == "delete_many" and ref.slots:
            for key in rng.permutation(sorted(ref.slots))[:arg]:
                key = (int(key[0]), int(key[1]))
                table.delete(ref.slots[key])
                ref.delete(key)
        elif op == "reserve":
            slot_capacity = table.reserve(arg)
            assert slot_capacity == table.slot_capacity >= len(table) + arg
            assert table.headroom >= arg
        check_against(table, ref)


def test_forced_collisions_with_wraparound_and_deletes():
    # 48 keys sharing four home buckets, two of them at the end of the bucket
    # array so that probe runs wrap around to bucket 0; a fixed capacity
    # (64 keys → 128 buckets, all of them active: 48 keys neither double nor
    # quarter them) keeps homes fixed.
    table, ref = KeyTable(width=1, capacity=64), RefTable()
    assert ht.ht_resize(table.buckets, table.keys, table.meta, table.free, table.bucket_room)
    cap = table.bucket_capacity
    assert cap == 128
    keys = keys_with_home(cap, {cap - 1, cap - 2, 0, 5}, 48)
    rng = np.random.default_rng(1)
    for round_ in range(6):
        for k in rng.permutation(keys):
            table.reserve(1)
            assert ht.ht_find_or_insert(table.buckets, table.keys, table.meta, table.free,
                                        np.int64(k), np.int64(0)) == ref.upsert((int(k), 0))
        check_against(table, ref)
        assert table.bucket_capacity == cap, "the test relies on fixed homes"
        victims = rng.permutation(keys)[: 20 + 4 * round_]
        for k in victims:
            table.delete(ref.slots[(int(k), 0)])
            ref.delete((int(k), 0))
            check_against(table, ref)


def test_delete_of_dead_slot_changes_nothing():
    table = KeyTable(width=2, capacity=8)
    slots = table.upsert_many([1, 2, 3], [4, 5, 6])
    table.delete(int(slots[1]))
    before = table.snapshot()
    for bad in (int(slots[1]), -1, 3, 10**6):
        assert not ht.ht_delete(table.buckets, table.keys, table.meta, table.free, np.int64(bad))
        with pytest.raises(KeyError, match="holds no live key"):
            table.delete(bad)
    for name, arr in before.items():
        assert np.array_equal(getattr(table, name), arr), name


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 1.0])
def test_delete_many_matches_one_by_one_deletes(fraction):
    # a fire deletes most of a table (rebuild) or a little of it (backward shifts);
    # both must leave the keys in the same slots with the same free stack
    rng = np.random.default_rng(int(fraction * 10))
    k0 = rng.zipf(1.3, 400) % 97
    k1 = rng.integers(0, 9, 400) * 10_000
    tables = []
    for _ in range(2):
        table = KeyTable(width=2, capacity=512)
        table.upsert_many(k0, k1)
        tables.append(table)
    live = np.flatnonzero(tables[0].buckets >= 0)
    slots = np.sort(tables[0].buckets[live]).astype(np.int32)
    rng.shuffle(slots)
    n_del = int(round(fraction * slots.size))
    gone, kept = slots[:n_del], slots[n_del:]
    gone_keys = [tuple(tables[0].keys[s]) for s in gone]
    kept_keys = [tuple(tables[0].keys[s]) for s in kept]
    one, many = tables
    for s in gone:
        assert ht.ht_delete(one.buckets, one.keys, one.meta, one.free, np.int64(s))
    ht.ht_delete_many(many.buckets, many.keys, many.meta, many.free, gone, kept)
    for table in (one, many):
        check_structure(table)
        assert len(table) == kept.size
        for s, key in zip(kept, kept_keys):
            assert table.find(*key) == s
        for key in gone_keys:
            assert table.find(*key) == -1
        assert not table.keys[gone].any(), "freed slots hold the key (0, 0)"
    np.testing.assert_array_equal(one.meta, many.meta)
    np.testing.assert_array_equal(one.free[:one.meta[2]], many.free[:many.meta[2]])
    np.testing.assert_array_equal(one.keys, many.keys)


def test_delete_many_without_every_survivor_deletes_one_by_one():
    # a caller that does not list every other live slot gets the safe path
    table = KeyTable(width=1, capacity=64)
    slots = table.upsert_many(np.arange(40) * 3).astype(np.int32)
    ht.ht_delete_many(table.buckets, table.keys, table.meta, table.free, slots[:30], slots[30:35])
    check_structure(table)
    assert len(table) == 10
    assert all(table.find(int(k)) == s for k, s in zip(np.arange(30, 40) * 3, slots[30:]))


def test_growth_across_many_rehashes_keeps_slots():
    table = KeyTable(width=2, capacity=0)
    rng = np.random.default_rng(2)
    k0 = rng.integers(I64_MIN, I64_MAX, 30_000, dtype=np.int64, endpoint=True)
    k1 = rng.integers(-3, 3, 30_000)
    seen_caps = set()
    first = table.upsert_many(k0[:1000], k1[:1000])
    for lo in range(1000, 30_000, 997):
        table.upsert_many(k0[lo:lo + 997], k1[lo:lo + 997])
        seen_caps.add(table.bucket_capacity)
    assert len(seen_caps) >= 5 and table.bucket_capacity >= 2 * len(table)
    # Slots are stable through every rehash, and the slot arrays only grew.
    assert np.array_equal(table.upsert_many(k0[:1000], k1[:1000]), first)
    expected = {}
    for a, b in zip(k0.tolist(), k1.tolist()):
        expected.setdefault((a, b), len(expected))
    all_slots = table.upsert_many(k0, k1)
    assert all_slots.tolist() == [expected[(a, b)] for a, b in zip(k0.tolist(), k1.tolist())]
    check_structure(table)


def test_free_slot_reuse_bounds_high_water_with_rotating_keys():
    # A sliding set of 64 live keys over 100k distinct keys: without slot
    # reuse high_water would reach 100k.
    window, n = 64, 100_000
    table = KeyTable(width=1, capacity=window + 1)
    buckets_before = table.bucket_capacity
    b, keys, meta, free = table.buckets, table.keys, table.meta, table.free
    slot_of = np.full(n, -1, np.int64)
    for k in range(n):
        slot_of[k] = ht.ht_find_or_insert(b, keys, meta, free, np.int64(k * 7919), np.int64(0))
        if k >= window:
            assert ht.ht_delete(b, keys, meta, free, slot_of[k - window])
    assert len(table) == window
    assert table.high_water <= window + 1
    # the active buckets follow the live keys (65 at most, a quarter of 260), not the 100 k keys seen: the whole
    # array of 256 the capacity of 65 keys has
    assert buckets_before == 8 and table.bucket_capacity == table.bucket_room == 256
    assert table.slot_capacity == window + 1
    for k in range(n - window, n):
        assert table.find(k * 7919) == slot_of[k]
    assert table.find((n - window - 1) * 7919) == -1
    check_structure(table)


def test_lookup_many_selection_and_room_guard():
    table = KeyTable(width=2, capacity=4)
    k0 = np.array([10, 11, 10, 12, 13, 14, 15], np.int64)
    k1 = np.array([0, 1, 0, 2, 3, 4, 5], np.int64)
    sel = np.array([2, 0, 3], np.int32)
    out = np.full(3, 99, np.int32)
    assert ht.ht_lookup_many(table.buckets, table.keys, table.meta, table.free, k0, k1, sel, out) == 2
    assert out.tolist() == [0, 0, 1]
    # Caller broke the contract (4 slots, 6 keys): the kernel stops, marks the rest -1.
    sel = np.arange(7, dtype=np.int32)
    out = np.full(7, 99, np.int32)
    assert ht.ht_lookup_many(table.buckets, table.keys, table.meta, table.free, k0, k1, sel, out) == -1
    assert out.tolist() == [0, 2, 0, 1, 3, -1, -1]
    assert len(table) == 4 and table.slot_capacity == 4
    check_structure(table)


def test_resize_keeps_slots_and_rejects_sizes_without_room():
    table = KeyTable(width=1, capacity=10)
    slots = table.upsert_many(np.arange(10) * 977)
    table.delete(3)
    table.reserve(100)  # room for 128 active buckets and more
    before = table.snapshot()
    for bad in (0, 24, 16, table.bucket_room * 2):  # not a power of two; 9 keys over half of 16; no room
        assert not ht.ht_resize(table.buckets, table.keys, table.meta, table.free, np.int64(bad))
    after = table.snapshot()
    for name, arr in before.items():
        assert np.array_equal(after[name], arr), name
    for size in (128, 32, 256, 32):
        assert ht.ht_resize(table.buckets, table.keys, table.meta, table.free, np.int64(size))
        assert table.bucket_capacity == size
        check_structure(table)
        assert [table.find(k * 977) for k in range(10)] == [-1 if k == 3 else int(slots[k]) for k in range(10)]


def test_active_buckets_follow_the_live_keys_not_the_room_reserved():
    # a call may insert a key per row, so reserve makes room for that; probes touch only the active buckets,
    # which the kernels double as keys arrive (700 live keys probed over 131,072 buckets missed the caches on
    # every row)
    table = KeyTable(width=2, capacity=0)
    table.reserve(1 << 16)
    assert table.bucket_room >= 1 << 17 and table.bucket_capacity == 8
    rng = np.random.default_rng(5)
    k0 = rng.integers(I64_MIN, I64_MAX, 1000, dtype=np.int64, endpoint=True)
    k1 = rng.integers(-3, 3, 1000)
    slots = np.array([ht.ht_find_or_insert(table.buckets, table.keys, table.meta, table.free, a, b)
                      for a, b in zip(k0, k1)])
    assert len(table) == 1000 and table.bucket_capacity == 4096  # the fewest with 1,000 keys at most a quarter full
    check_structure(table)
    for j in range(990):
        assert ht.ht_delete(table.buckets, table.keys, table.meta, table.free, np.int64(slots[j]))
        if j % 97 == 0:
            check_structure(table)
    assert table.bucket_capacity == 4096  # (they do not shrink: the next rows would grow them again)
    table.reserve(1 << 18)
    assert table.bucket_capacity == 4096 and table.bucket_room >= 1 << 19
    check_structure(table)
    assert [table.find(a, b) for a, b in zip(k0[990:], k1[990:])] == slots[990:].tolist()
    assert all(table.find(a, b) == -1 for a, b in zip(k0[:990], k1[:990]))


def test_a_snapshot_written_before_active_buckets_restores_with_all_of_them_active():
    table = KeyTable(width=2, capacity=64)
    table.upsert_many(np.arange(40), np.arange(40) % 3)
    assert table.bucket_capacity == table.bucket_room == 128
    snap = table.snapshot()
    old = dict(snap, meta=snap["meta"][:4].copy())  # then: meta without the active count, every bucket probed
    restored = KeyTable.from_snapshot(old)
    assert restored.bucket_capacity == 128 and restored.meta.size == 5
    check_structure(restored)
    assert [restored.find(k, k % 3) for k in range(40)] == [table.find(k, k % 3) for k in range(40)]
    for active in (4 * snap["buckets"].size, 24, 8):  # beyond the array, not a power of two, keys past it
        bad = dict(snap, meta=np.append(snap["meta"][:4], np.int64(active)))
        with pytest.raises(ValueError, match="active buckets"):
            KeyTable.from_snapshot(bad)


def test_keytable_validation_and_helpers():
    with pytest.raises(ValueError, match="width must be 1 or 2"):
        KeyTable(width=3)
    with pytest.raises(ValueError, match="capacity"):
        KeyTable(capacity=-1)
    t1, t2 = KeyTable(1), KeyTable(2)
    with pytest.raises(ValueError, match="width-1 table takes no second key"):
        t1.find(1, 2)
    with pytest.raises(ValueError, match="takes no k1"):
        t1.upsert_many([1], [2])
    with pytest.raises(ValueError, match="needs k1"):
        t2.upsert_many([1])
    with pytest.raises(ValueError, match="k0 has 2 rows but k1 has 1"):
        t2.upsert_many([1, 2], [3])
    with pytest.raises(ValueError, match="extra_keys"):
        t1.reserve(-1)
    assert t1.upsert_many([]).size == 0 and len(t1) == 0
    table = KeyTable(width=1, capacity=2)
    state = np.arange(4, dtype=np.float64).reshape(2, 2)
    assert table.grow_slots(state, np.nan) is state
    new_capacity = table.reserve(5)
    grown = table.grow_slots(state, np.nan)
    assert new_capacity == 8 and grown.shape == (8, 2)
    assert np.array_equal(grown[:2], state) and np.isnan(grown[2:]).all()
    assert "live=0" in repr(table)


@SETTINGS
@given(operations(), st.lists(st.integers(-20, 20), max_size=30))
def test_snapshot_round_trip_is_exact(case, more_keys):
    width, capacity, ops = case
    table = KeyTable(width=width, capacity=capacity)
    for op, arg in ops:
        if op == "upsert_many" and arg:
            table.upsert_many([k[0] for k in arg], [k[1] for k in arg] if width == 2 else None)
        elif op in ("delete", "delete_many") and len(table):
            table.delete(int(table.live_slots()[0]))
    snap = table.snapshot()
    restored = KeyTable.from_snapshot(snap)
    for name in ("buckets", "keys", "meta", "free"):
        assert np.array_equal(getattr(restored, name), getattr(table, name))
        assert getattr(restored, name) is not snap[name]
    # Both continue identically (same slots handed out, same growth).
    k0 = np.array(more_keys, np.int64)
    k1 = k0 * 3 if width == 2 else None
    assert np.array_equal(table.upsert_many(k0, k1), restored.upsert_many(k0, k1))
    for name in ("buckets", "keys", "meta", "free"):
        assert np.array_equal(getattr(restored, name), getattr(table, name))
    check_structure(restored)


def test_snapshot_is_a_copy_and_bad_snapshots_are_rejected():
    table = KeyTable(width=1, capacity=4)
    table.upsert_many([5, 6])
    snap = table.snapshot()
    table.upsert_many([7])
    assert snap["meta"][0] == 2
    bad = {k: v.copy() for k, v in snap.items()}
    bad["buckets"] = bad["buckets"].astype(np.int64)
    with pytest.raises(ValueError, match="buckets is int64"):
        KeyTable.from_snapshot(bad)
    bad = {k: v.copy() for k, v in snap.items()}
    bad["meta"][0] = 5
    with pytest.raises(ValueError, match="inconsistent"):
        KeyTable.from_snapshot(bad)
    bad = {k: v.copy() for k, v in snap.items()}
    bad["buckets"] = np.full(12, -1, np.int32)
    with pytest.raises(ValueError, match="power of two"):
        KeyTable.from_snapshot(bad)
    with pytest.raises(ValueError, match="missing"):
        KeyTable.from_snapshot({"keys": snap["keys"]})
    table.delete(int(table.find(6)))
    snap = table.snapshot()
    KeyTable.from_snapshot(snap)
    bad = {k: v.copy() for k, v in snap.items()}
    bad["keys"][bad["free"][0], 0] = 9  # a freed slot that still looks live to a scan by slot
    with pytest.raises(ValueError, match="free stack"):
        KeyTable.from_snapshot(bad)


# --------------------------------------------------------------------------------------
# StringDictionary
# --------------------------------------------------------------------------------------

def reference_codes(batches):
    """Codes in order of first appearance across batches; None for nulls."""
    seen: dict = {}
    out = []
    for batch in batches:
        out.append([None if v is None else seen.setdefault(v, len(seen)) for v in batch])
    return out


def encode_checked(d: StringDictionary, array):
    codes, valid = d.encode(array)
    assert codes.dtype == np.int64 and valid.dtype == np.bool_
    assert codes.shape == (len(array),)
    if array.null_count:
        assert valid.shape == codes.shape
        assert np.array_equal(valid, np.asarray(array.is_valid()))
        assert np.all(codes[~valid] == -1)
    else:
        assert valid.size == 0
    return codes, valid


text = st.one_of(st.sampled_from(["", "a", "web", "ä", "日本", "a\x00b", "web "]),
                 st.text(max_size=12))


@SETTINGS
@given(st.lists(st.lists(st.one_of(st.none(), text), max_size=30), max_size=8),
       st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]),
       st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]))
def test_dictionary_matches_reference_across_batches(batches, input_type, value_type):
    d = StringDictionary(value_type)
    for batch, expected in zip(batches, reference_codes(batches)):
        array = pa.array(batch, input_type)
        codes, valid = encode_checked(d, array)
        assert [None if c == -1 else int(c) for c in codes] == expected
        decoded = d.decode(codes, valid)
        assert decoded.type == value_type
        assert decoded.to_pylist() == batch
    distinct = list(dict.fromkeys(v for b in batches for v in b if v is not None))
    assert len(d) == len(distinct)
    assert d.values().to_pylist() == distinct and d.values().type == value_type


@SETTINGS
@given(st.lists(st.one_of(st.none(), st.sampled_from(["x", "y", "z", "", "long value"])),
                max_size=60),
       st.lists(st.integers(0, 60), max_size=5))
def test_dictionary_codes_do_not_depend_on_batch_split(values, cuts):
    whole = StringDictionary()
    expected, _ = whole.encode(pa.array(values, pa.string()))
    split = StringDictionary()
    bounds = [0] + sorted(min(c, len(values)) for c in cuts) + [len(values)]
    pieces = [split.encode(pa.array(values[lo:hi], pa.string()))[0]
              for lo, hi in zip(bounds[:-1], bounds[1:])]
    assert np.array_equal(np.concatenate(pieces), expected)
    chunked = StringDictionary()
    codes, _ = chunked.encode(pa.chunked_array([values[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])],
                                               pa.string()))
    assert np.array_equal(codes, expected)


@SETTINGS
@given(st.lists(st.lists(st.one_of(st.none(), st.text("ab\x00é", max_size=17)), max_size=40), max_size=6),
       st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]), st.sampled_from([1, 2, 4096]),
       st.integers(0, 3))
def test_repeated_values_through_the_cache_of_recent_codes_match_the_reference(batches, input_type, cache, skip):
    """Repeated values are looked up through a cache of recent codes confirmed by their bytes: with a cache
    of one or two entries (every other row a miss that takes the slot of another value), values of 0-17
    bytes that share prefixes and lengths, nulls, sliced arrays (bytes of other rows on either side) and
    the table growing in the middle of a batch, codes still follow first appearance and decode exactly."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dictionary_module, "CACHE_MIN", cache)
        mp.setattr(dictionary_module, "CACHE_MAX", cache)
        d = StringDictionary()
        for batch, expected in zip(batches, reference_codes(batches)):
            array = pa.array(["pad"] * skip + batch + ["tail"], input_type).slice(skip, len(batch))
            codes, valid = encode_checked(d, array)
            assert [None if c == -1 else int(c) for c in codes] == expected
            assert d.decode(codes, valid).to_pylist() == batch
            assert d._cache.size in (0, cache)  # (none before a row)
    assert d.values().to_pylist() == list(dict.fromkeys(v for b in batches for v in b if v is not None))


def test_mostly_distinct_batches_are_interned_row_by_row_with_the_same_codes(monkeypatch):
    """After a batch of mostly distinct values, a batch without nulls is interned row by row with prefetching
    (no cache of recent codes first): codes still follow first appearance, repeats within the batch
    included, for plain, chunked and view arrays, and a batch with nulls or fewer distinct values takes the
    cache again."""
    rng = np.random.default_rng(4)
    batches = [[f"id{v}" for v in rng.integers(0, n, 300)] for n in (900, 900, 900, 60, 60, 900, 900)]
    batches[-1][5:5] = ["a few", "rows"]  # (under 256 rows a batch does not change the way)
    batches[-1] = batches[-1][:9]
    batches[4][7] = None  # a null: the distinct pass
    passes = []
    intern_rows = StringDictionary._intern_rows
    monkeypatch.setattr(StringDictionary, "_intern_rows",
                        lambda self, array: passes.append(len(array)) or intern_rows(self, array))
    for input_type in (pa.string(), pa.large_string(), pa.string_view()):
        d, passes[:] = StringDictionary(), []
        for j, (batch, expected) in enumerate(zip(batches, reference_codes(batches))):
            array = pa.chunked_array([batch[:70], batch[70:]], input_type) if j % 2 else pa.array(batch, input_type)
            codes, valid = encode_checked(d, array)
            assert [None if c == -1 else int(c) for c in codes] == expected, (input_type, j)
        assert 2 <= len(passes) < len(batches)  # both ways were taken
        assert d.values().to_pylist() == list(dict.fromkeys(v for b in batches for v in b if v is not None))


@SETTINGS
@given(st.lists(st.lists(st.one_of(st.none(), text), max_size=400), max_size=6),
       st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]), st.booleans())
def test_a_carried_dictionary_decodes_every_row_as_it_came(batches, input_type, as_categorical):
    """A carried dictionary (codes only carried to outputs) may give a value repeated in a later batch a new
    code once a batch of 256 rows or more was mostly distinct; codes stay dense and every row decodes to its
    value, and its snapshot restores only as a carried dictionary when it repeats a value."""
    batches = [b + [f"row{j}-{i}" for i in range(300)] if j % 2 == 0 else b for j, b in enumerate(batches)]
    d = StringDictionary(carried=True)
    seen = []
    for batch in batches:
        array = pa.array(batch, input_type)
        if as_categorical and input_type != pa.string_view():
            array = array.dictionary_encode()
        codes, valid = encode_checked(d, array)
        assert d.decode(codes, valid).to_pylist() == batch
        seen += [c for c in codes.tolist() if c >= 0]
    assert sorted(set(seen)) == list(range(len(d)))  # dense: every code a row got
    snap = d.snapshot()
    repeats = len(pc.unique(snap)) < len(snap) if len(snap) else False
    again = StringDictionary.from_snapshot(snap, carried=True)
    assert again.values().equals(d.values())
    if repeats:
        with pytest.raises(ValueError, match="distinct"):
            StringDictionary.from_snapshot(snap)


def test_a_carried_dictionary_appends_only_after_a_mostly_distinct_batch():
    few = pa.array(["web", "app", None, "web"] * 100)
    d = StringDictionary(carried=True)
    for _ in range(3):  # few values: looked up, never appended again
        codes, valid = d.encode(few)
    assert len(d) == 2 and codes[:4].tolist() == [0, 1, -1, 0]
    ids = pa.array([f"id{i}" for i in range(300)])
    codes, _ = d.encode(ids)  # mostly distinct: looked up (first appearance), and the next batch appends
    assert codes.tolist() == list(range(2, 302))
    codes, valid = d.encode(pa.chunked_array([["id5", None, "web"], ["new"]]))
    assert codes.tolist() == [302, -1, 303, 304] and valid.tolist() == [True, False, True, True]
    assert d.decode(codes, valid).to_pylist() == ["id5", None, "web", "new"]
    codes, _ = d.encode(pa.array(["q", "q", "id5"] * 100))  # expected to be mostly distinct: rows appended
    assert codes[:4].tolist() == [305, 306, 307, 308] and len(d) == 605
    for _ in range(CHECK_EVERY - 3):  # (the third to the seventh batch since it stopped looking values up)
        d.encode(pa.array(["q"] * 300))
    n = len(d)
    assert n == 605 + 300 * (CHECK_EVERY - 3)
    d.encode(pa.array(["q"] * 300))  # checked: appends its one distinct value and proves repetitive ...
    codes, _ = d.encode(pa.array(["q", "r"] * 150))  # ... so the next batch appends only its distinct values
    assert len(d) == n + 3 and codes[:4].tolist() == [n + 1, n + 2, n + 1, n + 2]
    assert d.decode(codes[:2]).to_pylist() == ["q", "r"]
    plain = StringDictionary()  # not carried: looked up always
    plain.encode(ids), plain.encode(ids)
    assert plain.encode(pa.array(["id5"]))[0].tolist() == [5] and len(plain) == 300
    # a batch taken back: truncation keeps the carried way and the codes before it
    n = len(d)
    d.encode(pa.array(["x", "y"] * 10))
    assert len(d) == n + 2
    d.truncate(n)
    assert len(d) == n and d.carried and d.decode(np.array([302, 304])).to_pylist() == ["id5", "new"]
    assert d.encode(pa.array(["x"]))[0].tolist() == [n]


def test_dictionary_edge_inputs():
    d = StringDictionary()
    for empty in (pa.array([], pa.string()), pa.chunked_array([], pa.string()),
                  pa.chunked_array([pa.array([], pa.large_string())])):
        codes, valid = encode_checked(d, empty)
        assert codes.size == 0
    assert len(d) == 0 and d.values().to_pylist() == [] and d.decode(np.array([], np.int64)).to_pylist() == []
    codes, valid = encode_checked(d, pa.array([None, None], pa.string()))
    assert codes.tolist() == [-1, -1] and valid.tolist() == [False, False] and len(d) == 0
    codes, _ = encode_checked(d, pa.chunked_array([["b", "a"], [], [None, "c", "b"]], pa.string()))
    assert codes.tolist() == [0, 1, -1, 2, 0]
    # A sliced array (non-zero offset) and a dictionary-typed array.
    codes, _ = encode_checked(d, pa.array(["zz", "a", "d", "c"]).slice(1, 3))
    assert codes.tolist() == [1, 3, 2]
    codes, _ = encode_checked(d, pa.array(["d", "e", "d", None]).dictionary_encode())
    assert codes.tolist() == [3, 4, 3, -1]
    assert d.values().to_pylist() == ["b", "a", "c", "d", "e"]


def test_binary_dictionary_keeps_arbitrary_bytes():
    d = StringDictionary(pa.large_binary())
    values = [b"\xff\xfe", b"", b"a\x00b", None, b"\xff\xfe"]
    for t in (pa.binary(), pa.large_binary(), pa.binary_view()):
        codes, valid = encode_checked(d, pa.array(values, t))
        assert codes.tolist() == [0, 1, 2, -1, 0]
        assert d.decode(codes, valid).equals(pa.array(values, pa.large_binary()))
    with pytest.raises(TypeError, match="expected binary values"):
        d.encode(pa.array(["text"]))


def test_failed_encode_leaves_dictionary_unchanged():
    d = StringDictionary()
    d.encode(pa.array(["a", "b"]))
    before = d.snapshot()
    for bad in (pa.array([1, 2]), pa.array([b"a"], pa.binary()), ["a", "c"],
                pa.chunked_array([[1]])):
        with pytest.raises(TypeError, match="StringDictionary.encode"):
            d.encode(bad)
        assert d.snapshot().equals(before) and len(d) == 2
    assert d.encode(pa.array(["c"]))[0].tolist() == [2]


def test_decode_validation():
    d = StringDictionary()
    d.encode(pa.array(["a", "b"]))
    with pytest.raises(IndexError, match="code 2 is not in"):
        d.decode(np.array([0, 2]))
    with pytest.raises(IndexError, match="code -1"):
        d.decode(np.array([-1]))
    assert d.decode(np.array([-1, 1]), np.array([False, True])).to_pylist() == [None, "b"]
    with pytest.raises(TypeError, match="1-d integer"):
        d.decode(np.array([0.0]))
    with pytest.raises(TypeError, match="not a string or binary type"):
        StringDictionary(pa.int64())


def test_dictionary_snapshot_round_trip():
    d = StringDictionary(pa.large_string())
    d.encode(pa.array(["x", None, "y", "x", "日本"]))
    snap = d.snapshot()
    assert snap.type == pa.large_string() and snap.to_pylist() == ["x", "y", "日本"]
    restored = StringDictionary.from_snapshot(snap)
    assert len(restored) == 3 and restored.value_type == pa.large_string()
    batch = pa.array(["new", "y", "x", "other", "new"])
    assert np.array_equal(d.encode(batch)[0], restored.encode(batch)[0])
    assert d.values().equals(restored.values())
    as_string = StringDictionary.from_snapshot(pa.chunked_array([snap]), value_type=pa.string())
    assert as_string.decode(np.array([2])).type == pa.string()
    with pytest.raises(ValueError, match="distinct"):
        StringDictionary.from_snapshot(pa.array(["a", "b", "a"]))
    with pytest.raises(ValueError, match="null"):
        StringDictionary.from_snapshot(pa.array(["a", None]))


def test_interning_in_blocks_gives_codes_by_first_appearance():
    # Strings of every length around the 8-byte words (0-40 bytes), repeated within a block of
    # interning.BLOCK strings, across blocks and across batches: codes by first appearance, bytes kept.
    # The first batch is mostly distinct, so the later ones are interned row by row (repeats included).
    rng = np.random.default_rng(11)
    pool = ["".join(chr(97 + c) for c in rng.integers(0, 3, n)) for n in rng.integers(0, 41, 3000)]
    d = StringDictionary()
    seen: dict[str, int] = {}
    batches = [[pool[i] for i in rng.integers(0, len(pool), size)]
               for size in (700, 1, interning.BLOCK - 1, interning.BLOCK + 1, 700, 5)]
    batches.insert(2, pool[2990:] * 4)  # each string 4 times, within and across blocks, 10 of them new
    for batch in batches:
        codes, valid = d.encode(pa.array(batch, pa.large_string()))
        assert valid.size == 0
        assert codes.tolist() == [seen.setdefault(x, len(seen)) for x in batch]
    assert d.values().to_pylist() == list(seen)
    data = np.frombuffer(b"0123456789abcdefghij", np.uint8)
    for p in range(12):  # unaligned words
        assert int(_load_u64(data, p)) == int.from_bytes(bytes(data[p:p + 8]), "little")
        out = np.zeros(24, np.uint8)
        _store_u64(out, p + 3, _load_u64(data, p))
        assert bytes(out[p + 3:p + 11]) == bytes(data[p:p + 8]) and not out[:p + 3].any() and not out[p + 11:].any()


@njit
def _load_u64(data, p):
    return load_u64(data, p)


@njit
def _store_u64(data, p, value):
    store_u64(data, p, value)


def test_fingerprint_collision_is_resolved_by_comparing_bytes():
    # Forge a table in which "xyz" (code 0) sits under the fingerprint of
    # "abc": encoding "abc" must not return code 0.
    d = StringDictionary()
    data = np.frombuffer(b"abc", np.uint8)
    k0, k1 = interning.fingerprint_bytes(data, 0, 3)
    d._reserve(1, 3)
    table = d._table
    slot, inserted = ht.ht_upsert(table.buckets, table.keys, table.meta, table.free, k0, k1)
    assert (slot, inserted) == (0, True)
    d._data[:3] = np.frombuffer(b"xyz", np.uint8)
    d._offsets[1] = 3
    codes, _ = d.encode(pa.array(["abc", "xyz", "abc"]))
    assert codes.tolist() == [1, 2, 1]
    assert d.values().to_pylist() == ["xyz", "abc", "xyz"]
    assert d.encode(pa.array(["abc"]))[0].tolist() == [1]


def test_large_batch_has_no_per_row_python(monkeypatch):
    rng = np.random.default_rng(3)
    n, distinct = 1_000_000, 1000
    ids = rng.integers(0, distinct, n)
    words = np.array([f"user-{i:05d}" for i in range(distinct)], dtype=object)
    array = pa.array(words[ids], pa.string())
    d = StringDictionary()
    d.encode(pa.array(["warm-up"]))          # compile outside the measured call

    calls = []
    original = dictionary_module.intern_rows

    def spy(*args):
        calls.append(args[0])  # (the row it starts at)
        return original(*args)

    monkeypatch.setattr(dictionary_module, "intern_rows", spy)
    events = 0
    kernel_files = {ht.__file__, interning.__file__, memory.__file__}

    def profiler(frame, event, arg):
        nonlocal events
        # Compiled kernels run as Python under NUMBA_DISABLE_JIT; their
        # (per-row) steps are not Python work of encode itself.
        if frame.f_code.co_filename not in kernel_files:
            events += 1

    sys.setprofile(profiler)
    try:
        codes, valid = d.encode(array)
    finally:
        sys.setprofile(None)
    # one compiled pass over the rows, stopping only where the table or the store must grow (doubling)
    assert calls[0] == 0 and calls == sorted(calls) and len(calls) <= 12, calls
    assert events < 5_000, f"{events} Python-level calls for {n} rows"
    first = np.unique(ids, return_index=True)[1]
    rank = np.empty(distinct, np.int64)
    rank[np.argsort(first)] = np.arange(distinct) + 1   # code 0 is "warm-up"
    assert valid.size == 0 and np.array_equal(codes, rank[ids])
    # A second batch of known values appends nothing.
    codes2, _ = d.encode(array.slice(0, 10_000))
    assert len(d) == distinct + 1 and np.array_equal(codes2, codes[:10_000])


_INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(st.one_of(st.integers(-3, 3), _INT64), st.one_of(st.integers(0, 5000), _INT64)),
                      max_size=300))
def test_radix_argsort_pairs_matches_lexsort(pairs):
    major = np.array([p[0] for p in pairs], np.int64)
    minor = np.array([p[1] for p in pairs], np.int64)
    assert np.array_equal(argsort_pairs(major, minor), np.lexsort((minor, major)))  # lexsort is stable too


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.integers(0, 70_000), _INT64), max_size=300))
def test_radix_sorted_values_match_numpy(values):
    array = np.array(values, np.int64)
    assert np.array_equal(sorted_values(array), np.sort(array))


def test_touched_slots_come_in_slot_order_by_sort_or_bitmap():
    rng = np.random.default_rng(3)
    for high_water, touched in ((1_000_000, 5_000), (10_000, 5_000), (1, 1), (100, 0)):
        dirty = rng.choice(high_water, touched, replace=False).astype(np.int64)
        assert np.array_equal(slot_order(dirty, high_water), np.sort(dirty))


@settings(max_examples=100, deadline=None)
@given(entries=st.lists(st.tuples(st.integers(-1000, 1000), st.integers(0, 50)), max_size=200),
       pops=st.integers(0, 200), seed=st.integers(0, 2**16))
def test_timer_heap_pops_in_time_then_first_arrival_order(entries, pops, seed):
    rank = np.random.default_rng(seed).permutation(51).astype(np.int64)  # each slot's key's first arrival
    times = np.empty(len(entries), np.int64)
    slots = np.empty(len(entries), np.int64)
    count = 0
    for t, s in entries:
        count = heap_push(times, slots, count, t, s, rank)
    got = []
    for _ in range(min(pops, count)):
        got.append((int(times[0]), int(slots[0])))
        count = heap_pop(times, slots, count, rank)
    assert got == sorted(entries, key=lambda e: (e[0], rank[e[1]]))[: len(got)]
    assert count == len(entries) - len(got)
