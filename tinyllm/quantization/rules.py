"""Which type each tensor gets: llama-quantize's mixture rules (kquants.md §5, kquants-family.md §5),
as pure logic.

Nothing here reads tensor data. `plan_types` takes the tensors' names, types and shapes plus
a few model hyper-parameters and returns, in llama.cpp's output order, the type every tensor
will be written in. `pipeline` runs the plan; `--dry-run` only prints it.

The order of the checks, the counters (i_attention_wv, i_ffn_down) and the fallback for rows
that do not fit a 256-weight super-block follow `src/llama-quant.cpp` exactly, because the
mixture is part of what "Q4_K_M" means: a file made here must get the types llama.cpp gives.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import QuantizationError, UsageError
from ..quants.types import BLOCK_SIZES, FLOAT_TYPES, GGMLType, block_size, parse_type, row_nbytes

GGML_QNT_VERSION = 2  # written as general.quantization_version


# --- ftypes (§5.5): the names a user types, the general.file_type id, the default tensor type

@dataclass(frozen=True)
class FType:
    name: str  # canonical llama-quantize name, e.g. "Q4_K_M"
    file_type: int  # LLAMA_FTYPE value written as general.file_type
    default: GGMLType  # the type most 2-D weights get

    @property
    def is_quantized(self) -> bool:
        return self.default not in FLOAT_TYPES


FTYPES: dict[str, FType] = {
    f.name: f
    for f in (
        FType("F32", 0, GGMLType.F32),
        FType("F16", 1, GGMLType.F16),
        FType("Q4_0", 2, GGMLType.Q4_0),
        FType("Q4_1", 3, GGMLType.Q4_1),
        FType("Q8_0", 7, GGMLType.Q8_0),
        FType("Q5_0", 8, GGMLType.Q5_0),
        FType("Q5_1", 9, GGMLType.Q5_1),
        FType("Q2_K", 10, GGMLType.Q2_K),
        FType("Q3_K_S", 11, GGMLType.Q3_K),
        FType("Q3_K_M", 12, GGMLType.Q3_K),
        FType("Q3_K_L", 13, GGMLType.Q3_K),
        FType("Q4_K_S", 14, GGMLType.Q4_K),
        FType("Q4_K_M", 15, GGMLType.Q4_K),
        FType("Q5_K_S", 16, GGMLType.Q5_K),
        FType("Q5_K_M", 17, GGMLType.Q5_K),
        FType("Q6_K", 18, GGMLType.Q6_K),
        FType("IQ2_XXS", 19, GGMLType.IQ2_XXS),
        FType("IQ2_XS", 20, GGMLType.IQ2_XS),
        FType("Q2_K_S", 21, GGMLType.Q2_K),
        FType("IQ3_XS", 22, GGMLType.IQ3_S),
        FType("IQ3_XXS", 23, GGMLType.IQ3_XXS),
        FType("IQ1_S", 24, GGMLType.IQ1_S),
        FType("IQ4_NL", 25, GGMLType.IQ4_NL),
        FType("IQ3_S", 26, GGMLType.IQ3_S),
        FType("IQ3_M", 27, GGMLType.IQ3_S),
        FType("IQ2_S", 28, GGMLType.IQ2_XS),
        FType("IQ2_M", 29, GGMLType.IQ2_S),
        FType("IQ4_XS", 30, GGMLType.IQ4_XS),
        FType("IQ1_M", 31, GGMLType.IQ1_M),
        FType("BF16", 32, GGMLType.BF16),
    )
}
FTYPE_ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # as llama-quantize accepts them


def parse_ftype(name: str) -> FType:
    """'q4_k_m' / 'Q4_K' / '15' -> FType, case-insensitive, like llama-quantize's TYPE argument."""
    key = str(name).strip().upper()
    key = FTYPE_ALIASES.get(key, key)
    if key in FTYPES:
        return FTYPES[key]
    if key.isdigit():
        for f in FTYPES.values():
            if f.file_type == int(key):
                return f
    known = ", ".join(FTYPES)
    raise UsageError(f"unknown quantization type {name!r}; supported: {known}")


# --- tensor order (§5.1): llama_model_loader's weights_map comparator

_BLK_RE = re.compile(rb"blk\.\s*([+-]?\d+)")  # what sscanf("blk.%d.") accepts


