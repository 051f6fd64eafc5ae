"""Which Arrow types kernels can read, and how they look as numpy.

Kernels see numeric columns as numpy views: integers and floats as
themselves, booleans as ``np.bool_`` (Arrow packs bits, so booleans are the one
numeric type that is copied), and temporal types (timestamp, date, duration,
time) as their integer storage in the column's own unit. Everything else —
strings, binary, nested, dictionary — is not readable by kernels; such columns
ride along by selection and are materialized with Arrow ``take`` at sinks.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

__all__ = ["OFFSET_TYPES", "arrow_to_numpy_dtype", "is_kernel_type", "numpy_to_arrow_type", "offsets_and_bytes",
           "type_label"]


def arrow_to_numpy_dtype(arrow_type: pa.DataType) -> np.dtype | None:
    """Return the numpy dtype kernels see for ``arrow_type``, or None if unreadable."""
    t = arrow_type
    if pa.types.is_boolean(t):
        return np.dtype(np.bool_)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if pa.types.is_float16(t):
            return None
        return np.dtype(t.to_pandas_dtype())
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_date64(t):
        return np.dtype(np.int64)
    if pa.types.is_date32(t) or pa.types.is_time32(t):
        return np.dtype(np.int32)
    if pa.types.is_time64(t):
        return np.dtype(np.int64)
    return None


def is_kernel_type(arrow_type: pa.DataType) -> bool:
    """True when kernels can read columns of ``arrow_type``."""
    return arrow_to_numpy_dtype(arrow_type) is not None


def numpy_to_arrow_type(dtype: np.dtype) -> pa.DataType:
    """Arrow type for a numpy dtype produced by a kernel."""
    return pa.from_numpy_dtype(np.dtype(dtype))


def type_label(arrow_type: pa.DataType) -> str:
    """Short human name of an Arrow type for error messages."""
    return str(arrow_type)


#: Types laid out as offsets + bytes, which kernels read as they are (others are cast first).
OFFSET_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())
_LARGE_TYPES = (pa.large_string(), pa.large_binary())


def offsets_and_bytes(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy views of a non-empty array of a type of :data:`OFFSET_TYPES`: its ``len + 1`` offsets (int32 or
    int64, as stored) and its whole data buffer (uint8)."""
    _validity, offsets_buf, data_buf = values.buffers()
    width = np.dtype(np.int64 if values.type in _LARGE_TYPES else np.int32)
    offsets = np.frombuffer(offsets_buf, width, count=len(values) + 1, offset=values.offset * width.itemsize)
    return offsets, (np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8))
