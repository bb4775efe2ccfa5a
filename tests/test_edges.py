"""Inputs at the edges, built so that a broken kernel cannot pass (issue #15; the mutation check
in tests/mutation/ measures it):

- fp16 scales and weights that are Inf, NaN, subnormal, ±max and zero reach the dot kernels and
  the row dequantizers: they must do what the NumPy twin (and float64) does: non-finite values
  propagate in the same places, finite ones agree within the summation bound;
- every trial of the scale searches wins for some group (make_qx_quants' 19 trials -9..+9 of
  Q6_K/Q3_K/Q4_0; make_qkx2_quants' nstep+1 trials of Q4_K/Q2_K), found by searching seeded
  random groups, so dropping, shifting or mis-comparing one trial changes bytes;
- rms_norm and attention's softmax at 1e-20 and 1e18..1e20 magnitudes against float64 NumPy
  (ggml's float32 mean overflows past ~1.8e19: tinyllm keeps ggml's result there);
- all-zero, constant, tied and ±max blocks through quantizers and kernels.
"""
import numpy as np
import pytest

from tinyllm.quants import act, fit
from tinyllm.quants.kernel_bench import random_blocks
from tinyllm.quants.matmul import AVAILABLE_KERNEL_SETS, QMatrix, get_rows, kernel_set, matmul, set_kernel_set
from tinyllm.quants.registry import MATMUL_TYPES, TYPES, dequantize, quantize, quantize_ref
from tinyllm.quants.types import FLOAT_TYPES, GGMLType

F32 = np.float32
QUANTIZED = [t for t in MATMUL_TYPES if t not in FLOAT_TYPES]
# fp16 bit patterns: +Inf, -Inf, NaN, smallest subnormal, largest subnormal, -max, +max, +0, -0
SPECIAL_F16 = np.array([0x7C00, 0xFC00, 0x7E00, 0x0001, 0x03FF, 0xFBFF, 0x7BFF, 0x0000, 0x8000], np.uint16)


def fp16_fields(wtype):
    block = TYPES[wtype].block
    return [n for n in block.names if block.fields[n][0] == np.dtype("<f2")]


def with_special_scales(wtype, n_out, n_in, seed):
    """Random blocks whose fp16 fields take SPECIAL_F16 values: row r, block b, field f gets
    pattern (r + b + f) % 9 in the first rows; later rows keep random finite scales."""
    raw = random_blocks(wtype, n_out, n_in, seed).copy()
    s = TYPES[wtype]
    b = raw.reshape(-1).view(s.block).reshape(n_out, -1)
    for fi, name in enumerate(fp16_fields(wtype)):
        col = b[name].view(np.uint16)
        for r in range(min(n_out, 18)):
            for k in range(col.shape[1]):
                if (r + k) % 2 == 0 or r < 9:
                    col[r, k] = SPECIAL_F16[(r + k + fi) % 9]
    raw[20] = 0  # an all-zero row of blocks
    return raw


def same_nonfinite(a, b):
    return np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(np.isposinf(a), np.isposinf(b)) and np.array_equal(
        np.isneginf(a), np.isneginf(b)
    )


def kernels_agree_with_twin(wtype, raw, n_in, x):
    s = TYPES[wtype]
    with np.errstate(all="ignore"):
        twin = s.dot_ref(raw, *act.quantize_act_ref(s.act, x)).astype(np.float64)
        W = dequantize(raw, wtype, (raw.shape[0], n_in)).astype(np.float64)
        mag = np.abs(x.astype(np.float64)) @ np.nan_to_num(np.abs(W), posinf=0, nan=0).T
    w = QMatrix(wtype, raw, n_in, name="edge")
    old = kernel_set()
    try:
        for ks in AVAILABLE_KERNEL_SETS:
            set_kernel_set(ks)
            with np.errstate(all="ignore"):
                got = matmul(w, x).astype(np.float64)
            assert same_nonfinite(got, twin), f"{wtype.name} {ks}: Inf/NaN not where the twin has them"
            fin = np.isfinite(twin)
            tol = 1e-5 * mag[fin] + 1e-4 * np.abs(twin[fin]) + 1e-30
            assert (np.abs(got[fin] - twin[fin]) <= tol).all(), f"{wtype.name} {ks}: finite outputs off the twin"
    finally:
        set_kernel_set(old)


