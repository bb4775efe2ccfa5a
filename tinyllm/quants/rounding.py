"""ggml's float -> int rules (kquants.md §0.3, §0.4), as Numba scalars and as NumPy twins.

    nearest_int(v)   the 1.5*2^23 bit trick: RNE for |v| < 2^22, ggml's exact garbage beyond
    roundf(v)        C roundf: half away from zero
    c_int8(v)        `(int8_t)(float)` as x86-64 compiles it (cvttss2si, then the low byte)
    c_int32(v)       cvttss2si: truncation; INT32_MIN for NaN, Inf or |v| >= 2^31
    row_nonfinite(xu) any NaN/Inf among a row's float32 bit patterns
    fma32(a, b, c)   float32 a*b + c rounded once, where GCC contracts ggml's C into an FMA
                     (fma32_exact: the same in Python, with rationals)

The NumPy versions (`*_np`) serve the reference code and work elementwise on arrays.
"""
from fractions import Fraction

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..jit import jit_exact

F32 = np.float32
_MAGIC = F32(12582912.0)  # 1.5 * 2**23
_F1 = F32(1.0)
_F0 = F32(0.0)
_F_HALF = F32(0.5)
_TWO_31 = F32(2.0**31)


@jit_exact
def nearest_int(v):
    s = F32(v + _MAGIC)
    return np.int64(s.view(np.int32) & 0x007FFFFF) - 0x00400000


@jit_exact
def roundf(v):
    """As a float32 (v - trunc(v) is exact; no branches)."""
    t = np.trunc(v)
    r = v - t
    return t + (_F1 if r >= _F_HALF else _F0) - (_F1 if r <= -_F_HALF else _F0)


@jit_exact
def c_int8(v):
    """Written out because LLVM leaves an out-of-range float -> int conversion undefined."""
    t = np.int32(v) if abs(v) < _TWO_31 else np.int32(-2147483648)
    return ((np.int64(t) & 0xFF) ^ 0x80) - 0x80


@jit_exact
def row_nonfinite(xu):
    """An integer OR over the uint32 bit patterns of a row: it vectorises."""
    bad = 0
    for i in range(xu.shape[0]):
        bad |= np.int64((xu[i] & 0x7F800000) == 0x7F800000)
    return bad != 0


@intrinsic
def fma32(typingctx, a, b, c):
    """float32 a*b + c with one rounding (llvm.fma.f32: vfmadd, or libm's fmaf without FMA)."""
    if not all(x == types.float32 for x in (a, b, c)):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        return builder.call(fn, args)

    return types.float32(a, b, c), codegen


def fma32_exact(a, b, c) -> np.float32:
    """fma32 in Python: the exact a*b + c (rationals), rounded once to the nearest float32, ties
    to even. The twin of fma32 where the JIT is off, and its reference in the tests."""
    a, b, c = F32(a), F32(b), F32(c)
    if not (np.isfinite(a) and np.isfinite(b) and np.isfinite(c)):
        return F32(np.float64(a) * np.float64(b) + np.float64(c))
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if exact == 0:  # float64 gets the sign of an exact zero right (the product is exact)
        return F32(np.float64(a) * np.float64(b) + np.float64(c))
    r = F32(float(exact))  # rounded twice (float64, then float32): take the nearest of r's neighbours
    if not np.isfinite(r):
        return r
    near = (np.nextafter(r, F32(-np.inf)), r, np.nextafter(r, F32(np.inf)))
    return min(near, key=lambda v: (abs(Fraction(float(v)) - exact), int(v.view(np.uint32)) & 1))


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1
    fma32 = fma32_exact  # noqa: F811


def nearest_int_np(v) -> np.ndarray:
    s = np.asarray(v, dtype=F32) + _MAGIC
    return (s.view(np.int32) & 0x007FFFFF) - 0x00400000


def roundf_np(v) -> np.ndarray:
    v = np.asarray(v, dtype=F32)
    t = np.trunc(v)
    with np.errstate(invalid="ignore"):
        return t + np.where(np.abs(v - t) >= _F_HALF, np.sign(v), _F0).astype(F32)


def c_int32_np(v) -> np.ndarray:
    """Such inputs only arise from a subnormal scale (e.g. every |x| < 1.5e-36 in a Q8_0 block)."""
    v = np.asarray(v, dtype=F32)
    with np.errstate(invalid="ignore"):
        ok = np.abs(v) < _TWO_31
    return np.where(ok, np.trunc(np.where(ok, v, _F0)), -(2.0**31)).astype(np.int64)


def c_int8_np(v) -> np.ndarray:
    return ((c_int32_np(v) & 0xFF) ^ 0x80) - 0x80
