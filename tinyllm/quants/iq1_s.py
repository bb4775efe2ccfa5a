"""IQ1_S: 256 weights = 8 sub-blocks of 32, 50 bytes, 1.56 bits per weight
(kquants-family.md §1.10, §2.1).

    +-----+----------------------------+------------------------------------------------+
    | d   | qs[32]: index bits 0..7 of | qh[8] u16, one per sub-block ib:               |
    | f16 | group l of ib at 4ib+l     |   bits 3l..3l+2 index bits 8..10 of group l    |
    |     |                            |   bits 12..14 scale s; bit 15 delta sign       |
    +-----+----------------------------+------------------------------------------------+
    y = f32(f32(d * (2s + 1)) * f32(iq1s_grid[index][j] + delta)),  delta = ±0.125

The quantizer is quantize_row_iq1_s_impl (kquants-family.md §3.13; an imatrix is required):
per sub-block of 32 the values are sorted (stably, as glibc's merge-sort qsort leaves ties)
and every split into levels -1, 0, +1 (shifted by ±1/8) is scored exactly; groups of 8 off
the grid move to the best neighbour.

Kernels (iq_tiles.py): IQ1_S weights x Q8_K activations on the virtual grid 8*grid ± 1
(the delta folded in), K = 1/8, ls = 2s+1 per 32, portable loops only (no AVX2 kernel yet:
the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, fp16_field, out_rows, put16, quiet, read_fp16, read_u16, seq_sum
from .blocks import validate_fp16
from .fp16 import fp32_to_fp16
from .iq_grids import IQ1_DELTA, IQ1_XM, IQ1_XP, grid, iq1_best_neighbours, iq1_find_neighbour, search_tables
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .iq_tiles import grid_dot_ref, iq1_virtual_grid, tile_arrays, tile_plain
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 32), ("qh", "<u2", 8)])
GRID = grid(GGMLType.IQ1_S)  # int8 (2048, 8), values -1, 0, 1
VGRID = iq1_virtual_grid(GRID)  # int8 (4096, 8)
K = F32(0.125)
_F0, _F05, _F1, _F2 = F32(0), F32(0.5), F32(1), F32(2)
_XP, _XM = IQ1_XP, IQ1_XM  # the levels with delta +1/8, -1/8
_EPS, _FLT_MAX, _FUDGE = F32(1e-12), F32(3.4028234663852886e38), F32(1.125)  # GROUP_MAX_EPS_IQ1_S


# -- reference (NumPy) ------------------------------------------------------------------------


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 8), gi (..., 32) 11-bit indices, neg (..., 32) delta signs 0/1."""
    qh = b["qh"].astype(np.int32)
    hi = (qh[..., None] >> (3 * np.arange(4))) & 7  # (..., 8, 4)
    gi = b["qs"].astype(np.int32) | (hi.reshape(*b.shape, 32) << 8)
    neg = np.repeat(qh >> 15, 4, axis=-1)
    return b["d"].astype(F32), (qh >> 12) & 7, gi, neg


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, neg = fields(b)
    dl = (d[:, None] * (2 * s + 1).astype(F32)).astype(F32)  # (nb, 8)
    delta = np.where(neg != 0, -IQ1_DELTA, IQ1_DELTA).astype(F32)  # (nb, 32)
    v = (GRID[gi].astype(F32) + delta[..., None]).astype(F32).reshape(-1, 8, 32)
    return (dl[:, :, None] * v).reshape(-1, QK_K)


def dot_ref(raw, qs, d, bsums=None):
    """IQ1_S x Q8_K: 1/8 Σ_b f32(D*dy) Σ_ib (2s+1) Σ (8*grid ± 1)*q (exact integer sums)."""
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    wd, s, gi, neg = fields(b)
    vals = VGRID[gi | (neg << 11)].astype(np.int32).reshape(*gi.shape[:-1], QK_K)
    return grid_dot_ref(wd, vals, 2 * s + 1, K, qs, d)


