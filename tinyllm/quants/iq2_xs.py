"""IQ2_XS: 256 weights = 8 sub-blocks of 32, 74 bytes, 2.31 bits per weight
(kquants-family.md §1.6, §2.1).

    +-----+---------------------------------------------+---------------------------+
    | d   | qs[32] u16: qs[4ib+l] for group l of ib      | scales[8]: byte ib        |
    | f16 |   bits 0..8 grid index (iq2xs_grid, 512)     |   lo nibble: groups 0, 1  |
    |     |   bits 9..15 sign index (ksigns_iq2xs)       |   hi nibble: groups 2, 3  |
    +-----+---------------------------------------------+---------------------------+
    y = ±f32(f32(f32(d * f32(0.5 + s)) * 0.25) * iq2xs_grid[index][j]),  s per 16 elements

The quantizer is quantize_row_iq2_xs_impl (kquants-family.md §3.7, §3.11; an imatrix is
required): per 16 elements, 19 trial scales, groups of 8 rounded to the grid or moved to the
best neighbour; the fit (`iq2_fit_ref` / `iq2_fit_block`) is shared with IQ2_XXS and IQ2_S.

Kernels (iq_tiles.py): IQ2_XS weights x Q8_K activations, K = 1/8, ls = 2s+1 per 16,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
from typing import NamedTuple

import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, fp16_field, out_rows, put16, quiet, read_fp16, read_u16, seq_sum
from .blocks import validate_fp16
from .fit import make_qp_quants, make_qp_quants_rows_ref
from .fp16 import fp32_to_fp16
from .iq_grids import KSIGNS, best_neighbours, find_neighbour, grid, search_tables
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "<u2", 32), ("scales", "u1", 8)])
GRID = grid(GGMLType.IQ2_XS)  # uint8 (512, 8)
K = F32(0.125)
_F0, _F025, _F05, _F1 = F32(0), F32(0.25), F32(0.5), F32(1)


# -- reference (NumPy) ------------------------------------------------------------------------


def scales16(scales: np.ndarray) -> np.ndarray:
    """scales (..., 8) -> the 4-bit s of each 16 elements (..., 16): lo nibble, then hi."""
    return np.stack([scales & 15, scales >> 4], axis=-1).reshape(*scales.shape[:-1], 16).astype(np.int32)


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 16), gi (..., 32), sg (..., 32) sign bytes."""
    q = b["qs"].astype(np.int32)
    return b["d"].astype(F32), scales16(b["scales"]), q & 511, KSIGNS[q >> 9]


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, sg = fields(b)
    db = ((d[:, None] * (_F05 + s.astype(F32))).astype(F32) * _F025).astype(F32)  # (nb, 16)
    v = signed_values(GRID, gi, sg).reshape(-1, 16, 16).astype(F32)
    return (db[:, :, None] * v).reshape(-1, QK_K)


def dot_ref(raw, qs, d, bsums=None):
    """IQ2_XS x Q8_K: 1/8 Σ_b f32(D*dy) Σ_16 (2s+1) Σ ±grid*q (exact integer sums)."""
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    wd, s, gi, sg = fields(b)
    return grid_dot_ref(wd, signed_values(GRID, gi, sg), 2 * s + 1, K, qs, d)


# -- the IQ2 grid fit (shared with iq2_xxs.py and iq2_s.py) ----------------------------------------
#
# quantize_row_iq2_{xxs,xs,s}_impl (kquants-family.md §3.7, §3.10-3.12) differ only in these
# parameters; each type module packs the result into its own bytes.


class Iq2Params(NamedTuple):
    type: GGMLType
    bs: int  # sub-block length (32 or 16): one scale each; groups of 8 share a grid point
    parity: bool  # even-parity signs (7 stored bits) or 8 explicit bits
    sigma_factor: float  # sigma2 = factor * Σx² / 256
    eps: float  # a sub-block whose max |x| is below it stays zero
    qp_start: bool  # IQ2_XXS: initial scale from make_qp_quants, trials around 3 * it, all groups refined
    steps: int  # trial scales is = -steps..steps, 0.1 apart
    fudge: float  # d field = fp16(d * fudge)


