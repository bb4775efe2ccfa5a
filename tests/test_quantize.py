"""`tinyllm.quantization.rules` and the `tinyllm.quantize` pipeline, checked against llama-quantize's own output.

Outside references: the golden files made by llama-quantize from tiny-f32.gguf (types and
sha256 of every tensor and of whole files, in the manifest), the tables of kquants.md §5, the per-tensor types of
the real Gemma 3 Q4_K_M file, gguf-py's GGUFReader for reading what we write, and the
NumPy reference quantizer / dequantizer for the paths golden files do not cover.
"""
import errno
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from tinyllm.errors import GGUFError, QuantizationError, UsageError
from tinyllm.gguf_io import GGUFFile, write_gguf
from tinyllm.quantization.rules import (
    FTYPES,
    ModelHParams,
    QuantOptions,
    allows_quantization,
    fallback_type,
    parse_ftype,
    parse_tensor_type_override,
    plan_types,
    tensor_category,
    type_name,
    use_more_bits,
    weight_sort_key,
)
from tinyllm.quantization import default_output_path, plan_file, quantize_file
from tinyllm.quants.registry import dequantize, quantize_ref
from tinyllm.quants.types import GGMLType as T

# golden file stem -> (type argument, --pure)
GOLDEN = {
    "Q4_K_M": ("Q4_K_M", False),
    "Q4_K_S": ("Q4_K_S", False),
    "Q5_K_M": ("Q5_K_M", False),
    "Q6_K": ("Q6_K", False),
    "Q8_0": ("Q8_0", False),
    "Q4_1": ("Q4_1", False),
    "Q5_1": ("Q5_1", False),
    "pure-Q4_0": ("Q4_0", True),
    "pure-Q4_1": ("Q4_1", True),
    "pure-Q5_1": ("Q5_1", True),
    "pure-Q4_K_S": ("Q4_K_S", True),
    "pure-Q5_0": ("Q5_0", True),
    "pure-Q5_K_S": ("Q5_K_S", True),
    "pure-Q6_K": ("Q6_K", True),
    "pure-Q8_0": ("Q8_0", True),
    "Q2_K": ("Q2_K", False),
    "Q3_K_S": ("Q3_K_S", False),
    "Q3_K_M": ("Q3_K_M", False),
    "Q3_K_L": ("Q3_K_L", False),
    "pure-Q2_K": ("Q2_K", True),
    "pure-Q3_K_S": ("Q3_K_S", True),
    "IQ3_S": ("IQ3_S", False),
    "IQ3_M": ("IQ3_M", False),
    "pure-IQ3_S": ("IQ3_S", True),
}
# golden files whose types are written by block code of other modules (the IQ types): the
# plan is checked here, the bytes where those types are tested
PLAN_ONLY = {
    "IQ4_NL": ("IQ4_NL", False),
    "IQ4_XS": ("IQ4_XS", False),
    "pure-IQ4_NL": ("IQ4_NL", True),
    "pure-IQ4_XS": ("IQ4_XS", True),
}


def _types(path):
    return [(t.name, t.tensor_type.name) for t in gguf.GGUFReader(path).tensors]


def _golden_types(manifest, stem):
    """(name, type) of every tensor of llama-quantize's tiny-<stem>.gguf, in file order."""
    return [(t["name"], t["type"]) for t in manifest[f"tiny-{stem}"]["tensors"]]


def _tensor_list(path):
    with GGUFFile(path) as gf:
        return [(t.name, t.type, t.shape) for t in gf.tensors.values()], dict(gf.metadata)


def _leftovers(directory: Path, keep=()):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# --- quant_rules: pure logic ----------------------------------------------------------------

@pytest.mark.parametrize("n, layers", [
    (16, "0,1,4,7,10,13,14,15"),
    (22, "0,1,4,7,10,13,16,19,20,21"),
    (24, "0,1,2,5,8,11,14,17,20,21,22,23"),
    (26, "0,1,2,5,8,11,14,17,20,22,23,24,25"),
    (28, "0,1,2,5,8,11,14,17,20,23,24,25,26,27"),
    (32, "0,1,2,3,6,9,12,15,18,21,24,27,28,29,30,31"),
])
def test_use_more_bits_matches_spec_table(n, layers):
    assert [i for i in range(n) if use_more_bits(i, n)] == [int(s) for s in layers.split(",")]


def test_categories_in_llama_cpp_order():
    assert tensor_category("output.weight") == "output"
    assert tensor_category("token_embd.weight") == "token_embd"
    assert tensor_category("per_layer_token_embd.weight") == "token_embd"
    assert tensor_category("blk.0.attn_qkv.weight") == "attn_qkv"
    assert tensor_category("blk.0.attn_kv_b.weight") == "attn_kv_b"
    assert tensor_category("blk.3.attn_v.weight") == "attn_v"
    assert tensor_category("blk.3.attn_k.weight") == "attn_k"
    assert tensor_category("blk.3.attn_output.weight") == "attn_output"
    assert tensor_category("blk.3.ffn_down_exps.weight") == "ffn_down"
    assert tensor_category("blk.3.ffn_gate_inp.weight") == "ffn_gate"
    assert tensor_category("blk.3.attn_k_norm.weight") == "other"  # no "attn_k.weight" substring
    assert tensor_category("output_norm.weight") == "other"


