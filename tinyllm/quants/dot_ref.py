"""Plain-NumPy twins of the Numba dot kernels in `dot.py` (kquants.md §3.8, §3.9, §4).

Each twin takes the same inputs as its kernel: the raw weight blocks (n_out, row_nbytes)
as uint8 and the activations already quantized by `quantize_q8_K_act` / `quantize_q8_0_act`
(split into int8 quants, float32 scales and int32 block sums, as the kernels read them). Integer block sums
are computed exactly in int64; the float part is done in float64 from the same float32
scale products the kernels use, so a kernel and its twin differ only by summation order.
They are slow and obvious on purpose: the tests compare every kernel against its twin.
"""
import numpy as np

from . import reference
from .types import QK8_0, QK_K, GGMLType

# ---------------------------------------------------------------------------------------
# activation quantizers


def fp16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> the float32 value of its fp16 rounding (RNE; kquants.md §0.2)."""
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def quantize_q8_K_act(x: np.ndarray):
    """Q8_K of float32 rows x (T, n), n % 256 == 0 (kquants.md §3.8), split for the kernels.

    The bytes come from the quants reference (`reference.quantize_q8_K_ref`).
    Returns qs int8 (T, n), d float32 (T, n/256), bsums int32 (T, n/16).
    """
    x = np.ascontiguousarray(x, np.float32)
    T, n = x.shape
    b = reference.quantize_q8_K_ref(x).reshape(T, n // QK_K, 292)
    qs = b[:, :, 4:260].reshape(T, n).view(np.int8)
    d = np.ascontiguousarray(b[:, :, 0:4]).view("<f4")[..., 0].astype(np.float32)
    bsums = np.ascontiguousarray(b[:, :, 260:292]).view("<i2").reshape(T, n // 16).astype(np.int32)
    return qs, d, bsums


def quantize_q8_0_act(x: np.ndarray):
    """The CPU backend's activation Q8_0 of float32 rows x (T, n), n % 32 == 0 (kquants.md §3.9,
    x86: d = fp16(amax/127), quants = rint(x * f32(127/amax))), from `reference.quantize_q8_0_act_ref`.

    Returns qs int8 (T, n), d float32 (T, n/32) holding the fp16 scale, ys int32 (T, n/32) block sums.
    """
    x = np.ascontiguousarray(x, np.float32)
    T, n = x.shape
    b = reference.quantize_q8_0_act_ref(x).reshape(T, n // QK8_0, 34)
    qs = b[:, :, 2:34].reshape(T, n).view(np.int8)
    d = np.ascontiguousarray(b[:, :, 0:2]).view("<f2")[..., 0].astype(np.float32)
    ys = qs.reshape(T, n // QK8_0, QK8_0).sum(axis=2, dtype=np.int32)
    return qs, d, ys


# ---------------------------------------------------------------------------------------
# weight block unpacking (kquants.md §1), all in natural element order


def _h2f(b2: np.ndarray) -> np.ndarray:
    """Two little-endian bytes per entry (..., 2) -> float32 of the fp16."""
    return np.ascontiguousarray(b2).view("<f2")[..., 0].astype(np.float32)


def unpack_q8_0(raw):
    """-> d f32 (n_out, nb), q int (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 34)
    return _h2f(b[:, :, 0:2]), b[:, :, 2:].view(np.int8).astype(np.int32)


