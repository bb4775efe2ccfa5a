"""The 12-byte packings of K-quant 6-bit scales, written once: every reader and writer of those
bytes calls these. Q4_K and Q5_K: eight 6-bit scales and eight 6-bit mins (kquants.md §1.8);
Q3_K: sixteen 6-bit scales (below).

    byte 0..3 : sc[k]   | (sc[k+4] >> 4) << 6
    byte 4..7 : m[k]    | (m[k+4]  >> 4) << 6
    byte 8..11: sc[k+4] & 0xF | (m[k+4] & 0xF) << 4
"""
import numpy as np

from ..jit import jit_exact


@jit_exact(inline="always")
def scale_min_k4(q, o, j):
    """(sc_j, m_j) of sub-block j from the 12 bytes at q[o:o+12] (1-D uint8)."""
    if j < 4:
        return np.int64(q[o + j] & 63), np.int64(q[o + j + 4] & 63)
    sc = (np.int64(q[o + j + 4]) & 0xF) | ((np.int64(q[o + j - 4]) >> 6) << 4)
    m = (np.int64(q[o + j + 4]) >> 4) | ((np.int64(q[o + j]) >> 6) << 4)
    return sc, m


@jit_exact
def unpack_scales_k4(q12, sc, mn):
    """q12 (n, 12) uint8 -> sc, mn (n, 8) uint8."""
    for i in range(q12.shape[0]):
        row = q12[i]
        for j in range(8):
            s, m = scale_min_k4(row, 0, j)
            sc[i, j] = s
            mn[i, j] = m


@jit_exact(inline="always")
def pack_scales_k4(ls, lm, q, o):
    """Write the 12 bytes at q[o:o+12] from 6-bit values ls[0..8] (scales) and lm[0..8] (mins)."""
    for j in range(4):
        q[o + j] = ls[j] | ((ls[j + 4] >> 4) << 6)
        q[o + 4 + j] = lm[j] | ((lm[j + 4] >> 4) << 6)
        q[o + 8 + j] = (ls[j + 4] & 0xF) | ((lm[j + 4] & 0xF) << 4)


@jit_exact
def pack_scales_k4_rows(ls, lm, q12):
    """ls, lm (n, 8) -> q12 (n, 12) uint8."""
    for i in range(q12.shape[0]):
        pack_scales_k4(ls[i], lm[i], q12[i], 0)


def scales_k4(q12: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 12) packed bytes -> sc, m as (..., 8) uint8, for NumPy callers."""
    q = np.ascontiguousarray(q12, dtype=np.uint8)
    flat = q.reshape(-1, 12)
    sc = np.empty((flat.shape[0], 8), np.uint8)
    mn = np.empty_like(sc)
    unpack_scales_k4(flat, sc, mn)
    return sc.reshape(q.shape[:-1] + (8,)), mn.reshape(q.shape[:-1] + (8,))


def pack_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(..., 8) 6-bit scales and mins -> (..., 12) bytes, for NumPy callers."""
    ls = np.ascontiguousarray(ls, dtype=np.uint8)
    lm = np.ascontiguousarray(lm, dtype=np.uint8)
    out = np.empty(ls.shape[:-1] + (12,), np.uint8)
    pack_scales_k4_rows(ls.reshape(-1, 8), lm.reshape(-1, 8), out.reshape(-1, 12))
    return out


# -- Q3_K: sixteen 6-bit scales in 12 bytes (kquants-family.md §1.2) ------------------------------
#
#     byte k (k < 8)  : u[k] & 0xF | (u[k+8] & 0xF) << 4
#     byte 8+k (k < 4): bits 2i..2i+1 = u[k+4i] >> 4      (u = signed scale + 32, 0..63)


@jit_exact(inline="always")
def scale_q3k(q, o, j):
    """u_j (0..63) of the 12 bytes at q[o:o+12]; the signed scale is u_j - 32."""
    lo = (np.int64(q[o + j]) & 0xF) if j < 8 else (np.int64(q[o + j - 8]) >> 4)
    return lo | (((np.int64(q[o + 8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)


@jit_exact(inline="always")
def pack_scales_q3k(u, q, o):
    """Write the 12 bytes at q[o:o+12] from u[0..16] (0..63), as quantize_row_q3_K_ref does."""
    for k in range(12):
        q[o + k] = 0
    for j in range(16):
        l = np.int64(u[j])
        if j < 8:
            q[o + j] = l & 0xF
        else:
            q[o + j - 8] |= (l & 0xF) << 4
        q[o + 8 + j % 4] |= (l >> 4) << (2 * (j // 4))


@jit_exact
def _unpack_q3k_rows(q12, u):
    for i in range(q12.shape[0]):
        for j in range(16):
            u[i, j] = scale_q3k(q12[i], 0, j)


@jit_exact
def _pack_q3k_rows(u, q12):
    for i in range(q12.shape[0]):
        pack_scales_q3k(u[i], q12[i], 0)


def scales_q3k(q12: np.ndarray) -> np.ndarray:
    """(..., 12) packed bytes -> u (..., 16) uint8 (0..63), for NumPy callers."""
    q = np.ascontiguousarray(q12, dtype=np.uint8)
    flat = q.reshape(-1, 12)
    u = np.empty((flat.shape[0], 16), np.uint8)
    _unpack_q3k_rows(flat, u)
    return u.reshape(q.shape[:-1] + (16,))


def pack_q3k(u: np.ndarray) -> np.ndarray:
    """(..., 16) values 0..63 -> (..., 12) bytes, for NumPy callers."""
    u = np.ascontiguousarray(u, dtype=np.uint8)
    out = np.empty(u.shape[:-1] + (12,), np.uint8)
    _pack_q3k_rows(u.reshape(-1, 16), out.reshape(-1, 12))
    return out
