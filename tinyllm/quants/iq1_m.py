"""IQ1_M: 256 weights = 8 sub-blocks of 32, 56 bytes, 1.75 bits per weight; no `d` field
(kquants-family.md §1.11, §2.1).

    +----------------------+------------------------------+------------------------------+
    | qs[32]: index bits   | qh[16]: byte 2ib + l/2,      | scales[8] = 4 LE u16 sc[k]:  |
    | 0..7, group l of ib  |   nibble l%2: bits 0..2 =    |   3-bit s per 16 elements of |
    | at 4ib+l             |   index bits 8..10, bit 3 =  |   sub-blocks 2k, 2k+1 (bits  |
    |                      |   delta sign of group l      |   0..11); bits 12..15 =      |
    |                      |                              |   nibble k of the fp16 d     |
    +----------------------+------------------------------+------------------------------+
    y = f32(f32(d * (2s + 1)) * f32(iq1s_grid[index][j] + delta_l)),  delta_l = ±0.125

The quantizer is quantize_row_iq1_m_impl (kquants-family.md §3.14; the imatrix is optional:
without one the weights are x²): IQ1_S's exhaustive split search over sub-blocks of 16, where
each group of 8 picks its own delta sign (4 combinations, prefix sums kept per group); then
one super-block scale refitted over the chosen levels and 3-bit scales.

Kernels (iq_tiles.py): IQ1_M weights x Q8_K activations on IQ1_S's virtual grid 8*grid ± 1
(the per-group delta folded in), K = 1/8, ls = 2s+1 per 16, portable loops only (no AVX2
kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, out_rows, put16, quiet, read_u16, seq_sum, validate_fp16
from .fp16 import fp16_bits_to_fp32, fp32_to_fp16, fp32_to_fp16_bits
from .iq1_s import GRID, VGRID
from .iq_grids import IQ1_DELTA, IQ1_XM, IQ1_XP, iq1_best_neighbours, iq1_find_neighbour, search_tables
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .iq_tiles import grid_dot_ref, tile_arrays, tile_plain
from .spec import TypeSpec
from .tiles import chunking, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("qs", "u1", 32), ("qh", "u1", 16), ("scales", "<u2", 4)])
K = F32(0.125)
_F0, _F05, _F1, _F2 = F32(0), F32(0.5), F32(1), F32(2)
_EPS, _FLT_MAX, _FUDGE = F32(1e-7), F32(3.4028234663852886e38), F32(1.1125)  # GROUP_MAX_EPS_IQ1_M
# Σ over a split's three groups collapses to T*xx[2] - S(i1) - S(i2) with these W-coefficients
_CP1 = F32(F32(IQ1_XP[0] * IQ1_XP[0]) - F32(IQ1_XP[1] * IQ1_XP[1]))
_CP2 = F32(F32(IQ1_XP[1] * IQ1_XP[1]) - F32(IQ1_XP[2] * IQ1_XP[2]))
_CM1 = F32(F32(IQ1_XM[0] * IQ1_XM[0]) - F32(IQ1_XM[1] * IQ1_XM[1]))
_CM2 = F32(F32(IQ1_XM[1] * IQ1_XM[1]) - F32(IQ1_XM[2] * IQ1_XM[2]))
_P2, _M2 = IQ1_XP[2], IQ1_XM[2]
# qh bits 3 / 7 (the delta signs of groups 0 / 1) for best_k = 2*minus(group 0) + minus(group 1)
_MASKS = np.array([0x00, 0x80, 0x08, 0x88], np.int64)


# -- reference (NumPy) ------------------------------------------------------------------------


def d_bits(sc: np.ndarray) -> np.ndarray:
    """scales (..., 4) uint16 -> the fp16 bits of d (...): nibble k from bits 12..15 of sc[k]."""
    sc = sc.astype(np.uint16)
    return (sc[..., 0] >> 12) | ((sc[..., 1] >> 8) & 0x00F0) | ((sc[..., 2] >> 4) & 0x0F00) | (sc[..., 3] & 0xF000)


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 16), gi (..., 32) 11-bit indices, neg (..., 32) delta signs 0/1."""
    nib = (b["qh"][..., None].astype(np.int32) >> np.array([0, 4])).reshape(*b.shape, 32)  # group l of ib at 4ib+l
    gi = b["qs"].astype(np.int32) | ((nib & 7) << 8)
    sc = b["scales"].astype(np.int32)
    s = ((sc[..., None] >> (3 * np.arange(4))) & 7).reshape(*b.shape, 16)
    d = d_bits(b["scales"]).view(np.float16).astype(F32)
    return d, s, gi, (nib >> 3) & 1


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, neg = fields(b)
    dl = (d[:, None] * (2 * s + 1).astype(F32)).astype(F32)  # (nb, 16)
    delta = np.where(neg != 0, -IQ1_DELTA, IQ1_DELTA).astype(F32)  # (nb, 32)
    v = (GRID[gi].astype(F32) + delta[..., None]).astype(F32).reshape(-1, 16, 16)
    return (dl[:, :, None] * v).reshape(-1, QK_K)


