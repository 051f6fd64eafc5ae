"""The compile policy of ``laminar_jit._jit``: helpers compiled without reference counting."""

from __future__ import annotations

import numpy as np
import pytest

from laminar_jit._jit import JIT_DISABLED, njit, njit_borrowing
from laminar_jit.kernels import hashtable, joins, timers


@njit_borrowing
def _second_plus_one(a, i):
    return a[i] + 1, i


@njit_borrowing
def _the_array_itself(a):
    return a


@njit
def _calls_borrowing_helper(a):
    total = 0
    for i in range(a.size):
        total += _second_plus_one(a, i)[0]
    return total


@njit
def _returns_what_a_helper_returns(a):
    return _the_array_itself(a).sum()


def test_a_borrowing_helper_returns_scalars_to_compiled_callers():
    a = np.arange(5)
    assert _calls_borrowing_helper(a) == int((a + 1).sum())


@pytest.mark.skipif(JIT_DISABLED, reason="plain Python counts no references")
def test_a_borrowing_helper_that_would_return_an_array_is_refused_when_compiled():
    # without reference counting, the caller would release a reference the helper never took
    with pytest.raises(TypeError, match=r"_the_array_itself is compiled without reference counting .* must not "
                                        r"return an array, but returns array\(int64, 1d, C\)"):
        _returns_what_a_helper_returns(np.arange(3))


@pytest.mark.skipif(JIT_DISABLED, reason="plain Python counts no references")
@pytest.mark.parametrize("helper", [hashtable.ht_find, hashtable.ht_find_or_insert, hashtable.ht_delete,
                                    hashtable.ht_upsert, joins.chain_unlink, joins.row_release, timers.heap_push,
                                    timers.heap_pop])
def test_per_row_helpers_count_no_references(helper):
    assert helper.targetoptions.get("_nrt") is False, helper


def _defined(name: str, body: str):
    """A function compiled without the disk cache, of module-level qualname ``name`` (as a plan's step is)."""
    namespace = {"helper": _glue_helper}
    exec(f"def {name}(a):\n    {body}\n", namespace)  # noqa: S102 - a fixed test function
    from laminar_jit._jit import njit_nocache

    return njit_nocache(namespace[name])


@njit
def _glue_helper(a):
    total = 0
    for x in a:
        total += x
    return total


def _module_passes(dispatcher) -> int:
    return getattr(dispatcher.overloads[dispatcher.signatures[0]].library, "laminar_jit_passes", 2)


@pytest.mark.skipif(JIT_DISABLED, reason="nothing is compiled")
def test_a_plans_glue_gets_one_module_pass_and_what_it_calls_two():
    from laminar_jit._jit import compiling_glue

    step, other = (_defined(name, "return helper(a) + 1") for name in ("step", "other"))
    late_step = _defined("step", "return helper(a) + 2")
    a = np.arange(10, dtype=np.int64)
    with compiling_glue():
        assert step(a) == other(a) == 46
    assert late_step(a) == 47  # a function named step outside the block
    assert _module_passes(step) == 1
    assert _module_passes(other) == _module_passes(late_step) == _module_passes(_glue_helper) == 2
