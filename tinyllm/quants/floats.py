"""F32, F16 and BF16: one value per "block". Float weights are read as they are stored (the
F16/BF16 kernels widen a row at a time into a float32 buffer) and multiplied by float32
activations; there is nothing to repack.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact, jit_fast
from . import act
from .blocks import NONFINITE, OVERFLOW, as_rows, validate_fp16
from .fp16 import bf16_to_fp32, f16_row_to_f32, fp32_to_bf16, fp32_to_bf16_bits, fp32_to_fp16, fp32_to_fp16_bits
from .rounding import row_nonfinite
from .spec import TypeSpec
from .types import GGMLType

F32 = np.float32


def weights_f32(type: GGMLType, raw: np.ndarray) -> np.ndarray:
    """F32 / F16 / BF16 raw rows (n_out, row_nbytes) uint8 -> float32 (n_out, n_in). For the
    twins and get_rows only: the kernels never make a float copy."""
    if type == GGMLType.F32:
        return raw.view("<f4").astype(F32)
    if type == GGMLType.F16:
        return raw.view("<f2").astype(F32)
    return bf16_to_fp32(raw.view("<u2"))


def dot_ref_for(type: GGMLType):
    def dot_ref(raw, x):
        """Float weights x float32 activations, summed in float64."""
        return (x.astype(np.float64) @ weights_f32(type, raw).astype(np.float64).T).astype(F32)

    return dot_ref


def _quantize_ref_for(type: GGMLType):
    def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
        x = as_rows(x, type)
        if type == GGMLType.F32:
            y = x.copy()
        elif type == GGMLType.F16:
            y = fp32_to_fp16(x)
            validate_fp16(y, x, type, "value")
        else:
            y = fp32_to_bf16(x)
        return y.view(np.uint8).reshape(x.shape[0], -1)

    return quantize_ref


@jit_exact
def _rows_f16(x, xu, out, status, bf16):
    """F16 / BF16 conversion; F16 values beyond 65504 become Inf, which ggml's validation rejects."""
    out16 = out.view(np.uint16)
    rows, n = x.shape
    for r in range(rows):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        ok = True
        for i in range(n):
            if bf16:
                out16[r, i] = fp32_to_bf16_bits(x[r, i])
            else:
                h = fp32_to_fp16_bits(x[r, i])
                out16[r, i] = h
                ok = ok and (h & 0x7C00) != 0x7C00
        if not ok:
            status[r] = OVERFLOW


@jit_exact
def quantize_rows_f32(x, xu, out, status, qw):
    out32 = out.view(np.float32)
    for r in range(xu.shape[0]):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
        for i in range(x.shape[1]):
            out32[r, i] = x[r, i]


@jit_exact
def quantize_rows_f16(x, xu, out, status, qw):
    _rows_f16(x, xu, out, status, False)


@jit_exact
def quantize_rows_bf16(x, xu, out, status, qw):
    _rows_f16(x, xu, out, status, True)


@jit_fast(parallel=True)
def mm_f32(out, w, x):
    """w float32 (n_out, n_in)."""
    T, n_out = out.shape
    n = w.shape[1]
    for r in prange(n_out):
        for t in range(T):
            acc = F32(0.0)
            for i in range(n):
                acc += w[r, i] * x[t, i]
            out[t, r] = acc


@jit_fast(parallel=True)
def mm_f16(out, w, x):
    """w uint16 (n_out, n_in) holding fp16 bits; each row is widened into a float32 buffer."""
    T, n_out = out.shape
    n = w.shape[1]
    nchunk = (n_out + 63) // 64
    for c in prange(nchunk):
        row = np.empty(n, np.float32)
        for r in range(c * 64, min(n_out, c * 64 + 64)):
            f16_row_to_f32(row, w[r])
            for t in range(T):
                acc = F32(0.0)
                for i in range(n):
                    acc += row[i] * x[t, i]
                out[t, r] = acc


@jit_fast(parallel=True)
def mm_bf16(out, w, x):
    """w uint16 (n_out, n_in) holding bf16 bits (the top half of a float32)."""
    T, n_out = out.shape
    n = w.shape[1]
    nchunk = (n_out + 63) // 64
    for c in prange(nchunk):
        buf = np.empty(n, np.uint32)
        row = buf.view(np.float32)
        for r in range(c * 64, min(n_out, c * 64 + 64)):
            for i in range(n):
                buf[i] = np.uint32(w[r, i]) << 16
            for t in range(T):
                acc = F32(0.0)
                for i in range(n):
                    acc += row[i] * x[t, i]
                out[t, r] = acc


def _spec(type, block, dequantize, quantize_rows, kernel):
    return TypeSpec(
        type=type,
        block=np.dtype(block),
        dequantize=dequantize,
        quantize_ref=_quantize_ref_for(type),
        quantize_rows=quantize_rows,
        act=act.F32_ACT,
        dot_ref=dot_ref_for(type),
        arrays=("w",),
        kernels={"portable": kernel, "avx2": kernel},
    )


SPECS = (
    _spec(GGMLType.F32, "<f4", lambda b: b.astype(F32)[:, None], quantize_rows_f32, mm_f32),
    _spec(GGMLType.F16, "<f2", lambda b: b.astype(F32)[:, None], quantize_rows_f16, mm_f16),
    _spec(GGMLType.BF16, "<u2", lambda b: bf16_to_fp32(b)[:, None], quantize_rows_bf16, mm_bf16),
)
