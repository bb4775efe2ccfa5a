"""tinyllm: a minimal CPU inference runtime for LLaMA-style GGUF models.

    import tinyllm
    model = tinyllm.load()                       # the default Gemma 3 270M, or a path
    for piece in tinyllm.generate(model, "The capital of France is", max_tokens=16):
        print(piece, end="")
"""
from .errors import TinyLLMError

__version__ = "0.1.0"


def load(path=None, **kwargs):
    """Load a GGUF model (the default model when path is None); see tinyllm.model.load."""
    from .model import load as _load

    return _load(path, **kwargs)


def generate(model, prompt, **kwargs):
    """Stream the continuation of `prompt` (text or token ids); see tinyllm.generate.generate."""
    from .generate import generate as _generate

    return _generate(model, prompt, **kwargs)


def quantize(src, dst, type_name, **kwargs):
    """Quantize a float GGUF file as llama-quantize does; see tinyllm.quantize.quantize_file."""
    from .quantize import quantize_file

    return quantize_file(src, dst, type_name, **kwargs)
