"""Keyed state: int64 keys → dense slots in numpy arrays, and string dictionaries.

:class:`KeyTable` owns the arrays of an open-addressing hash table whose
kernels live in :mod:`laminar_jit.kernels.hashtable`; operators keep their
per-key state in per-slot numpy arrays grown in step with it.
:class:`StringDictionary` turns string key columns into int64 codes at the
source boundary. Both snapshot to plain arrays for checkpoints.
"""

from .dictionary import StringDictionary
from .keyed import KeyedState
from .keytable import KeyTable
from .windows import WindowState

__all__ = ["KeyTable", "KeyedState", "StringDictionary", "WindowState"]
