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
def quantize_q8_0_act(x, qs, d):
    """x float32 (T, n) -> qs int8 (T, n), d float32 (T, n/32) = fp16(amax/127) (§3.9, x86)."""
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
            for j in range(32):
                q = int(np.rint(np.float32(x[t, base + j] * iscale)))
                qs[t, base + j] = min(127, max(-128, q))


# ---------------------------------------------------------------------------------------
# Q8_0-family weights x Q8_0 activations.  wq: raw rows (n_out, row_nbytes) as int8 (Q8_0)
# or uint8; wd: float32 (n_out, nb) decoded at load.


@jit_fast(parallel=True)
def mm_q8_0(out, wq, wd, yq, yd):
    """Q8_0 block (34 bytes): d fp16 | qs[32] int8."""
    T, n_out = out.shape
    nb = wd.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = np.float32(0.0)
            for b in range(nb):
                isum = np.int32(0)
                for j in range(32):
                    isum += np.int32(wq[r, b * 34 + 2 + j]) * np.int32(yq[t, b * 32 + j])
                acc += np.float32(wd[r, b] * yd[t, b]) * np.float32(isum)
            out[t, r] = acc


@jit_fast(parallel=True)
def mm_q4_0(out, wq, wd, yq, yd):
    """Q4_0 block (18 bytes): d fp16 | qs[16]: low nibble = element j, high = element j+16."""
    T, n_out = out.shape
    nb = wd.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = np.float32(0.0)
            for b in range(nb):
                isum = np.int32(0)
                for j in range(16):
                    q = np.int32(wq[r, b * 18 + 2 + j])
                    isum += ((q & 15) - 8) * np.int32(yq[t, b * 32 + j])
                    isum += ((q >> 4) - 8) * np.int32(yq[t, b * 32 + 16 + j])
                acc += np.float32(wd[r, b] * yd[t, b]) * np.float32(isum)
            out[t, r] = acc


@jit_fast(parallel=True)
def mm_q5_0(out, wq, wd, yq, yd):
    """Q5_0 block (22 bytes): d fp16 | qh u32 (bit k = 5th bit of element k) | qs[16] as Q4_0."""
    T, n_out = out.shape
    nb = wd.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = np.float32(0.0)
            for b in range(nb):
                o = b * 22
                qh = (
                    np.int64(wq[r, o + 2])
                    | (np.int64(wq[r, o + 3]) << 8)
                    | (np.int64(wq[r, o + 4]) << 16)
                    | (np.int64(wq[r, o + 5]) << 24)
                )
                isum = np.int32(0)
                for j in range(16):
                    q = np.int32(wq[r, o + 6 + j])
                    lo = (q & 15) | np.int32(((qh >> j) & 1) << 4)
                    hi = (q >> 4) | np.int32(((qh >> (j + 16)) & 1) << 4)
                    isum += (lo - 16) * np.int32(yq[t, b * 32 + j])
                    isum += (hi - 16) * np.int32(yq[t, b * 32 + 16 + j])
                acc += np.float32(wd[r, b] * yd[t, b]) * np.float32(isum)
            out[t, r] = acc


# ---------------------------------------------------------------------------------------
# K-quant weights x Q8_K activations.  wq: raw rows uint8; wd, wdmin: float32 (n_out, nb).


@jit_fast
def _scale_min_k4(wq, r, o, j):
    """(sc, m) of sub-block j from the 12 scale bytes at wq[r, o:o+12] (§1.8)."""
    if j < 4:
        return np.int32(wq[r, o + j] & 63), np.int32(wq[r, o + j + 4] & 63)
    sc = (np.int32(wq[r, o + j + 4]) & 0xF) | ((np.int32(wq[r, o + j - 4]) >> 6) << 4)
    m = (np.int32(wq[r, o + j + 4]) >> 4) | ((np.int32(wq[r, o + j]) >> 6) << 4)
    return sc, m


@jit_fast(parallel=True)
def mm_q4_K(out, wq, wd, wdmin, yq, yd, ybs):
    """Q4_K block (144 bytes): d | dmin | scales[12] | qs[128] (§1.5)."""
    T, n_out = out.shape
    nb = wd.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = np.float32(0.0)
            for b in range(nb):
                o = b * 144
                isum = np.int32(0)
                summins = np.int32(0)
                for j in range(8):
                    sc, m = _scale_min_k4(wq, r, o + 4, j)
                    shift = 4 * (j & 1)
                    qo = o + 16 + 32 * (j >> 1)
                    s = np.int32(0)
                    for l in range(32):
                        s += ((np.int32(wq[r, qo + l]) >> shift) & 15) * np.int32(yq[t, b * 256 + 32 * j + l])
                    isum += sc * s
                    summins += m * (ybs[t, b * 16 + 2 * j] + ybs[t, b * 16 + 2 * j + 1])
                acc += np.float32(wd[r, b] * yd[t, b]) * np.float32(isum)
                acc -= np.float32(wdmin[r, b] * yd[t, b]) * np.float32(summins)
            out[t, r] = acc


