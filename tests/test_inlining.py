"""Source-level inlining of per-row kernels into plans (laminar_jit.executor.inlining)."""

from __future__ import annotations

import numpy as np
import pytest

from laminar_jit.executor import plan as plan_module
from laminar_jit.executor.inlining import inline_calls
from laminar_jit.kernels import hashtable
from laminar_jit.kernels.hashtable import ht_delete, ht_find, ht_find_or_insert
from laminar_jit.state.keytable import KeyTable

#: The hash table's per-row kernels: single-exit, so the inliner can write them out (plans call them instead:
#: they are compiled without reference counting, see test_plans_call_kernels_compiled_without_reference_counting).
TABLE_KERNELS = {name: getattr(hashtable, name) for name in ("ht_find", "ht_find_or_insert", "ht_insert_at",
                                                              "_take_slot", "ht_delete")}

LOOP = '''
import numpy as np
from numba import njit

@njit
def run(ops, k0s, k1s, buckets, keys, meta, free, out):
    for j in range(ops.size):
        k0 = k0s[j]
        k1 = k1s[j]
        if ops[j] == 0:
            s = ht_find_or_insert(buckets, keys, meta, free, k0, k1)
            out[j] = s
        elif ops[j] == 1:
            s = ht_find(buckets, keys, meta, k0, np.int64(k1))
            out[j] = s
        else:
            s = ht_find(buckets, keys, meta, k0, k1)
            if s >= 0:
                ht_delete(buckets, keys, meta, free, s)
            out[j] = s
'''


def _compile(source: str, inline: bool):
    namespace = {"ht_find": ht_find, "ht_find_or_insert": ht_find_or_insert, "ht_delete": ht_delete}
    if inline:
        source, imports = inline_calls(source, TABLE_KERNELS)
        for module, name in imports:
            namespace[name] = getattr(__import__(module, fromlist=[name]), name)
    exec(compile(source, "<plan>", "exec"), namespace)  # noqa: S102 - generated test source
    return namespace["run"], source


def test_inlined_table_calls_behave_like_the_kernels():
    rng = np.random.default_rng(7)
    n = 20_000
    ops = rng.choice(3, n, p=[0.6, 0.25, 0.15]).astype(np.int64)
    k0s = rng.zipf(1.3, n).astype(np.int64) % 3000 - 1500
    k1s = rng.integers(-3, 3, n).astype(np.int64) * 10_000
    results = []
    for inline in (False, True):
        run, source = _compile(LOOP, inline)
        table = KeyTable(width=2, capacity=16)
        table.reserve(n)
        out = np.empty(n, np.int64)
        run(ops, k0s, k1s, table.buckets, table.keys, table.meta, table.free, out)
        results.append((out, table.buckets.copy(), table.keys.copy(), table.meta.copy(), table.free.copy()))
        if inline:
            assert "ht_find_or_insert(" not in source and "ht_delete(" not in source
            assert "ht_insert_at(" not in source and "_take_slot(" not in source  # nested calls too
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    # and the table is consistent: every live key is found at its slot
    out, buckets, keys, meta, _ = results[1]
    live = buckets[buckets >= 0]
    assert live.size == meta[0]
    for s in live[:200]:
        assert ht_find(buckets, keys, meta, keys[s, 0], keys[s, 1]) == s


def test_other_calls_are_left_alone():
    source = ("x = ht_find(b, k, m, k0=1, k1=2)\ny = 1 + ht_find(b, k, m, 1, 2)\nz = other(1)\n"
              "w = ht_find(b, k, m, 1, 2) + ht_find(b, k, m, 3, 4)\n")
    text, imports = inline_calls(source, TABLE_KERNELS)
    assert text == source and not imports


def test_expansions_are_numbered_per_function():
    # a helper's text must not depend on what the plan inlined before it: plans share helpers by their text
    one = "def a(b, k, m):\n    x = ht_find(b, k, m, 1, 2)\n    return x\n"
    two = "def c(b, k, m):\n    y = ht_find(b, k, m, 3, 4)\n    z = ht_find(b, k, m, 5, 6)\n    return z\n"
    alone, _ = inline_calls(one, TABLE_KERNELS)
    after, _ = inline_calls(two + one, TABLE_KERNELS)
    assert after.endswith(alone)
    assert alone != one


def test_a_kernel_with_an_early_return_is_refused():
    def early(x):
        if x > 0:
            return 1
        return 2

    with pytest.raises(ValueError, match="only a final return"):
        inline_calls("y = early(3)", {"early": early})


def test_plans_call_kernels_compiled_without_reference_counting():
    # such a call costs no reference counting (LLVM inlines it), so writing the kernel out only costs compile time
    for name, kernel in plan_module._INLINED.items():
        assert kernel.targetoptions.get("_nrt", True), f"{name} is compiled without reference counting: call it"
    assert set(plan_module._INLINED) == {"row_alloc", "chain_insert", "asof_prune"}
    assert all(not kernel.targetoptions.get("_nrt", True) for kernel in TABLE_KERNELS.values())
