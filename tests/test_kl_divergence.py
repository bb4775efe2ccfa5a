"""KL divergence against a base model's log-probabilities (tinyllm.kl_divergence, `tinyllm
perplexity --kl-divergence-base/--kl-divergence`) against llama-perplexity.

Reference files (tests/data/golden/kld, made by tests/data/make_quality_refs.py): base.kld,
written by llama-perplexity --kl-divergence-base on the tiny F32 model of
golden/quality-models.json over golden/imatrix/text.txt (-c 64 -b 64 --chunks 4, stdout in
base.stdout.txt), and llama-perplexity's --kl-divergence report for tinyllm's Q4_K_M of that
model (byte-identical to llama-quantize's) against base.kld (kld-Q4_K_M.stdout.txt).

Why the tolerances: both tools get the same integer sums from the quantized blocks, but the
float activations differ in their last bits, and now and then one lies on the other side of a
Q8_K rounding boundary (checked by hand: nudging the one activation element 2 ulp makes that
position agree to the stored precision). One such flip moves that position's log-probabilities
by ~0.03 here, and through attention also the later positions of its chunk, so the figures of
the random tiny model agree to ~2e-4 (PPL) and ~1e-3 (KLD), and the percentiles of 124
positions a little less.
"""
import hashlib
import json
import re

import numpy as np
import pytest

import tinyllm
from tinyllm.cli import main
from tinyllm.cli.options import read_text_file
from tinyllm.cli.perplexity_command import TABLE_HEADER, format_row, format_statistics
from tinyllm.errors import UsageError
from tinyllm.kl_divergence import (
    KLSums, compress_log_probs, kl_divergence, n_scored, read_kl_base, row_length, unpack_rows,
)
from tinyllm.model import load
from tinyllm.perplexity import perplexity

from tinymodels import make_tiny_model

N_CTX, N_CHUNKS = 64, 4
NUM = re.compile(r"-?\d+\.\d+|-?\d+")


@pytest.fixture(scope="module")
def ref_dir(golden):
    return golden / "kld"


