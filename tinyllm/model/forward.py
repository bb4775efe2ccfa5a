"""The forward pass per architecture, written to read like spec/architectures.md §2.

Shapes: T tokens in the ubatch, D = n_embd, H / Hkv heads, d = head_dim, F = n_ff.
Buffers come from a Scratch sized for T (the decode one, T = 1, is made once at load);
matmul writes into them, so the decode path allocates almost nothing.

`observe_matmuls(model, fn)` lets fn(weight_name, x) see the float32 input of every matmul
(`tinyllm imatrix` collects Σx² per column this way); without an observer a matmul pays one
truth test of an empty dict.
"""
import math
from contextlib import contextmanager

import numpy as np

from ..errors import UsageError
from ..quants.matmul import get_rows
from ..quants.matmul import matmul as _quants_matmul
from ..quants.matmul import quantize_activations
from . import ops

_observers: dict = {}  # id(QMatrix) -> fn(name, x) while an observe_matmuls block runs
_skip_products = False  # True inside matmuls_skipped()


def matmul(w, x, out=None):
    """quants.matmul.matmul, showing x (T, n_in) first to the observer attached to w, if any."""
    if _skip_products:
        if out is None:
            return np.zeros((x.shape[0], w.n_out), np.float32)
        out[...] = 0
        return out
    if _observers:
        fn = _observers.get(id(w))
        if fn is not None:
            fn(w.name, x)
    return _quants_matmul(w, x, out=out)


def matmuls(x, *pairs):
    """matmul(w, x, out) for each (w, out) of pairs, which share the input x (T, n_in): x is
    quantized once per activation type. Returns the outs."""
    acts = {}
    res = []
    for w, out in pairs:
        if _skip_products or _observers:
            res.append(matmul(w, x, out=out))
            continue
        kind = w.spec.act
        if kind not in acts:
            acts[kind] = quantize_activations(w.type, x)
        res.append(_quants_matmul(w, x, out=out, act=acts[kind]))
    return res


@contextmanager
def observe_matmuls(m, fn):
    """Within the block, fn(weight_name, x) is called with the input x (T, n_in) float32 of every
    matmul of model m, before the product (x must not be kept: it is a scratch buffer)."""
    ids = [id(w) for _, w in m.weights.matrices()]
    if any(i in _observers for i in ids):
        raise UsageError(f"the matmuls of {m.path.name} are already observed")
    _observers.update(dict.fromkeys(ids, fn))
    try:
        yield
    finally:
        for i in ids:
            _observers.pop(i, None)


@contextmanager
def matmuls_skipped():
    """Within the block every matmul returns zeros: a forward pass that compiles every other
    kernel (compile_ahead) without computing, or compiling, the products."""
    global _skip_products
    _skip_products = True
    try:
        yield
    finally:
        _skip_products = False


class Scratch:
    """Activation buffers of one ubatch of T tokens."""

    def __init__(self, cfg, T: int):
        D, F, H, Hkv, d = cfg.n_embd, cfg.n_ff, cfg.n_head, cfg.n_head_kv, cfg.head_dim
        f32 = np.float32
        self.T = T
        self.x = np.empty((T, D), f32)  # residual stream
        self.h = np.empty((T, D), f32)  # normed input of attention / FFN
        self.q = np.empty((T, H * d), f32)
        self.k = np.empty((T, Hkv * d), f32)
        self.v = np.empty((T, Hkv * d), f32)
        self.o = np.empty((T, H * d), f32)  # attention output, heads concatenated
        self.a = np.empty((T, D), f32)  # attn_output / ffn_down result
        self.gate = np.empty((T, F), f32)
        self.up = np.empty((T, F), f32)
        half = cfg.n_rot // 2
        self.cos = np.empty((T, half), f32)
        self.sin = np.empty((T, half), f32)
        self.cos_swa = np.empty((T, half), f32)
        self.sin_swa = np.empty((T, half), f32)


def forward_layers(m, buf: Scratch, pos0: int):
    """Run every block on buf.x (T, D) for the tokens at positions pos0..pos0+T-1,
    writing their K/V into the cache."""
    cfg = m.config
    ops.rope_table(buf.cos, buf.sin, pos0, cfg.rope_base, cfg.rope_scale, m.rope_factors)
    if cfg.n_swa:
        # sliding layers: their own base (default 10000) and no scaling (§2.4)
        ops.rope_table(buf.cos_swa, buf.sin_swa, pos0, cfg.rope_base_swa, 1.0, m.rope_factors)
    layer = gemma3_layer if cfg.arch == "gemma3" else llama_layer
    for lw in m.weights.blk:
        layer(m, lw, buf, pos0)