# -- quantizer ------------------------------------------------------------------------------------


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq1_s: quantize_row_iq1_s_impl, all sub-blocks side by side (an imatrix is required)."""
    x = as_rows(x, GGMLType.IQ1_S)
    tables = search_tables(GGMLType.IQ1_S)
    pos, kmap = tables[:2]
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    N = nb * 8
    sigma2 = ((_F2 * seq_sum((xb * xb).astype(F32))).astype(F32) / F32(QK_K)).astype(F32)
    qwb = np.broadcast_to(np.asarray(qw, F32).reshape(1, -1, QK_K), (rows, x.shape[1] // QK_K, QK_K)).reshape(nb, QK_K)
    w = (qwb * np.sqrt((sigma2[:, None] + (xb * xb).astype(F32)).astype(F32))).astype(F32).reshape(N, 32)
    xs = xb.reshape(N, 32)
    live = ~(np.abs(xs).max(axis=1) < _EPS)
    order = np.argsort(xs, axis=1, kind="stable")
    ws = np.take_along_axis(w, order, axis=1)
    xo = np.take_along_axis(xs, order, axis=1)
    sumx = np.zeros((N, 33), F32)
    sumw = np.zeros((N, 33), F32)
    for j in range(32):
        sumx[:, j + 1] = sumx[:, j] + (ws[:, j] * xo[:, j]).astype(F32)
        sumw[:, j + 1] = sumw[:, j] + ws[:, j]
    best = np.full(N, -_FLT_MAX, F32)
    scale = np.abs(xs).max(axis=1).astype(F32)
    b1 = np.full(N, -1, np.int64)
    b2 = np.full(N, -1, np.int64)
    shift = np.zeros(N, np.int64)
    for i1 in range(33):
        for i2 in range(i1, 33):
            a, m, c = sumx[:, i1], (sumx[:, i2] - sumx[:, i1]).astype(F32), (sumx[:, 32] - sumx[:, i2]).astype(F32)
            aw, mw, cw = sumw[:, i1], (sumw[:, i2] - sumw[:, i1]).astype(F32), (sumw[:, 32] - sumw[:, i2]).astype(F32)
            for sh, xx in ((1, _XP), (-1, _XM)):
                sqx = ((a * xx[0]).astype(F32) + (m * xx[1]).astype(F32)).astype(F32) + (c * xx[2]).astype(F32)
                sq2 = (((aw * xx[0]).astype(F32) * xx[0]).astype(F32) + ((mw * xx[1]).astype(F32) * xx[1]).astype(F32))
                sq2 = (sq2.astype(F32) + ((cw * xx[2]).astype(F32) * xx[2]).astype(F32)).astype(F32)
                sqx = sqx.astype(F32)
                take = live & (sq2 > 0) & ((sqx * sqx).astype(F32) > (best * sq2).astype(F32))
                scale = np.where(take, (sqx / np.where(take, sq2, _F1)).astype(F32), scale)
                best = np.where(take, (scale * sqx).astype(F32), best)
                b1 = np.where(take, i1, b1)
                b2 = np.where(take, i2, b2)
                shift = np.where(take, sh, shift)
    live &= b1 >= 0
    rank = np.arange(32)[None, :]
    Ls = np.where(rank < b1[:, None], 0, np.where(rank < b2[:, None], 1, 2))  # levels in sorted order
    L = np.zeros((N, 32), np.int64)
    np.put_along_axis(L, order, Ls, axis=1)
    negs = live & (scale < 0)
    L = np.where(negs[:, None], 2 - L, L)
    scale = np.where(negs, -scale, scale).astype(F32)
    shift = np.where(negs, -shift, shift)
    xx = np.where((shift == 1)[:, None], _XP[None], _XM[None]).astype(F32)  # (N, 3)
    u = (L.reshape(N, 4, 8) << (2 * np.arange(8))).sum(axis=2)
    gi = kmap[u].astype(np.int64)
    off = live[:, None] & (gi < 0)
    if off.any():
        n, k = np.nonzero(off)
        gi[n, k] = iq1_best_neighbours(tables, u[n, k], xs.reshape(N, 4, 8)[n, k], w.reshape(N, 4, 8)[n, k], scale[n], xx[n])
        redo = off.any(axis=1)
        lv = (pos[np.maximum(gi, 0)].astype(np.int64) - 1) // 2  # (N, 4, 8)
        q = np.take_along_axis(xx, lv.reshape(N, 32), axis=1)
        sqx = seq_sum(((w * q).astype(F32) * xs).astype(F32))
        sq2 = seq_sum(((w * q).astype(F32) * q).astype(F32))
        upd = redo & (sqx > 0) & (sq2 > 0)
        scale = np.where(upd, (sqx / np.where(upd, sq2, _F1)).astype(F32), scale)
    gi = np.where(live[:, None], gi, 0)
    scale = np.where(live, scale, _F0).astype(F32).reshape(nb, 8)
    shift = np.where(live, shift, 1).reshape(nb, 8)
    qh = np.where(live[:, None], (gi >> 8) << (3 * np.arange(4)), 0).sum(axis=1).reshape(nb, 8)

    max_scale = scale.max(axis=1)
    has = max_scale != 0
    d = (max_scale / F32(15)).astype(F32)
    id = (_F1 / np.where(has, d, _F1)).astype(F32)
    l = np.clip(nearest_int_np((_F05 * ((id[:, None] * scale).astype(F32) - _F1)).astype(F32)), 0, 7)
    l = l | np.where(shift == -1, 8, 0)
    b = np.zeros(nb, BLOCK)
    b["d"] = np.where(has, fp32_to_fp16((d * _FUDGE).astype(F32)), np.float16(0))
    b["qs"] = (gi & 255).reshape(nb, 32)
    b["qh"] = qh | np.where(has[:, None], l << 12, 0)
    validate_fp16(b["d"], x, GGMLType.IQ1_S, "block scale d")
    return out_rows(b, rows)


@jit_exact
def _rows(x, xu, out, status, qw, pos, kmap, start, count, flat):
    w = np.empty(32, np.float32)
    order = np.empty(32, np.int64)
    sumx = np.empty(33, np.float32)
    sumw = np.empty(33, np.float32)
    L = np.empty(32, np.int64)
    gi = np.empty(4, np.int64)
    scales = np.empty(8, np.float32)
    shifts = np.empty(8, np.int64)
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        xr = x[r]
        o = out[r]
        for ibl in range(x.shape[1] // 256):
            base = 256 * ibl
            ob = 50 * ibl
            for i in range(50):
                o[ob + i] = 0
            sumx2 = _F0
            for i in range(256):
                sumx2 = F32(sumx2 + F32(xr[base + i] * xr[base + i]))
            sigma2 = F32(F32(_F2 * sumx2) / F32(256))
            max_scale = _F0
            for ib in range(8):
                xb = base + 32 * ib
                mx = abs(xr[xb])
                for i in range(32):
                    v = xr[xb + i]
                    w[i] = F32(qw[xb + i] * F32(np.sqrt(F32(sigma2 + F32(v * v)))))
                    mx = mx if mx > abs(v) else abs(v)
                scales[ib] = _F0
                shifts[ib] = 1
                if mx < _EPS:
                    continue
                for j in range(32):  # stable insertion sort of the indices by x
                    v = xr[xb + j]
                    k = j
                    while k > 0 and xr[xb + order[k - 1]] > v:
                        order[k] = order[k - 1]
                        k -= 1
                    order[k] = j
                sumx[0] = _F0
                sumw[0] = _F0
                for j in range(32):
                    i = order[j]
                    sumx[j + 1] = F32(sumx[j] + F32(w[i] * xr[xb + i]))
                    sumw[j + 1] = F32(sumw[j] + w[i])
                best = -_FLT_MAX
                scale = mx
                b1 = -1
                b2 = -1
                shift = 0
                for i1 in range(33):
                    for i2 in range(i1, 33):
                        a = sumx[i1]
                        m = F32(sumx[i2] - sumx[i1])
                        c = F32(sumx[32] - sumx[i2])
                        aw = sumw[i1]
                        mw = F32(sumw[i2] - sumw[i1])
                        cw = F32(sumw[32] - sumw[i2])
                        for t in range(2):
                            xx = _XP if t == 0 else _XM
                            sqx = F32(F32(F32(a * xx[0]) + F32(m * xx[1])) + F32(c * xx[2]))
                            sq2 = F32(F32(F32(aw * xx[0]) * xx[0]) + F32(F32(mw * xx[1]) * xx[1]))
                            sq2 = F32(sq2 + F32(F32(cw * xx[2]) * xx[2]))
                            if sq2 > _F0 and F32(sqx * sqx) > F32(best * sq2):
                                scale = F32(sqx / sq2)
                                best = F32(scale * sqx)
                                b1 = i1
                                b2 = i2
                                shift = 1 if t == 0 else -1
                if b1 < 0:
                    continue
                for j in range(32):
                    L[order[j]] = 0 if j < b1 else (1 if j < b2 else 2)
                if scale < _F0:
                    for j in range(32):
                        L[j] = 2 - L[j]
                    scale = -scale
                    shift = -shift
                xx = _XP if shift == 1 else _XM
                all_on = True
                for k in range(4):
                    u = 0
                    for j in range(8):
                        u |= L[8 * k + j] << (2 * j)
                    g = kmap[u]
                    if g < 0:
                        all_on = False
                        g = iq1_find_neighbour(pos, start, count, flat, u, xr, xb + 8 * k, w, 8 * k, scale, xx)
                    gi[k] = g
                if not all_on:
                    sqx = _F0
                    sq2 = _F0
                    for k in range(4):
                        for j in range(8):
                            q = xx[(np.int64(pos[gi[k], j]) - 1) // 2]
                            wq = F32(w[8 * k + j] * q)
                            sqx = F32(sqx + F32(wq * xr[xb + 8 * k + j]))
                            sq2 = F32(sq2 + F32(wq * q))
                    if sqx > _F0 and sq2 > _F0:
                        scale = F32(sqx / sq2)
                h = 0
                for k in range(4):
                    o[ob + 2 + 4 * ib + k] = gi[k] & 255
                    h |= (gi[k] >> 8) << (3 * k)
                put16(o, ob + 34 + 2 * ib, h)
                scales[ib] = scale
                shifts[ib] = shift
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == _F0:
                continue
            d = F32(max_scale / F32(15))
            _, good = fp16_field(o, ob, F32(d * _FUDGE))
            ok = ok and good
            id = F32(_F1 / d)
            for ib in range(8):
                l = min(7, max(0, nearest_int(F32(_F05 * F32(F32(id * scales[ib]) - _F1)))))
                if shifts[ib] == -1:
                    l |= 8
                h = read_u16(o, ob + 34 + 2 * ib) | (l << 12)
                put16(o, ob + 34 + 2 * ib, h)
        if not ok:
            status[r] = OVERFLOW


def quantize_rows(x, xu, out, status, qw):
    """The Numba rows (the grid search tables, built on first use, are passed in)."""
    _rows(x, xu, out, status, qw, *search_tables(GGMLType.IQ1_S))


# -- rows for embeddings (Numba) ------------------------------------------------------------------


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 50
            d = read_fp16(row, o)
            for ib in range(8):
                qh = read_u16(row, o + 34 + 2 * ib)
                dl = F32(d * F32(2 * ((qh >> 12) & 7) + 1))
                delta = -IQ1_DELTA if qh & 0x8000 else IQ1_DELTA
                for l in range(4):
                    gr = GRID[np.int64(row[o + 2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)]
                    for j in range(8):
                        out[k, b * 256 + 32 * ib + 8 * l + j] = F32(dl * F32(F32(gr[j]) + delta))


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    _, s, gi, neg = fields(b.reshape(-1).view(BLOCK).reshape(rows, -1))
    return tile_arrays(gi | (neg << 11), None, 2 * s + 1, fp16_bits(b[:, :, 0:2]), wide=True)


@jit_fast(parallel=True)
def mm(out, gi, sc, d, yq, yd, ys):
    """IQ1_S weights x Q8_K activations (the bsums ys unused: the delta is in the virtual grid)."""
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
    type=GGMLType.IQ1_S,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    needs_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
