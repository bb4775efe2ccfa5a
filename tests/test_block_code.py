"""The NumPy block code of the type modules (through tinyllm.quants.registry) against outside references:
gguf-py's dequantizers and quantizers, float64 NumPy, hand-made blocks, the real Gemma file,
and the thresholds of llama.cpp's tests/test-quantize-fns.cpp (kquants.md §6)."""
import os

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as GQ

from tinyllm.errors import QuantizationError
from tinyllm.quants.act import q8_0_blocks_ref
from tinyllm.quants.fp16 import fp32_to_bf16
from tinyllm.quants.registry import TYPES, blocks, dequantize, quantize_ref
from tinyllm.quants.rounding import nearest_int_np as nearest_int
from tinyllm.quants.rounding import roundf_np as roundf
from tinyllm.quants.types import BLOCK_SIZES, FLOAT_TYPES, GGMLType

BLOCK_DTYPES = {t: s.block for t, s in TYPES.items()}
# every block type gguf-py can dequantize (Q8_K is tested by hand below)
BLOCK_TYPES = [t for t in TYPES if t not in FLOAT_TYPES and t != GGMLType.Q8_K]
QUANTIZE_TYPES = [t for t, s in TYPES.items() if s.quantize_ref is not None and t != GGMLType.Q8_K]
# test-quantize-fns skips the types without a from_float (those ggml quantizes only with an imatrix,
# and IQ1_M, whose imatrix is optional but which has no from_float either)
ROUNDTRIP_TYPES = [t for t in QUANTIZE_TYPES if not TYPES[t].needs_imatrix and t != GGMLType.IQ1_M]


def quantize_q8_K_ref(x):
    return quantize_ref(x, GGMLType.Q8_K)


def quantize_q8_0_act_ref(x):
    """The activation Q8_0 of float32 rows as Q8_0 block bytes (d, qs)."""
    d, qs, _ = q8_0_blocks_ref(np.asarray(x, np.float32).reshape(-1, 32))
    b = np.zeros(d.size, BLOCK_DTYPES[GGMLType.Q8_0])
    b["d"], b["qs"] = d.astype(np.float16), qs
    return b.view(np.uint8).reshape(x.shape[0], -1)