def test_allows_quantization():
    assert allows_quantization("blk.0.attn_q.weight", (256, 256))
    assert not allows_quantization("blk.0.attn_norm.weight", (256,))
    assert not allows_quantization("blk.0.attn_q.weight", (4096, 1))  # trailing 1 does not count
    assert not allows_quantization("blk.0.attn_q.bias", (256, 256))
    assert not allows_quantization("blk.0.ffn_gate_inp.weight", (256, 8))
    assert not allows_quantization("blk.0.some_norm.weight", (256, 256))
    assert not allows_quantization("position_embd.weight", (256, 256))
    assert allows_quantization("output.weight", (256, 256))
    assert not allows_quantization("output.weight", (256, 256), leave_output_tensor=True)


def test_sort_order_is_llama_cpp_weights_map(manifest):
    names = [n for n, _ in _golden_types(manifest, "Q4_K_M")]
    assert sorted(reversed(names), key=weight_sort_key) == names
    # layer numbers compare as integers, names without blk.N. first
    mixed = ["blk.10.a.weight", "blk.2.b.weight", "token_embd.weight", "blk.2.a.weight", "output.weight"]
    assert sorted(mixed, key=weight_sort_key) == [
        "output.weight", "token_embd.weight", "blk.2.a.weight", "blk.2.b.weight", "blk.10.a.weight"]


@pytest.mark.parametrize("stem", {**GOLDEN, **PLAN_ONLY})
def test_plan_types_match_golden(golden, manifest, stem):
    tname, pure = {**GOLDEN, **PLAN_ONLY}[stem]
    tensors, md = _tensor_list(golden / "quant" / "tiny-f32.gguf")
    plan = plan_types(tensors, parse_ftype(tname), ModelHParams.from_metadata(md), QuantOptions(pure=pure))
    assert [(t.name, t.dst_type.name) for t in plan.tensors] == _golden_types(manifest, stem)


@pytest.mark.slow
def test_plan_types_match_real_gemma_q4_k_m(gemma_path):
    """The Gemma file was made by llama-quantize Q4_K_M: 640-wide rows force 90 fallbacks."""
    plan = plan_file(gemma_path, "Q4_K_M")
    with GGUFFile(gemma_path) as gf:  # (gguf-py's reader needs ~20 s for this vocabulary)
        in_file = [(t.name, t.type.name) for t in gf.tensors.values()]
    assert [(t.name, t.dst_type.name) for t in plan.tensors] == in_file
    assert len(plan.fallbacks) == 90
    assert {(type_name(t.fallback_from), type_name(t.dst_type)) for t in plan.fallbacks} == {
        ("q4_K", "q5_0"), ("q6_K", "q8_0")}


