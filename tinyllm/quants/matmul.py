"""Weight matrices kept as quantized blocks, and the matmul / embedding lookup the model uses.

    w = QMatrix.from_tensor(gguf.tensors["blk.0.ffn_up.weight"])   # (n_out, n_in), no float copy
    y = matmul(w, x)            # x float32 (T, n_in) -> y float32 (T, n_out)
    e = get_rows(w, token_ids)  # float32 (len(ids), n_in), only those rows dequantized

Activations are quantized once per call to the weight type's activation type (`TypeSpec.act`,
ggml's vec_dot_type): Q8_K for the K-quants, Q8_0 for Q8_0/Q5_0/Q4_0, Q8_1 for Q4_1/Q5_1;
float weights take float32 rows. Kernels come from the type's module through the registry.
"""
import numpy as np

from ..errors import ModelError, UsageError
from .act import F32_ACT, act_call, quantize_act
from .floats import weights_f32
from .registry import MATMUL_TYPES, TYPES
from .simd import HAS_AVX2
from .tiles import TILE, repack
from .types import BLOCK_SIZES, FLOAT_TYPES, GGMLType, row_nbytes

SUPPORTED = MATMUL_TYPES


class QMatrix:
    """A weight matrix W (n_out, n_in) in its GGUF block type.

    `raw` is the memory-mapped block bytes (n_out, row_nbytes), kept for get_rows. For the
    quantized types the kernels read `arrays`, a load-time repack of the same quants and fp16
    scales into tiles of TILE rows (tiles.py): the same bytes as the GGUF blocks (K-quants:
    4 more per 256 weights for byte-sized 6-bit scales), never a float copy.
    """

    def __init__(self, type, raw: np.ndarray, n_in: int, name: str = "?", release=None):
        type = GGMLType(type)
        if type not in SUPPORTED:
            supported = ", ".join(t.name for t in SUPPORTED)
            raise ModelError(f"tensor {name}: weight type {type.name} is not supported for matmul; supported: {supported}")
        blck = BLOCK_SIZES[type][0]
        if n_in % blck:
            raise ModelError(f"tensor {name}: row length {n_in} is not a multiple of the {type.name} block size {blck}")
        if raw.ndim != 2 or raw.dtype != np.uint8 or raw.shape[1] != row_nbytes(type, n_in):
            raise ModelError(
                f"tensor {name}: raw data of shape {raw.shape} {raw.dtype} does not hold rows of {n_in} {type.name} weights"
                f" ({row_nbytes(type, n_in)} bytes each)"
            )
        self.name = name
        self.type = type
        self.spec = TYPES[type]
        self.n_out = raw.shape[0]
        self.n_in = n_in
        self.raw = raw
        if type == GGMLType.F32:
            self.arrays = (raw.view(np.float32),)
        elif type in FLOAT_TYPES:
            self.arrays = (raw.view(np.uint16),)
        else:
            self.arrays = repack(self.spec, raw, n_in, release)  # release: see tiles.repack

    @classmethod
    def from_tensor(cls, info, release=None) -> "QMatrix":
        """From a gguf_io TensorInfo of a 2-D weight (numpy shape (n_out, n_in))."""
        shape = tuple(int(s) for s in info.shape)
        if len(shape) != 2:
            raise ModelError(f"tensor {info.name}: matmul weights must be 2-D, got shape {shape}")
        return cls(info.type, info.data, shape[1], name=info.name, release=release)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_out, self.n_in)

    @property
    def nbytes(self) -> int:
        """Bytes of the GGUF blocks of the tensor (what GB/s figures are quoted against)."""
        return self.raw.nbytes

    @property
    def kernel_nbytes(self) -> int:
        """Bytes one matmul actually reads (the repacked arrays)."""
        return sum(a.nbytes for a in self.arrays)

    def __repr__(self):
        return f"QMatrix({self.name}, {self.type.name}, n_out={self.n_out}, n_in={self.n_in})"


