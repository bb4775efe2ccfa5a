"""The lattice tables of the IQ types (kquants-family.md §2.0), read from the `gguf` package,
whose tables were checked equal to ggml-common.h's. Each is built once, on first use.

    grid(type)  uint8 (n, 8) or (n, 4): grid entry j's element magnitudes (IQ2_*, IQ3_*), or
                int8 (2048, 8) for IQ1_S / IQ1_M (values -1, 0, +1)
    KSIGNS      uint8 (128,): ksigns_iq2xs, 7-bit sign index -> 8 sign bits with even parity
    KVALUES     int8 (16,): kvalues_iq4nl, the non-linear 4-bit grid of IQ4_NL / IQ4_XS
    IQ1_DELTA   0.125, the offset IQ1_S / IQ1_M add to every grid value
    search_tables(type)  the quantizers' grid search tables (kquants-family.md §3.5)
"""
import functools

import numpy as np
from gguf import quants as gq

from .types import GGMLType

KSIGNS = np.frombuffer(bytes(gq.IQ2_XXS.ksigns), dtype=np.uint8).copy().reshape(128)
KVALUES = np.array(tuple(gq.IQ4_NL.kvalues), dtype=np.int8).reshape(16)
IQ1_DELTA = np.float32(0.125)

_CLASSES = {
    GGMLType.IQ2_XXS: gq.IQ2_XXS,
    GGMLType.IQ2_XS: gq.IQ2_XS,
    GGMLType.IQ2_S: gq.IQ2_S,
    GGMLType.IQ3_XXS: gq.IQ3_XXS,
    GGMLType.IQ3_S: gq.IQ3_S,
    GGMLType.IQ1_S: gq.IQ1_S,
    GGMLType.IQ1_M: gq.IQ1_S,  # IQ1_M shares IQ1_S's grid
}


@functools.cache
def grid(type: GGMLType) -> np.ndarray:
    cls = _CLASSES[GGMLType(type)]
    cls.init_grid()
    g = np.asarray(cls.grid, dtype=np.float32).reshape(cls.grid_shape)
    signed = type in (GGMLType.IQ1_S, GGMLType.IQ1_M)
    out = g.astype(np.int8 if signed else np.uint8)
    assert np.array_equal(out.astype(np.float32), g), type
    out.setflags(write=False)
    return out


# per grid type: bits per coordinate, and how many distinct distances a neighbour list keeps
_SEARCH = {
    GGMLType.IQ2_XXS: (2, 2),
    GGMLType.IQ2_XS: (2, 2),
    GGMLType.IQ2_S: (2, 1),
    GGMLType.IQ3_XXS: (3, 2),
    GGMLType.IQ3_S: (3, 3),
    GGMLType.IQ1_S: (2, 3),
    GGMLType.IQ1_M: (2, 3),
}


@functools.cache
def search_tables(type: GGMLType):
    """iq2xs_init_impl / iq3xs_init_impl (kquants-family.md §3.5), derived from the public grid:

        pos   int8 (n, W): position 2l+1 of each coordinate of grid point j (l = level index)
        kmap  int32 (4^W or 8^W,): code u = Σ l_i << (bits*i) -> its grid point, or -1
        nbr   int32 (len(kmap), maxn): for an off-grid code, its neighbour list (grid points
              at the `nwant` smallest distinct squared distances, sorted by distance then
              index), padded with the list's last entry; -1 rows for on-grid codes
        nbr_n int32 (len(kmap),): the length of each list (0 on grid)

    Padding with the last entry keeps a "first strictly smallest" search over the padded row
    equal to the C's search over the list."""
    type = GGMLType(type)
    bits, nwant = _SEARCH[type]
    g = grid(type).astype(np.int32)
    values = np.unique(g)  # the grid's level values, in level order
    levels = np.searchsorted(values, g)  # (n, W)
    n, W = levels.shape
    pos = (2 * levels + 1).astype(np.int8)
    kmap = np.full(1 << (bits * W), -1, np.int32)
    kmap[(levels << (bits * np.arange(W))).sum(axis=1)] = np.arange(n, dtype=np.int32)
    off = np.flatnonzero(kmap < 0)
    upos = 2 * ((off[:, None] >> (bits * np.arange(W))) & ((1 << bits) - 1)) + 1  # (m, W)
    lists = []
    for c in range(0, off.size, 2048):  # (chunk, n) distances stay a few MiB
        d2 = ((pos[None].astype(np.int32) - upos[c : c + 2048, None]) ** 2).sum(axis=2)
        order = np.argsort(d2, axis=1, kind="stable")  # ties: lower grid index first
        ds = np.take_along_axis(d2, order, axis=1)
        rank = np.concatenate([np.zeros((ds.shape[0], 1), np.int64), np.cumsum(ds[:, 1:] > ds[:, :-1], axis=1)], axis=1)
        lists.append((order, (rank < nwant).sum(axis=1)))
    maxn = max(int(k.max()) for _, k in lists)
    nbr = np.full((kmap.size, maxn), -1, np.int32)
    nbr_n = np.zeros(kmap.size, np.int32)
    row = 0
    for order, k in lists:
        idx = off[row : row + k.size]
        take = np.minimum(np.arange(maxn)[None, :], k[:, None] - 1)
        nbr[idx] = np.take_along_axis(order, take, axis=1)
        nbr_n[idx] = k
        row += k.size
    for a in (pos, kmap, nbr, nbr_n):
        a.setflags(write=False)
    return pos, kmap, nbr, nbr_n
