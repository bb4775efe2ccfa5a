"""tinyllm.quants.fp16, the one place fp16 and bf16 conversions are written, against NumPy's
IEEE conversions and gguf-py: every one of the 65,536 fp16 bit patterns (subnormals, Inf and
NaN included), and float32 inputs at every fp16 rounding boundary."""
import gguf
import numba
import numpy as np
import pytest

from tinyllm.quants import fp16

ALL_HALVES = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
EXPECTED = ALL_HALVES.view(np.float16).astype(np.float32)  # NumPy keeps NaN payloads, as ggml


def same_bits(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@numba.njit
def _map_h2f(h, out):
    for i in range(h.shape[0]):
        out[i] = fp16.fp16_bits_to_fp32(h[i])


@numba.njit
def _map_f2h(f, out):
    for i in range(f.shape[0]):
        out[i] = fp16.fp32_to_fp16_bits(f[i])


@numba.njit
def _map_f2h_finite(f, out):
    for i in range(f.shape[0]):
        out[i] = fp16.fp32_to_fp16_bits_finite(f[i])


@numba.njit
def _map_round(f, out):
    for i in range(f.shape[0]):
        out[i] = fp16.fp16_round(f[i])


@numba.njit
def _map_bf16(f, out):
    for i in range(f.shape[0]):
        out[i] = fp16.fp32_to_bf16_bits(f[i])


@numba.njit
def _widen_all(dst, src):
    for o in range(0, src.shape[0], 16):
        fp16.widen_f16x16(dst, o, src, o)


def boundary_floats() -> np.ndarray:
    """float32 values where fp16 rounding decides: every fp16 value, its float32 neighbours,
    every exact midpoint between consecutive fp16 values and the float32s beside it, the
    overflow edge, float32 subnormals and specials, and random bit patterns."""
    v = EXPECTED[np.isfinite(EXPECTED)]
    pos = np.unique(np.abs(v))  # 0 .. 65504, ascending
    mid = ((pos[:-1].astype(np.float64) + pos[1:]) / 2).astype(np.float32)  # exact in float32
    top = np.float32(65504 + 16)  # the tie between 65504 and the next (overflowing) step
    core = np.concatenate([pos, mid, [top, np.float32(65519.996), np.float32(1e9)]])
    near = np.concatenate([core, np.nextafter(core, np.float32(np.inf)), np.nextafter(core, np.float32(0))])
    rng = np.random.default_rng(1)
    rand = rng.integers(0, 2**32, 1 << 18, dtype=np.uint64).astype(np.uint32).view(np.float32)
    specials = np.array([0x00000001, 0x007FFFFF, 0x7F800000, 0x7FC00000, 0x7F800001, 0x33000000, 0x33000001],
                        np.uint32).view(np.float32)  # fmt: skip
    f = np.concatenate([near, -near, rand, specials, -specials]).astype(np.float32)
    return f


# ---------------------------------------------------------------------------------------------
# fp16 -> float32


def test_fp16_bits_to_fp32_every_pattern():
    got = np.empty(1 << 16, np.float32)
    _map_h2f(ALL_HALVES.astype(np.int64), got)
    assert same_bits(got, EXPECTED)


def test_f16_row_to_f32_every_pattern():
    got = np.full(1 << 16, np.nan, np.float32)
    fp16.f16_row_to_f32(got, ALL_HALVES)
    assert same_bits(got, EXPECTED)
    assert np.isposinf(got[0x7C00]) and np.isneginf(got[0xFC00]) and np.isnan(got[0x7C01])


def test_widen_f16x16_every_pattern():
    """F16C's vcvtph2ps: exact, except that it quiets signalling NaNs (still NaN)."""
    if not fp16_has_f16c():
        pytest.skip("this CPU has no F16C (the AVX2 kernels, the only users, do not run here)")
    got = np.empty(1 << 16, np.float32)
    _widen_all(got, ALL_HALVES)
    nan = np.isnan(EXPECTED)
    assert same_bits(got[~nan], EXPECTED[~nan])
    assert np.isnan(got[nan]).all()


def fp16_has_f16c() -> bool:
    from tinyllm.quants.simd import HAS_AVX2

    return HAS_AVX2


def test_numpy_fp16_to_fp32_from_bits_and_bytes():
    assert same_bits(fp16.fp16_to_fp32(ALL_HALVES), EXPECTED)
    as_bytes = ALL_HALVES.astype("<u2").view(np.uint8).reshape(-1, 2)
    assert same_bits(fp16.fp16_to_fp32(as_bytes), EXPECTED)


# ---------------------------------------------------------------------------------------------
# float32 -> fp16


def test_fp32_to_fp16_bits_round_to_nearest_even():
    f = boundary_floats()
    got = np.empty(f.size, np.int64)
    _map_f2h(f, got)
    with np.errstate(over="ignore"):
        expected = f.astype(np.float16).view(np.uint16).astype(np.int64)
    nan = np.isnan(f)
    assert np.array_equal(got[~nan], expected[~nan])
    assert (got[nan] & 0x7FFF == 0x7E00).all()  # ggml's quiet NaN, sign copied
    assert (got[nan] >> 15 == (f[nan].view(np.uint32) >> 31)).all()


def test_fp32_to_fp16_bits_every_fp16_value_round_trips():
    f = EXPECTED[~np.isnan(EXPECTED)]
    got = np.empty(f.size, np.int64)
    _map_f2h(f, got)
    assert np.array_equal(got, ALL_HALVES[~np.isnan(EXPECTED)].astype(np.int64))


def test_fp32_to_fp16_bits_finite_equals_the_exact_conversion_below_65504():
    f = boundary_floats()
    f = f[np.abs(f) < 65504]  # its documented range (NaN drops out too)
    got = np.empty(f.size, np.uint32)
    _map_f2h_finite(f, got)
    expected = np.empty(f.size, np.int64)
    _map_f2h(f, expected)
    assert np.array_equal(got.astype(np.int64), expected)


def test_f32_row_to_f16_and_fp16_round():
    f = boundary_floats()
    row = np.empty(f.size, np.uint16)
    fp16.f32_row_to_f16(row, f)
    bits = np.empty(f.size, np.int64)
    _map_f2h(f, bits)
    assert np.array_equal(row.astype(np.int64), bits)
    r = np.empty(f.size, np.float32)
    _map_round(f, r)
    with np.errstate(over="ignore"):
        expected = f.astype(np.float16).astype(np.float32)
    nan = np.isnan(f)
    assert same_bits(r[~nan], expected[~nan]) and np.isnan(r[nan]).all()


def test_numpy_fp32_to_fp16_rounds_from_float32():
    # a float64 input rounded twice (to float32, then fp16) would give another fp16 here
    x = np.float64(1.0) + 2.0**-11 + 2.0**-30  # just above the tie between 1 and 1+2^-10
    assert fp16.fp32_to_fp16(x).view(np.uint16) == np.float16(np.float32(x)).view(np.uint16)


# ---------------------------------------------------------------------------------------------
# bf16


def test_bf16_numba_and_numpy_match_gguf_py():
    f = np.concatenate([boundary_floats(), (ALL_HALVES.astype(np.uint32) << 16).view(np.float32)])
    u = f.view(np.uint32).copy()
    u[:2000] = (u[:2000] & 0xFFFF0000) | 0x8000  # exact ties: round half to even
    f = u.view(np.float32)
    expected = gguf.quants.quantize(f[None], gguf.GGMLQuantizationType.BF16).view(np.uint16)[0]
    got = np.empty(f.size, np.int64)
    _map_bf16(f, got)
    assert np.array_equal(got, expected.astype(np.int64))
    assert np.array_equal(fp16.fp32_to_bf16(f), expected)
    assert fp16.fp32_to_bf16(np.float32(np.nan)) & 0x40  # NaN stays a quiet NaN


def test_bf16_to_fp32_every_pattern():
    got = fp16.bf16_to_fp32(ALL_HALVES)
    assert np.array_equal(got.view(np.uint32), ALL_HALVES.astype(np.uint32) << 16)