def quantize_activations(wtype, x: np.ndarray) -> tuple:
    """x float32 (T, n_in) -> the activation arrays wtype's kernels take (act.quantize_act)."""
    return quantize_act(TYPES[GGMLType(wtype)].act, x)


KERNEL_SETS = {
    # "portable": plain Numba loops, any CPU; "avx2": vpmaddubsw / vpmaddwd through LLVM intrinsics
    name: {t: TYPES[t].kernels[name] for t in MATMUL_TYPES}
    for name in ("portable", "avx2")
}
AVAILABLE_KERNEL_SETS = ("avx2", "portable") if HAS_AVX2 else ("portable",)
_kernels = KERNEL_SETS[AVAILABLE_KERNEL_SETS[0]]


def set_kernel_set(name: str) -> str:
    """Choose the kernels matmul uses ('avx2' where the CPU has it, else 'portable'); returns
    the previous choice. For tests and benchmarks: both sets compute the same integer sums."""
    global _kernels
    if name not in AVAILABLE_KERNEL_SETS:
        raise UsageError(f"kernel set {name!r} is not available here; available: {', '.join(AVAILABLE_KERNEL_SETS)}")
    old = kernel_set()
    _kernels = KERNEL_SETS[name]
    return old


def kernel_set() -> str:
    return next(k for k, v in KERNEL_SETS.items() if v is _kernels)


def matmul(w: QMatrix, x: np.ndarray, out: np.ndarray | None = None, act: tuple | None = None) -> np.ndarray:
    """out (T, n_out) float32 = x (T, n_in) @ W.T; a 1-D x gives a 1-D out.

    act: x already quantized for w (quantize_activations(w.type, x)), so that matrices that
    share an input and an activation type (q/k/v, gate/up) quantize it once."""
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != w.n_in or x.dtype != np.float32:
        raise UsageError(f"matmul with {w!r}: x must be float32 (T, {w.n_in}), got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    T = x.shape[0]
    if out is None:
        out = np.empty((w.n_out,) if squeeze else (T, w.n_out), np.float32)
    elif out.shape != ((w.n_out,) if squeeze else (T, w.n_out)) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise UsageError(f"matmul with {w!r}: out must be C-contiguous float32 {(T, w.n_out)}, got {out.dtype} {out.shape}")
    _kernels[w.type](out.reshape(T, w.n_out), *w.arrays, *(quantize_act(w.spec.act, x) if act is None else act))
    return out


def kernel_calls(w: QMatrix, T: int) -> list[tuple]:
    """The (kernel, args) pairs that matmul(w, x of T rows) runs, with the arrays allocated but
    nothing computed: enough to compile exactly the signatures the runtime will call."""
    x = np.zeros((T, w.n_in), np.float32)
    out = np.empty((T, w.n_out), np.float32)
    if w.spec.act == F32_ACT:
        return [(_kernels[w.type], (out, *w.arrays, x))]
    quantizer, act = act_call(w.spec.act, x)
    return [(quantizer, (x, *act)), (_kernels[w.type], (out, *w.arrays, *act))]


def get_rows(w: QMatrix, ids) -> np.ndarray:
    """float32 (len(ids), n_in): rows ids of W dequantized exactly as ggml does."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= w.n_out):
        bad = ids[(ids < 0) | (ids >= w.n_out)][0]
        raise UsageError(f"get_rows from {w!r}: row id {bad} is out of range 0..{w.n_out - 1}")
    if w.spec.act == F32_ACT:
        return weights_f32(w.type, w.raw[ids])
    out = np.empty((ids.size, w.n_in), np.float32)
    w.spec.dequant_rows(out, w.raw, ids)
    return out


__all__ = ["QMatrix", "matmul", "get_rows", "kernel_calls", "quantize_activations", "TILE", "KERNEL_SETS", "SUPPORTED"]
