"""Numba quantizers, bit-exact with llama-quantize without an imatrix (kquants.md §3).

`quantize(x, type, threads=None)` turns float32 rows into ggml blocks: uint8 (rows, row_nbytes).
Every kernel is `jit_exact` (no fastmath: no FMA contraction, no reassociation), so each
float32 operation rounds once as the C code does; `reference.py` holds the NumPy twins and
the block layout diagrams. Rows run in parallel: the row kernels are serial and release the
GIL, and `quantize` hands slices of rows to a pool of threads. (A `prange` kernel did the same
work but doubled the JIT compile time of these large functions.) Each row first checks its
input for NaN/Inf and, after quantizing, its fp16 scales for overflow (ggml_validate_row_data),
reporting through a per-row status array that `quantize` turns into a QuantizationError.

All helpers live in this module so that Numba's cache sees every function a kernel calls.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import QuantizationError, UsageError
from ..jit import get_threads, jit_exact
from .types import BLOCK_SIZES, GGMLType, row_nbytes

F32 = np.float32
# float32 constants as globals: Numba freezes them with their float32 type, so no
# expression below is silently promoted to float64
_F0 = F32(0.0)
_F1 = F32(1.0)
_F_HALF = F32(0.5)
_MAGIC = F32(12582912.0)  # 1.5 * 2**23, nearest_int's bit trick
_EPS = F32(1e-15)  # GROUP_MAX_EPS
_F0_1 = F32(0.1)
_F32_32 = F32(32.0)
_F63 = F32(63.0)
_F127 = F32(127.0)
_FM127 = F32(-127.0)
_FM128 = F32(-128.0)
_TWO_M24 = F32(2.0**-24)

_OK, _NONFINITE, _OVERFLOW = 0, 1, 2

QUANTIZE_TYPES = (
    GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0,
    GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.Q8_K,
)  # fmt: skip

# ---------------------------------------------------------------------------------------
# §0 primitives


@jit_exact
def nearest_int(v):
    """float32 -> int: ggml's 1.5*2^23 trick, so even |v| >= 2^22 gives ggml's exact garbage."""
    s = F32(v + _MAGIC)
    return np.int64(s.view(np.int32) & 0x007FFFFF) - 0x00400000


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
def fp32_to_bf16_bits(f):
    """ggml_compute_fp32_to_bf16: round to nearest even on the top 16 bits; NaN forced quiet."""
    u = np.int64(F32(f).view(np.uint32))
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return (u >> 16) | 64
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF


@jit_exact
def _roundf(v):
    """C roundf: half away from zero, as a float32 (v - trunc(v) is exact; no branches)."""
    t = np.trunc(v)
    r = v - t
    return t + (_F1 if r >= _F_HALF else _F0) - (_F1 if r <= -_F_HALF else _F0)


_TWO_31 = F32(2.0**31)


@jit_exact
def _c_int8(v):
    """`(int8_t)(float)` as x86-64 compiles it: cvttss2si (INT32_MIN for NaN, Inf or
    |v| >= 2^31, which a subnormal block scale can produce), then the low byte, sign-extended.
    Written out because LLVM leaves an out-of-range conversion undefined."""
    t = np.int32(v) if abs(v) < _TWO_31 else np.int32(-2147483648)
    return ((np.int64(t) & 0xFF) ^ 0x80) - 0x80


@jit_exact
def _row_nonfinite(xu):
    """Any NaN/Inf among the uint32 bit patterns of a row (an integer OR that vectorises)."""
    bad = 0
    for i in range(xu.shape[0]):
        bad |= np.int64((xu[i] & 0x7F800000) == 0x7F800000)
    return bad != 0


@jit_exact
def _put16(o, off, h):
    o[off] = h & 0xFF
    o[off + 1] = (h >> 8) & 0xFF


@jit_exact
def _fp16_field(o, off, f):
    """Store fp16(f) little-endian; return (its float32 value, whether it is finite)."""
    h = fp32_to_fp16_bits(f)
    _put16(o, off, h)
    return fp16_bits_to_fp32(h), (h & 0x7C00) != 0x7C00


# ---------------------------------------------------------------------------------------
# 32-weight blocks: Q8_0, Q4_0, Q5_0, Q4_1, Q5_1


@jit_exact(inline="always")
def _block_q8_0(xr, xu, base, o, ob):
    """quantize_row_q8_0_ref (§3.1). Block functions are inlined into the row loop: called,
    they ran at 60% of the speed."""
    # max of |x| as an integer max over the bit patterns: same value, and it vectorises
    abits = 0
    for j in range(32):
        abits = max(abits, np.int64(xu[base + j] & 0x7FFFFFFF))
    amax = np.uint32(abits).view(np.float32)
    d = amax / _F127
    id = _F1 / d if d != _F0 else _F0
    _, ok = _fp16_field(o, ob, d)
    for j in range(32):
        o[ob + 2 + j] = _c_int8(_roundf(xr[base + j] * id)) & 0xFF
    return ok


@jit_exact(inline="always")
def _block_x_0(xr, xu, base, o, ob, nmax, five):
    """quantize_row_q4_0_ref (nmax 15) / q5_0_ref (nmax 31, five) (§3.2, §3.3): d = max / -8 or -16,
    q = MIN(nmax, (int)(x*id + 8.5 or 16.5))."""
    # first element of largest |x|, sign kept: the max over the bit patterns vectorises,
    # then a short search finds where it first occurs
    abits = 0
    for j in range(32):
        abits = max(abits, np.int64(xu[base + j] & 0x7FFFFFFF))
    mx = _F0
    if abits != 0:
        for j in range(32):
            if np.int64(xu[base + j] & 0x7FFFFFFF) == abits:
                mx = xr[base + j]
                break
    half = F32((nmax + 1) // 2)
    d = mx / -half
    id = _F1 / d if d != _F0 else _F0
    _, ok = _fp16_field(o, ob, d)
    bias = half + _F_HALF
    qh = 0
    qs = ob + 6 if five else ob + 2
    for j in range(16):
        a0 = min(nmax, _c_int8(xr[base + j] * id + bias))
        a1 = min(nmax, _c_int8(xr[base + 16 + j] * id + bias))
        o[qs + j] = ((a0 & 0xF) | ((a1 & 0xF) << 4)) & 0xFF
        qh |= ((a0 >> 4) & 1) << j
        qh |= ((a1 >> 4) & 1) << (j + 16)
    if five:
        _put16(o, ob + 2, qh & 0xFFFF)
        _put16(o, ob + 4, (qh >> 16) & 0xFFFF)
    return ok


@jit_exact(inline="always")
def _block_x_1(xr, base, o, ob, nmax, five):
    """quantize_row_q4_1_ref (nmax 15, clamped) / q5_1_ref (nmax 31, no clamp) (§3.10)."""
    mn = xr[base]
    mx = xr[base]
    for j in range(1, 32):
        v = xr[base + j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    d = (mx - mn) / F32(nmax)
    id = _F1 / d if d != _F0 else _F0
    _, ok_d = _fp16_field(o, ob, d)
    _, ok_m = _fp16_field(o, ob + 2, mn)
    qh = 0
    qs = ob + 8 if five else ob + 4
    for j in range(16):
        a0 = _c_int8((xr[base + j] - mn) * id + _F_HALF)
        a1 = _c_int8((xr[base + 16 + j] - mn) * id + _F_HALF)
        if not five:  # Q4_1: MIN(15, (int8_t)(.)); Q5_1: (uint8_t)(.), the same low byte
            a0 = min(15, a0)
            a1 = min(15, a1)
        o[qs + j] = ((a0 & 0xF) | ((a1 & 0xF) << 4)) & 0xFF
        qh |= ((a0 >> 4) & 1) << j
        qh |= ((a1 >> 4) & 1) << (j + 16)
    if five:
        _put16(o, ob + 4, qh & 0xFFFF)
        _put16(o, ob + 6, (qh >> 16) & 0xFFFF)
    return ok_d and ok_m


# ---------------------------------------------------------------------------------------
# Q4_K / Q5_K (§3.4, §3.6)


@jit_exact
def _make_qkx2_quants(xr, base, w, L, lb, laux, nmax, rmin, rdelta, nstep):
    """Fit x[base:base+32] ~ scale*L + min; writes L[lb:lb+32]; returns (scale, -min)."""
    n = 32
    mn = xr[base]
    mx = xr[base]
    sum_w = w[0]
    sum_x = sum_w * xr[base]
    for i in range(1, n):
        v = xr[base + i]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
        sum_w += w[i]
        sum_x += w[i] * v
    if mn > _F0:
        mn = _F0
    if mx == mn:
        for i in range(n):
            L[lb + i] = 0
        return _F0, -mn
    fnmax = F32(nmax)
    iscale = fnmax / (mx - mn)
    scale = _F1 / iscale
    best_error = _F0
    for i in range(n):
        v = xr[base + i]
        l = min(nmax, max(0, nearest_int(iscale * (v - mn))))
        L[lb + i] = l
        diff = scale * F32(l) + mn - v
        best_error += w[i] * (diff * diff)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F32(step) + fnmax) / (mx - mn)
        sum_l = _F0
        sum_l2 = _F0
        sum_xl = _F0
        for i in range(n):
            v = xr[base + i]
            l = min(nmax, max(0, nearest_int(iscale * (v - mn))))
            laux[i] = l
            wl = w[i] * F32(l)
            sum_l += wl
            sum_l2 += wl * F32(l)
            sum_xl += wl * v
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > _F0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > _F0:
                this_min = _F0
                this_scale = sum_xl / sum_l2
            cur_error = _F0
            for i in range(n):
                diff = this_scale * F32(laux[i]) + this_min - xr[base + i]
                cur_error += w[i] * (diff * diff)
            if cur_error < best_error:
                for i in range(n):
                    L[lb + i] = laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn


# Speed: the trial fits are latency-bound chains of float32 sums when run one sub-block at
# a time. The sums of *different* sub-blocks are independent, so the fits below run all
# sub-blocks of a row side by side as SIMD lanes: arrays (32, N) with lane k = sub-block k,
# loops `for i: for k:` whose inner loop vectorises while each lane keeps ggml's exact
# left-to-right order. Integer rounding uses rint, equal to nearest_int for |v| < 2^22;
# a lane whose values could leave that range is redone with the scalar code above.

_LIMIT = F32(2097152.0)  # 2^21


@jit_exact
def _lanes_guard(iscale, mn, mx, xmin, flat, bad, limit):
    """Flag lanes where iscale*(x - mn) may reach 2^21 (or is NaN): extremes bound it (monotone)."""
    for k in range(iscale.shape[0]):
        a = abs(iscale[k] * (mx[k] - mn[k]))
        b = abs(iscale[k] * (xmin[k] - mn[k]))
        ok = a < limit and b < limit
        bad[k] = bad[k] if ok or flat[k] != _F0 else _F1


@jit_exact
def _qkx2_lanes(xt, wt, nmax, rmin, rdelta, nstep, Lt, laux, st, limit):
    """make_qkx2_quants (§3.4) for N sub-blocks at once.

    xt, wt: (32, N) values and weights, lane k = sub-block k. Writes Lt (32, N) (float L),
    st[0] scale, st[1] the_min (= -min), st[2] 1.0 for lanes the caller must redo exactly.
    """
    n, N = xt.shape
    scale, the_min, bad, flat = st[0], st[1], st[2], st[3]
    mn, mx, xmin, sum_w, sum_x, best = st[4], st[5], st[6], st[7], st[8], st[9]
    b_iscale, b_mn, iscale, sum_l, sum_l2, sum_xl = st[10], st[11], st[12], st[13], st[14], st[15]
    cur, this_scale, this_min, dd = st[16], st[17], st[18], st[19]
    fnmax = F32(nmax)
    for k in range(N):
        v = xt[0, k]
        mn[k] = v
        mx[k] = v
        sum_w[k] = wt[0, k]
        sum_x[k] = wt[0, k] * v
    for i in range(1, n):
        for k in range(N):
            v = xt[i, k]
            w = wt[i, k]
            mn[k] = v if v < mn[k] else mn[k]
            mx[k] = v if v > mx[k] else mx[k]
            sum_w[k] = sum_w[k] + w
            sum_x[k] = sum_x[k] + w * v
    for k in range(N):
        bad[k] = _F0
        xmin[k] = mn[k]
        mn[k] = _F0 if mn[k] > _F0 else mn[k]
        flat[k] = _F1 if mx[k] == mn[k] else _F0
        rng = mx[k] - mn[k] if flat[k] == _F0 else _F1  # flat lanes are settled at the end
        iscale[k] = fnmax / rng
        scale[k] = _F1 / iscale[k]
        best[k] = _F0
        b_iscale[k] = iscale[k]
        b_mn[k] = mn[k]
    _lanes_guard(iscale, mn, mx, xmin, flat, bad, limit)
    for i in range(n):
        for k in range(N):
            v = xt[i, k]
            l = min(fnmax, max(_F0, np.rint(iscale[k] * (v - mn[k]))))
            diff = scale[k] * l + mn[k] - v
            best[k] = best[k] + wt[i, k] * (diff * diff)
    for step in range(nstep + 1):
        top = rmin + rdelta * F32(step) + fnmax
        for k in range(N):
            rng = mx[k] - mn[k] if flat[k] == _F0 else _F1
            iscale[k] = top / rng
            sum_l[k] = _F0
            sum_l2[k] = _F0
            sum_xl[k] = _F0
            cur[k] = _F0
        _lanes_guard(iscale, mn, mx, xmin, flat, bad, limit)
        for i in range(n):
            for k in range(N):
                v = xt[i, k]
                l = min(fnmax, max(_F0, np.rint(iscale[k] * (v - mn[k]))))
                laux[i, k] = l
                wl = wt[i, k] * l
                sum_l[k] = sum_l[k] + wl
                sum_l2[k] = sum_l2[k] + wl * l
                sum_xl[k] = sum_xl[k] + wl * v
        for k in range(N):
            D = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k]
            ts = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / D
            tm = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / D
            clamp = tm > _F0
            this_min[k] = _F0 if clamp else tm
            this_scale[k] = sum_xl[k] / sum_l2[k] if clamp else ts
            dd[k] = D
        for i in range(n):
            for k in range(N):
                diff = this_scale[k] * laux[i, k] + this_min[k] - xt[i, k]
                cur[k] = cur[k] + wt[i, k] * (diff * diff)
        for k in range(N):
            if dd[k] > _F0 and cur[k] < best[k] and flat[k] == _F0:
                best[k] = cur[k]
                scale[k] = this_scale[k]
                b_iscale[k] = iscale[k]
                b_mn[k] = mn[k]
                mn[k] = this_min[k]
    # L of the last accepted trial, recomputed from the iscale and min that produced it
    for i in range(n):
        for k in range(N):
            l = min(fnmax, max(_F0, np.rint(b_iscale[k] * (xt[i, k] - b_mn[k]))))
            Lt[i, k] = _F0 if flat[k] != _F0 else l
    for k in range(N):
        the_min[k] = -mn[k]
        scale[k] = _F0 if flat[k] != _F0 else scale[k]


@jit_exact
def _finish_k4_k5(xr, base, o, ob, five, nmax, Lt, lane0, scales, mins, L):
    """quantize_row_q4_K_ref / q5_K_ref (§3.6) steps 2-6 for the super-block at xr[base:base+256],
    given its 8 sub-block fits in lanes lane0..lane0+7."""
    max_scale = _F0
    max_min = _F0
    for j in range(8):
        if scales[lane0 + j] > max_scale:
            max_scale = scales[lane0 + j]
        if mins[lane0 + j] > max_min:
            max_min = mins[lane0 + j]
    inv_scale = _F63 / max_scale if max_scale > _F0 else _F0
    inv_min = _F63 / max_min if max_min > _F0 else _F0
    for j in range(8):
        # (uint8_t)nearest_int(.) wraps modulo 256 before MIN(63, .)
        ls = min(63, nearest_int(inv_scale * scales[lane0 + j]) & 0xFF)
        lm = min(63, nearest_int(inv_min * mins[lane0 + j]) & 0xFF)
        if j < 4:
            o[ob + 4 + j] = ls
            o[ob + 8 + j] = lm
        else:
            o[ob + 4 + j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            o[ob + 4 + j - 4] |= (ls >> 4) << 6
            o[ob + 4 + j] |= (lm >> 4) << 6
    d, ok_d = _fp16_field(o, ob, max_scale / _F63)
    dmin, ok_m = _fp16_field(o, ob + 2, max_min / _F63)
    # re-quantize against the rounded scales; a sub-block with d_j == 0 keeps its fitted L
    for j in range(8):
        if j < 4:
            sc = o[ob + 4 + j] & 63
            m = o[ob + 8 + j] & 63
        else:
            sc = (o[ob + 12 + j - 4] & 0xF) | ((o[ob + 4 + j - 4] >> 6) << 4)
            m = (o[ob + 12 + j - 4] >> 4) | ((o[ob + 4 + j] >> 6) << 4)
        dj = d * F32(sc)
        sb = base + 32 * j
        if dj == _F0:
            for ii in range(32):
                L[32 * j + ii] = np.int64(Lt[ii, lane0 + j])
            continue
        dmj = dmin * F32(m)
        for ii in range(32):
            L[32 * j + ii] = min(nmax, max(0, nearest_int((xr[sb + ii] + dmj) / dj)))
    if five:
        qh = ob + 16
        qs = ob + 48
        for l in range(32):
            o[qh + l] = 0
        for c in range(4):
            for l in range(32):
                l1 = L[64 * c + l]
                l2 = L[64 * c + 32 + l]
                if l1 > 15:
                    l1 -= 16
                    o[qh + l] |= 1 << (2 * c)
                if l2 > 15:
                    l2 -= 16
                    o[qh + l] |= 1 << (2 * c + 1)
                o[qs + 32 * c + l] = l1 | (l2 << 4)
    else:
        qs = ob + 16
        for c in range(4):
            for l in range(32):
                o[qs + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4)
    return ok_d and ok_m


@jit_exact
def _to_lanes(xr, xt):
    """Row -> (m, N) lanes: xt[i, k] = xr[m*k + i]."""
    m, N = xt.shape
    for k in range(N):
        for i in range(m):
            xt[i, k] = xr[m * k + i]


@jit_exact
def _row_k4_k5(xr, o, five, limit):
    """One row of Q4_K / Q5_K; returns False if an fp16 scale overflowed.

    limit: the guard bound, _LIMIT; tests pass 0 to send every lane through the scalar fit.
    """
    nb = xr.shape[0] // 256
    N = 8 * nb
    nbytes = o.shape[0] // nb
    if five:
        nmax, rmin, nstep = 31, F32(-0.5), 15
    else:
        nmax, rmin, nstep = 15, F32(-1.0), 20
    xt = np.empty((32, N), np.float32)
    wt = np.empty((32, N), np.float32)
    Lt = np.empty((32, N), np.float32)
    laux = np.empty((32, N), np.float32)
    st = np.empty((20, N), np.float32)
    L = np.empty(256, np.int64)
    lone = np.empty(32, np.int64)
    wone = np.empty(32, np.float32)
    _to_lanes(xr, xt)
    av_x = st[0]
    for k in range(N):
        av_x[k] = _F0
    for i in range(32):
        for k in range(N):
            av_x[k] = av_x[k] + xt[i, k] * xt[i, k]
    for k in range(N):
        av_x[k] = np.sqrt(av_x[k] / _F32_32)
    for i in range(32):
        for k in range(N):
            wt[i, k] = av_x[k] + abs(xt[i, k])
    _qkx2_lanes(xt, wt, nmax, rmin, _F0_1, nstep, Lt, laux, st, limit)
    for k in range(N):
        if st[2, k] != _F0:  # exact scalar fit for a lane the guard flagged
            for i in range(32):
                wone[i] = wt[i, k]
            sc, mn = _make_qkx2_quants(xr, 32 * k, wone, lone, 0, L, nmax, rmin, _F0_1, nstep)
            st[0, k] = sc
            st[1, k] = mn
            for i in range(32):
                Lt[i, k] = F32(lone[i])
    ok = True
    for ib in range(nb):
        good = _finish_k4_k5(xr, 256 * ib, o, nbytes * ib, five, nmax, Lt, 8 * ib, st[0], st[1], L)
        ok = ok and good
    return ok


@jit_exact
def _rows_k4_k5(x, xu, out, status, five, limit):
    for r in range(x.shape[0]):
        if _row_nonfinite(xu[r]):
            status[r] = _NONFINITE
        elif not _row_k4_k5(x[r], out[r], five, limit):
            status[r] = _OVERFLOW


# ---------------------------------------------------------------------------------------
# Q6_K (§3.5, §3.7)


@jit_exact
def _qx_sums(xt, iscale, sumlx, suml2):
    """One trial of make_qx_quants with rmse_type 1: w = x*x, l = clamp(rint(iscale*x), -32, 31)."""
    n, N = xt.shape
    for k in range(N):
        sumlx[k] = _F0
        suml2[k] = _F0
    for i in range(n):
        for k in range(N):
            v = xt[i, k]
            l = min(F32(31.0), max(F32(-32.0), np.rint(iscale[k] * v)))
            w = v * v
            sumlx[k] = sumlx[k] + w * v * l
            suml2[k] = suml2[k] + w * l * l


@jit_exact
def _qx_lanes(xt, Lt, st):
    """make_qx_quants(16, 32, x, L, rmse_type=1, NULL) (§3.5) for N sub-blocks of 16 at once.

    xt (16, N), lane k = sub-block k. Writes Lt (16, N) (L = l + 32, or 0 for an all-zero
    sub-block) and st[0] scale. |iscale*x| <= 32.9 here, so rint equals nearest_int.
    """
    n, N = xt.shape
    scale, amax, mx, iscale, sumlx, suml2, best, b_iscale = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    for k in range(N):
        amax[k] = _F0
        mx[k] = _F0
    for i in range(n):
        for k in range(N):
            v = xt[i, k]
            take = abs(v) > amax[k]
            mx[k] = v if take else mx[k]
            amax[k] = abs(v) if take else amax[k]
    for k in range(N):
        mx[k] = mx[k] if amax[k] >= _EPS else _F1  # tiny lanes: L = 0, scale 0 (set below)
        iscale[k] = F32(-32.0) / mx[k]
    _qx_sums(xt, iscale, sumlx, suml2)
    for k in range(N):
        scale[k] = sumlx[k] / suml2[k] if suml2[k] != _F0 else _F0
        best[k] = scale[k] * sumlx[k]
        b_iscale[k] = iscale[k]
    for step in range(-9, 10):
        if step == 0:
            continue
        top = -(_F32_32 + _F0_1 * F32(step))
        for k in range(N):
            iscale[k] = top / mx[k]
        _qx_sums(xt, iscale, sumlx, suml2)
        for k in range(N):
            if suml2[k] > _F0 and sumlx[k] * sumlx[k] > best[k] * suml2[k]:
                b_iscale[k] = iscale[k]
                scale[k] = sumlx[k] / suml2[k]
                best[k] = scale[k] * sumlx[k]
    for i in range(n):
        for k in range(N):
            l = min(F32(31.0), max(F32(-32.0), np.rint(b_iscale[k] * xt[i, k])))
            Lt[i, k] = l + _F32_32 if amax[k] >= _EPS else _F0
    for k in range(N):
        scale[k] = scale[k] if amax[k] >= _EPS else _F0


@jit_exact
def _finish_q6_K(xr, base, o, ob, Lt, lane0, scales, L):
    """quantize_row_q6_K_ref (§3.7) steps 1-6 for the super-block at xr[base:base+256],
    given its 16 sub-block fits in lanes lane0..lane0+15."""
    max_scale = _F0
    max_abs_scale = _F0
    for ib in range(16):
        scale = scales[lane0 + ib]
        if abs(scale) > max_abs_scale:
            max_abs_scale = abs(scale)
            max_scale = scale
    if max_abs_scale < _EPS:
        for k in range(210):
            o[ob + k] = 0
        return True
    iscale = _FM128 / max_scale
    d, ok = _fp16_field(o, ob + 208, _F1 / iscale)
    for ib in range(16):
        # MIN(127, .) stored into int8_t wraps modulo 256
        o[ob + 192 + ib] = min(127, nearest_int(iscale * scales[lane0 + ib])) & 0xFF
    for j in range(16):
        sc = np.int64(o[ob + 192 + j])
        sc = sc - 256 if sc > 127 else sc
        dj = d * F32(sc)
        if dj == _F0:
            for ii in range(16):
                L[16 * j + ii] = np.int64(Lt[ii, lane0 + j])
            continue
        for ii in range(16):
            L[16 * j + ii] = min(31, max(-32, nearest_int(xr[base + 16 * j + ii] / dj))) + 32
    for h in range(2):
        lo = 128 * h
        for l in range(32):
            q1 = L[lo + l]
            q2 = L[lo + 32 + l]
            q3 = L[lo + 64 + l]
            q4 = L[lo + 96 + l]
            o[ob + 64 * h + l] = (q1 & 0xF) | ((q3 & 0xF) << 4)
            o[ob + 64 * h + 32 + l] = (q2 & 0xF) | ((q4 & 0xF) << 4)
            o[ob + 128 + 32 * h + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    return ok


@jit_exact
def _rows_q6_K(x, xu, out, status):
    rows, n = x.shape
    nb = n // 256
    N = 16 * nb
    for r in range(rows):
        if _row_nonfinite(xu[r]):
            status[r] = _NONFINITE
            continue
        xt = np.empty((16, N), np.float32)
        Lt = np.empty((16, N), np.float32)
        st = np.empty((8, N), np.float32)
        L = np.empty(256, np.int64)
        xr = x[r]
        o = out[r]
        _to_lanes(xr, xt)
        _qx_lanes(xt, Lt, st)
        ok = True
        for ib in range(nb):
            good = _finish_q6_K(xr, 256 * ib, o, 210 * ib, Lt, 16 * ib, st[0], L)
            ok = ok and good
        if not ok:
            status[r] = _OVERFLOW


# ---------------------------------------------------------------------------------------
# Q8_K (§3.8): the activation type; here for completeness and as a second twin


@jit_exact
def _block_q8_K(xr, base, o, ob):
    """quantize_row_q8_K (§3.8): float32 d = 1/(-127/max), bsums over 16s (zeros for an all-zero block)."""
    amax = _F0
    mx = _F0
    for j in range(256):
        v = xr[base + j]
        if abs(v) > amax:
            amax = abs(v)
            mx = v
    for k in range(292):
        o[ob + k] = 0
    if amax == _F0:
        return True
    iscale = _FM127 / mx
    for g in range(16):
        s = 0
        for t in range(16):
            q = min(127, nearest_int(iscale * xr[base + 16 * g + t]))
            o[ob + 4 + 16 * g + t] = q & 0xFF
            s += q
        _put16(o, ob + 260 + 2 * g, s & 0xFFFF)
    db = np.int64(F32(_F1 / iscale).view(np.uint32))
    for k in range(4):
        o[ob + k] = (db >> (8 * k)) & 0xFF
    return True


# ---------------------------------------------------------------------------------------
# row kernels: status[r] = 0 ok, 1 non-finite input, 2 fp16 scale overflow. They are serial
# and release the GIL; `quantize` runs slices of rows on a thread pool (see _run_rows)


@jit_exact
def _rows_32(x, xu, out, status, kind):
    """kind: 0 Q8_0, 1 Q4_0, 2 Q5_0, 3 Q4_1, 4 Q5_1."""
    rows, n = x.shape
    nbytes = out.shape[1] // (n // 32)
    for r in range(rows):
        if _row_nonfinite(xu[r]):
            status[r] = _NONFINITE
            continue
        xr = x[r]
        o = out[r]
        ok = True
        for ib in range(n // 32):
            if kind == 0:
                good = _block_q8_0(xr, xu[r], 32 * ib, o, nbytes * ib)
            elif kind <= 2:
                good = _block_x_0(xr, xu[r], 32 * ib, o, nbytes * ib, 15 if kind == 1 else 31, kind == 2)
            else:
                good = _block_x_1(xr, 32 * ib, o, nbytes * ib, 15 if kind == 3 else 31, kind == 4)
            ok = ok and good
        if not ok:
            status[r] = _OVERFLOW


@jit_exact
def _rows_q8_K(x, xu, out, status):
    rows, n = x.shape
    for r in range(rows):
        if _row_nonfinite(xu[r]):
            status[r] = _NONFINITE
            continue
        for ib in range(n // 256):
            _block_q8_K(x[r], 256 * ib, out[r], 292 * ib)


@jit_exact
def _rows_float(x, xu, out16, status, bf16):
    """F16 / BF16 conversion; F16 values beyond 65504 become Inf, which ggml's validation rejects."""
    rows, n = x.shape
    for r in range(rows):
        if _row_nonfinite(xu[r]):
            status[r] = _NONFINITE
            continue
        ok = True
        for i in range(n):
            if bf16:
                out16[r, i] = fp32_to_bf16_bits(x[r, i])
            else:
                h = fp32_to_fp16_bits(x[r, i])
                out16[r, i] = h
                ok = ok and (h & 0x7C00) != 0x7C00
        if not ok:
            status[r] = _OVERFLOW


