"""Block code: layouts, dequantizers, quantizers and dot kernels of the ggml types.

The NumPy reference (bit-exact, slow) is exported here; the Numba quantizer is
`tinyllm.quants.quantize.quantize` (imported on demand, since it loads Numba).
"""
from .reference import (
    BLOCK_DTYPES,
    blocks,
    dequantize,
    quantize_q8_0_act_ref,
    quantize_q8_K_ref,
    quantize_ref,
)
from .types import BLOCK_SIZES, FLOAT_TYPES, QK8_0, QK_K, GGMLType, block_size, parse_type, row_nbytes
