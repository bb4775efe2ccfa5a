"""Write tests/data/golden/quant/rules.json: the per-tensor types llama-quantize chooses for every
quantized ftype, on synthetic models shaped to reach its mixture rules (many layers, GQA, 70B,
8 experts, tied embeddings, Falcon, rows that need a fallback), with and without an imatrix.

    python tests/data/make_rules_golden.py /path/to/llama.cpp/build/bin/llama-quantize

Each model is written with zero weights to a temporary directory (llama-quantize --dry-run
reads only names, shapes and metadata) together with an importance matrix naming its blk.*
weights; then `llama-quantize --dry-run [--imatrix FILE] MODEL FTYPE` runs for every ftype and
the target type of every tensor is read from its log. rules.json keeps, per model, the
sha256 of its tensor names in llama-quantize's order and, per ftype, one letter per 2-D
tensor in that order (legend in the file; 1-D tensors always stay F32); an "+imatrix" entry
is kept only where the imatrix changes a type. tests/test_quantize_rules.py rebuilds each
tensor list with `tensors_of` below and compares tinyllm's plans with these, so the
multi-megabyte models never enter the repository.
"""
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyllm.gguf_io import GGUFValueType, write_gguf
from tinyllm.quantization.imatrix import ImatrixEntry, save_imatrix
from tinyllm.quants.types import GGMLType

OUT = Path(__file__).resolve().parent / "golden" / "quant" / "rules.json"
FTYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
          "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ1_S", "IQ1_M", "IQ3_XXS",
          "IQ3_XS", "IQ3_S", "IQ3_M", "IQ4_NL", "IQ4_XS"]
LETTERS = {"f32": "F", "f16": "H", "q4_0": "a", "q4_1": "b", "q5_0": "c", "q5_1": "d", "q8_0": "e", "q2_K": "2",
           "q3_K": "3", "q4_K": "4", "q5_K": "5", "q6_K": "6", "iq2_xxs": "w", "iq2_xs": "x", "iq2_s": "y",
           "iq1_s": "s", "iq1_m": "m", "iq3_xxs": "u", "iq3_s": "v", "iq4_nl": "n", "iq4_xs": "o"}

# (name, arch, layers, n_head, n_head_kv, n_embd, n_ff, experts, tied)
MODELS = [
    ("llama-32", "llama", 32, 4, 4, 256, 256, 0, False),
    ("llama-32-gqa4", "llama", 32, 8, 2, 256, 256, 0, False),
    ("llama-80-gqa (70B)", "llama", 80, 8, 2, 256, 256, 0, False),
    ("llama-8-experts", "llama", 8, 4, 4, 256, 256, 8, False),
    ("llama-18-tied", "llama", 18, 4, 1, 256, 256, 0, True),
    ("llama-16-ff320 (fallbacks)", "llama", 16, 4, 4, 256, 320, 0, False),
    ("qwen2-80 (70B)", "qwen2", 80, 4, 4, 256, 256, 0, False),
    ("falcon-32", "falcon", 32, 4, 1, 256, 256, 0, False),
]


def tensors_of(arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert, tied):
    """(name, numpy shape) of the weights llama.cpp's loader expects for such a model."""
    head_dim = n_embd // n_head
    kv = n_head_kv * head_dim
    ts = [("token_embd.weight", (256, n_embd)), ("output_norm.weight", (n_embd,))]
    if not tied:
        ts.append(("output.weight", (256, n_embd)))
    for i in range(n_layer):
        p = f"blk.{i}."
        ts.append((p + "attn_norm.weight", (n_embd,)))
        if arch == "falcon":
            ts += [(p + "attn_norm.bias", (n_embd,)), (p + "attn_qkv.weight", (n_embd + 2 * kv, n_embd)),
                   (p + "attn_output.weight", (n_embd, n_embd)), (p + "ffn_up.weight", (n_ff, n_embd)),
                   (p + "ffn_down.weight", (n_embd, n_ff))]
            continue
        ts += [(p + "attn_q.weight", (n_embd, n_embd)), (p + "attn_k.weight", (kv, n_embd)),
               (p + "attn_v.weight", (kv, n_embd)), (p + "attn_output.weight", (n_embd, n_embd)),
               (p + "ffn_norm.weight", (n_embd,))]
        if arch == "qwen2":
            ts += [(p + "attn_q.bias", (n_embd,)), (p + "attn_k.bias", (kv,)), (p + "attn_v.bias", (kv,))]
        if n_expert:
            ts += [(p + "ffn_gate_inp.weight", (n_expert, n_embd)),
                   (p + "ffn_gate_exps.weight", (n_expert, n_ff, n_embd)),
                   (p + "ffn_up_exps.weight", (n_expert, n_ff, n_embd)),
                   (p + "ffn_down_exps.weight", (n_expert, n_embd, n_ff))]
        else:
            ts += [(p + "ffn_gate.weight", (n_ff, n_embd)), (p + "ffn_up.weight", (n_ff, n_embd)),
                   (p + "ffn_down.weight", (n_embd, n_ff))]
    return ts