def llama_layer(m, lw, buf: Scratch, pos0: int):
    """LLaMA (§2.1), Qwen2 (§2.3: q/k/v biases, NEOX RoPE) and Qwen3 (per-head RMSNorm of q and k
    before RoPE, no biases) block."""
    cfg, kv = m.config, m.kv
    T, H, Hkv, d, eps = buf.T, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.norm_eps
    x, h = buf.x, buf.h
    ops.rms_norm(h, x, lw.attn_norm, eps)  # h = RMSNorm(x) * attn_norm       [T, D]
    # q = h @ Wq.T (+ bq) [T, H*d];  k = h @ Wk.T (+ bk), v = h @ Wv.T (+ bv) [T, Hkv*d]
    q, k, v = matmuls(h, (lw.attn_q, buf.q), (lw.attn_k, buf.k), (lw.attn_v, buf.v))
    if lw.attn_q_bias is not None:
        q += lw.attn_q_bias
        k += lw.attn_k_bias
        v += lw.attn_v_bias
    q3, k3 = q.reshape(T, H, d), k.reshape(T, Hkv, d)
    # (qwen3: RMSNorm per head * q_norm / k_norm, then) RoPE on q and k: adjacent pairs for
    # llama, halves for qwen2/qwen3 (§2.2)
    qk_norm = lw.attn_q_norm is not None
    ops.head_norm_rope(q3, lw.attn_q_norm if qk_norm else m.no_norm, qk_norm, eps, buf.cos, buf.sin, cfg.rope_neox, 1.0)
    ops.head_norm_rope(k3, lw.attn_k_norm if qk_norm else m.no_norm, qk_norm, eps, buf.cos, buf.sin, cfg.rope_neox, 1.0)
    kv.store(lw.il, k3, v.reshape(T, Hkv, d), pos0)  # K/V cells of these positions
    o3 = buf.o.reshape(T, H, d)
    kv.attend(lw.il, o3, q3, pos0, cfg.attn_scale)  # softmax(q·Kᵀ/sqrt(d) + mask)·V  [T, H, d]
    a = matmul(lw.attn_output, buf.o, out=buf.a)  # a = o @ Wo.T            [T, D]
    if lw.attn_output_bias is not None:
        a += lw.attn_output_bias
    x += a  # x = x + a
    ops.rms_norm(h, x, lw.ffn_norm, eps)  # h = RMSNorm(x) * ffn_norm         [T, D]
    g, u = matmuls(h, (lw.ffn_gate, buf.gate), (lw.ffn_up, buf.up))  # [T, F] each
    ops.swiglu(g, g, u)  # g = silu(g) * u
    f = matmul(lw.ffn_down, g, out=buf.a)  # f = g @ Wdown.T                  [T, D]
    x += f  # x = x + f


def gemma3_layer(m, lw, buf: Scratch, pos0: int):
    """Gemma 3 block (§2.4): q/k norms, Q scaled, post norms, GELU-tanh, sliding layers."""
    cfg, kv = m.config, m.kv
    T, H, Hkv, d, eps = buf.T, cfg.n_head, cfg.n_head_kv, cfg.head_dim, cfg.norm_eps
    swa = cfg.swa_layers[lw.il]
    cos, sin = (buf.cos_swa, buf.sin_swa) if swa else (buf.cos, buf.sin)
    x, h = buf.x, buf.h
    ops.rms_norm(h, x, lw.attn_norm, eps)  # 1. h = RMSNorm(x) * attn_norm     [T, D]
    # 2. q = h @ Wq.T [T, H*d];  k = h @ Wk.T, v = h @ Wv.T [T, Hkv*d]
    q, k, v = matmuls(h, (lw.attn_q, buf.q), (lw.attn_k, buf.k), (lw.attn_v, buf.v))
    q3, k3 = q.reshape(T, H, d), k.reshape(T, Hkv, d)
    # 3.-5. per-head RMSNorm * q_norm / k_norm, NEOX RoPE, then q *= f_attention_scale
    ops.head_norm_rope(q3, lw.attn_q_norm, True, eps, cos, sin, True, cfg.attn_scale)
    ops.head_norm_rope(k3, lw.attn_k_norm, True, eps, cos, sin, True, 1.0)
    kv.store(lw.il, k3, v.reshape(T, Hkv, d), pos0)
    o3 = buf.o.reshape(T, H, d)
    kv.attend(lw.il, o3, q3, pos0, 1.0)  # 6. attention, kq_scale 1, causal (+ window)  [T, H, d]
    a = matmul(lw.attn_output, buf.o, out=buf.a)  # 7. a = o @ Wo.T          [T, D]
    ops.add_rms_norm(x, a, lw.post_attention_norm, eps)  # 7.-8. x += RMSNorm(a) * post_attention_norm
    ops.rms_norm(h, x, lw.ffn_norm, eps)  # 9. h = RMSNorm(x) * ffn_norm      [T, D]
    g, u = matmuls(h, (lw.ffn_gate, buf.gate), (lw.ffn_up, buf.up))  # 10. [T, F] each
    ops.geglu(g, g, u, m.gelu_table)  #             g = gelu_tanh(g) * u
    f = matmul(lw.ffn_down, g, out=buf.a)  #        f = g @ Wdown.T           [T, D]
    ops.add_rms_norm(x, f, lw.post_ffw_norm, eps)  # 11.-12. x += RMSNorm(f) * post_ffw_norm


def output_logits(m, x: np.ndarray) -> np.ndarray:
    """logits (T, V) = RMSNorm(x) * output_norm @ Wout.T (+ bias), softcapped if configured."""
    cfg, w = m.config, m.weights
    h = np.empty_like(x)
    ops.rms_norm(h, x, w.output_norm, cfg.norm_eps)
    logits = matmul(w.output, h)
    if w.output_bias is not None:
        logits += w.output_bias
    if cfg.final_logit_softcap:
        c = np.float32(cfg.final_logit_softcap)
        with np.errstate(over="ignore"):  # a tiny cap: x/c is ±inf, and tanh gives ±1 as it should
            logits = c * np.tanh(logits / c)
    return logits


def embed(m, buf: Scratch, tokens: np.ndarray):
    """buf.x = token_embd[tokens] (· sqrt(D) for Gemma, in float32 as ggml_scale)."""
    buf.x[:] = get_rows(m.weights.token_embd, tokens)
    if m.config.embd_scale != 1.0:
        buf.x *= np.float32(math.sqrt(m.config.n_embd))
