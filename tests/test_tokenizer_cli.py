"""`tinyllm tokenize` and the tokenizer line of `tinyllm info` on every vocabulary of
llama.cpp's suites, against llama.cpp's ids (tests/data/golden/vocab, see test_tokenizer_bpe.py):
the default (BOS as the vocabulary asks, special tokens parsed, as llama-tokenize), --no-bos,
--no-parse-special, --stdin, -f, --show-count and the `id -> 'piece'` lines."""
import gzip
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tinyllm.cli import main

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "vocab" / "llama_cpp_vocab.json.gz"
VOCABS = ("llama-spm", "phi-3", "baichuan", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4",
          "gpt-2", "llama-bpe", "mpt", "qwen2", "qwen35", "refact", "starcoder", "aquila", "gpt-neox")
PRE = {"command-r": "command-r", "deepseek-coder": "deepseek-coder", "deepseek-llm": "deepseek-llm", "falcon": "falcon",
       "gpt-2": "gpt-2", "llama-bpe": "llama-bpe", "mpt": "mpt", "qwen2": "qwen2", "qwen35": "qwen35", "refact": "refact",
       "starcoder": "starcoder", "aquila": "default", "gpt-neox": "default", "gemma-4": "gemma4"}


@pytest.fixture(scope="module")
def golden_vocab() -> dict:
    return json.loads(gzip.decompress(GOLDEN.read_bytes()))["vocabs"]


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _ids(out: str) -> list[int]:
    assert re.fullmatch(r"\[(\d+(, \d+)*)?\]\n", out), out
    return json.loads(out)


def _chat_case(g: dict) -> dict:
    """The first chat-like case made of the vocabulary's own special tokens, or ChatML."""
    return next(c for c in g["cases"] if "user\nWhat is 2+2?" in c["text"] or "<|im_start|>system" in c["text"])


@pytest.mark.parametrize("name", VOCABS)
def test_tokenize_flags_match_llama_cpp(capsys, monkeypatch, tmp_path, llama_cpp_files, golden_vocab, name):
    path = llama_cpp_files / "models" / f"ggml-vocab-{name}.gguf"
    case = _chat_case(golden_vocab[name])
    text = case["text"]
    rc, out, _ = cli(capsys, "tokenize", "-m", path, "-p", text, "--ids")
    assert rc == 0 and _ids(out) == case["ids_add1_parse1"]
    rc, out, _ = cli(capsys, "tokenize", "-m", path, "-p", text, "--ids", "--no-bos")
    assert _ids(out) == case["ids_add0_parse1"]
    rc, out, _ = cli(capsys, "tokenize", "-m", path, "-p", text, "--ids", "--no-parse-special")
    assert _ids(out) == case["ids_add1_parse0"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    rc, out, _ = cli(capsys, "tokenize", "-m", path, "--stdin", "--ids", "--no-bos", "--no-parse-special", "--show-count")
    ids, count = out.split("\n", 1)
    assert _ids(ids + "\n") == case["ids_add0_parse0"]
    assert count == f"Total number of tokens: {len(case['ids_add0_parse0'])}\n"
    f = tmp_path / "prompt.txt"
    f.write_bytes(text.encode())
    rc, out, _ = cli(capsys, "tokenize", "-m", path, "-f", f, "--show-count")
    want = case["ids_add1_parse1"]
    body, count = out.rsplit("\n", 2)[0], out.rsplit("\n", 2)[1]
    assert count == f"Total number of tokens: {len(want)}"
    # one entry per token; a piece holding a newline is printed raw, as llama-tokenize does
    entries = re.split(r"\n(?=[ \d]{5}\d -> ')", body)
    assert [int(e[:6]) for e in entries] == want
    for e in entries:
        assert re.fullmatch(r"[ \d]{5}\d -> '.*'", e, flags=re.S), e


@pytest.mark.parametrize("name", VOCABS)
def test_info_names_the_tokenizer(capsys, llama_cpp_files, name):
    rc, out, _ = cli(capsys, "info", llama_cpp_files / "models" / f"ggml-vocab-{name}.gguf")
    assert rc == 0
    info = {k.strip(): v for k, v in (line.split(" = ", 1) for line in out.splitlines())}
    if name in PRE:
        model = "gemma4 (SPM-style BPE)" if name == "gemma-4" else "gpt2 (byte-level BPE)"
        assert info["tokenizer"].startswith(f"{model}, pre-tokenizer {PRE[name]} (")
    else:
        assert info["tokenizer"] == "llama (SPM)"


def test_info_and_tokenize_on_unsupported_vocab(capsys, llama_cpp_files):
    path = llama_cpp_files / "models" / "ggml-vocab-bert-bge.gguf"
    rc, out, _ = cli(capsys, "info", path)
    assert "tokenizer" in out and "'bert' (WordPiece), not supported by tinyllm" in out
    r = subprocess.run([sys.executable, "-m", "tinyllm", "tokenize", "-m", str(path), "--stdin"], input="hello",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stdout == ""
    assert re.fullmatch(r"tinyllm: error: .*ggml-vocab-bert-bge.gguf: tokenizer model 'bert' \(WordPiece\) is not "
                        r"supported \(supported: .*\)\n", r.stderr), r.stderr
