"""Q4_0: 32 weights, 18 bytes (kquants.md §1.1, §2, §3.2, §4.1).

    +-----+------------------------+
    | d   | qs[16]                 |      y = (q - 8) * d
    | f16 | lo: x[j]  hi: x[j+16]  |
    +-----+------------------------+

Kernels: Q4_0 weights x Q8_0 activations. Tiles hold `q4` nibble pairs in natural order
(ntile, n_in/2, R) and `d`; the +8 offset of the stored quants is subtracted once per block
through the activation block sums. Q5_0 (q5_0.py) reuses the block code here with a fifth bit.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import (
    F32, NONFINITE, OVERFLOW, as_rows, first_absmax, fp16_field, out_rows, put16, quiet, read_fp16,
    row_imatrix_weights, row_imatrix_weights_ref, safe_recip, validate_fp16,
)
from .fit import make_qx_quants_ref, qx_lanes, to_lanes
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .q8_0 import dot_sym32_ref
from .rounding import c_int8, c_int8_np, row_nonfinite
from .simd import acc_tile_sym, mac_u8_8, row_q4_0, set_u8_8, unpack4
from .spec import TypeSpec
from .tiles import (
    avx2_chunks, chunking, decode_chunks, fp16_bits, h2f_block, h2f_tile, nibble_pairs, nibbles_32, store,
    store_tile,
)
from .types import QK8_0, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
_F0, _F1, _F_HALF = F32(0.0), F32(1.0), F32(0.5)


# -- reference (NumPy) ------------------------------------------------------------------------


def dequantize(b: np.ndarray) -> np.ndarray:
    q = nibbles_32(b["qs"]).astype(np.int8) - 8
    return q.astype(F32) * b["d"].astype(F32)[:, None]


def pack_x_0(b: np.ndarray, q: np.ndarray) -> None:
    """(nb, 32) quants -> qs nibbles (j lo, j+16 hi) and, for 5-bit types, bit 4 into qh bit j."""
    b["qs"] = (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)
    if "qh" in b.dtype.names:
        bits = ((q >> 4) & 1).astype(np.uint32)
        b["qh"] = (bits << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


@quiet
def quantize_x_0_ref(x: np.ndarray, type: GGMLType, block: np.dtype, qw=None) -> np.ndarray:
    """quantize_row_q4_0_ref / q5_0_ref (§3.2, §3.3): d = max/-8 (or -16), q = MIN(nmax, (int)(x*id + 8.5)).
    With qw (n,): quantize_row_q4_0_impl / q5_0_impl, make_qx_quants with weights
    qw*sqrt(sigma2 + x²), sigma2 = Σx²/n over the row (kquants.md §3.11)."""
    x = as_rows(x, type)
    xb = x.reshape(-1, QK8_0)
    half = 8 if type == GGMLType.Q4_0 else 16
    if qw is not None:
        w = row_imatrix_weights_ref(x, qw).reshape(-1, QK8_0)
        d, q = make_qx_quants_ref(xb, half, 1, w)
    else:
        _, mx = first_absmax(xb)
        d = mx / F32(-half)
        id = safe_recip(d)
        q = (np.minimum(2 * half - 1, c_int8_np(xb * id[:, None] + F32(half + 0.5))) & 0xFF).astype(np.uint8)
    b = np.zeros(xb.shape[0], block)
    b["d"] = fp32_to_fp16(d)
    pack_x_0(b, q)
    validate_fp16(b["d"], x, type, "block scale d")
    return out_rows(b, x.shape[0])


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    return quantize_x_0_ref(x, GGMLType.Q4_0, BLOCK, qw)


def unpack_ref(raw: np.ndarray):
    """-> d f32 (n_out, nb), q int in -8..7 (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 18)
    return fp16_to_fp32(b[:, :, 0:2]), nibbles_32(b[:, :, 2:18].astype(np.int32)) - 8


def dot_ref(raw, qs, d, ys):
    return dot_sym32_ref(*unpack_ref(raw), qs, d)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact(inline="always")
