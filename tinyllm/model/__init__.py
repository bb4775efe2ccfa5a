"""Models: config from GGUF metadata, quantized weights, KV cache and the forward pass.

    from tinyllm.model import load
    model = load("model.gguf", n_ctx=4096, threads=2, kv_type="f16")
    logits = model.forward(model.tokenizer.encode("Hello"))   # float32 (n_vocab,)
"""
from .config import SUPPORTED_ARCHS, ModelConfig
from .kv_cache import KV_TYPES, KVCache, KVUsage
from .core import Model


def load(path=None, n_ctx: int = 4096, threads: int | None = None, kv_type: str = "f16", n_ubatch: int = 512) -> Model:
    """Load a llama / qwen2 / qwen3 / gemma3 GGUF (path None: the default model).

    n_ctx is rounded up to a multiple of 256 as llama.cpp does (model.kv.n_ctx holds the value
    used); kv_type is "f16", "f32" or "q8_0"; threads sets the kernels' thread count (None
    leaves it as it is); n_ubatch is the most tokens one prefill step runs (llama.cpp's 512).
    Weights stay memory-mapped: nothing is dequantized. Raises ModelError for an unsupported
    architecture, a missing tensor, a wrong shape or an unsupported tensor type.
    """
    from ..default_model import resolve_model
    from ..gguf_io import GGUFFile
    from ..jit import set_threads

    if threads is not None:
        set_threads(threads)
    gguf = GGUFFile(resolve_model(path))
    try:
        config = ModelConfig.from_gguf(gguf)
        if config.n_vocab == 0 and "token_embd.weight" in gguf.tensors:
            import dataclasses

            config = dataclasses.replace(config, n_vocab=int(gguf.tensors["token_embd.weight"].shape[0]))
        return Model(gguf, config, n_ctx=n_ctx, kv_type=kv_type, n_ubatch=n_ubatch)
    except BaseException:
        gguf.close()
        raise


__all__ = ["load", "Model", "ModelConfig", "KVCache", "KVUsage", "KV_TYPES", "SUPPORTED_ARCHS"]
