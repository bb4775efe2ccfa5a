"""Numba dot kernels: quantized weight blocks x quantized activations (kquants.md §4),
the activation quantizers Q8_K / Q8_0 (§3.8, §3.9) and row dequantizers for get_rows.

All of it lives in this one module so Numba's cache sees every helper a kernel calls.
Conventions: outputs first; `out` is float32 (T, n_out); weights arrive as the arrays
`matmul.QMatrix` prepared at load; activations as split arrays (int8 quants, float32
scales, int32 bsums). Each kernel has a plain-NumPy twin in `dot_ref.py`.
"""
import math

import llvmlite.binding as llvm_binding
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..jit import jit_exact, jit_fast

# ---------------------------------------------------------------------------------------
# activation quantizers (bit-exact with ggml: jit_exact, no contraction)


@jit_exact
def fp16_round(x):
    """float32 -> float32 value of fp16(x), round to nearest even, overflow to inf (§0.2).

    Rounding x/ulp to an integer in float64 is exact: x is a float32 and ulp a power of two.
    """
    if x != x or x == 0.0:
        return np.float32(x)
    m, e = math.frexp(x)  # |x| = m * 2**e, 0.5 <= |m| < 1: the fp16 ulp is 2**(e-11), >= 2**-24
    ulp = math.ldexp(1.0, max(e - 11, -24))
    r = np.rint(np.float64(x) / ulp) * ulp
    if abs(r) > 65504.0:
        return np.float32(np.inf) if r > 0 else np.float32(-np.inf)
    return np.float32(r)


