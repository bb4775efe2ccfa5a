"""tinyllm: a minimal CPU inference runtime for LLaMA-style GGUF models.

    import tinyllm
    model = tinyllm.load()                       # the default model, or a path
    for piece in tinyllm.generate(model, "The capital of France is", max_tokens=16):
        print(piece, end="")
    tinyllm.quantize("model-f16.gguf", "model-q4_k_m.gguf", "Q4_K_M")
"""
from .errors import TinyLLMError

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