def layer_of(name: str) -> int | None:
    """N of a `blk.N.` prefix, or None (sscanf semantics: only the `blk.%d` part must match)."""
    m = _BLK_RE.match(name.encode())
    return int(m.group(1)) if m else None


def weight_sort_key(name: str) -> tuple[int, bytes]:
    """Sort key giving llama.cpp's output order: by layer (-1 first), then by the name's bytes."""
    n = layer_of(name)
    return (-1 if n is None else n, name.encode())


# --- categories (§5.1) and "may this tensor be quantized" (§5.2 step 1)

OUTPUT, TOKEN_EMBD = "output", "token_embd"
ATTN_QKV, ATTN_KV_B, ATTN_V, ATTN_K, ATTN_Q, ATTN_OUTPUT = (
    "attn_qkv", "attn_kv_b", "attn_v", "attn_k", "attn_q", "attn_output")
FFN_UP, FFN_GATE, FFN_DOWN, OTHER = "ffn_up", "ffn_gate", "ffn_down", "other"

# tested in this order; the first substring found decides
_CATEGORY_SUBSTRINGS = [
    ("attn_qkv.weight", ATTN_QKV),
    ("attn_kv_b.weight", ATTN_KV_B),
    ("attn_v.weight", ATTN_V),
    ("attn_k.weight", ATTN_K),
    ("attn_q.weight", ATTN_Q),
    ("attn_output.weight", ATTN_OUTPUT),
    ("ffn_up", FFN_UP),
    ("ffn_gate", FFN_GATE),
    ("ffn_down", FFN_DOWN),
]
_ATTN_V_LIKE = (ATTN_V, ATTN_QKV, ATTN_KV_B)


def tensor_category(name: str) -> str:
    if name == "output.weight":
        return OUTPUT
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return TOKEN_EMBD
    for sub, cat in _CATEGORY_SUBSTRINGS:
        if sub in name:
            return cat
    return OTHER


# small or special tensors llama.cpp never quantizes (tensor_allows_quantization)
_NEVER_QUANTIZED_SUBSTRINGS = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
    "indexer.k_proj.weight", "indexer.q_proj.weight",
    *(f"time_mix_{s}.weight" for s in (
        "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2",
        "decay_w1", "decay_w2", "lerp_fused")),
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
    ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")


def n_dims(ne) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count; at least 1."""
    n = len(ne)
    while n > 1 and ne[n - 1] == 1:
        n -= 1
    return max(n, 1)


def allows_quantization(name: str, ne, *, leave_output_tensor: bool = False) -> bool:
    """True for the 2-D (and 3-D expert) weights llama-quantize converts; 1-D and norm tensors stay."""
    if n_dims(ne) < 2 or not name.endswith("weight"):
        return False
    if leave_output_tensor and name == "output.weight":
        return False
    if name in _NEVER_QUANTIZED_NAMES:
        return False
    return not any(s in name for s in _NEVER_QUANTIZED_SUBSTRINGS)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The layers Q4_K_M/Q5_K_M give Q6_K: the first and last eighth and every third between.

    (C's `%` differs from Python's for negative i - n/8, but those layers are caught by i < n/8.)
    """
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


# --- fallback for rows that do not fit the block size (§5.4)

_FALLBACK = {
    GGMLType.Q4_K: GGMLType.Q5_0,
    GGMLType.Q5_K: GGMLType.Q5_1,
    GGMLType.Q6_K: GGMLType.Q8_0,
    GGMLType.Q2_K: GGMLType.Q4_0,
    GGMLType.Q3_K: GGMLType.Q4_0,
    **{t: GGMLType.IQ4_NL for t in (GGMLType.IQ1_S, GGMLType.IQ1_M, GGMLType.IQ2_XXS, GGMLType.IQ2_XS,
                                     GGMLType.IQ2_S, GGMLType.IQ3_XXS, GGMLType.IQ3_S, GGMLType.IQ4_XS)},
}


def type_name(t: GGMLType) -> str:
    """ggml_type_name spelling, as llama.cpp logs it: f32, q4_0, q4_K, bf16."""
    n = t.name.lower()
    return n[:-1] + "K" if n.endswith("_k") else n


