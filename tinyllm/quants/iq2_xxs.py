"""IQ2_XXS: 256 weights = 8 sub-blocks of 32, 66 bytes, 2.06 bits per weight
(kquants-family.md §1.5, §2.1).

    +-----+--------------------------------------------------------------------+
    | d   | qs: per sub-block ib 8 bytes = two LE uint32 aux0, aux1            |
    | f16 |   aux0 byte l: grid index (0..255) of group l (elements 8l..8l+7)  |
    |     |   aux1 bits 7l..7l+6: sign index of group l (ksigns_iq2xs)         |
    |     |   aux1 bits 28..31: scale s                                        |
    +-----+--------------------------------------------------------------------+
    y = ±f32(f32(f32(d * f32(0.5 + s)) * 0.25) * iq2xxs_grid[index][j])

The quantizer is quantize_row_iq2_xxs_impl (kquants-family.md §3.7, §3.10; an imatrix is
required): IQ2_XS's grid fit (iq2_xs.py) over sub-blocks of 32, started from make_qp_quants.

Kernels (iq_tiles.py): IQ2_XXS weights x Q8_K activations, K = 1/8, ls = 2s+1 per 32,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, out_rows, read_fp16, read_u32, validate_fp16
from .fp16 import fp32_to_fp16
from .iq2_xs import Iq2Params, iq2_finish, iq2_fit_block, iq2_fit_ref, iq2_scratch
from .iq_grids import KSIGNS, grid, search_tables
from .rounding import row_nonfinite
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "<u2", 32)])
GRID = grid(GGMLType.IQ2_XXS)  # uint8 (256, 8)
K = F32(0.125)
_F025, _F05 = F32(0.25), F32(0.5)


# -- reference (NumPy) ------------------------------------------------------------------------


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 8), gi (..., 32), sg (..., 32) sign bytes."""
    aux = np.ascontiguousarray(b["qs"]).view("<u4").reshape(*b.shape, 8, 2)
    gi = np.ascontiguousarray(aux[..., 0]).view(np.uint8).reshape(*b.shape, 32)
    sidx = (aux[..., 1:2] >> (7 * np.arange(4, dtype=np.uint32))) & 127  # (..., 8, 4)
    return b["d"].astype(F32), (aux[..., 1] >> 28).astype(np.int32), gi, KSIGNS[sidx].reshape(*b.shape, 32)


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, sg = fields(b)
    db = ((d[:, None] * (_F05 + s.astype(F32))).astype(F32) * _F025).astype(F32)  # (nb, 8)
    v = signed_values(GRID, gi, sg).reshape(-1, 8, 32).astype(F32)
    return (db[:, :, None] * v).reshape(-1, QK_K)


def _raw_fields(raw):
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    return fields(b)


def dot_ref(raw, qs, d, bsums=None):
    """IQ2_XXS x Q8_K: 1/8 Σ_b f32(D*dy) Σ_ib (2s+1) Σ ±grid*q (exact integer sums)."""
    wd, s, gi, sg = _raw_fields(raw)
    return grid_dot_ref(wd, signed_values(GRID, gi, sg), 2 * s + 1, K, qs, d)


# -- quantizer ------------------------------------------------------------------------------------

P = Iq2Params(GGMLType.IQ2_XXS, bs=32, parity=True, sigma_factor=1.0, eps=1e-15, qp_start=True, steps=6, fudge=1.0)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq2_xxs: quantize_row_iq2_xxs_impl (an imatrix is required)."""
    x = as_rows(x, GGMLType.IQ2_XXS)
    gi, s, l, d, has, _ = iq2_fit_ref(x, qw, P)
    k = np.arange(4)
    aux0 = (gi << (8 * k)).sum(axis=2)
    aux1 = (s << (7 * k)).sum(axis=2) | (l << 28)
    aux = np.stack([aux0, aux1], axis=2).astype(np.uint32)  # (nb, 8, 2)
    b = np.zeros(gi.shape[0], BLOCK)
    b["d"] = np.where(has, fp32_to_fp16(d), np.float16(0))
    b["qs"] = np.where(has[:, None], aux.reshape(-1, 16).view("<u2"), 0)
    validate_fp16(b["d"], x, GGMLType.IQ2_XXS, "block scale d")
    return out_rows(b, x.shape[0])


@jit_exact
def _rows(x, xu, out, status, qw, pos, kmap, start, count, flat):
    w, waux, xval, L, Laux, Lq, on, on_aux, scales, gi, sg, live, l = iq2_scratch(32)
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        o = out[r]
        for ibl in range(x.shape[1] // 256):
            qwb = qw[256 * ibl : 256 * ibl + 256] if qw.shape[0] != 0 else qw
            max_scale = iq2_fit_block(x[r], 256 * ibl, qwb, pos, kmap, start, count, flat, 32, True, 1.0, 1e-15, True,
                                      6, w, waux, xval, L, Laux, Lq, on, on_aux, scales, gi, sg, live)
            ob = 66 * ibl
            for i in range(66):
                o[ob + i] = 0
            has, good = iq2_finish(o, ob, max_scale, scales, l, 1.0)
            ok = ok and good
            if has:
                for ib in range(8):
                    p = ob + 2 + 8 * ib
                    a1 = l[ib] << 28
                    for k in range(4):
                        if live[ib]:
                            o[p + k] = gi[ib, k]
                            a1 |= sg[ib, k] << (7 * k)
                    for j in range(4):
                        o[p + 4 + j] = (a1 >> (8 * j)) & 255
        if not ok:
            status[r] = OVERFLOW


def quantize_rows(x, xu, out, status, qw):
    """The Numba rows (the grid search tables, built on first use, are passed in)."""
    _rows(x, xu, out, status, qw, *search_tables(GGMLType.IQ2_XXS))


# -- rows for embeddings (Numba) ------------------------------------------------------------------


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 66
            d = read_fp16(row, o)
            for ib in range(8):
                p = o + 2 + 8 * ib
                a1 = read_u32(row, p + 4)
                db = F32(F32(d * F32(_F05 + F32(a1 >> 28))) * _F025)
                for l in range(4):
                    g = GRID[np.int64(row[p + l])]
                    s = np.int64(KSIGNS[(a1 >> (7 * l)) & 127])
                    for j in range(8):
                        y = F32(db * F32(g[j]))
                        out[k, b * 256 + 32 * ib + 8 * l + j] = -y if (s >> j) & 1 else y


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    _, s, gi, sg = fields(b.reshape(-1).view(BLOCK).reshape(rows, -1))
    return tile_arrays(gi, sg, 2 * s + 1, fp16_bits(b[:, :, 0:2]), wide=False)


@jit_fast(parallel=True)
def mm(out, gi, sg, sc, d, yq, yd, ys):
    """IQ2_XXS weights x Q8_K activations (the bsums ys unused)."""
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
    type=GGMLType.IQ2_XXS,
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
