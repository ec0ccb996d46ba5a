"""Float operations done on the bits, as numba intrinsics, for kernels that must vectorise or
stay free of branches on the data.

- ``pow2_f32(n)``: 2**n for a float32 n holding an integer in [-126, 127], from exponent bits
  (the vectorisable float32 exp of ``activations``);
- ``keep(v, cond)``: v where cond holds, else +0.0, as an AND of v's bits with a mask of cond.
  A float select (``v if cond else 0``) in a loop LLVM does not vectorise compiles to a branch
  on the data with AVX2 code (there is no conditional move for vector registers), which runs
  several times slower on unpredictable conditions; the AND has no branch. NaN and infinity
  are kept or dropped like any other value.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def pow2_f32(typingctx, nf):
    """2**nf for a float32 holding an integer in [-126, 127], built from its exponent bits."""
    if nf != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        n = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(types.float32), codegen


@intrinsic
def keep(typingctx, v, cond):
    """v if cond else +0.0, on the bits (float32 or float64 v, boolean cond)."""
    if v not in (types.float32, types.float64) or cond != types.boolean:
        return None

    def codegen(context, builder, sig, args):
        value, flag = args
        bits_type = ir.IntType(32 if sig.args[0] == types.float32 else 64)
        bits = builder.bitcast(value, bits_type)
        # numba passes a boolean as i8 (0 or 1) or i1: compare to zero, then widen the bit
        flag = builder.icmp_unsigned("!=", flag, ir.Constant(flag.type, 0))
        mask = builder.sext(flag, bits_type)
        return builder.bitcast(builder.and_(bits, mask), value.type)
    return v(v, cond), codegen
