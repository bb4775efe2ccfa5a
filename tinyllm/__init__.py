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


def __getattr__(name):
    # `tinyllm.quantize` is the callable package tinyllm/quantize/ (quantize_file), imported on
    # first use so that `import tinyllm` stays light
    if name == "quantize":
        import importlib

        return importlib.import_module(".quantize", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
