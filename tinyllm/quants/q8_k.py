"""Q8_K: 256 weights, 292 bytes: the activation type of the K-quant and IQ kernels (kquants.md §1.4, §3.8).

    +-----+-------------------+--------------------+
    | d   | qs[256] int8      | bsums[16] int16    |      y = d * qs[j]
    | f32 |                   | sum of 16 qs each  |
    +-----+-------------------+--------------------+

Only the block code lives here (a file may hold Q8_K tensors); the activation quantizer the
kernels call is act.quantize_act(act.Q8_K, x), which this module's quantizer reuses.
"""
import numpy as np

from ..jit import jit_exact
from .act import _q8_K_row, q8_K_blocks_ref
from .blocks import NONFINITE, as_rows, out_rows, put16
from .rounding import row_nonfinite
from .spec import TypeSpec
from .types import QK_K, GGMLType

BLOCK = np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])


def dequantize(b: np.ndarray) -> np.ndarray:
    return b["d"].astype(np.float32)[:, None] * b["qs"].astype(np.float32)


def quantize_ref(x: np.ndarray, qw=None) -> np.ndarray:
    """quantize_row_q8_K (§3.8): float32 d = 1/(-127/max), qs in -127..127, bsums over 16s (0 if all zero)."""
    x = as_rows(x, GGMLType.Q8_K)
    d, qs, bsums = q8_K_blocks_ref(x.reshape(-1, QK_K))
    b = np.zeros(d.size, BLOCK)
    b["d"], b["qs"], b["bsums"] = d, qs, bsums
    return out_rows(b, x.shape[0])


@jit_exact
def quantize_rows(x, xu, out, status, qw):
    rows, n = x.shape
    nb = n // 256
    qs = np.empty((1, n), np.int8)
    d = np.empty((1, nb), np.float32)
    bsums = np.empty((1, n // 16), np.int32)
    for r in range(rows):
        if row_nonfinite(xu[r]):
            status[r] = NONFINITE
            continue
        _q8_K_row(x[r : r + 1], xu[r : r + 1], qs, d, bsums, 0)
        o = out[r]
        for b in range(nb):
            ob = 292 * b
            db = np.int64(d[0, b:b + 1].view(np.uint32)[0])
            for k in range(4):
                o[ob + k] = (db >> (8 * k)) & 0xFF
            for j in range(256):
                o[ob + 4 + j] = np.int64(qs[0, 256 * b + j]) & 0xFF
            for g in range(16):
                put16(o, ob + 260 + 2 * g, np.int64(bsums[0, 16 * b + g]) & 0xFFFF)


SPEC = TypeSpec(
    type=GGMLType.Q8_K,
    block=BLOCK,
    dequantize=dequantize,
    quantize_ref=quantize_ref,
    quantize_rows=quantize_rows,
)
