"""IQ3_S: 256 weights = 8 sub-blocks of 32, 110 bytes, 3.44 bits per weight
(kquants-family.md §1.9, §2.1).

    +-----+---------------+-------------------+------------------+-----------------------+
    | d   | qs[64]: index | qh[8]: byte ib,   | signs[32]: byte  | scales[4]: byte ib/2, |
    | f16 | bits 0..7 per | bit k = index bit | 4ib+l = explicit | lo nibble: even ib,   |
    |     | 4 elements    | 8 of qs[8ib+k]    | signs, group l   | hi nibble: odd ib     |
    +-----+---------------+-------------------+------------------+-----------------------+
    y = ±f32(f32(d * (1 + 2s)) * iq3s_grid[index][j])

Kernels (iq_tiles.py): IQ3_S weights x Q8_K activations, K = 1, ls = 2s+1 per 32,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, read_fp16
from .iq_grids import grid
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 64), ("qh", "u1", 8), ("signs", "u1", 32), ("scales", "u1", 4)])
GRID = grid(GGMLType.IQ3_S)  # uint8 (512, 4)
K = F32(1.0)


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
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sg", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
