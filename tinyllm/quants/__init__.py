"""Block code: layouts, dequantizers, quantizers and dot kernels of the ggml types."""
from .types import BLOCK_SIZES, FLOAT_TYPES, QK8_0, QK_K, GGMLType, block_size, parse_type, row_nbytes
