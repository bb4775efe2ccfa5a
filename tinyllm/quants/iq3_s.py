"""IQ3_S: 256 weights = 8 sub-blocks of 32, 110 bytes, 3.44 bits per weight
(kquants-family.md §1.9, §2.1).

    +-----+---------------+-------------------+------------------+-----------------------+
    | d   | qs[64]: index | qh[8]: byte ib,   | signs[32]: byte  | scales[4]: byte ib/2, |
    | f16 | bits 0..7 per | bit k = index bit | 4ib+l = explicit | lo nibble: even ib,   |
    |     | 4 elements    | 8 of qs[8ib+k]    | signs, group l   | hi nibble: odd ib     |
    +-----+---------------+-------------------+------------------+-----------------------+
    y = ±f32(f32(d * (1 + 2s)) * iq3s_grid[index][j])

The quantizer is quantize_row_iq3_s_impl(32, ...) (kquants-family.md §3.7, §3.9): per
sub-block, 19 trial scales; each group of 4 rounded to the nearest level, moved to the best
of its grid neighbours when off the grid (iq_grids.search_tables); optional imatrix.

Kernels (iq_tiles.py): IQ3_S weights x Q8_K activations, K = 1, ls = 2s+1 per 32,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, fp16_field, out_rows, quiet, read_fp16, seq_sum, validate_fp16
from .fp16 import fp32_to_fp16
from .iq_grids import best_neighbours, find_neighbour, grid, search_tables
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 64), ("qh", "u1", 8), ("signs", "u1", 32), ("scales", "u1", 4)])
GRID = grid(GGMLType.IQ3_S)  # uint8 (512, 4)
K = F32(1.0)
TABLES = POS, KMAP, NSTART, NCOUNT, NFLAT = search_tables(GGMLType.IQ3_S)  # positions, code -> point, neighbours
_F0, _F05, _F1, _F2, _F15, _F31 = F32(0), F32(0.5), F32(1), F32(2), F32(15), F32(31)
_STEP, _FUDGE = F32(0.2), F32(1.033)


# -- reference (NumPy) ------------------------------------------------------------------------


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 8), gi (..., 64), sg (..., 32) sign bytes."""
    hi = (b["qh"][..., None].astype(np.int32) >> np.arange(8)) & 1  # (..., 8, 8)
    gi = b["qs"].astype(np.int32) | (hi.reshape(*b.shape, 64) << 8)
    s = np.stack([b["scales"] & 15, b["scales"] >> 4], axis=-1).reshape(*b.shape, 8).astype(np.int32)
    return b["d"].astype(F32), s, gi, b["signs"]


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, sg = fields(b)
    db = (d[:, None] * (1 + 2 * s).astype(F32)).astype(F32)  # (nb, 8)
    v = signed_values(GRID, gi, sg).reshape(-1, 8, 32).astype(F32)
    return (db[:, :, None] * v).reshape(-1, QK_K)


def dot_ref(raw, qs, d, bsums=None):
    """IQ3_S x Q8_K: Σ_b f32(D*dy) Σ_ib (2s+1) Σ ±grid*q (exact integer sums)."""
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    wd, s, gi, sg = fields(b)
    return grid_dot_ref(wd, signed_values(GRID, gi, sg), 2 * s + 1, K, qs, d)


def codes(L: np.ndarray) -> np.ndarray:
    """levels (..., 4) -> code Σ l_i << 3i."""
    return (L.astype(np.int64) << (3 * np.arange(4))).sum(axis=-1)


def round_to_grid(tables, xval, waux, id, scale):
    """Levels of each group of 4 at 1/id, moved to the best neighbour (at `scale`) when off
    the grid (tables: iq_grids.search_tables) -> (levels (N, 8, 4), on_grid (N, 8))."""
    pos, kmap = tables[:2]
    l = np.clip(nearest_int_np((_F05 * ((id[:, None, None] * xval).astype(F32) - _F1)).astype(F32)), 0, 7)
    u = codes(l)
    on = kmap[u] >= 0
    if not on.all():
        n, k = np.nonzero(~on)
        best = best_neighbours(tables, u[n, k], xval[n, k], waux[n, k], scale[n])
        l[n, k] = (pos[best].astype(np.int64) - 1) // 2
    return l, on


