"""Q4_1: 32 weights, 20 bytes (kquants.md §3.10; kquants-family.md §4.1).

    +-----+-----+------------------------+
    | d   | m   | qs[16]                 |      y = q * d + m,  q in 0..15
    | f16 | f16 | lo: x[j]  hi: x[j+16]  |
    +-----+-----+------------------------+

Kernels: Q4_1 weights x Q8_1 activations, as ggml: per block
f32(d*dy) * Σ q*qy + m * s, where s = fp16(dy * Σqy) comes with the activations. Tiles hold
`q4` nibble pairs in natural order and the fp16 bits of `d` and `m`. Q5_1 (q5_1.py) reuses
the block code here with a fifth bit.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import (
    F32, NONFINITE, OVERFLOW, argext, as_rows, fp16_field, out_rows, put16, quiet, read_fp16,
    row_imatrix_weights, row_imatrix_weights_ref, safe_recip, validate_fp16,
)
from .fit import LIMIT, make_qkx3_quants, make_qkx3_quants_ref, qkx2_lanes, to_lanes
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .q4_0 import pack_x_0, sum8_q4
from .rounding import c_int8, c_int8_np, row_nonfinite
from .simd import acc_tile_mins, mac_u8_8, row_q4_1, set_u8_8, unpack4
from .spec import TypeSpec
from .tiles import (
    avx2_chunks, chunking, decode_chunks, fp16_bits, h2f_block, h2f_tile, nibble_pairs, nibbles_32, store,
    store_tile,
)
from .types import QK8_0, GGMLType

BLOCK = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])
_F0, _F1, _F_HALF = F32(0.0), F32(1.0), F32(0.5)
_RMIN_IMX, _RDELTA_IMX = F32(-0.9), F32(0.05)


# -- reference (NumPy) ------------------------------------------------------------------------


def dequantize(b: np.ndarray) -> np.ndarray:
    q = nibbles_32(b["qs"])
    return q.astype(F32) * b["d"].astype(F32)[:, None] + b["m"].astype(F32)[:, None]


@quiet
def quantize_x_1_ref(x: np.ndarray, type: GGMLType, block: np.dtype, qw=None) -> np.ndarray:
    """quantize_row_q4_1_ref / q5_1_ref (§3.10): d = (max-min)/nmax, m = min, q = (int)((x-min)*id + 0.5).
    With qw (n,): quantize_row_q4_1_impl / q5_1_impl, make_qkx3_quants(32, nmax, x, w, -0.9,
    0.05, 36) with weights qw*sqrt(sigma2 + x²), sigma2 = Σx²/n over the row."""
    x = as_rows(x, type)
    xb = x.reshape(-1, QK8_0)
    nmax = 15 if type == GGMLType.Q4_1 else 31
    if qw is not None:
        w = row_imatrix_weights_ref(x, qw).reshape(-1, QK8_0)
        d, the_min, q = make_qkx3_quants_ref(xb, w, nmax, -0.9, 0.05, 36)
        mn = -the_min
    else:
        mn = argext(xb, np.argmin)
        mx = argext(xb, np.argmax)
        d = (mx - mn) / F32(nmax)
        id = safe_recip(d)
        q = c_int8_np((xb - mn[:, None]) * id[:, None] + F32(0.5))
        if type == GGMLType.Q4_1:
            q = np.minimum(15, q)  # MIN(15, (int8_t)(.)); Q5_1's (uint8_t)(.) has no clamp, same low byte
    b = np.zeros(xb.shape[0], block)
    b["d"] = fp32_to_fp16(d)
    b["m"] = fp32_to_fp16(mn)
    pack_x_0(b, (q & 0xFF).astype(np.uint8))
    validate_fp16(b["d"], x, type, "block scale d")
    validate_fp16(b["m"], x, type, "block scale m")
    return out_rows(b, x.shape[0])


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    return quantize_x_1_ref(x, GGMLType.Q4_1, BLOCK, qw)


def unpack_ref(raw: np.ndarray):
    """-> d, m f32 (n_out, nb), q int in 0..15 (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 20)
    return fp16_to_fp32(b[:, :, 0:2]), fp16_to_fp32(b[:, :, 2:4]), nibbles_32(b[:, :, 4:20].astype(np.int32))


