"""Session windows: per-key lists of open sessions.

A session window node keeps each open session in a slot of its (key, serial)
table, chained per key (``head[ks]``, ``snext``) from a small table of keys
(``kb``/``kk``/``km``/``kf``). The plan's update code extends and merges a
key's sessions as rows arrive; :func:`unlink_sessions` takes emitted sessions
off their lists.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from .hashtable import ht_delete, ht_find

__all__ = ["OFF_LIST", "unlink_sessions"]

#: ``snext`` of a session a row's update took off its key's list (closed, waiting for the fire). A session off
#: its list may also say -1 (as after a checkpoint's copy): :func:`unlink_sessions` then walks the list to see.
OFF_LIST = -2


@njit
def unlink_sessions(fired, keys, kb, kk, km, kf, head, snext):
    """Take the sessions in slots ``fired`` off their keys' lists; free keys left with none.

    A session may be off its list already: a row's update takes the closed
    sessions it walks past off (they are never extended again, and a fire
    emits them next), marking them :data:`OFF_LIST` and leaving a key with an
    empty list until then.

    Parameters
    ----------
    fired : numpy.ndarray
        Slots of the sessions (each on its key's list).
    keys : numpy.ndarray
        The session table's keys (``keys[s, 0]`` is the session's key).
    kb, kk, km, kf : numpy.ndarray
        The table of keys with open sessions; ``head[ks]`` is the first session of key slot ``ks``.
    head, snext : numpy.ndarray
        The lists: ``snext[s]`` is the next session of the same key (-1: none); unlinked
        sessions get -1.
    """
    for o in range(fired.size):
        s = fired[o]
        ks = ht_find(kb, kk, km, keys[s, 0], np.int64(0))
        if ks < 0:  # its key went with an earlier session of this call (``s`` was off the list)
            continue
        prev = np.int64(-1)
        cur = head[ks] if snext[s] != OFF_LIST else -1
        while cur >= 0 and cur != s:
            prev = cur
            cur = snext[cur]
        if cur == s:  # (else a row's update already took it off, seeing it closed)
            if prev < 0:
                head[ks] = snext[s]
            else:
                snext[prev] = snext[s]
        snext[s] = -1
        if head[ks] < 0:
            ht_delete(kb, kk, km, kf, ks)
