"""The Numba quantizers (tinyllm.quants.quantize) against their NumPy twins in
tinyllm.quants.reference, on random data and on edge rows; the bit-level fp16/bf16/nearest_int
helpers against NumPy and gguf-py; the error paths. Byte-identity with llama.cpp itself is
in test_quantize_golden.py."""
import re

import gguf
import numba
import numpy as np
import pytest

from tinyllm.errors import QuantizationError, UsageError
from tinyllm.quants import quantize as Q
from tinyllm.quants import reference as R
from tinyllm.quants.types import GGMLType, row_nbytes

ALL_TYPES = list(Q.QUANTIZE_TYPES)


def edge_rows(n: int, seed: int = 0) -> np.ndarray:
    """Rows of length n (a multiple of 256) that hit the special cases of §3."""
    rng = np.random.default_rng(seed)
    rows = [
        np.zeros(n),  # all zero: d = dmin = 0
        np.full(n, -0.0),  # negative zero: signs of zero must follow C
        np.full(n, 3.0),  # constant positive: min reset to 0
        np.full(n, -2.5),  # constant negative: scale 0, min = -c, sub-blocks skipped
        np.round(rng.standard_normal(n) * 8) / 2,  # ties in every rounding step
        rng.standard_normal(n) * 1e-30,  # tiny: below GROUP_MAX_EPS in places
        rng.standard_normal(n) * 1e-40,  # float32 subnormals
        rng.standard_normal(n) * 1e4,  # huge, but every fp16 scale and min still finite
        np.where(np.arange(n) % 2 == 0, 1.0, -1.0),  # alternating signs, equal magnitudes
        np.arange(n) % 7 - 3.0,  # small integers
        np.abs(rng.standard_normal(n)) + 1.0,  # all positive
        -np.abs(rng.standard_normal(n)) - 1.0,  # all negative
    ]
    spike = rng.standard_normal(n) * 0.01
    spike[::97] = 40.0  # outliers in a quiet row
    rows.append(spike)
    mixed = rng.standard_normal(n)
    mixed[:32] = 0.0  # a zero sub-block next to normal ones
    mixed[32:64] = -4.0  # a constant negative sub-block
    mixed[64:80] = 1e-9  # a tiny Q6_K sub-block
    mixed[200:256] *= 1e-4  # small sub-blocks in a super-block with large ones
    rows.append(mixed)
    x = np.array(rows, dtype=np.float32)
    # magnitudes from 1e-6 to 1e4, like the spread of real weight rows
    scales = 10.0 ** rng.uniform(-6, 4, (16, 1))
    return np.concatenate([x, (rng.standard_normal((16, n)) * scales).astype(np.float32)])


@pytest.fixture(scope="module")
def rows():
    return edge_rows(512)


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_numba_equals_numpy_twin(rows, t):
    if t == GGMLType.F16:  # values past 65504 are an error for F16 (tested below)
        rows = rows[np.abs(rows).max(axis=1) < 65504]
    got = Q.quantize(rows, t)
    expected = R.quantize_ref(rows, t)
    assert got.shape == (rows.shape[0], row_nbytes(t, rows.shape[1]))
    bad = np.nonzero((got != expected).any(axis=1))[0]
    assert bad.size == 0, f"rows {bad.tolist()} differ"


@pytest.mark.parametrize("t", [GGMLType.Q4_K, GGMLType.Q5_K], ids=lambda t: t.name)
def test_scalar_fallback_fit_equals_the_lanes(rows, t):
    """Guard bound 0 sends every sub-block through the scalar make_qkx2_quants; the result
    must not change (the lanes path is what normal input takes)."""
    five = t == GGMLType.Q5_K
    out = {}
    for limit in (np.float32(0.0), Q._LIMIT):
        o = np.empty((rows.shape[0], row_nbytes(t, rows.shape[1])), np.uint8)
        status = np.zeros(rows.shape[0], np.int8)
        Q._rows_k4_k5(rows, rows.view(np.uint32), o, status, five, limit)
        assert not status.any()
        out[float(limit)] = o
    assert np.array_equal(out[0.0], out[float(Q._LIMIT)])
    assert np.array_equal(out[0.0], R.quantize_ref(rows, t))


@pytest.mark.parametrize("t", [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q8_0], ids=lambda t: t.name)
def test_threads_do_not_change_bytes(t):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 4096), dtype=np.float32)  # several row slices per thread
    one = Q.quantize(x, t, threads=1)
    assert np.array_equal(Q.quantize(x, t, threads=2), one)
    assert np.array_equal(Q.quantize(x, t, threads=3), one)
    assert np.array_equal(R.quantize_ref(x[:4], t), one[:4])


def test_shapes_one_row_and_empty():
    x = np.linspace(-1, 1, 256, dtype=np.float32)
    assert np.array_equal(Q.quantize(x, GGMLType.Q6_K), R.quantize_ref(x[None], GGMLType.Q6_K))
    assert Q.quantize(np.zeros((0, 256), np.float32), GGMLType.Q4_K).shape == (0, 144)
    # non-contiguous float64 input is converted (once) to contiguous float32
    y = np.tile(x.astype(np.float64), (3, 2))[:, ::2]
    assert np.array_equal(Q.quantize(y, GGMLType.Q8_0), R.quantize_ref(y.astype(np.float32), GGMLType.Q8_0))


# ---------------------------------------------------------------------------------------
# bit-level helpers


