"""Tiny random GGUF models for fast tests of the model, tokenizer, generation and chat.

    from tests.tinymodels import make_tiny_model      # or `from tinymodels import ...` in tests/
    path = make_tiny_model(tmp_path, arch="gemma3", wtype="Q8_0", seed=0)
    model = tinyllm.model.load(path, n_ctx=256)

Stable signature (other test files rely on it):

    make_tiny_model(tmp_path, arch="llama" | "qwen2" | "gemma3", wtype="Q8_0", seed=0, **overrides) -> Path

`wtype` is the type of every 2-D weight (any type tinyllm quantizes: F32, F16, BF16, Q4_0,
Q5_0, Q8_0, Q4_K, Q5_K, Q6_K, IQ3_S, ..., IQ1_M); norms and biases stay F32. K-quant and
IQ grid types get n_embd 256 so every row length is a multiple of 256. Weights are random,
quantized with tinyllm's own block code and written with `tinyllm.gguf_io.write_gguf`. The same (arch, wtype, seed, overrides) always
gives the same bytes, and a file already in tmp_path is reused.

Overrides (keyword only): n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train,
n_swa (gemma3, default 8), rope_base, tied (no output.weight; default True for qwen2/gemma3),
rope_freqs (llama: add a rope_freqs.weight tensor), output_bias (qwen2), tensor_types
(dict: tensor name without ".weight" -> type name, e.g. {"token_embd": "Q8_0"}),
chat_template (str, written as tokenizer.chat_template), name (file name).

Vocabulary (SPM, `tokenizer.ggml.model` = "llama"): special tokens first, then the 256 byte
tokens <0x00>..<0xFF>, then pieces (letters, digits, punctuation, "▁" and a few merges such as
"▁Hello", "▁world", "é"); emoji and CJK text fall back to byte tokens. Ids:

    llama:  0 <unk>  1 <s> (BOS)  2 </s> (EOS)                          add_space_prefix true
    qwen2:  0 <unk>  1 <s> (BOS)  2 </s> (EOS)  3 <|im_start|>  4 <|im_end|>   add_space_prefix false
    gemma3: 0 <pad>  1 <eos> (EOS)  2 <bos> (BOS)  3 <unk>  4 <start_of_turn>  5 <end_of_turn>
            (plus "\\n" as a user-defined piece, as in Gemma)                 add_space_prefix false
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tinyllm.gguf_io import write_gguf
from tinyllm.quants.types import GGMLType, parse_type

ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
K_TYPES = {GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K, GGMLType.Q2_K, GGMLType.Q3_K}
IQ_GRID_TYPES = {GGMLType.IQ3_S, GGMLType.IQ3_XXS, GGMLType.IQ2_XXS, GGMLType.IQ2_XS, GGMLType.IQ2_S,
                 GGMLType.IQ1_S, GGMLType.IQ1_M}

# token types (architectures.md §1.6)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPECIALS = {
    "llama": [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)],
    "qwen2": [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL), ("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL)],
    "qwen3": [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL), ("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL)],
    "gemma3": [
        ("<pad>", CONTROL),
        ("<eos>", CONTROL),
        ("<bos>", CONTROL),
        ("<unk>", CONTROL),  # Gemma types <unk> CONTROL; the tokenizer fixes it up (§4.5)
        ("<start_of_turn>", CONTROL),
        ("<end_of_turn>", CONTROL),
    ],
}
SPECIAL_IDS = {  # bos, eos, unk, pad
    "llama": (1, 2, 0, None),
    "qwen2": (1, 2, 0, None),
    "qwen3": (1, 2, 0, None),
    "gemma3": (2, 1, 3, 0),
}

# Merged pieces in priority order (earlier = higher score = merged first).
_MERGES = [
    "▁t", "he", "▁the", "in", "er", "▁a", "on", "re", "an", "or", "▁w", "ll", "el", "lo", "ld",
    "▁H", "▁He", "▁Hel", "▁Hell", "▁Hello", "He", "Hel", "Hell", "Hello", "▁wor", "▁world",
    "is", "▁is", "▁i", "it", "▁it", "at", "en", "es", "▁s", "ou", "▁y", "▁you", "ing", "▁o", "▁of",
    "nd", "▁and", "us", "▁us", "se", "▁user", "od", "▁m", "mod", "model", "▁model", "user",
    "▁c", "▁ca", "▁cat", "▁T", "▁Th", "▁The", "Th", "The", "▁▁", "▁▁▁▁",
]
_CHARS = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-:;()") + ["▁", "é"]


def tiny_vocab(arch: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(tokens, scores float32, token types int32) of the tiny SPM vocabulary for `arch`."""
    tokens, scores, types = [], [], []
    for text, ttype in SPECIALS[arch]:
        tokens.append(text)
        scores.append(-1000.0)
        types.append(ttype)
    if arch == "gemma3":
        tokens.append("\n")
        scores.append(-1000.0)
        types.append(USER_DEFINED)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(BYTE)
    for i, piece in enumerate(_MERGES):
        tokens.append(piece)
        scores.append(-float(i))
        types.append(NORMAL)
    for i, ch in enumerate(_CHARS):
        tokens.append(ch)
        scores.append(-1000.0 - i)
        types.append(NORMAL)
    assert len(set(tokens)) == len(tokens)
    return tokens, np.asarray(scores, np.float32), np.asarray(types, np.int32)


