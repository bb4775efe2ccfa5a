"""The scale searches of tinyllm.quants.fit: each Numba version against its NumPy twin, bit for
bit, on random groups and on edge groups (zeros, signed zeros, constants, ties, values below
GROUP_MAX_EPS, subnormals, spikes); the lanes versions (all groups of a row side by side)
against the scalar ones. That these searches are llama.cpp's is shown by the golden files
(test_quantize_golden.py: every K-quant and imatrix path goes through them)."""
import numba
import numpy as np
import pytest

from tinyllm.quants import fit

F32 = np.float32


def edge_groups(n: int, seed: int) -> np.ndarray:
    """(N, n) float32 groups: random ones at many magnitudes, plus the special cases."""
    rng = np.random.default_rng(seed)
    special = [
        np.zeros(n),
        np.full(n, -0.0),
        np.full(n, 2.5),
        np.full(n, -1.25),
        np.round(rng.standard_normal(n) * 6) / 2,  # ties after scaling
        rng.standard_normal(n) * 1e-16,  # below GROUP_MAX_EPS
        rng.standard_normal(n) * 1e-40,  # subnormals
        np.where(np.arange(n) % 2 == 0, 1.0, -1.0),
        np.abs(rng.standard_normal(n)) + 0.5,
        -np.abs(rng.standard_normal(n)) - 0.5,
        np.eye(1, n, n // 3)[0] * 7.0,  # one spike among zeros
        np.arange(n) - n / 2.0,
    ]
    spread = rng.standard_normal((200, n)) * 10.0 ** rng.uniform(-6, 4, (200, 1))
    outliers = rng.standard_normal((40, n))
    outliers[np.arange(40), rng.integers(0, n, 40)] *= 30
    return np.concatenate([np.array(special), spread, outliers]).astype(F32)


def weights_for(x: np.ndarray, seed: int) -> np.ndarray:
    """Importance-like weights: log-normal per column, a zero column now and then."""
    rng = np.random.default_rng(seed)
    w = np.exp(rng.normal(0, 1.2, x.shape)).astype(F32)
    w[:, :: max(1, x.shape[1] // 5)] *= F32(rng.choice([0.0, 1.0]))
    return w


# ---------------------------------------------------------------------------------------------
# Numba drivers: one call per group


@numba.njit
def _q3_groups(x, nmax, do_rmse, L, scales):
    n = x.shape[1]
    for g in range(x.shape[0]):
        scales[g] = fit.make_q3_quants(n, nmax, x[g], 0, L[g], 0, do_rmse)


@numba.njit
def _qkx_groups(x, w, nmax, rmin, rdelta, nstep, use_mad, three, L, scales, mins):
    n = x.shape[1]
    laux = np.empty(n, np.int64)
    for g in range(x.shape[0]):
        if three:
            s, m = fit.make_qkx3_quants(x[g], 0, w[g], L[g], 0, laux, nmax, rmin, rdelta, nstep, n, use_mad)
        else:
            s, m = fit.make_qkx2_quants(x[g], 0, w[g], L[g], 0, laux, nmax, rmin, rdelta, nstep, n, use_mad)
        scales[g] = s
        mins[g] = m


@numba.njit
def _qp_groups(x, w, nmax, L, scales):
    n = x.shape[1]
    for g in range(x.shape[0]):
        scales[g] = fit.make_qp_quants(n, nmax, x[g], 0, L[g], 0, w[g], 0)


def same(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == np.float32:
        return a.shape == b.shape and np.array_equal(a.view(np.uint32), np.asarray(b, F32).view(np.uint32))
    return np.array_equal(a.astype(np.int64), np.asarray(b).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# make_qx_quants


@pytest.mark.parametrize("nmax", [32, 4, 8, 16])
@pytest.mark.parametrize("weighted", [False, True], ids=["x2", "qw"])
def test_qx_lanes_equal_the_twin(nmax, weighted):
    """make_qx_quants as the row quantizers run it (every group of a row side by side, weights
    x² or an importance row) against its NumPy twin, on the edge groups."""
    x = edge_groups(16, seed=nmax)
    qw = weights_for(x, 2) if weighted else None
    want_s, want_L = fit.make_qx_quants_ref(x, nmax, 1, qw)
    xt = np.ascontiguousarray(x.T)
    wt = np.ascontiguousarray(qw.T) if weighted else np.zeros((0, 0), F32)
    Lt = np.empty_like(xt)
    st = np.empty((8, x.shape[0]), F32)
    fit.qx_lanes(xt, wt, nmax, Lt, st)
    assert same(st[0], want_s)
    assert same(Lt.T.astype(np.int64), want_L.astype(np.int64))
    assert (want_L[0] == 0).all() and want_s[0] == 0  # the all-zero group: L = 0 (not nmax), scale 0


def test_make_qx_quants_rounding_and_early_return_follow_the_c():
    x = np.array([[0.5, -1.0, 0.25, 0.75]], F32)
    s0, L0 = fit.make_qx_quants_ref(x, 4, 0)  # iscale = -4/-1 = 4: l = rint(4x) clamped to -4..3
    assert s0[0] == F32(0.25) and L0.tolist() == [[6, 0, 5, 7]]
    s1, _ = fit.make_qx_quants_ref(x, 4, -2)  # weights 1: mean of the fitted and the rounding scale
    l = np.array([2, -4, 1, 3], F32)
    fitted = F32(np.sum(x[0] * l, dtype=F32) / np.sum(l * l, dtype=F32))
    assert s1[0] == F32(F32(0.5) * (fitted + F32(0.25)))


# ---------------------------------------------------------------------------------------------
# make_q3_quants


@pytest.mark.parametrize("nmax", [4, 8])
@pytest.mark.parametrize("do_rmse", [True, False])
def test_make_q3_quants_numba_equals_twin(nmax, do_rmse):
    x = edge_groups(16, seed=nmax)
    L = np.full(x.shape, -99, np.int64)
    scales = np.empty(x.shape[0], F32)
    _q3_groups(x, nmax, do_rmse, L, scales)
    want_s, want_L = fit.make_q3_quants_ref(x, nmax, do_rmse)
    assert same(scales, want_s)
    assert same(L, want_L)
    assert ((0 <= L) & (L < 2 * nmax)).all()


def test_make_q3_quants_passes_lower_the_weighted_error():
    """The passes only move a level when that raises (Σwxl)²/Σwl², i.e. lowers the weighted
    least-squares error; so the result is never worse than plain rounding."""
    x = edge_groups(16, seed=9)[12:]
    s, L = fit.make_q3_quants_ref(x, 4, True)
    _, L0 = fit.make_q3_quants_ref(x, 4, False)
    w = (x * x).astype(np.float64)

    def err(Lk):
        lv = Lk.astype(np.float64) - 4
        sc = (w * x * lv).sum(1) / np.maximum((w * lv * lv).sum(1), 1e-300)
        return (w * (x - sc[:, None] * lv) ** 2).sum(1)
    assert (err(L) <= err(L0) * (1 + 1e-5) + 1e-30).all()


# ---------------------------------------------------------------------------------------------
# make_qkx2_quants / make_qkx3_quants


@pytest.mark.parametrize("n, nmax, rmin, rdelta, nstep, use_mad", [
    (16, 3, -0.5, 0.1, 15, True),  # Q2_K
    (16, 3, -0.9, 0.05, 36, False),  # Q2_K with an imatrix
    (32, 15, -1.0, 0.1, 20, False),  # Q4_K
    (32, 31, -0.9, 0.05, 36, False),  # Q5_K / Q5_1 with an imatrix
])
@pytest.mark.parametrize("three", [False, True], ids=["qkx2", "qkx3"])
def test_make_qkx_quants_numba_equals_twin(n, nmax, rmin, rdelta, nstep, use_mad, three):
    x = edge_groups(n, seed=nmax + nstep)
    w = weights_for(x, 3)
    L = np.empty(x.shape, np.int64)
    scales = np.empty(x.shape[0], F32)
    mins = np.empty(x.shape[0], F32)
    _qkx_groups(x, w, nmax, F32(rmin), F32(rdelta), nstep, use_mad, three, L, scales, mins)
    ref = fit.make_qkx3_quants_ref if three else fit.make_qkx2_quants_ref
    want_s, want_m, want_L = ref(x, w, nmax, rmin, rdelta, nstep, use_mad)
    assert same(scales, want_s) and same(mins, want_m) and same(L, want_L)
    # lanes: every group of the row side by side, guard 0 = none redone, LIMIT = the real guard
    xt, wt = np.ascontiguousarray(x.T), np.ascontiguousarray(w.T)
    Lt, laux = np.empty_like(xt), np.empty_like(xt)
    st = np.empty((20, x.shape[0]), F32)
    fit.qkx2_lanes(xt, wt, nmax, F32(rmin), F32(rdelta), nstep, use_mad, Lt, laux, st, fit.LIMIT)
    ok = st[2] == 0  # lanes the guard did not flag
    assert ok[12:].all()  # ordinary groups are never flagged
    assert same(st[0][ok], want_s[ok]) and same(st[1][ok], want_m[ok]) and same(Lt.T[ok].astype(np.int64), want_L[ok])


def test_make_qkx3_quants_default_weights_are_x_squared():
    x = edge_groups(32, seed=4)
    L = np.empty(x.shape, np.int64)
    scales, mins = np.empty(x.shape[0], F32), np.empty(x.shape[0], F32)
    _qkx_groups(x, np.zeros((x.shape[0], 0), F32), 15, F32(-0.9), F32(0.05), 36, False, True, L, scales, mins)
    want = fit.make_qkx3_quants_ref(x, None, 15, -0.9, 0.05, 36)
    assert same(scales, want[0]) and same(mins, want[1]) and same(L, want[2])
    want2 = fit.make_qkx2_quants_ref(x, x * x, 15, -0.9, 0.05, 36)
    assert same(want[0], want2[0]) and same(want[2], want2[2])


# ---------------------------------------------------------------------------------------------
# make_qp_quants


@pytest.mark.parametrize("n, nmax", [(8, 63), (16, 15), (32, 3)])
def test_make_qp_quants_numba_equals_both_twins(n, nmax):
    rng = np.random.default_rng(n)
    x = np.abs(edge_groups(n, seed=n))  # sub-block scales and mins are >= 0
    x[-5:] = np.abs(rng.standard_normal((5, n))).astype(F32) * F32(0.01)
    w = weights_for(x, 5)
    L = np.empty(x.shape, np.uint8)  # ggml's uint8_t L
    scales = np.empty(x.shape[0], F32)
    _qp_groups(x, w, nmax, L, scales)
    want_s, want_L = fit.make_qp_quants_rows_ref(nmax, x, w)
    assert same(scales, want_s) and same(L, want_L)
    for g in range(0, x.shape[0], 7):  # the element-by-element twin on a sample
        s1, L1 = fit.make_qp_quants_ref(nmax, x[g], w[g])
        assert same(np.array([s1], F32), scales[g : g + 1]) and same(L1, L[g])
    assert (L <= nmax).all()


def test_make_qp_quants_negative_levels_wrap_as_uint8_t():
    """A negative input (never produced by the K-quant fits, but allowed) gives a negative level,
    which ggml stores in uint8_t: both versions keep that wrap."""
    x = np.array([[-0.3, 1.0, 0.5, -2.0, 0.2, 0.9, 0.0, 0.6]], F32)
    w = np.ones_like(x)
    L = np.empty(x.shape, np.uint8)
    scales = np.empty(1, F32)
    _qp_groups(x, w, 15, L, scales)
    want_s, want_L = fit.make_qp_quants_rows_ref(15, x, w)
    assert same(scales, want_s) and same(L, want_L)
    assert L[0, 3] > 15  # -2 * 15 rounds to -30: stored as 226
