"""Name compiled code in Linux ``perf`` profiles: a ``/tmp/perf-<pid>.map`` of every Numba function loaded.

``perf`` reads such a map to name addresses in code generated at run time;
without it, the engine's compiled steps, plan helpers and kernels show up as
bare hex addresses. Write the map once the plans are loaded (from the disk
cache or compiled), then attach ``perf`` to the process::

    from benchmarks.perf_map import write_perf_map
    ex = lj.DagExecutor(dag)            # plans loaded
    write_perf_map()
    # in a shell: perf record -F 1000 -p <pid>; perf report --sort symbol

Symbols are Numba's mangled names (``..._plans34s_<digest>15window_N_update...``
for a shared plan helper, ``..._kernels7sorting11_radix_pass...`` for a
kernel). Code compiled after the call is not in the map: write it again.
Profile a fixed number of runs and end the process with ``os._exit`` so that
the interpreter's shutdown (a final garbage collection) is not sampled.

This reads Numba's JIT engine's table of defined symbols, an internal of
Numba 0.6x; it is a development aid, not part of the library.
"""

from __future__ import annotations

import os

__all__ = ["write_perf_map"]


def write_perf_map(path: str | None = None) -> int:
    """Write ``perf``'s map of the compiled functions loaded in this process; returns how many it names.

    Parameters
    ----------
    path : str, optional
        Where to write; ``/tmp/perf-<pid>.map`` (where ``perf`` looks) by default.
    """
    from numba.core.registry import cpu_target

    engine = cpu_target.target_context.codegen()._engine
    found = {}
    for name in list(engine._defined_symbols):
        address = engine.get_function_address(name)
        if address:
            found[address] = name
    starts = sorted(found)
    with open(path or f"/tmp/perf-{os.getpid()}.map", "w", encoding="utf-8") as fh:
        # perf wants a size per symbol: up to the next one (functions of a library are laid out in order)
        for start, after in zip(starts, starts[1:] + [starts[-1] + 4096] if starts else []):
            fh.write(f"{start:x} {min(after - start, 1 << 20):x} {found[start]}\n")
    return len(starts)
