"""Numba per-token ops of the forward pass (architectures.md §2.0): RMSNorm, RoPE, GELU-tanh as
ggml's fp16 table, SiLU, fp16/q8_0 conversions of the KV cache, and attention over the cache.

Every kernel takes its outputs first and allocates nothing on the decode path. The helpers a
kernel calls live in this module too, so Numba's cache sees their edits.

KV cache rows (one cell = one token, heads head-major) come in three storage types, picked by
the cache array's dtype: float32 (f32), uint16 (f16 bits), uint8 (Q8_0 blocks):

    Q8_0 block, 34 bytes per 32 values:  | d: fp16 (2 B) | qs: int8 x 32 |   value j = d * qs[j]
"""

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

from ..jit import FAST_FLAGS, jit_exact, jit_fast
from ..quants.fp16 import f16_row_to_f32, f32_row_to_f16, fp16_bits_to_fp32, fp32_to_fp16_bits, fp32_to_fp16_bits_finite
from ..quants.rounding import fma32

QK8_0 = 32
Q8_0_BYTES = 34
MAX_TASKS = 64  # decode attention: (key chunk, KV head) tasks, each with its own scratch row


@jit_fast
def _q8_0_row_to_f32(dst, src):
    """dst float32 (n,) <- Q8_0 blocks src uint8 (n/32*34,)."""
    nb = dst.shape[0] // QK8_0
    for b in range(nb):
        o = b * Q8_0_BYTES
        d = fp16_bits_to_fp32(np.uint16(src[o]) | (np.uint16(src[o + 1]) << 8))
        for j in range(QK8_0):
            q = (np.int32(src[o + 2 + j]) ^ 0x80) - 0x80  # uint8 byte -> int8 value
            dst[b * QK8_0 + j] = d * np.float32(q)


def load_row(dst, src):
    """dst float32 (d,) <- one cached K or V row in its storage type (compile-time dispatch)."""
    raise NotImplementedError


@overload(load_row, jit_options={"fastmath": set(FAST_FLAGS)})
def _load_row_impl(dst, src):
    if src.dtype == types.float32:

        def impl(dst, src):
            for j in range(dst.shape[0]):
                dst[j] = src[j]

        return impl
    if src.dtype == types.uint16:
        return lambda dst, src: f16_row_to_f32(dst, src)
    if src.dtype == types.uint8:
        return lambda dst, src: _q8_0_row_to_f32(dst, src)
    return None


if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1 (tests of the portable code): the same dispatch in Python

    def load_row(dst, src):  # noqa: F811
        if src.dtype == np.float32:
            for j in range(dst.shape[0]):
                dst[j] = src[j]
        elif src.dtype == np.uint16:
            f16_row_to_f32(dst, src)
        else:
            _q8_0_row_to_f32(dst, src)


@jit_fast
def kv_row_to_f32(dst, src):
    """load_row callable from Python (tests, inspection)."""
    load_row(dst, src)


# -- norms, activations, RoPE -------------------------------------------------------------------


@jit_fast
def _sum_squares(x, t):
    """Σ float64(x[t, j]²), each square rounded to float32 first, as ggml's loop; fastmath may
    reorder the float64 additions (vectorised), which moves the float32 mean made from it by
    an ulp only when the sum lies within ~1e-16 of a rounding boundary."""
    s = 0.0
    for j in range(x.shape[1]):
        v = x[t, j]
        s += np.float64(v * v)
    return s


@jit_exact
def _rms_scale(x, t, eps):
    """float32 1/sqrt(mean(x[t]²) + eps), as ggml computes it (exact arithmetic: no fastmath)."""
    return np.float32(1.0) / np.sqrt(np.float32(_sum_squares(x, t) / x.shape[1]) + np.float32(eps))