def random_blocks(t: GGMLType, rows: int, blocks_per_row: int, seed: int) -> np.ndarray:
    """Random bytes with finite fp16 scales (normal, tiny, subnormal and zero values)."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (rows, blocks_per_row * BLOCK_SIZES[t][1]), dtype=np.uint8)
    b = raw.reshape(-1).view(BLOCK_DTYPES[t])
    for f in ("d", "dmin", "m"):
        if f in b.dtype.names:
            v = rng.standard_normal(b.size) * rng.choice([1e-7, 1e-3, 1.0, 100.0], b.size)
            v[::7] = 0.0
            b[f] = v.astype(np.float16)
    return raw


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ---------------------------------------------------------------------------------------
# dequantize


@pytest.mark.parametrize("t", BLOCK_TYPES, ids=lambda t: t.name)
def test_dequantize_matches_gguf_py_bit_for_bit(t):
    raw = random_blocks(t, rows=9, blocks_per_row=3, seed=int(t))
    expected = gguf.quants.dequantize(raw, GQ(int(t)))
    got = dequantize(raw, t, expected.shape)
    assert got.dtype == np.float32
    assert same_bits(got, expected.astype(np.float32))


@pytest.mark.parametrize("t", [GGMLType.F16, GGMLType.BF16, GGMLType.F32], ids=lambda t: t.name)
def test_dequantize_float_types_match_gguf_py(t):
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**16, (4, 64), dtype=np.uint16)
    if t == GGMLType.F32:
        raw = rng.standard_normal((4, 64)).astype(np.float32).view(np.uint8)
        expected = raw.view(np.float32)
    else:
        raw = bits.view(np.uint8)
        expected = gguf.quants.dequantize(raw, GQ(int(t))) if t == GGMLType.BF16 else bits.view(np.float16)
    got = dequantize(raw, t, (4, 64))
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)
    assert same_bits(got[~nan], expected.astype(np.float32)[~nan])


def test_dequantize_hand_made_q4_K_block():
    # d = 0.5, dmin = 0.25, sub-block j has scale j+1 and min 2j (6-bit packing of §1.8), q = e % 16
    b = np.zeros(1, BLOCK_DTYPES[GGMLType.Q4_K])
    b["d"], b["dmin"] = 0.5, 0.25
    sc, m = np.arange(1, 9, dtype=np.uint8), np.arange(0, 16, 2, dtype=np.uint8)
    q = b["scales"][0]
    q[0:4] = sc[:4] | ((sc[4:] >> 4) << 6)
    q[4:8] = m[:4] | ((m[4:] >> 4) << 6)
    q[8:12] = (sc[4:] & 0xF) | ((m[4:] & 0xF) << 4)
    b["scales"][0] = q
    e = np.arange(256)
    vals = e % 16
    qs = np.zeros(128, np.uint8)
    for c in range(4):
        qs[32 * c : 32 * c + 32] = vals[64 * c : 64 * c + 32] | (vals[64 * c + 32 : 64 * c + 64] << 4)
    b["qs"][0] = qs
    got = dequantize(b.view(np.uint8), GGMLType.Q4_K, (256,))
    j = e // 32
    expected = np.float32(0.5) * (j + 1).astype(np.float32) * vals.astype(np.float32) - np.float32(0.25) * (
        2 * j
    ).astype(np.float32)
    assert same_bits(got, expected.astype(np.float32))


def test_dequantize_q8_K_is_d_times_qs():
    rng = np.random.default_rng(2)
    b = np.zeros(3, BLOCK_DTYPES[GGMLType.Q8_K])
    b["d"] = rng.standard_normal(3).astype(np.float32)
    b["qs"] = rng.integers(-127, 128, (3, 256))
    got = dequantize(b.view(np.uint8), GGMLType.Q8_K, (3, 256))
    assert same_bits(got, (b["d"][:, None] * b["qs"].astype(np.float32)).astype(np.float32))


@pytest.mark.slow
def test_dequantize_every_tensor_of_gemma_matches_gguf_py(gemma_path):
    """Tensor by tensor (and the big embedding in row chunks) to keep memory low."""
    reader = gguf.GGUFReader(gemma_path)
    seen = set()
    for t in reader.tensors:
        gt = GGMLType(int(t.tensor_type))
        seen.add(gt)
        data = np.asarray(t.data)
        rows = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data[None]
        n_per_row = int(t.shape[0])
        for r0 in range(0, rows.shape[0], 16384):
            chunk = rows[r0 : r0 + 16384]
            expected = gguf.quants.dequantize(chunk, GQ(int(gt))).astype(np.float32)
            got = dequantize(chunk, gt, (chunk.shape[0], n_per_row))
            assert same_bits(got, expected.reshape(got.shape)), t.name
    assert {GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q5_0, GGMLType.Q8_0, GGMLType.F32} <= seen


def test_dequantize_errors_name_the_problem():
    with pytest.raises(QuantizationError, match=r"Q4_K data of 100 bytes .*\(256,\)"):
        dequantize(np.zeros(100, np.uint8), GGMLType.Q4_K, (256,))
    with pytest.raises(QuantizationError, match="type I8 is not supported; supported: F32, F16"):
        dequantize(np.zeros(84, np.uint8), GGMLType.I8, (84,))
    with pytest.raises(QuantizationError, match="type I8 is not supported"):
        blocks(np.zeros(4, np.uint8), GGMLType.I8)
    with pytest.raises(QuantizationError, match="35 bytes is not a whole number of Q8_0 blocks of 34"):
        blocks(np.zeros(35, np.uint8), GGMLType.Q8_0)


# ---------------------------------------------------------------------------------------
# primitives


def test_bf16_conversion_matches_gguf_py_on_every_kind_of_bit_pattern():
    rng = np.random.default_rng(3)
    u = rng.integers(0, 2**32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    u[:8] = [0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x7F7FFFFF, 0, 0x80000000]
    u[8:1000] = (u[8:1000] & 0xFFFF0000) | 0x8000  # exact ties: round half to even
    f = u.view(np.float32)
    assert np.array_equal(fp32_to_bf16(f), gguf.quants.quantize(f[None], GQ.BF16).view(np.uint16)[0])
    assert fp32_to_bf16(np.float32(np.nan)) & 0x40  # NaN stays a quiet NaN


def test_nearest_int_is_rint_below_2_pow_22_and_the_bit_trick_beyond():
    rng = np.random.default_rng(4)
    v = (rng.standard_normal(100000) * 1000).astype(np.float32)
    v[:2000] = np.arange(-1000, 1000, dtype=np.float32) + np.float32(0.5)  # every tie
    assert np.array_equal(nearest_int(v), np.rint(v).astype(np.int64))
    # 2^22 + 1.5*2^23 = 2^24: mantissa 0, so the trick wraps to -2^22 (ggml does the same)
    assert nearest_int(np.float32(2.0**22)) == -(2**22)


def test_roundf_is_half_away_from_zero():
    v = np.array([0.49999997, 0.5, -0.5, 1.5, 2.5, -2.5, -0.49999997, 126.5, 3.0], np.float32)
    assert roundf(v).tolist() == [0, 1, -1, 2, 3, -3, 0, 127, 3]


# ---------------------------------------------------------------------------------------
# quantize_ref (byte-exactness against llama.cpp itself is in test_quantize_golden.py)


def _data(rows=16, n=512, seed=5):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n)) * rng.choice([1e-3, 1.0, 30.0], (rows, 1))).astype(np.float32)
    x[0] = 0.0
    x[1] = 3.0
    x[2] = np.round(x[2] * 2) / 2  # ties
    return x


# gguf-py quantizes these types with llama.cpp's reference code (the K-quants are covered by
# the golden files of llama-quantize itself, test_quantize_golden.py)
@pytest.mark.parametrize("t", [GGMLType.Q8_0, GGMLType.Q4_1, GGMLType.Q5_1, GGMLType.Q4_0, GGMLType.Q5_0,
                               GGMLType.F16, GGMLType.BF16], ids=lambda t: t.name)  # fmt: skip
def test_quantize_ref_matches_gguf_py(t):
    x = _data()
    expected = gguf.quants.quantize(x, GQ(int(t))).view(np.uint8).reshape(x.shape[0], -1)
    assert np.array_equal(quantize_ref(x, t), expected)


def test_q4_0_all_negative_zero_block_keeps_cs_signed_zero():
    # C keeps max = +0.0 (no |v| beats 0), so d = 0/-8 = -0.0 (fp16 0x8000); gguf-py's argmax
    # picks -0.0 and gets +0.0, which is why this case is pinned here by hand
    x = np.full((1, 32), -0.0, np.float32)
    b = blocks(quantize_ref(x, GGMLType.Q4_0), GGMLType.Q4_0)
    assert b["d"].view(np.uint16)[0] == 0x8000
    assert (b["qs"] == 0x88).all()


def test_iq4_all_zero_blocks_follow_the_c():
    """IQ4_NL: d = fp16(+0.0), every index best_index(0) = 8 (0 is nearer 1 than -10).
    IQ4_XS: d = -max_scale/32 = -0.0 (fp16 0x8000), every 6-bit scale l + 32 = 32."""
    x = np.zeros((1, 256), np.float32)
    x[0, 32:64] = 1e-16  # below GROUP_MAX_EPS: a skipped sub-block, the same bytes
    nl = blocks(quantize_ref(x, GGMLType.IQ4_NL), GGMLType.IQ4_NL)
    assert (nl["d"].view(np.uint16) == 0).all() and (nl["qs"] == 0x88).all()
    xs = blocks(quantize_ref(x, GGMLType.IQ4_XS), GGMLType.IQ4_XS)
    assert xs["d"].view(np.uint16)[0] == 0x8000
    assert xs["scales_h"][0] == 0xAAAA and (xs["scales_l"] == 0).all() and (xs["qs"] == 0x88).all()


def test_iq4_nl_block_by_hand():
    """One block worked through §3.6: max 127 at element 0 with x = kvalues * 1 exactly, so the
    fitted scale is 1 and every element keeps its own grid value."""
    from tinyllm.quants.iq_grids import KVALUES

    idx = np.arange(32) % 16
    x = KVALUES[idx].astype(np.float32)[None, :]
    b = blocks(quantize_ref(x, GGMLType.IQ4_NL), GGMLType.IQ4_NL)
    assert b["d"][0] == np.float16(1.0)
    assert b["qs"][0].tolist() == (idx[:16] | (idx[16:] << 4)).tolist()
    assert np.array_equal(dequantize(b.view(np.uint8), GGMLType.IQ4_NL, (32,)), x[0])


def test_subnormal_block_scale_follows_x86_conversions():
    # amax 1e-40: d = amax/127 is a float32 subnormal, 1/d = inf, x*inf = inf (0*inf = NaN);
    # (int8_t) of those is the low byte of cvttss2si's INT32_MIN, i.e. 0, and fp16(d) = 0
    x = np.zeros((1, 32), np.float32)
    x[0, :4] = [1e-40, -1e-40, 5e-41, 0.0]
    for t in (GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q5_1):
        b = blocks(quantize_ref(x, t), t)
        assert b["d"][0] == 0 and (b["qs"] == 0).all(), t.name


@pytest.mark.parametrize("t", ROUNDTRIP_TYPES, ids=lambda t: t.name)
def test_quantization_error_within_test_quantize_fns_limit(t):
    """llama.cpp tests/test-quantize-fns.cpp: generate_data, array_rmse (root divided by n);
    the limit per type is its TypeSpec.max_quantization_error (kquants.md §6)."""
    limit = TYPES[t].max_quantization_error
    i = np.arange(32 * 128, dtype=np.float32)
    x = (0.1 + (np.float32(2.0) * np.cos(i)).astype(np.float64)).astype(np.float32)
    y = dequantize(quantize_ref(x[None], t), t, x.shape).astype(np.float64)
    err = np.sqrt(np.sum((y - x) ** 2)) / x.size
    assert err < limit
    assert err > 0 or t == GGMLType.F32  # the check is not vacuous: every type loses something on this data


def test_quantize_ref_k_quants_roundtrip_close_to_float64_input():
    # about half a grid step (range / nmax / 2 <= max / nmax), with 20% room for the
    # rounding of the 6/8-bit sub-block scales and fp16 super-scales
    x = _data(rows=8, n=1024)
    for t, rel in ((GGMLType.Q4_K, 1.2 / 15), (GGMLType.Q5_K, 1.2 / 31), (GGMLType.Q6_K, 1.2 / 31)):
        y = dequantize(quantize_ref(x, t), t, x.shape).astype(np.float64)
        scale = np.abs(x).max(axis=1, keepdims=True).astype(np.float64)
        assert (np.abs(y - x) <= rel * scale + 1e-30).all(), t.name


# ---------------------------------------------------------------------------------------
# activation quantizers (§3.8, §3.9)


def test_q8_K_ref_follows_section_3_8():
    x = _data(rows=4, n=512)
    x[3, 256:] = 0.0
    b = blocks(quantize_q8_K_ref(x), GGMLType.Q8_K).reshape(4, 2)
    xb = x.reshape(4, 2, 256).astype(np.float64)
    qs = b["qs"].astype(np.int64)
    assert np.array_equal(b["bsums"], qs.reshape(4, 2, 16, 16).sum(axis=3))
    assert (np.abs(qs) <= 127).all()
    for r, k in np.ndindex(4, 2):
        amax_i = int(np.argmax(np.abs(xb[r, k])))
        if xb[r, k, amax_i] == 0:
            assert b["d"][r, k] == 0 and (qs[r, k] == 0).all() and (b["bsums"][r, k] == 0).all()
            continue
        iscale = np.float32(-127.0) / np.float32(xb[r, k, amax_i])
        assert b["d"][r, k] == np.float32(1.0) / iscale  # float32 d, sign opposite to max
        assert qs[r, k, amax_i] == -127
        # every quant is x * iscale rounded to nearest (ties to even), computed in float64
        assert np.array_equal(qs[r, k], np.minimum(127, np.rint(xb[r, k] * np.float64(iscale))))
    y = dequantize(quantize_q8_K_ref(x), GGMLType.Q8_K, x.shape)
    assert np.allclose(y, x, atol=np.abs(x).max() / 127)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1",
                    reason="JIT off: Python raises converting the NaN element's quant, where Numba and C wrap")
@pytest.mark.parametrize("nan_bits", [0x7F800001, 0xFF800001, 0x7FC00000, 0x7FFFFFFF])
def test_q8_K_activation_scale_skips_every_nan_as_ggml(nan_bits):
    """ggml's `if (ax > amax)` is false for NaN, so a NaN never becomes the block's max: the
    scale and every other quant are those of the block without it, for every NaN pattern
    (the one just above Inf, 0x7F800001, included)."""
    from tinyllm.quants.act import Q8_K, quantize_act

    x = _data(rows=4, n=256)[3:]  # a random row (_data's first rows are zeros, constants, ties)
    clean = quantize_act(Q8_K, x)
    x[0, 77] = np.array([nan_bits], np.uint32).view(np.float32)[0]
    qs, d, _ = quantize_act(Q8_K, x)
    assert np.array_equal(d, clean[1])
    keep = np.arange(256) != 77
    assert np.array_equal(qs[0, keep], clean[0][0, keep])


def test_q8_K_rows_equal_the_twin():
    """The Numba row quantizer of Q8_K (the imatrix and quantize paths) writes the twin's bytes."""
    from tinyllm.quants.registry import quantize

    x = _data(rows=5, n=768)
    x[2, :256] = 0.0
    x[4, 512:] *= 1e-3
    assert np.array_equal(quantize(x, GGMLType.Q8_K, threads=1), quantize_q8_K_ref(x))


