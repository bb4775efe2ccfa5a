"""Weight matrices kept as quantized blocks, and the matmul / embedding lookup the model uses.

    w = QMatrix.from_tensor(gguf.tensors["blk.0.ffn_up.weight"])   # (n_out, n_in), no float copy
    y = matmul(w, x)            # x float32 (T, n_in) -> y float32 (T, n_out)
    e = get_rows(w, token_ids)  # float32 (len(ids), n_in), only those rows dequantized

Activations are quantized once per call to the weight type's activation type (kquants.md
§4.0): Q8_K for the K-quants, Q8_0 for Q8_0/Q5_0/Q4_0; float weights take float32 rows.
"""
import numpy as np

from ..errors import ModelError, UsageError
from . import dot
from .types import BLOCK_SIZES, GGMLType, row_nbytes

Q8_0_FAMILY = (GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_0)
K_TYPES = (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K)
FLOAT_WEIGHTS = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)
SUPPORTED = Q8_0_FAMILY + K_TYPES + FLOAT_WEIGHTS

# byte offset of the fp16 d (and dmin) inside each block
_D_OFFSET = {GGMLType.Q8_0: 0, GGMLType.Q5_0: 0, GGMLType.Q4_0: 0, GGMLType.Q4_K: 0, GGMLType.Q5_K: 0, GGMLType.Q6_K: 208}


def _block_fp16(raw: np.ndarray, nbytes: int, offset: int) -> np.ndarray:
    """The fp16 field at `offset` of every block of raw (n_out, nb*nbytes) -> float32 (n_out, nb)."""
    b = raw.reshape(raw.shape[0], -1, nbytes)[:, :, offset : offset + 2]
    return np.ascontiguousarray(b).view("<f2")[..., 0].astype(np.float32)


class QMatrix:
    """A weight matrix W (n_out, n_in) in its GGUF block type.

    `raw` is the memory-mapped block bytes (n_out, row_nbytes), never dequantized;
    `d` / `dmin` are the blocks' fp16 scales decoded once at load into float32 side arrays
    (n_out, n_blocks): 4-8 bytes per block, read by the kernels instead of converting fp16
    in the hot loop.
    """

    def __init__(self, type, raw: np.ndarray, n_in: int, name: str = "?"):
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
        self.n_out = raw.shape[0]
        self.n_in = n_in
        self.raw = raw
        self.d = None
        self.dmin = None
        if type in Q8_0_FAMILY or type in K_TYPES:
            nbytes = BLOCK_SIZES[type][1]
            self.d = _block_fp16(raw, nbytes, _D_OFFSET[type])
            self.dmin = _block_fp16(raw, nbytes, 2) if type in (GGMLType.Q4_K, GGMLType.Q5_K) else self.d
        if type == GGMLType.Q8_0:
            self._wq = raw.view(np.int8)
        elif type == GGMLType.F32:
            self._wq = raw.view(np.float32)
        elif type in (GGMLType.F16, GGMLType.BF16):
            self._wq = raw.view(np.uint16)
        else:
            self._wq = raw

    @classmethod
    def from_tensor(cls, info) -> "QMatrix":
        """From a gguf_io TensorInfo of a 2-D weight (numpy shape (n_out, n_in))."""
        shape = tuple(int(s) for s in info.shape)
        if len(shape) != 2:
            raise ModelError(f"tensor {info.name}: matmul weights must be 2-D, got shape {shape}")
        return cls(info.type, info.data, shape[1], name=info.name)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_out, self.n_in)

    @property
    def nbytes(self) -> int:
        """Bytes of weight blocks one full matmul reads (the GGUF size of the tensor)."""
        return self.raw.nbytes

    def __repr__(self):
        return f"QMatrix({self.name}, {self.type.name}, n_out={self.n_out}, n_in={self.n_in})"


def quantize_activations(wtype, x: np.ndarray):
    """x float32 (T, n_in) -> the split activation arrays the kernels of wtype read."""
    T, n = x.shape
    if wtype in K_TYPES:
        qs = np.empty((T, n), np.int8)
        d = np.empty((T, n // 256), np.float32)
        bsums = np.empty((T, n // 16), np.int32)
        dot.quantize_q8_K_act(x, qs, d, bsums)
        return qs, d, bsums
    qs = np.empty((T, n), np.int8)
    d = np.empty((T, n // 32), np.float32)
    dot.quantize_q8_0_act(x, qs, d)
    return qs, d


def matmul(w: QMatrix, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """out (T, n_out) float32 = x (T, n_in) @ W.T; a 1-D x gives a 1-D out."""
    squeeze = x.ndim == 1
    if squeeze:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != w.n_in or x.dtype != np.float32:
        raise UsageError(f"matmul with {w!r}: x must be float32 (T, {w.n_in}), got {x.dtype} {x.shape}")
    x = np.ascontiguousarray(x)
    T = x.shape[0]
    if out is None:
        out = np.empty((T, w.n_out), np.float32)
    elif out.shape != ((w.n_out,) if squeeze else (T, w.n_out)) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise UsageError(f"matmul with {w!r}: out must be C-contiguous float32 {(T, w.n_out)}, got {out.dtype} {out.shape}")
    o2 = out.reshape(T, w.n_out)
    t = w.type
    if t in FLOAT_WEIGHTS:
        {GGMLType.F32: dot.mm_f32, GGMLType.F16: dot.mm_f16, GGMLType.BF16: dot.mm_bf16}[t](o2, w._wq, x)
    elif t in Q8_0_FAMILY:
        yq, yd = quantize_activations(t, x)
        {GGMLType.Q8_0: dot.mm_q8_0, GGMLType.Q5_0: dot.mm_q5_0, GGMLType.Q4_0: dot.mm_q4_0}[t](o2, w._wq, w.d, yq, yd)
    elif t == GGMLType.Q6_K:
        yq, yd, _ = quantize_activations(t, x)
        dot.mm_q6_K(o2, w._wq, w.d, yq, yd)
    else:
        yq, yd, ybs = quantize_activations(t, x)
        (dot.mm_q4_K if t == GGMLType.Q4_K else dot.mm_q5_K)(o2, w._wq, w.d, w.dmin, yq, yd, ybs)
    return out


def get_rows(w: QMatrix, ids) -> np.ndarray:
    """float32 (len(ids), n_in): rows ids of W dequantized exactly as ggml does (kquants.md §2)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= w.n_out):
        bad = ids[(ids < 0) | (ids >= w.n_out)][0]
        raise UsageError(f"get_rows from {w!r}: row id {bad} is out of range 0..{w.n_out - 1}")
    t = w.type
    if t == GGMLType.F32:
        return w._wq[ids].astype(np.float32)
    if t == GGMLType.F16:
        return w.raw[ids].view("<f2").astype(np.float32)
    if t == GGMLType.BF16:
        return (w.raw[ids].view("<u2").astype(np.uint32) << 16).view(np.float32)
    out = np.empty((ids.size, w.n_in), np.float32)
    dot.dequant_rows(out, int(t), w.raw, w.d, w.dmin, ids)
    return out
