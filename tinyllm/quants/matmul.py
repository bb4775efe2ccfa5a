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

def _fp16(b2: np.ndarray) -> np.ndarray:
    """(..., 2) little-endian fp16 bytes -> their uint16 bits (...); the kernels widen them."""
    return np.ascontiguousarray(b2).view("<u2")[..., 0].astype(np.uint16)


def _nibble_pairs(nat: np.ndarray) -> np.ndarray:
    """4-bit values in natural order (rows, n) -> (rows, n/2) bytes q(2p) | q(2p+1) << 4."""
    return nat[:, 0::2] | (nat[:, 1::2] << 4)


def _pack_bits(vals: np.ndarray, bits: int) -> np.ndarray:
    """Small values (rows, n) of `bits` bits each -> (rows, n*bits/8) bytes, element k of each
    group in bits k*bits.. (LSB first)."""
    per = 8 // bits
    g = vals.reshape(vals.shape[0], -1, per)
    out = np.zeros(g.shape[:2], np.uint8)
    for k in range(per):
        out |= g[:, :, k] << (bits * k)
    return out


def _k4_nibbles(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K qs (rows, nb, 128) -> low 4 bits in natural order (rows, nb*256) (kquants.md §1.5)."""
    c = qs.reshape(qs.shape[0], qs.shape[1], 4, 1, 32)
    return np.concatenate([c & 15, c >> 4], axis=3).reshape(qs.shape[0], -1)


def _k4_scales(q: np.ndarray):
    """The 12-byte 6-bit packing (rows, nb, 12) -> sc, m uint8 (rows, nb*8) (kquants.md §1.8)."""
    sc = np.concatenate([q[:, :, 0:4] & 63, (q[:, :, 8:12] & 15) | ((q[:, :, 0:4] >> 6) << 4)], axis=2)
    m = np.concatenate([q[:, :, 4:8] & 63, (q[:, :, 8:12] >> 4) | ((q[:, :, 4:8] >> 6) << 4)], axis=2)
    return sc.reshape(q.shape[0], -1), m.reshape(q.shape[0], -1)


def _unpack_rows(type: GGMLType, b: np.ndarray) -> dict:
    """Blocks b (rows, nb, block_bytes) -> the kernel arrays, row-major (rows, ...), before tiling."""
    rows = b.shape[0]
    if type == GGMLType.Q8_0:
        # element pairs as uint16 (qs starts at an even offset), so the tiling moves 2 bytes at a time
        pairs = b.view(np.uint16)[:, :, 1:17]
        return {"q8": pairs.reshape(rows, -1), "d": _fp16(b[:, :, 0:2])}
    if type == GGMLType.Q4_0:
        qs = b[:, :, 2:18]
        nat = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(rows, -1)
        return {"q4": _nibble_pairs(nat), "d": _fp16(b[:, :, 0:2])}
    if type == GGMLType.Q5_0:
        qs = b[:, :, 6:22]
        nat = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(rows, -1)
        # qh as a LE u32: byte t holds the 5th bits of elements 8t..8t+7, LSB first: already our layout
        return {"q4": _nibble_pairs(nat), "qh": b[:, :, 2:6].reshape(rows, -1), "d": _fp16(b[:, :, 0:2])}
    if type in (GGMLType.Q4_K, GGMLType.Q5_K):
        qoff = 16 if type == GGMLType.Q4_K else 48
        sc, mn = _k4_scales(b[:, :, 4:16])
        a = {"q4": _nibble_pairs(_k4_nibbles(b[:, :, qoff : qoff + 128])), "sc": sc, "mn": mn}
        a["d"], a["dmin"] = _fp16(b[:, :, 0:2]), _fp16(b[:, :, 2:4])
        if type == GGMLType.Q5_K:
            qh = b[:, :, 16:48]  # bit j of qh[l] = 5th bit of element 32j + l
            hb = (qh[:, :, None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1
            a["qh"] = _pack_bits(hb.reshape(rows, -1), 1)
        return a
    if type == GGMLType.Q6_K:
        ql = b[:, :, 0:128].reshape(rows, -1, 2, 2, 32)  # (h, which half of ql, l)
        low = np.stack([ql[:, :, :, 0] & 15, ql[:, :, :, 1] & 15, ql[:, :, :, 0] >> 4, ql[:, :, :, 1] >> 4], axis=3)
        qh = b[:, :, 128:192].reshape(rows, -1, 2, 1, 32)
        high = (qh >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3  # (h, g, l)
        return {
            "q4": _nibble_pairs(low.reshape(rows, -1)),
            "qh": _pack_bits(high.reshape(rows, -1), 2),
            "sc": b[:, :, 192:208].reshape(rows, -1).view(np.int8),
            "d": _fp16(b[:, :, 208:210]),
        }
    raise AssertionError(type)


# arrays of each quantized type, in the order its kernel takes them; "q8" rows hold pairs
_ARRAYS = {
    GGMLType.Q8_0: ("q8", "d"),
    GGMLType.Q4_0: ("q4", "d"),
    GGMLType.Q5_0: ("q4", "qh", "d"),
    GGMLType.Q4_K: ("q4", "qh", "sc", "mn", "d", "dmin"),
    GGMLType.Q5_K: ("q4", "qh", "sc", "mn", "d", "dmin"),
    GGMLType.Q6_K: ("q4", "qh", "sc", "d"),
}


def repack(type: GGMLType, raw: np.ndarray, n_in: int) -> tuple:
    """Raw GGUF rows (n_out, row_nbytes) -> the tiled arrays of dot.py (see the layout there),
    in tiles of dot.TILE rows: the AVX2 mac intrinsics are built for exactly that many rows.

    Works through chunks of rows so the temporaries stay a few MiB whatever the matrix size.
    """
    R = dot.TILE
    n_out = raw.shape[0]
    ntile = -(-n_out // R)
    nbytes = BLOCK_SIZES[type][1]
    chunk = R * max(1, (1 << 21) // (R * max(1, n_in)))
    arrays = {}
    for r0 in range(0, ntile * R, chunk):
        r1 = min(r0 + chunk, ntile * R)
        b = raw[r0 : min(r1, n_out)].reshape(-1, row_nbytes(type, n_in) // nbytes, nbytes)
        if b.shape[0] < r1 - r0:  # zero rows pad the last tile: zero scales give zero outputs
            b = np.concatenate([b, np.zeros((r1 - r0 - b.shape[0],) + b.shape[1:], np.uint8)])
        for key, a in _unpack_rows(type, b).items():  # a: (rows, X) -> tiles (ntile, X, R)
            if key not in arrays:
                arrays[key] = np.empty((ntile, a.shape[1], R), a.dtype)
            arrays[key][r0 // R : r1 // R] = a.reshape(-1, R, a.shape[1]).transpose(0, 2, 1)
    if "q8" in arrays:
        arrays["q8"] = arrays["q8"].view(np.int8)  # (ntile, n_in/2, 2R): [pair][row][2 elements]
    empty = np.zeros((0, 0, R), np.uint8)
    return tuple(arrays.get(k, empty) for k in _ARRAYS[type])


class QMatrix:
    """A weight matrix W (n_out, n_in) in its GGUF block type.

    `raw` is the memory-mapped block bytes (n_out, row_nbytes), kept for get_rows. For the
    quantized types the kernels read `arrays`, a load-time repack of the same quants and fp16
    scales into tiles of dot.TILE rows (layout in dot.py): the same bytes as the GGUF blocks
    (K-quants: 4 more per 256 weights for byte-sized 6-bit scales), never a float copy.
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
        if type == GGMLType.F32:
            self.arrays = (raw.view(np.float32),)
        elif type in (GGMLType.F16, GGMLType.BF16):
            self.arrays = (raw.view(np.uint16),)
        else:
            self.arrays = repack(type, raw, n_in)

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
        """Bytes of the GGUF blocks of the tensor (what GB/s figures are quoted against)."""
        return self.raw.nbytes

    @property
    def kernel_nbytes(self) -> int:
        """Bytes one matmul actually reads (the repacked arrays)."""
        return sum(a.nbytes for a in self.arrays)

    def __repr__(self):
        return f"QMatrix({self.name}, {self.type.name}, n_out={self.n_out}, n_in={self.n_in})"


def quantize_activations(wtype, x: np.ndarray):
    """x float32 (T, n_in) -> (qs int8 (T, n), d float32 (T, n/blk), block sums int32) for wtype's
    activation type: Q8_K (sums per 16, ggml's bsums) for K-quants, else Q8_0 (sums per 32)."""
    T, n = x.shape
    qs = np.empty((T, n), np.int8)
    if wtype in K_TYPES:
        d = np.empty((T, n // 256), np.float32)
        ys = np.empty((T, n // 16), np.int32)
        (dot.quantize_q8_K_act_1 if T == 1 else dot.quantize_q8_K_act)(x, qs, d, ys)
    else:
        d = np.empty((T, n // 32), np.float32)
        ys = np.empty((T, n // 32), np.int32)
        (dot.quantize_q8_0_act_1 if T == 1 else dot.quantize_q8_0_act)(x, qs, d, ys)
    return qs, d, ys


_FLOAT_KERNELS = {GGMLType.F32: dot.mm_f32, GGMLType.F16: dot.mm_f16, GGMLType.BF16: dot.mm_bf16}
KERNEL_SETS = {
    # plain Numba loops: any CPU
    "portable": {
        GGMLType.Q8_0: dot.mm_q8_0,
        GGMLType.Q4_0: dot.mm_q4_0,
        GGMLType.Q5_0: dot.mm_q5_0,
        GGMLType.Q4_K: dot.mm_q4_K,
        GGMLType.Q5_K: dot.mm_q5_K,
        GGMLType.Q6_K: dot.mm_q6_K,
        **_FLOAT_KERNELS,
    },
    # vpmaddubsw / vpmaddwd through LLVM intrinsics: x86-64 with AVX2
    "avx2": {
        GGMLType.Q8_0: dot.mm_q8_0_avx2,
        GGMLType.Q4_0: dot.mm_q4_0_avx2,
        GGMLType.Q5_0: dot.mm_q5_0_avx2,
        GGMLType.Q4_K: dot.mm_q4_K_avx2,
        GGMLType.Q5_K: dot.mm_q5_K_avx2,
        GGMLType.Q6_K: dot.mm_q6_K_avx2,
        **_FLOAT_KERNELS,
    },
}
AVAILABLE_KERNEL_SETS = ("avx2", "portable") if dot.HAS_AVX2 else ("portable",)
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
        out = np.empty((w.n_out,) if squeeze else (T, w.n_out), np.float32)
    elif out.shape != ((w.n_out,) if squeeze else (T, w.n_out)) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise UsageError(f"matmul with {w!r}: out must be C-contiguous float32 {(T, w.n_out)}, got {out.dtype} {out.shape}")
    o2 = out.reshape(T, w.n_out)
    if w.type in FLOAT_WEIGHTS:
        _kernels[w.type](o2, *w.arrays, x)
    else:
        _kernels[w.type](o2, *w.arrays, *quantize_activations(w.type, x))
    return out


def get_rows(w: QMatrix, ids) -> np.ndarray:
    """float32 (len(ids), n_in): rows ids of W dequantized exactly as ggml does (kquants.md §2)."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= w.n_out):
        bad = ids[(ids < 0) | (ids >= w.n_out)][0]
        raise UsageError(f"get_rows from {w!r}: row id {bad} is out of range 0..{w.n_out - 1}")
    t = w.type
    if t == GGMLType.F32:
        return w.raw[ids].view(np.float32).copy()
    if t == GGMLType.F16:
        return w.raw[ids].view("<f2").astype(np.float32)
    if t == GGMLType.BF16:
        return (w.raw[ids].view("<u2").astype(np.uint32) << 16).view(np.float32)
    out = np.empty((ids.size, w.n_in), np.float32)
    dot.dequant_rows(out, int(t), w.raw, ids)
    return out
