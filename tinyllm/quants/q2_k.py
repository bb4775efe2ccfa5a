"""Q2_K: 256 weights = 16 sub-blocks of 16, 84 bytes (kquants-family.md §1.1, §2.1, §3.1, §3.2, §4).

    +--------------------+---------------------------------------------+-----+------+
    | scales[16]         | qs[64]: byte 32h+l holds x[128h+32j+l]      | d   | dmin |
    | lo: sc_j  hi: m_j  |         in bits 2j..2j+1 (h = 0,1; j = 0..3) | f16 | f16  |
    +--------------------+---------------------------------------------+-----+------+
    y = (d*sc_j) * q - (dmin*m_j),  q in 0..3, sub-block j = e/16 (4-bit sc_j, m_j)

Kernels: Q2_K weights x Q8_K activations. Tiles hold `q2` (ntile, n_in/4, R): bits 2k..2k+1
of byte g = element 4g+k, `sc` the scales bytes as stored (scale low nibble, min high
nibble: one byte per 16 weights, so the tiles keep ggml's 84 bytes per 256 weights), `d`,
`dmin`. Q3_K (q3_k.py) shares the 2-bit layout and its helpers.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import (
    F32, NONFINITE, OVERFLOW, as_rows, fp16_field, kquant_imatrix_weights, kquant_imatrix_weights_ref, out_rows,
    quiet, read_fp16, validate_fp16,
)
from .fit import (
    LIMIT, make_qkx2_quants, make_qkx2_quants_ref, make_qkx3_quants_ref, make_qp_quants, make_qp_quants_rows_ref,
    qkx2_lanes, to_lanes,
)
from .fp16 import fp16_to_fp32, fp32_to_fp16
from .rounding import nearest_int, nearest_int_np, row_nonfinite
from .simd import dot_q2, unpack2
from .spec import TypeSpec
from .tiles import avx2_chunks, chunking, fp16_bits, h2f_block, h2f_tile, pack_bits, store, store_tile
from .types import QK_K, GGMLType

BLOCK = np.dtype([("scales", "u1", 16), ("qs", "u1", 64), ("d", "<f2"), ("dmin", "<f2")])
_F0, _F1, _F15 = F32(0.0), F32(1.0), F32(15.0)


# -- reference (NumPy) ------------------------------------------------------------------------


def crumbs(qs: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K qs (..., 64) -> (..., 256) 2-bit values in element order (§1.1)."""
    q = qs.reshape(qs.shape[:-1] + (2, 1, 32))  # [h, -, l]
    shifts = (2 * np.arange(4, dtype=np.uint8)).reshape(4, 1)
    return ((q >> shifts) & 3).reshape(qs.shape[:-1] + (256,))


def pack_crumbs(L: np.ndarray) -> np.ndarray:
    """(nb, 256) values 0..3 -> qs (nb, 64): byte 32h+l = Σ_j L[128h+32j+l] << 2j."""
    L4 = L.reshape(-1, 2, 4, 32).astype(np.uint8)
    return (L4[:, :, 0] | (L4[:, :, 1] << 2) | (L4[:, :, 2] << 4) | (L4[:, :, 3] << 6)).reshape(-1, 64)


def dequantize(b: np.ndarray) -> np.ndarray:
    nb = b.size
    sc = b["scales"]
    dl = b["d"].astype(F32)[:, None] * (sc & 0xF).astype(F32)  # (nb, 16)
    ml = b["dmin"].astype(F32)[:, None] * (sc >> 4).astype(F32)
    q = crumbs(b["qs"]).reshape(nb, 16, 16).astype(F32)
    return ((dl[:, :, None] * q) - ml[:, :, None]).reshape(nb, QK_K)


