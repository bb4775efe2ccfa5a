"""IQ4_XS: 256 weights = 8 sub-blocks of 32, 136 bytes (kquants-family.md §1.4, §2.1, §3.6, §4).

    +-----+----------+-------------+---------------------------------------------+
    | d   | scales_h | scales_l[4] | qs[128]: byte 16ib+j = i[32ib+j] lo |        |
    | f16 | u16      | lo 4 bits   |          i[32ib+16+j] hi                    |
    +-----+----------+-------------+---------------------------------------------+
    ls_ib = (scales_l[ib/2] >> 4(ib%2)) & 15 | ((scales_h >> 2ib) & 3) << 4     (6 bits)
    y = (d * (ls_ib - 32)) * kvalues_iq4nl[i]

The quantizer is IQ4_NL's (iq4_nl.py) over 256-weight super-blocks: quantize_row_iq4_nl_impl
(256, 32, ..., ntry = 7), optional imatrix.

Kernels: IQ4_XS weights x Q8_K activations. Tiles hold the indices `q4` as nibble pairs in
natural order, `sc` = ls - 32 (int8, one per sub-block) and `d`. As for IQ4_NL, the AVX2
kernel multiplies the two 4-bit digits of value + 128 and subtracts 128 * (Q8_K bsums).
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, as_rows, out_rows, read_fp16, validate_fp16
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .iq4_nl import KV_F32, KV_I32, imatrix_blocks, iq4_impl_ref, pack_q4_ref, quantize_rows_iq4, sum8_kv
from .simd import mac_u8_8, row_iq4_xs, set_u8_8, unpack_iq4
from .spec import TypeSpec
from .tiles import (
    avx2_chunks, chunking, decode_chunks, fp16_bits, h2f_block, h2f_tile, nibble_pairs, nibbles_32, store,
    store_tile,
)
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("scales_h", "<u2"), ("scales_l", "u1", 4), ("qs", "u1", 128)])


# -- reference (NumPy) ------------------------------------------------------------------------


def scales_xs(scales_h: np.ndarray, scales_l: np.ndarray) -> np.ndarray:
    """scales_h (...,) uint16 and scales_l (..., 4) -> the 6-bit ls (..., 8) as int32."""
    ib = np.arange(8)
    lo = (scales_l[..., ib // 2].astype(np.int32) >> (4 * (ib % 2))) & 15
    hi = (scales_h[..., None].astype(np.int32) >> (2 * ib)) & 3
    return lo | (hi << 4)


def dequantize(b: np.ndarray) -> np.ndarray:
    ls = scales_xs(b["scales_h"], b["scales_l"])
    dl = b["d"].astype(F32)[:, None] * (ls - 32).astype(F32)  # (nb, 8)
    q = KV_F32[nibbles_32(b["qs"].reshape(-1, 8, 16))]  # (nb, 8, 32)
    return (dl[:, :, None] * q).reshape(-1, QK_K)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_iq4_xs: quantize_row_iq4_nl_impl(256, 32, ..., ntry = 7) per super-block."""
    x = as_rows(x, GGMLType.IQ4_XS)
    xb = x.reshape(-1, QK_K)
    d, L, ls = iq4_impl_ref(xb, imatrix_blocks(qw, x.shape[0], x.shape[1], QK_K))
    b = np.zeros(xb.shape[0], BLOCK)
    b["d"] = fp32_to_fp16(d)
    b["scales_l"] = (ls[:, 0::2] & 15) | ((ls[:, 1::2] & 15) << 4)
    b["scales_h"] = ((ls.astype(np.uint16) >> 4) << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
    b["qs"] = pack_q4_ref(L)
    validate_fp16(b["d"], x, GGMLType.IQ4_XS, "block scale d")
    return out_rows(b, x.shape[0])


def unpack_ref(raw: np.ndarray):
    """-> d f32 (n_out, nb), sc = ls - 32 int (n_out, nb, 8), q int grid values (n_out, nb, 256)."""
    b = np.ascontiguousarray(raw).reshape(-1).view(BLOCK).reshape(raw.shape[0], -1)
    q = KV_I32[nibbles_32(b["qs"].reshape(*b.shape, 8, 16))]
    return b["d"].astype(F32), scales_xs(b["scales_h"], b["scales_l"]) - 32, q.reshape(*b.shape, QK_K)


def dot_ref(raw, qs, d, bsums):
    """IQ4_XS x Q8_K: f32(D*dy) * Σ_j (ls_j - 32) Σ kv*q8, per super-block (exact integer sums)."""
    wd, sc, q = unpack_ref(raw)
    n_out, nb = wd.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, 8, 32).astype(np.int64)
    sub = np.einsum("rbjl,tbjl->trbj", q.reshape(n_out, nb, 8, 32).astype(np.int64), yq)
    isum = (sub * sc[None].astype(np.int64)).sum(axis=3)
    scale = (wd[None] * d[:, None, :]).astype(F32).astype(np.float64)
    return (scale * isum).sum(axis=2).astype(F32)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_iq4(x, xu, out, status, qw, 256)


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 136
            d = read_fp16(row, o)
            sh = np.int32(row[o + 2]) | (np.int32(row[o + 3]) << 8)
            for ib in range(8):
                ls = ((np.int32(row[o + 4 + ib // 2]) >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4)
                dl = F32(d * F32(ls - 32))
                for j in range(16):
                    q = np.int32(row[o + 8 + 16 * ib + j])
                    out[k, b * 256 + 32 * ib + j] = F32(dl * KV_F32[q & 15])
                    out[k, b * 256 + 32 * ib + 16 + j] = F32(dl * KV_F32[q >> 4])


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows, nb = b.shape[:2]
    nat = nibbles_32(b[:, :, 8:136].reshape(rows, nb, 8, 16)).reshape(rows, -1)
    blk = b.reshape(-1).view(BLOCK)
    sc = (scales_xs(blk["scales_h"], blk["scales_l"]) - 32).astype(np.int8)
    return {"q4": nibble_pairs(nat), "sc": sc.reshape(rows, nb * 8), "d": fp16_bits(b[:, :, 0:2])}


@jit_fast
def _tile(out, t, tl, q4, sc, dt, yq, yd, isub, isum, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isum[:] = 0
        for j in range(8 * b, 8 * b + 8):  # sub-blocks of 32 = 4 groups of 8 elements
            isub[:] = 0
            for g in range(4 * j, 4 * j + 4):
                p = 4 * g
                sum8_kv(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], yq, t, 8 * g)
            s = sc[tl, j]
            for r in range(R):
                isum[r] += np.int32(s[r]) * isub[r]
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += (db[r] * dy) * F32(isum[r])
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q4, sc, d, yq, yd, ys):
    """IQ4_XS weights x Q8_K activations (the bsums ys unused: the values are signed)."""
    T = out.shape[0]
    ntile = q4.shape[0]
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
                _tile(out, t, tl, q4, sc, dt, yq, yd, isub, isum, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, sc, d, yq, yd, ys):
    """IQ4_XS weights x Q8_K activations: per sub-block Σ kv*y = 16 Σ hi*y + Σ lo*y - 128 Σ y
    (kv + 128 = 16 hi + lo, simd.IQ4_DIGITS; Σ y from the two bsums of the sub-block)."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    R2 = 2 * R
    if T == 1:  # decode: a whole tile row per call, looked up in registers
        scf = sc.reshape(-1)
        df = d.reshape(-1)
        nsub = sc.shape[1]
        per, nchunk, fbuf = decode_chunks(ntile, R)
        for c in prange(nchunk):
            fr = fbuf[c]
            for tl in range(c * per, min(ntile, c * per + per)):
                row_iq4_xs(fr, q4f, tl * npair * R, scf, tl * nsub * R, df, tl * nb * R, y2[0], yd[0], ys[0], nb)
                store_tile(out, tl, fbuf[c:c + 1])
        return
    split = 128 * R2  # the low digits follow the 128 pairs of high digits
    per, nchunk, qb, isub, dbuf, facc = avx2_chunks(ntile, T, R, 256)
    for c in prange(nchunk):
        buf = qb[c]
        hi = isub[c, 0]
        lo = isub[c, 1]
        isum = isub[c, 2]
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(32):  # 32 groups of 4 pairs = 256 elements
                    for rc in range(0, R, 16):
                        unpack_iq4(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 128 * b + 4 * g) * R + rc, R, split)
                db = h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    isum[:] = 0
                    for j in range(8):  # sub-blocks of 32 = 16 pairs; all R = TILE rows per call
                        p = 16 * j
                        set_u8_8(hi, 0, buf, p * R2, R2, y2[t], 128 * b + p)
                        mac_u8_8(hi, 0, buf, (p + 8) * R2, R2, y2[t], 128 * b + p + 8)
                        set_u8_8(lo, 0, buf, split + p * R2, R2, y2[t], 128 * b + p)
                        mac_u8_8(lo, 0, buf, split + (p + 8) * R2, R2, y2[t], 128 * b + p + 8)
                        off = np.int32(128 * (ys[t, 16 * b + 2 * j] + ys[t, 16 * b + 2 * j + 1]))
                        s = sc[tl, 8 * b + j]
                        for r in range(R):
                            isum[r] += np.int32(s[r]) * np.int32(16 * hi[r] + lo[r] - off)
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += (db[r] * dy) * F32(isum[r])
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.IQ4_XS,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("q4", "sc", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
    # test-quantize-fns gives IQ4_XS the default MAX_QUANTIZATION_TOTAL_ERROR
    max_quantization_error=0.002,
)
