"""The CLI flags test_cli_runtime.py does not reach, each by its behaviour: tokenize --stdin /
--no-bos / --no-parse-special / --show-count, run --no-bos, perplexity --chunks, chat
--no-footer / --system (piped), --verbose. On the same tiny Gemma 3 model."""
import io
import re

import pytest

from tinyllm.cli import main
from tinyllm.generation import generate
from tinyllm.gguf_io import GGUFFile
from tinyllm.model import load
from tinyllm.sampling import SamplingParams
from tinyllm.tokenizer import Tokenizer

from test_cli_runtime import PROMPT, cli, subproc
from tinymodels import make_tiny_model

TEXT = "<start_of_turn>user Hello"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("cli-flags"), arch="gemma3", wtype="Q8_0", seed=4)


@pytest.fixture(scope="module")
def tok(tiny):
    with GGUFFile(tiny) as g:
        return Tokenizer.from_gguf(g)


def ids_of(out):
    return [int(line[:6]) for line in out.splitlines() if "->" in line]


def test_tokenize_flags_change_exactly_what_they_say(capsys, monkeypatch, tiny, tok):
    base = tok.encode(TEXT, add_bos=True)
    assert base[0] == tok.bos_id
    _, out, _ = cli(capsys, "tokenize", "-m", tiny, "-p", TEXT)
    assert ids_of(out) == base and "Total number" not in out
    _, out, _ = cli(capsys, "tokenize", "-m", tiny, "-p", TEXT, "--no-bos")
    assert ids_of(out) == tok.encode(TEXT, add_bos=False) == base[1:]
    _, out, _ = cli(capsys, "tokenize", "-m", tiny, "-p", TEXT, "--no-parse-special")
    plain = tok.encode(TEXT, add_bos=True, parse_special=False)
    assert ids_of(out) == plain and plain != base  # "<start_of_turn>" spelled out as text
    _, out, _ = cli(capsys, "tokenize", "-m", tiny, "-p", TEXT, "--show-count")
    assert out.splitlines()[-1] == f"Total number of tokens: {len(base)}"
    monkeypatch.setattr("sys.stdin", io.StringIO(TEXT))
    _, out, _ = cli(capsys, "tokenize", "-m", tiny, "--stdin", "--ids")
    assert out.strip() == "[" + ", ".join(map(str, base)) + "]"


def test_run_no_bos_generates_from_the_prompt_without_bos(capsys, tiny):
    model = load(tiny, n_ctx=256, threads=1)
    g = generate(model, PROMPT, max_tokens=6, params=SamplingParams(temperature=0), add_bos=False)
    want = g.read()
    rc, out, _ = cli(capsys, "run", "-m", tiny, "-p", PROMPT, "-n", 6, "--temp", 0, "-t", 1, "-c", 256, "--no-bos")
    assert rc == 0 and out.rstrip("\n") == want.rstrip("\n")
    g2 = generate(load(tiny, n_ctx=256, threads=1), PROMPT, max_tokens=6, params=SamplingParams(temperature=0))
    assert g2.stats.prompt_tokens == g.stats.prompt_tokens + 1  # the flag removed exactly the BOS


def test_perplexity_chunks_scores_only_that_many(capsys, tiny, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("The cat is here. Hello world, is it you? " * 60)
    rc, out_all, _ = cli(capsys, "perplexity", "-m", tiny, "-f", f, "-c", 256)
    assert rc == 0
    rc, out, _ = cli(capsys, "perplexity", "-m", tiny, "-f", f, "-c", 256, "--chunks", 1)
    assert rc == 0
    all_chunks = re.findall(r"\[(\d+)\]([\d.]+),", out_all)
    one = re.findall(r"\[(\d+)\]([\d.]+),", out)
    assert len(all_chunks) >= 2 and [i for i, _ in one] == ["1"]
    final = float(re.search(r"Final estimate: PPL = ([\d.]+)", out).group(1))
    assert final == pytest.approx(float(all_chunks[0][1]), rel=1e-6)  # the first chunk's running value


def test_chat_piped_no_footer_and_system(tiny):
    r = subproc("chat", "-m", tiny, "--temp", "0", "-n", "4", stdin="Hello\n")
    assert r.returncode == 0 and "[ prefill" in r.stderr
    r2 = subproc("chat", "-m", tiny, "--temp", "0", "-n", "4", "--no-footer", stdin="Hello\n")
    assert r2.returncode == 0 and "[ prefill" not in r2.stderr and r2.stdout == r.stdout


def test_verbose_shows_the_traceback_of_an_error(tmp_path):
    missing = tmp_path / "missing.gguf"
    r = subproc("info", missing)
    assert r.returncode == 1 and r.stderr.startswith("tinyllm: error:") and "Traceback" not in r.stderr
    r = subproc("--verbose", "info", missing)
    assert r.returncode == 1 and "Traceback (most recent call last)" in r.stderr


@pytest.mark.parametrize(
    "template,problem",
    [
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "rendering took more than"),
        ("{{ 10**100000000 }}", "has more than 4096 bits"),
        ('{% include "x.jinja" %}', "includes, imports or extends 'x.jinja'"),
    ],
)
def test_chat_with_a_hostile_template_is_one_line_not_a_hang(tmp_path, template, problem):
    model = make_tiny_model(tmp_path, arch="gemma3", wtype="Q8_0", seed=4, chat_template=template)
    r = subproc("chat", "-m", model, "--temp", "0", "-n", "4", stdin="Hello\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tinyllm: error: {model}: the chat template cannot be rendered")
    assert problem in lines[0]
