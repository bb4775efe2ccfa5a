"""IQ1_S: 256 weights = 8 sub-blocks of 32, 50 bytes, 1.56 bits per weight
(kquants-family.md §1.10, §2.1).

    +-----+----------------------------+------------------------------------------------+
    | d   | qs[32]: index bits 0..7 of | qh[8] u16, one per sub-block ib:               |
    | f16 | group l of ib at 4ib+l     |   bits 3l..3l+2 index bits 8..10 of group l    |
    |     |                            |   bits 12..14 scale s; bit 15 delta sign       |
    +-----+----------------------------+------------------------------------------------+
    y = f32(f32(d * (2s + 1)) * f32(iq1s_grid[index][j] + delta)),  delta = ±0.125

Kernels (iq_tiles.py): IQ1_S weights x Q8_K activations on the virtual grid 8*grid ± 1
(the delta folded in), K = 1/8, ls = 2s+1 per 32, portable loops only (no AVX2 kernel yet:
the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, read_fp16, read_u16
from .iq_grids import IQ1_DELTA, grid
from .iq_tiles import grid_dot_ref, iq1_virtual_grid, tile_arrays, tile_plain
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 32), ("qh", "<u2", 8)])
GRID = grid(GGMLType.IQ1_S)  # int8 (2048, 8), values -1, 0, 1
VGRID = iq1_virtual_grid(GRID)  # int8 (4096, 8)
K = F32(0.125)


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
    needs_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