@pytest.fixture(scope="module")
def paths(tmp_path_factory, golden):
    models = json.loads((golden / "quality-models.json").read_text())
    folder = tmp_path_factory.mktemp("kld")
    f32 = make_tiny_model(folder, **models["recipe"])
    q = folder / "model-Q4_K_M.gguf"
    tinyllm.quantize(f32, q, "Q4_K_M")
    for path, key in ((f32, "model.gguf"), (q, "model-Q4_K_M.gguf")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != models[key]:
            pytest.fail(f"{path.name} is not the {key} of golden/quality-models.json ({digest[:12]}...)")
    return f32, q


@pytest.fixture(scope="module")
def qmodel(paths):
    return load(paths[1], n_ctx=N_CTX, threads=1)


@pytest.fixture(scope="module")
def result(qmodel, ref_dir):
    return kl_divergence(qmodel, ref_dir / "base.kld")


def llama_report(ref_dir):
    """llama-perplexity's --kl-divergence stdout from the table header on, as lines."""
    lines = (ref_dir / "kld-Q4_K_M.stdout.txt").read_text().split("\n")
    return lines[lines.index(TABLE_HEADER):]


def llama_stats(ref_dir) -> dict[str, list[float]]:
    """label -> numbers of each `label: numbers` line of llama's statistics blocks."""
    out = {}
    for line in llama_report(ref_dir):
        if ":" in line and not line.startswith("="):
            label, _, rest = line.partition(":")
            out[label.strip()] = [float(v) for v in NUM.findall(rest)]
    return out


def skeleton(line: str) -> str:
    return NUM.sub("#", line)


# -- against llama-perplexity --------------------------------------------------------------

def test_report_has_llama_perplexitys_lines(result, ref_dir):
    ours = [TABLE_HEADER] + [format_row(r) for r in result.rows] + [""] + format_statistics(result)
    ref = llama_report(ref_dir)[:len(ours)]
    assert [skeleton(a) for a in ours] == [skeleton(b) for b in ref]


def test_statistics_match_llama_perplexity(result, ref_dir):
    s = llama_stats(ref_dir)
    pct = 100.0
    assert result.count == N_CHUNKS * n_scored(N_CTX) == 124
    # the base side is read from the same file: equal up to the order of double sums
    assert result.ppl_base[0] == pytest.approx(s["Mean PPL(base)"][0], rel=2e-6)
    assert result.ppl_base[1] == pytest.approx(s["Mean PPL(base)"][1], rel=2e-5)
    assert result.ppl[0] == pytest.approx(s["Mean PPL(Q)"][0], rel=1e-3)
    assert result.ppl[1] == pytest.approx(s["Mean PPL(Q)"][1], rel=1e-2)
    assert pct * result.cor_ln_ppl == pytest.approx(s["Cor(ln(PPL(Q)), ln(PPL(base)))"][0], abs=0.2)
    assert result.ln_ppl_ratio[0] == pytest.approx(s["Mean ln(PPL(Q)/PPL(base))"][0], abs=1e-3)
    assert result.ln_ppl_ratio[1] == pytest.approx(s["Mean ln(PPL(Q)/PPL(base))"][1], rel=2e-2)
    assert result.ppl_ratio[0] == pytest.approx(s["Mean PPL(Q)/PPL(base)"][0], abs=1e-3)
    assert result.ppl_diff[0] == pytest.approx(s["Mean PPL(Q)-PPL(base)"][0], abs=0.7)
    assert result.ppl_diff[1] == pytest.approx(s["Mean PPL(Q)-PPL(base)"][1], rel=2e-2)
    assert result.kld[0] == pytest.approx(s["Mean    KLD"][0], rel=3e-3)
    assert result.kld[1] == pytest.approx(s["Mean    KLD"][1], rel=3e-2)
    kp = result.kld_percentiles
    for label, ours in [("Maximum KLD", result.kld_max), ("99.9%   KLD", kp[0.999]), ("99.0%   KLD", kp[0.990]),
                        ("95.0%   KLD", kp[0.950]), ("90.0%   KLD", kp[0.900]), ("Median  KLD", result.kld_median),
                        ("10.0%   KLD", kp[0.100]), ("5.0%   KLD", kp[0.050]), ("1.0%   KLD", kp[0.010]),
                        ("0.1%   KLD", kp[0.001]), ("Minimum KLD", result.kld_min)]:
        assert ours == pytest.approx(s[label][0], rel=1e-2), label
    dp = result.dp_percentiles
    for label, ours in [("Mean    Δp", result.dp[0]), ("Maximum Δp", result.dp_max), ("99.9%   Δp", dp[0.999]),
                        ("99.0%   Δp", dp[0.990]), ("95.0%   Δp", dp[0.950]), ("90.0%   Δp", dp[0.900]),
                        ("75.0%   Δp", dp[0.750]), ("Median  Δp", result.dp_median), ("25.0%   Δp", dp[0.250]),
                        ("10.0%   Δp", dp[0.100]), ("5.0%   Δp", dp[0.050]), ("1.0%   Δp", dp[0.010]),
                        ("0.1%   Δp", dp[0.001]), ("Minimum Δp", result.dp_min)]:
        # percent points; the extremes (and 0.1% / 99.9%, of 124 positions) are single positions,
        # where one Q8_K flip upstream shows whole (about 0.05 here)
        extreme = label.startswith(("Maximum", "Minimum", "0.1%", "99.9%"))
        assert pct * ours == pytest.approx(s[label][0], abs=0.06 if extreme else 0.03), label
    assert pct * result.rms_dp[0] == pytest.approx(s["RMS Δp"][0], abs=0.005)
    # one position whose most probable token differs is 0.81 %
    assert pct * result.same_top[0] == pytest.approx(s["Same top p"][0], abs=0.9)


def test_running_table_matches_llama_perplexity(result, ref_dir):
    ref = llama_report(ref_dir)[1:1 + N_CHUNKS]
    for row, line in zip(result.rows, ref):
        v = [float(x) for x in NUM.findall(line)]
        assert row.chunk == v[0]
        # rel 2e-3 on PPL is the abs 2e-3 on ln(PPL) of the next line: the quantized model's
        # kernels sum in another order than ggml's (fused multiply-adds), chunk 1 moves by 1.1e-3
        assert row.ppl[0] == pytest.approx(v[1], rel=2e-3)
        assert row.ln_ppl_ratio[0] == pytest.approx(v[3], abs=2e-3)
        assert row.kld[0] == pytest.approx(v[5], rel=3e-3)
        assert 100 * row.rms_dp[0] == pytest.approx(v[7], abs=0.005)
        assert 100 * row.same_top[0] == pytest.approx(v[9], abs=100 / (31 * row.chunk) + 1e-3)


def test_base_written_as_llama_perplexity_writes_it(paths, ref_dir, golden, tmp_path):
    model = load(paths[0], n_ctx=N_CTX, threads=1)
    text = read_text_file(golden / "imatrix" / "text.txt")
    out = tmp_path / "base.kld"
    r = perplexity(model, text, n_ctx=N_CTX, n_chunks=N_CHUNKS, save_log_probs=out)
    llama = [float(v) for v in re.findall(r"\[\d+\]([\d.]+),", (ref_dir / "base.stdout.txt").read_text())]
    np.testing.assert_allclose(r.running, llama, rtol=1e-5)
    ours, ref = read_kl_base(out), read_kl_base(ref_dir / "base.kld")
    assert out.stat().st_size == (ref_dir / "base.kld").stat().st_size
    head = 20 + 4 * N_CTX * N_CHUNKS  # magic, n_ctx, n_vocab, n_chunk, tokens
    assert out.read_bytes()[:head] == (ref_dir / "base.kld").read_bytes()[:head]
    V = ref.n_vocab
    for i in range(N_CHUNKS):
        a, b = ours.chunk(i), ref.chunk(i)
        sa, ma, qa = unpack_rows(a, V)
        sb, mb, qb = unpack_rows(b, V)
        np.testing.assert_allclose(sa, sb, rtol=1e-4)
        np.testing.assert_allclose(ma, mb, rtol=1e-5)
        # logits agree to ~1e-5; one step of q is (max - min) / 65535 ~ 2.4e-4
        assert np.abs(qa.astype(np.int64) - qb).max() <= 2
        assert (a[:, 4 + V:] == 0).all()  # the padding to an even count
    assert kl_divergence(load(paths[1], n_ctx=N_CTX, threads=1), out).kld[0] == pytest.approx(
        kl_divergence(load(paths[1], n_ctx=N_CTX, threads=1), ref_dir / "base.kld").kld[0], rel=1e-3)


# -- the arithmetic against float64 ---------------------------------------------------------

def test_kl_sums_against_float64():
    rng = np.random.default_rng(3)
    T, V = 150, 301
    base_logits = (rng.standard_normal((T, V)) * 3).astype(np.float32)
    logits = (base_logits + rng.standard_normal((T, V)).astype(np.float32) * 0.3).astype(np.float32)
    logits[:5] = base_logits[:5]  # some positions with the same top token for sure
    targets = rng.integers(0, V, T)
    rows, nll_base_w = compress_log_probs(base_logits, targets)
    assert rows.shape == (T, row_length(V)) and rows.dtype == np.uint16

    def log_softmax(x):
        x = x.astype(np.float64)
        m = x.max(axis=1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))

    lb, lq = log_softmax(base_logits), log_softmax(logits)
    # stored log-probabilities: within half a step where resolved (within 16 of the top)
    scale, mn, q = unpack_rows(rows, V)
    stored = scale[:, None].astype(np.float64) * q + mn[:, None]
    resolved = lb > lb.max(axis=1, keepdims=True) - 15.9
    step = np.broadcast_to(scale[:, None], (T, V))
    assert (np.abs(stored - lb)[resolved] <= 0.51 * step[resolved] + 1e-5).all()
    np.testing.assert_allclose(nll_base_w, -lb[np.arange(T), targets], rtol=1e-5, atol=1e-5)

    k = KLSums()
    kld, dp = k.add(logits, rows, targets)
    keep = stored > -16
    kld64 = np.where(keep, np.exp(stored) * (stored - lq), 0).sum(axis=1)
    np.testing.assert_allclose(kld, kld64, rtol=1e-4, atol=1e-6)
    nll = -lq[np.arange(T), targets]
    nll_b = -stored[np.arange(T), targets]
    np.testing.assert_allclose(dp, np.exp(-nll) - np.exp(-nll_b), atol=1e-6)
    assert k.count == T
    assert k.sum_nll == pytest.approx(nll.sum(), rel=1e-6)
    assert k.sum_nll_base == pytest.approx(nll_b.sum(), rel=1e-6)
    assert k.sum_kld == pytest.approx(kld64.sum(), rel=1e-5)
    assert k.n_same_top == int((logits.argmax(axis=1) == stored.argmax(axis=1)).sum())
    assert k.n_same_top >= 5