@numba.njit
def _map_f2h(f, out):
    for i in range(f.shape[0]):
        out[i] = Q.fp32_to_fp16_bits(f[i])


@numba.njit
def _map_h2f(h, out):
    for i in range(h.shape[0]):
        out[i] = Q.fp16_bits_to_fp32(h[i])


@numba.njit
def _map_bf16(f, out):
    for i in range(f.shape[0]):
        out[i] = Q.fp32_to_bf16_bits(f[i])


@numba.njit
def _map_nearest(v, out):
    for i in range(v.shape[0]):
        out[i] = Q.nearest_int(v[i])


def _interesting_floats(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    # the fp16 range in detail: every exponent from subnormal to overflow, with ties
    e = rng.integers(100, 145, 1 << 18, dtype=np.uint32)
    m = rng.integers(0, 1 << 23, 1 << 18, dtype=np.uint32)
    m[::3] = (m[::3] & ~np.uint32(0x1FFF)) | 0x1000  # exact fp16 ties
    u[: 1 << 18] = (e << 23) | m | (rng.integers(0, 2, 1 << 18, dtype=np.uint32) << 31)
    edges = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x477FE000, 0x477FEFFF,
             0x477FF000, 0x38800000, 0x387FFFFF, 0x33000000, 0x33000001, 0x32FFFFFF, 0x33800000,
             0x00000001]  # fmt: skip
    u[-len(edges) :] = edges
    return u.view(np.float32)


def test_fp32_to_fp16_bits_matches_numpy_round_to_nearest_even():
    f = _interesting_floats(1)
    got = np.empty(f.size, np.int64)
    _map_f2h(f, got)
    with np.errstate(over="ignore"):
        expected = f.astype(np.float16).view(np.uint16).astype(np.int64)
    nan = np.isnan(f)
    assert np.array_equal(got[~nan], expected[~nan])
    assert (got[nan] & 0x7FFF == 0x7E00).all()  # ggml's NaN, sign copied


def test_fp16_bits_to_fp32_is_exact_for_all_65536_patterns():
    h = np.arange(1 << 16, dtype=np.int64)
    got = np.empty(h.size, np.float32)
    _map_h2f(h, got)
    expected = h.astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))


def test_fp32_to_bf16_bits_matches_gguf_py():
    f = _interesting_floats(2)
    got = np.empty(f.size, np.int64)
    _map_bf16(f, got)
    expected = gguf.quants.quantize(f[None], gguf.GGMLQuantizationType.BF16).view(np.uint16)[0]
    assert np.array_equal(got, expected.astype(np.int64))


def test_nearest_int_matches_the_reference_bit_trick_everywhere():
    rng = np.random.default_rng(3)
    v = np.concatenate(
        [
            (rng.standard_normal(1 << 16) * 100).astype(np.float32),
            np.arange(-200, 200, dtype=np.float32) + np.float32(0.5),
            (rng.standard_normal(1 << 12) * 1e8).astype(np.float32),  # past 2^22: ggml's garbage
        ]
    )
    got = np.empty(v.size, np.int64)
    _map_nearest(v, got)
    assert np.array_equal(got, R.nearest_int(v))


# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_nan_and_inf_refused_naming_the_row(t):
    x = np.random.default_rng(4).standard_normal((6, 512), dtype=np.float32)
    x[4, 300] = np.nan
    with pytest.raises(QuantizationError, match=r"row 4 holds a non-finite value \(nan at column 300\)"):
        Q.quantize(x, t)
    x[4, 300] = 0.0
    x[1, 7] = np.inf
    x[5, 0] = -np.inf
    with pytest.raises(QuantizationError, match=rf"row 1 holds a non-finite value \(inf at column 7\).* {t.name}"):
        Q.quantize(x, t)


@pytest.mark.parametrize(
    "t, value",
    [(GGMLType.Q8_0, 1e7), (GGMLType.Q4_0, 1e6), (GGMLType.Q5_1, -1e5), (GGMLType.Q4_K, 1e8),
     (GGMLType.Q6_K, 1e10), (GGMLType.F16, 7e4)],
    ids=lambda v: getattr(v, "name", str(v)),
)  # fmt: skip
def test_fp16_scale_overflow_refused_naming_the_row(t, value):
    """ggml_validate_row_data rejects blocks whose fp16 d/dmin/m is Inf; so do both quantizers."""
    x = np.random.default_rng(5).standard_normal((4, 256), dtype=np.float32)
    x[2, 100] = value
    for quantizer in (Q.quantize, R.quantize_ref):
        big = re.escape(f"{abs(value):g}")
        with pytest.raises(QuantizationError, match=rf"row 2: {t.name} .* overflows fp16 .* is {big}\)"):
            quantizer(x, t)


def test_bad_arguments():
    with pytest.raises(QuantizationError, match="row length 300 is not a multiple of the Q8_0 block size 32"):
        Q.quantize(np.zeros((2, 300), np.float32), GGMLType.Q8_0)
    with pytest.raises(QuantizationError, match="cannot quantize to type Q3_K"):
        Q.quantize(np.zeros((2, 256), np.float32), GGMLType.Q3_K)
    with pytest.raises(QuantizationError, match=r"2-D .* got shape \(2, 2, 256\)"):
        Q.quantize(np.zeros((2, 2, 256), np.float32), GGMLType.Q8_0)
    with pytest.raises(UsageError, match="threads must be at least 1, got 0"):
        Q.quantize(np.zeros((2, 256), np.float32), GGMLType.Q8_0, threads=0)
