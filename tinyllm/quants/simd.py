"""AVX2 building blocks of the fast kernels, emitted as LLVM intrinsics (Numba never emits
vpmaddubsw from plain code: it needs a saturating add in the IR).

AVX2's vpmaddubsw multiplies 32 unsigned bytes by 32 signed bytes and adds adjacent pairs
into 16 int16 lanes: with the tiled layout (tiles.py), one instruction does 2 elements x 16
rows (32 MACs), where the portable kernels do 8 per instruction. Each tile block is first
unpacked into a small buffer of unsigned bytes

  qb uint8 (pairs, 2R): [pair p][row r][element 2p, 2p+1]

once, then multiplied against every token's activation pairs. No saturation can occur:
int16 lanes sum at most K pairs, K chosen per type below (|y| <= 127 after quantization).
Q8_0's signed weights use vpmaddwd (int16 x int16 -> int32) instead. The non-linear IQ4
grid values (up to 127 in magnitude: a single pair sum could saturate) are looked up with
vpshufb as two 4-bit digits of value + 128 (`unpack_iq4`), each multiplied like Q4 quants.

Every kernel built from these has a portable twin; `HAS_AVX2` says whether they can run here.
"""
import llvmlite.binding as llvm_binding
import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .iq_grids import KVALUES
from .tiles import TILE

I8, I16, I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
V16I8, V32I8 = ir.VectorType(I8, 16), ir.VectorType(I8, 32)
V16I16, V32I16 = ir.VectorType(I16, 16), ir.VectorType(I16, 32)
V8I32, V16I32 = ir.VectorType(I32, 8), ir.VectorType(I32, 16)
_INTERLEAVE_16 = ir.Constant(ir.VectorType(I32, 32), [i // 2 + 16 * (i % 2) for i in range(32)])


def _host_has_avx2() -> bool:
    """True when Numba compiles for a CPU with AVX2 and F16C (the host unless NUMBA_CPU_NAME
    says otherwise); every x86-64 CPU with AVX2 so far also has F16C."""
    feats = llvm_binding.get_host_cpu_features()
    if not (feats.get("avx2", False) and feats.get("f16c", False)):
        return False
    name = numba.config.CPU_NAME
    if name and name != "host":
        wanted = numba.config.CPU_FEATURES or ""
        return "+avx2" in wanted and "+f16c" in wanted
    return True


HAS_AVX2 = _host_has_avx2()


def _vec_ptr(context, builder, aty, aval, off, offty, vty):
    """Pointer to a vector of type vty at element `off` of the 1-D array aval."""
    ary = context.make_array(aty)(context, builder, aval)
    off = context.cast(builder, off, offty, types.intp)
    return builder.bitcast(builder.gep(ary.data, [off]), vty.as_pointer())


def _offset(context, builder, base, basety, step, stepty, k):
    """base + k * step as intp."""
    base = context.cast(builder, base, basety, types.intp)
    step = context.cast(builder, step, stepty, types.intp)
    return builder.add(base, builder.mul(step, ir.Constant(step.type, k)))


def _splat(builder, value, vty):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(I32, vty.count), [0] * vty.count))


