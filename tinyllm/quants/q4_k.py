"""Q4_K: 256 weights = 8 sub-blocks of 32, 144 bytes (kquants.md §1.5, §1.8, §2, §3.6, §4.4).

    +-----+------+------------+--------------------------------------------------+
    | d   | dmin | scales[12] | qs[128]: byte 32c+l = x[64c+l] lo | x[64c+32+l] hi |
    | f16 | f16  | 6-bit sc,m |  (chunk c = 0..3 holds sub-blocks 2c and 2c+1)   |
    +-----+------+------------+--------------------------------------------------+
    y = (d*sc_j) * q - (dmin*m_j);  scales packing in kscales.py

Kernels: Q4_K weights x Q8_K activations. Tiles hold `q4` nibble pairs in natural order,
`sc`, `mn` one byte per sub-block, `d`, `dmin`; `qh` is empty (Q5_K's fifth bits).
Q5_K (q5_k.py) is the same code with `five` set: the quantizer, twins and kernels here take it.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import (
    F32, NONFINITE, OVERFLOW, as_rows, fp16_field, kquant_imatrix_weights, kquant_imatrix_weights_ref, out_rows, quiet,
    read_fp16, seq_sum, validate_fp16,
)
from .fit import (
    LIMIT, make_qkx2_quants, make_qkx2_quants_ref, make_qkx3_quants_ref, make_qp_quants, make_qp_quants_rows_ref,
    qkx2_lanes, to_lanes,
)
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .kscales import pack_k4, pack_scales_k4, scale_min_k4, scales_k4
from .q4_0 import sum8_q4
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .simd import tokens_q4_k, tokens_q5_k, unpack4, unpack5
from .spec import TypeSpec
from .tiles import TOKEN_BLOCK, avx2_tiles_per_chunk, chunking, fp16_bits, h2f_tile, nibble_pairs, pack_bits, store
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)])
_F0, _F0_1, _F32_32, _F63 = F32(0.0), F32(0.1), F32(32.0), F32(63.0)
_F2, _RMIN_IMX, _RDELTA_IMX = F32(2.0), F32(-0.9), F32(0.05)  # the imatrix fits


# -- reference (NumPy) ------------------------------------------------------------------------


def k_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K qs (nb, 128) -> (nb, 8, 32) 4-bit values, sub-block j = 2c (lo) / 2c+1 (hi)."""
    q = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(-1, 8, 32)


