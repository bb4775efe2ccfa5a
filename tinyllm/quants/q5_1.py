"""Q5_1: 32 weights, 24 bytes (kquants.md §3.10, §4.7).

    +-----+-----+---------+----------+
    | d   | m   | qh u32  | qs[16]   |      y = q * d + m,  q in 0..31
    +-----+-----+---------+----------+
    bit k of qh = 5th bit of element k; qs as Q4_1

Kernels: Q5_1 weights x Q8_1 activations (see q4_1.py); tiles as Q5_0's plus `m`.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, read_fp16
from .fp16 import fp16_to_fp32
from .fit import LIMIT
from .q4_1 import dot_min32_ref, quantize_rows_x_1, quantize_x_1_ref
from .q5_0 import qh32, qh_bits_32, sum8_q5
from .simd import acc_tile_mins, mac_u8_4, row_q5_1, set_u8_4, unpack5
from .spec import TypeSpec
from .tiles import (
    avx2_chunks, chunking, decode_chunks, fp16_bits, h2f_block, h2f_tile, nibble_pairs, nibbles_32, store,
    store_tile,
)
from .types import GGMLType

BLOCK = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])


# -- reference (NumPy) ------------------------------------------------------------------------


def dequantize(b: np.ndarray) -> np.ndarray:
    q = nibbles_32(b["qs"]) | (qh_bits_32(b["qh"]) << 4)
    return q.astype(F32) * b["d"].astype(F32)[:, None] + b["m"].astype(F32)[:, None]


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    return quantize_x_1_ref(x, GGMLType.Q5_1, BLOCK, qw)


def unpack_ref(raw: np.ndarray):
    """-> d, m f32 (n_out, nb), q int in 0..31 (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 24)
    qh = np.ascontiguousarray(b[:, :, 4:8]).view("<u4")[..., 0].astype(np.int64)
    lo = nibbles_32(b[:, :, 8:24].astype(np.int32))
    hi = (qh[..., None] >> np.arange(32)) & 1
    return fp16_to_fp32(b[:, :, 0:2]), fp16_to_fp32(b[:, :, 2:4]), (lo | (hi << 4)).astype(np.int32)


def dot_ref(raw, qs, d, s):
    return dot_min32_ref(*unpack_ref(raw), qs, d, s)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_x_1(x, xu, out, status, qw, 31, True, LIMIT)


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        r = ids[k]
        for b in range(out.shape[1] // 32):
            o = b * 24
            d = read_fp16(wq[r], o)
            m = read_fp16(wq[r], o + 2)
            qh = qh32(wq[r], o + 4)
            for j in range(16):
                q = np.int64(wq[r, o + 8 + j])
                lo = (q & 15) | (((qh >> j) & 1) << 4)
                hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
                out[k, b * 32 + j] = F32(F32(F32(lo) * d) + m)
                out[k, b * 32 + 16 + j] = F32(F32(F32(hi) * d) + m)


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    nat = nibbles_32(b[:, :, 8:24]).reshape(b.shape[0], -1)
    return {
        "q4": nibble_pairs(nat),
        "qh": b[:, :, 4:8].reshape(b.shape[0], -1),
        "d": fp16_bits(b[:, :, 0:2]),
        "m": fp16_bits(b[:, :, 2:4]),
    }


@jit_fast
def _tile(out, t, tl, q4, qh, dt, mt, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isub[:] = 0
        for g in range(4 * b, 4 * b + 4):
            p = 4 * g
            sum8_q5(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], qh[tl, g], yq, t, 8 * g)
        dy = yd[t, b]
        sy = ys[t, b]
        db = dt[b]
        mb = mt[b]
        for r in range(R):
            facc[r] += F32(isub[r]) * (db[r] * dy) + mb[r] * sy
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q4, qh, d, m, yq, yd, ys):
    """Q5_1 weights x Q8_1 activations; ys are the activations' s (float32 per 32)."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        hm = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            mt = h2f_tile(hm, m, tl)
            for t in range(T):
                _tile(out, t, tl, q4, qh, dt, mt, yq, yd, ys, isub, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, qh, d, m, yq, yd, ys):
    """Q5_1 weights x Q8_1 activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    ngrp = qh.shape[1]
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    qhf = qh.reshape(-1)
    R2 = 2 * R
    if T == 1:  # decode: a whole tile row per call, unpacked in registers
        df = d.reshape(-1)
        mf = m.reshape(-1)
        per, nchunk, fbuf = decode_chunks(ntile, R)
        for c in prange(nchunk):
            fr = fbuf[c]
            for tl in range(c * per, min(ntile, c * per + per)):
                row_q5_1(fr, q4f, tl * npair * R, qhf, tl * ngrp * R, df, tl * nb * R, mf, y2[0], yd[0], ys[0], nb)
                store_tile(out, tl, fbuf[c:c + 1])
        return
    per, nchunk, qb, isub, dbuf, facc = avx2_chunks(ntile, T, R, 16)
    for c in prange(nchunk):
        buf = qb[c]
        acc = isub[c, 0]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(4):
                    for rc in range(0, R, 16):
                        unpack5(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 16 * b + 4 * g) * R + rc, R,
                                qhf, (tl * ngrp + 4 * b + g) * R + rc)
                db = h2f_block(dbuf[c, 0], d, tl, b)
                mb = h2f_block(dbuf[c, 1], m, tl, b)
                for t in range(T):
                    set_u8_4(acc, 0, buf, 0, R2, y2[t], 16 * b)  # all R = TILE rows
                    for g in range(1, 4):
                        mac_u8_4(acc, 0, buf, 4 * g * R2, R2, y2[t], 16 * b + 4 * g)
                    acc_tile_mins(facc[c, t], acc, db, yd[t, b], mb, ys[t, b])
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.Q5_1,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_1,
    dot_ref=dot_ref,
    arrays=("q4", "qh", "d", "m"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
