"""Q5_0: 32 weights, 22 bytes (kquants.md §1.2, §2, §3.3, §4.2).

    +-----+---------+--------------------+
    | d   | qh u32  | qs[16] as Q4_0     |      y = (q - 16) * d
    +-----+---------+--------------------+
    bit k of qh = 5th bit of element k

Kernels: Q5_0 weights x Q8_0 activations. Tiles hold `q4` (low nibbles, natural order),
`qh` (ntile, n_in/8, R): bit k = 5th bit of element 8g+k, and `d`.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, read_fp16
from .fp16 import fp16_to_fp32
from .q4_0 import quantize_rows_x_0, quantize_x_0_ref
from .q8_0 import dot_sym32_ref
from .simd import row_q5_0, tokens_q5_0, unpack5
from .spec import TypeSpec
from .tiles import (
    TOKEN_BLOCK, avx2_chunks, avx2_tiles_per_chunk, chunking, decode_chunks, fp16_bits, h2f_block, h2f_tile,
    nibble_pairs, nibbles_32, store, store_tile,
)
from .types import GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])


# -- reference (NumPy) ------------------------------------------------------------------------


def qh_bits_32(qh: np.ndarray) -> np.ndarray:
    """(nb,) uint32 -> (nb, 32) 0/1: bit k of qh."""
    return ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def dequantize(b: np.ndarray) -> np.ndarray:
    q = (nibbles_32(b["qs"]) | (qh_bits_32(b["qh"]) << 4)).astype(np.int8) - 16
    return q.astype(F32) * b["d"].astype(F32)[:, None]


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    return quantize_x_0_ref(x, GGMLType.Q5_0, BLOCK, qw)


def unpack_ref(raw: np.ndarray):
    """-> d f32 (n_out, nb), q int in -16..15 (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 22)
    qh = np.ascontiguousarray(b[:, :, 2:6]).view("<u4")[..., 0].astype(np.int64)
    lo = nibbles_32(b[:, :, 6:22].astype(np.int32))
    hi = (qh[..., None] >> np.arange(32)) & 1
    return fp16_to_fp32(b[:, :, 0:2]), (lo | (hi << 4)).astype(np.int32) - 16


def dot_ref(raw, qs, d, ys):
    return dot_sym32_ref(*unpack_ref(raw), qs, d)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_x_0(x, xu, out, status, qw, 31, True)