def fallback_type(name: str, ncols: int, t: GGMLType) -> GGMLType:
    """The type used when `ncols` is not a multiple of t's block size; t itself when it fits."""
    blck = block_size(t)
    if ncols % blck == 0:
        return t
    if t not in _FALLBACK and blck <= 32:
        new = t  # already a 32-block type: only F16 is left (below)
    elif t not in _FALLBACK:
        raise QuantizationError(
            f"tensor {name}: row length {ncols} is not a multiple of {blck} (required by {type_name(t)}) "
            f"and no fallback type is defined for {type_name(t)}")
    else:
        new = _FALLBACK[t]
    if ncols % block_size(new) != 0:
        new = GGMLType.F16  # llama.cpp's last resort for rows not even a multiple of 32
    return new


# --- model facts the rules need

@dataclass(frozen=True)
class ModelHParams:
    arch: str
    n_layer: int  # block_count (hparams.n_layer_all)
    n_expert: int = 0
    n_head: int = 0
    n_head_kv: int = 0

    @property
    def n_gqa(self) -> int:
        """hparams.n_gqa(): query heads per KV head (layer 0), 0 without KV heads."""
        return self.n_head // self.n_head_kv if self.n_head_kv else 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B (each architecture's load_hparams), the only model size the
        rules look at."""
        if self.arch == "jais2":
            return self.n_layer == 68
        if self.n_layer != 80:
            return False
        if self.arch == "llama":  # 8 experts: Mixtral sizes; 80 layers without GQA: LLaMA-65B
            return self.n_expert != 8 and self.n_head != self.n_head_kv
        return self.arch in ("qwen2", "deci", "olmo")

    @classmethod
    def from_metadata(cls, metadata: dict, tensor_names=()) -> "ModelHParams":
        arch = str(metadata.get("general.architecture", ""))

        def get(key, default=0):
            v = metadata.get(f"{arch}.{key}", default)
            if isinstance(v, np.ndarray):  # per-layer arrays (e.g. DeciLM head counts): layer 0
                v = v.flat[0] if v.size else default
            return int(v)

        n_layer = get("block_count", -1)
        if n_layer < 0:  # not a transformer with block_count: count the blk.N prefixes
            layers = [layer_of(n) for n in tensor_names]
            n_layer = max((n for n in layers if n is not None), default=-1) + 1
        n_head = get("attention.head_count")
        return cls(arch, n_layer, get("expert_count"), n_head, get("attention.head_count_kv", n_head))


# --- options and the plan

@dataclass(frozen=True)
class QuantOptions:
    """The llama-quantize flags that change tensor types."""
    pure: bool = False  # --pure: no mixture rules
    leave_output_tensor: bool = False  # --leave-output-tensor
    output_tensor_type: GGMLType | None = None  # --output-tensor-type
    token_embedding_type: GGMLType | None = None  # --token-embedding-type
    tensor_types: tuple[tuple[str, GGMLType], ...] = ()  # --tensor-type REGEX=TYPE, first match wins
    has_imatrix: bool = False  # --imatrix with at least one entry left after --include/--exclude-weights


def parse_tensor_type_override(spec: str) -> tuple[str, GGMLType]:
    """'attn_v=q8_0' -> ('attn_v', Q8_0). The pattern is lower-cased as llama-quantize does."""
    pattern, sep, tname = spec.partition("=")
    if not sep or not pattern or not tname:
        raise UsageError(f"bad --tensor-type {spec!r}: expected REGEX=TYPE, e.g. 'attn_v=q8_0'")
    try:
        re.compile(pattern.lower())
    except re.error as e:
        raise UsageError(f"bad --tensor-type {spec!r}: invalid regular expression ({e})") from None
    return pattern.lower(), parse_type(tname)


@dataclass
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length
    src_type: GGMLType
    dst_type: GGMLType
    category: str
    quantizable: bool  # tensor_allows_quantization
    fallback_from: GGMLType | None = None  # the type asked for before the §5.4 fallback
    override: str | None = None  # the --tensor-type pattern that chose the type
    requires_imatrix: bool = False  # llama-quantize refuses this target type without an imatrix
    imatrix: bool = False  # quantized with importance weights (set by the pipeline)

    @property
    def converts(self) -> bool:
        return self.src_type != self.dst_type

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.ne, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return self.n_elements // self.ne[0]

    @property
    def src_nbytes(self) -> int:
        return self.n_rows * row_nbytes(self.src_type, self.ne[0])

    @property
    def dst_nbytes(self) -> int:
        return self.n_rows * row_nbytes(self.dst_type, self.ne[0])


@dataclass
class QuantPlan:
    ftype: FType
    tensors: list[TensorPlan]  # in output order
    unmatched_overrides: list[str] = field(default_factory=list)

    @property
    def fallbacks(self) -> list[TensorPlan]:
        return [t for t in self.tensors if t.fallback_from is not None]

    @property
    def needs_imatrix(self) -> list[TensorPlan]:
        """The quantizable tensors whose target type llama-quantize writes only with an imatrix."""
        return [t for t in self.tensors if t.quantizable and t.requires_imatrix]

    @property
    def src_nbytes(self) -> int:
        return sum(t.src_nbytes for t in self.tensors)

    @property
    def dst_nbytes(self) -> int:
        return sum(t.dst_nbytes for t in self.tensors)

    @property
    def n_elements(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    def bpw(self, nbytes: int) -> float:
        return nbytes * 8.0 / max(self.n_elements, 1)


class _Counters:
    def __init__(self, names, n_layer):
        cats = [tensor_category(n) for n in names]
        self.n_attention_wv = sum(c in _ATTN_V_LIKE for c in cats)
        self.n_ffn_down = self.n_ffn_gate = self.n_ffn_up = n_layer
        self.has_tied_embeddings = OUTPUT not in cats
        self.i_attention_wv = 0
        self.i_ffn_down = self.i_ffn_gate = self.i_ffn_up = 0


def _layer_info(name: str, i_layer: int, n_layer: int, n_expert: int) -> tuple[int, int]:
    # MoE files do not keep the experts' ffn tensors in layer order: llama.cpp reads the layer from the name
    if n_expert > 1:
        n = layer_of(name)
        if n is None:
            raise QuantizationError(f"cannot determine the layer of tensor {name} (expected a blk.N. prefix)")
        if not 0 <= n < n_layer:
            raise QuantizationError(f"tensor {name}: layer {n} is outside [0, {n_layer})")
        i_layer = n
    return i_layer, n_layer


Q = GGMLType
# ftypes whose output (and tied token_embd) tensor gets Q5_K instead of Q6_K
_OUTPUT_Q5_K = ("IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
# the "very low bit" ftypes, which have a branch of their own for every other tensor
_VERY_LOW_BIT = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
# ftypes whose attn_output gets Q5_K in 8-expert models
_ATTN_OUTPUT_E8 = ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M", "IQ3_S", "IQ3_M",
                   "IQ4_XS")


def _mixture_type(t: GGMLType, name: str, ncols: int, category: str, ftype: FType,
                  hp: ModelHParams, opts: QuantOptions, c: _Counters) -> GGMLType:
    """llama_tensor_get_type_impl (kquants.md §5.3, kquants-family.md §5.2): the branches in
    source order, first match wins; the counters advance exactly where llama.cpp's do."""
    f = ftype.name
    falcon = hp.arch == "falcon"
    gqa4 = hp.n_gqa >= 4
    e8 = hp.n_expert == 8
    imatrix = opts.has_imatrix
    umb = use_more_bits
    if category == OUTPUT or (c.has_tied_embeddings and category == TOKEN_EMBD):
        if opts.output_tensor_type is not None:
            return opts.output_tensor_type
        if falcon or ncols % block_size(t) != 0:
            return Q.Q8_0
        if f in _OUTPUT_Q5_K:
            return Q.Q5_K
        return Q.Q6_K if t != Q.Q8_0 else t
    if category == TOKEN_EMBD:
        if opts.token_embedding_type is not None:
            return opts.token_embedding_type
        if f in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
            return Q.Q2_K
        if f in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
            return Q.IQ3_S
        return t
    if f in _VERY_LOW_BIT:
        iq2_sm = f in ("IQ2_S", "IQ2_M")
        if category in _ATTN_V_LIKE:
            t = Q.Q4_K if gqa4 or hp.n_expert >= 4 else Q.IQ3_S if iq2_sm else Q.Q2_K
            c.i_attention_wv += 1
        elif e8 and category == ATTN_K:
            t = Q.Q4_K
        elif category == FFN_DOWN:
            if c.i_ffn_down < c.n_ffn_down // 8:  # the counter, not the layer of the name
                t = Q.IQ3_S if iq2_sm else Q.Q2_K
            c.i_ffn_down += 1
        elif category == ATTN_OUTPUT:
            if e8:
                t = Q.Q5_K
            elif f in ("IQ1_S", "IQ1_M"):
                t = Q.IQ2_XXS
            elif iq2_sm:
                t = Q.IQ3_S
        return t  # (attn_q, ffn_gate, ffn_up: the default; their counters do not advance here)
    if category in _ATTN_V_LIKE:
        if f == "Q2_K":
            t = Q.Q4_K if gqa4 else Q.Q3_K
        elif f == "Q2_K_S" and gqa4:
            t = Q.Q4_K
        elif f == "IQ3_XXS":
            t = Q.Q4_K if gqa4 else Q.IQ3_XXS if imatrix else Q.IQ3_S
        elif f in ("IQ3_XS", "IQ3_S") and gqa4:
            t = Q.Q4_K
        elif f == "IQ3_M":
            t = Q.Q4_K
        elif f == "Q3_K_M":
            t = Q.Q5_K if c.i_attention_wv < 2 else Q.Q4_K
        elif f == "Q3_K_L":
            t = Q.Q5_K
        elif f in ("IQ4_NL", "IQ4_XS") and gqa4:
            t = Q.Q5_K
        elif f in ("Q4_K_M", "Q5_K_M") and umb(c.i_attention_wv, c.n_attention_wv):
            t = Q.Q6_K
        elif f == "Q4_K_S" and c.i_attention_wv < 4:
            t = Q.Q5_K
        if hp.is_70b and t in (Q.Q3_K, Q.Q4_K):
            # 8 heads share attn_v in the 70B models: more bits there cost little
            t = Q.Q5_K
        if e8:
            t = Q.Q8_0
        c.i_attention_wv += 1
        return t
    if category == ATTN_K:
        if e8:
            return Q.Q8_0
        return Q.IQ3_XXS if f == "IQ3_XS" else Q.IQ2_S if f == "IQ3_XXS" else t
    if category == ATTN_Q:
        return Q.IQ3_XXS if f == "IQ3_XS" else Q.IQ2_S if f == "IQ3_XXS" else t
    if category == FFN_DOWN:
        i, n = _layer_info(name, c.i_ffn_down, c.n_ffn_down, hp.n_expert)
        if f == "Q2_K":
            t = Q.Q3_K
        elif f == "Q2_K_S":
            if i < n // 8:
                t = Q.Q4_K
        elif f == "IQ3_XXS" and not imatrix:
            t = Q.Q4_K if i < n // 8 else Q.Q3_K
        elif f == "Q3_K_M":
            t = Q.Q5_K if i < n // 16 else Q.Q4_K if not falcon or umb(i, n) else Q.Q3_K
        elif f == "IQ3_M" and (i < n // 8 or (e8 and umb(i, n))):
            t = Q.Q4_K
        elif f == "Q3_K_L":
            t = Q.Q4_K if falcon else Q.Q5_K
        elif f == "Q4_K_M":
            if falcon:
                t = Q.Q6_K if i < n // 16 else Q.Q5_K if umb(i, n) else Q.Q4_K
            elif umb(i, n):
                t = Q.Q6_K
        elif i < n // 8 and f in ("IQ4_NL", "IQ4_XS") and not imatrix:
            t = Q.Q5_K
        elif f == "Q5_K_M" and umb(i, n):
            t = Q.Q6_K
        elif f == "Q4_K_S" and not falcon and i < n // 8:
            t = Q.Q5_K
        elif f in ("Q4_0", "Q5_0") and imatrix and i < n // 8:
            # guards the first ffn_down layers; only with an imatrix, so that a run without one
            # gives the same file as before imatrix support existed
            t = Q.Q4_1 if f == "Q4_0" else Q.Q5_1
        c.i_ffn_down += 1
        return t
    if category == ATTN_OUTPUT:
        if not falcon:
            if e8:
                if f in _ATTN_OUTPUT_E8:
                    t = Q.Q5_K
            else:
                t = {"Q2_K": Q.Q3_K, "IQ3_XXS": Q.IQ3_S, "Q3_K_M": Q.Q4_K, "Q3_K_L": Q.Q5_K, "IQ3_M": Q.Q4_K}.get(f, t)
        elif f == "Q3_K_L":
            t = Q.Q4_K
        return t
    # (llama.cpp's ATTENTION_QKV branch here is unreachable: attn_qkv is attn_v-like, above)
    if category in (FFN_GATE, FFN_UP):
        gate = category == FFN_GATE
        i, n = _layer_info(name, c.i_ffn_gate if gate else c.i_ffn_up, c.n_ffn_gate if gate else c.n_ffn_up,
                           hp.n_expert)
        if f == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
            t = Q.IQ3_XXS
        if gate:
            c.i_ffn_gate += 1
        else:
            c.i_ffn_up += 1
        return t
    return t


def requires_imatrix(name: str, dst: GGMLType, ftype: FType) -> bool:
    """tensor_requires_imatrix (kquants-family.md §5.3): llama-quantize refuses to write these
    without an importance matrix (never token_embd / output, matched by name)."""
    if name in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight"):
        return False
    if dst in (Q.IQ3_XXS, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ1_M, Q.IQ1_S):
        return True
    return dst == Q.Q2_K and ftype.name == "Q2_K_S"


def plan_types(tensors, ftype: FType, hparams: ModelHParams, options: QuantOptions = QuantOptions()) -> QuantPlan:
    """Choose every tensor's output type, as llama-quantize does (§5.2).

    `tensors`: iterable of (name, GGMLType, shape in numpy order). Returns the plan in
    llama.cpp's output order. Raises QuantizationError where llama.cpp has no type to offer.
    """
    items = sorted(((n, GGMLType(t), tuple(int(s) for s in shape)) for n, t, shape in tensors),
                   key=lambda it: weight_sort_key(it[0]))
    c = _Counters([n for n, _, _ in items], hparams.n_layer)
    patterns = [(re.compile(p), p, t) for p, t in options.tensor_types]
    matched: set[str] = set()
    plans = []
    for name, src, shape in items:
        ne = tuple(reversed(shape)) or (1,)
        cat = tensor_category(name)
        ok = allows_quantization(name, ne, leave_output_tensor=options.leave_output_tensor)
        plan = TensorPlan(name, shape, ne, src, src, cat, ok)
        plans.append(plan)
        if not ok:
            continue
        # --token-embedding-type (no fallback check, as llama.cpp); per_layer_token_embd follows
        # it unless a --tensor-type pattern names it
        if options.token_embedding_type is not None and cat == TOKEN_EMBD and not (
                name == "per_layer_token_embd.weight" and any(rx.search(name) for rx, _, _ in patterns)):
            plan.dst_type = options.token_embedding_type
            plan.requires_imatrix = requires_imatrix(name, plan.dst_type, ftype)
            continue
        if options.output_tensor_type is not None and cat == OUTPUT:
            plan.dst_type = options.output_tensor_type
            continue
        new = ftype.default
        if ftype.is_quantized:
            manual = False
            for rx, p, t in patterns:
                if rx.search(name):
                    new, manual, plan.override = t, True, p
                    matched.add(p)
                    break
            if not manual and not options.pure:
                new = _mixture_type(new, name, ne[0], cat, ftype, hparams, options, c)
            fitted = fallback_type(name, ne[0], new)
            if fitted != new:
                plan.fallback_from = new
            new = fitted
        plan.dst_type = new
        plan.requires_imatrix = requires_imatrix(name, new, ftype)
    unmatched = [p for _, p, _ in patterns if p not in matched]
    return QuantPlan(ftype, plans, unmatched)


def check_fits(plan: QuantPlan) -> None:
    """Types forced by --output-tensor-type / --token-embedding-type skip the fallback; refuse misfits."""
    for t in plan.tensors:
        blck = BLOCK_SIZES[t.dst_type][0]
        if t.ne[0] % blck:
            raise QuantizationError(
                f"tensor {t.name}: row length {t.ne[0]} is not a multiple of {blck}, "
                f"so it cannot be stored as {type_name(t.dst_type)}")
