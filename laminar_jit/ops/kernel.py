"""User kernels: scalar Python functions whose parameters name columns.

A kernel is an ordinary function such as ``lambda price, qty: price * qty``.
Its parameter names bind to columns of the operator's input by name; the
engine compiles the loop around it, so the function itself is called once per
selected row *inside compiled code* and never from Python.

Kernels are compiled with Numba at :meth:`DagBuilder.build` for the concrete
column dtypes, which both checks that Numba can compile them (else
:class:`~laminar_jit.KernelError`) and infers their return type.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from typing import Callable, Sequence

import numba
import numpy as np

from .._jit import JIT_DISABLED, plain_njit
from ..errors import KernelError

__all__ = ["Kernel", "as_kernel", "fingerprint_function", "kernel"]


class Kernel:
    """A Numba-compilable scalar function whose parameters name columns.

    Parameters
    ----------
    fn : callable
        Plain Python function (or lambda) with positional parameters only.
        Parameter names are column names of the operator's input.
    name : str, optional
        Display name; defaults to ``fn.__name__``.

    Notes
    -----
    Calling a :class:`Kernel` calls its compiled version, which is handy for
    testing a kernel on scalars.
    """

    def __init__(self, fn: Callable, name: str | None = None):
        if isinstance(fn, Kernel):
            name, fn = name or fn.name, fn.fn
        if hasattr(fn, "py_func"):  # already a Numba dispatcher
            fn = fn.py_func
        if not callable(fn) or not hasattr(fn, "__code__"):
            raise TypeError(f"a kernel must be a Python function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "kernel")
        params = inspect.signature(fn).parameters.values()
        bad = [p.name for p in params if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if bad:
            raise KernelError(
                f"kernel {self.name!r}: parameters {bad} are not plain positional parameters; "
                "each parameter must name one column"
            )
        self.params: tuple[str, ...] = tuple(p.name for p in inspect.signature(fn).parameters.values())
        self._dispatcher = None

    @property
    def dispatcher(self):
        """The Numba dispatcher (compiled lazily, not cached on disk)."""
        if self._dispatcher is None:
            self._dispatcher = plain_njit(_with_kernels_compiled(self.fn))
        return self._dispatcher

    def __call__(self, *args):
        return self.dispatcher(*args)

    def __repr__(self) -> str:
        return f"Kernel({self.name}({', '.join(self.params)}))"

    def fingerprint(self) -> str | None:
        """Stable hash of the code and the values it closes over, or None if unhashable."""
        return fingerprint_function(self.fn)

    def infer_return(self, arg_dtypes: Sequence[np.dtype], where: str) -> tuple[np.dtype, ...] | np.dtype:
        """Compile for ``arg_dtypes`` and return the result dtype (a tuple for tuple returns).

        Raises
        ------
        KernelError
            When Numba cannot compile the function, naming ``where`` and the first
            informative line of Numba's message.
        """
        if JIT_DISABLED:
            return _infer_by_calling(self, arg_dtypes, where)
        argtys = tuple(numba.from_dtype(np.dtype(d)) for d in arg_dtypes)
        try:
            self.dispatcher.compile(argtys)
            restype = self.dispatcher.overloads[argtys].signature.return_type
        except numba.core.errors.NumbaError as exc:
            sig = ", ".join(f"{p}: {np.dtype(d).name}" for p, d in zip(self.params, arg_dtypes))
            raise KernelError(
                f"{where}: Numba cannot compile kernel {self.name}({sig}): {_first_line(exc)} "
                "— kernels must be scalar numeric functions Numba's nopython mode accepts"
            ) from exc
        return _numba_result_dtype(restype, self, where)


def kernel(fn: Callable | None = None, *, name: str | None = None):
    """Mark ``fn`` as a laminar_jit kernel (a Numba-compilable scalar function).

    Parameters
    ----------
    fn : callable
        Function whose parameter names are column names.
    name : str, optional
        Display name used in errors and DAG pictures.

    Returns
    -------
    Kernel
        Callable on scalars (compiled), usable in ``lj.Filter``/``lj.Map``, and
        callable from other kernels.

    Examples
    --------
    >>> import laminar_jit as lj
    >>> @lj.kernel
    ... def notional(price, qty):
    ...     return price * qty
    >>> notional(2.0, 3.0)
    6.0
    """
    if fn is None:
        return lambda f: Kernel(f, name=name)
    return Kernel(fn, name=name)


def _with_kernels_compiled(fn):
    """``fn`` with every :class:`Kernel` it references (globals, closure) swapped for its dispatcher.

    Numba cannot type a Kernel object, but it can call a dispatcher; this is
    what lets one kernel call another inside compiled code.
    """
    g = fn.__globals__
    names = _all_names(fn.__code__)
    swaps = {n: g[n].dispatcher for n in names if isinstance(g.get(n), Kernel)}
    cells = fn.__closure__ or ()
    if not swaps and not any(_cell_is_kernel(c) for c in cells):
        return fn
    new_globals = dict(g)
    new_globals.update(swaps)
    new_cells = tuple(
        types.CellType(c.cell_contents.dispatcher) if _cell_is_kernel(c) else c for c in cells
    ) or None
    clone = types.FunctionType(fn.__code__, new_globals, fn.__name__, fn.__defaults__, new_cells)
    clone.__qualname__ = fn.__qualname__
    clone.__module__ = fn.__module__
    return clone


def _cell_is_kernel(cell) -> bool:
    try:
        return isinstance(cell.cell_contents, Kernel)
    except ValueError:  # empty cell
        return False


def as_kernel(fn) -> Kernel:
    """Return ``fn`` as a :class:`Kernel` (wrapping plain functions)."""
    return fn if isinstance(fn, Kernel) else Kernel(fn)


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not line.startswith("Failed in") and not line.startswith("During:"):
            return line
    return type(exc).__name__


def _numba_result_dtype(restype, k: Kernel, where: str):
    if isinstance(restype, numba.core.types.BaseTuple):
        return tuple(_numba_result_dtype(t, k, where) for t in restype.types)
    if isinstance(restype, (numba.core.types.Boolean, numba.core.types.Integer, numba.core.types.Float)):
        return np.dtype(numba.np.numpy_support.as_dtype(restype))
    raise KernelError(
        f"{where}: kernel {k.name} returns {restype}; kernels must return a number, a boolean, "
        "or a tuple of them"
    )


def _infer_by_calling(k: Kernel, arg_dtypes, where: str):
    # Without the JIT there is no type inference; run the function on ones instead.
    try:
        result = k.fn(*[np.dtype(d).type(1) for d in arg_dtypes])
    except Exception as exc:
        raise KernelError(f"{where}: kernel {k.name} failed on sample values: {exc}") from exc
    if isinstance(result, tuple):
        return tuple(np.asarray(r).dtype for r in result)
    return np.asarray(result).dtype


# --------------------------------------------------------------------------- fingerprints

_SCALARS = (int, float, bool, complex, str, bytes, type(None), np.generic)


def fingerprint_function(fn, _seen: set | None = None) -> str | None:
    """Hash a function's bytecode, constants, closure and referenced globals.

    Numba freezes global and closure values into the machine code, so they are
    part of the identity of the compiled kernel. Returns None when a referenced
    value cannot be hashed stably, or when ``fn`` lives in no module a later
    process could import (code run with ``exec`` under a made-up module name):
    then plans using it are not cached on disk, since loading them would fail.
    """
    if getattr(fn, "__module__", None) not in sys.modules:
        return None
    seen = set() if _seen is None else _seen
    if id(fn) in seen:
        return "recursive"
    seen.add(id(fn))
    h = hashlib.sha256()
    code = fn.__code__
    if not _hash_code(code, h):
        return None
    names = _all_names(code)
    g = getattr(fn, "__globals__", {})
    for name in sorted(names):
        if name in g and not _hash_value(g[name], h, seen, name, names):
            return None
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if not _hash_value(value, h, seen, "<closure>"):
            return None
    for d in fn.__defaults__ or ():
        if not _hash_value(d, h, seen, "<default>"):
            return None
    return h.hexdigest()


def _hash_code(code, h) -> bool:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _hash_code(c, h)
        else:
            h.update(repr(c).encode())
    return True


def _all_names(code) -> set[str]:
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _all_names(c)
    return names


def _hash_value(value, h, seen, label, names=frozenset()) -> bool:
    h.update(label.encode())
    if isinstance(value, _SCALARS):
        h.update(f"{type(value).__name__}:{value!r}".encode())
        return True
    if isinstance(value, np.ndarray):
        h.update(f"nd:{value.dtype}:{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
        return True
    if isinstance(value, types.ModuleType):
        h.update(f"module:{value.__name__}".encode())
        # Numba freezes ``module.CONSTANT`` into the machine code: hash the
        # plain values among the attribute names the code uses.
        for attr in sorted(names):
            v = getattr(value, attr, None)
            if isinstance(v, _SCALARS) or isinstance(v, np.ndarray):
                _hash_value(v, h, seen, f"{value.__name__}.{attr}")
        return True
    if isinstance(value, Kernel):
        value = value.fn
    if hasattr(value, "py_func"):  # a Numba dispatcher
        value = value.py_func
    if isinstance(value, types.FunctionType):
        if value.__module__ in ("numpy", "math", "cmath") or (value.__module__ or "").startswith("numpy."):
            h.update(f"fn:{value.__module__}.{value.__qualname__}".encode())
            return True
        sub = fingerprint_function(value, seen)
        if sub is None:
            return False
        h.update(sub.encode())
        return True
    if isinstance(value, (np.ufunc, types.BuiltinFunctionType)):
        h.update(f"builtin:{getattr(value, '__module__', '')}.{value.__name__}".encode())
        return True
    if isinstance(value, tuple):
        return all(_hash_value(v, h, seen, "<item>") for v in value)
    return False
