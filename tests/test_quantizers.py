"""The Numba row quantizers of the type modules (registry.quantize) against their NumPy twins
(registry.quantize_ref), on random data and on edge rows; both against llama-quantize's bytes
for the edge rows and rows on every threshold (tests/data/golden/quant/edges.*); nearest_int
against its NumPy twin; the error paths. Byte-identity with llama.cpp on whole files is in
test_quantize_golden.py, the fp16 and bf16 conversions in test_fp16.py."""
import hashlib
import json
import re
from pathlib import Path

import numba
import numpy as np
import pytest

from tinyllm.errors import QuantizationError, UsageError
from tinyllm.quants import fit, q2_k, q4_1, q4_k
from tinyllm.quants import registry as Q
from tinyllm.quants.rounding import nearest_int, nearest_int_np
from tinyllm.quants.types import GGMLType, row_nbytes

ALL_TYPES = [*Q.QUANTIZE_TYPES, GGMLType.Q8_K]


class R:
    quantize_ref = staticmethod(Q.quantize_ref)


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


def plain_imatrix(t, n):
    """None, or for the types ggml quantizes only with an imatrix (IQ2_XXS, IQ2_XS, IQ1_S) ones."""
    return np.ones(n, np.float32) if Q.TYPES[t].needs_imatrix else None


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_numba_equals_numpy_twin(rows, t):
    if t == GGMLType.F16:  # values past 65504 are an error for F16 (tested below)
        rows = rows[np.abs(rows).max(axis=1) < 65504]
    qw = plain_imatrix(t, rows.shape[1])
    got = Q.quantize(rows, t, imatrix=qw)
    expected = R.quantize_ref(rows, t, imatrix=qw)
    assert got.shape == (rows.shape[0], row_nbytes(t, rows.shape[1]))
    bad = np.nonzero((got != expected).any(axis=1))[0]
    assert bad.size == 0, f"rows {bad.tolist()} differ"


EDGE_DIR = Path(__file__).resolve().parent / "data" / "golden" / "quant"
EDGES = json.loads((EDGE_DIR / "edges.json").read_text())


@pytest.mark.parametrize("quantizer", ["numba", "numpy"])
@pytest.mark.parametrize("name", sorted(EDGES["types"]))
def test_edge_and_threshold_rows_give_llama_quantize_bytes(name, quantizer):
    """edges.npy: edge_rows(256), a Q6_K block whose largest sub-block scale is exactly
    GROUP_MAX_EPS (kept, not zeroed, as ggml's `<` keeps it), and rows whose groups peak exactly
    at, or one ulp below, each group threshold; llama-quantize's bytes as sha256 per row
    (tests/data/make_edges_golden.py)."""
    rows = np.load(EDGE_DIR / "edges.npy")
    assert rows.shape == (EDGES["rows"], 256)
    t = GGMLType[name]
    got = (Q.quantize if quantizer == "numba" else Q.quantize_ref)(rows, t)
    got = np.asarray(got).view(np.uint8).reshape(len(rows), row_nbytes(t, 256))
    bad = [i for i, h in enumerate(EDGES["types"][name]) if hashlib.sha256(got[i].tobytes()).hexdigest() != h]
    assert not bad, f"{name} rows {bad} differ from llama-quantize's"


IMATRIX_TYPES = [t for t in ALL_TYPES if Q.TYPES[t].uses_imatrix]