def _defaults(arch: str, wtype: GGMLType) -> dict:
    big = wtype in K_TYPES or wtype in IQ_GRID_TYPES  # they need rows of 256
    if arch == "gemma3":
        d = dict(n_embd=64, n_layer=6, n_head=4, n_head_kv=1, head_dim=32, n_ff=128, n_swa=8, rope_base=1e6, tied=True)
        if big:
            d.update(n_embd=256, head_dim=64, n_ff=512)
    else:
        d = dict(n_embd=64, n_layer=2, n_head=4, n_head_kv=2, head_dim=16, n_ff=128, n_swa=0,
                 rope_base=10000.0 if arch == "llama" else 1e6, tied=arch in ("qwen2", "qwen3"))
        if big:
            d.update(n_embd=256, head_dim=64, n_ff=512)
    d.update(n_ctx_train=4096, rope_freqs=False, output_bias=False, tensor_types=None, chat_template=None, name=None)
    return d


def _quantize(x: np.ndarray, t: GGMLType) -> np.ndarray:
    """Blocks of `t` for float32 rows x, with tinyllm's (Numba) quantizer."""
    from tinyllm.quants.registry import TYPES, quantize

    x = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), dtype=np.float32)
    if TYPES[t].needs_imatrix:  # IQ2_XXS, IQ2_XS, IQ1_S: uniform importance
        return quantize(x, t, imatrix=np.ones(x.shape[1], np.float32))
    return quantize(x, t)