@quiet
def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_row_q2_K_ref (§3.1); with qw (n,) quantize_row_q2_K_impl (§3.2)."""
    x = as_rows(x, GGMLType.Q2_K)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    xs = xb.reshape(nb * 16, 16)
    if qw is None:
        scales, mins, L = make_qkx2_quants_ref(xs, np.abs(xs), 3, -0.5, 0.1, 15, use_mad=True)
        scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)

        def top(v):  # `if v > top: top = v` from 0
            m = v.max(axis=1)
            return np.where(m > 0, m, F32(0)).astype(F32)

        max_scale, max_min = top(scales), top(mins)
        has_s, has_m = max_scale > 0, max_min > 0
        iscale = np.where(has_s, F32(15) / np.where(has_s, max_scale, F32(1)), F32(0)).astype(F32)
        imin = np.where(has_m, F32(15) / np.where(has_m, max_min, F32(1)), F32(0)).astype(F32)
        # scales[j] = l (uint8_t, no clamp), then |= l << 4 for the min
        ls = np.where(has_s[:, None], nearest_int_np(iscale[:, None] * scales) & 0xFF, 0)
        lm = np.where(has_m[:, None], (nearest_int_np(imin[:, None] * mins) << 4) & 0xFF, 0)
        sc = (ls | lm).astype(np.uint8)
        d = np.where(has_s, max_scale / F32(15), F32(0)).astype(F32)
        dmin = np.where(has_m, max_min / F32(15), F32(0)).astype(F32)
    else:
        w, sw = kquant_imatrix_weights_ref(x, qw, 16, 1)  # sigma2 = Σx²/256 here (no factor 2)
        scales, mins, L = make_qkx3_quants_ref(xs, w.reshape(nb * 16, 16), 3, -0.9, 0.05, 36)
        d, ls = make_qp_quants_rows_ref(15, scales.reshape(nb, 16), sw)
        dmin, lm = make_qp_quants_rows_ref(15, mins.reshape(nb, 16), sw)
        sc = ((ls.astype(np.int64) | (lm.astype(np.int64) << 4)) & 0xFF).astype(np.uint8)
    b = np.zeros(nb, BLOCK)
    b["scales"] = sc
    b["d"] = fp32_to_fp16(d)
    b["dmin"] = fp32_to_fp16(dmin)
    # re-quantize against the stored scales; a sub-block with d_j == 0 keeps its fitted L
    dj = b["d"].astype(F32)[:, None] * (sc & 0xF).astype(F32)
    dmj = b["dmin"].astype(F32)[:, None] * (sc >> 4).astype(F32)
    requant = np.clip(nearest_int_np((xb.reshape(nb, 16, 16) + dmj[:, :, None]) / dj[:, :, None]), 0, 3)
    L = np.where((dj != 0)[:, :, None], requant, L.reshape(nb, 16, 16)).reshape(nb, QK_K)
    b["qs"] = pack_crumbs(L)
    validate_fp16(b["d"], x, GGMLType.Q2_K, "block scale d")
    validate_fp16(b["dmin"], x, GGMLType.Q2_K, "block scale dmin")
    return out_rows(b, rows)


def unpack_ref(raw: np.ndarray):
    """-> d, dmin f32 (n_out, nb); sc, m int (n_out, nb, 16); q int 0..3 (n_out, nb, 256)."""
    b = raw.reshape(raw.shape[0], -1, 84)
    sc = b[:, :, 0:16].astype(np.int32)
    q = crumbs(b[:, :, 16:80]).astype(np.int32)
    return fp16_to_fp32(b[:, :, 80:82]), fp16_to_fp32(b[:, :, 82:84]), sc & 15, sc >> 4, q


def dot_ref(raw, qs, d, bsums):
    """Q2_K x Q8_K (§4): d*dy * Σ_j sc_j Σ q*qy - dmin*dy * Σ_j m_j * bsums_j, per super-block."""
    wd, wdmin, sc, m, q = unpack_ref(raw)
    n_out, nb = wd.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, 16, 16).astype(np.int64)
    sub = np.einsum("rbjl,tbjl->trbj", q.reshape(n_out, nb, 16, 16).astype(np.int64), yq)
    isum = (sub * sc[None]).sum(axis=3)
    summs = np.einsum("rbj,tbj->trb", m.astype(np.int64), bsums.reshape(T, nb, 16).astype(np.int64))
    dd = (wd[None] * d[:, None, :]).astype(F32).astype(np.float64)
    dm = (wdmin[None] * d[:, None, :]).astype(F32).astype(np.float64)
    return (dd * isum - dm * summs).sum(axis=2).astype(F32)


# -- quantizer (Numba) -------------------------------------------------------------------------


@jit_exact
def pack_crumbs_row(L, o, qo):
    """L[0:256] (0..3) -> qs bytes o[qo:qo+64] (§1.1)."""
    for h in range(2):
        for l in range(32):
            e = 128 * h + l
            o[qo + 32 * h + l] = L[e] | (L[e + 32] << 2) | (L[e + 64] << 4) | (L[e + 96] << 6)


@jit_exact
def _finish(xr, base, o, ob, Lt, lane0, scales, mins, L, sw, ls, lm):
    """Steps 2-5 of quantize_row_q2_K_ref (§3.1) for the super-block at xr[base:base+256], given
    its 16 sub-block fits in lanes lane0..; with sub-block weight sums sw (non-empty) the
    scales come from make_qp_quants as in quantize_row_q2_K_impl (§3.2)."""
    if sw.shape[0] == 0:
        max_scale = _F0
        max_min = _F0
        for j in range(16):
            if scales[lane0 + j] > max_scale:
                max_scale = scales[lane0 + j]
            if mins[lane0 + j] > max_min:
                max_min = mins[lane0 + j]
        iscale = _F15 / max_scale if max_scale > _F0 else _F0
        for j in range(16):
            o[ob + j] = (nearest_int(iscale * scales[lane0 + j]) & 0xFF) if max_scale > _F0 else 0
        d_block = max_scale / _F15 if max_scale > _F0 else _F0
        if max_min > _F0:
            imin = _F15 / max_min
            for j in range(16):
                o[ob + j] |= (nearest_int(imin * mins[lane0 + j]) << 4) & 0xFF
        m_block = max_min / _F15 if max_min > _F0 else _F0
    else:
        d_block = make_qp_quants(16, 15, scales, lane0, ls, 0, sw, lane0)
        m_block = make_qp_quants(16, 15, mins, lane0, lm, 0, sw, lane0)
        for j in range(16):
            o[ob + j] = (np.int64(ls[j]) | (np.int64(lm[j]) << 4)) & 0xFF
    d, ok_d = fp16_field(o, ob + 80, d_block)
    dmin, ok_m = fp16_field(o, ob + 82, m_block)
    for j in range(16):
        sc = np.int64(o[ob + j])
        dj = d * F32(sc & 0xF)
        if dj == _F0:
            for ii in range(16):
                L[16 * j + ii] = np.int64(Lt[ii, lane0 + j])
            continue
        dm = dmin * F32(sc >> 4)
        for ii in range(16):
            L[16 * j + ii] = min(3, max(0, nearest_int((xr[base + 16 * j + ii] + dm) / dj)))
    pack_crumbs_row(L, o, ob + 16)
    return ok_d and ok_m


@jit_exact
def row_q2(xr, o, limit, qw):
    """One row of Q2_K; qw: the imatrix weights of its columns, or empty. Returns False if an
    fp16 scale overflowed. limit: the lanes' guard bound (fit.LIMIT; 0 in a test sends every
    sub-block through the scalar fit)."""
    nb = xr.shape[0] // 256
    N = 16 * nb
    imx = qw.shape[0] != 0
    if imx:  # the sub-block fits of quantize_row_q2_K_impl (qkx3) and of _ref
        rmin, rdelta, nstep, use_mad = F32(-0.9), F32(0.05), 36, False
    else:
        rmin, rdelta, nstep, use_mad = F32(-0.5), F32(0.1), 15, True
    xt = np.empty((16, N), np.float32)
    wt = np.empty((16, N), np.float32)
    Lt = np.empty((16, N), np.float32)
    laux = np.empty((16, N), np.float32)
    st = np.empty((20, N), np.float32)
    sw = np.empty(N if imx else 0, np.float32)
    L = np.empty(256, np.int64)
    lone = np.empty(16, np.int64)
    wone = np.empty(16, np.float32)
    ls = np.empty(16, np.uint8)
    lm = np.empty(16, np.uint8)
    to_lanes(xr, xt)
    if imx:
        kquant_imatrix_weights(xr, qw, wt, sw, 16, _F1)
    else:
        for i in range(16):
            for k in range(N):
                wt[i, k] = abs(xt[i, k])
    qkx2_lanes(xt, wt, 3, rmin, rdelta, nstep, use_mad, Lt, laux, st, limit)
    for k in range(N):
        if st[2, k] != _F0:  # exact scalar fit for a lane the guard flagged
            for i in range(16):
                wone[i] = wt[i, k]
            sc, mn = make_qkx2_quants(xr, 16 * k, wone, lone, 0, L, 3, rmin, rdelta, nstep, 16, use_mad)
            st[0, k] = sc
            st[1, k] = mn
            for i in range(16):
                Lt[i, k] = F32(lone[i])
    ok = True
    for ib in range(nb):
        good = _finish(xr, 256 * ib, o, 84 * ib, Lt, 16 * ib, st[0], st[1], L, sw, ls, lm)
        ok = ok and good
    return ok


@jit_exact
def quantize_rows_q2(x, xu, out, status, qw, limit):
    for r in range(x.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
        elif not row_q2(x[r], out[r], limit, qw):
            status[r] = OVERFLOW


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    quantize_rows_q2(x, xu, out, status, qw, LIMIT)


@jit_exact
def dequant_rows(out, wq, ids):
    for k in range(ids.shape[0]):
        row = wq[ids[k]]
        for b in range(out.shape[1] // 256):
            o = b * 84
            d = read_fp16(row, o + 80)
            dmin = read_fp16(row, o + 82)
            for e in range(256):
                sc = np.int32(row[o + e // 16])
                dl = F32(d * F32(sc & 0xF))
                ml = F32(dmin * F32(sc >> 4))
                q = (np.int32(row[o + 16 + 32 * (e // 128) + e % 32]) >> (2 * ((e // 32) % 4))) & 3
                out[k, b * 256 + e] = F32(F32(dl * F32(q)) - ml)


# -- kernels -----------------------------------------------------------------------------------


def repack_rows(b: np.ndarray) -> dict:
    rows = b.shape[0]
    return {
        "q2": pack_bits(crumbs(b[:, :, 16:80]).reshape(rows, -1), 2),
        "sc": np.ascontiguousarray(b[:, :, 0:16]).reshape(rows, -1),
        "d": fp16_bits(b[:, :, 80:82]),
        "dmin": fp16_bits(b[:, :, 82:84]),
    }


@jit_fast
def sum8_q2(isub, w0, w1, yq, t, e):
    """isub[r] += Σ_{k<8} q2(element e+k of row r) * yq[t, e+k] (two bytes of four 2-bit values)."""
    y0 = np.int32(yq[t, e])
    y1 = np.int32(yq[t, e + 1])
    y2 = np.int32(yq[t, e + 2])
    y3 = np.int32(yq[t, e + 3])
    y4 = np.int32(yq[t, e + 4])
    y5 = np.int32(yq[t, e + 5])
    y6 = np.int32(yq[t, e + 6])
    y7 = np.int32(yq[t, e + 7])
    for r in range(isub.shape[0]):
        a = np.int32(w0[r])
        c = np.int32(w1[r])
        isub[r] += (
            (a & 3) * y0
            + ((a >> 2) & 3) * y1
            + ((a >> 4) & 3) * y2
            + (a >> 6) * y3
            + (c & 3) * y4
            + ((c >> 2) & 3) * y5
            + ((c >> 4) & 3) * y6
            + (c >> 6) * y7
        )


@jit_fast
def _tile(out, t, tl, q2, sc, dt, dmt, yq, yd, ys, isub, isum, summ, facc):
    R = facc.shape[0]
    facc[:] = 0
    for b in range(dt.shape[0]):
        isum[:] = 0
        summ[:] = 0
        for j in range(16 * b, 16 * b + 16):  # sub-blocks of 16 = 2 groups of 8 elements
            isub[:] = 0
            for g in range(2 * j, 2 * j + 2):
                sum8_q2(isub, q2[tl, 2 * g], q2[tl, 2 * g + 1], yq, t, 8 * g)
            bs = ys[t, j]
            s = sc[tl, j]
            for r in range(R):
                v = np.int32(s[r])
                isum[r] += (v & 15) * isub[r]
                summ[r] += (v >> 4) * bs
        dy = yd[t, b]
        db = dt[b]
        dm = dmt[b]
        for r in range(R):
            facc[r] += (db[r] * dy) * F32(isum[r]) - (dm[r] * dy) * F32(summ[r])
    store(out, t, tl * R, facc)


@jit_fast(parallel=True)
def mm(out, q2, sc, d, dmin, yq, yd, ys):
    """Q2_K weights x Q8_K activations; ys are the Q8_K bsums (per 16)."""
    T = out.shape[0]
    ntile = q2.shape[0]
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
                _tile(out, t, tl, q2, sc, dt, dmt, yq, yd, ys, isub, isum, summ, facc)


@jit_fast(parallel=True)
def mm_avx2(out, q2, sc, d, dmin, yq, yd, ys):
    """Q2_K weights x Q8_K activations: each super-block of a tile is unpacked once into bytes
    0..3 (unpack2, 32 rows a call), then each token's exact scale and min sums per row over
    the whole super-block are one dot_q2 (vpmaddubsw per sub-block, vpmaddwd with the scales)."""
    T = out.shape[0]
    ntile, nq, R = q2.shape
    nsub = sc.shape[1]
    nb = d.shape[1]
    y2 = yq.view(np.int16)
    q2f = q2.reshape(-1)
    scf = sc.reshape(-1)
    R2 = 2 * R
    per, nchunk, qb, isub, dbuf, facc = avx2_chunks(ntile, T, R, 128)
    for c in prange(nchunk):
        buf = qb[c]
        acc = isub[c].reshape(-1)  # [0:R] scale sums, [R:2R] min sums
        for tl in range(c * per, min(ntile, c * per + per)):
            facc[c] = 0
            for b in range(nb):
                for g in range(32):  # 32 groups of 8 elements = 4 pairs, from 2 bytes per row, 32 rows a call
                    for rc in range(0, R, 32):
                        unpack2(buf, 4 * g * R2 + 2 * rc, R2, q2f, (tl * nq + 64 * b + 2 * g) * R + rc, R, q2f, 0)
                db = h2f_block(dbuf[c, 0], d, tl, b)
                dm = h2f_block(dbuf[c, 1], dmin, tl, b)
                for t in range(T):
                    dot_q2(acc, 0, buf, 0, R2, y2[t], 128 * b, scf, (tl * nsub + 16 * b) * R, R, ys[t], 16 * b)
                    dy = yd[t, b]
                    ft = facc[c, t]
                    for r in range(R):
                        ft[r] += (db[r] * dy) * F32(acc[r]) - (dm[r] * dy) * F32(acc[R + r])
            store_tile(out, tl, facc[c])


SPEC = TypeSpec(
    type=GGMLType.Q2_K,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
    uses_imatrix=True,
    act=act.Q8_K,
    dot_ref=dot_ref,
    arrays=("q2", "sc", "d", "dmin"),
    repack_rows=repack_rows,
    kernels={"portable": mm, "avx2": mm_avx2},
    dequant_rows=dequant_rows,
    max_quantization_error=0.0075,
)