def imatrix_weights(n: int, seed: int = 1) -> np.ndarray:
    """Per-column weights as llama-quantize passes them (mean x² of the activations): spread over
    six orders of magnitude, with zero columns (a never-seen input) and a few dominant ones."""
    rng = np.random.default_rng(seed)
    w = np.exp(rng.normal(0.0, 2.0, n)).astype(np.float32)
    w[rng.choice(n, n // 16, replace=False)] = 0.0
    w[rng.choice(n, n // 64, replace=False)] *= np.float32(1e4)
    return w


def test_imatrix_types_are_those_with_an_impl_path():
    assert set(IMATRIX_TYPES) == {GGMLType.Q2_K, GGMLType.Q3_K, GGMLType.Q4_0, GGMLType.Q5_0, GGMLType.Q4_1,
                                  GGMLType.Q5_1, GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K,
                                  GGMLType.IQ4_NL, GGMLType.IQ4_XS, GGMLType.IQ3_S,
                                  GGMLType.IQ3_XXS, GGMLType.IQ2_XXS, GGMLType.IQ2_XS, GGMLType.IQ2_S,
                                  GGMLType.IQ1_S, GGMLType.IQ1_M}


@pytest.mark.parametrize("t", IMATRIX_TYPES, ids=lambda t: t.name)
def test_numba_equals_numpy_twin_with_an_imatrix(rows, t):
    qw = imatrix_weights(rows.shape[1])
    got = Q.quantize(rows, t, imatrix=qw)
    bad = np.nonzero((got != R.quantize_ref(rows, t, imatrix=qw)).any(axis=1))[0]
    assert bad.size == 0, f"rows {bad.tolist()} differ"
    assert (got != Q.quantize(rows, t, imatrix=plain_imatrix(t, rows.shape[1]))).any()  # the weights are used
    ones = Q.quantize(rows, t, imatrix=np.ones(rows.shape[1], np.float32))
    assert np.array_equal(ones, R.quantize_ref(rows, t, imatrix=np.ones(rows.shape[1], np.float32)))


def test_an_imatrix_is_ignored_where_llama_cpp_ignores_it(rows):
    qw = imatrix_weights(rows.shape[1])
    for t in (GGMLType.Q8_0, GGMLType.F16, GGMLType.BF16, GGMLType.F32):
        x = rows[np.abs(rows).max(axis=1) < 65504]
        assert np.array_equal(Q.quantize(x, t, imatrix=qw), Q.quantize(x, t)), t.name
    with pytest.raises(QuantizationError, match="importance matrix has 100 values for rows of 512"):
        Q.quantize(rows, GGMLType.Q4_K, imatrix=np.ones(100, np.float32))


@pytest.mark.parametrize("t, with_imatrix", [(GGMLType.Q2_K, False), (GGMLType.Q2_K, True), (GGMLType.Q4_1, True),
                                             (GGMLType.Q5_1, True)], ids=["Q2_K", "Q2_K-imatrix", "Q4_1-imatrix",
                                                                          "Q5_1-imatrix"])
def test_scalar_fallback_fit_equals_the_lanes_of_q2_k_and_q4_1(rows, t, with_imatrix):
    """As below, for the other fits that run in lanes (Q4_1/Q5_1 fit only with an imatrix)."""
    qw = imatrix_weights(rows.shape[1]) if with_imatrix else np.zeros(0, np.float32)
    out = {}
    for limit in (np.float32(0.0), fit.LIMIT):
        o = np.empty((rows.shape[0], row_nbytes(t, rows.shape[1])), np.uint8)
        status = np.zeros(rows.shape[0], np.int8)
        if t == GGMLType.Q2_K:
            q2_k.quantize_rows_q2(rows, rows.view(np.uint32), o, status, qw, limit)
        else:
            q4_1.quantize_rows_x_1(rows, rows.view(np.uint32), o, status, qw, 31 if t == GGMLType.Q5_1 else 15,
                                   t == GGMLType.Q5_1, limit)
        assert not status.any()
        out[float(limit)] = o
    assert np.array_equal(out[0.0], out[float(fit.LIMIT)])
    assert np.array_equal(out[0.0], R.quantize_ref(rows, t, imatrix=qw if with_imatrix else None))


def imatrix_weight_sets(n: int, seed: int) -> list[np.ndarray]:
    """Column weights as llama-quantize passes them: a log-normal spread with dominant columns,
    one with zero and tiny columns, and a constant one."""
    rng = np.random.default_rng(seed)
    spread = np.exp(rng.normal(0, 2, n)).astype(np.float32)
    holes = spread.copy()
    holes[::5] = 0.0
    holes[3::7] = 1e-30
    holes[:32] = 0.0  # a whole block of zero weights: sumq2 = 0, d = 0
    return [spread, holes, np.full(n, 0.25, np.float32)]


@pytest.mark.parametrize("t", IMATRIX_TYPES, ids=lambda t: t.name)
def test_numba_equals_numpy_twin_with_holes_in_the_imatrix(rows, t):
    plain = Q.quantize(rows, t, imatrix=plain_imatrix(t, rows.shape[1]))
    for i, qw in enumerate(imatrix_weight_sets(rows.shape[1], seed=int(t))):
        got = Q.quantize(rows, t, imatrix=qw)
        bad = np.nonzero((got != R.quantize_ref(rows, t, imatrix=qw)).any(axis=1))[0]
        assert bad.size == 0, f"imatrix {i}: rows {bad.tolist()} differ"
        if Q.TYPES[t].needs_imatrix and np.ptp(qw) == 0:
            continue  # these types only ever see weights; a constant set is the ones of `plain`
        assert (got != plain).any(), f"imatrix {i} changed nothing"


def _best_index_c(x: np.float32) -> int:
    """ggml-quants.c best_index_int8(16, kvalues_iq4nl, x), line by line in float32."""
    from tinyllm.quants.iq_grids import KVALUES

    val = KVALUES.astype(np.float32)
    if x <= val[0]:
        return 0
    if x >= val[15]:
        return 15
    ml, mu = 0, 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < val[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if np.float32(x - val[mu - 1]) < np.float32(val[mu] - x) else mu


def test_iq4_best_index_matches_the_c_binary_search():
    """Both the Numba best_index (a branch-free count) and its NumPy twin against the C's
    binary search: every grid value, every midpoint (a tie goes to the upper value) and one
    float32 step either side, the ends, infinities, NaN, random values."""
    from tinyllm.quants.iq4_nl import KV_F32, best_index, best_index_np

    mid = (KV_F32[:-1] + KV_F32[1:]) / np.float32(2)
    near = np.concatenate([KV_F32, mid, np.nextafter(mid, np.float32(-np.inf)), np.nextafter(mid, np.float32(np.inf))])
    rng = np.random.default_rng(8)
    x = np.concatenate([near, [-1e30, 1e30, -np.inf, np.inf, np.nan, -0.0, 0.0],
                        (rng.standard_normal(4000) * 80).astype(np.float32)]).astype(np.float32)  # fmt: skip
    want = np.array([_best_index_c(v) for v in x])
    assert np.array_equal(np.array([best_index(v) for v in x]), want)
    assert np.array_equal(best_index_np(x), want)
    assert want[16:31].tolist() == list(range(1, 16))  # the midpoints: the upper index


@pytest.mark.parametrize("t", [GGMLType.Q4_K, GGMLType.Q5_K], ids=lambda t: t.name)
def test_scalar_fallback_fit_equals_the_lanes(rows, t):
    """Guard bound 0 sends every sub-block through the scalar make_qkx2_quants; the result
    must not change (the lanes path is what normal input takes)."""
    five = t == GGMLType.Q5_K
    out = {}
    for limit in (np.float32(0.0), fit.LIMIT):
        o = np.empty((rows.shape[0], row_nbytes(t, rows.shape[1])), np.uint8)
        status = np.zeros(rows.shape[0], np.int8)
        q4_k.quantize_rows_kmin(rows, rows.view(np.uint32), o, status, five, limit, np.zeros(0, np.float32))
        imx = np.empty_like(o)
        qw = imatrix_weights(rows.shape[1])
        q4_k.quantize_rows_kmin(rows, rows.view(np.uint32), imx, status, five, limit, qw)
        assert np.array_equal(imx, R.quantize_ref(rows, t, imatrix=qw))
        assert not status.any()
        out[float(limit)] = o
    assert np.array_equal(out[0.0], out[float(fit.LIMIT)])
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
# nearest_int


@numba.njit
def _map_nearest(v, out):
    for i in range(v.shape[0]):
        out[i] = nearest_int(v[i])


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
    assert np.array_equal(got, nearest_int_np(v))


# ---------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_nan_and_inf_refused_naming_the_row(t):
    x = np.random.default_rng(4).standard_normal((6, 512), dtype=np.float32)
    x[4, 300] = np.nan
    qw = plain_imatrix(t, 512)
    with pytest.raises(QuantizationError, match=r"row 4 holds a non-finite value \(nan at column 300\)"):
        Q.quantize(x, t, imatrix=qw)
    x[4, 300] = 0.0
    x[1, 7] = np.inf
    x[5, 0] = -np.inf
    with pytest.raises(QuantizationError, match=rf"row 1 holds a non-finite value \(inf at column 7\).* {t.name}"):
        Q.quantize(x, t, imatrix=qw)


@pytest.mark.parametrize("t", [GGMLType.IQ2_XXS, GGMLType.IQ2_XS, GGMLType.IQ1_S], ids=lambda t: t.name)
def test_types_that_need_an_imatrix_refuse_to_quantize_without(t):
    """ggml_quantize_requires_imatrix: ggml asserts; both quantizers raise naming the type."""
    x = np.ones((2, 256), np.float32)
    for quantizer in (Q.quantize, R.quantize_ref):
        with pytest.raises(QuantizationError, match=rf"quantizing to {t.name} needs an importance matrix"):
            quantizer(x, t)


@pytest.mark.parametrize(
    "t, value",
    [(GGMLType.Q8_0, 1e7), (GGMLType.Q4_0, 1e6), (GGMLType.Q5_1, -1e5), (GGMLType.Q4_K, 1e8),
     (GGMLType.Q6_K, 1e10), (GGMLType.F16, 7e4), (GGMLType.IQ4_NL, 1e7), (GGMLType.IQ4_XS, 1e9),
     (GGMLType.IQ3_S, 1e8), (GGMLType.IQ3_XXS, 1e8), (GGMLType.IQ2_S, 1e8), (GGMLType.IQ1_M, 1e8)],
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
    with pytest.raises(QuantizationError, match="type I8 is not supported"):
        Q.quantize(np.zeros((2, 256), np.float32), GGMLType.I8)
    with pytest.raises(QuantizationError, match=r"2-D .* got shape \(2, 2, 256\)"):
        Q.quantize(np.zeros((2, 2, 256), np.float32), GGMLType.Q8_0)
    with pytest.raises(UsageError, match="threads must be at least 1, got 0"):
        Q.quantize(np.zeros((2, 256), np.float32), GGMLType.Q8_0, threads=0)