@jit_exact(inline="always")
def _q8_K_row(x, qs, d, bsums, t):
    """Row t of x -> Q8_K (§3.8): qs int8, d float32 per 256, bsums int32 per 16 (zero for a zero block)."""
    for b in range(x.shape[1] // 256):
        base = b * 256
        amax = np.float32(0.0)
        vmax = np.float32(0.0)
        for j in range(256):
            v = x[t, base + j]
            if abs(v) > amax:  # strict: the first element of largest |x| wins, with its sign
                amax = abs(v)
                vmax = v
        if amax == 0:
            d[t, b] = 0
            for j in range(256):
                qs[t, base + j] = 0
            for g in range(16):
                bsums[t, b * 16 + g] = 0
            continue
        iscale = np.float32(np.float32(-127.0) / vmax)
        for g in range(16):
            s = 0
            for j in range(16):
                q = min(127, int(np.rint(np.float32(iscale * x[t, base + 16 * g + j]))))
                qs[t, base + 16 * g + j] = q
                s += q
            bsums[t, b * 16 + g] = s
        d[t, b] = np.float32(np.float32(1.0) / iscale)


@jit_exact(inline="always")
def _q8_0_row(x, qs, d, ys, t):
    """Row t of x -> the x86 activation Q8_0 (§3.9): d = fp16(amax/127), qs = rint(x*f32(127/amax))."""
    for b in range(x.shape[1] // 32):
        base = b * 32
        amax = np.float32(0.0)
        for j in range(32):
            amax = max(amax, abs(x[t, base + j]))
        d[t, b] = fp16_round(np.float32(amax / np.float32(127.0)))
        iscale = np.float32(np.float32(127.0) / amax) if amax > 0 else np.float32(0.0)
        s = 0
        for j in range(32):
            q = min(127, max(-128, int(np.rint(np.float32(x[t, base + j] * iscale)))))
            qs[t, base + j] = q
            s += q
        ys[t, b] = s


@jit_exact(parallel=True)
def quantize_q8_K_act(x, qs, d, bsums):
    """x float32 (T, n) -> qs int8 (T, n), d float32 (T, n/256), bsums int32 (T, n/16)."""
    for t in prange(x.shape[0]):
        _q8_K_row(x, qs, d, bsums, t)


@jit_exact
def quantize_q8_K_act_1(x, qs, d, bsums):
    """quantize_q8_K_act for one row, without the cost of starting a parallel region."""
    _q8_K_row(x, qs, d, bsums, 0)


@jit_exact(parallel=True)
def quantize_q8_0_act(x, qs, d, ys):
    """x float32 (T, n) -> qs int8 (T, n), d float32 (T, n/32) = fp16(amax/127) (§3.9, x86),
    ys int32 (T, n/32) block sums of qs (for the unsigned 4/5-bit weight quants)."""
    for t in prange(x.shape[0]):
        _q8_0_row(x, qs, d, ys, t)


@jit_exact
def quantize_q8_0_act_1(x, qs, d, ys):
    """quantize_q8_0_act for one row, without the cost of starting a parallel region."""
    _q8_0_row(x, qs, d, ys, 0)


# ---------------------------------------------------------------------------------------
# Quantized weights in the tiled layout (built at load by `matmul.QMatrix`; no float copies).
#
# Rows are grouped in tiles of R = TILE rows (the last tile zero-padded). Inside a tile the
# row index is the fastest axis, so the innermost loop of every kernel runs over R rows with
# unit stride: it vectorises into full AVX2 lanes and needs no horizontal reduction per
# block. Along the row, quants keep ggml's blocks but in natural element order:
#
#   q8  int8  (ntile, n_in/2, 2R)  Q8_0: [pair p][row r][element 2p, 2p+1]
#   q4  uint8 (ntile, n_in/2, R)   4-bit types: [pair p][row r] = q(2p) | q(2p+1) << 4
#   qh  uint8 (ntile, n_in/8, R)   Q5_0/Q5_K: bit k = 5th bit of element 8g+k
#   qh  uint8 (ntile, n_in/4, R)   Q6_K: bits 2k..2k+1 = top 2 bits of element 4g+k
#   sc, mn    (ntile, n_sub, R)    K-quant sub-block scales / mins, one byte each
#   d, dmin   uint16 (ntile, n_blocks, R)   fp16 block scales (bits), widened per block
#
# Decode reads every weight byte once per token, so the layout keeps ggml's bytes per block
# (only the K-quants' 6-bit scales grow, 12 -> 16 bytes per 256 weights).
#
# Integer block sums are exact in int32; the constant offsets of the unsigned quants
# (8 for Q4_0, 16 for Q5_0, 32 for Q6_K) are subtracted once per block through the
# activation block sums, as ggml's AVX2 kernels do with bsums.

TILE = 64


@jit_fast
def _chunking(ntile):
    """Tiles per prange iteration: enough iterations for the threads to share, few enough
    that the per-iteration scratch allocation stays negligible."""
    per = max(1, ntile // 64)
    return per, (ntile + per - 1) // per


@jit_fast
def _store(out, t, row0, facc):
    n = min(facc.shape[0], out.shape[1] - row0)
    for r in range(n):
        out[t, row0 + r] = facc[r]


@jit_fast(inline="always")
def _h2f_tile(buf, d, tl):
    """The fp16 block scales of tile tl, d[tl] (uint16 bits, (nb, R)), as float32 (nb, R) in the
    scratch buf (uint32, (nb, R)): done once per tile, shared by every token."""
    _widen_f16(buf.reshape(-1), d[tl].reshape(-1))
    return buf.view(np.float32)


@jit_fast
def _tile_q8_0(out, t, tl, q8, dt, yq, yd, isub, facc):
    R = facc.shape[0]
    nb = dt.shape[0]
    facc[:] = 0
    for b in range(nb):
        isub[:] = 0
        for p in range(16 * b, 16 * b + 16, 2):
            y0 = np.int32(yq[t, 2 * p])
            y1 = np.int32(yq[t, 2 * p + 1])
            y2 = np.int32(yq[t, 2 * p + 2])
            y3 = np.int32(yq[t, 2 * p + 3])
            w0 = q8[tl, p]
            w1 = q8[tl, p + 1]
            for r in range(R):
                isub[r] += (
                    np.int32(w0[2 * r]) * y0
                    + np.int32(w0[2 * r + 1]) * y1
                    + np.int32(w1[2 * r]) * y2
                    + np.int32(w1[2 * r + 1]) * y3
                )
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += np.float32(isub[r]) * (db[r] * dy)
    _store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm_q8_0(out, q8, d, yq, yd, ys):
    """Q8_0 weights x Q8_0 activations: out (T, n_out) float32. ys is unused (signed quants)."""
    T = out.shape[0]
    ntile = q8.shape[0]
    R = d.shape[2]
    per, nchunk = _chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.uint32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = _h2f_tile(hb, d, tl)
            for t in range(T):
                _tile_q8_0(out, t, tl, q8, dt, yq, yd, isub, facc)


@jit_fast
def _tile_q4_0(out, t, tl, q4, dt, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    nb = dt.shape[0]
    facc[:] = 0
    for b in range(nb):
        isub[:] = 0
        for p in range(16 * b, 16 * b + 16, 4):
            e = 2 * p
            y0 = np.int32(yq[t, e])
            y1 = np.int32(yq[t, e + 1])
            y2 = np.int32(yq[t, e + 2])
            y3 = np.int32(yq[t, e + 3])
            y4 = np.int32(yq[t, e + 4])
            y5 = np.int32(yq[t, e + 5])
            y6 = np.int32(yq[t, e + 6])
            y7 = np.int32(yq[t, e + 7])
            w0 = q4[tl, p]
            w1 = q4[tl, p + 1]
            w2 = q4[tl, p + 2]
            w3 = q4[tl, p + 3]
            for r in range(R):
                x0 = np.int32(w0[r])
                x1 = np.int32(w1[r])
                x2 = np.int32(w2[r])
                x3 = np.int32(w3[r])
                isub[r] += (
                    (x0 & 15) * y0
                    + (x0 >> 4) * y1
                    + (x1 & 15) * y2
                    + (x1 >> 4) * y3
                    + (x2 & 15) * y4
                    + (x2 >> 4) * y5
                    + (x3 & 15) * y6
                    + (x3 >> 4) * y7
                )
        off = np.int32(8 * ys[t, b])  # quants are stored as q + 8
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += np.float32(np.int32(isub[r] - off)) * (db[r] * dy)
    _store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm_q4_0(out, q4, d, yq, yd, ys):
    """Q4_0 weights x Q8_0 activations."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = _chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.uint32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = _h2f_tile(hb, d, tl)
            for t in range(T):
                _tile_q4_0(out, t, tl, q4, dt, yq, yd, ys, isub, facc)


@jit_fast
def _sum8_q5(isub, w0, w1, w2, w3, hb, yq, t, e):
    """isub[r] += Σ_{k<8} q5(element e+k of row r) * yq[t, e+k]; 5th bits in hb[r] (bit k)."""
    y0 = np.int32(yq[t, e])
    y1 = np.int32(yq[t, e + 1])
    y2 = np.int32(yq[t, e + 2])
    y3 = np.int32(yq[t, e + 3])
    y4 = np.int32(yq[t, e + 4])
    y5 = np.int32(yq[t, e + 5])
    y6 = np.int32(yq[t, e + 6])
    y7 = np.int32(yq[t, e + 7])
    for r in range(isub.shape[0]):
        h = np.int32(hb[r])
        x0 = np.int32(w0[r])
        x1 = np.int32(w1[r])
        x2 = np.int32(w2[r])
        x3 = np.int32(w3[r])
        isub[r] += (
            ((x0 & 15) | ((h << 4) & 16)) * y0
            + ((x0 >> 4) | ((h << 3) & 16)) * y1
            + ((x1 & 15) | ((h << 2) & 16)) * y2
            + ((x1 >> 4) | ((h << 1) & 16)) * y3
            + ((x2 & 15) | (h & 16)) * y4
            + ((x2 >> 4) | ((h >> 1) & 16)) * y5
            + ((x3 & 15) | ((h >> 2) & 16)) * y6
            + ((x3 >> 4) | ((h >> 3) & 16)) * y7
        )


@jit_fast
def _tile_q5_0(out, t, tl, q4, qh, dt, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    nb = dt.shape[0]
    facc[:] = 0
    for b in range(nb):
        isub[:] = 0
        for g in range(4 * b, 4 * b + 4):
            p = 4 * g
            _sum8_q5(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], qh[tl, g], yq, t, 8 * g)
        off = np.int32(16 * ys[t, b])  # quants are stored as q + 16
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += np.float32(np.int32(isub[r] - off)) * (db[r] * dy)
    _store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm_q5_0(out, q4, qh, d, yq, yd, ys):
    """Q5_0 weights x Q8_0 activations."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = _chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.uint32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = _h2f_tile(hb, d, tl)
            for t in range(T):
                _tile_q5_0(out, t, tl, q4, qh, dt, yq, yd, ys, isub, facc)


@jit_fast
def _sum8_q4(isub, w0, w1, w2, w3, yq, t, e):
    """isub[r] += Σ_{k<8} q4(element e+k of row r) * yq[t, e+k]."""
    y0 = np.int32(yq[t, e])
    y1 = np.int32(yq[t, e + 1])
    y2 = np.int32(yq[t, e + 2])
    y3 = np.int32(yq[t, e + 3])
    y4 = np.int32(yq[t, e + 4])
    y5 = np.int32(yq[t, e + 5])
    y6 = np.int32(yq[t, e + 6])
    y7 = np.int32(yq[t, e + 7])
    for r in range(isub.shape[0]):
        x0 = np.int32(w0[r])
        x1 = np.int32(w1[r])
        x2 = np.int32(w2[r])
        x3 = np.int32(w3[r])
        isub[r] += (
            (x0 & 15) * y0
            + (x0 >> 4) * y1
            + (x1 & 15) * y2
            + (x1 >> 4) * y3
            + (x2 & 15) * y4
            + (x2 >> 4) * y5
            + (x3 & 15) * y6
            + (x3 >> 4) * y7
        )


@jit_fast(inline="always")
def _kmin_finish(t, tl, b, j, sc, mn, ys, isub, isum, summ):
    """After sub-block j's sums: isum += sc_j * isub, summ += m_j * (Q8_K bsums of j's 32 elements)."""
    bs = ys[t, 2 * j] + ys[t, 2 * j + 1]
    s = sc[tl, j]
    m = mn[tl, j]
    for r in range(isub.shape[0]):
        isum[r] += np.int32(s[r]) * isub[r]
        summ[r] += np.int32(m[r]) * bs


@jit_fast(inline="always")
def _kmin_scale(t, b, dt, dmt, yd, isum, summ, facc):
    """facc += d*dy * isum - dmin*dy * summ for super-block b (kquants.md §4.4)."""
    dy = yd[t, b]
    db = dt[b]
    dm = dmt[b]
    for r in range(facc.shape[0]):
        facc[r] += (db[r] * dy) * np.float32(isum[r]) - (dm[r] * dy) * np.float32(summ[r])


@jit_fast
def _tile_q4_K(out, t, tl, q4, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc):
    facc[:] = 0
    for b in range(dt.shape[0]):
        isum[:] = 0
        summ[:] = 0
        for j in range(8 * b, 8 * b + 8):  # sub-blocks of 32 = 4 groups of 8 elements
            isub[:] = 0
            for g in range(4 * j, 4 * j + 4):
                p = 4 * g
                _sum8_q4(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], yq, t, 8 * g)
            _kmin_finish(t, tl, b, j, sc, mn, ys, isub, isum, summ)
        _kmin_scale(t, b, dt, dmt, yd, isum, summ, facc)
    _store(out, t, tl * facc.shape[0], facc)


@jit_fast
def _tile_q5_K(out, t, tl, q4, qh, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc):
    facc[:] = 0
    for b in range(dt.shape[0]):
        isum[:] = 0
        summ[:] = 0
        for j in range(8 * b, 8 * b + 8):
            isub[:] = 0
            for g in range(4 * j, 4 * j + 4):
                p = 4 * g
                _sum8_q5(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], qh[tl, g], yq, t, 8 * g)
            _kmin_finish(t, tl, b, j, sc, mn, ys, isub, isum, summ)
        _kmin_scale(t, b, dt, dmt, yd, isum, summ, facc)
    _store(out, t, tl * facc.shape[0], facc)


@jit_fast(parallel=True)
def mm_q4_K(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q4_K weights x Q8_K activations; qh is empty; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = _chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        summ = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.uint32)
        hm = np.empty(d.shape[1:], np.uint32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = _h2f_tile(hb, d, tl)
            dmt = _h2f_tile(hm, dmin, tl)
            for t in range(T):
                _tile_q4_K(out, t, tl, q4, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc)


@jit_fast(parallel=True)
def mm_q5_K(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q5_K weights x Q8_K activations; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = _chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        summ = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.uint32)
        hm = np.empty(d.shape[1:], np.uint32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = _h2f_tile(hb, d, tl)
            dmt = _h2f_tile(hm, dmin, tl)
            for t in range(T):
                _tile_q5_K(out, t, tl, q4, qh, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc)


@jit_fast
def _tile_q6_K(out, t, tl, q4, qh, sc, dt, yq, yd, ys, isub, isum, corr, facc):
    R = facc.shape[0]
    nb = dt.shape[0]
    facc[:] = 0
    for b in range(nb):
        isum[:] = 0
        corr[:] = 0
        for j in range(16 * b, 16 * b + 16):  # sub-blocks of 16 = 2 groups of 8 elements
            isub[:] = 0
            for g in range(2 * j, 2 * j + 2):
                e = 8 * g
                y0 = np.int32(yq[t, e])
                y1 = np.int32(yq[t, e + 1])
                y2 = np.int32(yq[t, e + 2])
                y3 = np.int32(yq[t, e + 3])
                y4 = np.int32(yq[t, e + 4])
                y5 = np.int32(yq[t, e + 5])
                y6 = np.int32(yq[t, e + 6])
                y7 = np.int32(yq[t, e + 7])
                w0 = q4[tl, 4 * g]
                w1 = q4[tl, 4 * g + 1]
                w2 = q4[tl, 4 * g + 2]
                w3 = q4[tl, 4 * g + 3]
                h0 = qh[tl, 2 * g]
                h1 = qh[tl, 2 * g + 1]
                for r in range(R):
                    x0 = np.int32(w0[r])
                    x1 = np.int32(w1[r])
                    x2 = np.int32(w2[r])
                    x3 = np.int32(w3[r])
                    a = np.int32(h0[r])
                    c = np.int32(h1[r])
                    isub[r] += (
                        ((x0 & 15) | ((a & 3) << 4)) * y0
                        + ((x0 >> 4) | ((a & 12) << 2)) * y1
                        + ((x1 & 15) | (a & 48)) * y2
                        + ((x1 >> 4) | ((a & 192) >> 2)) * y3
                        + ((x2 & 15) | ((c & 3) << 4)) * y4
                        + ((x2 >> 4) | ((c & 12) << 2)) * y5
                        + ((x3 & 15) | (c & 48)) * y6
                        + ((x3 >> 4) | ((c & 192) >> 2)) * y7
                    )
            bs = ys[t, j]
            s = sc[tl, j]
            for r in range(R):
                sr = np.int32(s[r])
                isum[r] += sr * isub[r]
                corr[r] += sr * bs
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += (db[r] * dy) * np.float32(np.int32(isum[r] - 32 * corr[r]))  # quants stored as q + 32
    _store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm_q6_K(out, q4, qh, sc, d, yq, yd, ys):
    """Q6_K weights x Q8_K activations; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = _chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        corr = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.uint32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = _h2f_tile(hb, d, tl)
            for t in range(T):
                _tile_q6_K(out, t, tl, q4, qh, sc, dt, yq, yd, ys, isub, isum, corr, facc)


# ---------------------------------------------------------------------------------------
# AVX2 kernels. AVX2's vpmaddubsw multiplies 32 unsigned bytes by 32 signed bytes and adds
# adjacent pairs into 16 int16 lanes: with the tiled layout, one instruction does 2 elements
# x 16 rows (32 MACs), where the portable kernels do 8 per instruction. LLVM never emits it
# from plain code (it needs a saturating add in the IR), so it is called through an LLVM
# intrinsic. Each tile block is first unpacked into a small buffer of unsigned bytes
#
#   qb uint8 (pairs, 2R): [pair p][row r][element 2p, 2p+1]
#
# once, then multiplied against every token's activation pairs. No saturation can occur:
# int16 lanes sum at most K pairs, K chosen per type below (|y| <= 127 after quantization).
# Q8_0's signed weights use vpmaddwd (int16 x int16 -> int32) instead.

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


def _make_mac_u8(K, G=TILE // 16, store=False):
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


_mac_u8_2 = _make_mac_u8(2)  # Q6_K: pair sums <= 2*63*127, two fit in int16
_mac_u8_4 = _make_mac_u8(4)  # Q5: <= 2*31*127 per pair
_mac_u8_8 = _make_mac_u8(8)  # Q4: <= 2*15*127 per pair
# the same, storing instead of adding: the first call of a sum (no zeroing pass, no memset call)
_set_u8_2, _set_u8_4, _set_u8_8 = (_make_mac_u8(k, store=True) for k in (2, 4, 8))


# Q8_0 weights are read straight from the tiles (no unpack into a cache-resident buffer), so the
# mac prefetches the lines it will read this many bytes (4 blocks of a tile) ahead: decode on
# one core streams the 178 MB Gemma output matrix in 5.4 ms instead of 8.7 ms.
PREFETCH_AHEAD = 8192


def _make_mac_i8(K, G=TILE // 16, store=False):
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


_set_i8_16 = _make_mac_i8(16, store=True)  # a whole Q8_0 block (stored); int32 sums cannot overflow


def _make_unpack(bits):
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


_unpack4 = _make_unpack(4)
_unpack5 = _make_unpack(5)
_unpack6 = _make_unpack(6)

@intrinsic
def _h2f16(typingctx, dst, do, src, so):
    """dst[do:do+16] (float32) = src[so:so+16] (fp16 bits) widened: vcvtph2ps (F16C)."""
    sig = types.void(dst, do, src, so)

    def codegen(context, builder, signature, args):
        A = signature.args
        h = builder.load(_vec_ptr(context, builder, A[2], args[2], args[3], A[3], V16I16), align=2)
        f = builder.fpext(builder.bitcast(h, ir.VectorType(ir.HalfType(), 16)), ir.VectorType(ir.FloatType(), 16))
        builder.store(f, _vec_ptr(context, builder, A[0], args[0], args[1], A[1], ir.VectorType(ir.FloatType(), 16)), align=4)
        return context.get_dummy_value()

    return sig, codegen


@jit_fast(inline="always")
def _h2f_block(buf, d, tl, b):
    """d[tl, b] (R fp16 scales) -> buf (float32, R)."""
    src = d[tl, b]
    for rc in range(0, buf.shape[0], 16):
        _h2f16(buf, rc, src, rc)
    return buf


@jit_fast(inline="always")
def _avx2_chunks(ntile, T, R, pairs):
    """Chunking plus the per-chunk scratch: unpacked block, int32 block sums, float accumulators."""
    per = max(1, -(-ntile // 16))
    nchunk = (ntile + per - 1) // per
    qb = np.empty((nchunk, pairs * 2 * R), np.uint8)
    isub = np.empty((nchunk, 3, R), np.int32)
    dbuf = np.empty((nchunk, 2, R), np.float32)
    facc = np.empty((nchunk, T, R), np.float32)
    return per, nchunk, qb, isub, dbuf, facc


@jit_fast(inline="always")
def _store_tile(out, tl, facc):
    R = facc.shape[1]
    n = min(R, out.shape[1] - tl * R)
    for t in range(out.shape[0]):
        for r in range(n):
            out[t, tl * R + r] = facc[t, r]


@jit_fast(parallel=True)
def mm_q8_0_avx2(out, q8, d, yq, yd, ys):
    """Q8_0 weights x Q8_0 activations (vpmaddwd on the stored int8 pairs, no unpacking)."""
    T = out.shape[0]
    ntile, npair, R2 = q8.shape
    R = R2 // 2
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q8f = q8.reshape(-1)
    per, nchunk, qb, isub, dbuf, facc = _avx2_chunks(ntile, T, R, 0)
    for c in prange(nchunk):
        acc = isub[c, 0]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                db = _h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    _set_i8_16(acc, 0, q8f, (tl * npair + 16 * b) * R2, R2, y2[t], 16 * b)  # all R = TILE rows
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += np.float32(acc[r]) * (db[r] * dy)
            _store_tile(out, tl, facc[c])


@jit_fast(parallel=True)
def mm_q4_0_avx2(out, q4, d, yq, yd, ys):
    """Q4_0 weights x Q8_0 activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    R2 = 2 * R
    per, nchunk, qb, isub, dbuf, facc = _avx2_chunks(ntile, T, R, 16)
    for c in prange(nchunk):
        buf = qb[c]
        acc = isub[c, 0]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(4):
                    for rc in range(0, R, 16):
                        _unpack4(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 16 * b + 4 * g) * R + rc, R, q4f, 0)
                db = _h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    _set_u8_8(acc, 0, buf, 0, R2, y2[t], 16 * b)  # all R = TILE rows
                    _mac_u8_8(acc, 0, buf, 8 * R2, R2, y2[t], 16 * b + 8)
                    off = np.int32(8 * ys[t, b])  # stored as q + 8
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += np.float32(np.int32(acc[r] - off)) * (db[r] * dy)
            _store_tile(out, tl, facc[c])


@jit_fast(parallel=True)
def mm_q5_0_avx2(out, q4, qh, d, yq, yd, ys):
    """Q5_0 weights x Q8_0 activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    ngrp = qh.shape[1]
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    qhf = qh.reshape(-1)
    R2 = 2 * R
    per, nchunk, qb, isub, dbuf, facc = _avx2_chunks(ntile, T, R, 16)
    for c in prange(nchunk):
        buf = qb[c]
        acc = isub[c, 0]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(4):
                    for rc in range(0, R, 16):
                        _unpack5(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 16 * b + 4 * g) * R + rc, R,
                                 qhf, (tl * ngrp + 4 * b + g) * R + rc)
                db = _h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    _set_u8_4(acc, 0, buf, 0, R2, y2[t], 16 * b)  # all R = TILE rows
                    for g in range(1, 4):
                        _mac_u8_4(acc, 0, buf, 4 * g * R2, R2, y2[t], 16 * b + 4 * g)
                    off = np.int32(16 * ys[t, b])  # stored as q + 16
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += np.float32(np.int32(acc[r] - off)) * (db[r] * dy)
            _store_tile(out, tl, facc[c])


@jit_fast(inline="always")
def _kmin_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys, five):
    """Q4_K (five=False, qh unused) / Q5_K weights x Q8_K activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    ngrp = qh.shape[1]
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    qhf = qh.reshape(-1)
    R2 = 2 * R
    per, nchunk, qb, isub, dbuf, facc = _avx2_chunks(ntile, T, R, 128)
    for c in prange(nchunk):
        buf = qb[c]
        acc = isub[c, 0]
        isum = isub[c, 1]
        summ = isub[c, 2]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(32):  # 32 groups of 4 pairs = 256 elements
                    for rc in range(0, R, 16):
                        if five:
                            _unpack5(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 128 * b + 4 * g) * R + rc, R,
                                     qhf, (tl * ngrp + 32 * b + g) * R + rc)
                        else:
                            _unpack4(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 128 * b + 4 * g) * R + rc, R, q4f, 0)
                db = _h2f_block(dbuf[c, 0], d, tl, b)
                dm = _h2f_block(dbuf[c, 1], dmin, tl, b)
                for t in range(T):
                    isum[:] = 0
                    summ[:] = 0
                    for j in range(8):  # sub-blocks of 32 = 16 pairs
                        if five:  # all R = TILE rows per call
                            _set_u8_4(acc, 0, buf, 16 * j * R2, R2, y2[t], 128 * b + 16 * j)
                            for q in range(4, 16, 4):
                                _mac_u8_4(acc, 0, buf, (16 * j + q) * R2, R2, y2[t], 128 * b + 16 * j + q)
                        else:
                            _set_u8_8(acc, 0, buf, 16 * j * R2, R2, y2[t], 128 * b + 16 * j)
                            _mac_u8_8(acc, 0, buf, (16 * j + 8) * R2, R2, y2[t], 128 * b + 16 * j + 8)
                        bs = ys[t, 16 * b + 2 * j] + ys[t, 16 * b + 2 * j + 1]
                        s = sc[tl, 8 * b + j]
                        m = mn[tl, 8 * b + j]
                        for r in range(R):
                            isum[r] += np.int32(s[r]) * acc[r]
                            summ[r] += np.int32(m[r]) * bs
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += (db[r] * dy) * np.float32(isum[r]) - (dm[r] * dy) * np.float32(summ[r])
            _store_tile(out, tl, facc[c])


@jit_fast(parallel=True)
def mm_q4_K_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q4_K weights x Q8_K activations."""
    _kmin_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys, False)


@jit_fast(parallel=True)
def mm_q5_K_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q5_K weights x Q8_K activations."""
    _kmin_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys, True)


