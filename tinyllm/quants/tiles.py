"""Quantized weights in the tiled layout the kernels read, and the helpers every kernel shares.

A weight matrix is repacked once at load (no float copies): rows are grouped in tiles of
R = TILE rows (the last tile zero-padded). Inside a tile the row index is the fastest axis,
so the innermost loop of every kernel runs over R rows with unit stride: it vectorises into
full AVX2 lanes and needs no horizontal reduction per block. Along the row, quants keep
ggml's blocks but in natural element order:

  q8  int8  (ntile, n_in/2, 2R)  Q8_0: [pair p][row r][element 2p, 2p+1]
  q4  uint8 (ntile, n_in/2, R)   4-bit types: [pair p][row r] = q(2p) | q(2p+1) << 4
  qh  uint8 (ntile, n_in/8, R)   5-bit types: bit k = 5th bit of element 8g+k
  qh  uint8 (ntile, n_in/4, R)   Q6_K: bits 2k..2k+1 = top 2 bits of element 4g+k
  sc, mn    (ntile, n_sub, R)    K-quant sub-block scales / mins, one byte each
  d, dmin   uint16 (ntile, n_blocks, R)   fp16 block scales (bits), widened per block

Decode reads every weight byte once per token, so the layout keeps ggml's bytes per block
(only the K-quants' 6-bit scales grow, 12 -> 16 bytes per 256 weights). Integer block sums
are exact in int32; the constant offsets of unsigned quants (8 for Q4_0, 16 for Q5_0, 32 for
Q6_K) are subtracted once per block through the activation block sums, as ggml's AVX2
kernels do with bsums.

Each type module gives `repack_rows(b)`: its blocks (rows, nb, block bytes) -> named arrays
(rows, X) in natural order; `repack` cuts those into tiles (ntile, X, R).
"""
import numpy as np

from ..jit import jit_fast
from .fp16 import f16_row_to_f32, widen_f16x16

TILE = 64
TOKEN_BLOCK = 16  # prefill: tokens per pass over an unpacked tile row (their float sums stay in L1)


# -- repacking (NumPy, at load) -----------------------------------------------------------------


def fp16_bits(b2: np.ndarray) -> np.ndarray:
    """(..., 2) little-endian fp16 bytes -> their uint16 bits (...); the kernels widen them."""
    return np.ascontiguousarray(b2).view("<u2")[..., 0].astype(np.uint16)


def nibble_pairs(nat: np.ndarray) -> np.ndarray:
    """4-bit values in natural order (rows, n) -> (rows, n/2) bytes q(2p) | q(2p+1) << 4."""
    return nat[:, 0::2] | (nat[:, 1::2] << 4)


def pack_bits(vals: np.ndarray, bits: int) -> np.ndarray:
    """Small values (rows, n) of `bits` bits each -> (rows, n*bits/8) bytes, element k of each
    group in bits k*bits.. (LSB first)."""
    per = 8 // bits
    g = vals.reshape(vals.shape[0], -1, per)
    out = np.zeros(g.shape[:2], np.uint8)
    for k in range(per):
        out |= g[:, :, k] << (bits * k)
    return out


def nibbles_32(qs: np.ndarray) -> np.ndarray:
    """(..., 16) bytes of a 32-block -> (..., 32) values: element j low nibble, element j+16 high nibble."""
    return np.concatenate([qs & 15, qs >> 4], axis=-1)