_KIND_32 = {GGMLType.Q8_0: 0, GGMLType.Q4_0: 1, GGMLType.Q5_0: 2, GGMLType.Q4_1: 3, GGMLType.Q5_1: 4}


_MIN_CHUNK = 1 << 16  # floats per task: below this a thread costs more than it saves


def _run_rows(kernel, threads: int, x, xu, out, status, *args) -> None:
    """kernel(x[a:b], xu[a:b], out[a:b], status[a:b], *args) over row slices on `threads` threads."""
    rows, n = x.shape
    tasks = min(rows, 4 * threads, max(1, rows * n // _MIN_CHUNK))
    if threads == 1 or tasks == 1:
        kernel(x, xu, out, status, *args)
        return
    bounds = np.linspace(0, rows, tasks + 1).astype(np.int64)
    with ThreadPoolExecutor(max_workers=min(threads, tasks)) as pool:
        jobs = [
            pool.submit(kernel, x[a:b], xu[a:b], out[a:b], status[a:b], *args)
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
        for job in jobs:
            job.result()


def quantize(x: np.ndarray, type: GGMLType, threads: int | None = None) -> np.ndarray:
    """float32 rows (rows, n) -> `type` blocks, uint8 (rows, row_nbytes), byte-identical to llama-quantize.

    Raises QuantizationError naming the row for NaN/Inf input or an fp16 scale that overflows
    (callers add the tensor name). `threads`: how many threads run rows (default: the Numba
    thread count, which `tinyllm.jit.set_threads` sets).
    """
    type = GGMLType(type)
    if type not in QUANTIZE_TYPES:
        names = ", ".join(t.name for t in QUANTIZE_TYPES)
        raise QuantizationError(f"cannot quantize to type {type.name}; supported: {names}")
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QuantizationError(f"quantize takes a 2-D float32 array of rows, got shape {x.shape}")
    rows, n = x.shape
    blck = BLOCK_SIZES[type][0]
    if n % blck:
        raise QuantizationError(f"row length {n} is not a multiple of the {type.name} block size {blck}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((rows, row_nbytes(type, n)), np.uint8)
    status = np.zeros(rows, np.int8)
    if rows == 0 or n == 0:
        return out
    xu = x.view(np.uint32)
    if threads is None:
        threads = get_threads()
    elif int(threads) < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    threads = int(threads)
    if type == GGMLType.F32:
        _run_rows(_rows_float_check, threads, x, xu, out, status)
        out[:] = x.view(np.uint8)
    elif type in (GGMLType.F16, GGMLType.BF16):
        _run_rows(_rows_float, threads, x, xu, out.view(np.uint16), status, type == GGMLType.BF16)
    elif type in _KIND_32:
        _run_rows(_rows_32, threads, x, xu, out, status, _KIND_32[type])
    elif type in (GGMLType.Q4_K, GGMLType.Q5_K):
        _run_rows(_rows_k4_k5, threads, x, xu, out, status, type == GGMLType.Q5_K, _LIMIT)
    elif type == GGMLType.Q6_K:
        _run_rows(_rows_q6_K, threads, x, xu, out, status)
    else:
        _run_rows(_rows_q8_K, threads, x, xu, out, status)
    if status.any():
        r = int(np.argmax(status != 0))
        if status[r] == _NONFINITE:
            c = int(np.argmax(~np.isfinite(x[r])))
            raise QuantizationError(
                f"row {r} holds a non-finite value ({x[r, c]} at column {c}); cannot quantize to {type.name}"
            )
        amax = float(np.abs(x[r]).max())
        what = "value" if type == GGMLType.F16 else "block scale"
        raise QuantizationError(
            f"row {r}: {type.name} {what} overflows fp16 (largest |value| in the row is {amax:g}); "
            f"ggml rejects such rows"
        )
    return out


@jit_exact
def _rows_float_check(x, xu, out, status):
    for r in range(xu.shape[0]):
        if _row_nonfinite(xu[r]):
            status[r] = _NONFINITE
