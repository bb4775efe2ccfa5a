"""Pieces every type module's block code shares: input checks, fp16 fields, row status codes,
and the float32 idioms of the NumPy reference code.

Reference-code conventions (the `*_ref` functions of the type modules): every array op on
float32 operands rounds once to float32, which is exactly one C operator on x86-64 SSE2;
reductions whose order matters are explicit left-to-right loops over the element axis,
vectorised over blocks (`seq_sum`).

Numba row quantizers report per row through a status array: OK, NONFINITE (NaN/Inf in the
input) or OVERFLOW (an fp16 scale overflowed: ggml_validate_row_data rejects the row).
"""
import functools

import numpy as np

from ..errors import QuantizationError
from ..jit import jit_exact
from .fp16 import fp16_bits_to_fp32, fp32_to_fp16_bits
from .types import BLOCK_SIZES, GGMLType

F32 = np.float32
OK, NONFINITE, OVERFLOW = 0, 1, 2


# -- Numba --------------------------------------------------------------------------------------


@jit_exact
def put16(o, off, h):
    o[off] = h & 0xFF
    o[off + 1] = (h >> 8) & 0xFF


@jit_exact
def fp16_field(o, off, f):
    """Store fp16(f) little-endian at o[off:off+2]; return (its float32 value, whether it is finite)."""
    h = fp32_to_fp16_bits(f)
    put16(o, off, h)
    return fp16_bits_to_fp32(h), (h & 0x7C00) != 0x7C00


@jit_exact
def read_u16(o, off):
    """The little-endian uint16 at o[off:off+2], as int64."""
    return np.int64(o[off]) | (np.int64(o[off + 1]) << 8)


@jit_exact
def read_u32(o, off):
    """The little-endian uint32 at o[off:off+4], as int64."""
    return read_u16(o, off) | (read_u16(o, off + 2) << 16)


@jit_exact
def read_fp16(o, off):
    """The fp16 at o[off:off+2] (little-endian bytes) as float32."""
    return fp16_bits_to_fp32(np.int64(o[off]) | (np.int64(o[off + 1]) << 8))


# -- NumPy reference helpers ----------------------------------------------------------------------


def quiet(fn):
    """Inf and NaN inside a quantizer are deliberate float32 emulation (a subnormal scale's
    reciprocal overflows in C too): keep NumPy from warning about them."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def as_rows(x: np.ndarray, type: GGMLType) -> np.ndarray:
    """x as C-contiguous float32 rows whose length fits `type`'s blocks, with no NaN/Inf."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QuantizationError(f"quantize takes a 2-D float32 array of rows, got shape {x.shape}")
    blck = BLOCK_SIZES[type][0]
    if x.shape[1] % blck:
        raise QuantizationError(f"row length {x.shape[1]} is not a multiple of the {type.name} block size {blck}")
    x = np.ascontiguousarray(x, dtype=F32)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise nonfinite_error(x, int(np.argmax(bad)), type)
    return x


def nonfinite_error(x: np.ndarray, r: int, type: GGMLType) -> QuantizationError:
    c = int(np.argmax(~np.isfinite(x[r])))
    return QuantizationError(f"row {r} holds a non-finite value ({x[r, c]} at column {c}); cannot quantize to {type.name}")


def overflow_error(x: np.ndarray, r: int, type: GGMLType, what: str = "block scale") -> QuantizationError:
    return QuantizationError(
        f"row {r}: {type.name} {what} overflows fp16 (largest |value| in the row is "
        f"{float(np.abs(x[r]).max()):g}); ggml rejects such rows"
    )


def validate_fp16(fields: np.ndarray, x: np.ndarray, type: GGMLType, what: str) -> None:
    """ggml_validate_row_data: an fp16 scale that overflowed to Inf (or NaN) makes the row invalid."""
    bad = ~np.isfinite(fields.reshape(x.shape[0], -1).astype(F32)).all(axis=1)
    if bad.any():
        raise overflow_error(x, int(np.argmax(bad)), type, what)


def out_rows(b: np.ndarray, rows: int) -> np.ndarray:
    """Structured blocks -> uint8 (rows, row_nbytes)."""
    return b.view(np.uint8).reshape(rows, -1)


