"""Activation quantizers: float32 rows -> the int8 blocks the dot kernels multiply against
(kquants.md §3.8, §3.9; kquants-family.md §4), bit-exact with ggml's x86 CPU backend.

Each weight type names its activation type (`TypeSpec.act`, ggml's `vec_dot_type`):

    Q8_K  256 per block: qs int8, d float32 = 1/(-127/max), sums int32 per 16 (ggml's bsums)
    Q8_0  32 per block:  qs int8 = rint(x * 127/amax), d = fp16(amax/127), sums int32 per 32
    Q8_1  as Q8_0, and s = fp16(d * Σqs) per 32 with the unrounded d (for Q4_1 / Q5_1)
    F32   the float32 rows themselves (float weights)

`quantize_act(kind, x)` returns the split arrays the kernels take, (qs, d, sums), with
sums float32 s for Q8_1 and int32 for the others; the `*_ref` functions are the NumPy twins.
"""
import numpy as np
from numba import prange

from ..jit import jit_exact
from .fp16 import fp16_round, fp32_to_fp16
from .rounding import nearest_int_np
from .types import QK8_0, QK_K

Q8_K, Q8_0, Q8_1, F32_ACT = "q8_K", "q8_0", "q8_1", "f32"
F32 = np.float32


@jit_exact(inline="always")
def _q8_K_row(x, xu, qs, d, bsums, t):
    """Row t of x -> Q8_K (§3.8): qs int8, d float32 per 256, bsums int32 per 16 (zero for a zero block).

    The largest |x| is an integer max over the bit patterns (NaN skipped, as the strict `>` of
    the C loop skips it), and its sign that of its first occurrence: loops that vectorise."""
    for b in range(x.shape[1] // 256):
        base = b * 256
        abits = np.uint32(0)
        for j in range(256):
            a = xu[t, base + j] & np.uint32(0x7FFFFFFF)
            abits = max(abits, a if a <= np.uint32(0x7F800000) else np.uint32(0))
        if abits == 0:
            d[t, b] = 0
            for j in range(256):
                qs[t, base + j] = 0
            for g in range(16):
                bsums[t, b * 16 + g] = 0
            continue
        ipos = 256
        ineg = 256
        for j in range(256):
            u = xu[t, base + j]
            ipos = min(ipos, j if u == abits else 256)
            ineg = min(ineg, j if u == (abits | np.uint32(0x80000000)) else 256)
        amax = np.uint32(abits).view(np.float32)
        vmax = amax if ipos < ineg else -amax
        iscale = F32(F32(-127.0) / vmax)
        for g in range(16):
            s = np.int32(0)
            for j in range(16):
                q = min(np.int32(127), np.int32(np.rint(F32(iscale * x[t, base + 16 * g + j]))))
                qs[t, base + 16 * g + j] = q
                s += q
            bsums[t, b * 16 + g] = s
        d[t, b] = F32(F32(1.0) / iscale)


@jit_exact(inline="always")
def _q8_0_row(x, xu, qs, d, ys, t, q8_1):
    """Row t of x -> the x86 activation Q8_0 (§3.9): d = fp16(amax/127), qs = rint(x*f32(127/amax)).
    ys: the integer block sums, or for Q8_1 the float s = fp16(f32(amax/127) * Σqs).
    amax is an integer max over the bit patterns (it vectorises; a NaN wins, as in the
    AVX max of ggml's loop and the twin's np.max)."""
    for b in range(x.shape[1] // 32):
        base = b * 32
        abits = np.uint32(0)
        for j in range(32):
            abits = max(abits, xu[t, base + j] & np.uint32(0x7FFFFFFF))
        amax = np.uint32(abits).view(np.float32)
        dq = F32(amax / F32(127.0))
        d[t, b] = fp16_round(dq)
        iscale = F32(F32(127.0) / amax) if amax != 0 else F32(0.0)
        s = np.int32(0)
        for j in range(32):
            q = min(np.int32(127), max(np.int32(-128), np.int32(np.rint(F32(x[t, base + j] * iscale)))))
            qs[t, base + j] = q
            s += q
        if q8_1:
            ys[t, b] = fp16_round(F32(dq * F32(s)))
        else:
            ys[t, b] = s


@jit_exact(parallel=True)
def quantize_q8_K_act(x, qs, d, bsums):
    """x float32 (T, n) -> qs int8 (T, n), d float32 (T, n/256), bsums int32 (T, n/16)."""
    xu = x.view(np.uint32)
    for t in prange(x.shape[0]):
        _q8_K_row(x, xu, qs, d, bsums, t)


@jit_exact
def quantize_q8_K_act_1(x, qs, d, bsums):
    """quantize_q8_K_act for one row, without the cost of starting a parallel region."""
    _q8_K_row(x, x.view(np.uint32), qs, d, bsums, 0)


@jit_exact(parallel=True)
def quantize_q8_0_act(x, qs, d, ys):
    """x float32 (T, n) -> qs int8 (T, n), d float32 (T, n/32) = fp16(amax/127), ys int32 block sums."""
    xu = x.view(np.uint32)
    for t in prange(x.shape[0]):
        _q8_0_row(x, xu, qs, d, ys, t, False)


@jit_exact
def quantize_q8_0_act_1(x, qs, d, ys):
    _q8_0_row(x, x.view(np.uint32), qs, d, ys, 0, False)


@jit_exact(parallel=True)
def quantize_q8_1_act(x, qs, d, s):
    """As quantize_q8_0_act, with s float32 (T, n/32) = fp16(d * Σqs) instead of the integer sums."""
    xu = x.view(np.uint32)
    for t in prange(x.shape[0]):
        _q8_0_row(x, xu, qs, d, s, t, True)


@jit_exact
def quantize_q8_1_act_1(x, qs, d, s):
    _q8_0_row(x, x.view(np.uint32), qs, d, s, 0, True)


_KERNELS = {
    Q8_K: (QK_K, 16, np.int32, quantize_q8_K_act, quantize_q8_K_act_1),
    Q8_0: (QK8_0, 32, np.int32, quantize_q8_0_act, quantize_q8_0_act_1),
    Q8_1: (QK8_0, 32, np.float32, quantize_q8_1_act, quantize_q8_1_act_1),
}


def act_block(kind: str) -> int:
    """Weights per activation block (the row length must be a multiple)."""
    return 1 if kind == F32_ACT else _KERNELS[kind][0]


def quantize_act(kind: str, x: np.ndarray) -> tuple:
    """float32 (T, n) -> (qs int8 (T, n), d float32 (T, n/blk), sums) for the kernels; F32: (x,)."""
    if kind == F32_ACT:
        return (x,)
    kernel, out = act_call(kind, x)
    kernel(x, *out)
    return out


def act_call(kind: str, x: np.ndarray) -> tuple:
    """(kernel, its output arrays, allocated) that quantize_act(kind, x) runs as kernel(x, *out)."""
    blk, per, sdtype, many, one = _KERNELS[kind]
    T, n = x.shape
    out = (np.empty((T, n), np.int8), np.empty((T, n // blk), np.float32), np.empty((T, n // per), sdtype))
    return (one if T == 1 else many), out


# -- NumPy twins --------------------------------------------------------------------------------


def q8_K_blocks_ref(x: np.ndarray):
    """quantize_row_q8_K (§3.8) of float32 blocks x (nb, 256) -> (d (nb,), qs int8 (nb, 256), bsums int32 (nb, 16))."""
    x = np.asarray(x, F32)
    ax = np.abs(x)
    i = np.argmax(ax, axis=-1)[..., None]  # strict comparison: the first largest wins, with its sign
    amax = np.take_along_axis(ax, i, axis=-1)[..., 0]
    mx = np.take_along_axis(x, i, axis=-1)[..., 0]
    zero = amax == 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = np.where(zero, F32(0), F32(-127) / np.where(zero, F32(1), mx)).astype(F32)
        qs = np.minimum(127, nearest_int_np(iscale[:, None] * x))
        d = np.where(zero, F32(0), F32(1) / np.where(zero, F32(1), iscale)).astype(F32)
    qs[zero] = 0
    return d, qs.astype(np.int8), qs.reshape(-1, 16, 16).sum(axis=2).astype(np.int32)


def q8_0_blocks_ref(x: np.ndarray, q8_1: bool = False):
    """The x86 activation Q8_0 / Q8_1 (§3.9) of float32 blocks x (nb, 32) ->
    (d (nb,) as the float32 of its fp16, qs int8 (nb, 32), sums: int32 Σqs, or Q8_1's float32 s)."""
    x = np.asarray(x, F32)
    amax = np.abs(x).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        id = np.where(amax != 0, F32(127) / amax, F32(0)).astype(F32)
        dq = (amax / F32(127)).astype(F32)
        # _mm256_cvtps_epi32 gives INT32_MIN for NaN/Inf/out of range; the packs saturate
        r = np.rint(x * id[:, None])
        qs = np.where(np.abs(r) < 2.0**31, r, -(2.0**31)).clip(-128, 127).astype(np.int8)
    s = qs.astype(np.int32).sum(axis=1, dtype=np.int32)
    if q8_1:
        sums = fp32_to_fp16(dq * s.astype(F32)).astype(F32)
    else:
        sums = s
    return fp32_to_fp16(dq).astype(F32), qs, sums


def quantize_act_ref(kind: str, x: np.ndarray) -> tuple:
    """NumPy twin of quantize_act: the same arrays, computed by the reference code."""
    x = np.ascontiguousarray(x, F32)
    if kind == F32_ACT:
        return (x,)
    T, n = x.shape
    if kind == Q8_K:
        d, qs, sums = q8_K_blocks_ref(x.reshape(-1, QK_K))
        return qs.reshape(T, n), d.reshape(T, -1), sums.reshape(T, -1)
    d, qs, sums = q8_0_blocks_ref(x.reshape(-1, QK8_0), q8_1=kind == Q8_1)
    return qs.reshape(T, n), d.reshape(T, -1), sums.reshape(T, -1)
