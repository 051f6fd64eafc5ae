"""Plan helpers that no user kernel reaches, compiled once for every plan that has them.

A plan's text holds small ``@njit`` helpers beside its step (see :mod:`.codegen`):
filter loops and fused gathers that call the user's kernels, and operator glue
that calls none (a window's fire, a Dedup's expiry, a sink's gather of source
columns). Numba caches functions per module file, so a helper written into the
plan's own file is compiled again for every new plan, although two DAGs with
different lambdas and the same window write it identically.

:func:`split_shared` moves each helper that reads no user kernel and no other
helper of the plan into a module of its own, named by the digest of its text
(``s_<digest>.py`` beside the plans), and leaves a comment in the plan. The
plan module is given the helper as a global before it runs, as it is given the
user's kernels. A new DAG of operator kinds already compiled then compiles
only what its kernels touch: its type inference and machine code for the
shared helpers come from the disk cache (the step still links their code, so
LLVM still sees and inlines them).
"""

from __future__ import annotations

import ast
import hashlib
import threading
from dataclasses import dataclass

__all__ = ["SharedHelper", "load_shared", "split_shared"]

_SHARED_HEADER = '''"""A plan helper shared by every plan that writes it (see laminar_jit.executor.shared). Do not edit."""
import numpy as np

from laminar_jit._jit import njit as jit

njit = jit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
'''


@dataclass(frozen=True)
class SharedHelper:
    """One helper moved out of a plan: the global ``name`` is ``module``'s function of that name."""

    name: str
    #: Module name in the plan cache, ``s_<digest>`` (the digest covers the text and what it links).
    module: str
    text: str


_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}


def split_shared(text: str, local_names, stamps) -> tuple[str, list[SharedHelper]]:
    """``text`` without its shareable helpers, and the helpers.

    ``local_names`` are the globals only this plan defines (its user kernels, bound
    to the module before it runs); ``stamps`` identify what a helper may link besides
    its text (Numba's version, the library kernels' sources) and enter its digest.
    A helper is shareable when it is decorated ``@njit`` and names no local global
    and no other function of the plan.
    """
    tree = ast.parse(text)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    bound = {}  # module-level name -> the statement binding it, in the plan's order
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                line = (f"from {node.module} import " if isinstance(node, ast.ImportFrom) else "import ") + alias.name
                line += f" as {alias.asname}" if alias.asname else ""
                bound[alias.asname or alias.name.split(".")[0]] = line
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            for target in node.targets:
                bound[target.id] = ast.get_source_segment(text, node)
    for name in ("np", "jit", "njit"):  # the shared header binds these
        bound.pop(name, None)
    lines = text.splitlines(keepends=True)
    local = set(local_names)
    cut, helpers = [], []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and len(node.decorator_list) == 1
                and isinstance(node.decorator_list[0], ast.Name) and node.decorator_list[0].id == "njit"):
            continue
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if names & local or names & (functions - {node.name}):
            continue
        first = node.decorator_list[0].lineno - 1
        needs = "".join(f"{bound[n]}\n" for n in sorted(names & bound.keys()))
        body = "".join(lines[first:node.end_lineno])
        module_text = f"{_SHARED_HEADER}{needs}\n\n{body}"
        digest = hashlib.sha256("|".join([module_text, *stamps]).encode()).hexdigest()[:32]
        helper = SharedHelper(node.name, f"s_{digest}", module_text)
        helpers.append(helper)
        cut.append((first, node.end_lineno, f"# {node.name}: shared helper {helper.module}.py\n"))
    for first, end, note in reversed(cut):
        lines[first:end] = [note]
    return "".join(lines), helpers


def load_shared(helpers: list[SharedHelper], write_and_import) -> tuple[dict[str, object], bool]:
    """The helpers' functions by name (each module written and imported once per process), and
    whether all of them are disk-cached. ``write_and_import(text, name)`` is the plan cache's."""
    functions, cached = {}, True
    for helper in helpers:
        with _LOCK:
            entry = _LOADED.get(helper.module)
            if entry is None:
                entry = _LOADED[helper.module] = write_and_import(helper.text, helper.module)
        module, disk = entry
        functions[helper.name] = getattr(module, helper.name)
        cached &= disk
    return functions, cached