def repack(spec, raw: np.ndarray, n_in: int, release=None) -> tuple:
    """Raw GGUF rows (n_out, row_nbytes) -> spec's kernel arrays in tiles of TILE rows, in
    the order spec.arrays names them. Works through chunks of rows so the temporaries stay
    a few MiB whatever the matrix size; `release(rows)`, when given, is called with each chunk
    of `raw` once it is read (the loader drops those mapped pages, so that a large matrix is
    not resident twice while it is repacked)."""
    R = TILE
    n_out = raw.shape[0]
    ntile = -(-n_out // R)
    blck, nbytes = spec.block_size, spec.block_nbytes
    chunk = R * max(1, (1 << 21) // (R * max(1, n_in)))
    arrays = {}
    for r0 in range(0, ntile * R, chunk):
        r1 = min(r0 + chunk, ntile * R)
        b = raw[r0 : min(r1, n_out)].reshape(-1, n_in // blck, nbytes)
        if b.shape[0] < r1 - r0:  # zero rows pad the last tile: zero scales give zero outputs
            b = np.concatenate([b, np.zeros((r1 - r0 - b.shape[0],) + b.shape[1:], np.uint8)])
        for key, a in spec.repack_rows(b).items():  # a: (rows, X) -> tiles (ntile, X, R)
            if key not in arrays:
                arrays[key] = np.empty((ntile, a.shape[1], R), a.dtype)
            arrays[key][r0 // R : r1 // R] = a.reshape(-1, R, a.shape[1]).transpose(0, 2, 1)
        if release is not None:
            release(raw[r0 : min(r1, n_out)])
    if "q8" in arrays:  # Q8_0 pairs were moved as uint16: (ntile, n_in/2, 2R) [pair][row][2 elements]
        arrays["q8"] = arrays["q8"].view(np.int8)
    empty = np.zeros((0, 0, R), np.uint8)
    return tuple(arrays.get(k, empty) for k in spec.arrays)


# -- portable kernels ---------------------------------------------------------------------------


@jit_fast
def chunking(ntile):
    """Tiles per prange iteration: enough iterations for the threads to share, few enough
    that the per-iteration scratch allocation stays negligible."""
    per = max(1, ntile // 64)
    return per, (ntile + per - 1) // per


@jit_fast
def store(out, t, row0, facc):
    n = min(facc.shape[0], out.shape[1] - row0)
    for r in range(n):
        out[t, row0 + r] = facc[r]


@jit_fast(inline="always")
def h2f_tile(buf, d, tl):
    """The fp16 block scales of tile tl, d[tl] (uint16 bits, (nb, R)), as float32 (nb, R) in
    the scratch buf (float32, (nb, R)): done once per tile, shared by every token."""
    f16_row_to_f32(buf.reshape(-1), d[tl].reshape(-1))
    return buf


# -- AVX2 kernels -------------------------------------------------------------------------------


@jit_fast(inline="always")
def h2f_block(buf, d, tl, b):
    """d[tl, b] (R fp16 scales) -> buf (float32, R), with F16C."""
    src = d[tl, b]
    for rc in range(0, buf.shape[0], 16):
        widen_f16x16(buf, rc, src, rc)
    return buf


@jit_fast(inline="always")
def avx2_tiles_per_chunk(ntile):
    """The AVX2 kernels' parallel split: (tiles per prange iteration, iterations), at most 16
    iterations (enough for the threads to share, few enough that per-iteration scratch costs
    nothing)."""
    per = max(1, -(-ntile // 16))
    return per, (ntile + per - 1) // per


@jit_fast(inline="always")
def decode_chunks(ntile, R):
    """Decode (T = 1) kernels: avx2_tiles_per_chunk and a float row of R sums per iteration
    (the row kernels' output, then stored with store_tile)."""
    per, nchunk = avx2_tiles_per_chunk(ntile)
    return per, nchunk, np.empty((nchunk, R), np.float32)


@jit_fast(inline="always")
def avx2_chunks(ntile, T, R, pairs):
    """Chunking plus the per-chunk scratch: unpacked block, int32 block sums, float accumulators."""
    per, nchunk = avx2_tiles_per_chunk(ntile)
    qb = np.empty((nchunk, pairs * 2 * R), np.uint8)
    isub = np.empty((nchunk, 3, R), np.int32)
    dbuf = np.empty((nchunk, 2, R), np.float32)
    facc = np.empty((nchunk, T, R), np.float32)
    return per, nchunk, qb, isub, dbuf, facc


@jit_fast(inline="always")
def store_tile(out, tl, facc):
    R = facc.shape[1]
    n = min(R, out.shape[1] - tl * R)
    for t in range(out.shape[0]):
        for r in range(n):
            out[t, tl * R + r] = facc[t, r]
