"""IQ4_NL: 32 weights, 18 bytes (kquants-family.md §1.3, §2.1, §3.6, §4).

    +-----+------------------------+
    | d   | qs[16]                 |      y = d * kvalues_iq4nl[i]
    | f16 | lo: i[j]  hi: i[j+16]  |      (16 non-linear int8 values, iq_grids.KVALUES)
    +-----+------------------------+

The quantizer is ggml's quantize_row_iq4_nl_impl as llama-quantize runs it (ntry = 7,
optional imatrix); IQ4_XS (iq4_xs.py) is the same code over 256-weight super-blocks, so
the impl, its twin and the portable dot helper here take the super-block size.

Kernels: IQ4_NL weights x Q8_0 activations. Tiles hold the 4-bit indices `q4` as nibble
pairs in natural order (ntile, n_in/2, R) and `d`. The portable kernel looks the values up;
the AVX2 kernel splits value + 128 into two 4-bit digits (simd.unpack_iq4, vpshufb) and
multiplies each like Q4_0's quants; the +128 is subtracted through the activation block sums.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import (
    F32, NONFINITE, OVERFLOW, as_rows, first_absmax, fp16_field, out_rows, put16, quiet, read_fp16, seq_sum,
    validate_fp16,
)
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .iq_grids import KVALUES
from .q8_0 import dot_sym32_ref
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .simd import mac_u8_8, row_iq4_nl, set_u8_8, unpack_iq4
from .spec import TypeSpec
from .tiles import (
    avx2_chunks, chunking, decode_chunks, fp16_bits, h2f_block, h2f_tile, nibble_pairs, nibbles_32, store,
    store_tile,
)
from .types import QK8_0, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
KV_F32 = KVALUES.astype(F32)  # the grid as the C float arithmetic sees it (exact)
KV_I32 = KVALUES.astype(np.int32)
NTRY = 7  # llama-quantize's trial count (quantize_iq4_nl / quantize_iq4_xs)
_F0, _F1, _F32_32, _FM127, _EPS = F32(0.0), F32(1.0), F32(32.0), F32(-127.0), F32(1e-15)


# -- reference (NumPy) ------------------------------------------------------------------------


def dequantize(b: np.ndarray) -> np.ndarray:
    return b["d"].astype(F32)[:, None] * KV_F32[nibbles_32(b["qs"])]


def best_index_np(x: np.ndarray) -> np.ndarray:
    """best_index_int8(16, kvalues_iq4nl, x) elementwise: the binary search ends with mu = the
    number of values <= x; then the nearer neighbour by f32 differences, ties to the upper.
    (NaN gives 15, as the C does.)"""
    x = np.asarray(x, F32)
    mu = np.clip(np.searchsorted(KV_F32, x, side="right"), 1, 15)
    lower = (x - KV_F32[mu - 1]) < (KV_F32[mu] - x)
    i = np.where(lower, mu - 1, mu)
    return np.where(x <= KV_F32[0], 0, np.where(x >= KV_F32[15], 15, i)).astype(np.uint8)


def _sums_ref(xs, weight, id):
    """One trial of §3.6 for all sub-blocks (n, 32) at once: indices, Σ w*q*x, Σ w*q*q (sequential)."""
    L = best_index_np(id[:, None] * xs)
    q = KV_F32[L]
    wq = weight * q
    return L, seq_sum(wq * xs), seq_sum(wq * q)


@quiet
def iq4_impl_ref(xb: np.ndarray, qw):
    """quantize_row_iq4_nl_impl (§3.6, ntry = 7) over super-blocks xb (n, sbs), sbs = 32 (IQ4_NL)
    or 256 (IQ4_XS), imatrix weights qw (n, sbs) or None.
    -> d (n,) float32 for the fp16 field, L uint8 (n, sbs) indices, ls (n, sbs/32) 6-bit scales (IQ4_XS)."""
    n, sbs = xb.shape
    nsub = sbs // 32
    sigma2 = seq_sum(xb * xb) * F32(2.0 / sbs)
    xs = xb.reshape(n * nsub, 32)
    if qw is None:
        weight = xs * xs
    else:
        s2 = np.repeat(sigma2, nsub)[:, None]
        weight = qw.reshape(n * nsub, 32) * np.sqrt(s2 + xs * xs)
    amax, mx = first_absmax(xs)
    skip = amax < _EPS
    d = (-mx) / _FM127
    _, sumqx, sumq2 = _sums_ref(xs, weight, _F1 / d)
    d = np.where(sumq2 > 0, sumqx / sumq2, _F0).astype(F32)
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        _, sumqx, sumq2 = _sums_ref(xs, weight, F32(itry - 127) / mx)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, sumqx / sumq2, d).astype(F32)
        best = np.where(better, d * sumqx, best).astype(F32)
    scales = np.where(skip, _F0, d).astype(F32).reshape(n, nsub)
    if nsub == 1:  # IQ4_NL: re-quantize against the float32 scale
        s = scales[:, 0]
        id = np.where(s != 0, _F1 / s, _F0).astype(F32)
        return s, best_index_np(id[:, None] * xb), None
    _, max_scale = first_absmax(scales)  # strict |d| > amax_scale from 0, sign kept
    d = -max_scale / _F32_32  # an all-zero super-block gives -0.0 (fp16 0x8000)
    id = np.where(d != 0, _F1 / d, _F0).astype(F32)
    l = np.clip(nearest_int_np(id[:, None] * scales), -32, 31)
    dl = d[:, None] * l.astype(F32)
    idl = np.where(dl != 0, _F1 / dl, _F0).astype(F32).reshape(-1)
    L = best_index_np(idl[:, None] * xs).reshape(n, sbs)
    return d, L, (l + 32).astype(np.uint8)


def pack_q4_ref(L: np.ndarray) -> np.ndarray:
    """Indices (n, 32k) -> qs bytes (n, 16k): per 32-block, i[j] | i[j+16] << 4."""
    q = L.reshape(L.shape[0], -1, 2, 16)
    return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(L.shape[0], -1)


def imatrix_blocks(qw, rows: int, n: int, sbs: int):
    """The column weights (n,) as one row of weights per super-block, the same for every row."""
    if qw is None:
        return None
    qw = np.asarray(qw, F32).reshape(1, n // sbs, sbs)
    return np.broadcast_to(qw, (rows, n // sbs, sbs)).reshape(-1, sbs)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq4_nl: quantize_row_iq4_nl_impl(32, 32, ..., ntry = 7) per block."""
    x = as_rows(x, GGMLType.IQ4_NL)
    xb = x.reshape(-1, QK8_0)
    d, L, _ = iq4_impl_ref(xb, imatrix_blocks(qw, x.shape[0], x.shape[1], QK8_0))
    b = np.zeros(xb.shape[0], BLOCK)
    b["d"] = fp32_to_fp16(d)
    b["qs"] = pack_q4_ref(L)
    validate_fp16(b["d"], x, GGMLType.IQ4_NL, "block scale d")
    return out_rows(b, x.shape[0])