def first_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: (amax, max) of `if |x| > amax: amax, max = |x|, x` starting from 0 (first wins, sign kept)."""
    ax = np.abs(x)
    i = np.argmax(ax, axis=-1)[..., None]
    amax = np.take_along_axis(ax, i, axis=-1)[..., 0]
    mx = np.take_along_axis(x, i, axis=-1)[..., 0]
    # all-zero rows: the loop never assigns, so max stays +0.0 even if x holds -0.0
    return amax, np.where(amax > 0, mx, F32(0)).astype(F32)


def argext(x: np.ndarray, fn) -> np.ndarray:
    """x[argmin/argmax] per row: the first extreme wins, as a strict-comparison C loop keeps it."""
    return np.take_along_axis(x, fn(x, axis=-1)[..., None], axis=-1)[..., 0]


def seq_sum(terms: np.ndarray) -> np.ndarray:
    """Left-to-right float32 sum over the last axis starting from 0.0f, as a C loop does."""
    s = np.zeros(terms.shape[:-1], dtype=F32)
    for i in range(terms.shape[-1]):
        s = s + terms[..., i]
    return s


def safe_recip(d: np.ndarray) -> np.ndarray:
    """`d ? 1.0f/d : 0.0f`."""
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1) / d, F32(0)).astype(F32)


# -- imatrix weights of the 32-block types (quantize_row_q4_0_impl, q5_0, q4_1, q5_1) -------------


@jit_exact
def row_imatrix_weights(xr, qw, w):
    """w[j] = qw[j] * sqrt(sigma2 + x[j]²), sigma2 = Σx²/n over the whole row (in order)."""
    n = xr.shape[0]
    sumx2 = F32(0.0)
    for j in range(n):
        sumx2 += xr[j] * xr[j]
    sigma2 = sumx2 / F32(n)
    for j in range(n):
        w[j] = qw[j] * np.sqrt(sigma2 + xr[j] * xr[j])


def row_imatrix_weights_ref(x: np.ndarray, qw) -> np.ndarray:
    """NumPy twin of row_imatrix_weights for rows x (rows, n): weights (rows, n)."""
    sigma2 = seq_sum(x * x) / F32(x.shape[1])
    return np.asarray(qw, F32)[None, :] * np.sqrt(sigma2[:, None] + x * x)


# -- imatrix weights of the K-quants (quantize_row_q2_K_impl ... q5_K_impl) --------------------


@jit_exact
def kquant_imatrix_weights(xr, qw, wt, sw, sub, factor):
    """In lanes (lane k = sub-block k of `sub` weights): wt[i, k] = qw[sub*k + i] *
    sqrt(sigma2 + x²) with sigma2 = factor*Σx²/256 over each 256-block (factor 2 for
    Q3_K..Q5_K, 1 for Q2_K), and sw[k] = Σ_i wt[i, k] from 0, in order. wt (sub, N), sw (N,)."""
    per = 256 // sub
    for b in range(xr.shape[0] // 256):
        sumx2 = F32(0.0)
        for j in range(256):
            sumx2 += xr[256 * b + j] * xr[256 * b + j]
        sigma2 = (factor * sumx2) / F32(256.0)
        for k in range(per * b, per * b + per):
            sw[k] = F32(0.0)
        for i in range(sub):
            for k in range(per * b, per * b + per):
                v = xr[sub * k + i]
                wt[i, k] = qw[sub * k + i] * np.sqrt(sigma2 + v * v)
                sw[k] = sw[k] + wt[i, k]


def kquant_imatrix_weights_ref(x: np.ndarray, qw, sub: int, factor) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of kquant_imatrix_weights for rows x (rows, n) and qw (n,): weights
    (nb, 256/sub, sub) and their sums (nb, 256/sub), nb = rows * n/256 super-blocks."""
    xb = x.reshape(-1, 256)
    nb = xb.shape[0]
    sigma2 = (F32(factor) * seq_sum(xb * xb)) / F32(256)
    qwb = np.broadcast_to(np.asarray(qw, F32).reshape(1, -1, 256), (x.shape[0], x.shape[1] // 256, 256))
    x3 = xb.reshape(nb, -1, sub)
    w = qwb.reshape(nb, -1, sub) * np.sqrt(sigma2[:, None, None] + x3 * x3)
    return w, seq_sum(w)
