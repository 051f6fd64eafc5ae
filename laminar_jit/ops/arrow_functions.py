"""String functions on whole Arrow columns that Arrow compute spells differently from SQL.

``ArrowMap`` functions (Nexmark q21/q22, SQL's ``SPLIT_INDEX`` and
``REGEXP_EXTRACT``) call these; each works on a whole column at once.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["regexp_extract", "split_index"]

_OPEN_GROUP = re.compile(r"(?<!\\)\((?!\?)")


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