def dequantize_kmin(b: np.ndarray, five: bool) -> np.ndarray:
    sc, m = scales_k4(b["scales"])
    dj = b["d"].astype(F32)[:, None] * sc.astype(F32)  # (nb, 8)
    mj = b["dmin"].astype(F32)[:, None] * m.astype(F32)
    q = k_nibbles(b["qs"])
    if five:
        hb = (b["qh"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
        q = q + (hb << 4)
    return ((dj[:, :, None] * q.astype(F32)) - mj[:, :, None]).reshape(-1, QK_K)


def dequantize(b: np.ndarray) -> np.ndarray:
    return dequantize_kmin(b, False)


@quiet
def quantize_kmin_ref(x: np.ndarray, type: GGMLType, block: np.dtype, qw=None) -> np.ndarray:
    """quantize_row_q4_K_ref / q5_K_ref (§3.6); with qw (n,) quantize_row_q4_K_impl / q5_K_impl
    (kquants.md §3.11): weights qw*sqrt(sigma2 + x²), qkx3 fits, make_qp_quants super-scales."""
    x = as_rows(x, type)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    five = type == GGMLType.Q5_K
    nmax, rmin, nstep = (31, -0.5, 15) if five else (15, -1.0, 20)
    xs = xb.reshape(nb * 8, 32)
    b = np.zeros(nb, block)
    if qw is None:
        av_x = np.sqrt(seq_sum(xs * xs) / F32(32))
        w = av_x[:, None] + np.abs(xs)
        scales, mins, L = make_qkx2_quants_ref(xs, w, nmax, rmin, 0.1, nstep)
        scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32)

        def top(v):  # `if v > top: top = v` from +0.0
            m = v.max(axis=1)
            return np.where(m > 0, m, F32(0)).astype(F32)

        max_scale, max_min = top(scales), top(mins)
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
        # (uint8_t)nearest_int(...) wraps modulo 256 before MIN(63, .)
        ls = np.minimum(63, nearest_int_np(inv_scale[:, None] * scales) & 0xFF).astype(np.uint8)
        lm = np.minimum(63, nearest_int_np(inv_min[:, None] * mins) & 0xFF).astype(np.uint8)
        d, dmin = max_scale / F32(63), max_min / F32(63)
    else:
        w, sw = kquant_imatrix_weights_ref(x, qw, 32, _F2)  # (nb, 8, 32), (nb, 8)
        scales, mins, L = make_qkx3_quants_ref(xs, w.reshape(nb * 8, 32), nmax, -0.9, 0.05, 36)
        scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32)
        d, ls = make_qp_quants_rows_ref(63, scales, sw)
        dmin, lm = make_qp_quants_rows_ref(63, mins, sw)
        if five:  # quantize_row_q5_K_impl clamps, q4_K_impl stores the byte as it is
            ls, lm = np.minimum(63, ls).astype(np.uint8), np.minimum(63, lm).astype(np.uint8)
    b["scales"] = pack_k4(ls, lm)
    b["d"] = fp32_to_fp16(d)
    b["dmin"] = fp32_to_fp16(dmin)
    # re-quantize against the rounded scales; sub-blocks with d_j == 0 keep their L
    sc, m = scales_k4(b["scales"])
    dj = b["d"].astype(F32)[:, None] * sc.astype(F32)
    dmj = b["dmin"].astype(F32)[:, None] * m.astype(F32)
    requant = np.clip(nearest_int_np((xb.reshape(nb, 8, 32) + dmj[:, :, None]) / dj[:, :, None]), 0, nmax)
    L = np.where((dj != 0)[:, :, None], requant, L).astype(np.uint8)
    L4 = L.reshape(nb, 4, 2, 32)  # [chunk c, lo/hi half, l]
    b["qs"] = ((L4[:, :, 0] & 0x0F) | ((L4[:, :, 1] & 0x0F) << 4)).reshape(nb, 128)
    if five:
        hb = (L >> 4) & 1  # (nb, 8, 32): bit j of qh[l]
        b["qh"] = (hb << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
    validate_fp16(b["d"], x, type, "block scale d")
    validate_fp16(b["dmin"], x, type, "block scale dmin")
    return out_rows(b, rows)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    return quantize_kmin_ref(x, GGMLType.Q4_K, BLOCK, qw)


def unpack_ref(raw: np.ndarray, five: bool = False):
    """-> d, dmin f32 (n_out, nb); sc, m int (n_out, nb, 8); q int 0..15 / 0..31 (n_out, nb, 256)."""
    nbytes = 176 if five else 144
    b = raw.reshape(raw.shape[0], -1, nbytes)
    n_out, nb = b.shape[:2]
    sc, m = scales_k4(b[:, :, 4:16])
    qoff = 48 if five else 16
    qs = b[:, :, qoff : qoff + 128].astype(np.int32).reshape(n_out, nb, 4, 32)
    q = np.stack([qs & 0xF, qs >> 4], axis=3).reshape(n_out, nb, 8, 32)
    if five:
        qh = b[:, :, 16:48].astype(np.int32)  # bit j of qh[l] = 5th bit of element 32j+l
        q = q | (((qh[:, :, None, :] >> np.arange(8)[:, None]) & 1) << 4)
    return fp16_to_fp32(b[:, :, 0:2]), fp16_to_fp32(b[:, :, 2:4]), sc.astype(np.int32), m.astype(np.int32), q.reshape(n_out, nb, 256)


def dot_kmin_ref(unpacked, qs, d, bsums):
    """Q4_K/Q5_K x Q8_K (§4.4): d*dy * Σ_j sc_j Σ q*qy - dmin*dy * Σ_j m_j * bsums_j, per super-block."""
    wd, wdmin, sc, m, q = unpacked
    n_out, nb = wd.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, 8, 32).astype(np.int64)
    sub = np.einsum("rbjl,tbjl->trbj", q.reshape(n_out, nb, 8, 32).astype(np.int64), yq)
    isum = (sub * sc[None]).sum(axis=3)
    bs = bsums.reshape(T, nb, 8, 2).sum(axis=3).astype(np.int64)  # per 32-element sub-block
    summins = np.einsum("rbj,tbj->trb", m.astype(np.int64), bs)
    dd = (wd[None] * d[:, None, :]).astype(F32).astype(np.float64)
    dm = (wdmin[None] * d[:, None, :]).astype(F32).astype(np.float64)
    return (dd * isum - dm * summins).sum(axis=2).astype(F32)


