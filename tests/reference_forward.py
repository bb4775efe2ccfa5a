"""An independent float64 NumPy forward pass for llama / qwen2 / gemma3 GGUFs, written from
spec/architectures.md §1.6 and §2 (not from tinyllm.model), over weights dequantized with
`tinyllm.quants.registry.dequantize` (the type modules' NumPy code).

    ref = ReferenceModel(path)
    logits = ref.logits(tokens)                 # float64 (T, V): every position, full recompute
    logits = ref.logits(tokens, emulate=True)   # same, with ggml's rounding steps emulated

The plain pass keeps every activation in float64. With `emulate=True` it also rounds where
ggml does (spec §2.0 "activation precision"): each matmul input is quantized to the weight's
activation type (Q8_0 for Q4_0/Q5_0/Q8_0 weights, Q8_1 for Q4_1/Q5_1, Q8_K for K-quants) with
the reference quantizers and dequantized back, K and V are stored as fp16 (or q8_0 blocks), and GELU goes
through fp16 in and out as ggml's lookup table does. The arithmetic between those rounding
points stays float64, so the emulated pass differs from tinyllm only by float32 summation.
"""
from __future__ import annotations

import math

import numpy as np

from tinyllm.gguf_io import GGUFFile
from tinyllm.quants import act
from tinyllm.quants import registry as R
from tinyllm.quants.types import GGMLType


