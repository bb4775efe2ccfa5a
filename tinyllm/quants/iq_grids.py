"""The lattice tables of the IQ types (kquants-family.md §2.0), read from the `gguf` package,
whose tables were checked equal to ggml-common.h's. Each is built once, on first use.

    grid(type)  uint8 (n, 8) or (n, 4): grid entry j's element magnitudes (IQ2_*, IQ3_*), or
                int8 (2048, 8) for IQ1_S / IQ1_M (values -1, 0, +1)
    KSIGNS      uint8 (128,): ksigns_iq2xs, 7-bit sign index -> 8 sign bits with even parity
    KVALUES     int8 (16,): kvalues_iq4nl, the non-linear 4-bit grid of IQ4_NL / IQ4_XS
    IQ1_DELTA   0.125, the offset IQ1_S / IQ1_M add to every grid value
    IQ1_XP, IQ1_XM  float32 (3,): IQ1's levels -1, 0, +1 shifted by +1/8 and by -1/8
    search_tables(type)  the quantizers' grid search tables (kquants-family.md §3.5)
"""
import functools

import numpy as np
from gguf import quants as gq

from ..jit import jit_exact
from .types import GGMLType

KSIGNS = np.frombuffer(bytes(gq.IQ2_XXS.ksigns), dtype=np.uint8).copy().reshape(128)
KVALUES = np.array(tuple(gq.IQ4_NL.kvalues), dtype=np.int8).reshape(16)
IQ1_DELTA = np.float32(0.125)
IQ1_XP = np.array([-1 + IQ1_DELTA, IQ1_DELTA, 1 + IQ1_DELTA], np.float32)
IQ1_XM = np.array([-1 - IQ1_DELTA, -IQ1_DELTA, 1 - IQ1_DELTA], np.float32)
_F0, _FLT_MAX = np.float32(0), np.float32(3.4028234663852886e38)

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

        pos    int8 (n, W): position 2l+1 of each coordinate of grid point j (l = level index)
        kmap   int32 (4^W or 8^W,): code u = Σ l_i << (bits*i) -> its grid point, or -1
        start  int32 (len(kmap),): where code u's neighbour list begins in `flat`
        count  int32 (len(kmap),): its length (0 on the grid, and for codes holding a level
               the grid lacks: IQ2's 2-bit codes never hold level 3, so the C's lists for
               them are never read and are left out here)
        flat   int32: the lists, each the grid points at the `nwant` smallest distinct
               squared distances from the code's positions, sorted by distance then index

    Built once per type on first use (about a second for the IQ2 / IQ1 grids)."""
    type = GGMLType(type)
    bits, nwant = _SEARCH[type]
    g = grid(type).astype(np.int32)
    values = np.unique(g)  # the grid's level values, in level order
    levels = np.searchsorted(values, g)  # (n, W)
    n, W = levels.shape
    pos = (2 * levels + 1).astype(np.int8)
    kmap = np.full(1 << (bits * W), -1, np.int32)
    kmap[(levels << (bits * np.arange(W))).sum(axis=1)] = np.arange(n, dtype=np.int32)
    code_levels = (np.arange(kmap.size)[:, None] >> (bits * np.arange(W))) & ((1 << bits) - 1)
    off = np.flatnonzero((kmap < 0) & (code_levels < values.size).all(axis=1))
    upos = 2 * code_levels[off] + 1  # (m, W)
    count = np.zeros(kmap.size, np.int32)
    lists = []
    for c in range(0, off.size, 1024):  # (chunk, n) distances stay a few MiB
        d2 = ((pos[None].astype(np.int32) - upos[c : c + 1024, None]) ** 2).sum(axis=2)
        order = np.argsort(d2, axis=1, kind="stable")  # ties: lower grid index first
        ds = np.take_along_axis(d2, order, axis=1)
        rank = np.concatenate([np.zeros((ds.shape[0], 1), np.int64), np.cumsum(ds[:, 1:] > ds[:, :-1], axis=1)], axis=1)
        keep = rank < nwant  # a prefix of each sorted row
        count[off[c : c + 1024]] = keep.sum(axis=1)
        lists.append(order[keep])  # row-major: each code's list in order
    start = np.zeros(kmap.size, np.int32)
    start[off] = np.concatenate([[0], np.cumsum(count[off])[:-1]])
    flat = np.concatenate(lists).astype(np.int32)
    for a in (pos, kmap, start, count, flat):
        a.setflags(write=False)
    return pos, kmap, start, count, flat


def best_neighbours(tables, u, xval, waux, scale):
    """iq2/iq3_find_best_neighbour for M groups at once: codes u (M,), xval / waux (M, W),
    scale (M,) -> the grid point (M,) of least Σ waux*(scale*pos - xval)² (sequential float32;
    the first strictly smallest wins, as in the C loop)."""
    pos, _, start, count, flat = tables
    F32 = np.float32
    st, cnt = start[u], count[u]
    best = np.full(u.shape, np.finfo(F32).max, F32)
    point = np.full(u.shape, -1, np.int64)
    for c in range(int(cnt.max()) if u.size else 0):
        live = c < cnt
        j = flat[st + np.minimum(c, cnt - 1)]
        p = pos[j].astype(F32)
        d2 = np.zeros(u.shape, F32)
        for i in range(pos.shape[1]):
            diff = (scale * p[:, i]).astype(F32) - xval[:, i]
            d2 = d2 + (waux[:, i] * diff).astype(F32) * diff
        better = live & (d2 < best)
        best = np.where(better, d2, best)
        point = np.where(better, j, point)
    return point


@jit_exact
def find_neighbour(pos, start, count, flat, u, xval, waux, o, scale, L):
    """iq2/iq3_find_best_neighbour for the group of W = pos.shape[1] values at o: writes its
    levels into L[o:o+W], returns the chosen grid point."""
    best = _FLT_MAX
    gbest = -1
    W = pos.shape[1]
    for c in range(start[u], start[u] + count[u]):
        j = flat[c]
        d2 = _F0
        for i in range(W):
            diff = np.float32(np.float32(scale * np.float32(pos[j, i])) - xval[o + i])
            d2 = np.float32(d2 + np.float32(np.float32(waux[o + i] * diff) * diff))
        if d2 < best:
            best = d2
            gbest = j
    for i in range(W):
        L[o + i] = (np.int64(pos[gbest, i]) - 1) // 2
    return gbest


# -- IQ1_S / IQ1_M: levels on the shifted values xx -------------------------------------------


def iq1_best_neighbours(tables, u, xb, w, scale, xx):
    """iq1_find_best_neighbour2 for M groups: codes u (M,), x / weights (M, 8), scale (M,),
    level values xx (M, 3) -> grid point (M,) of least Σ w*(scale*xx[l] - x)² (first wins)."""
    pos, _, start, count, flat = tables
    F32 = np.float32
    st, cnt = start[u], count[u]
    best = np.full(u.shape, _FLT_MAX, F32)
    point = np.full(u.shape, -1, np.int64)
    rows = np.arange(u.size)
    for c in range(int(cnt.max()) if u.size else 0):
        j = flat[st + np.minimum(c, cnt - 1)]
        lv = (pos[j].astype(np.int64) - 1) // 2  # (M, 8)
        d2 = np.zeros(u.shape, F32)
        for i in range(8):
            diff = (scale * xx[rows, lv[:, i]]).astype(F32) - xb[:, i]
            d2 = d2 + (w[:, i] * diff).astype(F32) * diff
        better = (c < cnt) & (d2 < best)
        best = np.where(better, d2, best)
        point = np.where(better, j, point)
    return point


@jit_exact
def iq1_find_neighbour(pos, start, count, flat, u, xr, xo, w, o, scale, xx):
    """iq1_find_best_neighbour2 for the 8 values xr[xo:xo+8] (weights w[o:o+8]) on levels xx:
    the grid point of least Σ w*(scale*xx[l] - x)², the first of equals."""
    best = _FLT_MAX
    gbest = -1
    for c in range(start[u], start[u] + count[u]):
        j = flat[c]
        d2 = _F0
        for i in range(8):
            q = xx[(np.int64(pos[j, i]) - 1) // 2]
            diff = np.float32(np.float32(scale * q) - xr[xo + i])
            d2 = np.float32(d2 + np.float32(np.float32(w[o + i] * diff) * diff))
        if d2 < best:
            best = d2
            gbest = j
    return gbest