def dot_ref(raw, qs, d, bsums):
    return dot_kmin_ref(unpack_ref(raw), qs, d, bsums)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def _finish(xr, base, o, ob, five, nmax, Lt, lane0, scales, mins, L, ls, lm, sw):
    """quantize_row_q4_K_ref / q5_K_ref (§3.6) steps 2-6 for the super-block at xr[base:base+256],
    given its 8 sub-block fits in lanes lane0..lane0+7; with sub-block weight sums sw (the
    imatrix path, non-empty) the super-scales come from make_qp_quants instead (_impl)."""
    if sw.shape[0] == 0:
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
            ls[j] = min(63, nearest_int(inv_scale * scales[lane0 + j]) & 0xFF)
            lm[j] = min(63, nearest_int(inv_min * mins[lane0 + j]) & 0xFF)
        d_block = max_scale / _F63
        m_block = max_min / _F63
    else:
        d_block = make_qp_quants(8, 63, scales, lane0, ls, 0, sw, lane0)
        m_block = make_qp_quants(8, 63, mins, lane0, lm, 0, sw, lane0)
        if five:  # quantize_row_q5_K_impl clamps, q4_K_impl stores the byte as it is
            for j in range(8):
                ls[j] = min(63, ls[j])
                lm[j] = min(63, lm[j])
    pack_scales_k4(ls, lm, o, ob + 4)
    d, ok_d = fp16_field(o, ob, d_block)
    dmin, ok_m = fp16_field(o, ob + 2, m_block)
    # re-quantize against the rounded scales; a sub-block with d_j == 0 keeps its fitted L
    for j in range(8):
        sc, m = scale_min_k4(o, ob + 4, j)
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
def row_kmin(xr, o, five, limit, qw):
    """One row of Q4_K / Q5_K; returns False if an fp16 scale overflowed. qw: the imatrix
    weights of the row's columns (the _impl path) or an empty array (the _ref path).

    limit: the guard bound of the lane fits, fit.LIMIT; tests pass 0 to send every lane
    through the scalar fit.
    """
    nb = xr.shape[0] // 256
    N = 8 * nb
    nbytes = o.shape[0] // nb
    imx = qw.shape[0] != 0
    if imx:
        nmax, rmin, rdelta, nstep = (31 if five else 15), _RMIN_IMX, _RDELTA_IMX, 36
    elif five:
        nmax, rmin, rdelta, nstep = 31, F32(-0.5), _F0_1, 15
    else:
        nmax, rmin, rdelta, nstep = 15, F32(-1.0), _F0_1, 20
    xt = np.empty((32, N), np.float32)
    wt = np.empty((32, N), np.float32)
    Lt = np.empty((32, N), np.float32)
    laux = np.empty((32, N), np.float32)
    st = np.empty((20, N), np.float32)
    sw = np.empty(N if imx else 0, np.float32)
    L = np.empty(256, np.int64)
    lone = np.empty(32, np.int64)
    wone = np.empty(32, np.float32)
    ls = np.empty(8, np.uint8)
    lm = np.empty(8, np.uint8)
    to_lanes(xr, xt)
    if imx:
        kquant_imatrix_weights(xr, qw, wt, sw, 32, _F2)
    else:
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
    qkx2_lanes(xt, wt, nmax, rmin, rdelta, nstep, False, Lt, laux, st, limit)
    for k in range(N):
        if st[2, k] != _F0:  # exact scalar fit for a lane the guard flagged
            for i in range(32):
                wone[i] = wt[i, k]
            sc, mn = make_qkx2_quants(xr, 32 * k, wone, lone, 0, L, nmax, rmin, rdelta, nstep, 32, False)
            st[0, k] = sc
            st[1, k] = mn
            for i in range(32):
                Lt[i, k] = F32(lone[i])
    ok = True
    for ib in range(nb):
        good = _finish(xr, 256 * ib, o, nbytes * ib, five, nmax, Lt, 8 * ib, st[0], st[1], L, ls, lm, sw)
        ok = ok and good
    return ok


