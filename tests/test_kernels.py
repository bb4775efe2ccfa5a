"""Dot kernels of every type in the registry, activation quantizers, QMatrix / matmul / get_rows.

Oracles, cheapest first:
- the Numba activation quantizers against their NumPy twins (act.quantize_act_ref), whose
  Q8_K bytes are llama.cpp's (test_block_code.py): bit-exact;
- `get_rows` against the type's NumPy `dequantize`: bit-exact;
- each type's NumPy twin (TypeSpec.dot_ref) against float64 `dequantize(W) @ x`, within the
  error the activation quantization allows (derivation at `act_error_bound`);
- each Numba kernel of every kernel set (through `matmul`) against its twin: the integer block
  sums are exact in both, so they differ only by float32 summation order (`summation_bound`);
- random blocks (every bit pattern), llama.cpp's quantized tensors and real Gemma tensors
  (slow), odd row counts (partial tiles), decode (T=1) and prefill (T>1), 1 and 2 threads.
"""
import numpy as np
import pytest

from tinyllm.errors import ModelError, UsageError
from tinyllm.jit import get_threads, set_threads
from tinyllm.quants import act
from tinyllm.quants.kernel_bench import bench_case, random_qmatrix
from tinyllm.quants.matmul import (
    AVAILABLE_KERNEL_SETS,
    QMatrix,
    get_rows,
    kernel_set,
    matmul,
    quantize_activations,
    set_kernel_set,
)
from tinyllm.quants.registry import MATMUL_TYPES, TYPES, dequantize
from tinyllm.quants.simd import HAS_AVX2
from tinyllm.quants.types import FLOAT_TYPES, GGMLType

ALL = list(MATMUL_TYPES)
QUANTIZED = [t for t in ALL if t not in FLOAT_TYPES]


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
# activation quantizers: bit-exact with their twins


@pytest.mark.parametrize("kind", [act.Q8_K, act.Q8_0, act.Q8_1])
@pytest.mark.parametrize("seed", [0, 1])
def test_activation_quantizers_match_their_twins(kind, seed):
    x = nasty_activations(5, 1024, seed)
    got = act.quantize_act(kind, x)
    want = act.quantize_act_ref(kind, x)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype or (g.dtype == np.float32 and w.dtype == np.float32)
        np.testing.assert_array_equal(g.view(np.uint8), np.ascontiguousarray(w, g.dtype).view(np.uint8))
    one = act.quantize_act(kind, x[4:5])  # T == 1 takes the serial quantizer
    for g, w in zip(one, want):
        np.testing.assert_array_equal(g, w[4:5])
    if kind == act.Q8_K:
        qs, d, bsums = got
        assert (bsums[1, :16] == 0).all() and d[1, 0] == 0  # the zero Q8_K block