def sums(w, xval, L):
    """Σ w*xval*q and Σ w*q*q over each row (sequential float32), q = 2L+1."""
    q = (2 * L + 1).astype(F32).reshape(w.shape)
    return seq_sum((w * xval.reshape(w.shape)).astype(F32) * q), seq_sum((w * q).astype(F32) * q)


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq3_s: quantize_row_iq3_s_impl(32, ...) per super-block, all sub-blocks side by side."""
    x = as_rows(x, GGMLType.IQ3_S)
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
    xs = xb.reshape(N, 32)
    neg = ~(xs >= 0)
    xval = np.where(neg, -xs, xs).astype(F32)
    signs = (neg.reshape(N, 4, 8) << np.arange(8)).sum(axis=2).astype(np.uint8)
    mx = xval.max(axis=1)
    live = mx != 0  # a sub-block of zeros is skipped (and shifts the qs / signs after it)
    mxs = np.where(live, mx, _F1).astype(F32)
    x4 = xval.reshape(N, 8, 4)

    best = np.zeros(N, F32)
    scale = (mx / _F15).astype(F32)
    L = np.zeros((N, 8, 4), np.int64)
    on = np.zeros((N, 8), bool)
    for step in range(-9, 10):
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
        L = np.where(refine[:, None, None], Lr, L)
        sumqx, sumq2 = sums(w, xval, L)
        upd = refine & (sumq2 > 0)
        scale = np.where(upd, (sumqx / np.where(upd, sumq2, _F1)).astype(F32), scale)
    flip = live & (scale < 0)
    scale = np.where(flip, -scale, scale).astype(F32)
    signs = np.where(flip[:, None], ~signs, signs)
    scale = np.where(live, scale, _F0).astype(F32)

    gi = KMAP[codes(L)].reshape(nb, 8, 8)  # (block, sub-block, group)
    b = np.zeros(nb, BLOCK)
    live = live.reshape(nb, 8)
    b["qh"] = np.where(live, ((gi >> 8) << np.arange(8)).sum(axis=2), 0)
    slot = np.cumsum(live, axis=1) - 1  # where C's advancing qs / signs pointers put each sub-block
    blk, ib = np.nonzero(live)
    qs = np.zeros((nb, 8, 8), np.uint8)
    sg = np.zeros((nb, 8, 4), np.uint8)
    qs[blk, slot[blk, ib]] = gi[blk, ib] & 255
    sg[blk, slot[blk, ib]] = signs.reshape(nb, 8, 4)[blk, ib]
    b["qs"] = qs.reshape(nb, 64)
    b["signs"] = sg.reshape(nb, 32)

    scales = scale.reshape(nb, 8)
    max_scale = scales.max(axis=1)
    has = max_scale != 0
    d = (max_scale / _F31).astype(F32)
    b["d"] = np.where(has, fp32_to_fp16((d * _FUDGE).astype(F32)), np.float16(0))
    id = (_F1 / np.where(has, d, _F1)).astype(F32)
    l = np.clip(nearest_int_np((_F05 * ((id[:, None] * scales).astype(F32) - _F1)).astype(F32)), 0, 15)
    l = np.where(has[:, None], l, 0)
    b["scales"] = (l[:, 0::2] | (l[:, 1::2] << 4)).astype(np.uint8)
    validate_fp16(b["d"], x, GGMLType.IQ3_S, "block scale d")
    return out_rows(b, rows)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def round_group(pos, kmap, start, count, flat, xval, waux, o, id, scale, L):
    """Levels of the group of 4 at o at 1/id into L[o:o+4], moved to the best neighbour if off
    the grid; returns whether the rounded code was on the grid."""
    u = 0
    for i in range(4):
        l = min(7, max(0, nearest_int(F32(_F05 * F32(F32(id * xval[o + i]) - _F1)))))
        L[o + i] = l
        u |= l << (3 * i)
    if kmap[u] >= 0:
        return True
    find_neighbour(pos, start, count, flat, u, xval, waux, o, scale, L)
    return False


@jit_exact
def sums32(w, xval, L):
    sumqx = _F0
    sumq2 = _F0
    for i in range(32):
        q = F32(2 * L[i] + 1)
        sumqx = F32(sumqx + F32(F32(w[i] * xval[i]) * q))
        sumq2 = F32(sumq2 + F32(F32(w[i] * q) * q))
    return sumqx, sumq2


@jit_exact
def _block(xr, base, qw, o, ob, w, waux, xval, L, Laux, on, on_aux, bsig, scales):
    """quantize_row_iq3_s_impl for the super-block at xr[base:base+256] (imatrix slice qw of
    its 256 columns, or empty) into o[ob:ob+110]; returns whether d is finite."""
    for i in range(110):
        o[ob + i] = 0
    sigma2 = _F0
    if qw.shape[0] != 0:
        sumx2 = _F0
        for i in range(256):
            sumx2 = F32(sumx2 + F32(xr[base + i] * xr[base + i]))
        sigma2 = F32(F32(_F2 * sumx2) / F32(256))
    qs_p = ob + 2
    sg_p = ob + 74
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
            for i in range(8):
                v = xr[xb + 8 * k + i]
                if v >= 0:
                    xval[8 * k + i] = v
                else:
                    xval[8 * k + i] = -v
                    s |= 1 << i
            bsig[k] = s
        mx = xval[0]
        for i in range(1, 32):
            mx = mx if mx > xval[i] else xval[i]
        for i in range(32):
            L[i] = 0
        if mx == _F0:
            scales[ib] = _F0
            continue  # as in C, qs_p / sg_p do not advance
        best = _F0
        scale = F32(mx / _F15)
        for k in range(8):
            on[k] = False
        for step in range(-9, 10):
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
                round_group(POS, KMAP, NSTART, NCOUNT, NFLAT, xval, waux, 4 * k, id, scale, L)
            sumqx, sumq2 = sums32(w, xval, L)
            if sumq2 > _F0:
                scale = F32(sumqx / sumq2)
        if scale < _F0:
            scale = -scale
            for k in range(4):
                bsig[k] = ~bsig[k] & 255
        for k in range(8):
            u = 0
            for i in range(4):
                u |= L[4 * k + i] << (3 * i)
            g = KMAP[u]
            o[qs_p + k] = g & 255
            o[ob + 66 + ib] |= (g >> 8) << k
        qs_p += 8
        for k in range(4):
            o[sg_p + k] = bsig[k]
        sg_p += 4
        scales[ib] = scale
        max_scale = max_scale if max_scale > scale else scale
    if max_scale == _F0:
        return True
    d = F32(max_scale / _F31)
    _, ok = fp16_field(o, ob, F32(d * _FUDGE))
    id = F32(_F1 / d)
    for ib in range(0, 8, 2):
        l1 = min(15, max(0, nearest_int(F32(_F05 * F32(F32(id * scales[ib]) - _F1)))))
        l2 = min(15, max(0, nearest_int(F32(_F05 * F32(F32(id * scales[ib + 1]) - _F1)))))
        o[ob + 106 + ib // 2] = l1 | (l2 << 4)
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
            good = _block(x[r], 256 * ibl, qwb, out[r], 110 * ibl, w, waux, xval, L, Laux, on, on_aux, bsig, scales)
            ok = ok and good
        if not ok:
            status[r] = OVERFLOW


# -- rows for embeddings (Numba) ------------------------------------------------------------------


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 110
            d = read_fp16(row, o)
            for ib in range(8):
                s = (np.int64(row[o + 106 + ib // 2]) >> (4 * (ib % 2))) & 15
                db = F32(d * F32(1 + 2 * s))
                qh = np.int64(row[o + 66 + ib])
                for q in range(8):  # grid entries of 4 elements
                    gr = GRID[np.int64(row[o + 2 + 8 * ib + q]) | (((qh >> q) & 1) << 8)]
                    sg = np.int64(row[o + 74 + 4 * ib + q // 2])
                    for j in range(4):
                        y = F32(db * F32(gr[j]))
                        out[k, b * 256 + 32 * ib + 4 * q + j] = -y if (sg >> (4 * (q % 2) + j)) & 1 else y


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    _, s, gi, sg = fields(b.reshape(-1).view(BLOCK).reshape(rows, -1))
    return tile_arrays(gi, sg, 2 * s + 1, fp16_bits(b[:, :, 0:2]), wide=True)


@jit_fast(parallel=True)
def mm(out, gi, sg, sc, d, yq, yd, ys):
    """IQ3_S weights x Q8_K activations (the bsums ys unused)."""
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
    type=GGMLType.IQ3_S,
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
    max_quantization_error=0.0040,  # test-quantize-fns: MAX_QUANTIZATION_TOTAL_ERROR_3BITS
)
