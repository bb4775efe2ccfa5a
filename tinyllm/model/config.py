"""ModelConfig: the hyperparameters of a llama / qwen2 / qwen3 / gemma3 GGUF, read once from its metadata.

Keys and defaults follow spec/architectures.md §1.6; per-architecture rules follow §2.1–§2.4.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError, show

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")

# RoPE pairing per architecture (§2.2): llama GGUFs are permuted for adjacent pairs,
# qwen2, qwen3 and gemma3 rotate halves (llama.cpp's llama_model_rope_type).
ROPE_NEOX = {"llama": False, "qwen2": True, "qwen3": True, "gemma3": True}
MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: a block_count beyond it is a corrupt file
MAX_DIM = 2**31 - 1  # sizes and counts the kernels index with int32


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
        if not isinstance(arch, str) or arch not in SUPPORTED_ARCHS:
            raise ModelError(
                f"{where}: architecture {show(arch)} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})"
            )

        m = _Meta(md, where, arch)
        key = m.key
        n_layer = m.int("block_count", hi=MAX_LAYERS)
        n_embd = m.int("embedding_length")
        n_ctx_train = m.int("context_length")
        n_head = m.int("attention.head_count")
        n_ff = m.int("feed_forward_length")
        n_head_kv = m.int("attention.head_count_kv", n_head)
        norm_eps = m.float("attention.layer_norm_rms_epsilon", lo=0.0, hi=1.0, what="a number in (0, 1)")
        if n_head % n_head_kv != 0:
            raise ModelError(
                f"{where}: head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )
        if key("attention.key_length") not in md and n_embd // n_head < 2:
            raise ModelError(f"{where}: head size embedding_length / head_count = {n_embd} / {n_head} is below 2")
        head_dim = m.int("attention.key_length", n_embd // n_head, lo=2)
        head_dim_v = m.int("attention.value_length", head_dim)
        if head_dim_v != head_dim:
            raise ModelError(
                f"{where}: key_length {head_dim} != value_length {head_dim_v}; only equal K/V head sizes are supported"
            )
        if head_dim % 2:
            raise ModelError(f"{where}: head size {head_dim} is odd; RoPE needs an even head size")
        n_rot = m.int("rope.dimension_count", head_dim)
        if arch == "llama" and n_rot != head_dim:
            raise ModelError(f"{where}: {key('rope.dimension_count')} = {n_rot} must equal the head size {head_dim}")
        if not 0 < n_rot <= head_dim or n_rot % 2:
            raise ModelError(f"{where}: {key('rope.dimension_count')} = {n_rot} does not fit head size {head_dim}")

        tokens = md.get("tokenizer.ggml.tokens")
        n_vocab = m.int("vocab_size", len(tokens) if hasattr(tokens, "__len__") else 0, lo=0)

        # theta_i = base^(-2i/n_rot): a base below 1 grows without bound, and overflows
        rope_base = m.float("rope.freq_base", 10000.0, lo=1.0, closed=True, what="a number >= 1")
        scaling = m.str("rope.scaling.type", "linear")
        legacy = m.float("rope.scale_linear", 0.0, lo=0.0, closed=True, what="a number >= 0 (0: none)")
        factor = m.float("rope.scaling.factor", legacy, lo=0.0, closed=True, what="a number >= 0 (0: none)")
        if scaling not in ("none", "linear") and not (scaling in ("yarn", "longrope") and factor in (0.0, 1.0)):
            raise ModelError(
                f"{where}: RoPE scaling type {show(scaling)} is not supported (supported: none, linear)"
            )
        rope_scale = 1.0 / factor if scaling == "linear" and factor > 0 else 1.0

        n_swa = 0
        swa_layers = (False,) * n_layer
        rope_base_swa = rope_base
        attn_scale = 1.0 / math.sqrt(head_dim)
        embd_scale = 1.0
        if arch in ("llama", "qwen2", "qwen3") and key("attention.scale") in md:
            attn_scale = m.float("attention.scale", lo=0.0, what="a number > 0")
        if arch == "gemma3":
            n_swa = m.int("attention.sliding_window", 0, lo=0)
            rope_base_swa = m.float("rope.freq_base_swa", 10000.0, lo=1.0, closed=True, what="a number >= 1")
            if n_swa > 0:
                swa_layers = _swa_pattern(md.get(key("attention.sliding_window_pattern"), 6), n_layer, where, key)
            # Gemma 3 27B (62 layers) scales by 1/sqrt(D/H), matching HF's query_pre_attn_scalar (§2.4).
            attn_scale = 1.0 / math.sqrt(max(n_embd // n_head, 1)) if n_layer == 62 else 1.0 / math.sqrt(head_dim)
            embd_scale = math.sqrt(n_embd)
        softcap = m.float("final_logit_softcapping", 0.0, lo=0.0, closed=True, what="a number >= 0 (0: off)")
        name = md.get("general.name", "")
        file_type = md.get("general.file_type")
        if file_type is not None and (isinstance(file_type, bool) or not isinstance(file_type, (int, np.integer))):
            raise ModelError(f"{where}: metadata general.file_type = {show(file_type)} is not an integer")
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
            name=name if isinstance(name, str) else show(name),
            file_type=file_type,
        )


_REQUIRED = object()


class _Meta:
    """Typed, range-checked reads of `<arch>.*` metadata: each bad value is one ModelError
    naming the file, the key and the value (quoted short), before anything is sized by it."""

    def __init__(self, md, where: str, arch: str):
        self.md, self.where, self.arch = md, where, arch

    def key(self, name: str) -> str:
        return f"{self.arch}.{name}"

    def get(self, name: str, default):
        k = self.key(name)
        if k in self.md:
            return self.md[k]
        if default is _REQUIRED:
            raise ModelError(f"{self.where}: required metadata key {k!r} is missing")
        return default

    def bad(self, name: str, value, why: str):
        raise ModelError(f"{self.where}: metadata {self.key(name)} = {show(value)} {why}")

    def int(self, name: str, default=_REQUIRED, lo: int = 1, hi: int = MAX_DIM) -> int:
        v = self.get(name, default)
        if isinstance(v, np.ndarray) and v.ndim == 1 and v.size and np.issubdtype(v.dtype, np.integer):
            # Per-layer arrays are allowed by the format; we run models whose layers all agree.
            vals = sorted({int(x) for x in v.tolist()})
            if len(vals) != 1:
                raise ModelError(
                    f"{self.where}: {self.key(name)} varies per layer ({show(vals)}); only uniform values are supported"
                )
            v = vals[0]
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            self.bad(name, v, "is not an integer")
        if not lo <= v <= hi:
            self.bad(name, int(v), f"is out of range (supported: {lo} to {hi})")
        return int(v)

    def float(self, name: str, default=_REQUIRED, *, lo: float, hi: float = math.inf, closed: bool = False,
              what: str) -> float:
        """A finite number above lo (or equal, closed=True) and below hi."""
        v = self.get(name, default)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            self.bad(name, v, f"is not a number (supported: {what})")
        v = float(v)
        if not math.isfinite(v) or v < lo or (v == lo and not closed) or v >= hi:
            self.bad(name, v, f"is out of range (supported: {what})")
        return v

    def str(self, name: str, default: str) -> str:
        v = self.get(name, default)
        if not isinstance(v, str):
            self.bad(name, v, "is not a string")
        return v


def _swa_pattern(pattern, n_layer, where, key) -> tuple[bool, ...]:
    """Which layers slide (§2.4): an integer n means layer il slides iff il % n < n - 1;
    a bool array gives the layers directly."""
    if isinstance(pattern, (np.ndarray, list, tuple)):
        arr = np.asarray(pattern)
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ModelError(f"{where}: metadata {key('attention.sliding_window_pattern')} = {show(pattern)} "
                             f"is not an array of booleans")
        flags = [bool(v) for v in arr.ravel()]
        if len(flags) != n_layer:
            raise ModelError(
                f"{where}: {key('attention.sliding_window_pattern')} has {len(flags)} entries for {n_layer} layers"
            )
        return tuple(flags)
    if isinstance(pattern, (bool, np.bool_)) or not isinstance(pattern, (int, np.integer)):
        raise ModelError(f"{where}: metadata {key('attention.sliding_window_pattern')} = {show(pattern)} "
                         f"is not an integer or an array of booleans")
    n = int(pattern)
    if n <= 0:
        return (False,) * n_layer
    return tuple(il % n < n - 1 for il in range(n_layer))
