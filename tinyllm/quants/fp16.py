"""fp16 and bf16 conversions, written once for the whole project (kquants.md §0.2).

Numba (scalars and rows, all exact unless the name says otherwise):
    fp32_to_fp16_bits(f)        float32 -> fp16 bits, round to nearest even; overflow -> Inf, NaN -> quiet NaN
    fp32_to_fp16_bits_finite(x) the same without branches, for |x| < 65504 only (loops over rows vectorise)
    fp16_bits_to_fp32(h)        fp16 bits -> float32 (subnormals, Inf, NaN)
    fp16_round(x)               float32 value of fp16(x)
    f32_row_to_f16(dst, src)    a float32 row -> fp16 bits
    f16_row_to_f32(dst, src)    fp16 bits -> a float32 row, one loop that vectorises
    widen_f16x16(dst, o, src, so)  16 fp16 -> float32 with F16C's vcvtph2ps (AVX2 kernels only)
    fp32_to_bf16_bits(f)        ggml's bf16 rounding (NaN kept, forced quiet)
    as_f32(u32), as_u32(f32)    bit reinterpretation
NumPy (the reference code): fp32_to_fp16, fp16_to_fp32, fp32_to_bf16, bf16_to_fp32.

tests/test_fp16.py checks every function on all 65,536 fp16 patterns (and on float32 inputs
around every fp16 rounding boundary) against NumPy's IEEE conversions.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..jit import jit_exact

F32 = np.float32
_TWO_112 = F32(2.0**112)  # float32 exponent bias 127 - fp16 bias 15 = 112
_TWO_M24 = F32(2.0**-24)


# -- bit reinterpretation --------------------------------------------------------------------


@intrinsic
def as_f32(typingctx, x):
    """Reinterpret the bits of a 32-bit integer as float32 (no conversion)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(x), codegen


