"""IQ2_S: 256 weights = 8 sub-blocks of 32, 82 bytes, 2.56 bits per weight
(kquants-family.md §1.7, §2.1).

    +-----+--------------+----------------+---------------------+-------------------+
    | d   | qs[32]       | signs[32]      | qh[8]: byte ib,     | scales[8]: as     |
    | f16 | index bits   | byte 4ib+l: 8  | bits 2l..2l+1 =     | IQ2_XS (lo: groups|
    |     | 0..7, 4ib+l  | explicit signs | index bits 8..9     | 0,1; hi: 2,3)     |
    +-----+--------------+----------------+---------------------+-------------------+
    y = ±f32(f32(f32(d * f32(0.5 + s)) * 0.25) * iq2s_grid[index][j]),  s per 16 elements

The quantizer is quantize_row_iq2_s_impl (kquants-family.md §3.7, §3.12; imatrix optional):
IQ2_XS's grid fit (iq2_xs.py) with explicit signs and d * 0.9875 stored.

Kernels (iq_tiles.py): IQ2_S weights x Q8_K activations, K = 1/8, ls = 2s+1 per 16,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, out_rows, read_fp16, validate_fp16
from .fp16 import fp32_to_fp16
from .iq2_xs import Iq2Params, iq2_finish, iq2_fit_block, iq2_fit_ref, iq2_scratch, scales16
from .iq_grids import grid, search_tables
from .rounding import row_nonfinite
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 64), ("qh", "u1", 8), ("scales", "u1", 8)])
GRID = grid(GGMLType.IQ2_S)  # uint8 (1024, 8)
K = F32(0.125)
_F025, _F05 = F32(0.25), F32(0.5)


# -- reference (NumPy) ------------------------------------------------------------------------


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 16), gi (..., 32), sg (..., 32) sign bytes."""
    qs = b["qs"]
    hi = (b["qh"][..., None].astype(np.int32) >> (2 * np.arange(4))) & 3  # (..., 8, 4)
    gi = qs[..., :32].astype(np.int32) | (hi.reshape(*b.shape, 32) << 8)
    return b["d"].astype(F32), scales16(b["scales"]), gi, qs[..., 32:]


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, sg = fields(b)
    db = ((d[:, None] * (_F05 + s.astype(F32))).astype(F32) * _F025).astype(F32)  # (nb, 16)
    v = signed_values(GRID, gi, sg).reshape(-1, 16, 16).astype(F32)
    return (db[:, :, None] * v).reshape(-1, QK_K)


def dot_ref(raw, qs, d, bsums=None):
    """IQ2_S x Q8_K: 1/8 Σ_b f32(D*dy) Σ_16 (2s+1) Σ ±grid*q (exact integer sums)."""
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    wd, s, gi, sg = fields(b)
    return grid_dot_ref(wd, signed_values(GRID, gi, sg), 2 * s + 1, K, qs, d)


# -- quantizer ------------------------------------------------------------------------------------

P = Iq2Params(GGMLType.IQ2_S, bs=16, parity=False, sigma_factor=2.0, eps=1e-8, qp_start=False, steps=9, fudge=0.9875)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq2_s: quantize_row_iq2_s_impl. The grid bytes of fitted sub-blocks are kept
    even where the block's max_scale is 0 (d = 0), as in the C."""
    x = as_rows(x, GGMLType.IQ2_S)
    gi, s, l, d, has, _ = iq2_fit_ref(x, qw, P)
    nb = gi.shape[0]
    gi = gi.reshape(nb, 32)
    b = np.zeros(nb, BLOCK)
    b["d"] = np.where(has, fp32_to_fp16(d), np.float16(0))
    b["qs"] = np.concatenate([gi & 255, s.reshape(nb, 32)], axis=1)
    b["qh"] = ((gi >> 8).reshape(nb, 8, 4) << (2 * np.arange(4))).sum(axis=2)
    b["scales"] = l[:, 0::2] | (l[:, 1::2] << 4)
    validate_fp16(b["d"], x, GGMLType.IQ2_S, "block scale d")
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
            max_scale = iq2_fit_block(x[r], 256 * ibl, qwb, pos, kmap, start, count, flat, 16, False, 2.0, 1e-8, False,
                                      9, w, waux, xval, L, Laux, Lq, on, on_aux, scales, gi, sg, live)
            ob = 82 * ibl
            for i in range(82):
                o[ob + i] = 0
            for ib in range(16):
                if live[ib]:
                    for k in range(2):
                        i8 = 2 * ib + k
                        o[ob + 2 + i8] = gi[ib, k] & 255
                        o[ob + 66 + i8 // 4] |= (gi[ib, k] >> 8) << (2 * (i8 % 4))
                        o[ob + 34 + i8] = sg[ib, k]
            has, good = iq2_finish(o, ob, max_scale, scales, l, 0.9875)
            ok = ok and good
            if has:
                for ib in range(8):
                    o[ob + 74 + ib] = l[2 * ib] | (l[2 * ib + 1] << 4)
        if not ok:
            status[r] = OVERFLOW


def quantize_rows(x, xu, out, status, qw):
    """The Numba rows (the grid search tables, built on first use, are passed in)."""
    _rows(x, xu, out, status, qw, *search_tables(GGMLType.IQ2_S))


# -- rows for embeddings (Numba) ------------------------------------------------------------------


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 82
            d = read_fp16(row, o)
            for g in range(32):
                q = np.int64(row[o + 2 + g]) | (((np.int64(row[o + 66 + g // 4]) >> (2 * (g % 4))) & 3) << 8)
                sc = np.int64(row[o + 74 + g // 4]) >> (4 * ((g % 4) // 2))
                db = F32(F32(d * F32(_F05 + F32(sc & 15))) * _F025)
                gr = GRID[q]
                s = np.int64(row[o + 34 + g])
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
    """IQ2_S weights x Q8_K activations (the bsums ys unused)."""
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
    type=GGMLType.IQ2_S,
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
    max_quantization_error=0.0075,  # test-quantize-fns: MAX_QUANTIZATION_TOTAL_ERROR_2BITS
)