def act_round(x: np.ndarray, wtype: GGMLType) -> np.ndarray:
    """x as ggml's matmul sees it against weights of `wtype`: quantized to its activation type
    (the value d*q of each element; Q8_1's s only enters through the weights' mins)."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    kind = R.TYPES[wtype].act
    if kind == act.F32_ACT:
        return x32.astype(np.float64)
    qs, d, _ = act.quantize_act_ref(kind, x32)
    blk = act.act_block(kind)
    y = qs.astype(np.float32).reshape(x32.shape[0], -1, blk) * d[:, :, None]
    return y.reshape(x32.shape).astype(np.float64)


def kv_round(x: np.ndarray, kv_type: str) -> np.ndarray:
    """Values as the KV cache stores them (x: (..., d))."""
    if kv_type == "f32":
        return x.astype(np.float32).astype(np.float64)
    if kv_type == "f16":
        return x.astype(np.float32).astype(np.float16).astype(np.float64)
    if kv_type == "q8_0":
        # llama.cpp writes a q8_0 cache with the CPU backend's activation-side Q8_0 quantizer
        x32 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        qs, d, _ = act.quantize_act_ref(act.Q8_0, x32)
        y = qs.astype(np.float32).reshape(x32.shape[0], -1, 32) * d[:, :, None]
        return y.reshape(x.shape).astype(np.float64)
    raise ValueError(kv_type)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_fp16_table(x: np.ndarray) -> np.ndarray:
    """ggml's CPU GELU (§2.0): x rounded to fp16, result rounded to fp16; x <= -10 -> 0, x >= 10 -> x."""
    h = x.astype(np.float32).astype(np.float16).astype(np.float64)
    y = gelu_tanh(h).astype(np.float32).astype(np.float16).astype(np.float64)
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, y))


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float, scale: float, neox: bool, factors=None):
    """x (T, heads, d): rotate the first n_rot dims by pos·base^(-2i/n_rot)·scale/factor_i (§2.2)."""
    i = np.arange(n_rot // 2)
    inv = base ** (-2.0 * i / n_rot) * scale
    if factors is not None:
        inv = inv / factors
    theta = pos[:, None].astype(np.float64) * inv[None, :]  # (T, n_rot/2)
    c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    y = x.copy()
    if neox:
        a, b = x[..., : n_rot // 2], x[..., n_rot // 2 : n_rot]
        y[..., : n_rot // 2] = a * c - b * s
        y[..., n_rot // 2 : n_rot] = a * s + b * c
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        y[..., 0:n_rot:2] = a * c - b * s
        y[..., 1:n_rot:2] = a * s + b * c
    return y


class ReferenceModel:
    def __init__(self, path):
        self.g = GGUFFile(path)
        md = self.g.metadata
        self.arch = a = md["general.architecture"]
        assert a in ("llama", "qwen2", "qwen3", "gemma3"), a
        self.D = int(md[f"{a}.embedding_length"])
        self.L = int(md[f"{a}.block_count"])
        self.H = int(md[f"{a}.attention.head_count"])
        self.Hkv = int(md.get(f"{a}.attention.head_count_kv", self.H))
        self.d = int(md.get(f"{a}.attention.key_length", self.D // self.H))
        self.n_rot = int(md.get(f"{a}.rope.dimension_count", self.d))
        self.eps = float(md[f"{a}.attention.layer_norm_rms_epsilon"])
        self.base = float(md.get(f"{a}.rope.freq_base", 10000.0))
        factor = float(md.get(f"{a}.rope.scaling.factor", 0.0) or 0.0)
        self.scale = 1.0 / factor if factor > 0 else 1.0
        self.neox = a in ("qwen2", "qwen3", "gemma3")
        self.n_swa = int(md.get(f"{a}.attention.sliding_window", 0) or 0) if a == "gemma3" else 0
        self.base_swa = float(md.get(f"{a}.rope.freq_base_swa", 10000.0))
        pattern = 6
        # layer il slides iff il % 6 < 5: the global layers are 5, 11, 17, ... (§2.4)
        self.swa = [self.n_swa > 0 and il % pattern < pattern - 1 for il in range(self.L)]
        self.t = self.g.tensors
        self.V = self.t["token_embd.weight"].shape[0]

    def close(self):
        self.g.close()

    def has(self, name):
        return name in self.t

    def w(self, name) -> np.ndarray:
        info = self.t[name]
        return R.dequantize(info.data, info.type, info.shape).astype(np.float64)

    def linear(self, x, name, emulate):
        """x (T, n_in) @ W.T, plus `<name>.bias` when the file has it."""
        info = self.t[name + ".weight"]
        xin = act_round(x, info.type) if emulate else x
        y = xin @ self.w(name + ".weight").T
        if self.has(name + ".bias"):
            y = y + self.w(name + ".bias")
        return y

    def embed(self, tokens):
        info = self.t["token_embd.weight"]
        rows = info.data[np.asarray(tokens)]
        return R.dequantize(rows, info.type, (len(tokens), self.D)).astype(np.float64)

    def lm_head(self, x, emulate):
        name = "output.weight" if self.has("output.weight") else "token_embd.weight"
        info = self.t[name]
        xin = act_round(x, info.type) if emulate else x
        out = np.empty((x.shape[0], self.V))
        step = 16384  # dequantize the (V, D) matrix in slices to keep memory low
        for r0 in range(0, self.V, step):
            r1 = min(self.V, r0 + step)
            w = R.dequantize(info.data[r0:r1], info.type, (r1 - r0, self.D)).astype(np.float64)
            out[:, r0:r1] = xin @ w.T
        if self.has("output.bias"):
            out += self.w("output.bias")
        return out

    def attention(self, q, k, v, pos, window, kq_scale):
        """q (T, H, d), k/v (T, Hkv, d) -> (T, H·d) with causal (+ sliding window) masks and GQA."""
        T = q.shape[0]
        group = self.H // self.Hkv
        visible = pos[None, :] <= pos[:, None]  # [query, key]
        if window:
            visible &= (pos[:, None] - pos[None, :]) < window
        out = np.empty((T, self.H, self.d))
        for h in range(self.H):
            g = h // group
            s = (q[:, h, :] @ k[:, g, :].T) * kq_scale
            s = np.where(visible, s, -np.inf)
            s = s - s.max(axis=1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=1, keepdims=True)
            out[:, h, :] = p @ v[:, g, :]
        return out.reshape(T, self.H * self.d)

    def logits(self, tokens, *, emulate=False, kv_type="f16", rows=None) -> np.ndarray:
        """float64 logits (T, V) of every position (or only `rows`), tokens at positions 0..T-1."""
        tokens = np.asarray(tokens, dtype=np.int64)
        T = len(tokens)
        pos = np.arange(T)
        H, Hkv, d, D = self.H, self.Hkv, self.d, self.D
        gemma = self.arch == "gemma3"
        x = self.embed(tokens)
        if gemma:
            x = x * math.sqrt(D)
        factors = self.w("rope_freqs.weight") if self.has("rope_freqs.weight") else None
        for il in range(self.L):
            p = f"blk.{il}."
            h = rms_norm(x, self.w(p + "attn_norm.weight"), self.eps)
            q = self.linear(h, p + "attn_q", emulate).reshape(T, H, d)
            k = self.linear(h, p + "attn_k", emulate).reshape(T, Hkv, d)
            v = self.linear(h, p + "attn_v", emulate).reshape(T, Hkv, d)
            if gemma or self.arch == "qwen3":  # per-head RMSNorm of q and k
                q = rms_norm(q, self.w(p + "attn_q_norm.weight"), self.eps)
                k = rms_norm(k, self.w(p + "attn_k_norm.weight"), self.eps)
            if gemma:
                base, scale = (self.base_swa, 1.0) if self.swa[il] else (self.base, self.scale)
            else:
                base, scale = self.base, self.scale
            q = rope(q, pos, self.n_rot, base, scale, self.neox, factors)
            k = rope(k, pos, self.n_rot, base, scale, self.neox, factors)
            if emulate:
                k, v = kv_round(k, kv_type), kv_round(v, kv_type)
            if gemma:
                q = q / math.sqrt(d)  # f_attention_scale on Q, then kq_scale 1
                o = self.attention(q, k, v, pos, self.n_swa if self.swa[il] else 0, 1.0)
            else:
                o = self.attention(q, k, v, pos, 0, 1.0 / math.sqrt(d))
            a = self.linear(o, p + "attn_output", emulate)
            if gemma:
                a = rms_norm(a, self.w(p + "post_attention_norm.weight"), self.eps)
            x = x + a
            h = rms_norm(x, self.w(p + "ffn_norm.weight"), self.eps)
            gate = self.linear(h, p + "ffn_gate", emulate)
            up = self.linear(h, p + "ffn_up", emulate)
            if gemma:
                act = gelu_fp16_table(gate) if emulate else gelu_tanh(gate)
            else:
                act = gate / (1.0 + np.exp(-gate))
            f = self.linear(act * up, p + "ffn_down", emulate)
            if gemma:
                f = rms_norm(f, self.w(p + "post_ffw_norm.weight"), self.eps)
            x = x + f
        if rows is not None:
            x = x[np.atleast_1d(rows)]
        x = rms_norm(x, self.w("output_norm.weight"), self.eps)
        return self.lm_head(x, emulate)
