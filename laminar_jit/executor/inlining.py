"""Source-level inlining of small kernels into generated plans.

Numba inlines ``inline="always"`` functions at its IR level, and every array
argument of such a call is reference-counted on each call: a probe into a
four-array hash table made eight ``NRT_incref``/``NRT_decref`` calls per row,
which LLVM's reference-count pruning does not remove inside a row loop, and
cost five times the probe itself (145 ms against 30 ms for 5 M zipf lookups
in a cached table). A plain call is worse still (the callee takes its own
references).

Plans are generated source anyway, so the per-row helpers they call are
written out in place instead: :func:`inline_calls` replaces each
statement-level call ``[out =] name(args)`` of a registered kernel by the
kernel's body, with its locals renamed apart and its parameters bound to the
arguments. The kernels stay the one definition (and stay callable on their
own); only their source is reused. A kernel can be inlined when its only
``return`` is its last statement.
"""

from __future__ import annotations

import ast
import copy
import inspect
import itertools
import re
import textwrap
from functools import lru_cache

__all__ = ["inline_calls"]


class _Substitute(ast.NodeTransformer):
    def __init__(self, names: dict[str, ast.expr]):
        self.names = names

    def visit_Name(self, node: ast.Name):
        new = self.names.get(node.id)
        if new is None:
            return node
        new = copy.deepcopy(new)
        if isinstance(new, ast.Name):
            new.ctx = node.ctx
        return ast.copy_location(new, node)


class _Kernel:
    """A parsed kernel: parameters, body without docstring and final return, the returned expression."""

    def __init__(self, dispatcher):
        fn = getattr(dispatcher, "py_func", dispatcher)
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
        body = list(tree.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        self.result = None
        if body and isinstance(body[-1], ast.Return):
            self.result = body.pop().value
        if any(isinstance(n, ast.Return) for stmt in body for n in ast.walk(stmt)):
            raise ValueError(f"{fn.__qualname__}: only a final return can be inlined")
        self.name = fn.__name__
        self.module = fn.__module__
        self.globals = fn.__globals__
        self.params = [a.arg for a in tree.args.args]
        stored = {n.id for stmt in body for n in ast.walk(stmt)
                  if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        self.assigned_params = stored & set(self.params)
        self.locals = stored - set(self.params)
        loaded = {n.id for stmt in body + ([self.result] if self.result else []) for n in ast.walk(stmt)
                  if isinstance(n, ast.Name)}
        free = loaded - stored - set(self.params)
        # module constants become literals; functions the body calls must be importable by the plan
        # (an int64 extreme written as a literal would be typed from its unsigned magnitude: import it)
        self.constants = {name: self.globals[name] for name in free
                          if isinstance(self.globals.get(name), (bool, int, float))
                          and not (isinstance(self.globals[name], int) and abs(self.globals[name]) >= 2**62)}
        self.imports = sorted((self.module, name) for name in free - set(self.constants)
                              if name in self.globals and name != "np")
        # The body as text once, with a marker for each name an expansion fills in
        # (a local gets the expansion's prefix, a parameter its argument).
        self.marks = {f"__lj{j}__": name for j, name in enumerate(sorted(self.locals | set(self.params)))}
        names: dict[str, ast.expr] = {name: ast.Name(mark) for mark, name in self.marks.items()}
        names.update({name: ast.Constant(value) for name, value in self.constants.items()})
        sub = _Substitute(names)
        self.body_text = "\n".join(ast.unparse(sub.visit(stmt)) for stmt in body)
        self.result_text = None if self.result is None else ast.unparse(sub.visit(self.result))
        self.mark_pattern = re.compile("|".join(re.escape(mark) for mark in self.marks) or "(?!)")

    def fill(self, text: str, names: dict[str, str]) -> str:
        """``text`` (the body or result template) with every marker replaced by ``names[name]``."""
        return self.mark_pattern.sub(lambda m: names[self.marks[m.group(0)]], text)


@lru_cache(maxsize=None)
def _kernel(dispatcher) -> _Kernel:
    return _Kernel(dispatcher)


def _expand(kernel: _Kernel, args: list[ast.expr], out: str | None, prefix: str) -> list[str]:
    names = {name: f"{prefix}{name}" for name in kernel.locals}
    lines = []
    for param, arg in zip(kernel.params, args):
        simple = isinstance(arg, ast.Constant) or (isinstance(arg, ast.Name) and arg.id != out)
        if simple and param not in kernel.assigned_params:
            names[param] = ast.unparse(arg)
        else:  # evaluated once, into a local of the expansion
            lines.append(f"{prefix}{param} = {ast.unparse(arg)}")
            names[param] = f"{prefix}{param}"
    if kernel.body_text:
        lines += kernel.fill(kernel.body_text, names).split("\n")
    if kernel.result_text is not None and out is not None:
        lines.append(f"{out} = {kernel.fill(kernel.result_text, names)}")
    return lines


_CALL = re.compile(r"^(?P<indent>[ \t]*)(?:(?P<out>\w+) = )?(?P<call>(?P<fn>\w+)\(.*\))[ \t]*$")


def inline_calls(source: str, kernels: dict) -> tuple[str, set[tuple[str, str]]]:
    """Write the statement-level calls of ``kernels`` in ``source`` out in place.

    Parameters
    ----------
    source : str
        Python source of a generated plan.
    kernels : dict
        Name in ``source`` -> the Numba kernel (or Python function) it calls.

    Returns
    -------
    source : str
        The source with every line ``[out =] name(args)`` (``args`` positional)
        replaced by the kernel's body, and the same done to the calls of those
        bodies (up to four levels); other uses are left as calls.
    imports : set of (module, name)
        Functions the inlined bodies call, which the plan must import.
    """
    imports: set[tuple[str, str]] = set()
    lines = _inline_lines(source.split("\n"), kernels, itertools.count(), imports, depth=0)
    return "\n".join(lines), imports


_MAX_DEPTH = 4  # kernels inlined into kernels (a probe, its insert, the insert's slot allocation)


def _inline_lines(source_lines, kernels, serial, imports, depth) -> list[str]:
    lines = []
    for line in source_lines:
        if depth == 0 and line.startswith("def "):
            # expansions are numbered per function (their names are its locals): a helper's text
            # then does not depend on what the plan inlined before it, so plans share it
            serial = itertools.count()
        m = _CALL.match(line)
        kernel = _kernel(kernels[m["fn"]]) if m and m["fn"] in kernels and depth < _MAX_DEPTH else None
        call = ast.parse(m["call"], mode="eval").body if kernel else None
        if kernel is None or not isinstance(call, ast.Call) or call.keywords \
                or len(call.args) != len(kernel.params) \
                or any(isinstance(a, ast.Starred) for a in call.args):
            lines.append(line)
            continue
        prefix = f"_{kernel.name.strip('_')}{next(serial)}_"
        body = [m["indent"] + text for text in _expand(kernel, call.args, m["out"], prefix)]
        lines += _inline_lines(body, kernels, serial, imports, depth + 1)  # the calls the body makes
        imports.update(kernel.imports)
    return lines
