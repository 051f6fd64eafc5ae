"""``KeyTable``: the numpy-owned state of one keyed hash table, and its management.

The kernels in :mod:`laminar_jit.kernels.hashtable` do the per-row work inside
compiled plans; this class owns their arrays and does what kernels must not:
allocation, growth, snapshots and validation.

Growth protocol for operators: before a batch that may insert up to ``n``
keys, call ``table.reserve(n)``; it returns the slot capacity, and every
per-slot array the operator keeps (accumulators, timers, …) is passed through
``table.grow_slots(array, fill)`` so it stays as long as ``table.keys``. Then
the compiled kernels may insert ``n`` keys without checks. Slots are stable:
growth moves buckets, never slots, so per-slot arrays are only extended.

``reserve`` sizes the bucket array for the worst case (every insert a new
key); the kernels probe only its *active* buckets, which they double in
place as keys arrive (see :mod:`laminar_jit.kernels.hashtable`), so lookups
touch memory in proportion to the most keys the table has held, not to the
room reserved.
"""

from __future__ import annotations

import numpy as np

from ..kernels.hashtable import MIN_BUCKETS, ht_delete, ht_find, ht_lookup_many

__all__ = ["KeyTable", "KeyedEntries"]

_N_LIVE, _HIGH_WATER, _N_FREE, _WIDTH, _BUCKETS = range(5)
#: Buckets per live key at most; 0.5 keeps linear-probing runs short.
_MAX_LOAD = 0.5


def _next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def _buckets_for(n_keys: int) -> int:
    return max(MIN_BUCKETS, _next_pow2(int(np.ceil(n_keys / _MAX_LOAD))))


