"""Q5_K: 256 weights = 8 sub-blocks of 32, 176 bytes (kquants.md §1.6, §2, §3.6, §4.5).

    +-----+------+------------+---------+---------------------+
    | d   | dmin | scales[12] | qh[32]  | qs[128] as Q4_K     |
    +-----+------+------------+---------+---------------------+
    5th bit of element e = bit (e/32) of qh[e%32];  y = (d*sc_j) * q - (dmin*m_j)

The block code is Q4_K's (q4_k.py) with the fifth bit; kernels as Q4_K's, plus `qh`
(ntile, n_in/8, R): bit k = 5th bit of element 8g+k.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32
from .fit import LIMIT
from .q4_k import (
    dequant_rows_kmin, dequantize_kmin, dot_kmin_ref, kmin_avx2, kmin_finish, kmin_scale, quantize_kmin_ref,
    quantize_rows_kmin, repack_kmin, unpack_ref,
)
from .q5_0 import sum8_q5
from .spec import TypeSpec
from .tiles import chunking, h2f_tile, store
from .types import GGMLType

BLOCK = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32), ("qs", "u1", 128)])


def dequantize(b: np.ndarray) -> np.ndarray:
    return dequantize_kmin(b, True)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    return quantize_kmin_ref(x, GGMLType.Q5_K, BLOCK, qw)


def dot_ref(raw, qs, d, bsums):
    return dot_kmin_ref(unpack_ref(raw, five=True), qs, d, bsums)


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_kmin(x, xu, out, status, True, LIMIT, qw)


@jit_exact
def dequant_rows(out, wq, ids):
    dequant_rows_kmin(out, wq, ids, True)


def repack_rows(b: np.ndarray) -> dict:
    return repack_kmin(b, True)


@jit_fast
def _tile(out, t, tl, q4, qh, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc):
    facc[:] = 0
    for b in range(dt.shape[0]):
        isum[:] = 0
        summ[:] = 0
        for j in range(8 * b, 8 * b + 8):
            isub[:] = 0
            for g in range(4 * j, 4 * j + 4):
                p = 4 * g
                sum8_q5(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], qh[tl, g], yq, t, 8 * g)
            kmin_finish(t, tl, j, sc, mn, ys, isub, isum, summ)
        kmin_scale(t, b, dt, dmt, yd, isum, summ, facc)
    store(out, t, tl * facc.shape[0], facc)


@jit_fast(parallel=True)
def mm(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q5_K weights x Q8_K activations; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        isum = np.empty(R, np.int32)
        summ = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        hm = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            dmt = h2f_tile(hm, dmin, tl)
            for t in range(T):
                _tile(out, t, tl, q4, qh, sc, mn, dt, dmt, yq, yd, ys, isub, isum, summ, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys):
    """Q5_K weights x Q8_K activations."""
    kmin_avx2(out, q4, qh, sc, mn, d, dmin, yq, yd, ys, True)


SPEC = TypeSpec(
    type=GGMLType.Q5_K,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("q4", "qh", "sc", "mn", "d", "dmin"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
