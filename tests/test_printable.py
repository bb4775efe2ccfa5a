"""Text from a file never reaches the terminal raw (tinyllm/printable.py): `tinyllm info`,
the chat banner and /show, quantize's progress lines, bench's table and every error message
escape ESC, newlines and other non-printable characters of names that come from a GGUF."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chat_fakes import GREEDY, FakeModel
from tinyllm.chat import templates
from tinyllm.chat.repl import Repl
from tinyllm.chat.session import ChatSession
from tinyllm.cli import main
from tinyllm.gguf_io import GGUFFile, write_gguf
from tinyllm.printable import printable

from tinymodels import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
EVIL = "evil\x1b]0;pwned\x07\x1b[2J\r\nforged line\u202e\x9b\x7f"


@pytest.mark.parametrize(
    "text,one_line,multiline",
    [
        ("plain text, é ü 日本 «»", "plain text, é ü 日本 «»", "plain text, é ü 日本 «»"),
        ("a\x1b[31mred", "a\\x1b[31mred", "a\\x1b[31mred"),
        ("two\nlines\tand tab", "two\\nlines\\tand tab", "two\nlines\tand tab"),
        ("bidi \u202eoverride", "bidi \\u202eoverride", "bidi \\u202eoverride"),
        ("C1 \x9b and DEL \x7f", "C1 \\x9b and DEL \\x7f", "C1 \\x9b and DEL \\x7f"),
        ("tag \U000e0001", "tag \\U000e0001", "tag \\U000e0001"),
        ("ideographic\u3000space", "ideographic\u3000space", "ideographic\u3000space"),
        ("cr\r", "cr\\r", "cr\\r"),
    ],
)
def test_printable_escapes_what_a_terminal_would_obey(text, one_line, multiline):
    assert printable(text) == one_line
    assert printable(text, multiline=True) == multiline
    assert printable(one_line) == one_line  # escaping twice changes nothing more


def assert_clean(text):
    bad = [c for c in text if not (c.isprintable() or c in "\n ")]
    assert not bad, bad


@pytest.fixture(scope="module")
def evil_model(tmp_path_factory):
    """A tiny model whose general.name and one (extra) tensor name carry terminal commands."""
    d = tmp_path_factory.mktemp("evil")
    src = make_tiny_model(d, "llama", "F32")
    with GGUFFile(src) as g:
        md = dict(g.metadata)
        md["general.name"] = EVIL
        tensors = [(t.name, t.type, tuple(t.shape), t.data.copy()) for t in g.tensors.values()]
        first = tensors[-1]
        tensors.append((f"x{EVIL}", first[1], first[2], first[3]))
    out = d / "evil.gguf"
    write_gguf(out, md, tensors)
    return out


def test_info_escapes_the_name_and_tensor_names(capsys, evil_model):
    assert main(["info", str(evil_model)]) == 0
    out, _ = capsys.readouterr()
    assert_clean(out)
    assert "name" in out and "evil\\x1b]0;pwned\\x07\\x1b[2J\\r\\nforged line\\u202e\\x9b\\x7f" in out


def test_an_error_quoting_a_name_from_the_file_is_escaped(tmp_path):
    bad = tmp_path / f"m{EVIL}.gguf"
    r = subprocess.run([sys.executable, "-m", "tinyllm", "info", str(bad)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyllm: error: ") and "\\x1b]0;pwned" in lines[0]
    assert_clean(r.stderr)


def test_quantize_progress_lines_escape_tensor_names(capsys, evil_model, tmp_path):
    rc = main(["quantize", str(evil_model), str(tmp_path / "q.gguf"), "Q8_0"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert_clean(out + err)
    assert "xevil\\x1b]0;pwned" in out


def test_chat_banner_and_show_escape_the_path_and_the_template(tmp_path):
    m = FakeModel(["Hi"])
    m.path = f"/models/{EVIL}.gguf"
    source = "{% for m in messages %}<turn>\x1b[2J{{ m.content }}\n{% endfor %}"
    session = ChatSession(m, templates.from_jinja(source, origin="evil.gguf"), params=GREEDY)
    out = io.StringIO()
    repl = Repl(session, out=out, notice=f"notice {EVIL}")
    repl.welcome()
    repl.command("/show info")
    repl.command("/show template")
    text = out.getvalue()
    assert_clean(text)
    assert "tinyllm chat · evil\\x1b]0;pwned" in text and "notice evil\\x1b" in text
    assert "<turn>\\x1b[2J{{ m.content }}\n{% endfor %}" in text  # the template keeps its lines


def test_bench_table_escapes_the_model_column(capsys, tmp_path, monkeypatch):
    """The model column is arch, size label and file type, all read from the file."""
    import tinyllm.bench as bench

    real = bench.summarize

    def summarize(gguf):
        s = real(gguf)
        s.desc = f"{EVIL} {s.desc}"
        return s

    monkeypatch.setattr(bench, "summarize", summarize)
    rc = main(["bench", "-m", str(make_tiny_model(tmp_path, "llama", "F32")), "-p", "8", "-n", "0", "-r", "1", "-t", "1", "--no-warmup"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert_clean(out)
    assert "evil\\x1b]0;pwned" in out