def block_x_0(xr, xu, base, o, ob, nmax, five):
    """quantize_row_q4_0_ref (nmax 15) / q5_0_ref (nmax 31, five) for one block:
    d = max / -8 or -16, q = MIN(nmax, (int)(x*id + 8.5 or 16.5))."""
    # first element of largest |x|, sign kept: the max over the bit patterns vectorises,
    # then a short search finds where it first occurs
    abits = 0
    for j in range(32):
        abits = max(abits, np.int64(xu[base + j] & 0x7FFFFFFF))
    mx = _F0
    if abits != 0:
        for j in range(32):
            if np.int64(xu[base + j] & 0x7FFFFFFF) == abits:
                mx = xr[base + j]
                break
    half = F32((nmax + 1) // 2)
    d = mx / -half
    id = _F1 / d if d != _F0 else _F0
    _, ok = fp16_field(o, ob, d)
    bias = half + _F_HALF
    qh = 0
    qs = ob + 6 if five else ob + 2
    for j in range(16):
        a0 = min(nmax, c_int8(xr[base + j] * id + bias))
        a1 = min(nmax, c_int8(xr[base + 16 + j] * id + bias))
        o[qs + j] = ((a0 & 0xF) | ((a1 & 0xF) << 4)) & 0xFF
        qh |= ((a0 >> 4) & 1) << j
        qh |= ((a1 >> 4) & 1) << (j + 16)
    if five:
        put16(o, ob + 2, qh & 0xFFFF)
        put16(o, ob + 4, (qh >> 16) & 0xFFFF)
    return ok


@jit_exact
def _pack_x_0(o, ob, d_block, L, lane, five):
    """Store d and the quants L[:, lane] (0..15 / 0..31) of one block: qs nibbles, Q5_0's qh."""
    _, ok = fp16_field(o, ob, d_block)
    qh = 0
    qs = ob + 6 if five else ob + 2
    for j in range(16):
        a0 = np.int64(L[j, lane])
        a1 = np.int64(L[16 + j, lane])
        o[qs + j] = ((a0 & 0xF) | ((a1 & 0xF) << 4)) & 0xFF
        qh |= ((a0 >> 4) & 1) << j
        qh |= ((a1 >> 4) & 1) << (j + 16)
    if five:
        put16(o, ob + 2, qh & 0xFFFF)
        put16(o, ob + 4, (qh >> 16) & 0xFFFF)
    return ok


@jit_exact
def quantize_rows_x_0(x, xu, out, status, qw, nmax, five):
    """Q4_0 (nmax 15) / Q5_0 (nmax 31, five) rows; qw: imatrix weights per column, or empty.
    With qw: quantize_row_q4_0_impl / q5_0_impl, the blocks' make_qx_quants(32, 8 or 16, x, L,
    1, qw*sqrt(sigma2 + x²)) fits run side by side (fit.qx_lanes)."""
    bsize = 22 if five else 18
    rows, n = x.shape
    nb = n // 32
    imx = qw.shape[0] != 0
    m = nb if imx else 0
    w = np.empty(n if imx else 0, np.float32)
    xt = np.empty((32, m), np.float32)
    wt = np.empty((32, m), np.float32)
    Lt = np.empty((32, m), np.float32)
    st = np.empty((8, m), np.float32)
    for r in range(rows):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        if imx:
            row_imatrix_weights(x[r], qw, w)
            to_lanes(x[r], xt)
            to_lanes(w, wt)
            qx_lanes(xt, wt, (nmax + 1) // 2, Lt, st)
            for ib in range(nb):
                good = _pack_x_0(out[r], bsize * ib, st[0, ib], Lt, ib, five)
                ok = ok and good
        else:
            for ib in range(nb):
                good = block_x_0(x[r], xu[r], 32 * ib, out[r], bsize * ib, nmax, five)
                ok = ok and good
        if not ok:
            status[r] = OVERFLOW


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_x_0(x, xu, out, status, qw, 15, False)


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        r = ids[k]
        for b in range(out.shape[1] // 32):
            d = read_fp16(wq[r], b * 18)
            for j in range(16):
                q = np.int32(wq[r, b * 18 + 2 + j])
                out[k, b * 32 + j] = F32(F32((q & 15) - 8) * d)
                out[k, b * 32 + 16 + j] = F32(F32((q >> 4) - 8) * d)


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    nat = nibbles_32(b[:, :, 2:18]).reshape(b.shape[0], -1)
    return {"q4": nibble_pairs(nat), "d": fp16_bits(b[:, :, 0:2])}


@jit_fast
def sum8_q4(isub, w0, w1, w2, w3, yq, t, e):
    """isub[r] += Σ_{k<8} q4(element e+k of row r) * yq[t, e+k] (4 bytes of nibble pairs)."""
    y0 = np.int32(yq[t, e])
    y1 = np.int32(yq[t, e + 1])
    y2 = np.int32(yq[t, e + 2])
    y3 = np.int32(yq[t, e + 3])
    y4 = np.int32(yq[t, e + 4])
    y5 = np.int32(yq[t, e + 5])
    y6 = np.int32(yq[t, e + 6])
    y7 = np.int32(yq[t, e + 7])
    for r in range(isub.shape[0]):
        x0 = np.int32(w0[r])
        x1 = np.int32(w1[r])
        x2 = np.int32(w2[r])
        x3 = np.int32(w3[r])
        isub[r] += (
            (x0 & 15) * y0
            + (x0 >> 4) * y1
            + (x1 & 15) * y2
            + (x1 >> 4) * y3
            + (x2 & 15) * y4
            + (x2 >> 4) * y5
            + (x3 & 15) * y6
            + (x3 >> 4) * y7
        )


@jit_fast
def _tile(out, t, tl, q4, dt, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isub[:] = 0
        for g in range(4 * b, 4 * b + 4):
            p = 4 * g
            sum8_q4(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], yq, t, 8 * g)
        off = np.int32(8 * ys[t, b])  # quants are stored as q + 8
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += F32(np.int32(isub[r] - off)) * (db[r] * dy)
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q4, d, yq, yd, ys):
    """Q4_0 weights x Q8_0 activations."""
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
                _tile(out, t, tl, q4, dt, yq, yd, ys, isub, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, d, yq, yd, ys):
    """Q4_0 weights x Q8_0 activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    R2 = 2 * R
    if T == 1:  # decode: a whole tile row per call, unpacked in registers
        df = d.reshape(-1)
        per, nchunk, fbuf = decode_chunks(ntile, R)
        for c in prange(nchunk):
            fr = fbuf[c]
            for tl in range(c * per, min(ntile, c * per + per)):
                row_q4_0(fr, q4f, tl * npair * R, q4f, 0, df, tl * nb * R, df, y2[0], yd[0], ys[0], nb)
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
                        unpack4(buf, 4 * g * R2 + 2 * rc, R2, q4f, (tl * npair + 16 * b + 4 * g) * R + rc, R, q4f, 0)
                db = h2f_block(dbuf[c, 0], d, tl, b)
                for t in range(T):
                    set_u8_8(acc, 0, buf, 0, R2, y2[t], 16 * b)  # all R = TILE rows
                    mac_u8_8(acc, 0, buf, 8 * R2, R2, y2[t], 16 * b + 8)
                    acc_tile_sym(facc[c, t], acc, db, yd[t, b], db, np.int32(8 * ys[t, b]))  # stored as q + 8
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.Q4_0,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_0,
    dot_ref=dot_ref,
    arrays=("q4", "d"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