@jit_exact
def rms_norm(out, x, w, eps):
    """out (T, n) = x / sqrt(mean(x²) + eps) * w, bit for bit as ggml's RMS_NORM then MUL:
    the sum of squares in float64, then float32 scale = 1/sqrt(mean + eps) and (x * scale) * w
    with no fastmath (an ulp here flips roundings in the activation quantizer that follows)."""
    T, n = x.shape
    for t in range(T):
        scale = _rms_scale(x, t, eps)
        for j in range(n):
            out[t, j] = (x[t, j] * scale) * w[j]


@jit_exact
def add_rms_norm(x, a, w, eps):
    """x (T, n) += rms_norm(a) * w: Gemma's post-attention / post-FFN norm and residual add."""
    T, n = x.shape
    for t in range(T):
        scale = _rms_scale(a, t, eps)
        for j in range(n):
            x[t, j] += (a[t, j] * scale) * w[j]


def gelu_fp16_table() -> np.ndarray:
    """float32 (65536,): fp16(gelu(fp16 value of index)), as ggml's ggml_table_gelu_f16 (§2.0)."""
    f = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(all="ignore"):
        # ggml_gelu_f32 in float32: 0.5f*x*(1.0f + tanhf(SQRT_2_OVER_PI*x*(1.0f + GELU_COEF_A*x*x)))
        inner = np.float32(0.7978845608028654) * f * (np.float32(1.0) + np.float32(0.044715) * f * f)
        y = np.float32(0.5) * f * (np.float32(1.0) + np.tanh(inner))
    return y.astype(np.float16).astype(np.float32)


@jit_fast
def geglu(out, gate, up, table):
    """out (T, F) = gelu(gate) * up with ggml's fp16 table: x <= -10 -> 0, x >= 10 -> x."""
    T, F = gate.shape
    for t in range(T):
        g = gate[t]
        u = up[t]
        o = out[t]
        for j in range(F):
            x = g[j]
            xc = min(max(x, np.float32(-10.0)), np.float32(10.0))  # keep the index in range
            y = table[fp32_to_fp16_bits_finite(xc)]
            y = x if x >= 10.0 else y
            y = np.float32(0.0) if x <= -10.0 else y
            o[j] = y * u[j]


@jit_fast
def swiglu(out, gate, up):
    """out (T, F) = silu(gate) * up, silu(x) = x / (1 + exp(-x))."""
    T, F = gate.shape
    for t in range(T):
        for j in range(F):
            x = gate[t, j]
            out[t, j] = (x / (np.float32(1.0) + np.exp(-x))) * up[t, j]


_cosf, _sinf = np.cos, np.sin  # float32: compiled, these call libm's cosf/sinf, as ggml does

if numba.config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: NumPy's float32 cos/sin differ from libm's in the last bit
    import ctypes
    import ctypes.util

    _libm_name = ctypes.util.find_library("m")
    if _libm_name:
        _libm = ctypes.CDLL(_libm_name)
        _libm.cosf.restype = _libm.sinf.restype = ctypes.c_float
        _libm.cosf.argtypes = _libm.sinf.argtypes = [ctypes.c_float]

        def _cosf(x):
            return np.float32(_libm.cosf(x))

        def _sinf(x):
            return np.float32(_libm.sinf(x))


@jit_exact
def rope_table(cos, sin, pos0, base, freq_scale, factors):
    """cos/sin (T, n_rot/2) for positions pos0..pos0+T-1, built as ggml_rope_cache_init does:
    theta starts at the position and is multiplied by base^(-2/n_rot) in float32 per pair;
    `factors` (n_rot/2,) divides theta (Llama 3 rope_freqs; pass ones when absent)."""
    T, half = cos.shape
    theta_scale = np.float32(base) ** np.float32(-1.0 / half)
    for t in range(T):
        theta = np.float32(pos0 + t)
        for i in range(half):
            th = np.float32(freq_scale) * (theta / factors[i])
            cos[t, i] = _cosf(th)
            sin[t, i] = _sinf(th)
            theta = theta * theta_scale