def unpack_ref(raw: np.ndarray):
    """-> d f32 (n_out, nb), q int grid values (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 18)
    return fp16_to_fp32(b[:, :, 0:2]), KV_I32[nibbles_32(b[:, :, 2:18])]


def dot_ref(raw, qs, d, ys):
    return dot_sym32_ref(*unpack_ref(raw), qs, d)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact(inline="always")
def best_index(x):
    """best_index_int8(16, kvalues_iq4nl, x). For values[0] < x < values[15] the C binary search
    ends with mu = the number of values <= x, counted here without branches so that a loop of
    these vectorises; NaN gives 15 as in the C."""
    mu = np.int32(1)
    for i in range(1, 15):
        mu += np.int32(x >= KV_F32[i])
    r = mu - np.int32(x - KV_F32[mu - 1] < KV_F32[mu] - x)
    r = np.int32(0) if x <= KV_F32[0] else r
    return np.int32(15) if x >= KV_F32[15] or x != x else r


@jit_exact(inline="always")
def _trial(xr, b0, weight, id, Lt):
    """Σ w*q*x and Σ w*q*q for the indices best_index(id*x) of the sub-block at xr[b0:b0+32].
    (The C also keeps the first trial's indices, but with ntry > 0 they are always replaced.)"""
    for j in range(32):  # vectorises; the float sums below stay sequential
        Lt[j] = best_index(id * xr[b0 + j])
    sumqx = _F0
    sumq2 = _F0
    for j in range(32):
        q = KV_F32[Lt[j]]
        w = weight[j]
        sumqx += w * q * xr[b0 + j]
        sumq2 += w * q * q
    return sumqx, sumq2


@jit_exact
def iq4_block(xr, base, qw, sbs, o, ob, L, weight, scales, Lt):
    """quantize_row_iq4_nl_impl(sbs, 32, ..., ntry = 7) (§3.6) for the super-block at
    xr[base:base+sbs] (sbs 32: IQ4_NL, 256: IQ4_XS), written to the block at o[ob:];
    qw: imatrix column weights of the row (empty without); L (sbs), Lt (32) int32, weight (32),
    scales (sbs/32) float32: scratch. Returns whether fp16 d is finite."""
    nsub = sbs // 32
    sigma2 = _F0
    for j in range(sbs):
        sigma2 += xr[base + j] * xr[base + j]
    sigma2 = sigma2 * F32(2.0 / sbs)
    max_scale = _F0
    amax_scale = _F0
    for ib in range(nsub):
        b0 = base + 32 * ib
        if qw.shape[0] > 0:
            for j in range(32):
                v = xr[b0 + j]
                weight[j] = qw[b0 + j] * np.sqrt(sigma2 + v * v)
        else:
            for j in range(32):
                weight[j] = xr[b0 + j] * xr[b0 + j]
        amax = _F0
        mx = _F0
        for j in range(32):
            ax = abs(xr[b0 + j])
            if ax > amax:
                amax = ax
                mx = xr[b0 + j]
        if amax < _EPS:
            scales[ib] = _F0
            continue
        d = -mx / _FM127
        sumqx, sumq2 = _trial(xr, b0, weight, _F1 / d, Lt)
        d = sumqx / sumq2 if sumq2 > _F0 else _F0
        best = d * sumqx
        for itry in range(-NTRY, NTRY + 1):
            sumqx, sumq2 = _trial(xr, b0, weight, F32(itry - 127) / mx, Lt)
            if sumq2 > _F0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        scales[ib] = d
        if abs(d) > amax_scale:
            amax_scale = abs(d)
            max_scale = d
    if nsub > 1:  # IQ4_XS: 6-bit sub-block scales of d = -max_scale/32
        d = -max_scale / _F32_32
        _, ok = fp16_field(o, ob, d)
        id = _F1 / d if d != _F0 else _F0
        sh = 0
        for ib in range(nsub):
            l = min(31, max(-32, nearest_int(id * scales[ib])))
            dl = d * F32(l)
            idl = _F1 / dl if dl != _F0 else _F0
            for j in range(32):
                L[32 * ib + j] = best_index(idl * xr[base + 32 * ib + j])
            l += 32
            if ib % 2 == 0:
                o[ob + 4 + ib // 2] = l & 0xF
            else:
                o[ob + 4 + ib // 2] |= (l & 0xF) << 4
            sh |= (l >> 4) << (2 * ib)
        put16(o, ob + 2, sh)
        qs = ob + 8
    else:  # IQ4_NL: the float32 scale itself, indices re-chosen against it
        _, ok = fp16_field(o, ob, scales[0])
        id = _F1 / scales[0] if scales[0] != _F0 else _F0
        for j in range(32):
            L[j] = best_index(id * xr[base + j])
        qs = ob + 2
    for i in range(nsub):
        for j in range(16):
            o[qs + 16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4)
    return ok


@jit_exact
def quantize_rows_iq4(x, xu, out, status, qw, sbs):
    L = np.empty(sbs, np.int32)
    Lt = np.empty(32, np.int32)
    weight = np.empty(32, np.float32)
    scales = np.empty(sbs // 32, np.float32)
    nbytes = 18 if sbs == 32 else 136
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        for ib in range(x.shape[1] // sbs):
            good = iq4_block(x[r], sbs * ib, qw, sbs, out[r], nbytes * ib, L, weight, scales, Lt)
            ok = ok and good
        if not ok:
            status[r] = OVERFLOW


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_iq4(x, xu, out, status, qw, 32)


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        r = ids[k]
        for b in range(out.shape[1] // 32):
            d = read_fp16(wq[r], b * 18)
            for j in range(16):
                q = np.int32(wq[r, b * 18 + 2 + j])
                out[k, b * 32 + j] = F32(d * KV_F32[q & 15])
                out[k, b * 32 + 16 + j] = F32(d * KV_F32[q >> 4])


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    nat = nibbles_32(b[:, :, 2:18]).reshape(b.shape[0], -1)
    return {"q4": nibble_pairs(nat), "d": fp16_bits(b[:, :, 0:2])}


@jit_fast
def sum8_kv(isub, w0, w1, w2, w3, yq, t, e):
    """isub[r] += Σ_{k<8} kvalues[index of element e+k of row r] * yq[t, e+k] (4 bytes of nibble pairs)."""
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
            KV_I32[x0 & 15] * y0
            + KV_I32[x0 >> 4] * y1
            + KV_I32[x1 & 15] * y2
            + KV_I32[x1 >> 4] * y3
            + KV_I32[x2 & 15] * y4
            + KV_I32[x2 >> 4] * y5
            + KV_I32[x3 & 15] * y6
            + KV_I32[x3 >> 4] * y7
        )


@jit_fast
def _tile(out, t, tl, q4, dt, yq, yd, isub, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isub[:] = 0
        for g in range(4 * b, 4 * b + 4):
            p = 4 * g
            sum8_kv(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], yq, t, 8 * g)
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += F32(isub[r]) * (db[r] * dy)
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q4, d, yq, yd, ys):
    """IQ4_NL weights x Q8_0 activations (ys unused: the values are signed)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            for t in range(T):
                _tile(out, t, tl, q4, dt, yq, yd, isub, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, d, yq, yd, ys):
    """IQ4_NL weights x Q8_0 activations: Σ kv*y = 16 Σ hi*y + Σ lo*y - 128 Σ y, where
    kv + 128 = 16 hi + lo (simd.IQ4_DIGITS): the 16 pairs of a block as two Q4-like halves."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    R2 = 2 * R
    if T == 1:  # decode: a whole tile row per call, looked up in registers
        df = d.reshape(-1)
        per, nchunk, fbuf = decode_chunks(ntile, R)
        for c in prange(nchunk):
            fr = fbuf[c]
            for tl in range(c * per, min(ntile, c * per + per)):
                row_iq4_nl(fr, q4f, tl * npair * R, q4f, 0, df, tl * nb * R, df, y2[0], yd[0], ys[0], nb)
                store_tile(out, tl, fbuf[c:c + 1])
        return
    split = 16 * R2  # the low digits follow the 16 pairs of high digits
    per, nchunk, qb, isub, dbuf, facc = avx2_chunks(ntile, T, R, 32)
    for c in prange(nchunk):
        buf = qb[c]
        hi = isub[c, 0]
        lo = isub[c, 1]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(4):
                    for rc in range(0, R, 16):
                        unpack_iq4(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 16 * b + 4 * g) * R + rc, R, split)
                db = h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    set_u8_8(hi, 0, buf, 0, R2, y2[t], 16 * b)  # all R = TILE rows
                    mac_u8_8(hi, 0, buf, 8 * R2, R2, y2[t], 16 * b + 8)
                    set_u8_8(lo, 0, buf, split, R2, y2[t], 16 * b)
                    mac_u8_8(lo, 0, buf, split + 8 * R2, R2, y2[t], 16 * b + 8)
                    off = np.int32(128 * ys[t, b])
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += F32(np.int32(16 * hi[r] + lo[r] - off)) * (db[r] * dy)
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.IQ4_NL,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_0,
    dot_ref=dot_ref,
    arrays=("q4", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
    # test-quantize-fns gives IQ4_NL the default MAX_QUANTIZATION_TOTAL_ERROR
    max_quantization_error=0.002,
)
