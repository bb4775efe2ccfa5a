"""The mixture rules of every llama-quantize ftype (tinyllm.quantization.rules), pure logic.

Oracle: llama-quantize itself. tests/data/golden/quant/rules.json holds the type llama-quantize
--dry-run chose for every 2-D tensor of eight synthetic models (32 and 80 layers, GQA 4, 70B,
8 experts, tied embeddings, Falcon, rows needing a fallback) for every quantized ftype, with
and without an imatrix (tests/data/make_rules_golden.py; its `tensors_of` rebuilds the tensor
lists). The hand-made cases below were read from src/llama-quant.cpp and spell out what those
strings encode for the rules that matter most.
"""
import importlib.util
import json

import pytest

from tinyllm.quantization.rules import (
    FTYPES, ModelHParams, QuantOptions, parse_ftype, plan_types, requires_imatrix, type_name, use_more_bits,
)
from tinyllm.quants.types import GGMLType as T

from conftest import DATA, GOLDEN


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_rules_golden", DATA / "make_rules_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _load_generator()
RULES = json.loads((GOLDEN / "quant" / "rules.json").read_text())
CASES = [(m, case) for m, d in RULES["models"].items() for case in d["types"]]


def _model(name):
    arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert, tied = RULES["models"][name]["spec"]
    tensors = GEN.tensors_of(arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert, tied)
    md, _ = GEN.metadata_of(arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert)
    return [(n, T.F32, s) for n, s in tensors], ModelHParams.from_metadata(md)


def test_golden_covers_every_quantized_ftype():
    quantized = {n for n, f in FTYPES.items() if f.is_quantized}
    for d in RULES["models"].values():
        assert {c.partition("+")[0] for c in d["types"]} == quantized
        assert set(GEN.FTYPES) == quantized