@jit_exact
def head_norm_rope(x, w, use_norm, eps, cos, sin, neox, scale):
    """In place on x (T, n_head, d): optional RMSNorm over each head times w (Gemma's q/k norm),
    then RoPE on the first n_rot = 2·cos.shape[1] dims, then x *= scale.
    neox rotates (x[i], x[i + n_rot/2]); otherwise adjacent pairs (x[2i], x[2i+1]) (§2.2).
    Bit for bit as ggml: the norm as rms_norm computes it, and each rotated pair as GCC compiles
    ggml's `x0*cos - x1*sin`, `x0*sin + x1*cos`: x1's product rounded, x0's fused into it."""
    T, nh, d = x.shape
    half = cos.shape[1]
    sc = np.float32(scale)
    for t in range(T):
        c = cos[t]
        s_ = sin[t]
        for h in range(nh):
            r = x[t, h]
            if use_norm:
                inv = _rms_scale(x[t], h, eps)
                for j in range(d):
                    r[j] = (r[j] * inv) * w[j]
            if neox:
                for i in range(half):
                    a = r[i]
                    b = r[i + half]
                    r[i] = fma32(a, c[i], -(b * s_[i])) * sc
                    r[i + half] = fma32(a, s_[i], b * c[i]) * sc
            else:
                for i in range(half):
                    a = r[2 * i]
                    b = r[2 * i + 1]
                    r[2 * i] = fma32(a, c[i], -(b * s_[i])) * sc
                    r[2 * i + 1] = fma32(a, s_[i], b * c[i]) * sc
            if sc != 1.0:
                for j in range(2 * half, d):  # dims past n_rot are only scaled
                    r[j] *= sc


# -- KV cache writes ------------------------------------------------------------------------------


@jit_fast
def store_f32(cache, x, pos0):
    """cache (n_cells, Hkv, d) float32 <- x (T, Hkv, d) at cells (pos0 + t) % n_cells."""
    n_cells = cache.shape[0]
    for t in range(x.shape[0]):
        c = (pos0 + t) % n_cells
        for g in range(x.shape[1]):
            for j in range(x.shape[2]):
                cache[c, g, j] = x[t, g, j]


@jit_exact
def store_f16(cache, x, pos0):
    """cache (n_cells, Hkv, d) uint16 fp16 bits <- x (T, Hkv, d), rounded to nearest even."""
    n_cells = cache.shape[0]
    for t in range(x.shape[0]):
        c = (pos0 + t) % n_cells
        for g in range(x.shape[1]):
            f32_row_to_f16(cache[c, g], x[t, g])


@jit_exact
def store_q8_0(cache, qs, d, pos0):
    """cache (n_cells, Hkv, d/32*34) uint8 <- Q8_0 blocks built from the activation quantizer's
    split output: qs int8 (T, Hkv*d) and d float32 (T, Hkv*d/32), the fp16-rounded scales."""
    n_cells = cache.shape[0]
    T = qs.shape[0]
    Hkv = cache.shape[1]
    nb = cache.shape[2] // Q8_0_BYTES
    for t in range(T):
        c = (pos0 + t) % n_cells
        for g in range(Hkv):
            row = cache[c, g]
            for b in range(nb):
                h = fp32_to_fp16_bits(d[t, g * nb + b])
                o = b * Q8_0_BYTES
                row[o] = np.uint8(h & 0xFF)
                row[o + 1] = np.uint8(h >> 8)
                base = (g * nb + b) * QK8_0
                for j in range(QK8_0):
                    row[o + 2 + j] = np.uint8(np.int32(qs[t, base + j]) & 0xFF)


# -- attention over the cache ---------------------------------------------------------------------
#
# Both kernels turn the cached rows they need into float32 tiles of rows (K and V alike) and
# multiply tiles: S = Q·Kᵀ with _gemm_nt (4x2 register blocks over the head dim) and O += P·V
# with _gemm_nn_acc (four keys per pass over an output row), so inner loops run on FMAs.

