"""tinyllm's tokenizer against llama.cpp's own vocabulary test suites (models/ggml-vocab-*.gguf
with .inp/.out, the cases llama.cpp's test-tokenizer-0 checks: ids without BOS, special-token
texts not parsed), and its tables against llama.cpp's sources: the Unicode classes of
src/unicode-data.cpp and the pre-tokenizer names, options and regexes of src/llama-vocab.cpp.
The files come from the llama-cpp-python 0.3.36 sdist (tests/llama_cpp_sdist.py)."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from llama_cpp_sdist import BPE_SUITES, NO_SUITE, SPM_SUITES, UNSUPPORTED, read_suite

from tinyllm.errors import TokenizerError
from tinyllm.gguf_io import GGUFFile
from tinyllm.tokenizer import Tokenizer
from tinyllm.tokenizer.pretokenizers import PRE_NAMES, RAW_UTF8, REGEXES, pre_tokenizer
from tinyllm.tokenizer.unicode_classes import RUNS
from tinyllm.tokenizer.unicode_split import code_point_classes

DATA = Path(__file__).resolve().parent / "data"


def _vocab(folder: Path, name: str) -> Path:
    return folder / "models" / f"ggml-vocab-{name}.gguf"


def test_every_vocab_is_covered(llama_cpp_files):
    """Every vocabulary of the sdist is in one of the lists below, so none is left out unseen."""
    names = {p.name[len("ggml-vocab-"):-len(".gguf")] for p in (llama_cpp_files / "models").glob("ggml-vocab-*.gguf")}
    listed = set(SPM_SUITES) | set(BPE_SUITES) | set(UNSUPPORTED) | set(NO_SUITE)
    assert names == listed
    suites = {p.name[len("ggml-vocab-"):-len(".gguf.inp")] for p in (llama_cpp_files / "models").glob("*.inp")}
    assert suites == set(SPM_SUITES) | set(BPE_SUITES) | {"bert-bge"}


@pytest.mark.parametrize("name", SPM_SUITES + BPE_SUITES)
def test_llama_cpp_vocab_suite(llama_cpp_files, name):
    path = _vocab(llama_cpp_files, name)
    cases, want = read_suite(llama_cpp_files, name)
    tok = Tokenizer.from_gguf(path)
    with GGUFFile(path) as g:
        assert tok.model == g.metadata["tokenizer.ggml.model"]
        assert tok.model == ("llama" if name in SPM_SUITES else "gemma4" if name == "gemma-4" else "gpt2")
    failed = []
    for text, ids in zip(cases, want):
        got = tok.encode(text, add_bos=False, parse_special=False)
        if got != ids:
            failed.append(f"{text!r}: {got[:12]} != {ids[:12]}")
    assert not failed, f"{len(failed)} of {len(cases)} cases differ:\n" + "\n".join(failed[:10])
    assert len(cases) >= 46


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_vocab_models(llama_cpp_files, name):
    """WordPiece (bert) and Unigram (t5) vocabularies: one line naming the model."""
    path = _vocab(llama_cpp_files, name)
    model = UNSUPPORTED[name]
    with pytest.raises(TokenizerError, match=rf"tokenizer model '{model}' \(\w+\) is not supported \(supported: llama"):
        Tokenizer.from_gguf(path)


@pytest.mark.parametrize("name", sorted(NO_SUITE))
def test_vocab_without_suite_loads(llama_cpp_files, name):
    """Vocabularies llama.cpp ships without cases (no pre-tokenizer given: 'default')."""
    tok = Tokenizer.from_gguf(_vocab(llama_cpp_files, name))
    assert tok.model == NO_SUITE[name]
    if tok.model == "gpt2":
        assert tok.pre.name == "default"
    ids = tok.encode("Hello world, 123!", add_bos=False)
    assert tok.decode(ids) == "Hello world, 123!"


# -- the tables against llama.cpp's sources ----------------------------------------------------


def test_unicode_classes_match_llama_cpp(llama_cpp_files):
    """tinyllm/tokenizer/unicode_classes.py is what tests/data/make_unicode_classes.py makes of
    llama.cpp's src/unicode-data.cpp."""
    sys.path.insert(0, str(DATA))
    try:
        from make_unicode_classes import classes_from_unicode_data, runs
    finally:
        sys.path.remove(str(DATA))
    classes = classes_from_unicode_data(llama_cpp_files / "src" / "unicode-data.cpp")
    assert np.array_equal(code_point_classes(), classes)
    assert "".join(RUNS).split() == [f"{s:x}{c}" for s, c in runs(classes)]


