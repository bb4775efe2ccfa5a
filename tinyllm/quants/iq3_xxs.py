"""IQ3_XXS: 256 weights = 8 sub-blocks of 32, 98 bytes, 3.06 bits per weight
(kquants-family.md §1.8, §2.1).

    +-----+----------------------------------------+--------------------------------------+
    | d   | qs[64]: grid index (iq3xxs_grid, 256)   | scales_and_signs: LE uint32 per ib   |
    | f16 | per 4 elements, 8 bytes per sub-block   |   bits 7l..7l+6 sign index, group l  |
    |     |                                        |   bits 28..31 scale s                |
    +-----+----------------------------------------+--------------------------------------+
    y = ±f32(f32(f32(d * f32(0.5 + s)) * 0.5) * iq3xxs_grid[index][j])

The quantizer is quantize_row_iq3_xxs_impl(256, ...) (kquants-family.md §3.7, §3.8): as
IQ3_S's (iq3_s.py, whose grid helpers it shares) with even-parity signs (an odd group flips
its least important element), 31 trial scales, refinement of the off-grid groups only.

Kernels (iq_tiles.py): IQ3_XXS weights x Q8_K activations, K = 1/4, ls = 2s+1 per 32,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, fp16_field, out_rows, quiet, read_fp16, read_u32, seq_sum
from .blocks import validate_fp16
from .fp16 import fp32_to_fp16
from .iq3_s import codes, round_group, round_to_grid, sums, sums32
from .iq_grids import KSIGNS, grid, search_tables
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 96)])
GRID = grid(GGMLType.IQ3_XXS)  # uint8 (256, 4)
K = F32(0.25)
TABLES = POS, KMAP, NSTART, NCOUNT, NFLAT = search_tables(GGMLType.IQ3_XXS)  # positions, code -> point, neighbours
_F0, _F05, _F1, _F2, _F15, _F31 = F32(0), F32(0.5), F32(1), F32(2), F32(15), F32(31)
_STEP, _FUDGE, _EPS = F32(0.2), F32(1.0125), F32(1e-8)  # GROUP_MAX_EPS_IQ3_XXS


# -- reference (NumPy) ------------------------------------------------------------------------


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 8), gi (..., 64), sg (..., 32) sign bytes."""
    qs = np.ascontiguousarray(b["qs"])
    aux = qs[..., 64:].copy().view("<u4")  # (..., 8)
    sidx = (aux[..., None] >> (7 * np.arange(4, dtype=np.uint32))) & 127  # (..., 8, 4)
    return b["d"].astype(F32), (aux >> 28).astype(np.int32), qs[..., :64], KSIGNS[sidx].reshape(*b.shape, 32)


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, sg = fields(b)
    db = ((d[:, None] * (_F05 + s.astype(F32))).astype(F32) * _F05).astype(F32)  # (nb, 8)
    v = signed_values(GRID, gi, sg).reshape(-1, 8, 32).astype(F32)
    return (db[:, :, None] * v).reshape(-1, QK_K)