@jit_fast(parallel=True)
def mm_q5_K(out, wq, wd, wdmin, yq, yd, ybs):
    """Q5_K block (176 bytes): d | dmin | scales[12] | qh[32] | qs[128] (§1.6)."""
    T, n_out = out.shape
    nb = wd.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = np.float32(0.0)
            for b in range(nb):
                o = b * 176
                isum = np.int32(0)
                summins = np.int32(0)
                for j in range(8):
                    sc, m = _scale_min_k4(wq, r, o + 4, j)
                    shift = 4 * (j & 1)
                    qo = o + 48 + 32 * (j >> 1)
                    s = np.int32(0)
                    for l in range(32):
                        q = ((np.int32(wq[r, qo + l]) >> shift) & 15) | (((np.int32(wq[r, o + 16 + l]) >> j) & 1) << 4)
                        s += q * np.int32(yq[t, b * 256 + 32 * j + l])
                    isum += sc * s
                    summins += m * (ybs[t, b * 16 + 2 * j] + ybs[t, b * 16 + 2 * j + 1])
                acc += np.float32(wd[r, b] * yd[t, b]) * np.float32(isum)
                acc -= np.float32(wdmin[r, b] * yd[t, b]) * np.float32(summins)
            out[t, r] = acc


@jit_fast(parallel=True)
def mm_q6_K(out, wq, wd, yq, yd):
    """Q6_K block (210 bytes): ql[128] | qh[64] | scales[16] int8 | d (§1.7)."""
    T, n_out = out.shape
    nb = wd.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = np.float32(0.0)
            for b in range(nb):
                o = b * 210
                isum = np.int32(0)
                for h in range(2):
                    for g in range(4):
                        qlo = o + 64 * h + 32 * (g & 1)
                        shift = 4 * (g >> 1)
                        for half in range(2):
                            s = np.int32(0)
                            for l in range(16 * half, 16 * half + 16):
                                low = (np.int32(wq[r, qlo + l]) >> shift) & 15
                                high = (np.int32(wq[r, o + 128 + 32 * h + l]) >> (2 * g)) & 3
                                s += ((low | (high << 4)) - 32) * np.int32(yq[t, b * 256 + 128 * h + 32 * g + l])
                            sc = np.int32(wq[r, o + 192 + 8 * h + 2 * g + half])
                            sc = sc - 256 if sc > 127 else sc
                            isum += sc * s
                acc += np.float32(wd[r, b] * yd[t, b]) * np.float32(isum)
            out[t, r] = acc


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
def dequant_rows(out, wtype, wq, wd, wdmin, ids):
    """out float32 (len(ids), n_in) <- dequantized rows ids of the raw blocks wq (uint8).

    wtype is the ggml type id; wd / wdmin are the load-time float32 scales
    (float types are handled in NumPy by `matmul.get_rows`). Formulas and element order as in kquants.md §2.
    """
    n_in = out.shape[1]
    for k in range(ids.shape[0]):
        r = ids[k]
        if wtype == 8:  # Q8_0
            for b in range(n_in // 32):
                for j in range(32):
                    q = np.int32(wq[r, b * 34 + 2 + j])
                    q = q - 256 if q > 127 else q
                    out[k, b * 32 + j] = np.float32(np.float32(q) * wd[r, b])
        elif wtype == 2:  # Q4_0
            for b in range(n_in // 32):
                for j in range(16):
                    q = np.int32(wq[r, b * 18 + 2 + j])
                    out[k, b * 32 + j] = np.float32(np.float32((q & 15) - 8) * wd[r, b])
                    out[k, b * 32 + 16 + j] = np.float32(np.float32((q >> 4) - 8) * wd[r, b])
        elif wtype == 6:  # Q5_0
            for b in range(n_in // 32):
                o = b * 22
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
                    out[k, b * 32 + j] = np.float32(np.float32(lo - 16) * wd[r, b])
                    out[k, b * 32 + 16 + j] = np.float32(np.float32(hi - 16) * wd[r, b])
        elif wtype == 12 or wtype == 13:  # Q4_K, Q5_K
            bs = 144 if wtype == 12 else 176
            qoff = 16 if wtype == 12 else 48
            for b in range(n_in // 256):
                o = b * bs
                for j in range(8):
                    if j < 4:
                        sc = np.int32(wq[r, o + 4 + j] & 63)
                        m = np.int32(wq[r, o + 8 + j] & 63)
                    else:
                        sc = (np.int32(wq[r, o + 8 + j]) & 0xF) | ((np.int32(wq[r, o + j]) >> 6) << 4)
                        m = (np.int32(wq[r, o + 8 + j]) >> 4) | ((np.int32(wq[r, o + 4 + j]) >> 6) << 4)
                    dj = np.float32(wd[r, b] * np.float32(sc))
                    mj = np.float32(wdmin[r, b] * np.float32(m))
                    shift = 4 * (j & 1)
                    for l in range(32):
                        q = (np.int32(wq[r, o + qoff + 32 * (j >> 1) + l]) >> shift) & 15
                        if wtype == 13:
                            q |= ((np.int32(wq[r, o + 16 + l]) >> j) & 1) << 4
                        out[k, b * 256 + 32 * j + l] = np.float32(np.float32(dj * np.float32(q)) - mj)
        elif wtype == 14:  # Q6_K
            for b in range(n_in // 256):
                o = b * 210
                for h in range(2):
                    for g in range(4):
                        shift = 4 * (g >> 1)
                        for l in range(32):
                            e = 128 * h + 32 * g + l
                            low = (np.int32(wq[r, o + 64 * h + 32 * (g & 1) + l]) >> shift) & 15
                            high = (np.int32(wq[r, o + 128 + 32 * h + l]) >> (2 * g)) & 3
                            sc = np.int32(wq[r, o + 192 + e // 16])
                            sc = sc - 256 if sc > 127 else sc
                            dsc = np.float32(wd[r, b] * np.float32(sc))
                            out[k, b * 256 + e] = np.float32(dsc * np.float32((low | (high << 4)) - 32))