class KeyTable:
    """A hash table from int64 keys of width 1 or 2 to dense int32 slots.

    Parameters
    ----------
    width : {1, 2}
        Number of int64 columns in a key (``(auction,)`` or ``(auction, bidder)``).
    capacity : int
        Keys the table holds before it has to grow.

    Attributes
    ----------
    buckets : numpy.ndarray
        int32[cap], ``cap`` a power of two; -1 marks an empty bucket.
    keys : numpy.ndarray
        int64[slot_capacity, 2], the key of each slot (column 1 is 0 for width 1).
    meta : numpy.ndarray
        int64[4]: ``[n_live, high_water, n_free, width]``.
    free : numpy.ndarray
        int32[slot_capacity], a stack of freed slots (``free[:n_free]``).

    Notes
    -----
    The arrays are replaced (not resized in place) when the table grows, so
    read them from the table after every :meth:`reserve` rather than keeping
    references across calls.
    """

    def __init__(self, width: int = 1, capacity: int = 1024):
        if width not in (1, 2) or isinstance(width, bool):
            raise ValueError(f"KeyTable: width must be 1 or 2 int64 key columns, got {width!r}")
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"KeyTable: capacity must be a non-negative int, got {capacity!r}")
        capacity = int(capacity)
        self.buckets = np.full(_buckets_for(capacity), -1, np.int32)
        self.keys = np.zeros((capacity, 2), np.int64)
        self.meta = np.array([0, 0, 0, width, MIN_BUCKETS], np.int64)
        self.free = np.zeros(capacity, np.int32)

    # -- sizes ---------------------------------------------------------------

    @property
    def width(self) -> int:
        """Number of int64 columns in a key (1 or 2)."""
        return int(self.meta[_WIDTH])

    @property
    def slot_capacity(self) -> int:
        """Length of ``keys``/``free`` and of every per-slot array kept in step with them."""
        return int(self.keys.shape[0])

    @property
    def bucket_capacity(self) -> int:
        """Number of active buckets, the ones probed (a power of two; the kernels resize them in place)."""
        return int(self.meta[_BUCKETS])

    @property
    def bucket_room(self) -> int:
        """Length of the bucket array: what the active buckets may grow to before :meth:`reserve`."""
        return int(self.buckets.size)

    @property
    def high_water(self) -> int:
        """Slots ever handed out; per-slot state lives in ``[0, high_water)``."""
        return int(self.meta[_HIGH_WATER])

    @property
    def headroom(self) -> int:
        """Inserts that fit without :meth:`reserve` (free slots, load factor ≤ 0.5)."""
        n_live = int(self.meta[_N_LIVE])
        free_slots = int(self.meta[_N_FREE]) + self.slot_capacity - self.high_water
        free_buckets = int(self.bucket_room * _MAX_LOAD) - n_live
        return max(0, min(free_slots, free_buckets))

    def __len__(self) -> int:
        """Number of live keys."""
        return int(self.meta[_N_LIVE])

    def __repr__(self) -> str:
        return (f"KeyTable(width={self.width}, live={len(self)}, high_water={self.high_water}, "
                f"slot_capacity={self.slot_capacity}, buckets={self.bucket_capacity} of {self.bucket_room})")

    # -- growth --------------------------------------------------------------

    def reserve(self, extra_keys: int) -> int:
        """Make room for ``extra_keys`` more inserts, growing the arrays if needed.

        The bucket array grows to the smallest power of two that keeps the
        load factor at most 0.5 were every insert a new key (the active
        buckets are copied over as they are: the kernels grow them within
        it); the slot arrays (``keys``, ``free``) grow by doubling. Existing
        slots never move.

        Parameters
        ----------
        extra_keys : int
            Upper bound on the keys that will be inserted before the next call.

        Returns
        -------
        int
            The slot capacity after the call. Owners of per-slot arrays grow
            them to this length with :meth:`grow_slots`.
        """
        extra_keys = int(extra_keys)
        if extra_keys < 0:
            raise ValueError(f"KeyTable.reserve: extra_keys must be >= 0, got {extra_keys}")
        needed = len(self) + extra_keys
        # Slots: new ones come from the free stack, then from high_water, so
        # room is n_free + slot_capacity - high_water = slot_capacity - n_live.
        if needed > self.slot_capacity:
            new_cap = max(self.slot_capacity, 1)
            while new_cap < needed:
                new_cap *= 2
            self.keys = self.grow_slots(self.keys, 0, new_cap)
            self.free = self.grow_slots(self.free, 0, new_cap)
        if needed > self.bucket_room * _MAX_LOAD:
            new_buckets = np.full(_buckets_for(needed), -1, np.int32)
            active = self.bucket_capacity
            new_buckets[:active] = self.buckets[:active]
            self.buckets = new_buckets
        return self.slot_capacity

    def grow_slots(self, array: np.ndarray, fill=0, capacity: int | None = None) -> np.ndarray:
        """Return ``array`` extended along axis 0 to the slot capacity.

        Parameters
        ----------
        array : numpy.ndarray
            A per-slot array (``array[slot]`` is that slot's state; any
            trailing dimensions are kept).
        fill : scalar, default 0
            Value of the new rows (the "empty" state of the owner's aggregate).
        capacity : int, optional
            Length to grow to; defaults to :attr:`slot_capacity`.

        Returns
        -------
        numpy.ndarray
            ``array`` itself when it is already long enough, else a new array
            whose first ``len(array)`` rows are a copy of it.
        """
        capacity = self.slot_capacity if capacity is None else int(capacity)
        if array.shape[0] >= capacity:
            return array
        out = np.full((capacity,) + array.shape[1:], fill, dtype=array.dtype)
        out[: array.shape[0]] = array
        return out

    # -- convenience (Python-level; compiled plans call the kernels) -----------

    def _key(self, k0, k1) -> tuple[np.int64, np.int64]:
        if self.width == 1 and k1 != 0:
            raise ValueError(f"KeyTable: a width-1 table takes no second key column, got k1={k1!r}")
        return np.int64(k0), np.int64(k1)

    def find(self, k0: int, k1: int = 0) -> int:
        """The slot of key ``(k0, k1)`` (``k0`` alone for width 1), or -1 when absent."""
        k0, k1 = self._key(k0, k1)
        return int(ht_find(self.buckets, self.keys, self.meta, k0, k1))

    def upsert_many(self, k0, k1=None) -> np.ndarray:
        """Slots of the given keys, inserting the absent ones (growing as needed).

        Parameters
        ----------
        k0 : array_like of int64
            First key column.
        k1 : array_like of int64, optional
            Second key column; required for width 2, not allowed for width 1.

        Returns
        -------
        numpy.ndarray
            int32 slot per input row.
        """
        k0 = np.ascontiguousarray(k0, dtype=np.int64).reshape(-1)
        if self.width == 2:
            if k1 is None:
                raise ValueError("KeyTable.upsert_many: a width-2 table needs k1")
            k1 = np.ascontiguousarray(k1, dtype=np.int64).reshape(-1)
            if k1.size != k0.size:
                raise ValueError(f"KeyTable.upsert_many: k0 has {k0.size} rows but k1 has {k1.size}")
        elif k1 is not None:
            raise ValueError("KeyTable.upsert_many: a width-1 table takes no k1")
        else:
            k1 = np.empty(0, np.int64)
        n = k0.size
        if n > np.iinfo(np.int32).max:
            raise ValueError(f"KeyTable.upsert_many: {n} rows exceed the int32 selection range")
        slots = np.empty(n, np.int32)
        # Reserve in steps bounded by the table's own size rather than for all
        # n rows at once: a million rows over a thousand keys must not grow the
        # table to a million slots.
        pos = 0
        while pos < n:
            want = min(n - pos, max(1024, len(self)))
            if self.headroom < want:
                self.reserve(want)
            take = min(self.headroom, n - pos)
            sel = np.arange(pos, pos + take, dtype=np.int32)
            got = ht_lookup_many(self.buckets, self.keys, self.meta, self.free,
                                 k0, k1, sel, slots[pos:pos + take])
            if got < 0:
                raise RuntimeError("KeyTable.upsert_many: ran out of room after reserve (a bug)")
            pos += take
        return slots

    def delete(self, slot: int) -> None:
        """Remove the key held by ``slot``; the slot is reused by a later insert.

        Raises
        ------
        KeyError
            When ``slot`` holds no live key.
        """
        if not ht_delete(self.buckets, self.keys, self.meta, self.free, np.int64(slot)):
            raise KeyError(f"KeyTable.delete: slot {slot} holds no live key")

    def live_slots(self) -> np.ndarray:
        """The slots holding live keys, ascending, as int32."""
        active = self.buckets[:self.bucket_capacity]
        return np.sort(active[active >= 0])

    # -- snapshots -------------------------------------------------------------

    def snapshot(self) -> dict[str, np.ndarray]:
        """Copies of the four state arrays: ``buckets``, ``keys``, ``meta``, ``free``.

        :meth:`from_snapshot` restores exactly this state (capacities, bucket
        layout and free stack included), so slots handed out after a restore
        are the ones the original table would have handed out.
        """
        return {"buckets": self.buckets.copy(), "keys": self.keys.copy(),
                "meta": self.meta.copy(), "free": self.free.copy()}

    @classmethod
    def from_snapshot(cls, snapshot) -> "KeyTable":
        """Rebuild a table from :meth:`snapshot` output, validating it first.

        Parameters
        ----------
        snapshot : mapping of str to numpy.ndarray
            ``buckets``, ``keys``, ``meta`` and ``free`` arrays.

        Raises
        ------
        ValueError
            When an array is missing, has the wrong dtype or shape, or the
            arrays disagree with each other.
        """
        missing = {"buckets", "keys", "meta", "free"} - set(snapshot)
        if missing:
            raise ValueError(f"KeyTable snapshot: missing {sorted(missing)}")
        buckets = np.array(snapshot["buckets"], copy=True)
        keys = np.array(snapshot["keys"], copy=True)
        meta = np.array(snapshot["meta"], copy=True)
        free = np.array(snapshot["free"], copy=True)
        for name, arr, dtype, ndim in (("buckets", buckets, np.int32, 1), ("keys", keys, np.int64, 2),
                                       ("meta", meta, np.int64, 1), ("free", free, np.int32, 1)):
            if arr.dtype != dtype or arr.ndim != ndim:
                raise ValueError(f"KeyTable snapshot: {name} is {arr.dtype}{list(arr.shape)}, "
                                 f"expected a {ndim}-d {np.dtype(dtype)} array")
        if meta.size == 4:  # (written before the active buckets were kept: all of them were active)
            meta = np.append(meta, np.int64(buckets.size))
        n_live, high_water, n_free, width, active = (int(v) for v in meta) if meta.size == 5 else (-1,) * 5
        cap = buckets.size
        problems = []
        if meta.size != 5:
            problems.append(f"meta has {meta.size} values, expected 5")
        elif active <= 0 or active & (active - 1) or active > cap or (buckets[active:] != -1).any():
            problems.append(f"meta says {active} active buckets: not a power of two up to the {cap} buckets, "
                            "or a bucket past them is in use")
        if cap == 0 or cap & (cap - 1):
            problems.append(f"buckets has {cap} entries, expected a power of two")
        if keys.shape[1:] != (2,) or free.size != keys.shape[0]:
            problems.append(f"keys {list(keys.shape)} and free [{free.size}] disagree on the slot capacity")
        if width not in (1, 2) or n_live < 0 or n_free < 0 or n_live + n_free != high_water \
                or high_water > keys.shape[0]:
            problems.append(f"meta {meta.tolist()} is inconsistent")
        elif int((buckets >= 0).sum()) != n_live or buckets.min(initial=-1) < -1 \
                or buckets.max(initial=-1) >= high_water:
            problems.append("buckets do not hold n_live slots below high_water")
        elif n_free and ((free[:n_free] < 0).any() or (free[:n_free] >= high_water).any()
                         or keys[free[:n_free].clip(0, max(high_water - 1, 0))].any()):
            # fires tell freed slots by their key (0, 0)
            problems.append("the free stack holds slots out of range or with a key")
        if problems:
            raise ValueError("KeyTable snapshot: " + "; ".join(problems))
        table = cls.__new__(cls)
        table.buckets, table.keys, table.meta, table.free = buckets, keys, meta, free
        return table


