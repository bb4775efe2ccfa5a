"""IQ1_M: 256 weights = 8 sub-blocks of 32, 56 bytes, 1.75 bits per weight; no `d` field
(kquants-family.md §1.11, §2.1).

    +----------------------+------------------------------+------------------------------+
    | qs[32]: index bits   | qh[16]: byte 2ib + l/2,      | scales[8] = 4 LE u16 sc[k]:  |
    | 0..7, group l of ib  |   nibble l%2: bits 0..2 =    |   3-bit s per 16 elements of |
    | at 4ib+l             |   index bits 8..10, bit 3 =  |   sub-blocks 2k, 2k+1 (bits  |
    |                      |   delta sign of group l      |   0..11); bits 12..15 =      |
    |                      |                              |   nibble k of the fp16 d     |
    +----------------------+------------------------------+------------------------------+
    y = f32(f32(d * (2s + 1)) * f32(iq1s_grid[index][j] + delta_l)),  delta_l = ±0.125

Kernels (iq_tiles.py): IQ1_M weights x Q8_K activations on IQ1_S's virtual grid 8*grid ± 1
(the per-group delta folded in), K = 1/8, ls = 2s+1 per 16, portable loops only (no AVX2
kernel yet: the portable one serves both kernel sets).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, read_u16
from .fp16 import fp16_bits_to_fp32
from .iq1_s import GRID, VGRID
from .iq_grids import IQ1_DELTA
from .iq_tiles import grid_dot_ref, tile_arrays, tile_plain
from .spec import TypeSpec
from .tiles import chunking, h2f_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("qs", "u1", 32), ("qh", "u1", 16), ("scales", "<u2", 4)])
K = F32(0.125)


# -- reference (NumPy) ------------------------------------------------------------------------


def d_bits(sc: np.ndarray) -> np.ndarray:
    """scales (..., 4) uint16 -> the fp16 bits of d (...): nibble k from bits 12..15 of sc[k]."""
    sc = sc.astype(np.uint16)
    return (sc[..., 0] >> 12) | ((sc[..., 1] >> 8) & 0x00F0) | ((sc[..., 2] >> 4) & 0x0F00) | (sc[..., 3] & 0xF000)


def fields(b: np.ndarray):
    """-> d f32 (...), s (..., 16), gi (..., 32) 11-bit indices, neg (..., 32) delta signs 0/1."""
    nib = (b["qh"][..., None].astype(np.int32) >> np.array([0, 4])).reshape(*b.shape, 32)  # group l of ib at 4ib+l
    gi = b["qs"].astype(np.int32) | ((nib & 7) << 8)
    sc = b["scales"].astype(np.int32)
    s = ((sc[..., None] >> (3 * np.arange(4))) & 7).reshape(*b.shape, 16)
    d = d_bits(b["scales"]).view(np.float16).astype(F32)
    return d, s, gi, (nib >> 3) & 1


def dequantize(b: np.ndarray) -> np.ndarray:
    d, s, gi, neg = fields(b)
    dl = (d[:, None] * (2 * s + 1).astype(F32)).astype(F32)  # (nb, 16)
    delta = np.where(neg != 0, -IQ1_DELTA, IQ1_DELTA).astype(F32)  # (nb, 32)
    v = (GRID[gi].astype(F32) + delta[..., None]).astype(F32).reshape(-1, 16, 16)
    return (dl[:, :, None] * v).reshape(-1, QK_K)


def dot_ref(raw, qs, d, bsums=None):
    """IQ1_M x Q8_K: 1/8 Σ_b f32(D*dy) Σ_16 (2s+1) Σ (8*grid ± 1)*q (exact integer sums)."""
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
            o = b * 56
            h = (read_u16(row, o + 48) >> 12) | ((read_u16(row, o + 50) >> 8) & 0x00F0)
            h |= ((read_u16(row, o + 52) >> 4) & 0x0F00) | (read_u16(row, o + 54) & 0xF000)
            d = fp16_bits_to_fp32(h)
            for ib in range(8):
                sc = read_u16(row, o + 48 + 2 * (ib // 2))
                for l in range(4):
                    s = (sc >> (6 * (ib % 2) + 3 * (l // 2))) & 7
                    dl = F32(d * F32(2 * s + 1))
                    nib = np.int64(row[o + 32 + 2 * ib + l // 2]) >> (4 * (l % 2))
                    delta = -IQ1_DELTA if nib & 8 else IQ1_DELTA
                    gr = GRID[np.int64(row[o + 4 * ib + l]) | ((nib & 7) << 8)]
                    for j in range(8):
                        out[k, b * 256 + 32 * ib + 8 * l + j] = F32(dl * F32(F32(gr[j]) + delta))


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    blk = b.reshape(-1).view(BLOCK).reshape(rows, -1)
    _, s, gi, neg = fields(blk)
    return tile_arrays(gi | (neg << 11), None, 2 * s + 1, d_bits(blk["scales"]), wide=True)


@jit_fast(parallel=True)
def mm(out, gi, sc, d, yq, yd, ys):
    """IQ1_M weights x Q8_K activations (the bsums ys unused: the delta is in the virtual grid)."""
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
    type=GGMLType.IQ1_M,
    block=BLOCK,
    dequantize=dequantize,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("gi", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm},  # no AVX2 kernel yet: the portable loops serve both
    dequant_rows=dequant_rows,
)