def metadata_of(arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert):
    md = {"general.architecture": arch, "general.name": "rules-golden",
          f"{arch}.context_length": 256, f"{arch}.embedding_length": n_embd, f"{arch}.block_count": n_layer,
          f"{arch}.feed_forward_length": n_ff, f"{arch}.attention.head_count": n_head,
          f"{arch}.attention.head_count_kv": n_head_kv}
    vt = {k: (GGUFValueType.UINT32, None) for k in md if k.startswith(arch)}
    eps = f"{arch}.attention.layer_norm_epsilon" if arch == "falcon" else f"{arch}.attention.layer_norm_rms_epsilon"
    md[eps] = 1e-5
    vt[eps] = (GGUFValueType.FLOAT32, None)
    if n_expert:
        md[f"{arch}.expert_count"] = n_expert
        md[f"{arch}.expert_used_count"] = 2
        vt[f"{arch}.expert_count"] = vt[f"{arch}.expert_used_count"] = (GGUFValueType.UINT32, None)
    return md, vt


_LINE = re.compile(r"\]\s+(\S+)\s+- \[[^\]]*\], type =\s*(\S+), size =\s*[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((\S+)\))?")


def dry_run(quantize: str, model: Path, ftype: str, imatrix: Path | None) -> dict[str, str]:
    cmd = [quantize, "--dry-run"] + (["--imatrix", str(imatrix)] if imatrix else []) + [str(model), ftype]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    types = {}
    for m in _LINE.finditer(r.stdout + r.stderr):
        types[m.group(1)] = m.group(3) or m.group(2)
    return types


def names_sha256(names) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def main(quantize: str) -> None:
    out = {"llama_cpp": "build 0c1e570 (ggml 0.25.3): llama-quantize --dry-run", "legend": LETTERS, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert, tied in MODELS:
            ts = tensors_of(arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert, tied)
            md, vt = metadata_of(arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert)
            model = Path(tmp) / "model.gguf"
            write_gguf(model, md, [(n, GGMLType.F32, s, np.zeros(s, np.float32)) for n, s in ts], value_types=vt)
            imx = Path(tmp) / "model.imatrix.gguf"
            entries = {n: ImatrixEntry(np.ones((s[0] if len(s) == 3 else 1, s[-1]), np.float32),
                                       np.ones(s[0] if len(s) == 3 else 1, np.int64))
                       for n, s in ts if n.startswith("blk.") and len(s) >= 2 and "gate_inp" not in n}
            save_imatrix(imx, entries, ["rules-golden"], 1, 256)
            shapes = dict(ts)
            order, cases = None, {}
            for ftype in FTYPES:
                plain = dry_run(quantize, model, ftype, None)
                with_imx = dry_run(quantize, model, ftype, imx)
                if order is None:
                    order = list(plain)
                    assert sorted(order) == sorted(shapes), name
                    assert all(plain[n] == "f32" for n in order if len(shapes[n]) == 1)
                    two_d = [n for n in order if len(shapes[n]) > 1]
                cases[ftype] = "".join(LETTERS[plain[n]] for n in two_d)
                imx_code = "".join(LETTERS[with_imx[n]] for n in two_d)
                if imx_code != cases[ftype]:
                    cases[ftype + "+imatrix"] = imx_code
            out["models"][name] = {
                "spec": [arch, n_layer, n_head, n_head_kv, n_embd, n_ff, n_expert, tied],
                "names_sha256": names_sha256(order), "types": cases,
            }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