# -- helpers for the owners of key tables (window and keyed-kernel state) -------

_TABLE_ARRAYS = ("buckets", "keys", "meta", "free")


class KeyedEntries:
    """Key columns of a keyed state's entries, for states whose composite keys go through ``key_tables``.

    A state's table holds each entry's key as the key column's value itself
    (a string's code, ``NULL_KEY`` for null) or, for composite keys, an id of
    the per-level ``key_tables`` (level ``i`` maps ``(id of the first i
    columns, value of column i + 1)`` to an id). How key shards move entries
    between states (``absorb``) and find their key groups.
    """

    key_tables: list

    def key_columns(self, ids) -> list[np.ndarray]:
        """Each key column's int64 value (string code, ``NULL_KEY`` for null) of entry keys ``ids``."""
        k = np.asarray(ids, np.int64)
        cols = []
        for table in reversed(self.key_tables):
            cols.append(table.keys[k, 1])
            k = table.keys[k, 0]
        cols.append(k)
        return cols[::-1]

    def recode_keys(self, maps: list) -> None:
        """Rewrite the string key columns' codes through ``maps`` (per key column: old code -> new code, or None).

        The tables are not rehashed: a state recoded so is only read, by
        :meth:`absorb` into another state, which inserts its keys afresh
        (how partitions' states, each with its own dictionaries, merge).
        """
        if not self.key_tables:
            if maps and maps[0] is not None:
                remap_codes(self.table.keys[:, 0], maps[0])
            return
        if maps[0] is not None:
            remap_codes(self.key_tables[0].keys[:, 0], maps[0])
        for table, m in zip(self.key_tables, maps[1:]):
            if m is not None:
                remap_codes(table.keys[:, 1], m)

    def _compose(self, cols: list[np.ndarray]) -> np.ndarray:
        """Entry keys of key-column values: composite keys get this state's ids (new combinations are added)."""
        k = cols[0]
        for table, c in zip(self.key_tables, cols[1:]):
            k = table.upsert_many(k, c).astype(np.int64)
        return k

    def _absorb_entries(self, src, slots: np.ndarray, second: np.ndarray) -> np.ndarray:
        """The slots here of ``src``'s entries ``slots``, added after reserving room (``reserve``).

        Their keys are the same values (composite keys re-composed here);
        ``second`` is the table's second key column (a window start, a time
        bucket, or zeros).

        Raises
        ------
        ValueError
            One of them is already held here.
        """
        n = slots.size
        self.reserve(n)  # grows every per-slot array with the tables
        old = src.table.keys[slots, 0]
        keys = self._compose(src.key_columns(old)) if self.key_tables else old
        live = len(self.table)
        new = self.table.upsert_many(keys, second).astype(np.int64)
        if len(self.table) != live + n:
            raise ValueError(f"{type(self).__name__}.absorb: {live + n - len(self.table)} of the {n} entries have "
                             "keys this state already holds")
        return new


