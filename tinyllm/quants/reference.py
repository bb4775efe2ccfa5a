"""Plain-NumPy block code, bit-exact with ggml (kquants.md §0–§3).

These are the slow, obvious twins of the Numba code in `quantize.py` and of the kernel
engineer's activation quantizers. Every array op on float32 operands rounds once to
float32, which is exactly one C operator on x86-64 SSE2; reductions whose order matters
are written as explicit left-to-right loops over the element axis, vectorised over blocks.

Public:
    BLOCK_DTYPES, blocks(raw, type)      structured views of block arrays (ggml field names)
    dequantize(raw, type, shape)         -> float32
    quantize_ref(x, type)                -> uint8 (rows, row_nbytes)
    quantize_q8_K_ref(x), quantize_q8_0_act_ref(x)   activation quantizers (§3.8, §3.9)
    fp32_to_fp16, fp32_to_bf16, bf16_to_fp32, nearest_int, roundf
"""
import functools

import numpy as np

from ..errors import QuantizationError
from .types import BLOCK_SIZES, QK8_0, QK_K, GGMLType

F32 = np.float32


def _quiet(fn):
    """Inf and NaN inside a quantizer are deliberate float32 emulation (a subnormal scale's
    reciprocal overflows in C too): keep NumPy from warning about them."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------
# Block layouts. Multi-byte fields are little-endian; blocks follow each other with no
# padding, and a row is a whole number of blocks.
#
# Q4_0  32 weights, 18 bytes          Q4_1  32 weights, 20 bytes
# +-----+------------------------+    +-----+-----+------------------------+
# | d   | qs[16]                 |    | d   | m   | qs[16]                 |
# | f16 | lo: x[j]  hi: x[j+16]  |    | f16 | f16 | lo: x[j]  hi: x[j+16]  |
# +-----+------------------------+    +-----+-----+------------------------+
#   y = (q - 8) * d                     y = q * d + m
#
# Q5_0  32 weights, 22 bytes                Q5_1  32 weights, 24 bytes
# +-----+---------+--------------------+    +-----+-----+---------+----------+
# | d   | qh u32  | qs[16] as Q4_0     |    | d   | m   | qh u32  | qs[16]   |
# +-----+---------+--------------------+    +-----+-----+---------+----------+
#   bit k of qh = 5th bit of element k;  y = (q - 16) * d  (Q5_1: q * d + m)
#
# Q8_0  32 weights, 34 bytes          Q8_K  256 weights, 292 bytes (activations only)
# +-----+-------------------+         +-----+-------------------+--------------------+
# | d   | qs[32] int8       |         | d   | qs[256] int8      | bsums[16] int16    |
# | f16 |                   |         | f32 |                   | sum of 16 qs each  |
# +-----+-------------------+         +-----+-------------------+--------------------+
#
# Q4_K  256 weights = 8 sub-blocks of 32, 144 bytes
# +-----+------+------------+--------------------------------------------------+
# | d   | dmin | scales[12] | qs[128]: byte 32c+l = x[64c+l] lo | x[64c+32+l] hi |
# | f16 | f16  | 6-bit sc,m |  (chunk c = 0..3 holds sub-blocks 2c and 2c+1)   |
# +-----+------+------------+--------------------------------------------------+
#   y = (d*sc_j) * q - (dmin*m_j)
#
# scales[12] packing of sc[0..7], m[0..7] (6 bits each):
#   byte 0..3 : sc[k]   | (sc[k+4] >> 4) << 6
#   byte 4..7 : m[k]    | (m[k+4]  >> 4) << 6
#   byte 8..11: sc[k+4] & 0xF | (m[k+4] & 0xF) << 4
#
# Q5_K  256 weights, 176 bytes
# +-----+------+------------+---------+---------------------+
# | d   | dmin | scales[12] | qh[32]  | qs[128] as Q4_K     |
# +-----+------+------------+---------+---------------------+
#   5th bit of element e = bit (e/32) of qh[e%32]
#
# Q6_K  256 weights = 16 sub-blocks of 16, 210 bytes
# +-------------+-------------+-------------------+-----+
# | ql[128]     | qh[64]      | scales[16] int8   | d   |
# | low 4 bits  | high 2 bits | one per 16 weights| f16 |
# +-------------+-------------+-------------------+-----+
#   e = 128h + 32g + l:  low = ql[64h + 32(g&1) + l] nibble (g>>1),
#                        high = (qh[32h + l] >> 2g) & 3;  y = (d*scales[e/16]) * (q - 32)
# ---------------------------------------------------------------------------------------

BLOCK_DTYPES: dict[GGMLType, np.dtype] = {
    GGMLType.Q4_0: np.dtype([("d", "<f2"), ("qs", "u1", 16)]),
    GGMLType.Q4_1: np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)]),
    GGMLType.Q5_0: np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)]),
    GGMLType.Q5_1: np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)]),
    GGMLType.Q8_0: np.dtype([("d", "<f2"), ("qs", "i1", 32)]),
    GGMLType.Q8_K: np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)]),
    GGMLType.Q4_K: np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)]),
    GGMLType.Q5_K: np.dtype(
        [("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32), ("qs", "u1", 128)]
    ),
    GGMLType.Q6_K: np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")]),
}
for _t, _dt in BLOCK_DTYPES.items():
    assert _dt.itemsize == BLOCK_SIZES[_t][1], _t

DEQUANTIZE_TYPES = (
    GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0,
    GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.Q8_K,
)  # fmt: skip
QUANTIZE_TYPES = (
    GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0,
    GGMLType.Q5_1, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.Q8_K,
)  # fmt: skip


def blocks(raw: np.ndarray, type: GGMLType) -> np.ndarray:
    """View raw block bytes as a 1-D structured array with ggml's field names (zero-copy if contiguous)."""
    type = GGMLType(type)
    if type not in BLOCK_DTYPES:
        raise QuantizationError(f"no block layout for type {type.name}; block types: {_names(BLOCK_DTYPES)}")
    flat = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if flat.size % BLOCK_DTYPES[type].itemsize:
        raise QuantizationError(
            f"{flat.size} bytes is not a whole number of {type.name} blocks of {BLOCK_DTYPES[type].itemsize} bytes"
        )
    return flat.view(BLOCK_DTYPES[type])


