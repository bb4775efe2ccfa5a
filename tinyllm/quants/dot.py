"""Numba dot kernels: quantized weight blocks x quantized activations (kquants.md §4),
the activation quantizers Q8_K / Q8_0 (§3.8, §3.9) and row dequantizers for get_rows.

All of it lives in this one module so Numba's cache sees every helper a kernel calls.
Conventions: outputs first; `out` is float32 (T, n_out); weights arrive as the arrays
`matmul.QMatrix` prepared at load; activations as split arrays (int8 quants, float32
scales, int32 bsums). Each kernel has a plain-NumPy twin in `dot_ref.py`.
"""
import math

import numpy as np
from numba import prange

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


@jit_exact(parallel=True)
def quantize_q8_K_act(x, qs, d, bsums):
    """x float32 (T, n) -> qs int8 (T, n), d float32 (T, n/256), bsums int32 (T, n/16)."""
    T, n = x.shape
    nb = n // 256
    for t in prange(T):
        for b in range(nb):
            base = b * 256
            amax = np.float32(0.0)
            vmax = np.float32(0.0)
            for j in range(256):
                v = x[t, base + j]
                if abs(v) > amax:
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


@jit_exact(parallel=True)
def quantize_q8_0_act(x, qs, d, ys):
    """x float32 (T, n) -> qs int8 (T, n), d float32 (T, n/32) = fp16(amax/127) (§3.9, x86),
    ys int32 (T, n/32) block sums of qs (for the unsigned 4/5-bit weight quants)."""
    T, n = x.shape
    nb = n // 32
    for t in prange(T):
        for b in range(nb):
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
#   d, dmin   float32 (ntile, n_blocks, R)   fp16 block scales decoded once at load
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


@jit_fast
def _tile_q8_0(out, t, tl, q8, d, yq, yd, isub, facc):
    R = facc.shape[0]
    nb = d.shape[1]
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
        db = d[tl, b]
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
        for tl in range(c * per, min(ntile, c * per + per)):
            for t in range(T):
                _tile_q8_0(out, t, tl, q8, d, yq, yd, isub, facc)


@jit_fast
def _tile_q4_0(out, t, tl, q4, d, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    nb = d.shape[1]
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
        db = d[tl, b]
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
        for tl in range(c * per, min(ntile, c * per + per)):
            for t in range(T):
                _tile_q4_0(out, t, tl, q4, d, yq, yd, ys, isub, facc)


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
def _tile_q5_0(out, t, tl, q4, qh, d, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    nb = d.shape[1]
    facc[:] = 0
    for b in range(nb):
        isub[:] = 0
        for g in range(4 * b, 4 * b + 4):
            p = 4 * g
            _sum8_q5(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], qh[tl, g], yq, t, 8 * g)
        off = np.int32(16 * ys[t, b])  # quants are stored as q + 16
        dy = yd[t, b]
        db = d[tl, b]
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
        for tl in range(c * per, min(ntile, c * per + per)):
            for t in range(T):
                _tile_q5_0(out, t, tl, q4, qh, d, yq, yd, ys, isub, facc)


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


@jit_fast
def _tile_kmin(out, t, tl, q4, qh, sc, mn, d, dmin, yq, yd, ys, isub, isum, summ, facc):
    """Q4_K (qh has no rows: shape[0] == 0) or Q5_K, one tile, one token."""
    R = facc.shape[0]
    nb = d.shape[1]
    five = qh.shape[0] > 0
    facc[:] = 0
    for b in range(nb):
        isum[:] = 0
        summ[:] = 0
        for j in range(8 * b, 8 * b + 8):  # sub-blocks of 32
            isub[:] = 0
            for g in range(4 * j, 4 * j + 4):  # groups of 8 elements
                p = 4 * g
                if five:
                    _sum8_q5(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], qh[tl, g], yq, t, 8 * g)
                else:
                    _sum8_q4(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], yq, t, 8 * g)
            bs = ys[t, 2 * j] + ys[t, 2 * j + 1]
            s = sc[tl, j]
            m = mn[tl, j]
            for r in range(R):
                isum[r] += np.int32(s[r]) * isub[r]
                summ[r] += np.int32(m[r]) * bs
        dy = yd[t, b]
        db = d[tl, b]
        dm = dmin[tl, b]
        for r in range(R):
            facc[r] += (db[r] * dy) * np.float32(isum[r]) - (dm[r] * dy) * np.float32(summ[r])
    _store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm_q4_K(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q4_K (qh empty) / Q5_K weights x Q8_K activations; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = _chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        summ = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            for t in range(T):
                _tile_kmin(out, t, tl, q4, qh, sc, mn, d, dmin, yq, yd, ys, isub, isum, summ, facc)


@jit_fast
def _tile_q6_K(out, t, tl, q4, qh, sc, d, yq, yd, ys, isub, isum, corr, facc):
    R = facc.shape[0]
    nb = d.shape[1]
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
        db = d[tl, b]
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
        for tl in range(c * per, min(ntile, c * per + per)):
            for t in range(T):
                _tile_q6_K(out, t, tl, q4, qh, sc, d, yq, yd, ys, isub, isum, corr, facc)


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
            for i in range(n):
                buf[i] = _f16_bits_to_f32_bits(np.int64(w[r, i]))
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
