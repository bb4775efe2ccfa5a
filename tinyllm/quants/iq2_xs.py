"""IQ2_XS: 256 weights = 8 sub-blocks of 32, 74 bytes, 2.31 bits per weight
(kquants-family.md §1.6, §2.1).

    +-----+---------------------------------------------+---------------------------+
    | d   | qs[32] u16: qs[4ib+l] for group l of ib      | scales[8]: byte ib        |
    | f16 |   bits 0..8 grid index (iq2xs_grid, 512)     |   lo nibble: groups 0, 1  |
    |     |   bits 9..15 sign index (ksigns_iq2xs)       |   hi nibble: groups 2, 3  |
    +-----+---------------------------------------------+---------------------------+
    y = ±f32(f32(f32(d * f32(0.5 + s)) * 0.25) * iq2xs_grid[index][j]),  s per 16 elements

Kernels (iq_tiles.py): IQ2_XS weights x Q8_K activations, K = 1/8, ls = 2s+1 per 16,
portable loops only (no AVX2 kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, read_fp16, read_u16
from .iq_grids import KSIGNS, grid
from .iq_tiles import grid_dot_ref, signed_values, tile_arrays, tile_signed
from .spec import TypeSpec
from .tiles import chunking, fp16_bits, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "<u2", 32), ("scales", "u1", 8)])
GRID = grid(GGMLType.IQ2_XS)  # uint8 (512, 8)
K = F32(0.125)
_F025, _F05 = F32(0.25), F32(0.5)


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
    needs_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sg", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