def dot_ref(raw, qs, d, bsums=None):
    """IQ3_XXS x Q8_K: 1/4 Σ_b f32(D*dy) Σ_ib (2s+1) Σ ±grid*q (exact integer sums)."""
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    wd, s, gi, sg = fields(b)
    return grid_dot_ref(wd, signed_values(GRID, gi, sg), 2 * s + 1, K, qs, d)


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq3_xxs: quantize_row_iq3_xxs_impl(256, ...) per super-block, all sub-blocks side by side."""
    x = as_rows(x, GGMLType.IQ3_XXS)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    N = nb * 8
    if qw is None:
        w = (xb * xb).astype(F32)
    else:
        sigma2 = ((_F2 * seq_sum((xb * xb).astype(F32))).astype(F32) / F32(QK_K)).astype(F32)
        qwb = np.broadcast_to(np.asarray(qw, F32).reshape(1, -1, QK_K), (rows, x.shape[1] // QK_K, QK_K)).reshape(nb, QK_K)
        w = (qwb * np.sqrt((sigma2[:, None] + (xb * xb).astype(F32)).astype(F32))).astype(F32)
    w = w.reshape(N, 32)
    waux = np.sqrt(w).reshape(N, 8, 4)
    xs = xb.reshape(N, 4, 8)
    neg = ~(xs >= 0)
    xval = np.where(neg, -xs, xs).astype(F32)
    s = (neg << np.arange(8)).sum(axis=2)  # (N, 4)
    # even parity: an odd group flips the first element of least w*x*x
    odd = neg.sum(axis=2) % 2 == 1
    imin = np.argmin(((w.reshape(N, 4, 8) * xs).astype(F32) * xs).astype(F32), axis=2)
    flip = odd[..., None] & (np.arange(8) == imin[..., None])
    xval = np.where(flip, -xval, xval).reshape(N, 32)
    s = (s ^ np.where(odd, 1 << imin, 0)) & 127
    mx = xval.max(axis=1)
    live = ~(mx < _EPS)
    mxs = np.where(live, mx, _F1).astype(F32)
    x4 = xval.reshape(N, 8, 4)

    best = np.zeros(N, F32)
    scale = (mx / _F15).astype(F32)
    L = np.zeros((N, 8, 4), np.int64)
    on = np.ones((N, 8), bool)
    for step in range(-15, 16):
        id = ((_F15 + (F32(step) * _STEP).astype(F32)).astype(F32) / mxs).astype(F32)
        Laux, on_aux = round_to_grid(TABLES, x4, waux, id, (_F1 / id).astype(F32))
        sumqx, sumq2 = sums(w, xval, Laux)
        take = live & (sumq2 > 0) & ((sumqx * sumqx).astype(F32) > (best * sumq2).astype(F32))
        scale = np.where(take, (sumqx / np.where(take, sumq2, _F1)).astype(F32), scale)
        best = np.where(take, (scale * sumqx).astype(F32), best)
        L = np.where(take[:, None, None], Laux, L)
        on = np.where(take[:, None], on_aux, on)

    refine = live & ~on.all(axis=1) & (scale > 0)
    if refine.any():
        sc = np.where(refine, scale, _F1).astype(F32)
        Lr, _ = round_to_grid(TABLES, x4, waux, (_F1 / sc).astype(F32), sc)
        L = np.where((refine[:, None] & ~on)[..., None], Lr, L)  # only the off-grid groups
        sumqx, sumq2 = sums(w, xval, L)
        upd = refine & (sumq2 > 0)
        scale = np.where(upd, (sumqx / np.where(upd, sumq2, _F1)).astype(F32), scale)
    negs = live & (scale < 0)
    scale = np.where(negs, -scale, scale).astype(F32)
    s = np.where(negs[:, None], ~s & 127, s)
    scale = np.where(live, scale, _F0).astype(F32)

    gi = np.where(live[:, None], KMAP[codes(L)], 0).reshape(nb, 64)
    sas = np.where(live, (s << (7 * np.arange(4))).sum(axis=1), 0).reshape(nb, 8).astype(np.uint32)
    scales = scale.reshape(nb, 8)
    max_scale = scales.max(axis=1)
    has = max_scale != 0
    d = (max_scale / _F31).astype(F32)
    id = (_F1 / np.where(has, d, _F1)).astype(F32)
    l = np.clip(nearest_int_np((_F05 * ((id[:, None] * scales).astype(F32) - _F1)).astype(F32)), 0, 15)
    sas = sas | (l.astype(np.uint32) << 28)
    b = np.zeros(nb, BLOCK)
    b["d"] = np.where(has, fp32_to_fp16((d * _FUDGE).astype(F32)), np.float16(0))
    q = np.concatenate([gi.astype(np.uint8), sas.view(np.uint8).reshape(nb, 32)], axis=1)
    b["qs"] = np.where(has[:, None], q, 0)
    validate_fp16(b["d"], x, GGMLType.IQ3_XXS, "block scale d")
    return out_rows(b, rows)


@jit_exact
def _block(xr, base, qw, o, ob, w, waux, xval, L, Laux, on, on_aux, bsig, scales):
    """quantize_row_iq3_xxs_impl for the super-block at xr[base:base+256] (imatrix slice qw of
    its 256 columns, or empty) into o[ob:ob+98]; returns whether d is finite."""
    for i in range(98):
        o[ob + i] = 0
    sigma2 = _F0
    if qw.shape[0] != 0:
        sumx2 = _F0
        for i in range(256):
            sumx2 = F32(sumx2 + F32(xr[base + i] * xr[base + i]))
        sigma2 = F32(F32(_F2 * sumx2) / F32(256))
    max_scale = _F0
    for ib in range(8):
        xb = base + 32 * ib
        for i in range(32):
            v = xr[xb + i]
            if qw.shape[0] != 0:
                w[i] = F32(qw[32 * ib + i] * F32(np.sqrt(F32(sigma2 + F32(v * v)))))
            else:
                w[i] = F32(v * v)
            waux[i] = F32(np.sqrt(w[i]))
        for k in range(4):
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
            bsig[k] = s & 127
        mx = xval[0]
        for i in range(1, 32):
            mx = mx if mx > xval[i] else xval[i]
        for i in range(32):
            L[i] = 0
        if mx < _EPS:
            scales[ib] = _F0
            continue
        best = _F0
        scale = F32(mx / _F15)
        for k in range(8):
            on[k] = True
        for step in range(-15, 16):
            id = F32(F32(_F15 + F32(F32(step) * _STEP)) / mx)
            this_scale = F32(_F1 / id)
            for k in range(8):
                on_aux[k] = round_group(POS, KMAP, NSTART, NCOUNT, NFLAT, xval, waux, 4 * k, id, this_scale, Laux)
            sumqx, sumq2 = sums32(w, xval, Laux)
            if sumq2 > _F0 and F32(sumqx * sumqx) > F32(best * sumq2):
                scale = F32(sumqx / sumq2)
                best = F32(scale * sumqx)
                for i in range(32):
                    L[i] = Laux[i]
                for k in range(8):
                    on[k] = on_aux[k]
        n_off = 0
        for k in range(8):
            if not on[k]:
                n_off += 1
        if n_off > 0 and scale > _F0:
            id = F32(_F1 / scale)
            for k in range(8):
                if not on[k]:
                    round_group(POS, KMAP, NSTART, NCOUNT, NFLAT, xval, waux, 4 * k, id, scale, L)
            sumqx, sumq2 = sums32(w, xval, L)
            if sumq2 > _F0:
                scale = F32(sumqx / sumq2)
        if scale < _F0:
            scale = -scale
            for k in range(4):
                bsig[k] = ~bsig[k] & 127
        for k in range(8):
            u = 0
            for i in range(4):
                u |= L[4 * k + i] << (3 * i)
            o[ob + 2 + 8 * ib + k] = KMAP[u]
        sas = bsig[0] | (bsig[1] << 7) | (bsig[2] << 14) | (bsig[3] << 21)
        for j in range(4):
            o[ob + 66 + 4 * ib + j] = (sas >> (8 * j)) & 255
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale
    if max_scale == _F0:
        for i in range(98):
            o[ob + i] = 0
        return True
    d = F32(max_scale / _F31)
    _, ok = fp16_field(o, ob, F32(d * _FUDGE))
    id = F32(_F1 / d)
    for ib in range(8):
        l = min(15, max(0, nearest_int(F32(_F05 * F32(F32(id * scales[ib]) - _F1)))))
        o[ob + 66 + 4 * ib + 3] |= l << 4
    return ok


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    w = np.empty(32, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    L = np.empty(32, np.int64)
    Laux = np.empty(32, np.int64)
    on = np.empty(8, np.bool_)
    on_aux = np.empty(8, np.bool_)
    bsig = np.empty(4, np.int64)
    scales = np.empty(8, np.float32)
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        for ibl in range(x.shape[1] // 256):
            qwb = qw[256 * ibl : 256 * ibl + 256] if qw.shape[0] != 0 else qw
            good = _block(x[r], 256 * ibl, qwb, out[r], 98 * ibl, w, waux, xval, L, Laux, on, on_aux, bsig, scales)
            ok = ok and good
        if not ok:
            status[r] = OVERFLOW


# -- rows for embeddings (Numba) ------------------------------------------------------------------


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 98
            d = read_fp16(row, o)
            for ib in range(8):
                p = o + 66 + 4 * ib
                a = read_u32(row, p)
                db = F32(F32(d * F32(_F05 + F32(a >> 28))) * _F05)
                for l in range(4):
                    s = np.int64(KSIGNS[(a >> (7 * l)) & 127])
                    for h in range(2):
                        gr = GRID[np.int64(row[o + 2 + 8 * ib + 2 * l + h])]
                        for j in range(4):
                            y = F32(db * F32(gr[j]))
                            out[k, b * 256 + 32 * ib + 8 * l + 4 * h + j] = -y if (s >> (4 * h + j)) & 1 else y


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    _, s, gi, sg = fields(b.reshape(-1).view(BLOCK).reshape(rows, -1))
    return tile_arrays(gi, sg, 2 * s + 1, fp16_bits(b[:, :, 0:2]), wide=False)


@jit_fast(parallel=True)
def mm(out, gi, sg, sc, d, yq, yd, ys):
    """IQ3_XXS weights x Q8_K activations (the bsums ys unused)."""
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
    type=GGMLType.IQ3_XXS,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sg", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
    max_quantization_error=0.0050,  # test-quantize-fns: MAX_QUANTIZATION_TOTAL_ERROR_3BITS_XXS
)