@jit_fast(parallel=True)
def mm_q6_K_avx2(out, q4, qh, sc, d, yq, yd, ys):
    """Q6_K weights x Q8_K activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    ngrp = qh.shape[1]
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    qhf = qh.reshape(-1)
    R2 = 2 * R
    per, nchunk, qb, isub, dbuf, facc = _avx2_chunks(ntile, T, R, 128)
    for c in prange(nchunk):
        buf = qb[c]
        acc = isub[c, 0]
        isum = isub[c, 1]
        corr = isub[c, 2]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(64):  # 64 groups of 2 pairs = 256 elements
                    for rc in range(0, R, 16):
                        _unpack6(buf, 2 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 128 * b + 2 * g) * R + rc, R,
                                 qhf, (tl * ngrp + 64 * b + g) * R + rc)
                db = _h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    isum[:] = 0
                    corr[:] = 0
                    for j in range(16):  # sub-blocks of 16 = 8 pairs
                        _set_u8_2(acc, 0, buf, 8 * j * R2, R2, y2[t], 128 * b + 8 * j)  # all R = TILE rows
                        for q in range(2, 8, 2):
                            _mac_u8_2(acc, 0, buf, (8 * j + q) * R2, R2, y2[t], 128 * b + 8 * j + q)
                        bs = ys[t, 16 * b + j]
                        s = sc[tl, 16 * b + j]
                        for r in range(R):
                            sr = np.int32(s[r])
                            isum[r] += sr * acc[r]
                            corr[r] += sr * bs
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += (db[r] * dy) * np.float32(np.int32(isum[r] - 32 * corr[r]))  # stored as q + 32
            _store_tile(out, tl, facc[c])


# ---------------------------------------------------------------------------------------
# float weights x float32 activations


@jit_fast(parallel=True)
def mm_f32(out, w, x):
    """w float32 (n_out, n_in)."""
    T, n_out = out.shape
    n = w.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = np.float32(0.0)
            for i in range(n):
                acc += w[r, i] * x[t, i]
            out[t, r] = acc


@jit_fast
def _f16_bits_to_f32_bits(h):
    """fp16 bits (int) -> float32 bits (uint32): exact, with subnormals, inf and NaN."""
    s = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 31:
        return np.uint32(s | 0x7F800000 | (m << 13))
    if e != 0:
        return np.uint32(s | ((e + 112) << 23) | (m << 13))
    if m == 0:
        return np.uint32(s)
    # subnormal: normalise the mantissa
    e = 113
    while (m & 0x400) == 0:
        m <<= 1
        e -= 1
    return np.uint32(s | (e << 23) | ((m & 0x3FF) << 13))


@jit_fast(inline="always")
def _widen_f16(buf, src):
    """src (fp16 bits, uint16, 1-D) -> buf (uint32 holding float32 bits, same length), exactly.

    Three loops that vectorise: the exponent/mantissa bits shifted into float32 position give
    2**-112 times the value for normal and subnormal halves alike (a subnormal half becomes a
    float32 subnormal), so one multiply by 2**112 finishes them; Inf/NaN and the sign are
    then patched in the integer view."""
    n = buf.shape[0]
    row = buf.view(np.float32)
    for i in range(n):
        buf[i] = np.uint32(src[i] & 0x7FFF) << 13
    for i in range(n):
        row[i] *= np.float32(5.192296858534828e33)  # 2**112
    for i in range(n):
        h = np.uint32(src[i])
        em = h & 0x7FFF
        v = np.uint32(0x7F800000 | (em << 13)) if em >= 0x7C00 else buf[i]
        buf[i] = v | ((h & 0x8000) << 16)
    return row


@jit_fast(parallel=True)
def mm_f16(out, w, x):
    """w uint16 (n_out, n_in) holding fp16 bits; each row is widened into a float32 buffer."""
    T, n_out = out.shape
    n = w.shape[1]
    nchunk = (n_out + 63) // 64
    for c in prange(nchunk):
        buf = np.empty(n, np.uint32)
        row = buf.view(np.float32)
        for r in range(c * 64, min(n_out, c * 64 + 64)):
            _widen_f16(buf, w[r])
            for t in range(T):
                acc = np.float32(0.0)
                for i in range(n):
                    acc += row[i] * x[t, i]
                out[t, r] = acc


@jit_fast(parallel=True)
def mm_bf16(out, w, x):
    """w uint16 (n_out, n_in) holding bf16 bits (the top half of a float32)."""
    T, n_out = out.shape
    n = w.shape[1]
    nchunk = (n_out + 63) // 64
    for c in prange(nchunk):
        buf = np.empty(n, np.uint32)
        row = buf.view(np.float32)
        for r in range(c * 64, min(n_out, c * 64 + 64)):
            for i in range(n):
                buf[i] = np.uint32(w[r, i]) << 16
            for t in range(T):
                acc = np.float32(0.0)
                for i in range(n):
                    acc += row[i] * x[t, i]
                out[t, r] = acc


# ---------------------------------------------------------------------------------------
# row dequantizers for get_rows (bit-exact with dequantize_row_*, §2: jit_exact)


@jit_exact
def dequant_rows(out, wtype, wq, ids):
    """out float32 (len(ids), n_in) <- dequantized rows ids of the raw GGUF blocks wq (uint8),
    bit-exact with ggml's dequantize_row_* (kquants.md §2); wtype is the ggml type id.
    Float types are handled in NumPy by `matmul.get_rows`."""
    n_in = out.shape[1]
    hb = np.empty(2, np.uint32)
    hf = hb.view(np.float32)
    for k in range(ids.shape[0]):
        r = ids[k]
        if wtype == 8:  # Q8_0
            for b in range(n_in // 32):
                d = _h2f(wq, r, b * 34, hb, hf, 0)
                for j in range(32):
                    q = np.int32(wq[r, b * 34 + 2 + j])
                    q = q - 256 if q > 127 else q
                    out[k, b * 32 + j] = np.float32(np.float32(q) * d)
        elif wtype == 2:  # Q4_0
            for b in range(n_in // 32):
                d = _h2f(wq, r, b * 18, hb, hf, 0)
                for j in range(16):
                    q = np.int32(wq[r, b * 18 + 2 + j])
                    out[k, b * 32 + j] = np.float32(np.float32((q & 15) - 8) * d)
                    out[k, b * 32 + 16 + j] = np.float32(np.float32((q >> 4) - 8) * d)
        elif wtype == 6:  # Q5_0
            for b in range(n_in // 32):
                o = b * 22
                d = _h2f(wq, r, o, hb, hf, 0)
                qh = (
                    np.int64(wq[r, o + 2])
                    | (np.int64(wq[r, o + 3]) << 8)
                    | (np.int64(wq[r, o + 4]) << 16)
                    | (np.int64(wq[r, o + 5]) << 24)
                )
                for j in range(16):
                    q = np.int64(wq[r, o + 6 + j])
                    lo = (q & 15) | (((qh >> j) & 1) << 4)
                    hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
                    out[k, b * 32 + j] = np.float32(np.float32(lo - 16) * d)
                    out[k, b * 32 + 16 + j] = np.float32(np.float32(hi - 16) * d)
        elif wtype == 12 or wtype == 13:  # Q4_K, Q5_K
            bs = 144 if wtype == 12 else 176
            qoff = 16 if wtype == 12 else 48
            for b in range(n_in // 256):
                o = b * bs
                d = _h2f(wq, r, o, hb, hf, 0)
                dmin = _h2f(wq, r, o + 2, hb, hf, 1)
                for j in range(8):
                    if j < 4:
                        sc = np.int32(wq[r, o + 4 + j] & 63)
                        m = np.int32(wq[r, o + 8 + j] & 63)
                    else:
                        sc = (np.int32(wq[r, o + 8 + j]) & 0xF) | ((np.int32(wq[r, o + j]) >> 6) << 4)
                        m = (np.int32(wq[r, o + 8 + j]) >> 4) | ((np.int32(wq[r, o + 4 + j]) >> 6) << 4)
                    dj = np.float32(d * np.float32(sc))
                    mj = np.float32(dmin * np.float32(m))
                    shift = 4 * (j & 1)
                    for l in range(32):
                        q = (np.int32(wq[r, o + qoff + 32 * (j >> 1) + l]) >> shift) & 15
                        if wtype == 13:
                            q |= ((np.int32(wq[r, o + 16 + l]) >> j) & 1) << 4
                        out[k, b * 256 + 32 * j + l] = np.float32(np.float32(dj * np.float32(q)) - mj)
        elif wtype == 14:  # Q6_K
            for b in range(n_in // 256):
                o = b * 210
                d = _h2f(wq, r, o + 208, hb, hf, 0)
                for h in range(2):
                    for g in range(4):
                        shift = 4 * (g >> 1)
                        for l in range(32):
                            e = 128 * h + 32 * g + l
                            low = (np.int32(wq[r, o + 64 * h + 32 * (g & 1) + l]) >> shift) & 15
                            high = (np.int32(wq[r, o + 128 + 32 * h + l]) >> (2 * g)) & 3
                            sc = np.int32(wq[r, o + 192 + e // 16])
                            sc = sc - 256 if sc > 127 else sc
                            dsc = np.float32(d * np.float32(sc))
                            out[k, b * 256 + e] = np.float32(dsc * np.float32((low | (high << 4)) - 32))


@jit_exact
def _h2f(wq, r, o, hb, hf, slot):
    """The fp16 at bytes wq[r, o:o+2] as float32 (exact), through a uint32/float32 scratch view."""
    hb[slot] = _f16_bits_to_f32_bits(np.int64(wq[r, o]) | (np.int64(wq[r, o + 1]) << 8))
    return hf[slot]
