"""What the IQ grid types (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) share
between their NumPy twins and their portable Numba kernels, all against Q8_K activations
(ggml's vec_dot_type for every one of them).

Every grid type decodes to the same four things per 256-weight super-block, which each type
module reads from its own bytes (`fields`):

    d    the fp16 super-block scale
    gi   grid index of each grid entry (8 elements for IQ2_* / IQ1_*, 4 for IQ3_*), in order
    sg   one sign byte per 8 elements: bit j set -> element j is negative (no signs for IQ1_*)
    ls   the odd multiplier 2s+1 of each scale unit (32 or 16 elements)

and the dot product of one super-block with Q8_K quants q is d * dy * K * Σ_u ls_u Σ_e v_e q_e
with integer v = ±grid (K = 1/8 for IQ2_*, 1/4 for IQ3_XXS, 1 for IQ3_S). IQ1_S / IQ1_M add
±1/8 to every grid value: there v = 8*grid ± 1 and K = 1/8, which the kernels get from a
"virtual" grid of 4096 entries (`iq1_virtual_grid`): index | delta bit << 11 -> 8*grid ± 1,
so the delta costs no separate pass (llama.cpp sums it apart through the Q8_K bsums; the
integer sums are the same).

Tiles (tiles.py): gi (ntile, n_entries, R) uint8 or uint16, sg (ntile, n_in/8, R) uint8,
sc (ntile, n_units, R) uint8 = ls, d (ntile, nb, R) fp16 bits. The kernels here are portable
loops that gather grid rows per output row; no AVX2 versions yet, so each type's TypeSpec
uses the same kernel for both kernel sets.
"""
import numpy as np

from ..jit import jit_fast
from .blocks import F32
from .tiles import store

# -- reference (NumPy) ------------------------------------------------------------------------


def sign_bits(sg: np.ndarray) -> np.ndarray:
    """sign bytes (..., m) -> (..., 8m) 0/1, bit j of byte k -> element 8k+j."""
    return ((sg[..., None] >> np.arange(8, dtype=np.uint8)) & 1).reshape(*sg.shape[:-1], -1)


def signed_values(grid: np.ndarray, gi: np.ndarray, sg: np.ndarray) -> np.ndarray:
    """±grid values int32 (..., 256) of grid entries gi (..., G) with sign bytes sg (..., 32)."""
    v = grid[gi].astype(np.int32).reshape(*gi.shape[:-1], -1)
    return np.where(sign_bits(sg) != 0, -v, v)


def iq1_virtual_grid(grid: np.ndarray) -> np.ndarray:
    """int8 (4096, 8): entry i | neg << 11 = 8 * grid[i] + (neg ? -1 : +1)."""
    g8 = 8 * grid.astype(np.int16)
    return np.concatenate([g8 + 1, g8 - 1]).astype(np.int8)


def grid_dot_ref(d, vals, ls, k, qs, yd):
    """The twin of the kernels: d f32 (n_out, nb), vals int (n_out, nb, 256), ls int
    (n_out, nb, U), K; Q8_K quants qs (T, n_in), scales yd (T, nb) -> float32 (T, n_out):
    K * Σ_b f32(d*dy) * Σ_u ls_u Σ v*q, the integer sums exact, float64 accumulation."""
    n_out, nb, U = ls.shape
    T = qs.shape[0]
    yq = qs.reshape(T, nb, U, 256 // U).astype(np.int64)
    sub = np.einsum("rbue,tbue->trbu", vals.reshape(n_out, nb, U, 256 // U).astype(np.int64), yq)
    isum = (sub * ls[None].astype(np.int64)).sum(axis=3)
    scale = (d[None] * yd[:, None, :]).astype(F32).astype(np.float64)
    return ((scale * isum).sum(axis=2) * k).astype(F32)


def tile_arrays(gi, sg, ls, d_bits, wide: bool) -> dict:
    """Natural-order kernel arrays (rows, X) for repack: gi (rows, nb, G), sg (rows, nb, 32)
    or None, ls (rows, nb, U), d_bits uint16 (rows, nb)."""
    rows = gi.shape[0]
    out = {"gi": gi.astype(np.uint16 if wide else np.uint8).reshape(rows, -1)}
    if sg is not None:
        out["sg"] = sg.astype(np.uint8).reshape(rows, -1)
    out["sc"] = ls.astype(np.uint8).reshape(rows, -1)
    out["d"] = d_bits.astype(np.uint16).reshape(rows, -1)
    return out


# -- portable kernels (one tile of R rows, one token) -------------------------------------------


@jit_fast
def tile_signed(out, t, tl, gi, sg, sc, dt, grid, k, yq, yd, isub, isum, facc):
    """out[t, tile tl] = K * Σ_b d*dy * Σ_u ls_u Σ_e ±grid * q for a signed grid type; grid
    entries are W = 8 or 4 elements wide, one sign byte per 8 elements."""
    R = facc.shape[0]
    nb = dt.shape[0]
    U = sc.shape[1] // nb
    E = 256 // U
    W = grid.shape[1]
    H = 8 // W
    facc[:] = 0
    for b in range(nb):
        isum[:] = 0
        for u in range(U):
            isub[:] = 0
            e0 = 256 * b + E * u
            for e8 in range(e0, e0 + E, 8):
                g = e8 // 8
                for r in range(R):
                    s = np.int32(sg[tl, g, r])
                    acc = np.int32(0)
                    for h in range(H):
                        row = grid[np.int64(gi[tl, H * g + h, r])]
                        for j in range(W):
                            v = np.int32(row[j])
                            m = -((s >> (W * h + j)) & 1)
                            acc += ((v ^ m) - m) * np.int32(yq[t, e8 + W * h + j])
                    isub[r] += acc
            for r in range(R):
                isum[r] += np.int32(sc[tl, U * b + u, r]) * isub[r]
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += (db[r] * dy) * F32(isum[r])
    for r in range(R):
        facc[r] *= k
    store(out, t, tl * R, facc)


@jit_fast
def tile_plain(out, t, tl, gi, sc, dt, grid, k, yq, yd, isub, isum, facc):
    """As tile_signed for the IQ1 types: signed 8-wide grid rows (the virtual grid), no signs."""
    R = facc.shape[0]
    nb = dt.shape[0]
    U = sc.shape[1] // nb
    E = 256 // U
    facc[:] = 0
    for b in range(nb):
        isum[:] = 0
        for u in range(U):
            isub[:] = 0
            e0 = 256 * b + E * u
            for e8 in range(e0, e0 + E, 8):
                g = e8 // 8
                for r in range(R):
                    row = grid[np.int64(gi[tl, g, r])]
                    acc = np.int32(0)
                    for j in range(8):
                        acc += np.int32(row[j]) * np.int32(yq[t, e8 + j])
                    isub[r] += acc
            for r in range(R):
                isum[r] += np.int32(sc[tl, U * b + u, r]) * isub[r]
        dy = yd[t, b]
        db = dt[b]
        for r in range(R):
            facc[r] += (db[r] * dy) * F32(isum[r])
    for r in range(R):
        facc[r] *= k
    store(out, t, tl * R, facc)
