"""The 12-byte packing of eight 6-bit scales and eight 6-bit mins used by Q4_K and Q5_K
(kquants.md §1.8), written once: every reader and writer of those bytes calls these.

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
