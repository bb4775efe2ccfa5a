"""TypeSpec: everything tinyllm knows about one ggml type, filled in by that type's module and
collected in `registry.TYPES`, the one table the runtime, `quantize`, `info` and
`bench --kernels` read."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .types import BLOCK_SIZES, GGMLType


@dataclass(frozen=True)
class TypeSpec:
    type: GGMLType
    # structured block layout with ggml's field names (None for float types)
    block: np.dtype | None
    # blocks (nb,) of `block` -> float32 (nb, block_size), bit-exact with ggml (NumPy)
    dequantize: Callable
    # float32 rows (rows, n), optional imatrix weights (n,) -> uint8 (rows, row_nbytes) (NumPy twin)
    quantize_ref: Callable | None = None
    # Numba row quantizer over a slice of rows: (x, xu, out, status, qw); qw empty without imatrix
    quantize_rows: Callable | None = None
    # whether quantize_rows / quantize_ref use an imatrix (llama.cpp's *_impl paths)
    uses_imatrix: bool = False
    # llama-quantize refuses this type without an imatrix
    needs_imatrix: bool = False
    # activation type of the dot kernels (act.Q8_K, act.Q8_0, act.Q8_1, act.F32_ACT); "" = no kernels
    act: str = ""
    # NumPy twin of the kernels: (raw (n_out, row_nbytes) uint8, *activations) -> float32 (T, n_out)
    dot_ref: Callable | None = None
    # names of the kernel arrays, in the order the kernels take them
    arrays: tuple[str, ...] = ()
    # blocks (rows, nb, block_nbytes) uint8 -> {name: (rows, X)} in natural element order (tiles.py)
    repack_rows: Callable | None = None
    # "portable" / "avx2" -> kernel(out (T, n_out) float32, *arrays, *activations)
    kernels: dict = field(default_factory=dict)
    # Numba: (out (k, n_in) float32, raw (n_out, row_nbytes) uint8, ids int64 (k,)), bit-exact rows
    dequant_rows: Callable | None = None
    # tests: round-trip error bound of test-quantize-fns (kquants.md §6), on its generated data
    max_quantization_error: float = 0.002

    @property
    def block_size(self) -> int:
        return BLOCK_SIZES[self.type][0]

    @property
    def block_nbytes(self) -> int:
        return BLOCK_SIZES[self.type][1]

    @property
    def name(self) -> str:
        return self.type.name

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.block_nbytes / self.block_size
