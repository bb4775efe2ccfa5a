"""The one table of ggml types tinyllm knows (`TYPES`: GGMLType -> TypeSpec), and the entry
points that dispatch through it:

    blocks(raw, type)                    structured view of block bytes (ggml field names)
    dequantize(raw, type, shape)         -> float32, bit-exact with ggml (NumPy)
    quantize_ref(x, type, imatrix=None)  -> uint8 (rows, row_nbytes), the NumPy twin
    quantize(x, type, threads, imatrix)  -> the same bytes from the Numba row quantizers

Each type module (q4_k.py, q8_0.py, ...) fills in its TypeSpec; the runtime (`matmul`), the
`quantize` pipeline, `tinyllm info` and `bench --kernels` all read this table.
"""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import QuantizationError, UsageError
from . import (
    floats, iq1_m, iq1_s, iq2_s, iq2_xs, iq2_xxs, iq3_s, iq3_xxs, iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0,
    q5_1, q5_k, q6_k, q8_0, q8_k,
)
from .blocks import NONFINITE, nonfinite_error, overflow_error, quiet
from .spec import TypeSpec
from .types import BLOCK_SIZES, GGMLType, row_nbytes

TYPES: dict[GGMLType, TypeSpec] = {
    s.type: s
    for s in (
        *floats.SPECS,
        q4_0.SPEC, q4_1.SPEC, q5_0.SPEC, q5_1.SPEC, q8_0.SPEC,
        q2_k.SPEC, q3_k.SPEC, q4_k.SPEC, q5_k.SPEC, q6_k.SPEC, q8_k.SPEC,
        iq4_nl.SPEC, iq4_xs.SPEC,
        iq3_s.SPEC, iq3_xxs.SPEC, iq2_xxs.SPEC, iq2_xs.SPEC, iq2_s.SPEC, iq1_s.SPEC, iq1_m.SPEC,
    )
}  # fmt: skip

for _s in TYPES.values():
    assert _s.block is None or _s.block.itemsize == BLOCK_SIZES[_s.type][1], _s.type

# types whose weights the runtime can multiply, and types `tinyllm quantize` can write
MATMUL_TYPES = tuple(t for t, s in TYPES.items() if s.kernels)
QUANTIZE_TYPES = tuple(t for t, s in TYPES.items() if s.quantize_rows is not None and t != GGMLType.Q8_K)


def _names(types) -> str:
    return ", ".join(GGMLType(t).name for t in types)


def spec(type) -> TypeSpec:
    """The TypeSpec of a type, or a QuantizationError naming the types tinyllm has."""
    s = TYPES.get(GGMLType(type))
    if s is None:
        raise QuantizationError(f"type {GGMLType(type).name} is not supported; supported: {_names(TYPES)}")
    return s


def blocks(raw: np.ndarray, type: GGMLType) -> np.ndarray:
    """View raw block bytes as a 1-D structured array with ggml's field names (zero-copy if contiguous)."""
    s = spec(type)
    flat = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    if flat.size % s.block.itemsize:
        raise QuantizationError(
            f"{flat.size} bytes is not a whole number of {s.name} blocks of {s.block.itemsize} bytes"
        )
    return flat.view(s.block)