def make_tiny_model(tmp_path, arch: str = "llama", wtype: str = "Q8_0", seed: int = 0, **overrides) -> Path:
    """Write a tiny random `arch` model with 2-D weights of type `wtype` into tmp_path; return its path."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    wt = parse_type(wtype) if isinstance(wtype, str) else GGMLType(wtype)
    cfg = _defaults(arch, wt)
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise TypeError(f"unknown overrides {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(overrides)
    tag = hashlib.sha1(json.dumps([arch, wt.name, seed, sorted(cfg.items(), key=str)], default=str).encode()).hexdigest()[:8]
    path = Path(tmp_path) / (cfg["name"] or f"tiny-{arch}-{wt.name.lower()}-s{seed}-{tag}.gguf")
    if path.exists():
        return path

    D, L, H, Hkv, d, F = (cfg[k] for k in ("n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff"))
    tokens, scores, ttypes = tiny_vocab(arch)
    V = len(tokens)
    rng = np.random.default_rng(seed)
    ttypes_override = {k: parse_type(v) for k, v in (cfg["tensor_types"] or {}).items()}

    tensors = []

    def matrix(name, n_out, n_in, scale=None):
        t = ttypes_override.get(name, wt)
        w = rng.standard_normal((n_out, n_in), dtype=np.float32) * np.float32(scale or 1.0 / np.sqrt(n_in))
        tensors.append((f"{name}.weight", t, (n_out, n_in), lambda w=w, t=t: _quantize(w, t)))

    def vector(name, n, center, spread):
        v = (center + spread * rng.standard_normal(n)).astype(np.float32)
        tensors.append((name, GGMLType.F32, (n,), v))

    # Norm weights of Gemma already hold the +1 of HF's (1 + w) (§2.4), so they sit near 1 too.
    vector("output_norm.weight", D, 1.0, 0.1)
    matrix("token_embd", V, D, scale=1.0 if arch != "gemma3" else 1.0 / np.sqrt(D))
    if not cfg["tied"]:
        matrix("output", V, D)
    if cfg["output_bias"]:
        vector("output.bias", V, 0.0, 0.1)
    if cfg["rope_freqs"]:
        tensors.append(("rope_freqs.weight", GGMLType.F32, (d // 2,), np.linspace(1.0, 8.0, d // 2, dtype=np.float32)))
    for il in range(L):
        p = f"blk.{il}."
        vector(p + "attn_norm.weight", D, 1.0, 0.1)
        matrix(p + "attn_q", H * d, D)
        matrix(p + "attn_k", Hkv * d, D)
        matrix(p + "attn_v", Hkv * d, D)
        if arch == "qwen2":
            vector(p + "attn_q.bias", H * d, 0.0, 0.2)
            vector(p + "attn_k.bias", Hkv * d, 0.0, 0.2)
            vector(p + "attn_v.bias", Hkv * d, 0.0, 0.2)
        if arch in ("qwen3", "gemma3"):
            vector(p + "attn_q_norm.weight", d, 1.0, 0.1)
            vector(p + "attn_k_norm.weight", d, 1.0, 0.1)
        matrix(p + "attn_output", D, H * d)
        if arch == "gemma3":
            vector(p + "post_attention_norm.weight", D, 1.0, 0.1)
        vector(p + "ffn_norm.weight", D, 1.0, 0.1)
        matrix(p + "ffn_gate", F, D)
        matrix(p + "ffn_up", F, D)
        matrix(p + "ffn_down", D, F)
        if arch == "gemma3":
            vector(p + "post_ffw_norm.weight", D, 1.0, 0.1)

    bos, eos, unk, pad = SPECIAL_IDS[arch]
    md = {
        "general.architecture": arch,
        "general.name": f"tiny {arch} {wt.name}",
        "general.quantization_version": 2,
        f"{arch}.context_length": cfg["n_ctx_train"],
        f"{arch}.embedding_length": D,
        f"{arch}.block_count": L,
        f"{arch}.feed_forward_length": F,
        f"{arch}.attention.head_count": H,
        f"{arch}.attention.head_count_kv": Hkv,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-5 if arch == "llama" else 1e-6,
        f"{arch}.rope.freq_base": float(cfg["rope_base"]),
    }
    if d != D // H or arch == "gemma3":
        md[f"{arch}.attention.key_length"] = d
        md[f"{arch}.attention.value_length"] = d
    if arch == "llama":
        md["llama.rope.dimension_count"] = d
    if arch == "gemma3" and cfg["n_swa"]:
        md["gemma3.attention.sliding_window"] = cfg["n_swa"]
    md.update({
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": ttypes,
        "tokenizer.ggml.bos_token_id": bos,
        "tokenizer.ggml.eos_token_id": eos,
        "tokenizer.ggml.unknown_token_id": unk,
    })
    if pad is not None:
        md["tokenizer.ggml.padding_token_id"] = pad
    md.update({
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": arch == "llama",
    })
    if cfg["chat_template"]:
        md["tokenizer.chat_template"] = cfg["chat_template"]
    write_gguf(path, md, tensors)
    return path
