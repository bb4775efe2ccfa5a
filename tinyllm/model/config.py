"""ModelConfig: the hyperparameters of a llama / qwen2 / qwen3 / gemma3 GGUF, read once from its metadata.

Keys and defaults follow spec/architectures.md §1.6; per-architecture rules follow §2.1–§2.4.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")

# RoPE pairing per architecture (§2.2): llama GGUFs are permuted for adjacent pairs,
# qwen2, qwen3 and gemma3 rotate halves (llama.cpp's llama_model_rope_type).
ROPE_NEOX = {"llama": False, "qwen2": True, "qwen3": True, "gemma3": True}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_embd: int  # D
    n_layer: int
    n_head: int  # H
    n_head_kv: int  # Hkv
    head_dim: int  # d (key and value length)
    n_ff: int  # F
    n_vocab: int  # V
    n_ctx_train: int
    norm_eps: float
    n_rot: int  # RoPE acts on the first n_rot dims of each head
    rope_neox: bool  # True: rotate halves (x[i], x[i+n_rot/2]); False: adjacent pairs
    rope_base: float  # theta base of full-attention layers
    rope_scale: float  # freq_scale = 1/scaling.factor, full-attention layers only
    rope_base_swa: float  # theta base of sliding-window layers
    n_swa: int  # sliding window in tokens, 0 = none
    swa_layers: tuple[bool, ...]  # per layer: True if it uses the sliding window
    attn_scale: float  # multiplies the scores (llama/qwen2) or Q (gemma3); see §2.1, §2.4
    embd_scale: float  # gemma3 multiplies the looked-up embedding by sqrt(D)
    final_logit_softcap: float  # 0 = off
    name: str = ""
    file_type: int | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_embd_kv(self) -> int:
        """Values per token per layer in K (and in V): Hkv·d."""
        return self.n_head_kv * self.head_dim

    @property
    def n_swa_layers(self) -> int:
        return sum(self.swa_layers)

    @classmethod
    def from_gguf(cls, gguf) -> "ModelConfig":
        """Build the config from a GGUFFile's metadata (ModelError names any bad or missing key)."""
        md = gguf.metadata
        where = str(gguf.path)
        arch = md.get("general.architecture")
        if arch not in SUPPORTED_ARCHS:
            raise ModelError(
                f"{where}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})"
            )

        def key(name):
            return f"{arch}.{name}"

        def required(name):
            if key(name) not in md:
                raise ModelError(f"{where}: required metadata key {key(name)!r} is missing")
            return md[key(name)]

        def uniform_int(name, value):
            # Per-layer arrays are allowed by the format; we run models whose layers all agree.
            if isinstance(value, (np.ndarray, list, tuple)):
                vals = {int(v) for v in np.asarray(value).ravel()}
                if len(vals) != 1:
                    raise ModelError(
                        f"{where}: {key(name)} varies per layer ({sorted(vals)}); only uniform values are supported"
                    )
                return vals.pop()
            return int(value)

        n_embd = uniform_int("embedding_length", required("embedding_length"))
        n_layer = uniform_int("block_count", required("block_count"))
        n_ctx_train = uniform_int("context_length", required("context_length"))
        n_head = uniform_int("attention.head_count", required("attention.head_count"))
        n_ff = uniform_int("feed_forward_length", required("feed_forward_length"))
        n_head_kv = uniform_int("attention.head_count_kv", md.get(key("attention.head_count_kv"), n_head))
        norm_eps = float(required("attention.layer_norm_rms_epsilon"))
        if n_head <= 0 or n_head_kv <= 0 or n_head % n_head_kv != 0:
            raise ModelError(
                f"{where}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )
        head_dim = uniform_int("attention.key_length", md.get(key("attention.key_length"), n_embd // n_head))
        head_dim_v = uniform_int("attention.value_length", md.get(key("attention.value_length"), head_dim))
        if head_dim_v != head_dim:
            raise ModelError(
                f"{where}: key_length {head_dim} != value_length {head_dim_v}; only equal K/V head sizes are supported"
            )
        if head_dim % 2:
            raise ModelError(f"{where}: head size {head_dim} is odd; RoPE needs an even head size")
        n_rot = uniform_int("rope.dimension_count", md.get(key("rope.dimension_count"), head_dim))
        if arch == "llama" and n_rot != head_dim:
            raise ModelError(f"{where}: {key('rope.dimension_count')} = {n_rot} must equal the head size {head_dim}")
        if not 0 < n_rot <= head_dim or n_rot % 2:
            raise ModelError(f"{where}: {key('rope.dimension_count')} = {n_rot} does not fit head size {head_dim}")

        tokens = md.get("tokenizer.ggml.tokens")
        n_vocab = int(md.get(key("vocab_size"), len(tokens) if tokens is not None else 0))

        rope_base = float(md.get(key("rope.freq_base"), 10000.0))
        scaling = md.get(key("rope.scaling.type"), "linear")
        factor = float(md.get(key("rope.scaling.factor"), md.get(key("rope.scale_linear"), 0.0)) or 0.0)
        if scaling not in ("none", "linear") and not (scaling in ("yarn", "longrope") and factor in (0.0, 1.0)):
            raise ModelError(
                f"{where}: RoPE scaling type {scaling!r} is not supported (supported: none, linear)"
            )
        rope_scale = 1.0 / factor if scaling == "linear" and factor > 0 else 1.0

        n_swa = 0
        swa_layers = (False,) * n_layer
        rope_base_swa = rope_base
        attn_scale = 1.0 / math.sqrt(head_dim)
        embd_scale = 1.0
        if arch in ("llama", "qwen2", "qwen3") and key("attention.scale") in md:
            attn_scale = float(md[key("attention.scale")])
        if arch == "gemma3":
            n_swa = int(md.get(key("attention.sliding_window"), 0) or 0)
            rope_base_swa = float(md.get(key("rope.freq_base_swa"), 10000.0))
            if n_swa > 0:
                swa_layers = _swa_pattern(md.get(key("attention.sliding_window_pattern"), 6), n_layer, where, key)
            # Gemma 3 27B (62 layers) scales by 1/sqrt(D/H), matching HF's query_pre_attn_scalar (§2.4).
            attn_scale = 1.0 / math.sqrt(n_embd // n_head) if n_layer == 62 else 1.0 / math.sqrt(head_dim)
            embd_scale = math.sqrt(n_embd)
        softcap = float(md.get(key("final_logit_softcapping"), 0.0) or 0.0)
        return cls(
            arch=arch,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_ff=n_ff,
            n_vocab=n_vocab,
            n_ctx_train=n_ctx_train,
            norm_eps=norm_eps,
            n_rot=n_rot,
            rope_neox=ROPE_NEOX[arch],
            rope_base=rope_base,
            rope_scale=rope_scale,
            rope_base_swa=rope_base_swa,
            n_swa=n_swa,
            swa_layers=swa_layers,
            attn_scale=attn_scale,
            embd_scale=embd_scale,
            final_logit_softcap=softcap,
            name=str(md.get("general.name", "")),
            file_type=md.get("general.file_type"),
        )


def _swa_pattern(pattern, n_layer, where, key) -> tuple[bool, ...]:
    """Which layers slide (§2.4): an integer n means layer il slides iff il % n < n - 1;
    a bool array gives the layers directly."""
    if isinstance(pattern, (np.ndarray, list, tuple)):
        flags = [bool(v) for v in np.asarray(pattern).ravel()]
        if len(flags) != n_layer:
            raise ModelError(
                f"{where}: {key('attention.sliding_window_pattern')} has {len(flags)} entries for {n_layer} layers"
            )
        return tuple(flags)
    n = int(pattern)
    if n <= 0:
        return (False,) * n_layer
    return tuple(il % n < n - 1 for il in range(n_layer))
