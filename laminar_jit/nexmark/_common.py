"""What every Nexmark query's DAG shares: its sources, and the types its columns use."""

from __future__ import annotations

import datetime as _dt

import pyarrow as pa

from ..dag import DagBuilder
from ..time import BoundedOutOfOrderness
from .generator import SCHEMAS

_S = _dt.timedelta(seconds=1)


def _builder(streams, max_delay: int) -> DagBuilder:
    b = DagBuilder()
    for s in streams:
        b.source(s, SCHEMAS[s], event_time="date_time",
                 watermark=BoundedOutOfOrderness(_dt.timedelta(milliseconds=max_delay)))
    return b


#: The computed string columns of q21 and q22 are dictionary-encoded, like the ``channel`` and ``url`` they
#: come from: worked out once per distinct value, no string is copied per row.
_DICT_STRING = pa.dictionary(pa.int32(), pa.string())