def _synthetic(n_layer, ne0=256, n_ff=512, tied=False, extra=()):
    """Tensor list of a llama-like model: (name, type, numpy shape)."""
    ts = [("token_embd.weight", T.F32, (1000, ne0)), ("output_norm.weight", T.F32, (ne0,))]
    if not tied:
        ts.append(("output.weight", T.F32, (1000, ne0)))
    for i in range(n_layer):
        p = f"blk.{i}."
        ts += [(p + "attn_q.weight", T.F32, (ne0, ne0)), (p + "attn_k.weight", T.F32, (ne0 // 4, ne0)),
               (p + "attn_v.weight", T.F32, (ne0 // 4, ne0)), (p + "attn_output.weight", T.F32, (ne0, ne0)),
               (p + "ffn_gate.weight", T.F32, (n_ff, ne0)), (p + "ffn_up.weight", T.F32, (n_ff, ne0)),
               (p + "ffn_down.weight", T.F32, (ne0, n_ff)), (p + "attn_norm.weight", T.F32, (ne0,))]
    return ts + list(extra)


def _plan(tensors, ftype, hp=None, **opts):
    hp = hp or ModelHParams("llama", max([int(n.split(".")[1]) for n, _, _ in tensors if n.startswith("blk.")]) + 1)
    return {t.name: t for t in plan_types(tensors, parse_ftype(ftype), hp, QuantOptions(**opts)).tensors}


def _layers(plan, suffix, t):
    return [int(n.split(".")[1]) for n, p in plan.items() if n.endswith(suffix) and p.dst_type == t]


def test_q4_k_m_mixture_on_16_layers():
    p = _plan(_synthetic(16), "Q4_K_M")
    umb = [0, 1, 4, 7, 10, 13, 14, 15]
    assert _layers(p, "attn_v.weight", T.Q6_K) == umb
    assert _layers(p, "ffn_down.weight", T.Q6_K) == umb
    assert _layers(p, "attn_q.weight", T.Q4_K) == list(range(16))
    assert p["output.weight"].dst_type == T.Q6_K
    assert p["token_embd.weight"].dst_type == T.Q4_K  # untied: the default
    assert p["blk.0.attn_norm.weight"].dst_type == T.F32


def test_q4_k_s_and_q5_k_m_mixtures():
    p = _plan(_synthetic(16), "Q4_K_S")
    assert _layers(p, "attn_v.weight", T.Q5_K) == [0, 1, 2, 3]
    assert _layers(p, "ffn_down.weight", T.Q5_K) == [0, 1]  # i < n/8
    p = _plan(_synthetic(16), "Q5_K_M")
    assert _layers(p, "ffn_down.weight", T.Q6_K) == [0, 1, 4, 7, 10, 13, 14, 15]
    assert _layers(p, "ffn_down.weight", T.Q5_K) == [2, 3, 5, 6, 8, 9, 11, 12]
    assert p["output.weight"].dst_type == T.Q6_K


def test_tied_embeddings_take_the_output_rule():
    p = _plan(_synthetic(2, tied=True), "Q4_K_M")
    assert p["token_embd.weight"].dst_type == T.Q6_K
    p = _plan(_synthetic(2, tied=True), "Q8_0")
    assert p["token_embd.weight"].dst_type == T.Q8_0
    p = _plan(_synthetic(2, tied=True), "Q4_K_M", output_tensor_type=T.Q5_0)  # reaches it through rule 1
    assert p["token_embd.weight"].dst_type == T.Q5_0
    p = _plan(_synthetic(2, tied=True, ne0=288), "Q4_K_M")  # rule 1: rows do not fit 256 -> Q8_0, no fallback
    assert p["token_embd.weight"].dst_type == T.Q8_0 and p["token_embd.weight"].fallback_from is None


def test_expert_and_70b_and_falcon_rules():
    e8 = ModelHParams("llama", 4, n_expert=8)
    p = _plan(_synthetic(4), "Q4_K_M", e8)
    assert {p[f"blk.{i}.attn_v.weight"].dst_type for i in range(4)} == {T.Q8_0}
    assert {p[f"blk.{i}.attn_k.weight"].dst_type for i in range(4)} == {T.Q8_0}
    assert {p[f"blk.{i}.attn_output.weight"].dst_type for i in range(4)} == {T.Q5_K}
    big = ModelHParams("llama", 80, n_head=64, n_head_kv=8)
    assert big.is_70b and not ModelHParams("llama", 80, n_head=64, n_head_kv=64).is_70b
    p = _plan(_synthetic(80, ne0=256), "Q4_K_S", big)
    assert {p[f"blk.{i}.attn_v.weight"].dst_type for i in range(80)} == {T.Q5_K}
    falcon = ModelHParams("falcon", 32)
    p = _plan(_synthetic(32), "Q4_K_M", falcon)
    assert p["output.weight"].dst_type == T.Q8_0
    assert _layers(p, "ffn_down.weight", T.Q6_K) == [0, 1]  # i < n/16
    assert _layers(p, "ffn_down.weight", T.Q5_K) == [2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_fallback_rules_from_spec():
    # ne0 = 1056 = 33*32: K-quants fall back to 32-blocks; ne0 = 1000 is not even a multiple of 32
    assert fallback_type("x", 1056, T.Q4_K) == T.Q5_0
    assert fallback_type("x", 1056, T.Q5_K) == T.Q5_1
    assert fallback_type("x", 1056, T.Q6_K) == T.Q8_0
    assert fallback_type("x", 1000, T.Q6_K) == T.F16
    assert fallback_type("x", 1024, T.Q4_K) == T.Q4_K
    assert fallback_type("x", 1000, T.Q8_0) == T.F16  # a 32-block type has no smaller block: F16
    assert fallback_type("x", 1000, T.IQ4_XS) == T.F16
    assert fallback_type("x", 1056, T.IQ2_XXS) == T.IQ4_NL
    assert fallback_type("x", 1056, T.Q3_K) == T.Q4_0
    with pytest.raises(QuantizationError, match=r"blk\.0\.w.*1056.*q8_K"):
        fallback_type("blk.0.w", 1056, T.Q8_K)
    p = _plan(_synthetic(16, n_ff=1056), "Q4_K_M")  # ffn_down rows are n_ff long
    assert _layers(p, "ffn_down.weight", T.Q8_0) == [0, 1, 4, 7, 10, 13, 14, 15]
    assert all(p[f"blk.{i}.ffn_down.weight"].fallback_from in (T.Q4_K, T.Q6_K) for i in range(16))
    assert _layers(p, "ffn_down.weight", T.Q5_0) == [2, 3, 5, 6, 8, 9, 11, 12]
    p = _plan(_synthetic(2, ne0=288), "Q4_K_M")  # stories15M-like width: output goes Q8_0 by rule 1
    assert p["output.weight"].dst_type == T.Q8_0 and p["output.weight"].fallback_from is None
    assert p["blk.0.attn_q.weight"].dst_type == T.Q5_0 and p["blk.0.attn_q.weight"].fallback_from == T.Q4_K


def test_overrides_pure_and_special_tensor_types():
    ts = _synthetic(16)
    p = _plan(ts, "Q4_K_M", tensor_types=(("blk\\.0\\.attn_v", T.Q8_0), ("nothing_matches", T.Q4_0)))
    assert p["blk.0.attn_v.weight"].dst_type == T.Q8_0
    assert p["blk.0.attn_v.weight"].override == "blk\\.0\\.attn_v"
    # the overridden tensor does not advance i_attention_wv: blk.1 gets counter 0, blk.2 counter 1 ...
    assert _layers(p, "attn_v.weight", T.Q6_K) == [1, 2, 5, 8, 11, 14, 15]
    plan = plan_types(ts, parse_ftype("Q4_K_M"), ModelHParams("llama", 16),
                      QuantOptions(tensor_types=(("attn_v", T.Q8_0), ("nothing_matches", T.Q4_0))))
    assert plan.unmatched_overrides == ["nothing_matches"]
    p = _plan(ts, "Q4_K_M", pure=True)
    assert {t.dst_type for n, t in p.items() if n.endswith("weight") and "norm" not in n} == {T.Q4_K}
    p = _plan(ts, "Q4_K_M", output_tensor_type=T.Q8_0, token_embedding_type=T.Q6_K)
    assert p["output.weight"].dst_type == T.Q8_0 and p["token_embd.weight"].dst_type == T.Q6_K
    p = _plan(ts, "Q4_K_M", leave_output_tensor=True)
    assert p["output.weight"].dst_type == T.F32
    p = _plan(ts, "F16")
    assert p["blk.3.attn_v.weight"].dst_type == T.F16 and p["output.weight"].dst_type == T.F16


def test_parse_errors_name_the_value():
    assert parse_ftype("q4_k") is FTYPES["Q4_K_M"] and parse_ftype("15") is FTYPES["Q4_K_M"]
    assert parse_ftype("bf16").file_type == 32
    with pytest.raises(UsageError, match="'Q3_XL'.*Q4_K_M"):
        parse_ftype("Q3_XL")
    assert parse_tensor_type_override("ATTN_V=q8_0") == ("attn_v", T.Q8_0)
    with pytest.raises(UsageError, match="'attn_v'.*REGEX=TYPE"):
        parse_tensor_type_override("attn_v")
    with pytest.raises(UsageError, match="'q9_9'"):
        parse_tensor_type_override("attn_v=q9_9")
    with pytest.raises(UsageError, match=r"'\(=q8_0'.*regular expression"):
        parse_tensor_type_override("(=q8_0")


def test_default_output_path():
    assert default_output_path("/m/gemma-f32.gguf", "q4_k_m") == Path("/m/gemma-Q4_K_M.gguf")
    assert default_output_path("/m/model.gguf", "Q8_0") == Path("/m/model-Q8_0.gguf")
    assert default_output_path("m/x_Q4_K_M.gguf", "F16") == Path("m/x-F16.gguf")
    assert default_output_path("m/llama-7b.gguf", "q6_k") == Path("m/llama-7b-Q6_K.gguf")


# --- the pipeline ------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", GOLDEN)
def test_golden_files_byte_identical(golden, manifest, tmp_path, stem):
    import hashlib

    tname, pure = GOLDEN[stem]
    want = manifest[f"tiny-{stem}"]
    out = tmp_path / "out.gguf"
    stats = quantize_file(golden / "quant" / "tiny-f32.gguf", out, tname, pure=pure, threads=2)
    got = gguf.GGUFReader(out)
    for a, b in zip(want["tensors"], got.tensors, strict=True):  # per tensor first: a clear failure message
        assert (b.name, b.tensor_type.name) == (a["name"], a["type"])
        assert hashlib.sha256(b.data.view(np.uint8).tobytes()).hexdigest() == a["sha256"], b.name
    for key, value in want["metadata"].items():
        assert got.fields[key].contents() == value
        assert got.fields[key].types == [gguf.GGUFValueType.UINT32]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want["sha256"]
    assert stats.file_nbytes == out.stat().st_size and stats.n_fallback == 0
    assert _leftovers(tmp_path) == ["out.gguf"]


def test_metadata_copied_with_exact_types(tmp_path, golden):
    src = tmp_path / "src.gguf"
    md = {"general.architecture": "llama", "general.name": "t", "llama.block_count": 1,
          "general.file_type": 0, "x.i8": -3, "x.u64": 1 << 40, "x.f64": 0.25, "x.bool": True,
          "x.strs": ["a", "ü"], "x.i16s": np.array([1, -2], np.int16), "split.count": 1}
    from tinyllm.gguf_io import GGUFValueType as VT
    vt = {"x.i8": (VT.INT8, None), "x.u64": (VT.UINT64, None), "x.f64": (VT.FLOAT64, None),
          "split.count": (VT.UINT16, None)}
    w = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    write_gguf(src, md, [("blk.0.attn_q.weight", T.F32, w.shape, w)], value_types=vt)
    quantize_file(src, tmp_path / "q.gguf", "Q8_0")
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(tmp_path / "q.gguf")
    keys = [k for k in b.fields if not k.startswith("GGUF.")]
    # input order without split keys, then quantization_version and file_type, as llama.cpp writes
    assert keys == ["general.architecture", "general.name", "llama.block_count", "x.i8", "x.u64", "x.f64",
                    "x.bool", "x.strs", "x.i16s", "general.quantization_version", "general.file_type"]
    for k in keys[:-2]:
        assert b.fields[k].types == a.fields[k].types, k
        assert b.fields[k].contents() == a.fields[k].contents(), k
    assert b.fields["general.file_type"].contents() == 7
    assert b.fields["general.quantization_version"].contents() == 2
    assert np.array_equal(b.tensors[0].data.view(np.uint8).reshape(64, -1), quantize_ref(w, T.Q8_0))


def test_dry_run_writes_nothing(golden, manifest, llama_cpp_file, tmp_path):
    out = tmp_path / "never.gguf"
    stats = quantize_file(golden / "quant" / "tiny-f32.gguf", out, "q4_k_m", dry_run=True)
    assert not out.exists() and stats.dst is None and _leftovers(tmp_path) == []
    assert [(t.name, t.dst_type.name) for t in stats.plan.tensors] == _golden_types(manifest, "Q4_K_M")
    assert stats.dst_nbytes == sum(int(t.n_bytes) for t in gguf.GGUFReader(llama_cpp_file("Q4_K_M")).tensors)
    assert stats.src_bpw == pytest.approx(32.0)


def test_overrides_apply_to_written_file(golden, tmp_path):
    src = golden / "quant" / "tiny-f32.gguf"
    out = tmp_path / "o.gguf"
    quantize_file(src, out, "Q4_K_M", tensor_types=["attn_v=q8_0", "FFN_UP=q5_0"],
                  output_tensor_type="q8_0", token_embedding_type="Q6_K")
    types = dict(_types(out))
    assert types["blk.0.attn_v.weight"] == "Q8_0" and types["blk.0.ffn_up.weight"] == "Q5_0"
    assert types["output.weight"] == "Q8_0" and types["token_embd.weight"] == "Q6_K"
    with GGUFFile(src) as gf:
        x = gf.tensors["blk.0.ffn_up.weight"].array()
        want = quantize_ref(x, T.Q5_0)
    got = {t.name: t for t in gguf.GGUFReader(out).tensors}["blk.0.ffn_up.weight"]
    assert np.array_equal(got.data.view(np.uint8).reshape(want.shape), want)


@pytest.mark.parametrize("float_type", ["F16", "BF16"])
def test_f16_and_bf16_inputs_widen_exactly(golden, tmp_path, float_type):
    """F32 -> F16/BF16 -> Q4_K_M equals quantizing the widened values with the reference code."""
    mid, out = tmp_path / "mid.gguf", tmp_path / "q.gguf"
    quantize_file(golden / "quant" / "tiny-f32.gguf", mid, float_type)
    assert gguf.GGUFReader(mid).fields["general.file_type"].contents() == FTYPES[float_type].file_type
    quantize_file(mid, out, "Q4_K_M")  # no --allow-requantize needed: 16-bit input is not quantized
    with GGUFFile(mid) as gm, GGUFFile(out) as go:
        assert [t.name for t in go.tensors.values()] == [t.name for t in gm.tensors.values()]
        for name, t in go.tensors.items():
            s = gm.tensors[name]
            x = dequantize(s.data, s.type, (s.data.shape[0], s.ne[0]))
            want = s.data if t.type == s.type else quantize_ref(x, t.type)
            assert np.array_equal(np.asarray(t.data), want), name


def test_dequantize_to_f32_needs_no_flag(llama_cpp_file, tmp_path):
    src = llama_cpp_file("Q4_K_M")
    out = tmp_path / "f32.gguf"
    quantize_file(src, out, "F32")
    with GGUFFile(src) as gs, GGUFFile(out) as go:
        assert go.metadata["general.file_type"] == 0
        for name, t in go.tensors.items():
            s = gs.tensors[name]
            assert t.type == T.F32
            assert np.array_equal(t.array(), dequantize(s.data, s.type, s.shape)), name


def test_requantize_refused_then_allowed(llama_cpp_file, manifest, tmp_path):
    src = llama_cpp_file("Q8_0")
    out = tmp_path / "q.gguf"
    with pytest.raises(QuantizationError, match=r"already quantized \(q8_0\).*loses quality.*--allow-requantize"):
        quantize_file(src, out, "Q4_K_M")
    assert _leftovers(tmp_path) == []
    quantize_file(src, out, "Q4_K_M", allow_requantize=True)
    with GGUFFile(src) as gs, GGUFFile(out) as go:
        for name, t in go.tensors.items():
            s = gs.tensors[name]
            want = s.data if t.type == s.type else quantize_ref(dequantize(s.data, s.type, s.shape), t.type)
            assert np.array_equal(np.asarray(t.data), want), name
    assert [x[1] for x in _types(out)] == [x[1] for x in _golden_types(manifest, "Q4_K_M")]


def test_same_file_and_existing_output_refused(golden, llama_cpp_file, tmp_path):
    src = tmp_path / "m.gguf"
    src.write_bytes((golden / "quant" / "tiny-f32.gguf").read_bytes())
    before = src.read_bytes()
    with pytest.raises(UsageError, match=r"m\.gguf is the input file"):
        quantize_file(src, src, "Q8_0", force=True)
    (tmp_path / "link.gguf").symlink_to(src)
    with pytest.raises(UsageError, match="is the input file"):
        quantize_file(src, tmp_path / "link.gguf", "Q8_0", force=True)
    os.link(src, tmp_path / "hard.gguf")
    with pytest.raises(UsageError, match="is the input file"):
        quantize_file(src, tmp_path / "hard.gguf", "Q8_0", force=True)
    assert src.read_bytes() == before
    out = tmp_path / "out.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(UsageError, match=r"out\.gguf already exists.*--force"):
        quantize_file(src, out, "Q8_0")
    assert out.read_bytes() == b"keep me"
    quantize_file(src, out, "Q8_0", force=True)
    assert out.read_bytes() == llama_cpp_file("Q8_0").read_bytes()
    assert _leftovers(tmp_path) == ["hard.gguf", "link.gguf", "m.gguf", "out.gguf"]


def test_unreadable_input_and_unwritable_output(golden, tmp_path):
    with pytest.raises(GGUFError, match=r"missing\.gguf"):
        quantize_file(tmp_path / "missing.gguf", tmp_path / "o.gguf", "Q8_0")
    with pytest.raises(GGUFError, match="is a directory"):
        quantize_file(tmp_path, tmp_path / "o.gguf", "Q8_0")
    bad = tmp_path / "text.gguf"
    bad.write_text("not a gguf file at all, just text")
    with pytest.raises(GGUFError, match=r"text\.gguf.*not a GGUF file"):
        quantize_file(bad, tmp_path / "o.gguf", "Q8_0")
    src = golden / "quant" / "tiny-f32.gguf"
    with pytest.raises(UsageError, match=r"directory .*nodir does not exist"):
        quantize_file(src, tmp_path / "nodir" / "o.gguf", "Q8_0")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):  # (root may write anyway: then the case below covers it)
            with pytest.raises(UsageError, match=r"ro is not writable"):
                quantize_file(src, ro / "o.gguf", "Q8_0")
    finally:
        ro.chmod(0o755)


def test_write_refused_by_the_os_is_one_clear_error(golden, tmp_path, monkeypatch):
    """A directory that passes os.access but refuses the temp file (as sysfs does for root)."""
    import tinyllm.atomic_file

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tinyllm.atomic_file.tempfile, "mkstemp", refuse)
    with pytest.raises(GGUFError, match=r"cannot write .*o\.gguf: Permission denied"):
        quantize_file(golden / "quant" / "tiny-f32.gguf", tmp_path / "o.gguf", "Q8_0")
    assert _leftovers(tmp_path) == []


def _f32_model(path, bad=None, ne0=256):
    """A small F32 model; bad=(tensor, row, col, value) plants a NaN/Inf."""
    rng = np.random.default_rng(1)
    tensors = []
    for name, shape in [("token_embd.weight", (64, ne0)), ("blk.0.attn_q.weight", (ne0, ne0)),
                        ("blk.0.attn_norm.weight", (ne0,)), ("blk.0.ffn_down.weight", (ne0, 512)),
                        ("output.weight", (64, ne0))]:
        x = rng.standard_normal(shape).astype(np.float32)
        if bad and bad[0] == name:
            x[bad[1], bad[2]] = bad[3]
        tensors.append((name, T.F32, shape, x))
    write_gguf(path, {"general.architecture": "llama", "llama.block_count": 1}, tensors)
    return path


@pytest.mark.parametrize("value, dst", [(np.nan, "Q4_K_M"), (np.inf, "Q8_0"), (-np.inf, "F16")])
def test_nan_inf_names_tensor_and_row_and_leaves_nothing(tmp_path, value, dst):
    # blk.0.ffn_down is the last tensor written (output order): the file is mostly written when it fails
    src = _f32_model(tmp_path / "src.gguf", bad=("blk.0.ffn_down.weight", 37, 5, value))
    out = tmp_path / "out.gguf"
    with pytest.raises(QuantizationError, match=r"tensor blk\.0\.ffn_down\.weight.*row 37"):
        quantize_file(src, out, dst)
    assert _leftovers(tmp_path) == ["src.gguf"]


def test_chunked_sources_join_chunks_and_name_the_absolute_row(tmp_path, monkeypatch):
    import tinyllm.quantization.pipeline as qz

    monkeypatch.setattr(qz, "_CHUNK_FLOATS", 256 * 8)  # 8 rows at a time here
    f32 = _f32_model(tmp_path / "f32.gguf", bad=("blk.0.attn_q.weight", 250, 7, np.inf))
    with pytest.raises(QuantizationError, match=r"attn_q\.weight: row 250 .*inf at column 7"):
        quantize_file(f32, tmp_path / "o.gguf", "Q4_K_M")
    f32 = _f32_model(tmp_path / "f32b.gguf")
    quantize_file(f32, tmp_path / "f32q.gguf", "Q4_K_M")  # chunks of an F32 source, pages dropped as it goes
    with GGUFFile(f32) as gs, GGUFFile(tmp_path / "f32q.gguf") as go:
        for name, t in go.tensors.items():
            want = gs.tensors[name].data if t.type == T.F32 else quantize_ref(gs.tensors[name].array(), t.type)
            assert np.array_equal(np.asarray(t.data), want), name

    x = np.random.default_rng(2).standard_normal((40, 256)).astype(np.float16)
    good = tmp_path / "good.gguf"
    write_gguf(good, {"general.architecture": "llama"}, [("blk.0.attn_q.weight", T.F16, x.shape, x)])
    quantize_file(good, tmp_path / "q.gguf", "Q8_0")
    with GGUFFile(tmp_path / "q.gguf") as gq:
        assert np.array_equal(np.asarray(gq.tensors["blk.0.attn_q.weight"].data), quantize_ref(x.astype(np.float32), T.Q8_0))
    x[21, 3] = np.nan
    bad = tmp_path / "bad.gguf"
    write_gguf(bad, {"general.architecture": "llama"}, [("blk.0.attn_q.weight", T.F16, x.shape, x)])
    with pytest.raises(QuantizationError, match=r"blk\.0\.attn_q\.weight: row 21 "):
        quantize_file(bad, tmp_path / "o.gguf", "Q8_0")
    assert not (tmp_path / "o.gguf").exists()


def _rss_file_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_drop_pages_releases_a_converted_tensor(tmp_path):
    from tinyllm.gguf_io import drop_pages as _drop_pages

    x = np.random.default_rng(4).standard_normal((4096, 1024)).astype(np.float32)  # 16 MiB
    src = tmp_path / "big.gguf"
    write_gguf(src, {"general.architecture": "llama"}, [("blk.0.attn_q.weight", T.F32, x.shape, x)])
    with GGUFFile(src) as gf:
        data = gf.tensors["blk.0.attn_q.weight"].data
        assert float(np.asarray(data[2048:, ::1024]).sum()) >= 0  # touch every page of the second half
        touched = _rss_file_kb()
        _drop_pages(data[2048:])  # those pages, not the file's first 8 MiB
        dropped = _rss_file_kb()
        assert touched - dropped >= 0.7 * 8 * 1024, (touched, dropped)
        assert np.array_equal(np.asarray(data).view(np.float32), x)  # still readable afterwards


def test_interrupt_and_full_disk_leave_nothing(golden, tmp_path, monkeypatch):
    src = golden / "quant" / "tiny-f32.gguf"
    out = tmp_path / "out.gguf"

    def interrupt(ev):
        if ev.index == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_file(src, out, "Q4_K_M", progress=interrupt)
    assert _leftovers(tmp_path) == []

    import tinyllm.atomic_file

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tinyllm.atomic_file.os, "fsync", full)
    with pytest.raises(GGUFError, match=r"out\.gguf.*No space left on device"):
        quantize_file(src, out, "Q4_K_M")
    assert _leftovers(tmp_path) == []


def test_no_fallback_names_the_tensors(tmp_path):
    src = _f32_model(tmp_path / "src.gguf", ne0=288)
    with pytest.raises(QuantizationError, match=r"--no-fallback.*token_embd\.weight \(row length 288: q4_K -> q5_0\)"
                       r".*blk\.0\.attn_q\.weight"):
        quantize_file(src, tmp_path / "o.gguf", "Q4_K_M", no_fallback=True)
    assert _leftovers(tmp_path) == ["src.gguf"]
    stats = quantize_file(src, tmp_path / "o.gguf", "Q4_K_M")
    assert stats.n_fallback == 2  # token_embd and attn_q; output goes Q8_0 by rule 1; ffn_down rows are 512
    types = dict(_types(tmp_path / "o.gguf"))
    assert types == {"output.weight": "Q8_0", "token_embd.weight": "Q5_0", "blk.0.attn_norm.weight": "F32",
                     "blk.0.attn_q.weight": "Q5_0", "blk.0.ffn_down.weight": "Q6_K"}
    with GGUFFile(src) as gs, GGUFFile(tmp_path / "o.gguf") as go:
        for name in ("token_embd.weight", "output.weight"):
            want = quantize_ref(gs.tensors[name].array(), go.tensors[name].type)
            assert np.array_equal(np.asarray(go.tensors[name].data), want)


def test_forced_type_that_does_not_fit_is_refused(tmp_path):
    src = _f32_model(tmp_path / "src.gguf", ne0=288)
    with pytest.raises(QuantizationError, match=r"output\.weight.*288.*q6_K"):
        quantize_file(src, tmp_path / "o.gguf", "Q8_0", output_tensor_type="q6_k")


def test_unreadable_source_type_refused_before_writing(tmp_path):
    raw = np.random.default_rng(3).integers(0, 256, (8, 256), dtype=np.uint8)  # I8: no block code
    src = tmp_path / "i8.gguf"
    write_gguf(src, {"general.architecture": "llama"}, [("blk.0.attn_q.weight", T.I8, (8, 256), raw)])
    with pytest.raises(QuantizationError, match=r"blk\.0\.attn_q\.weight is i8, which tinyllm cannot read"):
        quantize_file(src, tmp_path / "o.gguf", "F16")
    assert _leftovers(tmp_path) == ["i8.gguf"]
    quantize_file(src, tmp_path / "o.gguf", "Q4_K_M", tensor_types=["attn_q=i8"])  # unchanged: copied
    assert (tmp_path / "o.gguf").read_bytes()[-8 * 256:] == raw.tobytes()


def test_progress_callback_sees_every_tensor(golden, manifest, tmp_path):
    events = []
    quantize_file(golden / "quant" / "tiny-f32.gguf", tmp_path / "o.gguf", "Q6_K", progress=events.append)
    assert [e.index for e in events] == list(range(1, 13))
    src_bytes = sum(int(t.n_bytes) for t in gguf.GGUFReader(golden / "quant" / "tiny-f32.gguf").tensors)
    assert events[-1].done_bytes == events[-1].total_bytes == src_bytes
    assert [e.tensor.name for e in events] == [n for n, _ in _golden_types(manifest, "Q6_K")]


def test_quantized_tiny_model_loads_and_generates(tmp_path):
    """A Q4_K_M file made here runs in the runtime, and its logits stay close to the F32 model's."""
    import tinyllm.generation as gen_mod
    import tinyllm.model as model_mod
    from tinymodels import make_tiny_model

    f32 = make_tiny_model(tmp_path, arch="llama", wtype="F32", n_embd=256, head_dim=64, n_ff=512)
    q = tmp_path / "q4km.gguf"
    stats = quantize_file(f32, q, "Q4_K_M")
    assert stats.n_fallback == 0
    assert {t.dst_type for t in stats.plan.tensors} == {T.F32, T.Q4_K, T.Q6_K}
    ids = np.array([1, 300, 301, 302, 303], np.int32)
    ref = model_mod.load(f32, n_ctx=64).forward(ids)
    model = model_mod.load(q, n_ctx=64)
    got = model.forward(ids)
    # 4-bit weights: the logits move, but stay strongly correlated with the float model's
    assert np.corrcoef(ref, got)[0, 1] > 0.95
    model.reset()
    g = gen_mod.generate(model, "Hello world", max_tokens=8, params=_greedy())
    text = "".join(g)
    assert g.stats.generated_tokens == len(g.tokens) > 0 and isinstance(text, str)


@pytest.mark.parametrize("ftype, types, min_corr", [
    ("Q3_K_M", {T.F32, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}, 0.9),
    ("Q2_K", {T.F32, T.Q2_K, T.Q3_K, T.Q6_K}, 0.8),
])
def test_q2_k_and_q3_k_models_run(tmp_path, ftype, types, min_corr):
    """Files of the 2- and 3-bit mixes load (token_embd through Q2_K/Q3_K get_rows) and their
    logits follow the float model's, less closely the fewer the bits."""
    import tinyllm.model as model_mod
    from tinymodels import make_tiny_model

    f32 = make_tiny_model(tmp_path, arch="llama", wtype="F32", n_embd=256, head_dim=64, n_ff=512, n_layer=4)
    q = tmp_path / f"{ftype}.gguf"
    stats = quantize_file(f32, q, ftype)
    assert {t.dst_type for t in stats.plan.tensors} == types
    ids = np.array([1, 300, 301, 302, 303], np.int32)
    ref = model_mod.load(f32, n_ctx=64).forward(ids)
    got = model_mod.load(q, n_ctx=64).forward(ids)
    assert np.corrcoef(ref, got)[0, 1] > min_corr


def _greedy():
    from tinyllm.sampling import SamplingParams

    return SamplingParams(temperature=0.0, seed=0)