# ---------------------------------------------------------------------------------------
# §0 primitives


def fp32_to_fp16(v) -> np.ndarray:
    """ggml_compute_fp32_to_fp16: RNE from a float32 value (never from float64: double rounding)."""
    with np.errstate(over="ignore"):
        return np.asarray(v, dtype=F32).astype(np.float16)


def fp32_to_bf16(v) -> np.ndarray:
    """ggml_compute_fp32_to_bf16 as uint16 bits: RNE on the top half; NaN kept, forced quiet."""
    u = np.asarray(v, dtype=F32).view(np.uint32)
    rounded = ((u.astype(np.uint64) + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 64).astype(np.uint16), rounded)


def bf16_to_fp32(bits) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(F32)


def nearest_int(v) -> np.ndarray:
    """ggml's nearest_int: the 1.5*2^23 bit trick (RNE for |v| < 2^22, the same garbage beyond)."""
    s = np.asarray(v, dtype=F32) + F32(12582912.0)
    return (s.view(np.int32) & 0x007FFFFF) - 0x00400000


@_quiet
def roundf(v) -> np.ndarray:
    """C roundf on float32: half away from zero (v - trunc(v) is exact)."""
    v = np.asarray(v, dtype=F32)
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= F32(0.5), np.sign(v), F32(0)).astype(F32)


def c_int32(v) -> np.ndarray:
    """float32 -> int as x86-64 converts (cvttss2si): truncation, and INT32_MIN for NaN, Inf
    or |v| >= 2^31. ggml's `(int8_t)(float)` casts keep the low byte of this; such inputs
    only arise from a subnormal scale (e.g. every |x| < 1.5e-36 in a Q8_0 block)."""
    v = np.asarray(v, dtype=F32)
    ok = np.abs(v) < F32(2.0**31)
    return np.where(ok, np.trunc(np.where(ok, v, F32(0))), -(2.0**31)).astype(np.int64)