@jit_exact
def qh32(row, o):
    """The little-endian uint32 at row[o:o+4]."""
    return np.int64(row[o]) | (np.int64(row[o + 1]) << 8) | (np.int64(row[o + 2]) << 16) | (np.int64(row[o + 3]) << 24)


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        r = ids[k]
        for b in range(out.shape[1] // 32):
            o = b * 22
            d = read_fp16(wq[r], o)
            qh = qh32(wq[r], o + 2)
            for j in range(16):
                q = np.int64(wq[r, o + 6 + j])
                lo = (q & 15) | (((qh >> j) & 1) << 4)
                hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
                out[k, b * 32 + j] = F32(F32(lo - 16) * d)
                out[k, b * 32 + 16 + j] = F32(F32(hi - 16) * d)


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    nat = nibbles_32(b[:, :, 6:22]).reshape(b.shape[0], -1)
    # qh as a LE u32: byte t holds the 5th bits of elements 8t..8t+7, LSB first: already our layout
    return {"q4": nibble_pairs(nat), "qh": b[:, :, 2:6].reshape(b.shape[0], -1), "d": fp16_bits(b[:, :, 0:2])}


@jit_fast
def sum8_q5(isub, w0, w1, w2, w3, hb, yq, t, e):
    """isub[r] += Σ_{k<8} q5(element e+k of row r) * yq[t, e+k]; 5th bits in hb[r] (bit k)."""
    y0 = np.int32(yq[t, e])
    y1 = np.int32(yq[t, e + 1])
    y2 = np.int32(yq[t, e + 2])
    y3 = np.int32(yq[t, e + 3])
    y4 = np.int32(yq[t, e + 4])
    y5 = np.int32(yq[t, e + 5])
    y6 = np.int32(yq[t, e + 6])
    y7 = np.int32(yq[t, e + 7])
    for r in range(isub.shape[0]):
        h = np.int32(hb[r])
        x0 = np.int32(w0[r])
        x1 = np.int32(w1[r])
        x2 = np.int32(w2[r])
        x3 = np.int32(w3[r])
        isub[r] += (
            ((x0 & 15) | ((h << 4) & 16)) * y0
            + ((x0 >> 4) | ((h << 3) & 16)) * y1
            + ((x1 & 15) | ((h << 2) & 16)) * y2
            + ((x1 >> 4) | ((h << 1) & 16)) * y3
            + ((x2 & 15) | (h & 16)) * y4
            + ((x2 >> 4) | ((h >> 1) & 16)) * y5
            + ((x3 & 15) | ((h >> 2) & 16)) * y6
            + ((x3 >> 4) | ((h >> 3) & 16)) * y7
        )


@jit_fast
def _tile(out, t, tl, q4, qh, dt, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isub[:] = 0
        for g in range(4 * b, 4 * b + 4):
            p = 4 * g
            sum8_q5(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], qh[tl, g], yq, t, 8 * g)
        off = np.int32(16 * ys[t, b])  # quants are stored as q + 16
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += F32(np.int32(isub[r] - off)) * (db[r] * dy)
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q4, qh, d, yq, yd, ys):
    """Q5_0 weights x Q8_0 activations."""
    T = out.shape[0]
    ntile = q4.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            for t in range(T):
                _tile(out, t, tl, q4, qh, dt, yq, yd, ys, isub, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, qh, d, yq, yd, ys):
    """Q5_0 weights x Q8_0 activations."""
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
        per, nchunk, fbuf = decode_chunks(ntile, R)
        for c in prange(nchunk):
            fr = fbuf[c]
            for tl in range(c * per, min(ntile, c * per + per)):
                row_q5_0(fr, q4f, tl * npair * R, qhf, tl * ngrp * R, df, tl * nb * R, df, y2[0], yd[0], ys[0], nb)
                store_tile(out, tl, fbuf[c:c + 1])
        return
    # prefill: the whole tile row unpacked once, then tokens in groups whose float sums stay in L1
    per, nchunk = avx2_tiles_per_chunk(ntile)
    TB = min(T, TOKEN_BLOCK)
    qb = np.empty((nchunk, npair * R2), np.uint8)
    facc = np.empty((nchunk, TB, R), np.float32)
    y2f = y2.reshape(-1)
    nh = y2.shape[1]
    ydf = yd.reshape(-1)
    ysf = ys.reshape(-1)
    df = d.reshape(-1)
    for c in prange(nchunk):
        buf = qb[c]
        fc = facc[c]
        ff = fc.reshape(-1)
        for tl in range(c * per, min(ntile, c * per + per)):
            for g in range(npair // 4):
                for rc in range(0, R, 16):
                    unpack5(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 4 * g) * R + rc, R, qhf, (tl * ngrp + g) * R + rc)
            n = min(R, out.shape[1] - tl * R)
            for t0 in range(0, T, TB):
                t1 = min(T, t0 + TB)
                fc[:] = 0
                for b in range(nb):  # stored as q + 16
                    tokens_q5_0(ff, buf, 16 * b * R2, y2f, nh, ydf, ysf, nb, b, t0, t1, df, (tl * nb + b) * R)
                for t in range(t0, t1):
                    for r in range(n):
                        out[t, tl * R + r] = fc[t - t0, r]


SPEC = TypeSpec(
    type=GGMLType.Q5_0,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_0,
    dot_ref=dot_ref,
    arrays=("q4", "qh", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
