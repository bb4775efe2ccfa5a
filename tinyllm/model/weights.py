"""The model's weights, named as the GGUF tensors (`w.token_embd`, `w.blk[i].attn_q`, ...).

Every weight matrix is a QMatrix over the memory-mapped file (its quantized blocks, never a
float copy). Norm weights and biases are small float32 vectors (zero-copy views for F32).
A `.bias` tensor becomes the attribute `<name>_bias` (`blk[i].attn_q_bias`).
"""

import numpy as np

from ..errors import ModelError, show
from ..gguf_io import drop_pages
from ..quants.matmul import QMatrix
from ..quants.types import GGMLType


class Layer:
    """One transformer block's tensors; attributes named as `blk.N.<name>` without `.weight`."""

    # optional tensors default to absent
    attn_q_bias = attn_k_bias = attn_v_bias = attn_output_bias = None
    attn_q_norm = attn_k_norm = None

    def __init__(self, il: int):
        self.il = il

    def __repr__(self):
        return f"Layer({self.il}: {', '.join(k for k in vars(self) if k != 'il')})"


def _tensor_specs(cfg):
    """(name, kind, shape, required) of each tensor per arch (§2.1, §2.3, §2.4; qwen3 is qwen2 without
    biases plus per-head q/k norms, llama.cpp src/models/qwen3.cpp); kind 'm' = matrix,
    'v' = float vector. Shapes are numpy order (n_out, n_in)."""
    D, F, V, d = cfg.n_embd, cfg.n_ff, cfg.n_vocab, cfg.head_dim
    q_dim, kv_dim = cfg.n_head * d, cfg.n_head_kv * d
    top = [
        ("token_embd.weight", "m", (V, D), True),
        ("output_norm.weight", "v", (D,), True),
        ("output.weight", "m", (V, D), False),  # absent: tied to token_embd
    ]
    if cfg.arch == "llama":
        top.append(("rope_freqs.weight", "v", (cfg.n_rot // 2,), False))  # Llama 3.x RoPE scaling
    if cfg.arch == "qwen2":
        top.append(("output.bias", "v", (V,), False))
    layer = [
        ("attn_norm.weight", "v", (D,), True),
        ("attn_q.weight", "m", (q_dim, D), True),
        ("attn_k.weight", "m", (kv_dim, D), True),
        ("attn_v.weight", "m", (kv_dim, D), True),
        ("attn_output.weight", "m", (D, q_dim), True),
        ("ffn_norm.weight", "v", (D,), True),
        ("ffn_gate.weight", "m", (F, D), True),
        ("ffn_up.weight", "m", (F, D), True),
        ("ffn_down.weight", "m", (D, F), True),
    ]
    if cfg.arch in ("llama", "qwen2"):
        required = cfg.arch == "qwen2"  # llama.cpp's qwen2 requires the q/k/v biases
        layer += [
            ("attn_q.bias", "v", (q_dim,), required),
            ("attn_k.bias", "v", (kv_dim,), required),
            ("attn_v.bias", "v", (kv_dim,), required),
        ]
        if cfg.arch == "llama":
            layer.append(("attn_output.bias", "v", (D,), False))
    if cfg.arch in ("qwen3", "gemma3"):  # per-head RMSNorm of q and k
        layer += [
            ("attn_q_norm.weight", "v", (d,), True),
            ("attn_k_norm.weight", "v", (d,), True),
        ]
    if cfg.arch == "gemma3":
        layer += [
            ("post_attention_norm.weight", "v", (D,), True),
            ("post_ffw_norm.weight", "v", (D,), True),
        ]
    return top, layer


def _attr(name: str) -> str:
    base, _, kind = name.rpartition(".")
    return base if kind == "weight" else f"{base}_{kind}"


def _vector(info, where) -> np.ndarray:
    if info.type == GGMLType.F32:
        v = info.array()
    elif info.type == GGMLType.F16:
        v = info.array().astype(np.float32)
    else:
        raise ModelError(f"{where}: tensor {info.name} has type {info.type.name}; norm weights and biases must be F32 or F16")
    # a NaN here would be swallowed by the int8 activations of the next matmul: garbage, not NaN
    if not np.isfinite(v.sum(dtype=np.float64)):
        raise ModelError(f"{where}: tensor {info.name} holds NaN or Inf values")
    return v


def matrix_tensors(gguf, cfg, matmul_only: bool = False) -> list:
    """The TensorInfos of the file's weight matrices, unchecked (Weights checks them): with
    matmul_only, those the forward pass multiplies by (not token_embd, which it reads rows of,
    unless it also serves as the output matrix)."""
    top, layer = _tensor_specs(cfg)
    tensors = gguf.tensors
    names = [n for n, kind, _, _ in top if kind == "m"]
    if matmul_only and "output.weight" in tensors:
        names.remove("token_embd.weight")
    names += [f"blk.{il}.{n}" for il in range(cfg.n_layer) for n, kind, _, _ in layer if kind == "m"]
    return [tensors[n] for n in names if n in tensors]


class Weights:
    """All tensors of one model: top-level ones as attributes, blocks in `blk`."""

    output_bias = rope_freqs = None

    def __init__(self, gguf, cfg):
        where = str(gguf.path)
        tensors = gguf.tensors
        top, layer = _tensor_specs(cfg)
        used = set()
        repacked = []

        def get(name, kind, shape, required):
            info = tensors.get(name)
            if info is None:
                if required:
                    raise ModelError(f"{where}: required tensor {name} is missing")
                return None
            used.add(name)
            got = tuple(int(s) for s in info.shape)
            if got != shape:
                raise ModelError(f"{where}: tensor {name} has shape {got}, expected {shape}")
            if kind == "v":
                return _vector(info, where)
            # the kernels read the repack, so its mapped pages are dropped as it is made (get_rows
            # maps the rows it reads back); float weights are used in place
            repacks = info.type not in (GGMLType.F32, GGMLType.F16, GGMLType.BF16)
            try:
                m = QMatrix.from_tensor(info, release=drop_pages if repacks else None)
            except ModelError as e:
                raise ModelError(f"{where}: {e}") from None
            if repacks:
                repacked.append(info.data)
            return m

        for name, kind, shape, required in top:
            setattr(self, _attr(name), get(name, kind, shape, required))
        self.tied = self.output is None
        if self.tied:
            self.output = self.token_embd  # lm_head shares the embedding matrix (§2.0 "Tied output")
        self.blk = []
        for il in range(cfg.n_layer):
            lw = Layer(il)
            for name, kind, shape, required in layer:
                setattr(lw, _attr(name), get(f"blk.{il}.{name}", kind, shape, required))
            self.blk.append(lw)
        # Again, now that all are read: reading the next tensor maps back the last ~2 MiB of the
        # one before (the kernel maps a whole large folio on a fault): ~43 MiB of Gemma's RSS.
        for data in repacked:
            drop_pages(data)
        unused = [n for n in tensors if n not in used]
        if unused:
            raise ModelError(
                f"{where}: tensor {show(unused[0])} is not used by the {cfg.arch} forward pass"
                f"{f' (and {len(unused) - 1} more)' if len(unused) > 1 else ''}; such models are not supported"
            )

    def matrices(self):
        """(name, QMatrix) of every distinct weight matrix."""
        seen = set()
        out = []
        for name, m in [("token_embd", self.token_embd), ("output", self.output)] + [
            (f"blk.{lw.il}.{k}", v) for lw in self.blk for k, v in vars(lw).items()
        ]:
            if isinstance(m, QMatrix) and id(m) not in seen:
                seen.add(id(m))
                out.append((name, m))
        return out
