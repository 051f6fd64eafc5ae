"""Memory operations Numba does not spell: unaligned 8-byte loads and stores, and a prefetch.

Kernels bound by memory latency (string interning, rehashing a table that
outgrew the caches) ask for the cache lines of a block of random positions
before they touch any of them, so the misses overlap instead of queueing.
With ``NUMBA_DISABLE_JIT=1`` both are plain Python (the prefetch a no-op).
"""

from __future__ import annotations

import numpy as np

from .._jit import JIT_DISABLED

__all__ = ["load_u64", "prefetch", "store_u64"]

if JIT_DISABLED:
    def load_u64(data, p):
        """The 8 bytes ``data[p:p + 8]`` as a little-endian uint64 (any alignment)."""
        return np.uint64(int.from_bytes(bytes(data[p:p + 8]), "little"))

    def store_u64(data, p, value):
        """Write ``value`` (a uint64) to ``data[p:p + 8]`` little-endian (any alignment)."""
        data[p:p + 8] = np.frombuffer(int(value).to_bytes(8, "little"), np.uint8)

    def prefetch(array, i):
        """Ask the memory for ``array[i]``'s cache line (a hint: nothing to do without the compiler)."""
else:
    from llvmlite import ir
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    @intrinsic
    def load_u64(typingctx, data, p):
        """The 8 bytes ``data[p:p + 8]`` (a uint8 array) as a little-endian uint64, one unaligned load."""
        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            address = builder.gep(array.data, [args[1]])
            word = builder.bitcast(address, context.get_value_type(types.uint64).as_pointer())
            return builder.load(word, align=1)
        return types.uint64(data, p), codegen

    @intrinsic
    def store_u64(typingctx, data, p, value):
        """Write ``value`` (a uint64) to ``data[p:p + 8]`` (a uint8 array), one unaligned store."""
        def codegen(context, builder, signature, args):
            array = context.make_array(signature.args[0])(context, builder, args[0])
            address = builder.gep(array.data, [args[1]])
            word = builder.bitcast(address, context.get_value_type(types.uint64).as_pointer())
            builder.store(args[2], word, align=1)
            return context.get_dummy_value()
        return types.void(data, p, types.uint64), codegen

    @intrinsic
    def prefetch(typingctx, array, i):
        """Ask the memory for the cache line of ``array``'s ``i``-th element (flat index; LLVM's prefetch,
        a hint that never faults)."""
        def codegen(context, builder, signature, args):
            arr = context.make_array(signature.args[0])(context, builder, args[0])
            byte_ptr = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]), "llvm.prefetch.p0")
            address = builder.bitcast(builder.gep(arr.data, [args[1]]), byte_ptr)
            builder.call(fn, [address, i32(0), i32(3), i32(1)])  # read, keep in all cache levels, data
            return context.get_dummy_value()
        return types.void(array, i), codegen
