"""Q3_K: 256 weights = 16 sub-blocks of 16, 110 bytes (kquants-family.md §1.2, §2.1, §3.3, §3.4, §4).

    +-------------------------+-------------------+-------------------+-----+
    | hmask[32]               | qs[64]            | scales[12]        | d   |
    | bit e/32 of hmask[e%32] | low 2 bits, as    | sixteen 6-bit u_j | f16 |
    | = 3rd bit of element e  | Q2_K's (q2_k.py)  | (kscales.py)      |     |
    +-------------------------+-------------------+-------------------+-----+
    y = (d*(u_j - 32)) * (q3 - 4),  q3 = low2 | hbit << 2 in 0..7, sub-block j = e/16

Kernels: Q3_K weights x Q8_K activations. Tiles hold `q2` (low 2 bits, as Q2_K's tiles),
`qh` (ntile, n_in/8, R): bit k = 3rd bit of element 8g+k, `sc` int8 (u_j - 32, one byte per
16 weights) and `d`; the kernels multiply the unsigned q3 and subtract the -4 offset once
per sub-block through the Q8_K bsums.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import (
    F32, NONFINITE, OVERFLOW, as_rows, first_absmax, fp16_field, kquant_imatrix_weights, kquant_imatrix_weights_ref,
    out_rows, quiet, read_fp16, validate_fp16,
)
from .fit import make_q3_quants, make_q3_quants_ref, make_qx_quants_ref, qx_lanes, to_lanes
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .kscales import pack_q3k, pack_scales_q3k, scale_q3k, scales_q3k
from .q2_k import crumbs, pack_crumbs, pack_crumbs_row
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .simd import dot_q3, unpack3
from .spec import TypeSpec
from .tiles import avx2_chunks, chunking, fp16_bits, h2f_block, h2f_tile, pack_bits, store, store_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<f2")])
_F0, _F1, _F2, _FM32 = F32(0.0), F32(1.0), F32(2.0), F32(-32.0)


# -- reference (NumPy) ------------------------------------------------------------------------


def high_bits(hmask: np.ndarray) -> np.ndarray:
    """hmask (..., 32) -> (..., 256) 0/1: bit e/32 of hmask[e%32]."""
    shifts = np.arange(8, dtype=np.uint8).reshape(8, 1)
    return ((hmask[..., None, :] >> shifts) & 1).reshape(hmask.shape[:-1] + (256,))


def dequantize(b: np.ndarray) -> np.ndarray:
    nb = b.size
    s = scales_q3k(b["scales"]).astype(np.int32) - 32  # (nb, 16)
    q = crumbs(b["qs"]).astype(np.int32) - np.where(high_bits(b["hmask"]) != 0, 0, 4)
    dl = b["d"].astype(F32)[:, None] * s.astype(F32)
    return (dl[:, :, None] * q.reshape(nb, 16, 16).astype(F32)).reshape(nb, QK_K)


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_row_q3_K_ref (§3.3); with qw (n,) quantize_row_q3_K_impl (§3.4)."""
    x = as_rows(x, GGMLType.Q3_K)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    xs = xb.reshape(nb * 16, 16)
    if qw is None:
        scales, L = make_q3_quants_ref(xs, 4)
        scales = scales.reshape(nb, 16)
        _, max_scale = first_absmax(scales)  # strict |s| > amax, signed value kept
        has = max_scale != 0
        iscale = np.where(has, F32(-32) / np.where(has, max_scale, F32(1)), F32(0)).astype(F32)
        l = nearest_int_np(iscale[:, None] * scales)
        l = ((l & 0xFF) ^ 0x80) - 0x80  # int8_t l = nearest_int(.): wraps before the clamp
        u = np.where(has[:, None], np.clip(l, -32, 31) + 32, 0)
        d = np.where(has, F32(1) / np.where(has, iscale, F32(1)), F32(0)).astype(F32)
    else:
        w, sw = kquant_imatrix_weights_ref(x, qw, 16, 2)
        scales, L = make_qx_quants_ref(xs, 4, 1, w.reshape(nb * 16, 16))
        d, u = make_qx_quants_ref(scales.reshape(nb, 16), 32, 1, sw)
    b = np.zeros(nb, BLOCK)
    b["scales"] = pack_q3k(u)
    b["d"] = fp32_to_fp16(d)
    # re-quantize against the stored scales; a sub-block with d_j == 0 keeps its fitted L
    s = scales_q3k(b["scales"]).astype(np.int32) - 32
    dj = b["d"].astype(F32)[:, None] * s.astype(F32)
    requant = np.clip(nearest_int_np(xb.reshape(nb, 16, 16) / dj[:, :, None]), -4, 3) + 4
    L = np.where((dj != 0)[:, :, None], requant, L.reshape(nb, 16, 16)).reshape(nb, QK_K)
    hb = (L > 3).astype(np.uint8)
    b["hmask"] = (hb.reshape(nb, 8, 32) << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
    b["qs"] = pack_crumbs(L - 4 * hb)
    validate_fp16(b["d"], x, GGMLType.Q3_K, "block scale d")
    return out_rows(b, rows)


def unpack_ref(raw: np.ndarray):
    """-> d f32 (n_out, nb); s int -32..31 (n_out, nb, 16); q int -4..3 (n_out, nb, 256)."""
    b = raw.reshape(raw.shape[0], -1, 110)
    s = scales_q3k(b[:, :, 96:108]).astype(np.int32) - 32
    q = crumbs(b[:, :, 32:96]).astype(np.int32) + 4 * high_bits(b[:, :, 0:32]).astype(np.int32) - 4
    return fp16_to_fp32(b[:, :, 108:110]), s, q


def dot_ref(raw, qs, d, bsums=None):
    """Q3_K x Q8_K (§4): d*dy * Σ_j s_j Σ q*qy per super-block; bsums are not needed."""
    wd, s, q = unpack_ref(raw)
    n_out, nb = wd.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, 16, 16).astype(np.int64)
    sub = np.einsum("rbjl,tbjl->trbj", q.reshape(n_out, nb, 16, 16).astype(np.int64), yq)
    isum = (sub * s[None]).sum(axis=3)
    dd = (wd[None] * d[:, None, :]).astype(F32).astype(np.float64)
    return (dd * isum).sum(axis=2).astype(F32)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def _ref_scales(xr, base, L, u, scales):
    """quantize_row_q3_K_ref (§3.3) steps 1-2 for the super-block at xr[base:base+256]: the
    sub-block fits into L[0:256] (l + 4) and the 6-bit scales u; returns the float d."""
    amax = _F0
    max_scale = _F0
    for j in range(16):
        scales[j] = make_q3_quants(16, 4, xr, base + 16 * j, L, 16 * j, True)
        if abs(scales[j]) > amax:
            amax = abs(scales[j])
            max_scale = scales[j]
    if max_scale == _F0:
        for j in range(16):
            u[j] = 0
        return _F0
    iscale = _FM32 / max_scale
    for j in range(16):
        l = ((nearest_int(iscale * scales[j]) & 0xFF) ^ 0x80) - 0x80  # int8_t
        u[j] = min(31, max(-32, l)) + 32
    return _F1 / iscale


