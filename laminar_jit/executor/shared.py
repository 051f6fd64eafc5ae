"""Plan helpers that no user kernel reaches, compiled once for every plan that has them.

A plan's text holds small ``@njit`` helpers beside its step (see :mod:`.codegen`):
filter loops and fused gathers that call the user's kernels, and operator glue
that calls none (a window's fire, a Dedup's expiry, a sink's gather of source
columns). Numba caches functions per module file, so a helper written into the
plan's own file is compiled again for every new plan, although two DAGs with
different lambdas and the same window write it identically.

:func:`split_shared` moves each helper that reads no user kernel and no other
helper of the plan into a module of its own, named by the digest of its text
(``s_<digest>.py`` beside the plans; the text with the node's id written as
``N``, so the same operator at another node of another DAG shares it), and
leaves a comment in the plan. The
plan module is given the helper as a global before it runs, as it is given the
user's kernels. A new DAG of operator kinds already compiled then compiles
only what its kernels touch: its type inference and machine code for the
shared helpers come from the disk cache (the step still links their code, so
LLVM still sees and inlines them).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import os
import re
import threading
import tokenize
from dataclasses import dataclass

__all__ = ["SCHEME", "SharedHelper", "kernels_reached", "load_shared", "split_shared"]

#: How helpers are cut out and named; part of every plan's digest, since a cached plan refers to its
#: helpers' modules by name (a plan cached under another scheme would look for modules no longer written).
SCHEME = "node ids as N; kernel stamps per helper"

_SHARED_HEADER = '''"""A plan helper shared by every plan that writes it (see laminar_jit.executor.shared). Do not edit."""
import numpy as np

from laminar_jit._jit import njit as jit

njit = jit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
'''


@dataclass(frozen=True)
class SharedHelper:
    """One helper moved out of a plan: the plan's global ``name`` is ``module``'s function ``attr``."""

    name: str
    #: Module name in the plan cache, ``s_<digest>`` (the digest covers the text and what it links).
    module: str
    text: str
    #: The function's name in ``module``: ``name`` with the node id left out (see :func:`_without_node_id`).
    attr: str = ""


_IMPORTED = re.compile(r"^from laminar_jit\.kernels\.(\w+) import ", re.MULTILINE)
_KERNELS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "kernels")
_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}


def split_shared(text: str, local_names, stamps, kernel_stamps=()) -> tuple[str, list[SharedHelper]]:
    """``text`` without its shareable helpers, and the helpers.

    ``local_names`` are the globals only this plan defines (its user kernels, bound
    to the module before it runs); ``stamps`` identify what a helper may link besides
    its text (Numba's version, the library kernels' sources) and enter its digest.
    ``kernel_stamps`` (``"kernels/<file>=<hash>"``) stamp kernel modules that only some
    plans link; each enters the digest of only the helpers whose imports reach that
    module (:func:`kernels_reached`), so a helper that two plans write the same is
    compiled once even when only one of the plans links such a module elsewhere.
    A helper is shareable when it is decorated ``@njit`` and names no local global
    and no other function of the plan.
    """
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
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
                bound[target.id] = _source(lines, node)
    for name in ("np", "jit", "njit"):  # the shared header binds these
        bound.pop(name, None)
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
        body, attr = _without_node_id("".join(lines[first:node.end_lineno]), node.name,
                                      frozenset(names & bound.keys()))
        module_text = f"{_SHARED_HEADER}{needs}\n\n{body}"
        reached = kernels_reached(_IMPORTED.findall(needs))
        linked = [stamp for stamp in kernel_stamps if stamp.partition("=")[0].removeprefix("kernels/") in reached]
        digest = hashlib.sha256("|".join([module_text, *stamps, *linked]).encode()).hexdigest()[:32]
        helper = SharedHelper(node.name, f"s_{digest}", module_text, attr)
        helpers.append(helper)
        cut.append((first, node.end_lineno, f"# {node.name}: shared helper {helper.module}.py\n"))
    for first, end, note in reversed(cut):
        lines[first:end] = [note]
    return "".join(lines), helpers


def _source(lines: list[str], node: ast.stmt) -> str:
    """The text of ``node`` from the plan's ``lines`` (``ast.get_source_segment`` splits the whole text again,
    character by character in Python, on every call: 3 ms each on a large plan)."""
    if node.lineno == node.end_lineno:
        return lines[node.lineno - 1].encode()[node.col_offset:node.end_col_offset].decode()
    return ast.get_source_segment("".join(lines), node)


def kernels_reached(modules) -> frozenset[str]:
    """The files of ``laminar_jit/kernels`` that importing ``modules`` (names in it, e.g. ``"joins"``) loads."""
    reached: set[str] = set()
    for module in modules:
        reached |= _kernel_closure(f"{module}.py")
    return frozenset(reached)


@functools.cache
def _kernel_closure(name: str) -> frozenset[str]:
    """``name`` and the kernel files it imports (``from .x import``), transitively."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        file = todo.pop()
        path = os.path.join(_KERNELS_DIR, file)
        if file in seen or not os.path.exists(path):
            continue
        seen.add(file)
        with open(path, encoding="utf-8") as fh:
            todo += [f"{m}.py" for m in re.findall(r"^\s*from \.(\w+) import", fh.read(), re.MULTILINE)]
    return frozenset(seen)


@functools.lru_cache(maxsize=1024)  # plans of one process write many helpers alike (7 ms each to tokenize)
def _without_node_id(body: str, name: str, keep=frozenset()) -> tuple[str, str]:
    """``body`` (one helper's text) and ``name`` with the id of the node it serves written as ``N``.

    Generators name a node's helper and its state parameters by the node id
    (``group_13_update(..., st13_keys, ...)``); the same operator at another place
    in another DAG writes the same helper with another id. Without the id the two
    texts are one, so its compiled code is shared. The names are local to the
    helper (the plan binds its own name to the module's function) but for the
    module-level names ``keep`` it reads, and the text is kept as it is if
    leaving the id out would make two of its names one.
    """
    found = re.search(r"_(\d+)(?:_|$)", name)
    if found is None:
        return body, name
    nid = found.group(1)
    pattern = re.compile(rf"(?<![A-Za-z0-9])(st|[A-Za-z_]*_){nid}(?=_|$)")
    tokens, seen = [], {}
    for tok in tokenize.generate_tokens(io.StringIO(body).readline):
        text = tok.string
        if tok.type == tokenize.NAME and text not in keep:
            text = pattern.sub(r"\1N", text)
            if seen.setdefault(text, tok.string) != tok.string:
                return body, name  # two names would become one
        elif tok.type == tokenize.STRING:
            text = text.replace(f"node {nid}", "node N")
        tokens.append(tok._replace(string=text))
    return tokenize.untokenize(tokens), pattern.sub(r"\1N", name)


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
        functions[helper.name] = getattr(module, helper.attr or helper.name)
        cached &= disk
    return functions, cached
