"""Dot kernels, activation quantizers, QMatrix / matmul / get_rows.

Oracles, cheapest first:
- the activation quantizers against the quants reference (`reference.quantize_q8_K_ref`,
  `quantize_q8_0_act_ref`, themselves byte-checked against llama.cpp): bit-exact;
- `get_rows` against `reference.dequantize`: bit-exact;
- each NumPy twin (dot_ref) against float64 `dequantize(W) @ x`, within the error the
  activation quantization allows (derivation at `act_error_bound`);
- each Numba kernel (through `matmul`) against its twin: the integer block sums are exact in
  both, so they differ only by float32 summation order (bound at `summation_bound`);
- random blocks (every bit pattern), llama.cpp's quantized golden tensors and real Gemma
  tensors (slow), odd row counts (partial tiles), decode (T=1) and prefill (T>1), 1 and 2 threads.
"""
import numpy as np
import pytest

from tinyllm.errors import ModelError, UsageError
from tinyllm.jit import get_threads, set_threads
from tinyllm.quants import dot, dot_ref, reference
from tinyllm.quants.bench import bench_case, random_qmatrix
from tinyllm.quants.matmul import (
    AVAILABLE_KERNEL_SETS,
    QMatrix,
    get_rows,
    kernel_set,
    matmul,
    quantize_activations,
    set_kernel_set,
)
from tinyllm.quants.types import GGMLType

Q8_0_ACT = (GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_0)
K_TYPES = (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K)
FLOATS = (GGMLType.F32, GGMLType.F16, GGMLType.BF16)
ALL = K_TYPES + Q8_0_ACT + FLOATS


@pytest.fixture
def threads():
    """Run a test body at a given thread count and restore the previous one."""
    old = get_threads()
    yield set_threads
    set_threads(old)