def test_q8_0_act_ref_is_rint_with_127_over_amax():
    x = _data(rows=4, n=128)
    b = blocks(quantize_q8_0_act_ref(x), GGMLType.Q8_0).reshape(4, 4)
    xb = x.reshape(4, 4, 32).astype(np.float64)
    amax = np.abs(xb).max(axis=2)
    with np.errstate(divide="ignore"):
        id = np.where(amax > 0, np.float32(127.0) / amax.astype(np.float32), 0).astype(np.float32)
    prod = (xb * id[..., None].astype(np.float64)).astype(np.float32)  # exact product, one rounding
    assert np.array_equal(b["qs"], np.clip(np.rint(prod), -128, 127))
    assert np.array_equal(b["d"], (amax.astype(np.float32) / np.float32(127)).astype(np.float16))


def test_q8_0_act_rounds_ties_to_even_where_the_file_quantizer_rounds_away():
    # amax 127: both multipliers are exactly 1, so the halves below are exact ties
    x = np.zeros((1, 32), np.float32)
    x[0, :6] = [-127.0, 0.5, 1.5, 2.5, -0.5, -3.5]
    act = blocks(quantize_q8_0_act_ref(x), GGMLType.Q8_0)["qs"][0, :6]
    ref = blocks(quantize_ref(x, GGMLType.Q8_0), GGMLType.Q8_0)["qs"][0, :6]
    assert act.tolist() == [-127, 0, 2, 2, 0, -4]
    assert ref.tolist() == [-127, 1, 2, 3, -1, -4]


# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("t", [GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.F16], ids=lambda t: t.name)
def test_quantize_ref_refuses_nan_and_inf_naming_the_row(t):
    x = _data(rows=5, n=256)
    x[3, 17] = np.nan
    with pytest.raises(QuantizationError, match=r"row 3 .*nan at column 17"):
        quantize_ref(x, t)
    x[3, 17] = 0
    x[2, 5] = -np.inf
    with pytest.raises(QuantizationError, match=r"row 2 .*-inf at column 5"):
        quantize_ref(x, t)


def test_quantize_ref_other_errors():
    with pytest.raises(QuantizationError, match="row length 100 is not a multiple of the Q4_K block size 256"):
        quantize_ref(np.zeros((2, 100), np.float32), GGMLType.Q4_K)
    with pytest.raises(QuantizationError, match="type I8 is not supported"):
        quantize_ref(np.zeros((1, 256), np.float32), GGMLType.I8)
    x = np.zeros((3, 32), np.float32)
    x[2, 0] = 1e7  # d = 1e7/127 > 65504: fp16 Inf, which ggml_validate_row_data rejects
    with pytest.raises(QuantizationError, match=r"row 2: Q8_0 block scale d overflows fp16 .* is 1e\+07\)"):
        quantize_ref(x, GGMLType.Q8_0)