def dot_min32_ref(wd, wm, wq, qs, d, s):
    """out (T, n_out) for 32-blocks with a min, y = q*d + m (wd, wm (n_out, nb), wq (n_out, nb, 32)),
    x Q8_1 activations (qs, d, s): f32(d*dy) * exact Σ q*qy + f32(m*s), summed in float64."""
    T = qs.shape[0]
    yq = qs.reshape(T, -1, QK8_0).astype(np.int64)
    isum = np.einsum("rbj,tbj->trb", wq.astype(np.int64), yq)
    scale = (wd[None, :, :] * d[:, None, :]).astype(F32).astype(np.float64)
    mins = (wm[None, :, :] * s[:, None, :]).astype(F32).astype(np.float64)
    return (isum * scale + mins).sum(axis=2).astype(F32)


def dot_ref(raw, qs, d, s):
    return dot_min32_ref(*unpack_ref(raw), qs, d, s)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact(inline="always")
def block_x_1(xr, base, o, ob, nmax, five):
    """quantize_row_q4_1_ref (nmax 15, clamped) / q5_1_ref (nmax 31, no clamp) for one block."""
    mn = xr[base]
    mx = xr[base]
    for j in range(1, 32):
        v = xr[base + j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    d = (mx - mn) / F32(nmax)
    id = _F1 / d if d != _F0 else _F0
    _, ok_d = fp16_field(o, ob, d)
    _, ok_m = fp16_field(o, ob + 2, mn)
    qh = 0
    qs = ob + 8 if five else ob + 4
    for j in range(16):
        a0 = c_int8((xr[base + j] - mn) * id + _F_HALF)
        a1 = c_int8((xr[base + 16 + j] - mn) * id + _F_HALF)
        if not five:  # Q4_1: MIN(15, (int8_t)(.)); Q5_1: (uint8_t)(.), the same low byte
            a0 = min(15, a0)
            a1 = min(15, a1)
        o[qs + j] = ((a0 & 0xF) | ((a1 & 0xF) << 4)) & 0xFF
        qh |= ((a0 >> 4) & 1) << j
        qh |= ((a1 >> 4) & 1) << (j + 16)
    if five:
        put16(o, ob + 4, qh & 0xFFFF)
        put16(o, ob + 6, (qh >> 16) & 0xFFFF)
    return ok_d and ok_m


@jit_exact
def _pack_x_1(o, ob, d_block, m_block, L, lane, five):
    """Store d, m and the quants L[:, lane] (0..15 / 0..31) of one block (Q5_1: and qh)."""
    _, ok_d = fp16_field(o, ob, d_block)
    _, ok_m = fp16_field(o, ob + 2, m_block)
    qh = 0
    qs = ob + 8 if five else ob + 4
    for j in range(16):
        a0 = np.int64(L[j, lane])
        a1 = np.int64(L[16 + j, lane])
        o[qs + j] = ((a0 & 0xF) | ((a1 & 0xF) << 4)) & 0xFF
        qh |= ((a0 >> 4) & 1) << j
        qh |= ((a1 >> 4) & 1) << (j + 16)
    if five:
        put16(o, ob + 4, qh & 0xFFFF)
        put16(o, ob + 6, (qh >> 16) & 0xFFFF)
    return ok_d and ok_m


@jit_exact
def quantize_rows_x_1(x, xu, out, status, qw, nmax, five, limit):
    """Q4_1 (nmax 15) / Q5_1 (nmax 31, five) rows; qw: imatrix weights per column, or empty.
    With qw: quantize_row_q4_1_impl / q5_1_impl, the blocks' make_qkx3_quants(32, nmax, x,
    qw*sqrt(sigma2 + x²), -0.9, 0.05, 36) fits side by side (fit.qkx2_lanes; a lane its guard
    flags is redone by the scalar fit). limit: that guard's bound (tests pass 0)."""
    bsize = 24 if five else 20
    rows, n = x.shape
    nb = n // 32
    imx = qw.shape[0] != 0
    m = nb if imx else 0
    w = np.empty(n if imx else 0, np.float32)
    xt = np.empty((32, m), np.float32)
    wt = np.empty((32, m), np.float32)
    Lt = np.empty((32, m), np.float32)
    laux = np.empty((32, m), np.float32)
    st = np.empty((20, m), np.float32)
    lone = np.empty(32, np.int64)
    lscratch = np.empty(32, np.int64)
    for r in range(rows):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        if imx:
            row_imatrix_weights(x[r], qw, w)
            to_lanes(x[r], xt)
            to_lanes(w, wt)
            qkx2_lanes(xt, wt, nmax, _RMIN_IMX, _RDELTA_IMX, 36, False, Lt, laux, st, limit)
            for ib in range(nb):
                if st[2, ib] != _F0:  # exact scalar fit for a lane the guard flagged
                    sc, mn = make_qkx3_quants(x[r], 32 * ib, w[32 * ib : 32 * ib + 32], lone, 0, lscratch, nmax,
                                              _RMIN_IMX, _RDELTA_IMX, 36, 32, False)
                    st[0, ib] = sc
                    st[1, ib] = mn
                    for i in range(32):
                        Lt[i, ib] = F32(lone[i])
                good = _pack_x_1(out[r], bsize * ib, st[0, ib], -st[1, ib], Lt, ib, five)
                ok = ok and good
        else:
            for ib in range(nb):
                good = block_x_1(x[r], 32 * ib, out[r], bsize * ib, nmax, five)
                ok = ok and good
        if not ok:
            status[r] = OVERFLOW


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_x_1(x, xu, out, status, qw, 15, False, LIMIT)


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        r = ids[k]
        for b in range(out.shape[1] // 32):
            d = read_fp16(wq[r], b * 20)
            m = read_fp16(wq[r], b * 20 + 2)
            for j in range(16):
                q = np.int32(wq[r, b * 20 + 4 + j])
                out[k, b * 32 + j] = F32(F32(F32(q & 15) * d) + m)
                out[k, b * 32 + 16 + j] = F32(F32(F32(q >> 4) * d) + m)


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    nat = nibbles_32(b[:, :, 4:20]).reshape(b.shape[0], -1)
    return {"q4": nibble_pairs(nat), "d": fp16_bits(b[:, :, 0:2]), "m": fp16_bits(b[:, :, 2:4])}


@jit_fast
def _tile(out, t, tl, q4, dt, mt, yq, yd, ys, isub, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isub[:] = 0
        for g in range(4 * b, 4 * b + 4):
            p = 4 * g
            sum8_q4(isub, q4[tl, p], q4[tl, p + 1], q4[tl, p + 2], q4[tl, p + 3], yq, t, 8 * g)
        dy = yd[t, b]
        sy = ys[t, b]
        db = dt[b]
        mb = mt[b]
        for r in range(R):
            facc[r] += F32(isub[r]) * (db[r] * dy) + mb[r] * sy
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q4, d, m, yq, yd, ys):
    """Q4_1 weights x Q8_1 activations; ys are the activations' s (float32 per 32)."""
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
                _tile(out, t, tl, q4, dt, mt, yq, yd, ys, isub, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q4, d, m, yq, yd, ys):
    """Q4_1 weights x Q8_1 activations."""
    T = out.shape[0]
    ntile, npair, R = q4.shape
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q4f = q4.reshape(-1)
    R2 = 2 * R
    if T == 1:  # decode: a whole tile row per call, unpacked in registers
        df = d.reshape(-1)
        mf = m.reshape(-1)
        per, nchunk, fbuf = decode_chunks(ntile, R)
        for c in prange(nchunk):
            fr = fbuf[c]
            for tl in range(c * per, min(ntile, c * per + per)):
                row_q4_1(fr, q4f, tl * npair * R, q4f, 0, df, tl * nb * R, mf, y2[0], yd[0], ys[0], nb)
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
                mb = h2f_block(dbuf[c, 1], m, tl, b)
                for t in range(T):
                    set_u8_8(acc, 0, buf, 0, R2, y2[t], 16 * b)  # all R = TILE rows
                    mac_u8_8(acc, 0, buf, 8 * R2, R2, y2[t], 16 * b + 8)
                    acc_tile_mins(facc[c, t], acc, db, yd[t, b], mb, ys[t, b])
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.Q4_1,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_1,
    dot_ref=dot_ref,
    arrays=("q4", "d", "m"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
)
