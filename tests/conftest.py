"""Shared fixtures. Kernels compile into tinyllm's own cache, whose directory is keyed on a
hash of every source file of the package (tinyllm/jit.py), so an edited kernel can never load
stale code; TINYLLM_TEST_FRESH_CACHE=1 compiles everything into a new empty directory instead.

Test data lives in tests/data (see its README): llama.cpp's golden outputs, carried by the
repository so a fresh clone needs nothing beside it.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

if os.environ.get("TINYLLM_TEST_FRESH_CACHE") == "1":
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="tinyllm-numba-")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GOLDEN = DATA / "golden"


def pytest_report_header(config):
    from tinyllm.quants.matmul import AVAILABLE_KERNEL_SETS

    jit = "off (NUMBA_DISABLE_JIT=1)" if os.environ.get("NUMBA_DISABLE_JIT") == "1" else "on"
    return f"tinyllm kernel sets tested: {', '.join(AVAILABLE_KERNEL_SETS)}; Numba JIT {jit}"


@pytest.fixture(scope="session")
def golden() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def manifest() -> dict:
    """llama.cpp's quantized files of tiny-f32.gguf: per file its sha256 and per tensor its
    type, shape and sha256 (tests/data/hash_gguf.py wrote it from llama-quantize's output).
    Every manifest*.json in golden/quant is read (files made with an imatrix have their own)."""
    out = {}
    for path in sorted((GOLDEN / "quant").glob("manifest*.json")):
        out.update(json.loads(path.read_text()))
    return out


def golden_options(stem: str) -> tuple[str, bool]:
    """'Q4_K_M' -> ('Q4_K_M', pure False); 'pure-Q4_K_S' -> ('Q4_K_S', True)."""
    return (stem[5:], True) if stem.startswith("pure-") else (stem, False)


@pytest.fixture(scope="session")
def llama_cpp_file(tmp_path_factory, manifest):
    """stem -> the path of a file byte-identical to llama-quantize's tiny-<stem>.gguf: written
    by tinyllm's quantizer from tiny-f32.gguf and checked against the manifest's sha256, so a
    test that reads it reads llama.cpp's bytes."""
    from tinyllm.quantization import quantize_file

    made = {}
    folder = tmp_path_factory.mktemp("llama-cpp-files")

    def get(stem: str) -> Path:
        if stem not in made:
            tname, pure = golden_options(stem)
            out = folder / f"tiny-{stem}.gguf"
            quantize_file(GOLDEN / "quant" / "tiny-f32.gguf", out, tname, pure=pure, threads=2)
            digest = hashlib.sha256(out.read_bytes()).hexdigest()
            if digest != manifest[f"tiny-{stem}"]["sha256"]:
                pytest.fail(f"tinyllm's tiny-{stem}.gguf is not byte-identical to llama-quantize's")
            made[stem] = out
        return made[stem]

    return get


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The real Gemma 3 270M Q4_K_M file (assembled from the demo package on first use)."""
    from tinyllm.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def llama_cpp_files() -> Path:
    """llama.cpp's vocabulary suites and tokenizer sources, taken once out of the
    llama-cpp-python 0.3.36 sdist on PyPI into tinyllm's cache (tests/llama_cpp_sdist.py).
    Without network access on the first run the tests that need them fail, with pip's reason."""
    from llama_cpp_sdist import llama_cpp_files as fetch

    try:
        return fetch()
    except RuntimeError as e:
        pytest.fail(f"llama.cpp's vocabulary suites are not available: {e}")
