"""The plan cache on disk: where generated modules go, how one is written and imported, and the lock
that lets one process compile a plan while others wait for its cached machine code."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile

from .._progress import compiling

try:
    import fcntl
except ImportError:  # Windows: no cross-process compile lock
    fcntl = None

__all__ = ["cache_dir", "compile_lock", "write_and_import"]


def cache_dir() -> str:
    """Directory of generated plans (and, beside them, Numba's cache).

    ``LAMINAR_JIT_CACHE_DIR`` overrides; otherwise ``$XDG_CACHE_HOME/laminar_jit``
    or ``~/.cache/laminar_jit``.
    """
    env = os.environ.get("LAMINAR_JIT_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "laminar_jit")


@contextlib.contextmanager
def compile_lock(digest: str, source: str, cacheable: bool):
    """Hold an exclusive lock on the plan ``digest`` across processes while it is compiled.

    Processes that start one DAG together (the partitions of a run, test workers) would each
    compile the same plan at once, sharing the cores; with the lock the first compiles and
    the others wait, then load its machine code from the disk cache. The lock is advisory
    (``flock``) and dropped by the operating system if its holder dies; without ``fcntl``
    (Windows) or a writable cache directory there is no lock.
    """
    if not cacheable or fcntl is None:
        yield
        return
    try:
        directory = os.path.join(cache_dir(), "plans")
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, f"p_{digest}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process is compiling it: wait, then load what it cached
            with compiling(f"waiting for another process compiling the plan for source {source!r}"):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_and_import(text: str, name: str, cacheable: bool, kernels: dict):
    """Write ``text`` to the plan cache as ``<name>.py`` (once, atomically) and import it; the module and
    whether it is disk-cached."""
    module_name = f"laminar_jit_plans.{name}"
    directory = os.path.join(cache_dir(), "plans")
    path = os.path.join(directory, f"{name}.py")
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(path):
            fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)  # atomic: a concurrent process never sees half a file
    except OSError:
        # Read-only cache location: a private temporary file, compiled without disk caching.
        directory = tempfile.mkdtemp(prefix="laminar_jit_plan_")
        path = os.path.join(directory, f"{name}.py")
        with open(path, "w") as fh:
            fh.write(text.replace("import njit as jit", "import njit_nocache as jit"))
        cacheable = False
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__.update(kernels)
    # Numba rebuilds cached functions' environments by importing their module by name.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module, cacheable
