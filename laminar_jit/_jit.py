"""The one place where Numba options are decided.

Every kernel in the package is compiled with :func:`njit` (or
:func:`njit_nocache` for code that cannot be cached, :func:`njit_borrowing`
for per-row helpers that must not count references), so the policy is
visible and changeable in one spot:

* ``nogil=True`` so executors in threads do not serialize on the GIL;
* ``cache=True`` so a second process loads machine code from disk instead of
  recompiling (cold start matters);
* ``error_model="numpy"``: a division by zero gives inf/NaN as in numpy,
  Arrow and Polars, instead of raising inside a compiled loop;
* an explicit fastmath flag set *without* ``nnan``/``ninf``: null handling and
  NaN-aware aggregates compare against NaN and must keep doing so.
"""

from __future__ import annotations

import numba
from numba.core import config as _numba_config

__all__ = ["FASTMATH", "JIT_DISABLED", "njit", "njit_borrowing", "njit_nocache", "plain_njit"]

#: Fast-math flags that are safe for null- and NaN-aware code: reassociation
#: and contraction help reductions vectorize; nnan/ninf are deliberately absent.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}

#: True when ``NUMBA_DISABLE_JIT=1`` — kernels then run as plain Python, which
#: lets coverage see their bodies.
JIT_DISABLED = bool(_numba_config.DISABLE_JIT)


def njit(fn=None, **overrides):
    """Compile ``fn`` with the package's policy (cached on disk)."""
    options = dict(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")
    options.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)


def njit_borrowing(fn=None, **overrides):
    """Like :func:`njit`, for small helpers called once per row or entry on arrays their caller holds.

    Compiled without reference counting (Numba's ``_nrt=False``): every array
    argument of a call, plain or inlined in Numba's IR, otherwise costs an
    atomic ``NRT_incref``/``NRT_decref`` pair per call, which LLVM does not
    remove inside a loop. Unlinking a row from a join's chain took 43 ns a
    call that way and 2.6 ns without (the call is then a plain one, which LLVM
    inlines). Such a helper must not allocate (Numba refuses to compile that)
    and must return nothing that holds an array: its caller would release a
    reference it never got. Compiling a signature that returns one raises
    ``TypeError`` naming the helper.
    """
    overrides.setdefault("_nrt", False)
    if fn is None:
        return lambda f: njit_borrowing(f, **overrides)
    dispatcher = njit(fn, **overrides)
    if not JIT_DISABLED:
        dispatcher.add_overload = _refusing_arrays(fn, dispatcher.add_overload)
    return dispatcher


def _refusing_arrays(fn, add_overload):
    """``add_overload`` of a :func:`njit_borrowing` dispatcher, refusing a signature whose result holds an array
    (every compile and every load from the cache goes through it)."""
    from numba.core.datamodel import default_manager

    def checked(cres):
        result = cres.signature.return_type
        if default_manager.lookup(result).contains_nrt_meminfo():
            raise TypeError(f"{fn.__module__}.{fn.__qualname__} is compiled without reference counting "
                            f"(njit_borrowing) and so must not return an array, but returns {result}: "
                            f"decorate it with njit instead")
        add_overload(cres)
    return checked


def njit_nocache(fn=None, **overrides):
    """Like :func:`njit` but without the on-disk cache (for code with no stable source)."""
    overrides.setdefault("cache", False)
    return njit(fn, **overrides)


def plain_njit(fn):
    """User kernels: same flags, no cache: they are inlined into a cached plan instead.

    ``inline="always"`` inlines them in Numba's IR, so a filter's predicate or a
    map's expression is optimized with the loop that calls it; Numba optimizes
    each compiled function on its own, so a plain call stays a call per row
    (Nexmark q2's ``auction % 123 == 0`` over 9.2 M rows: 15 ms called, 6 ms inlined).
    """
    return numba.njit(nogil=True, cache=False, fastmath=FASTMATH, error_model="numpy", inline="always")(fn)