def c_int8(v) -> np.ndarray:
    """`(int8_t)(float)` on x86-64: the low byte of c_int32, sign-extended."""
    return ((c_int32(v) & 0xFF) ^ 0x80) - 0x80


def _first_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (amax, max) of `if |x| > amax: amax, max = |x|, x` starting from 0 (first wins, sign kept)."""
    ax = np.abs(x)
    i = np.argmax(ax, axis=-1)[..., None]
    amax = np.take_along_axis(ax, i, axis=-1)[..., 0]
    mx = np.take_along_axis(x, i, axis=-1)[..., 0]
    # all-zero rows: the loop never assigns, so max stays +0.0 even if x holds -0.0
    return amax, np.where(amax > 0, mx, F32(0)).astype(F32)


def _seq_sum(terms: np.ndarray) -> np.ndarray:
    """Left-to-right float32 sum over the last axis starting from 0.0f, as a C loop does."""
    s = np.zeros(terms.shape[:-1], dtype=F32)
    for i in range(terms.shape[-1]):
        s = s + terms[..., i]
    return s


def _safe_recip(d: np.ndarray) -> np.ndarray:
    """`d ? 1.0f/d : 0.0f`."""
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1) / d, F32(0)).astype(F32)


def _names(types) -> str:
    return ", ".join(GGMLType(t).name for t in types)


# ---------------------------------------------------------------------------------------
# §2 dequantization


def _h2f(h: np.ndarray) -> np.ndarray:
    return h.astype(F32)


def get_scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nb, 12) packed bytes -> sc, m as (nb, 8) uint8 (kquants.md §1.8)."""
    q = scales.astype(np.uint8)
    sc = np.empty(q.shape[:-1] + (8,), np.uint8)
    m = np.empty_like(sc)
    sc[..., :4] = q[..., 0:4] & 63
    m[..., :4] = q[..., 4:8] & 63
    sc[..., 4:] = (q[..., 8:12] & 0x0F) | ((q[..., 0:4] >> 6) << 4)
    m[..., 4:] = (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)
    return sc, m


def _nibbles_32(qs: np.ndarray) -> np.ndarray:
    """(nb, 16) bytes -> (nb, 32) values: element j low nibble, element j+16 high nibble."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _qh_bits_32(qh: np.ndarray) -> np.ndarray:
    """(nb,) uint32 -> (nb, 32) 0/1: bit k of qh."""
    return ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def _k_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K qs (nb, 128) -> (nb, 8, 32) 4-bit values, sub-block j = 2c (lo) / 2c+1 (hi)."""
    q = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([q & 0x0F, q >> 4], axis=2).reshape(-1, 8, 32)