def dot_ref(raw, qs, d, bsums=None):
    """IQ1_M x Q8_K: 1/8 Σ_b f32(D*dy) Σ_16 (2s+1) Σ (8*grid ± 1)*q (exact integer sums)."""
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    wd, s, gi, neg = fields(b)
    vals = VGRID[gi | (neg << 11)].astype(np.int32).reshape(*gi.shape[:-1], QK_K)
    return grid_dot_ref(wd, vals, 2 * s + 1, K, qs, d)


# -- quantizer ------------------------------------------------------------------------------------


def _weights_ref(xb: np.ndarray, qw, rows: int) -> np.ndarray:
    """Per super-block (nb, 256): qw*sqrt(sigma2 + x²) with sigma2 = 2 Σx²/256, or x² without qw."""
    x2 = (xb * xb).astype(F32)
    if qw is None or np.size(qw) == 0:
        return x2
    sigma2 = ((_F2 * seq_sum(x2)).astype(F32) / F32(QK_K)).astype(F32)
    nb = xb.shape[0]
    qwb = np.broadcast_to(np.asarray(qw, F32).reshape(1, -1, QK_K), (rows, nb // rows, QK_K)).reshape(nb, QK_K)
    return (qwb * np.sqrt((sigma2[:, None] + x2).astype(F32))).astype(F32)


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq1_m: quantize_row_iq1_m_impl, all sub-blocks of 16 side by side."""
    x = as_rows(x, GGMLType.IQ1_M)
    tables = search_tables(GGMLType.IQ1_S)  # ggml's IQ1_M uses IQ1_S's tables
    pos, kmap = tables[:2]
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    N = nb * 16
    wb = _weights_ref(xb, qw, rows)  # (nb, 256)
    w = wb.reshape(N, 16)
    xs = xb.reshape(N, 16)
    live = ~(np.abs(xs).max(axis=1) < _EPS)
    order = np.argsort(xs, axis=1, kind="stable")
    wo = np.take_along_axis(w, order, axis=1)
    xo = np.take_along_axis(xs, order, axis=1)
    half = order >= 8
    px = np.zeros((2, N, 17), F32)  # prefix sums in sorted order, one per group of 8
    pw = np.zeros((2, N, 17), F32)
    for j in range(16):
        t = (wo[:, j] * xo[:, j]).astype(F32)
        for h in range(2):
            mine = half[:, j] == bool(h)
            px[h, :, j + 1] = np.where(mine, (px[h, :, j] + t).astype(F32), px[h, :, j])
            pw[h, :, j + 1] = np.where(mine, (pw[h, :, j] + wo[:, j]).astype(F32), pw[h, :, j])
    tp = (px[:, :, 16] * _P2).astype(F32)  # (2, N)
    tm = (px[:, :, 16] * _M2).astype(F32)
    wp = ((pw[:, :, 16] * _P2).astype(F32) * _P2).astype(F32)
    wm = ((pw[:, :, 16] * _M2).astype(F32) * _M2).astype(F32)
    best = np.full(N, -_FLT_MAX, F32)
    scale = np.abs(xs).max(axis=1).astype(F32)
    b1 = np.full(N, -1, np.int64)
    b2 = np.full(N, -1, np.int64)
    bk = np.full(N, -1, np.int64)
    for i1 in range(17):
        for i2 in range(i1, 17):
            sx = (px[:, :, i1] + px[:, :, i2]).astype(F32)  # (2, N)
            qx = ((tp - sx).astype(F32), (tm - sx).astype(F32))  # per shift: +1/8, -1/8
            a1, a2 = pw[:, :, i1], pw[:, :, i2]
            q2 = ((((wp + (a1 * _CP1).astype(F32)).astype(F32)) + (a2 * _CP2).astype(F32)).astype(F32),
                  (((wm + (a1 * _CM1).astype(F32)).astype(F32)) + (a2 * _CM2).astype(F32)).astype(F32))
            for k in range(4):  # group 0 minus = k >> 1, group 1 minus = k & 1
                sqx = (qx[k >> 1][0] + qx[k & 1][1]).astype(F32)
                sq2 = (q2[k >> 1][0] + q2[k & 1][1]).astype(F32)
                take = live & (sq2 > 0) & ((sqx * sqx).astype(F32) > (best * sq2).astype(F32))
                scale = np.where(take, (sqx / np.where(take, sq2, _F1)).astype(F32), scale)
                best = np.where(take, (scale * sqx).astype(F32), best)
                b1 = np.where(take, i1, b1)
                b2 = np.where(take, i2, b2)
                bk = np.where(take, k, bk)
    live &= b1 >= 0
    rank = np.arange(16)[None, :]
    Ls = np.where(rank < b1[:, None], 0, np.where(rank < b2[:, None], 1, 2))  # levels in sorted order
    L = np.zeros((N, 16), np.int64)
    np.put_along_axis(L, order, Ls, axis=1)
    negs = live & (scale < 0)
    L = np.where(negs[:, None], 2 - L, L)
    scale = np.where(negs, -scale, scale).astype(F32)
    bk = np.where(negs, 3 - bk, bk)
    bk = np.where(live, bk, 0)
    minus = np.stack([bk >> 1, bk & 1], axis=1)  # (N, 2): group k uses IQ1_XM
    xx = np.where(minus[..., None] == 1, IQ1_XM, IQ1_XP).astype(F32)  # (N, 2, 3)
    u = (L.reshape(N, 2, 8) << (2 * np.arange(8))).sum(axis=2)
    gi = kmap[u].astype(np.int64)
    off = live[:, None] & (gi < 0)
    if off.any():
        n, k = np.nonzero(off)
        gi[n, k] = iq1_best_neighbours(tables, u[n, k], xs.reshape(N, 2, 8)[n, k], w.reshape(N, 2, 8)[n, k],
                                       scale[n], xx[n, k])
        redo = off.any(axis=1)
        lv = (pos[np.maximum(gi, 0)].astype(np.int64) - 1) // 2  # (N, 2, 8)
        q = np.take_along_axis(xx, lv, axis=2).reshape(N, 16)
        sqx = seq_sum(((w * q).astype(F32) * xs).astype(F32))
        sq2 = seq_sum(((w * q).astype(F32) * q).astype(F32))
        upd = redo & (sqx > 0) & (sq2 > 0)
        scale = np.where(upd, (sqx / np.where(upd, sq2, _F1)).astype(F32), scale)
    gi = np.where(live[:, None], gi, 0)
    scale = np.where(live, scale, _F0).astype(F32).reshape(nb, 16)
    qh = ((gi[:, 0] >> 8) | ((gi[:, 1] >> 8) << 4)).reshape(nb, 16)

    max_scale = scale.max(axis=1)
    has = max_scale != 0
    d = (max_scale / F32(15)).astype(F32)
    id = (_F1 / np.where(has, d, _F1)).astype(F32)
    l = np.clip(nearest_int_np((_F05 * ((id[:, None] * scale).astype(F32) - _F1)).astype(F32)), 0, 7)  # (nb, 16)
    lv = (pos[gi].astype(np.int64) - 1) // 2  # (N, 2, 8), grid point 0 where skipped
    q = np.take_along_axis(xx, lv, axis=2).reshape(nb, 16, 16)
    q = (q * (2 * l + 1).astype(F32)[:, :, None]).astype(F32).reshape(nb, QK_K)
    sqx = seq_sum(((wb * q).astype(F32) * xb).astype(F32))
    sq2 = seq_sum(((wb * q).astype(F32) * q).astype(F32))
    d = np.where(sq2 > 0, (sqx / np.where(sq2 > 0, sq2, _F1)).astype(F32), d)
    h16 = fp32_to_fp16((d * _FUDGE).astype(F32))
    validate_fp16(np.where(has, h16, np.float16(0)), x, GGMLType.IQ1_M, "block scale d")
    h = np.where(has, h16.view(np.uint16).astype(np.int64), 0)
    sc = (l.reshape(nb, 4, 4) << (3 * np.arange(4))).sum(axis=2)  # (nb, 4)
    sc = sc | (((h[:, None] >> (4 * np.arange(4))) & 0xF) << 12)
    b = np.zeros(nb, BLOCK)
    b["qs"] = (gi & 255).reshape(nb, 32)
    b["qh"] = qh | np.where(has[:, None], _MASKS[bk].reshape(nb, 16), 0)
    b["scales"] = np.where(has[:, None], sc, 0)
    return out_rows(b, rows)


@jit_exact
def _rows(x, xu, out, status, qw, pos, kmap, start, count, flat):
    w = np.empty(256, np.float32)
    order = np.empty(16, np.int64)
    px = np.empty((2, 17), np.float32)
    pw = np.empty((2, 17), np.float32)
    tp = np.empty(2, np.float32)
    tm = np.empty(2, np.float32)
    wp = np.empty(2, np.float32)
    wm = np.empty(2, np.float32)
    qxp = np.empty(2, np.float32)
    qxm = np.empty(2, np.float32)
    q2p = np.empty(2, np.float32)
    q2m = np.empty(2, np.float32)
    L = np.empty(16, np.int64)
    gi = np.empty(32, np.int64)
    scales = np.empty(16, np.float32)
    shifts = np.empty(16, np.int64)
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        xr = x[r]
        o = out[r]
        for ibl in range(x.shape[1] // 256):
            base = 256 * ibl
            ob = 56 * ibl
            for i in range(56):
                o[ob + i] = 0
            if qw.size:
                sumx2 = _F0
                for i in range(256):
                    sumx2 = F32(sumx2 + F32(xr[base + i] * xr[base + i]))
                sigma2 = F32(F32(_F2 * sumx2) / F32(256))
                for i in range(256):
                    v = xr[base + i]
                    w[i] = F32(qw[base + i] * F32(np.sqrt(F32(sigma2 + F32(v * v)))))
            else:
                for i in range(256):
                    w[i] = F32(xr[base + i] * xr[base + i])
            max_scale = _F0
            for ib in range(16):
                xb = base + 16 * ib
                wo = 16 * ib
                mx = abs(xr[xb])
                for i in range(16):
                    mx = mx if mx > abs(xr[xb + i]) else abs(xr[xb + i])
                scales[ib] = _F0
                shifts[ib] = 0
                gi[2 * ib] = 0
                gi[2 * ib + 1] = 0
                if mx < _EPS:
                    continue
                for j in range(16):  # stable insertion sort of the indices by x
                    v = xr[xb + j]
                    k = j
                    while k > 0 and xr[xb + order[k - 1]] > v:
                        order[k] = order[k - 1]
                        k -= 1
                    order[k] = j
                for h in range(2):
                    px[h, 0] = _F0
                    pw[h, 0] = _F0
                for j in range(16):
                    i = order[j]
                    h = 0 if i < 8 else 1
                    px[h, j + 1] = F32(px[h, j] + F32(w[wo + i] * xr[xb + i]))
                    px[1 - h, j + 1] = px[1 - h, j]
                    pw[h, j + 1] = F32(pw[h, j] + w[wo + i])
                    pw[1 - h, j + 1] = pw[1 - h, j]
                for h in range(2):
                    tp[h] = F32(px[h, 16] * _P2)
                    tm[h] = F32(px[h, 16] * _M2)
                    wp[h] = F32(F32(pw[h, 16] * _P2) * _P2)
                    wm[h] = F32(F32(pw[h, 16] * _M2) * _M2)
                best = -_FLT_MAX
                scale = mx
                b1 = -1
                b2 = -1
                bk = -1
                for i1 in range(17):
                    for i2 in range(i1, 17):
                        for h in range(2):
                            sx = F32(px[h, i1] + px[h, i2])
                            qxp[h] = F32(tp[h] - sx)
                            qxm[h] = F32(tm[h] - sx)
                            q2p[h] = F32(F32(wp[h] + F32(pw[h, i1] * _CP1)) + F32(pw[h, i2] * _CP2))
                            q2m[h] = F32(F32(wm[h] + F32(pw[h, i1] * _CM1)) + F32(pw[h, i2] * _CM2))
                        for k in range(4):
                            sqx = F32((qxm[0] if k >= 2 else qxp[0]) + (qxm[1] if k & 1 else qxp[1]))
                            sq2 = F32((q2m[0] if k >= 2 else q2p[0]) + (q2m[1] if k & 1 else q2p[1]))
                            if sq2 > _F0 and F32(sqx * sqx) > F32(best * sq2):
                                scale = F32(sqx / sq2)
                                best = F32(scale * sqx)
                                b1 = i1
                                b2 = i2
                                bk = k
                if b1 < 0:
                    continue
                for j in range(16):
                    L[order[j]] = 0 if j < b1 else (1 if j < b2 else 2)
                if scale < _F0:
                    for j in range(16):
                        L[j] = 2 - L[j]
                    scale = -scale
                    bk = 3 - bk
                all_on = True
                for k in range(2):
                    xx = IQ1_XM if (bk >> (1 - k)) & 1 else IQ1_XP
                    u = 0
                    for j in range(8):
                        u |= L[8 * k + j] << (2 * j)
                    g = kmap[u]
                    if g < 0:
                        all_on = False
                        g = iq1_find_neighbour(pos, start, count, flat, u, xr, xb + 8 * k, w, wo + 8 * k, scale, xx)
                    gi[2 * ib + k] = g
                if not all_on:
                    sqx = _F0
                    sq2 = _F0
                    for k in range(2):
                        xx = IQ1_XM if (bk >> (1 - k)) & 1 else IQ1_XP
                        for j in range(8):
                            q = xx[(np.int64(pos[gi[2 * ib + k], j]) - 1) // 2]
                            wq = F32(w[wo + 8 * k + j] * q)
                            sqx = F32(sqx + F32(wq * xr[xb + 8 * k + j]))
                            sq2 = F32(sq2 + F32(wq * q))
                    if sqx > _F0 and sq2 > _F0:
                        scale = F32(sqx / sq2)
                o[ob + 2 * ib] = gi[2 * ib] & 255
                o[ob + 2 * ib + 1] = gi[2 * ib + 1] & 255
                o[ob + 32 + ib] = (gi[2 * ib] >> 8) | ((gi[2 * ib + 1] >> 8) << 4)
                scales[ib] = scale
                shifts[ib] = bk
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == _F0:
                continue
            d = F32(max_scale / F32(15))
            id = F32(_F1 / d)
            sqx = _F0
            sq2 = _F0
            sc0 = 0
            sc1 = 0
            sc2 = 0
            sc3 = 0
            for ib in range(16):
                l = min(7, max(0, nearest_int(F32(_F05 * F32(F32(id * scales[ib]) - _F1)))))
                s = l << (3 * (ib % 4))
                if ib < 4:
                    sc0 |= s
                elif ib < 8:
                    sc1 |= s
                elif ib < 12:
                    sc2 |= s
                else:
                    sc3 |= s
                o[ob + 32 + ib] |= _MASKS[shifts[ib]]
                m = F32(2 * l + 1)
                for k in range(2):
                    xx = IQ1_XM if (shifts[ib] >> (1 - k)) & 1 else IQ1_XP
                    for j in range(8):
                        q = F32(xx[(np.int64(pos[gi[2 * ib + k], j]) - 1) // 2] * m)
                        e = 16 * ib + 8 * k + j
                        wq = F32(w[e] * q)
                        sqx = F32(sqx + F32(wq * xr[base + e]))
                        sq2 = F32(sq2 + F32(wq * q))
            if sq2 > _F0:
                d = F32(sqx / sq2)
            h = fp32_to_fp16_bits(F32(d * _FUDGE))
            ok = ok and (h & 0x7C00) != 0x7C00
            sc0 |= (h & 0x000F) << 12
            sc1 |= (h & 0x00F0) << 8
            sc2 |= (h & 0x0F00) << 4
            sc3 |= h & 0xF000
            put16(o, ob + 48, sc0)
            put16(o, ob + 50, sc1)
            put16(o, ob + 52, sc2)
            put16(o, ob + 54, sc3)
        if not ok:
            status[r] = OVERFLOW


def quantize_rows(x, xu, out, status, qw):
    """The Numba rows (IQ1_S's grid search tables, built on first use, are passed in)."""
    _rows(x, xu, out, status, qw, *search_tables(GGMLType.IQ1_S))


# -- rows for embeddings (Numba) ------------------------------------------------------------------


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 56
            h = (read_u16(row, o + 48) >> 12) | ((read_u16(row, o + 50) >> 8) & 0x00F0)
            h |= ((read_u16(row, o + 52) >> 4) & 0x0F00) | (read_u16(row, o + 54) & 0xF000)
            d = fp16_bits_to_fp32(h)
            for ib in range(8):
                sc = read_u16(row, o + 48 + 2 * (ib // 2))
                for l in range(4):
                    s = (sc >> (6 * (ib % 2) + 3 * (l // 2))) & 7
                    dl = F32(d * F32(2 * s + 1))
                    nib = np.int64(row[o + 32 + 2 * ib + l // 2]) >> (4 * (l % 2))
                    delta = -IQ1_DELTA if nib & 8 else IQ1_DELTA
                    gr = GRID[np.int64(row[o + 4 * ib + l]) | ((nib & 7) << 8)]
                    for j in range(8):
                        out[k, b * 256 + 32 * ib + 8 * l + j] = F32(dl * F32(F32(gr[j]) + delta))


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    blk = b.reshape(-1).view(BLOCK).reshape(rows, -1)
    _, s, gi, neg = fields(blk)
    return tile_arrays(gi | (neg << 11), None, 2 * s + 1, d_bits(blk["scales"]), wide=True)


@jit_fast(parallel=True)
def mm(out, gi, sc, d, yq, yd, ys):
    """IQ1_M weights x Q8_K activations (the bsums ys unused: the delta is in the virtual grid)."""
    T = out.shape[0]
    ntile = gi.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            for t in range(T):
                tile_plain(out, t, tl, gi, sc, dt, VGRID, K, yq, yd, isub, isum, facc)


SPEC = TypeSpec(
    type=GGMLType.IQ1_M,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    needs_imatrix=False,  # ggml quantizes IQ1_M without one (x² weights); llama-quantize's rules ask for one
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
