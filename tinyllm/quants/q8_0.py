"""Q8_0: 32 weights, 34 bytes (kquants.md §1.3, §2, §3.1, §4.3).

    +-----+-------------------+
    | d   | qs[32] int8       |      y = qs[j] * d
    | f16 |                   |
    +-----+-------------------+

Kernels: Q8_0 weights x Q8_0 activations. Tiles hold element pairs, `q8` int8
(ntile, n_in/2, 2R): [pair p][row r][element 2p, 2p+1]; `d` the fp16 scale bits.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import F32, NONFINITE, OVERFLOW, as_rows, fp16_field, out_rows, quiet, read_fp16, safe_recip, validate_fp16
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .rounding import c_int8, c_int8_np, roundf, roundf_np, row_nonfinite
from .simd import acc_tile_sym, row_q8_0, set_i8_16
from .spec import TypeSpec
from .tiles import avx2_chunks, chunking, fp16_bits, h2f_block, h2f_tile, store, store_tile
from .types import QK8_0, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", 32)])
_F0, _F1, _F127 = F32(0.0), F32(1.0), F32(127.0)


# -- reference (NumPy) ------------------------------------------------------------------------


def dequantize(b: np.ndarray) -> np.ndarray:
    return b["qs"].astype(F32) * b["d"].astype(F32)[:, None]


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_row_q8_0_ref (§3.1): d = amax/127, qs = roundf(x * (1/d)). An imatrix is ignored."""
    x = as_rows(x, GGMLType.Q8_0)
    xb = x.reshape(-1, QK8_0)
    d = np.abs(xb).max(axis=1) / F32(127)
    b = np.zeros(xb.shape[0], BLOCK)
    b["d"] = fp32_to_fp16(d)
    b["qs"] = c_int8_np(roundf_np(xb * safe_recip(d)[:, None]))
    validate_fp16(b["d"], x, GGMLType.Q8_0, "block scale d")
    return out_rows(b, x.shape[0])


def unpack_ref(raw: np.ndarray):
    """-> d f32 (n_out, nb), q int (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 34)
    return fp16_to_fp32(b[:, :, 0:2]), b[:, :, 2:].view(np.int8).astype(np.int32)


def dot_sym32_ref(wd, wq, qs, d):
    """out (T, n_out) for symmetric 32-blocks (scale wd (n_out, nb), quants wq (n_out, nb, 32))
    x Q8_0 activations: exact integer block sums, float32 scale products, summed in float64."""
    T = qs.shape[0]
    yq = qs.reshape(T, -1, QK8_0).astype(np.int64)
    isum = np.einsum("rbj,tbj->trb", wq.astype(np.int64), yq)
    scale = (wd[None, :, :] * d[:, None, :]).astype(F32)  # the f32 product the kernels use
    return (isum * scale.astype(np.float64)).sum(axis=2).astype(F32)


def dot_ref(raw, qs, d, ys):
    return dot_sym32_ref(*unpack_ref(raw), qs, d)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact(inline="always")
def _block(xr, xu, base, o, ob):
    """quantize_row_q8_0_ref for one block. Block functions are inlined into the row loop:
    called, they ran at 60% of the speed."""
    # max of |x| as an integer max over the bit patterns: same value, and it vectorises
    abits = 0
    for j in range(32):
        abits = max(abits, np.int64(xu[base + j] & 0x7FFFFFFF))
    amax = np.uint32(abits).view(np.float32)
    d = amax / _F127
    id = _F1 / d if d != _F0 else _F0
    _, ok = fp16_field(o, ob, d)
    for j in range(32):
        o[ob + 2 + j] = c_int8(roundf(xr[base + j] * id)) & 0xFF
    return ok


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        for ib in range(x.shape[1] // 32):
            good = _block(x[r], xu[r], 32 * ib, out[r], 34 * ib)
            ok = ok and good
        if not ok:
            status[r] = OVERFLOW


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        r = ids[k]
        for b in range(out.shape[1] // 32):
            d = read_fp16(wq[r], b * 34)
            for j in range(32):
                q = np.int32(wq[r, b * 34 + 2 + j])
                q = q - 256 if q > 127 else q
                out[k, b * 32 + j] = F32(F32(q) * d)


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    # element pairs as uint16 (qs starts at an even offset), so the tiling moves 2 bytes at a time
    pairs = b.view(np.uint16)[:, :, 1:17]
    return {"q8": pairs.reshape(b.shape[0], -1), "d": fp16_bits(b[:, :, 0:2])}


@jit_fast
def _tile(out, t, tl, q8, dt, yq, yd, isub, facc):
    R = facc.shape[0]
    nb = dt.shape[0]
    facc[:] = 0
    for b in range(nb):
        isub[:] = 0
        for p in range(16 * b, 16 * b + 16, 2):
            y0 = np.int32(yq[t, 2 * p])
            y1 = np.int32(yq[t, 2 * p + 1])
            y2 = np.int32(yq[t, 2 * p + 2])
            y3 = np.int32(yq[t, 2 * p + 3])
            w0 = q8[tl, p]
            w1 = q8[tl, p + 1]
            for r in range(R):
                isub[r] += (
                    np.int32(w0[2 * r]) * y0
                    + np.int32(w0[2 * r + 1]) * y1
                    + np.int32(w1[2 * r]) * y2
                    + np.int32(w1[2 * r + 1]) * y3
                )
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += F32(isub[r]) * (db[r] * dy)
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q8, d, yq, yd, ys):
    """Q8_0 weights x Q8_0 activations: out (T, n_out) float32. ys is unused (signed quants)."""
    T = out.shape[0]
    ntile = q8.shape[0]
    R = d.shape[2]
    per, nchunk = chunking(ntile)
    for c in prange(nchunk):
        isub = np.empty(R, np.int32)
        facc = np.empty(R, np.float32)
        hb = np.empty(d.shape[1:], np.float32)
        for tl in range(c * per, min(ntile, c * per + per)):
            dt = h2f_tile(hb, d, tl)
            for t in range(T):
                _tile(out, t, tl, q8, dt, yq, yd, isub, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q8, d, yq, yd, ys):
    """Q8_0 weights x Q8_0 activations (vpmaddwd on the stored int8 pairs, no unpacking)."""
    T = out.shape[0]
    ntile, npair, R2 = q8.shape
    R = R2 // 2
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q8f = q8.reshape(-1)
    df = d.reshape(-1)
    per, nchunk, qb, isub, dbuf, facc = avx2_chunks(ntile, T, R, 0)
    for c in prange(nchunk):  # one parallel loop for both paths (two took 3.1 s to compile, one 2.3 s)
        acc = isub[c, 0]
        for tl in range(c * per, min(ntile, c * per + per)):
            if T == 1:  # decode: a whole tile row per call, its sums kept in registers
                row_q8_0(facc[c, 0], q8f, tl * npair * R2, df, tl * nb * R, y2[0], yd[0], nb)
            else:
                facc[c] = 0
                for b in range(nb):
                    db = h2f_block(dbuf[c, 0], d, tl, b)
                    for t in range(T):
                        set_i8_16(acc, 0, q8f, (tl * npair + 16 * b) * R2, R2, y2[t], 16 * b)  # all R = TILE rows
                        acc_tile_sym(facc[c, t], acc, db, yd[t, b], db, np.int32(0))
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.Q8_0,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    act=act.Q8_0,
    dot_ref=dot_ref,
    arrays=("q8", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