@intrinsic
def as_u32(typingctx, x):
    """Reinterpret the bits of a float32 as uint32 (no conversion)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(x), codegen


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1 (tests of the portable code): the same bits in NumPy

    def as_f32(x):  # noqa: F811
        return np.uint32(x).view(np.float32)

    def as_u32(x):  # noqa: F811
        return np.float32(x).view(np.uint32)


# -- float32 -> fp16 -------------------------------------------------------------------------


@jit_exact
def fp32_to_fp16_bits(f):
    """float32 -> fp16 bits, IEEE round to nearest even (ggml_compute_fp32_to_fp16; NaN -> 0x7E00)."""
    b = np.int64(F32(f).view(np.uint32))
    sign = (b >> 16) & 0x8000
    a = b & 0x7FFFFFFF
    if a > 0x7F800000:
        return sign | 0x7E00
    if a >= 0x477FF000:  # >= 65520 rounds past 65504
        return sign | 0x7C00
    if a >= 0x38800000:  # normal fp16: rebias the exponent by 127-15 and round off 13 bits
        m = a - 0x38000000
        return sign | ((m + 0x0FFF + ((m >> 13) & 1)) >> 13)
    if a <= 0x33000000:  # <= 2^-25: rounds to zero (2^-25 itself is a tie, to even)
        return sign
    e = a >> 23  # fp16 subnormal: value / 2^-24 = mant >> (126 - e), rounded to even
    mant = (a & 0x7FFFFF) | 0x800000
    s = 126 - e
    h = mant >> s
    rem = mant & ((1 << s) - 1)
    half = 1 << (s - 1)
    if rem > half or (rem == half and (h & 1) == 1):
        h += 1
    return sign | h


@jit_exact(inline="always")
def fp32_to_fp16_bits_finite(x):
    """fp16 bits of a float32 x with |x| < 65504, round to nearest even, without branches so
    loops over rows vectorise. Outside that range the result is meaningless."""
    b = as_u32(x)
    a = np.uint32(b & np.uint32(0x7FFFFFFF))
    normal = np.uint32((a + np.uint32(0xFFF) + ((a >> 13) & np.uint32(1)) - np.uint32(0x38000000)) >> 13)
    # below 2^-14 the fp16 value is a multiple of 2^-24: round |x|·2^24 to an integer (exact)
    sub = np.uint32(np.rint(as_f32(a) * F32(16777216.0)))
    h = normal if a >= np.uint32(0x38800000) else sub
    return np.uint32(((b >> 16) & np.uint32(0x8000)) | h)


@jit_exact
def f32_row_to_f16(dst, src):
    """dst uint16 (n,) <- fp16 bits of the float32 row src (n,)."""
    for j in range(src.shape[0]):
        dst[j] = fp32_to_fp16_bits(src[j])


# -- fp16 -> float32 -------------------------------------------------------------------------


@jit_exact
def fp16_bits_to_fp32(h):
    """fp16 bits -> float32, exact."""
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = F32(m) * _TWO_M24
        return -v if (h & 0x8000) else v
    sign = np.int64(h & 0x8000) << 16
    if e == 31:
        bits = sign | 0x7F800000 | (np.int64(m) << 13)
    else:
        bits = sign | (np.int64(e + 112) << 23) | (np.int64(m) << 13)
    return np.uint32(bits).view(np.float32)


@jit_exact
def fp16_round(x):
    """The float32 value of fp16(x) (round to nearest even, overflow to Inf)."""
    return fp16_bits_to_fp32(fp32_to_fp16_bits(x))


@jit_exact
def f16_row_to_f32(dst, src):
    """dst float32 (n,) <- the fp16 bits src (n,), exactly, in one loop that vectorises.

    The 15 exponent+mantissa bits shifted into float32 position are 2^-112 times the value
    for normal and subnormal halves alike, so one multiply by 2^112 finishes both; Inf/NaN
    (exponent 31) are patched in the integer view, then the sign is put back."""
    for j in range(src.shape[0]):
        h = np.uint32(src[j])
        em = h & np.uint32(0x7FFF)
        f = as_u32(as_f32(np.uint32(em << 13)) * _TWO_112)
        f = np.uint32(np.uint32(0x7F800000) | np.uint32(em << 13)) if em >= np.uint32(0x7C00) else f
        dst[j] = as_f32(np.uint32(f | np.uint32((h & np.uint32(0x8000)) << 16)))


@intrinsic
def widen_f16x16(typingctx, dst, do, src, so):
    """dst[do:do+16] (float32) = src[so:so+16] (fp16 bits) widened: vcvtph2ps (F16C)."""
    sig = types.void(dst, do, src, so)

    def codegen(context, builder, signature, args):
        A = signature.args

        def ptr(i, off, vty):
            ary = context.make_array(A[i])(context, builder, args[i])
            o = context.cast(builder, args[off], A[off], types.intp)
            return builder.bitcast(builder.gep(ary.data, [o]), vty.as_pointer())

        h = builder.load(ptr(2, 3, ir.VectorType(ir.IntType(16), 16)), align=2)
        f = builder.fpext(builder.bitcast(h, ir.VectorType(ir.HalfType(), 16)), ir.VectorType(ir.FloatType(), 16))
        builder.store(f, ptr(0, 1, ir.VectorType(ir.FloatType(), 16)), align=4)
        return context.get_dummy_value()

    return sig, codegen


# -- bf16 ------------------------------------------------------------------------------------


@jit_exact
def fp32_to_bf16_bits(f):
    """ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits; NaN forced quiet."""
    u = np.int64(F32(f).view(np.uint32))
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 64
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF


# -- NumPy, for the reference code -----------------------------------------------------------


def fp32_to_fp16(v) -> np.ndarray:
    """ggml_compute_fp32_to_fp16 on arrays: RNE from a float32 value (never from float64: double rounding)."""
    with np.errstate(over="ignore"):
        return np.asarray(v, dtype=F32).astype(np.float16)


def fp16_to_fp32(bits) -> np.ndarray:
    """fp16 bits (uint16, or 2 little-endian bytes in the last axis) -> float32, exact."""
    b = np.asarray(bits)
    if b.dtype == np.uint8:
        b = np.ascontiguousarray(b).view("<u2")[..., 0]
    return b.astype(np.uint16).view(np.float16).astype(F32)


def fp32_to_bf16(v) -> np.ndarray:
    """ggml_compute_fp32_to_bf16 as uint16 bits: RNE on the top half; NaN kept, forced quiet."""
    u = np.asarray(v, dtype=F32).view(np.uint32)
    rounded = ((u.astype(np.uint64) + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 64).astype(np.uint16), rounded)


def bf16_to_fp32(bits) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(F32)