KEY_TILE = 128  # keys per tile: a K and a V tile of d=256 take 128 KiB each


@jit_fast
def _gemm_nt(C, A, B, m, n, K):
    """C[:m, :n] = A[:m, :K] @ B[:n, :K].T in tiles of 4 rows of A by 2 rows of B."""
    m4 = m - m % 4
    n2 = n - n % 2
    for a in range(0, m4, 4):
        a0, a1, a2, a3 = A[a], A[a + 1], A[a + 2], A[a + 3]
        for b in range(0, n2, 2):
            b0, b1 = B[b], B[b + 1]
            s00 = s01 = s10 = s11 = s20 = s21 = s30 = s31 = np.float32(0.0)
            for j in range(K):
                x0 = b0[j]
                x1 = b1[j]
                s00 += a0[j] * x0
                s01 += a0[j] * x1
                s10 += a1[j] * x0
                s11 += a1[j] * x1
                s20 += a2[j] * x0
                s21 += a2[j] * x1
                s30 += a3[j] * x0
                s31 += a3[j] * x1
            C[a, b], C[a, b + 1] = s00, s01
            C[a + 1, b], C[a + 1, b + 1] = s10, s11
            C[a + 2, b], C[a + 2, b + 1] = s20, s21
            C[a + 3, b], C[a + 3, b + 1] = s30, s31
        if n2 < n:
            b0 = B[n - 1]
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for j in range(K):
                x0 = b0[j]
                s0 += a0[j] * x0
                s1 += a1[j] * x0
                s2 += a2[j] * x0
                s3 += a3[j] * x0
            C[a, n - 1], C[a + 1, n - 1], C[a + 2, n - 1], C[a + 3, n - 1] = s0, s1, s2, s3
    for a in range(m4, m):
        a0 = A[a]
        for b in range(n):
            b0 = B[b]
            s0 = np.float32(0.0)
            for j in range(K):
                s0 += a0[j] * b0[j]
            C[a, b] = s0


@jit_fast
def _gemm_nn_acc(C, A, B, m, n, K):
    """C[:m, :n] += A[:m, :K] @ B[:K, :n], four rows of B (keys) per pass over a row of C."""
    K4 = K - K % 4
    for k in range(0, K4, 4):
        b0, b1, b2, b3 = B[k], B[k + 1], B[k + 2], B[k + 3]
        for a in range(m):
            c = C[a]
            p0, p1, p2, p3 = A[a, k], A[a, k + 1], A[a, k + 2], A[a, k + 3]
            for j in range(n):
                c[j] += p0 * b0[j] + p1 * b1[j] + p2 * b2[j] + p3 * b3[j]
    for k in range(K4, K):
        b0 = B[k]
        for a in range(m):
            c = C[a]
            p0 = A[a, k]
            for j in range(n):
                c[j] += p0 * b0[j]


@jit_fast
def _load_tiles(kt, vt, kc, vc, g, p0, nk, n_cells):
    """kt[i], vt[i] = the K and V rows of KV head g at position p0+i as float32, for i < nk."""
    for i in range(nk):
        c = (p0 + i) % n_cells
        load_row(kt[i], kc[c, g])
        load_row(vt[i], vc[c, g])


