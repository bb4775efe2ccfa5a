"""IQ3_XXS: 256 weights = 8 sub-blocks of 32, 98 bytes, 3.06 bits per weight
(kquants-family.md §1.8, §2.1).

    +-----+----------------------------------------+--------------------------------------+
    | d   | qs[64]: grid index (iq3xxs_grid, 256)   | scales_and_signs: LE uint32 per ib   |
    | f16 | per 4 elements, 8 bytes per sub-block   |   bits 7l..7l+6 sign index, group l  |
    |     |                                        |   bits 28..31 scale s                |
    +-----+----------------------------------------+--------------------------------------+
    y = ±f32(f32(f32(d * f32(0.5 + s)) * 0.5) * iq3xxs_grid[index][j])

Kernels (iq_tiles.py): IQ3_XXS weights x Q8_K activations, K = 1/4, ls = 2s+1 per 32,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, read_fp16, read_u32
from .iq_grids import KSIGNS, grid
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 96)])
GRID = grid(GGMLType.IQ3_XXS)  # uint8 (256, 4)
K = F32(0.25)
_F05 = F32(0.5)


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
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sg", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