def remap_codes(values: np.ndarray, new_code: np.ndarray) -> None:
    """Replace, in place, each string code of ``values`` (a view is fine) by ``new_code[code]``.

    Values outside the codes (the null key, a null's placeholder in a free or
    invalid row) stay as they are.
    """
    ok = (values >= 0) & (values < new_code.size)
    values[ok] = new_code[values[ok]]


def put_table(out: dict[str, np.ndarray], prefix: str, table: KeyTable) -> None:
    """Add ``table``'s state to ``out`` under ``prefix.buckets`` etc., without unused slots.

    Only the slots ever handed out (``keys[:high_water]``) and the live part
    of the free stack are stored, plus the slot capacity to grow back to:
    slots beyond the high-water mark hold nothing yet. Owners store their
    per-slot arrays the same way (see :func:`take_slots`).
    """
    hw, n_free = table.high_water, int(table.meta[_N_FREE])
    out[f"{prefix}.buckets"] = table.buckets.copy()
    out[f"{prefix}.keys"] = table.keys[:hw].copy()
    out[f"{prefix}.meta"] = table.meta.copy()
    out[f"{prefix}.free"] = table.free[:n_free].copy()
    out[f"{prefix}.capacity"] = np.array([table.slot_capacity], np.int64)


def take_table(arrays, prefix: str) -> KeyTable:
    """The :class:`KeyTable` stored by :func:`put_table` (validated; raises ValueError)."""
    try:
        parts = {name: np.asarray(arrays[f"{prefix}.{name}"]) for name in _TABLE_ARRAYS + ("capacity",)}
    except KeyError as e:
        raise ValueError(f"missing array {e.args[0]!r}") from None
    capacity = parts.pop("capacity")
    if capacity.shape != (1,) or capacity.dtype != np.int64 or not 0 <= capacity[0] < 2**31:
        raise ValueError(f"{prefix}.capacity is not one int64 slot count")
    cap, meta = int(capacity[0]), parts["meta"]
    if meta.shape not in ((4,), (5,)) or parts["keys"].ndim != 2 or parts["free"].ndim != 1:
        raise ValueError(f"{prefix}: meta, keys or free has the wrong shape")
    for name, rows in (("keys", int(meta[_HIGH_WATER])), ("free", int(meta[_N_FREE]))):
        arr = parts[name]
        if arr.shape[0] != rows or rows > cap:
            raise ValueError(f"{prefix}.{name} has {arr.shape[0]} rows; meta says {rows} "
                             f"(slot capacity {cap}) — the table state is inconsistent")
        padded = np.zeros((cap,) + arr.shape[1:], arr.dtype)
        padded[:rows] = arr
        parts[name] = padded
    try:
        return KeyTable.from_snapshot(parts)
    except ValueError as e:
        raise ValueError(f"{prefix}: {e}") from None