def test_q8_1_s_is_fp16_of_the_unrounded_scale_times_the_sum():
    x = nasty_activations(2, 128, 3)
    qs, d, s = act.quantize_act(act.Q8_1, x)
    amax = np.abs(x.reshape(2, 4, 32)).max(axis=2)
    dq = (amax / np.float32(127)).astype(np.float32)  # not fp16-rounded
    want = (dq * qs.reshape(2, 4, 32).sum(axis=2, dtype=np.int32).astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(s, want.astype(np.float32))


# ---------------------------------------------------------------------------------------
# error bounds, kept in one place


def act_error_bound(wtype, W, x, mins=None):
    """|W @ x_quantized - W @ x| bound per output, for W float64 (n_out, n) and x (T, n).

    Q8_K (kquants.md §3.8): q = rint(x * 127/max), d = 1/(-127/max), so per element
    |x - d*q| <= |d|/2 = amax/254 (amax of x's 256-block), times (1 + 2^-23) for d's rounding.
    Q8_0 (§3.9): q = rint(x * f32(127/amax)) gives |x - q*amax/127| <= amax/254, but the
    kernel multiplies by d = fp16(amax/127), off by at most 2^-11 relative: a further
    |q| * amax/127 * 2^-11 <= amax * 2^-11 per element.
    Q8_1: as Q8_0 for the d*q part; a block's min m multiplies s = fp16(d * Σq) instead of
    Σx: |Σx - s| <= 32 * amax/254 + 2^-11 |s| (mins: (n_out, nb) float64 |m| per block).
    Summed over the row: Σ_i |W_ri| * e_i. Float weights see x itself: 0.
    """
    T, n = x.shape
    kind = TYPES[wtype].act
    if kind == act.F32_ACT:
        return np.zeros((T, W.shape[0]))
    blk = act.act_block(kind)
    amax = np.abs(x.astype(np.float64)).reshape(T, n // blk, blk).max(axis=2)
    per = amax / 254 * (1 + 2.0**-23) if kind == act.Q8_K else amax * (1 / 254 + 2.0**-11)
    bound = np.repeat(per, blk, axis=1) @ np.abs(W).T
    if kind == act.Q8_1:
        _, _, s = act.quantize_act_ref(kind, x)
        block_err = 32 * amax / 254 + 2.0**-11 * np.abs(s.astype(np.float64))  # (T, nb)
        bound = bound + block_err @ mins.T
    return bound


def term_magnitudes(wtype, raw, n_in):
    """(n_out, n_in) float64 magnitudes of what the kernels sum in float: |W| for most types;
    for types with a min (Q4_K, Q5_K, Q4_1, Q5_1), whose scaled quants and mins are summed
    apart, |scaled quant| + |min| (the two parts can cancel)."""
    W = dequant(wtype, raw, n_in)
    mins = block_mins(wtype, raw)
    if mins is None:
        return np.abs(W)
    blk = n_in // mins.shape[1]
    m = np.repeat(mins, blk, axis=1)
    return np.abs(W) + 2 * m  # |d*q| <= |W| + |m|


def block_mins(wtype, raw):
    """|min| per block (n_out, n_blocks) float64 for the types that have mins: per 16 elements
    for Q2_K, per 32 for the others."""
    s = TYPES[wtype]
    names = s.block.names or ()
    if wtype == GGMLType.Q2_K:  # dmin * m_j per sub-block of 16
        from tinyllm.quants import q2_k

        _, dmin, _, m, _ = q2_k.unpack_ref(raw)
        return np.abs((dmin[:, :, None] * m).astype(np.float64)).reshape(raw.shape[0], -1)
    if "dmin" in names:  # Q4_K, Q5_K: dmin * m_j per sub-block of 32
        from tinyllm.quants import q4_k

        _, dmin, _, m, _ = q4_k.unpack_ref(raw, five=wtype == GGMLType.Q5_K)
        return np.abs((dmin[:, :, None] * m).astype(np.float64)).reshape(raw.shape[0], -1)
    if "m" in names:
        b = raw.reshape(-1).view(s.block).reshape(raw.shape[0], -1)
        return np.abs(b["m"].astype(np.float64))
    return None


def summation_bound(A, x):
    """Float32 accumulation: every term is rounded a bounded number of times (a scale product,
    an int->float conversion of an exact block sum, a multiply-add), and at most a few thousand
    terms are summed: 1e-5 relative to the summed magnitudes Σ A|x| covers n_blocks * 2^-24
    with slack."""
    return 1e-5 * (np.abs(x.astype(np.float64)) @ A.T) + 1e-30


def dequant(wtype, raw, n_in):
    return dequantize(raw, wtype, (raw.shape[0], n_in)).astype(np.float64)


def check_matmul(wtype, raw, n_in, x, threads_list=(1, 2)):
    """Twin vs float64 oracle; each available kernel set (AVX2 intrinsics, portable loops) vs
    the twin; 1 vs 2 threads (each output is summed by one thread in a fixed order: equal)."""
    s = TYPES[wtype]
    W = dequant(wtype, raw, n_in)
    exact = x.astype(np.float64) @ W.T
    twin = s.dot_ref(raw, *act.quantize_act_ref(s.act, x)).astype(np.float64)
    fsum = summation_bound(term_magnitudes(wtype, raw, n_in), x)
    mins = block_mins(wtype, raw)
    bound = act_error_bound(wtype, W, x, mins) + fsum
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


def row_length(wtype):
    """Two super-blocks for 256-weight types, five blocks for the 32-weight ones."""
    return 512 if TYPES[wtype].block_size == 256 else 160


# ---------------------------------------------------------------------------------------
# kernels on random blocks (every bit pattern), odd row counts, decode and prefill


@pytest.mark.parametrize("wtype", ALL, ids=lambda t: t.name)
@pytest.mark.parametrize("n_out", [37, 257])
def test_kernels_random_blocks(wtype, n_out, threads):
    n_in = row_length(wtype)
    w = random_qmatrix(wtype, n_out, n_in, seed=n_out)
    for T in (1, 5):
        x = nasty_activations(T, n_in, seed=T)
        check_matmul(wtype, w.raw, n_in, x)


@pytest.mark.parametrize("wtype", ALL, ids=lambda t: t.name)
def test_a_token_gets_the_same_bits_alone_or_in_a_prefill(wtype):
    """Decode (T=1) and prefill take different code paths in most kernels; both must round
    alike, so that a token's logits do not depend on how many tokens its call had."""
    n_in = row_length(wtype)
    w = random_qmatrix(wtype, 257, n_in, seed=11)
    x = nasty_activations(5, n_in, seed=4)
    old = kernel_set()
    try:
        for ks in AVAILABLE_KERNEL_SETS:
            set_kernel_set(ks)
            full = matmul(w, x)
            for i in range(len(x)):
                np.testing.assert_array_equal(matmul(w, x[i:i + 1])[0], full[i], err_msg=f"{ks} token {i}")
    finally:
        set_kernel_set(old)


@pytest.mark.parametrize("wtype", [GGMLType.Q4_K, GGMLType.Q8_0, GGMLType.Q4_1], ids=lambda t: t.name)
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


# llama.cpp's own files (tinyllm's quantizer writes the same bytes: checked against the manifest)
LLAMA_CPP_FILES = {
    GGMLType.Q4_0: "pure-Q4_0",
    GGMLType.Q4_1: "pure-Q4_1",
    GGMLType.Q5_0: "pure-Q5_0",
    GGMLType.Q5_1: "pure-Q5_1",
    GGMLType.Q8_0: "pure-Q8_0",
    GGMLType.Q4_K: "pure-Q4_K_S",
    GGMLType.Q5_K: "pure-Q5_K_S",
    GGMLType.Q6_K: "pure-Q6_K",
    GGMLType.Q2_K: "pure-Q2_K",
    GGMLType.Q3_K: "pure-Q3_K_S",
    GGMLType.F32: None,
}


@pytest.mark.parametrize("wtype", list(LLAMA_CPP_FILES), ids=lambda t: t.name)
def test_kernels_on_llama_cpp_quantized_tensors(llama_cpp_file, golden, wtype, threads):
    """Real quantized blocks as llama-quantize writes them (all weight distributions of tiny-f32)."""
    from tinyllm.gguf_io import GGUFFile

    stem = LLAMA_CPP_FILES[wtype]
    path = golden / "quant" / "tiny-f32.gguf" if stem is None else llama_cpp_file(stem)
    with GGUFFile(path) as f:
        for name in ("blk.0.ffn_down.weight", "blk.0.attn_k.weight"):
            info = f.tensors[name]
            assert info.type == wtype
            n_out, n_in = info.shape
            x = nasty_activations(4, n_in, 11)
            check_matmul(wtype, np.asarray(info.data), n_in, x)
            w = QMatrix.from_tensor(info)
            ids = [0, n_out - 1, 3, 3]
            np.testing.assert_array_equal(get_rows(w, ids), dequant(wtype, np.asarray(info.data), n_in)[ids].astype(np.float32))


# llama-quantize's files of types whose mixtures tinyllm.quantize cannot write yet: their
# tensors are quantized here through the registry and checked against the manifest's sha256,
# so the kernels again see llama.cpp's bytes (with and without an importance matrix)
LLAMA_CPP_TENSORS = [
    (GGMLType.IQ4_NL, "tiny-pure-IQ4_NL"),
    (GGMLType.IQ4_NL, "tiny-imatrix-pure-IQ4_NL"),
    (GGMLType.IQ4_XS, "tiny-pure-IQ4_XS"),
    (GGMLType.IQ4_XS, "tiny-imatrix-pure-IQ4_XS"),
    (GGMLType.IQ3_S, "tiny-pure-IQ3_S"),
    (GGMLType.IQ3_S, "tiny-imatrix-pure-IQ3_S"),
    (GGMLType.IQ3_XXS, "tiny-imatrix-pure-IQ3_XXS"),
]


@pytest.mark.parametrize("wtype, stem", LLAMA_CPP_TENSORS, ids=lambda v: getattr(v, "name", v))
def test_kernels_on_llama_cpp_tensors_quantized_here(golden, manifest, wtype, stem, threads):
    import hashlib

    import gguf

    from tinyllm.quantization.imatrix import load_imatrix
    from tinyllm.quants.registry import quantize

    reader = gguf.GGUFReader(golden / "quant" / "tiny-f32.gguf")
    imatrix = load_imatrix(golden / "quant" / "tiny-f32.imatrix.gguf") if "imatrix" in stem else None
    want = {t["name"]: t for t in manifest[stem]["tensors"]}
    for t in reader.tensors:
        if t.name not in ("blk.0.ffn_down.weight", "blk.0.attn_k.weight"):
            continue
        assert want[t.name]["type"] == wtype.name
        n_in = int(t.shape[0])
        x = np.asarray(t.data, np.float32).reshape(-1, n_in)
        raw = quantize(x, wtype, imatrix=None if imatrix is None else imatrix.weights(t.name))
        assert hashlib.sha256(raw.tobytes()).hexdigest() == want[t.name]["sha256"], t.name
        check_matmul(wtype, raw, n_in, nasty_activations(4, n_in, 11))
        ids = [0, raw.shape[0] - 1, 3, 3]
        w = QMatrix(wtype, raw, n_in, name=t.name)
        np.testing.assert_array_equal(get_rows(w, ids), dequant(wtype, raw, n_in)[ids].astype(np.float32))


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
    want = dequantize(w.raw[ids], wtype, (len(ids), n_in))
    got = get_rows(w, ids)
    assert got.dtype == np.float32 and got.shape == (5, n_in)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_quantize_activations_follows_the_weight_type():
    x = nasty_activations(2, 256, 1)
    for t in QUANTIZED:
        got = quantize_activations(t, x)
        want = act.quantize_act(TYPES[t].act, x)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------------------------------
# error paths


def test_unsupported_weight_type_is_named():
    raw = np.zeros((4, 84), np.uint8)
    with pytest.raises(ModelError, match=r"blk\.3\.x.*I8.*supported.*Q4_K"):
        QMatrix(GGMLType.I8, raw, 84, name="blk.3.x")


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
    import numba

    if numba.config.DISABLE_JIT:  # the JIT-off run (.ci/jit_off): intrinsics cannot run as Python
        assert not HAS_AVX2 and kernel_set() == "portable"
    elif llvmlite.binding.get_host_cpu_features().get("avx2", False) and not numba.config.CPU_NAME:
        assert HAS_AVX2 and kernel_set() == "avx2"


def test_every_matmul_type_has_both_kernel_sets():
    for t in ALL:
        assert set(TYPES[t].kernels) == {"portable", "avx2"}, t.name


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


@pytest.mark.skipif(not HAS_AVX2, reason="AVX2 intrinsics: this CPU has no AVX2, or the JIT is off")
@pytest.mark.parametrize("bits", [2, 3])
def test_crumb_unpack_intrinsics_match_the_tile_layout(bits):
    """unpack2 / unpack3 (Q2_K, Q3_K tiles -> bytes for vpmaddubsw): 8 elements of 32 rows,
    element k of row r from bits 2(k%4).. of src[(k//4)*32 + r] and bit k of h[r]."""
    import numba

    from tinyllm.quants.simd import unpack2, unpack3

    fn = unpack3 if bits == 3 else unpack2

    @numba.njit
    def run(buf, src, h):
        fn(buf, 0, 64, src, 0, 32, h, 0)

    rng = np.random.default_rng(bits)
    src = rng.integers(0, 256, 64, dtype=np.uint8)
    h = rng.integers(0, 256, 32, dtype=np.uint8)
    buf = np.zeros(4 * 64, np.uint8)
    run(buf, src, h)
    e = np.arange(8)
    low = (src.reshape(2, 32)[e // 4] >> (2 * (e % 4))[:, None].astype(np.uint8)) & 3  # (8, 32)
    third = ((h[None, :] >> e[:, None].astype(np.uint8)) & 1) if bits == 3 else 0
    want = (low | (third << 2)).reshape(4, 2, 32).transpose(0, 2, 1)  # [pair][row][lo, hi]
    np.testing.assert_array_equal(buf.reshape(4, 32, 2), want)


def test_activation_block_sizes_are_ggml_s():
    """The activation block of each kind (the error bounds above are per block): Q8_K 256,
    Q8_0/Q8_1 32, float activations 1."""
    assert [act.act_block(k) for k in (act.Q8_K, act.Q8_0, act.Q8_1, act.F32_ACT)] == [256, 32, 32, 1]


@pytest.mark.parametrize("wtype", [GGMLType.Q8_0, GGMLType.Q4_K])
def test_repack_releases_every_row_once_and_the_same_tiles(wtype):
    """The loader drops each chunk of mapped rows as soon as the repack has read it."""
    from tinyllm.quants.kernel_bench import random_blocks
    from tinyllm.quants.tiles import repack

    n_in = 256 * 24
    raw = random_blocks(wtype, 1000, n_in, seed=3).reshape(1000, -1)  # > one 2 MiB chunk, a ragged last tile
    released = []
    got = repack(TYPES[wtype], raw, n_in, release=released.append)
    want = repack(TYPES[wtype], raw, n_in)
    assert len(released) > 1
    assert np.array_equal(np.concatenate(released), raw)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("wtype", [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q4_1, GGMLType.F16, GGMLType.F32])
@pytest.mark.parametrize("T", [1, 3])
def test_kernel_calls_are_the_calls_matmul_makes(wtype, T):
    """compile_ahead compiles what kernel_calls lists: run those calls on real input and they
    must give matmul's output (an activation quantizer, then the kernel, for quantized types)."""
    from tinyllm.quants.kernel_bench import random_qmatrix
    from tinyllm.quants.matmul import kernel_calls

    w = random_qmatrix(wtype, 64, 256, seed=3)
    x = np.random.default_rng(7).standard_normal((T, 256)).astype(np.float32)
    calls = kernel_calls(w, T)
    assert len(calls) == (1 if wtype in (GGMLType.F16, GGMLType.F32) else 2)
    x_arg = calls[0][1][0] if len(calls) == 2 else calls[0][1][-1]  # the quantizer's first, the float kernel's last
    x_arg[...] = x
    for kernel, args in calls:
        kernel(*args)
    out = calls[-1][1][0]
    np.testing.assert_array_equal(out, matmul(w, x))
