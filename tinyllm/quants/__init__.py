"""Block code of the ggml types: one module per type (q4_k.py, q8_0.py, ...) holding its
layout, NumPy reference dequantizer/quantizer, Numba quantizer, dot kernels and their twin,
all registered in `registry.TYPES`.

Shared pieces: fp16.py (every fp16/bf16 conversion), rounding.py (ggml's float -> int rules),
kscales.py (the K-quant 6-bit scales), fit.py (scale searches), act.py (activation
quantizers), tiles.py (the kernels' tiled weight layout), simd.py (AVX2 intrinsics).
"""
from .registry import MATMUL_TYPES, QUANTIZE_TYPES, TYPES, blocks, dequantize, quantize, quantize_ref, spec
from .types import BLOCK_SIZES, FLOAT_TYPES, QK8_0, QK_K, GGMLType, bits_per_weight, block_size, parse_type, row_nbytes