def dequantize(raw: np.ndarray, type: GGMLType, shape) -> np.ndarray:
    """Block bytes -> float32 array of `shape` (numpy order), exactly as ggml's dequantize_row_*."""
    type = GGMLType(type)
    shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    n = int(np.prod(shape))
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if type not in DEQUANTIZE_TYPES:
        raise QuantizationError(f"cannot dequantize type {type.name}; supported: {_names(DEQUANTIZE_TYPES)}")
    blck, nbytes = BLOCK_SIZES[type] if type != GGMLType.BF16 else (1, 2)
    if n % blck or raw.size != n // blck * nbytes:
        raise QuantizationError(
            f"{type.name} data of {raw.size} bytes does not hold shape {shape} "
            f"({n} weights, blocks of {blck} in {nbytes} bytes)"
        )
    if type == GGMLType.F32:
        return raw.view(F32).reshape(shape).copy()
    if type == GGMLType.F16:
        return raw.view(np.float16).astype(F32).reshape(shape)
    if type == GGMLType.BF16:
        return bf16_to_fp32(raw.view(np.uint16)).reshape(shape)
    b = blocks(raw, type)
    nb = b.size
    if type == GGMLType.Q4_0:
        q = _nibbles_32(b["qs"]).astype(np.int8) - 8
        y = q.astype(F32) * _h2f(b["d"])[:, None]
    elif type == GGMLType.Q4_1:
        q = _nibbles_32(b["qs"])
        y = q.astype(F32) * _h2f(b["d"])[:, None] + _h2f(b["m"])[:, None]
    elif type == GGMLType.Q5_0:
        q = (_nibbles_32(b["qs"]) | (_qh_bits_32(b["qh"]) << 4)).astype(np.int8) - 16
        y = q.astype(F32) * _h2f(b["d"])[:, None]
    elif type == GGMLType.Q5_1:
        q = _nibbles_32(b["qs"]) | (_qh_bits_32(b["qh"]) << 4)
        y = q.astype(F32) * _h2f(b["d"])[:, None] + _h2f(b["m"])[:, None]
    elif type == GGMLType.Q8_0:
        y = b["qs"].astype(F32) * _h2f(b["d"])[:, None]
    elif type == GGMLType.Q8_K:
        y = b["d"].astype(F32)[:, None] * b["qs"].astype(F32)
    elif type in (GGMLType.Q4_K, GGMLType.Q5_K):
        sc, m = get_scale_min_k4(b["scales"])
        dj = _h2f(b["d"])[:, None] * sc.astype(F32)  # (nb, 8)
        mj = _h2f(b["dmin"])[:, None] * m.astype(F32)
        q = _k_nibbles(b["qs"])
        if type == GGMLType.Q5_K:
            hb = (b["qh"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
            q = q + (hb << 4)
        y = (dj[:, :, None] * q.astype(F32)) - mj[:, :, None]
    else:  # Q6_K
        ql = b["ql"].reshape(nb, 2, 2, 32)  # [h, 32-byte half, l]
        low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # (nb, 2, 4, 32), g = 0..3
        high = (b["qh"].reshape(nb, 2, 1, 32) >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3
        s = (low | (high << 4)).astype(np.int8) - 32
        ds = _h2f(b["d"])[:, None] * b["scales"].astype(F32)  # (nb, 16)
        y = ds[:, :, None] * s.reshape(nb, 16, 16).astype(F32)
    return y.astype(F32, copy=False).reshape(shape)


# ---------------------------------------------------------------------------------------
# §3 reference quantization. Inputs are float32 rows; outputs uint8 (rows, row_nbytes).


def _as_rows(x: np.ndarray, type: GGMLType) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QuantizationError(f"quantize takes a 2-D float32 array of rows, got shape {x.shape}")
    blck = BLOCK_SIZES[type][0]
    if x.shape[1] % blck:
        raise QuantizationError(
            f"row length {x.shape[1]} is not a multiple of the {type.name} block size {blck}"
        )
    x = np.ascontiguousarray(x, dtype=F32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        c = int(np.argmax(~np.isfinite(x[r])))
        raise QuantizationError(
            f"row {r} holds a non-finite value ({x[r, c]} at column {c}); cannot quantize to {type.name}"
        )
    return x


def _out(b: np.ndarray, rows: int) -> np.ndarray:
    return b.view(np.uint8).reshape(rows, -1)


def _validate_fp16(fields: np.ndarray, x: np.ndarray, type: GGMLType, what: str) -> None:
    """ggml_validate_row_data: an fp16 scale that overflowed to Inf (or NaN) makes the row invalid."""
    bad = ~np.isfinite(fields.reshape(x.shape[0], -1).astype(F32)).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raise QuantizationError(
            f"row {r}: {type.name} {what} overflows fp16 (largest |value| in the row is "
            f"{float(np.abs(x[r]).max()):g}); ggml rejects such rows"
        )


@_quiet
def quantize_q8_0_ref(x: np.ndarray) -> np.ndarray:
    """quantize_row_q8_0_ref (§3.1): d = amax/127, qs = roundf(x * (1/d))."""
    x = _as_rows(x, GGMLType.Q8_0)
    rows = x.shape[0]
    xb = x.reshape(-1, QK8_0)
    amax = np.abs(xb).max(axis=1)
    d = amax / F32(127)
    id = _safe_recip(d)
    b = np.zeros(xb.shape[0], BLOCK_DTYPES[GGMLType.Q8_0])
    b["d"] = fp32_to_fp16(d)
    b["qs"] = c_int8(roundf(xb * id[:, None]))
    _validate_fp16(b["d"], x, GGMLType.Q8_0, "block scale d")
    return _out(b, rows)


@_quiet
def quantize_q8_0_act_ref(x: np.ndarray) -> np.ndarray:
    """The x86 AVX2 activation-side Q8_0 (§3.9): same d, but qs = rint(x * (127/amax)), saturated."""
    x = _as_rows(x, GGMLType.Q8_0)
    rows = x.shape[0]
    xb = x.reshape(-1, QK8_0)
    amax = np.abs(xb).max(axis=1)
    with np.errstate(divide="ignore"):
        id = np.where(amax != 0, F32(127) / amax, F32(0)).astype(F32)
    b = np.zeros(xb.shape[0], BLOCK_DTYPES[GGMLType.Q8_0])
    b["d"] = fp32_to_fp16(amax / F32(127))
    # _mm256_cvtps_epi32 gives INT32_MIN for NaN/Inf/out of range; the packs saturate
    b["qs"] = np.clip(c_int32(np.rint(xb * id[:, None])), -128, 127)
    return _out(b, rows)


@_quiet
def quantize_q8_K_ref(x: np.ndarray) -> np.ndarray:
    """quantize_row_q8_K (§3.8): float32 d = 1/(-127/max), qs in -127..127, bsums over 16s (0 if all zero)."""
    x = _as_rows(x, GGMLType.Q8_K)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    amax, mx = _first_absmax(xb)
    zero = amax == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(zero, F32(0), F32(-127) / np.where(zero, F32(1), mx)).astype(F32)
        qs = np.minimum(127, nearest_int(iscale[:, None] * xb))
        d = np.where(zero, F32(0), F32(1) / np.where(zero, F32(1), iscale)).astype(F32)
    qs[zero] = 0
    b = np.zeros(xb.shape[0], BLOCK_DTYPES[GGMLType.Q8_K])
    b["d"] = d
    b["qs"] = qs.astype(np.int8)
    b["bsums"] = qs.reshape(-1, 16, 16).sum(axis=2).astype(np.int16)
    return _out(b, rows)


def _argext(x: np.ndarray, fn) -> np.ndarray:
    """x[argmin/argmax] per row: the first extreme wins, as a strict-comparison C loop keeps it."""
    return np.take_along_axis(x, fn(x, axis=-1)[..., None], axis=-1)[..., 0]


def _quantize_x_0(x: np.ndarray, type: GGMLType) -> np.ndarray:
    """quantize_row_q4_0_ref / q5_0_ref (§3.2, §3.3): d = max/-8 (or -16), q = MIN(nmax, (int)(x*id + 8.5))."""
    x = _as_rows(x, type)
    rows = x.shape[0]
    xb = x.reshape(-1, QK8_0)
    _, mx = _first_absmax(xb)
    half = 8 if type == GGMLType.Q4_0 else 16
    d = mx / F32(-half)
    id = _safe_recip(d)
    q = (np.minimum(2 * half - 1, c_int8(xb * id[:, None] + F32(half + 0.5))) & 0xFF).astype(np.uint8)
    b = np.zeros(xb.shape[0], BLOCK_DTYPES[type])
    b["d"] = fp32_to_fp16(d)
    _pack_x_0(b, q)
    _validate_fp16(b["d"], x, type, "block scale d")
    return _out(b, rows)


def _quantize_x_1(x: np.ndarray, type: GGMLType) -> np.ndarray:
    """quantize_row_q4_1_ref / q5_1_ref (§3.10): d = (max-min)/nmax, m = min, q = (int)((x-min)*id + 0.5)."""
    x = _as_rows(x, type)
    rows = x.shape[0]
    xb = x.reshape(-1, QK8_0)
    mn = _argext(xb, np.argmin)
    mx = _argext(xb, np.argmax)
    nmax = 15 if type == GGMLType.Q4_1 else 31
    d = (mx - mn) / F32(nmax)
    id = _safe_recip(d)
    q = c_int8((xb - mn[:, None]) * id[:, None] + F32(0.5))
    if type == GGMLType.Q4_1:
        q = np.minimum(15, q)  # MIN(15, (int8_t)(.)); Q5_1's (uint8_t)(.) has no clamp, same low byte
    b = np.zeros(xb.shape[0], BLOCK_DTYPES[type])
    b["d"] = fp32_to_fp16(d)
    b["m"] = fp32_to_fp16(mn)
    _pack_x_0(b, (q & 0xFF).astype(np.uint8))
    _validate_fp16(b["d"], x, type, "block scale d")
    _validate_fp16(b["m"], x, type, "block scale m")
    return _out(b, rows)


def _pack_x_0(b: np.ndarray, q: np.ndarray) -> None:
    """(nb, 32) quants -> qs nibbles (j lo, j+16 hi) and, for 5-bit types, bit 4 into qh bit j."""
    b["qs"] = (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)
    if "qh" in b.dtype.names:
        bits = ((q >> 4) & 1).astype(np.uint32)
        b["qh"] = (bits << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


@_quiet
def make_qkx2_quants(x, w, nmax: int, rmin: float, rdelta: float, nstep: int):
    """§3.4 over many sub-blocks at once: x, w (N, n) float32 -> (scale (N,), the_min (N,), L (N, n) uint8).

    Fits x ~ scale*L + min (min <= 0) by weighted least squares over nstep+1 trial scales;
    an accepted trial's min feeds the later trials, as in ggml.
    """
    N, n = x.shape
    mn = _argext(x, np.argmin)
    mx = _argext(x, np.argmax)
    sum_w = w[:, 0].copy()
    sum_x = sum_w * x[:, 0]
    for i in range(1, n):
        sum_w = sum_w + w[:, i]
        sum_x = sum_x + w[:, i] * x[:, i]
    mn = np.where(mn > 0, F32(0), mn).astype(F32)
    flat = mx == mn  # all zero or constant negative: L = 0, scale 0
    L = np.zeros((N, n), np.uint8)
    scale = np.zeros(N, F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rng = np.where(flat, F32(1), mx - mn).astype(F32)
        iscale = F32(nmax) / rng
        scale = F32(1) / iscale
        L = np.clip(nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(np.uint8)
        diff = (scale[:, None] * L.astype(F32) + mn[:, None]) - x
        best_error = _seq_sum(w * (diff * diff))
        for step in range(nstep + 1):
            rng = np.where(flat, F32(1), mx - mn).astype(F32)
            iscale = ((F32(rmin) + F32(rdelta) * F32(step)) + F32(nmax)) / rng
            laux = np.clip(nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax).astype(np.uint8)
            lf = laux.astype(F32)
            wl = w * lf
            sum_l = _seq_sum(wl)
            sum_l2 = _seq_sum(wl * lf)
            sum_xl = _seq_sum(wl * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            clamp = this_min > 0
            this_min = np.where(clamp, F32(0), this_min).astype(F32)
            this_scale = np.where(clamp, sum_xl / sum_l2, this_scale).astype(F32)
            diff = (this_scale[:, None] * lf + this_min[:, None]) - x
            cur_error = _seq_sum(w * (diff * diff))
            accept = (D > 0) & (cur_error < best_error) & ~flat
            L = np.where(accept[:, None], laux, L)
            best_error = np.where(accept, cur_error, best_error)
            scale = np.where(accept, this_scale, scale)
            mn = np.where(accept, this_min, mn)
    L[flat] = 0
    scale = np.where(flat, F32(0), scale).astype(F32)
    return scale, (-mn).astype(F32), L


@_quiet
def make_qx_quants_rmse1(x: np.ndarray, nmax: int):
    """§3.5 with rmse_type 1 and no imatrix over many sub-blocks: x (N, n) -> (scale (N,), L (N, n) uint8).

    Symmetric fit x ~ scale*l, l in -nmax..nmax-1 (stored as l + nmax), weights x*x, 19 trial scales.
    """
    amax, mx = _first_absmax(x)
    tiny = amax < F32(1e-15)  # GROUP_MAX_EPS: L = 0 (not nmax), scale 0
    safe_max = np.where(tiny, F32(1), mx).astype(F32)
    w = x * x

    def trial(iscale):
        l = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = l.astype(F32)
        sumlx = _seq_sum((w * x) * lf)
        suml2 = _seq_sum((w * lf) * lf)
        return l, sumlx, suml2

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        l, sumlx, suml2 = trial(F32(-nmax) / safe_max)
        L = (l + nmax).astype(np.uint8)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            l, sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / safe_max)
            accept = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(accept[:, None], (l + nmax).astype(np.uint8), L)
            scale = np.where(accept, sumlx / suml2, scale).astype(F32)
            best = np.where(accept, scale * sumlx, best).astype(F32)
    L[tiny] = 0
    return np.where(tiny, F32(0), scale).astype(F32), L


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(nb, 8) 6-bit scales and mins -> (nb, 12) bytes (§1.8)."""
    q = np.empty(ls.shape[:-1] + (12,), np.uint8)
    q[..., 0:4] = ls[..., :4] | ((ls[..., 4:] >> 4) << 6)
    q[..., 4:8] = lm[..., :4] | ((lm[..., 4:] >> 4) << 6)
    q[..., 8:12] = (ls[..., 4:] & 0x0F) | ((lm[..., 4:] & 0x0F) << 4)
    return q


def _quantize_k4_k5(x: np.ndarray, type: GGMLType) -> np.ndarray:
    """quantize_row_q4_K_ref / q5_K_ref (§3.6)."""
    x = _as_rows(x, type)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    nmax, rmin, nstep = (15, -1.0, 20) if type == GGMLType.Q4_K else (31, -0.5, 15)
    xs = xb.reshape(nb * 8, 32)
    av_x = np.sqrt(_seq_sum(xs * xs) / F32(32))
    w = av_x[:, None] + np.abs(xs)
    scales, mins, L = make_qkx2_quants(xs, w, nmax, rmin, 0.1, nstep)
    scales, mins, L = scales.reshape(nb, 8), mins.reshape(nb, 8), L.reshape(nb, 8, 32)

    def top(v):  # `if v > top: top = v` from +0.0
        m = v.max(axis=1)
        return np.where(m > 0, m, F32(0)).astype(F32)

    max_scale, max_min = top(scales), top(mins)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
    # (uint8_t)nearest_int(...) wraps modulo 256 before MIN(63, .)
    ls = np.minimum(63, nearest_int(inv_scale[:, None] * scales) & 0xFF).astype(np.uint8)
    lm = np.minimum(63, nearest_int(inv_min[:, None] * mins) & 0xFF).astype(np.uint8)
    b = np.zeros(nb, BLOCK_DTYPES[type])
    b["scales"] = _pack_scales_k4(ls, lm)
    b["d"] = fp32_to_fp16(max_scale / F32(63))
    b["dmin"] = fp32_to_fp16(max_min / F32(63))
    # re-quantize against the rounded scales; sub-blocks with d_j == 0 keep their L
    sc, m = get_scale_min_k4(b["scales"])
    dj = _h2f(b["d"])[:, None] * sc.astype(F32)
    dmj = _h2f(b["dmin"])[:, None] * m.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        requant = np.clip(nearest_int((xb.reshape(nb, 8, 32) + dmj[:, :, None]) / dj[:, :, None]), 0, nmax)
    L = np.where((dj != 0)[:, :, None], requant, L).astype(np.uint8)
    L4 = L.reshape(nb, 4, 2, 32)  # [chunk c, lo/hi half, l]
    b["qs"] = ((L4[:, :, 0] & 0x0F) | ((L4[:, :, 1] & 0x0F) << 4)).reshape(nb, 128)
    if type == GGMLType.Q5_K:
        hb = (L >> 4) & 1  # (nb, 8, 32): bit j of qh[l]
        b["qh"] = (hb << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8)
    _validate_fp16(b["d"], x, type, "block scale d")
    _validate_fp16(b["dmin"], x, type, "block scale dmin")
    return _out(b, rows)


def quantize_q4_K_ref(x: np.ndarray) -> np.ndarray:
    return _quantize_k4_k5(x, GGMLType.Q4_K)


def quantize_q5_K_ref(x: np.ndarray) -> np.ndarray:
    return _quantize_k4_k5(x, GGMLType.Q5_K)


def quantize_q6_K_ref(x: np.ndarray) -> np.ndarray:
    """quantize_row_q6_K_ref (§3.7)."""
    x = _as_rows(x, GGMLType.Q6_K)
    rows = x.shape[0]
    xb = x.reshape(-1, QK_K)
    nb = xb.shape[0]
    scales, L = make_qx_quants_rmse1(xb.reshape(nb * 16, 16), 32)
    scales, L = scales.reshape(nb, 16), L.reshape(nb, 16, 16)
    max_abs_scale, max_scale = _first_absmax(scales)
    zero = max_abs_scale < F32(1e-15)  # whole block stays zero, d = 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = np.where(zero, F32(0), F32(-128) / np.where(zero, F32(1), max_scale)).astype(F32)
        d = np.where(zero, F32(0), F32(1) / np.where(zero, F32(1), iscale)).astype(F32)
    b = np.zeros(nb, BLOCK_DTYPES[GGMLType.Q6_K])
    b["d"] = fp32_to_fp16(d)
    # MIN(127, .) then stored into int8_t: wraps modulo 256
    sc = (np.minimum(127, nearest_int(iscale[:, None] * scales)) & 0xFF).astype(np.uint8).view(np.int8)
    b["scales"] = sc
    dj = _h2f(b["d"])[:, None] * sc.astype(F32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        requant = np.clip(nearest_int(xb.reshape(nb, 16, 16) / dj[:, :, None]), -32, 31) + 32
    L = np.where((dj != 0)[:, :, None], requant, L).astype(np.uint8).reshape(nb, 2, 4, 32)  # [h, g, l]
    b["ql"] = np.concatenate(
        [(L[:, :, 0] & 0x0F) | ((L[:, :, 2] & 0x0F) << 4), (L[:, :, 1] & 0x0F) | ((L[:, :, 3] & 0x0F) << 4)],
        axis=2,
    ).reshape(nb, 128)
    hi = L >> 4  # (nb, 2, 4, 32): the top 2 bits of group g go to bits 2g of qh[32h + l]
    b["qh"] = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(nb, 64)
    b[zero] = np.zeros(1, BLOCK_DTYPES[GGMLType.Q6_K])
    _validate_fp16(b["d"], x, GGMLType.Q6_K, "block scale d")
    return _out(b, rows)


@_quiet
def quantize_ref(x: np.ndarray, type: GGMLType) -> np.ndarray:
    """Quantize float32 rows (rows, n) to `type` exactly as llama-quantize without an imatrix."""
    type = GGMLType(type)
    fn = _QUANTIZERS.get(type)
    if fn is None:
        raise QuantizationError(f"cannot quantize to type {type.name}; supported: {_names(_QUANTIZERS)}")
    return fn(x)


def _quantize_float(type: GGMLType):
    def fn(x: np.ndarray) -> np.ndarray:
        x = _as_rows(x, type)
        if type == GGMLType.F32:
            y = x.copy()
        elif type == GGMLType.F16:
            y = fp32_to_fp16(x)
            _validate_fp16(y, x, type, "value")
        else:
            y = fp32_to_bf16(x)
        return y.view(np.uint8).reshape(x.shape[0], -1)

    return fn


_QUANTIZERS = {
    GGMLType.F32: _quantize_float(GGMLType.F32),
    GGMLType.F16: _quantize_float(GGMLType.F16),
    GGMLType.BF16: _quantize_float(GGMLType.BF16),
    GGMLType.Q4_0: lambda x: _quantize_x_0(x, GGMLType.Q4_0),
    GGMLType.Q5_0: lambda x: _quantize_x_0(x, GGMLType.Q5_0),
    GGMLType.Q4_1: lambda x: _quantize_x_1(x, GGMLType.Q4_1),
    GGMLType.Q5_1: lambda x: _quantize_x_1(x, GGMLType.Q5_1),
    GGMLType.Q8_0: quantize_q8_0_ref,
    GGMLType.Q4_K: quantize_q4_K_ref,
    GGMLType.Q5_K: quantize_q5_K_ref,
    GGMLType.Q6_K: quantize_q6_K_ref,
    GGMLType.Q8_K: quantize_q8_K_ref,
}