def make_mac_u8(K, G=TILE // 16, store=False):
    """For the G groups of 16 rows of a tile (g < G): acc[ao+16g : +16] += (= with store)
    Σ_{k<K} pairsum(qb[qo + 32g + k*qs : +32] (uint8) * (y2[yo+k] as two int8)), summed in
    int16 lanes (one per row), then sign-extended and added in int32. Each activation pair is
    broadcast once and used by all G groups."""

    @intrinsic
    def mac_u8(typingctx, acc, ao, qb, qo, qs, y2, yo):
        sig = types.void(acc, ao, qb, qo, qs, y2, yo)

        def codegen(context, builder, signature, args):
            A = signature.args
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V16I16, [V32I8, V32I8]), "llvm.x86.avx2.pmadd.ub.sw"
            )
            s = [None] * G
            for k in range(K):
                yo = _offset(context, builder, args[6], A[6], ir.Constant(I32, 1), types.int32, k)
                y = builder.load(_vec_ptr(context, builder, A[5], args[5], yo, types.intp, I16), align=2)
                yv = builder.bitcast(_splat(builder, y, V16I16), V32I8)
                off = _offset(context, builder, args[3], A[3], args[4], A[4], k)
                for g in range(G):
                    og = builder.add(off, ir.Constant(off.type, 32 * g))
                    w = builder.load(_vec_ptr(context, builder, A[2], args[2], og, types.intp, V32I8), align=1)
                    p = builder.call(fn, [w, yv])
                    s[g] = p if s[g] is None else builder.add(s[g], p)
            for g in range(G):
                ag = builder.add(context.cast(builder, args[1], A[1], types.intp), ir.Constant(ir.IntType(64), 16 * g))
                ap = _vec_ptr(context, builder, A[0], args[0], ag, types.intp, V16I32)
                v = builder.sext(s[g], V16I32)
                builder.store(v if store else builder.add(builder.load(ap, align=4), v), ap, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return mac_u8


mac_u8_2 = make_mac_u8(2)  # Q6_K: pair sums <= 2*63*127, two fit in int16
mac_u8_4 = make_mac_u8(4)  # Q5: <= 2*31*127 per pair
mac_u8_8 = make_mac_u8(8)  # Q4: <= 2*15*127 per pair
# the same, storing instead of adding: the first call of a sum (no zeroing pass, no memset call)
set_u8_2, set_u8_4, set_u8_8 = (make_mac_u8(k, store=True) for k in (2, 4, 8))


# Q8_0 weights are read straight from the tiles (no unpack into a cache-resident buffer), so the
# mac prefetches the lines it will read this many bytes (4 blocks of a tile) ahead: decode on
# one core streams the 178 MB Gemma output matrix in 5.4 ms instead of 8.7 ms.
PREFETCH_AHEAD = 8192


def make_mac_i8(K, G=TILE // 16, store=False):
    """For the G groups of 16 rows of a tile: acc[ao+16g : +16] += (= with store) Σ_{k<K}
    pairsum(qb[qo + 32g + k*qs : +32] (int8) * y2[yo+k]) with vpmaddwd (int16 x int16 -> int32
    pair sums): Q8_0's signed weights. Each activation pair is broadcast once for all G groups."""

    @intrinsic
    def mac_i8(typingctx, acc, ao, qb, qo, qs, y2, yo):
        sig = types.void(acc, ao, qb, qo, qs, y2, yo)

        def codegen(context, builder, signature, args):
            A = signature.args
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V8I32, [V16I16, V16I16]), "llvm.x86.avx2.pmadd.wd"
            )
            prefetch = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [I8.as_pointer(), I32, I32, I32]), "llvm.prefetch.p0i8"
            )
            lo_idx = ir.Constant(ir.VectorType(I32, 16), list(range(16)))
            hi_idx = ir.Constant(ir.VectorType(I32, 16), list(range(16, 32)))
            s_lo, s_hi = [None] * G, [None] * G
            for k in range(K):
                yo = _offset(context, builder, args[6], A[6], ir.Constant(I32, 1), types.int32, k)
                y = builder.load(_vec_ptr(context, builder, A[5], args[5], yo, types.intp, ir.VectorType(I8, 2)), align=2)
                y32 = builder.bitcast(builder.sext(y, ir.VectorType(I16, 2)), I32)  # (y0, y1) as two int16
                yv = builder.bitcast(_splat(builder, y32, V8I32), V16I16)
                off = _offset(context, builder, args[3], A[3], args[4], A[4], k)
                for line in range(0, 32 * G, 64):  # prefetch (read, keep in all caches, data)
                    pa = builder.add(off, ir.Constant(off.type, PREFETCH_AHEAD + line))
                    ptr = _vec_ptr(context, builder, A[2], args[2], pa, types.intp, I8)
                    builder.call(prefetch, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
                for g in range(G):
                    og = builder.add(off, ir.Constant(off.type, 32 * g))
                    w = builder.sext(builder.load(_vec_ptr(context, builder, A[2], args[2], og, types.intp, V32I8), align=1), V32I16)
                    p_lo = builder.call(fn, [builder.shuffle_vector(w, w, lo_idx), yv])
                    p_hi = builder.call(fn, [builder.shuffle_vector(w, w, hi_idx), yv])
                    s_lo[g] = p_lo if s_lo[g] is None else builder.add(s_lo[g], p_lo)
                    s_hi[g] = p_hi if s_hi[g] is None else builder.add(s_hi[g], p_hi)
            for g in range(G):
                both = builder.shuffle_vector(s_lo[g], s_hi[g], ir.Constant(ir.VectorType(I32, 16), list(range(16))))
                ag = builder.add(context.cast(builder, args[1], A[1], types.intp), ir.Constant(ir.IntType(64), 16 * g))
                ap = _vec_ptr(context, builder, A[0], args[0], ag, types.intp, V16I32)
                builder.store(both if store else builder.add(builder.load(ap, align=4), both), ap, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return mac_i8


set_i8_16 = make_mac_i8(16, store=True)  # a whole Q8_0 block (stored); int32 sums cannot overflow


def make_unpack(bits):
    """Unpack one group of 16 rows into qb: 4 pairs (4-bit, 5-bit) or 2 pairs (6-bit).

    src holds the nibble-pair bytes (16 per pair), h the high-bit bytes of the group
    (5-bit: bit k = element k of 8; 6-bit: bits 2k..2k+1 = element k of 4). Pair k goes to
    qb[qbo + k*qbs : +32] as [row][lo, hi] bytes."""
    npairs = 2 if bits == 6 else 4

    @intrinsic
    def unpack(typingctx, qb, qbo, qbs, src, so, ss, h, ho):
        sig = types.void(qb, qbo, qbs, src, so, ss, h, ho)

        def codegen(context, builder, signature, args):
            A = signature.args

            def c8(v):
                return ir.Constant(V16I8, [v] * 16)

            if bits > 4:
                hv = builder.load(_vec_ptr(context, builder, A[6], args[6], args[7], A[7], V16I8), align=1)
            for k in range(npairs):
                off = _offset(context, builder, args[4], A[4], args[5], A[5], k)
                x = builder.load(_vec_ptr(context, builder, A[3], args[3], off, types.intp, V16I8), align=1)
                lo = builder.and_(x, c8(15))
                hi = builder.lshr(x, c8(4))
                if bits == 5:
                    lo = builder.or_(lo, builder.shl(builder.and_(builder.lshr(hv, c8(2 * k)), c8(1)), c8(4)))
                    hi = builder.or_(hi, builder.shl(builder.and_(builder.lshr(hv, c8(2 * k + 1)), c8(1)), c8(4)))
                elif bits == 6:
                    lo = builder.or_(lo, builder.shl(builder.and_(builder.lshr(hv, c8(4 * k)), c8(3)), c8(4)))
                    hi = builder.or_(hi, builder.shl(builder.and_(builder.lshr(hv, c8(4 * k + 2)), c8(3)), c8(4)))
                pairs = builder.shuffle_vector(lo, hi, _INTERLEAVE_16)
                dst = _offset(context, builder, args[1], A[1], args[2], A[2], k)
                builder.store(pairs, _vec_ptr(context, builder, A[0], args[0], dst, types.intp, V32I8), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return unpack


unpack4 = make_unpack(4)
unpack5 = make_unpack(5)
unpack6 = make_unpack(6)


def make_unpack_lut(tables):
    """Unpack one group of 16 rows of nibble-pair bytes (4 pairs, as unpack4) through 16-entry
    byte tables (vpshufb): the values of table i for pair k go to qb[qbo + i*split + k*qbs : +32]
    as [row][lo, hi] bytes. Non-linear 4-bit types (IQ4_NL, IQ4_XS) split their grid values
    into two tables of 4-bit digits this way, so the mac_u8_8 sums stay within int16."""
    luts = [ir.Constant(V16I8, [int(v) for v in t]) for t in tables]
    assert all(len(t) == 16 and all(0 <= int(v) < 128 for v in t) for t in tables)

    @intrinsic
    def unpack_lut(typingctx, qb, qbo, qbs, src, so, ss, split):
        sig = types.void(qb, qbo, qbs, src, so, ss, split)

        def codegen(context, builder, signature, args):
            A = signature.args
            pshufb = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V16I8, [V16I8, V16I8]), "llvm.x86.ssse3.pshuf.b.128"
            )
            c15 = ir.Constant(V16I8, [15] * 16)
            for k in range(4):
                off = _offset(context, builder, args[4], A[4], args[5], A[5], k)
                x = builder.load(_vec_ptr(context, builder, A[3], args[3], off, types.intp, V16I8), align=1)
                lo = builder.and_(x, c15)
                hi = builder.lshr(x, ir.Constant(V16I8, [4] * 16))
                dst = _offset(context, builder, args[1], A[1], args[2], A[2], k)
                for i, lut in enumerate(luts):
                    vlo, vhi = builder.call(pshufb, [lut, lo]), builder.call(pshufb, [lut, hi])
                    pairs = builder.shuffle_vector(vlo, vhi, _INTERLEAVE_16)
                    di = _offset(context, builder, dst, types.intp, args[6], A[6], i)
                    builder.store(pairs, _vec_ptr(context, builder, A[0], args[0], di, types.intp, V32I8), align=1)
            return context.get_dummy_value()

        return sig, codegen

    return unpack_lut


# kvalues_iq4nl[i] + 128 = 16 * IQ4_DIGITS[0][i] + IQ4_DIGITS[1][i], both digits in 0..15
IQ4_DIGITS = tuple(tuple(((int(v) + 128) >> s) & 15 for v in KVALUES) for s in (4, 0))
unpack_iq4 = make_unpack_lut(IQ4_DIGITS)