@jit_fast
def _decode_range(q, kc, vc, g, group, p_lo, p_hi, ks, po, ml, qa, kt, vt, s):
    """Keys at positions p_lo..p_hi-1 of KV head g against the group's query rows.

    Returns in po (group, d) = sum_i exp(s_i - m) v_i and in ml (group, 2) = (m, sum_i exp(s_i - m)),
    merging tiles of KEY_TILE keys with a running max (online softmax)."""
    d = q.shape[1]
    n_cells = kc.shape[0]
    for hh in range(group):
        for j in range(d):
            qa[hh, j] = q[g * group + hh, j] * ks
            po[hh, j] = 0.0
        ml[hh, 0] = -np.inf
        ml[hh, 1] = 0.0
    for t0 in range(p_lo, p_hi, KEY_TILE):
        nk = min(KEY_TILE, p_hi - t0)
        _load_tiles(kt, vt, kc, vc, g, t0, nk, n_cells)
        _gemm_nt(s, qa, kt, group, nk, d)  # s (group, nk) = scores
        for hh in range(group):
            m = ml[hh, 0]
            for i in range(nk):
                m = max(m, s[hh, i])
            f = np.exp(ml[hh, 0] - m)  # rescale what earlier tiles summed
            total = ml[hh, 1] * f
            for i in range(nk):
                e = np.exp(s[hh, i] - m)
                s[hh, i] = e
                total += e
            ml[hh, 0] = m
            ml[hh, 1] = total
            if f != 1.0:
                for j in range(d):
                    po[hh, j] *= f
        _gemm_nn_acc(po, s, vt, group, d, nk)  # po (group, d) += p (group, nk) @ V (nk, d)


@jit_fast
def _decode_tile_scratch(group, d):
    qa = np.empty((group, d), np.float32)
    kt = np.empty((KEY_TILE, d), np.float32)
    vt = np.empty((KEY_TILE, d), np.float32)
    s = np.empty((group, KEY_TILE), np.float32)
    return qa, kt, vt, s


@jit_fast
def _merge_chunks(out, part_o, part_ml, n_chunk, Hkv, group):
    """out (H, d) from per-(chunk, KV head) partial sums: rescale each by exp(m_c - max m)."""
    d = out.shape[1]
    for g in range(Hkv):
        for hh in range(group):
            m = np.float32(-np.inf)
            for c in range(n_chunk):
                m = max(m, part_ml[c * Hkv + g, hh, 0])
            o = out[g * group + hh]
            for j in range(d):
                o[j] = 0.0
            total = np.float32(0.0)
            for c in range(n_chunk):
                f = np.exp(part_ml[c * Hkv + g, hh, 0] - m)
                total += f * part_ml[c * Hkv + g, hh, 1]
                po = part_o[c * Hkv + g, hh]
                for j in range(d):
                    o[j] += f * po[j]
            inv = np.float32(1.0) / total
            for j in range(d):
                o[j] *= inv


@jit_fast(parallel=True)
def attn_decode(out, q, kc, vc, pos, window, kq_scale, part_o, part_ml, n_chunk):
    """One query per head against the cached keys, split into n_chunk ranges of keys per KV head
    that run in parallel, each with its own softmax max and sum, merged at the end
    (flash-decoding).

    out, q (H, d); kc, vc (n_cells, Hkv, row) in any storage type; the query sits at position
    `pos`, key p lives in cell p % n_cells and is visible for max(0, pos-window+1) <= p <= pos
    (window 0 = all). Head h uses KV head h // (H/Hkv). Scratch part_o (>= n_chunk*Hkv, H/Hkv, d),
    part_ml (>= n_chunk*Hkv, H/Hkv, 2).
    """
    H, d = q.shape
    Hkv = kc.shape[1]
    group = H // Hkv
    ks = np.float32(kq_scale)
    lo = 0 if window == 0 else max(0, pos - window + 1)
    n = pos - lo + 1
    per = (n + n_chunk - 1) // n_chunk
    for task in prange(n_chunk * Hkv):
        c = task // Hkv
        g = task % Hkv
        p_lo = lo + c * per
        p_hi = min(pos + 1, p_lo + per)
        qa, kt, vt, s = _decode_tile_scratch(group, d)
        if p_hi > p_lo:
            _decode_range(q, kc, vc, g, group, p_lo, p_hi, ks, part_o[task], part_ml[task], qa, kt, vt, s)
        else:
            for hh in range(group):
                part_ml[task, hh, 0] = -np.inf
                part_ml[task, hh, 1] = 0.0
                for j in range(d):
                    part_o[task, hh, j] = 0.0
    _merge_chunks(out, part_o, part_ml, n_chunk, Hkv, group)


