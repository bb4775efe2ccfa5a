"""Q6_K: 256 weights = 16 sub-blocks of 16, 210 bytes (kquants.md §1.7, §2, §3.7, §4.6).

    +-------------+-------------+-------------------+-----+
    | ql[128]     | qh[64]      | scales[16] int8   | d   |
    | low 4 bits  | high 2 bits | one per 16 weights| f16 |
    +-------------+-------------+-------------------+-----+
    e = 128h + 32g + l:  low = ql[64h + 32(g&1) + l] nibble (g>>1),
                         high = (qh[32h + l] >> 2g) & 3;  y = (d*scales[e/16]) * (q - 32)

Kernels: Q6_K weights x Q8_K activations. Tiles hold `q4` (low nibbles, natural order),
`qh` (ntile, n_in/4, R): bits 2k..2k+1 = top 2 bits of element 4g+k, `sc` int8 and `d`;
the +32 offset is subtracted per super-block through the bsums.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, first_absmax, fp16_field, out_rows, quiet, read_fp16, validate_fp16
from .fit import make_qx_quants_ref, qx_lanes, to_lanes
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .simd import tokens_q6_k, unpack6
from .spec import TypeSpec
from .tiles import TOKEN_BLOCK, avx2_tiles_per_chunk, chunking, fp16_bits, h2f_tile, nibble_pairs, pack_bits, store
from .types import QK_K, GGMLType

BLOCK = np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")])
_F0, _F1, _EPS, _FM128 = F32(0.0), F32(1.0), F32(1e-15), F32(-128.0)


# -- reference (NumPy) ------------------------------------------------------------------------


def dequantize(b: np.ndarray) -> np.ndarray:
    nb = b.size
    ql = b["ql"].reshape(nb, 2, 2, 32)  # [h, 32-byte half, l]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # (nb, 2, 4, 32), g = 0..3
    high = (b["qh"].reshape(nb, 2, 1, 32) >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
    s = (low | (high << 4)).astype(np.int8) - 32
    ds = b["d"].astype(F32)[:, None] * b["scales"].astype(F32)  # (nb, 16)
    return (ds[:, :, None] * s.reshape(nb, 16, 16).astype(F32)).reshape(nb, QK_K)


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_row_q6_K_ref (§3.7); with qw (n,) quantize_row_q6_K_impl, whose sub-block fits
    weigh by qw itself instead of x² (kquants.md §3.11)."""
    x = as_rows(x, GGMLType.Q6_K)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    w = None if qw is None else np.broadcast_to(np.asarray(qw, F32).reshape(1, -1, 16), (rows, x.shape[1] // 16, 16)).reshape(-1, 16)
    scales, L = make_qx_quants_ref(xb.reshape(nb * 16, 16), 32, 1, w)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16)
    max_abs_scale, max_scale = first_absmax(scales)
    zero = max_abs_scale < F32(1e-15)  # whole block stays zero, d = 0
    iscale = np.where(zero, F32(0), F32(-128) / np.where(zero, F32(1), max_scale)).astype(F32)
    d = np.where(zero, F32(0), F32(1) / np.where(zero, F32(1), iscale)).astype(F32)
    b = np.zeros(nb, BLOCK)
    b["d"] = fp32_to_fp16(d)
    # MIN(127, .) then stored into int8_t: wraps modulo 256
    sc = (np.minimum(127, nearest_int_np(iscale[:, None] * scales)) & 0xFF).astype(np.uint8).view(np.int8)
    b["scales"] = sc
    dj = b["d"].astype(F32)[:, None] * sc.astype(F32)
    requant = np.clip(nearest_int_np(xb.reshape(nb, 16, 16) / dj[:, :, None]), -32, 31) + 32
    L = np.where((dj != 0)[:, :, None], requant, L).astype(np.uint8).reshape(nb, 2, 4, 32)  # [h, g, l]
    b["ql"] = np.concatenate(
        [(L[:, :, 0] & 0x0F) | ((L[:, :, 2] & 0x0F) << 4), (L[:, :, 1] & 0x0F) | ((L[:, :, 3] & 0x0F) << 4)],
        axis=2,
    ).reshape(nb, 128)
    hi = L >> 4  # (nb, 2, 4, 32): the top 2 bits of group g go to bits 2g of qh[32h + l]
    b["qh"] = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    b[zero] = np.zeros(1, BLOCK)
    validate_fp16(b["d"], x, GGMLType.Q6_K, "block scale d")
    return out_rows(b, rows)


def unpack_ref(raw: np.ndarray):
    """-> d f32 (n_out, nb); scales int (n_out, nb, 16); q int -32..31 (n_out, nb, 256)."""
    b = raw.reshape(raw.shape[0], -1, 210)
    n_out, nb = b.shape[:2]
    ql = b[:, :, 0:128].astype(np.int32).reshape(n_out, nb, 2, 2, 32)  # (h, ql half, l)
    qh = b[:, :, 128:192].astype(np.int32).reshape(n_out, nb, 2, 32)  # (h, l)
    low = np.stack([ql[:, :, :, 0] & 0xF, ql[:, :, :, 1] & 0xF, ql[:, :, :, 0] >> 4, ql[:, :, :, 1] >> 4], axis=3)
    high = (qh[:, :, :, None, :] >> (2 * np.arange(4))[:, None]) & 3  # (h, g, l)
    q = (low | (high << 4)).reshape(n_out, nb, 256) - 32
    scales = b[:, :, 192:208].view(np.int8).astype(np.int32)
    return fp16_to_fp32(b[:, :, 208:210]), scales, q


def dot_ref(raw, qs, d, bsums=None):
    """Q6_K x Q8_K (§4.6); bsums are not needed."""
    wd, scales, q = unpack_ref(raw)
    n_out, nb = wd.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, 16, 16).astype(np.int64)
    sub = np.einsum("rbjl,tbjl->trbj", q.reshape(n_out, nb, 16, 16).astype(np.int64), yq)
    isum = (sub * scales[None]).sum(axis=3)
    dd = (wd[None] * d[:, None, :]).astype(F32).astype(np.float64)
    return (dd * isum).sum(axis=2).astype(F32)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def _finish(xr, base, o, ob, Lt, lane0, scales, L):
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
    d, ok = fp16_field(o, ob + 208, _F1 / iscale)
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
def quantize_rows(x, xu, out, status, qw):
    rows, n = x.shape
    nb = n // 256
    N = 16 * nb
    imx = qw.shape[0] != 0
    wt = np.empty((16 if imx else 0, N if imx else 0), np.float32)
    if imx:  # the imatrix weights are the same for every row
        to_lanes(qw, wt)
    for r in range(rows):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        xt = np.empty((16, N), np.float32)
        Lt = np.empty((16, N), np.float32)
        st = np.empty((8, N), np.float32)
        L = np.empty(256, np.int64)
        xr = x[r]
        o = out[r]
        to_lanes(xr, xt)
        qx_lanes(xt, wt, 32, Lt, st)
        ok = True
        for ib in range(nb):
            good = _finish(xr, 256 * ib, o, 210 * ib, Lt, 16 * ib, st[0], L)
            ok = ok and good
        if not ok:
            status[r] = OVERFLOW


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        r = ids[k]
        row = wq[r]
        for b in range(out.shape[1] // 256):
            o = b * 210
            d = read_fp16(row, o + 208)
            for h in range(2):
                for g in range(4):
                    shift = 4 * (g >> 1)
                    for l in range(32):
                        e = 128 * h + 32 * g + l
                        low = (np.int32(row[o + 64 * h + 32 * (g & 1) + l]) >> shift) & 15
                        high = (np.int32(row[o + 128 + 32 * h + l]) >> (2 * g)) & 3
                        sc = np.int32(row[o + 192 + e // 16])
                        sc = sc - 256 if sc > 127 else sc
                        dsc = F32(d * F32(sc))
                        out[k, b * 256 + e] = F32(dsc * F32((low | (high << 4)) - 32))


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    ql = b[:, :, 0:128].reshape(rows, -1, 2, 2, 32)  # (h, which half of ql, l)
    low = np.stack([ql[:, :, :, 0] & 15, ql[:, :, :, 1] & 15, ql[:, :, :, 0] >> 4, ql[:, :, :, 1] >> 4], axis=3)
    qh = b[:, :, 128:192].reshape(rows, -1, 2, 1, 32)
    high = (qh >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3  # (h, g, l)
    return {
        "q4": nibble_pairs(low.reshape(rows, -1)),
        "qh": pack_bits(high.reshape(rows, -1), 2),
        "sc": b[:, :, 192:208].reshape(rows, -1).view(np.int8),
        "d": fp16_bits(b[:, :, 208:210]),
    }


@jit_fast
def _tile(out, t, tl, q4, qh, sc, dt, yq, yd, ys, isub, isum, corr, facc):
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
            facc[r] += (db[r] * dy) * F32(np.int32(isum[r] - 32 * corr[r]))  # quants stored as q + 32
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q4, qh, sc, d, yq, yd, ys):
    """Q6_K weights x Q8_K activations; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q4.shape[0]
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
                _tile(out, t, tl, q4, qh, sc, dt, yq, yd, ys, isub, isum, corr, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, qh, sc, d, yq, yd, ys):
    """Q6_K weights x Q8_K activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    ngrp = qh.shape[1]
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    qhf = qh.reshape(-1)
    R2 = 2 * R
    # each tile row unpacked once, then the tokens in groups whose float sums stay in L1
    nsub = sc.shape[1]
    per, nchunk = avx2_tiles_per_chunk(ntile)
    TB = min(T, TOKEN_BLOCK)
    whole = T > TB  # several passes of tokens: unpack each tile row once
    qb = np.empty((nchunk, (npair if whole else 128) * R2), np.uint8)
    facc = np.empty((nchunk, TB, R), np.float32)
    y2f = y2.reshape(-1)
    nh = y2.shape[1]
    ydf = yd.reshape(-1)
    ysf = ys.reshape(-1)
    nbs = ys.shape[1]
    scf = sc.reshape(-1)
    df = d.reshape(-1)
    for c in prange(nchunk):
        buf = qb[c]
        fc = facc[c]
        ff = fc.reshape(-1)
        for tl in range(c * per, min(ntile, c * per + per)):
            if whole:
                for g in range(npair // 2):
                    for rc in range(0, R, 16):
                        unpack6(buf, 2 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 2 * g) * R + rc, R, qhf, (tl * ngrp + g) * R + rc)
            n = min(R, out.shape[1] - tl * R)
            for t0 in range(0, T, TB):
                t1 = min(T, t0 + TB)
                fc[:] = 0
                for b in range(nb):  # stored as q + 32
                    if not whole:  # one pass of tokens: a super-block at a time, unpacked into L1
                        for g in range(64 * b, 64 * b + 64):
                            for rc in range(0, R, 16):
                                unpack6(buf, 2 * (g - 64 * b) * R2 + 2 * rc, R2, q4f, (tl * npair + 2 * g) * R + rc, R, qhf,
                                        (tl * ngrp + g) * R + rc)
                    tokens_q6_k(ff, buf, 128 * b * R2 if whole else 0, y2f, nh, ydf, ysf, nbs, nb, b, t0, t1, scf,
                                (tl * nsub + 16 * b) * R, df, (tl * nb + b) * R)
                for t in range(t0, t1):
                    for r in range(n):
                        out[t, tl * R + r] = fc[t - t0, r]


SPEC = TypeSpec(
    type=GGMLType.Q6_K,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("q4", "qh", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