# -- the command ---------------------------------------------------------------------------

def test_cli_base_then_kl_divergence(capsys, paths, golden, ref_dir, tmp_path):
    f32, q = paths
    base = tmp_path / "base.kld"
    rc = main(["perplexity", "-m", str(f32), "-f", str(golden / "imatrix" / "text.txt"), "-c", str(N_CTX),
               "--chunks", str(N_CHUNKS), "-t", "1", "--kl-divergence-base", str(base)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"saving all logits to {base}" in err
    assert re.fullmatch(r"(\[\d+\][\d.]+,){4}\nFinal estimate: PPL = [\d.]+ \+/- [\d.]+\n", out), out
    rc = main(["perplexity", "-m", str(q), "--kl-divergence-base", str(base), "--kl-divergence", "-t", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    ours = out.split("\n")
    ours = ours[ours.index(TABLE_HEADER):]
    ref = llama_report(ref_dir)
    assert [skeleton(a) for a in ours if a] == [skeleton(b) for b in ref if b]
    assert "Same top p:" in ours[-2]


def test_cli_under_100_positions_prints_no_statistics(capsys, paths, golden, tmp_path):
    f32, q = paths
    base = tmp_path / "short.kld"
    assert main(["perplexity", "-m", str(f32), "-f", str(golden / "imatrix" / "text.txt"), "-c", str(N_CTX),
                 "--chunks", "3", "-t", "1", "--kl-divergence-base", str(base)]) == 0
    capsys.readouterr()
    assert main(["perplexity", "-m", str(q), "--kl-divergence-base", str(base), "--kl-divergence"]) == 0
    out, err = capsys.readouterr()
    assert TABLE_HEADER in out and "KL divergence statistics" not in out
    assert "93 positions" in err


def test_cli_kl_divergence_needs_a_base(capsys):
    assert main(["perplexity", "--kl-divergence"]) == 1
    assert "--kl-divergence-base" in capsys.readouterr().err
    assert main(["perplexity", "-c", "64"]) == 1
    assert "-f FILE" in capsys.readouterr().err


# -- files that are not base files ---------------------------------------------------------

def test_bad_files_are_named(ref_dir, tmp_path, qmodel):
    bad = tmp_path / "bad.kld"
    bad.write_bytes(b"GGUF" + bytes(40))
    with pytest.raises(UsageError, match=r"bad\.kld does not look like a file of log-probabilities"):
        read_kl_base(bad)
    data = (ref_dir / "base.kld").read_bytes()
    cut = tmp_path / "cut.kld"
    cut.write_bytes(data[:-10])
    with pytest.raises(UsageError, match=rf"cut\.kld: truncated: 4 chunks .* need {len(data)} bytes, the file has {len(data) - 10}"):
        read_kl_base(cut)
    other = tmp_path / "vocab.kld"
    other.write_bytes(data[:12] + (1000).to_bytes(4, "little") + data[16:])
    with pytest.raises(UsageError, match=r"vocab\.kld"):  # its size no longer fits 1000 tokens
        kl_divergence(qmodel, other)
    small = tmp_path / "small.kld"
    v = 200
    rows = n_scored(N_CTX) * row_length(v) * 2
    small.write_bytes(b"_logits_" + np.array([N_CTX, v, 1], "<i4").tobytes() + bytes(4 * N_CTX + rows))
    with pytest.raises(UsageError, match=r"small\.kld: the base log-probabilities are over 200 tokens, the model has 396"):
        kl_divergence(qmodel, small)