@jit_fast
def attn_decode_serial(out, q, kc, vc, pos, window, kq_scale, part_o, part_ml):
    """attn_decode on one thread, for short ranges where starting threads costs more than it saves."""
    H, d = q.shape
    Hkv = kc.shape[1]
    group = H // Hkv
    ks = np.float32(kq_scale)
    lo = 0 if window == 0 else max(0, pos - window + 1)
    qa, kt, vt, s = _decode_tile_scratch(group, d)
    for g in range(Hkv):
        _decode_range(q, kc, vc, g, group, lo, pos + 1, ks, part_o[g], part_ml[g], qa, kt, vt, s)
    _merge_chunks(out, part_o, part_ml, 1, Hkv, group)


QUERY_BLOCK = 32  # prefill: queries per task


@jit_fast(parallel=True)
def attn_prefill(out, q, kc, vc, pos0, window, kq_scale):
    """T queries at positions pos0..pos0+T-1 (already written into the cache) against the cache,
    causal (+ sliding window). Parallel over (block of QUERY_BLOCK queries, KV head): the block's
    visible keys become float32 tiles once, then S = Q·Kᵀ, masked softmax, O = P·V by tiles.

    out, q (T, H, d); kc, vc (n_cells, Hkv, row).
    """
    T, H, d = q.shape
    n_cells, Hkv = kc.shape[0], kc.shape[1]
    group = H // Hkv
    ks = np.float32(kq_scale)
    n_qb = (T + QUERY_BLOCK - 1) // QUERY_BLOCK
    for task in prange(n_qb * Hkv):
        # causal blocks cost in proportion to their index: dealt 0, n-1, 1, n-2, ... so that
        # the threads' equal, contiguous shares of the tasks cost alike
        i = task // Hkv
        b = i // 2 if i % 2 == 0 else n_qb - 1 - i // 2
        g = task % Hkv
        t0 = b * QUERY_BLOCK
        nq = min(T, t0 + QUERY_BLOCK) - t0
        p_first = pos0 + t0
        lo = 0 if window == 0 else max(0, p_first - window + 1)
        nk = p_first + nq - lo
        rows = nq * group  # row r = query tq * group + head hh
        qa = np.empty((rows, d), np.float32)
        for tq in range(nq):
            for hh in range(group):
                for j in range(d):
                    qa[tq * group + hh, j] = q[t0 + tq, g * group + hh, j] * ks
        kt = np.empty((nk, d), np.float32)
        vt = np.empty((nk, d), np.float32)
        _load_tiles(kt, vt, kc, vc, g, lo, nk, n_cells)
        s = np.empty((rows, nk), np.float32)
        _gemm_nt(s, qa, kt, rows, nk, d)
        for r in range(rows):
            pq = p_first + r // group
            k_lo = 0 if window == 0 else max(0, pq - window + 1 - lo)
            k_hi = pq - lo + 1  # keys k_lo..k_hi-1 are visible
            m = np.float32(-np.inf)
            for i in range(k_lo, k_hi):
                m = max(m, s[r, i])
            total = np.float32(0.0)
            for i in range(nk):
                if k_lo <= i < k_hi:
                    e = np.exp(s[r, i] - m)
                    s[r, i] = e
                    total += e
                else:
                    s[r, i] = 0.0
            inv = np.float32(1.0) / total
            for i in range(k_lo, k_hi):
                s[r, i] *= inv
        o = np.zeros((rows, d), np.float32)
        _gemm_nn_acc(o, s, vt, rows, d, nk)
        for tq in range(nq):
            for hh in range(group):
                for j in range(d):
                    out[t0 + tq, g * group + hh, j] = o[tq * group + hh, j]