def nasty_activations(T, n, seed):
    """Activation rows with the cases quantizers get wrong: zero blocks, ties at .5 after
    scaling, a constant block, tiny and large magnitudes, a lone extreme value per block."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, n)).astype(np.float32) * rng.choice([1e-3, 1.0, 50.0], (T, 1)).astype(np.float32)
    x[0, :32] = 0  # a zero Q8_0 block
    if n >= 256 and T > 1:
        x[1, :256] = 0  # a zero Q8_K block
    x[-1, 32:64] = np.float32(0.75)  # constant: every element is the block max
    x[-1, 64:96] = np.arange(32, dtype=np.float32) - np.float32(15.5)  # x*127/15.5 hits ties
    x[0, 100] = np.float32(-300.0)  # negative extreme: ggml keeps its sign in Q8_K's d
    return x


# ---------------------------------------------------------------------------------------
# activation quantizers: bit-exact with the reference


@pytest.mark.parametrize("seed", [0, 1])
def test_q8_K_activation_quantizer_matches_reference(seed):
    x = nasty_activations(5, 1024, seed)
    qs, d, bsums = quantize_activations(GGMLType.Q4_K, x)
    rqs, rd, rbs = dot_ref.quantize_q8_K_act(x)
    np.testing.assert_array_equal(qs, rqs)
    np.testing.assert_array_equal(d.view(np.uint32), rd.view(np.uint32))  # same float32 bits
    np.testing.assert_array_equal(bsums, rbs)
    assert (bsums[1, :16] == 0).all() and d[1, 0] == 0
    one = quantize_activations(GGMLType.Q6_K, x[4:5])  # T == 1 takes the serial quantizer
    for a, r in zip(one, (rqs, rd, rbs)):
        np.testing.assert_array_equal(a, r[4:5])


@pytest.mark.parametrize("seed", [0, 1])
def test_q8_0_activation_quantizer_matches_reference(seed):
    x = nasty_activations(5, 1024, seed)
    qs, d, ys = quantize_activations(GGMLType.Q8_0, x)
    rqs, rd, rys = dot_ref.quantize_q8_0_act(x)
    np.testing.assert_array_equal(qs, rqs)
    np.testing.assert_array_equal(d.view(np.uint32), rd.view(np.uint32))
    np.testing.assert_array_equal(ys, rys)
    one = quantize_activations(GGMLType.Q5_0, x[4:5])  # T == 1 takes the serial quantizer
    for a, r in zip(one, (rqs, rd, rys)):
        np.testing.assert_array_equal(a, r[4:5])
    # and the twin is a faithful split of the reference's block bytes
    raw = reference.quantize_q8_0_act_ref(x).reshape(5, -1, 34)
    np.testing.assert_array_equal(qs.reshape(5, -1, 32), raw[:, :, 2:].view(np.int8))


def test_fp16_round_matches_numpy():
    rng = np.random.default_rng(3)
    v = rng.standard_normal(5000).astype(np.float32) * (np.float32(10) ** rng.integers(-9, 6, 5000)).astype(np.float32)
    edge = [65504, 65519.996, 65520, 1e9, -65520, 6e-8, 2.98e-8, 2.99e-8, 5.96e-8 * 1.5, 0.0, -0.0, 1 / 3, np.inf]
    v = np.concatenate([v, np.array(edge, np.float32)])
    got = np.array([dot.fp16_round(np.float32(t)) for t in v], np.float32)
    np.testing.assert_array_equal(got, dot_ref.fp16_round(v))


# ---------------------------------------------------------------------------------------
# error bounds, kept in one place


def act_error_bound(wtype, W, x):
    """|W @ x_quantized - W @ x| bound per output, for W float64 (n_out, n) and x (T, n).

    Q8_K (kquants.md §3.8): q = rint(x * 127/max), d = 1/(-127/max), so per element
    |x - d*q| <= |d|/2 = amax/254 (amax of x's 256-block), times (1 + 2^-23) for d's rounding.
    Q8_0 (§3.9): q = rint(x * f32(127/amax)) gives |x - q*amax/127| <= amax/254, but the
    kernel multiplies by d = fp16(amax/127), off by at most 2^-11 relative: a further
    |q| * amax/127 * 2^-11 <= amax * 2^-11 per element.
    Summed over the row: Σ_i |W_ri| * e_i. Float weights see x itself: 0.
    """
    T, n = x.shape
    if wtype in FLOATS:
        return np.zeros((T, W.shape[0]))
    blk = 256 if wtype in K_TYPES else 32
    amax = np.abs(x.astype(np.float64)).reshape(T, n // blk, blk).max(axis=2)
    per = amax / 254 * (1 + 2.0**-23) if wtype in K_TYPES else amax * (1 / 254 + 2.0**-11)
    e = np.repeat(per, blk, axis=1)  # (T, n)
    return e @ np.abs(W).T


def term_magnitudes(wtype, raw, n_in):
    """(n_out, n_in) float64 magnitudes of what the kernels sum in float: |W| for most types;
    for Q4_K / Q5_K, whose weights are d*sc*q - dmin*m with both parts summed apart per
    super-block, d*sc*q + dmin*m (the two parts can cancel)."""
    if wtype not in (GGMLType.Q4_K, GGMLType.Q5_K):
        return np.abs(dequant(wtype, raw, n_in))
    unpack = dot_ref.unpack_q4_K if wtype == GGMLType.Q4_K else dot_ref.unpack_q5_K
    d, dmin, sc, m, q = unpack(raw)
    a = d[:, :, None, None] * sc[:, :, :, None] * q.reshape(q.shape[0], -1, 8, 32) + (dmin[:, :, None] * m)[..., None]
    return np.abs(a.astype(np.float64)).reshape(raw.shape[0], n_in)


def summation_bound(A, x):
    """Float32 accumulation: every term is rounded a bounded number of times (a scale product,
    an int->float conversion of an exact block sum, a multiply-add), and at most a few thousand
    terms are summed: 1e-5 relative to the summed magnitudes Σ A|x| covers n_blocks * 2^-24
    with slack."""
    return 1e-5 * (np.abs(x.astype(np.float64)) @ A.T) + 1e-30


def dequant(wtype, raw, n_in):
    return reference.dequantize(raw, wtype, (raw.shape[0], n_in)).astype(np.float64)


def check_matmul(wtype, raw, n_in, x, threads_list=(1, 2)):
    """Twin vs float64 oracle; each available kernel set (AVX2 intrinsics, portable loops) vs
    the twin; 1 vs 2 threads (each output is summed by one thread in a fixed order: equal)."""
    W = dequant(wtype, raw, n_in)
    exact = x.astype(np.float64) @ W.T
    twin = dot_ref.dot_ref(wtype, raw, x).astype(np.float64)
    fsum = summation_bound(term_magnitudes(wtype, raw, n_in), x)
    bound = act_error_bound(wtype, W, x) + fsum
    assert (np.abs(twin - exact) <= bound).all(), f"{wtype.name}: twin off by {np.abs(twin - exact).max()}"
    w = QMatrix(wtype, raw, n_in, name="test")
    old = kernel_set()
    try:
        for ks in AVAILABLE_KERNEL_SETS:
            set_kernel_set(ks)
            results = []
            for th in threads_list:
                set_threads(th)
                results.append(matmul(w, x))
            got = results[0].astype(np.float64)
            err = np.abs(got - twin).max()
            assert (np.abs(got - twin) <= fsum).all(), f"{wtype.name} {ks} kernels vs twin off by {err}"
            for r in results[1:]:
                np.testing.assert_array_equal(r, results[0])
    finally:
        set_kernel_set(old)


# ---------------------------------------------------------------------------------------
# kernels on random blocks (every bit pattern), odd row counts, decode and prefill


@pytest.mark.parametrize("wtype", ALL, ids=lambda t: t.name)
@pytest.mark.parametrize("n_out", [37, 257])
def test_kernels_random_blocks(wtype, n_out, threads):
    n_in = 512 if wtype in K_TYPES else 160
    w = random_qmatrix(wtype, n_out, n_in, seed=n_out)
    for T in (1, 5):
        x = nasty_activations(T, n_in, seed=T)
        check_matmul(wtype, w.raw, n_in, x)


@pytest.mark.parametrize("wtype", [GGMLType.Q4_K, GGMLType.Q8_0], ids=lambda t: t.name)
def test_matmul_1d_and_out_argument(wtype):
    n_in = 256
    w = random_qmatrix(wtype, 70, n_in)
    x = nasty_activations(3, n_in, 7)
    full = matmul(w, x)
    out = np.full((3, 70), np.nan, np.float32)
    assert matmul(w, x, out=out) is out
    np.testing.assert_array_equal(out, full)
    one = matmul(w, x[1])
    assert one.shape == (70,)
    np.testing.assert_array_equal(one, full[1])  # a token's result does not depend on T


GOLDEN_FILES = {
    GGMLType.Q4_0: "tiny-pure-Q4_0.gguf",
    GGMLType.Q5_0: "tiny-pure-Q5_0.gguf",
    GGMLType.Q8_0: "tiny-pure-Q8_0.gguf",
    GGMLType.Q4_K: "tiny-pure-Q4_K_S.gguf",
    GGMLType.Q5_K: "tiny-pure-Q5_K_S.gguf",
    GGMLType.Q6_K: "tiny-pure-Q6_K.gguf",
    GGMLType.F32: "tiny-f32.gguf",
}


@pytest.mark.parametrize("wtype", list(GOLDEN_FILES), ids=lambda t: t.name)
def test_kernels_on_llama_cpp_quantized_tensors(golden, wtype, threads):
    """Real quantized blocks written by llama-quantize (all weight distributions of tiny-f32)."""
    from tinyllm.gguf_io import GGUFFile

    with GGUFFile(golden / "quant" / GOLDEN_FILES[wtype]) as f:
        for name in ("blk.0.ffn_down.weight", "blk.0.attn_k.weight"):
            info = f.tensors[name]
            assert info.type == wtype
            n_out, n_in = info.shape
            x = nasty_activations(4, n_in, 11)
            check_matmul(wtype, np.asarray(info.data), n_in, x)
            w = QMatrix.from_tensor(info)
            ids = [0, n_out - 1, 3, 3]
            np.testing.assert_array_equal(get_rows(w, ids), dequant(wtype, np.asarray(info.data), n_in)[ids].astype(np.float32))


@pytest.mark.slow
def test_kernels_on_gemma_tensors(gemma_path, threads):
    """One tensor of every type in the Gemma 3 270M Q4_K_M file, rows sliced to keep it quick
    (an odd count, so the last tile is partial), plus the 262144-row Q8_0 output matrix's tail."""
    from tinyllm.gguf_io import GGUFFile

    with GGUFFile(gemma_path) as f:
        seen = set()
        for name, info in f.tensors.items():
            if len(info.shape) != 2 or info.type in seen:
                continue
            seen.add(info.type)
            n_in = info.shape[1]
            rows = np.asarray(info.data)[-301:] if info.shape[0] > 4096 else np.asarray(info.data)[:301]
            x = nasty_activations(3, n_in, 5) * np.float32(0.1)
            check_matmul(info.type, rows, n_in, x)
        assert seen >= {GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q5_0, GGMLType.Q8_0}
        emb = QMatrix.from_tensor(f.tensors["token_embd.weight"])
        ids = [2, 262143, 1000, 2]
        want = dequant(GGMLType.Q8_0, np.asarray(f.tensors["token_embd.weight"].data)[ids], emb.n_in).astype(np.float32)
        np.testing.assert_array_equal(get_rows(emb, ids), want)


# ---------------------------------------------------------------------------------------
# get_rows: bit-exact dequantization of the selected rows


@pytest.mark.parametrize("wtype", ALL, ids=lambda t: t.name)
def test_get_rows_matches_reference_dequantize(wtype):
    n_in = 512
    w = random_qmatrix(wtype, 41, n_in, seed=5)
    ids = np.array([40, 0, 7, 7, 13], np.int32)
    want = reference.dequantize(w.raw[ids], wtype, (len(ids), n_in))
    got = get_rows(w, ids)
    assert got.dtype == np.float32 and got.shape == (5, n_in)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


# ---------------------------------------------------------------------------------------
# error paths


def test_unsupported_weight_type_is_named():
    raw = np.zeros((4, 20 * 2), np.uint8)
    with pytest.raises(ModelError, match=r"blk\.3\.x.*Q4_1.*supported.*Q4_K"):
        QMatrix(GGMLType.Q4_1, raw, 64, name="blk.3.x")


def test_row_length_not_multiple_of_block():
    with pytest.raises(ModelError, match=r"row length 100 .*Q4_K block size 256"):
        QMatrix(GGMLType.Q4_K, np.zeros((2, 56), np.uint8), 100, name="w")


def test_raw_shape_mismatch_is_named():
    with pytest.raises(ModelError, match=r"tensor w: raw data of shape \(2, 100\)"):
        QMatrix(GGMLType.Q8_0, np.zeros((2, 100), np.uint8), 64, name="w")


def test_from_tensor_rejects_1d():
    class Info:
        name, type, shape, data = "v.weight", GGMLType.F32, (640,), np.zeros((1, 2560), np.uint8)

    with pytest.raises(ModelError, match=r"v\.weight.*2-D.*\(640,\)"):
        QMatrix.from_tensor(Info)


def test_unknown_kernel_set_is_named():
    with pytest.raises(UsageError, match=r"kernel set 'neon' is not available here; available: .*portable"):
        set_kernel_set("neon")


def test_avx2_detected_on_x86_with_avx2():
    """The fast path must not silently fall back on a CPU that has AVX2."""
    import llvmlite.binding

    if llvmlite.binding.get_host_cpu_features().get("avx2", False) and not dot.numba.config.CPU_NAME:
        assert dot.HAS_AVX2 and kernel_set() == "avx2"


def test_matmul_bad_x_and_out():
    w = random_qmatrix(GGMLType.Q8_0, 8, 64)
    with pytest.raises(UsageError, match=r"float32 \(T, 64\), got float32 \(2, 32\)"):
        matmul(w, np.zeros((2, 32), np.float32))
    with pytest.raises(UsageError, match=r"got float64"):
        matmul(w, np.zeros((2, 64)))
    with pytest.raises(UsageError, match=r"out must be .*\(2, 8\), got float32 \(2, 9\)"):
        matmul(w, np.zeros((2, 64), np.float32), out=np.zeros((2, 9), np.float32))


def test_get_rows_out_of_range_id_is_named():
    w = random_qmatrix(GGMLType.Q6_K, 10, 256)
    with pytest.raises(UsageError, match=r"row id 10 is out of range 0\.\.9"):
        get_rows(w, [1, 10])
    with pytest.raises(UsageError, match=r"row id -1 "):
        get_rows(w, [-1])


# ---------------------------------------------------------------------------------------
# benchmark plumbing (no timing assertions: only that rows are produced and consistent)


def test_bench_case_row_fields():
    row = bench_case("Q4_0", 64, 256, 2, 1, min_seconds=0.0).as_dict()
    assert row["type"] == "Q4_0" and row["T"] == 2 and row["threads"] == 1
    assert row["seconds"] > 0
    assert row["gmacs"] == pytest.approx(64 * 256 * 2 / row["seconds"] / 1e9)
    assert row["gbs"] == pytest.approx(64 * 256 // 32 * 18 / row["seconds"] / 1e9)
