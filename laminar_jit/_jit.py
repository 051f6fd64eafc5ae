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
  NaN-aware aggregates compare against NaN and must keep doing so;
* a plan's generated glue (its ``step``) is optimized by one module pass
  instead of Numba's two (:func:`compiling_glue`).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numba
from numba.core import config as _numba_config

__all__ = ["FASTMATH", "GLUE_FUNCTIONS", "JIT_DISABLED", "compiling_glue", "njit", "njit_borrowing", "njit_nocache",
           "plain_njit"]

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


#: The functions of a plan that are glue (see :func:`compiling_glue`): the generated ``step``.
GLUE_FUNCTIONS = frozenset({"step"})
_glue = threading.local()


@contextmanager
def compiling_glue():
    """Within this block, a :data:`GLUE_FUNCTIONS` function is optimized by one module pass, not two.

    Numba finalizes every compiled function by linking in the code of all it
    calls and running LLVM's module optimization over the whole twice: a
    pass that inlines (so reference counts meet in one function and can be
    pruned), then the full pipeline again. A plan's step is glue: its loops
    are few, and the helpers and kernels it calls, where the row loops are,
    were optimized that way in their own libraries already. Running the
    second pass over the step's linked module (some 800 KB of IR for a join
    query's step) re-optimizes those helpers for nothing: one pass (the
    first: the full pipeline but for the SLP vectorizer, with reference count
    pruning) took a cold compile of Nexmark q4's three steps from 9.7 s to
    8.5 s, and two test files' plans from 131 s to 115 s, the benchmarks'
    times unchanged. (Giving every function one pass cost the helpers'
    loops 10-45 %.) Numba compiles under one global lock; the block is
    per thread.
    """
    depth = getattr(_glue, "depth", 0)
    _glue.depth = depth + 1
    try:
        yield
    finally:
        _glue.depth = depth


def _one_pass_for_glue() -> None:
    """Make Numba's final module optimization run one pass for glue compiled in :func:`compiling_glue`.

    Numba's code library has no option for it, so its method is wrapped; on
    a Numba whose library lacks what the wrapper uses, nothing changes.
    """
    try:
        from numba.core.codegen import CPUCodeLibrary, remove_redundant_nrt_refct
        two_passes = CPUCodeLibrary._optimize_final_module
    except (ImportError, AttributeError):
        return
    if getattr(two_passes, "laminar_jit_glue", False):
        return

    def optimize_final_module(self):
        if not (getattr(_glue, "depth", 0) and self.name in GLUE_FUNCTIONS):
            return two_passes(self)
        codegen = self._codegen
        try:
            mpm, mpb = codegen._module_pass_manager(loop_vectorize=codegen._loopvect, slp_vectorize=False,
                                                    opt=codegen._opt_level, cost="cheap")
        except (AttributeError, TypeError):  # another Numba's pass manager: its two passes
            return two_passes(self)
        with self._recorded_timings.record("Module passes (one pass: plan glue)", mpb):
            mpm.run(self._final_module, mpb)
        if not _numba_config.LLVM_REFPRUNE_PASS:
            self._final_module = remove_redundant_nrt_refct(self._final_module)
        self.laminar_jit_passes = 1  # (read by the tests)

    optimize_final_module.laminar_jit_glue = True
    CPUCodeLibrary._optimize_final_module = optimize_final_module


_one_pass_for_glue()