def dequantize(raw: np.ndarray, type: GGMLType, shape) -> np.ndarray:
    """Block bytes -> float32 array of `shape` (numpy order), exactly as ggml's dequantize_row_*."""
    s = spec(type)
    shape = tuple(int(v) for v in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    n = int(np.prod(shape))
    raw = np.ascontiguousarray(raw).reshape(-1).view(np.uint8)
    if n % s.block_size or raw.size != n // s.block_size * s.block_nbytes:
        raise QuantizationError(
            f"{s.name} data of {raw.size} bytes does not hold shape {shape} "
            f"({n} weights, blocks of {s.block_size} in {s.block_nbytes} bytes)"
        )
    return np.ascontiguousarray(s.dequantize(blocks(raw, type)), dtype=np.float32).reshape(shape)


def _imatrix(imatrix, n: int, s: TypeSpec) -> np.ndarray:
    if imatrix is None or not s.uses_imatrix:
        if s.needs_imatrix:
            raise QuantizationError(f"quantizing to {s.name} needs an importance matrix (--imatrix)")
        return np.zeros(0, np.float32)
    qw = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    if qw.size != n:
        raise QuantizationError(f"importance matrix has {qw.size} values for rows of {n}")
    return qw


@quiet
def quantize_ref(x: np.ndarray, type: GGMLType, imatrix=None) -> np.ndarray:
    """Quantize float32 rows (rows, n) to `type` exactly as llama-quantize does (NumPy twin)."""
    s = spec(type)
    if s.quantize_ref is None:
        raise QuantizationError(f"cannot quantize to type {s.name}; supported: {_names(QUANTIZE_TYPES)}")
    x = np.asarray(x)
    n = x.shape[-1] if x.ndim else 0
    qw = _imatrix(imatrix, n, s)
    return s.quantize_ref(x, qw if qw.size else None)


_MIN_CHUNK = 1 << 16  # floats per task: below this a thread costs more than it saves


def _run_rows(kernel, threads: int, x, xu, out, status, qw) -> None:
    """kernel(x[a:b], xu[a:b], out[a:b], status[a:b], qw) over row slices on `threads` threads.
    (The row kernels are serial and release the GIL; a `prange` kernel did the same work but
    doubled the JIT compile time of these large functions.)"""
    rows, n = x.shape
    tasks = min(rows, 4 * threads, max(1, rows * n // _MIN_CHUNK))
    if threads == 1 or tasks == 1:
        kernel(x, xu, out, status, qw)
        return
    bounds = np.linspace(0, rows, tasks + 1).astype(np.int64)
    with ThreadPoolExecutor(max_workers=min(threads, tasks)) as pool:
        jobs = [pool.submit(kernel, x[a:b], xu[a:b], out[a:b], status[a:b], qw) for a, b in zip(bounds[:-1], bounds[1:])]
        for job in jobs:
            job.result()


def quantize(x: np.ndarray, type: GGMLType, threads: int | None = None, imatrix=None) -> np.ndarray:
    """float32 rows (rows, n) -> `type` blocks, uint8 (rows, row_nbytes), byte-identical to llama-quantize.

    Raises QuantizationError naming the row for NaN/Inf input or an fp16 scale that overflows
    (callers add the tensor name). `threads`: how many threads run rows (default: the Numba
    thread count, which `tinyllm.jit.set_threads` sets). `imatrix`: per-column importance
    weights (n,), used by the types whose llama.cpp quantizer takes them.
    """
    from ..jit import get_threads

    s = spec(type)
    if s.quantize_rows is None:
        raise QuantizationError(f"cannot quantize to type {s.name}; supported: {_names(QUANTIZE_TYPES)}")
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise QuantizationError(f"quantize takes a 2-D float32 array of rows, got shape {x.shape}")
    rows, n = x.shape
    if n % s.block_size:
        raise QuantizationError(f"row length {n} is not a multiple of the {s.name} block size {s.block_size}")
    qw = _imatrix(imatrix, n, s)
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((rows, row_nbytes(s.type, n)), np.uint8)
    status = np.zeros(rows, np.int8)
    if rows == 0 or n == 0:
        return out
    if threads is None:
        threads = get_threads()
    elif int(threads) < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    _run_rows(s.quantize_rows, int(threads), x, x.view(np.uint32), out, status, qw)
    if status.any():
        r = int(np.argmax(status != 0))
        if status[r] == NONFINITE:
            raise nonfinite_error(x, r, s.type)
        raise overflow_error(x, r, s.type, "value" if s.type == GGMLType.F16 else "block scale")
    return out
