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
    says otherwise); every x86-64 CPU with AVX2 so far also has F16C. Never with the JIT off
    (NUMBA_DISABLE_JIT=1): the intrinsics exist only in compiled code."""
    if numba.config.DISABLE_JIT:
        return False
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
mac_u8_8 = make_mac_u8(8)  # Q4: <= 2*15*127 per pair (Q2_K, Q3_K: <= 2*7*127)
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


F32T = ir.FloatType()
V8F32 = ir.VectorType(F32T, 8)


def _fmuladd8(builder, a, b, c):
    """a * b + c on V8F32, always fused (llvm.fma): the decode and prefill kernels of a type
    round alike, so a token's result does not depend on how many tokens a call has."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V8F32, [V8F32] * 3), "llvm.fma.v8f32")
    return builder.call(fn, [a, b, c])


def make_acc_tile(mins, R=TILE):
    """The float step of the block-by-block kernels, in the same rounding as the decode
    intrinsics (Numba's fastmath loop was free to contract it differently from one compile to
    the next): for r < R,

      sym:  ft[r] = fma(f32(acc[r] - off), db[r] * dy, ft[r])
      mins: ft[r] = fma(mb[r], sy, fma(f32(acc[r]), db[r] * dy, ft[r]))"""

    @intrinsic
    def acc_tile(typingctx, ft, acc, db, dy, mb, sy_or_off):
        sig = types.void(ft, acc, db, dy, mb, sy_or_off)

        def codegen(context, builder, signature, args):
            A = signature.args
            intp = context.get_value_type(types.intp)
            dyv = _splat(builder, context.cast(builder, args[3], A[3], types.float32), V8F32)
            if mins:
                syv = _splat(builder, context.cast(builder, args[5], A[5], types.float32), V8F32)
            else:
                offv = _splat(builder, context.cast(builder, args[5], A[5], types.int32), V8I32)
            for i in range(R // 8):
                o = ir.Constant(intp, 8 * i)

                def ptr(k, vty):
                    return _vec_ptr(context, builder, A[k], args[k], o, types.intp, vty)

                a = builder.load(ptr(1, V8I32), align=4)
                f = builder.sitofp(a if mins else builder.sub(a, offv), V8F32)
                dd = builder.fmul(builder.load(ptr(2, V8F32), align=4), dyv)
                v = _fmuladd8(builder, f, dd, builder.load(ptr(0, V8F32), align=4))
                if mins:
                    v = _fmuladd8(builder, builder.load(ptr(4, V8F32), align=4), syv, v)
                builder.store(v, ptr(0, V8F32), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return acc_tile


acc_tile_sym, acc_tile_mins = make_acc_tile(False), make_acc_tile(True)


def _scales8(context, builder, aty, aval, off):
    """float32 V8F32 of the 8 fp16 bits at aval[off:off+8] (vcvtph2ps)."""
    h = builder.load(_vec_ptr(context, builder, aty, aval, off, types.intp, ir.VectorType(I16, 8)), align=2)
    return builder.fpext(builder.bitcast(h, ir.VectorType(ir.HalfType(), 8)), V8F32)


def make_row_q8_0(G=TILE // 16):
    """Decode (one token) over one whole tile of Q8_0 weights, every block in one loop kept in
    registers: facc[0:R] = Σ_b f32(Σ_{e in b} w*y) * (d_w * d_y), R = 16G rows.

    q8 flat int8 tiles, the tile at qo ([pair][row][2], 16 pairs a block); d flat fp16 bits,
    the tile's (nb, R) scales at do; y2 the token's int8 pairs (as int16), yd its block scales.
    Each 16-byte load is 8 rows x 2 elements: sign-extend, vpmaddwd with the broadcast pair;
    the int32 block sums never leave registers (the block-by-block kernel stored and reloaded
    them, and LLVM spilled its 512-bit temporaries)."""
    R = 16 * G
    V2I8 = ir.VectorType(I8, 2)

    @intrinsic
    def row(typingctx, facc, q8, qo, d, do, y2, yd, nb):
        sig = types.void(facc, q8, qo, d, do, y2, yd, nb)

        def codegen(context, builder, signature, args):
            A = signature.args
            madd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V8I32, [V16I16, V16I16]), "llvm.x86.avx2.pmadd.wd")
            prefetch = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [I8.as_pointer(), I32, I32, I32]), "llvm.prefetch.p0i8")
            intp = context.get_value_type(types.intp)
            qo = context.cast(builder, args[2], A[2], types.intp)
            do = context.cast(builder, args[4], A[4], types.intp)
            nb = context.cast(builder, args[7], A[7], types.intp)
            accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F32, None)) for _ in range(2 * G)]
            with cgutils.for_range(builder, nb) as loop:
                b = loop.index
                base = builder.add(qo, builder.mul(b, ir.Constant(intp, 16 * 2 * R)))
                s = [None] * (2 * G)
                for k in range(16):
                    yo = builder.add(builder.mul(b, ir.Constant(intp, 16)), ir.Constant(intp, k))
                    y = builder.load(_vec_ptr(context, builder, A[5], args[5], yo, types.intp, V2I8), align=2)
                    y32 = builder.bitcast(builder.sext(y, ir.VectorType(I16, 2)), I32)
                    yv = builder.bitcast(_splat(builder, y32, V8I32), V16I16)
                    off = builder.add(base, ir.Constant(intp, k * 2 * R))
                    for line in range(0, 2 * R, 64):
                        pa = builder.add(off, ir.Constant(intp, PREFETCH_AHEAD + line))
                        ptr = _vec_ptr(context, builder, A[1], args[1], pa, types.intp, I8)
                        builder.call(prefetch, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
                    for i in range(2 * G):
                        og = builder.add(off, ir.Constant(intp, 16 * i))
                        w = builder.load(_vec_ptr(context, builder, A[1], args[1], og, types.intp, V16I8), align=1)
                        p = builder.call(madd, [builder.sext(w, V16I16), yv])
                        s[i] = p if s[i] is None else builder.add(s[i], p)
                ydp = _vec_ptr(context, builder, A[6], args[6], b, types.intp, F32T)
                dy = _splat(builder, builder.load(ydp, align=4), V8F32)
                dbase = builder.add(do, builder.mul(b, ir.Constant(intp, R)))
                for i in range(2 * G):
                    dw = _scales8(context, builder, A[3], args[3], builder.add(dbase, ir.Constant(intp, 8 * i)))
                    acc = builder.load(accs[i])
                    builder.store(_fmuladd8(builder, builder.sitofp(s[i], V8F32), builder.fmul(dw, dy), acc), accs[i])
            _store_accs(context, builder, A[0], args[0], accs)
            return context.get_dummy_value()

        return sig, codegen

    return row


row_q8_0 = make_row_q8_0()



def _unpack_idx(high):
    """vpunpck{l,h}bw of (lo, hi) nibbles of 32 rows: [row r: lo, hi] for rows 0-7 and 16-23
    (high=0) or 8-15 and 24-31 (high=1), as AVX2 interleaves within 128-bit lanes."""
    idx = []
    for lane in range(2):
        for i in range(8):
            r = 16 * lane + 8 * high + i
            idx += [r, 32 + r]
    return ir.Constant(ir.VectorType(I32, 32), idx)


_IDX_A, _IDX_B = _unpack_idx(0), _unpack_idx(1)
_LO8 = ir.Constant(ir.VectorType(I32, 8), list(range(8)))
_HI8 = ir.Constant(ir.VectorType(I32, 8), list(range(8, 16)))


def _digit_luts(digits):
    """IQ4 digit tables as vpshufb operands (each 128-bit lane holds the 16 entries)."""
    assert all(len(t) == 16 and all(0 <= int(v) < 16 for v in t) for t in digits)
    return [ir.Constant(V32I8, [int(v) for v in t] * 2) for t in digits]


def _nibble_block_sums(builder, lohi, yv, luts, chain):
    """Σ_e q*y of one 32-element block for 32 rows, as 4 V8I32 (rows 8j..8j+7): lohi the 16
    pairs' (lo, hi) nibble vectors of the 32 rows ([pair p] = elements 2p, 2p+1), yv the 16
    broadcast activation pairs. luts [None]: q is the nibble; two digit tables: q + 128 =
    16 hi + lo of the looked-up digits (IQ4's grid values). Pairs are interleaved in-lane into
    [row][lo, hi] bytes for vpmaddubsw and summed in int16 `chain` at a time; the lane order
    (rows 0-7, 16-23 | 8-15, 24-31) is undone when widening."""
    maddubs = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(V16I16, [V32I8, V32I8]), "llvm.x86.avx2.pmadd.ub.sw")
    pshufb = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(V32I8, [V32I8, V32I8]), "llvm.x86.avx2.pshuf.b")
    isums = [[None] * 4 for _ in luts]
    for ch in range(16 // chain):
        sums = [[None, None] for _ in luts]
        for p in range(ch * chain, ch * chain + chain):
            lo, hi = lohi[p]
            pairs = builder.shuffle_vector(lo, hi, _IDX_A), builder.shuffle_vector(lo, hi, _IDX_B)
            for lut, s2 in zip(luts, sums):
                for i, q in enumerate(pairs):
                    prod = builder.call(maddubs, [q if lut is None else builder.call(pshufb, [lut, q]), yv[p]])
                    s2[i] = prod if s2[i] is None else builder.add(s2[i], prod)
        for (sa, sb), isum in zip(sums, isums):
            for j, (v, sel) in enumerate(((sa, _LO8), (sb, _LO8), (sa, _HI8), (sb, _HI8))):
                w = builder.sext(builder.shuffle_vector(v, v, sel), V8I32)
                isum[j] = w if isum[j] is None else builder.add(isum[j], w)
    if len(luts) == 1:
        return isums[0]
    return [builder.add(builder.shl(h, ir.Constant(V8I32, [4] * 8)), lo) for h, lo in zip(*isums)]


def _pair_broadcasts(context, builder, aty, aval, first):
    """The 16 activation pairs y2[first:first+16] (int8 pairs as int16), each broadcast to V32I8."""
    intp = context.get_value_type(types.intp)
    return [builder.bitcast(_splat(builder, builder.load(_vec_ptr(
        context, builder, aty, aval, builder.add(first, ir.Constant(intp, p)), types.intp, I16), align=2), V16I16), V32I8)
        for p in range(16)]


def _store_accs(context, builder, aty, aval, accs):
    """The V8F32 accumulators (allocas) to aval[0 : 8 * len(accs)]."""
    for i, acc in enumerate(accs):
        ptr = _vec_ptr(context, builder, aty, aval, ir.Constant(context.get_value_type(types.intp), 8 * i), types.intp, V8F32)
        builder.store(builder.load(acc), ptr, align=4)


def make_row_nibbles(bits, mins, G=TILE // 16, digits=None):
    """Decode (one token) over one whole tile of Q4_0 / Q5_0 (mins=False) or Q4_1 / Q5_1
    (mins=True) weights against Q8_0 / Q8_1 activations, the blocks in one loop kept in registers:

      sym:  facc[r] = Σ_b f32(Σ_e q*y - off*ys_b) * (d_w * d_y)      (q stored + off: 8 or 16)
      mins: facc[r] = Σ_b f32(Σ_e q*y) * (d_w * d_y) + m_w * s_y

    digits: two 16-entry tables (IQ4_NL's grid, IQ4_DIGITS): each nibble is an index, looked up
    in both (vpshufb) as the digits of its value + 128 = 16 hi + lo, and
      facc[r] = Σ_b f32(16 Σ_e hi*y + Σ_e lo*y - 128*ys_b) * (d_w * d_y)

    q4 flat tiles of nibble pairs ([pair][row], the tile at qo), qh the 5th bits ([group of 8
    elements][row], the tile at ho; unused for 4 bits), d / m fp16 bits ((nb, R) at do),
    y2 the token's int8 pairs (as int16), yd / ys its block scales and sums.
    Each 32-byte load is one pair of 32 rows: masked and shifted into (lo, hi) nibbles (and
    5th bits), multiplied without a trip through memory (_nibble_block_sums)."""
    R = 16 * G
    chain = 8 if bits == 4 else 4  # pairs summed in int16: 8*2*15*127, 4*2*31*127 < 2^15
    off = 128 if digits else 8 if bits == 4 else 16
    luts = [None] if digits is None else _digit_luts(digits)
    assert digits is None or (bits == 4 and not mins)

    @intrinsic
    def row(typingctx, facc, q4, qo, qh, ho, d, do, m, y2, yd, ys, nb):
        sig = types.void(facc, q4, qo, qh, ho, d, do, m, y2, yd, ys, nb)

        def codegen(context, builder, signature, args):
            A = signature.args
            intp = context.get_value_type(types.intp)
            qo, ho, do, nb = (context.cast(builder, args[i], A[i], types.intp) for i in (2, 4, 6, 11))

            def c8(v):
                return ir.Constant(V32I8, [v] * 32)

            def at(base, b, mul, add):
                return builder.add(base, builder.add(builder.mul(b, ir.Constant(intp, mul)), ir.Constant(intp, add)))

            def load(i, o, vty, align=1):
                return builder.load(_vec_ptr(context, builder, A[i], args[i], o, types.intp, vty), align=align)

            accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F32, None)) for _ in range(R // 8)]
            with cgutils.for_range(builder, nb) as loop:
                b = loop.index
                dy = _splat(builder, load(9, b, F32T, 4), V8F32)
                if mins:
                    sy = _splat(builder, load(10, b, F32T, 4), V8F32)
                else:
                    ysb = load(10, b, I32, 4)
                    offv = _splat(builder, builder.mul(ysb, ir.Constant(I32, off)), V8I32)
                yv = _pair_broadcasts(context, builder, A[8], args[8], builder.mul(b, ir.Constant(intp, 16)))
                for c in range(R // 32):
                    lohi = []
                    for p in range(16):
                        x = load(1, at(qo, b, 16 * R, p * R + 32 * c), V32I8)
                        lo, hi = builder.and_(x, c8(15)), builder.lshr(x, c8(4))
                        if bits == 5:
                            ch, kk = divmod(p, chain)
                            h = load(3, at(ho, b, 4 * R, ch * R + 32 * c), V32I8)
                            lo = builder.or_(lo, builder.shl(builder.and_(builder.lshr(h, c8(2 * kk)), c8(1)), c8(4)))
                            hi = builder.or_(hi, builder.shl(builder.and_(builder.lshr(h, c8(2 * kk + 1)), c8(1)), c8(4)))
                        lohi.append((lo, hi))
                    isum = _nibble_block_sums(builder, lohi, yv, luts, chain)
                    for j in range(4):
                        rs = 4 * c + j
                        dw = _scales8(context, builder, A[5], args[5], at(do, b, R, 8 * rs))
                        acc = builder.load(accs[rs])
                        if mins:
                            mw = _scales8(context, builder, A[7], args[7], at(do, b, R, 8 * rs))
                            acc = _fmuladd8(builder, builder.sitofp(isum[j], V8F32), builder.fmul(dw, dy), acc)
                            new = _fmuladd8(builder, mw, sy, acc)
                        else:
                            v = builder.sitofp(builder.sub(isum[j], offv), V8F32)
                            new = _fmuladd8(builder, v, builder.fmul(dw, dy), acc)
                        builder.store(new, accs[rs])
            _store_accs(context, builder, A[0], args[0], accs)
            return context.get_dummy_value()

        return sig, codegen

    return row


def make_row_iq4_xs(digits, G=TILE // 16):
    """Decode (one token) over one whole tile of IQ4_XS weights against Q8_K activations, in
    registers as make_row_nibbles with digit tables; per super-block of 8 sub-blocks of 32:

      facc[r] += f32(Σ_j s_j[r] * (16 Σ_e hi*y + Σ_e lo*y - 128 Σ_{e in j} y)) * (d[r] * d_y)

    (the integer sum over the super-block first, as the prefill kernel and the twin). q4 flat
    tiles of nibble pairs (the tile at qo), sc its int8 sub-block scales ((nsub, R) at so), d
    fp16 bits ((nsb, R) at do), y2 the token's int8 pairs (as int16), yd its Q8_K scales, ys
    its bsums (per 16), nsb the super-blocks."""
    R = 16 * G
    luts = _digit_luts(digits)
    V8I8 = ir.VectorType(I8, 8)

    @intrinsic
    def row(typingctx, facc, q4, qo, sc, so, d, do, y2, yd, ys, nsb):
        sig = types.void(facc, q4, qo, sc, so, d, do, y2, yd, ys, nsb)

        def codegen(context, builder, signature, args):
            A = signature.args
            intp = context.get_value_type(types.intp)
            qo, so, do, nsb = (context.cast(builder, args[i], A[i], types.intp) for i in (2, 4, 6, 10))

            def k(v):
                return ir.Constant(intp, v)

            def load(i, o, vty, align=1):
                return builder.load(_vec_ptr(context, builder, A[i], args[i], o, types.intp, vty), align=align)

            accs = [cgutils.alloca_once_value(builder, ir.Constant(V8F32, None)) for _ in range(R // 8)]
            iacc = [cgutils.alloca_once_value(builder, ir.Constant(V8I32, None)) for _ in range(4)]
            with cgutils.for_range(builder, nsb) as outer:
                sb = outer.index
                dy = _splat(builder, load(8, sb, F32T, 4), V8F32)
                for c in range(R // 32):
                    for a in iacc:
                        builder.store(ir.Constant(V8I32, None), a)
                    with cgutils.for_range(builder, k(8)) as inner:
                        blk = builder.add(builder.mul(sb, k(8)), inner.index)
                        ysb = builder.add(load(9, builder.mul(blk, k(2)), I32, 4),
                                          load(9, builder.add(builder.mul(blk, k(2)), k(1)), I32, 4))
                        offv = _splat(builder, builder.mul(ysb, ir.Constant(I32, 128)), V8I32)
                        yv = _pair_broadcasts(context, builder, A[7], args[7], builder.mul(blk, k(16)))
                        lohi = []
                        for p in range(16):
                            o = builder.add(qo, builder.add(builder.mul(blk, k(16 * R)), k(p * R + 32 * c)))
                            x = load(1, o, V32I8)
                            lohi.append((builder.and_(x, ir.Constant(V32I8, [15] * 32)),
                                         builder.lshr(x, ir.Constant(V32I8, [4] * 32))))
                        isum = _nibble_block_sums(builder, lohi, yv, luts, 8)
                        for j in range(4):
                            so_j = builder.add(so, builder.add(builder.mul(blk, k(R)), k(32 * c + 8 * j)))
                            sj = builder.sext(load(3, so_j, V8I8), V8I32)
                            a = builder.load(iacc[j])
                            builder.store(builder.add(a, builder.mul(sj, builder.sub(isum[j], offv))), iacc[j])
                    for j in range(4):
                        rs = 4 * c + j
                        dw = _scales8(context, builder, A[5], args[5],
                                      builder.add(do, builder.add(builder.mul(sb, k(R)), k(8 * rs))))
                        v = builder.sitofp(builder.load(iacc[j]), V8F32)
                        builder.store(_fmuladd8(builder, v, builder.fmul(dw, dy), builder.load(accs[rs])), accs[rs])
            _store_accs(context, builder, A[0], args[0], accs)
            return context.get_dummy_value()

        return sig, codegen

    return row


row_q4_0, row_q5_0 = make_row_nibbles(4, False), make_row_nibbles(5, False)
row_q4_1, row_q5_1 = make_row_nibbles(4, True), make_row_nibbles(5, True)



def make_tokens_sym(chain, off, G=TILE // 16):
    """Prefill: one unpacked 32-element block of a tile (qb[qo:]: [pair][row][lo, hi] bytes,
    16 pairs of 2R bytes) against tokens t0..t1-1, in one loop:

      facc[(t-t0)*R + r] += f32(Σ_e q*y_t - off*ys[t*nb + b]) * (d[do + r] * yd[t*nb + b])

    y2 the tokens' int8 pairs as int16 (T, nh) flat, token t's block b at t*nh + 16b; d the
    block's fp16 scale bits. The weights stay in L1 across tokens, and a token's sums and
    scales never leave registers."""
    R = 16 * G

    @intrinsic
    def tokens(typingctx, facc, qb, qo, y2, nh, yd, ys, nb, b, t0, t1, d, do):
        sig = types.void(facc, qb, qo, y2, nh, yd, ys, nb, b, t0, t1, d, do)

        def codegen(context, builder, signature, args):
            A = signature.args
            maddubs = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V16I16, [V32I8, V32I8]), "llvm.x86.avx2.pmadd.ub.sw")
            intp = context.get_value_type(types.intp)
            qo, nh, nb, b, t0, t1, do = (context.cast(builder, args[i], A[i], types.intp) for i in (2, 4, 7, 8, 9, 10, 12))

            def load(i, o, vty, align=1):
                return builder.load(_vec_ptr(context, builder, A[i], args[i], o, types.intp, vty), align=align)

            dbs = [_scales8(context, builder, A[11], args[11], builder.add(do, ir.Constant(intp, 8 * i))) for i in range(2 * G)]
            with cgutils.for_range(builder, builder.sub(t1, t0)) as loop:
                t = builder.add(t0, loop.index)
                tb = builder.add(builder.mul(t, nb), b)
                dy = _splat(builder, load(5, tb, F32T, 4), V8F32)
                offv = _splat(builder, builder.mul(load(6, tb, I32, 4), ir.Constant(I32, off)), V8I32)
                ybase = builder.add(builder.mul(t, nh), builder.mul(b, ir.Constant(intp, 16)))
                isum = [None] * (2 * G)
                for ch in range(16 // chain):
                    s16 = [None] * G
                    for kk in range(chain):
                        p = ch * chain + kk
                        y = load(3, builder.add(ybase, ir.Constant(intp, p)), I16, 2)
                        yv = builder.bitcast(_splat(builder, y, V16I16), V32I8)
                        for g in range(G):
                            w = load(1, builder.add(qo, ir.Constant(intp, p * 2 * R + 32 * g)), V32I8)
                            m = builder.call(maddubs, [w, yv])
                            s16[g] = m if s16[g] is None else builder.add(s16[g], m)
                    for g in range(G):
                        for h in range(2):
                            sel = ir.Constant(ir.VectorType(I32, 8), list(range(8 * h, 8 * h + 8)))
                            v = builder.sext(builder.shuffle_vector(s16[g], s16[g], sel), V8I32)
                            i = 2 * g + h
                            isum[i] = v if isum[i] is None else builder.add(isum[i], v)
                fo = builder.mul(loop.index, ir.Constant(intp, R))
                for i in range(2 * G):
                    ptr = _vec_ptr(context, builder, A[0], args[0], builder.add(fo, ir.Constant(intp, 8 * i)), types.intp, V8F32)
                    v = builder.sitofp(builder.sub(isum[i], offv), V8F32)
                    builder.store(_fmuladd8(builder, v, builder.fmul(dbs[i], dy), builder.load(ptr, align=4)), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tokens


tokens_q4_0, tokens_q5_0 = make_tokens_sym(8, 8), make_tokens_sym(4, 16)



def make_tokens_kmin(chain, G=TILE // 16):
    """Prefill and decode of Q4_K (chain 8) / Q5_K (chain 4) x Q8_K: one unpacked super-block
    of a tile (qb[qo:]: 128 pairs of 2R bytes, [pair][row][lo, hi]) against tokens t0..t1-1:

      facc[(t-t0)*R + r] = fma(-(dmin*dy), f32(Σ_j m_j*bs_j), fma(d*dy, f32(Σ_j sc_j*isub_j), facc))

    sc / mn the sub-block scale bytes of the super-block ((8, R) at so), d / dmin its fp16
    scale bits (at do); y2 the tokens' int8 pairs as int16 (T, nh), ys their bsums per 16
    (T, nbs). Rows go 32 at a time so the sums stay in registers."""
    R = 16 * G
    V8I8 = ir.VectorType(I8, 8)

    @intrinsic
    def tokens(typingctx, facc, qb, qo, y2, nh, yd, ys, nbs, nb, b, t0, t1, sc, mn, so, d, dmin, do):
        sig = types.void(facc, qb, qo, y2, nh, yd, ys, nbs, nb, b, t0, t1, sc, mn, so, d, dmin, do)

        def codegen(context, builder, signature, args):
            A = signature.args
            maddubs = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V16I16, [V32I8, V32I8]), "llvm.x86.avx2.pmadd.ub.sw")
            intp = context.get_value_type(types.intp)
            qo, nh, nbs, nb, b, t0, t1, so, do = (
                context.cast(builder, args[i], A[i], types.intp) for i in (2, 4, 7, 8, 9, 10, 11, 14, 17))

            def c(v):
                return ir.Constant(intp, v)

            def load(i, o, vty, align=1):
                return builder.load(_vec_ptr(context, builder, A[i], args[i], o, types.intp, vty), align=align)

            with cgutils.for_range(builder, builder.sub(t1, t0)) as loop:
                t = builder.add(t0, loop.index)
                dy = _splat(builder, load(5, builder.add(builder.mul(t, nb), b), F32T, 4), V8F32)
                ybase = builder.add(builder.mul(t, nh), builder.mul(b, c(128)))
                bsb = builder.add(builder.mul(t, nbs), builder.mul(b, c(16)))
                bsv = []
                for j in range(8):
                    bs = builder.add(load(6, builder.add(bsb, c(2 * j)), I32, 4), load(6, builder.add(bsb, c(2 * j + 1)), I32, 4))
                    bsv.append(_splat(builder, bs, V8I32))
                fo = builder.mul(loop.index, c(R))
                for ck in range(R // 32):
                    isum = [ir.Constant(V8I32, None)] * 4
                    for j in range(8):
                        isub = [None] * 4
                        for ch in range(16 // chain):
                            s16 = [None, None]
                            for kk in range(chain):
                                p = 16 * j + ch * chain + kk
                                yv = builder.bitcast(_splat(builder, load(3, builder.add(ybase, c(p)), I16, 2), V16I16), V32I8)
                                for gg in range(2):
                                    w = load(1, builder.add(qo, c(p * 2 * R + 64 * ck + 32 * gg)), V32I8)
                                    m = builder.call(maddubs, [w, yv])
                                    s16[gg] = m if s16[gg] is None else builder.add(s16[gg], m)
                            for gg in range(2):
                                for h in range(2):
                                    sel = ir.Constant(ir.VectorType(I32, 8), list(range(8 * h, 8 * h + 8)))
                                    v = builder.sext(builder.shuffle_vector(s16[gg], s16[gg], sel), V8I32)
                                    i = 2 * gg + h
                                    isub[i] = v if isub[i] is None else builder.add(isub[i], v)
                        for i in range(4):
                            scv = builder.zext(load(12, builder.add(so, c(j * R + 32 * ck + 8 * i)), V8I8), V8I32)
                            isum[i] = builder.add(isum[i], builder.mul(scv, isub[i]))
                    for i in range(4):
                        rs = 4 * ck + i
                        summ = ir.Constant(V8I32, None)
                        for j in range(8):
                            mnv = builder.zext(load(13, builder.add(so, c(j * R + 8 * rs)), V8I8), V8I32)
                            summ = builder.add(summ, builder.mul(mnv, bsv[j]))
                        dd = builder.fmul(_scales8(context, builder, A[15], args[15], builder.add(do, c(8 * rs))), dy)
                        dm = builder.fmul(_scales8(context, builder, A[16], args[16], builder.add(do, c(8 * rs))), dy)
                        ptr = _vec_ptr(context, builder, A[0], args[0], builder.add(fo, c(8 * rs)), types.intp, V8F32)
                        v = _fmuladd8(builder, dd, builder.sitofp(isum[i], V8F32), builder.load(ptr, align=4))
                        v = _fmuladd8(builder, builder.fneg(dm), builder.sitofp(summ, V8F32), v)
                        builder.store(v, ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tokens


tokens_q4_k, tokens_q5_k = make_tokens_kmin(8), make_tokens_kmin(4)



def make_tokens_q6_k(G=TILE // 16):
    """Q6_K x Q8_K, as make_tokens_kmin: one unpacked super-block (128 pairs, 6-bit values
    stored + 32) against tokens t0..t1-1,

      facc[(t-t0)*R + r] = fma(f32(Σ_j sc_j * (isub_j - 32*bs_j)), d*dy, facc)

    over its 16 sub-blocks of 16 (sc int8 (16, R) at so; bs_j = ys[t*nbs + 16b + j]);
    vpmaddubsw chains of 2 pairs (2*63*127 each fit int16)."""
    R = 16 * G
    V8I8 = ir.VectorType(I8, 8)

    @intrinsic
    def tokens(typingctx, facc, qb, qo, y2, nh, yd, ys, nbs, nb, b, t0, t1, sc, so, d, do):
        sig = types.void(facc, qb, qo, y2, nh, yd, ys, nbs, nb, b, t0, t1, sc, so, d, do)

        def codegen(context, builder, signature, args):
            A = signature.args
            maddubs = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V16I16, [V32I8, V32I8]), "llvm.x86.avx2.pmadd.ub.sw")
            intp = context.get_value_type(types.intp)
            qo, nh, nbs, nb, b, t0, t1, so, do = (
                context.cast(builder, args[i], A[i], types.intp) for i in (2, 4, 7, 8, 9, 10, 11, 13, 15))

            def c(v):
                return ir.Constant(intp, v)

            def load(i, o, vty, align=1):
                return builder.load(_vec_ptr(context, builder, A[i], args[i], o, types.intp, vty), align=align)

            with cgutils.for_range(builder, builder.sub(t1, t0)) as loop:
                t = builder.add(t0, loop.index)
                dy = _splat(builder, load(5, builder.add(builder.mul(t, nb), b), F32T, 4), V8F32)
                ybase = builder.add(builder.mul(t, nh), builder.mul(b, c(128)))
                bsb = builder.add(builder.mul(t, nbs), builder.mul(b, c(16)))
                fo = builder.mul(loop.index, c(R))
                for ck in range(R // 32):
                    isum = [ir.Constant(V8I32, None)] * 4
                    for j in range(16):
                        b32 = _splat(builder, builder.mul(load(6, builder.add(bsb, c(j)), I32, 4), ir.Constant(I32, 32)), V8I32)
                        isub = [None] * 4
                        for ch in range(4):
                            s16 = [None, None]
                            for kk in range(2):
                                p = 8 * j + 2 * ch + kk
                                yv = builder.bitcast(_splat(builder, load(3, builder.add(ybase, c(p)), I16, 2), V16I16), V32I8)
                                for gg in range(2):
                                    w = load(1, builder.add(qo, c(p * 2 * R + 64 * ck + 32 * gg)), V32I8)
                                    m = builder.call(maddubs, [w, yv])
                                    s16[gg] = m if s16[gg] is None else builder.add(s16[gg], m)
                            for gg in range(2):
                                for h in range(2):
                                    sel = ir.Constant(ir.VectorType(I32, 8), list(range(8 * h, 8 * h + 8)))
                                    v = builder.sext(builder.shuffle_vector(s16[gg], s16[gg], sel), V8I32)
                                    i = 2 * gg + h
                                    isub[i] = v if isub[i] is None else builder.add(isub[i], v)
                        for i in range(4):
                            scv = builder.sext(load(12, builder.add(so, c(j * R + 32 * ck + 8 * i)), V8I8), V8I32)
                            isum[i] = builder.add(isum[i], builder.mul(scv, builder.sub(isub[i], b32)))
                    for i in range(4):
                        rs = 4 * ck + i
                        dd = builder.fmul(_scales8(context, builder, A[14], args[14], builder.add(do, c(8 * rs))), dy)
                        ptr = _vec_ptr(context, builder, A[0], args[0], builder.add(fo, c(8 * rs)), types.intp, V8F32)
                        builder.store(_fmuladd8(builder, builder.sitofp(isum[i], V8F32), dd, builder.load(ptr, align=4)), ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tokens


tokens_q6_k = make_tokens_q6_k()


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



def make_unpack_crumbs(bits):
    """Unpack 8 elements of 32 rows into qb for the 2-bit (Q2_K) and 3-bit (Q3_K) tiles.

    src holds bytes of four 2-bit values (bits 2k..2k+1 = element k), elements 0-3 of the 32
    rows at so and 4-7 at so + ss; for 3-bit, h's bit k (32 bytes at ho) is the third bit of
    element k. Pair p (elements 2p, 2p+1) goes to qb[qbo + p*qbs : +64] as [row][lo, hi] bytes.

    Each source byte x is paired with x >> 2 once (one interleave), so that in every 16-bit
    lane [x, x >> 2] the masks 0x0303 of the lane and of the lane >> 4 are pairs 0 and 1; the
    third bits come the same way from [h, h >> 1]."""

    @intrinsic
    def unpack(typingctx, qb, qbo, qbs, src, so, ss, h, ho):
        sig = types.void(qb, qbo, qbs, src, so, ss, h, ho)

        def codegen(context, builder, signature, args):
            A = signature.args

            def c8(v):
                return ir.Constant(V32I8, [v] * 32)

            def c16(v):
                return ir.Constant(V16I16, [v] * 16)

            lo_idx = ir.Constant(ir.VectorType(I32, 32), [i // 2 + 32 * (i % 2) for i in range(32)])
            hi_idx = ir.Constant(ir.VectorType(I32, 32), [16 + i // 2 + 32 * (i % 2) for i in range(32)])

            def halves(x, shift):
                """[row r: x_r, x_r >> shift] as two V16I16 (rows 0-15, rows 16-31)."""
                t = builder.lshr(x, c8(shift))
                return [builder.bitcast(builder.shuffle_vector(x, t, idx), V16I16) for idx in (lo_idx, hi_idx)]

            def load(arr_i, off):
                return builder.load(_vec_ptr(context, builder, A[arr_i], args[arr_i], off, types.intp, V32I8), align=1)

            crumbs = []
            for k in range(2):
                off = _offset(context, builder, args[4], A[4], args[5], A[5], k)
                crumbs.append(halves(load(3, off), 2))
            if bits == 3:
                hoff = context.cast(builder, args[7], A[7], types.intp)
                third = halves(load(6, hoff), 1)
            for p in range(4):
                for half in range(2):
                    v = crumbs[p // 2][half]
                    if p % 2:
                        v = builder.lshr(v, c16(4))
                    v = builder.and_(v, c16(0x0303))
                    if bits == 3:  # bit 2p of each byte of [h, h >> 1] to bit 2
                        hb = third[half]
                        if p == 0:
                            hb = builder.shl(hb, c16(2))
                        elif p > 1:
                            hb = builder.lshr(hb, c16(2 * p - 2))
                        v = builder.or_(v, builder.and_(hb, c16(0x0404)))
                    dst = _offset(context, builder, args[1], A[1], args[2], A[2], p)
                    dst = builder.add(dst, ir.Constant(dst.type, 32 * half))
                    ptr = _vec_ptr(context, builder, A[0], args[0], dst, types.intp, V32I8)
                    builder.store(builder.bitcast(v, V32I8), ptr, align=1)
            return context.get_dummy_value()

        return sig, codegen

    return unpack


unpack2 = make_unpack_crumbs(2)
unpack3 = make_unpack_crumbs(3)


def make_dot_crumbs(kind, G=TILE // 16):
    """One super-block of a tile against one token, for Q3_K (kind "q3") and Q2_K ("q2"):
    from the unpacked bytes in qb ([pair][row][2], pair p at qo + p*qs) and the token's Q8_K
    pairs y2[yo:] and bsums bs[bo:bo+16], the exact int32 sums per row of all G*16 rows:

      q3: acc[ao+r]     = Σ_j s_j[r] * (Σ_{e in j} q3[r,e]*y[e] - 4*bs_j)   (s: int8 sc, q3 = 0..7)
      q2: acc[ao+r]     = Σ_j (sc_j[r] & 15) * Σ_{e in j} q2[r,e]*y[e]
          acc[ao+R+r]   = Σ_j (sc_j[r] >> 4) * bs_j                        (sc: the packed byte)

    with sc_j[r] at sc[so + j*ss + r]. A sub-block's 16 products are one vpmaddubsw chain in
    int16 (|sum| <= 8*2*7*127, and 4*bs_j <= 4*16*127 fits beside it); two sub-blocks' sums
    are interleaved per row and multiplied by their scales with one vpmaddwd into int32."""
    q3 = kind == "q3"

    @intrinsic
    def dot(typingctx, acc, ao, qb, qo, qs, y2, yo, sc, so, ss, bs, bo):
        sig = types.void(acc, ao, qb, qo, qs, y2, yo, sc, so, ss, bs, bo)

        def codegen(context, builder, signature, args):
            A = signature.args
            maddubs = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V16I16, [V32I8, V32I8]), "llvm.x86.avx2.pmadd.ub.sw")
            maddwd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(V8I32, [V16I16, V16I16]), "llvm.x86.avx2.pmadd.wd")
            lo_idx = ir.Constant(ir.VectorType(I32, 16), [i // 2 + 16 * (i % 2) for i in range(16)])
            hi_idx = ir.Constant(ir.VectorType(I32, 16), [8 + i // 2 + 16 * (i % 2) for i in range(16)])

            def interleave(a, b):
                return builder.shuffle_vector(a, b, lo_idx), builder.shuffle_vector(a, b, hi_idx)

            def at(i, k, step_arg=None, step=1):
                """args[i] (an offset) + k * (args[step_arg] or step), as intp."""
                if step_arg is None:
                    return _offset(context, builder, args[i], A[i], ir.Constant(I32, step), types.int32, k)
                return _offset(context, builder, args[i], A[i], args[step_arg], A[step_arg], k)

            def bsum(j):
                v = builder.load(_vec_ptr(context, builder, A[10], args[10], at(11, j), types.intp, I32), align=4)
                return builder.trunc(v, I16)

            zero = ir.Constant(V8I32, None)
            isum = [[zero, zero] for _ in range(G)]
            summ = [[zero, zero] for _ in range(G)]
            for jp in range(8):
                p16 = [[None, None] for _ in range(G)]
                for h in range(2):
                    j = 2 * jp + h
                    ys = []
                    for k in range(8):
                        y = builder.load(_vec_ptr(context, builder, A[5], args[5], at(6, 8 * j + k), types.intp, I16), align=2)
                        ys.append(builder.bitcast(_splat(builder, y, V16I16), V32I8))
                    if q3:
                        b4 = _splat(builder, builder.shl(bsum(j), ir.Constant(I16, 2)), V16I16)
                    for g in range(G):
                        s = None
                        for k in range(8):
                            off = builder.add(at(3, 8 * j + k, 4), ir.Constant(ir.IntType(64), 32 * g))
                            w = builder.load(_vec_ptr(context, builder, A[2], args[2], off, types.intp, V32I8), align=1)
                            p = builder.call(maddubs, [w, ys[k]])
                            s = p if s is None else builder.add(s, p)
                        p16[g][h] = builder.sub(s, b4) if q3 else s
                if not q3:  # (bs_j, bs_j+1) in every int32 lane, for the mins
                    pair = builder.insert_element(ir.Constant(ir.VectorType(I16, 2), None), bsum(2 * jp), ir.Constant(I32, 0))
                    pair = builder.insert_element(pair, bsum(2 * jp + 1), ir.Constant(I32, 1))
                    bpair = builder.bitcast(_splat(builder, builder.bitcast(pair, I32), V8I32), V16I16)
                for g in range(G):
                    scs = []
                    for h in range(2):
                        off = builder.add(at(8, 2 * jp + h, 9), ir.Constant(ir.IntType(64), 16 * g))
                        v = builder.load(_vec_ptr(context, builder, A[7], args[7], off, types.intp, V16I8), align=1)
                        scs.append(builder.sext(v, V16I16) if q3 else builder.zext(v, V16I16))
                    if q3:
                        sl, sh = interleave(scs[0], scs[1])
                    else:
                        c15 = ir.Constant(V16I16, [15] * 16)
                        c4 = ir.Constant(V16I16, [4] * 16)
                        sl, sh = interleave(builder.and_(scs[0], c15), builder.and_(scs[1], c15))
                        ml, mh = interleave(builder.lshr(scs[0], c4), builder.lshr(scs[1], c4))
                        summ[g][0] = builder.add(summ[g][0], builder.call(maddwd, [ml, bpair]))
                        summ[g][1] = builder.add(summ[g][1], builder.call(maddwd, [mh, bpair]))
                    dl, dh = interleave(p16[g][0], p16[g][1])
                    isum[g][0] = builder.add(isum[g][0], builder.call(maddwd, [dl, sl]))
                    isum[g][1] = builder.add(isum[g][1], builder.call(maddwd, [dh, sh]))
            R = 16 * G
            for g in range(G):
                for h in range(2):
                    parts = [(isum, 0)] if q3 else [(isum, 0), (summ, R)]
                    for sums, base in parts:
                        off = at(1, 1, step=base + 16 * g + 8 * h)
                        ptr = _vec_ptr(context, builder, A[0], args[0], off, types.intp, V8I32)
                        builder.store(sums[g][h], ptr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return dot


dot_q3 = make_dot_crumbs("q3")
dot_q2 = make_dot_crumbs("q2")


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
row_iq4_nl = make_row_nibbles(4, False, digits=IQ4_DIGITS)
row_iq4_xs = make_row_iq4_xs(IQ4_DIGITS)
