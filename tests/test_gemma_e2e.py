"""End-to-end on the real Gemma 3 270M Q4_K_M against llama.cpp's golden outputs."""
import json
import re

import numpy as np
import pytest

from tinyllm.cli import main
from tinyllm.generation import generate
from tinyllm.model import load
from tinyllm.perplexity import perplexity
from tinyllm.sampling import SamplingParams

pytestmark = pytest.mark.slow

LLAMA_PPL = 8.5037  # llama-perplexity -c 256 on golden/gemma/apache-2.0.txt (9 chunks)


@pytest.fixture(scope="module")
def gemma(gemma_path):
    return load(gemma_path, n_ctx=512)


# A near-tie: llama.cpp's token within this many logits of our top one. llama.cpp differs from
# itself by 1-3 logits between its own code paths (flash-attn on/off, ubatch size; spec §2.6),
# and our activations/KV rounding is close to but not bitwise ggml's, so at a near-tie either
# token is a correct greedy choice.
NEAR_TIE = 0.25


def test_greedy_matches_llama_cpp(gemma, golden):
    """Greedy text equals llama.cpp's, except at near-ties, which are measured and bounded.

    Teacher-forced along the path generate() uses (prefill the prompt, then one decode step per
    token), llama.cpp's token must be our argmax at all but 2 of 32 positions and within NEAR_TIE
    at those. Free-running generation must reproduce llama.cpp's tokens exactly, resuming from
    llama.cpp's token after a near-tie. Measured (Gemma 3 270M Q4_K_M): 30/32 argmax agreement;
    ' country' vs our ' French' (0.03) at token 5 and ' largest' vs ' capital' (0.13) at token 12.
    """
    case = json.loads((golden / "gemma" / "greedy.json").read_text())[0]
    tok = gemma.tokenizer
    prompt = tok.encode(case["prompt"], add_bos=True)
    gold = tok.encode(case["completion"], add_bos=False)
    assert len(gold) == case["n_predict"] and tok.decode(gold) == case["completion"]

    gemma.reset()
    logits = [gemma.forward(np.array(prompt, np.int32))]
    for t in gold[:-1]:
        logits.append(gemma.forward(np.array([t], np.int32)))
    logits = np.array(logits)
    margin = logits.max(axis=1) - logits[np.arange(len(gold)), gold]
    assert (margin < NEAR_TIE).all(), margin
    assert (margin > 0).sum() <= 2, margin

    done: list[int] = []
    greedy = SamplingParams(temperature=0)
    while True:
        # resume along the same path: prefill the prompt, one decode step per forced token
        gemma.reset()
        feed = prompt
        if done:
            gemma.forward(np.array(prompt, np.int32))
            for t in done[:-1]:
                gemma.forward(np.array([t], np.int32))
            feed = done[-1:]
        g = generate(gemma, feed, max_tokens=len(gold) - len(done), params=greedy)
        text = g.read()
        assert g.stats.stop_reason == "length"
        rest = gold[len(done):]
        k = next((i for i, (a, b) in enumerate(zip(g.tokens, rest)) if a != b), None)
        if k is None:
            assert g.tokens == rest and text == tok.decode(rest)
            break
        pos = len(done) + k
        assert margin[pos] > 0, f"diverged at token {pos} where llama.cpp's token is our argmax"
        done = gold[: pos + 1]


def test_perplexity_within_one_percent_of_llama_cpp(gemma, golden):
    text = (golden / "gemma" / "apache-2.0.txt").read_text()
    r = perplexity(gemma, text, n_ctx=256)
    assert r.n_chunks == 9
    assert abs(r.ppl / LLAMA_PPL - 1) < 0.01, r.ppl
    assert 0.5 < r.ppl_err < 0.9  # llama.cpp: ± 0.681


def test_run_command_greedy_on_gemma(capsys, gemma_path, golden):
    case = json.loads((golden / "gemma" / "greedy.json").read_text())[0]
    rc = main(["run", "-m", str(gemma_path), "-p", case["prompt"], "-n", "16", "--temp", "0", "-c", "256"])
    out, err = capsys.readouterr()
    assert rc == 0
    # llama.cpp's 5th token is a near-tie here (see test_greedy_matches_llama_cpp)
    assert out.startswith(" the capital of the") and case["completion"].startswith(" the capital of the")
    assert "llama_kv_cache_iswa: creating     SWA KV cache" in err


def test_info_on_gemma(capsys, gemma_path):
    rc = main(["info", str(gemma_path)])
    out, _ = capsys.readouterr()
    assert rc == 0
    info = {k.strip(): v for k, v in (line.split(" = ", 1) for line in out.splitlines())}
    assert info["architecture"] == "gemma3"
    assert info["file type"].startswith("Q4_K - Medium")
    assert info["parameters"].startswith("268.10 M")
    assert info["tensors"] == "236"
    assert info["context length"].startswith("32768")
    assert info["sliding window"] == "512 tokens on 15 of 18 layers"
    # llama.cpp, n_ctx 4096, f16, small SWA cache: 12.00 MiB + 15.00 MiB (spec §3.3)
    assert info["KV cache at n_ctx 4096 (f16)"] == "27.00 MiB"


def test_bench_on_gemma_prints_table(capsys, gemma_path):
    rc = main(["bench", "-m", str(gemma_path), "-p", "32", "-n", "8", "-r", "1", "-t", "1"])
    out, _ = capsys.readouterr()
    assert rc == 0
    rows = [line for line in out.splitlines() if line.startswith("| gemma3")]
    assert len(rows) == 2 and "pp32" in rows[0] and "tg8" in rows[1]
    assert re.search(r"235\.16 MiB", rows[0]) and "268.10 M" in rows[0]