@jit_exact
def _finish(xr, base, o, ob, L, u, d_block):
    """Steps 3-5 (§3.3, the same in _impl): store the scales and d, re-quantize against them
    (a sub-block whose d_j is 0 keeps its fitted L), pack hmask and qs; whether d is finite."""
    pack_scales_q3k(u, o, ob + 96)
    d, ok = fp16_field(o, ob + 108, d_block)
    for j in range(16):
        dj = d * F32(scale_q3k(o, ob + 96, j) - 32)
        if dj == _F0:
            continue  # keep the fitted L
        for ii in range(16):
            L[16 * j + ii] = min(3, max(-4, nearest_int(xr[base + 16 * j + ii] / dj))) + 4
    for m in range(32):
        o[ob + m] = 0
    for e in range(256):
        if L[e] > 3:
            o[ob + e % 32] |= 1 << (e // 32)
            L[e] -= 4
    pack_crumbs_row(L, o, ob + 32)
    return ok


@jit_exact
def _row_imatrix(xr, o, qw, L, u):
    """quantize_row_q3_K_impl (§3.4) for one row, every fit in lanes: the 16*nb sub-block fits
    make_qx_quants(16, 4, x, L, 1, weight) side by side, then the nb super-block fits
    make_qx_quants(16, 32, scales, Ls, 1, sw)."""
    nb = xr.shape[0] // 256
    N = 16 * nb
    xt = np.empty((16, N), np.float32)
    wt = np.empty((16, N), np.float32)
    Lt = np.empty((16, N), np.float32)
    st = np.empty((8, N), np.float32)
    sw = np.empty(N, np.float32)
    to_lanes(xr, xt)
    kquant_imatrix_weights(xr, qw, wt, sw, 16, _F2)
    qx_lanes(xt, wt, 4, Lt, st)
    s2 = np.empty((16, nb), np.float32)  # lane b = super-block b: its 16 sub-block scales ...
    w2 = np.empty((16, nb), np.float32)  # ... and their weight sums
    for j in range(16):
        for b in range(nb):
            s2[j, b] = st[0, 16 * b + j]
            w2[j, b] = sw[16 * b + j]
    Ls = np.empty((16, nb), np.float32)
    st2 = np.empty((8, nb), np.float32)
    qx_lanes(s2, w2, 32, Ls, st2)
    ok = True
    for b in range(nb):
        for j in range(16):
            u[j] = np.int64(Ls[j, b])
            for i in range(16):
                L[16 * j + i] = np.int64(Lt[i, 16 * b + j])
        good = _finish(xr, 256 * b, o, 110 * b, L, u, st2[0, b])
        ok = ok and good
    return ok


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    L = np.empty(256, np.int64)
    u = np.empty(16, np.int64)
    scales = np.empty(16, np.float32)
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        if qw.shape[0] != 0:
            ok = _row_imatrix(x[r], out[r], qw, L, u)
        else:
            ok = True
            for ib in range(x.shape[1] // 256):
                d_block = _ref_scales(x[r], 256 * ib, L, u, scales)
                good = _finish(x[r], 256 * ib, out[r], 110 * ib, L, u, d_block)
                ok = ok and good
        if not ok:
            status[r] = OVERFLOW


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 110
            d = read_fp16(row, o + 108)
            for e in range(256):
                dl = F32(d * F32(scale_q3k(row, o + 96, e // 16) - 32))
                low = (np.int32(row[o + 32 + 32 * (e // 128) + e % 32]) >> (2 * ((e // 32) % 4))) & 3
                hbit = (np.int32(row[o + e % 32]) >> (e // 32)) & 1
                out[k, b * 256 + e] = F32(dl * F32(low - (0 if hbit else 4)))


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    return {
        "q2": pack_bits(crumbs(b[:, :, 32:96]).reshape(rows, -1), 2),
        "qh": pack_bits(high_bits(b[:, :, 0:32]).reshape(rows, -1), 1),
        "sc": (scales_q3k(b[:, :, 96:108]).astype(np.int16) - 32).astype(np.int8).reshape(rows, -1),
        "d": fp16_bits(b[:, :, 108:110]),
    }


@jit_fast
def sum8_q3(isub, w0, w1, h, yq, t, e):
    """isub[r] += Σ_{k<8} q3(element e+k of row r) * yq[t, e+k], q3 = 2 low bits | 3rd bit << 2 (0..7)."""
    y0 = np.int32(yq[t, e])
    y1 = np.int32(yq[t, e + 1])
    y2 = np.int32(yq[t, e + 2])
    y3 = np.int32(yq[t, e + 3])
    y4 = np.int32(yq[t, e + 4])
    y5 = np.int32(yq[t, e + 5])
    y6 = np.int32(yq[t, e + 6])
    y7 = np.int32(yq[t, e + 7])
    for r in range(isub.shape[0]):
        a = np.int32(w0[r])
        c = np.int32(w1[r])
        m = np.int32(h[r])
        isub[r] += (
            ((a & 3) | ((m << 2) & 4)) * y0
            + (((a >> 2) & 3) | ((m << 1) & 4)) * y1
            + (((a >> 4) & 3) | (m & 4)) * y2
            + ((a >> 6) | ((m >> 1) & 4)) * y3
            + ((c & 3) | ((m >> 2) & 4)) * y4
            + (((c >> 2) & 3) | ((m >> 3) & 4)) * y5
            + (((c >> 4) & 3) | ((m >> 4) & 4)) * y6
            + ((c >> 6) | ((m >> 5) & 4)) * y7
        )


@jit_fast
def _tile(out, t, tl, q2, qh, sc, dt, yq, yd, ys, isub, isum, corr, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isum[:] = 0
        corr[:] = 0
        for j in range(16 * b, 16 * b + 16):  # sub-blocks of 16 = 2 groups of 8 elements
            isub[:] = 0
            for g in range(2 * j, 2 * j + 2):
                sum8_q3(isub, q2[tl, 2 * g], q2[tl, 2 * g + 1], qh[tl, g], yq, t, 8 * g)
            bs = ys[t, j]
            s = sc[tl, j]
            for r in range(R):
                sr = np.int32(s[r])
                isum[r] += sr * isub[r]
                corr[r] += sr * bs
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += (db[r] * dy) * F32(np.int32(isum[r] - 4 * corr[r]))  # quants stored as q + 4
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q2, qh, sc, d, yq, yd, ys):
    """Q3_K weights x Q8_K activations; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q2.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        corr = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            for t in range(T):
                _tile(out, t, tl, q2, qh, sc, dt, yq, yd, ys, isub, isum, corr, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q2, qh, sc, d, yq, yd, ys):
    """Q3_K weights x Q8_K activations: each super-block of a tile is unpacked once into bytes
    q3 = 0..7 (unpack3, 32 rows a call), then each token's exact sum per row over the whole
    super-block is one dot_q3 (vpmaddubsw per sub-block, vpmaddwd with the scales)."""
    T = out.shape[0]
    ntile, nq, R = q2.shape
    nh = qh.shape[1]
    nsub = sc.shape[1]
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q2f = q2.reshape(-1)
    qhf = qh.reshape(-1)
    scf = sc.reshape(-1)
    R2 = 2 * R
    per, nchunk, qb, isub, dbuf, facc = avx2_chunks(ntile, T, R, 128)
    for c in prange(nchunk):
        buf = qb[c]
        acc = isub[c, 0]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(32):  # 32 groups of 8 elements = 4 pairs, 32 rows a call
                    for rc in range(0, R, 32):
                        unpack3(buf, 4 * g * R2 + 2 * rc, R2, q2f, (tl * nq + 64 * b + 2 * g) * R + rc, R,
                                qhf, (tl * nh + 32 * b + g) * R + rc)
                db = h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    dot_q3(acc, 0, buf, 0, R2, y2[t], 128 * b, scf, (tl * nsub + 16 * b) * R, R, ys[t], 16 * b)
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += (db[r] * dy) * F32(acc[r])
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.Q3_K,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("q2", "qh", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
    max_quantization_error=0.0040,
)
