"""The generated text of a source's step, without compiling it.

:func:`compile_plan` generates a step, renders it, writes it to the plan
cache and compiles it; this module stops after rendering, for reading a plan
(``print(render_plan(dag, "bids"))``) and for the golden-text tests that pin
what the generators write (``tests/test_codegen_golden.py``). Nothing here
touches the plan cache or Numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._jit import JIT_DISABLED
from .codegen import generate
from .plan import _render

__all__ = ["RenderedPlan", "render", "render_plan"]


@dataclass(frozen=True)
class RenderedPlan:
    """A source's step as :func:`compile_plan` would compile it."""

    source: str
    #: The module text that would be written to the plan cache and imported.
    text: str
    #: The values the step reads from its ``settings`` argument (window sizes, lateness, delays, ...).
    settings: np.ndarray


def render(dag, source: str, cacheable: bool | None = None, sharded: bool = False) -> RenderedPlan:
    """Generate and render the step of ``source`` (a source, or a boundary node) of ``dag``.

    ``cacheable`` picks the decorator the text imports (``njit`` or
    ``njit_nocache``); by default it is what :func:`compile_plan` would choose
    (cached unless a kernel cannot be fingerprinted or the JIT is disabled).
    ``sharded`` renders a key shard's plan (the step reading a selection of
    the batch's rows: see :class:`.pieces.ShardStep`).
    """
    gen = generate(dag, source, sharded)
    if cacheable is None:
        cacheable = dag.fingerprint is not None and not JIT_DISABLED
    return RenderedPlan(source, _render(gen, source, cacheable), np.array(gen.settings, np.int64))


def render_plan(dag, source: str, cacheable: bool | None = None, sharded: bool = False) -> str:
    """The generated module text of ``source``'s step (see :func:`render`)."""
    return render(dag, source, cacheable, sharded).text