@pytest.mark.parametrize("model, case", CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_plan_types_equal_llama_quantize_dry_run(model, case):
    ftype, _, imx = case.partition("+")
    tensors, hp = _model(model)
    plan = plan_types(tensors, parse_ftype(ftype), hp, QuantOptions(has_imatrix=bool(imx)))
    assert GEN.names_sha256([t.name for t in plan.tensors]) == RULES["models"][model]["names_sha256"]
    legend = RULES["legend"]
    two_d = [t for t in plan.tensors if len(t.shape) > 1]
    got = "".join(legend[type_name(t.dst_type)] for t in two_d)
    want = RULES["models"][model]["types"][case]
    if got != want:
        back = {v: k for k, v in legend.items()}
        diff = [(t.name, type_name(t.dst_type), back[w]) for t, g, w in zip(two_d, got, want) if g != w]
        pytest.fail(f"{len(diff)} tensor(s) differ from llama-quantize (name, tinyllm, llama.cpp): {diff[:5]}")
    assert all(t.dst_type == T.F32 for t in plan.tensors if len(t.shape) == 1)


# --- hand-made cases, read from llama_tensor_get_type_impl ---------------------------------------

def _plan(model, ftype, **opts):
    tensors, hp = _model(model)
    return {t.name: t.dst_type for t in plan_types(tensors, parse_ftype(ftype), hp, QuantOptions(**opts)).tensors}


def _layers(p, suffix, t):
    return [int(n.split(".")[1]) for n, d in p.items() if n.endswith(suffix) and d == t]


UMB32 = [i for i in range(32) if use_more_bits(i, 32)]


def test_iq2_m_on_32_layers():
    p = _plan("llama-32", "IQ2_M")
    assert p["output.weight"] == T.Q5_K and p["token_embd.weight"] == T.IQ3_S
    assert _layers(p, "attn_v.weight", T.IQ3_S) == list(range(32))  # no GQA: IQ3_S (GQA >= 4: Q4_K)
    assert _layers(p, "ffn_down.weight", T.IQ3_S) == [0, 1, 2, 3]  # i_ffn_down < 32/8, else the default
    assert _layers(p, "ffn_down.weight", T.IQ2_S) == list(range(4, 32))
    assert _layers(p, "attn_output.weight", T.IQ3_S) == list(range(32))
    assert _layers(p, "attn_q.weight", T.IQ2_S) == _layers(p, "ffn_up.weight", T.IQ2_S) == list(range(32))
    g = _plan("llama-32-gqa4", "IQ2_M")
    assert _layers(g, "attn_v.weight", T.Q4_K) == list(range(32))


def test_iq1_m_and_iq1_s_on_32_layers():
    for f, default in (("IQ1_M", T.IQ1_M), ("IQ1_S", T.IQ1_S)):
        p = _plan("llama-32", f)
        assert p["output.weight"] == T.Q5_K and p["token_embd.weight"] == T.Q2_K
        assert _layers(p, "attn_v.weight", T.Q2_K) == list(range(32))
        assert _layers(p, "ffn_down.weight", T.Q2_K) == [0, 1, 2, 3]
        assert _layers(p, "attn_output.weight", T.IQ2_XXS) == list(range(32))
        assert _layers(p, "ffn_gate.weight", default) == list(range(32))


def test_iq3_m_and_iq3_xs_on_32_layers():
    p = _plan("llama-32", "IQ3_M")
    assert p["output.weight"] == T.Q6_K and p["token_embd.weight"] == T.IQ3_S
    assert _layers(p, "attn_v.weight", T.Q4_K) == list(range(32))
    assert _layers(p, "ffn_down.weight", T.Q4_K) == [0, 1, 2, 3]
    assert _layers(p, "attn_output.weight", T.Q4_K) == list(range(32))
    p = _plan("llama-32", "IQ3_XS")
    assert _layers(p, "attn_q.weight", T.IQ3_XXS) == _layers(p, "attn_k.weight", T.IQ3_XXS) == list(range(32))
    assert _layers(p, "ffn_gate.weight", T.IQ3_XXS) == _layers(p, "ffn_up.weight", T.IQ3_XXS) == list(range(4, 28))
    assert _layers(p, "ffn_gate.weight", T.IQ3_S) == [0, 1, 2, 3, 28, 29, 30, 31]


def test_iq3_xxs_depends_on_the_imatrix():
    p = _plan("llama-32", "IQ3_XXS")
    assert _layers(p, "attn_v.weight", T.IQ3_S) == list(range(32))
    assert _layers(p, "ffn_down.weight", T.Q4_K) == [0, 1, 2, 3]
    assert _layers(p, "ffn_down.weight", T.Q3_K) == list(range(4, 32))
    assert _layers(p, "attn_q.weight", T.IQ2_S) == list(range(32))
    p = _plan("llama-32", "IQ3_XXS", has_imatrix=True)
    assert _layers(p, "attn_v.weight", T.IQ3_XXS) == list(range(32))
    assert _layers(p, "ffn_down.weight", T.IQ3_XXS) == list(range(32))


def test_q2_k_q3_k_mixes_on_32_layers():
    p = _plan("llama-32", "Q2_K")
    assert _layers(p, "attn_v.weight", T.Q3_K) == _layers(p, "ffn_down.weight", T.Q3_K) == list(range(32))
    assert _layers(p, "attn_output.weight", T.Q3_K) == list(range(32))
    assert _layers(_plan("llama-32-gqa4", "Q2_K"), "attn_v.weight", T.Q4_K) == list(range(32))
    p = _plan("llama-32", "Q2_K_S")
    assert _layers(p, "ffn_down.weight", T.Q4_K) == [0, 1, 2, 3]
    assert _layers(p, "attn_v.weight", T.Q2_K) == list(range(32))
    p = _plan("llama-32", "Q3_K_M")
    assert _layers(p, "attn_v.weight", T.Q5_K) == [0, 1]  # i_attention_wv < 2
    assert _layers(p, "ffn_down.weight", T.Q5_K) == [0, 1]  # i < 32/16, then Q4_K (not Falcon)
    assert _layers(p, "ffn_down.weight", T.Q4_K) == list(range(2, 32))
    assert _layers(_plan("falcon-32", "Q3_K_M"), "ffn_down.weight", T.Q3_K) == [i for i in range(2, 32) if i not in UMB32]
    p = _plan("llama-32", "Q3_K_L")
    assert _layers(p, "attn_v.weight", T.Q5_K) == _layers(p, "ffn_down.weight", T.Q5_K) == list(range(32))
    assert _layers(_plan("falcon-32", "Q3_K_L"), "attn_output.weight", T.Q4_K) == list(range(32))


def test_imatrix_switches_legacy_and_iq4_ffn_down():
    for f, plain, guarded in (("Q4_0", T.Q4_0, T.Q4_1), ("Q5_0", T.Q5_0, T.Q5_1)):
        assert _layers(_plan("llama-32", f), "ffn_down.weight", plain) == list(range(32))
        p = _plan("llama-32", f, has_imatrix=True)
        assert _layers(p, "ffn_down.weight", guarded) == [0, 1, 2, 3]
    for f in ("IQ4_NL", "IQ4_XS"):
        assert _layers(_plan("llama-32", f), "ffn_down.weight", T.Q5_K) == [0, 1, 2, 3]
        assert _layers(_plan("llama-32", f, has_imatrix=True), "ffn_down.weight", T.Q5_K) == []


def test_eight_experts_70b_and_fallbacks():
    p = _plan("llama-8-experts", "Q3_K_S")
    assert {p[f"blk.{i}.attn_v.weight"] for i in range(8)} == {p[f"blk.{i}.attn_k.weight"] for i in range(8)} == {T.Q8_0}
    assert {p[f"blk.{i}.attn_output.weight"] for i in range(8)} == {T.Q5_K}
    p = _plan("llama-8-experts", "IQ2_XXS")
    assert {p[f"blk.{i}.attn_v.weight"] for i in range(8)} == {p[f"blk.{i}.attn_k.weight"] for i in range(8)} == {T.Q4_K}
    assert _layers(p, "ffn_down_exps.weight", T.Q2_K) == [0]  # the counter: 8/8
    p = _plan("llama-80-gqa (70B)", "Q3_K_S")
    assert _layers(p, "attn_v.weight", T.Q5_K) == list(range(80))  # Q3_K bumped for 70B
    assert not ModelHParams("llama", 80, n_head=8, n_head_kv=8).is_70b
    assert ModelHParams("qwen2", 80).is_70b and ModelHParams("jais2", 68).is_70b
    assert not ModelHParams("llama", 80, n_expert=8, n_head=8, n_head_kv=2).is_70b
    p = _plan("llama-16-ff320 (fallbacks)", "IQ2_XS")  # ffn_down rows of 320: IQ2_XS -> IQ4_NL
    assert _layers(p, "ffn_down.weight", T.IQ4_NL) == list(range(2, 16))
    assert _layers(p, "ffn_down.weight", T.Q4_0) == [0, 1]  # Q2_K (i < 16/8) -> Q4_0


def test_tied_output_and_token_embedding_choices():
    p = _plan("llama-18-tied", "IQ2_XXS")
    assert p["token_embd.weight"] == T.Q5_K  # tied: the output rule
    p = _plan("llama-32", "IQ2_XXS")
    assert p["token_embd.weight"] == T.Q2_K and p["output.weight"] == T.Q5_K
    assert _plan("llama-32", "IQ3_XXS")["token_embd.weight"] == T.IQ3_S
    assert _plan("llama-32", "IQ2_S")["token_embd.weight"] == T.IQ3_S
    assert _plan("llama-32", "IQ4_XS")["token_embd.weight"] == T.IQ4_XS
    assert _plan("llama-32", "IQ2_S", token_embedding_type=T.Q8_0)["token_embd.weight"] == T.Q8_0


def test_requires_imatrix_follows_tensor_requires_imatrix():
    q2ks, q2k = parse_ftype("Q2_K_S"), parse_ftype("Q2_K")
    for t in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S):
        assert requires_imatrix("blk.0.attn_q.weight", t, q2k)
        assert not requires_imatrix("output.weight", t, q2k)
        assert not requires_imatrix("token_embd.weight", t, q2k)
    assert requires_imatrix("blk.0.ffn_up.weight", T.Q2_K, q2ks) and not requires_imatrix("blk.0.ffn_up.weight", T.Q2_K, q2k)
    for t in (T.IQ3_S, T.IQ4_XS, T.IQ4_NL, T.Q3_K, T.Q4_K):
        assert not requires_imatrix("blk.0.attn_q.weight", t, q2ks)
    tensors, hp = _model("llama-32")
    for f, needs in (("IQ2_XXS", True), ("IQ1_M", True), ("IQ3_XS", True), ("Q2_K_S", True), ("IQ3_S", False),
                     ("IQ3_M", False), ("Q2_K", False), ("IQ4_XS", False)):
        plan = plan_types(tensors, parse_ftype(f), hp)
        assert bool(plan.needs_imatrix) == needs, f


def test_new_ftype_names_and_ids():
    assert parse_ftype("q3_k") is FTYPES["Q3_K_M"]
    assert [parse_ftype(str(i)).name for i in (10, 11, 12, 13, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31)] == [
        "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ2_XXS", "IQ2_XS", "Q2_K_S", "IQ3_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ3_M", "IQ2_S", "IQ2_M", "IQ4_XS", "IQ1_M"]
    assert FTYPES["IQ2_S"].default == T.IQ2_XS and FTYPES["IQ2_M"].default == T.IQ2_S
    assert FTYPES["IQ3_XS"].default == T.IQ3_S and FTYPES["IQ3_M"].default == T.IQ3_S
