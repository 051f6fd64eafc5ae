"""``StringDictionary``: persistent string → int64 code mapping for string key columns.

Kernels only read numbers, so a string key column is dictionary-encoded at
the source boundary into int64 codes that keyed state can hash. Codes are
0, 1, 2, … in order of first appearance and never change, so the dictionary
is part of a checkpoint (:meth:`StringDictionary.snapshot`).

How a batch is encoded, with no Python per row and none per known value.
Values live in a :class:`KeyTable` keyed by a 128-bit fingerprint of their
bytes (every hit is confirmed by comparing bytes, so codes are exact), and
their bytes in an append-only store. Which way a batch takes depends on how
distinct the last batch of at least ``DIRECT_ROWS`` rows was:

1. Values that repeat (symbols, names, device ids, log levels): one compiled
   pass over the rows (:func:`laminar_jit.kernels.interning.intern_rows`)
   looks each row up in a small direct-mapped cache of recent codes by a
   cheap hash of its bytes and confirms a hit by comparing bytes; a miss
   fingerprints the value and probes the table, appending a new value. The
   share of rows that missed the cache is the batch's measure.
2. Mostly distinct values (ids, urls, free text): every row is interned by
   :func:`~laminar_jit.kernels.interning.intern_bytes`, which asks the
   memory for a block of rows' table entries before probing them (the table
   outgrows the caches, the cache of recent codes would only miss).
3. A batch that arrives dictionary-encoded (a Polars ``Categorical``/``Enum``,
   Arrow ``dictionary<…, string>``, each batch with a dictionary of its own)
   is reduced to the entries its rows use through its integer indices
   (Arrow's ``dictionary_encode`` of the indices), those are interned, and
   numpy gathers the rows' codes: row strings are never built.

The cost of a batch is linear in the batch and in its distinct values, not in
the size of the dictionary. (Rejected: ``pyarrow.compute.index_in`` against
all known values, which rebuilds a hash set of the whole dictionary per batch
— about 0.4 s per batch at a million known values — and a Python ``dict``
over the distinct values, which is Python work per distinct value. Repeated
values went through Arrow's ``dictionary_encode`` of the rows and an intern
of the batch's distinct values until the cache of recent codes replaced it:
1,311 names of 99 distinct values took 53–88 µs a batch that way and 21–24 µs
through the cache, in one sitting.)

A *carried* dictionary (``carried=True``) holds a column whose codes nothing
compares: no key, join key, aggregate or kernel reads them, a join only keeps
them for its output (the executor decides; see
``SourcePlan.carried_strings``). Once a batch of at least ``DIRECT_ROWS`` rows
was mostly distinct (ids, urls, free text), it stops looking values up and
appends each row's bytes with numpy slice copies. Codes stay dense and decode
exactly, but a repeated value gets another code. Looking up a mostly distinct
value in a table that outgrows the caches costs a cache miss or two per row;
appending costs its bytes. Every ``CHECK_EVERY``-th batch appends only its
distinct values (found by Arrow's ``dictionary_encode``, which keeps nothing
between batches) and measures them: while batches are not mostly distinct,
each appends only its distinct values, so repeated values cost a dictionary
what its batches' distinct ones do.

Values are stored as one growing byte buffer plus int64 offsets (the
``large_binary`` layout), so :meth:`StringDictionary.decode` is an Arrow
``take`` over a zero-copy view. Null model: a null row gets code -1 and
``False`` in the validity mask; the mask is empty when the input has no nulls.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._types import OFFSET_TYPES, offsets_and_bytes
from ..kernels.interning import intern_bytes, intern_rows
from .keytable import KeyTable

__all__ = ["StringDictionary"]

_STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())
_BINARY_TYPES = (pa.binary(), pa.large_binary(), pa.binary_view())


def _family(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if t in _STRING_TYPES:
        return "string"
    if t in _BINARY_TYPES:
        return "binary"
    return None


#: A plain batch is interned row by row when more than this share of the rows of the last batch of at least
#: ``DIRECT_ROWS`` rows were distinct (a smaller batch tells too little).
DIRECT_SHARE = 0.5
DIRECT_ROWS = 256
#: A carried dictionary that appends rows checks every this many batches that they are still mostly distinct.
CHECK_EVERY = 8
#: Entries of the cache of recent codes that repeated values are looked up in (a power of two): four per value
#: known or one per row of the batch, whichever is more, within these bounds.
CACHE_MIN, CACHE_MAX = 4096, 1 << 16


class StringDictionary:
    """Dense int64 codes for string (or binary) values, in order of first appearance.

    Parameters
    ----------
    value_type : pyarrow.DataType, default ``pa.string()``
        Type of the decoded values: ``string``, ``large_string`` or
        ``string_view`` for text (any of them is accepted by :meth:`encode`),
        ``binary``, ``large_binary`` or ``binary_view`` for bytes.
    carried : bool, default False
        The codes are only carried to outputs, never compared: once a batch
        of at least ``DIRECT_ROWS`` rows was mostly distinct, values are
        appended without a lookup, so equal values may get different codes
        (each decodes to its value; see the module docstring).

    Examples
    --------
    >>> d = StringDictionary()
    >>> codes, valid = d.encode(pa.array(["web", "app", "web"]))
    >>> codes.tolist(), len(valid)
    ([0, 1, 0], 0)
    >>> d.decode(codes).to_pylist()
    ['web', 'app', 'web']
    """

    def __init__(self, value_type: pa.DataType = pa.string(), carried: bool = False):
        family = _family(value_type)
        if family is None or pa.types.is_dictionary(value_type):
            raise TypeError(
                f"StringDictionary: value_type {value_type} is not a string or binary type — use "
                "pa.string(), pa.large_string(), pa.string_view(), pa.binary(), pa.large_binary() "
                "or pa.binary_view()")
        self._value_type = value_type
        self._family = family
        self._store_type = pa.large_string() if family == "string" else pa.large_binary()
        self._table = KeyTable(width=2, capacity=0)
        self._offsets = np.zeros(1, np.int64)   # store_offsets[c]: start of code c's bytes
        self._data = np.empty(0, np.uint8)
        #: Share of the last plain batch's rows that were distinct (or new): above ``DIRECT_SHARE``,
        #: the next batch without nulls is interned row by row, without a distinct pass first.
        self._distinct_share = 0.0
        #: Whether the codes are only carried (see the module docstring).
        self.carried = bool(carried)
        #: Values appended after the table's (a carried dictionary that stopped looking values up), and
        #: the batches it encoded since.
        self._appended = 0
        self._batches = 0
        #: Recent codes by a quick hash of their value (see ``_intern_rows``), -1 where none.
        self._cache = np.empty(0, np.int64)

    @property
    def value_type(self) -> pa.DataType:
        """The type :meth:`decode` and :meth:`values` return."""
        return self._value_type

    def __len__(self) -> int:
        """Number of codes handed out (the next new value gets this code): the distinct values seen, but
        for a carried dictionary's repeated values, which may have several."""
        return self._table.high_water + self._appended

    def store(self) -> tuple[np.ndarray, np.ndarray]:
        """The values as compiled code reads them: ``(offsets, data)``, value ``c`` being the bytes
        ``data[offsets[c]:offsets[c + 1]]`` (views of the growing store; bytes once written never change)."""
        return self._offsets, self._data

    def __repr__(self) -> str:
        return f"StringDictionary({self._value_type}, {len(self)} values)"

    # -- encode ------------------------------------------------------------------

    def encode(self, array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """Codes of the values of ``array``, adding the values not seen before.

        Parameters
        ----------
        array : pyarrow.Array or pyarrow.ChunkedArray
            Values of the dictionary's family: any string type (``string``,
            ``large_string``, ``string_view``, or a dictionary of them) for a
            string dictionary, any binary type for a binary one.

        Returns
        -------
        codes : numpy.ndarray
            int64 per row; -1 for a null row.
        valid : numpy.ndarray
            bool per row, or an empty array when ``array`` has no nulls.

        Raises
        ------
        TypeError
            When ``array`` is not an Arrow array of the dictionary's family.
            A failed call leaves the dictionary unchanged.
        """
        if not isinstance(array, (pa.Array, pa.ChunkedArray)):
            raise TypeError(f"StringDictionary.encode: expected a pyarrow Array or ChunkedArray, "
                            f"got {type(array).__name__} — wrap it with pa.array(...)")
        if _family(array.type) != self._family:
            raise TypeError(
                f"StringDictionary.encode: values are {array.type}, expected {self._family} values "
                f"for a dictionary of {self._value_type} — cast them with pyarrow.compute.cast")
        # Everything that can fail (casts) happens before the dictionary is touched.
        add = self._intern
        if self._appended or (self.carried and self._distinct_share > DIRECT_SHARE and len(array)):
            # a carried dictionary no longer looks values up: a batch expected to be mostly distinct appends
            # its rows; every CHECK_EVERY-th batch, and each batch after one that was not, appends its
            # distinct values only and measures how distinct it was
            self._batches += 1
            if self._distinct_share > DIRECT_SHARE and self._batches % CHECK_EVERY:
                return self._append_rows(array)
            add = self._append_values
            if pa.types.is_dictionary(array.type):
                chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
                parts = [self._distinct_of_dictionary(chunk) for chunk in chunks]
            else:
                parts = [self._distinct_of_values(array)]
            if len(array) >= DIRECT_ROWS:
                self._distinct_share = sum(len(d) for d, _ in parts) / len(array)
        elif pa.types.is_dictionary(array.type):
            chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
            parts = [self._distinct_of_dictionary(chunk) for chunk in chunks]
        elif not array.null_count and self._distinct_share > DIRECT_SHARE and len(array):
            # mostly distinct values (ids, urls, free text): a distinct pass would find little to
            # share, so every row is interned (the kernel gives repeats one code, by first appearance)
            chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
            values = [self._readable(chunk) for chunk in chunks]  # (casts first: failing changes nothing)
            before = len(self)
            codes = [self._intern(v) for v in values]
            if len(array) >= DIRECT_ROWS:
                self._distinct_share = (len(self) - before) / len(array)
            return (codes[0] if len(codes) == 1 else np.concatenate(codes)), np.empty(0, np.bool_)
        else:  # values that repeat: every row through the kernel's cache of recent codes
            chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
            values = [self._readable(chunk) for chunk in chunks]  # (casts first: failing changes nothing)
            out = [self._intern_rows(v) for v in values]
            if len(array) >= DIRECT_ROWS:
                self._distinct_share = sum(missed for _, missed in out) / len(array)
            codes = out[0][0] if len(out) == 1 else (np.concatenate([c for c, _ in out]) if out
                                                     else np.empty(0, np.int64))
            return codes, (codes >= 0 if array.null_count else np.empty(0, np.bool_))
        out = [self._codes(distinct, rows, add) for distinct, rows in parts]
        if len(out) == 1:
            return out[0]
        if not out:
            return np.empty(0, np.int64), np.empty(0, np.bool_)
        codes = np.concatenate([c for c, _ in out])
        if not any(v.size for _, v in out):
            return codes, np.empty(0, np.bool_)
        return codes, codes >= 0

    def _distinct_of_values(self, array: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
        """Distinct values of a plain string/binary array (first appearance) and each row's index into them."""
        encoded = pc.dictionary_encode(array)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries()
            if encoded.num_chunks == 0:
                return pa.array([], self._store_type), pa.array([], pa.int32())
            return self._readable(encoded.chunk(0).dictionary), \
                pa.concat_arrays([chunk.indices for chunk in encoded.chunks])
        return self._readable(encoded.dictionary), encoded.indices

    def _readable(self, values: pa.Array) -> pa.Array:
        """``values`` as offsets + bytes for the interning kernel (a view type is cast; others as they are)."""
        return values if values.type in OFFSET_TYPES else values.cast(self._store_type)

    def _distinct_of_dictionary(self, chunk: pa.DictionaryArray) -> tuple[pa.Array, pa.Array]:
        """The same for a dictionary-encoded array, working on its indices and its own dictionary.

        Each array may bring a different dictionary (Polars categoricals, the
        chunks of an Arrow table), possibly with values no row uses, repeated
        values or nulls. Hashing the integer indices finds the entries the rows
        use, in order of first appearance; only those values are interned, so
        codes follow first appearance exactly as for plain strings and the row
        strings are never materialized.
        """
        used = pc.dictionary_encode(chunk.indices)  # distinct indices in order of first use
        return self._readable(chunk.dictionary.take(used.dictionary)), used.indices

    def _codes(self, distinct: pa.Array, rows: pa.Array, add) -> tuple[np.ndarray, np.ndarray]:
        """Codes per row from the batch's distinct values and the rows' indices into them.

        ``add`` gives the distinct values codes (:meth:`_intern`, or :meth:`_append_values` for a
        carried dictionary that stopped looking values up). A null index or a null distinct value is a
        null row (code -1).
        """
        if distinct.null_count:  # only from a dictionary with null entries
            valid_distinct = distinct.is_valid().to_numpy(zero_copy_only=False)
            interned = add(distinct.filter(distinct.is_valid()))
        else:
            valid_distinct, interned = None, add(distinct)
        if valid_distinct is None and not rows.null_count:  # the common case: no nulls at all
            return interned[rows.to_numpy(zero_copy_only=False)], np.empty(0, np.bool_)
        # Null rows index one past the distinct values, where the code is -1.
        codes_of_distinct = np.full(len(distinct) + 1, -1, np.int64)
        if valid_distinct is None:
            codes_of_distinct[:-1] = interned
        else:
            codes_of_distinct[:-1][valid_distinct] = interned
        rows_np = (pc.fill_null(rows, len(distinct)) if rows.null_count else rows).to_numpy(zero_copy_only=False)
        codes = codes_of_distinct[rows_np]
        if rows.null_count or valid_distinct is not None:
            return codes, codes >= 0
        return codes, np.empty(0, np.bool_)

    def _intern(self, distinct: pa.Array) -> np.ndarray:
        """Codes of ``distinct`` (non-null values of a type in ``OFFSET_TYPES``), appending new ones.

        The only place the dictionary changes; runs once per batch, with the
        batch's distinct values (or all its rows, when most are distinct: a
        repeated value gets the code of its first appearance), and does its
        work in a compiled kernel.
        """
        m = len(distinct)
        codes = np.empty(m, np.int64)
        if m == 0:
            return codes
        offsets, data = offsets_and_bytes(distinct)
        offsets = offsets.astype(np.int64, copy=False)
        self._reserve(m, int(offsets[-1] - offsets[0]))
        table = self._table
        added = intern_bytes(table.buckets, table.keys, table.meta, table.free,
                             offsets, data, self._offsets, self._data, codes)
        if added < 0:
            raise RuntimeError("StringDictionary: ran out of room after reserve (a bug)")
        return codes

    def _intern_rows(self, values: pa.Array) -> tuple[np.ndarray, int]:
        """Codes of every row of ``values`` (a type of ``OFFSET_TYPES``; -1 for a null row), appending new values,
        through :func:`~laminar_jit.kernels.interning.intern_rows`; and how many rows missed its cache.

        The kernel stops before a new value that does not fit; the table and the store then grow (doubling)
        and it goes on from there, so a batch of a few distinct values reserves room for those only.
        """
        m = len(values)
        codes = np.empty(m, np.int64)
        if m == 0:
            return codes, 0
        valid = values.is_valid().to_numpy(zero_copy_only=False) if values.null_count else np.empty(0, np.bool_)
        offsets, data = offsets_and_bytes(values)
        wanted = min(CACHE_MAX, max(CACHE_MIN, 1 << max(4 * len(self), m).bit_length()))
        if self._cache.size < wanted:  # (codes cached so far are found again in the table)
            self._cache = np.full(wanted, -1, np.int64)
        if not self._table.bucket_capacity:
            self._reserve(min(m, 64), 0)
        at, misses = 0, 0
        while True:
            table = self._table
            at, _added, missed = intern_rows(at, offsets, data, valid, self._cache, table.buckets, table.keys,
                                             table.meta, table.free, self._offsets, self._data, codes)
            misses += missed
            if at == m:
                return codes, misses
            # the value at row ``at`` did not fit: room for it, and (doubling) for more
            self._reserve(max(1, min(m - at, len(self))), int(offsets[at + 1] - offsets[at]))

    def _append_rows(self, array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` of a carried dictionary that no longer looks values up, for a batch expected to be
        mostly distinct: every non-null row's bytes are appended as the next code (numpy slice copies)."""
        chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
        plain = []
        for chunk in chunks:  # (casts first: failing changes nothing)
            if pa.types.is_dictionary(chunk.type):
                chunk = chunk.dictionary.take(chunk.indices)
            plain.append(self._readable(chunk))
        parts, nulls = [], False
        for chunk in plain:
            if not chunk.null_count:
                parts.append(self._append_values(chunk))
                continue
            nulls = True
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)
            codes = np.full(len(chunk), -1, np.int64)
            codes[valid] = self._append_values(chunk.filter(valid))
            parts.append(codes)
        codes = parts[0] if len(parts) == 1 else (np.concatenate(parts) if parts else np.empty(0, np.int64))
        return codes, (codes >= 0 if nulls else np.empty(0, np.bool_))

    def _append_values(self, values: pa.Array) -> np.ndarray:
        """Append ``values`` (non-null, a type of ``OFFSET_TYPES``) as new codes, without looking them up (numpy
        slice copies of their offsets and bytes); return those codes."""
        m = len(values)
        count = len(self)
        if m == 0:
            return np.empty(0, np.int64)
        offsets, data = offsets_and_bytes(values)
        start, stop = int(offsets[0]), int(offsets[-1])
        self._reserve(m, stop - start, appending=True)
        used = int(self._offsets[count])
        self._offsets[count + 1: count + m + 1] = offsets[1:]
        self._offsets[count + 1: count + m + 1] += used - start
        if stop > start:
            self._data[used: used + stop - start] = data[start:stop]
        self._appended += m
        return np.arange(count, count + m, dtype=np.int64)

    def _reserve(self, n_values: int, n_bytes: int, appending: bool = False) -> None:
        # Grown arrays get only what is written so far (offsets of the codes handed out, their
        # bytes): memory past it is first touched when a string is appended there, so a
        # dictionary pays the page faults of what it holds, not of its capacity.
        count = len(self)
        if appending:  # (the table no longer grows: the codes past its values are appended ones)
            slot_capacity = count + n_values
            if self._offsets.size < slot_capacity + 1:  # fourfold: appends stay amortized O(1)
                slot_capacity = max(slot_capacity, 4 * (self._offsets.size - 1))
        else:
            slot_capacity = self._table.reserve(n_values)
        if self._offsets.size < slot_capacity + 1:
            grown = np.empty(slot_capacity + 1, np.int64)
            grown[: count + 1] = self._offsets[: count + 1]
            self._offsets = grown
        used = int(self._offsets[count])
        needed = used + n_bytes
        if self._data.size < needed:
            # Growing fourfold keeps appends amortized O(1) per byte and copies a byte a third
            # of a time on average (doubling: once), into memory the kernel first clears; the
            # room past what is written costs address space only. Arrays handed out
            # by values() keep the old buffer alive; bytes once written are
            # never overwritten, so such views stay valid.
            grown = np.empty(max(needed, 4 * self._data.size, 1024), np.uint8)
            grown[:used] = self._data[:used]
            self._data = grown

    # -- decode ------------------------------------------------------------------

    def _store(self) -> pa.Array:
        """Zero-copy ``large_string``/``large_binary`` view of all values, by code."""
        n = len(self)
        return pa.Array.from_buffers(
            self._store_type, n,
            [None, pa.py_buffer(self._offsets[: n + 1]),
             pa.py_buffer(self._data[: int(self._offsets[n])])])

    def decode(self, codes: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
        """The values of ``codes``, as an Arrow array of :attr:`value_type`.

        Parameters
        ----------
        codes : numpy.ndarray
            Integer codes from :meth:`encode`.
        valid : numpy.ndarray, optional
            bool per row (as returned by :meth:`encode`); rows where it is
            False decode to null and their codes are not read. An empty mask
            means no nulls.

        Raises
        ------
        IndexError
            When a (valid) code is not one this dictionary has handed out.
        """
        codes = np.asarray(codes)
        if codes.ndim != 1 or (codes.size and not np.issubdtype(codes.dtype, np.integer)):
            raise TypeError(f"StringDictionary.decode: codes must be a 1-d integer array, "
                            f"got {codes.dtype}{list(codes.shape)}")
        codes = codes.astype(np.int64, copy=False)
        mask = None
        if valid is not None and np.size(valid):
            valid = np.asarray(valid, dtype=np.bool_)
            if valid.shape != codes.shape:
                raise ValueError(f"StringDictionary.decode: {codes.size} codes but {valid.size} "
                                 "validity flags")
            mask = ~valid
            checked = codes[valid]
        else:
            checked = codes
        if checked.size and (checked.min() < 0 or checked.max() >= len(self)):
            bad = checked[(checked < 0) | (checked >= len(self))][0]
            raise IndexError(f"StringDictionary.decode: code {bad} is not in [0, {len(self)}) — "
                             "pass the validity mask from encode() for null rows")
        if mask is not None:
            codes = np.where(mask, 0, codes)
        taken = self._store().take(pa.array(codes, pa.int64(), mask=mask))
        return taken.cast(self._value_type)

    def values(self) -> pa.Array:
        """All values, ``values()[c]`` being the value of code ``c``."""
        return self._store().cast(self._value_type)

    # -- snapshots -----------------------------------------------------------------

    def snapshot(self) -> pa.Array:
        """The values in code order (an Arrow array of :attr:`value_type`) — the whole state."""
        return self.values()

    def truncate(self, n: int) -> None:
        """Forget every value whose code is ``n`` or more (the dictionary as it was at length ``n``).

        Used to take back a rejected batch. Rebuilds the dictionary from its
        first ``n`` values, in place so everything holding it sees the change.
        """
        if n >= len(self):
            return
        rebuilt = StringDictionary.from_snapshot(self._store().slice(0, n), self._value_type, self.carried)
        self.__dict__.update(rebuilt.__dict__)

    @classmethod
    def from_snapshot(cls, values: pa.Array | pa.ChunkedArray,
                      value_type: pa.DataType | None = None, carried: bool = False) -> "StringDictionary":
        """Rebuild a dictionary whose codes are the positions in ``values``.

        Parameters
        ----------
        values : pyarrow.Array or pyarrow.ChunkedArray
            Output of :meth:`snapshot`: distinct, non-null values (a carried
            dictionary's may repeat a value).
        value_type : pyarrow.DataType, optional
            Type for :meth:`decode`; defaults to ``values.type``.
        carried : bool, default False
            Rebuild a carried dictionary (see the class).

        Raises
        ------
        ValueError
            When ``values`` holds a null, or a duplicate and ``carried`` is False.
        """
        value_type = values.type if value_type is None else value_type
        dictionary = cls(value_type, carried)
        if values.null_count:
            raise ValueError(f"StringDictionary snapshot: {values.null_count} null value(s); "
                             "a snapshot holds distinct non-null values")
        codes, _valid = dictionary.encode(values)
        if len(dictionary) != len(values) and carried:  # it had appended repeated values: append them all
            dictionary = cls(value_type, carried)
            flat = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            if pa.types.is_dictionary(flat.type):
                flat = flat.dictionary.take(flat.indices)
            codes = dictionary._append_values(dictionary._readable(flat))
        if len(dictionary) != len(values):
            raise ValueError(f"StringDictionary snapshot: {len(values)} values but only "
                             f"{len(dictionary)} distinct")
        assert np.array_equal(codes, np.arange(len(values))), "codes follow first appearance"
        return dictionary
