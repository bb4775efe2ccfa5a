"""llama.cpp's own test data, taken once out of the llama-cpp-python 0.3.36 source
distribution on PyPI: the vocabulary suites (models/ggml-vocab-*.gguf with their .inp/.out
cases, as llama.cpp's test-tokenizer-0 reads them) and the two source files tests compare
tinyllm's tables with (src/llama-vocab.cpp: pre-tokenizer names, options and regexes;
src/unicode-data.cpp: Unicode classes).

    folder = llama_cpp_files()     # cache_dir()/llama.cpp-0.3.36, made on first use

The sdist (77 MB) is fetched with `pip download --no-deps --no-binary :all:`, checked
against its sha256, and only the files above (47 MB) are kept; a failure raises RuntimeError
with pip's last line, and nothing half-made is left behind.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tinyllm.paths import cache_dir

VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PREFIX = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
SOURCES = ("src/llama-vocab.cpp", "src/unicode-data.cpp")
DONE = ".complete"

# the vocabularies of the sdist, by what tinyllm does with them (test_every_vocab_is_covered
# fails when the sdist holds another)
SPM_SUITES = ("llama-spm", "phi-3")
BPE_SUITES = ("command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4", "gpt-2", "llama-bpe", "mpt",
              "qwen2", "qwen35", "refact", "starcoder")
UNSUPPORTED = {"bert-bge": "bert", "nomic-bert-moe": "t5"}  # WPM (has a suite), UGM (no suite)
NO_SUITE = {"aquila": "gpt2", "baichuan": "llama", "gpt-neox": "gpt2"}  # vocabulary only


def _wanted(name: str) -> bool:
    if not name.startswith(PREFIX):
        return False
    rest = name[len(PREFIX):]
    return rest.startswith("models/ggml-vocab-") or rest in SOURCES


def llama_cpp_files() -> Path:
    """The folder holding models/ggml-vocab-* and src/{llama-vocab,unicode-data}.cpp."""
    folder = cache_dir() / f"llama.cpp-{VERSION}"
    if (folder / DONE).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".llama-cpp-") as tmp:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", "-d", tmp, f"llama-cpp-python=={VERSION}"],
            capture_output=True, text=True,
        )
        sdist = Path(tmp) / SDIST
        if r.returncode != 0 or not sdist.exists():
            why = (r.stderr.strip().splitlines() or ["pip saved no sdist"])[-1][:200]
            raise RuntimeError(f"cannot download llama-cpp-python=={VERSION} from PyPI: {why}")
        h = hashlib.sha256()
        with open(sdist, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != SHA256:
            raise RuntimeError(f"{SDIST} has sha256 {h.hexdigest()[:16]}..., expected {SHA256[:16]}...")
        out = Path(tmp) / "files"
        with tarfile.open(sdist) as tar:
            for member in tar:
                if member.isfile() and _wanted(member.name):
                    dest = out / member.name[len(PREFIX):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        (out / DONE).write_text(f"{SDIST} {SHA256}\n")
        if folder.exists():  # an incomplete earlier attempt
            shutil.rmtree(folder)
        out.rename(folder)
    return folder


def read_suite(folder: Path, name: str) -> tuple[list[str], list[list[int]]]:
    """The cases of ggml-vocab-NAME.gguf.inp and their ids from .out, as test-tokenizer-0
    reads them: cases separated by "\\n__ggml_vocab_test__\\n", one id list per line."""
    base = folder / "models" / f"ggml-vocab-{name}.gguf"
    inp = base.with_name(base.name + ".inp").read_bytes().decode("utf-8")  # keeps "\r\n"
    out = base.with_name(base.name + ".out").read_bytes().decode("ascii")
    sep = "\n__ggml_vocab_test__\n"
    cases, pos = [], 0
    while pos < len(inp):  # a separator at the very end ends the last case, as in C++
        nxt = inp.find(sep, pos)
        if nxt < 0:
            cases.append(inp[pos:])
            break
        cases.append(inp[pos:nxt])
        pos = nxt + len(sep)
    ids = [[int(x) for x in line.split()] for line in out.splitlines()]
    if len(ids) != len(cases):
        raise ValueError(f"{base.name}: {len(cases)} cases in .inp but {len(ids)} id lines in .out")
    return cases, ids