@jit_exact
def quantize_rows_kmin(x, xu, out, status, five, limit, qw):
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
        elif not row_kmin(x[r], out[r], five, limit, qw):
            status[r] = OVERFLOW


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_kmin(x, xu, out, status, False, LIMIT, qw)


@jit_exact
def dequant_rows_kmin(out, wq, ids, five):
    bs = 176 if five else 144
    qoff = 48 if five else 16
    for k in range(ids.shape[0]):
        r = ids[k]
        row = wq[r]
        for b in range(out.shape[1] // 256):
            o = b * bs
            d = read_fp16(row, o)
            dmin = read_fp16(row, o + 2)
            for j in range(8):
                sc, m = scale_min_k4(row, o + 4, j)
                dj = F32(d * F32(sc))
                mj = F32(dmin * F32(m))
                shift = 4 * (j & 1)
                for l in range(32):
                    q = (np.int32(row[o + qoff + 32 * (j >> 1) + l]) >> shift) & 15
                    if five:
                        q |= ((np.int32(row[o + 16 + l]) >> j) & 1) << 4
                    out[k, b * 256 + 32 * j + l] = F32(F32(dj * F32(q)) - mj)


@jit_exact
def dequant_rows(out, wq, ids):
    dequant_rows_kmin(out, wq, ids, False)


# -- kernels -----------------------------------------------------------------------------------


def k4_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K qs (rows, nb, 128) -> low 4 bits in natural order (rows, nb*256) (§1.5)."""
    c = qs.reshape(qs.shape[0], qs.shape[1], 4, 1, 32)
    return np.concatenate([c & 15, c >> 4], axis=3).reshape(qs.shape[0], -1)


def repack_kmin(b: np.ndarray, five: bool) -> dict:
    rows = b.shape[0]
    qoff = 48 if five else 16
    sc, mn = scales_k4(b[:, :, 4:16])
    a = {"q4": nibble_pairs(k4_nibbles(b[:, :, qoff : qoff + 128])), "sc": sc.reshape(rows, -1), "mn": mn.reshape(rows, -1)}
    a["d"], a["dmin"] = fp16_bits(b[:, :, 0:2]), fp16_bits(b[:, :, 2:4])
    if five:
        qh = b[:, :, 16:48]  # bit j of qh[l] = 5th bit of element 32j + l
        hb = (qh[:, :, None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1
        a["qh"] = pack_bits(hb.reshape(rows, -1), 1)
    return a


def repack_rows(b: np.ndarray) -> dict:
    return repack_kmin(b, False)


@jit_fast(inline="always")
def kmin_finish(t, tl, j, sc, mn, ys, isub, isum, summ):
    """After sub-block j's sums: isum += sc_j * isub, summ += m_j * (Q8_K bsums of j's 32 elements)."""
    bs = ys[t, 2 * j] + ys[t, 2 * j + 1]
    s = sc[tl, j]
    m = mn[tl, j]
    for r in range(isub.shape[0]):
        isum[r] += np.int32(s[r]) * isub[r]
        summ[r] += np.int32(m[r]) * bs


@jit_fast(inline="always")
def kmin_scale(t, b, dt, dmt, yd, isum, summ, facc):
    """facc += d*dy * isum - dmin*dy * summ for super-block b (§4.4)."""
    dy = yd[t, b]
    db = dt[b]
    dm = dmt[b]
    for r in range(facc.shape[0]):
        facc[r] += (db[r] * dy) * F32(isum[r]) - (dm[r] * dy) * F32(summ[r])


@jit_fast
def _tile(out, t, tl, q4, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc):
    facc[:] = 0
    for b in range(dt.shape[0]):
        isum[:] = 0
        summ[:] = 0
        for j in range(8 * b, 8 * b + 8):  # sub-blocks of 32 = 4 groups of 8 elements
            isub[:] = 0
            for g in range(4 * j, 4 * j + 4):
                p = 4 * g
                sum8_q4(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], yq, t, 8 * g)
            kmin_finish(t, tl, j, sc, mn, ys, isub, isum, summ)
        kmin_scale(t, b, dt, dmt, yd, isum, summ, facc)
    store(out, t, tl * facc.shape[0], facc)


@jit_fast(parallel=True)
def mm(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q4_K weights x Q8_K activations; qh is empty; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        summ = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        hm = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            dmt = h2f_tile(hm, dmin, tl)
            for t in range(T):
                _tile(out, t, tl, q4, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc)


@jit_fast(inline="always")
def kmin_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys, five):
    """Q4_K (five=False, qh unused) / Q5_K weights x Q8_K activations: each tile row unpacked
    once, then the tokens in groups whose float sums stay in L1 (tokens_q4_k / tokens_q5_k)."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    ngrp = qh.shape[1]
    nb = d.shape[1]
    nsub = sc.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    qhf = qh.reshape(-1)
    R2 = 2 * R
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
    mnf = mn.reshape(-1)
    df = d.reshape(-1)
    dmf = dmin.reshape(-1)
    for c in prange(nchunk):
        buf = qb[c]
        fc = facc[c]
        ff = fc.reshape(-1)
        for tl in range(c * per, min(ntile, c * per + per)):
            for g in range(npair // 4 if whole else 0):
                for rc in range(0, R, 16):
                    if five:
                        unpack5(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 4 * g) * R + rc, R, qhf, (tl * ngrp + g) * R + rc)
                    else:
                        unpack4(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 4 * g) * R + rc, R, q4f, 0)
            n = min(R, out.shape[1] - tl * R)
            for t0 in range(0, T, TB):
                t1 = min(T, t0 + TB)
                fc[:] = 0
                for b in range(nb):
                    for g in range(0 if whole else 32 * b, 0 if whole else 32 * b + 32):  # one pass: a super-block at a time
                        for rc in range(0, R, 16):
                            o = 4 * (g - 32 * b) * R2 + 2 * rc
                            if five:
                                unpack5(buf, o, R2, q4f, (tl * npair + 4 * g) * R + rc, R, qhf, (tl * ngrp + g) * R + rc)
                            else:
                                unpack4(buf, o, R2, q4f, (tl * npair + 4 * g) * R + rc, R, q4f, 0)
                    qo = 128 * b * R2 if whole else 0
                    if five:
                        tokens_q5_k(ff, buf, qo, y2f, nh, ydf, ysf, nbs, nb, b, t0, t1, scf, mnf,
                                    (tl * nsub + 8 * b) * R, df, dmf, (tl * nb + b) * R)
                    else:
                        tokens_q4_k(ff, buf, qo, y2f, nh, ydf, ysf, nbs, nb, b, t0, t1, scf, mnf,
                                    (tl * nsub + 8 * b) * R, df, dmf, (tl * nb + b) * R)
                for t in range(t0, t1):
                    for r in range(n):
                        out[t, tl * R + r] = fc[t - t0, r]


@jit_fast(parallel=True)
def mm_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q4_K weights x Q8_K activations."""
    kmin_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys, False)


SPEC = TypeSpec(
    type=GGMLType.Q4_K,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("q4", "qh", "sc", "mn", "d", "dmin"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