def _codes8(L):
    return (L.astype(np.int64) << (2 * np.arange(8))).sum(axis=-1)


def _round8(tables, xval, waux, id, scale):
    """Levels of each group of 8 at 1/id, moved to the best neighbour (at `scale`) when off the
    grid -> (levels (N, G, 8), on_grid (N, G))."""
    pos, kmap = tables[:2]
    l = np.clip(nearest_int_np((_F05 * ((id[:, None, None] * xval).astype(F32) - _F1)).astype(F32)), 0, 2)
    u = _codes8(l)
    on = kmap[u] >= 0
    if not on.all():
        n, k = np.nonzero(~on)
        best = best_neighbours(tables, u[n, k], xval[n, k], waux[n, k], scale[n])
        l[n, k] = (pos[best].astype(np.int64) - 1) // 2
    return l, on


def _sums(w, xval, L):
    q = (2 * L + 1).astype(F32).reshape(w.shape)
    return seq_sum((w * xval).astype(F32) * q), seq_sum((w * q).astype(F32) * q)


@quiet
def iq2_fit_ref(x: np.ndarray, qw, P: Iq2Params):
    """The grid fit of every sub-block of rows x (rows, n), side by side (NumPy) ->
    (gi (nb, nsub, G) grid points, signs (nb, nsub, G), l (nb, nsub) 4-bit scales,
    d f32 (nb,), has (nb,) max_scale != 0, live (nb, nsub) sub-blocks that were fitted)."""
    tables = search_tables(P.type)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    nsub, G = QK_K // P.bs, P.bs // 8
    N = nb * nsub
    x2 = (xb * xb).astype(F32)
    sumx2 = seq_sum(x2)
    if P.sigma_factor != 1:
        sumx2 = (F32(P.sigma_factor) * sumx2).astype(F32)
    sigma2 = (sumx2 / F32(QK_K)).astype(F32)
    if qw is None:
        w = ((F32(0.25) * sigma2).astype(F32)[:, None] + x2).astype(F32)
    else:
        qwb = np.broadcast_to(np.asarray(qw, F32).reshape(1, -1, QK_K), (rows, x.shape[1] // QK_K, QK_K)).reshape(nb, QK_K)
        w = (qwb * np.sqrt((sigma2[:, None] + x2).astype(F32))).astype(F32)
    w = w.reshape(N, P.bs)
    waux = np.sqrt(w).reshape(N, G, 8)
    xs = xb.reshape(N, G, 8)
    neg = ~(xs >= 0)
    xval = np.where(neg, -xs, xs).astype(F32)
    s = (neg << np.arange(8)).sum(axis=2)  # (N, G)
    if P.parity:  # an odd group flips the first element of least w*x*x
        odd = neg.sum(axis=2) % 2 == 1
        imin = np.argmin(((w.reshape(N, G, 8) * xs).astype(F32) * xs).astype(F32), axis=2)
        xval = np.where(odd[..., None] & (np.arange(8) == imin[..., None]), -xval, xval)
        s = (s ^ np.where(odd, 1 << imin, 0)) & 127
    xval = xval.reshape(N, P.bs)
    mx = xval.max(axis=1)
    live = ~(mx < F32(P.eps))
    if P.qp_start:
        scale, _ = make_qp_quants_rows_ref(4, xval, w)
        max_ref = (scale * F32(3)).astype(F32)
        live &= max_ref > 0
    else:
        max_ref = mx
        scale = (mx / F32(5)).astype(F32)
    max_ref = np.where(live, max_ref, _F1).astype(F32)
    x8 = xval.reshape(N, G, 8)

    best = np.zeros(N, F32)
    L = np.zeros((N, G, 8), np.int64)
    on = np.ones((N, G), bool)
    for step in range(-P.steps, P.steps + 1):
        id = ((F32(5) + (F32(step) * F32(0.1)).astype(F32)).astype(F32) / max_ref).astype(F32)
        Laux, on_aux = _round8(tables, x8, waux, id, (_F1 / id).astype(F32))
        sumqx, sumq2 = _sums(w, xval, Laux)
        take = live & (sumq2 > 0) & ((sumqx * sumqx).astype(F32) > (best * sumq2).astype(F32))
        scale = np.where(take, (sumqx / np.where(take, sumq2, _F1)).astype(F32), scale)
        best = np.where(take, (scale * sumqx).astype(F32), best)
        L = np.where(take[:, None, None], Laux, L)
        on = np.where(take[:, None], on_aux, on)

    refine = live & (scale > 0) & (True if P.qp_start else ~on.all(axis=1))
    if refine.any():
        sc = np.where(refine, scale, _F1).astype(F32)
        Lr, _ = _round8(tables, x8, waux, (_F1 / sc).astype(F32), sc)
        groups = refine[:, None] if P.qp_start else refine[:, None] & ~on
        L = np.where(groups[..., None], Lr, L)
        sumqx, sumq2 = _sums(w, xval, L)
        upd = refine & (sumq2 > 0)
        scale = np.where(upd, (sumqx / np.where(upd, sumq2, _F1)).astype(F32), scale)
    negs = live & (scale < 0)
    scale = np.where(negs, -scale, scale).astype(F32)
    s = np.where(negs[:, None], ~s & (127 if P.parity else 255), s)
    scale = np.where(live, scale, _F0).astype(F32).reshape(nb, nsub)

    gi = np.where(live[:, None], tables[1][_codes8(L)], 0).reshape(nb, nsub, G)
    s = np.where(live[:, None], s, 0).reshape(nb, nsub, G)
    max_scale = scale.max(axis=1)
    has = max_scale != 0
    d = (max_scale / F32(31)).astype(F32)
    id = (_F1 / np.where(has, d, _F1)).astype(F32)
    l = np.clip(nearest_int_np((_F05 * ((id[:, None] * scale).astype(F32) - _F1)).astype(F32)), 0, 15)
    dfield = (d * F32(P.fudge)).astype(F32) if P.fudge != 1 else d
    return gi, s, np.where(has[:, None], l, 0), dfield, has, live.reshape(nb, nsub)


@jit_exact
def _round8_nb(pos, kmap, start, count, flat, xval, waux, o, id, scale, L):
    """Levels of the group of 8 at o at 1/id into L[o:o+8], moved to the best neighbour if off
    the grid; returns whether the rounded code was on the grid."""
    u = 0
    for i in range(8):
        l = min(2, max(0, nearest_int(F32(_F05 * F32(F32(id * xval[o + i]) - _F1)))))
        L[o + i] = l
        u |= l << (2 * i)
    if kmap[u] >= 0:
        return True
    find_neighbour(pos, start, count, flat, u, xval, waux, o, scale, L)
    return False


@jit_exact
def _sums_nb(w, xval, L, n):
    sumqx = _F0
    sumq2 = _F0
    for i in range(n):
        q = F32(2 * L[i] + 1)
        sumqx = F32(sumqx + F32(F32(w[i] * xval[i]) * q))
        sumq2 = F32(sumq2 + F32(F32(w[i] * q) * q))
    return sumqx, sumq2


@jit_exact
def iq2_fit_block(xr, base, qw, pos, kmap, start, count, flat, bs, parity, sigma_factor, eps, qp_start, steps,
                  w, waux, xval, L, Laux, Lq, on, on_aux, scales, gi, sg, live):
    """The grid fit of the super-block at xr[base:base+256] (imatrix slice qw of its columns, or
    empty): fills gi (nsub, G), sg (nsub, G), live (nsub,), scales (nsub,); returns max_scale."""
    nsub = 256 // bs
    G = bs // 8
    sumx2 = _F0
    for i in range(256):
        sumx2 = F32(sumx2 + F32(xr[base + i] * xr[base + i]))
    if sigma_factor != 1:
        sumx2 = F32(F32(sigma_factor) * sumx2)
    sigma2 = F32(sumx2 / F32(256))
    max_scale = _F0
    for ib in range(nsub):
        xb = base + bs * ib
        for i in range(bs):
            L[i] = 0
            v = xr[xb + i]
            if qw.shape[0] != 0:
                w[i] = F32(qw[bs * ib + i] * F32(np.sqrt(F32(sigma2 + F32(v * v)))))
            else:
                w[i] = F32(F32(F32(0.25) * sigma2) + F32(v * v))
            waux[i] = F32(np.sqrt(w[i]))
        for k in range(G):
            s = 0
            nflip = 0
            for i in range(8):
                v = xr[xb + 8 * k + i]
                if v >= 0:
                    xval[8 * k + i] = v
                else:
                    xval[8 * k + i] = -v
                    nflip += 1
                    s |= 1 << i
            if parity:
                if nflip % 2:
                    imin = 0
                    v = xr[xb + 8 * k]
                    vmin = F32(F32(w[8 * k] * v) * v)
                    for i in range(1, 8):
                        v = xr[xb + 8 * k + i]
                        ax = F32(F32(w[8 * k + i] * v) * v)
                        if ax < vmin:
                            vmin = ax
                            imin = i
                    xval[8 * k + imin] = -xval[8 * k + imin]
                    s ^= 1 << imin
                s &= 127
            sg[ib, k] = s
        mx = xval[0]
        for i in range(1, bs):
            mx = mx if mx > xval[i] else xval[i]
        live[ib] = False
        scales[ib] = _F0
        if mx < F32(eps):
            continue
        if qp_start:
            scale = make_qp_quants(bs, 4, xval, 0, Lq, 0, w, 0)
            max_ref = F32(scale * F32(3))
            if max_ref <= _F0:
                continue
        else:
            max_ref = mx
            scale = F32(mx / F32(5))
        live[ib] = True
        best = _F0
        for k in range(G):
            on[k] = True
        for step in range(-steps, steps + 1):
            id = F32(F32(F32(5) + F32(F32(step) * F32(0.1))) / max_ref)
            this_scale = F32(_F1 / id)
            for k in range(G):
                on_aux[k] = _round8_nb(pos, kmap, start, count, flat, xval, waux, 8 * k, id, this_scale, Laux)
            sumqx, sumq2 = _sums_nb(w, xval, Laux, bs)
            if sumq2 > _F0 and F32(sumqx * sumqx) > F32(best * sumq2):
                scale = F32(sumqx / sumq2)
                best = F32(scale * sumqx)
                for i in range(bs):
                    L[i] = Laux[i]
                for k in range(G):
                    on[k] = on_aux[k]
        n_off = 0
        for k in range(G):
            if not on[k]:
                n_off += 1
        if (qp_start or n_off > 0) and scale > _F0:
            id = F32(_F1 / scale)
            for k in range(G):
                if qp_start or not on[k]:
                    _round8_nb(pos, kmap, start, count, flat, xval, waux, 8 * k, id, scale, L)
            sumqx, sumq2 = _sums_nb(w, xval, L, bs)
            if sumq2 > _F0:
                scale = F32(sumqx / sumq2)
        if scale < _F0:
            scale = -scale
            for k in range(G):
                sg[ib, k] = ~sg[ib, k] & (127 if parity else 255)
        for k in range(G):
            u = 0
            for i in range(8):
                u |= L[8 * k + i] << (2 * i)
            gi[ib, k] = kmap[u]
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale
    return max_scale


@jit_exact
def iq2_finish(o, ob, max_scale, scales, l, fudge):
    """d = max_scale/31 into the fp16 field at o[ob] (times fudge) and the 4-bit sub-block
    scales into l; returns (has, whether d is finite). A block of zero max_scale keeps d = 0."""
    if max_scale == _F0:
        for ib in range(l.shape[0]):
            l[ib] = 0
        return False, True
    d = F32(max_scale / F32(31))
    _, ok = fp16_field(o, ob, F32(d * F32(fudge)) if fudge != 1 else d)
    id = F32(_F1 / d)
    for ib in range(l.shape[0]):
        l[ib] = min(15, max(0, nearest_int(F32(_F05 * F32(F32(id * scales[ib]) - _F1)))))
    return True, ok


@jit_exact
def iq2_scratch(bs):
    nsub, G = 256 // bs, bs // 8
    return (np.empty(bs, np.float32), np.empty(bs, np.float32), np.empty(bs, np.float32), np.zeros(bs, np.int64),
            np.zeros(bs, np.int64), np.zeros(bs, np.uint8), np.empty(G, np.bool_), np.empty(G, np.bool_),
            np.empty(nsub, np.float32), np.zeros((nsub, G), np.int64), np.zeros((nsub, G), np.int64),
            np.zeros(nsub, np.bool_), np.zeros(nsub, np.int64))


# -- IQ2_XS bytes ---------------------------------------------------------------------------------

P = Iq2Params(GGMLType.IQ2_XS, bs=16, parity=True, sigma_factor=1.0, eps=1e-15, qp_start=False, steps=9, fudge=1.0)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq2_xs: quantize_row_iq2_xs_impl (an imatrix is required)."""
    x = as_rows(x, GGMLType.IQ2_XS)
    gi, s, l, d, has, _ = iq2_fit_ref(x, qw, P)
    b = np.zeros(gi.shape[0], BLOCK)
    b["d"] = np.where(has, fp32_to_fp16(d), np.float16(0))
    b["qs"] = np.where(has[:, None], (gi | (s << 9)).reshape(-1, 32), 0)
    b["scales"] = l[:, 0::2] | (l[:, 1::2] << 4)
    validate_fp16(b["d"], x, GGMLType.IQ2_XS, "block scale d")
    return out_rows(b, x.shape[0])


@jit_exact
def _rows(x, xu, out, status, qw, pos, kmap, start, count, flat):
    w, waux, xval, L, Laux, Lq, on, on_aux, scales, gi, sg, live, l = iq2_scratch(16)
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        o = out[r]
        for ibl in range(x.shape[1] // 256):
            qwb = qw[256 * ibl : 256 * ibl + 256] if qw.shape[0] != 0 else qw
            max_scale = iq2_fit_block(x[r], 256 * ibl, qwb, pos, kmap, start, count, flat, 16, True, 1.0, 1e-15, False,
                                      9, w, waux, xval, L, Laux, Lq, on, on_aux, scales, gi, sg, live)
            ob = 74 * ibl
            for i in range(74):
                o[ob + i] = 0
            has, good = iq2_finish(o, ob, max_scale, scales, l, 1.0)
            ok = ok and good
            if has:
                for ib in range(16):
                    for k in range(2):
                        q = gi[ib, k] | (sg[ib, k] << 9) if live[ib] else 0
                        put16(o, ob + 2 + 4 * ib + 2 * k, q)
                for ib in range(8):
                    o[ob + 66 + ib] = l[2 * ib] | (l[2 * ib + 1] << 4)
        if not ok:
            status[r] = OVERFLOW


def quantize_rows(x, xu, out, status, qw):
    """The Numba rows (the grid search tables, built on first use, are passed in)."""
    _rows(x, xu, out, status, qw, *search_tables(GGMLType.IQ2_XS))


# -- rows for embeddings (Numba) ------------------------------------------------------------------


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 74
            d = read_fp16(row, o)
            for g in range(32):
                q = read_u16(row, o + 2 + 2 * g)
                sc = np.int64(row[o + 66 + g // 4]) >> (4 * ((g % 4) // 2))
                db = F32(F32(d * F32(_F05 + F32(sc & 15))) * _F025)
                gr = GRID[q & 511]
                s = np.int64(KSIGNS[q >> 9])
                for j in range(8):
                    y = F32(db * F32(gr[j]))
                    out[k, b * 256 + 8 * g + j] = -y if (s >> j) & 1 else y


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    _, s, gi, sg = fields(b.reshape(-1).view(BLOCK).reshape(rows, -1))
    return tile_arrays(gi, sg, 2 * s + 1, fp16_bits(b[:, :, 0:2]), wide=True)


@jit_fast(parallel=True)
def mm(out, gi, sg, sc, d, yq, yd, ys):
    """IQ2_XS weights x Q8_K activations (the bsums ys unused)."""
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
                tile_signed(out, t, tl, gi, sg, sc, dt, GRID, K, yq, yd, isub, isum, facc)


SPEC = TypeSpec(
    type=GGMLType.IQ2_XS,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    needs_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sg", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