def put_tables(out: dict[str, np.ndarray], table: KeyTable, key_tables) -> None:
    """Add an operator's key table (``table.*``) and its composite-key level tables (``keys<level>.*``) to ``out``."""
    put_table(out, "table", table)
    for level, level_table in enumerate(key_tables):
        put_table(out, f"keys{level}", level_table)


def take_tables(arrays, levels: int) -> tuple[KeyTable, list[KeyTable]]:
    """The key table and ``levels`` composite-key level tables stored by :func:`put_tables` (validated)."""
    return take_table(arrays, "table"), [take_table(arrays, f"keys{level}") for level in range(levels)]


def take_slots(arrays, name: str, template: np.ndarray, table: KeyTable, fill) -> np.ndarray:
    """A per-slot array stored as its first ``table.high_water`` rows, checked and grown back to the slot capacity."""
    arr = check_like(name, arrays[name], template, table.high_water)
    out = np.full((table.slot_capacity,) + template.shape[1:], fill, template.dtype)
    out[: arr.shape[0]] = arr
    return out


def check_like(name: str, arr: np.ndarray, template: np.ndarray, length: int | None = None) -> np.ndarray:
    """A copy of ``arr`` after checking it has ``template``'s dtype and trailing shape (and ``length`` rows)."""
    if not isinstance(arr, np.ndarray) or arr.dtype != template.dtype or arr.shape[1:] != template.shape[1:]:
        found = f"{arr.dtype}{list(arr.shape)}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{name} is {found}, expected {template.dtype} with trailing shape {list(template.shape[1:])}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {length} (one per slot)")
    return np.array(arr, copy=True)


def check_names(arrays, expected) -> None:
    """Raise ValueError unless ``arrays`` has exactly the ``expected`` names."""
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or extra:
        raise ValueError("state arrays differ from this operator's: "
                         + "; ".join(p for p in (f"missing {missing}" if missing else "",
                                                  f"unexpected {extra}" if extra else "") if p))