def _c_strings(code: str) -> list[str]:
    """The string literals of C++ code, comments skipped, escapes decoded, in order."""
    out, i, n = [], 0, len(code)
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0", "v": "\v", "f": "\f"}
    while i < n:
        if code.startswith("//", i):
            i = code.find("\n", i)
            i = n if i < 0 else i
        elif code.startswith("/*", i):
            i = code.index("*/", i) + 2
        elif code[i] == '"':
            j, s = i + 1, []
            while code[j] != '"':
                if code[j] == "\\":
                    c = code[j + 1]
                    if c == "x":
                        m = re.match(r"[0-9A-Fa-f]+", code[j + 2:])
                        s.append(chr(int(m.group(), 16)))
                        j += 2 + len(m.group())
                        continue
                    if c == "u":
                        s.append(chr(int(code[j + 2 : j + 6], 16)))
                        j += 6
                        continue
                    s.append(escapes[c])
                    j += 2
                else:
                    s.append(code[j])
                    j += 1
            out.append("".join(s))
            i = j + 1
        elif code[i] == "'":  # a char literal: skip it (it may be '"')
            i = code.index("'", i + 2 if code[i + 1] == "\\" else i + 1) + 1
        else:
            i += 1
    return out


def _llama_vocab_cpp(folder: Path) -> str:
    return (folder / "src" / "llama-vocab.cpp").read_text(encoding="utf-8")


def test_pre_tokenizer_names_match_llama_cpp(llama_cpp_files):
    """Every `tokenizer_pre == "..."` branch of llama_vocab::impl::load: the name is known to
    tinyllm, with the same LLAMA_VOCAB_PRE_TYPE and the options the branch sets."""
    src = _llama_vocab_cpp(llama_cpp_files)
    start = src.index('} else if (tokenizer_pre == "default") {')
    end = src.index("throw std::runtime_error(format(\"unknown pre-tokenizer type", start)
    body = src[start:end]
    branches = re.split(r"\}\s*else if\s*\(", body)
    seen = set()
    for branch in branches:
        cond, _, block = branch.partition(") {")
        names = re.findall(r'tokenizer_pre\s*==\s*"([^"]+)"', cond)
        if not names:
            continue
        kind = re.search(r"pre_type\s*=\s*LLAMA_VOCAB_PRE_TYPE_(\w+);", block).group(1)
        flags = dict(re.findall(r"\b(ignore_merges|clean_spaces|add_bos|escape_whitespaces)\s*=\s*(true|false);", block))
        for name in names:
            seen.add(name)
            p = pre_tokenizer(name)
            assert p.kind == kind, name
            assert p.ignore_merges == (flags.get("ignore_merges") == "true"), name
            assert p.clean_spaces == (flags.get("clean_spaces", "true") == "true"), name
            assert p.add_bos == (flags.get("add_bos") == "true"), name
            assert p.escape_whitespaces == (flags.get("escape_whitespaces") == "true"), name
    assert seen == set(PRE_NAMES), sorted(seen ^ set(PRE_NAMES))
    assert len(seen) >= 90


def test_pre_tokenizer_regexes_match_llama_cpp(llama_cpp_files):
    """The regex list of every LLAMA_VOCAB_PRE_TYPE in llm_tokenizer_bpe's constructor."""
    src = _llama_vocab_cpp(llama_cpp_files)
    start = src.index("llm_tokenizer_bpe(const llama_vocab & vocab) {")
    end = src.index("std::vector<std::string> regex_exprs;", start)
    body = src[start:end]
    found: dict[str, tuple[str, ...]] = {}
    raw_utf8 = set()  # byte_encode = false: words are merged as raw UTF-8
    for labels, block in re.findall(r"((?:\s*(?:case LLAMA_VOCAB_PRE_TYPE_\w+|default)\s*:)+)(.*?)break;", body, re.S):
        exprs = re.search(r"regex_exprs\s*=\s*\{(.*?)\};", block, re.S)
        regexes = tuple(_c_strings(exprs.group(1)))
        for label in re.findall(r"LLAMA_VOCAB_PRE_TYPE_(\w+)|(default)", labels):
            found[label[0] or "DEFAULT"] = regexes
            if re.search(r"byte_encode\s*=\s*false;", block):
                raw_utf8.add(label[0] or "DEFAULT")
    assert set(found) == set(REGEXES), sorted(set(found) ^ set(REGEXES))
    for kind, regexes in found.items():
        assert REGEXES[kind] == regexes, kind
    assert {kind for kind, _ in PRE_NAMES.values()} <= set(REGEXES)
    assert raw_utf8 == RAW_UTF8


def test_unknown_pre_tokenizer_is_one_line():
    with pytest.raises(TokenizerError, match=r"tokenizer.ggml.pre = 'no-such-pre' is not a pre-tokenizer llama.cpp knows"):
        pre_tokenizer("no-such-pre", "f.gguf")
    with pytest.raises(TokenizerError) as e:
        pre_tokenizer("x\n\x1b[31m" * 50, "f.gguf")
    msg = str(e.value)
    assert "\n" not in msg and "\x1b" not in msg and "\\n\\x1b[31m" in msg and len(msg) < 400
