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
import numpy as np

from ..errors import QuantizationError
from .types import BLOCK_SIZES, QK8_0, QK_K, GGMLType, row_nbytes

F32 = np.float32

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


def roundf(v) -> np.ndarray:
    """C roundf on float32: half away from zero (v - trunc(v) is exact)."""
    v = np.asarray(v, dtype=F32)
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= F32(0.5), np.sign(v), F32(0)).astype(F32)


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
        raise QuantizationError(f"row {r} holds a non-finite value ({x[r, c]} at column {c}); cannot quantize to {type.name}")
    return x


def _out(b: np.ndarray, rows: int) -> np.ndarray:
    return b.view(np.uint8).reshape(rows, -1)


def _validate_fp16(fields: np.ndarray, rows: int, type: GGMLType, what: str) -> None:
    """ggml_validate_row_data: an fp16 scale that overflowed to Inf (or NaN) makes the row invalid."""
    bad = ~np.isfinite(fields.reshape(rows, -1).astype(F32)).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raise QuantizationError(
            f"row {r}: {type.name} block scale {what} overflows fp16 (values too large, |x| above ~65504*range)"
        )


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
    b["qs"] = roundf(xb * id[:, None]).astype(np.int8)
    _validate_fp16(b["d"], rows, GGMLType.Q8_0, "d")
    return _out(b, rows)


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
    b["qs"] = np.clip(np.rint(xb * id[:, None]), -128, 127).astype(np.int8)
    return _out(b, rows)


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
            _validate_fp16(y, x.shape[0], type, "value")
        else:
            y = fp32_to_bf16(x)
        return y.view(np.uint8).reshape(x.shape[0], -1)

    return fn


_QUANTIZERS = {
    GGMLType.F32: _quantize_float(GGMLType.F32),
    GGMLType.F16: _quantize_float(GGMLType.F16),
    GGMLType.BF16: _quantize_float(GGMLType.BF16),
    GGMLType.Q8_0: quantize_q8_0_ref,
    GGMLType.Q8_K: quantize_q8_K_ref,
}