def unpack_q4_0(raw):
    """-> d f32 (n_out, nb), q int in -8..7 (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 18)
    qs = b[:, :, 2:18].astype(np.int32)
    q = np.concatenate([qs & 0xF, qs >> 4], axis=2) - 8
    return _h2f(b[:, :, 0:2]), q


def unpack_q5_0(raw):
    """-> d f32 (n_out, nb), q int in -16..15 (n_out, nb, 32)."""
    b = raw.reshape(raw.shape[0], -1, 22)
    qh = np.ascontiguousarray(b[:, :, 2:6]).view("<u4")[..., 0].astype(np.int64)
    qs = b[:, :, 6:22].astype(np.int32)
    lo = np.concatenate([qs & 0xF, qs >> 4], axis=2)
    hi = (qh[..., None] >> np.arange(32)) & 1
    return _h2f(b[:, :, 0:2]), (lo | (hi << 4)).astype(np.int32) - 16


def unpack_scales_k4(scales):
    """The 12-byte 6-bit scale/min packing (..., 12) -> sc, m (..., 8) (kquants.md §1.8)."""
    q = scales.astype(np.int32)
    sc = np.empty(q.shape[:-1] + (8,), np.int32)
    m = np.empty_like(sc)
    sc[..., :4] = q[..., 0:4] & 63
    m[..., :4] = q[..., 4:8] & 63
    sc[..., 4:] = (q[..., 8:12] & 0xF) | ((q[..., 0:4] >> 6) << 4)
    m[..., 4:] = (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)
    return sc, m


def unpack_q4_K(raw):
    """-> d, dmin f32 (n_out, nb); sc, m int (n_out, nb, 8); q int 0..15 (n_out, nb, 256)."""
    b = raw.reshape(raw.shape[0], -1, 144)
    sc, m = unpack_scales_k4(b[:, :, 4:16])
    qs = b[:, :, 16:144].astype(np.int32).reshape(b.shape[0], b.shape[1], 4, 32)
    q = np.stack([qs & 0xF, qs >> 4], axis=3).reshape(b.shape[0], b.shape[1], 256)
    return _h2f(b[:, :, 0:2]), _h2f(b[:, :, 2:4]), sc, m, q


def unpack_q5_K(raw):
    """-> d, dmin f32 (n_out, nb); sc, m int (n_out, nb, 8); q int 0..31 (n_out, nb, 256)."""
    b = raw.reshape(raw.shape[0], -1, 176)
    sc, m = unpack_scales_k4(b[:, :, 4:16])
    qh = b[:, :, 16:48].astype(np.int32)  # (.., 32): bit j of qh[l] = 5th bit of element 32j+l
    qs = b[:, :, 48:176].astype(np.int32).reshape(b.shape[0], b.shape[1], 4, 32)
    lo = np.stack([qs & 0xF, qs >> 4], axis=3).reshape(b.shape[0], b.shape[1], 8, 32)
    hi = (qh[:, :, None, :] >> np.arange(8)[:, None]) & 1
    q = (lo | (hi << 4)).reshape(b.shape[0], b.shape[1], 256)
    return _h2f(b[:, :, 0:2]), _h2f(b[:, :, 2:4]), sc, m, q


def unpack_q6_K(raw):
    """-> d f32 (n_out, nb); scales int (n_out, nb, 16); q int -32..31 (n_out, nb, 256)."""
    b = raw.reshape(raw.shape[0], -1, 210)
    n_out, nb = b.shape[:2]
    ql = b[:, :, 0:128].astype(np.int32).reshape(n_out, nb, 2, 2, 32)  # (h, ql half, l)
    qh = b[:, :, 128:192].astype(np.int32).reshape(n_out, nb, 2, 32)  # (h, l)
    low = np.stack([ql[:, :, :, 0] & 0xF, ql[:, :, :, 1] & 0xF, ql[:, :, :, 0] >> 4, ql[:, :, :, 1] >> 4], axis=3)
    high = (qh[:, :, :, None, :] >> (2 * np.arange(4))[:, None]) & 3  # (h, g, l)
    q = (low | (high << 4)).reshape(n_out, nb, 256) - 32
    scales = b[:, :, 192:208].view(np.int8).astype(np.int32)
    return _h2f(b[:, :, 208:210]), scales, q


# ---------------------------------------------------------------------------------------
# dot twins: out (T, n_out) float32 = W @ x for the activation rows


def dot_q8_0_family(wtype, raw, qs, d, ys=None):
    """Q8_0 / Q5_0 / Q4_0 weights x Q8_0 activations (kquants.md §4.1-4.3)."""
    unpack = {GGMLType.Q8_0: unpack_q8_0, GGMLType.Q5_0: unpack_q5_0, GGMLType.Q4_0: unpack_q4_0}[wtype]
    wd, wq = unpack(raw)
    T = qs.shape[0]
    yq = qs.reshape(T, -1, QK8_0).astype(np.int64)
    isum = np.einsum("rbj,tbj->trb", wq.astype(np.int64), yq)  # exact block sums
    scale = (wd[None, :, :] * d[:, None, :]).astype(np.float32)  # f32 product, as the kernels do
    return (isum * scale.astype(np.float64)).sum(axis=2).astype(np.float32)


def dot_q4_K(raw, qs, d, bsums):
    """Q4_K weights x Q8_K activations (kquants.md §4.4)."""
    return _dot_kmin(unpack_q4_K(raw), qs, d, bsums)


def dot_q5_K(raw, qs, d, bsums):
    """Q5_K weights x Q8_K activations (kquants.md §4.5)."""
    return _dot_kmin(unpack_q5_K(raw), qs, d, bsums)


def _dot_kmin(unpacked, qs, d, bsums):
    wd, wdmin, sc, m, q = unpacked
    n_out, nb = wd.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, 8, 32).astype(np.int64)
    sub = np.einsum("rbjl,tbjl->trbj", q.reshape(n_out, nb, 8, 32).astype(np.int64), yq)
    isum = (sub * sc[None]).sum(axis=3)  # Σ_j sc_j Σ_e q_e y_e
    bs = bsums.reshape(T, nb, 8, 2).sum(axis=3).astype(np.int64)  # per 32-element sub-block
    summins = np.einsum("rbj,tbj->trb", m.astype(np.int64), bs)
    dd = (wd[None] * d[:, None, :]).astype(np.float32).astype(np.float64)
    dm = (wdmin[None] * d[:, None, :]).astype(np.float32).astype(np.float64)
    return (dd * isum - dm * summins).sum(axis=2).astype(np.float32)


def dot_q6_K(raw, qs, d, bsums=None):
    """Q6_K weights x Q8_K activations (kquants.md §4.6); bsums are not needed."""
    wd, scales, q = unpack_q6_K(raw)
    n_out, nb = wd.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, 16, 16).astype(np.int64)
    sub = np.einsum("rbjl,tbjl->trbj", q.reshape(n_out, nb, 16, 16).astype(np.int64), yq)
    isum = (sub * scales[None]).sum(axis=3)
    dd = (wd[None] * d[:, None, :]).astype(np.float32).astype(np.float64)
    return (dd * isum).sum(axis=2).astype(np.float32)


def float_weights(wtype, raw):
    """F32 / F16 / BF16 raw rows -> float32 (n_out, n_in); for the twin only (kernels never copy)."""
    if wtype == GGMLType.F32:
        return raw.view("<f4").astype(np.float32)
    if wtype == GGMLType.F16:
        return raw.view("<f2").astype(np.float32)
    if wtype == GGMLType.BF16:
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    raise ValueError(wtype)


def dot_float(wtype, raw, x):
    """Float weights x float32 activations, summed in float64."""
    return (x.astype(np.float64) @ float_weights(wtype, raw).astype(np.float64).T).astype(np.float32)


def dot_ref(wtype, raw, x):
    """out (T, n_out) = W @ x, quantizing x with the activation type of wtype (kquants.md §4.0)."""
    wtype = GGMLType(wtype)
    x = np.ascontiguousarray(x, np.float32)
    if wtype in (GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_0):
        return dot_q8_0_family(wtype, raw, *quantize_q8_0_act(x))
    if wtype == GGMLType.Q4_K:
        return dot_q4_K(raw, *quantize_q8_K_act(x))
    if wtype == GGMLType.Q5_K:
        return dot_q5_K(raw, *quantize_q8_K_act(x))
    if wtype == GGMLType.Q6_K:
        return dot_q6_K(raw, *quantize_q8_K_act(x))
    return dot_float(wtype, raw, x)
