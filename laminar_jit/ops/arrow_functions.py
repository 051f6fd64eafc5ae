"""String functions on whole Arrow columns that Arrow compute spells differently from SQL.

``ArrowMap`` functions (Nexmark q14, q21/q22, SQL's ``SPLIT_INDEX`` and
``REGEXP_EXTRACT``, Nexmark's ``count_char`` UDF) call these; each works on a whole column at once.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._types import OFFSET_TYPES, offsets_and_bytes
from ..kernels.strings import count_byte

__all__ = ["count_char", "regexp_extract", "split_index"]

_OPEN_GROUP = re.compile(r"(?<!\\)\((?!\?)")


def count_char(strings, char: str) -> pa.Array:
    """Nexmark's ``count_char`` UDF: how often ``char`` occurs in each string (int64; null for a null string).

    An ASCII ``char`` is counted by a compiled scan of the column's bytes
    (:func:`~laminar_jit.kernels.strings.count_byte`; Arrow's
    ``count_substring`` searched each string for it at about a sixth of the
    speed), a dictionary column's once per dictionary value; other characters
    by ``pyarrow.compute.count_substring``.

    Parameters
    ----------
    strings : pyarrow.Array or pyarrow.ChunkedArray
        Strings (any string type, or a dictionary of them).
    char : str
        One character.
    """
    if isinstance(strings, pa.ChunkedArray):
        return pa.chunked_array([count_char(chunk, char) for chunk in strings.chunks], pa.int64())
    if pa.types.is_dictionary(strings.type):
        return count_char(strings.dictionary, char).take(strings.indices)
    values = strings if strings.type in OFFSET_TYPES else strings.cast(pa.large_string())  # (views)
    if len(char.encode()) != 1:
        return pc.cast(pc.count_substring(values, pattern=char), pa.int64())
    counts = count_byte(*offsets_and_bytes(values), ord(char)) if len(values) else np.empty(0, np.int64)
    return pa.array(counts, pa.int64(), mask=values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None)


def split_index(strings, sep: str, indices):
    """Flink's ``SPLIT_INDEX(s, sep, i)`` for each ``i`` of ``indices``: the ``i``-th (0-based) piece, null past
    the last (one split for all)."""
    parts = pc.split_pattern(strings, sep)
    n = len(parts)
    lengths = pc.fill_null(pc.list_value_length(parts), 0).to_numpy()
    starts = parts.offsets.to_numpy()[:-1]
    flat = pc.list_flatten(parts)
    out = []
    for index in indices:
        has = lengths > index
        if not has.any():
            out.append(pa.nulls(n, pa.string()))
            continue
        picked = flat.take(pa.array(np.where(has, starts + index, 0), pa.int64()))
        out.append(pc.if_else(pa.array(has), picked, pa.nulls(n, pa.string())))
    return out


def regexp_extract(strings, pattern: str, group: int = 1):
    """Flink's ``REGEXP_EXTRACT(s, pattern, group)``: the ``group``-th capture (0: the whole match) of the first
    match, null where nothing matches."""
    count = iter(range(1, 1 << 30))
    named = _OPEN_GROUP.sub(lambda m: f"(?P<g{next(count)}>", pattern)
    return pc.struct_field(pc.extract_regex(strings, f"(?P<g0>{named})"), f"g{group}")