@pytest.mark.parametrize("wtype", QUANTIZED, ids=lambda t: t.name)
def test_kernels_with_nonfinite_and_subnormal_fp16_scales_match_the_twin(wtype):
    n_in = 512 if TYPES[wtype].block_size == 256 else 160
    raw = with_special_scales(wtype, 37, n_in, seed=5)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, n_in)).astype(F32)
    x[1, : n_in // 2] = 0  # zero activations times an Inf scale: NaN, in both
    kernels_agree_with_twin(wtype, raw, n_in, x)
    x1 = x[:1].copy()  # decode (T = 1) takes its own path
    kernels_agree_with_twin(wtype, raw, n_in, x1)


@pytest.mark.parametrize("wtype", QUANTIZED, ids=lambda t: t.name)
def test_get_rows_with_nonfinite_and_subnormal_scales_is_the_reference_dequantize(wtype):
    n_in = 512 if TYPES[wtype].block_size == 256 else 160
    raw = with_special_scales(wtype, 24, n_in, seed=6)
    w = QMatrix(wtype, raw, n_in, name="edge")
    ids = np.arange(24)
    with np.errstate(all="ignore"):
        got = get_rows(w, ids)
        want = dequantize(raw, wtype, (24, n_in))
    assert same_nonfinite(got, want)
    fin = np.isfinite(want)
    assert np.array_equal(got[fin].view(np.uint32), want[fin].view(np.uint32))


@pytest.mark.parametrize("wtype", [GGMLType.F16, GGMLType.BF16], ids=lambda t: t.name)
def test_float_kernels_with_nonfinite_and_subnormal_weights(wtype):
    rng = np.random.default_rng(8)
    n_out, n_in = 33, 64
    bits = rng.integers(0, 1 << 16, (n_out, n_in)).astype(np.uint16)
    if wtype == GGMLType.F16:
        bits &= 0xBFFF  # keep random weights small (|w| < 2)
        bits[:9, 5] = SPECIAL_F16
    else:
        bits = (rng.standard_normal((n_out, n_in)).astype(F32).view(np.uint32) >> 16).astype(np.uint16)
        bits[:9, 5] = [0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x007F, 0xFF7F, 0x7F7F, 0, 0x8000]
    raw = bits.view(np.uint8).reshape(n_out, -1)
    x = rng.standard_normal((2, n_in)).astype(F32)
    x[1, 5] = 0
    kernels_agree_with_twin(wtype, raw, n_in, x)


# -- scale searches: every trial wins somewhere ----------------------------------------------------


def qx_last_accepted_step(x, nmax):
    """For groups x (N, n), rmse_type 1 and no imatrix, the last trial step of make_qx_quants'
    search that was accepted (0: the first fit stood), in the twin's float32 arithmetic; the
    scale it yields is checked against make_qx_quants_ref by the test."""
    x = np.asarray(x, F32)
    amax = np.abs(x).max(axis=1)
    mx = x[np.arange(x.shape[0]), np.abs(x).argmax(axis=1)]
    w = x * x

    def trial(iscale):
        lf = np.clip(np.rint(iscale[:, None] * x), -nmax, nmax - 1).astype(F32)
        return fit.seq_sum((w * x) * lf), fit.seq_sum((w * lf) * lf)

    sumlx, suml2 = trial(F32(-nmax) / mx)
    scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(F32)
    best = (scale * sumlx).astype(F32)
    last = np.zeros(x.shape[0], int)
    for step in range(-9, 10):
        if step == 0:
            continue
        sumlx, suml2 = trial(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
        ok = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        scale = np.where(ok, sumlx / suml2, scale).astype(F32)
        best = np.where(ok, scale * sumlx, best).astype(F32)
        last = np.where(ok, step, last)
    return last, np.where(amax < 1e-15, F32(0), scale)


def qx_winners(nmax, n, seed):
    """One group (n values) per trial step -9..9 whose search ends on that step."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((20000, n)) * rng.uniform(0.5, 2, (20000, 1))).astype(F32)
    last, scale = qx_last_accepted_step(x, nmax)
    ref_scale, _ = fit.make_qx_quants_ref(x, nmax, 1)
    assert np.array_equal(scale, ref_scale)  # the helper is the twin's search
    rows = []
    for step in range(-9, 10):
        hit = np.flatnonzero(last == step)
        assert hit.size, f"no group of seed {seed} ends on trial {step} (nmax {nmax})"
        rows.append(x[hit[0]])
    return np.array(rows)


@pytest.mark.parametrize("nmax,n", [(32, 16), (4, 16), (8, 32), (16, 32)])
def test_make_qx_quants_every_trial_wins_and_numba_agrees(nmax, n):
    x = qx_winners(nmax, n, seed=nmax)
    want_s, want_L = fit.make_qx_quants_ref(x, nmax, 1)
    # the lanes version (all groups side by side, as the row quantizers run it)
    xt = np.ascontiguousarray(x.T)
    Lt = np.zeros_like(xt)
    st = np.zeros((8, x.shape[0]), F32)
    fit.qx_lanes(xt, np.empty((0, 0), F32), nmax, Lt, st)
    assert np.array_equal(st[0], want_s) and np.array_equal(Lt.T.astype(np.uint8), want_L)


def test_q6_k_rows_made_of_every_winning_group_match_the_twin():
    g = qx_winners(32, 16, seed=32)  # 19 groups, one per trial
    row = np.resize(g.reshape(-1), 3 * 512).reshape(3, 512)
    row[1] *= F32(1e-3)
    want = quantize_ref(row, GGMLType.Q6_K)
    assert np.array_equal(quantize(row, GGMLType.Q6_K, threads=1), want)


def qkx2_winners(nmax, rmin, rdelta, nstep, use_mad, n, seed):
    """One group per trial k of make_qkx2_quants that changes the result (accepted): the
    twin with nstep = k differs from the twin with nstep = k - 1."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((6000, n)) + rng.uniform(-1, 1, (6000, 1))).astype(F32)
    w = np.abs(x) if use_mad else (x * x).astype(F32)
    prev = fit.make_qkx2_quants_ref(x, w, nmax, rmin, rdelta, -1, use_mad)
    rows = []
    for k in range(nstep + 1):
        cur = fit.make_qkx2_quants_ref(x, w, nmax, rmin, rdelta, k, use_mad)
        changed = (cur[0] != prev[0]) | (cur[1] != prev[1]) | (cur[2] != prev[2]).any(axis=1)
        # and it is the last change: later trials keep it (the final result is trial k's)
        final = fit.make_qkx2_quants_ref(x, w, nmax, rmin, rdelta, nstep, use_mad)
        last = changed & (final[0] == cur[0]) & (final[1] == cur[1])
        hit = np.flatnonzero(last if last.any() else changed)
        assert hit.size, f"no group of seed {seed} is changed by trial {k}"
        rows.append(hit[0])
        prev = cur
    return x[rows], w[rows]


@pytest.mark.parametrize(
    "nmax,rmin,rdelta,nstep,use_mad,n",
    [(15, -1.0, 0.1, 20, False, 32), (31, -0.5, 0.1, 15, False, 32), (3, -0.5, 0.1, 15, True, 16)],
    ids=["Q4_K", "Q5_K", "Q2_K"],
)
def test_make_qkx2_quants_every_trial_wins_and_numba_agrees(nmax, rmin, rdelta, nstep, use_mad, n):
    x, w = qkx2_winners(nmax, rmin, rdelta, nstep, use_mad, n, seed=nmax)
    s, m, L = fit.make_qkx2_quants_ref(x, w, nmax, rmin, rdelta, nstep, use_mad)
    Lg = np.zeros_like(L)
    laux = np.empty(n, np.int64)
    for g in range(x.shape[0]):
        gs, gm = fit.make_qkx2_quants(x[g], 0, w[g], Lg[g], 0, laux, nmax, rmin, rdelta, nstep, n, use_mad)
        assert gs == s[g] and gm == m[g], f"group {g} (trial {g})"
    assert np.array_equal(Lg, L)


@pytest.mark.parametrize("wtype", [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_0], ids=lambda t: t.name)
def test_rows_of_winning_groups_quantize_as_the_twin(wtype):
    n = 16 if wtype in (GGMLType.Q2_K, GGMLType.Q3_K) else 32
    if wtype in (GGMLType.Q3_K, GGMLType.Q4_0):
        g = qx_winners(4 if wtype == GGMLType.Q3_K else 8, n, seed=4 if wtype == GGMLType.Q3_K else 8)
    else:
        nmax = {GGMLType.Q4_K: 15, GGMLType.Q5_K: 31, GGMLType.Q2_K: 3}[wtype]
        rmin = -1.0 if wtype == GGMLType.Q4_K else -0.5
        g, _ = qkx2_winners(nmax, rmin, 0.1, 20 if wtype == GGMLType.Q4_K else 15, wtype == GGMLType.Q2_K, n, seed=nmax)
    rows = np.resize(g.reshape(-1), 4 * 512).reshape(4, 512).astype(F32)
    rows[2] *= F32(-3.0)
    imx = np.exp(np.random.default_rng(1).normal(0, 1, 512)).astype(F32)
    assert np.array_equal(quantize(rows, wtype, threads=1), quantize_ref(rows, wtype))
    if TYPES[wtype].quantize_ref is not None and wtype != GGMLType.Q8_0:
        assert np.array_equal(quantize(rows, wtype, threads=1, imatrix=imx), quantize_ref(rows, wtype, imatrix=imx))


# -- blocks of zeros, constants, ties and ±max through every quantizer and kernel ------------------


def edge_rows(n):
    r = np.zeros((8, n), F32)
    r[1] = 1.0
    r[2] = -7.25
    r[3] = (np.arange(n) % 7 - 3).astype(F32)  # ties after scaling
    r[4, ::2] = 65504.0 / 128  # large, fp16 scales near their top
    r[4, 1::2] = -65504.0 / 128
    r[5, 3] = 1.0  # one spike in a zero block
    r[6] = np.where(np.arange(n) % 32 < 16, 1e-30, -1e-3).astype(F32)
    r[7] = np.random.default_rng(2).standard_normal(n).astype(F32)
    return r


@pytest.mark.parametrize("wtype", [t for t in QUANTIZED if TYPES[t].quantize_rows is not None], ids=lambda t: t.name)
def test_edge_rows_quantize_as_the_twin_and_multiply_as_float64(wtype):
    n = 512
    x = edge_rows(n)
    # the types ggml refuses to quantize without an importance matrix get a random one
    imx = np.random.default_rng(5).uniform(0.1, 4.0, n).astype(F32) if TYPES[wtype].needs_imatrix else None
    raw = quantize(x, wtype, threads=1, imatrix=imx)
    assert np.array_equal(raw, quantize_ref(x, wtype, imatrix=imx))
    assert (dequantize(raw[:1], wtype, (1, n)) == 0).all()  # a zero row stays zero
    a = np.random.default_rng(4).standard_normal((2, n)).astype(F32)
    kernels_agree_with_twin(wtype, raw, n, a)


# -- rms_norm and softmax at extreme magnitudes ------------------------------------------------


def rms_ref(x, w, eps):
    x = x.astype(np.float64)
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * w


@pytest.mark.parametrize("mag", [1e-20, 1e-3, 1.0, 1e18])
def test_rms_norm_at_small_and_large_magnitudes_against_float64(mag):
    from tinyllm.model import ops

    rng = np.random.default_rng(12)
    x = (rng.standard_normal((3, 64)) * mag).astype(F32)
    w = rng.standard_normal(64).astype(F32)
    for eps in (1e-6, 1e-5):
        out = np.empty_like(x)
        ops.rms_norm(out, x, w, eps)
        want = rms_ref(x, w, eps)
        np.testing.assert_allclose(out, want, rtol=2e-6, atol=1e-30)
        acc = np.zeros_like(x)
        ops.add_rms_norm(acc, x, w, eps)
        np.testing.assert_allclose(acc, want, rtol=2e-6, atol=1e-30)


def ggml_rms_norm(x, w, eps):
    """ggml's RMS_NORM then MUL, step by step: float64 running sum of float32 squares, float32
    mean, scale = 1/sqrt(mean + eps) in float32, then (x * scale) * w in float32."""
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        total = np.cumsum((x[t] * x[t]).astype(np.float64))[-1]  # cumsum adds in order, as ggml's loop
        mean = F32(total / x.shape[1])
        scale = F32(1.0) / np.sqrt(mean + F32(eps))
        out[t] = (x[t] * scale) * w
    return out


@pytest.mark.parametrize("n", [576, 640, 2048])
def test_rms_norm_is_bit_exact_with_ggml(n):
    """An ulp of difference here flips roundings in the activation quantizer of the next matmul
    (on SmolLM2, 1 ulp on a quarter of a row moved one Q8_1 value and 2e-3 of a Q output)."""
    from tinyllm.model import ops

    rng = np.random.default_rng(n)
    x = (rng.standard_normal((8, n)) * rng.uniform(0.01, 30, (8, 1))).astype(F32)
    w = rng.standard_normal(n).astype(F32)
    want = ggml_rms_norm(x, w, 1e-5)
    out = np.empty_like(x)
    ops.rms_norm(out, x, w, 1e-5)
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
    acc = np.zeros_like(x)
    ops.add_rms_norm(acc, x, w, 1e-5)
    assert np.array_equal(acc.view(np.uint32), want.view(np.uint32))


def test_fma32_rounds_once_to_nearest_even():
    """The compiled llvm.fma (hardware FMA or libm's fmaf) against rationals rounded once, on
    random triples, on sums exactly halfway between two float32s (ties to even; a float64
    intermediate would round twice) and on exact zeros of both signs."""
    import numba

    from tinyllm.quants.rounding import fma32, fma32_exact

    @numba.njit
    def run(a, b, c, out):
        for i in range(a.shape[0]):
            out[i] = fma32(a[i], b[i], c[i])

    rng = np.random.default_rng(21)
    a, b, c = (rng.standard_normal((3, 3000)) * 10.0 ** rng.integers(-8, 8, (3, 3000))).astype(F32)
    one, half_ulp = F32(1.0), F32(2.0**-24)
    tie = [(half_ulp, one, one), (F32(3) * half_ulp, one, one), (-half_ulp, one, -one), (F32(2.0**-25), F32(1 + 2.0**-23), one)]
    zeros = [(F32(0.0), F32(1.0), F32(-0.0)), (F32(-0.0), F32(1.0), F32(-0.0)), (F32(2.0), F32(3.0), F32(-6.0))]
    extra = np.array(tie + zeros, F32).T
    a, b, c = (np.concatenate([u, v]) for u, v in zip((a, b, c), extra))
    got = np.empty_like(a)
    run(a, b, c, got)
    want = np.array([fma32_exact(*t) for t in zip(a, b, c)], F32)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert want[-7] == one and want[-6] == F32(1 + 2.0**-22) and np.signbit(want[-2]) and not np.signbit(want[-1])


@pytest.mark.parametrize("model", ["gemma", "smollm2"])
def test_head_norm_rope_is_bit_exact_with_llama_cpp(model):
    """Layer 0's K rows of the two real models before and after llama.cpp's per-head RMSNorm
    (Gemma 3, NEOX pairs) and RoPE (SmolLM2, adjacent pairs), as its graph computed them
    (tests/data/golden/rope/rope.npz, tests/data/make_rope_golden.py): the cos/sin table and
    the rotation agree bit for bit, fused products included."""
    from pathlib import Path

    from tinyllm.model import ops

    g = np.load(Path(__file__).parent / "data" / "golden" / "rope" / "rope.npz")
    x, want = g[f"{model}_in"].copy(), g[f"{model}_out"]
    T, _, d = x.shape
    cos, sin = np.empty((T, d // 2), F32), np.empty((T, d // 2), F32)
    ops.rope_table(cos, sin, 0, float(g[f"{model}_base"]), 1.0, np.ones(d // 2, F32))
    if model == "gemma":
        ops.head_norm_rope(x, g["gemma_k_norm"], True, float(g["gemma_eps"]), cos, sin, True, 1.0)
    else:
        ops.head_norm_rope(x, np.ones(d, F32), False, 1e-5, cos, sin, False, 1.0)
    differ = int((x.view(np.uint32) != want.view(np.uint32)).sum())
    assert differ == 0, f"{differ} of {x.size} values differ from llama.cpp's"


def test_rms_norm_past_float32_mean_overflow_is_ggmls_zero():
    """ggml keeps mean(x²) in float32 (ggml_compute_forward_rms_norm_f32): at |x| ~ 1e20 it is
    Inf and the output 0, where float64 would give x/rms. tinyllm does what ggml does."""
    from tinyllm.model import ops

    x = np.full((1, 64), 1e20, F32)
    out = np.empty_like(x)
    ops.rms_norm(out, x, np.ones(64, F32), 1e-6)
    assert (out == 0).all()


def test_head_norm_at_tiny_magnitude_uses_eps():
    from tinyllm.model import ops

    rng = np.random.default_rng(13)
    q = (rng.standard_normal((2, 2, 32)) * 1e-20).astype(F32)
    w = rng.standard_normal(32).astype(F32)
    cos = np.ones((2, 16), F32)
    sin = np.zeros((2, 16), F32)
    got = q.copy()
    ops.head_norm_rope(got, w, True, 1e-6, cos, sin, False, 1.0)
    want = q.astype(np.float64) / np.sqrt((q.astype(np.float64) ** 2).mean(axis=2, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-30)


def _attention_f64(q, k, v, scale):
    """Causal softmax(q·kᵀ·scale)·v in float64; q (T, H, d), k/v (T, Hkv, d), head h -> KV head h // (H/Hkv)."""
    T, H, _ = q.shape
    group = H // k.shape[1]
    out = np.empty(q.shape)
    for t in range(T):
        for h in range(H):
            s = k[: t + 1, h // group].astype(np.float64) @ q[t, h].astype(np.float64) * scale
            p = np.exp(s - s.max())
            out[t, h] = (p / p.sum()) @ v[: t + 1, h // group]
    return out


def test_attention_with_four_query_heads_per_kv_head_and_odd_key_counts():
    """Gemma's shape of grouped attention (4 query heads per KV head) at every key count from 1
    to 41, odd ones included (the score tiles' leftover row and column paths), in the prefill
    kernel, the one-thread decode and the chunked parallel decode, against float64."""
    from tinyllm.model import ops

    rng = np.random.default_rng(15)
    H, Hkv, d, T = 8, 2, 32, 41
    k, v = (rng.standard_normal((2, T, Hkv, d))).astype(F32)
    q = rng.standard_normal((T, H, d)).astype(F32)
    kc, vc = np.zeros((64, Hkv, d), F32), np.zeros((64, Hkv, d), F32)
    kc[:T], vc[:T] = k, v
    want = _attention_f64(q, k, v, 0.125)
    pre = np.empty_like(q)
    ops.attn_prefill(pre, q, kc, vc, 0, 0, F32(0.125))
    np.testing.assert_allclose(pre, want, atol=3e-5)
    part_o = np.zeros((ops.MAX_TASKS, H // Hkv, d), F32)
    part_ml = np.zeros((ops.MAX_TASKS, H // Hkv, 2), F32)
    for t in range(T):
        dec = np.empty((H, d), F32)
        ops.attn_decode_serial(dec, q[t], kc, vc, t, 0, F32(0.125), part_o, part_ml)
        np.testing.assert_allclose(dec, want[t], atol=3e-5, err_msg=f"serial decode at {t + 1} keys")
        for n_chunk in (2, 5):
            ops.attn_decode(dec, q[t], kc, vc, t, 0, F32(0.125), part_o, part_ml, n_chunk)
            np.testing.assert_allclose(dec, want[t], atol=3e-5, err_msg=f"{n_chunk} chunks at {t + 1} keys")


@pytest.mark.parametrize("store", ["f32", "f16"])
def test_kv_store_writes_each_token_to_its_ring_cell(store):
    """Tokens at positions pos0.. land in cells (pos0 + t) % n_cells, and no other cell changes."""
    from tinyllm.model import ops
    from tinyllm.quants.fp16 import fp32_to_fp16

    rng = np.random.default_rng(16)
    x = rng.standard_normal((5, 2, 8)).astype(F32)
    dtype = F32 if store == "f32" else np.uint16
    cache = np.full((8, 2, 8), 7, dtype)
    getattr(ops, f"store_{store}")(cache, x, 6)
    want = np.full((8, 2, 8), 7, dtype)
    want[[6, 7, 0, 1, 2]] = x if store == "f32" else fp32_to_fp16(x).view(np.uint16)
    assert np.array_equal(cache, want)


def test_geglu_at_the_ends_of_the_fp16_table_is_ggmls_rule():
    """ggml_vec_gelu_f32: x <= -10 gives +0, x >= 10 gives x, the fp16 table between; compared
    bit for bit (the table's own value at -10 is -0.0, so the rule shows in the sign of zero)."""
    from tinyllm.model import ops
    from tinyllm.quants.fp16 import fp32_to_fp16

    ends = np.array([-10.0, 10.0], F32)
    x = np.concatenate([ends, np.nextafter(ends, F32(-np.inf)), np.nextafter(ends, F32(np.inf)), [-3e38, 3e38, 0.0, -0.0]])
    x = x.astype(F32)[None]
    up = np.ones_like(x)
    table = ops.gelu_fp16_table()
    out = np.empty_like(x)
    ops.geglu(out, x, up, table)
    mid = table[fp32_to_fp16(np.clip(x, -10, 10)).view(np.uint16)]
    want = np.where(x <= -10, F32(0.0), np.where(x >= 10, x, mid)).astype(F32)
    assert np.array_equal(out.view(np.uint32), want.view(np.uint32))
    assert not np.signbit(out[0, 0]) and np.signbit(table[fp32_to_fp16(np.array([-10.0], F32)).view(np.uint16)][0])


@pytest.mark.parametrize("mag", [1e-20, 1.0, 1e20])
def test_attention_softmax_at_small_and_large_scores_against_float64(mag):
    """Scores q·k·scale from ~1e-20 (uniform weights) to ~1e20 (one-hot) against a float64 softmax."""
    from tinyllm.model import ops

    rng = np.random.default_rng(14)
    H, Hkv, d, T = 2, 1, 32, 40
    k = rng.standard_normal((T, Hkv, d)).astype(F32)
    v = rng.standard_normal((T, Hkv, d)).astype(F32)
    q = (rng.standard_normal((T, H, d)) * mag).astype(F32)
    kc = np.zeros((64, Hkv, d), F32)
    vc = np.zeros_like(kc)
    kc[:T], vc[:T] = k, v
    want = _attention_f64(q, k, v, 0.125)
    pre = np.empty_like(q)
    ops.attn_prefill(pre, q, kc, vc, 0, 0, F32(0.125))
    np.testing.assert_allclose(pre, want, atol=3e-5)
    part_o = np.zeros((ops.MAX_TASKS, H // Hkv, d), F32)
    part_ml = np.zeros((ops.MAX_TASKS, H // Hkv, 2), F32)
    for t in (0, T - 1):
        for n_chunk in (1, 3):
            dec = np.empty((H, d), F32)
            ops.attn_decode(dec, q[t], kc, vc, t, 0, F32(0.125), part_o, part_ml, n_chunk)
            np.testing.assert_allclose(dec, want[t], atol=3e-5)
