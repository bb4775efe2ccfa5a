"""tinyllm: a minimal CPU inference runtime for LLaMA-style GGUF models.

    import tinyllm
    model = tinyllm.load()                       # the default model, or a path
    for piece in tinyllm.generate(model, "The capital of France is", max_tokens=16):
        print(piece, end="")
    tinyllm.quantize("model-f16.gguf", "model-q4_k_m.gguf", "Q4_K_M")
"""
import os

# Numba's LLVM optimisation level 1 instead of its default 3: a first run compiles ~22% less
# (Gemma's kernels 24 -> 19 s on one core) and the kernels run as fast, since they are explicit
# AVX2 intrinsics and tiled loops that O3's extra unrolling does not improve (Gemma tg64
# +5-10%, pp256 -1-6%, SmolLM2 within noise: `tinyllm bench` and
# benchmarks/bench_cold_start.py with NUMBA_OPT=3 and 1). Numba reads it once, on import,
# which is why it is set here, before any module of the package imports numba. A user's own
# NUMBA_OPT wins.
os.environ.setdefault("NUMBA_OPT", "1")

from .errors import TinyLLMError  # noqa: E402

__version__ = "0.1.0"


def load(path=None, **kwargs):
    """Load a GGUF model (the default model when path is None); see tinyllm.model.load."""
    from .model import load as _load

    return _load(path, **kwargs)


def generate(model, prompt, **kwargs):
    """Stream the continuation of `prompt` (text or token ids); see tinyllm.generation.generate."""
    from .generation import generate as _generate

    return _generate(model, prompt, **kwargs)


def quantize(src, dst, type_name, **kwargs):
    """Quantize a float GGUF file as llama-quantize does; see tinyllm.quantization.quantize_file."""
    from .quantization import quantize_file

    return quantize_file(src, dst, type_name, **kwargs)
